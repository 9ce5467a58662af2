//! In-process idempotency records: bounded and expiring, claimed atomically per key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;

use super::{Begin, IdempotencyStore, StoredResponse};
use crate::settings::IdempotencySettings;

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
                .time_to_live(s.ttl.max(Duration::from_secs(1)))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            in_flight_timeout: s.in_flight_timeout,
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
    use bytes::Bytes;

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
}
