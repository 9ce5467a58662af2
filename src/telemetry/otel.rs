//! OpenTelemetry traces: the tracer provider built from `otel.*`, the W3C trace context read
//! from callers and written to the vendor, and the one target of the spans and events that
//! tell a request's story.
//!
//! The story is told with `tracing` spans and events on [`TARGET`]; tracing-opentelemetry
//! turns them into OTLP spans. Log lines never show them, and when traces are off no layer
//! wants them, so each `info_span!(target: TARGET, ..)` is a disabled span that costs one
//! interest check.

use std::collections::HashMap;

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

use crate::settings::{OtelExporter, OtelSettings, Sampler};

/// The target of the request story's spans and events.
pub const TARGET: &str = "audience_gateway::trace";

/// What the trace layer takes: the story's spans and events, and the gateway's own log
/// events at `info` and above (a vendor failure, a refusal, a renewed session) as events
/// of the span they happen in.
pub fn exported(meta: &Metadata<'_>) -> bool {
    meta.target() == TARGET
        || (meta.is_event()
            && meta.target().starts_with("audience_gateway")
            && *meta.level() <= tracing::Level::INFO)
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
    let ratio = || SdkSampler::TraceIdRatioBased(s.sampler_arg);
    let sampler = match s.sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::TraceIdRatio => ratio(),
        Sampler::ParentbasedAlwaysOn => SdkSampler::ParentBased(Box::new(SdkSampler::AlwaysOn)),
        Sampler::ParentbasedAlwaysOff => SdkSampler::ParentBased(Box::new(SdkSampler::AlwaysOff)),
        Sampler::ParentbasedTraceIdRatio => SdkSampler::ParentBased(Box::new(ratio())),
    };
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
            .with_sampler(sampler)
            .with_resource(resource)
            .build(),
    ))
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
