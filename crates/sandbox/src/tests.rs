//! The simulator over HTTP, as the gateway and its tests see it.

mod styles;
mod writes;

use std::time::{Duration, Instant};

use reqwest::{header, Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::{ExpiryStyle, Simulator, SimulatorConfig, SimulatorHandle};

async fn start(config: SimulatorConfig) -> SimulatorHandle {
    Simulator::start(config, "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in with the default credentials and returns the `Cookie` header value: every
/// cookie the login set (the session, and in the `azure` style the instance's affinity).
async fn login(sim: &SimulatorHandle, client: &Client) -> String {
    let response = client
        .post(format!("{}/account/login", sim.base_url()))
        .json(&json!({"userName": "sandbox", "password": "sandbox-password"}))
        .send()
        .await
        .expect("login");
    let pairs: Vec<&str> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().expect("ascii"))
        .map(|value| value.split(';').next().expect("cookie pair"))
        .collect();
    assert!(!pairs.is_empty(), "set-cookie");
    pairs.join("; ")
}

async fn call(
    client: &Client,
    method: Method,
    url: String,
    cookie: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url).header(header::COOKIE, cookie);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("call");
    let status = response.status();
    let body = response.bytes().await.expect("body");
    if status == StatusCode::NO_CONTENT {
        assert!(body.is_empty(), "204 with a body");
        return (status, Value::Null);
    }
    (status, serde_json::from_slice(&body).expect("json body"))
}

/// The id of the first audience a flow creates in `style`.
fn new_id(style: crate::VendorStyle) -> i64 {
    if style.app_service {
        crate::azure::FIRST_WIDE_ID
    } else {
        1006
    }
}

fn ok(data: Value) -> Value {
    json!({"data": data, "status": {"statusCode": 0, "message": null}, "success": true})
}

fn refused(code: i32, message: &str) -> Value {
    json!({"data": null, "status": {"statusCode": code, "message": message}, "success": false})
}

#[tokio::test]
async fn login_sets_session_cookie_and_wrong_password_fails() {
    let sim = start(SimulatorConfig::default()).await;
    let url = format!("{}/account/login", sim.base_url());

    let good = client()
        .post(&url)
        .json(&json!({"userName": "sandbox", "password": "sandbox-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(good.status(), StatusCode::OK);
    let cookie = good
        .headers()
        .get(header::SET_COOKIE)
        .expect("set-cookie")
        .to_str()
        .expect("ascii")
        .to_owned();
    let value = cookie
        .strip_prefix("digitalAudience=")
        .and_then(|rest| rest.strip_suffix("; Path=/; HttpOnly"))
        .expect("cookie shape");
    assert_eq!(value.len(), 64);
    assert_eq!(good.json::<Value>().await.expect("json"), ok(json!(true)));

    let bad = client()
        .post(&url)
        .json(&json!({"userName": "sandbox", "password": "wrong"}))
        .send()
        .await
        .expect("login");
    assert_eq!(bad.status(), StatusCode::OK);
    assert!(bad.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        bad.json::<Value>().await.expect("json"),
        refused(401, "Invalid user name or password")
    );

    let malformed = client()
        .post(&url)
        .body("{not json")
        .send()
        .await
        .expect("login");
    let body: Value = malformed.json().await.expect("json");
    assert_eq!(body["status"]["statusCode"], 400);
    assert_eq!(body["success"], false);

    assert_eq!(sim.login_count(), 3);
    assert_eq!(sim.call_count("login"), 3);
    sim.stop().await;
}

#[tokio::test]
async fn each_expiry_style_rejects_a_missing_or_expired_session() {
    for (style, status) in [
        (ExpiryStyle::Unauthorized, StatusCode::UNAUTHORIZED),
        (ExpiryStyle::Forbidden, StatusCode::FORBIDDEN),
        (ExpiryStyle::Redirect, StatusCode::FOUND),
    ] {
        let sim = start(SimulatorConfig {
            expiry_style: style,
            ..SimulatorConfig::default()
        })
        .await;
        let client = client();
        let url = format!("{}/audience/loadAudienceById/1001?x=1", sim.base_url());

        for cookie in ["", "digitalAudience=forged"] {
            let response = client
                .get(&url)
                .header(header::COOKIE, cookie)
                .send()
                .await
                .expect("call");
            assert_eq!(response.status(), status, "{style:?}");
            if style == ExpiryStyle::Redirect {
                assert_eq!(
                    response.headers().get(header::LOCATION).expect("location"),
                    "/account/login?ReturnUrl=%2Faudience%2FloadAudienceById%2F1001%3Fx%3D1"
                );
            }
            assert!(response.bytes().await.expect("body").is_empty());
        }

        let cookie = login(&sim, &client).await;
        let (live, _) = call(&client, Method::GET, url.clone(), &cookie, None).await;
        assert_eq!(live, StatusCode::OK);
        sim.expire_sessions();
        let expired = client
            .get(&url)
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .expect("call");
        assert_eq!(expired.status(), status, "{style:?} after expire_sessions");
        sim.stop().await;
    }
}

#[tokio::test]
async fn sessions_expire_after_their_ttl() {
    let sim = start(SimulatorConfig {
        session_ttl: Duration::from_millis(200),
        ..SimulatorConfig::default()
    })
    .await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let url = format!("{}/organisation/loadplatformaccounts", sim.base_url());
    assert_eq!(
        client
            .get(&url)
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .expect("call")
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client
            .get(&url)
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .expect("call")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    sim.stop().await;
}

#[tokio::test]
async fn routing_ignores_case() {
    let sim = start(SimulatorConfig::default()).await;
    let client = client();
    let response = client
        .post(format!("{}/Account/LOGIN", sim.base_url()))
        .json(&json!({"userName": "sandbox", "password": "sandbox-password"}))
        .send()
        .await
        .expect("login");
    assert!(response.headers().get(header::SET_COOKIE).is_some());
    let cookie = login(&sim, &client).await;
    for path in [
        "/audience/loadAudienceById/1001",
        "/audience/loadaudiencebyid/1001",
        "/AUDIENCE/LoadAudienceByID/1001/",
    ] {
        let (status, body) = call(
            &client,
            Method::GET,
            format!("{}{path}", sim.base_url()),
            &cookie,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["data"]["id"], 1001, "{path}");
    }
    assert_eq!(sim.call_count("loadAudience"), 3);

    let unknown = client
        .get(format!("{}/audience/nothing", sim.base_url()))
        .send()
        .await
        .expect("call");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let wrong_method = client
        .get(format!("{}/audience/update", sim.base_url()))
        .header(header::COOKIE, &cookie)
        .send()
        .await;
    assert_eq!(
        wrong_method.expect("call").status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    sim.stop().await;
}

#[tokio::test]
async fn audience_round_trip() {
    let sim = start(SimulatorConfig::default()).await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let base = sim.base_url();

    let (status, created) = call(
        &client,
        Method::POST,
        format!("{base}/audience/createcrmaudience"),
        &cookie,
        Some(json!({"name": "Round trip", "description": "first", "campaignId": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["success"], true);
    let audience = &created["data"];
    let id = audience["id"].as_i64().expect("id");
    assert_eq!(id, 1006, "ids continue after the seeded 1001-1005");
    let fields: Vec<&str> = audience
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "userId",
        "description",
        "campaignId",
        "campaignName",
        "dataUpdated",
        "startDate",
        "endDate",
        "activationStatus",
        "activationStatusId",
        "lifetimeStatus",
        "lifetimeStatusId",
        "tagCollection",
        "crmData",
        "audienceState",
        "audienceStateId",
        "type",
        "typeId",
        "sourceAudienceId",
        "sourceAudienceTypeId",
        "canCreateLookalike",
        "hasSegments",
        "id",
        "name",
        "created",
        "updated",
    ] {
        assert!(fields.contains(&field), "missing {field}");
    }
    assert_eq!(fields.len(), 25);
    assert_eq!(audience["campaignName"], "Sandbox campaign");
    assert_eq!(
        (
            audience["activationStatus"].clone(),
            audience["activationStatusId"].clone()
        ),
        (json!("New"), json!(0))
    );
    assert_eq!(
        (
            audience["audienceState"].clone(),
            audience["audienceStateId"].clone()
        ),
        (json!("NODATA"), json!(5))
    );
    assert_eq!(
        (audience["type"].clone(), audience["typeId"].clone()),
        (json!("ONBOARDING"), json!(0))
    );
    assert_eq!(audience["crmData"], Value::Null);
    let created_at = audience["created"].as_str().expect("created");
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok() && created_at.ends_with('Z'));
    assert_eq!(created_at.len(), "2025-12-15T11:36:16.489708Z".len());

    let load_url = format!("{base}/audience/loadAudienceById/{id}");
    let (_, loaded) = call(&client, Method::GET, load_url.clone(), &cookie, None).await;
    assert_eq!(loaded, created);

    let (_, updated) = call(
        &client,
        Method::POST,
        format!("{base}/audience/update"),
        &cookie,
        Some(json!({"id": id, "name": "Renamed"})),
    )
    .await;
    assert_eq!(updated["data"]["name"], "Renamed");
    assert_eq!(updated["data"]["description"], Value::Null);
    assert!(updated["data"]["updated"].as_str() > Some(created_at));

    let (_, activated) = call(
        &client,
        Method::POST,
        format!("{base}/audience/activate"),
        &cookie,
        Some(
            json!({"audienceId": id, "accountId": 501, "name": "Seg", "description": "d",
            "startDate": "2024-01-01T00:00:00Z", "endDate": "2024-12-31T23:59:59Z"}),
        ),
    )
    .await;
    assert_eq!(activated["success"], true);
    assert!(uuid::Uuid::parse_str(activated["data"]["flowId"].as_str().expect("flowId")).is_ok());
    assert_eq!(activated["data"]["segmentId"], 7001);
    let (_, loaded) = call(&client, Method::GET, load_url.clone(), &cookie, None).await;
    assert_eq!(loaded["data"]["activationStatus"], "Active");
    assert_eq!(loaded["data"]["activationStatusId"], 1);
    assert_eq!(loaded["data"]["hasSegments"], true);
    assert_eq!(loaded["data"]["startDate"], "2024-01-01T00:00:00Z");
    assert_eq!(loaded["data"]["endDate"], "2024-12-31T23:59:59Z");

    let (_, deleted) = call(
        &client,
        Method::DELETE,
        format!("{base}/audience/delete"),
        &cookie,
        Some(json!({"id": id})),
    )
    .await;
    assert_eq!(deleted, ok(json!(true)));
    let (status, gone) = call(&client, Method::GET, load_url, &cookie, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gone, refused(404, &format!("Audience {id} not found")));

    let (_, campaign) = call(
        &client,
        Method::POST,
        format!("{base}/campaign/createcampaign"),
        &cookie,
        Some(json!({"name": "New"})),
    )
    .await;
    assert_eq!(campaign["data"]["id"], 4);
    assert_eq!(campaign["data"]["name"], "New");
    assert!(campaign["data"]["created"].is_string());

    for (operation, count) in [
        ("createAudience", 1),
        ("loadAudience", 3),
        ("updateAudience", 1),
        ("activateAudience", 1),
    ] {
        assert_eq!(sim.call_count(operation), count, "{operation}");
    }
    assert_eq!(sim.call_count("deleteAudience"), 1);
    assert_eq!(sim.call_count("createCampaign"), 1);
    assert_eq!(sim.call_count("nonsense"), 0);
    sim.stop().await;
}

#[tokio::test]
async fn refusals_are_envelopes_on_http_200() {
    let sim = start(SimulatorConfig::default()).await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let base = sim.base_url();
    let activation = |audience: i64, account: i64, start: &str, end: &str| {
        json!({"audienceId": audience, "accountId": account, "name": "Seg", "description": "d",
            "startDate": start, "endDate": end})
    };
    let cases = [
        (
            Method::GET,
            "/audience/loadAudienceById/999999",
            None,
            refused(404, "Audience 999999 not found"),
        ),
        (
            Method::POST,
            "/audience/update",
            Some(json!({"id": 42, "name": "x"})),
            refused(404, "Audience 42 not found"),
        ),
        (
            Method::DELETE,
            "/audience/delete",
            Some(json!({"id": 42})),
            refused(404, "Audience 42 not found"),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(activation(
                42,
                501,
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00Z",
            )),
            refused(404, "Audience 42 not found"),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(activation(
                1001,
                999,
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00Z",
            )),
            refused(400, "Platform account 999 not found"),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(activation(
                1001,
                501,
                "2024-02-01T00:00:00Z",
                "2024-02-01T00:00:00Z",
            )),
            refused(400, "endDate must be after startDate"),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(activation(1001, 501, "soon", "2024-02-01T00:00:00Z")),
            refused(400, "startDate is not a valid ISO 8601 date-time: 'soon'"),
        ),
        (
            Method::POST,
            "/audience/createcrmaudience",
            Some(json!({"name": "x", "campaignId": 77})),
            refused(400, "Campaign 77 not found"),
        ),
        (
            Method::POST,
            "/audience/createcrmaudience",
            Some(json!({"name": "  ", "campaignId": 1})),
            refused(400, "The Name field is required."),
        ),
        (
            Method::POST,
            "/campaign/createcampaign",
            Some(json!({"name": ""})),
            refused(400, "The Name field is required."),
        ),
    ];
    for (method, path, body, expected) in cases {
        let (status, answer) = call(&client, method, format!("{base}{path}"), &cookie, body).await;
        assert_eq!((status, answer), (StatusCode::OK, expected), "{path}");
    }

    for body in [
        json!({"name": "x", "campaignId": "one"}),
        json!({"campaignId": 1}),
        json!([1, 2]),
    ] {
        let (status, answer) = call(
            &client,
            Method::POST,
            format!("{base}/audience/createcrmaudience"),
            &cookie,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["status"]["statusCode"], 400);
        assert_eq!(answer["success"], false);
        assert!(answer["status"]["message"]
            .as_str()
            .expect("message")
            .starts_with("Invalid request body"));
    }
    let raw = client
        .delete(format!("{base}/audience/delete"))
        .header(header::COOKIE, &cookie)
        .body("{\"id\":")
        .send()
        .await
        .expect("call");
    assert_eq!(
        raw.json::<Value>().await.expect("json")["status"]["statusCode"],
        400
    );
    sim.stop().await;
}

#[tokio::test]
async fn seeded_data_and_platform_accounts() {
    let sim = start(SimulatorConfig::default()).await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let base = sim.base_url();

    let (_, first) = call(
        &client,
        Method::GET,
        format!("{base}/audience/loadAudienceById/1001"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(first["data"]["crmData"]["insightsState"], "READY");
    assert!(first["data"]["crmData"]["history"]["history"]
        .as_object()
        .is_some_and(|h| !h.is_empty()));
    let (_, second) = call(
        &client,
        Method::GET,
        format!("{base}/audience/loadAudienceById/1002"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(second["data"]["crmData"], Value::Null);

    let (_, accounts) = call(
        &client,
        Method::GET,
        format!("{base}/organisation/loadplatformaccounts"),
        &cookie,
        None,
    )
    .await;
    let accounts = accounts["data"].as_array().expect("array");
    let meta = accounts.iter().find(|a| a["id"] == 501).expect("501");
    let google = accounts.iter().find(|a| a["id"] == 502).expect("502");
    assert_ne!(meta["platformId"], google["platformId"]);
    assert!(meta["accessToken"]
        .as_str()
        .is_some_and(|t| t.starts_with("EAAB") && t.len() > 100));
    assert!(google["accessToken"]
        .as_str()
        .is_some_and(|t| t.starts_with("ya29.")));
    for field in [
        "id",
        "name",
        "platformId",
        "platformName",
        "platformDisplayName",
        "agencyId",
        "agencyName",
        "accountTypeId",
        "accountTypeName",
        "advertiserId",
        "clientId",
        "accessToken",
        "defaultSegmentPricingCategoryId",
        "created",
        "updated",
    ] {
        assert!(meta.get(field).is_some(), "missing {field}");
    }

    let other = start(SimulatorConfig::default()).await;
    let other_cookie = login(&other, &client).await;
    let (_, again) = call(
        &client,
        Method::GET,
        format!("{}/audience/loadAudienceById/1001", other.base_url()),
        &other_cookie,
        None,
    )
    .await;
    assert_eq!(again, first, "seed data is deterministic");
    sim.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn fault_knobs() {
    let sim = start(SimulatorConfig::default()).await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let url = format!("{}/audience/loadAudienceById/1001", sim.base_url());
    let get = || {
        client
            .get(&url)
            .header(header::COOKIE, &cookie)
            .header("X-Request-Id", "req-1")
            .send()
    };

    sim.set_error_rate(1.0);
    let failed = get().await.expect("call");
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(failed.text().await.expect("body").contains("Server Error"));
    sim.set_error_rate(0.0);

    sim.set_down(true);
    assert_eq!(
        get().await.expect("call").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    sim.set_down(false);

    sim.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(get().await.expect("call").status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    sim.set_latency(Duration::ZERO);

    let headers = sim.last_request_headers();
    assert!(headers.contains(&("x-request-id".to_owned(), "req-1".to_owned())));
    assert!(headers.iter().any(|(name, _)| name == "cookie"));

    // The same knobs over HTTP; the admin endpoints stay reachable while "down".
    let admin = format!("{}/__sim/faults", sim.base_url());
    let knobs: Value = client
        .post(&admin)
        .json(&json!({"down": true, "errorRate": 0.25, "latencyMs": 5}))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(
        knobs,
        json!({"latencyMs": 5, "errorRate": 0.25, "down": true})
    );
    assert_eq!(
        get().await.expect("call").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let bad = client
        .post(&admin)
        .json(&json!({"errorRate": 2.0}))
        .send()
        .await
        .expect("admin");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    client
        .post(&admin)
        .json(&json!({"down": false, "errorRate": 0.0}))
        .send()
        .await
        .expect("admin");
    assert_eq!(get().await.expect("call").status(), StatusCode::OK);

    let stats: Value = client
        .get(format!("{}/__sim/stats", sim.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["logins"], 1);
    assert_eq!(stats["calls"]["loadAudience"], 5);
    assert_eq!(stats["calls"]["deleteAudience"], 0);

    let expire = client
        .post(format!("{}/__sim/sessions/expire", sim.base_url()))
        .send()
        .await
        .expect("admin");
    assert_eq!(expire.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get().await.expect("call").status(),
        StatusCode::UNAUTHORIZED
    );
    sim.stop().await;
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let sim = start(SimulatorConfig::default()).await;
    let url = format!("{}/account/login", sim.base_url());
    sim.stop().await;
    assert!(client().post(url).json(&json!({})).send().await.is_err());
}
