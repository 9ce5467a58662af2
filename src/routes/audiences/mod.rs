//! `/v1/audiences`: reads (cached: [`read`]), create, update and delete ([`write`]),
//! activations ([`activate`]) and their history ([`history`]), the cache purge ([`purge`]), plus what they share: the path and header parameters of
//! the OpenAPI document and the `Idempotency-Key` handling.

mod activate;
mod history;
mod purge;
mod read;
mod write;

use std::future::Future;

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use bytes::Bytes;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{json_bytes, path_id, set_header};
use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiError, Problem, PROBLEM_JSON};
use crate::idempotency::{self, Begin, StoredResponse};
use crate::AppState;

/// Registers the audience routes.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(write::create_audience)
        .service(read::get_audience)
        .service(write::update_audience)
        .service(write::delete_audience)
        .service(activate::activate_audience)
        .service(history::list_activations)
        .service(history::get_activation)
        .service(read::get_insights)
        .service(read::get_uploads)
        .service(purge::purge_audience_cache);
}

/// The `{id}` path parameter, as sent: [`AudienceId::get`] checks it, so a malformed id
/// is answered with the same coded problem as any invalid path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AudienceId {
    /// Audience id
    #[param(value_type = i64, minimum = 1, maximum = 9_223_372_036_854_775_807_i64, example = 1001)]
    id: String,
}

impl AudienceId {
    /// The id, checked.
    pub fn get(&self) -> Result<i64, ApiError> {
        path_id(&self.id)
    }
}

/// The `If-Match` request header of an update or delete (read in `write`).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// ETag the change is based on (as a read, the create or the last update answered it,
    /// e.g. `"9f86d081884c7d659a2feaa0c55ad015"`): 412 if the audience changed since. `*`
    /// holds for any current version.
    #[param(rename = "If-Match", nullable = false, example = "*")]
    pub if_match: Option<String>,
}

/// The `Idempotency-Key` request header (read by [`idempotent`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Client-chosen key making retries safe: 1 to 255 visible ASCII characters, optionally in double quotes
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        pattern = r#"^[ \t]*"*[!#-~](?:[!-~]{0,253}[!#-~])?"*[ \t]*$"#,
        example = "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1"
    )]
    pub idempotency_key: Option<String>,
}

/// The validated `Idempotency-Key` header, if any.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(idempotency::HEADER) else {
        return Ok(None);
    };
    let bad = || ApiError::InvalidHeader {
        field: "Idempotency-Key".into(),
        detail: format!(
            "must be 1 to {} visible ASCII characters",
            idempotency::MAX_KEY_LEN
        ),
    };
    let s = v.to_str().map_err(|_| bad())?;
    // The draft makes the value an sf-string; accept it quoted or bare.
    let s = s.trim().trim_matches('"');
    if s.is_empty()
        || s.len() > idempotency::MAX_KEY_LEN
        || !s.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

fn to_http(stored: &StoredResponse) -> actix_web::HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    // A stored problem gets the request id of the answer that replays it, like any problem.
    let problem = stored
        .headers
        .iter()
        .any(|(_, v)| v == PROBLEM_JSON)
        .then(|| serde_json::from_slice::<Problem>(&stored.body).ok())
        .flatten()
        .map(|mut p| {
            p.request_id = crate::scope::current_request_id();
            p
        });
    let body = problem
        .as_ref()
        .map_or_else(|| stored.body.clone(), |p| Bytes::from(p.to_bytes()));
    let mut resp = json_bytes(status, body);
    for (name, value) in &stored.headers {
        if let Ok(name) = HeaderName::try_from(name.as_str()) {
            set_header(&mut resp, name, value);
        }
    }
    if let Some(problem) = problem {
        resp.extensions_mut().insert(problem);
    }
    resp
}

/// Runs `work` at most once per (caller, route, Idempotency-Key); replays finished results.
/// `work` returns the response to store, or an error after which a retry may run again.
async fn idempotent<F, Fut>(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    route: &str,
    raw_body: &Bytes,
    work: F,
) -> Result<actix_web::HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<StoredResponse, ApiError>>,
{
    let Some(key) = idempotency_key(req)? else {
        return work().await.map(|r| to_http(&r));
    };
    let scoped = idempotency::scoped_key(caller.principal(), route, &key);
    let print = idempotency::fingerprint(req.method().as_str(), req.path(), raw_body);
    let begin = state.idempotency.begin(&scoped, &print).await;
    audit::note_idempotency(req, &key, matches!(begin, Begin::Replay(_)));
    match begin {
        Begin::Replay(stored) => {
            let mut resp = to_http(&stored);
            set_header(
                &mut resp,
                HeaderName::from_static(idempotency::REPLAYED_HEADER),
                "?1",
            );
            Ok(resp)
        }
        Begin::InFlight => Err(ApiError::IdempotencyInFlight),
        Begin::Mismatch => Err(ApiError::IdempotencyMismatch),
        Begin::Proceed => match work().await {
            Ok(stored) => {
                state
                    .idempotency
                    .complete(&scoped, &print, stored.clone())
                    .await;
                Ok(to_http(&stored))
            }
            // A write that may have happened keeps its outcome: a retry with this key gets
            // the same answer instead of a second create or activation.
            Err(e) if e.may_have_written() => {
                state
                    .idempotency
                    .complete(&scoped, &print, stored_problem(&e))
                    .await;
                Err(e)
            }
            Err(e) => {
                state.idempotency.abandon(&scoped).await;
                Err(e)
            }
        },
    }
}

/// A response to store for replays: `status`, `Location` if any, and `value` as JSON.
fn stored<T: serde::Serialize>(
    status: StatusCode,
    location: Option<String>,
    value: &T,
) -> Result<StoredResponse, ApiError> {
    Ok(StoredResponse {
        status: status.as_u16(),
        headers: location
            .map(|l| ("location".into(), l))
            .into_iter()
            .collect(),
        body: Bytes::from(serde_json::to_vec(value).map_err(|_| ApiError::Internal)?),
    })
}

/// An error to store for replays, as its problem body (the request id is the replay's).
fn stored_problem(e: &ApiError) -> StoredResponse {
    StoredResponse {
        status: e.table().0.as_u16(),
        headers: vec![("content-type".into(), PROBLEM_JSON.into())],
        body: Bytes::from(e.problem().to_bytes()),
    }
}
