//! `/v1/campaigns`: creation, and a campaign the vendor does not know.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn create_campaign_answers_201_without_a_location() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post("/v1/campaigns", &json!({"name": "  Autumn sale  "}))
        .await;

    assert_eq!(resp.status(), 201);
    let (headers, body) = json_body(resp).await;
    // No route reads a campaign back, so no `Location` points at one.
    assert!(headers.get("location").is_none(), "{headers:?}");
    // Seeded campaigns are 1-3.
    assert_eq!(body["id"], 4);
    assert_eq!(body["name"], "Autumn sale", "names are trimmed");
    assert!(body["created"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert_eq!(app.sim().call_count("createCampaign"), 1);
}

#[actix_web::test]
async fn unknown_campaign_is_422_upstream_rejected() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post("/v1/audiences", &json!({"name": "x", "campaignId": 999}))
        .await;

    assert_problem(
        resp,
        422,
        "upstream_rejected",
        "Rejected by the Digital Audience API",
        "the Digital Audience API refused the request: Campaign 999 not found",
        None,
    )
    .await;
    assert_eq!(app.sim().call_count("createAudience"), 1);

    let mut body = activation_body();
    body["accountId"] = json!(599);
    let resp = app.post("/v1/audiences/1001/activations", &body).await;
    assert_problem(
        resp,
        422,
        "upstream_rejected",
        "Rejected by the Digital Audience API",
        "the Digital Audience API refused the request: Platform account 599 not found",
        None,
    )
    .await;
}
