//! Operability: metrics, readiness, JSON access logs, trace context, the healthcheck command.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

#[actix_web::test]
async fn metrics_use_route_templates_and_count_what_happens() {
    let app = spawn_with_sandbox(&[]).await;
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    assert_eq!(app.get("/v1/audiences/424242").await.status(), 404);
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    for needle in [
        r#"audience_gateway_http_request_duration_seconds_count{route="/v1/audiences/{id}",method="GET",status="200"} 2"#,
        r#"audience_gateway_http_request_duration_seconds_count{route="/v1/audiences/{id}",method="GET",status="404"} 1"#,
        r#"audience_gateway_upstream_request_duration_seconds_count{operation="loadAudience",outcome="ok"} 1"#,
        r#"audience_gateway_upstream_request_duration_seconds_count{operation="loadAudience",outcome="not_found"} 1"#,
        r#"audience_gateway_upstream_logins_total{result="success"} 1"#,
        r#"audience_gateway_cache_lookups_total{result="hit"} 1"#,
        r#"audience_gateway_cache_lookups_total{result="miss"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Only the label sets: a sample value (a latency sum) may contain any digits.
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('{').and_then(|(_, rest)| rest.split_once('}')))
        .map(|(labels, _)| labels)
        .collect();
    assert!(!labels.is_empty(), "{text}");
    for l in &labels {
        assert!(
            !l.contains("1001") && !l.contains("424242"),
            "ids must not be labels: {l}"
        );
        assert!(!l.contains("tester"), "subjects must not be labels: {l}");
    }
}

/// Reads an OpenMetrics exposition from stdin with the Prometheus Python client's parser
/// (strict: `# EOF`, counter samples named `<family>_total`, no sample outside its family)
/// and prints each family's type.
const OPENMETRICS_TYPES: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
print(json.dumps({f.name: f.type for f in text_string_to_metric_families(sys.stdin.read())}))
"#;

#[actix_web::test]
async fn metrics_parse_as_openmetrics_with_every_counter_typed_counter() {
    let app = spawn_with_sandbox(&[]).await;
    // A login, a miss, a hit and an activation.
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    let activation = app
        .post("/v1/audiences/1001/activations", &activation_body())
        .await;
    assert_eq!(activation.status(), 201);
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.text().await.unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0")
            && body.ends_with("# EOF\n"),
        "{content_type}: the body must be what the type says\n{body}"
    );
    let mut python = Command::new("python3")
        .args(["-c", OPENMETRICS_TYPES])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus-client (scripts/test.sh installs it)");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape (prometheus-client installed? scripts/test.sh \
         does it): {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let types: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).unwrap();
    let expected: std::collections::BTreeMap<String, String> = [
        ("http_request_duration_seconds", "histogram"),
        ("upstream_request_duration_seconds", "histogram"),
        ("cache_lookups", "counter"),
        ("rate_limit_decisions", "counter"),
        ("upstream_logins", "counter"),
        ("jwks_refreshes", "counter"),
        ("redis_up", "gauge"),
        ("cache_entries", "gauge"),
        ("cache_bytes", "gauge"),
        ("ledger_writes", "counter"),
        ("ledger_up", "gauge"),
        ("ledger_pending_writes", "gauge"),
        ("upstream_circuit_state", "gauge"),
        ("upstream_in_flight", "gauge"),
        ("upstream_waiting", "gauge"),
        ("build_info", "gauge"),
    ]
    .into_iter()
    .map(|(name, kind)| (format!("audience_gateway_{name}"), kind.to_string()))
    .chain(
        [
            ("process_cpu_seconds", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ]
        .map(|(name, kind)| (name.to_string(), kind.to_string())),
    )
    .collect();
    // Every family has samples, JWKS fetches too (both results start at 0).
    assert_eq!(types, expected, "{body}");
    // Every sample named like a counter belongs to a family typed counter.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        if let Some(family) = name.strip_suffix("_total") {
            assert_eq!(types[family], "counter", "{line}");
        }
    }
}

#[actix_web::test]
async fn trace_context_and_request_id_travel_upstream() {
    let app = spawn_with_sandbox(&[]).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = app
        .client
        .get(app.url("/v1/audiences/1002"))
        .bearer_auth(full_token())
        .header("traceparent", tp)
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    let sent = app.sim().last_request_headers();
    let get = |name: &str| sent.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(get("traceparent").as_deref(), Some(tp));
    assert_eq!(get("x-request-id").as_deref(), Some("req-abc-123"));
}

#[actix_web::test]
async fn readiness_reports_dependencies_without_failing_on_upstream_trouble() {
    let app = spawn_with_sandbox(&[]).await;
    app.sim().set_down(true);
    let _ = app.get("/v1/audiences/1001").await;
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["keys"], "static");
    assert_eq!(body["redis"], "disabled");
    app.state.begin_shutdown();
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[actix_web::test]
async fn healthcheck_subcommand_reflects_liveness() {
    let app = spawn_with_sandbox(&[]).await;
    let url = app.url("/healthz");
    let ok = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
            .args(["healthcheck", "--url", &url])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(ok.success());
    let down = Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
        .args([
            "healthcheck",
            "--url",
            "http://127.0.0.1:9/healthz",
            "--timeout-ms",
            "500",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!down.success());
}

#[test]
fn json_access_log_has_one_line_per_request() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
        .args(["sandbox", "--port", &port.to_string()])
        .env("GATEWAY_LOG__FORMAT", "json")
        .env("GATEWAY_AUTH__HS256_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A miss (routing, handler, upstream call), then a hit (answered before routing).
        for id in ["log-req-1", "log-req-2"] {
            let resp = client
                .get(format!("{base}/v1/audiences/1001"))
                .bearer_auth(token("log-tester", &["audiences:read"]))
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("an access line");
        if line.contains("log-req-") && line.contains("\"target\":\"access\"") {
            lines.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for (line, id) in lines.iter().zip(["log-req-1", "log-req-2"]) {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["route"], "/v1/audiences/{id}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["sub"], "log-tester");
        assert_eq!(v["request_id"], id);
        assert!(v["latency_ms"].as_f64().is_some(), "{line}");
    }
}
