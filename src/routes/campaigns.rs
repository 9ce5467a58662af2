//! `/v1/campaigns`.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};

use super::{json, set_header, JsonBody};
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
        (status = 201, description = "Created", body = Campaign, headers(
            ("Location" = String, description = "URL of the new campaign"),
        )),
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
    let mut resp = json(StatusCode::CREATED, &campaign)?;
    set_header(
        &mut resp,
        header::LOCATION,
        &format!("/v1/campaigns/{}", campaign.id),
    );
    Ok(resp)
}
