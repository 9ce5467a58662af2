//! A Redis outage: a hung Redis costs at most its timeout, a stopped one (on every topology)
//! falls back by policy and recovers, evictions that could not be published are sent once
//! it is back, and under Sentinel the replicas follow a failover to the promoted replica.

use std::time::{Duration, Instant};

use audience_gateway::settings::Settings;
use serde_json::json;

use crate::helpers::redis_server::*;
use crate::helpers::*;

on_every_topology!(redis_stopped_mid_run_falls_back_then_recovers);

/// Four activations per caller, nothing refilling during a test; the global limit is far.
const BURST_OF_4: [(&str, &str); 4] = [
    ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1"),
    ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "4"),
    ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "100"),
    ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "100"),
];

#[actix_web::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let mut redis = RedisDeployment::start(Topology::Server);
    let sim = simulator().await;
    let a = replica(&sim, &redis, &[("GATEWAY_REDIS__TIMEOUT_MS", "200")]).await;

    redis.servers[0].signal("-STOP");
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

    redis.servers[0].signal("-CONT");
    wait_for(&a, "up").await;
    redis.stop();
}

async fn redis_stopped_mid_run_falls_back_then_recovers(mut redis: RedisDeployment) {
    let sim = simulator().await;
    let a = replica(&sim, &redis, &BURST_OF_4).await;
    let b = replica(&sim, &redis, &BURST_OF_4).await;
    let mut refuse = BURST_OF_4.to_vec();
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
        post_keyed(&a, &full_token(), "/v1/audiences", "outage-1", &create)
            .await
            .status(),
        201
    );
    let again = post_keyed(&a, &full_token(), "/v1/audiences", "outage-1", &create).await;
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
    assert_eq!(admitted_of_eight(&a, &b, &erin).await, 4);
    let resp = activate(&c, &erin).await;
    assert_eq!(
        resp.status(),
        429,
        "C shares them too, and no longer refuses"
    );

    // A record completed during the outage still replays on the replica that holds it.
    let again = post_keyed(&a, &full_token(), "/v1/audiences", "outage-1", &create).await;
    assert_eq!(header(&again, "idempotent-replayed"), "?1");
    assert_eq!(sim.call_count("createAudience"), 1);
}

#[actix_web::test]
async fn an_eviction_that_could_not_be_published_is_sent_once_redis_is_back() {
    let redis = RedisDeployment::start(Topology::Server);
    let sim = simulator().await;
    // Only A is cut off: its own Redis user loses PUBLISH, while B stays subscribed (so B
    // has no reason to drop its cache and would stay stale without the kept eviction).
    let acl = |rules: &[&str]| {
        ::redis::cmd("ACL")
            .arg("SETUSER")
            .arg("gw-a")
            .arg(rules)
            .query::<()>(&mut redis.servers[0].connection())
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

#[actix_web::test]
async fn the_replicas_follow_a_sentinel_failover() {
    let mut redis = RedisDeployment::start(Topology::Sentinel);
    let sim = simulator().await;
    let a = replica(&sim, &redis, &BURST_OF_4).await;
    let b = replica(&sim, &redis, &BURST_OF_4).await;
    let replica_port = redis.servers[1].port();

    // The primary dies; the sentinels promote the replica.
    redis.servers[0].stop();
    for app in [&a, &b] {
        wait_for(app, "down").await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let promoted = loop {
        let addr: Option<(String, u16)> = ::redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut redis.sentinels[0].connection())
            .unwrap_or(None);
        let role: Vec<::redis::Value> = ::redis::cmd("ROLE")
            .query(&mut redis.servers[1].connection())
            .unwrap_or_default();
        let is_primary =
            matches!(role.first(), Some(::redis::Value::BulkString(r)) if r == b"master");
        if addr.is_some_and(|(_, port)| port == replica_port) && is_primary {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the sentinels never promoted the replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for app in [&a, &b] {
        wait_for_within(app, "up", Duration::from_secs(15)).await;
    }
    println!(
        "failover: both gateways up on the promoted replica {:?} after its promotion",
        promoted.elapsed()
    );

    // The quota is shared exactly again, in the promoted primary.
    let grace = token("grace", &["audiences:activate"]);
    assert_eq!(admitted_of_eight(&a, &b, &grace).await, 4);
    assert_eq!(redis.keys("{audience-gateway:rl}:per-caller:*").len(), 1);
}
