//! Inbound JWT verification: time claims, issuer and audience, signatures, structure and
//! the usual attacks (alg none, crit, tampering, oversized tokens, other schemes).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::tokens::*;
use crate::helpers::*;

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
