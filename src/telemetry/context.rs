//! The request's context: its id, its trace context and the task-local [`REQUEST`] scope
//! every line it logs carries.
//!
//! [`layer`] takes the caller's `X-Request-Id` (or makes one), decides once whether the
//! request is traced ([`super::otel::HeadSampler`]: the caller's sampled flag and the
//! configured sampler), and only then opens the server span, continuing the caller's
//! `traceparent`. An unsampled request builds no span at all: it gets trace and span ids of
//! its own, which its log lines show and its vendor calls carry with the sampled flag off,
//! as W3C Trace Context asks of a participant that does not record. The id goes back in
//! `X-Request-Id`; problem bodies take it from the scope when they are written.

use std::cell::OnceCell;
use std::rc::Rc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use tracing::field::Empty;
use tracing::Instrument;

use super::otel::{self, HeadSampler, ParentContext};
use crate::auth::{Caller, CallerSubject};
pub use crate::scope::{RequestScope, TraceIds, REQUEST};

/// Request id header, accepted from callers and sent upstream.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// RFC 9211 `Cache-Status`, read back into the server span.
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

fn acceptable_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(s)
}

/// The caller's `X-Request-Id` when usable, else a new v4 UUID from the thread-local
/// generator (no getrandom(2) per request).
fn request_id(req: &ServiceRequest) -> Box<str> {
    if let Some(id) = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
    {
        return id.into();
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let id: &str = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    id.into()
}

/// Per-request values sent upstream.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub request_id: String,
    /// The `traceparent` a vendor call carries when no span of the gateway's is current:
    /// the request's own (unsampled) context when traces are on, else the caller's, passed
    /// through.
    pub traceparent: Option<String>,
}

/// The request's id and trace context, for handlers to pass upstream.
#[derive(Debug, Clone)]
pub struct RequestContext(pub CallContext);

impl FromRequest for RequestContext {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self::of(req)))
    }
}

impl RequestContext {
    /// The context of `req`; inside the request's scope, as every handler runs.
    pub fn of(req: &HttpRequest) -> Self {
        let (request_id, own) = REQUEST
            .try_with(|scope| {
                let own = scope
                    .trace
                    .get()
                    .filter(|_| !scope.sampled)
                    .map(|t| format!("00-{}-{}-00", t.trace_id, t.span_id));
                (scope.id.to_string(), own)
            })
            .unwrap_or_default();
        let traceparent = own.or_else(|| {
            req.headers()
                .get("traceparent")
                .and_then(otel::acceptable_traceparent)
                .map(str::to_string)
        });
        RequestContext(CallContext {
            request_id,
            traceparent,
        })
    }
}

/// The route template of an answer given before routing (a response extension): such an
/// answer is logged and counted under it without resolving the path against every route.
#[derive(Debug, Clone, Copy)]
pub struct Route(pub &'static str);

/// The route a traced request resolved early, for its span's name (a request extension):
/// the access line reuses it.
#[derive(Debug, Clone)]
pub struct MatchedRoute(pub String);

/// The trace id of `req`: its own when traces are on, else the trace-id part of the
/// `traceparent` it carried, when well formed. The audit trail takes the trace id from
/// here, and only here.
pub fn trace_id(req: &HttpRequest) -> Option<String> {
    let own = REQUEST
        .try_with(|scope| scope.trace.get().map(|t| t.trace_id.clone()))
        .ok()
        .flatten();
    if own.is_some() {
        return own;
    }
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(otel::acceptable_traceparent)?;
    traceparent.split('-').nth(1).map(str::to_string)
}

/// The layer described in the module docs.
pub async fn layer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    let sampler = req.app_data::<web::Data<HeadSampler>>();
    let parent = sampler
        .filter(|s| s.enabled())
        .map(|_| ParentContext::of(req.headers()));
    let sampled = match (sampler, &parent) {
        (Some(s), Some(p)) => s.sample(p),
        _ => false,
    };
    let scope = Rc::new(RequestScope {
        id,
        sampled,
        trace: OnceCell::new(),
    });
    let span = if sampled {
        REQUEST.sync_scope(scope.clone(), || server_span(&req, &scope.id))
    } else {
        tracing::Span::none()
    };
    if let Some(parent) = parent {
        let ids = otel::ids(&span).unwrap_or_else(|| parent.own_ids());
        let _ = scope.trace.set(TraceIds {
            trace_id: ids.0,
            span_id: ids.1,
        });
    }
    let mut res = REQUEST
        .scope(scope.clone(), next.call(req).instrument(span.clone()))
        .await?;
    finish_span(&span, &res);
    if let Ok(v) = HeaderValue::from_str(&scope.id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    Ok(res)
}

/// The server span of a sampled request, named and continued from the caller. It resolves
/// the route this early (for the span's name, fixed once the span starts); the access line
/// reuses it.
fn server_span(req: &ServiceRequest, request_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: otel::TARGET,
        "HTTP request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = req.method().as_str(),
        http.route = Empty,
        url.path = req.path(),
        http.response.status_code = Empty,
        enduser.id = Empty,
        audience_gateway.client_id = Empty,
        audience_gateway.cache_status = Empty,
        audience_gateway.request_id = request_id,
    );
    if span.is_disabled() {
        return span;
    }
    let route = req.match_pattern();
    let name = match &route {
        Some(route) => format!("{} {route}", req.method()),
        None => req.method().to_string(),
    };
    span.record("otel.name", name);
    if let Some(route) = route {
        span.record("http.route", route.as_str());
        req.extensions_mut().insert(MatchedRoute(route));
    }
    otel::continue_trace(&span, req.headers());
    span
}

/// Records the answer on the server span (a 5xx is an error; a 4xx is the caller's).
fn finish_span<B>(span: &tracing::Span, res: &ServiceResponse<B>) {
    if span.is_disabled() {
        return;
    }
    let status = res.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    let caller = res.request().extensions().get::<CallerSubject>().cloned();
    if let Some(CallerSubject(caller)) = caller {
        record_caller(span, &caller);
    }
    if let Some(v) = res
        .headers()
        .get(CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
    {
        span.record("audience_gateway.cache_status", v);
    }
}

fn record_caller(span: &tracing::Span, caller: &Caller) {
    span.record("enduser.id", caller.sub.as_str());
    if let Some(client) = &caller.client_id {
        span.record("audience_gateway.client_id", client.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitised() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(acceptable_request_id(&ok), Some("abc-123_x.y:z"));
        let bad = HeaderValue::from_static("abc def");
        assert_eq!(acceptable_request_id(&bad), None);
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(acceptable_request_id(&long), None);
    }
}
