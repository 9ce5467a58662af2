//! The application builder: shared state, the HTTP server, background tasks and graceful
//! shutdown. The listener is bound first, so port 0 works and `port()` tells the real one.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::auth::Authenticator;
use crate::cache::AudienceCache;
use crate::coherence::redis::RedisInvalidation;
use crate::coherence::{Event, Invalidation, LocalInvalidation};
use crate::error::ApiError;
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
use crate::{audit, cache, connection, routes, telemetry};

/// Everything handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Authenticator,
    /// Shared with the cache's background refreshes.
    pub upstream: Arc<UpstreamClient>,
    pub cache: AudienceCache,
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
            auth: Authenticator::new(&settings.auth, metrics.clone())?,
            upstream: Arc::new(UpstreamClient::new(
                &settings.upstream,
                budget,
                metrics.clone(),
            )?),
            cache: AudienceCache::new(&settings.cache, metrics.clone()),
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

/// A built, bound, not yet running gateway.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

/// The documented paths (as segments) with the `Allow` value of each, so that a request no
/// route took gets `405` on a known path and `404` elsewhere.
struct KnownPaths(Vec<(Vec<String>, String)>);

impl KnownPaths {
    fn new(spec: &utoipa::openapi::OpenApi) -> Self {
        let paths = crate::openapi::methods_by_path(spec)
            .into_iter()
            .map(|(path, methods)| {
                let segments = path.split('/').map(str::to_string).collect();
                (segments, methods.join(", "))
            })
            .collect();
        Self(paths)
    }

    fn allow(&self, path: &str) -> Option<&str> {
        let given: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == given.len()
                    && template.iter().zip(&given).all(|(t, g)| {
                        t == g || (t.starts_with('{') && t.ends_with('}') && !g.is_empty())
                    })
            })
            .map(|(_, allow)| allow.as_str())
    }
}

async fn unmatched(req: HttpRequest, known: web::Data<KnownPaths>) -> HttpResponse {
    match known.allow(req.path()) {
        Some(allow) => {
            let mut resp = ApiError::MethodNotAllowed.error_response();
            if let Ok(v) = header::HeaderValue::from_str(allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            resp
        }
        None => ApiError::RouteNotFound.error_response(),
    }
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default();
    for o in origins {
        cors = if o == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(o)
        };
    }
    cors.allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::CACHE_CONTROL,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            "etag",
            "cache-status",
            "cache-control",
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
            "location",
            "x-request-id",
            "idempotent-replayed",
            "www-authenticate",
        ])
        .max_age(600)
}

impl Application {
    /// Binds `server.host:server.port` and builds the server.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (server.host/server.port): {e}")
        })?;
        Self::build_with_listener(settings, listener)
    }

    /// Builds the server on an already bound listener.
    pub fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState::new(settings)?);
        let server = Self::server(state.clone(), listener)?;
        Ok(Self {
            port,
            server,
            state,
        })
    }

    fn server(state: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<Server> {
        let s = state.settings.clone();
        let spec = crate::openapi::spec();
        let known = web::Data::new(KnownPaths::new(&spec));
        let audited = web::Data::new(audit::Operations::new(&spec));
        let with_cors = s.server.cors_configured();
        let origins = s.server.cors_allowed_origins.clone();
        let factory_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(factory_state.clone())
                .into_utoipa_app()
                .configure(routes::configure)
                .configure(routes::health::configure)
                .into_app()
                .service(
                    SwaggerUi::new("/docs/{_:.*}")
                        .url("/openapi.json", spec.clone())
                        .config(
                            Config::new(["/openapi.json"])
                                .persist_authorization(true)
                                .try_it_out_enabled(true)
                                .display_operation_id(true),
                        ),
                )
                .route("/docs", web::get().to(docs_redirect))
                .app_data(known.clone())
                .app_data(audited.clone())
                .default_service(web::to(unmatched))
                // Inside the cache layer: a cached read never reaches it.
                .wrap(from_fn(audit::record))
                // Inside CORS, so cache hits carry its headers; outside routing.
                .wrap(cache::layer::HttpCache)
                .wrap(Condition::new(with_cors, cors(&origins)))
                .wrap(from_fn(telemetry::request_context))
                .wrap(from_fn(connection::bound))
        })
        .on_connect(connection::remember)
        .disable_signals()
        .shutdown_timeout(s.server.shutdown_grace.as_secs())
        .client_request_timeout(s.server.client_request_timeout)
        .client_disconnect_timeout(Duration::from_secs(1));
        if s.server.workers > 0 {
            server = server.workers(s.server.workers);
        }
        Ok(server.listen(listener)?.run())
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Starts background tasks (JWKS refresh) and serves until stopped. With `signals`,
    /// SIGTERM/SIGINT start a graceful shutdown: not ready first, then stop accepting and
    /// finish in-flight requests within `server.shutdown_grace_secs`. Once the server has
    /// stopped, the ledger writes its queue in what is left of that grace period (from the
    /// signal on; the whole period when stopped through the handle) and spools the rest.
    pub async fn run_until_stopped(self, signals: bool) -> std::io::Result<()> {
        spawn_jwks_refresh(&self.state);
        spawn_shared_state(&self.state);
        let grace = self.state.settings.server.shutdown_grace;
        let deadline = Arc::new(OnceLock::new());
        if signals {
            let handle = self.server.handle();
            let state = self.state.clone();
            let drain = state.settings.server.shutdown_drain;
            let deadline = deadline.clone();
            actix_rt::spawn(async move {
                wait_for_signal().await;
                let _ = deadline.set(Instant::now() + drain + grace);
                tracing::info!("shutdown signal received; not ready, draining");
                state.begin_shutdown();
                tokio::time::sleep(drain).await;
                handle.stop(true).await;
            });
        }
        let served = self.server.await;
        let left = deadline.get().map_or(grace, |d: &Instant| {
            d.saturating_duration_since(Instant::now())
        });
        self.state.ledger.shutdown(left).await;
        served
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
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
