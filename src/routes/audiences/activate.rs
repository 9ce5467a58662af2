//! Activations: pushing an audience to an ad platform account, rate-limited per caller and
//! globally, made safe to retry with `Idempotency-Key`.

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpRequest, HttpResponse};

use super::{idempotent, stored, AudienceId, IdempotencyKey};
use crate::auth::{Activate, Authorized};
use crate::domain::{Activation, NewActivation};
use crate::error::ApiError;
use crate::limits::Decision;
use crate::routes::{set_header, JsonBody};
use crate::telemetry::RequestContext;
use crate::AppState;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn rate_headers(resp: &mut HttpResponse, state: &AppState, decision: Option<&Decision>) {
    let policies = state.limiter.policies();
    set_header(resp, RATELIMIT_POLICY, &Decision::policy_header(&policies));
    if let Some(d) = decision {
        set_header(resp, RATELIMIT, &d.limit_header());
    }
}

/// Activate an audience
///
/// Pushes the audience as a segment to an ad platform account. Activations are rate-limited
/// per caller and globally (see `RateLimit-Policy` and `RateLimit`); a refused activation
/// never reaches the upstream. Send an `Idempotency-Key` so a retry after a timeout returns
/// the original activation instead of creating a second one.
#[utoipa::path(
    operation_id = "activateAudience",
    tag = "audiences",
    params(AudienceId, IdempotencyKey),
    request_body(content = NewActivation, description = "Where and when to activate"),
    responses(
        (status = 201, description = "Activated", body = Activation, headers(
            ("RateLimit-Policy" = String, description = "Quota policies, e.g. `\"per-caller\";q=10;w=60`"),
            ("RateLimit" = String, description = "Remaining quota and seconds to reset, e.g. `\"per-caller\";r=3;t=12`"),
            ("Idempotent-Replayed" = String, description = "`?1` when this is a replay"),
        )),
    ),
    security(("bearer" = ["audiences:activate"]))
)]
#[post("/audiences/{id}/activations")]
pub(super) async fn activate_audience(
    auth: Authorized<Activate>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
    body: JsonBody<NewActivation>,
) -> Result<HttpResponse, ApiError> {
    let id = id.get()?;
    let activation = body.value.validated()?;
    let principal = auth.principal().to_string();
    let mut decision = None;
    let slot = &mut decision;
    let state_ref = &state;
    let result = idempotent(
        &state,
        &auth,
        &req,
        "activateAudience",
        &body.raw,
        || async move {
            if state_ref.settings.rate_limit.enabled {
                let d = state_ref.limiter.check(&principal).await;
                let refused = match &d {
                    Decision::Admitted { .. } => None,
                    Decision::Limited { retry_after, .. } => Some(ApiError::RateLimited {
                        retry_after: *retry_after,
                    }),
                    Decision::Unavailable { retry_after } => {
                        return Err(ApiError::RateLimitUnavailable {
                            retry_after: *retry_after,
                        })
                    }
                };
                *slot = Some(d);
                if let Some(refused) = refused {
                    return Err(refused);
                }
            }
            let result = state_ref.upstream.activate(&ctx.0, id, &activation).await;
            state_ref.evict(id).await;
            let done: Activation = result?;
            // No `Location`: the gateway has no route that reads one activation back.
            stored(StatusCode::CREATED, None, &done)
        },
    )
    .await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    rate_headers(&mut resp, &state, decision.as_ref());
    Ok(resp)
}
