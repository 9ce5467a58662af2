//! Shared state in Redis: two gateways in front of ONE simulator and ONE real `redis-server`
//! (started here on a free port): the activation quota is shared exactly, idempotent
//! retries on the other replica replay or conflict, a write on one replica evicts on the
//! other, and a Redis outage falls back by policy and recovers.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audience_gateway::limits::{ActivationLimiter, Decision, LocalLimiter};
use audience_gateway::metrics::Metrics;
use audience_gateway::settings::Settings;
use audience_gateway::startup::SharedState;
use audience_sandbox::{Simulator, SimulatorConfig, SimulatorHandle};
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::*;

const ACTIVATIONS: &str = "/v1/audiences/1001/activations";

/// A `redis-server` child process on a free local port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING. Panics (never skips) when
    /// `redis-server` is not installed: `apt-get install -y redis-server`.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "redis-server must be installed for these tests (apt-get install -y redis-server)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = ::redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING: {pong:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection, for assertions.
    pub fn connection(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("redis connection")
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends SIGSTOP or SIGCONT: a hung server keeps its connections but never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        self.stop();
    }
}

/// Settings of a gateway in front of `sim` sharing `redis`.
fn settings(sim: &SimulatorHandle, redis: &RedisServer, overrides: &[(&str, &str)]) -> Settings {
    let url = redis.url();
    let mut env = vec![
        ("GATEWAY_REDIS__URL", url.as_str()),
        ("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"),
    ];
    env.extend_from_slice(overrides);
    Settings::load_from(None, test_env(&sim.base_url(), &env)).expect("test settings")
}

/// A gateway in front of `sim` sharing `redis`, once Redis is up for it.
async fn replica(
    sim: &SimulatorHandle,
    redis: &RedisServer,
    overrides: &[(&str, &str)],
) -> TestApp {
    let app = spawn_settings(settings(sim, redis, overrides), Some(sim.clone())).await;
    wait_for(&app, "up").await;
    app
}

async fn simulator() -> SimulatorHandle {
    Simulator::start(SimulatorConfig::default(), "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

/// Waits until the gateway reports Redis `state`.
async fn wait_for(app: &TestApp, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.redis_state() != state {
        assert!(
            Instant::now() < deadline,
            "redis state is {} after 10 s, expected {state}",
            app.state.redis_state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An activation as `bearer` (optionally with an idempotency key and another body).
async fn activate(app: &TestApp, bearer: &str) -> reqwest::Response {
    app.client
        .post(app.url(ACTIVATIONS))
        .bearer_auth(bearer)
        .json(&activation_body())
        .send()
        .await
        .expect("request")
}

async fn post_keyed(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(full_token())
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// `RateLimit` parsed: policy name to (remaining, seconds to reset).
fn rate_limit(resp: &reqwest::Response) -> HashMap<String, (u64, u64)> {
    header(resp, "ratelimit")
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_string();
            let num = |p: Option<&str>| -> u64 {
                p.and_then(|p| p.split_once('='))
                    .unwrap()
                    .1
                    .parse()
                    .unwrap()
            };
            let r = num(parts.next());
            (name, (r, num(parts.next())))
        })
        .collect()
}

/// Calls per command name from `INFO commandstats`.
fn command_calls(redis: &RedisServer) -> HashMap<String, u64> {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

async fn readiness(app: &TestApp) -> (u16, serde_json::Value) {
    let resp = app.get("/readyz").await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn redis_up_metric(app: &TestApp) -> String {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("audience_gateway_redis_up "))
        .unwrap_or_default()
        .to_string()
}

#[actix_web::test]
async fn redis_limits_match_the_in_process_limiter() {
    let redis = RedisServer::start();
    let sim = simulator().await;
    let s = settings(
        &sim,
        &redis,
        &[
            ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "10"),
            ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "3"),
            ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "30"),
            ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "4"),
        ],
    );
    let metrics = Arc::new(Metrics::new());
    let shared = SharedState::new(&s, metrics.clone())
        .expect("valid")
        .expect("redis configured");
    shared.spawn(|_| async { true });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.redis().commands_up() {
        assert!(Instant::now() < deadline, "redis never came up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let remote = shared.limiter();
    let local = LocalLimiter::new(&s.rate_limit, metrics);
    assert_eq!(remote.policies(), local.policies());

    // Per caller: 3 then refusals; then other callers until the global burst is spent.
    for principal in ["alice", "alice", "alice", "alice", "bob", "carol", "dave"] {
        let (r, l) = (remote.check(principal).await, local.check(principal).await);
        assert!(!matches!(r, Decision::Unavailable { .. }), "{principal}");
        assert_eq!(r.is_admitted(), l.is_admitted(), "{principal}");
        assert_eq!(r.states().len(), l.states().len(), "{principal}");
        for (rs, ls) in r.states().iter().zip(l.states()) {
            assert_eq!((rs.policy, rs.remaining), (ls.policy, ls.remaining));
            // Both round up the same instant's arithmetic; allow a second boundary between.
            assert!(rs.reset_secs.abs_diff(ls.reset_secs) <= 1, "{r:?} vs {l:?}");
        }
        match (r.retry_after(), l.retry_after()) {
            (None, None) => assert_eq!(r.limit_header(), l.limit_header()),
            (Some(a), Some(b)) => {
                let diff = a.abs_diff(b);
                assert!(diff < Duration::from_millis(250), "{a:?} vs {b:?}");
                assert!(a > Duration::ZERO && a <= Duration::from_secs(15), "{a:?}");
            }
            other => panic!("retry-after differs: {other:?}"),
        }
        println!(
            "{principal}: redis {} / local {}",
            r.limit_header(),
            l.limit_header()
        );
    }
}

#[actix_web::test]
async fn two_replicas_share_the_activation_quota_exactly() {
    let redis = RedisServer::start();
    let sim = simulator().await;
    // One unit a minute: nothing refills during the test, so the bursts are the quota.
    let limits = [
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "4"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "1"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "10"),
    ];
    let a = replica(&sim, &redis, &limits).await;
    let b = replica(&sim, &redis, &limits).await;

    // One caller, 12 concurrent activations split over both replicas: exactly its burst.
    let alice = token("alice", &["audiences:activate"]);
    let resps = join_all((0..12).map(|i| activate(if i % 2 == 0 { &a } else { &b }, &alice))).await;
    let mut remaining = Vec::new();
    for resp in &resps {
        assert_eq!(
            header(resp, "ratelimit-policy"),
            "\"per-caller\";q=1;w=60, \"global\";q=1;w=60"
        );
        let rl = rate_limit(resp);
        match resp.status().as_u16() {
            201 => remaining.push(rl["per-caller"].0),
            429 => {
                assert_eq!(rl["per-caller"].0, 0);
                let retry: u64 = header(resp, "retry-after").parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        [0, 1, 2, 3],
        "each unit of the burst granted once"
    );

    // Twelve other callers at once: the global burst has 10 - 4 = 6 left.
    let resps = join_all((0..12).map(|i| {
        let bearer = token(&format!("caller-{i}"), &["audiences:activate"]);
        let app = if i % 2 == 0 { &a } else { &b };
        async move { activate(app, &bearer).await.status().as_u16() }
    }))
    .await;
    assert_eq!(resps.iter().filter(|s| **s == 201).count(), 6, "{resps:?}");
    assert_eq!(resps.iter().filter(|s| **s == 429).count(), 6, "{resps:?}");
    assert_eq!(sim.call_count("activateAudience"), 10);
}

#[actix_web::test]
async fn an_idempotent_retry_on_the_other_replica_replays_or_conflicts() {
    let redis = RedisServer::start();
    let sim = simulator().await;
    let a = replica(&sim, &redis, &[]).await;
    let b = replica(&sim, &redis, &[]).await;

    sim.set_latency(Duration::from_millis(800));
    let first = {
        let a_client = a.client.clone();
        let url = a.url(ACTIVATIONS);
        actix_rt::spawn(async move {
            a_client
                .post(url)
                .bearer_auth(full_token())
                .header("idempotency-key", "act-1")
                .json(&activation_body())
                .send()
                .await
                .expect("request")
        })
    };
    // A has claimed the key once its upstream call is under way.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sim.call_count("activateAudience") == 0 {
        assert!(
            Instant::now() < deadline,
            "the first activation never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = post_keyed(&b, ACTIVATIONS, "act-1", &activation_body()).await;
    assert_eq!(resp.status(), 409);
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:idempotency_in_flight",
            "title": "Request in progress",
            "status": 409,
            "detail": "a request with this Idempotency-Key is still being processed",
            "code": "idempotency_in_flight",
            "requestId": body["requestId"],
        })
    );

    let first = first.await.unwrap();
    sim.set_latency(Duration::ZERO);
    assert_eq!(first.status(), 201);
    let location = header(&first, "location");
    let first_body = first.bytes().await.unwrap();

    let replay = post_keyed(&b, ACTIVATIONS, "act-1", &activation_body()).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(header(&replay, "idempotent-replayed"), "?1");
    assert_eq!(header(&replay, "location"), location);
    assert_eq!(replay.bytes().await.unwrap(), first_body);
    assert_eq!(
        sim.call_count("activateAudience"),
        1,
        "replayed, not run again"
    );

    let mut other = activation_body();
    other["accountId"] = json!(502);
    let resp = post_keyed(&b, ACTIVATIONS, "act-1", &other).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(problem(resp).await["code"], "idempotency_key_reused");

    // A failed attempt releases the key, so a retry on the other replica runs.
    sim.set_down(true);
    let failed = post_keyed(&a, ACTIVATIONS, "act-2", &activation_body()).await;
    assert_eq!(failed.status(), 503);
    sim.set_down(false);
    let retry = post_keyed(&b, ACTIVATIONS, "act-2", &activation_body()).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(header(&retry, "idempotent-replayed"), "");

    // Creates too: the record is in Redis, with its expiry.
    let create = json!({"name": "Subscribers", "campaignId": 1});
    let created = post_keyed(&a, "/v1/audiences", "create-1", &create).await;
    assert_eq!(created.status(), 201);
    let again = post_keyed(&b, "/v1/audiences", "create-1", &create).await;
    assert_eq!(
        (
            again.status().as_u16(),
            header(&again, "idempotent-replayed")
        ),
        (201, "?1".to_string())
    );
    assert_eq!(sim.call_count("createAudience"), 1);
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("audience-gateway:idem:*")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query(&mut redis.connection())
            .unwrap();
        assert!(
            ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000,
            "{key}: {ttl}"
        );
    }
}

#[actix_web::test]
async fn a_write_on_one_replica_evicts_on_the_other() {
    let redis = RedisServer::start();
    let sim = simulator().await;
    let a = replica(&sim, &redis, &[]).await;
    let b = replica(&sim, &redis, &[]).await;

    assert_eq!(a.get("/v1/audiences/1001").await.status(), 200);
    assert_eq!(b.get("/v1/audiences/1001").await.status(), 200);

    // Cache hits never touch Redis (only the health checks' PINGs run meanwhile).
    let before = command_calls(&redis);
    for _ in 0..20 {
        let hit = b.get("/v1/audiences/1001").await;
        assert!(header(&hit, "cache-status").contains("; hit;"));
    }
    let after = command_calls(&redis);
    let busy = |m: &HashMap<String, u64>| -> u64 {
        m.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "ping" | "info"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(busy(&before), busy(&after), "{before:?} -> {after:?}");

    // Write on A while watching B's cache; then read B until it shows the new version.
    let sent = Instant::now();
    let watch = {
        let state = b.state.clone();
        actix_rt::spawn(async move {
            while state.cache.usage().await.0 > 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            sent.elapsed()
        })
    };
    let resp = a
        .patch("/v1/audiences/1001", &json!({"name": "Renamed"}))
        .await;
    assert_eq!(resp.status(), 200);
    let answered = sent.elapsed();
    let evicted = watch.await.unwrap();
    let seen = loop {
        let resp = b.get("/v1/audiences/1001").await;
        let body: serde_json::Value = resp.json().await.unwrap();
        if body["name"] == "Renamed" {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "B never saw the write"
        );
    };
    // Signed: negative when B had dropped the entry before A's answer reached its client.
    let lead_ms = (evicted.as_secs_f64() - answered.as_secs_f64()) * 1e3;
    println!(
        "eviction delay: the eviction reached B {lead_ms:+.2} ms relative to A's answer \
         (PATCH answered after {answered:?}, B evicted after {evicted:?}); B's next read, a \
         miss, showed the write {seen:?} after the PATCH was sent"
    );

    // A ignores its own message: the entry its re-read stored stays cached.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hit = a.get("/v1/audiences/1001").await;
    assert!(
        header(&hit, "cache-status").contains("; hit;"),
        "{}",
        header(&hit, "cache-status")
    );
}

#[actix_web::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let mut redis = RedisServer::start();
    let sim = simulator().await;
    let a = replica(&sim, &redis, &[("GATEWAY_REDIS__TIMEOUT_MS", "200")]).await;

    redis.signal("-STOP");
    let bearer = token("frank", &["audiences:activate"]);
    let started = Instant::now();
    let resp = activate(&a, &bearer).await;
    assert_eq!(resp.status(), 201, "admitted by the local fallback");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "took {:?}",
        started.elapsed()
    );
    wait_for(&a, "down").await;
    let started = Instant::now();
    assert_eq!(
        activate(&a, &bearer).await.status(),
        429,
        "fallback burst is 3 * 0.5 -> 1"
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "down: no wait on redis"
    );

    redis.signal("-CONT");
    wait_for(&a, "up").await;
    redis.stop();
}

#[actix_web::test]
async fn redis_stopped_mid_run_falls_back_then_recovers() {
    let mut redis = RedisServer::start();
    let sim = simulator().await;
    let limits = [
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "4"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "100"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "100"),
    ];
    let a = replica(&sim, &redis, &limits).await;
    let b = replica(&sim, &redis, &limits).await;
    let mut refuse = limits.to_vec();
    refuse.push(("GATEWAY_REDIS__LIMITER_FALLBACK", "refuse"));
    let c = replica(&sim, &redis, &refuse).await;

    let (status, body) = readiness(&a).await;
    assert_eq!(
        (status, body["redis"].clone()),
        (200, json!("up")),
        "{body}"
    );
    assert_eq!(redis_up_metric(&a).await, "audience_gateway_redis_up 1");
    for id in [1001, 1002] {
        assert_eq!(b.get(&format!("/v1/audiences/{id}")).await.status(), 200);
    }
    assert_eq!(b.state.cache.usage().await.0, 2);

    // Redis dies.
    redis.stop();
    for app in [&a, &b, &c] {
        wait_for(app, "down").await;
    }
    let (status, body) = readiness(&a).await;
    assert_eq!(
        (status, body["redis"].clone()),
        (200, json!("down")),
        "{body}"
    );
    assert_eq!(redis_up_metric(&a).await, "audience_gateway_redis_up 0");
    let hit = b.get("/v1/audiences/1001").await;
    assert!(
        header(&hit, "cache-status").contains("; hit;"),
        "reads go on from the cache"
    );

    // Local fallback: half the burst on each replica, advertised as such.
    let dave = token("dave", &["audiences:activate"]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = activate(&a, &dave).await;
        assert_eq!(
            header(&resp, "ratelimit-policy"),
            "\"per-caller\";q=1;w=60, \"global\";q=50;w=60"
        );
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 429, 429]);

    // Refuse fallback: 503 with Retry-After, never reaching the upstream.
    let calls = sim.call_count("activateAudience");
    let resp = activate(&c, &dave).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), "1");
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:rate_limit_unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "activation rate limits cannot be checked right now",
            "code": "rate_limit_unavailable",
            "requestId": body["requestId"],
        })
    );
    assert_eq!(sim.call_count("activateAudience"), calls);

    // Idempotency falls back to in-process records.
    let create = json!({"name": "During the outage", "campaignId": 1});
    assert_eq!(
        post_keyed(&a, "/v1/audiences", "outage-1", &create)
            .await
            .status(),
        201
    );
    let again = post_keyed(&a, "/v1/audiences", "outage-1", &create).await;
    assert_eq!(header(&again, "idempotent-replayed"), "?1");
    assert_eq!(sim.call_count("createAudience"), 1);

    // Redis is back on the same port.
    redis.restart();
    for app in [&a, &b, &c] {
        wait_for(app, "up").await;
    }
    assert_eq!(
        b.state.cache.usage().await.0,
        0,
        "evictions may have been missed: the cache was dropped on reconnect"
    );
    assert_eq!(readiness(&b).await.1["redis"], "up");
    assert_eq!(redis_up_metric(&b).await, "audience_gateway_redis_up 1");

    // Limits are shared again: one full burst between both replicas.
    let erin = token("erin", &["audiences:activate"]);
    let statuses = join_all((0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let erin = erin.clone();
        async move { activate(app, &erin).await.status().as_u16() }
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        4,
        "{statuses:?}"
    );
    let resp = activate(&c, &erin).await;
    assert_eq!(
        resp.status(),
        429,
        "C shares them too, and no longer refuses"
    );

    // A record completed during the outage still replays on the replica that holds it.
    let again = post_keyed(&a, "/v1/audiences", "outage-1", &create).await;
    assert_eq!(header(&again, "idempotent-replayed"), "?1");
    assert_eq!(sim.call_count("createAudience"), 1);
}

#[actix_web::test]
async fn an_eviction_that_could_not_be_published_is_sent_once_redis_is_back() {
    let redis = RedisServer::start();
    let sim = simulator().await;
    // Only A is cut off: its own Redis user loses PUBLISH, while B stays subscribed (so B
    // has no reason to drop its cache and would stay stale without the kept eviction).
    let acl = |rules: &[&str]| {
        ::redis::cmd("ACL")
            .arg("SETUSER")
            .arg("gw-a")
            .arg(rules)
            .query::<()>(&mut redis.connection())
            .expect("ACL SETUSER");
    };
    acl(&["on", ">pw-a", "~*", "&*", "+@all"]);
    let a_settings = {
        let url = redis.url().replace("redis://", "redis://gw-a:pw-a@");
        let env = [
            ("GATEWAY_REDIS__URL", url.as_str()),
            ("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"),
        ];
        Settings::load_from(None, test_env(&sim.base_url(), &env)).unwrap()
    };
    let a = spawn_settings(a_settings, Some(sim.clone())).await;
    wait_for(&a, "up").await;
    let b = replica(&sim, &redis, &[]).await;
    assert_eq!(b.get("/v1/audiences/1001").await.status(), 200);

    acl(&["-publish"]);
    let resp = a
        .patch("/v1/audiences/1001", &json!({"name": "Partitioned"}))
        .await;
    assert_eq!(
        resp.status(),
        200,
        "the write itself does not depend on Redis"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale: serde_json::Value = b.get("/v1/audiences/1001").await.json().await.unwrap();
    assert_ne!(
        stale["name"], "Partitioned",
        "the eviction could not be sent yet"
    );

    acl(&["+publish"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body: serde_json::Value = b.get("/v1/audiences/1001").await.json().await.unwrap();
        if body["name"] == "Partitioned" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kept eviction never reached B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.state.redis_state(), "up", "B never lost Redis");
}
