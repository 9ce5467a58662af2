//! The one error type of the public API and its RFC 9457 `application/problem+json` body.
//!
//! Every error kind maps to exactly one status and stable code in [`ApiError::table`], matched
//! without a wildcard so that adding a kind forces a decision. The body is written once, when
//! the error becomes a response, with the id of the request being served.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every way a request can fail, as callers see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    InvalidBody {
        detail: String,
        field: Option<String>,
    },
    #[error("{detail}")]
    InvalidPath { field: String, detail: String },
    #[error("{field}: {detail}")]
    InvalidHeader { field: String, detail: String },
    #[error("{field}: {detail}")]
    InvalidQuery { field: String, detail: String },
    #[error("cursor: not a cursor this API returned")]
    InvalidCursor,
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("the request body did not arrive within {} ms", .limit.as_millis())]
    BodyTimeout { limit: Duration },
    #[error(
        "the request head is not HTTP/1.1 the server can read (request line or a header field)"
    )]
    MalformedRequest,
    #[error(
        "the request head has more header fields (96) or bytes (128 KiB) than the server reads"
    )]
    HeadTooLarge,
    #[error("the request head did not arrive within {} ms", .limit.as_millis())]
    HeadTimeout { limit: Duration },
    #[error("{detail}")]
    Unauthorized { detail: String },
    #[error("this operation needs the scope {scope}")]
    Forbidden { scope: &'static str },
    #[error("signing keys cannot be obtained right now")]
    KeysUnavailable,
    #[error("{what} was not found")]
    NotFound { what: String },
    #[error("no route matches this path")]
    RouteNotFound,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("the audience changed since it was read (ETag mismatch)")]
    PreconditionFailed,
    #[error("the activation rate limit is exhausted")]
    RateLimited { retry_after: Duration },
    #[error("activation rate limits cannot be checked right now")]
    RateLimitUnavailable { retry_after: Duration },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInFlight,
    #[error("the Digital Audience API refused the request: {message}")]
    UpstreamRejected {
        message: String,
        field: Option<String>,
    },
    #[error("the Digital Audience API failed")]
    UpstreamFailure,
    #[error("the Digital Audience API answered, but its answer could not be read; the change may have been made")]
    UpstreamResponseUnreadable,
    #[error("the Digital Audience API sent data the gateway cannot read: {part}")]
    UpstreamDataUnreadable { part: String },
    #[error("the Digital Audience API did not answer in time")]
    UpstreamTimeout,
    #[error("the Digital Audience API is unavailable")]
    UpstreamUnavailable { retry_after: Option<Duration> },
    #[error("the activation history cannot be read right now")]
    LedgerUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The single table: status, stable code and title of each kind.
    pub fn table(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            InvalidBody { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "Invalid request body",
            ),
            InvalidPath { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "Invalid path parameter",
            ),
            InvalidHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header", "Invalid header"),
            InvalidQuery { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "Invalid query parameter",
            ),
            InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor", "Invalid cursor"),
            Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request header fields too large",
            ),
            BodyTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "Request body timeout",
            ),
            MalformedRequest => (
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "Malformed request",
            ),
            HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
                "Request head too large",
            ),
            HeadTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "head_timeout",
                "Request head timeout",
            ),
            Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "invalid_token", "Unauthorized"),
            Forbidden { .. } => (StatusCode::FORBIDDEN, "insufficient_scope", "Forbidden"),
            KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_keys_unavailable",
                "Authentication keys unavailable",
            ),
            NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found", "Not found"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "Precondition failed",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
            ),
            RateLimitUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                "Service unavailable",
            ),
            IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            IdempotencyInFlight => (
                StatusCode::CONFLICT,
                "idempotency_in_flight",
                "Request in progress",
            ),
            UpstreamRejected { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "upstream_rejected",
                "Rejected by the Digital Audience API",
            ),
            UpstreamFailure => (StatusCode::BAD_GATEWAY, "upstream_error", "Bad gateway"),
            UpstreamResponseUnreadable => (
                StatusCode::BAD_GATEWAY,
                "upstream_response_unreadable",
                "Bad gateway",
            ),
            UpstreamDataUnreadable { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_data_unreadable",
                "Bad gateway",
            ),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "Gateway timeout",
            ),
            UpstreamUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "Service unavailable",
            ),
            LedgerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ledger_unavailable",
                "Service unavailable",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// Whether the failed request was a write that may have reached the vendor and been
    /// carried out: its answer could not be read, or did not come in time. Such an outcome
    /// is kept for `Idempotency-Key` retries instead of running the write again.
    pub fn may_have_written(&self) -> bool {
        matches!(
            self,
            ApiError::UpstreamResponseUnreadable | ApiError::UpstreamTimeout
        )
    }

    /// Shorthand for a validation error on one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The problem body for this error, with the id of the request being served.
    pub fn problem(&self) -> Problem {
        let (status, code, title) = self.table();
        let field = match self {
            ApiError::Validation { field, .. }
            | ApiError::InvalidPath { field, .. }
            | ApiError::InvalidHeader { field, .. }
            | ApiError::InvalidQuery { field, .. } => Some(field.clone()),
            ApiError::InvalidCursor => Some("cursor".into()),
            ApiError::InvalidBody { field, .. } | ApiError::UpstreamRejected { field, .. } => {
                field.clone()
            }
            _ => None,
        };
        Problem {
            problem_type: format!("urn:audience-gateway:problem:{code}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: code.to_string(),
            request_id: crate::scope::current_request_id(),
            field,
        }
    }
}

/// RFC 9457 problem details, with our stable `code` and the request id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "type": "urn:audience-gateway:problem:validation_failed",
    "title": "Validation failed",
    "status": 422,
    "detail": "name: must not be blank",
    "code": "validation_failed",
    "requestId": "3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a",
    "field": "name"
}))]
pub struct Problem {
    /// A URI identifying the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// Stable machine-readable error code.
    pub code: String,
    /// The request id, as in the `X-Request-Id` response header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// Serializes the body; a `Problem` always serializes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.table().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, _, _) = self.table();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        }
        let problem = self.problem();
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        match self {
            ApiError::Unauthorized { detail } => {
                let v = format!(
                    "Bearer realm=\"audience-gateway\", error=\"invalid_token\", error_description=\"{}\"",
                    detail.replace('"', "'")
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    resp.insert_header((header::WWW_AUTHENTICATE, v));
                }
            }
            ApiError::Forbidden { scope } => {
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    format!(
                        "Bearer realm=\"audience-gateway\", error=\"insufficient_scope\", scope=\"{scope}\""
                    ),
                ));
            }
            ApiError::RateLimited { retry_after }
            | ApiError::RateLimitUnavailable { retry_after } => {
                resp.insert_header((header::RETRY_AFTER, ceil_secs(*retry_after).to_string()));
            }
            ApiError::UpstreamUnavailable {
                retry_after: Some(d),
            } => {
                resp.insert_header((header::RETRY_AFTER, ceil_secs(*d).to_string()));
            }
            // The rest of the body may still be on its way: the connection cannot be reused.
            ApiError::BodyTimeout { .. } => {
                resp.force_close();
            }
            _ => {}
        }
        let mut resp = resp.body(problem.to_bytes());
        resp.extensions_mut().insert(problem);
        resp
    }
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` carries.
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_status_code_pair() {
        let kinds = [
            ApiError::InvalidBody {
                detail: "x".into(),
                field: None,
            },
            ApiError::field("name", "must not be blank"),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::Unauthorized { detail: "x".into() },
            ApiError::Forbidden {
                scope: "audiences:read",
            },
            ApiError::KeysUnavailable,
            ApiError::UpstreamFailure,
            ApiError::UpstreamTimeout,
            ApiError::UpstreamUnavailable { retry_after: None },
        ];
        let statuses: Vec<u16> = kinds.iter().map(|k| k.table().0.as_u16()).collect();
        assert_eq!(statuses, [400, 422, 415, 413, 401, 403, 503, 502, 504, 503]);
    }

    #[test]
    fn problem_names_the_field() {
        let p = ApiError::field("campaignId", "must be positive").problem();
        assert_eq!(p.field.as_deref(), Some("campaignId"));
        assert_eq!(p.code, "validation_failed");
        assert_eq!(p.detail, "campaignId: must be positive");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }
}
