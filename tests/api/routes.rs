//! Every route against the simulator: successes, each error class with its whole problem
//! body, request ids, what is (not) forwarded upstream, and CORS.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// Operation names the simulator counts.
const SIM_OPERATIONS: [&str; 8] = [
    "login",
    "createAudience",
    "updateAudience",
    "activateAudience",
    "loadAudience",
    "deleteAudience",
    "createCampaign",
    "loadPlatformAccounts",
];

/// Every request the simulator received, whatever the operation (logins included).
fn upstream_calls(app: &TestApp) -> u64 {
    SIM_OPERATIONS
        .iter()
        .map(|op| app.sim().call_count(op))
        .sum()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing in {headers:?}"))
        .to_str()
        .expect("header text")
}

/// The gateway never hands a session (ours or the vendor's) to a caller.
fn assert_no_set_cookie(headers: &HeaderMap) {
    assert!(
        headers.get("set-cookie").is_none(),
        "unexpected Set-Cookie: {headers:?}"
    );
}

/// Checks status, media type, request id and the whole problem body.
async fn assert_problem(
    resp: reqwest::Response,
    status: u16,
    code: &str,
    title: &str,
    detail: &str,
    field: Option<&str>,
) -> HeaderMap {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    assert_no_set_cookie(&headers);
    let body = problem(resp).await;
    let mut expected = json!({
        "type": format!("urn:audience-gateway:problem:{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "requestId": body["requestId"],
    });
    if let Some(f) = field {
        expected["field"] = json!(f);
    }
    assert_eq!(body, expected);
    assert!(
        body["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    headers
}

async fn assert_validation(resp: reqwest::Response, field: &str, message: &str) {
    assert_problem(
        resp,
        422,
        "validation_failed",
        "Validation failed",
        &format!("{field}: {message}"),
        Some(field),
    )
    .await;
}

async fn assert_invalid_body(resp: reqwest::Response, detail: &str, field: Option<&str>) {
    assert_problem(
        resp,
        400,
        "invalid_body",
        "Invalid request body",
        detail,
        field,
    )
    .await;
}

/// Sends `body` as raw bytes with the given content type and a full token.
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(full_token())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

async fn json_body(resp: reqwest::Response) -> (HeaderMap, Value) {
    let headers = resp.headers().clone();
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_no_set_cookie(&headers);
    (headers, resp.json().await.expect("json body"))
}

// ---------------------------------------------------------------------------------------
// Successes
// ---------------------------------------------------------------------------------------

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
async fn platform_accounts_never_carry_access_tokens() {
    let app = spawn_with_sandbox(&[]).await;

    let resp = app.get("/v1/platform-accounts").await;

    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_no_set_cookie(&headers);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert!(
        header(&headers, "cache-status").starts_with("audience-gateway; fwd=uri-miss"),
        "{headers:?}"
    );
    let text = resp.text().await.unwrap();
    assert!(!text.contains("accessToken"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("token"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let items = body["items"].as_array().expect("items");
    let ids: Vec<i64> = items.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [501, 502, 503]);
    assert_eq!(items[0]["name"], "Sandbox Meta Ads");
    assert_eq!(items[0]["platformDisplayName"], "Meta");
    assert_eq!(items[0]["advertiserId"], "act_1048576000123");
    assert_eq!(items[0]["clientId"], "1048576000123");

    // The second read is served from the cache, still without tokens.
    let resp = app.get("/v1/platform-accounts").await;
    assert_eq!(resp.status(), 200);
    assert_no_set_cookie(resp.headers());
    assert!(header(resp.headers(), "cache-status").contains("hit"));
    assert!(!resp.text().await.unwrap().contains("accessToken"));
    assert_eq!(app.sim().call_count("loadPlatformAccounts"), 1);
}

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
    assert!(
        header(&headers, "cache-control").starts_with("private, max-age="),
        "{headers:?}"
    );
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
    // No route reads an activation back, so no `Location` points at one.
    assert!(headers.get("location").is_none(), "{headers:?}");
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

// ---------------------------------------------------------------------------------------
// Request body and path errors: never reach the upstream
// ---------------------------------------------------------------------------------------

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
    let range = "must be an integer between 1 and 2147483647";

    for id in ["0", "-1", "2147483648", "9223372036854775807"] {
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

    for campaign in [json!(0), json!(-3), json!(2_147_483_648_i64)] {
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

// ---------------------------------------------------------------------------------------
// Not found, auth, upstream refusal
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Request ids and what goes upstream
// ---------------------------------------------------------------------------------------

fn sim_header(app: &TestApp, name: &str) -> Vec<String> {
    app.sim()
        .last_request_headers()
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

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
            .header("cache-control", "no-cache")
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

// ---------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------

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
