//! `cache.*`: freshness and size of the audience read cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// Audience read cache settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub enabled: bool,
    /// How long an entry is fresh (whole seconds: it is told in `Cache-Status`).
    #[serde(rename = "ttl_secs", with = "duration::secs")]
    pub ttl: Duration,
    /// stale-while-revalidate (RFC 5861): how long after expiry an entry is still served at
    /// once while one background refresh replaces it; 0 turns it off.
    #[serde(rename = "revalidate_secs", with = "duration::secs")]
    pub revalidate: Duration,
    /// How long after expiry an entry may still be served when the upstream fails.
    #[serde(rename = "stale_secs", with = "duration::secs")]
    pub stale: Duration,
    /// Capacity in bytes of cached response bodies.
    pub max_bytes: u64,
}

impl CacheSettings {
    /// Checks what the types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        ensure(
            self.max_bytes > 0,
            "cache.max_bytes",
            "a positive number of bytes",
        )?;
        Ok(())
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(30),
            revalidate: Duration::ZERO,
            stale: Duration::from_secs(300),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}
