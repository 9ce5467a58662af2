//! What travels between caller, gateway and vendor: request ids (echoed, generated, sent
//! upstream), and never the caller's credentials or cookies, nor a cookie back.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn callers_request_id_is_echoed_and_sent_upstream() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .header("x-request-id", "caller-req-42.a:b_c")
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "x-request-id"),
        "caller-req-42.a:b_c"
    );
    assert_eq!(sim_header(&app, "x-request-id"), ["caller-req-42.a:b_c"]);

    // Also on errors, in the header and in the problem body.
    let resp = app
        .client
        .get(app.url("/v1/audiences/4242"))
        .bearer_auth(full_token())
        .header("x-request-id", "caller-req-43")
        .send()
        .await
        .unwrap();
    assert_eq!(header(resp.headers(), "x-request-id"), "caller-req-43");
    assert_eq!(problem(resp).await["requestId"], "caller-req-43");
    assert_eq!(sim_header(&app, "x-request-id"), ["caller-req-43"]);

    let resp = app
        .client
        .get(app.url("/v1/audiences/1001"))
        .header("x-request-id", "caller-req-44")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(problem(resp).await["requestId"], "caller-req-44");
}

#[actix_web::test]
async fn request_id_is_generated_when_absent_or_unusable() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    let rid = header(resp.headers(), "x-request-id").to_string();
    assert!(uuid::Uuid::parse_str(&rid).is_ok(), "{rid}");
    assert_eq!(sim_header(&app, "x-request-id"), std::slice::from_ref(&rid));

    let resp = app.get("/v1/audiences/4242").await;
    let other = header(resp.headers(), "x-request-id").to_string();
    assert!(uuid::Uuid::parse_str(&other).is_ok(), "{other}");
    assert_ne!(other, rid);
    assert_eq!(problem(resp).await["requestId"], json!(other));
    assert_eq!(sim_header(&app, "x-request-id"), [other]);

    // An id with characters outside the safe set, or too long, is replaced.
    for unusable in ["has space", "semi;colon", &"a".repeat(129)] {
        let resp = app
            .client
            .get(app.url("/v1/audiences/1002"))
            .bearer_auth(full_token())
            .header("x-request-id", unusable)
            .header("cache-control", "upstream-refresh")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let rid = header(resp.headers(), "x-request-id").to_string();
        assert!(uuid::Uuid::parse_str(&rid).is_ok(), "{rid}");
        assert_eq!(sim_header(&app, "x-request-id"), [rid]);
    }
}

#[actix_web::test]
async fn callers_authorization_and_cookies_are_not_forwarded() {
    let app = spawn_with_sandbox(&[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let resp = app
        .client
        .post(app.url("/v1/campaigns"))
        .bearer_auth(full_token())
        .header("cookie", "digitalAudience=callers-own-session; theme=dark")
        .header("traceparent", traceparent)
        .json(&json!({"name": "Forwarding check"}))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 201);
    assert_no_set_cookie(resp.headers());
    let sent = app.sim().last_request_headers();
    let names: Vec<&str> = sent.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"authorization"), "{sent:?}");
    let cookies = sim_header(&app, "cookie");
    assert_eq!(cookies.len(), 1, "{sent:?}");
    let session = cookies[0]
        .strip_prefix("digitalAudience=")
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert!(
        session.len() == 64 && session.bytes().all(|b| b.is_ascii_hexdigit()),
        "only the gateway's own session goes upstream: {cookies:?}"
    );
    assert_eq!(sim_header(&app, "traceparent"), [traceparent]);
    let all = format!("{sent:?}");
    assert!(
        !all.contains("callers-own-session") && !all.contains("theme"),
        "{all}"
    );
    assert!(!all.contains(&full_token()[..20]), "{all}");
}

#[actix_web::test]
async fn no_response_sets_a_cookie() {
    let app = spawn_with_sandbox(&[]).await;
    let responses = vec![
        app.get("/v1/platform-accounts").await,
        app.get("/v1/audiences/1001").await,
        app.get("/v1/audiences/1001/insights").await,
        app.get("/v1/audiences/1001/uploads").await,
        app.post("/v1/campaigns", &json!({"name": "c"})).await,
        app.post("/v1/audiences", &json!({"name": "a", "campaignId": 1}))
            .await,
        app.patch("/v1/audiences/1003", &json!({"name": "b"})).await,
        app.post("/v1/audiences/1003/activations", &activation_body())
            .await,
        app.delete("/v1/audiences/1003").await,
        app.get("/v1/audiences/4242").await,
        app.client.get(app.url("/healthz")).send().await.unwrap(),
    ];
    for resp in responses {
        assert!(
            resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND,
            "{}",
            resp.status()
        );
        assert_no_set_cookie(resp.headers());
    }
    assert!(app.sim().login_count() >= 1);
}
