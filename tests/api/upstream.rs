//! The upstream client against wiremock: session renewal under concurrency, redirects as
//! expiry, envelope failures on HTTP 200, malformed bodies, timeouts, and what the gateway
//! sends upstream and passes back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const LOGIN: &str = "/account/login";

const LOAD_1001: &str = "/audience/loadAudienceById/1001";

/// A successful vendor envelope.
fn ok(data: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"data": data, "status": {"statusCode": 0, "message": null}, "success": true}),
    )
}

/// A refused call: HTTP 200 with `success: false`.
fn refused(status_code: i64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "data": null,
        "status": {"statusCode": status_code, "message": message},
        "success": false
    }))
}

/// A successful login that sets `cookie`.
fn login_ok(cookie: &str) -> ResponseTemplate {
    ok(json!(true)).insert_header(
        "set-cookie",
        format!("digitalAudience={cookie}; Path=/; HttpOnly").as_str(),
    )
}

/// The login body the test gateway sends (see `helpers::test_env`).
fn login_body() -> Value {
    json!({"userName": "sandbox", "password": "sandbox-password"})
}

fn cookie_is(value: &str) -> wiremock::matchers::HeaderExactMatcher {
    header("cookie", format!("digitalAudience={value}").as_str())
}

/// A vendor audience object.
fn vendor_audience(id: i64) -> Value {
    json!({
        "userId": 7, "description": "from the mock", "campaignId": 3, "campaignName": "Mocked",
        "dataUpdated": null, "startDate": null, "endDate": null,
        "activationStatus": "New", "activationStatusId": 0,
        "lifetimeStatus": "Active", "lifetimeStatusId": 1, "tagCollection": null,
        "crmData": null, "audienceState": "SOMETHING_NEW", "audienceStateId": 42,
        "type": "ONBOARDING", "typeId": 0, "sourceAudienceId": null,
        "sourceAudienceTypeId": null, "canCreateLookalike": false, "hasSegments": false,
        "id": id, "name": "Mocked audience",
        "created": "2025-12-15T11:36:16.489708Z", "updated": "2025-12-15T11:36:16.489708Z"
    })
}

/// A gateway in front of `mock` that starts with the ready session cookie `session`.
async fn gateway_with_session(
    mock: &MockServer,
    session: &str,
    overrides: &[(&str, &str)],
) -> TestApp {
    let mut env = vec![("GATEWAY_UPSTREAM__SESSION_COOKIE", session)];
    env.extend_from_slice(overrides);
    spawn_with_upstream(&mock.uri(), &env).await
}

async fn assert_bad_gateway(resp: reqwest::Response) {
    assert_problem(
        resp,
        502,
        "upstream_error",
        "Bad gateway",
        "the Digital Audience API failed",
        None,
    )
    .await;
}

#[actix_web::test]
async fn twenty_concurrent_calls_after_expiry_log_in_once() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .and(cookie_is("old-session"))
        .respond_with(ResponseTemplate::new(401))
        .named("call with the expired session")
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .and(cookie_is("new-session"))
        .respond_with(ok(vendor_audience(1001)))
        .expect(21)
        .named("call with the new session")
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .and(body_json(login_body()))
        // A slow login, so the other calls pile up behind it.
        .respond_with(login_ok("new-session").set_delay(Duration::from_millis(400)))
        .expect(1)
        .named("login")
        .mount(&mock)
        .await;
    // Caching off: every request must reach the upstream on its own.
    let app =
        gateway_with_session(&mock, "old-session", &[("GATEWAY_CACHE__ENABLED", "false")]).await;

    let calls = (0..20).map(|_| app.get("/v1/audiences/1001"));
    let responses = futures_util::future::join_all(calls).await;

    for resp in responses {
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], 1001);
        assert_eq!(
            body["audienceState"], "SOMETHING_NEW",
            "unknown values pass through"
        );
    }
    let received = mock.received_requests().await.unwrap();
    let expired_calls = received
        .iter()
        .filter(|r| {
            // The login is sent the jar's cookies too, as a browser would.
            r.url.path() != LOGIN
                && r.headers
                    .get("cookie")
                    .is_some_and(|c| c == "digitalAudience=old-session")
        })
        .count();
    assert!(
        (2..=20).contains(&expired_calls),
        "several calls should have met the expired session, got {expired_calls}"
    );
    // Later calls use the new session without logging in again.
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    mock.verify().await;
}

#[actix_web::test]
async fn redirect_401_and_403_mean_expiry_and_redirects_are_never_followed() {
    let expiries = [
        ResponseTemplate::new(302).insert_header(
            "location",
            "/account/login?ReturnUrl=%2Faudience%2FloadAudienceById%2F1001",
        ),
        ResponseTemplate::new(401),
        ResponseTemplate::new(403),
        // An envelope saying 401 on HTTP 200 means the same.
        refused(401, "Session expired"),
    ];
    for expiry in expiries {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(LOAD_1001))
            .and(cookie_is("old-session"))
            .respond_with(expiry)
            .expect(1)
            .named("call with the expired session")
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path(LOGIN))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>log in</html>"))
            .expect(0)
            .named("the login page a redirect points at")
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path(LOGIN))
            .and(body_json(login_body()))
            .respond_with(login_ok("new-session"))
            .expect(1)
            .named("login")
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path(LOAD_1001))
            .and(cookie_is("new-session"))
            .respond_with(ok(vendor_audience(1001)))
            .expect(1)
            .named("retry with the new session")
            .mount(&mock)
            .await;
        let app = gateway_with_session(&mock, "old-session", &[]).await;

        let resp = app.get("/v1/audiences/1001").await;

        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("set-cookie").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["name"], "Mocked audience");
        mock.verify().await;
    }
}

#[actix_web::test]
async fn a_session_refused_right_after_login_is_retried_only_once() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/account/login"))
        .expect(2)
        .named("every call redirected to the login page")
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(login_ok("new-session"))
        .expect(1)
        .named("login")
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOGIN))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&mock)
        .await;
    let app = gateway_with_session(&mock, "old-session", &[]).await;

    let resp = app.get("/v1/audiences/1001").await;

    assert_bad_gateway(resp).await;
    mock.verify().await;
}

#[actix_web::test]
async fn success_false_on_http_200_is_mapped() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .respond_with(refused(404, "Audience 1001 not found"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/createcrmaudience"))
        .and(body_json(json!({"name": "Subscribers", "campaignId": 77})))
        .respond_with(refused(400, "Campaign 77 not found"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/campaign/createcampaign"))
        .respond_with(refused(
            500,
            "System.NullReferenceException at DA.Campaigns.Create() in C:\\build\\secret.cs",
        ))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/audience/delete"))
        .and(body_json(json!({"id": 1001})))
        // `success: true` decides, whatever the status code beside it (docs/UPSTREAM.md).
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": true, "status": {"statusCode": 404, "message": "gone"}, "success": true
        })))
        .expect(1)
        .mount(&mock)
        .await;
    let app = gateway_with_session(&mock, "s1", &[]).await;

    let resp = app.get("/v1/audiences/1001").await;
    assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "audience 1001 was not found",
        None,
    )
    .await;

    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": "Subscribers", "campaignId": 77}),
        )
        .await;
    assert_problem(
        resp,
        422,
        "upstream_rejected",
        "Rejected by the Digital Audience API",
        "the Digital Audience API refused the request: Campaign 77 not found",
        None,
    )
    .await;

    let resp = app.post("/v1/campaigns", &json!({"name": "c"})).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("NullReference") && !text.contains("secret.cs"),
        "{text}"
    );
    assert!(text.contains(r#""code":"upstream_error""#), "{text}");

    let resp = app.delete("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 204);
    mock.verify().await;
}

#[actix_web::test]
async fn malformed_upstream_bodies_are_502_without_echo() {
    let bodies = [
        "<html><body>SqlException at db-7.internal.example: password=hunter2</body></html>",
        r#"{"data": {"id": 1001, "name": "trunc"#,
        r#"{"data": {"id": 1001}, "note": "no success field SqlException"}"#,
        r#"{"data": {"id": "not-a-number-SqlException"}, "status": {"statusCode": 0}, "success": true}"#,
    ];
    for body in bodies {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(LOAD_1001))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "text/html"),
            )
            .expect(1)
            .mount(&mock)
            .await;
        let app = gateway_with_session(&mock, "s1", &[]).await;

        let resp = app.get("/v1/audiences/1001").await;

        assert_eq!(resp.status(), 502);
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let problem: Value = serde_json::from_str(&text).unwrap();
        // The request id is a random UUID, which may hold a leak's letters by chance.
        let mut rest = problem.clone();
        rest.as_object_mut().unwrap().remove("requestId");
        for leak in ["SqlException", "db-7", "hunter2", "trunc", "not-a-number"] {
            assert!(!rest.to_string().contains(leak), "{text}");
        }
        assert_eq!(
            problem,
            json!({
                "type": "urn:audience-gateway:problem:upstream_error",
                "title": "Bad gateway",
                "status": 502,
                "detail": "the Digital Audience API failed",
                "code": "upstream_error",
                "requestId": headers["x-request-id"].to_str().unwrap(),
            })
        );
        mock.verify().await;
    }
}

#[actix_web::test]
async fn a_slow_upstream_is_504() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .respond_with(ok(vendor_audience(1001)).set_delay(Duration::from_secs(5)))
        .expect(1)
        .mount(&mock)
        .await;
    let app = gateway_with_session(
        &mock,
        "s1",
        &[
            ("GATEWAY_UPSTREAM__REQUEST_TIMEOUT_MS", "200"),
            ("GATEWAY_UPSTREAM__RETRIES", "0"),
        ],
    )
    .await;

    let started = Instant::now();
    let resp = app.get("/v1/audiences/1001").await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_problem(
        resp,
        504,
        "upstream_timeout",
        "Gateway timeout",
        "the Digital Audience API did not answer in time",
        None,
    )
    .await;
    mock.verify().await;
}

#[actix_web::test]
async fn callers_cookies_and_tokens_are_not_forwarded() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .respond_with(ok(vendor_audience(1001)))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/createcrmaudience"))
        .respond_with(ok(vendor_audience(1002)))
        .mount(&mock)
        .await;
    let app = gateway_with_session(&mock, "gateway-session", &[]).await;
    let bearer = full_token();

    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .bearer_auth(&bearer)
        .header("cookie", "digitalAudience=callers-session; theme=dark")
        .header("x-request-id", "rid-forward-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .post(app.url("/v1/audiences"))
        .bearer_auth(&bearer)
        .header("cookie", "digitalAudience=callers-session")
        .header("x-request-id", "rid-forward-2")
        .json(&json!({"name": " Fwd ", "campaignId": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let received = mock.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    for (req, rid) in received.iter().zip(["rid-forward-1", "rid-forward-2"]) {
        let cookies: Vec<_> = req
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["digitalAudience=gateway-session"], "{req:?}");
        assert!(req.headers.get("authorization").is_none(), "{req:?}");
        assert_eq!(req.headers["x-request-id"], rid);
        let dump = format!("{req:?}");
        assert!(
            !dump.contains("callers-session") && !dump.contains(&bearer),
            "{dump}"
        );
    }
    let create: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(create, json!({"name": "Fwd", "campaignId": 3}));
}

#[actix_web::test]
async fn access_tokens_are_stripped_from_platform_accounts() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/organisation/loadplatformaccounts"))
        .respond_with(ok(json!([
            {"id": 501, "name": "Meta", "platformId": 1, "platformName": "FACEBOOK",
             "platformDisplayName": "Meta", "agencyId": 42, "agencyName": "Agency",
             "accountTypeId": 1, "accountTypeName": "Ad account", "advertiserId": 1048576,
             "clientId": "c-1", "accessToken": "EAAG-very-secret-platform-token",
             "defaultSegmentPricingCategoryId": null,
             "created": "2025-01-01T00:00:00Z", "updated": "2025-02-01T00:00:00Z"},
            {"id": 503, "name": "TTD", "accessToken": null, "someNewField": {"x": 1}}
        ])))
        .expect(1)
        .mount(&mock)
        .await;
    let app = gateway_with_session(&mock, "s1", &[]).await;

    let resp = app.get("/v1/platform-accounts").await;

    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("accessToken"), "{text}");
    assert!(!text.contains("EAAG-very-secret"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"items": [
            {"id": 501, "name": "Meta", "platformId": 1, "platformName": "FACEBOOK",
             "platformDisplayName": "Meta", "agencyId": 42, "agencyName": "Agency",
             "accountTypeId": 1, "accountTypeName": "Ad account", "advertiserId": "1048576",
             "clientId": "c-1", "defaultSegmentPricingCategoryId": null,
             "created": "2025-01-01T00:00:00Z", "updated": "2025-02-01T00:00:00Z"},
            {"id": 503, "name": "TTD", "platformId": null, "platformName": null,
             "platformDisplayName": null, "agencyId": null, "agencyName": null,
             "accountTypeId": null, "accountTypeName": null, "advertiserId": null,
             "clientId": null, "defaultSegmentPricingCategoryId": null,
             "created": null, "updated": null}
        ]})
    );
}

#[actix_web::test]
async fn a_refused_login_is_502_and_never_shows_the_password() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .and(body_json(login_body()))
        .respond_with(refused(401, "Invalid user name or password"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(path_regex("^/(audience|organisation|campaign)/"))
        .respond_with(ok(vendor_audience(1001)))
        .expect(0)
        .named("any call without a session")
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[]).await;

    let resp = app.get("/v1/audiences/1001").await;

    assert_eq!(resp.status(), 502);
    let headers = format!("{:?}", resp.headers());
    let text = resp.text().await.unwrap();
    for leak in ["sandbox-password", "Invalid user name", "sandbox"] {
        assert!(
            !text.contains(leak) && !headers.contains(leak),
            "{headers} {text}"
        );
    }
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["code"], "upstream_error");
    assert_eq!(problem["detail"], "the Digital Audience API failed");
    mock.verify().await;
}

#[actix_web::test]
async fn a_login_without_a_session_cookie_is_502() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(ok(json!(true)))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .respond_with(ok(vendor_audience(1001)))
        .expect(0)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[]).await;

    assert_bad_gateway(app.get("/v1/audiences/1001").await).await;
    mock.verify().await;
}

#[actix_web::test]
async fn a_ready_session_cookie_is_used_without_login() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(login_ok("unused"))
        .expect(0)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .and(cookie_is("ready-cookie-value"))
        .respond_with(ok(vendor_audience(1001)))
        .expect(1)
        .mount(&mock)
        .await;
    let app = gateway_with_session(&mock, "ready-cookie-value", &[]).await;

    let resp = app.get("/v1/audiences/1001").await;

    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 1001);
    mock.verify().await;
}

#[actix_web::test]
async fn a_first_call_logs_in_lazily_and_keeps_the_session() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .and(body_json(login_body()))
        .respond_with(login_ok("lazy-session"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/audience/loadAudienceById/\d+$"))
        .and(cookie_is("lazy-session"))
        .respond_with(ok(vendor_audience(1001)))
        .expect(3)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(&mock.uri(), &[]).await;

    for id in [1001, 1002, 1003] {
        assert_eq!(app.get(&format!("/v1/audiences/{id}")).await.status(), 200);
    }
    mock.verify().await;
}

/// ASP.NET Core answers a `null` result with `204 No Content` and many writes with an
/// empty body: an empty or `data: null` load is 404, an update or delete without a body
/// succeeded. None of them counts toward the breaker (open after one failure here) or
/// costs a login.
#[actix_web::test]
async fn empty_and_null_answers_mean_what_the_vendor_meant() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(login_ok("s1"))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/audience/loadAudienceById/2"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/audience/loadAudienceById/3"))
        .respond_with(ok(Value::Null))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(LOAD_1001))
        .respond_with(ok(vendor_audience(1001)))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/update"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/audience/delete"))
        .respond_with(ResponseTemplate::new(200).insert_header("content-length", "0"))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__BREAKER_FAILURES", "1"),
            ("GATEWAY_CACHE__ENABLED", "false"),
        ],
    )
    .await;
    for _ in 0..3 {
        for id in [2, 3] {
            let resp = app.get(&format!("/v1/audiences/{id}")).await;
            let detail = format!("audience {id} was not found");
            let rest = json!({"title": "Not found", "detail": detail});
            assert_problem_with(resp, 404, "not_found", rest, "empty load").await;
        }
    }
    // The breaker is still closed: the vendor answered every time.
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 200);
    let resp = app
        .patch(
            "/v1/audiences/1001",
            &json!({"name": "Renamed", "description": "d"}),
        )
        .await;
    assert_eq!(
        resp.status(),
        200,
        "the update happened; the re-read answers"
    );
    assert_eq!(resp.json::<Value>().await.unwrap()["id"], 1001);
    let resp = app.delete("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 204);
    mock.verify().await;
}
