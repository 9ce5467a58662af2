//! What the upstream client hands the cache and the routes for an audience: the gateway's
//! own types, never the vendor's objects.

use crate::domain::{Audience, Insights, Uploads};

/// A loaded audience: the audience itself, and its insights and uploads, or why the
/// vendor's `crmData` they are derived from could not be read (the audience is still
/// served then).
#[derive(Debug, Clone)]
pub struct AudienceRecord {
    pub audience: Audience,
    pub insights: Result<Insights, Unreadable>,
    pub uploads: Result<Uploads, Unreadable>,
}

/// A part of the vendor's answer that could not be read: the path of the value at fault and
/// why (e.g. `crmData.history.totalEvents: invalid value: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);
