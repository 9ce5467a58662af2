//! The fault suite: keyed activations under load through two replicas sharing a real
//! redis-server and a real PostgreSQL ledger, in front of the sandbox, while one of them is
//! killed and restarted. Each scenario counts what was sent, the answers by status, the
//! vendor's writes, the ledger's rows, duplicates and losses, prints that as a row of the
//! table in `docs/FAULTS.md`, and fails on any duplicate or loss.
//!
//! Every key is sent until it gets 201 (on the other replica after a failure), then once
//! more on the other replica, which must replay it. A duplicate is a vendor write or ledger
//! row beyond one per key, or a replay with another flow id; a loss is a 201 whose
//! activation is not in the ledger once the queues are written. The fast scenarios run in
//! the test command; the long ones (`#[ignore]`) with
//! `cargo test --test api fault_suite -- --ignored --nocapture --test-threads 1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use audience_sandbox::SimulatorHandle;
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::ledger_db::{wait_for_ledger, wait_for_queue_drained, LedgerDb};
use crate::helpers::redis_server::{self, RedisDeployment, Topology};
use crate::helpers::*;

/// Keys in flight at once.
const CONCURRENCY: usize = 8;

/// What a scenario counted.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    /// Answers by status; 0 counts requests that got no answer.
    answered: BTreeMap<u16, u64>,
    vendor_writes: u64,
    ledger_rows: u64,
    duplicates: u64,
    lost: u64,
}

impl Tally {
    /// Prints the scenario's row of the results table, then fails on any duplicate or loss.
    fn check(&self, scenario: &str, keys: usize) {
        let answered: Vec<String> = self
            .answered
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        println!(
            "| {scenario} | {keys} | {} | {} | {} | {} | {} | {} |",
            self.sent,
            answered.join(", "),
            self.vendor_writes,
            self.ledger_rows,
            self.duplicates,
            self.lost
        );
        assert_eq!((self.duplicates, self.lost), (0, 0), "{scenario}: {self:?}");
        assert_eq!(self.vendor_writes, keys as u64, "{scenario}: {self:?}");
        assert_eq!(self.ledger_rows, keys as u64, "{scenario}: {self:?}");
    }
}

/// The processes a fault kills and restarts.
struct Infra {
    redis: Option<RedisDeployment>,
    db: LedgerDb,
    /// Whether the fault is under way.
    faulted: bool,
}

/// Two replicas on one Redis and one PostgreSQL ledger, in front of one simulator.
struct Cluster {
    infra: Infra,
    sim: SimulatorHandle,
    replicas: [TestApp; 2],
}

impl Cluster {
    async fn start() -> Self {
        let redis = RedisDeployment::start(Topology::Server);
        let db = LedgerDb::postgres();
        let sim = redis_server::simulator().await;
        let settings = || {
            let mut s = db.settings(&sim);
            s.redis = redis_server::settings(&sim, &redis, &[]).redis;
            s
        };
        let replicas = [
            spawn_settings(settings(), Some(sim.clone())).await,
            spawn_settings(settings(), Some(sim.clone())).await,
        ];
        for app in &replicas {
            wait_for_ledger(app, "up").await;
            redis_server::wait_for(app, "up").await;
        }
        Self {
            infra: Infra {
                redis: Some(redis),
                db,
                faulted: false,
            },
            sim,
            replicas,
        }
    }

    /// The ledger's activations of audience 1001: flow id by row, with their keys.
    async fn rows(&self) -> Vec<(String, Option<String>)> {
        use sqlx::Connection;
        let LedgerDb::Postgres { url, .. } = &self.infra.db else {
            unreachable!("the suite runs on PostgreSQL")
        };
        let mut conn = sqlx::PgConnection::connect(url).await.expect("ledger");
        sqlx::query_as("SELECT flow_id, idempotency_key FROM activations")
            .fetch_all(&mut conn)
            .await
            .expect("rows")
    }
}

impl Infra {
    /// Restarts Redis (killed, started empty) off the runtime, so the load goes on.
    async fn restart_redis(&mut self) {
        let mut redis = self.redis.take().expect("redis");
        let redis = tokio::task::spawn_blocking(move || {
            redis.restart();
            redis
        })
        .await
        .unwrap();
        self.redis = Some(redis);
    }
}

/// One keyed activation at `app`: the status (0 without an answer) and the body.
async fn activate_once(app: &TestApp, key: &str) -> (u16, Value) {
    let sent = app
        .client
        .post(app.url(ACTIVATIONS))
        .bearer_auth(full_token())
        .header("idempotency-key", key)
        .json(&activation_body())
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// What one key's requests got: every status, and the replica and flow id of the 201.
type KeyRun = (String, Vec<u16>, Option<(usize, String)>);

/// Sends each of `keys`, `CONCURRENCY` at a time, until it is accepted, switching replica
/// after each failure.
async fn load(replicas: &[TestApp; 2], keys: &[String]) -> Vec<KeyRun> {
    let mut runs = Vec::new();
    for batch in keys.chunks(CONCURRENCY) {
        let batch = batch.iter().enumerate().map(|(n, key)| async move {
            let mut answers = Vec::new();
            for attempt in 0..100 {
                let at = (n + attempt) % 2;
                let (status, body) = activate_once(&replicas[at], key).await;
                answers.push(status);
                if status == 201 {
                    let flow = body["flowId"].as_str().unwrap_or_default().to_string();
                    return (key.clone(), answers, Some((at, flow)));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (key.clone(), answers, None)
        });
        runs.extend(join_all(batch).await);
    }
    runs
}

/// Sends the keys in thirds: the fault starts with the second third (while it is sent) and
/// ends with the third; then every key once more on the other replica.
async fn run(cluster: &mut Cluster, scenario: &str, keys: usize, fault: Fault) -> Tally {
    let mut tally = Tally::default();
    let names: Vec<String> = (0..keys).map(|i| format!("{scenario}-{i}")).collect();
    let mut accepted: HashMap<String, (usize, String)> = HashMap::new();
    for (third, chunk) in names.chunks(keys.div_ceil(3)).enumerate() {
        let infra = &mut cluster.infra;
        let change = async move {
            match third {
                1 => fault.start(infra).await,
                2 => fault.end(infra).await,
                _ => {}
            }
        };
        let ((), runs) = tokio::join!(change, load(&cluster.replicas, chunk));
        for (key, answers, done) in runs {
            tally.sent += answers.len() as u64;
            for status in answers {
                *tally.answered.entry(status).or_default() += 1;
            }
            match done {
                Some(done) => {
                    accepted.insert(key, done);
                }
                None => tally.lost += 1,
            }
        }
    }
    fault.end(&mut cluster.infra).await;
    for app in &cluster.replicas {
        redis_server::wait_for(app, "up").await;
    }
    // Replays on the other replica.
    for (key, (at, flow)) in &accepted {
        let (status, body) = activate_once(&cluster.replicas[1 - at], key).await;
        tally.sent += 1;
        *tally.answered.entry(status).or_default() += 1;
        if status != 201 || body["flowId"].as_str() != Some(flow.as_str()) {
            tally.duplicates += 1;
        }
    }
    for app in &cluster.replicas {
        wait_for_queue_drained(app).await;
    }
    tally.vendor_writes = cluster.sim.call_count("activateAudience");
    let rows = cluster.rows().await;
    tally.ledger_rows = rows.len() as u64;
    let flows: HashSet<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    tally.lost += accepted
        .values()
        .filter(|(_, flow)| !flows.contains(flow.as_str()))
        .count() as u64;
    let unique_keys: HashSet<&Option<String>> = rows.iter().map(|(_, k)| k).collect();
    tally.duplicates += (rows.len() - unique_keys.len()) as u64;
    tally.duplicates += tally.vendor_writes.saturating_sub(accepted.len() as u64);
    tally
}

/// What happens to the cluster at a third of the load, and is undone at two thirds.
#[derive(Clone, Copy)]
enum Fault {
    /// Redis is killed and started again empty (no persistence).
    RedisRestart,
    /// PostgreSQL is stopped, then started again with its data.
    PostgresOutage,
}

impl Fault {
    async fn start(self, infra: &mut Infra) {
        infra.faulted = true;
        match self {
            Fault::RedisRestart => infra.restart_redis().await,
            Fault::PostgresOutage => infra.db.outage().await,
        }
    }

    /// Undoes the fault, if it is under way (a restart of Redis is over already).
    async fn end(self, infra: &mut Infra) {
        if !std::mem::take(&mut infra.faulted) {
            return;
        }
        if let Fault::PostgresOutage = self {
            infra.db.recover().await;
        }
    }
}

async fn scenario(name: &str, keys: usize, fault: Fault) {
    let mut cluster = Cluster::start().await;
    run(&mut cluster, name, keys, fault).await.check(name, keys);
}

#[actix_web::test]
async fn redis_restarts_empty_under_load() {
    scenario("redis-restart", 24, Fault::RedisRestart).await;
}

#[actix_web::test]
async fn postgres_stops_and_returns_under_load() {
    scenario("postgres-outage", 24, Fault::PostgresOutage).await;
}

#[actix_web::test]
#[ignore = "long: cargo test --test api fault_suite -- --ignored --nocapture --test-threads 1"]
async fn redis_restarts_empty_under_long_load() {
    scenario("redis-restart-long", 2_000, Fault::RedisRestart).await;
}

#[actix_web::test]
#[ignore = "long: cargo test --test api fault_suite -- --ignored --nocapture --test-threads 1"]
async fn postgres_stops_and_returns_under_long_load() {
    scenario("postgres-outage-long", 2_000, Fault::PostgresOutage).await;
}
