//! Inbound JWT verification: HS256, RS256 and ES256 (PEM), JWKS with rotation and outage,
//! claims, scopes, and the usual attacks (alg none, key confusion, crit, jku/x5u, tampering).
//!
//! The PEM files under `keys/` are throw-away test keys generated once with
//! `openssl genpkey`; nothing trusts them outside these tests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use audience_gateway::settings::Settings;
use audience_sandbox::{Simulator, SimulatorConfig};

use crate::helpers::*;

const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const RSA2_PRIVATE: &[u8] = include_bytes!("keys/rsa2_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");

const HS_SECRET_ENV: &str = "GATEWAY_AUTH__HS256_SECRET";
/// A route needing `audiences:read`, served by the simulator.
const READ_PATH: &str = "/v1/audiences/1001";

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test RSA key")
}

fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA2_PRIVATE).expect("second test RSA key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE).expect("test EC key")
}

fn now() -> u64 {
    get_current_timestamp()
}

/// Claims of a valid token that may read.
fn claims() -> Value {
    json!({"sub": "auth-tester", "scope": "audiences:read", "iat": now(), "exp": now() + 600})
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    encode(header, claims, key).expect("sign")
}

fn hs256(claims: &Value) -> String {
    sign(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn with_kid(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with a hand-made header, HMAC-signed with the test secret unless `alg` is none.
fn raw_token(header: &Value, claims: &Value) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let alg = header["alg"].as_str().unwrap_or("");
    if alg.eq_ignore_ascii_case("none") || alg.is_empty() {
        return format!("{signing_input}.");
    }
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("{signing_input}.{sig}")
}

/// A gateway in front of a fresh simulator, with `overrides` and without the settings named
/// in `without` (e.g. the HS256 secret the default test settings carry).
async fn gateway(overrides: &[(&str, &str)], without: &[&str]) -> TestApp {
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

async fn get_with(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(READ_PATH))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn assert_accepted(app: &TestApp, token: &str) {
    let resp = get_with(app, token).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
}

/// Upstream calls other than logins: a refused token must never get that far.
fn vendor_calls(app: &TestApp) -> u64 {
    ["loadAudience", "createAudience", "loadPlatformAccounts"]
        .iter()
        .map(|op| app.sim().call_count(op))
        .sum()
}

/// 401 with the whole problem body and the Bearer challenge carrying `detail`.
async fn assert_refused(app: &TestApp, token: &str, detail: &str) {
    let before = vendor_calls(app);
    let resp = get_with(app, token).await;
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

// ---------------------------------------------------------------------------------------
// Time claims
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn expired_and_exp_less_tokens_are_refused() {
    let app = gateway(&[], &[]).await;

    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    assert_refused(&app, &hs256(&c), "the token has expired").await;

    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_refused(&app, &hs256(&c), "the token lacks a required claim").await;

    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert_refused(&app, &hs256(&c), "the token lacks a required claim").await;

    assert_accepted(&app, &hs256(&claims())).await;
}

#[actix_web::test]
async fn not_yet_valid_tokens_are_refused_beyond_the_leeway_only() {
    let app = gateway(&[("GATEWAY_AUTH__LEEWAY_SECS", "30")], &[]).await;

    let mut c = claims();
    c["nbf"] = json!(now() + 120);
    assert_refused(&app, &hs256(&c), "the token is not valid yet").await;
    c["nbf"] = json!(now() + 45);
    assert_refused(&app, &hs256(&c), "the token is not valid yet").await;

    // At the edge, within the leeway: a clock a little ahead of ours is tolerated.
    c["nbf"] = json!(now() + 25);
    assert_accepted(&app, &hs256(&c)).await;
}

// ---------------------------------------------------------------------------------------
// Issuer, audience, signature, structure
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = gateway(
        &[
            ("GATEWAY_AUTH__ISSUER", "https://issuer.example.test/"),
            ("GATEWAY_AUTH__AUDIENCE", "audience-gateway"),
        ],
        &[],
    )
    .await;
    let mut good = claims();
    good["iss"] = json!("https://issuer.example.test/");
    good["aud"] = json!("audience-gateway");
    assert_accepted(&app, &hs256(&good)).await;
    let mut listed = good.clone();
    listed["aud"] = json!(["other-api", "audience-gateway"]);
    assert_accepted(&app, &hs256(&listed)).await;

    let mut c = good.clone();
    c["iss"] = json!("https://evil.example.test/");
    assert_refused(&app, &hs256(&c), "the token's issuer is not accepted").await;
    let mut c = good.clone();
    c["aud"] = json!("another-api");
    assert_refused(&app, &hs256(&c), "the token's audience is not accepted").await;
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("iss");
    assert_refused(&app, &hs256(&c), "the token lacks a required claim").await;
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("aud");
    assert_refused(&app, &hs256(&c), "the token lacks a required claim").await;
}

#[actix_web::test]
async fn bad_signatures_and_tampered_payloads_are_refused() {
    let app = gateway(&[], &[]).await;

    let forged = sign(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another-secret-0123456789abcdef-0123456789"),
    );
    assert_refused(&app, &forged, "the token's signature is invalid").await;

    // Take a valid read-only token and grant more scopes in its payload.
    let valid = hs256(&claims());
    assert_accepted(&app, &valid).await;
    let parts: Vec<&str> = valid.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["scope"] = json!("audiences:read audiences:delete");
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_refused(&app, &tampered, "the token's signature is invalid").await;
    let resp = app
        .client
        .delete(app.url("/v1/audiences/1001"))
        .bearer_auth(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_refused(&app, &stripped, "the token's signature is invalid").await;
    assert_refused(&app, "not-a-jwt", "the token is malformed").await;
    assert_refused(&app, "a.b.c", "the token is malformed").await;
}

#[actix_web::test]
async fn alg_none_and_algorithms_outside_the_allow_list_are_refused() {
    let app = gateway(&[], &[]).await;

    for alg in ["none", "None", "NONE", ""] {
        let token = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims());
        assert_refused(&app, &token, "the token's algorithm is not allowed").await;
    }
    let no_alg = raw_token(&json!({"typ": "JWT"}), &claims());
    assert_refused(&app, &no_alg, "the token's algorithm is not allowed").await;

    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(
            &Header::new(alg),
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        );
        assert_refused(&app, &token, "the token's algorithm is not allowed").await;
    }
    let ps256 = sign(&Header::new(Algorithm::PS256), &claims(), &rsa_key());
    assert_refused(&app, &ps256, "the token's algorithm is not allowed").await;
}

#[actix_web::test]
async fn an_algorithm_left_out_of_the_configured_list_is_refused() {
    let app = gateway(
        &[
            ("GATEWAY_AUTH__ALGORITHMS", "RS256"),
            ("GATEWAY_AUTH__PUBLIC_KEY_PEM", RSA_PUBLIC),
        ],
        &[HS_SECRET_ENV],
    )
    .await;

    assert_refused(
        &app,
        &hs256(&claims()),
        "the token's algorithm is not allowed",
    )
    .await;
    let es = sign(&Header::new(Algorithm::ES256), &claims(), &ec_key());
    assert_refused(&app, &es, "the token's algorithm is not allowed").await;
    assert_accepted(
        &app,
        &sign(&Header::new(Algorithm::RS256), &claims(), &rsa_key()),
    )
    .await;
}

#[actix_web::test]
async fn unknown_critical_header_parameters_are_refused() {
    let app = gateway(&[], &[]).await;

    let token = raw_token(
        &json!({"alg": "HS256", "typ": "JWT", "crit": ["exp-extension"], "exp-extension": 1}),
        &claims(),
    );
    assert_refused(&app, &token, "the token has critical header parameters").await;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec![]);
    let token = sign(
        &header,
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    assert_refused(&app, &token, "the token has critical header parameters").await;

    // The same token without `crit` is fine: the signature was not the problem.
    let token = raw_token(&json!({"alg": "HS256", "typ": "JWT"}), &claims());
    assert_accepted(&app, &token).await;
}

#[actix_web::test]
async fn very_large_tokens_are_refused_without_a_server_error() {
    let app = gateway(&[], &[]).await;

    let mut c = claims();
    c["padding"] = json!("x".repeat(9 * 1024));
    let token = hs256(&c);
    assert!(token.len() > 8 * 1024);
    assert_refused(&app, &token, "the token is too large").await;

    for size in [20 * 1024, 64 * 1024] {
        let mut c = claims();
        c["padding"] = json!("x".repeat(size));
        let token = hs256(&c);
        match app
            .client
            .get(app.url(READ_PATH))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                assert!(status == 401 || status == 431, "{status} for {size} bytes");
            }
            // Closing the connection on an oversized head is acceptable too.
            Err(e) => assert!(!e.is_timeout(), "{e}"),
        }
    }
    assert_eq!(vendor_calls(&app), 0);
    // The server still serves afterwards.
    assert_accepted(&app, &hs256(&claims())).await;
}

#[actix_web::test]
async fn other_authorization_schemes_are_refused() {
    let app = gateway(&[], &[]).await;

    for value in [
        format!("Basic {}", URL_SAFE_NO_PAD.encode("user:pass")),
        hs256(&claims()),
        format!("Token {}", hs256(&claims())),
    ] {
        let resp = app
            .client
            .get(app.url(READ_PATH))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let body = problem(resp).await;
        assert_eq!(body["detail"], "the Authorization scheme must be Bearer");
    }
    // The scheme is case-insensitive.
    let resp = app
        .client
        .get(app.url(READ_PATH))
        .header("authorization", format!("bearer {}", hs256(&claims())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

// ---------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------

async fn assert_forbidden(app: &TestApp, token: &str, scope: &str) {
    let resp = get_with(app, token).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        format!(r#"Bearer realm="audience-gateway", error="insufficient_scope", scope="{scope}""#)
    );
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:insufficient_scope",
            "title": "Forbidden",
            "status": 403,
            "detail": format!("this operation needs the scope {scope}"),
            "code": "insufficient_scope",
            "requestId": body["requestId"],
        })
    );
}

#[actix_web::test]
async fn a_missing_scope_is_403() {
    let app = gateway(&[], &[]).await;

    let mut c = claims();
    c["scope"] = json!("audiences:write audiences:delete");
    assert_forbidden(&app, &hs256(&c), "audiences:read").await;
    c["scope"] = json!("audiences:reader audiences");
    assert_forbidden(&app, &hs256(&c), "audiences:read").await;
    c.as_object_mut().unwrap().remove("scope");
    assert_forbidden(&app, &hs256(&c), "audiences:read").await;
    assert_eq!(vendor_calls(&app), 0);
}

#[actix_web::test]
async fn an_scp_array_claim_is_accepted() {
    let app = gateway(&[], &[]).await;

    let token = hs256(&json!({
        "sub": "array-scopes", "exp": now() + 600,
        "scp": ["audiences:write", "audiences:read"]
    }));
    assert_accepted(&app, &token).await;
    let token = hs256(&json!({
        "sub": "array-scopes", "exp": now() + 600, "scope": ["audiences:read"]
    }));
    assert_accepted(&app, &token).await;
    let token = hs256(&json!({
        "sub": "array-scopes", "exp": now() + 600, "scp": ["audiences:write"]
    }));
    assert_forbidden(&app, &token, "audiences:read").await;
}

#[actix_web::test]
async fn the_scope_claim_name_is_configurable() {
    let app = gateway(&[("GATEWAY_AUTH__SCOPE_CLAIM", "permissions")], &[]).await;

    let token = hs256(&json!({
        "sub": "rbac", "exp": now() + 600, "permissions": ["audiences:read"]
    }));
    assert_accepted(&app, &token).await;
    let token = hs256(&json!({
        "sub": "rbac", "exp": now() + 600, "permissions": "audiences:read audiences:write"
    }));
    assert_accepted(&app, &token).await;
    // The configured claim decides: a broader `scope` next to it grants nothing.
    let token = hs256(&json!({
        "sub": "rbac", "exp": now() + 600,
        "permissions": ["audiences:write"], "scope": "audiences:read"
    }));
    assert_forbidden(&app, &token, "audiences:read").await;
}

// ---------------------------------------------------------------------------------------
// Public keys from PEM
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn rs256_tokens_verify_against_a_pem_public_key() {
    let app = gateway(&[("GATEWAY_AUTH__PUBLIC_KEY_PEM", RSA_PUBLIC)], &[]).await;

    assert_accepted(
        &app,
        &sign(&Header::new(Algorithm::RS256), &claims(), &rsa_key()),
    )
    .await;
    // A kid is irrelevant for a single static key.
    assert_accepted(
        &app,
        &sign(
            &with_kid(Algorithm::RS256, "whatever"),
            &claims(),
            &rsa_key(),
        ),
    )
    .await;
    let other_key = sign(&Header::new(Algorithm::RS256), &claims(), &rsa2_key());
    assert_refused(&app, &other_key, "the token's signature is invalid").await;
    let es = sign(&Header::new(Algorithm::ES256), &claims(), &ec_key());
    assert_refused(&app, &es, "no key is configured for the token's algorithm").await;
    // HS256 still works with the configured secret.
    assert_accepted(&app, &hs256(&claims())).await;
}

#[actix_web::test]
async fn es256_tokens_verify_against_a_pem_public_key() {
    let app = gateway(
        &[
            ("GATEWAY_AUTH__PUBLIC_KEY_PEM", EC_PUBLIC),
            ("GATEWAY_AUTH__ALGORITHMS", "ES256"),
        ],
        &[HS_SECRET_ENV],
    )
    .await;

    assert_accepted(
        &app,
        &sign(&Header::new(Algorithm::ES256), &claims(), &ec_key()),
    )
    .await;
    let mut expired = claims();
    expired["exp"] = json!(now() - 600);
    assert_refused(
        &app,
        &sign(&Header::new(Algorithm::ES256), &expired, &ec_key()),
        "the token has expired",
    )
    .await;
    let rs = sign(&Header::new(Algorithm::RS256), &claims(), &rsa_key());
    assert_refused(&app, &rs, "the token's algorithm is not allowed").await;
}

#[actix_web::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    // The classic key confusion: the attacker uses the public PEM as an HMAC secret.
    let confused = |pem: &str| {
        sign(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(pem.as_bytes()),
        )
    };
    let default_algorithms = gateway(
        &[("GATEWAY_AUTH__PUBLIC_KEY_PEM", RSA_PUBLIC)],
        &[HS_SECRET_ENV],
    )
    .await;
    for pem in [RSA_PUBLIC, RSA_PUBLIC.trim_end()] {
        assert_refused(
            &default_algorithms,
            &confused(pem),
            "no key is configured for the token's algorithm",
        )
        .await;
    }
    assert_accepted(
        &default_algorithms,
        &sign(&Header::new(Algorithm::RS256), &claims(), &rsa_key()),
    )
    .await;

    let rs_only = gateway(
        &[
            ("GATEWAY_AUTH__PUBLIC_KEY_PEM", RSA_PUBLIC),
            ("GATEWAY_AUTH__ALGORITHMS", "RS256"),
        ],
        &[HS_SECRET_ENV],
    )
    .await;
    assert_refused(
        &rs_only,
        &confused(RSA_PUBLIC),
        "the token's algorithm is not allowed",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// JWKS
// ---------------------------------------------------------------------------------------

fn jwk(key: &EncodingKey, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn jwks(keys: Vec<Jwk>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(JwkSet { keys })
}

async fn serve_jwks(server: &MockServer, keys: Vec<Jwk>) {
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(jwks(keys))
        .mount(server)
        .await;
}

async fn jwks_gateway(server: &MockServer, cooldown_secs: &str) -> TestApp {
    let url = format!("{}/jwks.json", server.uri());
    gateway(
        &[
            ("GATEWAY_AUTH__JWKS_URL", &url),
            ("GATEWAY_AUTH__JWKS_COOLDOWN_SECS", cooldown_secs),
            ("GATEWAY_AUTH__JWKS_TIMEOUT_MS", "500"),
        ],
        &[],
    )
    .await
}

/// Waits until the gateway reports its JWKS loaded, so a test does not race the first fetch.
async fn wait_until_ready(app: &TestApp) {
    for _ in 0..100 {
        let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
        if resp.status() == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the gateway never became ready");
}

async fn jwks_fetches(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/jwks.json")
        .count()
}

#[actix_web::test]
async fn jwks_keys_rotate_without_a_restart() {
    let server = MockServer::start().await;
    serve_jwks(&server, vec![jwk(&rsa_key(), "k1")]).await;
    let app = jwks_gateway(&server, "0").await;
    wait_until_ready(&app).await;

    let old = sign(&with_kid(Algorithm::RS256, "k1"), &claims(), &rsa_key());
    assert_accepted(&app, &old).await;
    let fetches = jwks_fetches(&server).await;
    assert!(fetches >= 1);

    // The issuer rotates: k1 is retired, k2 takes over.
    server.reset().await;
    serve_jwks(&server, vec![jwk(&rsa2_key(), "k2")]).await;
    let new = sign(&with_kid(Algorithm::RS256, "k2"), &claims(), &rsa2_key());
    assert_accepted(&app, &new).await;
    assert_eq!(
        jwks_fetches(&server).await,
        1,
        "the unknown kid triggered one fetch"
    );
    // A token for the retired key is refused, even though it was verified before.
    assert_refused(&app, &old, "the token's key is unknown").await;
    // A kid nobody published, signed with a known key, is refused too.
    let unknown = sign(&with_kid(Algorithm::RS256, "k9"), &claims(), &rsa2_key());
    assert_refused(&app, &unknown, "the token's key is unknown").await;
    // A known kid with the wrong key's signature.
    let mismatched = sign(&with_kid(Algorithm::RS256, "k2"), &claims(), &rsa_key());
    assert_refused(&app, &mismatched, "the token's signature is invalid").await;
}

#[actix_web::test]
async fn unknown_kids_are_refetched_at_most_once_per_cooldown() {
    let server = MockServer::start().await;
    serve_jwks(&server, vec![jwk(&rsa_key(), "k1")]).await;
    let app = jwks_gateway(&server, "60").await;
    wait_until_ready(&app).await;
    assert_accepted(
        &app,
        &sign(&with_kid(Algorithm::RS256, "k1"), &claims(), &rsa_key()),
    )
    .await;
    let before = jwks_fetches(&server).await;

    for i in 0..5 {
        let token = sign(
            &with_kid(Algorithm::RS256, &format!("random-{i}")),
            &claims(),
            &rsa2_key(),
        );
        assert_refused(&app, &token, "the token's key is unknown").await;
    }
    assert!(
        jwks_fetches(&server).await <= before + 1,
        "unknown kids must not make the gateway hammer the JWKS endpoint"
    );
}

#[actix_web::test]
async fn jwks_endpoint_down_without_cached_keys_is_503() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let app = jwks_gateway(&server, "0").await;

    let token = sign(&with_kid(Algorithm::RS256, "k1"), &claims(), &rsa_key());
    let resp = get_with(&app, &token).await;

    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("www-authenticate").is_none());
    let body = problem(resp).await;
    assert_eq!(
        body,
        json!({
            "type": "urn:audience-gateway:problem:auth_keys_unavailable",
            "title": "Authentication keys unavailable",
            "status": 503,
            "detail": "signing keys cannot be obtained right now",
            "code": "auth_keys_unavailable",
            "requestId": body["requestId"],
        })
    );
    assert_eq!(vendor_calls(&app), 0);
    // Tokens for the static HS256 key do not depend on the JWKS endpoint.
    assert_accepted(&app, &hs256(&claims())).await;

    // Once the endpoint recovers, the same token is accepted.
    server.reset().await;
    serve_jwks(&server, vec![jwk(&rsa_key(), "k1")]).await;
    assert_accepted(&app, &token).await;
}

#[actix_web::test]
async fn jku_and_x5u_headers_are_never_fetched() {
    let attacker = MockServer::start().await;
    Mock::given(any())
        .respond_with(jwks(vec![jwk(&rsa2_key(), "evil")]))
        .expect(0)
        .named("the attacker's key server")
        .mount(&attacker)
        .await;
    let header = |kid: &str| {
        let mut h = with_kid(Algorithm::RS256, kid);
        h.jku = Some(format!("{}/jwks.json", attacker.uri()));
        h.x5u = Some(format!("{}/cert.pem", attacker.uri()));
        h
    };

    // A static public key.
    let app = gateway(&[("GATEWAY_AUTH__PUBLIC_KEY_PEM", RSA_PUBLIC)], &[]).await;
    let evil = sign(&header("evil"), &claims(), &rsa2_key());
    assert_refused(&app, &evil, "the token's signature is invalid").await;
    let honest = sign(&header("k1"), &claims(), &rsa_key());
    assert_accepted(&app, &honest).await;

    // A JWKS URL: only the configured one is ever asked.
    let issuer = MockServer::start().await;
    serve_jwks(&issuer, vec![jwk(&rsa_key(), "k1")]).await;
    let app = jwks_gateway(&issuer, "0").await;
    wait_until_ready(&app).await;
    assert_refused(&app, &evil, "the token's key is unknown").await;
    assert_accepted(&app, &honest).await;

    attacker.verify().await;
}

#[actix_web::test]
async fn jwks_keys_are_bound_to_their_algorithm() {
    let ec = {
        let mut jwk = Jwk::from_encoding_key(&ec_key(), Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some("e1".into());
        jwk
    };
    let oct = {
        let secret = EncodingKey::from_secret(b"a-symmetric-key-published-by-mistake");
        let mut jwk = Jwk::from_encoding_key(&secret, Algorithm::HS256).expect("jwk");
        jwk.common.key_id = Some("h1".into());
        jwk
    };
    let server = MockServer::start().await;
    serve_jwks(&server, vec![jwk(&rsa_key(), "r1"), ec, oct]).await;
    let app = jwks_gateway(&server, "60").await;
    wait_until_ready(&app).await;

    assert_accepted(
        &app,
        &sign(&with_kid(Algorithm::ES256, "e1"), &claims(), &ec_key()),
    )
    .await;
    assert_accepted(
        &app,
        &sign(&with_kid(Algorithm::RS256, "r1"), &claims(), &rsa_key()),
    )
    .await;
    // The kid of the EC key with an RSA signature.
    let crossed = sign(&with_kid(Algorithm::RS256, "e1"), &claims(), &rsa_key());
    assert_refused(
        &app,
        &crossed,
        "the token's algorithm does not match its key",
    )
    .await;
    // Symmetric keys in a JWKS are never used: anyone could read them.
    let hs = sign(
        &with_kid(Algorithm::HS256, "h1"),
        &claims(),
        &EncodingKey::from_secret(b"a-symmetric-key-published-by-mistake"),
    );
    assert_refused(&app, &hs, "the token's signature is invalid").await;
}
