//! The audit trail of writes: one event on the log target [`TARGET`] for every request to
//! a documented operation that changes something (POST, PUT, PATCH, DELETE), whatever its
//! outcome: created, refused by authentication or authorization, invalid, a failed
//! precondition, rate-limited, refused by the vendor, failed, or replayed from an
//! `Idempotency-Key`.
//!
//! One mechanism for every write: [`record`] wraps the routes (inside the cache layer, so a
//! cached read never reaches it; a read passes straight through) and writes the event once
//! the response is known. Which requests are writes, and their operation ids, comes from
//! the OpenAPI document ([`Operations`]), so a new write operation is audited without a
//! line here. Handlers add only what the request and response do not show: the validated
//! `Idempotency-Key` and whether the answer is a replay ([`note_idempotency`]).
//!
//! An event carries ids, names and outcomes, never a token, a secret or a body: of a `201`
//! body only the ids listed in [`Created`] are read. The fields are documented in the
//! README ("Audit trail").

use std::collections::HashMap;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::auth::CallerSubject;
use crate::error::Problem;

/// The log target of audit events.
pub const TARGET: &str = "audit";

/// What a write's `id` names, from the operation's first tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Audience,
    Campaign,
    Other,
}

/// An audited operation: its OpenAPI `operationId` and what the `id` of its `201` body is.
#[derive(Debug, Clone)]
struct Operation {
    id: String,
    subject: Subject,
}

/// The write operations of the OpenAPI document, by method and path template (the route
/// pattern actix matches, e.g. `/v1/audiences/{id}`).
#[derive(Debug, Default)]
pub struct Operations(HashMap<(Method, String), Operation>);

impl Operations {
    /// Every operation of `spec` whose method changes something.
    pub fn new(spec: &utoipa::openapi::OpenApi) -> Self {
        let mut ops = HashMap::new();
        for (path, item) in &spec.paths.paths {
            let writes = [
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in writes {
                let Some(op) = op else { continue };
                let Some(id) = op.operation_id.clone() else {
                    continue;
                };
                let subject = match op.tags.as_ref().and_then(|t| t.first()).map(String::as_str) {
                    Some("audiences") => Subject::Audience,
                    Some("campaigns") => Subject::Campaign,
                    _ => Subject::Other,
                };
                ops.insert((method, path.clone()), Operation { id, subject });
            }
        }
        Self(ops)
    }

    fn get(&self, method: &Method, pattern: &str) -> Option<&Operation> {
        // Keyed by owned strings; a write is rare enough for one allocation.
        self.0.get(&(method.clone(), pattern.to_string()))
    }

    /// The audited operation ids, sorted (for tests and documentation).
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.0.values().map(|o| o.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }
}

/// What only the handler knows about a write, kept in the request's extensions.
#[derive(Debug, Clone)]
struct IdempotencyNote {
    key: String,
    replayed: bool,
}

/// Records the request's accepted `Idempotency-Key` and whether its answer is a replay.
pub fn note_idempotency(req: &HttpRequest, key: &str, replayed: bool) {
    req.extensions_mut().insert(IdempotencyNote {
        key: key.to_string(),
        replayed,
    });
}

/// The ids read from the body of a `201`: what was created. Unknown fields are ignored;
/// nothing else of the body is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: Option<i64>,
    audience_id: Option<i64>,
    campaign_id: Option<i64>,
    account_id: Option<i64>,
    flow_id: Option<String>,
    segment_id: Option<i64>,
}

/// `success` (2xx), `refused` (4xx) or `failed` (5xx and anything else).
fn outcome(status: StatusCode) -> &'static str {
    if status.is_success() {
        "success"
    } else if status.is_client_error() {
        "refused"
    } else {
        "failed"
    }
}

/// The middleware described in the module docs.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let res = next.call(req).await?.map_into_boxed_body();
    let operations = res.request().app_data::<web::Data<Operations>>().cloned();
    let pattern = res.request().match_pattern();
    let operation = operations
        .as_ref()
        .zip(pattern.as_deref())
        .and_then(|(ops, pattern)| ops.get(res.request().method(), pattern))
        .cloned();
    let Some(operation) = operation else {
        return Ok(res);
    };
    let (res, created) = created(res);
    emit(res.request(), res.response(), &operation, created);
    Ok(res)
}

/// The ids of a `201` body, with the response rebuilt around the same bytes.
fn created(res: ServiceResponse<BoxBody>) -> (ServiceResponse<BoxBody>, Created) {
    if res.status() != StatusCode::CREATED {
        return (res, Created::default());
    }
    let (req, resp) = res.into_parts();
    let (resp, body) = resp.into_parts();
    let (body, created) = match body.try_into_bytes() {
        Ok(bytes) => {
            let created = serde_json::from_slice(&bytes).unwrap_or_default();
            (BoxBody::new(bytes), created)
        }
        Err(body) => (body, Created::default()),
    };
    (ServiceResponse::new(req, resp.set_body(body)), created)
}

/// Writes the one event of a finished write.
fn emit(req: &HttpRequest, resp: &HttpResponse, op: &Operation, created: Created) {
    let status = resp.status();
    let problem = resp.extensions().get::<Problem>().map(|p| p.code.clone());
    let caller = req.extensions().get::<CallerSubject>().map(|c| c.0.clone());
    let note = req.extensions().get::<IdempotencyNote>().cloned();
    let path_id = req
        .match_info()
        .get("id")
        .and_then(|id| id.parse::<i64>().ok());
    let (created_audience, created_campaign) = match op.subject {
        Subject::Audience => (created.id, None),
        Subject::Campaign => (None, created.id),
        Subject::Other => (None, None),
    };
    let audience_id = path_id
        .filter(|_| op.subject == Subject::Audience)
        .or(created.audience_id)
        .or(created_audience);
    let campaign_id = created_campaign.or(created.campaign_id);
    tracing::info!(
        target: TARGET,
        operation = op.id.as_str(),
        status = status.as_u16(),
        outcome = outcome(status),
        code = problem.as_deref(),
        sub = caller.as_ref().map(|c| c.sub.as_str()),
        client_id = caller.as_ref().and_then(|c| c.client_id.as_deref()),
        audience_id,
        campaign_id,
        account_id = created.account_id,
        flow_id = created.flow_id.as_deref(),
        segment_id = created.segment_id,
        idempotency_key = note.as_ref().map(|n| n.key.as_str()),
        replayed = note.as_ref().is_some_and(|n| n.replayed),
        trace_id = crate::telemetry::trace_id(req).as_deref(),
        "write"
    );
}
