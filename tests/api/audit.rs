//! The audit trail, with the real binary writing JSON logs: a whole session of writes
//! (created, updated, a failed precondition, activated, replayed, rate-limited, refused by
//! the vendor, invalid, unauthenticated, forbidden, deleted) leaves exactly one `audit`
//! event per write and none per read, each checked whole, and no token or secret.

use std::collections::HashMap;

use audience_gateway::auth::ALL_SCOPES;
use audience_sandbox::SimulatorConfig;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::helpers::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One request of the session: sent with its own `X-Request-Id`, so its audit event can be
/// found by it.
struct Session {
    client: reqwest::Client,
    base: String,
}

impl Session {
    fn request(&self, method: Method, path: &str, bearer: Option<&str>) -> RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match bearer {
            Some(b) => req.bearer_auth(b),
            None => req,
        }
    }

    async fn send(&self, rid: &str, req: RequestBuilder) -> (u16, HeaderMap, Value) {
        let resp = req
            .header("x-request-id", rid)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }
}

/// The event expected for request `rid`: the fields every event has, plus `rest`.
fn expected(rid: &str, operation: &str, status: u16, outcome: &str, rest: Value) -> Value {
    let mut e = json!({
        "level": "INFO",
        "message": "write",
        "target": "audit",
        "request_id": rid,
        "operation": operation,
        "status": status,
        "outcome": outcome,
        "replayed": false,
    });
    for (k, v) in rest.as_object().expect("object") {
        e[k] = v.clone();
    }
    e
}

#[actix_web::test]
async fn every_write_leaves_one_audit_event_with_who_what_and_outcome_and_no_secret() {
    let (sim, child, base) = serve_binary_with_simulator(&[
        ("GATEWAY_LOG__FORMAT", "json"),
        ("GATEWAY_LOG__LEVEL", "warn,audit=info"),
        ("GATEWAY_RATE_LIMIT__PER_CALLER_BURST", "2"),
    ])
    .await;
    let s = Session {
        client: reqwest::Client::new(),
        base,
    };
    let service = service_token("ops-user", "crm-service");
    let analyst = token("analyst", &ALL_SCOPES);
    let reader = token("reader", &["audiences:read", "audiences:write"]);
    let svc = json!({"sub": "ops-user", "client_id": "crm-service"});
    let with = |who: &Value, rest: Value| {
        let mut v = who.clone();
        for (k, x) in rest.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let mut want: Vec<Value> = Vec::new();

    // Created, with the caller's trace context.
    let (status, _, campaign) = s
        .send(
            "rq-campaign",
            s.request(Method::POST, "/v1/campaigns", Some(&service))
                .header("traceparent", TRACEPARENT)
                .json(&json!({"name": "Audit sale"})),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let campaign_id = campaign["id"].as_i64().expect("campaign id");
    want.push(expected(
        "rq-campaign",
        "createCampaign",
        201,
        "success",
        with(
            &svc,
            json!({"campaign_id": campaign_id, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}),
        ),
    ));

    let (status, _, audience) = s
        .send(
            "rq-audience",
            s.request(Method::POST, "/v1/audiences", Some(&service))
                .header("idempotency-key", "k-audience-1")
                .json(&json!({"name": "Audit list", "campaignId": campaign_id})),
        )
        .await;
    assert_eq!(status, 201, "{audience}");
    let id = audience["id"].as_i64().expect("audience id");
    want.push(expected(
        "rq-audience",
        "createAudience",
        201,
        "success",
        with(
            &svc,
            json!({"audience_id": id, "campaign_id": campaign_id, "idempotency_key": "k-audience-1"}),
        ),
    ));

    // A read is not audited.
    let path = format!("/v1/audiences/{id}");
    let (status, headers, _) = s
        .send("rq-read", s.request(Method::GET, &path, Some(&service)))
        .await;
    assert_eq!(status, 200);
    let etag = header(&headers, "etag");

    // A cache purge is audited like any write: refused without its scope, then done.
    let purge = format!("{path}/cache");
    let (status, _, _) = s
        .send(
            "rq-purge-forbidden",
            s.request(Method::DELETE, &purge, Some(&reader)),
        )
        .await;
    assert_eq!(status, 403);
    want.push(expected(
        "rq-purge-forbidden",
        "purgeAudienceCache",
        403,
        "refused",
        json!({"sub": "reader", "audience_id": id, "code": "insufficient_scope"}),
    ));
    let (status, _, _) = s
        .send(
            "rq-purge",
            s.request(Method::DELETE, &purge, Some(&analyst)),
        )
        .await;
    assert_eq!(status, 204);
    want.push(expected(
        "rq-purge",
        "purgeAudienceCache",
        204,
        "success",
        json!({"sub": "analyst", "audience_id": id}),
    ));

    let (status, _, _) = s
        .send(
            "rq-update",
            s.request(Method::PATCH, &path, Some(&service))
                .header("if-match", etag)
                .json(&json!({"description": "changed"})),
        )
        .await;
    assert_eq!(status, 200);
    want.push(expected(
        "rq-update",
        "updateAudience",
        200,
        "success",
        with(&svc, json!({"audience_id": id})),
    ));

    let (status, _, _) = s
        .send(
            "rq-stale",
            s.request(Method::PATCH, &path, Some(&service))
                .header("if-match", "\"stale\"")
                .json(&json!({"description": "again"})),
        )
        .await;
    assert_eq!(status, 412);
    want.push(expected(
        "rq-stale",
        "updateAudience",
        412,
        "refused",
        with(
            &svc,
            json!({"audience_id": id, "code": "precondition_failed"}),
        ),
    ));

    // Activated, replayed, activated again, then over the per-caller burst of 2.
    let activations = format!("/v1/audiences/{id}/activations");
    let activate = |key: Option<&str>, who: &str| {
        let req = s
            .request(Method::POST, &activations, Some(who))
            .json(&activation_body());
        match key {
            Some(k) => req.header("idempotency-key", k),
            None => req,
        }
    };
    let created = |body: &Value| {
        json!({
            "audience_id": id,
            "account_id": 501,
            "flow_id": body["flowId"],
            "segment_id": body["segmentId"],
        })
    };
    let (status, _, first) = s
        .send("rq-activate", activate(Some("k-act-1"), &service))
        .await;
    assert_eq!(status, 201, "{first}");
    let mut rest = with(&svc, created(&first));
    rest["idempotency_key"] = json!("k-act-1");
    want.push(expected(
        "rq-activate",
        "activateAudience",
        201,
        "success",
        rest.clone(),
    ));

    let (status, headers, replay) = s
        .send("rq-replay", activate(Some("k-act-1"), &service))
        .await;
    assert_eq!(
        (status, header(&headers, "idempotent-replayed")),
        (201, "?1".into())
    );
    assert_eq!(replay, first);
    rest["replayed"] = json!(true);
    want.push(expected(
        "rq-replay",
        "activateAudience",
        201,
        "success",
        rest,
    ));

    let (status, _, second) = s.send("rq-activate-2", activate(None, &service)).await;
    assert_eq!(status, 201, "{second}");
    want.push(expected(
        "rq-activate-2",
        "activateAudience",
        201,
        "success",
        with(&svc, created(&second)),
    ));

    let (status, _, _) = s
        .send("rq-limited", activate(Some("k-act-3"), &service))
        .await;
    assert_eq!(status, 429);
    want.push(expected(
        "rq-limited",
        "activateAudience",
        429,
        "refused",
        with(
            &svc,
            json!({"audience_id": id, "code": "rate_limited", "idempotency_key": "k-act-3"}),
        ),
    ));

    // Refused by the vendor, for a user token (no client id).
    let mut unknown_account = activation_body();
    unknown_account["accountId"] = json!(599);
    let (status, _, _) = s
        .send(
            "rq-vendor-refused",
            s.request(Method::POST, &activations, Some(&analyst))
                .json(&unknown_account),
        )
        .await;
    assert_eq!(status, 422);
    want.push(expected(
        "rq-vendor-refused",
        "activateAudience",
        422,
        "refused",
        json!({"sub": "analyst", "audience_id": id, "code": "upstream_rejected"}),
    ));

    // Invalid after authentication; unauthenticated; without the scope.
    let (status, _, _) = s
        .send(
            "rq-invalid",
            s.request(Method::POST, "/v1/campaigns", Some(&analyst))
                .json(&json!({"name": "  "})),
        )
        .await;
    assert_eq!(status, 422);
    want.push(expected(
        "rq-invalid",
        "createCampaign",
        422,
        "refused",
        json!({"sub": "analyst", "code": "validation_failed"}),
    ));
    let (status, _, _) = s
        .send("rq-anonymous", s.request(Method::DELETE, &path, None))
        .await;
    assert_eq!(status, 401);
    want.push(expected(
        "rq-anonymous",
        "deleteAudience",
        401,
        "refused",
        json!({"audience_id": id, "code": "invalid_token"}),
    ));
    let (status, _, _) = s
        .send(
            "rq-forbidden",
            s.request(Method::DELETE, &path, Some(&reader)),
        )
        .await;
    assert_eq!(status, 403);
    want.push(expected(
        "rq-forbidden",
        "deleteAudience",
        403,
        "refused",
        json!({"sub": "reader", "audience_id": id, "code": "insufficient_scope"}),
    ));

    let (status, _, _) = s
        .send(
            "rq-delete",
            s.request(Method::DELETE, &path, Some(&service)),
        )
        .await;
    assert_eq!(status, 204);
    want.push(expected(
        "rq-delete",
        "deleteAudience",
        204,
        "success",
        with(&svc, json!({"audience_id": id})),
    ));

    let stderr = stop_binary(child);
    let lines = json_lines(&stderr);
    let mut events: HashMap<String, Vec<Value>> = HashMap::new();
    for line in lines.iter().filter(|l| l["target"] == "audit") {
        let mut event = line.clone();
        let time = event
            .as_object_mut()
            .and_then(|o| o.remove("timestamp"))
            .expect("an audit event has a timestamp");
        let time = time.as_str().expect("timestamp is text");
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        let rid = event["request_id"]
            .as_str()
            .expect("request_id")
            .to_string();
        events.entry(rid).or_default().push(event);
    }
    for w in &want {
        let rid = w["request_id"].as_str().expect("request_id");
        let got = events.remove(rid).unwrap_or_default();
        assert_eq!(got, vec![w.clone()], "the one audit event of {rid}");
    }
    assert!(events.is_empty(), "events of no write: {events:?}");

    let all = String::from_utf8_lossy(&stderr);
    let password = SimulatorConfig::default().password;
    for secret in [
        service.as_str(),
        analyst.as_str(),
        reader.as_str(),
        SECRET,
        password.as_str(),
        "Audit sale",
        "Newsletter - Meta",
    ] {
        assert!(!all.contains(secret), "{secret} in the log");
    }
    sim.stop().await;
}
