//! `/v1/campaigns`.

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};

use super::{json, JsonBody};
use crate::auth::{Authorized, Write};
use crate::domain::{Campaign, NewCampaign};
use crate::error::ApiError;
use crate::telemetry::RequestContext;
use crate::AppState;

/// Registers the campaign routes.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_campaign);
}

/// Create a campaign
///
/// Creates a campaign that audiences can then be created in.
#[utoipa::path(
    operation_id = "createCampaign",
    tag = "campaigns",
    request_body(content = NewCampaign, description = "The campaign to create"),
    responses(
        (status = 201, description = "Created", body = Campaign),
    ),
    security(("bearer" = ["audiences:write"]))
)]
#[post("/campaigns")]
async fn create_campaign(
    _auth: Authorized<Write>,
    state: web::Data<AppState>,
    ctx: RequestContext,
    body: JsonBody<NewCampaign>,
) -> Result<HttpResponse, ApiError> {
    let new = body.value.validated()?;
    let campaign = state.upstream.create_campaign(&ctx.0, &new.name).await?;
    // No `Location`: the gateway has no route that reads a campaign back.
    json(StatusCode::CREATED, &campaign)
}
