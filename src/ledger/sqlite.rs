//! The ledger in a SQLite file: the default, for one replica (a file cannot be shared).

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::sql::sql_store;
use crate::settings::LedgerSettings;

/// The SQLite ledger.
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    /// A pool on `path` (created with its directory if missing), connecting on first use.
    /// Call inside the ledger's runtime.
    pub fn open(path: &Path, s: &LedgerSettings) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create the ledger directory {}: {e}", dir.display())
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(s.timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(s.max_connections)
            .acquire_timeout(s.timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }
}

sql_store!(SqliteLedger);
