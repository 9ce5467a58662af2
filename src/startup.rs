//! The application builder: shared state, the HTTP server, background tasks and graceful
//! shutdown. The listener is bound first, so port 0 works and `port()` tells the real one.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpResponse, HttpServer};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::auth::Authenticator;
use crate::cache::AudienceCache;
use crate::coherence::{Invalidation, LocalInvalidation};
use crate::error::ApiError;
use crate::idempotency::{IdempotencyStore, LocalIdempotency};
use crate::limits::{ActivationLimiter, LocalLimiter};
use crate::metrics::Metrics;
use crate::settings::{ms, Settings};
use crate::upstream::UpstreamClient;
use crate::{routes, telemetry};

/// Everything handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Authenticator,
    pub upstream: UpstreamClient,
    pub cache: AudienceCache,
    pub limiter: Arc<dyn ActivationLimiter>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub invalidation: Arc<dyn Invalidation>,
    pub metrics: Arc<Metrics>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// Builds the state with in-process shared-state implementations.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let budget = ms(settings.server.request_budget_ms);
        Ok(Self {
            auth: Authenticator::new(&settings.auth, metrics.clone())?,
            upstream: UpstreamClient::new(&settings.upstream, budget, metrics.clone())?,
            cache: AudienceCache::new(&settings.cache, metrics.clone()),
            limiter: Arc::new(LocalLimiter::new(&settings.rate_limit, metrics.clone())),
            idempotency: Arc::new(LocalIdempotency::new(&settings.idempotency)),
            invalidation: Arc::new(LocalInvalidation),
            metrics,
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
        "disabled"
    }

    /// Drops an audience from this replica's cache and tells the others.
    pub async fn evict(&self, id: i64) {
        let identity = self.upstream.identity();
        self.cache.evict(&identity, id).await;
        self.invalidation.publish(&identity, id).await;
    }
}

/// A built, bound, not yet running gateway.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
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
                .default_service(web::to(route_not_found))
                .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
                .wrap(from_fn(telemetry::request_context))
        })
        .disable_signals()
        .shutdown_timeout(s.server.shutdown_grace_secs)
        .client_request_timeout(ms(s.server.client_request_timeout_ms))
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
    /// finish in-flight requests within `server.shutdown_grace_secs`.
    pub async fn run_until_stopped(self, signals: bool) -> std::io::Result<()> {
        spawn_jwks_refresh(&self.state);
        if signals {
            let handle = self.server.handle();
            let state = self.state.clone();
            let drain = ms(state.settings.server.shutdown_drain_ms);
            actix_rt::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown signal received; not ready, draining");
                state.begin_shutdown();
                tokio::time::sleep(drain).await;
                handle.stop(true).await;
            });
        }
        self.server.await
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

/// Fetches the JWKS now and then every `auth.jwks_refresh_secs`; a removed key empties the
/// verified-token cache. Holds only a weak reference, so it ends with the state.
fn spawn_jwks_refresh(state: &web::Data<AppState>) {
    if state.auth.jwks().is_none() {
        return;
    }
    let weak: Weak<AppState> = Arc::downgrade(&state.clone().into_inner());
    let every = Duration::from_secs(state.settings.auth.jwks_refresh_secs.max(1));
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
