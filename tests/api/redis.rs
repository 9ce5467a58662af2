//! Shared state in Redis: two gateways in front of ONE simulator and ONE real Redis
//! deployment (started here on free ports), on every topology (one server, TLS with client
//! certificates, Sentinel, Cluster, Cluster over TLS): the activation quota is shared exactly, idempotent
//! retries on the other replica replay or conflict, a write on one replica evicts on the
//! other. Outages and failover: `redis_outages.rs`; TLS refusals and ACL users:
//! `redis_access.rs`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audience_gateway::domain::AudiencePatch;
use audience_gateway::limits::{ActivationLimiter, Decision, LocalLimiter};
use audience_gateway::metrics::Metrics;
use audience_gateway::state::SharedState;
use audience_gateway::telemetry::CallContext;
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::redis_server::*;
use crate::helpers::*;

on_every_topology!(
    two_replicas_share_the_activation_quota_exactly,
    an_idempotent_retry_on_the_other_replica_replays_or_conflicts,
    a_write_on_one_replica_evicts_on_the_other,
);

#[actix_web::test]
async fn redis_limits_match_the_in_process_limiter() {
    let redis = RedisDeployment::start(Topology::Server);
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

async fn two_replicas_share_the_activation_quota_exactly(redis: RedisDeployment) {
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

async fn an_idempotent_retry_on_the_other_replica_replays_or_conflicts(redis: RedisDeployment) {
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
    let resp = post_keyed(&b, &full_token(), ACTIVATIONS, "act-1", &activation_body()).await;
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

    let replay = post_keyed(&b, &full_token(), ACTIVATIONS, "act-1", &activation_body()).await;
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
    let resp = post_keyed(&b, &full_token(), ACTIVATIONS, "act-1", &other).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(problem(resp).await["code"], "idempotency_key_reused");

    // A failed attempt releases the key, so a retry on the other replica runs.
    sim.set_down(true);
    let failed = post_keyed(&a, &full_token(), ACTIVATIONS, "act-2", &activation_body()).await;
    assert_eq!(failed.status(), 503);
    sim.set_down(false);
    let retry = post_keyed(&b, &full_token(), ACTIVATIONS, "act-2", &activation_body()).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(header(&retry, "idempotent-replayed"), "");

    // Creates too: the record is in Redis, with its expiry.
    let create = json!({"name": "Subscribers", "campaignId": 1});
    let created = post_keyed(&a, &full_token(), "/v1/audiences", "create-1", &create).await;
    assert_eq!(created.status(), 201);
    let again = post_keyed(&b, &full_token(), "/v1/audiences", "create-1", &create).await;
    assert_eq!(
        (
            again.status().as_u16(),
            header(&again, "idempotent-replayed")
        ),
        (201, "?1".to_string())
    );
    assert_eq!(sim.call_count("createAudience"), 1);
    let keys = redis.keys_with_ttl("audience-gateway:idem:*");
    assert_eq!(keys.len(), 3, "{keys:?}");
    for (key, ttl) in keys {
        assert!(
            ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000,
            "{key}: {ttl}"
        );
    }
}

async fn a_write_on_one_replica_evicts_on_the_other(redis: RedisDeployment) {
    let sim = simulator().await;
    let a = replica(&sim, &redis, &[]).await;
    let b = replica(&sim, &redis, &[]).await;

    assert_eq!(a.get("/v1/audiences/1001").await.status(), 200);
    assert_eq!(b.get("/v1/audiences/1001").await.status(), 200);

    // Cache hits never touch Redis (only the health checks run meanwhile: PING, or ROLE
    // under Sentinel).
    let before = command_calls(&redis);
    for _ in 0..20 {
        let hit = b.get("/v1/audiences/1001").await;
        assert!(header(&hit, "cache-status").contains("; hit;"));
    }
    let after = command_calls(&redis);
    let busy = |m: &HashMap<String, u64>| -> u64 {
        m.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "ping" | "info" | "role"))
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
async fn a_cluster_is_found_from_any_seed_even_when_the_first_is_gone() {
    let redis = RedisDeployment::start(Topology::Cluster);
    let sim = simulator().await;
    let gone = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let seeds = redis.url().replace(
        "redis+cluster://",
        &format!("redis+cluster://127.0.0.1:{gone},"),
    );
    let burst = [
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "5"),
    ];
    let first_gone = [&burst[..], &[("GATEWAY_REDIS__URL", seeds.as_str())]].concat();
    let a = replica(&sim, &redis, &first_gone).await;
    let b = replica(&sim, &redis, &burst).await;
    let bearer = token("heidi", &["audiences:activate"]);
    assert_eq!(admitted_of_eight(&a, &b, &bearer).await, 5);
}

#[actix_web::test]
async fn a_purge_on_one_replica_drops_the_copies_on_every_replica() {
    let redis = RedisDeployment::start(Topology::Server);
    let sim = simulator().await;
    let a = replica(&sim, &redis, &[]).await;
    let b = replica(&sim, &redis, &[]).await;
    let name = |v: serde_json::Value| v["name"].as_str().unwrap_or_default().to_string();
    for app in [&a, &b] {
        assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
        assert_eq!(app.get("/v1/platform-accounts").await.status(), 200);
    }

    // Changed in the vendor's own UI: no replica hears of it, both keep serving the old copy.
    let patch = AudiencePatch {
        name: Some("Renamed at the vendor".into()),
        description: None,
    };
    let ctx = CallContext::default();
    let renamed = a
        .state
        .upstream
        .update_audience(&ctx, 1001, "Renamed at the vendor", &patch)
        .await;
    assert!(renamed.is_ok(), "{renamed:?}");
    let hit = b.get("/v1/audiences/1001").await;
    assert!(header(&hit, "cache-status").contains("; hit;"));
    assert_eq!(name(hit.json().await.unwrap()), "Newsletter subscribers");

    // Only the operator scope may purge.
    let purge = |bearer: String| {
        a.client
            .delete(a.url("/v1/audiences/1001/cache"))
            .bearer_auth(bearer)
            .send()
    };
    let refused = purge(token("writer", &["audiences:write", "audiences:delete"]))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(problem(refused).await["code"], "insufficient_scope");
    let purged = purge(token("operator", &["cache:purge"])).await.unwrap();
    assert_eq!(purged.status(), 204);
    assert_eq!(header(&purged, "cache-control"), "");

    // On A at once; on B once the message arrived: the next reads come from the vendor.
    assert_eq!(a.state.cache.usage().await.0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.state.cache.usage().await.0 > 0 {
        assert!(Instant::now() < deadline, "B never dropped the audience");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for app in [&a, &b] {
        let read = app.get("/v1/audiences/1001").await;
        assert!(header(&read, "cache-status").contains("fwd=uri-miss"));
        assert_eq!(name(read.json().await.unwrap()), "Renamed at the vendor");
        let accounts = app.get("/v1/platform-accounts").await;
        assert!(
            header(&accounts, "cache-status").contains("fwd=uri-miss"),
            "{}",
            header(&accounts, "cache-status")
        );
    }
}
