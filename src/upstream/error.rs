//! Why an upstream call failed, and which caller-facing problem each reason is.

use std::time::Duration;

use super::wire::Refusal;
use crate::error::ApiError;

/// Why an upstream call failed. `Display` never contains secrets or vendor bodies, only
/// statuses, our own words and the sanitised message of a refusal.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream did not answer within the deadline")]
    Timeout,
    #[error("upstream unavailable: {0}")]
    Unavailable(String, Option<Duration>),
    /// The vendor failed: a 5xx, a transport error, or an envelope reporting a failure that
    /// is not the caller's.
    #[error("upstream failed: {0}")]
    Failure(String),
    /// A 2xx answer that cannot be read. For a write, the write may have happened.
    #[error("upstream answer unreadable: {0}")]
    Unreadable(String),
    #[error("not found upstream: {0}")]
    NotFound(String),
    /// The vendor refused the request (HTTP 400/404/409/422, or an envelope 4xx).
    #[error("upstream rejected the request: {}", .0.message)]
    Rejected(Refusal),
    #[error("upstream login failed: {0}")]
    LoginFailed(String),
}

impl UpstreamError {
    /// Whether a cached copy may stand in for the answer (stale-if-error).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout
                | UpstreamError::Unavailable(..)
                | UpstreamError::Failure(_)
                | UpstreamError::Unreadable(_)
                | UpstreamError::LoginFailed(_)
        )
    }

    /// Whether it counts against the circuit breaker and may be retried: the vendor is down
    /// or failing. A refusal, a missing entity or an answer we cannot read says the vendor
    /// is up.
    pub(super) fn is_outage(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout | UpstreamError::Unavailable(..) | UpstreamError::Failure(_)
        )
    }

    /// The outcome label of logs, spans and metrics.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Unavailable(..) => "unavailable",
            UpstreamError::Failure(_) => "error",
            UpstreamError::Unreadable(_) => "unreadable",
            UpstreamError::NotFound(_) => "not_found",
            UpstreamError::Rejected(_) => "rejected",
            UpstreamError::LoginFailed(_) => "login_failed",
        }
    }

    /// For calls that name an audience: a "not found" names it.
    pub(super) fn not_found_as(self, what: String) -> Self {
        match self {
            UpstreamError::NotFound(_) => UpstreamError::NotFound(what),
            other => other,
        }
    }

    /// For calls that name no audience (creates), "not found" is about something the
    /// caller sent (a campaign, say): a refusal, not a missing resource of ours.
    pub(super) fn refused_if_not_found(self) -> Self {
        match self {
            UpstreamError::NotFound(message) => UpstreamError::Rejected(Refusal::message(&message)),
            other => other,
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout => ApiError::UpstreamTimeout,
            UpstreamError::Unavailable(_, retry_after) => {
                ApiError::UpstreamUnavailable { retry_after }
            }
            UpstreamError::Failure(_) | UpstreamError::LoginFailed(_) => ApiError::UpstreamFailure,
            UpstreamError::Unreadable(_) => ApiError::UpstreamResponseUnreadable,
            UpstreamError::NotFound(what) => ApiError::NotFound { what },
            UpstreamError::Rejected(r) => ApiError::UpstreamRejected {
                message: r.message,
                field: r.field,
            },
        }
    }
}
