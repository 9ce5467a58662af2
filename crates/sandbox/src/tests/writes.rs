//! `SimulatorHandle::writes`: only the writes the simulator carried out are counted, so the
//! gateway's tests can tell a duplicated write from a retry the vendor never ran.

use reqwest::{header, Client, Method, StatusCode};
use serde_json::{json, Value};

use super::{client, login, new_id, start};
use crate::{SimulatorConfig, SimulatorHandle, VendorStyle};

const WRITES: [&str; 5] = [
    "createAudience",
    "updateAudience",
    "activateAudience",
    "deleteAudience",
    "createCampaign",
];

/// Sends a vendor call; answers its HTTP status and whether the envelope said `success`.
async fn send(
    client: &Client,
    method: Method,
    url: String,
    cookie: &str,
    body: Value,
) -> (StatusCode, bool) {
    let response = client
        .request(method, url)
        .header(header::COOKIE, cookie)
        .json(&body)
        .send()
        .await
        .expect("call");
    let status = response.status();
    // `204 No Content` (the `azure` style's update and delete) is a success without a body.
    if status == StatusCode::NO_CONTENT {
        return (StatusCode::OK, true);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["success"] == json!(true))
}

fn all_writes(sim: &SimulatorHandle) -> Vec<u64> {
    WRITES.iter().map(|op| sim.writes(op)).collect()
}

#[tokio::test]
async fn only_writes_carried_out_are_counted() {
    for (name, style) in VendorStyle::ALL_NAMED {
        let sim = start(SimulatorConfig {
            style,
            ..SimulatorConfig::default()
        })
        .await;
        let client = client();
        let base = sim.base_url();
        let create_url = format!("{base}/audience/createcrmaudience");
        let create = json!({"name": "Counted", "campaignId": 1});

        // Each of these reaches the create route (`call_count` sees it) but creates nothing.
        let stale = "digitalAudience=expired";
        let expired = send(
            &client,
            Method::POST,
            create_url.clone(),
            stale,
            create.clone(),
        );
        assert_eq!(expired.await, (StatusCode::UNAUTHORIZED, false), "{name}");
        let cookie = login(&sim, &client).await;
        let unknown_campaign = json!({"name": "Counted", "campaignId": 99});
        let refused = send(
            &client,
            Method::POST,
            create_url.clone(),
            &cookie,
            unknown_campaign,
        );
        assert!(!refused.await.1, "{name}: an unknown campaign is refused");
        sim.set_error_rate(1.0);
        let failed = send(
            &client,
            Method::POST,
            create_url.clone(),
            &cookie,
            create.clone(),
        );
        assert_eq!(failed.await.0, StatusCode::INTERNAL_SERVER_ERROR, "{name}");
        sim.set_error_rate(0.0);
        assert_eq!(sim.call_count("createAudience"), 3, "{name}");
        assert_eq!(all_writes(&sim), [0, 0, 0, 0, 0], "{name}");

        let id = new_id(style);
        let calls = [
            (Method::POST, "audience/createcrmaudience", create),
            (
                Method::POST,
                "audience/update",
                json!({"id": id, "name": "Renamed"}),
            ),
            (
                Method::POST,
                "audience/activate",
                json!({"audienceId": id, "accountId": 501, "name": "Seg", "description": "d",
                    "startDate": "2024-01-01T00:00:00Z", "endDate": "2024-12-31T23:59:59Z"}),
            ),
            (Method::DELETE, "audience/delete", json!({"id": id})),
            (
                Method::POST,
                "campaign/createcampaign",
                json!({"name": "Counted"}),
            ),
        ];
        for (method, path, body) in calls {
            let answer = send(&client, method, format!("{base}/{path}"), &cookie, body);
            assert_eq!(answer.await, (StatusCode::OK, true), "{name}: {path}");
        }
        assert_eq!(all_writes(&sim), [1, 1, 1, 1, 1], "{name}");
        // Reads, the login and names that are no operation are never writes.
        let load = client
            .get(format!("{base}/audience/loadAudienceById/1001"))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .expect("load");
        assert_eq!(load.status(), StatusCode::OK, "{name}");
        for op in [
            "loadAudience",
            "login",
            "loadPlatformAccounts",
            "noSuchCall",
        ] {
            assert_eq!(sim.writes(op), 0, "{name}: {op}");
        }

        let stats: Value = client
            .get(format!("{base}/__sim/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        let expected: serde_json::Map<String, Value> =
            WRITES.iter().map(|op| (op.to_string(), json!(1))).collect();
        assert_eq!(stats["writes"], Value::Object(expected), "{name}");
        sim.stop().await;
    }
}
