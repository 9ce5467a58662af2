//! The cached reads: an audience, its insights, its CRM uploads. Fresh hits and 304s are
//! answered by the cache layer before routing; these handlers answer the rest (misses,
//! refreshes, errors) through the cache, which they fill, with the layer's [`respond`].

use actix_web::{get, web, HttpRequest, HttpResponse};

use super::AudienceId;
use crate::auth::{Authorized, Read};
use crate::cache::layer::{forces_refresh, respond};
use crate::cache::View;
use crate::domain::{Audience, Insights, Uploads};
use crate::error::ApiError;
use crate::routes::ReadHeaders;
use crate::telemetry::RequestContext;
use crate::AppState;

/// Reads `view` of audience `id` through the cache.
async fn read(
    state: &AppState,
    req: &HttpRequest,
    ctx: &RequestContext,
    id: &AudienceId,
    view: View,
) -> Result<HttpResponse, ApiError> {
    let id = id.get()?;
    let (rep, outcome) = state
        .cache
        .read(&state.upstream, &ctx.0, id, forces_refresh(req), view)
        .await?;
    Ok(respond(&state.cache, req, &rep, outcome))
}

/// Get an audience
///
/// Served from the gateway's cache while fresh; every write through the gateway drops the
/// cached copy. Answers carry `Cache-Control: private, no-cache` and `Vary: Authorization`,
/// so a browser revalidates each reuse with `If-None-Match`, answered `304 Not Modified`
/// from the gateway's cache after the token is checked. `Cache-Control: no-cache` or
/// `max-age=0` (and `Pragma: no-cache`) are such revalidations and served from the gateway's
/// cache too; send `Cache-Control: upstream-refresh` to force a read from the Digital
/// Audience API (concurrent ones share one call). When the upstream fails, a recently
/// expired copy is served and marked stale in `Cache-Status`. Errors carry
/// `Cache-Control: no-store`.
#[utoipa::path(
    operation_id = "getAudience",
    tag = "audiences",
    params(AudienceId, ReadHeaders),
    responses(
        (status = 200, description = "The audience", body = Audience, headers(
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
#[get("/audiences/{id}")]
pub(super) async fn get_audience(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
) -> Result<HttpResponse, ApiError> {
    read(&state, &req, &ctx, &id, View::Audience).await
}

/// Get audience insights
///
/// Insights state, size, and per identifier type (EMAIL, PHONE, ...) the counts and match
/// rates of the newest CRM upload. Cached with the audience.
#[utoipa::path(
    operation_id = "getAudienceInsights",
    tag = "audiences",
    params(AudienceId, ReadHeaders),
    responses(
        (status = 200, description = "Insights of the audience", body = Insights, headers(
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
#[get("/audiences/{id}/insights")]
pub(super) async fn get_insights(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
) -> Result<HttpResponse, ApiError> {
    read(&state, &req, &ctx, &id, View::Insights).await
}

/// List CRM uploads
///
/// The audience's CRM upload events, newest first, with per identifier type counts and match
/// rates. Cached with the audience.
#[utoipa::path(
    operation_id = "listAudienceUploads",
    tag = "audiences",
    params(AudienceId, ReadHeaders),
    responses(
        (status = 200, description = "Upload events, newest first", body = Uploads, headers(
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
#[get("/audiences/{id}/uploads")]
pub(super) async fn get_uploads(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
) -> Result<HttpResponse, ApiError> {
    read(&state, &req, &ctx, &id, View::Uploads).await
}
