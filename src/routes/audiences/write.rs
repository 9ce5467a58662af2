//! Create, update and delete an audience. Every write drops the audience from the cache
//! (here and, through coherence, on the other replicas).

use std::sync::Arc;

use actix_web::http::header::{self, Header, IfMatch};
use actix_web::http::StatusCode;
use actix_web::{delete, patch, post, web, HttpRequest, HttpResponse};

use super::{idempotent, AudienceId, IdempotencyKey, IfMatchHeader};
use crate::auth::{Authorized, Delete, Write};
use crate::cache::{Representation, View};
use crate::domain::{Audience, AudiencePatch, NewAudience};
use crate::error::ApiError;
use crate::idempotency::StoredResponse;
use crate::routes::{json_bytes, JsonBody};
use crate::telemetry::CallContext;
use crate::telemetry::RequestContext;
use crate::AppState;

/// Create an audience
///
/// Creates a CRM audience in a campaign and answers it with its `ETag`, so a conditional
/// update or delete can follow without a read. Send an `Idempotency-Key` to make retries
/// safe: a repeated request with the same key and body returns the original response
/// (marked with `Idempotent-Replayed: ?1`) without creating a second audience.
#[utoipa::path(
    operation_id = "createAudience",
    tag = "audiences",
    params(IdempotencyKey),
    request_body(content = NewAudience, description = "The audience to create"),
    responses(
        (status = 201, description = "Created", body = Audience, headers(
            ("Location" = String, description = "URL of the new audience"),
            ("ETag" = String, description = "Strong entity tag of the created audience, as `GET` answers it: send it in `If-Match` to update or delete it"),
            ("Idempotent-Replayed" = String, description = "`?1` when this is a replay of an earlier response"),
        )),
    ),
    security(("bearer" = ["audiences:write"]))
)]
#[post("/audiences")]
pub(super) async fn create_audience(
    auth: Authorized<Write>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    body: JsonBody<NewAudience>,
) -> Result<HttpResponse, ApiError> {
    let new = body.value.validated()?;
    idempotent(&state, &auth, &req, "createAudience", &body.raw, || async {
        let audience = state.upstream.create_audience(&ctx.0, &new).await?;
        // The body is the representation `GET` serves, so its tag is the one `If-Match`
        // compares: an update or delete can follow the create without a read.
        let rep = Representation::of(&audience)?;
        Ok(StoredResponse {
            status: StatusCode::CREATED.as_u16(),
            headers: vec![
                ("location".into(), format!("/v1/audiences/{}", audience.id)),
                ("etag".into(), rep.etag.to_string()),
            ],
            body: rep.body.clone(),
        })
    })
    .await
}

/// Reads the current audience from the upstream when a precondition or a missing name
/// needs it, and checks `If-Match` (RFC 9110: strong comparison; a value that is not a
/// list of entity tags matches nothing).
async fn current_if_needed(
    state: &AppState,
    req: &HttpRequest,
    ctx: &CallContext,
    id: i64,
    needed: bool,
) -> Result<Option<Arc<Representation>>, ApiError> {
    let has_if_match = req.headers().contains_key(header::IF_MATCH);
    if !has_if_match && !needed {
        return Ok(None);
    }
    let (current, _) = state
        .cache
        .read(&state.upstream, ctx, id, true, View::Audience)
        .await?;
    let holds = !has_if_match
        || match IfMatch::parse(req) {
            Ok(IfMatch::Any) => true,
            Ok(IfMatch::Items(tags)) => tags.iter().any(|t| t.strong_eq(&current.etag)),
            Err(_) => false,
        };
    if !holds {
        return Err(ApiError::PreconditionFailed);
    }
    Ok(Some(current))
}

/// Update an audience
///
/// Changes name and/or description. An absent name keeps the current one. Send `If-Match`
/// with the `ETag` you read (or that the create or the last update answered) to fail with
/// 412 if the audience changed meanwhile; the answer carries the new `ETag`.
#[utoipa::path(
    operation_id = "updateAudience",
    tag = "audiences",
    params(AudienceId, IfMatchHeader),
    request_body(content = AudiencePatch, description = "Fields to change"),
    responses(
        (status = 200, description = "The updated audience", body = Audience, headers(
            ("ETag" = String, description = "Strong entity tag of the new version"),
        )),
    ),
    security(("bearer" = ["audiences:write"]))
)]
#[patch("/audiences/{id}")]
pub(super) async fn update_audience(
    _auth: Authorized<Write>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
    body: JsonBody<AudiencePatch>,
) -> Result<HttpResponse, ApiError> {
    let id = id.get()?;
    let patch = body.value.validated()?;
    // The vendor's update replaces both fields: fill what the caller left out from the
    // current audience.
    let partial = patch.name.is_none() || patch.description.is_none();
    let current = current_if_needed(&state, &req, &ctx.0, id, partial).await?;
    let patch = match &current {
        Some(c) if partial => {
            let now: Audience = serde_json::from_slice(&c.body).map_err(|_| ApiError::Internal)?;
            AudiencePatch {
                name: patch.name.or(Some(now.name)),
                description: patch.description.or(now.description),
            }
        }
        _ => patch,
    };
    let name = patch.name.clone().ok_or(ApiError::Internal)?;
    let updated = state
        .upstream
        .update_audience(&ctx.0, id, &name, &patch)
        .await;
    state.evict(id).await;
    let updated = updated?;
    // Re-read so the body and ETag match what GET returns (and the cache is warm again).
    match state
        .cache
        .read(&state.upstream, &ctx.0, id, true, View::Audience)
        .await
    {
        Ok((rep, _)) => {
            let mut resp = json_bytes(StatusCode::OK, rep.body.clone());
            resp.headers_mut()
                .insert(header::ETAG, rep.etag_header.clone());
            Ok(resp)
        }
        // The update happened: answer with the audience the vendor returned, if it returned
        // one; else with the re-read's error (repeating a PATCH is harmless).
        Err(e) => match updated {
            Some(audience) => {
                tracing::warn!(error = %e, "re-read after update failed; answering with the update result");
                let rep = Representation::of(&audience)?;
                let mut resp = json_bytes(StatusCode::OK, rep.body.clone());
                resp.headers_mut()
                    .insert(header::ETAG, rep.etag_header.clone());
                Ok(resp)
            }
            None => Err(e),
        },
    }
}

/// Delete an audience
///
/// Deletes the audience and all connected data. Send `If-Match` to delete only the version
/// you read. Its activation history is kept, marked with the time of deletion.
#[utoipa::path(
    operation_id = "deleteAudience",
    tag = "audiences",
    params(AudienceId, IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
    ),
    security(("bearer" = ["audiences:delete"]))
)]
#[delete("/audiences/{id}")]
pub(super) async fn delete_audience(
    _auth: Authorized<Delete>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.get()?;
    current_if_needed(&state, &req, &ctx.0, id, false).await?;
    let result = state.upstream.delete_audience(&ctx.0, id).await;
    state.evict(id).await;
    result?;
    state.ledger.mark_deleted(id).await;
    Ok(HttpResponse::NoContent().finish())
}
