//! `idempotency.*`: how long and how many `Idempotency-Key` records are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Idempotency-key settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a finished response is replayed.
    #[serde(rename = "ttl_secs", with = "duration::secs")]
    pub ttl: Duration,
    pub max_records: u64,
    /// How long an in-flight marker blocks retries before it is considered abandoned.
    #[serde(rename = "in_flight_timeout_secs", with = "duration::secs")]
    pub in_flight_timeout: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            max_records: 100_000,
            in_flight_timeout: Duration::from_secs(60),
        }
    }
}
