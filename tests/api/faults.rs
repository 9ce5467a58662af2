//! Upstream faults: deadlines, safe retries, the circuit breaker, bounded concurrency,
//! connection refused, malformed and truncated bodies, and recovery after an outage.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::vendor::{audience as audience_json, envelope, mount_login};
use crate::helpers::*;

const LOAD: &str = "/audience/loadAudienceById/1001";

#[actix_web::test]
async fn slow_upstream_answers_504_within_the_budget() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(envelope(audience_json(1001, "a")))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__REQUEST_TIMEOUT_MS", "3000"),
            ("GATEWAY_SERVER__REQUEST_BUDGET_MS", "300"),
        ],
    )
    .await;
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 504);
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_timeout");
    assert_eq!(
        body["detail"],
        "the Digital Audience API did not answer in time"
    );
}

#[actix_web::test]
async fn reads_are_retried_after_a_5xx_burst() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(ResponseTemplate::new(500).set_body_string("<html>boom</html>"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(ResponseTemplate::new(200).set_body_json(envelope(audience_json(1001, "ok"))))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[("GATEWAY_UPSTREAM__RETRIES", "2")]).await;
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["name"], "ok");
}

#[actix_web::test]
async fn activations_are_not_retried_after_a_5xx() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("POST"))
        .and(path("/audience/activate"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[("GATEWAY_UPSTREAM__RETRIES", "3")]).await;
    let resp = app
        .post("/v1/audiences/1001/activations", &activation_body())
        .await;
    assert_eq!(resp.status(), 502);
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_error");
    assert_eq!(body["detail"], "the Digital Audience API failed");
}

#[actix_web::test]
async fn connection_refused_is_503_not_a_hang() {
    // Nothing listens on this port: the request never left (so even this create may be
    // retried); every attempt is refused and the caller gets 503.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_with_upstream(
        &format!("http://127.0.0.1:{port}"),
        &[("GATEWAY_UPSTREAM__SESSION_COOKIE", "ready")],
    )
    .await;
    let resp = app
        .post("/v1/audiences", &json!({"name": "x", "campaignId": 1}))
        .await;
    assert_eq!(resp.status(), 503);
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_unavailable");
}

#[actix_web::test]
async fn malformed_and_truncated_bodies_are_502() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": {\"id\": 10"))
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[("GATEWAY_UPSTREAM__RETRIES", "0")]).await;
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 502);
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_response_unreadable");
    assert_eq!(
        body["detail"],
        "the Digital Audience API answered, but its answer could not be read; the change may have been made"
    );

    // A server that promises 500 bytes and hangs up after 20.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"data\":{\"id\":1001,")
                    .await;
                let _ = sock.shutdown().await;
            });
        }
    });
    let app = spawn_with_upstream(
        &format!("http://{addr}"),
        &[
            ("GATEWAY_UPSTREAM__SESSION_COOKIE", "ready"),
            ("GATEWAY_UPSTREAM__RETRIES", "0"),
        ],
    )
    .await;
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(problem(resp).await["code"], "upstream_error");
}

#[actix_web::test]
async fn breaker_opens_fails_fast_and_closes_after_recovery() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .expect(3)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(envelope(audience_json(1001, "back"))),
        )
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__RETRIES", "0"),
            ("GATEWAY_UPSTREAM__BREAKER_FAILURES", "3"),
            ("GATEWAY_UPSTREAM__BREAKER_OPEN_SECS", "1"),
            ("GATEWAY_CACHE__ENABLED", "false"),
        ],
    )
    .await;
    for _ in 0..3 {
        let resp = app.get("/v1/audiences/1001").await;
        assert_eq!(resp.status(), 503);
    }
    // Open: answered at once, without an upstream call (the mock above expects exactly 3).
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_unavailable");
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["upstream"]["circuit"], "open");
    assert_eq!(
        ready["status"], "ready",
        "an upstream outage does not fail readiness"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(
        resp.status(),
        200,
        "the half-open probe succeeds and closes the breaker"
    );
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["upstream"]["circuit"], "closed");
}

#[actix_web::test]
async fn cached_reads_survive_an_open_breaker() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(envelope(audience_json(1001, "cached"))),
        )
        .up_to_n_times(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(ResponseTemplate::new(500))
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__RETRIES", "0"),
            ("GATEWAY_UPSTREAM__BREAKER_FAILURES", "1"),
            ("GATEWAY_CACHE__TTL_SECS", "1"),
            ("GATEWAY_CACHE__STALE_SECS", "60"),
        ],
    )
    .await;
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let resp = app.get("/v1/audiences/1001").await;
        assert_eq!(resp.status(), 200);
        let status = resp.headers()["cache-status"].to_str().unwrap().to_string();
        assert!(status.contains("fwd=stale"), "{status}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["name"], "cached");
    }
}

#[actix_web::test]
async fn bounded_concurrency_refuses_instead_of_queueing_forever() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("GET"))
        .and(path(LOAD))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(envelope(audience_json(1001, "slow")))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__MAX_CONCURRENCY", "1"),
            ("GATEWAY_UPSTREAM__QUEUE_TIMEOUT_MS", "100"),
            ("GATEWAY_CACHE__ENABLED", "false"),
            ("GATEWAY_UPSTREAM__SESSION_COOKIE", "s1"),
        ],
    )
    .await;
    let first = app.get("/v1/audiences/1001");
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.get("/v1/audiences/1001").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(problem(second).await["code"], "upstream_unavailable");
}

#[actix_web::test]
async fn the_gateway_starts_and_serves_without_its_upstream() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_with_upstream(&format!("http://127.0.0.1:{port}"), &[]).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(app.get("/openapi.json").await.status(), 200);
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 503);
}

#[actix_web::test]
async fn platform_accounts_are_served_stale_through_an_outage() {
    let app = spawn_with_sandbox(&[
        ("GATEWAY_CACHE__TTL_SECS", "1"),
        ("GATEWAY_CACHE__STALE_SECS", "60"),
        ("GATEWAY_UPSTREAM__RETRIES", "0"),
    ])
    .await;
    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "cache-status").contains("fwd=uri-miss"));
    let fresh: serde_json::Value = resp.json().await.unwrap();
    let resp = app.get("/v1/platform-accounts").await;
    assert!(
        header(&resp, "cache-status").contains("hit"),
        "{}",
        header(&resp, "cache-status")
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.sim().set_down(true);
    let calls_before = app.sim().call_count("loadPlatformAccounts");
    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    assert!(
        header(&resp, "cache-status").contains("fwd=stale"),
        "{}",
        header(&resp, "cache-status")
    );
    assert_eq!(header(&resp, "cache-control"), "private, no-cache");
    let stale: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(stale, fresh);
    assert_eq!(
        app.sim().call_count("loadPlatformAccounts"),
        calls_before + 1,
        "it did try the upstream"
    );
}
