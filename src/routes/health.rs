//! Liveness, readiness and metrics: no token needed.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::json;
use crate::error::ApiError;
use crate::AppState;

/// Registers the operational routes.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics);
}

/// Liveness answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok` while the process serves requests.
    pub status: &'static str,
}

/// Readiness answer, with the state of what the gateway depends on.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"status": "ready", "shuttingDown": false, "keys": "static", "upstream": {"circuit": "closed"}, "redis": "disabled",
    "ledger": {"backend": "sqlite", "state": "up", "pendingWrites": 0}}))]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Whether shutdown has begun.
    pub shutting_down: bool,
    /// `static`, `loaded` (JWKS) or `loading` (JWKS not fetched yet).
    pub keys: &'static str,
    /// Upstream health; reported, but it does not fail readiness.
    pub upstream: UpstreamHealth,
    /// `disabled`, `up` or `down`.
    pub redis: &'static str,
    /// The activation ledger; reported, but it does not fail readiness.
    pub ledger: LedgerHealth,
}

/// The activation ledger as the gateway sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"backend": "postgres", "state": "down", "pendingWrites": 3}))]
pub struct LedgerHealth {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// `starting` (migrations not applied yet), `up` or `down`.
    pub state: &'static str,
    /// Activations accepted by the vendor and waiting to be written, retried until written.
    pub pending_writes: usize,
}

/// Upstream health as the gateway sees it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"circuit": "closed"}))]
pub struct UpstreamHealth {
    /// Circuit breaker state: `closed`, `open` or `half_open`.
    pub circuit: &'static str,
}

/// Liveness probe
///
/// Answers 200 while the process is alive.
#[utoipa::path(operation_id = "getLiveness", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
#[get("/healthz")]
async fn healthz() -> Result<HttpResponse, ApiError> {
    json(StatusCode::OK, &Health { status: "ok" })
}

/// Readiness probe
///
/// 200 when settings are valid, keys are loaded (JWKS mode) and shutdown has not begun; 503
/// otherwise. Upstream and ledger trouble is reported in the body but does not fail
/// readiness, so an outage of either cannot take every replica out of the Service.
#[utoipa::path(operation_id = "getReadiness", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    ))]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let shutting_down = state.is_shutting_down();
    let keys = match state.auth.jwks() {
        None => "static",
        Some(j) if j.is_loaded() => "loaded",
        Some(_) => "loading",
    };
    let ready = !shutting_down && keys != "loading";
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        shutting_down,
        keys,
        upstream: UpstreamHealth {
            circuit: state.upstream.breaker_state().name(),
        },
        redis: state.redis_state(),
        ledger: LedgerHealth {
            backend: state.ledger.backend(),
            state: state.ledger.state(),
            pending_writes: state.ledger.pending(),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}

/// Prometheus metrics
///
/// Metrics in the OpenMetrics 1.0 text format.
#[utoipa::path(operation_id = "getMetrics", tag = "operations", security(()),
    responses((status = 200, description = "OpenMetrics text format", body = String, content_type = crate::metrics::CONTENT_TYPE,
        example = json!("# HELP audience_gateway_cache_lookups Audience cache lookups by result (hit, miss, stale).\n# TYPE audience_gateway_cache_lookups counter\naudience_gateway_cache_lookups_total{result=\"hit\"} 42\n# EOF\n"))))]
#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (entries, bytes) = state.cache.usage().await;
    state.metrics.cache_usage(entries, bytes);
    state.metrics.upstream_usage(
        state.upstream.breaker_state().name(),
        state.upstream.in_flight(),
    );
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}
