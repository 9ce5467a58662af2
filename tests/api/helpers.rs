//! Spawning the gateway for tests, typed request helpers and the shared assertions (whole
//! problem bodies, headers). Tokens and keys for the authentication tests are in
//! [`tokens`], a real `redis-server` for the shared-state tests in [`redis_server`].

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;

use actix_web::dev::ServerHandle;
use actix_web::web;
use audience_gateway::auth::mint::{mint_hs256, TokenSpec};
use audience_gateway::auth::ALL_SCOPES;
use audience_gateway::settings::Settings;
use audience_gateway::{AppState, Application};
use audience_sandbox::{Simulator, SimulatorConfig, SimulatorHandle};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

pub mod ledger_db;
pub mod otlp;
pub mod postgres_server;
pub mod redis_server;
pub mod tokens;

/// HS256 secret of the test gateways.
pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

/// A running gateway.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub state: web::Data<AppState>,
    pub handle: ServerHandle,
    pub sim: Option<SimulatorHandle>,
}

/// Password in the ledger URLs of the PostgreSQL tests (which must never leak).
pub const LEDGER_PASSWORD: &str = "ledger-pw-8c1e0d";

/// A directory of its own for a gateway's SQLite ledger, under the system's temporary
/// directory: gateways never share a ledger unless a test says so.
pub fn fresh_ledger_dir() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("ag-ledger-{}", std::process::id()))
        .join(n.to_string())
        .display()
        .to_string()
}

/// Settings environment for a gateway in front of `upstream`, plus `overrides`.
pub fn test_env(upstream: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let ledger_dir = fresh_ledger_dir();
    let mut env: HashMap<String, String> = [
        ("GATEWAY_LEDGER__DIR", ledger_dir.as_str()),
        ("GATEWAY_SERVER__HOST", "127.0.0.1"),
        ("GATEWAY_SERVER__PORT", "0"),
        ("GATEWAY_SERVER__WORKERS", "1"),
        ("GATEWAY_UPSTREAM__BASE_URL", upstream),
        ("GATEWAY_UPSTREAM__USERNAME", "sandbox"),
        ("GATEWAY_UPSTREAM__PASSWORD", "sandbox-password"),
        ("GATEWAY_UPSTREAM__RETRY_BASE_MS", "5"),
        ("GATEWAY_AUTH__HS256_SECRET", SECRET),
        ("GATEWAY_LOG__LEVEL", "warn"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// A gateway in front of `upstream` (e.g. a wiremock server's URI).
pub async fn spawn_with_upstream(upstream: &str, overrides: &[(&str, &str)]) -> TestApp {
    let settings = Settings::load_from(None, test_env(upstream, overrides)).expect("test settings");
    spawn_settings(settings, None).await
}

/// A gateway in front of a fresh simulator.
pub async fn spawn_with_sandbox(overrides: &[(&str, &str)]) -> TestApp {
    spawn_with_simulator(SimulatorConfig::default(), overrides).await
}

/// A gateway in front of a fresh simulator configured by `config`.
pub async fn spawn_with_simulator(config: SimulatorConfig, overrides: &[(&str, &str)]) -> TestApp {
    let mut env_overrides: Vec<(&str, &str)> = vec![
        ("GATEWAY_UPSTREAM__USERNAME", config.username.as_str()),
        ("GATEWAY_UPSTREAM__PASSWORD", config.password.as_str()),
    ];
    env_overrides.extend_from_slice(overrides);
    let sim = Simulator::start(config.clone(), "127.0.0.1:0")
        .await
        .expect("simulator starts");
    let settings = Settings::load_from(None, test_env(&sim.base_url(), &env_overrides))
        .expect("test settings");
    spawn_settings(settings, Some(sim)).await
}

/// A gateway from explicit settings.
pub async fn spawn_settings(settings: Settings, sim: Option<SimulatorHandle>) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with_listener(settings, listener).expect("app builds");
    let port = app.port();
    let state = app.state();
    let handle = app.handle();
    actix_rt::spawn(app.run_until_stopped(false));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        state,
        handle,
        sim,
    }
}

/// A token for [`SECRET`] with `scopes`, valid for an hour.
pub fn token(sub: &str, scopes: &[&str]) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        &TokenSpec {
            sub: sub.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ttl_secs: 3600,
            client_id: None,
            issuer: None,
            audience: None,
        },
    )
    .expect("mint")
}

/// A token with every scope.
pub fn full_token() -> String {
    token("tester", &ALL_SCOPES)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn sim(&self) -> &SimulatorHandle {
        self.sim.as_ref().expect("this app runs on the simulator")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(full_token())
            .send()
            .await
            .expect("request")
    }

    /// A GET with `token` and extra request headers.
    pub async fn get_as(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.get(self.url(path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(full_token())
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(full_token())
            .send()
            .await
            .expect("request")
    }
}

/// Reads a problem+json body, checking the media type and the request id.
pub async fn problem(resp: reqwest::Response) -> serde_json::Value {
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let rid = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = resp.json().await.expect("problem body");
    assert_eq!(body["requestId"], serde_json::json!(rid), "{body}");
    body
}

/// A valid activation body.
pub fn activation_body() -> serde_json::Value {
    serde_json::json!({
        "accountId": 501,
        "name": "Newsletter - Meta",
        "description": "Q1 push",
        "startDate": "2026-01-01T00:00:00Z",
        "endDate": "2026-03-31T23:59:59Z"
    })
}

/// A token for [`SECRET`] with every scope whose principal is `client_id` (a service token).
pub fn service_token(sub: &str, client_id: &str) -> String {
    mint_hs256(
        SECRET.as_bytes(),
        &TokenSpec {
            sub: sub.into(),
            scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            ttl_secs: 3600,
            client_id: Some(client_id.into()),
            issuer: None,
            audience: None,
        },
    )
    .expect("mint")
}

/// What response headers are read from: a response, or its headers kept after the body
/// was read.
pub trait Headers {
    /// The headers.
    fn header_map(&self) -> &HeaderMap;
}

impl Headers for reqwest::Response {
    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }
}

impl Headers for HeaderMap {
    fn header_map(&self) -> &HeaderMap {
        self
    }
}

/// A response header as text, or "" when absent.
pub fn header(from: &impl Headers, name: &str) -> String {
    from.header_map()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Operation names the simulator counts.
pub const SIM_OPERATIONS: [&str; 8] = [
    "login",
    "createAudience",
    "updateAudience",
    "activateAudience",
    "loadAudience",
    "deleteAudience",
    "createCampaign",
    "loadPlatformAccounts",
];

/// Every request the simulator received, whatever the operation (logins included).
pub fn upstream_calls(app: &TestApp) -> u64 {
    SIM_OPERATIONS
        .iter()
        .map(|op| app.sim().call_count(op))
        .sum()
}

/// The gateway never hands a session (ours or the vendor's) to a caller.
pub fn assert_no_set_cookie(headers: &HeaderMap) {
    assert!(
        headers.get("set-cookie").is_none(),
        "unexpected Set-Cookie: {headers:?}"
    );
}

/// Checks status, media type, request id and the whole problem body.
pub async fn assert_problem(
    resp: reqwest::Response,
    status: u16,
    code: &str,
    title: &str,
    detail: &str,
    field: Option<&str>,
) -> HeaderMap {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    assert_no_set_cookie(&headers);
    let body = problem(resp).await;
    let mut expected = json!({
        "type": format!("urn:audience-gateway:problem:{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "requestId": body["requestId"],
    });
    if let Some(f) = field {
        expected["field"] = json!(f);
    }
    assert_eq!(body, expected);
    assert!(
        body["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    headers
}

/// A 422 `validation_failed` problem naming `field`.
pub async fn assert_validation(resp: reqwest::Response, field: &str, message: &str) {
    assert_problem(
        resp,
        422,
        "validation_failed",
        "Validation failed",
        &format!("{field}: {message}"),
        Some(field),
    )
    .await;
}

/// A 400 `invalid_body` problem with `detail` (and `field`, when named).
pub async fn assert_invalid_body(resp: reqwest::Response, detail: &str, field: Option<&str>) {
    assert_problem(
        resp,
        400,
        "invalid_body",
        "Invalid request body",
        detail,
        field,
    )
    .await;
}

/// Sends `body` as raw bytes with the given content type and a full token.
pub async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(full_token())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

/// A JSON answer without `Set-Cookie`: its headers and body.
pub async fn json_body(resp: reqwest::Response) -> (HeaderMap, Value) {
    let headers = resp.headers().clone();
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_no_set_cookie(&headers);
    (headers, resp.json().await.expect("json body"))
}

/// The values of header `name` on the last request the simulator received.
pub fn sim_header(app: &TestApp, name: &str) -> Vec<String> {
    app.sim()
        .last_request_headers()
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

/// The activations of the seeded audience 1001.
pub const ACTIVATIONS: &str = "/v1/audiences/1001/activations";

/// An activation as the caller holding `bearer`.
pub async fn activate(app: &TestApp, bearer: &str) -> reqwest::Response {
    app.client
        .post(app.url(ACTIVATIONS))
        .bearer_auth(bearer)
        .json(&activation_body())
        .send()
        .await
        .expect("request")
}

/// `RateLimit` parsed: policy name to (remaining, seconds to reset).
pub fn rate_limit(resp: &reqwest::Response) -> HashMap<String, (u64, u64)> {
    let value = header(resp, "ratelimit");
    assert!(
        !value.is_empty(),
        "no RateLimit header: {:?}",
        resp.headers()
    );
    value
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_string();
            let mut r = None;
            let mut t = None;
            for p in parts {
                match p.split_once('=') {
                    Some(("r", v)) => r = v.parse().ok(),
                    Some(("t", v)) => t = v.parse().ok(),
                    _ => panic!("unexpected parameter {p:?} in {value:?}"),
                }
            }
            (name, (r.expect("r"), t.expect("t")))
        })
        .collect()
}

/// A POST of `body` with `key`, as the caller holding `bearer`.
pub async fn post_keyed(
    app: &TestApp,
    bearer: &str,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(bearer)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Vendor wire format, for wiremock upstreams.
pub mod vendor {
    use serde_json::{json, Value};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// A successful vendor envelope around `data`.
    pub fn envelope(data: Value) -> Value {
        json!({"data": data, "status": {"statusCode": 0, "message": null}, "success": true})
    }

    /// The vendor's "audience does not exist" answer (HTTP 200, `success: false`).
    pub fn not_found(id: i64) -> Value {
        json!({
            "data": null,
            "status": {"statusCode": 404, "message": format!("Audience {id} not found")},
            "success": false
        })
    }

    /// A vendor audience object.
    pub fn audience(id: i64, name: &str) -> Value {
        json!({
            "id": id,
            "name": name,
            "description": null,
            "userId": 4217,
            "campaignId": 1,
            "campaignName": "Sandbox campaign",
            "activationStatus": "New",
            "audienceState": "NODATA",
            "type": "ONBOARDING",
            "crmData": null,
            "created": "2025-03-03T08:00:00Z",
            "updated": "2025-03-03T08:00:00Z"
        })
    }

    /// A 200 answer carrying `data` in an envelope.
    pub fn ok(data: Value) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(envelope(data))
    }

    /// Mounts a login that always succeeds with a session cookie.
    pub async fn mount_login(server: &MockServer) {
        Mock::given(method("POST"))
            .and(path("/account/login"))
            .respond_with(
                ok(json!(true)).insert_header("set-cookie", "digitalAudience=c0ffee; Path=/"),
            )
            .mount(server)
            .await;
    }

    /// `GET /audience/loadAudienceById/{id}`.
    pub fn load_path(id: i64) -> String {
        format!("/audience/loadAudienceById/{id}")
    }

    /// A vendor activation result.
    pub fn activation() -> Value {
        json!({"flowId": "3f2b8c1e-6a4b-4f0e-9a55-2d1f7f0f9c1a", "segmentId": 7001})
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The real binary running `serve` on a free port in front of `upstream`, with `env`
/// (GATEWAY_* settings) on top of a service account and the test secret, its stderr piped
/// for the log lines, its ledger in a directory of its own unless `env` names one; returns
/// once `/healthz` answers, with the child and its base URL.
pub async fn serve_binary(upstream: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audience-gateway"));
    cmd.arg("serve")
        .env("GATEWAY_SERVER__HOST", "127.0.0.1")
        .env("GATEWAY_SERVER__PORT", port.to_string())
        .env("GATEWAY_SERVER__WORKERS", "1")
        .env("GATEWAY_UPSTREAM__BASE_URL", upstream)
        .env("GATEWAY_UPSTREAM__USERNAME", "svc")
        .env("GATEWAY_UPSTREAM__PASSWORD", "pw")
        .env("GATEWAY_AUTH__HS256_SECRET", SECRET)
        .env("GATEWAY_LEDGER__DIR", fresh_ledger_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

/// The simulator with its default config, and [`serve_binary`] logged in to it.
pub async fn serve_binary_with_simulator(
    env: &[(&str, &str)],
) -> (SimulatorHandle, std::process::Child, String) {
    let config = SimulatorConfig::default();
    let sim = Simulator::start(config.clone(), "127.0.0.1:0")
        .await
        .expect("simulator starts");
    let account = [
        ("GATEWAY_UPSTREAM__USERNAME", config.username.as_str()),
        ("GATEWAY_UPSTREAM__PASSWORD", config.password.as_str()),
    ];
    let (child, base) = serve_binary(&sim.base_url(), &[&account[..], env].concat()).await;
    (sim, child, base)
}

/// The readiness body of the gateway binary at `base`.
pub async fn binary_readiness(base: &str) -> Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readiness answers")
        .json()
        .await
        .expect("readiness body")
}

/// The lines the gateway binary wrote to stderr that are JSON objects.
pub fn json_lines(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Stops a [`serve_binary`] child with SIGTERM (it drains and writes out its last log
/// lines) and returns its stderr.
pub fn stop_binary(child: std::process::Child) -> Vec<u8> {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait_with_output().expect("binary exits").stderr
}

/// Checks a problem body whole: `rest` holds what is not derived from `status` and `code`
/// (the request id is checked by `problem`).
pub async fn assert_problem_with(
    resp: reqwest::Response,
    status: u16,
    code: &str,
    rest: Value,
    case: &str,
) {
    assert_eq!(resp.status(), status, "{case}");
    let body = problem(resp).await;
    let mut expected = json!({
        "type": format!("urn:audience-gateway:problem:{code}"),
        "status": status,
        "code": code,
        "requestId": body["requestId"],
    });
    for (key, value) in rest.as_object().expect("object") {
        expected[key] = value.clone();
    }
    assert_eq!(body, expected, "{case}");
}
