//! The audience cache: one entry per audience, single-flight misses, coherence after writes,
//! per-upstream keys, HTTP cache semantics, stale-if-error, preconditions and byte bounds.

use std::sync::Arc;
use std::time::Duration;

use audience_gateway::cache::AudienceCache;
use audience_gateway::metrics::Metrics;
use audience_gateway::settings::Settings;
use audience_gateway::telemetry::CallContext;
use audience_gateway::upstream::UpstreamClient;
use audience_sandbox::SimulatorConfig;
use futures_util::future::join_all;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::tokens;
use crate::helpers::vendor::{self, mount_login};
use crate::helpers::*;

/// The seconds of freshness left that a `Cache-Status` value starting with `prefix` and
/// ending in `ttl=N` tells.
fn ttl(cache_status: &str, prefix: &str) -> u64 {
    cache_status
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("ttl="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not `{prefix}ttl=N`: {cache_status:?}"))
}

const MISS: &str = "audience-gateway; fwd=uri-miss; stored; ";
const HIT: &str = "audience-gateway; hit; ";
const REFRESHED: &str = "audience-gateway; fwd=request; stored; ";

#[actix_web::test]
async fn audience_insights_and_uploads_share_one_entry() {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(vendor::ok(vendor::audience(1001, "Subscribers")))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;

    for p in [
        "/v1/audiences/1001",
        "/v1/audiences/1001/insights",
        "/v1/audiences/1001/uploads",
        "/v1/audiences/1001/insights",
    ] {
        let resp = app.get(p).await;
        assert_eq!(resp.status(), 200, "{p}");
    }
    let resp = app.get("/v1/audiences/1001/uploads").await;
    assert!(
        header(&resp, "cache-status").starts_with("audience-gateway; hit; ttl="),
        "{:?}",
        resp.headers()
    );
    upstream.verify().await;
}

#[actix_web::test]
async fn views_are_counted_once_on_the_simulator_and_accounts_have_their_own_entry() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(ttl(&header(&resp, "cache-status"), MISS), 30);
    assert_eq!(app.get("/v1/audiences/1001/insights").await.status(), 200);
    assert_eq!(app.get("/v1/audiences/1001/uploads").await.status(), 200);
    assert_eq!(app.sim().call_count("loadAudience"), 1);
    assert_eq!(app.sim().call_count("loadPlatformAccounts"), 0);

    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "cache-status"),
        "audience-gateway; fwd=uri-miss; stored; ttl=30"
    );
    let resp = app.get("/v1/platform-accounts").await;
    let status = header(&resp, "cache-status");
    assert!(
        status.starts_with("audience-gateway; hit; ttl="),
        "{status}"
    );
    assert_eq!(app.sim().call_count("loadPlatformAccounts"), 1);
    assert_eq!(app.sim().call_count("loadAudience"), 1);
}

#[actix_web::test]
async fn concurrent_misses_make_one_upstream_call() {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(
            vendor::ok(vendor::audience(1001, "Subscribers")).set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;

    let views = ["", "/insights", "/uploads"];
    let responses = join_all((0..50).map(|i| {
        let app = &app;
        async move {
            let resp = app
                .get(&format!("/v1/audiences/1001{}", views[i % 3]))
                .await;
            (resp.status().as_u16(), header(&resp, "etag"))
        }
    }))
    .await;
    assert!(responses.iter().all(|(s, _)| *s == 200), "{responses:?}");
    let audience_etags: std::collections::HashSet<_> = responses
        .iter()
        .step_by(3)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(audience_etags.len(), 1, "{audience_etags:?}");
    upstream.verify().await;
}

#[actix_web::test]
async fn reads_after_writes_never_show_the_old_version() {
    let app = spawn_with_sandbox(&[]).await;

    let before: serde_json::Value = app.get("/v1/audiences/1001").await.json().await.unwrap();
    assert_eq!(before["name"], "Newsletter subscribers");
    assert_eq!(before["activationStatus"], "New");

    let resp = app
        .patch("/v1/audiences/1001", &json!({"name": "Renamed"}))
        .await;
    assert_eq!(resp.status(), 200);
    let after: serde_json::Value = app.get("/v1/audiences/1001").await.json().await.unwrap();
    assert_eq!(after["name"], "Renamed");

    let resp = app
        .post("/v1/audiences/1001/activations", &activation_body())
        .await;
    assert_eq!(resp.status(), 201);
    let after: serde_json::Value = app.get("/v1/audiences/1001").await.json().await.unwrap();
    assert_eq!(after["activationStatus"], "Active");
    assert_eq!(after["name"], "Renamed");

    // Warm every view, then delete: none of them may survive.
    assert_eq!(app.get("/v1/audiences/1001/insights").await.status(), 200);
    assert_eq!(app.delete("/v1/audiences/1001").await.status(), 204);
    for p in [
        "/v1/audiences/1001",
        "/v1/audiences/1001/insights",
        "/v1/audiences/1001/uploads",
    ] {
        let resp = app.get(p).await;
        assert_eq!(resp.status(), 404, "{p}");
        let body = problem(resp).await;
        assert_eq!(body["code"], "not_found", "{p}");
    }
}

#[actix_web::test]
async fn a_read_racing_with_a_delete_does_not_store_the_deleted_audience() {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    // The first load is slow and answers the old audience; every later one says it is gone.
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(
            vendor::ok(vendor::audience(1001, "Subscribers")).set_delay(Duration::from_millis(500)),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(ResponseTemplate::new(200).set_body_json(vendor::not_found(1001)))
        .mount(&upstream)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/audience/delete"))
        .respond_with(vendor::ok(json!(true)))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;

    let slow_read = app.get("/v1/audiences/1001");
    let delete = async {
        // Delete once the read is waiting on the upstream.
        loop {
            let received = upstream.received_requests().await.unwrap_or_default();
            if received
                .iter()
                .any(|r| r.url.path() == vendor::load_path(1001))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.delete("/v1/audiences/1001").await
    };
    let (read, deleted) = tokio::join!(slow_read, delete);
    assert_eq!(read.status(), 200);
    assert_eq!(deleted.status(), 204);

    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(problem(resp).await["code"], "not_found");
    upstream.verify().await;
}

/// Settings for an upstream client in front of `base` logging in as `user`.
fn upstream_settings(base: &str, user: &str) -> Settings {
    Settings::load_from(
        None,
        test_env(base, &[("GATEWAY_UPSTREAM__USERNAME", user)]),
    )
    .expect("settings")
}

fn client(s: &Settings, metrics: &Arc<Metrics>) -> Arc<UpstreamClient> {
    Arc::new(
        UpstreamClient::new(&s.upstream, Duration::from_secs(5), metrics.clone()).expect("client"),
    )
}

#[actix_web::test]
async fn the_key_includes_the_upstream_identity() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    for (server, name) in [(&a, "From A"), (&b, "From B")] {
        mount_login(server).await;
        Mock::given(method("GET"))
            .and(path(vendor::load_path(1001)))
            .respond_with(vendor::ok(vendor::audience(1001, name)))
            .mount(server)
            .await;
    }
    let metrics = Arc::new(Metrics::new());
    let sa = upstream_settings(&a.uri(), "svc");
    let cache = AudienceCache::new(&sa.cache, metrics.clone());
    let ctx = CallContext::default();
    let name = |e: &audience_gateway::cache::CachedAudience| -> String {
        let v: serde_json::Value = serde_json::from_slice(&e.audience.body).unwrap();
        v["name"].as_str().unwrap().to_string()
    };

    // Different base URLs.
    let on_a = client(&sa, &metrics);
    let on_b = client(&upstream_settings(&b.uri(), "svc"), &metrics);
    assert_ne!(on_a.identity(), on_b.identity());
    let (ea, _) = cache.get(&on_a, &ctx, 1001, false).await.unwrap();
    let (eb, _) = cache.get(&on_b, &ctx, 1001, false).await.unwrap();
    assert_eq!((name(&ea), name(&eb)), ("From A".into(), "From B".into()));
    let (ea, _) = cache.get(&on_a, &ctx, 1001, false).await.unwrap();
    assert_eq!(name(&ea), "From A");

    // Same base URL, another service account.
    let other_account = client(&upstream_settings(&a.uri(), "svc-2"), &metrics);
    assert_ne!(on_a.identity(), other_account.identity());
    cache.get(&other_account, &ctx, 1001, false).await.unwrap();
    let loads = |reqs: Vec<wiremock::Request>| {
        reqs.iter()
            .filter(|r| r.url.path() == vendor::load_path(1001))
            .count()
    };
    assert_eq!(loads(a.received_requests().await.unwrap()), 2);
    assert_eq!(loads(b.received_requests().await.unwrap()), 1);
    assert_eq!(cache.usage().await.0, 3);
}

#[actix_web::test]
async fn etag_conditional_get_cache_control_and_cache_status() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    let etag = header(&resp, "etag");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    // A browser or proxy keeps the answer but revalidates every reuse with the gateway.
    assert_eq!(header(&resp, "cache-control"), "private, no-cache");
    assert_eq!(header(&resp, "vary"), "Authorization");
    assert_eq!(ttl(&header(&resp, "cache-status"), MISS), 30);
    let body = resp.bytes().await.unwrap();

    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(header(&resp, "etag"), etag);
    assert_eq!(header(&resp, "cache-control"), "private, no-cache");
    assert!((1..=30).contains(&ttl(&header(&resp, "cache-status"), HIT)));
    assert_eq!(resp.bytes().await.unwrap(), body);

    let resp = app
        .get_as(
            "/v1/audiences/1001",
            &full_token(),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(resp.status(), 304);
    assert_eq!(header(&resp, "etag"), etag);
    assert_eq!(header(&resp, "cache-control"), "private, no-cache");
    assert_eq!(header(&resp, "vary"), "Authorization");
    assert!(header(&resp, "cache-status").contains("; hit;"));
    assert!(resp.bytes().await.unwrap().is_empty());

    let list = format!("\"other\", {etag}");
    let resp = app
        .get_as(
            "/v1/audiences/1001",
            &full_token(),
            &[("if-none-match", &list)],
        )
        .await;
    assert_eq!(resp.status(), 304);

    let resp = app
        .get_as(
            "/v1/audiences/1001",
            &full_token(),
            &[("if-none-match", "\"00000000000000000000000000000000\"")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), body);

    // Each view has its own tag.
    let resp = app
        .get_as(
            "/v1/audiences/1001/insights",
            &full_token(),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_ne!(header(&resp, "etag"), etag);
    assert_eq!(app.sim().call_count("loadAudience"), 1);
}

/// A vendor whose audience 1001 is loaded exactly twice: "Old name", then "New name"
/// after `delay`.
async fn renamed_once(delay: Duration) -> MockServer {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(vendor::ok(vendor::audience(1001, "Old name")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(vendor::ok(vendor::audience(1001, "New name")).set_delay(delay))
        .expect(1)
        .mount(&upstream)
        .await;
    upstream
}

#[actix_web::test]
async fn upstream_refresh_goes_upstream_and_refreshes_the_entry() {
    let upstream = renamed_once(Duration::ZERO).await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;

    let name = |v: serde_json::Value| v["name"].as_str().unwrap().to_string();
    let first = app.get("/v1/audiences/1001").await;
    let old_etag = header(&first, "etag");
    assert_eq!(name(first.json().await.unwrap()), "Old name");
    // A browser's revalidation is a gateway hit.
    for directive in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
    ] {
        let hit = app
            .get_as("/v1/audiences/1001", &full_token(), &[directive])
            .await;
        assert!(header(&hit, "cache-status").contains("; hit;"));
        assert_eq!(name(hit.json().await.unwrap()), "Old name");
    }

    let resp = app
        .get_as(
            "/v1/audiences/1001",
            &full_token(),
            &[("cache-control", "upstream-refresh")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(ttl(&header(&resp, "cache-status"), REFRESHED), 30);
    let new_etag = header(&resp, "etag");
    assert_ne!(new_etag, old_etag);
    assert_eq!(name(resp.json().await.unwrap()), "New name");

    // The refreshed copy is what later reads get, without another upstream call.
    let resp = app.get("/v1/audiences/1001").await;
    assert!(header(&resp, "cache-status").contains("; hit;"));
    assert_eq!(header(&resp, "etag"), new_etag);
    assert_eq!(name(resp.json().await.unwrap()), "New name");
    upstream.verify().await;
}

#[actix_web::test]
async fn stale_entry_is_served_when_the_upstream_fails() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_CACHE__TTL_SECS", "1"),
        ("GATEWAY_CACHE__STALE_SECS", "300"),
    ])
    .await;

    let fresh = app.get("/v1/audiences/1001").await;
    assert!(header(&fresh, "cache-status").contains("fwd=uri-miss"));
    let etag = header(&fresh, "etag");
    let body = fresh.bytes().await.unwrap();

    tokio::time::sleep(Duration::from_millis(1_300)).await;
    app.sim().set_down(true);
    let loads = app.sim().call_count("loadAudience");
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    assert!(
        app.sim().call_count("loadAudience") > loads,
        "expired: the upstream was asked first"
    );
    assert_eq!(header(&resp, "cache-control"), "private, no-cache");
    let status = header(&resp, "cache-status");
    assert!(
        status.starts_with("audience-gateway; fwd=stale; ttl=-")
            && status.ends_with("; detail=stale-if-error"),
        "{status}"
    );
    assert_eq!(header(&resp, "etag"), etag);
    assert_eq!(resp.bytes().await.unwrap(), body);

    // Other views of the same entry are served stale too.
    let resp = app.get("/v1/audiences/1001/insights").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "cache-status").contains("fwd=stale"));

    // Back up: the next read fetches again.
    app.sim().set_down(false);
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "cache-status").contains("fwd=uri-miss"));
}

#[actix_web::test]
async fn beyond_the_stale_window_the_upstream_error_is_returned() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_CACHE__TTL_SECS", "1"),
        ("GATEWAY_CACHE__STALE_SECS", "1"),
    ])
    .await;
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);

    tokio::time::sleep(Duration::from_millis(2_300)).await;
    app.sim().set_error_rate(1.0);
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 502);
    assert!(header(&resp, "cache-status").is_empty());
    assert_eq!(header(&resp, "cache-control"), "no-store");
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:upstream_error",
            "title": "Bad gateway",
            "status": 502,
            "detail": "the Digital Audience API failed",
            "code": "upstream_error",
            "requestId": body["requestId"],
        })
    );
}

#[actix_web::test]
async fn if_match_guards_patch_and_delete() {
    let app = spawn_with_sandbox(&[]).await;
    let etag = header(&app.get("/v1/audiences/1001").await, "etag");

    let stale = "\"0123456789abcdef0123456789abcdef\"";
    let resp = app
        .client
        .patch(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .header("if-match", stale)
        .json(&json!({"name": "Lost update"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:precondition_failed",
            "title": "Precondition failed",
            "status": 412,
            "detail": "the audience changed since it was read (ETag mismatch)",
            "code": "precondition_failed",
            "requestId": body["requestId"],
        })
    );
    assert_eq!(app.sim().call_count("updateAudience"), 0);

    let resp = app
        .client
        .patch(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .header("if-match", &etag)
        .json(&json!({"name": "Guarded update"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let new_etag = header(&resp, "etag");
    assert_ne!(new_etag, etag);
    let updated: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(updated["name"], "Guarded update");
    assert_eq!(app.sim().call_count("updateAudience"), 1);
    // The PATCH answers the same representation GET serves.
    assert_eq!(
        header(&app.get("/v1/audiences/1001").await, "etag"),
        new_etag
    );

    // The tag read before the update is stale now.
    let delete = |tag: String| {
        app.client
            .delete(app.url("/v1/audiences/1001"))
            .bearer_auth(full_token())
            .header("if-match", tag)
            .send()
    };
    let resp = delete(etag).await.unwrap();
    assert_eq!(resp.status(), 412);
    assert_eq!(problem(resp).await["code"], "precondition_failed");
    assert_eq!(app.sim().call_count("deleteAudience"), 0);

    let resp = delete(new_etag).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(app.sim().call_count("deleteAudience"), 1);
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 404);
}

#[actix_web::test]
async fn capacity_is_bounded_in_bytes() {
    const MAX_BYTES: u64 = 12_000;
    let config = SimulatorConfig {
        seed_audiences: 40,
        ..SimulatorConfig::default()
    };
    let max = MAX_BYTES.to_string();
    let app = spawn_with_simulator(config, &[("GATEWAY_CACHE__MAX_BYTES", &max)]).await;

    let mut largest = 0;
    for id in 1001..1041 {
        let resp = app.get(&format!("/v1/audiences/{id}")).await;
        assert_eq!(resp.status(), 200, "{id}");
        largest = largest.max(resp.bytes().await.unwrap().len());
        let (_, weighted) = app.state.cache.usage().await;
        assert!(weighted <= MAX_BYTES, "{weighted} > {MAX_BYTES} after {id}");
    }
    assert!(largest * 4 < MAX_BYTES as usize, "entries fit: {largest}");
    let (entries, weighted) = app.state.cache.usage().await;
    assert!((1..40).contains(&entries), "{entries} entries");
    assert!((1..=MAX_BYTES).contains(&weighted), "{weighted}");
    assert_eq!(app.sim().call_count("loadAudience"), 40);
}

#[actix_web::test]
async fn concurrent_forced_refreshes_share_one_upstream_call() {
    let upstream = MockServer::start().await;
    mount_login(&upstream).await;
    // The miss that fills the entry, then one refresh for all the concurrent ones.
    Mock::given(method("GET"))
        .and(path(vendor::load_path(1001)))
        .respond_with(
            vendor::ok(vendor::audience(1001, "Subscribers")).set_delay(Duration::from_millis(500)),
        )
        .expect(2)
        .mount(&upstream)
        .await;
    let app = spawn_with_upstream(&upstream.uri(), &[]).await;
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);

    let refresh = [("cache-control", "upstream-refresh")];
    let statuses = join_all((0..20).map(|_| {
        let app = &app;
        async move {
            let resp = app
                .get_as("/v1/audiences/1001", &full_token(), &refresh)
                .await;
            (resp.status().as_u16(), header(&resp, "cache-status"))
        }
    }))
    .await;
    for (status, cache_status) in &statuses {
        assert_eq!(*status, 200);
        assert!(cache_status.starts_with(REFRESHED), "{cache_status}");
    }
    upstream.verify().await;
}

#[actix_web::test]
async fn writes_answer_the_etag_the_next_write_needs() {
    let app = spawn_with_sandbox(&[]).await;
    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": "Chained", "description": "First", "campaignId": 1}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let created_tag = header(&resp, "etag");
    let created: serde_json::Value = resp.json().await.unwrap();
    let path = format!("/v1/audiences/{}", created["id"]);

    // Create, update, delete, each conditional on the tag the previous write answered.
    let resp = app
        .client
        .patch(app.url(&path))
        .bearer_auth(full_token())
        .header("if-match", &created_tag)
        .json(&json!({"description": "Second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated_tag = header(&resp, "etag");
    assert_ne!(updated_tag, created_tag);
    let resp = app
        .client
        .delete(app.url(&path))
        .bearer_auth(full_token())
        .header("if-match", &updated_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(app.sim().call_count("deleteAudience"), 1);

    // The created tag is the one a read of the new audience answers.
    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": "Read back", "campaignId": 1}),
        )
        .await;
    let tag = header(&resp, "etag");
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"].clone();
    let read = app.get(&format!("/v1/audiences/{id}")).await;
    assert_eq!(header(&read, "etag"), tag);
}

#[actix_web::test]
async fn platform_accounts_revalidate_and_errors_are_never_stored() {
    let app = spawn_with_sandbox(&[]).await;
    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "cache-control"), "private, no-cache");
    assert_eq!(header(&resp, "vary"), "Authorization");
    let etag = header(&resp, "etag");
    let resp = app
        .get_as(
            "/v1/platform-accounts",
            &full_token(),
            &[("if-none-match", &etag), ("cache-control", "max-age=0")],
        )
        .await;
    assert_eq!(resp.status(), 304);
    assert_eq!(header(&resp, "etag"), etag);
    assert!(header(&resp, "cache-status").starts_with(HIT));
    let resp = app
        .get_as(
            "/v1/platform-accounts",
            &full_token(),
            &[("cache-control", "upstream-refresh")],
        )
        .await;
    assert!(header(&resp, "cache-status").starts_with(REFRESHED));
    assert_eq!(app.sim().call_count("loadPlatformAccounts"), 2);

    // Refused, unknown or expired: never kept by a browser.
    let mut claims = tokens::claims();
    claims["exp"] = json!(tokens::now() - 3600);
    let expired = tokens::hs256(&claims);
    for resp in [
        app.client
            .get(app.url("/v1/platform-accounts"))
            .send()
            .await
            .unwrap(),
        app.get_as("/v1/platform-accounts", &expired, &[]).await,
        app.get("/v1/audiences/999999").await,
    ] {
        assert!(resp.status().is_client_error(), "{}", resp.status());
        assert_eq!(header(&resp, "cache-control"), "no-store");
    }
}

/// The `loadAudience` count of `audience_gateway_upstream_request_duration_seconds` and the
/// `revalidate` count of `audience_gateway_cache_lookups_total` in a scrape.
fn revalidation_counts(metrics: &str) -> (u64, u64) {
    let count = |prefix: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    (
        count(
            "audience_gateway_upstream_request_duration_seconds_count{operation=\"loadAudience\"",
        ),
        count("audience_gateway_cache_lookups_total{result=\"revalidate\"}"),
    )
}

#[actix_web::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    // The second load is the one background refresh for all the reads of the expired entry.
    let upstream = renamed_once(Duration::from_millis(300)).await;
    let app = spawn_with_upstream(
        &upstream.uri(),
        &[
            ("GATEWAY_CACHE__TTL_SECS", "2"),
            ("GATEWAY_CACHE__REVALIDATE_SECS", "60"),
        ],
    )
    .await;
    let name = |v: serde_json::Value| v["name"].as_str().unwrap().to_string();
    let first = app.get("/v1/audiences/1001").await;
    let old_etag = header(&first, "etag");
    tokio::time::sleep(Duration::from_millis(2_200)).await;

    let answers = join_all((0..10).map(|_| async {
        let resp = app.get("/v1/audiences/1001").await;
        let status = header(&resp, "cache-status");
        (
            header(&resp, "etag"),
            status,
            name(resp.json().await.unwrap()),
        )
    }))
    .await;
    for (etag, status, name) in &answers {
        assert_eq!((etag, name.as_str()), (&old_etag, "Old name"));
        assert!(
            status.starts_with("audience-gateway; hit; ttl=-")
                && status.ends_with("; detail=stale-while-revalidate"),
            "{status}"
        );
    }
    // The refresh replaces the entry; until then reads keep getting the expired copy.
    let mut refreshed = None;
    for _ in 0..200 {
        let resp = app.get("/v1/audiences/1001").await;
        if header(&resp, "cache-status").starts_with("audience-gateway; hit; ttl=")
            && !header(&resp, "cache-status").contains("ttl=-")
        {
            refreshed = Some(name(resp.json().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refreshed.as_deref(), Some("New name"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let (loads, revalidated) = revalidation_counts(&metrics);
    assert_eq!(
        loads, 2,
        "the miss and the one background refresh: {metrics}"
    );
    assert!(revalidated >= 10, "{revalidated}");
    upstream.verify().await;
}

#[actix_web::test]
async fn a_failed_background_refresh_leaves_the_expired_copy() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_CACHE__TTL_SECS", "1"),
        ("GATEWAY_CACHE__REVALIDATE_SECS", "60"),
    ])
    .await;
    let etag = header(&app.get("/v1/audiences/1001").await, "etag");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.sim().set_down(true);
    let loads = app.sim().call_count("loadAudience");
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "etag"), etag);
    // Once the refresh has failed, the next read starts another and is answered the same.
    for _ in 0..200 {
        if app.sim().call_count("loadAudience") > loads {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        app.sim().call_count("loadAudience") > loads,
        "a refresh was tried"
    );
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "etag"), etag);
    assert!(header(&resp, "cache-status").ends_with("detail=stale-while-revalidate"));
    // Nobody was answered by stale-if-error: the reads were answered before the refresh.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("audience_gateway_cache_lookups_total{result=\"stale\"}"),
        "{metrics}"
    );
}
