//! Cache coherence across replicas over Redis pub/sub, on the channel
//! `<redis.key_prefix>:evict`: regular pub/sub on every topology (in a cluster the cluster
//! bus forwards a PUBLISH to every node, so a subscription on any node hears it; sharded
//! pub/sub would save that fan-out but needs Redis 7 and a subscription per shard owner,
//! which buys nothing at the rate writes happen). A successful write evicts the audience locally, then publishes
//! `{"replica", "kind": "evict", "identity", "id"}`; every other replica evicts it from its
//! own cache (a replica ignores its own messages). Cache reads never touch Redis.
//!
//! Delay: the writer awaits PUBLISH before it answers, and Redis answers PUBLISH once it has
//! queued the message for every subscriber; what is left is delivery and the other replica
//! applying it. A PATCH re-reads the audience before answering, which gives the eviction
//! time to reach the other replica first (`a_write_on_one_replica_evicts_on_the_other`
//! prints the margin). A DELETE or an activation answers right after PUBLISH, so its window
//! is that delivery and apply step (plus the network hop to the other replica when not on
//! loopback). Delivery is at most once; the gaps are closed as follows, and otherwise the
//! cache TTL (`cache.ttl_secs`) bounds staleness:
//! - a subscriber that was disconnected drops its whole cache when it subscribes again;
//! - a publish that fails is kept (up to [`MAX_PENDING`], beyond which a "clear everything"
//!   message replaces them) and sent when Redis is back; a platform-account eviction that
//!   fails is sent as "clear everything".

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Event, Invalidation};
use crate::redis::{Redis, RedisFailure};

/// Unsent evictions kept while Redis is down; more turn into one "clear" message.
pub const MAX_PENDING: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    replica: String,
    #[serde(flatten)]
    event: Event,
}

#[derive(Default)]
struct Pending {
    evictions: HashSet<(String, i64)>,
    overflowed: bool,
}

/// Publishes evictions to the other replicas.
pub struct RedisInvalidation {
    redis: Arc<Redis>,
    channel: String,
    pending: Mutex<Pending>,
}

impl RedisInvalidation {
    /// Broadcasts on `<prefix>:evict`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            channel: redis.key(&["evict"]),
            redis,
            pending: Mutex::new(Pending::default()),
        }
    }

    #[tracing::instrument(skip_all, name = "redis.publish")]
    async fn send(&self, event: Event) -> Result<(), RedisFailure> {
        let payload = serde_json::to_string(&Message {
            replica: self.redis.replica().to_string(),
            event,
        })
        .map_err(|e| RedisFailure::Decode(e.to_string()))?;
        self.redis
            .run("publish", |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(&payload)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }

    fn keep(&self, identity: &str, id: i64) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if p.evictions.len() < MAX_PENDING {
            p.evictions.insert((identity.to_string(), id));
        } else {
            p.overflowed = true;
        }
    }

    /// Whether evictions (or a clear-all) wait to be sent.
    pub fn has_pending(&self) -> bool {
        let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.overflowed || !p.evictions.is_empty()
    }

    /// Sends the evictions kept while Redis was down.
    pub async fn flush_pending(&self) {
        let Pending {
            evictions,
            overflowed,
        } = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if overflowed {
            if self.send(Event::Clear).await.is_err() {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .overflowed = true;
            }
            return;
        }
        let count = evictions.len();
        for (identity, id) in evictions {
            if self
                .send(Event::Evict {
                    identity: identity.clone(),
                    id,
                })
                .await
                .is_err()
            {
                self.keep(&identity, id);
            }
        }
        if count > 0 {
            tracing::info!(count, "sent the evictions kept while redis was down");
        }
    }
}

#[async_trait]
impl Invalidation for RedisInvalidation {
    async fn publish(&self, identity: &str, id: i64) {
        let event = Event::Evict {
            identity: identity.to_string(),
            id,
        };
        if let Err(e) = self.send(event).await {
            tracing::debug!(error = %e, audience = id, "eviction not published; kept for later");
            self.keep(identity, id);
        }
    }

    async fn publish_accounts(&self, identity: &str) {
        let event = Event::EvictAccounts {
            identity: identity.to_string(),
        };
        if let Err(e) = self.send(event).await {
            tracing::debug!(error = %e, "platform-account eviction not published; a clear is kept for later");
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .overflowed = true;
        }
    }
}

/// Subscribes to the eviction channel and hands other replicas' events to `on_event`,
/// reconnecting every `redis.health_interval_ms` while it cannot. After each (re)subscription
/// it first hands over [`Event::Clear`]: messages sent while unsubscribed are lost. A PING on
/// the subscription every interval detects a hung server. Ends when `redis` is dropped or
/// `on_event` returns false.
pub async fn subscribe<F, Fut>(redis: Weak<Redis>, mut on_event: F)
where
    F: FnMut(Event) -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let Some(r) = redis.upgrade() else { return };
        let (timeout, interval) = (r.timeout(), r.interval());
        let channel = r.key(&["evict"]);
        let replica = r.replica().to_string();
        let connect = async {
            let mut pubsub = r.pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        };
        let parts = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(parts)) => Some(parts),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "eviction subscription failed");
                None
            }
            Err(_) => {
                tracing::debug!("eviction subscription timed out");
                None
            }
        };
        let Some((mut sink, mut stream)) = parts else {
            drop(r);
            tokio::time::sleep(interval).await;
            continue;
        };
        tracing::info!("subscribed to evictions; dropping the local cache");
        // Cleared before reporting up, so "up" means nothing missed is still cached.
        if !on_event(Event::Clear).await {
            return;
        }
        r.set_subscribed(true);
        drop(r);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    match serde_json::from_slice::<Message>(msg.get_payload_bytes()) {
                        Ok(m) if m.replica == replica => {}
                        Ok(m) => {
                            if !on_event(m.event).await {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed eviction message"),
                    }
                }
                _ = tick.tick() => {
                    if redis.strong_count() == 0 {
                        return;
                    }
                    // Subscribed, RESP2 answers `["pong", ""]`: any answer will do.
                    let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("eviction subscription lost; reconnecting");
        let Some(r) = redis.upgrade() else { return };
        r.set_subscribed(false);
        drop(r);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_replica_and_the_event() {
        let m = Message {
            replica: "r1".into(),
            event: Event::Evict {
                identity: "abc".into(),
                id: 1001,
            },
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            "{\"replica\":\"r1\",\"kind\":\"evict\",\"identity\":\"abc\",\"id\":1001}"
        );
        let back: Message = serde_json::from_str(&text).unwrap();
        assert_eq!(back.event, m.event);
        let clear: Message =
            serde_json::from_str("{\"replica\":\"r2\",\"kind\":\"clear\"}").unwrap();
        assert_eq!(clear.event, Event::Clear);
    }
}
