//! The activation history of an audience, read from the ledger: a page at a time, newest
//! first, or one activation by its flow id (where an activation's `Location` points).
//! Never cached: the history grows with every activation, on any replica. An audience with
//! no record at all has a history only while the vendor knows it (else `404`).

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AudienceId;
use crate::auth::{Authorized, Read};
use crate::cache::View;
use crate::domain::{check_date, check_id, ActivationHistory, ActivationRecord};
use crate::error::ApiError;
use crate::ledger::{Cursor, Query, DEFAULT_LIMIT, MAX_LIMIT};
use crate::routes::{json, path_id};
use crate::telemetry::RequestContext;
use crate::AppState;

/// The query of a history page, as sent: [`HistoryQuery::query`] checks it, so each
/// malformed parameter is answered with a coded problem naming it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// Activations per page, 1 to 100 (default 20)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// The `nextCursor` of the previous page
    #[param(
        example = "djE6MTc2NTg3NzQwMDEyMzQ1Njo3ZDlmOGI1Mi0xYzFlLTRhNDMtOWE1My01OGYyYzJkN2EwYjE"
    )]
    cursor: Option<String>,
    /// Only activations made at or after this time (RFC 3339)
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-01T00:00:00Z")]
    since: Option<String>,
    /// Only activations made before this time (RFC 3339)
    #[param(value_type = Option<String>, format = DateTime, example = "2026-04-01T00:00:00Z")]
    until: Option<String>,
    /// Only activations on this platform account
    #[param(value_type = Option<i64>, minimum = 1, maximum = 9_223_372_036_854_775_807_i64, example = 501)]
    account_id: Option<String>,
}

fn malformed(field: &str, detail: &str) -> ApiError {
    ApiError::InvalidQuery {
        field: field.into(),
        detail: detail.into(),
    }
}

impl HistoryQuery {
    /// Reads the query string; parameters it does not name are ignored.
    fn from_request(req: &HttpRequest) -> Result<Self, ApiError> {
        web::Query::<Self>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| malformed("query", &format!("the query string cannot be read: {e}")))
    }

    /// The checked ledger query for audience `audience_id`.
    fn query(&self, audience_id: i64) -> Result<Query, ApiError> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(raw) => {
                let n: i64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| malformed("limit", "must be an integer"))?;
                u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}"))
                    })?
            }
        };
        let after = self
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c).ok_or(ApiError::InvalidCursor))
            .transpose()?;
        let since = self
            .since
            .as_deref()
            .map(|v| check_date("since", v).map(|d| d.timestamp_micros()))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|v| check_date("until", v).map(|d| d.timestamp_micros()))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if until <= since {
                return Err(ApiError::field("until", "must be after since"));
            }
        }
        let account_id = self
            .account_id
            .as_deref()
            .map(|raw| {
                let id: i64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| malformed("accountId", "must be an integer"))?;
                check_id("accountId", id)
            })
            .transpose()?;
        Ok(Query {
            audience_id,
            limit,
            after,
            since,
            until,
            account_id,
        })
    }
}

/// List an audience's activations
///
/// The activations made through the gateway, newest first, a page at a time: pass the
/// `nextCursor` of a page as `cursor` to get the next one, with the same filters. The
/// history is kept when the audience is deleted (`audienceDeletedAt`), so a deleted audience
/// with activations still answers them. An audience without any activation answers an empty
/// page while the Digital Audience API knows it, and `404` when it does not (never created,
/// or deleted before any activation).
#[utoipa::path(
    operation_id = "listAudienceActivations",
    tag = "audiences",
    params(AudienceId, HistoryQuery),
    responses(
        (status = 200, description = "One page of the history, newest first", body = ActivationHistory),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/audiences/{id}/activations")]
pub(super) async fn list_activations(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: RequestContext,
    id: web::Path<AudienceId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.get()?;
    let query = HistoryQuery::from_request(&req)?.query(id)?;
    let (rows, next) = state.ledger.list(query).await?;
    if rows.is_empty() && !has_records(&state, id).await? {
        // No history at all: the audience must exist at the vendor (a 404 problem if not).
        state
            .cache
            .read(&state.upstream, &ctx.0, id, false, View::Audience)
            .await?;
    }
    let page = ActivationHistory {
        items: rows.into_iter().map(ActivationRecord::from).collect(),
        next_cursor: next.map(|c| c.encode()),
    };
    json(StatusCode::OK, &page)
}

/// Whether the ledger holds any activation of audience `id`, whatever the filters.
async fn has_records(state: &AppState, id: i64) -> Result<bool, ApiError> {
    let any = Query {
        audience_id: id,
        limit: 1,
        after: None,
        since: None,
        until: None,
        account_id: None,
    };
    Ok(!state.ledger.list(any).await?.0.is_empty())
}

/// The path of one activation.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[serde(rename_all = "camelCase")]
pub struct ActivationPath {
    /// Audience id
    #[param(value_type = i64, minimum = 1, maximum = 9_223_372_036_854_775_807_i64, example = 1001)]
    id: String,
    /// The activation's flow id, as its `201` answer gave it
    #[param(example = "7d9f8b52-1c1e-4a43-9a53-58f2c2d7a0b1")]
    flow_id: String,
}

/// Get one activation
///
/// One activation made through the gateway, by the `flowId` of its answer (the activation's
/// `Location` points here).
#[utoipa::path(
    operation_id = "getAudienceActivation",
    tag = "audiences",
    params(ActivationPath),
    responses(
        (status = 200, description = "The activation", body = ActivationRecord),
    ),
    security(("bearer" = ["audiences:read"]))
)]
#[get("/audiences/{id}/activations/{flowId}")]
pub(super) async fn get_activation(
    _auth: Authorized<Read>,
    state: web::Data<AppState>,
    path: web::Path<ActivationPath>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path.id)?;
    let found = state.ledger.get(id, &path.flow_id).await?;
    let Some(entry) = found else {
        return Err(ApiError::NotFound {
            what: format!("activation {} of audience {id}", path.flow_id),
        });
    };
    json(StatusCode::OK, &ActivationRecord::from(entry))
}
