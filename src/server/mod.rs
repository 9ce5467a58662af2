//! The HTTP server: the layers every request passes, the routes, and the connection
//! settings.
//!
//! From the outside in, each layer has one job and takes only the `web::Data` it needs:
//!
//! 1. [`connection::layer`]: tells the connection's watchdog when a response starts (the
//!    bound on clients that do not take their answer);
//! 2. [`telemetry::context::layer`]: request id, the sampling decision and server span,
//!    the task-local scope every log line of the request carries;
//! 3. [`telemetry::access::layer`]: the access line and the HTTP metrics;
//! 4. [`head::layer`]: the limit on header bytes;
//! 5. CORS ([`cors::layer`]), when origins are configured;
//! 6. the cache layer ([`cache::layer::HttpCache`]), which answers fresh audience reads;
//! 7. the audit trail of writes ([`audit::record`]);
//! 8. routing: the API, health and metrics, the OpenAPI document and Swagger UI, and the
//!    `404`/`405` fallback.

pub mod connection;
pub mod cors;
pub mod fallback;
pub mod head;

use std::net::TcpListener;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::{from_fn, Condition};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::routes::BodyLimits;
use crate::telemetry::otel::HeadSampler;
use crate::{audit, cache, routes, telemetry, AppState};
use fallback::KnownPaths;
use head::HeadLimits;

/// The server for `state` on `listener`, not yet running: actix-server's workers, each
/// connection a [`connection::Stream`] served by actix-http's HTTP/1 service around the
/// application.
pub fn build(state: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<Server> {
    let s = state.settings.clone();
    let spec = crate::openapi::spec();
    let known = web::Data::new(KnownPaths::new(&spec));
    let audited = web::Data::new(audit::Operations::new(&spec));
    let sampler = web::Data::new(HeadSampler::new(&s.otel));
    let head_limits = web::Data::new(HeadLimits {
        max_header_bytes: s.server.max_header_bytes,
    });
    let body_limits = web::Data::new(BodyLimits {
        max_bytes: s.server.max_body_bytes,
        within: s.server.client_body_timeout,
    });
    let auth = web::Data::from(state.auth.clone());
    let audiences = web::Data::from(state.cache.clone());
    let upstream = web::Data::from(state.upstream.clone());
    let metrics = web::Data::from(state.metrics.clone());
    let with_cors = s.server.cors_configured();
    let origins = s.server.cors_allowed_origins.clone();
    let within = s.server.client_response_timeout;
    let app = move || {
        App::new()
            .app_data(state.clone())
            .app_data(auth.clone())
            .app_data(audiences.clone())
            .app_data(upstream.clone())
            .app_data(metrics.clone())
            .app_data(body_limits.clone())
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
            .route("/docs", web::get().to(fallback::docs_redirect))
            .app_data(known.clone())
            .app_data(audited.clone())
            .app_data(head_limits.clone())
            .app_data(sampler.clone())
            .default_service(web::to(fallback::unmatched))
            // `wrap` adds a layer around the ones before it: the last is the outermost.
            .wrap(from_fn(audit::record))
            .wrap(cache::layer::HttpCache)
            .wrap(Condition::new(with_cors, cors::layer(&origins)))
            .wrap(from_fn(head::layer))
            .wrap(from_fn(telemetry::access::layer))
            .wrap(from_fn(telemetry::context::layer))
            .wrap(from_fn(connection::layer))
    };
    let addr = listener.local_addr()?;
    let head_timeout = s.server.client_request_timeout;
    let mut server = actix_server::Server::build()
        .disable_signals()
        .shutdown_timeout(s.server.shutdown_grace.as_secs());
    if s.server.workers > 0 {
        server = server.workers(s.server.workers);
    }
    let graceful = server.graceful_shutdown_signal();
    let server = server.listen("audience-gateway", listener, move || {
        let graceful = graceful.clone();
        let http = HttpService::build()
            .graceful_shutdown_signal(move || {
                let signal = graceful.clone();
                async move { signal.notified().await }
            })
            .client_request_timeout(head_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .local_addr(addr)
            .on_connect_ext(move |conn: &connection::Stream, ext: &mut _| {
                connection::remember(conn, ext, within)
            })
            // The application's host and address (`AppConfig`) serve URL generation and
            // connection info, which the gateway does not use: the defaults do.
            .finish(map_config(
                app().into_factory().map_err(|e| e.error_response()),
                |_| AppConfig::default(),
            ));
        fn_service(move |io: TcpStream| {
            let conn = connection::Stream::new(io, head_timeout);
            let peer = conn.peer_addr();
            async move { Ok::<_, DispatchError>((conn, Protocol::Http1, peer)) }
        })
        .and_then(http)
    })?;
    Ok(server.run())
}
