//! `DELETE /v1/audiences/{id}/cache`: an operator drops the gateway's cached copies of an
//! audience and of the platform accounts on every replica (through coherence), for when they
//! were changed in the vendor's own UI. No vendor call; audited like every write.

use actix_web::{delete, web, HttpResponse};

use super::AudienceId;
use crate::auth::{Authorized, Purge};
use crate::error::ApiError;
use crate::AppState;

/// Purge an audience from the gateway's cache
///
/// Drops the cached copies of the audience (with its insights and uploads) and of the platform
/// accounts, on every replica, so the next reads come from the Digital Audience API: for an
/// audience or account changed in the vendor's own UI. The audience need not exist; nothing
/// is asked of the vendor. Needs the operator scope `cache:purge`.
#[utoipa::path(
    operation_id = "purgeAudienceCache",
    tag = "audiences",
    params(AudienceId),
    responses(
        (status = 204, description = "Dropped from the cache of every replica"),
    ),
    security(("bearer" = ["cache:purge"]))
)]
#[delete("/audiences/{id}/cache")]
pub(super) async fn purge_audience_cache(
    _auth: Authorized<Purge>,
    state: web::Data<AppState>,
    id: web::Path<AudienceId>,
) -> Result<HttpResponse, ApiError> {
    state.purge(id.get()?).await;
    Ok(HttpResponse::NoContent().finish())
}
