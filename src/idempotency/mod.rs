//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header) for creates and activations.
//!
//! A record is scoped to the caller and the route, remembers a fingerprint of the request,
//! and is either in flight or holds the finished response. Records sit behind
//! [`IdempotencyStore`] so the shared store ([`redis::SharedIdempotency`]) can replace the
//! in-process one.

pub mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::ops::compute::Op;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::settings::IdempotencySettings;

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

#[derive(Debug, Clone)]
enum Record {
    InFlight {
        fingerprint: String,
        since: Instant,
    },
    Done {
        fingerprint: String,
        response: StoredResponse,
    },
}

impl Record {
    /// What a request with `fingerprint` finds here; `None` when it may take the key over.
    fn found(&self, fingerprint: &str, in_flight_timeout: Duration) -> Option<Begin> {
        match self {
            Record::Done { fingerprint: f, .. } | Record::InFlight { fingerprint: f, .. }
                if f != fingerprint =>
            {
                Some(Begin::Mismatch)
            }
            Record::Done { response, .. } => Some(Begin::Replay(response.clone())),
            Record::InFlight { since, .. } if since.elapsed() < in_flight_timeout => {
                Some(Begin::InFlight)
            }
            // An abandoned claim (the process handling it died or hung): take over.
            Record::InFlight { .. } => None,
        }
    }
}

/// In-process records: bounded and expiring.
pub struct LocalIdempotency {
    records: moka::future::Cache<String, Arc<Record>>,
    in_flight_timeout: Duration,
}

impl LocalIdempotency {
    /// Store from settings.
    pub fn new(s: &IdempotencySettings) -> Self {
        Self {
            // LRU, not moka's default TinyLFU: when full, TinyLFU may refuse the newest
            // record in favour of older ones, and a retry of that request would run twice.
            records: moka::future::Cache::builder()
                .max_capacity(s.max_records)
                .time_to_live(Duration::from_secs(s.ttl_secs.max(1)))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            in_flight_timeout: Duration::from_secs(s.in_flight_timeout_secs),
        }
    }

    /// What `begin` would find for `key`, without claiming it (`None`: no live record).
    pub async fn peek(&self, key: &str, fingerprint: &str) -> Option<Begin> {
        let record = self.records.get(key).await?;
        record.found(fingerprint, self.in_flight_timeout)
    }
}

#[async_trait]
impl IdempotencyStore for LocalIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str) -> Begin {
        let mut found = Begin::Proceed;
        let slot = &mut found;
        let timeout = self.in_flight_timeout;
        self.records
            .entry_by_ref(key)
            .and_compute_with(|current| async move {
                let claim = Op::Put(Arc::new(Record::InFlight {
                    fingerprint: fingerprint.to_string(),
                    since: Instant::now(),
                }));
                match current.and_then(|e| e.value().found(fingerprint, timeout)) {
                    Some(found) => {
                        *slot = found;
                        Op::Nop
                    }
                    None => claim,
                }
            })
            .await;
        found
    }

    async fn complete(&self, key: &str, fingerprint: &str, response: StoredResponse) {
        self.records
            .insert(
                key.to_string(),
                Arc::new(Record::Done {
                    fingerprint: fingerprint.to_string(),
                    response,
                }),
            )
            .await;
    }

    async fn abandon(&self, key: &str) {
        self.records.invalidate(key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> LocalIdempotency {
        LocalIdempotency::new(&IdempotencySettings::default())
    }

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("location".into(), "/v1/audiences/7".into())],
            body: Bytes::from_static(b"{\"id\":7}"),
        }
    }

    #[tokio::test]
    async fn claim_then_replay_then_mismatch() {
        let s = store();
        assert_eq!(s.begin("k", "f1").await, Begin::Proceed);
        assert_eq!(s.begin("k", "f1").await, Begin::InFlight);
        assert_eq!(s.begin("k", "f2").await, Begin::Mismatch);
        s.complete("k", "f1", response()).await;
        assert_eq!(s.begin("k", "f1").await, Begin::Replay(response()));
        assert_eq!(s.begin("k", "f2").await, Begin::Mismatch);
    }

    #[tokio::test]
    async fn abandon_lets_a_retry_run() {
        let s = store();
        assert_eq!(s.begin("k", "f").await, Begin::Proceed);
        s.abandon("k").await;
        assert_eq!(s.begin("k", "f").await, Begin::Proceed);
    }

    #[tokio::test]
    async fn concurrent_claims_admit_one() {
        let s = Arc::new(store());
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.begin("k", "f").await })
            })
            .collect();
        let mut proceed = 0;
        for t in tasks {
            if t.await.unwrap() == Begin::Proceed {
                proceed += 1;
            }
        }
        assert_eq!(proceed, 1);
    }

    #[test]
    fn scoped_keys_differ_by_caller() {
        assert_ne!(scoped_key("a", "r", "k"), scoped_key("b", "r", "k"));
        assert_ne!(
            fingerprint("POST", "/x", b"1"),
            fingerprint("POST", "/x", b"2")
        );
    }
}
