//! Cache coherence across replicas: a write evicts the audience here and tells the other
//! replicas to do the same. In-process, there is nobody to tell; a Redis pub/sub
//! implementation replaces [`LocalInvalidation`] in multi-replica deployments.

use async_trait::async_trait;

/// Broadcasts evictions to other replicas.
#[async_trait]
pub trait Invalidation: Send + Sync {
    /// Tells every other replica that audience `id` of upstream `identity` changed.
    async fn publish(&self, identity: &str, id: i64);
}

/// Single-replica deployments: nothing to broadcast.
pub struct LocalInvalidation;

#[async_trait]
impl Invalidation for LocalInvalidation {
    async fn publish(&self, _identity: &str, _id: i64) {}
}
