//! State shared by the replicas, in Redis: activation limits ([`limiter`]), idempotency
//! records ([`idempotency`]) and cache evictions ([`invalidation`]). Chosen by `redis.url`;
//! without it the in-process implementations are used.
//!
//! Every Redis call is bounded by `redis.timeout_ms`. A failed or late call marks Redis down;
//! while down, requests do not wait on Redis at all and each feature falls back by a stated
//! policy:
//! - activation limits: in-process limits with `redis.fallback_quota_share` of every quota
//!   and burst on each replica (`redis.limiter_fallback = "local"`), or 503
//!   (`"refuse"`);
//! - idempotency: in-process records (a retry landing on another replica is not
//!   recognised until Redis is back);
//! - evictions: published ones that fail are kept (bounded) and sent once Redis is back, and
//!   a replica drops its whole audience cache each time its subscription is (re)established,
//!   as it may have missed messages meanwhile.
//!
//! A background task PINGs every `redis.health_interval_ms` and reconnects while down. The
//! state is reported by `audience_gateway_redis_up` and the readiness body (`redis`), and
//! never fails readiness: a Redis outage must not take every replica out of the Service.

pub mod idempotency;
pub mod invalidation;
pub mod limiter;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::coherence::Invalidation;
use crate::idempotency::IdempotencyStore;
use crate::limits::ActivationLimiter;
use crate::metrics::Metrics;
use crate::settings::{ms, Settings};

pub use invalidation::Event;

/// Why a Redis call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// Marked down; the call was not attempted.
    #[error("redis is down")]
    Down,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected value in redis: {0}")]
    Decode(String),
}

/// One replica's connection to Redis, with its health.
pub struct Redis {
    client: redis::Client,
    /// Replaced by the health task after a failed probe, so a broken manager never lingers.
    manager: RwLock<Option<ConnectionManager>>,
    timeout: Duration,
    interval: Duration,
    prefix: String,
    replica: String,
    /// Commands answer (last probe or call succeeded).
    commands_up: AtomicBool,
    /// The eviction subscription is live.
    subscribed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Redis {
    fn new(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Option<Self>> {
        let r = &settings.redis;
        let Some(url) = &r.url else { return Ok(None) };
        let client = redis::Client::open(url.expose_secret())
            .map_err(|_| anyhow::anyhow!("redis.url (env GATEWAY_REDIS__URL) is not valid"))?;
        metrics.redis_up(false);
        Ok(Some(Self {
            client,
            manager: RwLock::new(None),
            timeout: ms(r.timeout_ms),
            interval: ms(r.health_interval_ms),
            prefix: r.key_prefix.clone(),
            replica: uuid::Uuid::new_v4().to_string(),
            commands_up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            metrics,
        }))
    }

    /// A key under `redis.key_prefix`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// This replica's id, carried by the messages it publishes.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether commands can be sent (requests use Redis, not the fallback).
    pub fn commands_up(&self) -> bool {
        self.commands_up.load(Ordering::Acquire)
    }

    /// Commands answer and the eviction subscription is live.
    pub fn is_up(&self) -> bool {
        self.commands_up() && self.subscribed.load(Ordering::Acquire)
    }

    fn set_commands_up(&self, up: bool, why: &dyn std::fmt::Display) {
        if self.commands_up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!("redis is up; shared state in use");
            } else {
                tracing::warn!(error = %why, "redis is down; using the fallbacks");
            }
        }
        self.metrics.redis_up(self.is_up());
    }

    fn set_subscribed(&self, up: bool) {
        self.subscribed.store(up, Ordering::Release);
        self.metrics.redis_up(self.is_up());
    }

    fn config(&self) -> ConnectionManagerConfig {
        // One attempt per reconnection: the health task is the retry loop.
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0)
    }

    fn manager(&self) -> Option<ConnectionManager> {
        self.manager
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs one Redis operation within `redis.timeout_ms`; any failure marks Redis down.
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.commands_up() {
            return Err(RedisFailure::Down);
        }
        let Some(conn) = self.manager() else {
            return Err(RedisFailure::Down);
        };
        let failure = match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => RedisFailure::Redis(e),
            Err(_) => RedisFailure::Timeout(self.timeout),
        };
        tracing::debug!(op, error = %failure, "redis call failed");
        self.set_commands_up(false, &failure);
        Err(failure)
    }

    /// PINGs (connecting first if needed) and records the outcome; true when up.
    async fn probe(&self) -> bool {
        let conn = {
            let mut slot = self.manager.write().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(m) => Ok(m.clone()),
                None => ConnectionManager::new_lazy_with_config(self.client.clone(), self.config())
                    .inspect(|m| *slot = Some(m.clone())),
            }
        };
        let failure = match conn {
            Err(e) => RedisFailure::Redis(e),
            Ok(mut conn) => {
                let ping = redis::cmd("PING");
                match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn))
                    .await
                {
                    Ok(Ok(_)) => {
                        self.set_commands_up(true, &"ping answered");
                        return true;
                    }
                    Ok(Err(e)) => RedisFailure::Redis(e),
                    Err(_) => RedisFailure::Timeout(self.timeout),
                }
            }
        };
        *self.manager.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.set_commands_up(false, &failure);
        false
    }
}

/// The Redis-backed implementations of the shared-state traits, with their connection.
pub struct SharedState {
    redis: Arc<Redis>,
    limiter: Arc<limiter::SharedLimiter>,
    idempotency: Arc<idempotency::SharedIdempotency>,
    invalidation: Arc<invalidation::RedisInvalidation>,
}

impl SharedState {
    /// The shared state when `redis.url` is set. Connects lazily: [`SharedState::spawn`]
    /// starts the tasks that connect, watch and subscribe.
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Option<Self>> {
        let Some(redis) = Redis::new(settings, metrics.clone())? else {
            return Ok(None);
        };
        let redis = Arc::new(redis);
        Ok(Some(Self {
            limiter: Arc::new(limiter::SharedLimiter::new(
                redis.clone(),
                settings,
                metrics,
            )),
            idempotency: Arc::new(idempotency::SharedIdempotency::new(
                redis.clone(),
                &settings.idempotency,
            )),
            invalidation: Arc::new(invalidation::RedisInvalidation::new(redis.clone())),
            redis,
        }))
    }

    /// Activation limits (with the fallback policy).
    pub fn limiter(&self) -> Arc<dyn ActivationLimiter> {
        self.limiter.clone()
    }

    /// Idempotency records (with the in-process fallback).
    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        self.idempotency.clone()
    }

    /// Eviction broadcasts.
    pub fn invalidation(&self) -> Arc<dyn Invalidation> {
        self.invalidation.clone()
    }

    /// The connection (tests and diagnostics).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// `up` or `down`, as readiness and metrics report it.
    pub fn state(&self) -> &'static str {
        if self.redis.is_up() {
            "up"
        } else {
            "down"
        }
    }

    /// Starts the health task and the eviction subscriber on the current (actix) runtime.
    /// `on_event` applies a received eviction locally and returns false once the
    /// application is gone; both tasks end with the state.
    pub fn spawn<F, Fut>(&self, on_event: F)
    where
        F: FnMut(Event) -> Fut + 'static,
        Fut: Future<Output = bool> + 'static,
    {
        actix_rt::spawn(health(
            Arc::downgrade(&self.redis),
            Arc::downgrade(&self.invalidation),
        ));
        actix_rt::spawn(invalidation::subscribe(
            Arc::downgrade(&self.redis),
            on_event,
        ));
    }
}

/// Probes every `redis.health_interval_ms`; while Redis answers, sends the evictions that
/// could not be published. (Not only right after a recovery: an eviction can be kept just
/// after a probe found Redis up again, and would otherwise wait for the next outage.)
async fn health(redis: Weak<Redis>, invalidation: Weak<invalidation::RedisInvalidation>) {
    loop {
        let Some(r) = redis.upgrade() else { return };
        if r.probe().await {
            if let Some(inv) = invalidation.upgrade() {
                if inv.has_pending() {
                    inv.flush_pending().await;
                }
            }
        }
        let every = r.interval;
        drop(r);
        tokio::time::sleep(every).await;
    }
}
