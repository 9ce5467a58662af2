//! Requests the gateway refuses before any upstream call: malformed or unknown bodies,
//! wrong media types, oversized bodies, invalid fields and ids, unknown routes; each with
//! its whole problem body.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn invalid_json_is_400() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = send_raw(
        &app,
        Method::POST,
        "/v1/campaigns",
        "application/json",
        r#"{"name":"#,
    )
    .await;
    assert_invalid_body(
        resp,
        "the body is not valid JSON: EOF while parsing a value",
        None,
    )
    .await;

    let resp = send_raw(
        &app,
        Method::POST,
        "/v1/audiences",
        "application/json; charset=utf-8",
        r#"{"name": "x", "campaignId": 1} trailing"#,
    )
    .await;
    assert_invalid_body(
        resp,
        "the body has trailing characters after the JSON value",
        None,
    )
    .await;

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn unknown_field_is_400_and_named() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": "x", "campaignId": 1, "colour": "red"}),
        )
        .await;
    assert_invalid_body(
        resp,
        "colour: unknown field `colour`, expected one of `name`, `description`, `campaignId`",
        Some("colour"),
    )
    .await;

    let resp = app
        .post(
            "/v1/audiences/1001/activations",
            &json!({"accountId": 501, "name": "n", "description": "d",
                    "startDate": "2026-01-01T00:00:00Z", "endDate": "2026-02-01T00:00:00Z",
                    "audienceId": 1002}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(body["field"], "audienceId");
    assert_eq!(body["code"], "invalid_body");

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn wrong_type_and_missing_field_are_400_and_named() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post("/v1/audiences", &json!({"name": "x", "campaignId": "one"}))
        .await;
    assert_invalid_body(
        resp,
        "campaignId: invalid type: string \"one\", expected a JSON number",
        Some("campaignId"),
    )
    .await;

    let resp = app.post("/v1/campaigns", &json!({"name": 5})).await;
    assert_invalid_body(
        resp,
        "name: invalid type: integer `5`, expected a string",
        Some("name"),
    )
    .await;

    let resp = app.post("/v1/audiences", &json!({"name": "x"})).await;
    assert_invalid_body(
        resp,
        "campaignId: missing field `campaignId`",
        Some("campaignId"),
    )
    .await;

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn wrong_content_type_is_415() {
    let app = spawn_with_sandbox(&[]).await;

    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = send_raw(&app, Method::POST, "/v1/campaigns", ct, r#"{"name":"x"}"#).await;
        assert_problem(
            resp,
            415,
            "unsupported_media_type",
            "Unsupported media type",
            "the request body must be application/json",
            None,
        )
        .await;
    }
    let resp = app
        .client
        .patch(app.url("/v1/audiences/1001"))
        .bearer_auth(full_token())
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn oversized_body_is_413() {
    let app = spawn_with_sandbox(&[("GATEWAY_SERVER__MAX_BODY_BYTES", "64")]).await;
    let big = json!({"name": "x".repeat(100), "campaignId": 1});

    let resp = app.post("/v1/audiences", &big).await;

    assert_problem(
        resp,
        413,
        "payload_too_large",
        "Payload too large",
        "the request body exceeds 64 bytes",
        None,
    )
    .await;
    // A body within the limit still works.
    let resp = app
        .post("/v1/audiences", &json!({"name": "ok", "campaignId": 1}))
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(app.sim().call_count("createAudience"), 1);
}

#[actix_web::test]
async fn blank_and_over_long_names_are_422() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post("/v1/audiences", &json!({"name": "", "campaignId": 1}))
        .await;
    assert_validation(resp, "name", "must not be blank").await;
    let resp = app.post("/v1/campaigns", &json!({"name": " \t\n  "})).await;
    assert_validation(resp, "name", "must not be blank").await;
    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": "x".repeat(201), "campaignId": 1}),
        )
        .await;
    assert_validation(resp, "name", "must be at most 200 characters").await;
    let resp = app
        .patch("/v1/audiences/1001", &json!({"name": "   "}))
        .await;
    assert_validation(resp, "name", "must not be blank").await;
    let resp = app.patch("/v1/audiences/1001", &json!({})).await;
    assert_validation(resp, "name", "give name or description to change").await;
    let mut body = activation_body();
    body["name"] = json!("  ");
    let resp = app.post("/v1/audiences/1001/activations", &body).await;
    assert_validation(resp, "name", "must not be blank").await;

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn activation_dates_are_validated_422() {
    let app = spawn_with_sandbox(&[]).await;

    let mut body = activation_body();
    body["startDate"] = json!("2026-03-01T00:00:00Z");
    body["endDate"] = json!("2026-02-01T00:00:00Z");
    let resp = app.post("/v1/audiences/1001/activations", &body).await;
    assert_validation(resp, "endDate", "must be after startDate").await;

    body["endDate"] = json!("2026-03-01T00:00:00Z");
    let resp = app.post("/v1/audiences/1001/activations", &body).await;
    assert_validation(resp, "endDate", "must be after startDate").await;

    let rfc3339 = "must be an RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z";
    for bad in [
        "2026-01-01",
        "01/01/2026",
        "tomorrow",
        "2026-01-01 00:00:00",
    ] {
        let mut body = activation_body();
        body["startDate"] = json!(bad);
        let resp = app.post("/v1/audiences/1001/activations", &body).await;
        assert_validation(resp, "startDate", rfc3339).await;
    }
    let mut body = activation_body();
    body["endDate"] = json!("2026-13-01T00:00:00Z");
    let resp = app.post("/v1/audiences/1001/activations", &body).await;
    assert_validation(resp, "endDate", rfc3339).await;

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn ids_out_of_range_are_422_and_non_numeric_ids_400() {
    let app = spawn_with_sandbox(&[]).await;
    let range = "must be an integer between 1 and 9223372036854775807";

    for id in ["0", "-1", "-9223372036854775808"] {
        let resp = app.get(&format!("/v1/audiences/{id}")).await;
        assert_validation(resp, "id", range).await;
        let resp = app.get(&format!("/v1/audiences/{id}/insights")).await;
        assert_validation(resp, "id", range).await;
        let resp = app.delete(&format!("/v1/audiences/{id}")).await;
        assert_validation(resp, "id", range).await;
    }
    let resp = app
        .post("/v1/audiences/0/activations", &activation_body())
        .await;
    assert_validation(resp, "id", range).await;
    let resp = app.patch("/v1/audiences/-7", &json!({"name": "x"})).await;
    assert_validation(resp, "id", range).await;

    for campaign in [json!(0), json!(-3), json!(i64::MIN)] {
        let resp = app
            .post(
                "/v1/audiences",
                &json!({"name": "x", "campaignId": campaign}),
            )
            .await;
        assert_validation(resp, "campaignId", range).await;
    }
    let mut body = activation_body();
    body["accountId"] = json!(0);
    let resp = app.post("/v1/audiences/1001/activations", &body).await;
    assert_validation(resp, "accountId", range).await;

    for id in ["abc", "1.5", "1e3", "%20", "99999999999999999999"] {
        let resp = app.get(&format!("/v1/audiences/{id}")).await;
        assert_problem(
            resp,
            400,
            "invalid_path",
            "Invalid path parameter",
            "id: must be an integer",
            Some("id"),
        )
        .await;
    }

    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn unknown_route_is_404_route_not_found() {
    let app = spawn_with_sandbox(&[]).await;

    for path in [
        "/v1/nope",
        "/v2/audiences/1001",
        "/v1/audiences/1001/segments",
        "/",
    ] {
        // No token: unknown routes are not an auth question.
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        let headers = assert_problem(
            resp,
            404,
            "route_not_found",
            "Not found",
            "no route matches this path",
            None,
        )
        .await;
        assert!(headers.get("www-authenticate").is_none());
    }
    assert_eq!(upstream_calls(&app), 0);
}
