//! The ledger's SQL, shared by both databases: the statements are portable (`$n`
//! parameters, `ON CONFLICT DO NOTHING`, 64-bit integers and text only), so
//! [`sql_store!`] implements [`LedgerStore`](super::LedgerStore) for a store over any sqlx
//! pool from the same text.

/// Records an activation once: a retried write of a row that did get in changes nothing.
pub(super) const INSERT: &str = "INSERT INTO activations (audience_id, flow_id, segment_id, \
    account_id, account_name, segment_name, segment_description, start_date, end_date, \
    activated_at, caller_sub, caller_client_id, request_id, idempotency_key) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
    ON CONFLICT (audience_id, flow_id) DO NOTHING";

/// Keeps a finished idempotent response; one whose record had expired is replaced.
pub(super) const KEEP: &str = "INSERT INTO idempotency_records (record_key, fingerprint, \
    response, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (record_key) DO UPDATE SET \
    fingerprint = excluded.fingerprint, response = excluded.response, \
    expires_at = excluded.expires_at";

/// A kept response still live at `$2`.
pub(super) const KEPT: &str = "SELECT record_key, fingerprint, response, expires_at \
    FROM idempotency_records WHERE record_key = $1 AND expires_at > $2";

/// Drops the kept responses expired at `$1`.
pub(super) const FORGET_EXPIRED: &str = "DELETE FROM idempotency_records WHERE expires_at <= $1";

/// Marks an audience deleted (the first deletion counts).
pub(super) const MARK_DELETED: &str = "INSERT INTO deleted_audiences (audience_id, deleted_at) \
    VALUES ($1, $2) ON CONFLICT (audience_id) DO NOTHING";

const COLUMNS: &str = "SELECT a.audience_id, a.flow_id, a.segment_id, a.account_id, \
    a.account_name, a.segment_name, a.segment_description, a.start_date, a.end_date, \
    a.activated_at, a.caller_sub, a.caller_client_id, a.request_id, a.idempotency_key, \
    d.deleted_at FROM activations a \
    LEFT JOIN deleted_audiences d ON d.audience_id = a.audience_id";

/// One page, newest first: `$1` audience, `$2` since (inclusive), `$3` until (exclusive),
/// `$4` account, `$5`/`$6` the cursor's keyset (strictly older), `$7` rows.
pub(super) fn list() -> String {
    format!(
        "{COLUMNS} WHERE a.audience_id = $1 \
         AND ($2 IS NULL OR a.activated_at >= $2) \
         AND ($3 IS NULL OR a.activated_at < $3) \
         AND ($4 IS NULL OR a.account_id = $4) \
         AND ($5 IS NULL OR a.activated_at < $5 OR (a.activated_at = $5 AND a.flow_id < $6)) \
         ORDER BY a.activated_at DESC, a.flow_id DESC LIMIT $7"
    )
}

/// One activation: `$1` audience, `$2` flow id.
pub(super) fn get() -> String {
    format!("{COLUMNS} WHERE a.audience_id = $1 AND a.flow_id = $2")
}

/// Implements `LedgerStore` for `$store`, a struct with a `pool: sqlx::Pool<_>` field.
macro_rules! sql_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ledger::LedgerStore for $store {
            async fn migrate(&self) -> anyhow::Result<()> {
                $crate::ledger::MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn insert(&self, e: &$crate::ledger::Entry) -> anyhow::Result<()> {
                sqlx::query($crate::ledger::sql::INSERT)
                    .bind(e.audience_id)
                    .bind(&e.flow_id)
                    .bind(e.segment_id)
                    .bind(e.account_id)
                    .bind(&e.account_name)
                    .bind(&e.name)
                    .bind(&e.description)
                    .bind(&e.start_date)
                    .bind(&e.end_date)
                    .bind(e.activated_at)
                    .bind(&e.sub)
                    .bind(&e.client_id)
                    .bind(&e.request_id)
                    .bind(&e.idempotency_key)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn mark_deleted(&self, audience_id: i64, at: i64) -> anyhow::Result<()> {
                sqlx::query($crate::ledger::sql::MARK_DELETED)
                    .bind(audience_id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn keep(&self, k: &$crate::ledger::Kept) -> anyhow::Result<()> {
                sqlx::query($crate::ledger::sql::KEEP)
                    .bind(&k.key)
                    .bind(&k.fingerprint)
                    .bind(&k.response)
                    .bind(k.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn kept(
                &self,
                key: &str,
                now: i64,
            ) -> anyhow::Result<Option<$crate::ledger::Kept>> {
                use sqlx::Row as _;
                let row = sqlx::query($crate::ledger::sql::KEPT)
                    .bind(key)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| {
                    Ok($crate::ledger::Kept {
                        key: r.try_get("record_key")?,
                        fingerprint: r.try_get("fingerprint")?,
                        response: r.try_get("response")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn forget_expired(&self, now: i64) -> anyhow::Result<()> {
                sqlx::query($crate::ledger::sql::FORGET_EXPIRED)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list(
                &self,
                q: &$crate::ledger::Query,
            ) -> anyhow::Result<Vec<$crate::ledger::Entry>> {
                let (at, flow) = match &q.after {
                    Some(c) => (Some(c.activated_at), Some(c.flow_id.as_str())),
                    None => (None, None),
                };
                let rows = sqlx::query(&$crate::ledger::sql::list())
                    .bind(q.audience_id)
                    .bind(q.since)
                    .bind(q.until)
                    .bind(q.account_id)
                    .bind(at)
                    .bind(flow)
                    .bind(i64::from(q.limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| $crate::ledger::sql::entry(r)).collect()
            }

            async fn get(
                &self,
                audience_id: i64,
                flow_id: &str,
            ) -> anyhow::Result<Option<$crate::ledger::Entry>> {
                let row = sqlx::query(&$crate::ledger::sql::get())
                    .bind(audience_id)
                    .bind(flow_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map($crate::ledger::sql::entry).transpose()
            }

            async fn ping(&self) -> anyhow::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

pub(super) use sql_store;

/// Reads a row of [`list`] or [`get`].
pub(super) fn entry<R>(r: &R) -> anyhow::Result<super::Entry>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::Entry {
        audience_id: r.try_get("audience_id")?,
        flow_id: r.try_get("flow_id")?,
        segment_id: r.try_get("segment_id")?,
        account_id: r.try_get("account_id")?,
        account_name: r.try_get("account_name")?,
        name: r.try_get("segment_name")?,
        description: r.try_get("segment_description")?,
        start_date: r.try_get("start_date")?,
        end_date: r.try_get("end_date")?,
        activated_at: r.try_get("activated_at")?,
        sub: r.try_get("caller_sub")?,
        client_id: r.try_get("caller_client_id")?,
        request_id: r.try_get("request_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        audience_deleted_at: r.try_get("deleted_at")?,
    })
}
