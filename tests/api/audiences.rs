//! `/v1/audiences` against the simulator: create, read, update, delete, activate, insights
//! and uploads, and an audience the vendor does not have.

use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn create_audience_answers_201_with_location_and_reads_back() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post(
            "/v1/audiences",
            &json!({"name": " Subscribers ", "description": "Opt-in list", "campaignId": 1}),
        )
        .await;

    assert_eq!(resp.status(), 201);
    let (headers, created) = json_body(resp).await;
    // Five audiences are seeded from 1001.
    assert_eq!(header(&headers, "location"), "/v1/audiences/1006");
    let mut expected = json!({
        "id": 1006,
        "name": "Subscribers",
        "description": "Opt-in list",
        "campaignId": 1,
        "campaignName": "Sandbox campaign",
        "userId": 4217,
        "type": "ONBOARDING",
        "typeId": 0,
        "activationStatus": "New",
        "activationStatusId": 0,
        "lifetimeStatus": null,
        "lifetimeStatusId": null,
        "audienceState": "NODATA",
        "audienceStateId": 5,
        "canCreateLookalike": false,
        "hasSegments": false,
        "sourceAudienceId": null,
        "sourceAudienceTypeId": null,
        "tagCollection": null,
        "startDate": null,
        "endDate": null,
        "created": created["created"],
        "updated": created["updated"],
        "dataUpdated": null,
        "hasCrmData": false,
    });
    assert_eq!(created, expected);
    assert!(created["created"].is_string());

    let resp = app.get("/v1/audiences/1006").await;
    assert_eq!(resp.status(), 200);
    let (_, read) = json_body(resp).await;
    expected["updated"] = read["updated"].clone();
    assert_eq!(read, expected);
}

#[actix_web::test]
async fn get_audience_answers_with_cache_headers() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/audiences/1001").await;

    assert_eq!(resp.status(), 200);
    let (headers, body) = json_body(resp).await;
    let etag = header(&headers, "etag").to_string();
    assert!(
        etag.len() == 34 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    assert_eq!(header(&headers, "cache-control"), "private, no-cache");
    assert_eq!(header(&headers, "vary"), "Authorization");
    assert!(
        header(&headers, "cache-status").starts_with("audience-gateway; fwd=uri-miss; stored"),
        "{headers:?}"
    );
    assert_eq!(body["id"], 1001);
    assert_eq!(body["name"], "Newsletter subscribers");
    assert_eq!(body["description"], "Seeded CRM audience #1");
    assert_eq!(body["campaignId"], 1);
    assert_eq!(body["campaignName"], "Sandbox campaign");
    assert_eq!(body["lifetimeStatus"], "Active");
    assert_eq!(body["audienceState"], "READY");
    assert_eq!(body["hasCrmData"], true);
    assert!(body.get("crmData").is_none(), "{body}");

    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "etag"), etag);
    assert!(header(resp.headers(), "cache-status").starts_with("audience-gateway; hit"));
    assert_eq!(app.sim().call_count("loadAudience"), 1);
}

#[actix_web::test]
async fn patch_fills_the_name_and_keeps_the_description_when_absent() {
    let app = spawn_with_sandbox(&[]).await;

    // Name absent: the current name is sent to the vendor, which replaces both fields.
    let resp = app
        .patch(
            "/v1/audiences/1001",
            &json!({"description": "Refreshed weekly"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (headers, updated) = json_body(resp).await;
    let etag = header(&headers, "etag").to_string();
    assert_eq!(updated["name"], "Newsletter subscribers");
    assert_eq!(updated["description"], "Refreshed weekly");

    // Description absent: the vendor would clear it; the gateway keeps it.
    let resp = app
        .patch("/v1/audiences/1001", &json!({"name": "Newsletter (EU)"}))
        .await;
    assert_eq!(resp.status(), 200);
    let (headers, updated) = json_body(resp).await;
    assert_ne!(header(&headers, "etag"), etag);
    assert_eq!(updated["name"], "Newsletter (EU)");
    assert_eq!(updated["description"], "Refreshed weekly");

    // A read sees the same version (no stale cache entry).
    let resp = app.get("/v1/audiences/1001").await;
    let patch_etag = header(&headers, "etag").to_string();
    assert_eq!(header(resp.headers(), "etag"), patch_etag);
    let (_, read) = json_body(resp).await;
    assert_eq!(read, updated);
    assert_eq!(app.sim().call_count("updateAudience"), 2);
}

#[actix_web::test]
async fn delete_answers_204_then_the_audience_is_gone() {
    let app = spawn_with_sandbox(&[]).await;
    // Warm the cache so the delete must evict it.
    assert_eq!(app.get("/v1/audiences/1004").await.status(), 200);

    let resp = app.delete("/v1/audiences/1004").await;

    assert_eq!(resp.status(), 204);
    assert_no_set_cookie(resp.headers());
    assert!(resp.headers().get("content-type").is_none());
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = app.get("/v1/audiences/1004").await;
    assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "audience 1004 was not found",
        None,
    )
    .await;
    let resp = app.delete("/v1/audiences/1004").await;
    assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "audience 1004 was not found",
        None,
    )
    .await;
}

#[actix_web::test]
async fn activation_answers_201_with_flow_and_segment() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app
        .post("/v1/audiences/1001/activations", &activation_body())
        .await;

    assert_eq!(resp.status(), 201);
    let (headers, body) = json_body(resp).await;
    let flow_id = body["flowId"].as_str().expect("flowId").to_string();
    assert!(uuid::Uuid::parse_str(&flow_id).is_ok(), "{flow_id}");
    assert_eq!(
        body,
        json!({"audienceId": 1001, "accountId": 501, "flowId": flow_id, "segmentId": 7001})
    );
    // `Location` points at the activation in the history.
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/audiences/1001/activations/{flow_id}").as_str()),
        "{headers:?}"
    );
    assert!(headers.get("ratelimit-policy").is_some(), "{headers:?}");
    assert!(headers.get("ratelimit").is_some(), "{headers:?}");

    // The audience reads as activated afterwards (the cache was evicted).
    let (_, read) = json_body(app.get("/v1/audiences/1001").await).await;
    assert_eq!(read["activationStatus"], "Active");
    assert_eq!(read["startDate"], "2026-01-01T00:00:00Z");
    assert_eq!(read["hasSegments"], true);
}

/// Logs into the simulator directly and reads the vendor's own audience object.
async fn vendor_audience(app: &TestApp, id: i64) -> Value {
    let base = app.sim().base_url();
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{base}/account/login"))
        .json(&json!({"userName": "sandbox", "password": "sandbox-password"}))
        .send()
        .await
        .unwrap();
    let cookie = header(login.headers(), "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let env: Value = http
        .get(format!("{base}/audience/loadAudienceById/{id}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["success"], true, "{env}");
    env["data"].clone()
}

fn upload_time(date: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(date).expect("RFC 3339 upload date")
}

/// Our identifier list for one vendor upload event.
fn expected_identifiers(event: &Value) -> Value {
    let data_set = event["dataSet"].as_object().unwrap();
    let mut kinds: Vec<&String> = data_set.keys().collect();
    kinds.sort();
    kinds
        .into_iter()
        .map(|kind| {
            let c = &data_set[kind];
            json!({
                "type": kind,
                "total": c["TOTAL"],
                "unique": c["UNIQUE"],
                "matched": c["MATCH"],
                "usableMatched": c["UMATCH"],
                "unmatched": c["NOMATCH"],
                "matchRate": event["matchRates"][kind],
            })
        })
        .collect()
}

#[actix_web::test]
async fn uploads_are_newest_first_and_insights_come_from_the_newest_upload() {
    let app = spawn_with_sandbox(&[]).await;
    let mut multi_upload_audiences = 0;

    for id in [1001, 1003, 1004, 1005] {
        let vendor = vendor_audience(&app, id).await;
        let crm = &vendor["crmData"];
        let history = crm["history"]["history"].as_object().expect("history");
        let mut dates: Vec<&String> = history.keys().collect();
        dates.sort_by_key(|d| std::cmp::Reverse(upload_time(d)));
        if dates.len() > 1 {
            multi_upload_audiences += 1;
        }

        let resp = app.get(&format!("/v1/audiences/{id}/uploads")).await;
        assert_eq!(resp.status(), 200);
        let (headers, uploads) = json_body(resp).await;
        assert!(headers.get("etag").is_some());
        let expected_uploads: Vec<Value> = dates
            .iter()
            .map(|d| {
                let e = &history[*d];
                json!({
                    "uploadedAt": d,
                    "created": e["created"],
                    "mode": e["mode"],
                    "totalRows": e["totalRows"],
                    "identifiers": expected_identifiers(e),
                })
            })
            .collect();
        assert_eq!(
            uploads,
            json!({
                "audienceId": id,
                "totalEvents": crm["history"]["totalEvents"],
                "uploads": expected_uploads,
            })
        );
        let times: Vec<_> = uploads["uploads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| upload_time(u["uploadedAt"].as_str().unwrap()))
            .collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]), "{uploads}");

        let resp = app.get(&format!("/v1/audiences/{id}/insights")).await;
        assert_eq!(resp.status(), 200);
        let (_, insights) = json_body(resp).await;
        let newest = dates[0];
        assert_eq!(
            insights,
            json!({
                "audienceId": id,
                "state": crm["insightsState"],
                "size": crm["size"],
                "uploads": crm["history"]["totalEvents"],
                "lastUpload": newest,
                "identifiers": expected_identifiers(&history[newest]),
            })
        );
        assert_eq!(
            insights["identifiers"],
            uploads["uploads"][0]["identifiers"]
        );
    }
    assert!(
        multi_upload_audiences > 0,
        "the seed should hold an audience with several uploads"
    );
    // Audience, insights and uploads share one cached upstream read per audience.
    assert_eq!(app.sim().call_count("loadAudience"), 4 + 4);
}

#[actix_web::test]
async fn audience_without_crm_data_has_no_data_insights_and_no_uploads() {
    let app = spawn_with_sandbox(&[]).await;

    let (_, audience) = json_body(app.get("/v1/audiences/1002").await).await;
    assert_eq!(audience["hasCrmData"], false);
    assert_eq!(audience["audienceState"], "NODATA");

    let resp = app.get("/v1/audiences/1002/insights").await;
    assert_eq!(resp.status(), 200);
    let (_, insights) = json_body(resp).await;
    assert_eq!(
        insights,
        json!({"audienceId": 1002, "state": "NO_DATA", "size": 0, "uploads": 0,
               "lastUpload": null, "identifiers": []})
    );

    let resp = app.get("/v1/audiences/1002/uploads").await;
    assert_eq!(resp.status(), 200);
    let (_, uploads) = json_body(resp).await;
    assert_eq!(
        uploads,
        json!({"audienceId": 1002, "totalEvents": 0, "uploads": []})
    );
}

#[actix_web::test]
async fn unknown_audience_is_404() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/audiences/4242").await;
    assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "audience 4242 was not found",
        None,
    )
    .await;
    let resp = app
        .patch(
            "/v1/audiences/4242",
            &json!({"name": "x", "description": "y"}),
        )
        .await;
    assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "audience 4242 was not found",
        None,
    )
    .await;
    let resp = app
        .post("/v1/audiences/4242/activations", &activation_body())
        .await;
    let headers = assert_problem(
        resp,
        404,
        "not_found",
        "Not found",
        "audience 4242 was not found",
        None,
    )
    .await;
    assert!(headers.get("ratelimit-policy").is_some());
}
