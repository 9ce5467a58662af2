//! Logging, request ids, traces and the access log.
//!
//! [`request_context`] runs around every request, outside every other layer: it takes the
//! caller's `X-Request-Id` (or makes one) and opens the request's server span (continuing
//! the caller's `traceparent`; a disabled span when traces are off), makes both the
//! [`REQUEST`] scope of every log line the request writes, returns the id in the response,
//! fills it into problem+json bodies, records metrics under the matched route template and
//! writes one access line. It knows nothing of the routes themselves.
//!
//! Log lines are queued to a worker thread that writes them to stderr (tracing-appender's
//! non-blocking writer), so a request never waits on stderr: if stderr stalls and the queue
//! fills, lines are dropped instead. [`init`] returns the guard whose drop writes out the
//! queued lines at exit.

mod json;
pub mod otel;

use std::io::BufWriter;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::field::Empty;
use tracing::{Event, Instrument, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::auth::{Caller, CallerSubject};
use crate::error::{ApiError, Problem};
use crate::settings::{LogFormat, LogSettings, OtelSettings};
use crate::AppState;

/// Request id header, accepted from callers and sent upstream.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What [`init`] set up; hold it for as long as the process logs. Its drop exports the
/// spans still queued (bounded by the export timeout), then writes out the queued lines.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    _log_writer: WorkerGuard,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take() {
            if let Err(e) = traces.shutdown() {
                tracing::warn!(error = %e, "could not export the last spans");
            }
        }
    }
}

/// Installs the global subscriber: log lines (JSON or text) to stderr through the
/// non-blocking writer, and spans to the OTLP exporter when `otel` turns traces on. Safe
/// to call more than once (the first subscriber stays).
pub fn init(log: &LogSettings, otel: &OtelSettings) -> anyhow::Result<Telemetry> {
    let traces = otel::provider(otel)?;
    // The worker drains the queue into the buffer and flushes when the queue is empty: one
    // write(2) per burst of lines, and none left waiting when the gateway goes idle.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let tracer = traces.as_ref().map(|p| p.tracer("audience-gateway"));
    let _ = subscriber(log, writer, tracer).try_init();
    Ok(Telemetry {
        traces,
        _log_writer: guard,
    })
}

/// The subscriber [`init`] installs, writing lines to `writer` (the benchmarks give it a
/// sink) and spans to `tracer`, if any. The story's spans and events ([`otel::TARGET`])
/// never become log lines.
///
/// Without a tracer the level filter is global, as tracing-subscriber's own `fmt()` sets
/// it: the disabled levels' callsites in every crate then cost one static check. With one,
/// lines and spans each get their own filter (per-layer filtering), the trace layer's capped
/// at `info` so that `debug` and `trace` callsites stay off for both.
pub fn subscriber<W>(
    s: &LogSettings,
    writer: W,
    tracer: Option<SdkTracer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let directives = format!("{},{}=off", s.level, otel::TARGET);
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = fmt::layer().with_writer(writer);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match s.format {
        LogFormat::Json => lines
            .event_format(json::JsonEvent)
            .fmt_fields(json::JsonFields)
            .boxed(),
        LogFormat::Text => lines
            .event_format(TextEvent(fmt::format().compact()))
            .boxed(),
    };
    let Some(tracer) = tracer else {
        return Box::new(tracing_subscriber::registry().with(lines).with(filter));
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Nothing else reads OpenTelemetry's thread-local context: entering a span need
        // not attach it.
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_filter(filter_fn(otel::exported).with_max_level_hint(LevelFilter::INFO));
    Box::new(
        tracing_subscriber::registry()
            .with(lines.with_filter(filter))
            .with(spans),
    )
}

/// Whether `event` is actix-http's report of a request head it could not parse (malformed,
/// or more headers than it takes): the client's mistake, already answered 400 or 431, which
/// actix-http logs at ERROR before any request (or request id) exists. Its line is written
/// at WARN (in both formats), so no client can trip error-level alerts.
pub(crate) fn client_mistake(event: &tracing::Event<'_>) -> bool {
    struct ParseError(bool);
    impl tracing::field::Visit for ParseError {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}").starts_with("stream error: request parse error");
            }
        }
    }
    let meta = event.metadata();
    if *meta.level() != tracing::Level::ERROR || meta.target() != "actix_http::h1::dispatcher" {
        return false;
    }
    let mut found = ParseError(false);
    event.record(&mut found);
    found.0
}

/// The compact text line, with ` request_id=<id>` (and ` trace_id=.. span_id=..` when the
/// request is traced) at the end while a request is served.
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
        if client_mistake(event) {
            let mut line = String::new();
            self.0.format_event(ctx, Writer::new(&mut line), event)?;
            return writer.write_str(&line.replacen("ERROR", " WARN", 1));
        }
        let Ok(scope) = REQUEST.try_with(Rc::clone) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        write!(writer, "{} request_id={}", line.trim_end(), scope.id)?;
        if let Some(t) = &scope.trace {
            write!(writer, " trace_id={} span_id={}", t.trace_id, t.span_id)?;
        }
        writeln!(writer)
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

/// Per-request values sent upstream.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub request_id: String,
    /// The caller's `traceparent`, passed on when the gateway does not trace the call
    /// itself.
    pub traceparent: Option<String>,
}

/// The request's id and trace context, for handlers to pass upstream: the id is the
/// request's [`REQUEST`] id, the trace context its `traceparent` header when well formed.
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
            request_id: REQUEST
                .try_with(|scope| scope.id.to_string())
                .unwrap_or_default(),
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

/// The trace id of `req`: its server span's when traces are on, else the trace-id part of
/// the `traceparent` it carried, when well formed. The audit trail takes the trace id from
/// here, and only here.
pub fn trace_id(req: &HttpRequest) -> Option<String> {
    let traced = REQUEST
        .try_with(|scope| scope.trace.as_ref().map(|t| t.trace_id.clone()))
        .ok()
        .flatten();
    if traced.is_some() {
        return traced;
    }
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(acceptable_traceparent)?;
    traceparent.split('-').nth(1).map(str::to_string)
}

/// The request whose code is running: every log line written meanwhile carries its id and,
/// when it is traced, its server span's trace and span id.
#[derive(Debug)]
pub struct RequestScope {
    pub id: Box<str>,
    pub trace: Option<TraceIds>,
}

/// A traced request's ids, in hex.
#[derive(Debug)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

tokio::task_local! {
    /// The [`RequestScope`] of the request whose code is running, set per poll of the
    /// request's future, so it follows the request across awaits whatever span is current.
    pub static REQUEST: Rc<RequestScope>;
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

/// RFC 9211 `Cache-Status`, read back into the server span.
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The request's server span, named and continued from the caller when traces are on.
/// Only a traced request resolves its route this early (for the span's name, which is
/// fixed once the span starts); the answer reuses it.
fn server_span(req: &ServiceRequest, request_id: &str) -> (tracing::Span, Option<String>) {
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
        return (span, None);
    }
    let route = req.match_pattern();
    let name = match &route {
        Some(route) => format!("{} {route}", req.method()),
        None => req.method().to_string(),
    };
    span.record("otel.name", name);
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    otel::continue_trace(&span, req.headers());
    (span, route)
}

/// Records the answer on the server span (a 5xx is an error; a 4xx is the caller's).
fn finish_span(span: &tracing::Span, res: &ServiceResponse<BoxBody>, caller: Option<&Caller>) {
    if span.is_disabled() {
        return;
    }
    let status = res.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(caller) = caller {
        span.record("enduser.id", caller.sub.as_str());
        if let Some(client) = &caller.client_id {
            span.record("audience_gateway.client_id", client.as_str());
        }
    }
    if let Some(v) = res
        .headers()
        .get(CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
    {
        span.record("audience_gateway.cache_status", v);
    }
}

/// The middleware described in the module docs.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let (span, early_route) = server_span(&req, &id);
    let scope = Rc::new(RequestScope {
        id,
        trace: otel::ids(&span).map(|(trace_id, span_id)| TraceIds { trace_id, span_id }),
    });
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
        // `call` runs inside the scope and the span too: the cache layer, routing and
        // extractors start there.
        REQUEST
            .scope(
                scope.clone(),
                async move { next.call(req).await }.instrument(span.clone()),
            )
            .await?
            .map_into_boxed_body()
    };
    // An answer given before routing names its route; otherwise the matched pattern, or
    // the path resolved against the routes when none ran (a refused preflight).
    let named = res.response().extensions().get::<Route>().map(|r| r.0);
    let matched = match (named, early_route) {
        (Some(_), _) => None,
        (None, Some(route)) => Some(route),
        (None, None) => res.request().match_pattern(),
    };
    let route = named.or(matched.as_deref()).unwrap_or("unmatched");
    let caller = res
        .request()
        .extensions()
        .get::<CallerSubject>()
        .map(|s| s.0.clone());
    let mut res = fill_problem(res, &scope.id);
    if let Ok(v) = HeaderValue::from_str(&scope.id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    finish_span(&span, &res, caller.as_deref());
    drop(span);
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = &state {
        state
            .metrics
            .http_request(route, method.as_str(), status, elapsed);
    }
    REQUEST.sync_scope(scope, || {
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
    fn unparsable_request_heads_are_warnings_in_text_lines_too() {
        let buf = json::tests::Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .event_format(TextEvent(fmt::format().compact()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                target: "actix_http::h1::dispatcher",
                "stream error: request parse error: invalid Header provided"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains(" WARN actix_http"), "{text}");
        assert!(!text.contains("ERROR"), "{text}");
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
