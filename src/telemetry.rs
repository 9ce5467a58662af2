//! Logging, request ids and the access log.
//!
//! [`request_context`] runs around every request, outside every other layer: it takes the
//! caller's `X-Request-Id` (or makes one), makes it the [`REQUEST_ID`] of every log line
//! the request writes, returns the id in the response, fills it into problem+json bodies,
//! records metrics under the matched route template and writes one access line. It knows
//! nothing of the routes themselves.
//!
//! Log lines are queued to a worker thread that writes them to stderr (tracing-appender's
//! non-blocking writer), so a request never waits on stderr: if stderr stalls and the queue
//! fills, lines are dropped instead. [`init`] returns the guard whose drop writes out the
//! queued lines at exit.

mod json;

use std::io::BufWriter;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::auth::CallerSubject;
use crate::error::{ApiError, Problem};
use crate::settings::{LogFormat, LogSettings};
use crate::upstream::CallContext;
use crate::AppState;

/// Request id header, accepted from callers and sent upstream.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber (JSON or text) writing to stderr through the
/// non-blocking writer. Keep the guard for as long as the process logs: dropping it writes
/// out the queued lines. Safe to call more than once (the first subscriber stays).
pub fn init(s: &LogSettings) -> WorkerGuard {
    // The worker drains the queue into the buffer and flushes when the queue is empty: one
    // write(2) per burst of lines, and none left waiting when the gateway goes idle.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let _ = subscriber(s, writer).try_init();
    guard
}

/// The subscriber [`init`] installs, writing to `writer` (the benchmarks give it a sink).
pub fn subscriber<W>(s: &LogSettings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&s.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    match s.format {
        LogFormat::Json => Box::new(
            builder
                .event_format(json::JsonEvent)
                .fmt_fields(json::JsonFields)
                .finish(),
        ),
        LogFormat::Text => Box::new(
            builder
                .event_format(TextEvent(fmt::format().compact()))
                .finish(),
        ),
    }
}

/// The compact text line, with ` request_id=<id>` at the end while a request is served.
struct TextEvent(fmt::format::Format<fmt::format::Compact>);

impl<S, N> FormatEvent<S, N> for TextEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Ok(id) = REQUEST_ID.try_with(Rc::clone) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writeln!(writer, "{} request_id={id}", line.trim_end())
    }
}

fn acceptable_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(s)
}

/// W3C `traceparent`: version-traceid-parentid-flags, lower-case hex.
fn acceptable_traceparent(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [2, 32, 16, 2];
    let ok = parts.len() == 4
        && parts.iter().zip(lens).all(|(p, l)| {
            p.len() == l
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    ok.then(|| s.to_string())
}

/// The request's id and trace context, for handlers to pass upstream: the id is the
/// request's [`REQUEST_ID`], the trace context its `traceparent` header when well formed.
#[derive(Debug, Clone)]
pub struct RequestContext(pub CallContext);

impl FromRequest for RequestContext {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self::of(req)))
    }
}

impl RequestContext {
    /// The context of `req`; inside the request-id scope, as every handler runs.
    pub fn of(req: &HttpRequest) -> Self {
        RequestContext(CallContext {
            request_id: REQUEST_ID.try_with(|id| id.to_string()).unwrap_or_default(),
            traceparent: req
                .headers()
                .get("traceparent")
                .and_then(acceptable_traceparent),
        })
    }
}

/// The route template of an answer given before routing (a response extension): such an
/// answer is logged and counted under it without resolving the path against every route.
#[derive(Debug, Clone, Copy)]
pub struct Route(pub &'static str);

/// The trace id of `req`: the trace-id part of the `traceparent` it carried, when well
/// formed. The audit trail takes the trace id from here, and only here.
pub fn trace_id(req: &HttpRequest) -> Option<String> {
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(acceptable_traceparent)?;
    traceparent.split('-').nth(1).map(str::to_string)
}

tokio::task_local! {
    /// The id of the request whose code is running: every log line written meanwhile
    /// carries it (`request_id`), whatever span is current. Set per poll of the request's
    /// future, so it follows the request across awaits without a span per request.
    pub static REQUEST_ID: Rc<str>;
}

/// The caller's `X-Request-Id` when usable, else a new v4 UUID from the thread-local
/// generator (no getrandom(2) per request).
fn request_id(req: &ServiceRequest) -> Rc<str> {
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

/// The middleware described in the module docs.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = request_id(&req);
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let limit = state
        .as_ref()
        .map_or(16 * 1024, |s| s.settings.server.max_header_bytes);
    let head_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let res = if head_bytes > limit {
        let resp = actix_web::ResponseError::error_response(&ApiError::HeadersTooLarge { limit });
        req.into_response(resp)
    } else {
        // Handlers' errors arrive here as responses; only inner middleware can fail
        // outright (e.g. CORS refusing an origin), and actix renders those itself.
        // `call` runs inside the scope too: the cache layer, routing and extractors
        // start there.
        REQUEST_ID
            .scope(request_id.clone(), async move { next.call(req).await })
            .await?
            .map_into_boxed_body()
    };
    // An answer given before routing names its route; otherwise the matched pattern, or
    // the path resolved against the routes when none ran (a refused preflight).
    let named = res.response().extensions().get::<Route>().map(|r| r.0);
    let matched = match named {
        Some(_) => None,
        None => res.request().match_pattern(),
    };
    let route = named.or(matched.as_deref()).unwrap_or("unmatched");
    let caller = res
        .request()
        .extensions()
        .get::<CallerSubject>()
        .map(|s| s.0.clone());
    let mut res = fill_problem(res, &request_id);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = &state {
        state
            .metrics
            .http_request(route, method.as_str(), status, elapsed);
    }
    REQUEST_ID.sync_scope(request_id, || {
        tracing::info!(
            target: "access",
            method = method.as_str(),
            route,
            status,
            // Whole microseconds: a short number to write.
            latency_ms = elapsed.as_micros() as f64 / 1000.0,
            sub = caller.as_ref().map_or("-", |caller| caller.sub.as_str()),
            "request"
        );
    });
    Ok(res)
}

/// Puts the request id into a problem+json body.
fn fill_problem(res: ServiceResponse<BoxBody>, request_id: &str) -> ServiceResponse<BoxBody> {
    let problem = res.response().extensions().get::<Problem>().cloned();
    match problem {
        Some(mut p) => {
            p.request_id = Some(request_id.to_string());
            let body = p.to_bytes();
            res.map_body(|_, _| BoxBody::new(body))
        }
        None => res,
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

    #[test]
    fn traceparent_must_be_well_formed() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(acceptable_traceparent(&ok).is_some());
        let bad = HeaderValue::from_static("00-XYZ-00f067aa0ba902b7-01");
        assert!(acceptable_traceparent(&bad).is_none());
    }
}
