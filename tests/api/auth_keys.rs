//! Verification keys: RS256 and ES256 public keys from PEM, key confusion, and JWKS with
//! rotation, refetch cooldown, outage, algorithm binding; jku/x5u never fetched.
//!
//! The PEM files under `keys/` are throw-away test keys generated once with
//! `openssl genpkey`; nothing trusts them outside these tests.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::tokens::*;
use crate::helpers::*;

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
    let resp = app.get_as(READ_PATH, &token, &[]).await;

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
