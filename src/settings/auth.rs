//! `auth.*`: how inbound JWTs are verified and what their claims mean.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// Inbound JWT authentication settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Allow-list of JWT algorithms.
    pub algorithms: Vec<JwtAlgorithm>,
    #[serde(serialize_with = "super::redacted")]
    pub hs256_secret: Option<SecretString>,
    /// PEM text of an RSA or EC public key.
    pub public_key_pem: Option<String>,
    /// Path of a PEM file holding an RSA or EC public key.
    pub public_key_pem_file: Option<String>,
    pub jwks_url: Option<String>,
    /// Time between two scheduled JWKS fetches.
    #[serde(rename = "jwks_refresh_secs", with = "duration::secs")]
    pub jwks_refresh: Duration,
    /// Minimum time between two fetches triggered by an unknown `kid`.
    #[serde(rename = "jwks_cooldown_secs", with = "duration::secs")]
    pub jwks_cooldown: Duration,
    /// Bound of one JWKS fetch, connection included.
    #[serde(rename = "jwks_timeout_ms", with = "duration::millis")]
    pub jwks_timeout: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (whole seconds).
    #[serde(rename = "leeway_secs", with = "duration::secs")]
    pub leeway: Duration,
    pub scope_claim: String,
    pub client_id_claim: String,
    /// Verified tokens remembered so a repeated token skips the signature check.
    pub verified_cache_capacity: u64,
}

impl AuthSettings {
    /// Checks that the algorithms have a key and the keys are usable.
    pub fn validate(&self) -> Result<(), SettingsError> {
        ensure(
            !self.algorithms.is_empty(),
            "auth.algorithms",
            "at least one of HS256, RS256, ES256",
        )?;
        let has_public = self.public_key_pem.is_some()
            || self.public_key_pem_file.is_some()
            || self.jwks_url.is_some();
        ensure(
            self.hs256_secret.is_some() || has_public,
            "auth.hs256_secret",
            "a key: auth.hs256_secret, auth.public_key_pem(_file) or auth.jwks_url",
        )?;
        if let Some(secret) = &self.hs256_secret {
            ensure(
                self.algorithms.contains(&JwtAlgorithm::Hs256),
                "auth.algorithms",
                "HS256 in the list when auth.hs256_secret is set",
            )?;
            ensure(
                secret.expose_secret().len() >= 32,
                "auth.hs256_secret",
                "at least 32 bytes",
            )?;
        }
        if let Some(url) = &self.jwks_url {
            ensure(
                reqwest::Url::parse(url).is_ok(),
                "auth.jwks_url",
                "an absolute URL",
            )?;
        }
        ensure(
            !self.scope_claim.trim().is_empty(),
            "auth.scope_claim",
            "a claim name",
        )?;
        Ok(())
    }
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
            jwks_refresh: Duration::from_secs(300),
            jwks_cooldown: Duration::from_secs(30),
            jwks_timeout: Duration::from_secs(3),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            scope_claim: "scope".into(),
            client_id_claim: "client_id".into(),
            verified_cache_capacity: 10_000,
        }
    }
}

/// A JWT signature algorithm the gateway verifies; `none` and the others are never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, keyed by `auth.hs256_secret`.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, from a PEM or the JWKS.
    Rs256,
    /// ECDSA P-256 with SHA-256, from a PEM or the JWKS.
    Es256,
}

impl From<JwtAlgorithm> for &'static str {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }
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
