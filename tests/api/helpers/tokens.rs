//! Tokens and gateways for the authentication tests: keys, claims, signing, and the
//! accepted and refused answers.
//!
//! The PEM files under `keys/` are throw-away test keys generated once with
//! `openssl genpkey`; nothing trusts them outside these tests.

use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use audience_gateway::settings::Settings;
use audience_sandbox::{Simulator, SimulatorConfig};

use super::*;

/// The RSA key the tests sign RS256 tokens with.
pub const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");

/// Its public half, as the gateway is configured with it.
pub const RSA_PUBLIC: &str = include_str!("../keys/rsa_public.pem");

/// A second RSA key, for rotation and foreign-key tests.
pub const RSA2_PRIVATE: &[u8] = include_bytes!("../keys/rsa2_private.pem");

/// The P-256 key the tests sign ES256 tokens with.
pub const EC_PRIVATE: &[u8] = include_bytes!("../keys/ec_private.pem");

/// Its public half.
pub const EC_PUBLIC: &str = include_str!("../keys/ec_public.pem");

/// The setting holding the HS256 secret, to leave it out.
pub const HS_SECRET_ENV: &str = "GATEWAY_AUTH__HS256_SECRET";

/// A route needing `audiences:read`, served by the simulator.
pub const READ_PATH: &str = "/v1/audiences/1001";

/// [`RSA_PRIVATE`] as a signing key.
pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test RSA key")
}

/// [`RSA2_PRIVATE`] as a signing key.
pub fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA2_PRIVATE).expect("second test RSA key")
}

/// [`EC_PRIVATE`] as a signing key.
pub fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE).expect("test EC key")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    get_current_timestamp()
}

/// Claims of a valid token that may read.
pub fn claims() -> Value {
    json!({"sub": "auth-tester", "scope": "audiences:read", "iat": now(), "exp": now() + 600})
}

/// A token of `claims` under `header`, signed with `key`.
pub fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    encode(header, claims, key).expect("sign")
}

/// A token of `claims` signed with the test gateways' HS256 secret.
pub fn hs256(claims: &Value) -> String {
    sign(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// A JWT header for `alg` naming key `kid`.
pub fn with_kid(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h
}

/// A gateway in front of a fresh simulator, with `overrides` and without the settings named
/// in `without` (e.g. the HS256 secret the default test settings carry).
pub async fn gateway(overrides: &[(&str, &str)], without: &[&str]) -> TestApp {
    let sim = Simulator::start(SimulatorConfig::default(), "127.0.0.1:0")
        .await
        .expect("simulator starts");
    let mut env = test_env(&sim.base_url(), overrides);
    for key in without {
        env.remove(*key);
    }
    let settings = Settings::load_from(None, env).expect("test settings");
    spawn_settings(settings, Some(sim)).await
}

/// A read with `token` is answered 200.
pub async fn assert_accepted(app: &TestApp, token: &str) {
    let resp = app.get_as(READ_PATH, token, &[]).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
}

/// Upstream calls other than logins: a refused token must never get that far.
pub fn vendor_calls(app: &TestApp) -> u64 {
    ["loadAudience", "createAudience", "loadPlatformAccounts"]
        .iter()
        .map(|op| app.sim().call_count(op))
        .sum()
}

/// 401 with the whole problem body and the Bearer challenge carrying `detail`.
pub async fn assert_refused(app: &TestApp, token: &str, detail: &str) {
    let before = vendor_calls(app);
    let resp = app.get_as(READ_PATH, token, &[]).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!(
            r#"Bearer realm="audience-gateway", error="invalid_token", error_description="{detail}""#
        )
    );
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:invalid_token",
            "title": "Unauthorized",
            "status": 401,
            "detail": detail,
            "code": "invalid_token",
            "requestId": body["requestId"],
        })
    );
    assert_eq!(
        vendor_calls(app),
        before,
        "a refused token reached the upstream"
    );
}
