//! The whole walkthrough of the README against the simulator.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn create_read_update_activate_delete() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post("/v1/campaigns", &json!({"name": "Spring sale"}))
        .await;
    assert_eq!(resp.status(), 201);
    let campaign: serde_json::Value = resp.json().await.unwrap();
    let campaign_id = campaign["id"].as_i64().unwrap();

    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": "Subscribers", "campaignId": campaign_id}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let created: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(location, format!("/v1/audiences/{}", created["id"]));

    let resp = app.get(&location).await;
    assert_eq!(resp.status(), 200);
    let read: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(read["name"], "Subscribers");

    let resp = app
        .patch(&location, &json!({"description": "weekly"}))
        .await;
    assert_eq!(resp.status(), 200);
    let updated: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (updated["name"].as_str(), updated["description"].as_str()),
        (Some("Subscribers"), Some("weekly"))
    );

    let resp = app
        .post(&format!("{location}/activations"), &activation_body())
        .await;
    assert_eq!(resp.status(), 201);
    let activation: serde_json::Value = resp.json().await.unwrap();
    assert!(
        activation["flowId"].as_str().is_some_and(|f| f.len() == 36),
        "{activation}"
    );
    assert!(activation["segmentId"].as_i64().is_some());

    let resp = app.delete(&location).await;
    assert_eq!(resp.status(), 204);
    let resp = app.get(&location).await;
    assert_eq!(resp.status(), 404);
    let body = problem(resp).await;
    assert_eq!(body["code"], "not_found");
}
