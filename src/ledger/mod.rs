//! The activation ledger: every activation the vendor accepted through the gateway, kept in
//! a database so its history can be listed later (the vendor offers no such list).
//!
//! [`LedgerStore`] is the seam: [`sqlite::SqliteLedger`] (a file, the default) and
//! [`postgres::PostgresLedger`] (shared by replicas) implement it from the same SQL
//! ([`sql`]) and the same migrations (`migrations/`, applied at start-up).
//!
//! [`Ledger`] is what handlers use. Its database work runs on a small runtime of its own,
//! on its own thread, because actix runs one single-threaded runtime per worker and a
//! connection pool must not be shared between runtimes; handlers reach it through that
//! runtime's handle. Every call is bounded by `ledger.timeout_ms`. A write that fails is
//! logged, counted and kept in a bounded in-process queue, which a background task retries
//! in order (with the upstream client's backoff) until the database takes it, so an
//! activation the vendor accepted is not lost while the database recovers. While the
//! database is known to be down (or writes are already waiting), a write joins the queue at
//! once instead of waiting for its own timeout. Rows are keyed by (audience, flow id), so a
//! retried write that did get in the first time adds nothing.
//!
//! On stop ([`Ledger::shutdown`]) the queue is written within the time left; what the
//! database still does not take goes to the spool file (`ledger.spool_file`, see [`spool`]),
//! which the next start puts back at the head of the queue, and is logged at error with
//! every field only when even the spool file cannot be written.
//!
//! The same database keeps the finished responses of idempotent requests ([`Kept`]), so a
//! replay does not depend on the memory of one process or on Redis.

pub mod postgres;
mod spool;
mod sql;
pub mod sqlite;

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};

use crate::domain::{Activation, ActivationRecord, NewActivation};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::{LedgerBackend, LedgerSettings};

/// The schema of both databases, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Storage of the ledger. Implementations do no timing or retrying of their own: [`Ledger`]
/// bounds and retries every call.
#[async_trait::async_trait]
pub trait LedgerStore: Send + Sync {
    /// Applies the migrations not applied yet.
    async fn migrate(&self) -> anyhow::Result<()>;
    /// Records an activation; a second write of the same (audience, flow id) changes nothing.
    async fn insert(&self, entry: &Entry) -> anyhow::Result<()>;
    /// Marks an audience deleted at `at` (microseconds since the epoch).
    async fn mark_deleted(&self, audience_id: i64, at: i64) -> anyhow::Result<()>;
    /// One page of an audience's activations, newest first.
    async fn list(&self, query: &Query) -> anyhow::Result<Vec<Entry>>;
    /// One activation.
    async fn get(&self, audience_id: i64, flow_id: &str) -> anyhow::Result<Option<Entry>>;
    /// Checks the database answers.
    async fn ping(&self) -> anyhow::Result<()>;
    /// Keeps a finished idempotent response (replacing an expired one under its key).
    async fn keep(&self, kept: &Kept) -> anyhow::Result<()>;
    /// The response kept under `key`, unless it expired before `now` (microseconds).
    async fn kept(&self, key: &str, now: i64) -> anyhow::Result<Option<Kept>>;
    /// Drops the kept responses expired before `now` (microseconds).
    async fn forget_expired(&self, now: i64) -> anyhow::Result<()>;
}

/// A finished response of an idempotent request, kept for replays until `expires_at`
/// (microseconds since the epoch). The ledger stores it as given: `response` is the
/// idempotency store's own encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub key: String,
    pub fingerprint: String,
    pub response: String,
    pub expires_at: i64,
}

impl Kept {
    /// A record for `key` expiring `ttl` from now.
    pub fn new(key: &str, fingerprint: &str, response: String, ttl: Duration) -> Self {
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        Self {
            key: key.to_string(),
            fingerprint: fingerprint.to_string(),
            response,
            expires_at: now_micros().saturating_add(ttl),
        }
    }
}

/// One ledger row. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub audience_id: i64,
    pub flow_id: String,
    pub segment_id: i64,
    pub account_id: i64,
    pub account_name: Option<String>,
    pub name: String,
    pub description: String,
    pub start_date: String,
    pub end_date: String,
    pub activated_at: i64,
    pub sub: String,
    pub client_id: Option<String>,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// Set when read: when the audience was deleted.
    pub audience_deleted_at: Option<i64>,
}

/// Who made an activation and how, as the ledger records it.
pub struct Origin<'a> {
    pub sub: &'a str,
    pub client_id: Option<&'a str>,
    pub request_id: &'a str,
    pub idempotency_key: Option<&'a str>,
}

impl Entry {
    /// The row for an activation the vendor just accepted.
    pub fn accepted(
        done: &Activation,
        asked: &NewActivation,
        account_name: Option<String>,
        origin: &Origin<'_>,
    ) -> Self {
        Self {
            audience_id: done.audience_id,
            flow_id: done.flow_id.clone(),
            segment_id: done.segment_id,
            account_id: done.account_id,
            account_name,
            name: asked.name.clone(),
            description: asked.description.clone(),
            start_date: asked.start_date.clone(),
            end_date: asked.end_date.clone(),
            activated_at: now_micros(),
            sub: origin.sub.to_string(),
            client_id: origin.client_id.map(str::to_string),
            request_id: origin.request_id.to_string(),
            idempotency_key: origin.idempotency_key.map(str::to_string),
            audience_deleted_at: None,
        }
    }

    /// Where this activation is read back: `/v1/audiences/{id}/activations/{flowId}`.
    pub fn location(audience_id: i64, flow_id: &str) -> String {
        format!(
            "/v1/audiences/{audience_id}/activations/{}",
            path_segment(flow_id)
        )
    }
}

impl From<Entry> for ActivationRecord {
    fn from(e: Entry) -> Self {
        Self {
            audience_id: e.audience_id,
            flow_id: e.flow_id,
            segment_id: e.segment_id,
            account_id: e.account_id,
            account_name: e.account_name,
            name: e.name,
            description: e.description,
            start_date: e.start_date,
            end_date: e.end_date,
            activated_at: rfc3339(e.activated_at),
            sub: e.sub,
            client_id: e.client_id,
            request_id: e.request_id,
            idempotency_key: e.idempotency_key,
            audience_deleted_at: e.audience_deleted_at.map(rfc3339),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Microseconds since the epoch as RFC 3339 UTC with microseconds.
fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Most rows a page may hold.
pub const MAX_LIMIT: u32 = 100;
/// Rows of a page when the caller names no `limit`.
pub const DEFAULT_LIMIT: u32 = 20;

/// What a list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub audience_id: i64,
    /// Rows to return (the store is asked for one more, to know if a next page exists).
    pub limit: u32,
    /// Only rows strictly older than this position.
    pub after: Option<Cursor>,
    /// Activated at or after (microseconds).
    pub since: Option<i64>,
    /// Activated before (microseconds).
    pub until: Option<i64>,
    pub account_id: Option<i64>,
}

/// A position in an audience's history, newest first: the (time, flow id) of the last row
/// of a page. Callers see it as an opaque string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub activated_at: i64,
    pub flow_id: String,
}

const CURSOR_VERSION: &str = "v1";

impl Cursor {
    /// The cursor after `entry`.
    pub fn after(entry: &Entry) -> Self {
        Self {
            activated_at: entry.activated_at,
            flow_id: entry.flow_id.clone(),
        }
    }

    /// base64url (no padding) of `v1:<micros>:<flowId>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{CURSOR_VERSION}:{}:{}",
            self.activated_at, self.flow_id
        ))
    }

    /// Reads what [`Cursor::encode`] wrote; anything else is `None`.
    pub fn decode(text: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let rest = raw.strip_prefix(CURSOR_VERSION)?.strip_prefix(':')?;
        let (at, flow_id) = rest.split_once(':')?;
        let activated_at = at.parse().ok().filter(|t: &i64| *t >= 0)?;
        (!flow_id.is_empty()).then(|| Self {
            activated_at,
            flow_id: flow_id.to_string(),
        })
    }
}

/// A write waiting in the retry queue (and, as JSON, in the spool file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Op {
    Insert(Box<Entry>),
    #[serde(rename_all = "camelCase")]
    MarkDeleted {
        audience_id: i64,
        at: i64,
    },
    Keep(Box<Kept>),
}

impl Op {
    async fn apply(&self, store: &dyn LedgerStore) -> anyhow::Result<()> {
        match self {
            Op::Insert(e) => store.insert(e).await,
            Op::MarkDeleted { audience_id, at } => store.mark_deleted(*audience_id, *at).await,
            Op::Keep(k) => store.keep(k).await,
        }
    }

    /// Logs a write that will never be made, with everything needed to make it by hand.
    fn log_lost(&self, why: &str) {
        match self {
            Op::Insert(e) => tracing::error!(
                why,
                audience_id = e.audience_id,
                flow_id = %e.flow_id,
                segment_id = e.segment_id,
                account_id = e.account_id,
                account_name = e.account_name.as_deref(),
                name = %e.name,
                description = %e.description,
                start_date = %e.start_date,
                end_date = %e.end_date,
                activated_at = %rfc3339(e.activated_at),
                sub = %e.sub,
                client_id = e.client_id.as_deref(),
                activation_request_id = %e.request_id,
                idempotency_key = e.idempotency_key.as_deref(),
                "activation not recorded in the ledger"
            ),
            Op::MarkDeleted { audience_id, at } => tracing::error!(
                why,
                audience_id,
                deleted_at = %rfc3339(*at),
                "audience deletion not recorded in the ledger"
            ),
            // A retry with this key may run again once this replica forgets the response.
            Op::Keep(k) => tracing::error!(
                why,
                record_key = %k.key,
                expires_at = %rfc3339(k.expires_at),
                "idempotent response not kept in the ledger"
            ),
        }
    }
}

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// What the handlers and the background task share.
struct Shared {
    queue: Mutex<VecDeque<Op>>,
    capacity: usize,
    wake: Notify,
    state: AtomicU8,
    metrics: Arc<Metrics>,
    /// Where what is left at stop is kept for the next start.
    spool: PathBuf,
    /// Whether the queue holds writes read from the spool file, which is removed once the
    /// queue has been written.
    from_spool: AtomicBool,
    /// Set once the queue has been written out at stop: nothing retries a write after that.
    stopped: AtomicBool,
}

impl Shared {
    fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
        self.metrics.ledger_up(state == UP);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Op>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queued record of an activation, marked deleted when its audience's deletion
    /// is queued too.
    fn pending(&self, audience_id: i64, flow_id: &str) -> Option<Entry> {
        let queue = self.queue();
        let mut entry = queue.iter().find_map(|op| match op {
            Op::Insert(e) if e.audience_id == audience_id && e.flow_id == flow_id => {
                Some(Entry::clone(e))
            }
            _ => None,
        })?;
        entry.audience_deleted_at = queue.iter().find_map(|op| match op {
            Op::MarkDeleted { audience_id: a, at } if *a == audience_id => Some(*at),
            _ => None,
        });
        Some(entry)
    }

    /// A kept response still waiting in the queue.
    fn pending_kept(&self, key: &str) -> Option<Kept> {
        self.queue().iter().rev().find_map(|op| match op {
            Op::Keep(k) if k.key == key && k.expires_at > now_micros() => Some(Kept::clone(k)),
            _ => None,
        })
    }

    /// Pops the written head of the queue; once the queue is empty, what came from the
    /// spool file is written and the file goes.
    fn written(&self) {
        let mut queue = self.queue();
        queue.pop_front();
        self.metrics.ledger_pending(queue.len());
        let empty = queue.is_empty();
        drop(queue);
        if empty && self.from_spool.swap(false, Ordering::Relaxed) {
            spool::remove(&self.spool);
        }
    }

    fn enqueue(&self, op: Op) {
        let mut queue = self.queue();
        // Checked under the lock that [`finish`] sets it under.
        let refused = if self.stopped.load(Ordering::Relaxed) {
            Some("the ledger has stopped")
        } else if queue.len() >= self.capacity {
            Some("the ledger retry queue is full (ledger.queue_capacity)")
        } else {
            None
        };
        if let Some(why) = refused {
            drop(queue);
            self.metrics.ledger_write("dropped");
            op.log_lost(why);
            return;
        }
        queue.push_back(op);
        self.metrics.ledger_pending(queue.len());
        drop(queue);
        self.wake.notify_one();
    }
}

/// The activation ledger as handlers use it; see the module documentation.
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    backend: &'static str,
    handle: Handle,
    shared: Arc<Shared>,
    timeout: Duration,
    /// Stops the background task and writes out the queue ([`Ledger::shutdown`]); dropped
    /// unused, the ledger's thread spools the queue at once and ends.
    stop: Mutex<Option<oneshot::Sender<Stop>>>,
}

/// What [`Ledger::shutdown`] asks of the ledger's thread.
struct Stop {
    /// Until when the queue may be written to the database.
    deadline: Instant,
    /// Told when the queue is written or spooled.
    done: oneshot::Sender<()>,
}

impl Ledger {
    /// Opens the configured database on the ledger's own thread and starts the task that
    /// applies the migrations, then retries queued writes and watches the database.
    /// Connections are made on first use: a database that is down does not stop start-up.
    pub fn start(s: &LedgerSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (store, backend): (Arc<dyn LedgerStore>, &'static str) = {
            // Pools spawn their maintenance on the runtime they are made in.
            let _in_ledger_runtime = runtime.enter();
            match s.backend() {
                LedgerBackend::Sqlite(path) => {
                    (Arc::new(sqlite::SqliteLedger::open(&path, s)?), "sqlite")
                }
                LedgerBackend::Postgres(url) => (
                    Arc::new(postgres::PostgresLedger::open(&url, s)?),
                    "postgres",
                ),
            }
        };
        let spool = s.spool_path();
        let spooled = spool::load(&spool);
        if !spooled.is_empty() {
            tracing::info!(
                writes = spooled.len(),
                path = %spool.display(),
                "ledger writes from the spool file queued"
            );
        }
        let shared = Arc::new(Shared {
            capacity: s.queue_capacity.max(spooled.len()),
            from_spool: AtomicBool::new(!spooled.is_empty()),
            stopped: AtomicBool::new(false),
            queue: Mutex::new(spooled.into()),
            wake: Notify::new(),
            state: AtomicU8::new(STARTING),
            metrics,
            spool,
        });
        shared.metrics.ledger_up(false);
        shared.metrics.ledger_pending(shared.queue().len());
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<Stop>();
        let task = background(store.clone(), shared.clone(), s.clone());
        let on_exit = (store.clone(), shared.clone(), s.clone());
        std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let stop = tokio::select! {
                        () = task => None,
                        stop = stopped => stop.ok(),
                    };
                    let (store, shared, s) = on_exit;
                    let deadline = stop.as_ref().map_or_else(Instant::now, |s| s.deadline);
                    finish(&*store, &shared, &s, deadline).await;
                    if let Some(stop) = stop {
                        let _ = stop.done.send(());
                    }
                });
            })?;
        Ok(Self {
            store,
            backend,
            handle,
            shared,
            timeout: s.timeout,
            stop: Mutex::new(Some(stop)),
        })
    }

    /// Stops retrying in the background and writes the queue to the database for at most
    /// `within`; what is left goes to the spool file (or, failing that, to the log). Returns
    /// when that is done; later writes are logged as lost.
    pub async fn shutdown(&self, within: Duration) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(stop) = stop else { return };
        let (done, finished) = oneshot::channel();
        let asked = Stop {
            deadline: Instant::now() + within,
            done,
        };
        if stop.send(asked).is_ok() {
            let _ = finished.await;
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// `starting` (migrations not applied yet), `up` or `down`.
    pub fn state(&self) -> &'static str {
        match self.shared.state.load(Ordering::Relaxed) {
            STARTING => "starting",
            UP => "up",
            _ => "down",
        }
    }

    /// Writes waiting in the retry queue.
    pub fn pending(&self) -> usize {
        self.shared.queue().len()
    }

    /// Runs `work` on the ledger's runtime, bounded by `ledger.timeout_ms`.
    async fn call<T, F, Fut>(&self, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn LedgerStore>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let store = self.store.clone();
        let limit = self.timeout;
        self.handle
            .spawn(async move {
                tokio::time::timeout(limit, work(store))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {} ms", limit.as_millis()))?
            })
            .await
            .map_err(|e| anyhow::anyhow!("the ledger task did not finish: {e}"))?
    }

    /// Records an activation the vendor accepted. Never fails the caller: a failed write
    /// is logged, counted and queued for retry.
    #[tracing::instrument(skip_all, fields(audience_id = entry.audience_id, flow_id = %entry.flow_id))]
    pub async fn record(&self, entry: Entry) {
        let op = Op::Insert(Box::new(entry));
        self.write(op).await;
    }

    /// Marks an audience deleted; its history is kept. Queued for retry like a record.
    #[tracing::instrument(skip_all, fields(audience_id))]
    pub async fn mark_deleted(&self, audience_id: i64) {
        let op = Op::MarkDeleted {
            audience_id,
            at: now_micros(),
        };
        self.write(op).await;
    }

    /// Keeps a finished idempotent response; queued for retry like a record.
    #[tracing::instrument(skip_all)]
    pub async fn keep(&self, kept: Kept) {
        self.write(Op::Keep(Box::new(kept))).await;
    }

    /// The response kept under `key`. While the database is known to be down only the
    /// queue is looked at, so the caller does not wait for a timeout.
    #[tracing::instrument(skip_all)]
    pub async fn kept(&self, key: &str) -> anyhow::Result<Option<Kept>> {
        if let Some(k) = self.shared.pending_kept(key) {
            return Ok(Some(k));
        }
        if self.shared.state.load(Ordering::Relaxed) == DOWN {
            anyhow::bail!("the ledger database is down");
        }
        let owned = key.to_string();
        self.call(move |store| async move { store.kept(&owned, now_micros()).await })
            .await
    }

    async fn write(&self, op: Op) {
        if self.shared.state.load(Ordering::Relaxed) == DOWN || self.pending() > 0 {
            tracing::debug!("ledger database down or writes waiting; queued");
            self.shared.metrics.ledger_write("failed");
            self.shared.enqueue(op);
            return;
        }
        let attempt = op.clone();
        let result = self
            .call(move |store| async move { attempt.apply(&*store).await })
            .await;
        match result {
            Ok(()) => self.shared.metrics.ledger_write("written"),
            Err(e) => {
                tracing::warn!(error = %e, "ledger write failed; queued for retry");
                self.shared.metrics.ledger_write("failed");
                self.shared.enqueue(op);
            }
        }
    }

    /// One page of an audience's history, newest first, and the cursor of the next page.
    #[tracing::instrument(skip_all, fields(audience_id = query.audience_id))]
    pub async fn list(&self, query: Query) -> Result<(Vec<Entry>, Option<Cursor>), ApiError> {
        let limit = query.limit;
        let mut asked = query;
        asked.limit = limit + 1;
        let mut rows = self
            .call(move |store| async move { store.list(&asked).await })
            .await
            .map_err(unavailable)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = more.then(|| rows.last().map(Cursor::after)).flatten();
        Ok((rows, next))
    }

    /// One activation of an audience. One accepted but still waiting in the retry queue
    /// is answered from there, so the `Location` of an activation answers while the
    /// database cannot be written.
    #[tracing::instrument(skip_all, fields(audience_id, flow_id))]
    pub async fn get(&self, audience_id: i64, flow_id: &str) -> Result<Option<Entry>, ApiError> {
        let owned = flow_id.to_string();
        let stored = self
            .call(move |store| async move { store.get(audience_id, &owned).await })
            .await;
        match stored {
            Ok(Some(entry)) => Ok(Some(entry)),
            other => match self.shared.pending(audience_id, flow_id) {
                Some(entry) => Ok(Some(entry)),
                None => other.map_err(unavailable),
            },
        }
    }
}

/// A read that failed: logged with its cause, answered 503.
fn unavailable(e: anyhow::Error) -> ApiError {
    tracing::warn!(error = %e, "ledger read failed");
    ApiError::LedgerUnavailable
}

/// Applies the migrations (retrying until they are), then forever: retries the queued
/// writes in order while there are any, else checks the database every
/// `ledger.health_interval_ms` or until woken by a new queued write.
async fn background(store: Arc<dyn LedgerStore>, shared: Arc<Shared>, s: LedgerSettings) {
    // Creating tables may take longer than a query; still bounded.
    let migration_limit = s.timeout.max(Duration::from_secs(10));
    let mut failures = 0u32;
    loop {
        match tokio::time::timeout(migration_limit, store.migrate()).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => tracing::warn!(error = %e, "ledger migrations failed; retrying"),
            Err(_) => tracing::warn!("ledger migrations timed out; retrying"),
        }
        failures = failures.saturating_add(1);
        shared.set_state(DOWN);
        tokio::time::sleep(crate::upstream::backoff(s.retry_base, failures)).await;
    }
    shared.set_state(UP);
    let mut failures = 0u32;
    loop {
        let next = shared.queue().front().cloned();
        let Some(op) = next else {
            failures = 0;
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(s.health_interval) => {
                    let swept = tokio::time::timeout(s.timeout, store.forget_expired(now_micros()));
                    let up = matches!(swept.await, Ok(Ok(())));
                    shared.set_state(if up { UP } else { DOWN });
                }
            }
            continue;
        };
        match tokio::time::timeout(s.timeout, op.apply(&*store)).await {
            Ok(Ok(())) => {
                shared.written();
                shared.metrics.ledger_write("retried");
                shared.set_state(UP);
                failures = 0;
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", s.timeout.as_millis()),
                };
                failures = failures.saturating_add(1);
                shared.set_state(DOWN);
                tracing::debug!(%error, failures, "queued ledger write failed again");
                tokio::time::sleep(crate::upstream::backoff(s.retry_base, failures)).await;
            }
        }
    }
}

/// After the background task stopped: writes the queue in order until `deadline` (retrying
/// a write the database refuses), then keeps what is left in the spool file, or logs it
/// when even that fails.
async fn finish(store: &dyn LedgerStore, shared: &Shared, s: &LedgerSettings, deadline: Instant) {
    let mut failures = 0u32;
    loop {
        let Some(op) = shared.queue().front().cloned() else {
            break;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left.min(s.timeout), op.apply(store)).await {
            Ok(Ok(())) => {
                shared.written();
                shared.metrics.ledger_write("retried");
            }
            _ => {
                failures = failures.saturating_add(1);
                let pause = crate::upstream::backoff(s.retry_base, failures);
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
        }
    }
    let left: Vec<Op> = {
        let mut queue = shared.queue();
        shared.stopped.store(true, Ordering::Relaxed);
        queue.drain(..).collect()
    };
    shared.metrics.ledger_pending(0);
    if left.is_empty() {
        return;
    }
    match spool::save(&shared.spool, &left) {
        Ok(()) => tracing::warn!(
            writes = left.len(),
            path = %shared.spool.display(),
            "ledger writes kept in the spool file for the next start"
        ),
        Err(e) => {
            let why = format!(
                "the gateway stopped before the ledger could be written, and the spool file {} could not be written: {e}",
                shared.spool.display()
            );
            for op in left {
                op.log_lost(&why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_writes_round_trip_as_json() {
        let ops = [
            Op::Insert(Box::new(Entry {
                audience_id: 1001,
                flow_id: "f-1".into(),
                segment_id: 7,
                account_id: 3,
                account_name: None,
                name: "n".into(),
                description: "d".into(),
                start_date: "2026-01-01".into(),
                end_date: "2026-02-01".into(),
                activated_at: 1,
                sub: "s".into(),
                client_id: Some("c".into()),
                request_id: "r".into(),
                idempotency_key: None,
                audience_deleted_at: None,
            })),
            Op::MarkDeleted {
                audience_id: 1001,
                at: 2,
            },
            Op::Keep(Box::new(Kept {
                key: "k".into(),
                fingerprint: "f".into(),
                response: "{}".into(),
                expires_at: 3,
            })),
        ];
        for op in ops {
            let text = serde_json::to_string(&op).unwrap();
            assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), op, "{text}");
        }
    }

    #[test]
    fn cursors_round_trip_and_stay_opaque() {
        let c = Cursor {
            activated_at: 1_765_877_400_123_456,
            flow_id: "7d9f8b52-1c1e:4a43".into(),
        };
        let text = c.encode();
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::decode(&text), Some(c));
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "!!!".into(),
            "djE6".into(),
            enc("v2:1:abc"),
            enc("v1:abc:def"),
            enc("v1:-5:abc"),
            enc("v1:12:"),
            enc("v1:12"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert_eq!(Cursor::decode(&bad), None, "{bad}");
        }
    }

    #[test]
    fn locations_encode_the_flow_id() {
        assert_eq!(
            Entry::location(1001, "7d9f8b52-1c1e"),
            "/v1/audiences/1001/activations/7d9f8b52-1c1e"
        );
        assert_eq!(
            Entry::location(1, "a/b c"),
            "/v1/audiences/1/activations/a%2Fb%20c"
        );
    }

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        assert_eq!(
            rfc3339(1_765_877_400_123_456),
            "2025-12-16T09:30:00.123456Z"
        );
    }
}
