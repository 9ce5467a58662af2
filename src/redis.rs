//! The connection to Redis that the shared implementations of the activation limits
//! (`limits::redis`), idempotency records (`idempotency::redis`) and cache coherence
//! (`coherence::redis`) use; they depend on this module, never the reverse. Chosen by
//! `redis.url`; without it every capability uses its in-process implementation.
//!
//! Every Redis call is bounded by `redis.timeout_ms`. A failed or late call marks Redis down;
//! while down, requests do not wait on Redis at all and each capability falls back by the
//! policy its Redis module states. A background task PINGs every `redis.health_interval_ms`
//! and reconnects while down. Redis counts as up when commands answer and the eviction
//! subscription is live; the state is reported by `audience_gateway_redis_up` and the
//! readiness body (`redis`), and never fails readiness: a Redis outage must not take every
//! replica out of the Service.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use secrecy::ExposeSecret;

use crate::metrics::Metrics;
use crate::settings::Settings;

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
    /// The connection when `redis.url` is set; connects lazily, in [`spawn_health`].
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Option<Self>> {
        let r = &settings.redis;
        let Some(url) = &r.url else { return Ok(None) };
        let client = redis::Client::open(url.expose_secret())
            .map_err(|_| anyhow::anyhow!("redis.url (env GATEWAY_REDIS__URL) is not valid"))?;
        metrics.redis_up(false);
        Ok(Some(Self {
            client,
            manager: RwLock::new(None),
            timeout: r.timeout,
            interval: r.health_interval,
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

    /// Bound of every call and connection attempt (`redis.timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time between health checks and between reconnection attempts.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A new pub/sub connection (not bounded: callers apply [`Redis::timeout`]).
    pub async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        self.client.get_async_pubsub().await
    }

    /// `up` or `down`, as readiness and metrics report it.
    pub fn state(&self) -> &'static str {
        if self.is_up() {
            "up"
        } else {
            "down"
        }
    }

    /// Records whether the eviction subscription is live.
    pub fn set_subscribed(&self, up: bool) {
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

/// Starts the health task on the current (actix) runtime: it probes every
/// `redis.health_interval_ms` and runs `on_up` after every probe that Redis answered (not
/// only after a recovery: work kept just after a probe found Redis up again would otherwise
/// wait for the next outage). Holds only a weak reference, so it ends with the connection.
pub fn spawn_health<F, Fut>(redis: &Arc<Redis>, mut on_up: F)
where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let redis: Weak<Redis> = Arc::downgrade(redis);
    actix_rt::spawn(async move {
        loop {
            let Some(r) = redis.upgrade() else { return };
            if r.probe().await {
                on_up().await;
            }
            let every = r.interval;
            drop(r);
            tokio::time::sleep(every).await;
        }
    });
}
