//! CORS: preflights without a token, headers on errors too, only the configured origins.

use reqwest::Method;

use crate::helpers::*;

const ORIGIN: &str = "https://app.example.test";

#[actix_web::test]
async fn cors_preflight_is_answered_without_a_token() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CORS_ALLOWED_ORIGINS", ORIGIN)]).await;

    let resp = app
        .client
        .request(Method::OPTIONS, app.url("/v1/audiences/1001"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization, content-type, if-match",
        )
        .send()
        .await
        .unwrap();

    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(header(h, "access-control-allow-origin"), ORIGIN);
    let methods = header(h, "access-control-allow-methods").to_ascii_uppercase();
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = header(h, "access-control-allow-headers").to_ascii_lowercase();
    for name in ["authorization", "content-type", "if-match"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert_eq!(header(h, "access-control-max-age"), "600");
    assert!(h.get("www-authenticate").is_none());
    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn cors_headers_are_on_error_responses_too() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CORS_ALLOWED_ORIGINS", ORIGIN)]).await;

    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 401);
    let h = resp.headers().clone();
    assert_eq!(header(&h, "access-control-allow-origin"), ORIGIN);
    let exposed = header(&h, "access-control-expose-headers").to_ascii_lowercase();
    for name in ["www-authenticate", "x-request-id"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert!(header(&h, "www-authenticate").contains(r#"error="invalid_token""#));
    assert_eq!(problem(resp).await["code"], "invalid_token");

    // And on successes.
    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "access-control-allow-origin"),
        ORIGIN
    );
}

#[actix_web::test]
async fn cors_allows_no_other_origin() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__CORS_ALLOWED_ORIGINS", ORIGIN)]).await;

    let resp = app
        .client
        .request(Method::OPTIONS, app.url("/v1/audiences/1001"))
        .header("origin", "https://evil.example.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!resp.status().is_success(), "{}", resp.status());
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .header("origin", "https://evil.example.test")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .client
        .request(Method::OPTIONS, app.url("/v1/audiences/1001"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    let cors_headers: Vec<_> = resp
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors_headers.is_empty(), "{cors_headers:?}");

    for req in [
        app.client.get(app.url("/v1/audiences/1001")),
        app.client
            .get(app.url("/v1/audiences/1001"))
            .bearer_auth(full_token()),
    ] {
        let resp = req.header("origin", ORIGIN).send().await.unwrap();
        let cors_headers: Vec<_> = resp
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors_headers.is_empty(), "{cors_headers:?}");
    }
}
