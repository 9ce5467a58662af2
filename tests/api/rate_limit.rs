//! Activation rate limits: per caller and global, the `RateLimit-Policy` / `RateLimit`
//! headers, precision under concurrency and the bounded keyed state.

use std::sync::Arc;
use std::time::Duration;

use audience_gateway::limits::{ActivationLimiter, LocalLimiter};
use audience_gateway::metrics::Metrics;
use audience_gateway::settings::RateLimitSettings;
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::*;

/// `Retry-After` as whole seconds.
fn retry_after(resp: &reqwest::Response) -> u64 {
    let v = header(resp, "retry-after");
    v.parse()
        .unwrap_or_else(|_| panic!("Retry-After is not integer seconds: {v:?}"))
}

async fn assert_rate_limited(resp: reqwest::Response) {
    assert_eq!(resp.status(), 429);
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:rate_limited",
            "title": "Too many requests",
            "status": 429,
            "detail": "the activation rate limit is exhausted",
            "code": "rate_limited",
            "requestId": body["requestId"],
        })
    );
}

#[actix_web::test]
async fn per_caller_limit_refuses_without_calling_the_upstream() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "2"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "2"),
    ])
    .await;
    let alice = token("alice", &["audiences:activate"]);
    let policy = "\"per-caller\";q=2;w=60, \"global\";q=100;w=60";

    let mut remaining = Vec::new();
    for _ in 0..2 {
        let resp = activate(&app, &alice).await;
        assert_eq!(resp.status(), 201);
        assert_eq!(header(&resp, "ratelimit-policy"), policy);
        assert!(header(&resp, "retry-after").is_empty());
        let limits = rate_limit(&resp);
        assert!(limits.contains_key("global"), "{limits:?}");
        remaining.push(limits["per-caller"]);
    }
    // One request per 30 s: one missing unit resets in 30 s, two in 60 s.
    assert_eq!(remaining, [(1, 30), (0, 60)]);

    let resp = activate(&app, &alice).await;
    assert_eq!(header(&resp, "ratelimit-policy"), policy);
    let (r, t) = rate_limit(&resp)["per-caller"];
    assert_eq!(r, 0);
    assert!((1..=60).contains(&t), "{t}");
    let wait = retry_after(&resp);
    assert!((1..=30).contains(&wait), "{wait}");
    assert_rate_limited(resp).await;
    assert_eq!(app.sim().call_count("activateAudience"), 2);

    // Another caller has its own quota.
    let bob = token("bob", &["audiences:activate"]);
    let resp = activate(&app, &bob).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(rate_limit(&resp)["per-caller"], (1, 30));
    assert_eq!(app.sim().call_count("activateAudience"), 3);
}

#[actix_web::test]
async fn global_limit_applies_across_callers() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1000"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "1000"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "2"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "2"),
    ])
    .await;
    let policy = "\"per-caller\";q=1000;w=60, \"global\";q=2;w=60";

    for (sub, global_left) in [("a", 1), ("b", 0)] {
        let resp = activate(&app, &token(sub, &["audiences:activate"])).await;
        assert_eq!(resp.status(), 201, "{sub}");
        assert_eq!(header(&resp, "ratelimit-policy"), policy);
        assert_eq!(rate_limit(&resp)["global"].0, global_left);
    }
    let resp = activate(&app, &token("c", &["audiences:activate"])).await;
    assert_eq!(header(&resp, "ratelimit-policy"), policy);
    let limits = rate_limit(&resp);
    assert_eq!(limits["global"].0, 0, "{limits:?}");
    assert_eq!(limits["per-caller"].0, 999, "{limits:?}");
    let wait = retry_after(&resp);
    assert!((1..=30).contains(&wait), "{wait}");
    assert_rate_limited(resp).await;
    assert_eq!(app.sim().call_count("activateAudience"), 2);
}

#[actix_web::test]
async fn remaining_goes_down_and_comes_back() {
    // One unit per second, three at once.
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "60"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "3"),
    ])
    .await;
    let caller = token("refill", &["audiences:activate"]);

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = activate(&app, &caller).await;
        assert_eq!(resp.status(), 201);
        remaining.push(rate_limit(&resp)["per-caller"].0);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let resp = activate(&app, &caller).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(rate_limit(&resp)["per-caller"].0, 0);

    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let resp = activate(&app, &caller).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(rate_limit(&resp)["per-caller"].0, 2, "the burst refilled");
    assert_eq!(app.sim().call_count("activateAudience"), 4);
}

#[actix_web::test]
async fn a_service_tokens_client_id_is_the_key() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "1"),
    ])
    .await;

    let resp = activate(&app, &service_token("alice", "reporting-svc")).await;
    assert_eq!(resp.status(), 201);
    // Another subject of the same client shares its quota.
    let resp = activate(&app, &service_token("bob", "reporting-svc")).await;
    assert_rate_limited(resp).await;
    // The same subject through another client, or on its own, does not.
    let resp = activate(&app, &service_token("alice", "billing-svc")).await;
    assert_eq!(resp.status(), 201);
    let resp = activate(&app, &token("alice", &["audiences:activate"])).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(app.sim().call_count("activateAudience"), 3);
}

#[actix_web::test]
async fn concurrent_activations_admit_exactly_the_quota() {
    const QUOTA: usize = 5;
    const EXTRA: usize = 7;
    let quota = QUOTA.to_string();
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", &quota),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", &quota),
        ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "10000"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "10000"),
    ])
    .await;
    let caller = token("burst", &["audiences:activate"]);

    let statuses: Vec<u16> = join_all(
        (0..QUOTA + EXTRA).map(|_| async { activate(&app, &caller).await.status().as_u16() }),
    )
    .await;
    let admitted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (QUOTA, EXTRA), "{statuses:?}");
    assert_eq!(app.sim().call_count("activateAudience"), QUOTA as u64);
}

#[actix_web::test]
async fn concurrent_activations_of_many_callers_admit_exactly_the_global_quota() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "4"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "4"),
    ])
    .await;
    let tokens: Vec<String> = (0..12)
        .map(|i| token(&format!("caller-{i}"), &["audiences:activate"]))
        .collect();

    let statuses: Vec<u16> = join_all(
        tokens
            .iter()
            .map(|t| async { activate(&app, t).await.status().as_u16() }),
    )
    .await;
    let admitted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (4, 8), "{statuses:?}");
    assert_eq!(app.sim().call_count("activateAudience"), 4);
}

fn limiter(burst: u32, max_tracked_callers: u64) -> LocalLimiter {
    LocalLimiter::new(
        &RateLimitSettings {
            enabled: true,
            per_caller_per_minute: 1,
            per_caller_burst: burst,
            global_per_minute: 1_000_000,
            global_burst: 1_000_000,
            max_tracked_callers,
        },
        Arc::new(Metrics::new()),
    )
}

#[actix_web::test]
async fn keyed_state_stays_bounded() {
    let l = limiter(1, 16);
    for i in 0..2_000 {
        assert!(l.check(&format!("caller-{i}")).await.is_admitted());
        assert!(
            l.tracked_callers() <= 16,
            "{} after {i}",
            l.tracked_callers()
        );
    }
}

#[actix_web::test]
async fn a_new_caller_is_limited_when_the_tracked_callers_are_at_the_bound() {
    let l = limiter(1, 16);
    for i in 0..16 {
        assert!(l.check(&format!("caller-{i}")).await.is_admitted());
    }
    // The store is full; a newcomer must still get exactly its burst.
    let admitted = join_all((0..10).map(|_| l.check("newcomer")))
        .await
        .iter()
        .filter(|d| d.is_admitted())
        .count();
    let later = {
        let mut n = 0;
        for _ in 0..10 {
            n += usize::from(l.check("newcomer").await.is_admitted());
            // Let the store do its housekeeping (admission, eviction) between checks.
            assert!(l.tracked_callers() <= 16);
        }
        n
    };
    assert_eq!((admitted, later), (1, 0));
    assert!(l.tracked_callers() <= 16);
}

#[actix_web::test]
async fn many_distinct_callers_through_http_stay_limited() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE", "1"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "1"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE", "100000"),
        ("GATEWAY_RATE_LIMIT__GLOBAL_BURST", "100000"),
        ("GATEWAY_RATE_LIMIT__MAX_TRACKED_CALLERS", "8"),
    ])
    .await;
    for i in 0..40 {
        let t = token(&format!("sub-{i}"), &["audiences:activate"]);
        assert_eq!(activate(&app, &t).await.status(), 201, "sub-{i}");
    }
    // The newest caller is tracked: its second activation is refused.
    let last = token("sub-39", &["audiences:activate"]);
    assert_rate_limited(activate(&app, &last).await).await;
    assert_eq!(app.sim().call_count("activateAudience"), 40);
}
