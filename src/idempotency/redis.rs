//! Idempotency records shared by the replicas. The in-flight marker is claimed atomically
//! (`SET NX PX` with `idempotency.in_flight_timeout_secs`, so a claim whose owner died
//! expires), completion overwrites it with the finished response for
//! `idempotency.ttl_secs`, and abandoning deletes it only while it is still our in-flight
//! marker. A retry landing on another replica thus replays, gets 409 while the first is in
//! flight, or 422 with another body.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Begin, IdempotencyStore, LocalIdempotency, StoredResponse};
use crate::redis::{Redis, RedisFailure};
use crate::settings::IdempotencySettings;

/// Claims `KEYS[1]` with `ARGV[1]` for `ARGV[2]` ms, or returns what holds it.
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
",
    )
});

/// Deletes `KEYS[1]` only while it still holds our in-flight marker `ARGV[1]`.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// A record as stored in Redis (JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
enum Record {
    #[serde(rename_all = "camelCase")]
    InFlight { fingerprint: String, owner: String },
    #[serde(rename_all = "camelCase")]
    Done {
        fingerprint: String,
        response: StoredResponse,
    },
}

fn json<T: Serialize>(v: &T) -> Result<String, RedisFailure> {
    serde_json::to_string(v).map_err(|e| RedisFailure::Decode(e.to_string()))
}

/// Records in Redis; fails instead of answering when Redis does not.
pub struct RedisIdempotency {
    redis: Arc<Redis>,
    ttl: Duration,
    in_flight_timeout: Duration,
    /// Our in-flight markers by key, exactly as written, for `abandon`.
    claims: moka::sync::Cache<String, Arc<str>>,
}

impl RedisIdempotency {
    /// A store from settings.
    pub fn new(redis: Arc<Redis>, s: &IdempotencySettings) -> Self {
        let in_flight_timeout = s.in_flight_timeout.max(Duration::from_secs(1));
        Self {
            redis,
            ttl: s.ttl.max(Duration::from_secs(1)),
            in_flight_timeout,
            claims: moka::sync::Cache::builder()
                .max_capacity(s.max_records)
                .time_to_live(in_flight_timeout)
                .build(),
        }
    }

    fn key(&self, key: &str) -> String {
        self.redis.key(&["idem", key])
    }

    /// Whether this replica holds the Redis claim on `key`.
    pub fn claimed(&self, key: &str) -> bool {
        self.claims.contains_key(key)
    }

    /// Claims `key` or reports what holds it.
    #[tracing::instrument(skip_all, name = "redis.idempotency.begin")]
    pub async fn try_begin(&self, key: &str, fingerprint: &str) -> Result<Begin, RedisFailure> {
        let marker = json(&Record::InFlight {
            fingerprint: fingerprint.to_string(),
            owner: uuid::Uuid::new_v4().to_string(),
        })?;
        let rkey = self.key(key);
        let ttl_ms = u64::try_from(self.in_flight_timeout.as_millis()).unwrap_or(u64::MAX);
        let sent = &marker;
        let held: Option<String> = self
            .redis
            .run("idempotency_begin", |mut c| async move {
                CLAIM
                    .key(&rkey)
                    .arg(sent)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let Some(held) = held else {
            self.claims.insert(key.to_string(), marker.into());
            return Ok(Begin::Proceed);
        };
        let record: Record =
            serde_json::from_str(&held).map_err(|e| RedisFailure::Decode(e.to_string()))?;
        Ok(match record {
            Record::InFlight { fingerprint: f, .. } | Record::Done { fingerprint: f, .. }
                if f != fingerprint =>
            {
                Begin::Mismatch
            }
            Record::InFlight { .. } => Begin::InFlight,
            Record::Done { response, .. } => Begin::Replay(response),
        })
    }

    /// Stores the finished response, replacing the marker.
    #[tracing::instrument(skip_all, name = "redis.idempotency.complete")]
    pub async fn try_complete(
        &self,
        key: &str,
        fingerprint: &str,
        response: StoredResponse,
    ) -> Result<(), RedisFailure> {
        self.claims.invalidate(key);
        let record = json(&Record::Done {
            fingerprint: fingerprint.to_string(),
            response,
        })?;
        let rkey = self.key(key);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.redis
            .run("idempotency_complete", |mut c| async move {
                redis::cmd("SET")
                    .arg(&rkey)
                    .arg(&record)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// Deletes our in-flight marker, if it is still there.
    #[tracing::instrument(skip_all, name = "redis.idempotency.abandon")]
    pub async fn try_abandon(&self, key: &str) -> Result<(), RedisFailure> {
        let Some(marker) = self.claims.remove(key) else {
            return Ok(());
        };
        let rkey = self.key(key);
        self.redis
            .run("idempotency_abandon", |mut c| async move {
                RELEASE
                    .key(&rkey)
                    .arg(marker.as_ref())
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }
}

/// Redis records, falling back to in-process ones while Redis is down.
///
/// In-process records made during an outage stay authoritative on this replica afterwards
/// (they are looked at first). A claim made in process is completed in process, and in
/// Redis too when it is back by then, so a retry anywhere replays it; one completed while
/// Redis was still down is known to this replica only. A Redis claim whose completion
/// cannot be written is completed in process (retries elsewhere see the marker until it
/// expires, then run again).
pub struct SharedIdempotency {
    remote: RedisIdempotency,
    local: LocalIdempotency,
}

impl SharedIdempotency {
    /// A store from settings.
    pub fn new(redis: Arc<Redis>, s: &IdempotencySettings) -> Self {
        Self {
            remote: RedisIdempotency::new(redis, s),
            local: LocalIdempotency::new(s),
        }
    }
}

#[async_trait]
impl IdempotencyStore for SharedIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str) -> Begin {
        if let Some(found) = self.local.peek(key, fingerprint).await {
            return found;
        }
        match self.remote.try_begin(key, fingerprint).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "shared idempotency unavailable; using local records");
                self.local.begin(key, fingerprint).await
            }
        }
    }

    async fn complete(&self, key: &str, fingerprint: &str, response: StoredResponse) {
        let claimed_remotely = self.remote.claimed(key);
        let stored = self
            .remote
            .try_complete(key, fingerprint, response.clone())
            .await;
        if !claimed_remotely || stored.is_err() {
            self.local.complete(key, fingerprint, response).await;
        }
    }

    async fn abandon(&self, key: &str) {
        if self.remote.claimed(key) {
            if let Err(e) = self.remote.try_abandon(key).await {
                // The marker expires after the in-flight timeout.
                tracing::debug!(error = %e, "could not release an idempotency claim");
            }
        } else {
            self.local.abandon(key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_tagged_json() {
        let done = Record::Done {
            fingerprint: "f".into(),
            response: StoredResponse {
                status: 201,
                headers: vec![("location".into(), "/v1/audiences/7".into())],
                body: bytes::Bytes::from_static(b"{\"id\":7}"),
            },
        };
        let text = json(&done).unwrap();
        assert!(
            text.starts_with("{\"state\":\"done\",\"fingerprint\":\"f\""),
            "{text}"
        );
        match serde_json::from_str::<Record>(&text).unwrap() {
            Record::Done { response, .. } => assert_eq!(response.status, 201),
            other => panic!("{other:?}"),
        }
        let flight = json(&Record::InFlight {
            fingerprint: "f".into(),
            owner: "o".into(),
        })
        .unwrap();
        assert_eq!(
            flight,
            "{\"state\":\"inFlight\",\"fingerprint\":\"f\",\"owner\":\"o\"}"
        );
    }
}
