//! A whole session (failed login, login, calls, re-login, errors) with every log line
//! captured at TRACE level: no secret appears in any log line or any response.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;
use wiremock::matchers::{body_partial_json, header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::vendor::{audience as audience_json, envelope};
use crate::helpers::*;

const PASSWORD: &str = "pw-Sup3rS3cret-upstream";
const COOKIE_1: &str = "ck1-0a1b2c3d4e5f-session";
/// The vendor's load-balancer affinity cookie, set beside the session on each login.
const AFFINITY: &str = "arr-affinity-9f8e7d6c5b4a";
const COOKIE_2: &str = "ck2-6a7b8c9d0e1f-session";
const ACCESS_TOKEN: &str = "EAAB-platform-access-token-zzz";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide capture: installed once, at TRACE for every crate.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the secrets test owns the global subscriber");
        cap
    })
}

/// A `Cookie` header carrying session `cookie` and the affinity cookie beside it (the jar
/// sends back every cookie the vendor set).
fn sends_session(cookie: &str) -> wiremock::matchers::HeaderRegexMatcher {
    header_regex(
        "cookie",
        &format!("^(.*; )?digitalAudience={cookie}(; .*)?$"),
    )
}

#[actix_web::test]
async fn no_secret_reaches_logs_or_responses() {
    let logs = capture();
    let mock = MockServer::start().await;
    let login = |cookie: &'static str| {
        ResponseTemplate::new(200)
            .insert_header(
                "set-cookie",
                format!("digitalAudience={cookie}; Path=/; HttpOnly").as_str(),
            )
            .append_header(
                "set-cookie",
                format!("ARRAffinity={AFFINITY}; Path=/; HttpOnly").as_str(),
            )
            .set_body_json(envelope(json!(true)))
    };
    // 1st login refused, 2nd gives COOKIE_1, 3rd gives COOKIE_2.
    Mock::given(method("POST"))
        .and(path("/account/login"))
        .and(body_partial_json(json!({"userName": "svc", "password": PASSWORD})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": null, "status": {"statusCode": 401, "message": "Invalid user name or password"}, "success": false
        })))
        .up_to_n_times(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/account/login"))
        .respond_with(login(COOKIE_1))
        .up_to_n_times(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/account/login"))
        .respond_with(login(COOKIE_2))
        .mount(&mock)
        .await;
    // COOKIE_1 works once, then the session "expires".
    Mock::given(method("GET"))
        .and(path("/audience/loadAudienceById/1001"))
        .and(sends_session(COOKIE_1))
        .respond_with(ResponseTemplate::new(200).set_body_json(envelope(audience_json(1001, "a"))))
        .up_to_n_times(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/audience/loadAudienceById/1001"))
        .and(sends_session(COOKIE_1))
        .respond_with(ResponseTemplate::new(401))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/audience/loadAudienceById/1001"))
        .and(sends_session(COOKIE_2))
        .and(header_regex("cookie", &format!("ARRAffinity={AFFINITY}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(envelope(audience_json(1001, "b"))))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/organisation/loadplatformaccounts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(envelope(json!([
            {"id": 501, "name": "Meta", "accessToken": ACCESS_TOKEN}
        ]))))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/activate"))
        .respond_with(
            ResponseTemplate::new(500).set_body_string(format!("trace: cookie={COOKIE_2}")),
        )
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/audience/createcrmaudience"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(format!("{{\"oops\": \"{PASSWORD}\"")),
        )
        .mount(&mock)
        .await;

    let app = spawn_with_upstream(
        &mock.uri(),
        &[
            ("GATEWAY_UPSTREAM__USERNAME", "svc"),
            ("GATEWAY_UPSTREAM__PASSWORD", PASSWORD),
            ("GATEWAY_UPSTREAM__RETRIES", "0"),
            ("GATEWAY_CACHE__ENABLED", "false"),
            ("GATEWAY_LOG__LEVEL", "trace"),
        ],
    )
    .await;
    let caller_token = full_token();
    let mut seen = String::new();
    let call = |resp: reqwest::Response| {
        let status = resp.status().as_u16();
        let headers = format!("{:?}", resp.headers());
        async move {
            let body = resp.text().await.unwrap();
            (status, format!("{headers}\n{body}\n"))
        }
    };
    let send = |req: reqwest::RequestBuilder| {
        req.bearer_auth(&caller_token)
            .header("cookie", "digitalAudience=caller-cookie-must-not-travel")
            .send()
    };
    let c = &app.client;
    let mut statuses = Vec::new();
    for req in [
        c.get(app.url("/v1/audiences/1001")), // login refused -> 502
        c.get(app.url("/v1/audiences/1001")), // login -> COOKIE_1 -> 200
        c.get(app.url("/v1/audiences/1001")), // 401 -> re-login -> COOKIE_2 -> 200
        c.get(app.url("/v1/platform-accounts")),
        c.post(app.url("/v1/audiences/1001/activations"))
            .json(&activation_body()),
        c.post(app.url("/v1/audiences"))
            .json(&json!({"name": "n", "campaignId": 1})),
    ] {
        let (status, text) = call(send(req).await.unwrap()).await;
        statuses.push(status);
        seen.push_str(&text);
    }
    assert_eq!(statuses, [502, 200, 200, 200, 502, 502]);
    // A tampered token is refused without echoing it.
    let bad = c
        .get(app.url("/v1/audiences/1001"))
        .header("authorization", format!("Bearer {caller_token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    seen.push_str(&bad.text().await.unwrap());

    let received = mock.received_requests().await.unwrap();
    for r in &received {
        if r.url.path() != "/account/login" {
            assert!(
                r.headers.get("authorization").is_none(),
                "caller token forwarded"
            );
            let cookie = r
                .headers
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_string());
            assert!(
                !cookie.unwrap_or_default().contains("caller-cookie"),
                "caller cookie forwarded"
            );
        }
    }

    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        logged.contains("upstream session expired"),
        "the capture works: {}",
        &logged[..logged.len().min(2000)]
    );
    let signature = caller_token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("upstream password", PASSWORD),
        ("session cookie 1", COOKIE_1),
        ("session cookie 2", COOKIE_2),
        ("affinity cookie", AFFINITY),
        ("platform access token", ACCESS_TOKEN),
        ("JWT secret", SECRET),
        ("caller token signature", signature),
        ("caller cookie", "caller-cookie-must-not-travel"),
    ] {
        assert!(!logged.contains(secret), "{what} appears in the logs");
        assert!(!seen.contains(secret), "{what} appears in a response");
    }
}
