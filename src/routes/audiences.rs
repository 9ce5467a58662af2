//! `/v1/audiences`: create, read (cached), update, delete, activate, insights, uploads.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{delete, get, patch, post, web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::{json, json_bytes, path_id, set_header, JsonBody, CACHE_STATUS};
use crate::auth::{Activate, Authorized, Caller, CallerSubject, Delete, Read, Write};
use crate::cache::{CachedAudience, Outcome, View};
use crate::domain::{
    Activation, Audience, AudiencePatch, Insights, NewActivation, NewAudience, Uploads,
};
use crate::error::ApiError;
use crate::idempotency::{self, Begin, StoredResponse};
use crate::limits::Decision;
use crate::telemetry::{RequestContext, REQUEST_ID};
use crate::upstream::CallContext;
use crate::AppState;

/// Registers the audience routes.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_audience)
        .service(get_audience)
        .service(update_audience)
        .service(delete_audience)
        .service(activate_audience)
        .service(get_insights)
        .service(get_uploads);
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whether the request asks to bypass the cache (`Cache-Control: no-cache` or `max-age=0`).
fn wants_refresh(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::CACHE_CONTROL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("max-age=0")
        })
}

/// Whether an `If-None-Match` / `If-Match` list matches `etag`: RFC 9110 uses the weak
/// comparison for `If-None-Match` (a `W/` prefix is ignored) and the strong one for
/// `If-Match`.
fn etag_matches(req: &HttpRequest, name: header::HeaderName, etag: &str) -> Option<bool> {
    let weak = name == header::IF_NONE_MATCH;
    let values: Vec<&str> = req
        .headers()
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(|t| if weak { t.trim_start_matches("W/") } else { t })
            .any(|t| t == "*" || t == etag),
    )
}

/// Answers a cached read with ETag, Cache-Control, Cache-Status and conditional handling.
async fn cached_view(
    state: &AppState,
    req: &HttpRequest,
    ctx: &CallContext,
    id: i64,
    view: View,
) -> Result<HttpResponse, ApiError> {
    let (entry, outcome) = state
        .cache
        .get_view(&state.upstream, ctx, id, wants_refresh(req), view)
        .await?;
    render_view(state, req, &entry, outcome, view)
}

fn render_view(
    state: &AppState,
    req: &HttpRequest,
    entry: &CachedAudience,
    outcome: Outcome,
    view: View,
) -> Result<HttpResponse, ApiError> {
    let rep = entry.view(view)?;
    let mut resp = if etag_matches(req, header::IF_NONE_MATCH, &rep.etag) == Some(true) {
        HttpResponse::NotModified().finish()
    } else {
        json_bytes(StatusCode::OK, rep.body.clone())
    };
    let (cache_control, cache_status) = state.cache.header_values(outcome);
    let headers = resp.headers_mut();
    headers.insert(header::ETAG, rep.etag_header.clone());
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(CACHE_STATUS, cache_status);
    Ok(resp)
}

/// A read answered by [`serve_read`], before routing.
pub struct EarlyAnswer {
    pub response: HttpResponse,
    /// The route template, as routing would have matched it (metrics, access log).
    pub route: &'static str,
    pub caller: Arc<Caller>,
}

/// The reads [`serve_read`] recognises: `(id segment, view, route template)`.
fn cached_read(path: &str) -> Option<(&str, View, &'static str)> {
    let rest = path.strip_prefix("/v1/audiences/")?;
    Some(match rest.split_once('/') {
        None => (rest, View::Audience, "/v1/audiences/{id}"),
        Some((id, "insights")) => (id, View::Insights, "/v1/audiences/{id}/insights"),
        Some((id, "uploads")) => (id, View::Uploads, "/v1/audiences/{id}/uploads"),
        Some(_) => return None,
    })
}

/// The read path, served before routing: `GET /v1/audiences/{id}` (or its `/insights`,
/// `/uploads`) with a valid id and a token verified before that grants `audiences:read`
/// is answered here, without routing, extractors or a boxed handler future: a fresh cache
/// entry directly, anything else (a miss, a refresh, the cache disabled, an upstream
/// failure) by the function the handlers call, [`cached_view`], so the answer is the
/// handler's by construction. `None` (another request, an unknown or insufficient token,
/// a malformed id) sends the request on to routing and the handlers, which decide those.
///
/// Called by the outermost middleware (`telemetry::request_context`) when no CORS is
/// configured, else by [`early_reads`] inside the CORS middleware, which adds its headers
/// to every answer (`Vary: Origin` even without an `Origin`). `request_id` is what a miss
/// is scoped with ([`REQUEST_ID`]: its upstream call and log lines carry it): the outer
/// middleware passes its id, since it calls this outside the scope; [`early_reads`], which
/// runs inside the scope already, passes `None`.
pub async fn serve_read(
    state: &AppState,
    req: &HttpRequest,
    request_id: Option<Rc<str>>,
) -> Option<EarlyAnswer> {
    if req.method() != actix_web::http::Method::GET {
        return None;
    }
    let (raw_id, view, route) = cached_read(req.path())?;
    let id = path_id(raw_id).ok()?;
    let caller = state.auth.authorized_known::<Read>(req.headers())?;
    let fresh = if wants_refresh(req) {
        None
    } else {
        state.cache.fresh(state.upstream.identity(), id).await
    };
    let response = match fresh {
        Some((entry, outcome)) => render_view(state, req, &entry, outcome, view)
            .unwrap_or_else(|e| actix_web::ResponseError::error_response(&e)),
        None => {
            // Boxed: the miss's state (cache fill, upstream call) is large, and inline it
            // would make every hit's future, and the middleware's around it, as large.
            let miss = Box::pin(async move {
                cached_view(state, req, &RequestContext::of(req).0, id, view)
                    .await
                    .unwrap_or_else(|e| actix_web::ResponseError::error_response(&e))
            });
            // A hit stays out of the scope: it makes no upstream call and logs nothing.
            match request_id {
                Some(request_id) => REQUEST_ID.scope(request_id, miss).await,
                None => miss.await,
            }
        }
    };
    Some(EarlyAnswer {
        response,
        route,
        caller,
    })
}

/// The route template of a response [`early_reads`] gave, for the access log and metrics
/// (routing, which would have named it, did not run).
#[derive(Clone, Copy)]
pub struct AnsweredBeforeRouting(pub &'static str);

/// Middleware between CORS and routing, installed when CORS is configured: answers reads
/// with [`serve_read`] and lets the CORS middleware add its headers; everything else goes
/// on to routing.
pub async fn early_reads<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let early = match req.app_data::<web::Data<AppState>>() {
        Some(state) => serve_read(state, req.request(), None).await,
        None => None,
    };
    match early {
        Some(early) => {
            req.extensions_mut().insert(CallerSubject(early.caller));
            let mut response = early.response;
            response
                .extensions_mut()
                .insert(AnsweredBeforeRouting(early.route));
            Ok(req.into_response(response).map_into_right_body())
        }
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// Get an audience
///
/// Served from the gateway's cache while fresh. Send `Cache-Control: no-cache` to force a
/// read from the Digital Audience API, and `If-None-Match` with a previous `ETag` to get
/// `304 Not Modified` when nothing changed. When the upstream fails, a recently expired copy
/// is served and marked stale in `Cache-Status`.
#[utoipa::path(
    operation_id = "getAudience",
    tag = "audiences",
    params(
        ("id" = i64, Path, description = "Audience id", minimum = 1, maximum = 2147483647, example = 1001),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETag from a previous response", example = "\"9f86d081884c7d659a2feaa0c55ad015\""),
        ("Cache-Control" = Option<String>, Header, nullable = false, description = "`no-cache` (or `max-age=0`) bypasses the gateway cache", example = "no-cache"),
    ),
    responses(
        (status = 200, description = "The audience", body = Audience, headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current", headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/audiences/{id}")]
async fn get_audience(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    cached_view(&state, &req, &ctx.0, path_id(&id)?, View::Audience).await
}

/// Get audience insights
///
/// Insights state, size, and per identifier type (EMAIL, PHONE, ...) the counts and match
/// rates of the newest CRM upload. Cached with the audience.
#[utoipa::path(
    operation_id = "getAudienceInsights",
    tag = "audiences",
    params(
        ("id" = i64, Path, description = "Audience id", minimum = 1, maximum = 2147483647, example = 1001),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETag from a previous response", example = "\"9f86d081884c7d659a2feaa0c55ad015\""),
        ("Cache-Control" = Option<String>, Header, nullable = false, description = "`no-cache` (or `max-age=0`) bypasses the gateway cache", example = "no-cache"),
    ),
    responses(
        (status = 200, description = "Insights of the audience", body = Insights, headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current", headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/audiences/{id}/insights")]
async fn get_insights(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    cached_view(&state, &req, &ctx.0, path_id(&id)?, View::Insights).await
}

/// List CRM uploads
///
/// The audience's CRM upload events, newest first, with per identifier type counts and match
/// rates. Cached with the audience.
#[utoipa::path(
    operation_id = "listAudienceUploads",
    tag = "audiences",
    params(
        ("id" = i64, Path, description = "Audience id", minimum = 1, maximum = 2147483647, example = 1001),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETag from a previous response", example = "\"9f86d081884c7d659a2feaa0c55ad015\""),
        ("Cache-Control" = Option<String>, Header, nullable = false, description = "`no-cache` (or `max-age=0`) bypasses the gateway cache", example = "no-cache"),
    ),
    responses(
        (status = 200, description = "Upload events, newest first", body = Uploads, headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current", headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/audiences/{id}/uploads")]
async fn get_uploads(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    cached_view(&state, &req, &ctx.0, path_id(&id)?, View::Uploads).await
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

fn to_http(stored: &StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = json_bytes(status, stored.body.clone());
    for (name, value) in &stored.headers {
        if let Ok(name) = HeaderName::try_from(name.as_str()) {
            set_header(&mut resp, name, value);
        }
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
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<StoredResponse, ApiError>>,
{
    let Some(key) = idempotency_key(req)? else {
        return work().await.map(|r| to_http(&r));
    };
    let scoped = idempotency::scoped_key(caller.principal(), route, &key);
    let print = idempotency::fingerprint(req.method().as_str(), req.path(), raw_body);
    match state.idempotency.begin(&scoped, &print).await {
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
            Err(e) => {
                state.idempotency.abandon(&scoped).await;
                Err(e)
            }
        },
    }
}

fn stored<T: serde::Serialize>(
    status: StatusCode,
    location: String,
    value: &T,
) -> Result<StoredResponse, ApiError> {
    Ok(StoredResponse {
        status: status.as_u16(),
        headers: vec![("location".into(), location)],
        body: Bytes::from(serde_json::to_vec(value).map_err(|_| ApiError::Internal)?),
    })
}

/// Create an audience
///
/// Creates a CRM audience in a campaign. Send an `Idempotency-Key` to make retries safe: a
/// repeated request with the same key and body returns the original response (marked with
/// `Idempotent-Replayed: ?1`) without creating a second audience.
#[utoipa::path(
    operation_id = "createAudience",
    tag = "audiences",
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*"*[!#-~](?:[!-~]{0,253}[!#-~])?"*[ \t]*$"#, example = "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1",
            description = "Client-chosen key making retries safe: 1 to 255 visible ASCII characters, optionally in double quotes"),
    ),
    request_body(content = NewAudience, description = "The audience to create"),
    responses(
        (status = 201, description = "Created", body = Audience, headers(
            ("Location" = String, description = "URL of the new audience"),
            ("Idempotent-Replayed" = String, description = "`?1` when this is a replay of an earlier response"),
        )),
    ),
    security(("bearer" = ["audiences:write"]))
)]
#[post("/audiences")]
async fn create_audience(
    auth: Authorized<Write>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    body: JsonBody<NewAudience>,
) -> Result<HttpResponse, ApiError> {
    let new = body.value.validated()?;
    idempotent(&state, &auth, &req, "createAudience", &body.raw, || async {
        let dto = state.upstream.create_audience(&ctx.0, &new).await?;
        let audience = dto.into_audience();
        stored(
            StatusCode::CREATED,
            format!("/v1/audiences/{}", audience.id),
            &audience,
        )
    })
    .await
}

/// Reads the current audience from the upstream when a precondition or a missing name
/// needs it, and checks `If-Match`.
async fn current_if_needed(
    state: &AppState,
    req: &HttpRequest,
    ctx: &CallContext,
    id: i64,
    needed: bool,
) -> Result<Option<Arc<CachedAudience>>, ApiError> {
    let has_if_match = req.headers().contains_key(header::IF_MATCH);
    if !has_if_match && !needed {
        return Ok(None);
    }
    let (entry, _) = state.cache.get(&state.upstream, ctx, id, true).await?;
    if etag_matches(req, header::IF_MATCH, &entry.audience.etag) == Some(false) {
        return Err(ApiError::PreconditionFailed);
    }
    Ok(Some(entry))
}

/// Update an audience
///
/// Changes name and/or description. An absent name keeps the current one. Send `If-Match`
/// with the `ETag` you read to fail with 412 if the audience changed meanwhile.
#[utoipa::path(
    operation_id = "updateAudience",
    tag = "audiences",
    params(
        ("id" = i64, Path, description = "Audience id", minimum = 1, maximum = 2147483647, example = 1001),
        ("If-Match" = Option<String>, Header, nullable = false, description = "ETag the change is based on; 412 if the audience changed since", example = "\"9f86d081884c7d659a2feaa0c55ad015\""),
    ),
    request_body(content = AudiencePatch, description = "Fields to change"),
    responses(
        (status = 200, description = "The updated audience", body = Audience, headers(
            ("ETag" = String, description = "Strong entity tag of the new version"),
        )),
    ),
    security(("bearer" = ["audiences:write"]))
)]
#[patch("/audiences/{id}")]
async fn update_audience(
    _auth: Authorized<Write>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<String>,
    body: JsonBody<AudiencePatch>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let patch = body.value.validated()?;
    // The vendor's update replaces both fields: fill what the caller left out from the
    // current audience.
    let partial = patch.name.is_none() || patch.description.is_none();
    let current = current_if_needed(&state, &req, &ctx.0, id, partial).await?;
    let patch = match &current {
        Some(c) if partial => {
            let now: Audience =
                serde_json::from_slice(&c.audience.body).map_err(|_| ApiError::Internal)?;
            AudiencePatch {
                name: patch.name.or(Some(now.name)),
                description: patch.description.or(now.description),
            }
        }
        _ => patch,
    };
    let name = patch.name.clone().ok_or(ApiError::Internal)?;
    let updated = state
        .upstream
        .update_audience(&ctx.0, id, &name, &patch)
        .await;
    state.evict(id).await;
    let updated = updated?;
    // Re-read so the body and ETag match what GET returns (and the cache is warm again).
    match state.cache.get(&state.upstream, &ctx.0, id, true).await {
        Ok((entry, _)) => {
            let mut resp = json_bytes(StatusCode::OK, entry.audience.body.clone());
            set_header(&mut resp, header::ETAG, &entry.audience.etag);
            Ok(resp)
        }
        // The update happened: answer with the audience the vendor returned, if it returned
        // one; else with the re-read's error (repeating a PATCH is harmless).
        Err(e) => match updated {
            Some(audience) => {
                tracing::warn!(error = %e, "re-read after update failed; answering with the update result");
                json(StatusCode::OK, &audience)
            }
            None => Err(e.into()),
        },
    }
}

/// Delete an audience
///
/// Deletes the audience and all connected data. Send `If-Match` to delete only the version
/// you read.
#[utoipa::path(
    operation_id = "deleteAudience",
    tag = "audiences",
    params(
        ("id" = i64, Path, description = "Audience id", minimum = 1, maximum = 2147483647, example = 1001),
        ("If-Match" = Option<String>, Header, nullable = false, description = "ETag the deletion is based on; 412 if the audience changed since", example = "\"9f86d081884c7d659a2feaa0c55ad015\""),
    ),
    responses(
        (status = 204, description = "Deleted"),
    ),
    security(("bearer" = ["audiences:delete"]))
)]
#[delete("/audiences/{id}")]
async fn delete_audience(
    _auth: Authorized<Delete>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    current_if_needed(&state, &req, &ctx.0, id, false).await?;
    let result = state.upstream.delete_audience(&ctx.0, id).await;
    state.evict(id).await;
    result?;
    Ok(HttpResponse::NoContent().finish())
}

fn rate_headers(resp: &mut HttpResponse, state: &AppState, decision: Option<&Decision>) {
    let policies = state.limiter.policies();
    set_header(resp, RATELIMIT_POLICY, &Decision::policy_header(&policies));
    if let Some(d) = decision {
        set_header(resp, RATELIMIT, &d.limit_header());
    }
}

/// Activate an audience
///
/// Pushes the audience as a segment to an ad platform account. Activations are rate-limited
/// per caller and globally (see `RateLimit-Policy` and `RateLimit`); a refused activation
/// never reaches the upstream. Send an `Idempotency-Key` so a retry after a timeout returns
/// the original activation instead of creating a second one.
#[utoipa::path(
    operation_id = "activateAudience",
    tag = "audiences",
    params(
        ("id" = i64, Path, description = "Audience id", minimum = 1, maximum = 2147483647, example = 1001),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*"*[!#-~](?:[!-~]{0,253}[!#-~])?"*[ \t]*$"#, example = "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1",
            description = "Client-chosen key making retries safe: 1 to 255 visible ASCII characters, optionally in double quotes"),
    ),
    request_body(content = NewActivation, description = "Where and when to activate"),
    responses(
        (status = 201, description = "Activated", body = Activation, headers(
            ("Location" = String, description = "URL of the activation"),
            ("RateLimit-Policy" = String, description = "Quota policies, e.g. `\"per-caller\";q=10;w=60`"),
            ("RateLimit" = String, description = "Remaining quota and seconds to reset, e.g. `\"per-caller\";r=3;t=12`"),
            ("Idempotent-Replayed" = String, description = "`?1` when this is a replay"),
        )),
    ),
    security(("bearer" = ["audiences:activate"]))
)]
#[post("/audiences/{id}/activations")]
async fn activate_audience(
    auth: Authorized<Activate>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<String>,
    body: JsonBody<NewActivation>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let activation = body.value.validated()?;
    let principal = auth.principal().to_string();
    let mut decision = None;
    let slot = &mut decision;
    let state_ref = &state;
    let result = idempotent(
        &state,
        &auth,
        &req,
        "activateAudience",
        &body.raw,
        || async move {
            if state_ref.settings.rate_limit.enabled {
                let d = state_ref.limiter.check(&principal).await;
                let refused = match &d {
                    Decision::Admitted { .. } => None,
                    Decision::Limited { retry_after, .. } => Some(ApiError::RateLimited {
                        retry_after: *retry_after,
                    }),
                    Decision::Unavailable { retry_after } => {
                        return Err(ApiError::RateLimitUnavailable {
                            retry_after: *retry_after,
                        })
                    }
                };
                *slot = Some(d);
                if let Some(refused) = refused {
                    return Err(refused);
                }
            }
            let result = state_ref.upstream.activate(&ctx.0, id, &activation).await;
            state_ref.evict(id).await;
            let done: Activation = result?;
            stored(
                StatusCode::CREATED,
                format!("/v1/audiences/{id}/activations/{}", done.flow_id),
                &done,
            )
        },
    )
    .await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    rate_headers(&mut resp, &state, decision.as_ref());
    Ok(resp)
}
