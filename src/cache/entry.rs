//! What the cache stores for an audience: its three public representations, serialized once
//! with their strong ETags, so a hit does no serialization at all.

use std::sync::Arc;

use actix_web::http::header::{ETag, EntityTag, HeaderValue, TryIntoHeaderValue};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::View;
use crate::error::ApiError;
use crate::upstream::{AudienceRecord, Unreadable, UpstreamError};

/// One serialized representation and its strong ETag.
#[derive(Debug)]
pub struct Representation {
    pub body: Bytes,
    /// For `If-Match` / `If-None-Match` comparisons.
    pub etag: EntityTag,
    /// `etag` as the `ETag` header value, built once: an answer only clones it.
    pub etag_header: HeaderValue,
}

impl Representation {
    /// Serializes `value` and tags it.
    pub fn of<T: Serialize>(value: &T) -> Result<Arc<Self>, UpstreamError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| UpstreamError::Failure(format!("serialize: {e}")))?;
        let etag = strong_etag(&body);
        let etag_header = ETag(etag.clone())
            .try_into_value()
            .map_err(|e| UpstreamError::Failure(format!("etag: {e}")))?;
        Ok(Arc::new(Self {
            body: Bytes::from(body),
            etag,
            etag_header,
        }))
    }

    /// The representation of insights or uploads, or why `crmData` could not be read.
    fn of_part<T: Serialize>(part: &Result<T, Unreadable>) -> Result<Part, UpstreamError> {
        Ok(match part {
            Ok(value) => Ok(Self::of(value)?),
            Err(why) => Err(why.clone()),
        })
    }

    /// The representation of `view`, from the loaded audience.
    pub fn of_view(record: &AudienceRecord, view: View) -> Result<Part, UpstreamError> {
        match view {
            View::Audience => Ok(Ok(Self::of(&record.audience)?)),
            View::Insights => Self::of_part(&record.insights),
            View::Uploads => Self::of_part(&record.uploads),
        }
    }
}

/// A representation that needs `crmData`: unavailable when the vendor's `crmData` could
/// not be read (the audience itself is still served).
pub type Part = Result<Arc<Representation>, Unreadable>;

/// The problem a caller gets for a part that could not be read.
pub fn part_or_problem(part: &Part) -> Result<&Arc<Representation>, ApiError> {
    part.as_ref()
        .map_err(|why| ApiError::UpstreamDataUnreadable {
            part: why.to_string(),
        })
}

/// A strong ETag from the body bytes (stable across replicas and restarts): the first 16
/// bytes of its SHA-256 in lower-case hex.
pub fn strong_etag(body: &[u8]) -> EntityTag {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(32);
    for b in &digest[..16] {
        tag.push(char::from(HEX[usize::from(b >> 4)]));
        tag.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    EntityTag::new_strong(tag)
}

/// A cached audience: all three representations, each shared with the answers that use it.
#[derive(Debug)]
pub struct CachedAudience {
    pub audience: Arc<Representation>,
    pub insights: Part,
    pub uploads: Part,
}

impl CachedAudience {
    /// Builds all representations from the loaded audience.
    pub fn from_record(record: &AudienceRecord) -> Result<Self, UpstreamError> {
        Ok(Self {
            insights: Representation::of_part(&record.insights)?,
            uploads: Representation::of_part(&record.uploads)?,
            audience: Representation::of(&record.audience)?,
        })
    }

    /// The representation for a view; insights and uploads fail when the vendor's
    /// `crmData` could not be read.
    pub fn view(&self, view: View) -> Result<&Arc<Representation>, ApiError> {
        match view {
            View::Audience => Ok(&self.audience),
            View::Insights => part_or_problem(&self.insights),
            View::Uploads => part_or_problem(&self.uploads),
        }
    }

    /// Bytes this entry holds, for the cache's byte bound.
    pub(super) fn weight(&self) -> u32 {
        let len = |p: &Part| p.as_ref().map_or(0, |r| r.body.len());
        let bytes = self.audience.body.len() + len(&self.insights) + len(&self.uploads);
        // Bodies plus ETags, key and bookkeeping.
        u32::try_from(bytes + 256).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_strong_and_stable() {
        let a = strong_etag(b"{\"id\":1}");
        // SHA-256 of `{"id":1}`, first 16 bytes in lower-case hex, quoted.
        assert_eq!(a.to_string(), "\"037c9214eef74cc3887f3a4f085b4e17\"");
        assert!(a.strong_eq(&strong_etag(b"{\"id\":1}")));
        assert!(!a.strong_eq(&strong_etag(b"{\"id\":2}")));
        assert!(!a.weak);
    }
}
