//! The vendor styles over HTTP: each answer's status, content type and body shape.

use reqwest::{header, Client, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{call, client, login, new_id, ok, refused, start};
use crate::{ExpiryStyle, SimulatorConfig, SimulatorHandle, VendorStyle};

async fn start_styled(style: VendorStyle) -> SimulatorHandle {
    start(SimulatorConfig {
        style,
        ..SimulatorConfig::default()
    })
    .await
}

fn activation(audience: Value, description: Option<&str>) -> Value {
    let mut body = json!({"audienceId": audience, "accountId": 501, "name": "Seg",
        "startDate": "2024-01-01T00:00:00Z", "endDate": "2024-12-31T23:59:59Z"});
    if let Some(description) = description {
        body["description"] = json!(description);
    }
    body
}

fn content_type(response: &Response) -> String {
    response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Checks a ProblemDetails answer and returns its body without the (random) `traceId`.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        content_type(&response),
        "application/problem+json; charset=utf-8"
    );
    let mut body: Value = response.json().await.expect("json");
    let trace = body
        .as_object_mut()
        .and_then(|body| body.remove("traceId"))
        .expect("traceId");
    let parts: Vec<&str> = trace.as_str().expect("string").split('-').collect();
    assert_eq!(parts.len(), 4, "{trace}");
    assert_eq!((parts[0], parts[3]), ("00", "00"));
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16));
    assert!(parts[1..3]
        .iter()
        .all(|part| part.bytes().all(|b| b.is_ascii_hexdigit())));
    body
}

fn validation(field: &str, message: &str) -> Value {
    json!({
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {field: [message]},
    })
}

fn not_found(id: i64) -> Value {
    json!({
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        "title": "Not Found",
        "status": 404,
        "detail": format!("Audience {id} not found"),
    })
}

async fn send(
    client: &Client,
    method: Method,
    url: String,
    cookie: &str,
    body: Option<Value>,
) -> Response {
    let mut request = client.request(method, url).header(header::COOKIE, cookie);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("call")
}

#[test]
fn style_names_parse_and_print() {
    assert_eq!("login-page".parse(), Ok(ExpiryStyle::LoginPage));
    assert_eq!(" HTML ".parse(), Ok(ExpiryStyle::LoginPage));
    assert_eq!("envelope".parse(), Ok(ExpiryStyle::Envelope));
    assert_eq!("302".parse(), Ok(ExpiryStyle::Redirect));
    for style in ExpiryStyle::ALL {
        assert_eq!(style.name().parse(), Ok(style));
        assert_eq!(
            serde_json::to_value(style).expect("json"),
            json!(style.name())
        );
    }
    assert!("teapot".parse::<ExpiryStyle>().is_err());

    assert_eq!("contract".parse(), Ok(VendorStyle::default()));
    assert_eq!(
        "strict, nulls".parse(),
        Ok(VendorStyle {
            strict: true,
            problem_details: false,
            loose_data: true,
            app_service: false,
        })
    );
    assert_eq!("aspnet".parse(), Ok(VendorStyle::ASPNET));
    assert_eq!("azure".parse(), Ok(VendorStyle::AZURE));
    assert_eq!("iis".parse(), Ok(VendorStyle::AZURE));
    assert_eq!(
        VendorStyle::AZURE.to_string(),
        "strict,problem-details,azure"
    );
    assert_eq!(
        "strict,problem-details,nulls".parse(),
        Ok(VendorStyle::ASPNET)
    );
    assert!("strict,lax".parse::<VendorStyle>().is_err());
    let names: Vec<&str> = VendorStyle::ALL_NAMED
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        names,
        [
            "contract",
            "strict",
            "problem-details",
            "nulls",
            "aspnet",
            "azure"
        ]
    );
    for (name, style) in VendorStyle::ALL_NAMED {
        assert_eq!(name.parse(), Ok(style), "{name}");
        assert_eq!(style.to_string().parse(), Ok(style), "{name}");
    }
    assert_eq!(
        VendorStyle::ASPNET.to_string(),
        "strict,problem-details,nulls"
    );
    assert_eq!(VendorStyle::default().to_string(), "contract");
}

#[tokio::test]
async fn login_page_and_envelope_expiry_answer_http_200() {
    let envelope = json!({"data": null, "status": {"statusCode": 401, "message": "Session expired"}, "success": false});
    for style in [ExpiryStyle::LoginPage, ExpiryStyle::Envelope] {
        let sim = start(SimulatorConfig {
            expiry_style: style,
            ..SimulatorConfig::default()
        })
        .await;
        let client = client();
        let url = format!("{}/audience/loadAudienceById/1001", sim.base_url());
        let cookie = login(&sim, &client).await;
        for (cookie, when) in [("", "no cookie"), (cookie.as_str(), "after expiry")] {
            if when == "after expiry" {
                sim.expire_sessions();
            }
            let response = send(&client, Method::GET, url.clone(), cookie, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{style:?} {when}");
            if style == ExpiryStyle::LoginPage {
                assert_eq!(content_type(&response), "text/html; charset=utf-8");
                let page = response.text().await.expect("text");
                assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<form"));
            } else {
                assert_eq!(content_type(&response), "application/json");
                assert_eq!(response.json::<Value>().await.expect("json"), envelope);
            }
        }
        sim.stop().await;
    }
}

#[tokio::test]
async fn strict_binding_refuses_with_problem_details() {
    let sim = start_styled("strict".parse().expect("style")).await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let base = sim.base_url();

    let refused_description = send(
        &client,
        Method::POST,
        format!("{base}/audience/activate"),
        &cookie,
        Some(activation(json!(1001), None)),
    )
    .await;
    assert_eq!(
        problem(refused_description, StatusCode::BAD_REQUEST).await,
        validation("Description", "The Description field is required.")
    );
    let unknown_field = send(
        &client,
        Method::POST,
        format!("{base}/audience/createcrmaudience"),
        &cookie,
        Some(json!({"name": "n", "campaignId": 1, "tags": []})),
    )
    .await;
    assert_eq!(
        problem(unknown_field, StatusCode::BAD_REQUEST).await,
        validation(
            "Tags",
            "The JSON property 'tags' could not be mapped to any .NET member contained in \
             type 'CreateCrmAudienceRequest'."
        )
    );
    let no_content_type = client
        .delete(format!("{base}/audience/delete"))
        .header(header::COOKIE, &cookie)
        .body(r#"{"id": 1001}"#)
        .send()
        .await
        .expect("call");
    assert_eq!(
        problem(no_content_type, StatusCode::BAD_REQUEST).await,
        validation(
            "$",
            "The request body must be sent with Content-Type: application/json."
        )
    );
    let wide_body_id = send(
        &client,
        Method::POST,
        format!("{base}/audience/update"),
        &cookie,
        Some(json!({"id": 9_223_372_036_854_775_808_u64, "name": "n"})),
    )
    .await;
    assert_eq!(
        problem(wide_body_id, StatusCode::BAD_REQUEST).await,
        validation(
            "Id",
            "The JSON value could not be converted to System.Int64. Path: $.id."
        )
    );
    let no_password = client
        .post(format!("{base}/account/login"))
        .json(&json!({"userName": "sandbox"}))
        .send()
        .await
        .expect("login");
    assert_eq!(
        problem(no_password, StatusCode::BAD_REQUEST).await,
        validation("Password", "The Password field is required.")
    );
    assert_eq!(sim.call_count("deleteAudience"), 1, "refused calls count");

    // Strict binding alone leaves the vendor's own refusals as envelopes.
    let (status, gone) = call(
        &client,
        Method::POST,
        format!("{base}/audience/activate"),
        &cookie,
        Some(activation(json!(42), Some("d"))),
    )
    .await;
    assert_eq!(
        (status, gone),
        (StatusCode::OK, refused(404, "Audience 42 not found"))
    );
    // A complete request is answered as in the contract style.
    let (status, activated) = call(
        &client,
        Method::POST,
        format!("{base}/audience/activate"),
        &cookie,
        Some(activation(json!("1001"), Some("d"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(activated["data"]["segmentId"], 7001);
    sim.stop().await;
}

#[tokio::test]
async fn problem_details_style_names_the_field_or_the_missing_audience() {
    let sim = start_styled("problem-details".parse().expect("style")).await;
    let client = client();
    let cookie = login(&sim, &client).await;
    let base = sim.base_url();
    let with = |change: Value| {
        let mut body = activation(json!(1001), Some("d"));
        for (key, value) in change.as_object().expect("object") {
            body[key] = value.clone();
        }
        body
    };
    let cases = [
        (
            Method::GET,
            "/audience/loadAudienceById/999999",
            None,
            StatusCode::NOT_FOUND,
            not_found(999_999),
        ),
        (
            Method::DELETE,
            "/audience/delete",
            Some(json!({"id": 42})),
            StatusCode::NOT_FOUND,
            not_found(42),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(with(json!({"accountId": 999}))),
            StatusCode::BAD_REQUEST,
            validation("AccountId", "Platform account 999 not found"),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(with(json!({"endDate": "2023-01-01T00:00:00Z"}))),
            StatusCode::BAD_REQUEST,
            validation("EndDate", "endDate must be after startDate"),
        ),
        (
            Method::POST,
            "/audience/activate",
            Some(with(json!({"startDate": "soon"}))),
            StatusCode::BAD_REQUEST,
            validation(
                "StartDate",
                "startDate is not a valid ISO 8601 date-time: 'soon'",
            ),
        ),
        (
            Method::POST,
            "/audience/createcrmaudience",
            Some(json!({"name": "x", "campaignId": 77})),
            StatusCode::BAD_REQUEST,
            validation("CampaignId", "Campaign 77 not found"),
        ),
        (
            Method::POST,
            "/campaign/createcampaign",
            Some(json!({"name": " "})),
            StatusCode::BAD_REQUEST,
            validation("Name", "The Name field is required."),
        ),
        (
            Method::POST,
            "/audience/createcrmaudience",
            Some(json!({"name": "x"})),
            StatusCode::BAD_REQUEST,
            validation("CampaignId", "The CampaignId field is required."),
        ),
        (
            Method::POST,
            "/audience/update",
            Some(json!({"id": "one", "name": "x"})),
            StatusCode::BAD_REQUEST,
            validation(
                "Id",
                "The JSON value could not be converted to System.Int64. Path: $.id.",
            ),
        ),
    ];
    for (method, path, body, status, expected) in cases {
        let response = send(&client, method, format!("{base}{path}"), &cookie, body).await;
        assert_eq!(problem(response, status).await, expected, "{path}");
    }

    let bad_login = client
        .post(format!("{base}/account/login"))
        .json(&json!({"userName": "sandbox", "password": "wrong"}))
        .send()
        .await
        .expect("login");
    assert!(bad_login.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        problem(bad_login, StatusCode::UNAUTHORIZED).await,
        json!({
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5.2",
            "title": "Unauthorized",
            "status": 401,
            "detail": "Invalid user name or password",
        })
    );
    // Without `strict`, what the contract style accepts is still accepted.
    let loose_request = client
        .delete(format!("{base}/audience/delete"))
        .header(header::COOKIE, &cookie)
        .body(r#"{"id": 1002, "force": true}"#)
        .send()
        .await
        .expect("call");
    assert_eq!(loose_request.status(), StatusCode::OK);
    assert_eq!(
        loose_request.json::<Value>().await.expect("json"),
        ok(json!(true))
    );
    sim.stop().await;
}

/// Asserts that every value `loose` holds that is not `null` equals the one `contract`
/// holds at the same place: ids may be quoted, and history keys may be the contract key's
/// date or its time without offset (both are prefixes of it). Returns how many values
/// were compared.
fn same_where_not_null(contract: &Value, loose: &Value, path: &str) -> usize {
    match (contract, loose) {
        (_, Value::Null) => 0,
        (Value::Object(contract), Value::Object(loose)) if path.ends_with(".history.history") => {
            let mut contract_keys: Vec<&String> = contract.keys().collect();
            let mut loose_keys: Vec<&String> = loose.keys().collect();
            contract_keys.sort();
            loose_keys.sort();
            assert_eq!(contract_keys.len(), loose_keys.len(), "{path}");
            contract_keys
                .into_iter()
                .zip(loose_keys)
                .map(|(contract_key, loose_key)| {
                    assert!(
                        contract_key.starts_with(loose_key.as_str()),
                        "{path}: {loose_key}"
                    );
                    same_where_not_null(
                        &contract[contract_key],
                        &loose[loose_key],
                        &format!("{path}[{contract_key}]"),
                    )
                })
                .sum()
        }
        (Value::Object(contract), Value::Object(loose)) => contract
            .iter()
            .map(|(key, value)| {
                let loose = loose
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} is missing"));
                same_where_not_null(value, loose, &format!("{path}.{key}"))
            })
            .sum(),
        (Value::Array(contract), Value::Array(loose)) => {
            assert_eq!(contract.len(), loose.len(), "{path}");
            contract
                .iter()
                .zip(loose)
                .enumerate()
                .map(|(index, (contract, loose))| {
                    same_where_not_null(contract, loose, &format!("{path}[{index}]"))
                })
                .sum()
        }
        (Value::Number(number), Value::String(text)) => {
            assert_eq!(&number.to_string(), text, "{path}");
            1
        }
        (contract, loose) => {
            assert_eq!(contract, loose, "{path}");
            1
        }
    }
}

#[tokio::test]
async fn loose_data_reshapes_without_changing_values() {
    let contract = start(SimulatorConfig::default()).await;
    let loose = start_styled("nulls".parse().expect("style")).await;
    let client = client();
    let (contract_cookie, loose_cookie) = (
        login(&contract, &client).await,
        login(&loose, &client).await,
    );

    let mut audiences = Vec::new();
    for id in 1001..=1005 {
        let path = format!("/audience/loadAudienceById/{id}");
        let (_, expected) = read(&client, &contract, &contract_cookie, &path).await;
        let (status, body) = read(&client, &loose, &loose_cookie, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(same_where_not_null(&expected, &body, "$") > 15, "{id}");
        assert_eq!(body["errors"], Value::Null);
        assert_eq!(body["status"]["details"], json!([]));
        assert_eq!(body["data"]["id"], json!(id.to_string()));
        assert_eq!(body["data"]["organisationId"], 42);
        audiences.push(body["data"].clone());
    }
    let [first, second, third, fourth, fifth] = &audiences[..] else {
        unreachable!("five audiences were read");
    };
    assert_eq!(first["userId"], "4217");
    assert_eq!(first["campaignId"], "1");
    assert_eq!(first["hasSegments"], Value::Null);
    assert_eq!(first["tagCollection"], Value::Null);
    assert_eq!(second["crmData"], Value::Null);
    assert_eq!(second["canCreateLookalike"], Value::Null);
    assert_eq!(third["hasSegments"], true);
    let crm = &first["crmData"];
    assert_eq!(
        (&crm["size"], &crm["insightsStateId"], &crm["insightsState"]),
        (&Value::Null, &Value::Null, &json!("READY"))
    );
    assert!(crm["history"]["pageSize"].is_number());
    let events = |audience: &Value| -> Vec<(String, Value)> {
        let mut events: Vec<(String, Value)> = audience["crmData"]["history"]["history"]
            .as_object()
            .expect("history")
            .iter()
            .map(|(key, event)| (key.clone(), event.clone()))
            .collect();
        events.sort_by(|(a, _), (b, _)| a.cmp(b));
        events
    };
    let is_rfc3339 = |key: &str| chrono::DateTime::parse_from_rfc3339(key).is_ok();
    let is_date = |key: &str| chrono::NaiveDate::parse_from_str(key, "%Y-%m-%d").is_ok();
    let is_naive =
        |key: &str| chrono::NaiveDateTime::parse_from_str(key, "%Y-%m-%dT%H:%M:%S").is_ok();

    // 1001: an RFC 3339 key with `dataSet: null`, then a date-only key with null EMAIL values.
    let first_events = events(first);
    assert_eq!(first_events.len(), 2);
    let (key, event) = &first_events[0];
    assert!(is_rfc3339(key), "{key}");
    assert_eq!(event["dataSet"], Value::Null);
    assert!(event["matchRates"]["EMAIL"].is_number());
    let (key, event) = &first_events[1];
    assert!(is_date(key), "{key}");
    assert_eq!(event["audienceId"], "1001");
    assert_eq!(event["dataSet"]["EMAIL"]["UMATCH"], Value::Null);
    assert!(event["dataSet"]["EMAIL"]["MATCH"].is_number());
    assert_eq!(event["dataSet"]["EMAIL"]["INVALID"], 0);
    assert_eq!(event["matchRates"]["EMAIL"], Value::Null);
    assert_eq!(event["uploadedBy"], "sandbox");
    // 1003: a key without offset with `matchRates: null`, then an RFC 3339 key.
    let third_events = events(third);
    assert!(is_naive(&third_events[0].0), "{}", third_events[0].0);
    assert_eq!(third_events[0].1["matchRates"], Value::Null);
    assert!(third_events[0].1["dataSet"]["EMAIL"]["UMATCH"].is_number());
    assert!(is_rfc3339(&third_events[1].0), "{}", third_events[1].0);
    assert!(is_rfc3339(&events(fourth)[0].0));
    assert!(is_date(&events(fifth)[0].0));

    let (_, expected) = read(
        &client,
        &contract,
        &contract_cookie,
        "/organisation/loadplatformaccounts",
    )
    .await;
    let (_, accounts) = read(
        &client,
        &loose,
        &loose_cookie,
        "/organisation/loadplatformaccounts",
    )
    .await;
    assert!(same_where_not_null(&expected, &accounts, "$") > 40);
    assert_eq!(accounts["data"][0]["id"], "501");
    assert_eq!(accounts["data"][0]["status"], "ACTIVE");
    sim_stop(&[contract, loose]).await;
}

#[tokio::test]
async fn loose_data_answers_writes_in_other_shapes() {
    let sim = start_styled("nulls".parse().expect("style")).await;
    let client = client();
    let base = sim.base_url();
    let logged_in = client
        .post(format!("{base}/account/login"))
        .json(&json!({"userName": "sandbox", "password": "sandbox-password"}))
        .send()
        .await
        .expect("login");
    assert!(logged_in.headers().get(header::SET_COOKIE).is_some());
    let envelope = |data: Value| json!({"data": data, "status": {"statusCode": 0, "message": null, "details": []}, "success": true, "errors": null});
    assert_eq!(
        logged_in.json::<Value>().await.expect("json"),
        envelope(Value::Null)
    );
    let cookie = login(&sim, &client).await;
    let post = |path: &str, body: Value| {
        call(
            &client,
            Method::POST,
            format!("{base}{path}"),
            &cookie,
            Some(body),
        )
    };

    let (_, created) = post(
        "/audience/createcrmaudience",
        json!({"name": "Loose", "campaignId": 1}),
    )
    .await;
    assert_eq!(created["data"]["id"], "1006");
    assert_eq!(created["data"]["crmData"], Value::Null);
    let (_, updated) = post("/audience/update", json!({"id": 1006, "name": "Renamed"})).await;
    assert_eq!(updated, envelope(json!(true)));
    let (_, activated) = post("/audience/activate", activation(json!(1006), Some("d"))).await;
    assert_eq!(activated["data"], Value::Null);
    assert_eq!(activated["segmentId"], "7001");
    assert!(uuid::Uuid::parse_str(activated["flowId"].as_str().expect("flowId")).is_ok());
    let (_, campaign) = post("/campaign/createcampaign", json!({"name": "C"})).await;
    assert_eq!(campaign["data"]["id"], "4");
    assert_eq!(campaign["data"]["name"], "C");
    let (_, deleted) = call(
        &client,
        Method::DELETE,
        format!("{base}/audience/delete"),
        &cookie,
        Some(json!({"id": 1006})),
    )
    .await;
    assert_eq!(deleted, envelope(Value::Null));
    let (status, gone) = call(
        &client,
        Method::GET,
        format!("{base}/audience/loadAudienceById/1006"),
        &cookie,
        None,
    )
    .await;
    let mut expected = envelope(Value::Null);
    expected["success"] = json!(false);
    expected["status"]["statusCode"] = json!(404);
    expected["status"]["message"] = json!("Audience 1006 not found");
    assert_eq!((status, gone), (StatusCode::OK, expected));
    sim.stop().await;
}

/// The requests a correct client sends succeed in every preset.
#[tokio::test]
async fn every_preset_accepts_a_complete_flow() {
    for (name, style) in VendorStyle::ALL_NAMED {
        let sim = start_styled(style).await;
        let client = client();
        let cookie = login(&sim, &client).await;
        let base = sim.base_url();
        let id = new_id(style);
        let load = format!("/audience/loadAudienceById/{id}");
        let flow = [
            (
                Method::POST,
                "/audience/createcrmaudience",
                Some(json!({"name": "Flow", "description": "d", "campaignId": 1})),
            ),
            (Method::GET, load.as_str(), None),
            (
                Method::POST,
                "/audience/update",
                Some(json!({"id": id, "name": "Flow 2", "description": null})),
            ),
            (
                Method::POST,
                "/audience/activate",
                Some(activation(json!(id), Some("d"))),
            ),
            (Method::GET, "/organisation/loadplatformaccounts", None),
            (
                Method::POST,
                "/campaign/createcampaign",
                Some(json!({"name": "Flow campaign"})),
            ),
            (Method::DELETE, "/audience/delete", Some(json!({"id": id}))),
        ];
        for (method, path, body) in flow {
            let (status, answer) =
                call(&client, method, format!("{base}{path}"), &cookie, body).await;
            if status == StatusCode::NO_CONTENT {
                assert!(style.app_service, "{name} {path}: 204");
                continue;
            }
            assert_eq!(
                (status, &answer["success"], &answer["status"]["statusCode"]),
                (StatusCode::OK, &json!(true), &json!(0)),
                "{name} {path}"
            );
        }
        sim.stop().await;
    }
}

#[tokio::test]
async fn styles_change_at_run_time() {
    let sim = start(SimulatorConfig::default()).await;
    let client = client();
    let admin = format!("{}/__sim/style", sim.base_url());
    let current: Value = client
        .get(&admin)
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(
        current,
        json!({"expiryStyle": "unauthorized", "vendorStyle": "contract"})
    );
    let changed: Value = client
        .post(&admin)
        .json(&json!({"expiryStyle": "html", "vendorStyle": "problem-details,nulls"}))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(
        changed,
        json!({"expiryStyle": "login-page", "vendorStyle": "problem-details,nulls"})
    );
    let url = format!("{}/audience/loadAudienceById/999999", sim.base_url());
    let expired = send(&client, Method::GET, url.clone(), "", None).await;
    assert_eq!(
        (expired.status(), content_type(&expired)),
        (StatusCode::OK, "text/html; charset=utf-8".to_owned())
    );
    let cookie = login(&sim, &client).await;
    let missing = send(&client, Method::GET, url.clone(), &cookie, None).await;
    assert_eq!(
        problem(missing, StatusCode::NOT_FOUND).await,
        not_found(999_999)
    );

    let bad = client
        .post(&admin)
        .json(&json!({"vendorStyle": "lax"}))
        .send()
        .await
        .expect("admin");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.set_vendor_style(VendorStyle::default());
    sim.set_expiry_style(ExpiryStyle::Envelope);
    let (status, body) = call(&client, Method::GET, url, &cookie, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, refused(404, "Audience 999999 not found"))
    );
    sim.expire_sessions();
    let (status, body) = call(
        &client,
        Method::GET,
        format!("{}/audience/loadAudienceById/1001", sim.base_url()),
        &cookie,
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"]["statusCode"].clone()),
        (StatusCode::OK, json!(401))
    );
    sim.stop().await;
}

async fn read(
    client: &Client,
    sim: &SimulatorHandle,
    cookie: &str,
    path: &str,
) -> (StatusCode, Value) {
    call(
        client,
        Method::GET,
        format!("{}{path}", sim.base_url()),
        cookie,
        None,
    )
    .await
}

async fn sim_stop(sims: &[SimulatorHandle]) {
    for sim in sims {
        sim.stop().await;
    }
}
