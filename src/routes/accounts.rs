//! `/v1/platform-accounts`.

use actix_web::{get, web, HttpRequest, HttpResponse};

use crate::auth::{Authorized, Read};
use crate::cache::layer::{forces_refresh, respond};
use crate::domain::PlatformAccountList;
use crate::error::ApiError;
use crate::routes::ReadHeaders;
use crate::telemetry::RequestContext;
use crate::AppState;

/// Registers the platform-account routes.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_platform_accounts);
}

/// List platform accounts
///
/// The ad platform accounts audiences can be activated on. Platform access tokens are never
/// included. Cached by the gateway with the rules of the audience reads (see "Get an
/// audience"): revalidate with `If-None-Match` for a `304`, send
/// `Cache-Control: upstream-refresh` to force a read from the Digital Audience API; when the
/// upstream fails, a recently expired copy is served and marked stale in `Cache-Status`.
#[utoipa::path(
    operation_id = "listPlatformAccounts",
    tag = "platform-accounts",
    params(ReadHeaders),
    responses(
        (status = 200, description = "The platform accounts", body = PlatformAccountList, headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, no-cache`: revalidate with the gateway before reusing a copy"),
            ("Vary" = String, description = "`Authorization` (and `Origin` where CORS is configured)"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit (an expired copy with `detail=stale-while-revalidate`), miss (fwd=uri-miss), refreshed (fwd=request) or stale (fwd=stale)"),
        )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is current", headers(
            ("ETag" = String, description = "Strong entity tag of this representation"),
            ("Cache-Control" = String, description = "`private, no-cache`: revalidate with the gateway before reusing a copy"),
            ("Vary" = String, description = "`Authorization` (and `Origin` where CORS is configured)"),
            ("Cache-Status" = String, description = "RFC 9211 cache status: hit (an expired copy with `detail=stale-while-revalidate`), miss (fwd=uri-miss), refreshed (fwd=request) or stale (fwd=stale)"),
        )),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/platform-accounts")]
async fn list_platform_accounts(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let (rep, outcome) = state
        .cache
        .platform_accounts(&state.upstream, &ctx.0, forces_refresh(&req))
        .await?;
    Ok(respond(&state.cache, &req, &rep, outcome))
}
