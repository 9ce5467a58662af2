//! The activation ledger, one suite run against both databases (a SQLite file and a real
//! PostgreSQL server): an activation read back through its `Location` and the list, pages
//! and filters, replays, deletion, a database outage, a gateway restart; and, on
//! PostgreSQL, two gateways sharing one history.

use serde_json::{json, Value};

use crate::helpers::ledger_db::*;
use crate::helpers::redis_server::simulator;
use crate::helpers::*;

/// Runs each named suite function against SQLite (`ledger::sqlite::<name>`) and
/// PostgreSQL (`ledger::postgres::<name>`).
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[actix_web::test]
            async fn $name() {
                super::$name(super::LedgerDb::sqlite()).await;
            })*
        }
        mod postgres {
            $(#[actix_web::test]
            async fn $name() {
                super::$name(super::LedgerDb::postgres()).await;
            })*
        }
    };
}

on_both_databases!(
    an_activation_is_recorded_once_and_read_back,
    pages_cover_the_history_newest_first,
    filters_narrow_the_history,
    a_deleted_audience_keeps_its_history,
    an_outage_loses_no_accepted_activation,
    a_restarted_gateway_keeps_the_history,
);

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{name} header"))
        .to_string()
}

async fn an_activation_is_recorded_once_and_read_back(db: LedgerDb) {
    let sim = simulator().await;
    let app = db.gateway(&sim).await;
    let path = "/v1/audiences/1001/activations";

    let resp = post_keyed(
        &app,
        &full_token(),
        path,
        "ledger-key-1",
        &activation_body(),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let location = header(&resp, "location");
    let request_id = header(&resp, "x-request-id");
    let done: Value = resp.json().await.unwrap();
    let flow_id = done["flowId"].as_str().unwrap();
    assert_eq!(location, format!("{path}/{flow_id}"));

    let read = app.get(&location).await;
    assert_eq!(read.status(), 200);
    let record: Value = read.json().await.unwrap();
    let activated_at = record["activatedAt"].as_str().expect("activatedAt");
    chrono::DateTime::parse_from_rfc3339(activated_at).expect("RFC 3339");
    assert_eq!(
        record,
        json!({
            "audienceId": 1001, "flowId": flow_id, "segmentId": done["segmentId"],
            "accountId": 501, "accountName": "Sandbox Meta Ads",
            "name": "Newsletter - Meta", "description": "Q1 push",
            "startDate": "2026-01-01T00:00:00Z", "endDate": "2026-03-31T23:59:59Z",
            "activatedAt": activated_at, "sub": "tester", "clientId": null,
            "requestId": request_id, "idempotencyKey": "ledger-key-1",
            "audienceDeletedAt": null,
        })
    );
    assert_eq!(
        history(&app, 1001, "").await,
        json!({ "items": [record.clone()] })
    );

    // A replay answers the same, Location included, and writes nothing.
    let again = post_keyed(
        &app,
        &full_token(),
        path,
        "ledger-key-1",
        &activation_body(),
    )
    .await;
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "idempotent-replayed"), "?1");
    assert_eq!(header(&again, "location"), location);
    assert_eq!(
        history(&app, 1001, "").await,
        json!({ "items": [record.clone()] })
    );
    // The activation's row and its kept idempotent response.
    assert_eq!(ledger_writes(&app, "written").await, 2);
    assert_eq!(sim.call_count("activateAudience"), 1);

    // A service token's client id is recorded beside its subject.
    let resp = post_keyed(
        &app,
        &service_token("svc-sub", "crm-sync"),
        path,
        "ledger-key-2",
        &activation_body(),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let newest = history(&app, 1001, "?limit=1").await;
    assert_eq!(newest["items"][0]["sub"], "svc-sub");
    assert_eq!(newest["items"][0]["clientId"], "crm-sync");
    assert_eq!(newest["items"][0]["idempotencyKey"], "ledger-key-2");
}

async fn pages_cover_the_history_newest_first(db: LedgerDb) {
    let sim = simulator().await;
    let app = db.gateway(&sim).await;
    let mut made = Vec::new();
    for _ in 0..7 {
        made.push(activate_on(&app, 1001, 501).await);
    }
    made.reverse();

    assert_eq!(all_flow_ids(&app, 1001, 3).await, made);
    assert_eq!(all_flow_ids(&app, 1001, 7).await, made);
    assert_eq!(all_flow_ids(&app, 1001, 100).await, made);
    // A full last page has no next one.
    let page = history(&app, 1001, "?limit=7").await;
    assert!(page.get("nextCursor").is_none(), "{page}");
    // Another audience has its own (empty) history.
    assert_eq!(history(&app, 1002, "").await, json!({ "items": [] }));
}

async fn filters_narrow_the_history(db: LedgerDb) {
    let sim = simulator().await;
    let app = db.gateway(&sim).await;
    let mut made = Vec::new();
    for account in [501, 502, 501, 502, 501] {
        made.push((activate_on(&app, 1001, account).await, account));
    }
    made.reverse();
    let all = history(&app, 1001, "").await;
    let times: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["activatedAt"].as_str().unwrap().to_string())
        .collect();
    let flows = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["flowId"].as_str().unwrap().to_string())
            .collect()
    };
    let of = |range: std::ops::Range<usize>| -> Vec<String> {
        made[range].iter().map(|(f, _)| f.clone()).collect()
    };

    let on_502: Vec<String> = made
        .iter()
        .filter(|(_, a)| *a == 502)
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(flows(&history(&app, 1001, "?accountId=502").await), on_502);
    // `since` is inclusive, `until` exclusive.
    let since = history(&app, 1001, &format!("?since={}", times[2])).await;
    assert_eq!(flows(&since), of(0..3));
    let until = history(&app, 1001, &format!("?until={}", times[2])).await;
    assert_eq!(flows(&until), of(3..5));
    let window = format!("?since={}&until={}&limit=1", times[3], times[0]);
    let first = history(&app, 1001, &window).await;
    assert_eq!(flows(&first), of(1..2));
    let cursor = first["nextCursor"].as_str().expect("a second page");
    let second = history(&app, 1001, &format!("{window}&cursor={cursor}")).await;
    assert_eq!(flows(&second), of(2..3));
    let third = history(
        &app,
        1001,
        &format!(
            "{window}&cursor={}",
            second["nextCursor"].as_str().expect("a third page")
        ),
    )
    .await;
    assert_eq!(flows(&third), of(3..4));
    assert!(third.get("nextCursor").is_none(), "{third}");
}

async fn a_deleted_audience_keeps_its_history(db: LedgerDb) {
    let sim = simulator().await;
    let app = db.gateway(&sim).await;
    let flow = activate_on(&app, 1001, 501).await;

    assert_eq!(app.delete("/v1/audiences/1001").await.status(), 204);
    assert_eq!(app.get("/v1/audiences/1001").await.status(), 404);

    let page = history(&app, 1001, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let deleted_at = page["items"][0]["audienceDeletedAt"]
        .as_str()
        .expect("marked deleted");
    assert!(deleted_at >= page["items"][0]["activatedAt"].as_str().unwrap());
    let one: Value = app
        .get(&format!("/v1/audiences/1001/activations/{flow}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, page["items"][0]);
}

async fn an_outage_loses_no_accepted_activation(mut db: LedgerDb) {
    let sim = simulator().await;
    let app = db.gateway(&sim).await;
    let before = activate_on(&app, 1001, 501).await;

    db.outage().await;
    let mut during = Vec::new();
    for _ in 0..3 {
        // The caller gets the vendor's answer although the ledger cannot be written.
        during.push(activate_on(&app, 1001, 502).await);
    }
    assert_eq!(ledger_writes(&app, "failed").await, 3);
    let resp = app.get("/readyz").await;
    assert_eq!(
        resp.status(),
        200,
        "a ledger outage does not fail readiness"
    );
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(ready["ledger"]["pendingWrites"], 3, "{ready}");
    // A queued activation's Location answers, from the queue.
    let queued = app
        .get(&format!("/v1/audiences/1001/activations/{}", during[0]))
        .await;
    assert_eq!(queued.status(), 200);
    let queued: Value = queued.json().await.unwrap();
    assert_eq!(queued["flowId"], during[0].as_str(), "{queued}");
    assert_eq!(queued["accountId"], 502, "{queued}");

    db.recover().await;
    wait_for_queue_drained(&app).await;
    assert_eq!(ledger_writes(&app, "retried").await, 3);
    assert_eq!(ledger_writes(&app, "dropped").await, 0);
    let mut expected: Vec<String> = during.into_iter().rev().collect();
    expected.push(before);
    assert_eq!(all_flow_ids(&app, 1001, 2).await, expected);
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["ledger"]["pendingWrites"], 0, "{ready}");
}

async fn a_restarted_gateway_keeps_the_history(db: LedgerDb) {
    let sim = simulator().await;
    let first = db.gateway(&sim).await;
    let flow = activate_on(&first, 1001, 501).await;
    first.handle.stop(true).await;
    drop(first);

    let second = db.gateway(&sim).await;
    assert_eq!(all_flow_ids(&second, 1001, 20).await, vec![flow.clone()]);
    let resp = second
        .get(&format!("/v1/audiences/1001/activations/{flow}"))
        .await;
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn gateways_on_one_postgres_see_each_others_activations() {
    let db = LedgerDb::postgres();
    let sim = simulator().await;
    let a = db.gateway(&sim).await;
    let b = db.gateway(&sim).await;

    let from_a = activate_on(&a, 1001, 501).await;
    let from_b = activate_on(&b, 1001, 502).await;

    for app in [&a, &b] {
        assert_eq!(
            all_flow_ids(app, 1001, 1).await,
            vec![from_b.clone(), from_a.clone()]
        );
    }
    let resp = a
        .get(&format!("/v1/audiences/1001/activations/{from_b}"))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = b
        .get(&format!("/v1/audiences/1001/activations/{from_a}"))
        .await;
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn history_reads_during_a_postgres_outage_are_503_and_leak_nothing() {
    let mut db = LedgerDb::postgres();
    let sim = simulator().await;
    let app = db.gateway(&sim).await;
    db.outage().await;

    let resp = app.get("/v1/audiences/1001/activations").await;
    assert_problem_with(
        resp,
        503,
        "ledger_unavailable",
        json!({
            "title": "Service unavailable",
            "detail": "the activation history cannot be read right now",
        }),
        "list during an outage",
    )
    .await;
    wait_for_ledger(&app, "down").await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains(r#""ledger":{"backend":"postgres","state":"down""#),
        "{body}"
    );
    assert!(!body.contains(LEDGER_PASSWORD), "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("audience_gateway_ledger_up 0"),
        "{metrics}"
    );
    assert!(!metrics.contains(LEDGER_PASSWORD));
}

/// The real gateway binary in front of `sim` with its ledger on PostgreSQL at `url` and
/// its spool file under `dir`, stopping within `grace_secs`, with `extra` settings; returns
/// once its ledger is up.
async fn binary_on_postgres(
    sim: &audience_sandbox::SimulatorHandle,
    url: &str,
    dir: &str,
    grace_secs: &str,
    extra: &[(&str, &str)],
) -> (std::process::Child, String) {
    let config = audience_sandbox::SimulatorConfig::default();
    let env = [
        ("GATEWAY_UPSTREAM__USERNAME", config.username.as_str()),
        ("GATEWAY_UPSTREAM__PASSWORD", config.password.as_str()),
        ("GATEWAY_LEDGER__URL", url),
        ("GATEWAY_LEDGER__DIR", dir),
        ("GATEWAY_LEDGER__TIMEOUT_MS", "500"),
        ("GATEWAY_LEDGER__RETRY_BASE_MS", "20"),
        ("GATEWAY_LEDGER__HEALTH_INTERVAL_MS", "50"),
        ("GATEWAY_RATE_LIMIT__ENABLED", "false"),
        ("GATEWAY_SERVER__SHUTDOWN_GRACE_SECS", grace_secs),
    ];
    let (child, base) = serve_binary(&sim.base_url(), &[&env[..], extra].concat()).await;
    wait_for_binary_ledger(&base, "up").await;
    (child, base)
}

/// The `ledger` object of the binary's readiness body.
async fn binary_ledger(base: &str) -> Value {
    binary_readiness(base).await["ledger"].clone()
}

async fn wait_for_binary_ledger(base: &str, state: &str) {
    let started = std::time::Instant::now();
    loop {
        let ledger = binary_ledger(base).await;
        if ledger["state"] == state {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{ledger}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `n` keyed activations of audience 1001 at `base`, each answered 201: their flow ids.
async fn activate_binary(base: &str, keys: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut flows = Vec::new();
    for i in 0..n {
        let resp = client
            .post(format!("{base}{ACTIVATIONS}"))
            .bearer_auth(full_token())
            .header("idempotency-key", format!("{keys}-{i}"))
            .json(&activation_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let done: Value = resp.json().await.unwrap();
        flows.push(done["flowId"].as_str().unwrap().to_string());
    }
    flows
}

/// Sends SIGTERM and waits for the exit: whether it succeeded, and the JSON log lines.
fn terminate(child: std::process::Child) -> (bool, Vec<Value>) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), json_lines(&out.stderr))
}

/// The flow ids in the `activations` table of the PostgreSQL database at `url`.
async fn rows(url: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut flows: Vec<String> = sqlx::query_scalar("SELECT flow_id FROM activations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    flows.sort();
    flows
}

/// A binary gateway on PostgreSQL (stopping within `grace_secs`) that accepted `n`
/// activations keyed `keys-<i>` while PostgreSQL was stopped.
struct DownWithQueue {
    server: crate::helpers::postgres_server::PostgresServer,
    url: String,
    dir: String,
    sim: audience_sandbox::SimulatorHandle,
    gateway: std::process::Child,
    base: String,
    accepted: Vec<String>,
}

async fn down_with_queue(
    grace_secs: &str,
    extra: &[(&str, &str)],
    keys: &str,
    n: usize,
) -> DownWithQueue {
    let mut server = crate::helpers::postgres_server::PostgresServer::start();
    let url = server.database("ledger");
    let dir = fresh_ledger_dir();
    let sim = simulator().await;
    let (gateway, base) = binary_on_postgres(&sim, &url, &dir, grace_secs, extra).await;
    server.stop();
    wait_for_binary_ledger(&base, "down").await;
    let accepted = activate_binary(&base, keys, n).await;
    DownWithQueue {
        server,
        url,
        dir,
        sim,
        gateway,
        base,
        accepted,
    }
}

#[actix_web::test]
async fn sigterm_with_postgres_down_spools_the_queue_and_the_next_start_writes_it() {
    let DownWithQueue {
        mut server,
        url,
        dir,
        sim,
        gateway,
        base,
        mut accepted,
    } = down_with_queue("1", &[], "spooled", 4).await;
    // Each activation's row and its kept idempotent response.
    assert_eq!(binary_ledger(&base).await["pendingWrites"], 8);
    let (exited_ok, log) = terminate(gateway);
    assert!(exited_ok, "{log:?}");
    let spool = std::path::Path::new(&dir).join(audience_gateway::settings::SPOOL_FILE);
    assert!(
        log.iter().any(|l| l["message"]
            == "ledger writes kept in the spool file for the next start"
            && l["writes"] == 8),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| l["message"] == "activation not recorded in the ledger"),
        "{log:?}"
    );
    let spooled = std::fs::read_to_string(&spool).unwrap();
    for flow in &accepted {
        assert!(spooled.contains(flow.as_str()), "{spooled}");
    }

    server.restart();
    let (gateway, base) = binary_on_postgres(&sim, &url, &dir, "1", &[]).await;
    let started = std::time::Instant::now();
    while binary_ledger(&base).await["pendingWrites"] != 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    accepted.sort();
    assert_eq!(rows(&url).await, accepted);
    assert!(!spool.exists(), "the spool file is removed once written");
    // The spooled responses are kept too: a retry replays.
    let resp = reqwest::Client::new()
        .post(format!("{base}{ACTIVATIONS}"))
        .bearer_auth(full_token())
        .header("idempotency-key", "spooled-0")
        .json(&activation_body())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "idempotent-replayed"), "?1");
    assert_eq!(sim.call_count("activateAudience"), 4);
    let (exited_ok, log) = terminate(gateway);
    assert!(exited_ok, "{log:?}");
}

#[actix_web::test]
async fn sigterm_writes_the_queue_when_postgres_returns_within_the_grace_period() {
    let DownWithQueue {
        mut server,
        url,
        dir,
        gateway,
        mut accepted,
        ..
    } = down_with_queue("30", &[], "flushed", 3).await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    server.restart();
    let out = gateway.wait_with_output().unwrap();
    let log = json_lines(&out.stderr);
    assert!(out.status.success(), "{log:?}");
    accepted.sort();
    assert_eq!(rows(&url).await, accepted);
    let spool = std::path::Path::new(&dir).join(audience_gateway::settings::SPOOL_FILE);
    assert!(!spool.exists());
    assert!(!log.iter().any(|l| l["level"] == "ERROR"), "{log:?}");
}

#[actix_web::test]
async fn sigterm_without_a_writable_spool_file_logs_every_field_at_error() {
    // A path under a file: its directory cannot be created.
    let DownWithQueue {
        gateway, accepted, ..
    } = down_with_queue(
        "1",
        &[("GATEWAY_LEDGER__SPOOL_FILE", "/dev/null/ledger-spool.jsonl")],
        "logged",
        2,
    )
    .await;
    let (exited_ok, log) = terminate(gateway);
    assert!(exited_ok, "{log:?}");
    let lost: Vec<&Value> = log
        .iter()
        .filter(|l| l["message"] == "activation not recorded in the ledger")
        .collect();
    assert_eq!(lost.len(), 2, "{log:?}");
    let body = activation_body();
    // In the order they were accepted.
    for (i, (line, flow)) in lost.iter().zip(&accepted).enumerate() {
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["flow_id"], flow.as_str());
        assert_eq!(line["audience_id"], 1001);
        assert_eq!(line["account_id"], body["accountId"]);
        assert_eq!(line["name"], body["name"]);
        assert_eq!(line["description"], body["description"]);
        assert_eq!(line["start_date"], body["startDate"]);
        assert_eq!(line["end_date"], body["endDate"]);
        assert_eq!(line["idempotency_key"], format!("logged-{i}"));
        assert!(
            line["why"].as_str().unwrap().contains("spool file"),
            "{line}"
        );
    }
}
