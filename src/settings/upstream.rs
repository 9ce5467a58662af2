//! `upstream.*`: where the Digital Audience API is, how the gateway logs in, and the bounds
//! of every call to it.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// Upstream (Digital Audience API) settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    pub base_url: String,
    pub username: Option<String>,
    #[serde(serialize_with = "super::redacted")]
    pub password: Option<SecretString>,
    /// A ready `digitalAudience` session cookie value, instead of username and password.
    #[serde(serialize_with = "super::redacted")]
    pub session_cookie: Option<SecretString>,
    #[serde(rename = "connect_timeout_ms", with = "duration::millis")]
    pub connect_timeout: Duration,
    /// Bound of one upstream call.
    #[serde(rename = "request_timeout_ms", with = "duration::millis")]
    pub request_timeout: Duration,
    /// Upstream calls in flight at once; further calls wait up to `queue_timeout_ms`.
    pub max_concurrency: usize,
    #[serde(rename = "queue_timeout_ms", with = "duration::millis")]
    pub queue_timeout: Duration,
    /// Extra attempts for safe calls (reads, login) after a transient failure.
    pub retries: u32,
    /// Backoff before the first retry, doubled for each further one (with jitter, capped).
    #[serde(rename = "retry_base_ms", with = "duration::millis")]
    pub retry_base: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// Time the breaker stays open before a half-open probe.
    #[serde(rename = "breaker_open_secs", with = "duration::secs")]
    pub breaker_open: Duration,
    /// Renew the session once it is this old, before the vendor expires it (off when
    /// unset; needs username and password).
    #[serde(rename = "max_session_age_secs", with = "duration::opt_secs")]
    pub max_session_age: Option<Duration>,
}

impl UpstreamSettings {
    /// Checks that the API is reachable by URL and that the gateway can log in.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let base = self.base_url.trim();
        ensure(
            !base.is_empty(),
            "upstream.base_url",
            "the URL of the Digital Audience API",
        )?;
        ensure(
            reqwest::Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
            "upstream.base_url",
            "an absolute http(s) URL",
        )?;
        let has_account = self.username.is_some() && self.password.is_some();
        ensure(
            has_account || self.session_cookie.is_some(),
            "upstream.password",
            "upstream.username and upstream.password, or upstream.session_cookie",
        )?;
        ensure(
            self.max_concurrency > 0,
            "upstream.max_concurrency",
            "a positive number",
        )?;
        Ok(())
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            username: None,
            password: None,
            session_cookie: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_concurrency: 256,
            queue_timeout: Duration::from_secs(2),
            retries: 2,
            retry_base: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(10),
            max_session_age: None,
        }
    }
}
