//! OpenTelemetry traces: the tracer provider built from `otel.*`, the W3C trace context read
//! from callers and written to the vendor, and the one target of the spans and events that
//! tell a request's story.
//!
//! The story is told with `tracing` spans and events on [`TARGET`]; tracing-opentelemetry
//! turns them into OTLP spans. Log lines never show them, and when traces are off no layer
//! wants them, so each `info_span!(target: TARGET, ..)` is a disabled span that costs one
//! interest check.
//!
//! Sampling is decided once per request, before any span exists ([`HeadSampler`], the
//! configured `OTEL_TRACES_SAMPLER` with OpenTelemetry's own rules), and the trace layer
//! takes a span or event only inside a sampled request or under a span it took
//! ([`exported`], [`in_sampled_request`]): a request the sampler drops builds no span data.
//! The SDK then records every span it is given.

use std::collections::HashMap;
use std::fmt::Write as _;

use actix_web::http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Metadata;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::context::REQUEST;

use crate::settings::{OtelExporter, OtelSettings, Sampler};

/// The target of the request story's spans and events.
pub const TARGET: &str = "audience_gateway::trace";

/// What the trace layer takes (per callsite): the story's spans and events, and the
/// gateway's own log events at `info` and above (a vendor failure, a refusal, a renewed
/// session) as events of the span they happen in.
pub fn exported(meta: &Metadata<'_>) -> bool {
    meta.target() == TARGET
        || (meta.is_event()
            && meta.target().starts_with("audience_gateway")
            && *meta.level() <= tracing::Level::INFO)
}

/// What the trace layer takes (per span or event): inside a request, only what a sampled
/// request does; outside one (a background refresh), only what happens under a span it
/// took.
pub fn in_sampled_request<S>(cx: &Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    REQUEST
        .try_with(|scope| scope.sampled)
        .unwrap_or_else(|_| cx.lookup_current().is_some())
}

/// The provider exporting in batches from its own thread (`OTEL_BSP_*` tune the batches);
/// `None` when traces are off.
pub fn provider(s: &OtelSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    if s.exporter == OtelExporter::None {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(s.traces_url())
        .with_timeout(s.timeout)
        .with_headers(s.header_pairs().into_iter().collect::<HashMap<_, _>>())
        .build()?;
    let attributes = s
        .resource_pairs()
        .into_iter()
        .filter(|(k, _)| k != "service.name")
        .map(|(k, v)| KeyValue::new(k, v));
    let resource = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(attributes)
        .with_service_name(s.effective_service_name())
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // Sampled or not is decided before the span exists (`HeadSampler`).
            .with_sampler(SdkSampler::AlwaysOn)
            .with_resource(resource)
            .build(),
    ))
}

/// The sampling decision of a request, taken before its server span exists, with
/// OpenTelemetry's rules for the configured sampler: `parentbased_*` follows a caller's
/// sampled flag, `traceidratio` keeps a trace when the low 63 bits of its id fall under the
/// ratio (the SDK's own test, so every service keeps the same traces).
#[derive(Debug, Clone)]
pub struct HeadSampler {
    sampler: Option<Sampler>,
    ratio: f64,
}

impl HeadSampler {
    /// The sampler of `s`; one that samples nothing when traces are off.
    pub fn new(s: &OtelSettings) -> Self {
        Self {
            sampler: (s.exporter != OtelExporter::None).then_some(s.sampler),
            ratio: s.sampler_arg,
        }
    }

    /// Whether traces are on at all.
    pub fn enabled(&self) -> bool {
        self.sampler.is_some()
    }

    /// Whether the request with `parent` is traced.
    pub fn sample(&self, parent: &ParentContext) -> bool {
        let by_ratio = || {
            if self.ratio >= 1.0 {
                return true;
            }
            let bound = (self.ratio.max(0.0) * (1u64 << 63) as f64) as u64;
            let low = u64::from_be_bytes(parent.trace_id[8..].try_into().unwrap_or_default());
            (low >> 1) < bound
        };
        let remote = parent.remote_sampled;
        match self.sampler {
            None | Some(Sampler::AlwaysOff) => false,
            Some(Sampler::AlwaysOn) => true,
            Some(Sampler::TraceIdRatio) => by_ratio(),
            Some(Sampler::ParentbasedAlwaysOn) => remote.unwrap_or(true),
            Some(Sampler::ParentbasedAlwaysOff) => remote.unwrap_or(false),
            Some(Sampler::ParentbasedTraceIdRatio) => remote.unwrap_or_else(by_ratio),
        }
    }
}

/// The trace a request belongs to: the caller's, from a well-formed `traceparent`, or a
/// new one.
#[derive(Debug, Clone)]
pub struct ParentContext {
    trace_id: [u8; 16],
    /// The caller's sampled flag, when the caller sent a trace context.
    remote_sampled: Option<bool>,
}

impl ParentContext {
    /// The context `headers` carry, or a new trace.
    pub fn of(headers: &HeaderMap) -> Self {
        let parsed = headers
            .get("traceparent")
            .and_then(acceptable_traceparent)
            .and_then(|tp| {
                let mut parts = tp.split('-');
                let (_, trace, _, flags) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                let trace_id = u128::from_str_radix(trace, 16).ok()?.to_be_bytes();
                let flags = u8::from_str_radix(flags, 16).ok()?;
                (trace_id != [0; 16]).then_some((trace_id, flags & 1 == 1))
            });
        match parsed {
            Some((trace_id, sampled)) => Self {
                trace_id,
                remote_sampled: Some(sampled),
            },
            None => Self {
                trace_id: rand::random::<u128>().max(1).to_be_bytes(),
                remote_sampled: None,
            },
        }
    }

    /// The trace id and a new span id, in hex: the ids of a request that is not sampled.
    pub fn own_ids(&self) -> (String, String) {
        let span_id: u64 = rand::random::<u64>().max(1);
        (hex(&self.trace_id), hex(&span_id.to_be_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// W3C `traceparent`: version-traceid-parentid-flags, lower-case hex.
pub fn acceptable_traceparent(v: &actix_web::http::header::HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let mut parts = 0;
    let lens = [2, 32, 16, 2];
    for (i, p) in s.split('-').enumerate() {
        parts += 1;
        let ok = lens.get(i).is_some_and(|&l| p.len() == l)
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return None;
        }
    }
    (parts == 4).then_some(s)
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes the caller's `traceparent`/`tracestate` the parent of `span`, which then continues
/// the caller's trace and follows its sampled flag; without a usable one `span` starts a
/// new trace.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace and span id of `span` in hex, when it is traced.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[derive(Default)]
struct Outgoing(Vec<(&'static str, String)>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// The `traceparent` (and `tracestate`) naming `span` as the parent of a call it makes;
/// empty when `span` is not traced.
pub fn trace_headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut out = Outgoing::default();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn sampler(sampler: Sampler, ratio: f64) -> HeadSampler {
        HeadSampler {
            sampler: Some(sampler),
            ratio,
        }
    }

    fn parent(flags: &str, trace: &str) -> ParentContext {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static("traceparent"),
            HeaderValue::from_str(&format!("00-{trace}-00f067aa0ba902b7-{flags}")).unwrap(),
        );
        ParentContext::of(&headers)
    }

    #[test]
    fn parent_based_samplers_follow_the_callers_flag() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        for s in [
            Sampler::ParentbasedAlwaysOn,
            Sampler::ParentbasedAlwaysOff,
            Sampler::ParentbasedTraceIdRatio,
        ] {
            assert!(sampler(s, 0.0).sample(&parent("01", trace)), "{s:?}");
            assert!(!sampler(s, 1.0).sample(&parent("00", trace)), "{s:?}");
        }
        let root = ParentContext::of(&HeaderMap::new());
        assert!(sampler(Sampler::ParentbasedAlwaysOn, 0.0).sample(&root));
        assert!(!sampler(Sampler::ParentbasedAlwaysOff, 1.0).sample(&root));
        assert!(!sampler(Sampler::ParentbasedTraceIdRatio, 0.0).sample(&root));
    }

    #[test]
    fn the_ratio_is_the_sdks_test_on_the_trace_id() {
        // Low 64 bits 0x...0000_0001 >> 1 = 0: under any positive ratio.
        let low = parent("00", "ffffffffffffffff0000000000000001");
        // Low 64 bits all ones >> 1 = 2^63 - 1: under none below 1.
        let high = parent("00", "0000000000000001ffffffffffffffff");
        let ratio = sampler(Sampler::TraceIdRatio, 0.01);
        assert!(ratio.sample(&low));
        assert!(!ratio.sample(&high));
        assert!(sampler(Sampler::TraceIdRatio, 1.0).sample(&high));
        assert!(!sampler(Sampler::TraceIdRatio, 0.0).sample(&low));
        // About 1 % of new traces.
        let kept = (0..20_000)
            .filter(|_| ratio.sample(&ParentContext::of(&HeaderMap::new())))
            .count();
        assert!((100..300).contains(&kept), "{kept}");
    }

    #[test]
    fn traces_off_sample_nothing() {
        let off = HeadSampler::new(&OtelSettings::default());
        assert!(!off.enabled());
        assert!(!off.sample(&ParentContext::of(&HeaderMap::new())));
    }

    #[test]
    fn traceparent_must_be_well_formed() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(acceptable_traceparent(&ok).is_some());
        for bad in [
            "00-XYZ-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-02",
        ] {
            assert!(
                acceptable_traceparent(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
        }
    }
}
