//! `rate_limit.*`: the activation quotas, per caller and global.

use serde::{Deserialize, Serialize};

use super::{ensure, SettingsError};

/// Activation rate-limit settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_caller_per_minute: u32,
    pub per_caller_burst: u32,
    pub global_per_minute: u32,
    pub global_burst: u32,
    /// Distinct callers tracked at once; the least recently seen are forgotten beyond it.
    pub max_tracked_callers: u64,
}

impl RateLimitSettings {
    /// Checks that every policy admits something.
    pub fn validate(&self) -> Result<(), SettingsError> {
        ensure(
            self.per_caller_per_minute > 0 && self.per_caller_burst > 0,
            "rate_limit.per_caller_per_minute",
            "a positive rate and burst",
        )?;
        ensure(
            self.global_per_minute > 0 && self.global_burst > 0,
            "rate_limit.global_per_minute",
            "a positive rate and burst",
        )?;
        Ok(())
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_caller_per_minute: 10,
            per_caller_burst: 3,
            global_per_minute: 100,
            global_burst: 20,
            max_tracked_callers: 100_000,
        }
    }
}
