//! `/v1/platform-accounts`.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};

use super::json_bytes;
use crate::auth::{Authorized, Read};
use crate::domain::PlatformAccountList;
use crate::error::ApiError;
use crate::telemetry::RequestContext;
use crate::AppState;

/// Registers the platform-account routes.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_platform_accounts);
}

/// List platform accounts
///
/// The ad platform accounts audiences can be activated on. Platform access tokens are never
/// included. Cached by the gateway; when the upstream fails, a recently expired copy is
/// served and marked stale in `Cache-Status`.
#[utoipa::path(
    operation_id = "listPlatformAccounts",
    tag = "platform-accounts",
    responses(
        (status = 200, description = "The platform accounts", body = PlatformAccountList, headers(
            ("Cache-Control" = String, description = "`private, max-age=<seconds of freshness left>`"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit, miss (fwd=uri-miss) or stale (fwd=stale)"),
        )),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/platform-accounts")]
async fn list_platform_accounts(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let (body, outcome) = state
        .cache
        .platform_accounts(&state.upstream, &ctx.0)
        .await?;
    let mut resp = json_bytes(StatusCode::OK, body);
    state.cache.set_headers(outcome, resp.headers_mut());
    Ok(resp)
}
