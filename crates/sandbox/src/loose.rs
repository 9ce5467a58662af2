//! The `nulls` vendor style: the same data as the contract style in every other shape the
//! vendor's page allows, so the gateway's tolerance is tested against something it did not
//! write. What is reshaped:
//! - every object, and the envelope and its `status`, carries fields the gateway does not
//!   know (maps keyed by date or identifier type are left alone: a new key there is data);
//! - ids (`id`, `userId`, `campaignId`, an upload's `audienceId`, an account's `id`, the
//!   activation's `segmentId`) are quoted strings;
//! - an audience's `false` booleans are `null`; `crmData.size` and `insightsStateId` are
//!   `null`;
//! - upload events, oldest first, cycle through three shapes: (0) a date-only key
//!   (`2026-01-05`) with a `null` `EMAIL` `UMATCH` count and `EMAIL` match rate; (1) a key
//!   without offset (`2026-01-05T10:00:00`) with `matchRates: null`; (2) the RFC 3339 key
//!   with `dataSet: null`. The cycle starts at shape `audience id % 3`, so the seeded
//!   audiences between them show every shape: 1001 (two uploads) shapes 2 and 0, 1003 (two
//!   uploads) 1 and 2, 1004 (one) 2, 1005 (one) 0;
//! - login and delete answer `data: null`, update `data: true`, and activation `data: null`
//!   with `flowId` and `segmentId` beside it at the envelope's top level.
//!
//! Nothing else changes: a value that is not `null` here equals the contract style's.

use chrono::DateTime;
use serde_json::{json, Map, Value};

use crate::handlers::Reply;
use crate::state::Rejection;

/// The envelope of a successful call.
pub(crate) fn success(reply: &Reply) -> Value {
    match reply {
        Reply::LoggedIn(_) | Reply::Deleted => envelope(Value::Null),
        Reply::Audience(audience) => envelope(self::audience(to_value(audience))),
        Reply::Updated(_) => envelope(Value::Bool(true)),
        Reply::Activated(activation) => {
            let mut body = envelope(Value::Null);
            let activation = to_value(activation);
            body["flowId"] = activation["flowId"].clone();
            body["segmentId"] = quoted(&activation["segmentId"]);
            body
        }
        Reply::Campaign(campaign) => {
            let mut campaign = to_value(campaign);
            campaign["id"] = quoted(&campaign["id"]);
            campaign["createdBy"] = json!("sandbox");
            envelope(campaign)
        }
        Reply::Accounts(accounts) => envelope(Value::Array(
            accounts
                .iter()
                .map(|account| {
                    let mut account = to_value(account);
                    account["id"] = quoted(&account["id"]);
                    account["status"] = json!("ACTIVE");
                    account
                })
                .collect(),
        )),
    }
}

/// The envelope of a refused call (`success: false`), with the same extra fields.
pub(crate) fn failure(rejection: &Rejection) -> Value {
    let mut body = envelope(Value::Null);
    body["success"] = Value::Bool(false);
    body["status"]["statusCode"] = json!(rejection.status_code());
    body["status"]["message"] = json!(rejection.message());
    body
}

fn envelope(data: Value) -> Value {
    json!({
        "data": data,
        "status": {"statusCode": 0, "message": null, "details": []},
        "success": true,
        "errors": null,
    })
}

fn audience(mut audience: Value) -> Value {
    let id = audience["id"].as_i64().unwrap_or_default();
    for key in ["id", "userId", "campaignId", "sourceAudienceId"] {
        audience[key] = quoted(&audience[key]);
    }
    for key in ["canCreateLookalike", "hasSegments"] {
        if audience[key] == Value::Bool(false) {
            audience[key] = Value::Null;
        }
    }
    audience["organisationId"] = json!(42);
    audience["links"] = json!({"self": format!("/audience/loadAudienceById/{id}")});
    if let Some(crm) = audience.get_mut("crmData").filter(|crm| crm.is_object()) {
        crm_data(crm, id);
    }
    audience
}

fn crm_data(crm: &mut Value, audience_id: i64) {
    crm["size"] = Value::Null;
    crm["insightsStateId"] = Value::Null;
    crm["insightsUpdated"] = Value::Null;
    let history = &mut crm["history"];
    history["pageSize"] = json!(50);
    let Some(events) = history["history"].as_object_mut() else {
        return;
    };
    let mut ordered: Vec<(String, Value)> = std::mem::take(events).into_iter().collect();
    // RFC 3339 keys in one format sort chronologically as text.
    ordered.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut reshaped = Map::new();
    for (index, (key, mut event)) in ordered.into_iter().enumerate() {
        event["audienceId"] = quoted(&event["audienceId"]);
        event["uploadedBy"] = json!("sandbox");
        if let Some(counts) = event["dataSet"].as_object_mut() {
            for count in counts.values_mut() {
                count["INVALID"] = json!(0);
            }
        }
        let shape = (index as i64 + audience_id).rem_euclid(3);
        let key = match shape {
            0 => {
                if let Some(email) = event.pointer_mut("/dataSet/EMAIL/UMATCH") {
                    *email = Value::Null;
                }
                if let Some(rate) = event.pointer_mut("/matchRates/EMAIL") {
                    *rate = Value::Null;
                }
                reformat(&key, "%Y-%m-%d")
            }
            1 => {
                event["matchRates"] = Value::Null;
                reformat(&key, "%Y-%m-%dT%H:%M:%S")
            }
            _ => {
                event["dataSet"] = Value::Null;
                key
            }
        };
        reshaped.insert(key, event);
    }
    *events = reshaped;
}

/// An RFC 3339 history key in another format (left as it is if it is not RFC 3339).
fn reformat(key: &str, format: &str) -> String {
    DateTime::parse_from_rfc3339(key).map_or_else(
        |_| key.to_owned(),
        |at| at.naive_utc().format(format).to_string(),
    )
}

/// An integer as a quoted string; anything else (a `null`) as it is.
fn quoted(value: &Value) -> Value {
    match value {
        Value::Number(number) => Value::String(number.to_string()),
        other => other.clone(),
    }
}

/// The simulator's own types as JSON: plain structs with string keys, which always serialise.
fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}
