//! Activations: pushing an audience to an ad platform account, rate-limited per caller and
//! globally, made safe to retry with `Idempotency-Key`, and recorded in the ledger (once:
//! a replay writes nothing) before the caller gets its answer.

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpRequest, HttpResponse};

use super::{idempotency_key, idempotent, stored, AudienceId, IdempotencyKey};
use crate::auth::{Activate, Authorized, Caller};
use crate::domain::{Activation, NewActivation, PlatformAccountList};
use crate::error::ApiError;
use crate::ledger::{Entry, Origin};
use crate::limits::Decision;
use crate::routes::{set_header, JsonBody};
use crate::telemetry::{otel, CallContext, RequestContext};
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

/// The account's name from the platform-account list (through the cache); `None` when the
/// list cannot be had or does not hold the account: the name is informative only.
async fn account_name(state: &AppState, ctx: &CallContext, account_id: i64) -> Option<String> {
    let (list, _) = match state
        .cache
        .platform_accounts(&state.upstream, ctx, false)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "no platform account name for the ledger");
            return None;
        }
    };
    let list: PlatformAccountList = serde_json::from_slice(&list.body).ok()?;
    list.items.into_iter().find(|a| a.id == account_id)?.name
}

/// Activate an audience
///
/// Pushes the audience as a segment to an ad platform account. Activations are rate-limited
/// per caller and globally (see `RateLimit-Policy` and `RateLimit`); a refused activation
/// never reaches the upstream. Send an `Idempotency-Key` so a retry after a timeout returns
/// the original activation instead of creating a second one. Every accepted activation is
/// recorded in the gateway's activation history (`Location` reads it back).
#[utoipa::path(
    operation_id = "activateAudience",
    tag = "audiences",
    params(AudienceId, IdempotencyKey),
    request_body(content = NewActivation, description = "Where and when to activate"),
    responses(
        (status = 201, description = "Activated", body = Activation, headers(
            ("Location" = String, description = "The activation in the history, e.g. `/v1/audiences/1001/activations/7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1`"),
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
    let caller: &Caller = &auth;
    let key = idempotency_key(&req).ok().flatten();
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
                tracing::info!(
                    target: otel::TARGET,
                    decision = d.name(),
                    retry_after_ms = d.retry_after().map(|w| w.as_millis() as u64),
                    "rate limit decision"
                );
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
            let name = account_name(state_ref, &ctx.0, done.account_id).await;
            let origin = Origin {
                sub: &caller.sub,
                client_id: caller.client_id.as_deref(),
                request_id: &ctx.0.request_id,
                idempotency_key: key.as_deref(),
            };
            state_ref
                .ledger
                .record(Entry::accepted(&done, &activation, name, &origin))
                .await;
            let location = Entry::location(done.audience_id, &done.flow_id);
            stored(StatusCode::CREATED, Some(location), &done)
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
