//! The JSON log line, written in one pass.
//!
//! Same shape as tracing-subscriber's `json().flatten_event(true).with_current_span(true)`
//! (`timestamp`, `level`, the event's fields, `target`, and `span` with the current span's
//! fields and name), plus the id of the request being served (`request_id`) and, when it is
//! traced, its server span's `trace_id` and `span_id`: a task-local that no span carries.
//! Span fields are formatted once as JSON members and pasted into each line, where
//! tracing-subscriber parses them back into a `serde_json::Value` for every event. The line
//! is written piece by piece straight into the fmt layer's line buffer, which the layer
//! hands to the log writer ([`super::writer`]) in one call: that copy is the only one
//! between the event and the bytes the writer thread writes. Kept because every request
//! writes an access line: `cargo bench --bench gateway -- log` formats one in 0.59 µs here
//! against 1.4 to 3.0 µs with tracing-subscriber's JSON formatter (criterion, two runs on 2
//! shared cores; the library row lacks `request_id`).

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as one JSON object per line.
pub struct JsonEvent;

/// Formats span fields as JSON members (`"k":v,"k2":v2`), pasted into every line.
pub struct JsonFields;

impl<S, N> FormatEvent<S, N> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Written piece by piece into `writer`: the fmt layer's own line buffer, which it
        // hands to the log writer in one call.
        let line = &mut writer;
        let meta = event.metadata();
        line.write_str("{\"timestamp\":\"")?;
        push_timestamp(line)?;
        line.write_str("\",\"level\":\"")?;
        line.write_str(if super::client_mistake(event) {
            "WARN"
        } else {
            meta.level().as_str()
        })?;
        line.write_char('"')?;
        let mut fields = Members::new(line, false);
        event.record(&mut fields);
        fields.result?;
        let request = super::REQUEST.try_with(|scope| -> fmt::Result {
            line.write_str(",\"request_id\":")?;
            push_escaped(line, &scope.id)?;
            if let Some(t) = scope.trace.get() {
                // Hex digits: nothing to escape.
                line.write_str(",\"trace_id\":\"")?;
                line.write_str(&t.trace_id)?;
                line.write_str("\",\"span_id\":\"")?;
                line.write_str(&t.span_id)?;
                line.write_char('"')?;
            }
            Ok(())
        });
        // Outside a request there is no id to write.
        request.unwrap_or(Ok(()))?;
        line.write_str(",\"target\":")?;
        push_escaped(line, meta.target())?;
        let span = if event.is_root() {
            None
        } else {
            event
                .parent()
                .and_then(|id| ctx.span(id))
                .or_else(|| ctx.lookup_current())
        };
        if let Some(span) = span {
            line.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(f) = extensions.get::<FormattedFields<N>>() {
                if !f.is_empty() {
                    line.write_str(f.as_str())?;
                    line.write_char(',')?;
                }
            }
            line.write_str("\"name\":")?;
            push_escaped(line, span.name())?;
            line.write_char('}')?;
        }
        line.write_str("}\n")
    }
}

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::new(&mut writer, true);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.is_empty();
        let mut members = Members::new(&mut current.fields, first);
        fields.record(&mut members);
        members.result
    }
}

/// Appends each recorded field as a JSON member, with a comma before all but the first.
struct Members<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    /// The first error of the writes (none when writing to a `String`).
    result: fmt::Result,
}

impl<'a, W: Write> Members<'a, W> {
    fn new(out: &'a mut W, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    /// Writes a member: `,"name":` and then what `value` writes. Field names are Rust
    /// identifiers (or string literals in the macros), so they are escaped like any
    /// other string.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        let out = &mut *self.out;
        let first = std::mem::take(&mut self.first);
        let written = (|| {
            if !first {
                out.write_char(',')?;
            }
            push_escaped(out, field.name())?;
            out.write_char(':')?;
            value(out)
        })();
        if self.result.is_ok() {
            self.result = written;
        }
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| push_escaped(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value}")?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| {
            if value < 0 {
                out.write_char('-')?;
            }
            push_u64(out, value.unsigned_abs())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| push_u64(out, value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }
}

fn push_u64(out: &mut impl Write, mut v: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"))
}

/// A JSON string literal.
fn push_escaped(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaping(&mut *out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.0.write_str(s);
        }
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber writes it. The part up to the
/// seconds is formatted once per second and thread.
fn push_timestamp(out: &mut impl Write) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            cached.1.clear();
            let _ = write!(cached.1, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
            cached.0 = secs;
        }
        out.write_str(&cached.1)
    })?;
    let micros = now.subsec_micros();
    out.write_char('.')?;
    let mut digits = [b'0'; 6];
    let mut v = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.write_str(std::str::from_utf8(&digits).unwrap_or("000000"))?;
    out.write_char('Z')
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the tests read back.
    #[derive(Clone, Default)]
    pub(in crate::telemetry) struct Buf(pub(in crate::telemetry) Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .event_format(JsonEvent)
            .fmt_fields(JsonFields)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn lines_have_the_tracing_subscriber_json_shape() {
        let out = lines(|| {
            let span = tracing::info_span!("request", request_id = "r-1");
            span.in_scope(|| {
                tracing::info!(
                    target: "access",
                    method = "GET",
                    status = 200u16,
                    latency_ms = 0.25,
                    weird = "a\"b\\c\nd\u{1}",
                    debug = ?("x", 1),
                    "request"
                );
            });
            tracing::warn!(count = -3i64, ok = true, nan = f64::NAN, "outside");
        });
        assert_eq!(out.len(), 2);
        let a = &out[0];
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["message"], "request");
        assert_eq!(a["target"], "access");
        assert_eq!(a["method"], "GET");
        assert_eq!(a["status"], 200);
        assert_eq!(a["latency_ms"], 0.25);
        assert_eq!(a["weird"], "a\"b\\c\nd\u{1}");
        assert_eq!(a["debug"], "(\"x\", 1)");
        assert_eq!(a["span"]["request_id"], "r-1");
        assert_eq!(a["span"]["name"], "request");
        let ts = a["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
        let b = &out[1];
        assert_eq!(b["level"], "WARN");
        assert_eq!(b["count"], -3);
        assert_eq!(b["ok"], true);
        assert!(b["nan"].is_null());
        assert!(b.get("span").is_none());
    }

    #[test]
    fn unparsable_request_heads_are_warnings() {
        let out = lines(|| {
            tracing::error!(
                target: "actix_http::h1::dispatcher",
                "stream error: request parse error: invalid Header provided"
            );
            tracing::error!(target: "actix_http::h1::dispatcher", "write zero; closing");
        });
        assert_eq!(out[0]["level"], "WARN");
        assert_eq!(out[1]["level"], "ERROR");
    }

    #[test]
    fn recorded_span_fields_are_appended() {
        let out = lines(|| {
            let span = tracing::info_span!("call", op = "load", attempt = tracing::field::Empty);
            span.record("attempt", 2u64);
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(out[0]["span"]["op"], "load");
        assert_eq!(out[0]["span"]["attempt"], 2);
        assert_eq!(out[0]["span"]["name"], "call");
    }
}
