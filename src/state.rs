//! The application state: the capabilities every handler and layer shares, built once
//! from the settings, with the background tasks that keep it current (JWKS refresh, other
//! replicas' evictions). Each capability is also registered on its own (`web::Data<T>`),
//! so a layer takes the one it needs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::web;

use crate::auth::Authenticator;
use crate::cache::AudienceCache;
use crate::coherence::redis::RedisInvalidation;
use crate::coherence::{Event, Invalidation, LocalInvalidation};
use crate::idempotency::durable::DurableIdempotency;
use crate::idempotency::redis::SharedIdempotency;
use crate::idempotency::{IdempotencyStore, LocalIdempotency};
use crate::ledger::Ledger;
use crate::limits::redis::SharedLimiter;
use crate::limits::{ActivationLimiter, LocalLimiter};
use crate::metrics::Metrics;
use crate::redis::Redis;
use crate::settings::Settings;
use crate::upstream::UpstreamClient;

/// Everything handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Arc<Authenticator>,
    /// Shared with the cache's background refreshes.
    pub upstream: Arc<UpstreamClient>,
    pub cache: Arc<AudienceCache>,
    pub limiter: Arc<dyn ActivationLimiter>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub invalidation: Arc<dyn Invalidation>,
    /// The activation history (and the kept idempotent responses).
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
    /// The Redis-backed shared state, when `redis.url` is set.
    pub redis: Option<SharedState>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// Builds the state: Redis-backed shared state when `redis.url` is set, in-process
    /// implementations otherwise, with finished idempotent responses kept in the ledger too.
    /// Redis is connected by the tasks `run_until_stopped` starts; the ledger starts on its
    /// own thread here.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let budget = settings.server.request_budget;
        let redis = SharedState::new(&settings, metrics.clone())?;
        let ledger = Arc::new(Ledger::start(&settings.ledger, metrics.clone())?);
        let (limiter, claims, invalidation): (
            Arc<dyn ActivationLimiter>,
            Arc<dyn IdempotencyStore>,
            Arc<dyn Invalidation>,
        ) = match &redis {
            Some(r) => (r.limiter(), r.idempotency(), r.invalidation()),
            None => (
                Arc::new(LocalLimiter::new(&settings.rate_limit, metrics.clone())),
                Arc::new(LocalIdempotency::new(&settings.idempotency)),
                Arc::new(LocalInvalidation),
            ),
        };
        let idempotency = Arc::new(DurableIdempotency::new(
            claims,
            ledger.clone(),
            settings.idempotency.ttl,
        ));
        Ok(Self {
            auth: Arc::new(Authenticator::new(&settings.auth, metrics.clone())?),
            upstream: Arc::new(UpstreamClient::new(
                &settings.upstream,
                budget,
                metrics.clone(),
            )?),
            cache: Arc::new(AudienceCache::new(&settings.cache, metrics.clone())),
            limiter,
            idempotency,
            invalidation,
            ledger,
            metrics,
            redis,
            settings: Arc::new(settings),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Whether shutdown has begun (readiness fails from then on).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks the gateway not ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// `disabled`, `up` or `down`.
    pub fn redis_state(&self) -> &'static str {
        self.redis
            .as_ref()
            .map_or("disabled", |r| r.redis().state())
    }

    /// Drops an audience from this replica's cache and tells the others.
    pub async fn evict(&self, id: i64) {
        let identity = self.upstream.identity();
        self.cache.evict(&identity, id).await;
        self.invalidation.publish(&identity, id).await;
    }

    /// Drops an audience and the platform accounts from every replica's cache (a purge).
    pub async fn purge(&self, id: i64) {
        self.evict(id).await;
        let identity = self.upstream.identity();
        self.cache.evict_accounts(&identity).await;
        self.invalidation.publish_accounts(&identity).await;
    }
}

/// The Redis-backed implementations of the capabilities, with their connection.
pub struct SharedState {
    redis: Arc<Redis>,
    limiter: Arc<SharedLimiter>,
    idempotency: Arc<SharedIdempotency>,
    invalidation: Arc<RedisInvalidation>,
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
            limiter: Arc::new(SharedLimiter::new(redis.clone(), settings, metrics)),
            idempotency: Arc::new(SharedIdempotency::new(redis.clone(), &settings.idempotency)),
            invalidation: Arc::new(RedisInvalidation::new(redis.clone())),
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

    /// Starts the health task, which also sends the evictions that could not be published,
    /// and the eviction subscriber on the current (actix) runtime. `on_event` applies a
    /// received eviction locally and returns false once the application is gone; both tasks
    /// end with the state.
    pub fn spawn<F, Fut>(&self, on_event: F)
    where
        F: FnMut(Event) -> Fut + 'static,
        Fut: Future<Output = bool> + 'static,
    {
        let invalidation = Arc::downgrade(&self.invalidation);
        crate::redis::spawn_health(&self.redis, move || {
            let invalidation = invalidation.upgrade();
            async move {
                if let Some(inv) = invalidation.filter(|inv| inv.has_pending()) {
                    inv.flush_pending().await;
                }
            }
        });
        actix_rt::spawn(crate::coherence::redis::subscribe(
            Arc::downgrade(&self.redis),
            on_event,
        ));
    }
}

/// Starts the background tasks of the state on the current (actix) runtime: the JWKS
/// refresh and, with Redis, its connection and the subscription to other replicas'
/// evictions. Each holds a weak reference and ends with the state.
pub fn spawn_background(state: &web::Data<AppState>) {
    spawn_jwks_refresh(state);
    spawn_shared_state(state);
}

/// Connects Redis and applies other replicas' evictions to this replica's cache. Holds only
/// a weak reference, so it ends with the state.
fn spawn_shared_state(state: &web::Data<AppState>) {
    let Some(redis) = &state.redis else { return };
    let weak: Weak<AppState> = Arc::downgrade(&state.clone().into_inner());
    redis.spawn(move |event| {
        let state = weak.upgrade();
        async move {
            let Some(state) = state else { return false };
            match event {
                Event::Evict { identity, id } => state.cache.evict(&identity.into(), id).await,
                Event::EvictAccounts { identity } => {
                    state.cache.evict_accounts(&identity.into()).await
                }
                Event::Clear => state.cache.clear(),
            }
            true
        }
    });
}

/// Fetches the JWKS now and then every `auth.jwks_refresh_secs`; a removed key empties the
/// verified-token cache. Holds only a weak reference, so it ends with the state.
fn spawn_jwks_refresh(state: &web::Data<AppState>) {
    if state.auth.jwks().is_none() {
        return;
    }
    let weak: Weak<AppState> = Arc::downgrade(&state.clone().into_inner());
    let every = state.settings.auth.jwks_refresh.max(Duration::from_secs(1));
    actix_rt::spawn(async move {
        loop {
            let Some(state) = weak.upgrade() else { return };
            if let Some(jwks) = state.auth.jwks() {
                if let Err(e) = jwks.refresh().await {
                    tracing::warn!(error = %e, "JWKS refresh failed");
                }
            }
            drop(state);
            tokio::time::sleep(every).await;
        }
    });
}
