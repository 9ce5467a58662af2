//! Idempotency records that survive restarts: claims in a fast store (in process, or Redis
//! shared by the replicas), finished responses also kept in the ledger's database.
//!
//! A request first claims its key in the claim store, which answers on its own what it
//! knows (a replay, in flight, a mismatch). When the claim store has no record (it was
//! emptied: the gateway or Redis restarted, or another replica without a shared store
//! answered), the database is asked: a response kept there is written back into the claim
//! store and replayed (or refused as a mismatch). Completion writes both; a database that
//! cannot take the record queues it like any ledger write (spooled at stop), and the claim
//! store keeps answering meanwhile. While the database is down a key unknown to the claim
//! store proceeds: the database is never waited for on the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Begin, IdempotencyStore, StoredResponse};
use crate::ledger::{Kept, Ledger};

/// The claim store in front of the ledger's database.
pub struct DurableIdempotency {
    claims: Arc<dyn IdempotencyStore>,
    ledger: Arc<Ledger>,
    ttl: Duration,
}

impl DurableIdempotency {
    /// Claims in `claims`, finished responses kept for `ttl` in `ledger` too.
    pub fn new(claims: Arc<dyn IdempotencyStore>, ledger: Arc<Ledger>, ttl: Duration) -> Self {
        Self {
            claims,
            ledger,
            ttl,
        }
    }

    /// The response the database keeps for `key`, if any (`None` also when it cannot say).
    async fn kept(&self, key: &str) -> Option<(String, StoredResponse)> {
        let kept = match self.ledger.kept(key).await {
            Ok(kept) => kept?,
            Err(e) => {
                tracing::debug!(error = %e, "kept idempotent responses unavailable");
                return None;
            }
        };
        match serde_json::from_str(&kept.response) {
            Ok(response) => Some((kept.fingerprint, response)),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable kept idempotent response; ignored");
                None
            }
        }
    }
}

#[async_trait]
impl IdempotencyStore for DurableIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str) -> Begin {
        let found = self.claims.begin(key, fingerprint).await;
        if found != Begin::Proceed {
            return found;
        }
        let Some((kept_print, response)) = self.kept(key).await else {
            return Begin::Proceed;
        };
        // The claim just made becomes the finished record again.
        self.claims
            .complete(key, &kept_print, response.clone())
            .await;
        if kept_print == fingerprint {
            Begin::Replay(response)
        } else {
            Begin::Mismatch
        }
    }

    async fn complete(&self, key: &str, fingerprint: &str, response: StoredResponse) {
        let text = serde_json::to_string(&response);
        self.claims.complete(key, fingerprint, response).await;
        match text {
            Ok(text) => {
                self.ledger
                    .keep(Kept::new(key, fingerprint, text, self.ttl))
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "idempotent response not kept in the ledger"),
        }
    }

    async fn abandon(&self, key: &str) {
        self.claims.abandon(key).await;
    }
}
