//! A single replica: its own cache is all there is, so there is nobody to tell.

use async_trait::async_trait;

use super::Invalidation;

/// Single-replica deployments: nothing to broadcast.
pub struct LocalInvalidation;

#[async_trait]
impl Invalidation for LocalInvalidation {
    async fn publish(&self, _identity: &str, _id: i64) {}

    async fn publish_accounts(&self, _identity: &str) {}
}
