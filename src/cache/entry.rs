//! What the cache stores for an audience: its three public representations, serialized once
//! with their strong ETags, so a hit does no serialization at all.

use std::sync::Arc;

use actix_web::http::header::{ETag, EntityTag, HeaderValue, TryIntoHeaderValue};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::View;
use crate::upstream::api::AudienceDto;
use crate::upstream::UpstreamError;

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

    /// The representation of `view`, from the vendor object.
    pub fn of_view(dto: AudienceDto, view: View) -> Result<Arc<Self>, UpstreamError> {
        match view {
            View::Audience => Self::of(&dto.into_audience()),
            View::Insights => Self::of(&dto.to_insights()),
            View::Uploads => Self::of(&dto.to_uploads()),
        }
    }
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
    pub insights: Arc<Representation>,
    pub uploads: Arc<Representation>,
}

impl CachedAudience {
    /// Builds all representations from the vendor object.
    pub fn from_dto(dto: AudienceDto) -> Result<Self, UpstreamError> {
        Ok(Self {
            insights: Representation::of(&dto.to_insights())?,
            uploads: Representation::of(&dto.to_uploads())?,
            audience: Representation::of(&dto.into_audience())?,
        })
    }

    /// The representation for a view.
    pub fn view(&self, view: View) -> &Arc<Representation> {
        match view {
            View::Audience => &self.audience,
            View::Insights => &self.insights,
            View::Uploads => &self.uploads,
        }
    }

    /// Bytes this entry holds, for the cache's byte bound.
    pub(super) fn weight(&self) -> u32 {
        let bytes = self.audience.body.len() + self.insights.body.len() + self.uploads.body.len();
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
