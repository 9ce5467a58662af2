//! Logging and traces: the subscriber, the request's context ([`context`]: request id,
//! trace context, the task-local scope of its log lines) and the access line with the HTTP
//! metrics ([`access`]). It knows nothing of the routes themselves.
//!
//! Log lines go to a buffer of the thread that writes them, which a background thread
//! writes to stderr in batches ([`writer`]), so a request never waits on stderr: if stderr
//! stalls and the buffers fill, lines are dropped instead. [`init`] returns the guard whose
//! drop writes out the buffered lines at exit.

pub mod access;
pub mod context;
mod json;
pub mod otel;
pub mod writer;

use std::rc::Rc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{dynamic_filter_fn, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::settings::{LogFormat, LogSettings, OtelSettings};

pub use context::{
    trace_id, CallContext, RequestContext, RequestScope, Route, TraceIds, REQUEST,
    REQUEST_ID_HEADER,
};

/// What [`init`] set up; hold it for as long as the process logs. Its drop exports the
/// spans still queued (bounded by the export timeout), then writes out the queued lines.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    log_writer: writer::LogWriterGuard,
}

impl Telemetry {
    /// Log lines dropped so far because stderr did not keep up.
    pub fn dropped_log_lines(&self) -> u64 {
        self.log_writer.dropped()
    }
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
/// [`writer`], and spans to the OTLP exporter when `otel` turns traces on. Safe to call
/// more than once (the first subscriber stays).
pub fn init(log: &LogSettings, otel: &OtelSettings) -> anyhow::Result<Telemetry> {
    init_with_sink(log, otel, std::io::stderr())
}

/// [`init`], with the log lines going to `sink` instead of stderr.
pub fn init_with_sink(
    log: &LogSettings,
    otel: &OtelSettings,
    sink: impl std::io::Write + Send + 'static,
) -> anyhow::Result<Telemetry> {
    let traces = otel::provider(otel)?;
    let (writer, log_writer) = writer::LogWriter::spawn(sink, writer::Options::default())?;
    let tracer = traces.as_ref().map(|p| p.tracer("audience-gateway"));
    let _ = subscriber(log, writer, tracer).try_init();
    Ok(Telemetry { traces, log_writer })
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
        .with_filter(
            dynamic_filter_fn(|meta, cx| otel::exported(meta) && otel::in_sampled_request(cx))
                .with_max_level_hint(LevelFilter::INFO),
        );
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
        // Straight into `writer`, less the line's trailing newline (and other whitespace).
        self.0
            .format_event(ctx, Writer::new(&mut TrimmedEnd::new(&mut writer)), event)?;
        write!(writer, " request_id={}", scope.id)?;
        if let Some(t) = scope.trace.get() {
            write!(writer, " trace_id={} span_id={}", t.trace_id, t.span_id)?;
        }
        writeln!(writer)
    }
}

/// Passes writes on, holding back trailing whitespace until something else follows it: what
/// has been written through it is the text so far with `str::trim_end` applied (but for a
/// run of more than [`HELD`] bytes of whitespace, which is passed on).
struct TrimmedEnd<'a, W: std::fmt::Write> {
    inner: &'a mut W,
    held: [u8; HELD],
    held_len: usize,
}

/// The most trailing whitespace [`TrimmedEnd`] holds back.
const HELD: usize = 32;

impl<'a, W: std::fmt::Write> TrimmedEnd<'a, W> {
    fn new(inner: &'a mut W) -> Self {
        Self {
            inner,
            held: [0; HELD],
            held_len: 0,
        }
    }

    fn release(&mut self) -> std::fmt::Result {
        let held = std::mem::take(&mut self.held_len);
        // Whole `str`s were held, so this is one.
        self.inner
            .write_str(std::str::from_utf8(&self.held[..held]).unwrap_or_default())
    }

    fn hold(&mut self, ws: &str) -> std::fmt::Result {
        if self.held_len + ws.len() > HELD {
            self.release()?;
            if ws.len() > HELD {
                return self.inner.write_str(ws);
            }
        }
        self.held[self.held_len..self.held_len + ws.len()].copy_from_slice(ws.as_bytes());
        self.held_len += ws.len();
        Ok(())
    }
}

impl<W: std::fmt::Write> std::fmt::Write for TrimmedEnd<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let text = s.trim_end();
        if !text.is_empty() {
            self.release()?;
            self.inner.write_str(text)?;
        }
        self.hold(&s[text.len()..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text-line subscriber writing into the returned buffer.
    fn text_subscriber() -> (json::tests::Buf, impl Subscriber + Send + Sync) {
        let buf = json::tests::Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .event_format(TextEvent(fmt::format().compact()))
            .finish();
        (buf, subscriber)
    }

    #[test]
    fn unparsable_request_heads_are_warnings_in_text_lines_too() {
        let (buf, subscriber) = text_subscriber();
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
    fn text_lines_of_a_request_end_with_its_ids() {
        let (buf, subscriber) = text_subscriber();
        let scope = Rc::new(RequestScope {
            id: "r-1".into(),
            sampled: true,
            trace: TraceIds {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            }
            .into(),
        });
        tracing::subscriber::with_default(subscriber, || {
            REQUEST.sync_scope(scope, || {
                tracing::info!(target: "access", status = 200u16, "request");
                tracing::info!("spaced \t ");
            });
            tracing::info!("outside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let ids =
            " request_id=r-1 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7";
        assert!(
            lines[0].ends_with(&format!("request status=200{ids}")),
            "{text}"
        );
        assert!(lines[1].ends_with(&format!(": spaced{ids}")), "{text}");
        assert!(lines[2].ends_with(": outside"), "{text}");
        assert_eq!(lines.len(), 3, "{text}");
    }

    #[test]
    fn trimmed_end_is_trim_end() {
        for pieces in [
            &["a b ", " c", "\n"][..],
            &["x", " ", "\t", "\n", ""],
            &["", "  ", "y\u{3000}", "z \n"],
            &[" lead", &" ".repeat(40), "tail \n"],
        ] {
            let mut out = String::new();
            let mut t = TrimmedEnd::new(&mut out);
            for p in pieces {
                std::fmt::Write::write_str(&mut t, p).unwrap();
            }
            assert_eq!(out, pieces.concat().trim_end(), "{pieces:?}");
        }
    }
}
