//! Requests for the activation history the gateway refuses: malformed or out-of-range
//! query parameters, a cursor it did not issue, an unknown flow id, a missing scope; each
//! with its whole problem body. The history routes are never answered from the cache.

use serde_json::json;

use crate::helpers::ledger_db::*;
use crate::helpers::*;

#[actix_web::test]
async fn malformed_queries_are_coded_problems() {
    let db = LedgerDb::sqlite();
    let sim = crate::helpers::redis_server::simulator().await;
    let app = db.gateway(&sim).await;
    let list = "/v1/audiences/1001/activations";

    for (query, status, code, title, detail, field) in [
        (
            "?limit=abc",
            400,
            "invalid_query",
            "Invalid query parameter",
            "limit: must be an integer",
            "limit",
        ),
        (
            "?limit=0",
            422,
            "validation_failed",
            "Validation failed",
            "limit: must be between 1 and 100",
            "limit",
        ),
        (
            "?limit=101",
            422,
            "validation_failed",
            "Validation failed",
            "limit: must be between 1 and 100",
            "limit",
        ),
        (
            "?limit=-1",
            422,
            "validation_failed",
            "Validation failed",
            "limit: must be between 1 and 100",
            "limit",
        ),
        (
            "?cursor=not-a-cursor",
            400,
            "invalid_cursor",
            "Invalid cursor",
            "cursor: not a cursor this API returned",
            "cursor",
        ),
        // base64url of `v1:oops:flow`: well encoded, not ours.
        (
            "?cursor=djE6b29wczpmbG93",
            400,
            "invalid_cursor",
            "Invalid cursor",
            "cursor: not a cursor this API returned",
            "cursor",
        ),
        (
            "?accountId=x",
            400,
            "invalid_query",
            "Invalid query parameter",
            "accountId: must be an integer",
            "accountId",
        ),
        (
            "?accountId=0",
            422,
            "validation_failed",
            "Validation failed",
            "accountId: must be an integer between 1 and 9223372036854775807",
            "accountId",
        ),
        (
            "?since=yesterday",
            422,
            "validation_failed",
            "Validation failed",
            "since: must be an RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z",
            "since",
        ),
        (
            "?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            422,
            "validation_failed",
            "Validation failed",
            "until: must be after since",
            "until",
        ),
    ] {
        let resp = app.get(&format!("{list}{query}")).await;
        assert_problem_with(
            resp,
            status,
            code,
            json!({"title": title, "detail": detail, "field": field}),
            query,
        )
        .await;
    }
    assert_eq!(upstream_calls(&app), 0);
}

#[actix_web::test]
async fn unknown_activations_and_bad_ids_are_refused() {
    let db = LedgerDb::sqlite();
    let sim = crate::helpers::redis_server::simulator().await;
    let app = db.gateway(&sim).await;
    let flow = activate_on(&app, 1001, 501).await;

    let resp = app.get("/v1/audiences/1001/activations/no-such-flow").await;
    assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "activation no-such-flow of audience 1001 was not found",
        None,
    )
    .await;
    // A flow id belongs to its audience.
    let resp = app
        .get(&format!("/v1/audiences/1002/activations/{flow}"))
        .await;
    assert_eq!(resp.status(), 404);
    let resp = app.get("/v1/audiences/abc/activations").await;
    assert_problem(
        resp,
        400,
        "invalid_path",
        "Invalid path parameter",
        "id: must be an integer",
        Some("id"),
    )
    .await;
    let resp = app.get("/v1/audiences/0/activations/x").await;
    assert_validation(
        resp,
        "id",
        "must be an integer between 1 and 9223372036854775807",
    )
    .await;
}

#[actix_web::test]
async fn the_history_needs_the_read_scope_and_is_not_cached() {
    let db = LedgerDb::sqlite();
    let sim = crate::helpers::redis_server::simulator().await;
    let app = db.gateway(&sim).await;
    let path = "/v1/audiences/1001/activations";

    let resp = app
        .get_as(path, &token("writer", &["audiences:activate"]), &[])
        .await;
    assert_eq!(resp.status(), 403);
    let resp = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let empty = app.get(path).await;
    assert!(empty.headers().get("cache-status").is_none());
    assert!(empty.headers().get("etag").is_none());
    // An activation shows at once: no cached page hides it.
    let flow = activate_on(&app, 1001, 501).await;
    assert_eq!(all_flow_ids(&app, 1001, 20).await, vec![flow]);
}

#[actix_web::test]
async fn a_history_without_records_exists_only_while_the_vendor_knows_the_audience() {
    let db = LedgerDb::sqlite();
    let sim = crate::helpers::redis_server::simulator().await;
    let app = db.gateway(&sim).await;
    let history = |id: i64| format!("/v1/audiences/{id}/activations");

    // Known to the vendor, never activated: an empty page.
    let resp = app.get(&history(1002)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"items": []})
    );
    // Unknown to the vendor, no records: 404, as a read of the audience is.
    let resp = app.get(&history(999_999)).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert_eq!(problem(resp).await["code"], "not_found");

    // Deleted without an activation: 404. Deleted with activations: the history stays, and
    // a filter matching none of them is an empty page.
    assert_eq!(app.delete("/v1/audiences/1002").await.status(), 204);
    assert_eq!(app.get(&history(1002)).await.status(), 404);
    assert_eq!(activate(&app, &full_token()).await.status(), 201);
    assert_eq!(app.delete("/v1/audiences/1001").await.status(), 204);
    let kept: serde_json::Value = app.get(&history(1001)).await.json().await.unwrap();
    assert_eq!(kept["items"].as_array().map(Vec::len), Some(1), "{kept}");
    assert!(kept["items"][0]["audienceDeletedAt"].is_string(), "{kept}");
    let none = app.get(&format!("{}?accountId=503", history(1001))).await;
    assert_eq!(none.status(), 200);
    assert_eq!(
        none.json::<serde_json::Value>().await.unwrap()["items"],
        json!([])
    );
}
