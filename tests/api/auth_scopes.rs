//! Scopes: 401 without a token, 403 naming the scope an operation needs, on every route;
//! the `scp` array and a configurable scope claim.

use serde_json::json;

use crate::helpers::tokens::*;
use crate::helpers::*;

#[actix_web::test]
async fn missing_token_is_401_with_bearer_challenge() {
    let app = spawn_with_sandbox(&[]).await;

    let requests = [
        app.client.get(app.url("/v1/audiences/1001")),
        app.client.get(app.url("/v1/platform-accounts")),
        app.client
            .post(app.url("/v1/campaigns"))
            .json(&json!({"name": "x"})),
        app.client.delete(app.url("/v1/audiences/1001")),
        app.client
            .get(app.url("/v1/audiences/1001"))
            .header("authorization", "Bearer "),
        // Authentication comes before any look at the body.
        app.client
            .post(app.url("/v1/campaigns"))
            .header("content-type", "text/plain")
            .body("not json"),
        app.client
            .post(app.url("/v1/audiences"))
            .json(&json!({"name": " ", "campaignId": 0})),
    ];
    for req in requests {
        let resp = req.send().await.unwrap();
        let headers = assert_problem(
            resp,
            401,
            "invalid_token",
            "Unauthorized",
            "a bearer token is required",
            None,
        )
        .await;
        assert_eq!(
            header(&headers, "www-authenticate"),
            r#"Bearer realm="audience-gateway", error="invalid_token", error_description="a bearer token is required""#
        );
    }
    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn missing_scope_is_403_naming_the_scope() {
    let app = spawn_with_sandbox(&[]).await;
    let read_only = token("reader", &["audiences:read"]);

    let cases = [
        (
            app.client
                .post(app.url("/v1/campaigns"))
                .json(&json!({"name": "x"})),
            "audiences:write",
        ),
        (
            app.client
                .patch(app.url("/v1/audiences/1001"))
                .json(&json!({"name": "x"})),
            "audiences:write",
        ),
        (
            app.client.delete(app.url("/v1/audiences/1001")),
            "audiences:delete",
        ),
        (
            app.client
                .post(app.url("/v1/audiences/1001/activations"))
                .json(&activation_body()),
            "audiences:activate",
        ),
    ];
    for (req, scope) in cases {
        let resp = req.bearer_auth(&read_only).send().await.unwrap();
        let headers = assert_problem(
            resp,
            403,
            "insufficient_scope",
            "Forbidden",
            &format!("this operation needs the scope {scope}"),
            None,
        )
        .await;
        assert_eq!(
            header(&headers, "www-authenticate"),
            format!(
                r#"Bearer realm="audience-gateway", error="insufficient_scope", scope="{scope}""#
            )
        );
    }
    let writer = token("writer", &["audiences:write"]);
    let resp = app
        .client
        .get(app.url("/v1/platform-accounts"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        problem(resp).await["detail"],
        "this operation needs the scope audiences:read"
    );
    assert_eq!(upstream_calls(&app), 0);
}

async fn assert_forbidden(app: &TestApp, token: &str, scope: &str) {
    let resp = app.get_as(READ_PATH, token, &[]).await;
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
