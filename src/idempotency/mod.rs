//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header) for creates and activations.
//!
//! A record is scoped to the caller and the route, remembers a fingerprint of the request,
//! and is either in flight or holds the finished response. Records sit behind
//! [`IdempotencyStore`]: claims live in process ([`LocalIdempotency`]) or in Redis shared by
//! the replicas ([`redis::SharedIdempotency`]), and [`durable::DurableIdempotency`] keeps
//! the finished responses in the ledger's database as well, so a replay survives a restart
//! of the gateway or of Redis and any replica answers it.

pub mod durable;
pub mod local;
pub mod redis;

pub use local::LocalIdempotency;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Header carrying the key.
pub const HEADER: &str = "idempotency-key";
/// Header marking a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// A finished response, kept for replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// Headers worth replaying (e.g. `Location`).
    pub headers: Vec<(String, String)>,
    #[serde(with = "body_text")]
    pub body: Bytes,
}

mod body_text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

/// What `begin` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// No record: the caller owns the key now and must `complete` or `abandon` it.
    Proceed,
    /// Same request already done: replay this.
    Replay(StoredResponse),
    /// Same key, still being processed.
    InFlight,
    /// Same key, different request.
    Mismatch,
}

/// The record store.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Atomically claims `key` for a request with `fingerprint`, or reports what is there.
    async fn begin(&self, key: &str, fingerprint: &str) -> Begin;
    /// Stores the final response for `key`.
    async fn complete(&self, key: &str, fingerprint: &str, response: StoredResponse);
    /// Releases `key` so a retry can run (the request failed in a retryable way).
    async fn abandon(&self, key: &str);
}

/// The record key: caller, route and the client's key.
pub fn scoped_key(principal: &str, route: &str, key: &str) -> String {
    format!("{principal}\u{1f}{route}\u{1f}{key}")
}

/// Fingerprint of a request: method, path and body bytes.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_differ_by_caller() {
        assert_ne!(scoped_key("a", "r", "k"), scoped_key("b", "r", "k"));
        assert_ne!(
            fingerprint("POST", "/x", b"1"),
            fingerprint("POST", "/x", b"2")
        );
    }
}
