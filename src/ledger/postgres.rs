//! The ledger in PostgreSQL: shared by any number of replicas.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::sql::sql_store;
use crate::settings::LedgerSettings;

/// The PostgreSQL ledger.
pub struct PostgresLedger {
    pool: PgPool,
}

impl PostgresLedger {
    /// A pool on `url`, connecting on first use; every statement is bounded by
    /// `ledger.timeout_ms` on the server too. Call inside the ledger's runtime.
    pub fn open(url: &SecretString, s: &LedgerSettings) -> anyhow::Result<Self> {
        // The error text of a malformed URL could quote it; name the setting instead.
        let options = PgConnectOptions::from_str(url.expose_secret())
            .map_err(|_| anyhow::anyhow!("ledger.url is not a valid postgres:// URL"))?
            .application_name("audience-gateway")
            .options([("statement_timeout", format!("{}", s.timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(s.max_connections)
            .acquire_timeout(s.timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }
}

sql_store!(PostgresLedger);
