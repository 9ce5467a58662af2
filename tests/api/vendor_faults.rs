//! The vendor answering in ways our sandbox's contract style never does, pinned with
//! wiremock: refusals as ProblemDetails, expiry as an HTML page, answers that cannot be
//! read after a write, and what an operator finds in the log when a call fails
//! (docs/UPSTREAM.md).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{header as has_header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::vendor::{activation, audience, load_path, mount_login, ok};
use crate::helpers::*;

const LOGIN_PAGE: &str = include_str!("../fixtures/vendor/login-page.html");
const PROBLEM_DETAILS: &str = include_str!("../fixtures/vendor/refusal-problem-details.json");
const ACTIVATE: &str = "/audience/activate";

fn problem_details_400() -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_raw(PROBLEM_DETAILS, "application/problem+json")
}

fn login_page() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(LOGIN_PAGE, "text/html; charset=utf-8")
}

fn login_with(cookie: &str) -> ResponseTemplate {
    ok(json!(true)).insert_header("set-cookie", format!("digitalAudience={cookie}; Path=/"))
}

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(full_token())
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_problem_details_refusal_is_the_callers_422_naming_the_field_and_is_sent_once() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("POST"))
        .and(path(ACTIVATE))
        .respond_with(problem_details_400())
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[]).await;

    let resp = app
        .post("/v1/audiences/1001/activations", &activation_body())
        .await;
    assert_eq!(resp.status(), 422);
    let request_id = header(&resp, "x-request-id");
    assert_eq!(
        problem(resp).await,
        json!({
            "type": "urn:audience-gateway:problem:upstream_rejected",
            "title": "Rejected by the Digital Audience API",
            "status": 422,
            "detail": "the Digital Audience API refused the request: The account 999 does not exist.",
            "code": "upstream_rejected",
            "field": "accountId",
            "requestId": request_id,
        })
    );
    mock.verify().await;
}

#[actix_web::test]
async fn refusals_never_open_the_circuit_nor_are_answered_from_a_stale_copy() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("POST"))
        .and(path("/audience/createcrmaudience"))
        .respond_with(problem_details_400())
        .expect(6)
        .mount(&mock)
        .await;
    // The audience reads fine once, then every read of it is refused.
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .respond_with(ok(audience(1001, "Readable")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .respond_with(ResponseTemplate::new(409).set_body_string("Audience is locked"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1002)))
        .respond_with(ok(audience(1002, "Other")))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__BREAKER_FAILURES", "2"),
            ("GATEWAY_CACHE__STALE_SECS", "600"),
        ],
    )
    .await;

    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    // One caller's six bad creates: three times the breaker's threshold.
    for _ in 0..6 {
        let resp = app
            .post("/v1/audiences", &json!({"name": "x", "campaignId": 1}))
            .await;
        assert_eq!(problem(resp).await["code"], "upstream_rejected");
    }
    // Everyone else's reads still reach the vendor.
    let resp = app.get("/v1/audiences/1002").await;
    assert_eq!(resp.status(), 200);
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["upstream"]["circuit"], "closed", "{ready}");
    // A refusal on a refresh is the caller's answer, not a stale 200.
    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .header("cache-control", "upstream-refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_rejected");
    assert_eq!(
        body["detail"],
        "the Digital Audience API refused the request: Audience is locked"
    );
    mock.verify().await;
}

#[actix_web::test]
async fn an_html_login_page_on_http_200_renews_the_session_once_and_resends() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/account/login"))
        .respond_with(login_with("fresh"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .and(has_header("cookie", "digitalAudience=stale"))
        .respond_with(login_page())
        .expect(20)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path(ACTIVATE))
        .and(has_header("cookie", "digitalAudience=stale"))
        .respond_with(login_page())
        .expect(0..=1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .and(has_header("cookie", "digitalAudience=fresh"))
        .respond_with(ok(audience(1001, "Renewed")))
        .expect(1..)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path(ACTIVATE))
        .and(has_header("cookie", "digitalAudience=fresh"))
        .respond_with(ok(activation()))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__SESSION_COOKIE", "stale"),
            ("GATEWAY_CACHE__ENABLED", "false"),
        ],
    )
    .await;

    // Twenty readers find the session expired at once: one login between them.
    let reads = (0..20).map(|_| app.get("/v1/audiences/1001"));
    for resp in futures_util::future::join_all(reads).await {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["name"], "Renewed");
    }
    // A write answered with the login page was not carried out: sent again, once.
    let resp = post_keyed(
        &app,
        "/v1/audiences/1001/activations",
        "a-1",
        &activation_body(),
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.json::<Value>().await.unwrap()["segmentId"], 7001);
    mock.verify().await;
}

#[actix_web::test]
async fn a_session_older_than_its_maximum_age_is_renewed_before_it_is_used() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/account/login"))
        .respond_with(login_with("renewed"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .and(has_header("cookie", "digitalAudience=initial"))
        .respond_with(ok(audience(1001, "First")))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .and(has_header("cookie", "digitalAudience=renewed"))
        .respond_with(ok(audience(1001, "Second")))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__SESSION_COOKIE", "initial"),
            ("GATEWAY_UPSTREAM__MAX_SESSION_AGE_SECS", "1"),
            ("GATEWAY_CACHE__ENABLED", "false"),
        ],
    )
    .await;

    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.json::<Value>().await.unwrap()["name"], "Second");
    mock.verify().await;
}

#[actix_web::test]
async fn an_unreadable_answer_to_a_write_is_kept_for_retries_instead_of_repeated() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    // Accepted (success: true) but without the ids the gateway must return.
    Mock::given(method("POST"))
        .and(path(ACTIVATE))
        .respond_with(ok(json!({"flowId": null})))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/createcrmaudience"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"data": {"id": 1006, "na"#))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[]).await;

    for (path, body) in [
        ("/v1/audiences/1001/activations", activation_body()),
        (
            "/v1/audiences",
            json!({"name": "Subscribers", "campaignId": 1}),
        ),
    ] {
        let first = post_keyed(&app, path, "k-1", &body).await;
        assert_eq!(first.status(), 502, "{path}");
        assert_eq!(header(&first, "idempotent-replayed"), "");
        let first_id = header(&first, "x-request-id");
        let first = problem(first).await;
        assert_eq!(first["code"], "upstream_response_unreadable");
        assert_eq!(first["requestId"], first_id);

        let again = post_keyed(&app, path, "k-1", &body).await;
        assert_eq!(again.status(), 502, "{path}");
        assert_eq!(header(&again, "idempotent-replayed"), "?1");
        assert_eq!(header(&again, "content-type"), "application/problem+json");
        let again_id = header(&again, "x-request-id");
        let mut again = problem(again).await;
        assert_eq!(
            again["requestId"], again_id,
            "a replay carries its own request id"
        );
        again["requestId"] = first["requestId"].clone();
        assert_eq!(again, first);
    }
    mock.verify().await;
}

#[actix_web::test]
async fn a_late_answer_to_a_write_is_kept_for_retries_instead_of_repeated() {
    let mock = MockServer::start().await;
    mount_login(&mock).await;
    Mock::given(method("POST"))
        .and(path(ACTIVATE))
        .respond_with(ok(activation()).set_delay(Duration::from_millis(1500)))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[("GATEWAY_UPSTREAM__REQUEST_TIMEOUT_MS", "300")],
    )
    .await;

    let resp = post_keyed(
        &app,
        "/v1/audiences/1001/activations",
        "late",
        &activation_body(),
    )
    .await;
    assert_eq!(resp.status(), 504);
    let again = post_keyed(
        &app,
        "/v1/audiences/1001/activations",
        "late",
        &activation_body(),
    )
    .await;
    assert_eq!(again.status(), 504);
    assert_eq!(header(&again, "idempotent-replayed"), "?1");
    assert_eq!(problem(again).await["code"], "upstream_timeout");
    mock.verify().await;
}

#[actix_web::test]
async fn location_headers_name_routes_that_answer_200() {
    let app = spawn_with_sandbox(&[]).await;
    let created = [
        app.post("/v1/campaigns", &json!({"name": "Autumn"})).await,
        app.post(
            "/v1/audiences",
            &json!({"name": "Subscribers", "campaignId": 1}),
        )
        .await,
        app.post("/v1/audiences/1001/activations", &activation_body())
            .await,
    ];
    let mut followed = 0;
    for resp in created {
        assert_eq!(resp.status(), 201);
        if let Some(location) = resp.headers().get("location") {
            let location = location.to_str().unwrap();
            assert_eq!(app.get(location).await.status(), 200, "{location}");
            followed += 1;
        }
    }
    assert_eq!(
        followed, 2,
        "the audience and the activation can be read back"
    );
}

/// An event field of a JSON log line (flattened, or under `fields`).
fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    match &line[name] {
        Value::Null => &line["fields"][name],
        v => v,
    }
}

#[actix_web::test]
async fn every_vendor_failure_is_logged_with_the_operation_status_and_the_value_at_fault() {
    const PASSWORD: &str = "pw-upstream-Zq9-secret";
    const COOKIE: &str = "ck-4f9a2b-session-secret";
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/account/login"))
        .respond_with(login_with(COOKIE))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1001)))
        .respond_with(ok(json!({"id": 1001, "userId": "forty-two"})))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(load_path(1002)))
        .respond_with(ResponseTemplate::new(500).set_body_string("NullReferenceException"))
        .mount(&mock)
        .await;
    let (child, base) = serve_binary(
        &mock.uri(),
        &[
            ("GATEWAY_LOG__FORMAT", "json"),
            ("GATEWAY_UPSTREAM__PASSWORD", PASSWORD),
            ("GATEWAY_UPSTREAM__RETRIES", "0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for id in [1001, 1002] {
        let resp = client
            .get(format!("{base}/v1/audiences/{id}"))
            .bearer_auth(full_token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        ids.push(header(&resp, "x-request-id"));
    }
    // SIGTERM: the binary drains and writes out its last lines.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().expect("binary exits");
    let lines = json_lines(&out.stderr);
    let failed = |request_id: &str| {
        lines
            .iter()
            .find(|l| {
                l["request_id"] == request_id
                    && field(l, "message") == "Digital Audience API call failed"
            })
            .unwrap_or_else(|| panic!("no failure line for {request_id} in {lines:?}"))
            .clone()
    };
    let unreadable = failed(&ids[0]);
    assert_eq!(unreadable["level"], "WARN");
    assert_eq!(field(&unreadable, "op"), "loadAudience");
    let error = field(&unreadable, "error").as_str().unwrap();
    assert!(error.contains("HTTP 200"), "{error}");
    assert!(error.contains("data.userId: invalid value"), "{error}");
    let vendor_500 = failed(&ids[1]);
    assert_eq!(field(&vendor_500, "op"), "loadAudience");
    let error = field(&vendor_500, "error").as_str().unwrap();
    assert!(error.contains("HTTP 500"), "{error}");
    let all = String::from_utf8_lossy(&out.stderr);
    for secret in [PASSWORD, COOKIE, SECRET, "NullReferenceException"] {
        assert!(!all.contains(secret), "{secret} in the log");
    }
}
