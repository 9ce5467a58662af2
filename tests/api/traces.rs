//! OpenTelemetry traces, with the real binary configured by the standard `OTEL_*` variables
//! exporting to an OTLP/HTTP receiver in the test: the server span and its vendor-call,
//! login and back-off children with the right parents, the caller's trace continued (and
//! its sampled flag followed), our span sent to the vendor as the parent, the resource,
//! rate-limit and circuit-breaker events, trace ids in log lines and audit events, and an
//! unreachable collector that fails no request.

use audience_gateway::auth::ALL_SCOPES;
use audience_sandbox::SimulatorConfig;
use serde_json::Value;

use crate::helpers::otlp::{OtlpReceiver, Received};
use crate::helpers::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// The server span of the request sent with `X-Request-Id: rid`.
fn server_span<'a>(spans: &'a [Received], rid: &str) -> &'a Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|s| s.attr("audience_gateway.request_id").as_deref() == Some(rid))
        .collect();
    assert_eq!(found.len(), 1, "one server span for {rid}: {found:#?}");
    found[0]
}

fn children<'a>(spans: &'a [Received], parent: &Received) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.parent_span_id() == parent.span_id() && s.trace_id() == parent.trace_id())
        .collect()
}

fn sim_traceparent(sim: &audience_sandbox::SimulatorHandle) -> String {
    sim.last_request_headers()
        .into_iter()
        .find(|(n, _)| n == "traceparent")
        .map(|(_, v)| v)
        .expect("the vendor call carries a traceparent")
}

#[actix_web::test]
async fn requests_are_traced_end_to_end_over_otlp() {
    let receiver = OtlpReceiver::start().await;
    let ledger = fresh_ledger_dir();
    let (sim, child, base) = serve_binary_with_simulator(&[
        ("GATEWAY_UPSTREAM__RETRIES", "1"),
        ("GATEWAY_UPSTREAM__RETRY_BASE_MS", "10"),
        ("GATEWAY_UPSTREAM__BREAKER_FAILURES", "1"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "1"),
        ("GATEWAY_LEDGER__DIR", ledger.as_str()),
        ("GATEWAY_LOG__FORMAT", "json"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "gateway-under-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let client = reqwest::Client::new();
    let bearer = token("tracer", &ALL_SCOPES);
    let get = |rid: &'static str, path: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(&bearer)
            .header("x-request-id", rid)
    };

    // A: the caller's sampled trace, continued; a miss with the first login.
    let a = get("tr-a", "/v1/audiences/1001")
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .expect("request a");
    assert_eq!(a.status(), 200);
    let sent_a = sim_traceparent(&sim);
    let tracestate_a: Vec<String> = sim
        .last_request_headers()
        .into_iter()
        .filter(|(n, _)| n == "tracestate")
        .map(|(_, v)| v)
        .collect();

    // B: no trace context; a cache hit starts a trace of its own.
    let b = get("tr-b", "/v1/audiences/1001")
        .send()
        .await
        .expect("request b");
    assert_eq!(b.status(), 200);

    // C: the caller's trace, not sampled: followed, nothing exported for it.
    let c = get("tr-c", "/v1/audiences/1002")
        .header(
            "traceparent",
            format!("00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00"),
        )
        .send()
        .await
        .expect("request c");
    assert_eq!(c.status(), 200);
    let sent_c = sim_traceparent(&sim);

    // Two activations with a burst of one: admitted, then limited.
    for (rid, key, status) in [("tr-act-1", "k-1", 201), ("tr-act-2", "k-2", 429)] {
        let resp = client
            .post(format!("{base}/v1/audiences/1001/activations"))
            .bearer_auth(&bearer)
            .header("x-request-id", rid)
            .header("idempotency-key", key)
            .json(&activation_body())
            .send()
            .await
            .expect("activation");
        assert_eq!(resp.status(), status, "{rid}");
    }

    // The vendor goes down: two failed attempts open the breaker, which then refuses.
    sim.set_down(true);
    let down = get("tr-down", "/v1/audiences/1003")
        .send()
        .await
        .expect("down");
    assert!(down.status().is_server_error(), "{}", down.status());
    let refused = get("tr-open", "/v1/audiences/1004")
        .send()
        .await
        .expect("open");
    assert_eq!(refused.status(), 503);

    // SIGTERM: the gateway exports what it holds before it exits.
    let stderr = stop_binary(child);
    let spans = receiver.spans();
    receiver.stop().await;
    sim.stop().await;

    // The resource names the service.
    assert!(!spans.is_empty(), "no span exported");
    for s in &spans {
        assert_eq!(
            s.resource_attr("service.name").as_deref(),
            Some("gateway-under-test")
        );
        assert_eq!(
            s.resource_attr("deployment.environment").as_deref(),
            Some("test")
        );
    }

    // A: the server span continues the caller's trace under the caller's span.
    let sa = server_span(&spans, "tr-a");
    assert_eq!(sa.trace_id(), TRACE);
    assert_eq!(sa.parent_span_id(), CALLER_SPAN);
    assert_eq!(sa.span.name, "GET /v1/audiences/{id}");
    assert_eq!(sa.span.kind, 2, "SERVER");
    assert_eq!(sa.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(sa.attr("http.route").as_deref(), Some("/v1/audiences/{id}"));
    assert_eq!(sa.attr("url.path").as_deref(), Some("/v1/audiences/1001"));
    assert_eq!(sa.attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(sa.attr("enduser.id").as_deref(), Some("tracer"));
    let cache_a = sa
        .attr("audience_gateway.cache_status")
        .expect("cache status");
    assert!(cache_a.contains("miss"), "{cache_a}");
    // Its one vendor call: a client span, attempt 1, under the server span.
    let calls = children(&spans, sa);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = calls[0];
    assert_eq!(call.span.name, "loadAudience");
    assert_eq!(call.span.kind, 3, "CLIENT");
    assert_eq!(call.attr("audience_gateway.attempt").as_deref(), Some("1"));
    assert_eq!(call.attr("audience_gateway.outcome").as_deref(), Some("ok"));
    assert_eq!(
        call.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    // The vendor got our call span as its parent, in the caller's trace, and the tracestate.
    assert_eq!(sent_a, format!("00-{TRACE}-{}-01", call.span_id()));
    assert_eq!(tracestate_a, vec!["vendor=opaque".to_string()]);
    // The first call logged in: a login span under the call, its attempt under it.
    let logins = children(&spans, call);
    assert_eq!(logins.len(), 1, "{logins:#?}");
    assert_eq!(logins[0].span.name, "session login");
    let login_attempts = children(&spans, logins[0]);
    assert_eq!(login_attempts.len(), 1);
    assert_eq!(login_attempts[0].span.name, "login");
    assert_eq!(
        login_attempts[0]
            .attr("audience_gateway.outcome")
            .as_deref(),
        Some("ok")
    );

    // B: a new trace, no parent; a hit makes no vendor call.
    let sb = server_span(&spans, "tr-b");
    assert_ne!(sb.trace_id(), TRACE);
    assert_eq!(sb.trace_id().len(), 32);
    assert!(sb.span.parent_span_id.is_empty(), "a root span");
    let cache_b = sb
        .attr("audience_gateway.cache_status")
        .expect("cache status");
    assert!(cache_b.contains("hit"), "{cache_b}");
    assert!(children(&spans, sb).is_empty());

    // C: unsampled by the caller: nothing exported, the flag passed on with our span id.
    assert!(spans.iter().all(|s| s.trace_id() != UNSAMPLED_TRACE));
    let parts: Vec<&str> = sent_c.split('-').collect();
    assert_eq!(parts[1], UNSAMPLED_TRACE, "{sent_c}");
    assert_ne!(
        parts[2], CALLER_SPAN,
        "our span is the vendor's parent: {sent_c}"
    );
    assert_eq!(parts[3], "00", "{sent_c}");

    // Rate-limit decisions are events of the server span.
    let act1 = server_span(&spans, "tr-act-1");
    assert_eq!(
        act1.event_attr("rate limit decision", "decision")
            .as_deref(),
        Some("admitted")
    );
    assert_eq!(act1.span.name, "POST /v1/audiences/{id}/activations");
    let act2 = server_span(&spans, "tr-act-2");
    assert_eq!(
        act2.event_attr("rate limit decision", "decision")
            .as_deref(),
        Some("limited")
    );
    assert_eq!(
        act2.attr("http.response.status_code").as_deref(),
        Some("429")
    );
    assert!(
        children(&spans, act2).is_empty(),
        "a refused activation calls no one"
    );

    // The failed read: two attempts, the first with its back-off, then the breaker opens.
    let sd = server_span(&spans, "tr-down");
    let mut attempts = children(&spans, sd);
    attempts.sort_by_key(|s| s.attr("audience_gateway.attempt"));
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(
            a.attr("audience_gateway.attempt"),
            Some((n + 1).to_string())
        );
        assert_eq!(a.attr("http.response.status_code").as_deref(), Some("503"));
        assert_eq!(a.span.status.as_ref().map(|s| s.code), Some(2), "ERROR");
    }
    let backoff: u64 = attempts[0]
        .attr("audience_gateway.backoff_ms")
        .expect("the first attempt records its back-off")
        .parse()
        .expect("a number");
    assert!((10..=20).contains(&backoff), "{backoff}");
    assert_eq!(attempts[1].attr("audience_gateway.backoff_ms"), None);
    assert!(
        sd.events()
            .iter()
            .any(|(name, _)| name == "upstream circuit breaker opened"),
        "{:#?}",
        sd.events()
    );
    assert_eq!(
        sd.span.status.as_ref().map(|s| s.code),
        Some(2),
        "5xx is an error"
    );
    // The next read is refused by the open circuit without a call.
    let so = server_span(&spans, "tr-open");
    assert!(children(&spans, so).is_empty());
    assert_eq!(
        so.event_attr("circuit open: call refused", "op").as_deref(),
        Some("loadAudience")
    );

    // Every log line of a request carries its trace and server span ids; the audit event's
    // trace id is the server span's.
    let lines = json_lines(&stderr);
    let of =
        |rid: &str| -> Vec<&Value> { lines.iter().filter(|l| l["request_id"] == rid).collect() };
    for (rid, span) in [
        ("tr-a", sa),
        ("tr-b", sb),
        ("tr-act-1", act1),
        ("tr-down", sd),
    ] {
        let mine = of(rid);
        assert!(!mine.is_empty(), "{rid} logged");
        for line in mine {
            assert_eq!(line["trace_id"], span.trace_id(), "{line}");
            assert_eq!(line["span_id"], span.span_id(), "{line}");
        }
    }
    let c_lines = of("tr-c");
    assert!(!c_lines.is_empty());
    for line in c_lines {
        assert_eq!(line["trace_id"], UNSAMPLED_TRACE, "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    let audit: Vec<&Value> = of("tr-act-1")
        .into_iter()
        .filter(|l| l["target"] == "audit")
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["trace_id"], act1.trace_id());
    // No span, attribute or event holds a token, the vendor password or its cookie.
    let everything = format!("{spans:?}");
    let password = SimulatorConfig::default().password;
    for secret in [bearer.as_str(), password.as_str(), "digitalAudience"] {
        assert!(!everything.contains(secret), "{secret} in a span");
    }
    // The story's spans and events are traces, never log lines.
    assert!(lines
        .iter()
        .all(|l| l["target"] != "audience_gateway::trace"));
}

#[actix_web::test]
async fn an_unreachable_collector_fails_no_request() {
    let closed = free_port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let ledger = fresh_ledger_dir();
    let (sim, child, base) = serve_binary_with_simulator(&[
        ("GATEWAY_LEDGER__DIR", ledger.as_str()),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "200"),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
    ])
    .await;
    let client = reqwest::Client::new();
    let bearer = full_token();
    for i in 0..50 {
        let resp = client
            .get(format!("{base}/v1/audiences/{}", 1001 + i % 3))
            .bearer_auth(&bearer)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200, "request {i}");
    }
    let stderr = stop_binary(child);
    sim.stop().await;
    let text = String::from_utf8_lossy(&stderr);
    assert!(
        text.contains("\"message\":\"stopped\""),
        "exits cleanly: {text}"
    );
}

#[actix_web::test]
async fn a_background_revalidation_is_a_traced_vendor_call_in_the_reads_trace() {
    let receiver = OtlpReceiver::start().await;
    let (sim, child, base) = serve_binary_with_simulator(&[
        ("GATEWAY_CACHE__TTL_SECS", "1"),
        ("GATEWAY_CACHE__REVALIDATE_SECS", "60"),
        ("GATEWAY_LOG__FORMAT", "json"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let client = reqwest::Client::new();
    let bearer = token("tracer", &ALL_SCOPES);
    let get = |rid: String| {
        client
            .get(format!("{base}/v1/audiences/1001"))
            .bearer_auth(&bearer)
            .header("x-request-id", rid)
            .send()
    };
    assert_eq!(get("tr-fill".into()).await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let stale = get("tr-swr".into()).await.unwrap();
    assert!(
        header(&stale, "cache-status").ends_with("detail=stale-while-revalidate"),
        "{}",
        header(&stale, "cache-status")
    );
    // Until the refresh landed (the next read is then a fresh hit).
    for n in 0.. {
        let resp = get(format!("tr-poll-{n}")).await.unwrap();
        if !header(&resp, "cache-status").contains("ttl=-") || n == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop_binary(child);
    let spans = receiver.spans();
    receiver.stop().await;
    sim.stop().await;

    let read = server_span(&spans, "tr-swr");
    assert!(read
        .attr("audience_gateway.cache_status")
        .is_some_and(|s| s.contains("stale-while-revalidate")));
    let refresh: Vec<&Received> = spans
        .iter()
        .filter(|s| s.span.name == "cache.revalidate")
        .collect();
    assert_eq!(refresh.len(), 1, "one background refresh: {refresh:#?}");
    assert_eq!(
        refresh[0].trace_id(),
        read.trace_id(),
        "in the read's trace"
    );
    let calls = children(&spans, refresh[0]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].span.name, "loadAudience");
    assert_eq!(calls[0].span.kind, 3, "CLIENT");
}
