//! Typed, layered settings: built-in defaults, then an optional TOML file, then environment
//! variables prefixed `GATEWAY_` with `__` between levels (`GATEWAY_UPSTREAM__BASE_URL`).
//!
//! Nothing outside this module reads the environment. Secrets are `SecretString`s: their
//! `Debug` output is redacted and they are exposed only at the line that uses them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "GATEWAY";
/// Environment variable naming the optional config file.
pub const CONFIG_FILE_ENV: &str = "GATEWAY_CONFIG";

/// A setting is missing or malformed; the message names the setting and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(pub String);

/// All settings of the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    #[serde(default)]
    pub cache: CacheSettings,
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    #[serde(default)]
    pub redis: RedisSettings,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    pub shutdown_grace_secs: u64,
    /// Time between turning not-ready and closing the listener on SIGTERM, so load
    /// balancers stop sending first (Kubernetes deployments use a preStop pause instead).
    pub shutdown_drain_ms: u64,
    pub max_body_bytes: usize,
    /// Largest accepted request head (all header names and values); larger gets 431.
    pub max_header_bytes: usize,
    /// Time a client has to send its request head.
    pub client_request_timeout_ms: u64,
    /// Upper bound for one whole request through the gateway (the caller's budget).
    pub request_budget_ms: u64,
    pub cors_allowed_origins: Vec<String>,
}

impl ServerSettings {
    /// Whether browser origins are allowed (the CORS middleware is installed): it adds
    /// headers to every answer, so cached hits are then answered inside it.
    pub fn cors_configured(&self) -> bool {
        !self.cors_allowed_origins.is_empty()
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            workers: 0,
            shutdown_grace_secs: 25,
            shutdown_drain_ms: 0,
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            client_request_timeout_ms: 5_000,
            request_budget_ms: 15_000,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `audience_gateway=debug,info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Inbound JWT authentication settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Allow-list of JWT algorithms.
    pub algorithms: Vec<JwtAlgorithm>,
    pub hs256_secret: Option<SecretString>,
    /// PEM text of an RSA or EC public key.
    pub public_key_pem: Option<String>,
    /// Path of a PEM file holding an RSA or EC public key.
    pub public_key_pem_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_secs: u64,
    /// Minimum time between two fetches triggered by an unknown `kid`.
    pub jwks_cooldown_secs: u64,
    pub jwks_timeout_ms: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    pub scope_claim: String,
    pub client_id_claim: String,
    /// Verified tokens remembered so a repeated token skips the signature check.
    pub verified_cache_capacity: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithms: vec![
                JwtAlgorithm::Hs256,
                JwtAlgorithm::Rs256,
                JwtAlgorithm::Es256,
            ],
            hs256_secret: None,
            public_key_pem: None,
            public_key_pem_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_cooldown_secs: 30,
            jwks_timeout_ms: 3_000,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            scope_claim: "scope".into(),
            client_id_claim: "client_id".into(),
            verified_cache_capacity: 10_000,
        }
    }
}

/// A JWT signature algorithm the gateway verifies; `none` and the others are never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, keyed by `auth.hs256_secret`.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, from a PEM or the JWKS.
    Rs256,
    /// ECDSA P-256 with SHA-256, from a PEM or the JWKS.
    Es256,
}

impl TryFrom<String> for JwtAlgorithm {
    type Error = String;

    /// Parsed by hand so that an unknown name is refused with the names allowed.
    fn try_from(name: String) -> Result<Self, String> {
        match name.trim() {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "RS256" => Ok(JwtAlgorithm::Rs256),
            "ES256" => Ok(JwtAlgorithm::Es256),
            other => Err(format!(
                "`{other}` is not an accepted algorithm: expected HS256, RS256 or ES256"
            )),
        }
    }
}

/// Upstream (Digital Audience API) settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    pub base_url: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// A ready `digitalAudience` session cookie value, instead of username and password.
    pub session_cookie: Option<SecretString>,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Upstream calls in flight at once; further calls wait up to `queue_timeout_ms`.
    pub max_concurrency: usize,
    pub queue_timeout_ms: u64,
    /// Extra attempts for safe calls (reads, login) after a transient failure.
    pub retries: u32,
    pub retry_base_ms: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// Time the breaker stays open before a half-open probe.
    pub breaker_open_secs: u64,
    /// Renew the session once it is this old, before the vendor expires it (off when
    /// unset; needs username and password).
    pub max_session_age_secs: Option<u64>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            username: None,
            password: None,
            session_cookie: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            max_concurrency: 256,
            queue_timeout_ms: 2_000,
            retries: 2,
            retry_base_ms: 50,
            breaker_failures: 5,
            breaker_open_secs: 10,
            max_session_age_secs: None,
        }
    }
}

/// Audience read cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub enabled: bool,
    pub ttl_secs: u64,
    /// How long after expiry an entry may still be served when the upstream fails.
    pub stale_secs: u64,
    /// Capacity in bytes of cached response bodies.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 30,
            stale_secs: 300,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Activation rate-limit settings.
#[derive(Debug, Clone, Deserialize)]
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

/// Idempotency-key settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencySettings {
    pub ttl_secs: u64,
    pub max_records: u64,
    /// How long an in-flight marker blocks retries before it is considered abandoned.
    pub in_flight_timeout_secs: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl_secs: 24 * 3600,
            max_records: 100_000,
            in_flight_timeout_secs: 60,
        }
    }
}

/// Shared state across replicas (activation limits, idempotency records, cache evictions).
/// Without `url` every replica keeps its own state in process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (or `unix://`); a secret, as it may hold a
    /// password. TLS (`rediss://`) is not built in.
    pub url: Option<SecretString>,
    /// Upper bound for every Redis call and connection attempt; past it the call counts as
    /// failed, Redis is marked down and the fallback answers.
    pub timeout_ms: u64,
    /// How often the connection is checked while up, and retried while down.
    pub health_interval_ms: u64,
    /// What activations do while Redis is down: `local` limits with a share of the quota
    /// on each replica, or `refuse` with 503.
    pub limiter_fallback: LimiterFallback,
    /// Share of every quota and burst a replica enforces alone while Redis is down (e.g.
    /// 1 / replicas); at least 1 request each.
    pub fallback_quota_share: f64,
    /// Prefix of every key and of the eviction channel, so deployments can share a Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 200,
            health_interval_ms: 1_000,
            limiter_fallback: LimiterFallback::Local,
            fallback_quota_share: 0.5,
            key_prefix: "audience-gateway".into(),
        }
    }
}

/// Activation limiting while the shared store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimiterFallback {
    /// In-process limits with `redis.fallback_quota_share` of the quota.
    Local,
    /// No activations (503) until Redis is back.
    Refuse,
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the process environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars().collect())
    }

    /// Same as [`Settings::load`] with an explicit environment (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let settings = Self::load_unvalidated(file, env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The layers without the cross-setting checks (for tools such as `token`).
    pub fn load_unvalidated(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("GATEWAY_") && k != CONFIG_FILE_ENV)
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("auth.algorithms")
                .with_list_parse_key("server.cors_allowed_origins")
                .source(Some(env.into_iter().collect())),
        );
        builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(named_error)
    }

    /// Checks relations between settings that types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let fail = |setting: &str, expected: &str| {
            Err(SettingsError(format!(
                "{}: expected {expected}",
                with_env(setting)
            )))
        };
        let base = self.upstream.base_url.trim();
        if base.is_empty() {
            return fail("upstream.base_url", "the URL of the Digital Audience API");
        }
        if reqwest::Url::parse(base).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            return fail("upstream.base_url", "an absolute http(s) URL");
        }
        let has_account = self.upstream.username.is_some() && self.upstream.password.is_some();
        if !has_account && self.upstream.session_cookie.is_none() {
            return fail(
                "upstream.password",
                "upstream.username and upstream.password, or upstream.session_cookie",
            );
        }
        if self.auth.algorithms.is_empty() {
            return fail("auth.algorithms", "at least one of HS256, RS256, ES256");
        }
        let wants_hs = self.auth.algorithms.contains(&JwtAlgorithm::Hs256);
        let has_public = self.auth.public_key_pem.is_some()
            || self.auth.public_key_pem_file.is_some()
            || self.auth.jwks_url.is_some();
        if self.auth.hs256_secret.is_none() && !has_public {
            return fail(
                "auth.hs256_secret",
                "a key: auth.hs256_secret, auth.public_key_pem(_file) or auth.jwks_url",
            );
        }
        if let Some(secret) = &self.auth.hs256_secret {
            if !wants_hs {
                return fail(
                    "auth.algorithms",
                    "HS256 in the list when auth.hs256_secret is set",
                );
            }
            if secret.expose_secret().len() < 32 {
                return fail("auth.hs256_secret", "at least 32 bytes");
            }
        }
        if let Some(url) = &self.auth.jwks_url {
            if reqwest::Url::parse(url).is_err() {
                return fail("auth.jwks_url", "an absolute URL");
            }
        }
        if self.auth.scope_claim.trim().is_empty() {
            return fail("auth.scope_claim", "a claim name");
        }
        if self.server.client_request_timeout_ms != 0
            && self.server.client_request_timeout_ms < 1000
        {
            // actix-web measures it with a clock that ticks every 500 ms.
            return fail(
                "server.client_request_timeout_ms",
                "0 (off) or at least 1000",
            );
        }
        if self.server.max_header_bytes < 1024 {
            return fail("server.max_header_bytes", "at least 1024");
        }
        if self.server.max_body_bytes == 0 {
            return fail("server.max_body_bytes", "a positive number of bytes");
        }
        if self.upstream.max_concurrency == 0 {
            return fail("upstream.max_concurrency", "a positive number");
        }
        if self.rate_limit.per_caller_per_minute == 0 || self.rate_limit.per_caller_burst == 0 {
            return fail(
                "rate_limit.per_caller_per_minute",
                "a positive rate and burst",
            );
        }
        if self.rate_limit.global_per_minute == 0 || self.rate_limit.global_burst == 0 {
            return fail("rate_limit.global_per_minute", "a positive rate and burst");
        }
        if self.cache.max_bytes == 0 {
            return fail("cache.max_bytes", "a positive number of bytes");
        }
        let r = &self.redis;
        if let Some(url) = &r.url {
            // Never echo the URL: it may carry a password.
            let url = url.expose_secret();
            if url.trim_start().starts_with("rediss:") {
                return fail(
                    "redis.url",
                    "a redis:// or unix:// URL (TLS is not built in)",
                );
            }
            if redis::Client::open(url).is_err() {
                return fail("redis.url", "a redis:// or unix:// URL");
            }
        }
        if r.timeout_ms == 0 || r.timeout_ms > 10_000 {
            return fail("redis.timeout_ms", "1 to 10000 milliseconds");
        }
        if r.health_interval_ms < 10 {
            return fail("redis.health_interval_ms", "at least 10 milliseconds");
        }
        if !(r.fallback_quota_share > 0.0 && r.fallback_quota_share <= 1.0) {
            return fail(
                "redis.fallback_quota_share",
                "a share above 0 and at most 1",
            );
        }
        let prefix = r.key_prefix.trim();
        if prefix.is_empty() || prefix.len() != r.key_prefix.len() {
            return fail(
                "redis.key_prefix",
                "a non-empty prefix without surrounding blanks",
            );
        }
        Ok(())
    }
}

/// A setting's name followed by the environment variable that sets it:
/// `auth.algorithms (env GATEWAY_AUTH__ALGORITHMS)`.
fn with_env(setting: &str) -> String {
    format!(
        "{setting} (env {ENV_PREFIX}_{})",
        setting.to_uppercase().replace('.', "__")
    )
}

/// A loading error that names the setting and its environment variable when the error
/// knows which setting it is about (a list item names its list).
fn named_error(e: config::ConfigError) -> SettingsError {
    use config::ConfigError;
    let (key, problem) = match e {
        ConfigError::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => (key, format!("expected {expected}, found {unexpected}")),
        ConfigError::At {
            key: Some(key),
            error,
            ..
        } => (key, error.to_string()),
        other => return SettingsError(other.to_string()),
    };
    let setting = key.split('[').next().unwrap_or(&key);
    SettingsError(format!("{}: {problem}", with_env(setting)))
}

/// Milliseconds to a `Duration`, for the many `_ms` settings.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: &[(&str, &str)] = &[
        ("GATEWAY_UPSTREAM__BASE_URL", "http://127.0.0.1:1"),
        ("GATEWAY_UPSTREAM__USERNAME", "svc"),
        ("GATEWAY_UPSTREAM__PASSWORD", "pw"),
        (
            "GATEWAY_AUTH__HS256_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
    ];

    #[test]
    fn env_overrides_defaults_and_parses_lists() {
        let mut e = env(BASE);
        e.insert("GATEWAY_SERVER__PORT".into(), "9001".into());
        e.insert(
            "GATEWAY_SERVER__CORS_ALLOWED_ORIGINS".into(),
            "https://a.test,https://b.test".into(),
        );
        let s = Settings::load_from(None, e).expect("valid");
        assert_eq!(s.server.port, 9001);
        assert_eq!(
            s.server.cors_allowed_origins,
            vec!["https://a.test", "https://b.test"]
        );
        assert_eq!(s.cache.ttl_secs, 30);
    }

    #[test]
    fn malformed_value_names_the_setting() {
        let mut e = env(BASE);
        e.insert("GATEWAY_SERVER__PORT".into(), "eighty".into());
        let err = Settings::load_from(None, e).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: server.port (env GATEWAY_SERVER__PORT): \
             expected an integer, found string \"eighty\""
        );
    }

    #[test]
    fn missing_upstream_names_the_setting() {
        let err = Settings::load_from(None, env(&BASE[3..]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.base_url"), "{err}");
        assert!(err.contains("GATEWAY_UPSTREAM__BASE_URL"), "{err}");
    }

    #[test]
    fn unknown_algorithm_is_refused() {
        let mut e = env(BASE);
        e.insert("GATEWAY_AUTH__ALGORITHMS".into(), "HS256,none".into());
        let err = Settings::load_from(None, e).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: auth.algorithms (env GATEWAY_AUTH__ALGORITHMS): \
             `none` is not an accepted algorithm: expected HS256, RS256 or ES256"
        );
    }

    #[test]
    fn file_layer_sits_under_env() {
        let dir = std::env::temp_dir().join(format!("ag-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(&path, "[server]\nport = 7000\nworkers = 3\n").unwrap();
        let mut e = env(BASE);
        e.insert("GATEWAY_SERVER__PORT".into(), "7001".into());
        let s = Settings::load_from(Some(&path), e).unwrap();
        assert_eq!((s.server.port, s.server.workers), (7001, 3));
    }

    #[test]
    fn redis_settings_have_defaults_and_are_validated() {
        let s = Settings::load_from(None, env(BASE)).unwrap();
        assert!(s.redis.url.is_none());
        assert_eq!(s.redis.timeout_ms, 200);
        assert_eq!(s.redis.limiter_fallback, LimiterFallback::Local);
        assert_eq!(s.redis.fallback_quota_share, 0.5);

        let mut e = env(BASE);
        e.insert(
            "GATEWAY_REDIS__URL".into(),
            "redis://:hunter2@127.0.0.1:6379/0".into(),
        );
        e.insert("GATEWAY_REDIS__LIMITER_FALLBACK".into(), "refuse".into());
        e.insert("GATEWAY_REDIS__FALLBACK_QUOTA_SHARE".into(), "0.25".into());
        let s = Settings::load_from(None, e.clone()).unwrap();
        assert_eq!(s.redis.limiter_fallback, LimiterFallback::Refuse);
        assert_eq!(s.redis.fallback_quota_share, 0.25);
        assert!(!format!("{s:?}").contains("hunter2"));

        for (key, value, named) in [
            (
                "GATEWAY_REDIS__URL",
                "rediss://:hunter2@cache:6380",
                "GATEWAY_REDIS__URL",
            ),
            (
                "GATEWAY_REDIS__URL",
                "http://:hunter2@cache",
                "GATEWAY_REDIS__URL",
            ),
            (
                "GATEWAY_REDIS__FALLBACK_QUOTA_SHARE",
                "0",
                "redis.fallback_quota_share",
            ),
            (
                "GATEWAY_REDIS__FALLBACK_QUOTA_SHARE",
                "1.5",
                "redis.fallback_quota_share",
            ),
            ("GATEWAY_REDIS__TIMEOUT_MS", "0", "redis.timeout_ms"),
            ("GATEWAY_REDIS__KEY_PREFIX", " ", "redis.key_prefix"),
            (
                "GATEWAY_REDIS__LIMITER_FALLBACK",
                "maybe",
                "limiter_fallback",
            ),
        ] {
            let mut bad = e.clone();
            bad.insert(key.into(), value.into());
            let err = Settings::load_from(None, bad).unwrap_err().to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let s = Settings::load_from(None, env(BASE)).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
        assert!(!dbg.contains("\"pw\""), "{dbg}");
    }
}
