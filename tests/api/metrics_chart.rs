//! The Grafana dashboard and the PrometheusRule alerts of the helm chart name only metrics
//! the gateway exposes: every metric name in their PromQL is in a real scrape, after
//! traffic that exercises the request, upstream, cache and rate-limit paths.

use std::collections::BTreeSet;

use serde_json::json;

use crate::helpers::*;

/// The chart files whose PromQL is checked, relative to the repository.
const CHART_FILES: [&str; 2] = [
    "helm/audience-gateway/files/grafana-dashboard.json",
    "helm/audience-gateway/templates/prometheusrule.yaml",
];

/// Every `audience_gateway_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["audience_gateway_", "process_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let boundary = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let len = rest[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - at);
            if boundary {
                names.insert(rest[at..at + len].to_string());
            }
            rest = &rest[at + len..];
        }
    }
    names
}

/// The sample names a scrape holds, and those its `# TYPE` lines declare (a family with no
/// sample yet, e.g. JWKS fetches with static keys, still names its samples).
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[actix_web::test]
async fn every_metric_of_the_dashboard_and_the_alerts_is_in_a_scrape() {
    let app = spawn_with_sandbox(&[("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "1")]).await;
    // A write, an admitted and a refused activation, a 404, then a miss and a hit (last:
    // an activation evicts its audience).
    let resp = app.post("/v1/campaigns", &json!({"name": "Metrics"})).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(activate(&app, &full_token()).await.status(), 201);
    assert_eq!(activate(&app, &full_token()).await.status(), 429);
    assert_eq!(app.get("/v1/nowhere").await.status(), 404);
    for _ in 0..2 {
        assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    }

    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let scrape = resp.text().await.unwrap();
    let exposed = scraped_names(&scrape);

    let root = env!("CARGO_MANIFEST_DIR");
    let mut referenced = BTreeSet::new();
    for file in CHART_FILES {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        referenced.extend(names);
    }
    let missing: Vec<&String> = referenced.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "not in the scrape: {missing:?}\n{scrape}"
    );

    // What operators chart is there, with values from this traffic.
    for sample in [
        "audience_gateway_upstream_circuit_state{upstream=\"digital_audience_api\",state=\"closed\"} 1",
        "audience_gateway_upstream_circuit_state{upstream=\"digital_audience_api\",state=\"open\"} 0",
        "audience_gateway_upstream_in_flight 0",
        "audience_gateway_upstream_waiting 0",
        "audience_gateway_cache_entries 1",
        &format!(
            "audience_gateway_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            audience_gateway::metrics::COMMIT
        ),
    ] {
        assert!(scrape.contains(sample), "{sample} not in\n{scrape}");
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "audience_gateway_cache_bytes",
        "audience_gateway_rate_limit_decisions_total",
    ] {
        let value = scrape
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} sample in\n{scrape}"));
        assert!(value > 0.0, "{name} = {value}");
    }
    assert!(
        audience_gateway::metrics::COMMIT != "unknown"
            || !std::path::Path::new(root).join(".git").exists(),
        "built in a git checkout, the commit is known"
    );
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        "sum(rate(audience_gateway_http_request_duration_seconds_count{status=~\"5..\"}[5m])) / x_process_y + process_open_fds",
    );
    let want: BTreeSet<String> = [
        "audience_gateway_http_request_duration_seconds_count",
        "process_open_fds",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
}
