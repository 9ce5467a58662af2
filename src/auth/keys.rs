//! Verification keys: static (HS256 secret, PEM public key) and a JWKS URL whose keys are
//! cached, refreshed periodically, and re-fetched with a cool-down for an unknown `kid`.
//! Every key is bound to exactly one algorithm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, RwLock};

use crate::metrics::Metrics;
use crate::settings::AuthSettings;

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
pub struct BoundKey {
    pub alg: Algorithm,
    pub key: Arc<DecodingKey>,
}

/// Why no key could be found.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The token names a key we do not have (after a refresh, if allowed).
    Unknown,
    /// The JWKS endpoint could not be reached and the key is not cached.
    Unavailable,
}

/// The keys configured without a JWKS URL.
pub fn static_keys(s: &AuthSettings) -> anyhow::Result<Vec<BoundKey>> {
    let mut keys = Vec::new();
    if let Some(secret) = &s.hs256_secret {
        keys.push(BoundKey {
            alg: Algorithm::HS256,
            key: Arc::new(DecodingKey::from_secret(secret.expose_secret().as_bytes())),
        });
    }
    let pem =
        match (&s.public_key_pem, &s.public_key_pem_file) {
            (Some(text), _) => Some(text.clone()),
            (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("auth.public_key_pem_file: cannot read {path}: {e}")
            })?),
            (None, None) => None,
        };
    if let Some(pem) = pem {
        let key = if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
            BoundKey {
                alg: Algorithm::RS256,
                key: Arc::new(k),
            }
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            BoundKey {
                alg: Algorithm::ES256,
                key: Arc::new(k),
            }
        } else {
            anyhow::bail!("auth.public_key_pem: expected an RSA or EC (P-256) public key in PEM");
        };
        keys.push(key);
    }
    Ok(keys)
}

/// Keys by `kid`, as fetched from a JWKS URL.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, BoundKey>>>,
    last_fetch: Mutex<Option<Instant>>,
    cooldown: Duration,
    loaded: std::sync::atomic::AtomicBool,
    revocations: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
}

impl Jwks {
    /// A JWKS source; nothing is fetched until [`Jwks::refresh`].
    pub fn new(s: &AuthSettings, url: String, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(s.jwks_timeout)
            .connect_timeout(s.jwks_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            url,
            http,
            keys: RwLock::new(Arc::new(HashMap::new())),
            last_fetch: Mutex::new(None),
            cooldown: s.jwks_cooldown,
            loaded: Default::default(),
            revocations: Default::default(),
            metrics,
        })
    }

    /// Whether keys were loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many fetches so far removed a key that was known before.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The key for `kid`; an unknown `kid` triggers one fetch per cool-down period.
    pub async fn key(&self, kid: Option<&str>) -> Result<BoundKey, KeyError> {
        let lookup = |keys: &HashMap<String, BoundKey>| match kid {
            Some(kid) => keys.get(kid).cloned(),
            // Without a kid, only an unambiguous single key set will do.
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        };
        if let Some(k) = lookup(&**self.keys.read().await) {
            return Ok(k);
        }
        if kid.is_none() && self.is_loaded() {
            return Err(KeyError::Unknown);
        }
        let mut last = self.last_fetch.lock().await;
        // Another task may have fetched while we waited.
        if let Some(k) = lookup(&**self.keys.read().await) {
            return Ok(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return Err(if self.is_loaded() {
                KeyError::Unknown
            } else {
                KeyError::Unavailable
            });
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(_) => lookup(&**self.keys.read().await).ok_or(KeyError::Unknown),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed");
                Err(KeyError::Unavailable)
            }
        }
    }

    /// Fetches the set now; returns whether any previously known key disappeared. The
    /// periodic refresh does not start the unknown-`kid` cool-down, so a key rotated in
    /// just after it is still fetched on first use.
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        self.fetch().await
    }

    async fn fetch(&self) -> anyhow::Result<bool> {
        let result = async {
            let resp = self.http.get(&self.url).send().await?.error_for_status()?;
            let set: JwkSet = resp.json().await?;
            Ok::<_, anyhow::Error>(set)
        }
        .await;
        self.metrics.jwks_refresh(result.is_ok());
        let set = result?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS256) | None) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(_), Some(KeyAlgorithm::ES256) | None) => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(
                        kid,
                        BoundKey {
                            alg,
                            key: Arc::new(key),
                        },
                    );
                }
                Err(e) => tracing::warn!(kid = %kid, error = %e, "unusable JWK skipped"),
            }
        }
        let mut current = self.keys.write().await;
        let removed = current.keys().any(|k| !keys.contains_key(k));
        tracing::info!(keys = keys.len(), removed, "JWKS loaded");
        if removed {
            self.revocations
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        *current = Arc::new(keys);
        self.loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(removed)
    }
}
