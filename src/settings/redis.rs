//! `redis.*`: the state shared by the replicas and what each replica does while it is down.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// Shared state across replicas (activation limits, idempotency records, cache evictions).
/// Without `url` every replica keeps its own state in process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (or `unix://`); a secret, as it may hold a
    /// password. TLS (`rediss://`) is not built in.
    #[serde(serialize_with = "super::redacted")]
    pub url: Option<SecretString>,
    /// Upper bound for every Redis call and connection attempt; past it the call counts as
    /// failed, Redis is marked down and the fallback answers.
    #[serde(rename = "timeout_ms", with = "duration::millis")]
    pub timeout: Duration,
    /// How often the connection is checked while up, and retried while down.
    #[serde(rename = "health_interval_ms", with = "duration::millis")]
    pub health_interval: Duration,
    /// What activations do while Redis is down: `local` limits with a share of the quota
    /// on each replica, or `refuse` with 503.
    pub limiter_fallback: LimiterFallback,
    /// Share of every quota and burst a replica enforces alone while Redis is down (e.g.
    /// 1 / replicas); at least 1 request each.
    pub fallback_quota_share: f64,
    /// Prefix of every key and of the eviction channel, so deployments can share a Redis.
    pub key_prefix: String,
}

impl RedisSettings {
    /// Checks the URL (never echoing it: it may carry a password) and the bounds.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.url {
            let url = url.expose_secret();
            ensure(
                !url.trim_start().starts_with("rediss:"),
                "redis.url",
                "a redis:// or unix:// URL (TLS is not built in)",
            )?;
            ensure(
                redis::Client::open(url).is_ok(),
                "redis.url",
                "a redis:// or unix:// URL",
            )?;
        }
        ensure(
            !self.timeout.is_zero() && self.timeout <= Duration::from_secs(10),
            "redis.timeout_ms",
            "1 to 10000 milliseconds",
        )?;
        ensure(
            self.health_interval >= Duration::from_millis(10),
            "redis.health_interval_ms",
            "at least 10 milliseconds",
        )?;
        ensure(
            self.fallback_quota_share > 0.0 && self.fallback_quota_share <= 1.0,
            "redis.fallback_quota_share",
            "a share above 0 and at most 1",
        )?;
        let prefix = self.key_prefix.trim();
        ensure(
            !prefix.is_empty() && prefix.len() == self.key_prefix.len(),
            "redis.key_prefix",
            "a non-empty prefix without surrounding blanks",
        )?;
        Ok(())
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_millis(200),
            health_interval: Duration::from_secs(1),
            limiter_fallback: LimiterFallback::Local,
            fallback_quota_share: 0.5,
            key_prefix: "audience-gateway".into(),
        }
    }
}

/// Activation limiting while the shared store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimiterFallback {
    /// In-process limits with `redis.fallback_quota_share` of the quota.
    Local,
    /// No activations (503) until Redis is back.
    Refuse,
}
