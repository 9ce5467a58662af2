//! The gateway against a vendor that disagrees with it: every preset of
//! `VendorStyle::ALL_NAMED` and every `ExpiryStyle`. The whole audience flow passes, the
//! vendor's refusals become the caller's 4xx without retries, and each idempotent create or
//! activation is written upstream exactly once, whatever went wrong around it. Writes are
//! counted with `SimulatorHandle::writes` (what the vendor carried out), calls with
//! `call_count` (what reached it, refused attempts included).

use audience_sandbox::{ExpiryStyle, SimulatorConfig, VendorStyle};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};

use crate::helpers::*;

/// The audience each flow creates: the first id after the five seeded audiences, or, from a
/// vendor on App Service (`azure`), its first id beyond 32 bits.
fn new_id(style: VendorStyle) -> i64 {
    if style.app_service {
        3_000_000_001
    } else {
        1006
    }
}

/// The gateway's path of the audience each flow creates, and of its activations.
fn new_paths(style: VendorStyle) -> (String, String) {
    let path = format!("/v1/audiences/{}", new_id(style));
    let activations = format!("{path}/activations");
    (path, activations)
}
/// Reads of seeded data whose answers must not depend on the vendor style.
const SEEDED: [&str; 4] = [
    "/v1/audiences/1001",
    "/v1/audiences/1001/insights",
    "/v1/audiences/1001/uploads",
    "/v1/platform-accounts",
];
/// Where the `nulls` style's answers for 1001 differ from the contract's, as the sandbox's
/// crate docs say it reshapes 1001: `crmData.size` is null; the newest upload (first in
/// our answers) is filed under a date-only key, with a null EMAIL (identifier 0) `UMATCH`
/// and match rate; the oldest has `dataSet: null`. Nothing else may differ. Sorted, as
/// `differences` finds them in key order.
const NULLS_DIFFER_AT: [&str; 8] = [
    "/v1/audiences/1001/insights/identifiers/0/matchRate",
    "/v1/audiences/1001/insights/identifiers/0/usableMatched",
    "/v1/audiences/1001/insights/lastUpload",
    "/v1/audiences/1001/insights/size",
    "/v1/audiences/1001/uploads/uploads/0/identifiers/0/matchRate",
    "/v1/audiences/1001/uploads/uploads/0/identifiers/0/usableMatched",
    "/v1/audiences/1001/uploads/uploads/0/uploadedAt",
    "/v1/audiences/1001/uploads/uploads/1/identifiers",
];

async fn gateway(style: VendorStyle, expiry_style: ExpiryStyle) -> TestApp {
    let config = SimulatorConfig {
        style,
        expiry_style,
        ..SimulatorConfig::default()
    };
    spawn_with_simulator(config, &[]).await
}

/// Status, `Location`, `Idempotent-Replayed` and body: what a replay must repeat exactly.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    location: String,
    replayed: String,
    body: Bytes,
}

impl Answer {
    async fn of(resp: reqwest::Response) -> Self {
        Answer {
            status: resp.status().as_u16(),
            location: header(&resp, "location"),
            replayed: header(&resp, "idempotent-replayed"),
            body: resp.bytes().await.expect("body"),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The same answer, marked as a replay.
    fn replayed(&self) -> Self {
        Answer {
            replayed: "?1".into(),
            ..self.clone()
        }
    }
}

async fn get_ok(app: &TestApp, path: &str, case: &str) -> Value {
    let resp = app.get(path).await;
    assert_eq!(resp.status(), 200, "{case}: GET {path}");
    resp.json().await.expect("JSON body")
}

fn timestamp(value: &Value) -> DateTime<FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is a string"));
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The audience the flows create (`id`, in `campaign`), as the gateway answers it.
fn created_audience(id: i64, campaign: (i64, &str), created: &Value) -> Value {
    json!({
        "id": id, "name": "Newsletter", "description": "Opt-in list",
        "campaignId": campaign.0, "campaignName": campaign.1, "userId": 4217,
        "type": "ONBOARDING", "typeId": 0, "activationStatus": "New", "activationStatusId": 0,
        "lifetimeStatus": null, "lifetimeStatusId": null,
        "audienceState": "NODATA", "audienceStateId": 5,
        "canCreateLookalike": false, "hasSegments": false,
        "sourceAudienceId": null, "sourceAudienceTypeId": null, "tagCollection": null,
        "startDate": null, "endDate": null,
        "created": created, "updated": created, "dataUpdated": null, "hasCrmData": false,
    })
}

fn new_audience_body(campaign_id: i64) -> Value {
    json!({"name": "Newsletter", "description": "Opt-in list", "campaignId": campaign_id})
}

async fn assert_not_found(resp: reqwest::Response, id: i64, case: &str) {
    let detail = format!("audience {id} was not found");
    let rest = json!({"title": "Not found", "detail": detail});
    assert_problem_with(resp, 404, "not_found", rest, case).await;
}

/// Collects the paths where `styled` differs from `contract`. A difference is allowed only
/// where the vendor nulled or shortened a value: the gateway then answers null, zero, an
/// empty list, or the shortened text (a date-only upload key is a prefix of the full one).
/// Any other difference fails at once.
fn differences(contract: &Value, styled: &Value, path: String, found: &mut Vec<String>) {
    match (contract, styled) {
        (a, b) if a == b => {}
        (Value::Object(a), Value::Object(b)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(a), keys(b), "fields of {path}");
            for (key, value) in a {
                differences(value, &b[key], format!("{path}/{key}"), found);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, format!("{path}/{index}"), found);
            }
        }
        (_, Value::Null) => found.push(path),
        (Value::Array(_), Value::Array(b)) if b.is_empty() => found.push(path),
        (Value::Number(_), Value::Number(n)) if n.as_u64() == Some(0) => found.push(path),
        // The same time, as .NET writes it (no trailing zeros in the fraction).
        (Value::String(a), Value::String(b)) if same_instant(a, b) => {}
        (Value::String(a), Value::String(b)) if a.starts_with(b.as_str()) => found.push(path),
        _ => panic!("{path}: the contract style gives {contract}, this style {styled}"),
    }
}

fn same_instant(a: &str, b: &str) -> bool {
    match (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[actix_web::test]
async fn the_whole_flow_passes_against_every_vendor_style() {
    let contract_app = gateway(VendorStyle::CONTRACT, ExpiryStyle::Unauthorized).await;
    let mut contract = Vec::new();
    for path in SEEDED {
        contract.push(get_ok(&contract_app, path, "contract baseline").await);
    }
    let accounts = &contract[3]["items"];
    let ids: Vec<&Value> = accounts
        .as_array()
        .expect("items")
        .iter()
        .map(|a| &a["id"])
        .collect();
    assert_eq!(ids, [501, 502, 503]);
    // The vendor sends tokens for 501 and 502; they must never leave the gateway.
    assert!(!contract[3].to_string().contains("accessToken"));
    assert!(!contract[3].to_string().contains("EAAB"));

    for (name, style) in VendorStyle::ALL_NAMED {
        let app = gateway(style, ExpiryStyle::Unauthorized).await;
        let sim = app.sim();
        let (new, activations) = new_paths(style);
        let (new, activations) = (new.as_str(), activations.as_str());

        // Seeded audience 1001, its insights and uploads, and the platform accounts.
        let mut found = Vec::new();
        for (path, expected) in SEEDED.iter().zip(&contract) {
            let styled = get_ok(&app, path, name).await;
            differences(expected, &styled, path.to_string(), &mut found);
        }
        let expected: &[&str] = if style.loose_data {
            &NULLS_DIFFER_AT
        } else {
            &[]
        };
        found.sort();
        assert_eq!(found, expected, "{name}");

        // A campaign, then an audience in it; no route reads a campaign back: no Location.
        let resp = app
            .post("/v1/campaigns", &json!({"name": "Spring sale 2026"}))
            .await;
        let campaign = Answer::of(resp).await;
        assert_eq!(
            (campaign.status, campaign.location.as_str()),
            (201, ""),
            "{name}"
        );
        let campaign = campaign.json();
        timestamp(&campaign["created"]);
        let expected = json!({"id": 4, "name": "Spring sale 2026", "created": campaign["created"]});
        assert_eq!(campaign, expected, "{name}");

        let key = format!("create-{name}");
        let resp = post_keyed(
            &app,
            &full_token(),
            "/v1/audiences",
            &key,
            &new_audience_body(4),
        )
        .await;
        let created = Answer::of(resp).await;
        assert_eq!(
            (
                created.status,
                created.location.as_str(),
                created.replayed.as_str()
            ),
            (201, new, ""),
            "{name}"
        );
        let audience = created.json();
        timestamp(&audience["created"]);
        let expected =
            created_audience(new_id(style), (4, "Spring sale 2026"), &audience["created"]);
        assert_eq!(audience, expected, "{name}");
        let resp = post_keyed(
            &app,
            &full_token(),
            "/v1/audiences",
            &key,
            &new_audience_body(4),
        )
        .await;
        assert_eq!(Answer::of(resp).await, created.replayed(), "{name}");
        let create_counts = (
            sim.call_count("createAudience"),
            sim.writes("createAudience"),
        );
        assert_eq!(
            create_counts,
            (1, 1),
            "{name}: the replay never reached the vendor"
        );

        // Read it twice: the second read is the cache's.
        let first = app.get(new).await;
        let cache_status = header(&first, "cache-status");
        let miss = "audience-gateway; fwd=uri-miss; stored; ttl=";
        assert!(cache_status.starts_with(miss), "{name}: {cache_status}");
        assert_eq!(
            first.json::<Value>().await.expect("json"),
            audience,
            "{name}"
        );
        let loads = sim.call_count("loadAudience");
        let second = app.get(new).await;
        let cache_status = header(&second, "cache-status");
        assert!(
            cache_status.starts_with("audience-gateway; hit; ttl="),
            "{name}: {cache_status}"
        );
        assert_eq!(
            second.json::<Value>().await.expect("json"),
            audience,
            "{name}"
        );
        assert_eq!(sim.call_count("loadAudience"), loads, "{name}");

        // Update the description only; the name stays, `updated` moves on.
        let resp = app
            .patch(new, &json!({"description": "Refreshed weekly"}))
            .await;
        assert_eq!(resp.status(), 200, "{name}");
        let updated: Value = resp.json().await.expect("json");
        let mut expected = audience.clone();
        expected["description"] = json!("Refreshed weekly");
        expected["updated"] = updated["updated"].clone();
        assert_eq!(updated, expected, "{name}");
        assert!(
            timestamp(&updated["updated"]) > timestamp(&audience["updated"]),
            "{name}"
        );
        assert_eq!(get_ok(&app, new, name).await, updated, "{name}");
        assert_eq!(sim.writes("updateAudience"), 1, "{name}");

        // Activate on Meta, and replay it; Location points at the activation's record.
        let key = format!("activate-{name}");
        let resp = post_keyed(&app, &full_token(), activations, &key, &activation_body()).await;
        let activated = Answer::of(resp).await;
        assert_eq!(
            (activated.status, activated.replayed.as_str()),
            (201, ""),
            "{name}"
        );
        let activation = activated.json();
        let flow_id = activation["flowId"].as_str().expect("flowId");
        assert_eq!(
            activated.location,
            format!("{activations}/{flow_id}"),
            "{name}"
        );
        assert_eq!(
            get_ok(&app, &activated.location, name).await["flowId"],
            flow_id
        );
        assert!(uuid::Uuid::parse_str(flow_id).is_ok(), "{name}: {flow_id}");
        let expected = json!({"audienceId": new_id(style), "accountId": 501, "flowId": flow_id, "segmentId": 7001});
        assert_eq!(activation, expected, "{name}");
        let resp = post_keyed(&app, &full_token(), activations, &key, &activation_body()).await;
        assert_eq!(Answer::of(resp).await, activated.replayed(), "{name}");
        let activate_counts = (
            sim.call_count("activateAudience"),
            sim.writes("activateAudience"),
        );
        assert_eq!(activate_counts, (1, 1), "{name}");
        // The activation shows on the audience (the cached copy was dropped).
        let active = get_ok(&app, new, name).await;
        let mut expected = updated.clone();
        for (key, value) in [
            ("activationStatus", json!("Active")),
            ("activationStatusId", json!(1)),
            ("hasSegments", json!(true)),
            ("startDate", json!("2026-01-01T00:00:00Z")),
            ("endDate", json!("2026-03-31T23:59:59Z")),
            ("updated", active["updated"].clone()),
        ] {
            expected[key] = value;
        }
        assert_eq!(active, expected, "{name}");

        // Delete it; it is gone, from the vendor and the cache alike.
        let resp = app.delete(new).await;
        assert_eq!(resp.status(), 204, "{name}");
        assert!(resp.bytes().await.expect("body").is_empty(), "{name}");
        assert_not_found(app.get(new).await, new_id(style), name).await;
        assert_eq!(sim.writes("deleteAudience"), 1, "{name}");
        assert_eq!(
            sim.login_count(),
            1,
            "{name}: no call was mistaken for an expiry"
        );
    }
}

/// Whether the style sends its refusals as ProblemDetails (which name the field).
fn names_fields(style: VendorStyle) -> bool {
    style.problem_details
}

#[actix_web::test]
async fn refusals_are_the_callers_4xx_in_every_vendor_style_and_sent_once() {
    for (name, style) in VendorStyle::ALL_NAMED {
        let app = gateway(style, ExpiryStyle::Unauthorized).await;
        let sim = app.sim().clone();

        let mut unknown_account = activation_body();
        unknown_account["accountId"] = json!(999);
        let resp = app
            .post("/v1/audiences/1001/activations", &unknown_account)
            .await;
        assert_eq!(resp.status(), 422, "{name}");
        let body = problem(resp).await;
        assert_eq!(body["code"], "upstream_rejected", "{name}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("999"),
            "{name}: {body}"
        );
        let field = if names_fields(style) {
            json!("accountId")
        } else {
            Value::Null
        };
        assert_eq!(body["field"], field, "{name}: {body}");
        assert_eq!(
            sim.call_count("activateAudience"),
            1,
            "{name}: never retried"
        );

        assert_not_found(app.get("/v1/audiences/999999").await, 999_999, name).await;
        let patch = json!({"name": "Renamed", "description": "x"});
        assert_not_found(
            app.patch("/v1/audiences/999999", &patch).await,
            999_999,
            name,
        )
        .await;
        let resp = app
            .post("/v1/audiences/999999/activations", &activation_body())
            .await;
        assert_not_found(resp, 999_999, name).await;
        assert_not_found(app.delete("/v1/audiences/999999").await, 999_999, name).await;
        let calls = [
            "loadAudience",
            "updateAudience",
            "activateAudience",
            "deleteAudience",
        ]
        .map(|op| sim.call_count(op));
        assert_eq!(calls, [1, 1, 2, 1], "{name}: one vendor call each");
        assert_eq!(sim.writes("activateAudience"), 0, "{name}");
    }
}

#[actix_web::test]
async fn every_expiry_style_renews_once_and_writes_exactly_once() {
    for expiry in ExpiryStyle::ALL {
        for (name, style) in [
            ("contract", VendorStyle::CONTRACT),
            ("aspnet", VendorStyle::ASPNET),
            ("azure", VendorStyle::AZURE),
        ] {
            let (new, activations) = new_paths(style);
            let (new, activations) = (new.as_str(), activations.as_str());
            let case = format!("{name}, expiry {}", expiry.name());
            let app = gateway(style, expiry).await;
            let sim = app.sim().clone();
            assert_eq!(get_ok(&app, "/v1/audiences/1001", &case).await["id"], 1001);
            let mut logins = sim.login_count();
            let mut expired = || {
                sim.expire_sessions();
                logins += 1;
                logins
            };

            let want = expired();
            let resp = app
                .client
                .get(app.url("/v1/audiences/1002"))
                .bearer_auth(full_token())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{case}: read");
            assert_eq!(sim.login_count(), want, "{case}: read");

            let want = expired();
            let key = format!("create-{name}-{}", expiry.name());
            let first = post_keyed(
                &app,
                &full_token(),
                "/v1/audiences",
                &key,
                &new_audience_body(1),
            )
            .await;
            assert_eq!(first.status(), 201, "{case}: create");
            let again = post_keyed(
                &app,
                &full_token(),
                "/v1/audiences",
                &key,
                &new_audience_body(1),
            )
            .await;
            assert_eq!(header(&again, "idempotent-replayed"), "?1", "{case}");
            assert_eq!(sim.writes("createAudience"), 1, "{case}: one create");
            assert_eq!(sim.login_count(), want, "{case}: create");

            let want = expired();
            let resp = app.patch(new, &json!({"name": "Renamed"})).await;
            assert_eq!(resp.status(), 200, "{case}: update");
            assert_eq!(resp.json::<Value>().await.unwrap()["name"], "Renamed");
            assert_eq!(sim.login_count(), want, "{case}: update");

            let want = expired();
            let key = format!("activate-{name}-{}", expiry.name());
            let first =
                post_keyed(&app, &full_token(), activations, &key, &activation_body()).await;
            assert_eq!(first.status(), 201, "{case}: activate");
            let again =
                post_keyed(&app, &full_token(), activations, &key, &activation_body()).await;
            assert_eq!(header(&again, "idempotent-replayed"), "?1", "{case}");
            assert_eq!(sim.writes("activateAudience"), 1, "{case}: one activation");
            assert_eq!(sim.login_count(), want, "{case}: activate");

            let want = expired();
            assert_eq!(app.delete(new).await.status(), 204, "{case}: delete");
            assert_eq!(sim.writes("deleteAudience"), 1, "{case}");
            assert_eq!(sim.login_count(), want, "{case}: delete");
        }
    }
}

/// Behind App Service's load balancer the session lives on one of two instances: the
/// gateway keeps the affinity cookie, so one login serves every call, and a session cookie
/// the vendor re-issues on an ordinary answer (sliding expiration) is adopted, so the
/// session never runs out while it is used. No cookie reaches a caller.
#[actix_web::test]
async fn affinity_holds_and_a_reissued_session_is_adopted() {
    let config = SimulatorConfig {
        style: VendorStyle::AZURE,
        expiry_style: ExpiryStyle::Redirect,
        ..SimulatorConfig::default()
    };
    let ttl = config.session_ttl;
    let app = spawn_with_simulator(config, &[("GATEWAY_CACHE__ENABLED", "false")]).await;
    let sim = app.sim().clone();
    for _ in 0..20 {
        let resp = app.get("/v1/audiences/1001").await;
        assert_eq!(resp.status(), 200);
        assert_no_set_cookie(resp.headers());
    }
    assert_eq!(
        sim.login_count(),
        1,
        "every call reached the login's instance"
    );
    // Past half its lifetime: the next answer re-issues the session.
    sim.age_sessions(ttl / 2 + ttl / 10);
    assert_eq!(app.get("/v1/audiences/1002").await.status(), 200);
    // The first session has now expired; the re-issued one is in use.
    sim.age_sessions(ttl / 2);
    for path in ["/v1/audiences/1001", "/v1/platform-accounts"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_no_set_cookie(resp.headers());
    }
    assert_eq!(sim.login_count(), 1, "no login while the session slides");
    // An expired session is still renewed by one login.
    sim.expire_sessions();
    assert_eq!(app.get("/v1/audiences/1003").await.status(), 200);
    assert_eq!(sim.login_count(), 2);
}

/// App Service's 503 asks to come back at an HTTP-date (a second ahead here): the caller
/// gets the wait as delta-seconds.
#[actix_web::test]
async fn an_app_service_503_passes_its_retry_after_date_on() {
    let app = gateway(VendorStyle::AZURE, ExpiryStyle::Unauthorized).await;
    app.sim().set_down(true);
    let resp = app.get("/v1/audiences/1001").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), "1");
    let body = problem(resp).await;
    assert_eq!(body["code"], "upstream_unavailable");
}
