//! Prometheus metrics. Labels are bounded: route templates (never raw paths), methods,
//! status codes, operation names and outcomes; never ids or subjects.
//!
//! The gateway's own metrics are named `audience_gateway_*`; the process metrics
//! ([`process`]) keep the names every client library gives them. Values that are a state
//! of something (cache size, circuit, calls in flight) are read at scrape time, so the
//! request path pays nothing for them.

mod process;

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The media type of [`Metrics::render`]'s body. prometheus-client writes OpenMetrics 1.0
/// (counter families named without `_total` in `# TYPE`, samples with it, `# EOF` at the
/// end); under the Prometheus 0.0.4 text type a scraper would read those counters as
/// untyped.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// All `&'static str`: recording a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// The method as a label; anything outside the standard methods is `other`, so a client
/// cannot create label values at will.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Route templates interned once each: there are as many as the application has routes.
fn route_label(route: &str) -> &'static str {
    static ROUTES: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    if let Some(r) = ROUTES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
    {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = routes.get(route) {
        return r;
    }
    let interned: &'static str = Box::leak(route.into());
    routes.insert(interned);
    interned
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    upstream: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The `upstream` label of the upstream metrics: the gateway has one upstream.
const UPSTREAM: &str = "digital_audience_api";

/// The circuit states, named as the upstream breaker names them.
const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// The commit the binary was built from (`build.rs`), or `unknown`.
pub const COMMIT: &str = env!("AUDIENCE_GATEWAY_COMMIT");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    policy: &'static str,
    decision: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 us .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    http: Family<HttpLabels, Histogram, fn() -> Histogram>,
    upstream: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    cache: Family<ResultLabels, Counter>,
    /// `cache{result="hit"}`, resolved once: it is counted on every cached read.
    cache_hit: Counter,
    rate_limit: Family<LimitLabels, Counter>,
    logins: Family<ResultLabels, Counter>,
    jwks_refreshes: Family<ResultLabels, Counter>,
    redis_up: Gauge<i64, AtomicI64>,
    cache_entries: Gauge<i64, AtomicI64>,
    cache_bytes: Gauge<i64, AtomicI64>,
    ledger_writes: Family<ResultLabels, Counter>,
    ledger_up: Gauge<i64, AtomicI64>,
    ledger_pending: Gauge<i64, AtomicI64>,
    circuit: Family<CircuitLabels, Gauge<i64, AtomicI64>>,
    upstream_in_flight: Gauge<i64, AtomicI64>,
    upstream_waiting: Gauge<i64, AtomicI64>,
}

/// Counts one upstream call waiting for a concurrency slot while it lives.
pub struct Waiting<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("audience_gateway");
        let http = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream = Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let cache = Family::<ResultLabels, Counter>::default();
        let cache_hit = cache.get_or_create(&ResultLabels { result: "hit" }).clone();
        let rate_limit = Family::default();
        let logins = Family::default();
        let jwks_refreshes = Family::default();
        let redis_up = Gauge::<i64, AtomicI64>::default();
        let cache_entries = Gauge::<i64, AtomicI64>::default();
        let cache_bytes = Gauge::<i64, AtomicI64>::default();
        let ledger_writes = Family::default();
        let ledger_up = Gauge::<i64, AtomicI64>::default();
        let ledger_pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by route template, method and status (count and latency)",
            http.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Digital Audience API calls by operation and outcome (count and latency)",
            upstream.clone(),
        );
        registry.register(
            "cache_lookups",
            "Audience cache lookups by result (hit, miss, stale)",
            cache.clone(),
        );
        registry.register(
            "rate_limit_decisions",
            "Activation rate-limit decisions by policy and decision",
            rate_limit.clone(),
        );
        registry.register(
            "upstream_logins",
            "Upstream logins by result",
            logins.clone(),
        );
        registry.register(
            "jwks_refreshes",
            "JWKS fetches by result",
            jwks_refreshes.clone(),
        );
        registry.register(
            "redis_up",
            "1 when the shared-state Redis is reachable, 0 when not, -1 when not configured",
            redis_up.clone(),
        );
        registry.register(
            "cache_entries",
            "Audiences in the read cache (as of the last scrape)",
            cache_entries.clone(),
        );
        registry.register(
            "cache_bytes",
            "Weighted size of the read cache in bytes: bodies, ETags and bookkeeping",
            cache_bytes.clone(),
        );
        registry.register(
            "ledger_writes",
            "Activation ledger writes by result (written, failed and queued, retried from the queue, dropped with the queue full)",
            ledger_writes.clone(),
        );
        registry.register(
            "ledger_up",
            "1 when the activation ledger's database answers, 0 when not",
            ledger_up.clone(),
        );
        registry.register(
            "ledger_pending_writes",
            "Ledger writes waiting in the in-process retry queue",
            ledger_pending.clone(),
        );
        let circuit = Family::<CircuitLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "upstream_circuit_state",
            "1 for the state the upstream's circuit breaker is in (closed, open, half_open), 0 for the others (as of the last scrape)",
            circuit.clone(),
        );
        let upstream_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "upstream_in_flight",
            "Upstream calls holding a concurrency slot (as of the last scrape)",
            upstream_in_flight.clone(),
        );
        let upstream_waiting = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "upstream_waiting",
            "Upstream calls waiting for a concurrency slot (upstream.max_concurrency)",
            upstream_waiting.clone(),
        );
        let build = Family::<BuildLabels, Gauge<i64, AtomicI64>>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels name the gateway's version and the commit it was built from",
            build,
        );
        redis_up.set(-1);
        // Both results from the start, so a dashboard or alert finds the series (at 0)
        // before the first fetch, and with static keys, where there is none.
        for result in ["success", "failure"] {
            let _ = jwks_refreshes.get_or_create(&ResultLabels { result });
        }
        for state in CIRCUIT_STATES {
            circuit
                .get_or_create(&CircuitLabels {
                    upstream: UPSTREAM,
                    state,
                })
                .set(i64::from(state == "closed"));
        }
        Self {
            registry: root,
            http,
            upstream,
            cache,
            cache_hit,
            rate_limit,
            logins,
            jwks_refreshes,
            redis_up,
            cache_entries,
            cache_bytes,
            ledger_writes,
            ledger_up,
            ledger_pending,
            circuit,
            upstream_in_flight,
            upstream_waiting,
        }
    }

    /// One finished HTTP request. `route` must be a route template (or another value from
    /// a small fixed set), never a raw path: each distinct value is kept for good.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http
            .get_or_create(&HttpLabels {
                route: route_label(route),
                method: method_label(method),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One finished upstream call.
    pub fn upstream_call(&self, operation: &'static str, outcome: &'static str, elapsed: Duration) {
        self.upstream
            .get_or_create(&UpstreamLabels { operation, outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// One cache lookup: `hit`, `miss`, `stale` or `revalidate`.
    pub fn cache(&self, result: &'static str) {
        if result == "hit" {
            self.cache_hit.inc();
        } else {
            self.cache.get_or_create(&ResultLabels { result }).inc();
        }
    }

    /// One rate-limit decision.
    pub fn rate_limit(&self, policy: &'static str, admitted: bool) {
        let decision = if admitted { "admit" } else { "reject" };
        self.rate_limit
            .get_or_create(&LimitLabels { policy, decision })
            .inc();
    }

    /// One login attempt sequence.
    pub fn login(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.logins.get_or_create(&ResultLabels { result }).inc();
    }

    /// One JWKS fetch.
    pub fn jwks_refresh(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_refreshes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Redis reachability.
    pub fn redis_up(&self, up: bool) {
        self.redis_up.set(i64::from(up));
    }

    /// One ledger write: `written`, `failed` (queued), `retried` or `dropped`.
    pub fn ledger_write(&self, result: &'static str) {
        self.ledger_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Ledger database reachability.
    pub fn ledger_up(&self, up: bool) {
        self.ledger_up.set(i64::from(up));
    }

    /// Writes in the ledger's retry queue.
    pub fn ledger_pending(&self, pending: usize) {
        self.ledger_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Size of the audience cache.
    pub fn cache_usage(&self, entries: u64, bytes: u64) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The upstream's circuit state (`closed`, `open` or `half_open`) and the
    /// calls holding a concurrency slot.
    pub fn upstream_usage(&self, circuit: &str, in_flight: usize) {
        for state in CIRCUIT_STATES {
            self.circuit
                .get_or_create(&CircuitLabels {
                    upstream: UPSTREAM,
                    state,
                })
                .set(i64::from(state == circuit));
        }
        self.upstream_in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    }

    /// One upstream call starts waiting for a concurrency slot, until the guard drops.
    pub fn waiting_for_slot(&self) -> Waiting<'_> {
        self.upstream_waiting.inc();
        Waiting(&self.upstream_waiting)
    }

    /// The OpenMetrics text exposition, served as [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_labels() {
        let m = Metrics::new();
        m.http_request("/v1/audiences/{id}", "GET", 200, Duration::from_millis(3));
        m.cache("hit");
        m.upstream_call("loadAudience", "ok", Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "audience_gateway_http_request_duration_seconds_count{route=\"/v1/audiences/{id}\",method=\"GET\",status=\"200\"} 1"
        ), "{text}");
        assert!(
            text.contains("audience_gateway_cache_lookups_total{result=\"hit\"} 1"),
            "{text}"
        );
        assert!(text.contains("audience_gateway_redis_up -1"), "{text}");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::new();
        m.http_request("unmatched", "FOO", 405, Duration::from_millis(1));
        m.http_request("unmatched", "BAR", 405, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                "audience_gateway_http_request_duration_seconds_count{route=\"unmatched\",method=\"other\",status=\"405\"} 2"
            ),
            "{text}"
        );
    }
}
