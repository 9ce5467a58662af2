//! The databases the ledger suite runs against, one suite for both: a SQLite file or a
//! real PostgreSQL server, each with a way to become unavailable and come back, and
//! gateways (replicas) using them.

use std::time::{Duration, Instant};

use audience_gateway::settings::{Settings, SQLITE_FILE};
use audience_sandbox::SimulatorHandle;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqliteConnection};

use super::postgres_server::PostgresServer;
use super::*;

/// A ledger database for one test.
pub enum LedgerDb {
    /// A SQLite file in `dir`; `lock` holds an exclusive transaction during an outage.
    Sqlite {
        dir: String,
        lock: Option<SqliteConnection>,
    },
    /// A database on a PostgreSQL server of the test's own.
    Postgres { server: PostgresServer, url: String },
}

impl LedgerDb {
    /// A fresh SQLite ledger.
    pub fn sqlite() -> Self {
        Self::Sqlite {
            dir: fresh_ledger_dir(),
            lock: None,
        }
    }

    /// A fresh PostgreSQL server with an empty database.
    pub fn postgres() -> Self {
        let server = PostgresServer::start();
        let url = server.database("ledger");
        Self::Postgres { server, url }
    }

    /// Settings of a gateway in front of `sim` keeping its ledger here, with short
    /// timeouts and retries, without activation quotas.
    pub fn settings(&self, sim: &SimulatorHandle) -> Settings {
        let (key, value) = match self {
            Self::Sqlite { dir, .. } => ("GATEWAY_LEDGER__DIR", dir.as_str()),
            Self::Postgres { url, .. } => ("GATEWAY_LEDGER__URL", url.as_str()),
        };
        let env = test_env(
            &sim.base_url(),
            &[
                (key, value),
                ("GATEWAY_LEDGER__TIMEOUT_MS", "500"),
                ("GATEWAY_LEDGER__RETRY_BASE_MS", "20"),
                ("GATEWAY_LEDGER__HEALTH_INTERVAL_MS", "50"),
                ("GATEWAY_RATE_LIMIT__ENABLED", "false"),
            ],
        );
        Settings::load_from(None, env).expect("test settings")
    }

    /// A gateway in front of `sim` keeping its ledger here, once its ledger is up.
    pub async fn gateway(&self, sim: &SimulatorHandle) -> TestApp {
        let app = spawn_settings(self.settings(sim), Some(sim.clone())).await;
        wait_for_ledger(&app, "up").await;
        app
    }

    /// Makes the database refuse writes: PostgreSQL stops; the SQLite file is locked by
    /// an exclusive transaction of another connection.
    pub async fn outage(&mut self) {
        match self {
            Self::Sqlite { dir, lock } => {
                let options = SqliteConnectOptions::new().filename(format!("{dir}/{SQLITE_FILE}"));
                let mut conn = SqliteConnection::connect_with(&options)
                    .await
                    .expect("second connection to the ledger file");
                conn.execute("BEGIN EXCLUSIVE")
                    .await
                    .expect("exclusive lock");
                *lock = Some(conn);
            }
            Self::Postgres { server, .. } => server.stop(),
        }
    }

    /// Ends the outage: PostgreSQL starts again with its data; the lock is released.
    pub async fn recover(&mut self) {
        match self {
            Self::Sqlite { lock, .. } => {
                let mut conn = lock.take().expect("an outage to end");
                conn.execute("ROLLBACK").await.expect("release the lock");
                conn.close().await.expect("close");
            }
            Self::Postgres { server, .. } => server.restart(),
        }
    }
}

/// Waits until the gateway reports its ledger `state`.
pub async fn wait_for_ledger(app: &TestApp, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.ledger.state() != state {
        assert!(
            Instant::now() < deadline,
            "ledger state is {} after 20 s, expected {state}",
            app.state.ledger.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the gateway's retry queue is empty.
pub async fn wait_for_queue_drained(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.state.ledger.pending() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} ledger writes still queued after 30 s",
            app.state.ledger.pending()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /v1/audiences/{id}/activations` with `query` (e.g. `?limit=3`): the page.
pub async fn history(app: &TestApp, id: i64, query: &str) -> Value {
    let resp = app
        .get(&format!("/v1/audiences/{id}/activations{query}"))
        .await;
    assert_eq!(resp.status(), 200, "history of {id}{query}");
    resp.json().await.expect("history page")
}

/// The flow ids of every page of an audience's history, following `nextCursor`.
pub async fn all_flow_ids(app: &TestApp, id: i64, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut query = format!("?limit={limit}");
    loop {
        let page = history(app, id, &query).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit as usize, "{page}");
        ids.extend(
            items
                .iter()
                .map(|i| i["flowId"].as_str().expect("flowId").to_string()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("?limit={limit}&cursor={cursor}"),
            None => return ids,
        }
    }
}

/// Activates audience `id` with [`activation_body`] on `account`; the flow id.
pub async fn activate_on(app: &TestApp, id: i64, account: i64) -> String {
    let mut body = activation_body();
    body["accountId"] = json!(account);
    let resp = app
        .post(&format!("/v1/audiences/{id}/activations"), &body)
        .await;
    assert_eq!(resp.status(), 201, "activation of {id} on {account}");
    let done: Value = resp.json().await.expect("activation");
    done["flowId"].as_str().expect("flowId").to_string()
}

/// The `ledger_writes` counter for `result` from `/metrics`.
pub async fn ledger_writes(app: &TestApp, result: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.expect("metrics");
    let prefix = format!("audience_gateway_ledger_writes_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}
