//! Cache coherence across replicas: a write (or a purge) evicts the audience here and tells
//! the other replicas to do the same; a purge drops the platform accounts likewise. In-process, there is nobody to tell; the Redis pub/sub
//! implementation ([`redis::RedisInvalidation`]) replaces [`LocalInvalidation`] in
//! multi-replica deployments.

pub mod local;
pub mod redis;

pub use local::LocalInvalidation;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a replica is told to drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Event {
    /// Audience `id` of upstream `identity` changed.
    Evict { identity: String, id: i64 },
    /// The platform accounts of upstream `identity` may have changed.
    EvictAccounts { identity: String },
    /// Anything may have changed: drop the whole cache.
    Clear,
}

/// Broadcasts evictions to other replicas.
#[async_trait]
pub trait Invalidation: Send + Sync {
    /// Tells every other replica that audience `id` of upstream `identity` changed.
    async fn publish(&self, identity: &str, id: i64);

    /// Tells every other replica that the platform accounts of `identity` may have changed.
    async fn publish_accounts(&self, identity: &str);
}
