//! `ledger.*`: where the activation history is kept, and how long the gateway waits for it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// File name of the SQLite ledger under `ledger.dir` when `ledger.url` is not set.
pub const SQLITE_FILE: &str = "ledger.sqlite3";
/// File name of the spool file under `ledger.dir` when `ledger.spool_file` is not set.
pub const SPOOL_FILE: &str = "ledger-spool.jsonl";

/// The activation ledger: SQLite in a file by default (one replica), PostgreSQL when
/// `url` is a `postgres://` URL (any number of replicas).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    /// `sqlite://<path>` or `postgres://user:password@host:port/db`; a secret, as it may
    /// hold a password. Unset: a SQLite file named `ledger.sqlite3` under `dir`.
    #[serde(serialize_with = "super::redacted")]
    pub url: Option<SecretString>,
    /// Directory of the default SQLite file and spool file (created if missing).
    pub dir: PathBuf,
    /// Where writes the database has not taken when the gateway stops are kept for the
    /// next start (a local, writable path that outlives the process). Unset:
    /// `ledger-spool.jsonl` under `dir`.
    pub spool_file: Option<PathBuf>,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Upper bound of every ledger call (connection included); past it the call failed.
    #[serde(rename = "timeout_ms", with = "duration::millis")]
    pub timeout: Duration,
    /// Activations kept in process while the database cannot be written, retried in order.
    pub queue_capacity: usize,
    /// First delay between retries of a queued write; doubled per failure, with jitter.
    #[serde(rename = "retry_base_ms", with = "duration::millis")]
    pub retry_base: Duration,
    /// How often the database is checked (readiness, `ledger_up`).
    #[serde(rename = "health_interval_ms", with = "duration::millis")]
    pub health_interval: Duration,
}

/// The database a [`LedgerSettings`] names.
#[derive(Debug, Clone)]
pub enum LedgerBackend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server; the URL may hold a password.
    Postgres(SecretString),
}

impl LedgerSettings {
    /// The configured database.
    pub fn backend(&self) -> LedgerBackend {
        let Some(url) = &self.url else {
            return LedgerBackend::Sqlite(self.dir.join(SQLITE_FILE));
        };
        let text = url.expose_secret().trim();
        match text
            .strip_prefix("sqlite://")
            .or(text.strip_prefix("sqlite:"))
        {
            Some(path) => LedgerBackend::Sqlite(PathBuf::from(path)),
            None => LedgerBackend::Postgres(url.clone()),
        }
    }

    /// The spool file.
    pub fn spool_path(&self) -> PathBuf {
        self.spool_file
            .clone()
            .unwrap_or_else(|| self.dir.join(SPOOL_FILE))
    }

    /// Checks the URL (never echoing it: it may carry a password) and the bounds.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.url {
            let url = url.expose_secret().trim();
            let sqlite = url.starts_with("sqlite:");
            let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
            ensure(
                sqlite || postgres,
                "ledger.url",
                "a sqlite://<path> or postgres:// URL",
            )?;
            ensure(
                !sqlite
                    || !matches!(self.backend(), LedgerBackend::Sqlite(p) if p.as_os_str().is_empty() || p.starts_with(":memory:")),
                "ledger.url",
                "a sqlite://<path> naming a file",
            )?;
            ensure(
                !postgres || sqlx::postgres::PgConnectOptions::from_str(url).is_ok(),
                "ledger.url",
                "a postgres://user:password@host:port/database URL",
            )?;
        } else {
            ensure(
                !self.dir.as_os_str().is_empty(),
                "ledger.dir",
                "a directory",
            )?;
        }
        ensure(
            self.spool_file
                .as_ref()
                .is_none_or(|p| !p.as_os_str().is_empty() && p.file_name().is_some()),
            "ledger.spool_file",
            "a file path",
        )?;
        ensure(
            (1..=100).contains(&self.max_connections),
            "ledger.max_connections",
            "1 to 100",
        )?;
        ensure(
            self.timeout >= Duration::from_millis(10) && self.timeout <= Duration::from_secs(60),
            "ledger.timeout_ms",
            "10 to 60000 milliseconds",
        )?;
        ensure(
            self.queue_capacity >= 1,
            "ledger.queue_capacity",
            "at least 1",
        )?;
        ensure(
            self.retry_base >= Duration::from_millis(1),
            "ledger.retry_base_ms",
            "at least 1 millisecond",
        )?;
        ensure(
            self.health_interval >= Duration::from_millis(10),
            "ledger.health_interval_ms",
            "at least 10 milliseconds",
        )?;
        Ok(())
    }
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            url: None,
            dir: PathBuf::from("."),
            spool_file: None,
            max_connections: 5,
            timeout: Duration::from_secs(2),
            queue_capacity: 10_000,
            retry_base: Duration::from_millis(200),
            health_interval: Duration::from_secs(5),
        }
    }
}
