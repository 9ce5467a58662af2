//! `Idempotency-Key` on creates and activations: replays, conflicts, caller scope, release
//! after failures, expiry, the bounded store, and rate-limit quota.

use std::time::Duration;

use audience_gateway::idempotency::{Begin, IdempotencyStore, LocalIdempotency, StoredResponse};
use audience_gateway::settings::IdempotencySettings;
use bytes::Bytes;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::vendor::{self, mount_login};
use crate::helpers::*;

/// Status, `Location`, `Idempotent-Replayed` and body of a response.
async fn parts(resp: reqwest::Response) -> (u16, String, String, Bytes) {
    (
        resp.status().as_u16(),
        header(&resp, "location"),
        header(&resp, "idempotent-replayed"),
        resp.bytes().await.unwrap(),
    )
}

#[actix_web::test]
async fn a_repeated_create_is_replayed_without_calling_the_upstream() {
    let app = spawn_with_sandbox(&[]).await;
    let body = json!({"name": "Subscribers", "campaignId": 1});
    let bearer = full_token();

    let (status, location, replayed, first) =
        parts(post_keyed(&app, &bearer, "/v1/audiences", "create-1", &body).await).await;
    assert_eq!((status, replayed.as_str()), (201, ""));
    let created: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(location, format!("/v1/audiences/{}", created["id"]));

    for _ in 0..2 {
        let again =
            parts(post_keyed(&app, &bearer, "/v1/audiences", "create-1", &body).await).await;
        assert_eq!(again, (201, location.clone(), "?1".into(), first.clone()));
    }
    assert_eq!(app.sim().call_count("createAudience"), 1);
}

#[actix_web::test]
async fn a_repeated_activation_is_replayed_without_calling_the_upstream() {
    let app = spawn_with_sandbox(&[]).await;
    let bearer = full_token();

    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "act-1", &activation_body()).await;
    assert!(!header(&resp, "ratelimit-policy").is_empty());
    let (status, location, replayed, first) = parts(resp).await;
    assert_eq!((status, replayed.as_str()), (201, ""));
    let activation: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert!(activation["flowId"].is_string(), "{activation}");
    assert_eq!(
        location,
        format!("{ACTIVATIONS}/{}", activation["flowId"].as_str().unwrap()),
        "the activation in the history"
    );

    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "act-1", &activation_body()).await;
    assert!(!header(&resp, "ratelimit-policy").is_empty());
    assert_eq!(parts(resp).await, (201, location, "?1".into(), first));
    assert_eq!(app.sim().call_count("activateAudience"), 1);
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_refused() {
    let app = spawn_with_sandbox(&[]).await;
    let bearer = full_token();
    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "act-2", &activation_body()).await;
    assert_eq!(resp.status(), 201);

    let mut other = activation_body();
    other["accountId"] = json!(502);
    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "act-2", &other).await;
    assert_eq!(resp.status(), 422);
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:idempotency_key_reused",
            "title": "Idempotency key reused",
            "status": 422,
            "detail": "this Idempotency-Key was used with a different request",
            "code": "idempotency_key_reused",
            "requestId": body["requestId"],
        })
    );

    let create = json!({"name": "Subscribers", "campaignId": 1});
    assert_eq!(
        post_keyed(&app, &bearer, "/v1/audiences", "create-2", &create)
            .await
            .status(),
        201
    );
    let resp = post_keyed(
        &app,
        &bearer,
        "/v1/audiences",
        "create-2",
        &json!({"name": "Other", "campaignId": 1}),
    )
    .await;
    assert_eq!(resp.status(), 422);
    assert_eq!(problem(resp).await["code"], "idempotency_key_reused");
    assert_eq!(app.sim().call_count("activateAudience"), 1);
    assert_eq!(app.sim().call_count("createAudience"), 1);
}

#[actix_web::test]
async fn the_same_key_while_the_first_request_runs_is_a_conflict() {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    Mock::given(method("POST"))
        .and(path("/audience/activate"))
        .respond_with(vendor::ok(vendor::activation()).set_delay(Duration::from_millis(800)))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;
    let bearer = full_token();

    let body = activation_body();
    let first = post_keyed(&app, &bearer, ACTIVATIONS, "slow", &body);
    let second = async {
        // Send once the first one is waiting on the upstream.
        loop {
            let received = upstream.received_requests().await.unwrap_or_default();
            if received
                .iter()
                .any(|r| r.url.path() == "/audience/activate")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        post_keyed(&app, &bearer, ACTIVATIONS, "slow", &body).await
    };
    let (first, second) = tokio::join!(first, second);

    assert_eq!(second.status(), 409);
    let body = problem(second).await;
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
    assert_eq!(first.status(), 201);
    assert_eq!(header(&first, "idempotent-replayed"), "");

    // Finished now: the same request replays.
    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "slow", &activation_body()).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "idempotent-replayed"), "?1");
    upstream.verify().await;
}

#[actix_web::test]
async fn keys_are_scoped_to_the_caller() {
    let app = spawn_with_sandbox(&[]).await;
    let body = json!({"name": "Subscribers", "campaignId": 1});
    let alice = token("alice", &["audiences:write"]);
    let bob = token("bob", &["audiences:write"]);

    let a = parts(post_keyed(&app, &alice, "/v1/audiences", "shared", &body).await).await;
    let b = parts(post_keyed(&app, &bob, "/v1/audiences", "shared", &body).await).await;
    assert_eq!((a.0, a.2.as_str()), (201, ""));
    assert_eq!((b.0, b.2.as_str()), (201, ""));
    assert_ne!(a.1, b.1, "two audiences were created");
    assert_eq!(app.sim().call_count("createAudience"), 2);

    // A service token is scoped by its client id.
    let svc = service_token("alice", "etl-svc");
    let c = parts(post_keyed(&app, &svc, ACTIVATIONS, "shared", &activation_body()).await).await;
    let d = parts(
        post_keyed(
            &app,
            &alice_activator(),
            ACTIVATIONS,
            "shared",
            &activation_body(),
        )
        .await,
    )
    .await;
    assert_eq!((c.0, c.2.as_str(), d.0, d.2.as_str()), (201, "", 201, ""));
    assert_eq!(app.sim().call_count("activateAudience"), 2);
}

fn alice_activator() -> String {
    token("alice", &["audiences:activate"])
}

#[actix_web::test]
async fn a_failed_attempt_releases_the_key() {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    Mock::given(method("POST"))
        .and(path("/audience/activate"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/activate"))
        .respond_with(vendor::ok(vendor::activation()))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;
    let bearer = full_token();

    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "retry-me", &activation_body()).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(problem(resp).await["code"], "upstream_error");

    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "retry-me", &activation_body()).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "idempotent-replayed"), "");
    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "retry-me", &activation_body()).await;
    assert_eq!(header(&resp, "idempotent-replayed"), "?1");
    upstream.verify().await;
}

#[actix_web::test]
async fn records_expire() {
    let app = spawn_with_sandbox(&[("GATEWAY_IDEMPOTENCY__TTL_SECS", "1")]).await;
    let body = json!({"name": "Subscribers", "campaignId": 1});
    let bearer = full_token();

    let first = parts(post_keyed(&app, &bearer, "/v1/audiences", "short", &body).await).await;
    let replay = parts(post_keyed(&app, &bearer, "/v1/audiences", "short", &body).await).await;
    assert_eq!(replay.2, "?1");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = parts(post_keyed(&app, &bearer, "/v1/audiences", "short", &body).await).await;
    assert_eq!((after.0, after.2.as_str()), (201, ""));
    assert_ne!(after.1, first.1, "executed again: another audience");
    assert_eq!(app.sim().call_count("createAudience"), 2);
}

fn stored(n: usize) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("location".into(), format!("/v1/audiences/{n}"))],
        body: Bytes::from(format!("{{\"id\":{n}}}")),
    }
}

#[actix_web::test]
async fn the_store_is_bounded_and_keeps_the_newest_records() {
    const MAX: usize = 32;
    let store = LocalIdempotency::new(&IdempotencySettings {
        max_records: MAX as u64,
        ..IdempotencySettings::default()
    });
    const TOTAL: usize = 1_000;
    for n in 0..TOTAL {
        let key = format!("key-{n}");
        assert_eq!(store.begin(&key, "f").await, Begin::Proceed, "{key}");
        store.complete(&key, "f", stored(n)).await;
        // A finished request is replayed right after, whatever the store holds.
        assert_eq!(
            store.begin(&key, "f").await,
            Begin::Replay(stored(n)),
            "{key}"
        );
    }
    // Once the store has done its housekeeping (it runs on later operations), the newest
    // record is still there and the oldest were dropped to stay within the bound.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.begin("other", "f").await, Begin::Proceed);
    let newest = TOTAL - 1;
    assert_eq!(
        store.begin(&format!("key-{newest}"), "f").await,
        Begin::Replay(stored(newest))
    );
    assert_eq!(store.begin("key-0", "f").await, Begin::Proceed);
}

#[actix_web::test]
async fn a_replayed_activation_takes_no_quota() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "2"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "2"),
    ])
    .await;
    let bearer = alice_activator();

    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "once", &activation_body()).await;
    assert_eq!(resp.status(), 201);
    assert!(header(&resp, "ratelimit").starts_with("\"per-caller\";r=1;"));
    for _ in 0..5 {
        let resp = post_keyed(&app, &bearer, ACTIVATIONS, "once", &activation_body()).await;
        assert_eq!(resp.status(), 201);
        assert_eq!(header(&resp, "idempotent-replayed"), "?1");
    }
    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "twice", &activation_body()).await;
    assert_eq!(resp.status(), 201);
    assert!(header(&resp, "ratelimit").starts_with("\"per-caller\";r=0;"));
    let resp = post_keyed(&app, &bearer, ACTIVATIONS, "thrice", &activation_body()).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(app.sim().call_count("activateAudience"), 2);
}

#[actix_web::test]
async fn a_new_record_is_kept_when_the_store_is_full_of_replayed_ones() {
    const MAX: usize = 16;
    let store = LocalIdempotency::new(&IdempotencySettings {
        max_records: MAX as u64,
        ..IdempotencySettings::default()
    });
    for n in 0..MAX {
        let key = format!("key-{n}");
        assert_eq!(store.begin(&key, "f").await, Begin::Proceed);
        store.complete(&key, "f", stored(n)).await;
        // Clients retry: these records are replayed often.
        for _ in 0..5 {
            assert_eq!(store.begin(&key, "f").await, Begin::Replay(stored(n)));
        }
    }
    assert_eq!(store.begin("new", "f").await, Begin::Proceed);
    store.complete("new", "f", stored(99)).await;
    // Let the store do its housekeeping; it runs on a later operation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.begin("unrelated", "g").await, Begin::Proceed);
    assert_eq!(store.begin("new", "f").await, Begin::Replay(stored(99)));
}

/// Waits until the gateway at `base` reports its ledger and Redis up.
async fn wait_until_up(base: &str) {
    let started = std::time::Instant::now();
    loop {
        let body = binary_readiness(base).await;
        if body["ledger"]["state"] == "up" && body["redis"] == "up" {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An activation of audience 1001 with `key` at the gateway at `base`: status, replayed
/// header and the flow id.
async fn activate_keyed(client: &reqwest::Client, base: &str, key: &str) -> (u16, String, String) {
    let resp = client
        .post(format!("{base}{ACTIVATIONS}"))
        .bearer_auth(full_token())
        .header("idempotency-key", key)
        .json(&activation_body())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = header(&resp, "idempotent-replayed");
    let body: serde_json::Value = resp.json().await.unwrap();
    let flow = body["flowId"].as_str().unwrap_or_default().to_string();
    (status, replayed, flow)
}

#[actix_web::test]
async fn a_retry_replays_after_the_gateway_and_redis_restart() {
    let mut redis = redis_server::RedisDeployment::start(redis_server::Topology::Server);
    let ledger_dir = fresh_ledger_dir();
    let url = redis.url().to_string();
    let env = [
        ("GATEWAY_REDIS__URL", url.as_str()),
        ("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"),
        ("GATEWAY_LEDGER__DIR", ledger_dir.as_str()),
        ("GATEWAY_RATE_LIMIT__ENABLED", "false"),
    ];
    let (sim, mut first_gateway, base) = serve_binary_with_simulator(&env).await;
    let client = reqwest::Client::new();
    wait_until_up(&base).await;
    let (status, replayed, flow) = activate_keyed(&client, &base, "restart-1").await;
    assert_eq!((status, replayed.as_str()), (201, ""));

    // Both processes die at once; Redis comes back empty (no persistence).
    first_gateway.kill().unwrap();
    first_gateway.wait().unwrap();
    redis.restart();
    let config = audience_sandbox::SimulatorConfig::default();
    let account = [
        ("GATEWAY_UPSTREAM__USERNAME", config.username.as_str()),
        ("GATEWAY_UPSTREAM__PASSWORD", config.password.as_str()),
    ];
    let (second_gateway, base) =
        serve_binary(&sim.base_url(), &[&account[..], &env].concat()).await;
    wait_until_up(&base).await;

    for _ in 0..2 {
        let again = activate_keyed(&client, &base, "restart-1").await;
        assert_eq!(again, (201, "?1".to_string(), flow.clone()));
    }
    assert_eq!(sim.call_count("activateAudience"), 1, "one vendor write");
    // The same key with another body is still refused.
    let mut other = activation_body();
    other["name"] = json!("another segment");
    let resp = client
        .post(format!("{base}{ACTIVATIONS}"))
        .bearer_auth(full_token())
        .header("idempotency-key", "restart-1")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    stop_binary(second_gateway);
}

#[actix_web::test]
async fn a_retry_on_another_replica_replays_after_redis_restarts_empty() {
    let mut redis = redis_server::RedisDeployment::start(redis_server::Topology::Server);
    let db = ledger_db::LedgerDb::postgres();
    let sim = redis_server::simulator().await;
    let settings = || {
        let mut s = db.settings(&sim);
        s.redis = redis_server::settings(&sim, &redis, &[]).redis;
        s
    };
    let a = spawn_settings(settings(), Some(sim.clone())).await;
    let b = spawn_settings(settings(), Some(sim.clone())).await;
    for app in [&a, &b] {
        ledger_db::wait_for_ledger(app, "up").await;
        redis_server::wait_for(app, "up").await;
    }
    let bearer = full_token();
    let body = activation_body();
    let first = post_keyed(&a, &bearer, ACTIVATIONS, "replica-1", &body).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();

    redis.restart();
    for app in [&a, &b] {
        redis_server::wait_for(app, "up").await;
    }
    for app in [&b, &a] {
        let again = post_keyed(app, &bearer, ACTIVATIONS, "replica-1", &body).await;
        assert_eq!(
            (
                again.status().as_u16(),
                header(&again, "idempotent-replayed")
            ),
            (201, "?1".to_string())
        );
        let again: serde_json::Value = again.json().await.unwrap();
        assert_eq!(again["flowId"], first["flowId"]);
    }
    assert_eq!(sim.call_count("activateAudience"), 1, "one vendor write");
}
