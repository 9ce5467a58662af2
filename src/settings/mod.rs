//! Typed, layered settings: built-in defaults, then an optional TOML file, then environment
//! variables prefixed `GATEWAY_` with `__` between levels (`GATEWAY_UPSTREAM__BASE_URL`),
//! then the standard `OTEL_*` variables over the `otel` table.
//!
//! One submodule per section (`server`, `auth`, `upstream`, ...), each with its `validate`.
//! Times are `Duration`s read from the whole numbers their setting names state the unit of
//! (`upstream.request_timeout_ms`). Every error names the setting and its environment
//! variable. Nothing outside this module reads the environment. Secrets are
//! `SecretString`s: their `Debug` output is redacted and they are exposed only at the line
//! that uses them.

mod auth;
mod cache;
mod duration;
mod idempotency;
mod ledger;
mod log;
mod otel;
mod rate_limit;
mod redis;
mod server;
mod upstream;

use std::collections::HashMap;
use std::path::Path;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

pub use auth::{AuthSettings, JwtAlgorithm};
pub use cache::CacheSettings;
pub use idempotency::IdempotencySettings;
pub use ledger::{LedgerBackend, LedgerSettings, SPOOL_FILE, SQLITE_FILE};
pub use log::{LogFormat, LogSettings};
pub use otel::{OtelExporter, OtelSettings, Sampler};
pub use rate_limit::RateLimitSettings;
pub use redis::{LimiterFallback, RedisSettings, RedisTarget, RedisTopology};
pub use server::ServerSettings;
pub use upstream::UpstreamSettings;

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "GATEWAY";
/// Environment variable naming the optional config file.
pub const CONFIG_FILE_ENV: &str = "GATEWAY_CONFIG";

/// A setting is missing or malformed; the message names the setting and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(pub String);

/// All settings of the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(default)]
    pub ledger: LedgerSettings,
    #[serde(default)]
    pub otel: OtelSettings,
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

    /// The layers without [`Settings::validate`] (for tools such as `token`).
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
        let otel_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("OTEL_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
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
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(named_error)?;
        settings.otel.apply_env(&otel_env)?;
        Ok(settings)
    }

    /// Checks each section for what its types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.upstream.validate()?;
        self.auth.validate()?;
        self.server.validate()?;
        self.rate_limit.validate()?;
        self.cache.validate()?;
        self.redis.validate()?;
        self.log.validate()?;
        self.otel.validate()?;
        self.ledger.validate()
    }

    /// The settings as TOML, in the shape of the config file, with every secret written as
    /// [`REDACTED`] (what `config check` prints).
    pub fn to_toml(&self) -> Result<String, SettingsError> {
        toml::to_string_pretty(self).map_err(|e| SettingsError(format!("cannot print: {e}")))
    }
}

/// What a set secret is printed as.
pub const REDACTED: &str = "[REDACTED]";

/// Serializes a set secret as [`REDACTED`], never its value.
fn redacted<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
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

/// Fails naming `setting` and what is `expected` of it unless `ok`.
fn ensure(ok: bool, setting: &str, expected: &str) -> Result<(), SettingsError> {
    if ok {
        Ok(())
    } else {
        Err(SettingsError(format!(
            "{}: expected {expected}",
            with_env(setting)
        )))
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An environment of `pairs` (also for the sections' own tests).
    pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
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
        assert_eq!(s.cache.ttl, Duration::from_secs(30));
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
    fn durations_keep_their_setting_names_and_units() {
        let s = Settings::load_from(None, env(BASE)).unwrap();
        assert_eq!(s.upstream.request_timeout, Duration::from_secs(10));
        assert_eq!(s.upstream.max_session_age, None);
        assert_eq!(s.idempotency.ttl, Duration::from_secs(24 * 3600));

        let dir = std::env::temp_dir().join(format!("ag-durations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            "[upstream]\nrequest_timeout_ms = 1500\nmax_session_age_secs = 600\n",
        )
        .unwrap();
        let mut e = env(BASE);
        e.insert("GATEWAY_REDIS__HEALTH_INTERVAL_MS".into(), "250".into());
        e.insert("GATEWAY_CACHE__TTL_SECS".into(), "0".into());
        let s = Settings::load_from(Some(&path), e).unwrap();
        assert_eq!(s.upstream.request_timeout, Duration::from_millis(1500));
        assert_eq!(s.upstream.max_session_age, Some(Duration::from_secs(600)));
        assert_eq!(s.redis.health_interval, Duration::from_millis(250));
        assert_eq!(s.cache.ttl, Duration::ZERO);

        for (key, value, expected) in [
            (
                "GATEWAY_UPSTREAM__REQUEST_TIMEOUT_MS",
                "10s",
                "invalid configuration: upstream.request_timeout_ms \
                 (env GATEWAY_UPSTREAM__REQUEST_TIMEOUT_MS): expected an integer, found string \"10s\"",
            ),
            (
                "GATEWAY_SERVER__CLIENT_REQUEST_TIMEOUT_MS",
                "500",
                "invalid configuration: server.client_request_timeout_ms \
                 (env GATEWAY_SERVER__CLIENT_REQUEST_TIMEOUT_MS): expected 0 (off) or at least 1000",
            ),
        ] {
            let mut bad = env(BASE);
            bad.insert(key.into(), value.into());
            let err = Settings::load_from(None, bad).unwrap_err().to_string();
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn redis_settings_have_defaults_and_are_validated() {
        let s = Settings::load_from(None, env(BASE)).unwrap();
        assert!(s.redis.url.is_none());
        assert_eq!(s.redis.timeout, Duration::from_millis(200));
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
                "redis+cluster://:hunter2@cache",
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
            ("GATEWAY_REDIS__KEY_PREFIX", "gw{1}", "redis.key_prefix"),
            ("GATEWAY_REDIS__PASSWORD", "hunter3", "redis.password"),
            ("GATEWAY_REDIS__CA_FILE", "/ca.pem", "redis.ca_file"),
            (
                "GATEWAY_REDIS__CLIENT_KEY_FILE",
                "/key.pem",
                "redis.client_cert_file",
            ),
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

    #[test]
    fn toml_output_redacts_secrets_and_round_trips() {
        let mut e = env(BASE);
        e.insert(
            "GATEWAY_REDIS__URL".into(),
            "redis://:hunter2@cache:6379".into(),
        );
        let s = Settings::load_from(None, e).unwrap();
        let text = s.to_toml().unwrap();
        for secret in ["0123456789abcdef", "\"pw\"", "hunter2"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("password = \"[REDACTED]\""), "{text}");
        assert!(text.contains("request_timeout_ms = "), "{text}");
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.upstream.request_timeout, s.upstream.request_timeout);
        assert_eq!(back.auth.algorithms, s.auth.algorithms);
    }

    #[test]
    fn log_level_must_be_a_filter_of_levels() {
        for ok in [
            "info",
            "WARN",
            "info,audience_gateway=debug",
            "audit=info,warn",
            "off",
        ] {
            let e = env(&[BASE, &[("GATEWAY_LOG__LEVEL", ok)]].concat());
            assert!(Settings::load_from(None, e).is_ok(), "{ok}");
        }
        for bad in ["infoo", "", "verbose,info", "audience_gateway=loud"] {
            let e = env(&[BASE, &[("GATEWAY_LOG__LEVEL", bad)]].concat());
            let err = Settings::load_from(None, e).unwrap_err().to_string();
            assert!(
                err.contains("log.level (env GATEWAY_LOG__LEVEL)"),
                "{bad}: {err}"
            );
        }
    }
}
