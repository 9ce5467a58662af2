//! Inbound authentication and authorization: JWT bearer tokens verified against an explicit
//! algorithm allow-list and keys bound to one algorithm each, then a scope per operation.
//!
//! Handlers take an [`Authorized<S>`] argument: the scope a route needs is visible in its
//! signature, and handlers never parse headers.

mod keys;
pub mod mint;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::Engine;
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::{AuthSettings, JwtAlgorithm};
pub use keys::{static_keys, BoundKey, Jwks, KeyError};

/// Longest accepted token, in bytes; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The authenticated caller, available to handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `sub` claim.
    pub sub: String,
    /// The client id claim of service tokens, if present.
    pub client_id: Option<String>,
    /// Granted scopes.
    pub scopes: HashSet<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl Caller {
    /// The identity quotas and idempotency keys are scoped to: the client id of a service
    /// token, else the subject.
    pub fn principal(&self) -> &str {
        self.client_id.as_deref().unwrap_or(&self.sub)
    }
}

/// Why a token was refused. Texts are fixed: they never echo the token.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid(&'static str),
    KeysUnavailable,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::Unauthorized {
                detail: "a bearer token is required".into(),
            },
            AuthError::Invalid(why) => ApiError::Unauthorized { detail: why.into() },
            AuthError::KeysUnavailable => ApiError::KeysUnavailable,
        }
    }
}

/// Verifies tokens; cheap to share.
pub struct Authenticator {
    allowed: Vec<Algorithm>,
    static_keys: Vec<BoundKey>,
    jwks: Option<Arc<Jwks>>,
    validations: HashMap<Algorithm, Validation>,
    scope_claim: String,
    client_id_claim: String,
    verified: moka::sync::Cache<Box<str>, Arc<Caller>>,
    /// JWKS revocation count the verified cache was last emptied for.
    seen_revocations: std::sync::atomic::AtomicU64,
    /// Identity in [`LAST_VERIFIED`].
    id: u64,
}

/// Tells authenticators apart in [`LAST_VERIFIED`] (tests run several in one thread).
static NEXT_AUTHENTICATOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The token this thread verified last: a caller sends the same token request after
    /// request, and comparing it costs less than hashing it for the shared cache. Valid
    /// only for the same authenticator and the same JWKS revocation count.
    static LAST_VERIFIED: RefCell<Option<LastVerified>> = const { RefCell::new(None) };
}

struct LastVerified {
    authenticator: u64,
    revocations: u64,
    token: Box<str>,
    caller: Arc<Caller>,
}

struct UntilExp;

impl moka::Expiry<Box<str>, Arc<Caller>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        caller: &Arc<Caller>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            caller.expires_at.saturating_sub(now_secs()),
        ))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(alg: JwtAlgorithm) -> Self {
        match alg {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

impl Authenticator {
    /// Builds the verifier from settings; JWKS keys are fetched later (see `start_jwks`).
    pub fn new(s: &AuthSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let allowed: Vec<Algorithm> = s.algorithms.iter().map(|&a| a.into()).collect();
        let jwks = s
            .jwks_url
            .clone()
            .map(|url| Jwks::new(s, url, metrics.clone()).map(Arc::new))
            .transpose()?;
        let validations = allowed
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = s.leeway.as_secs();
                v.validate_nbf = true;
                v.validate_exp = true;
                let mut required = vec!["exp"];
                match &s.issuer {
                    Some(iss) => {
                        v.set_issuer(&[iss]);
                        required.push("iss");
                    }
                    None => v.iss = None,
                }
                match &s.audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        required.push("aud");
                    }
                    None => v.validate_aud = false,
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Ok(Self {
            allowed,
            static_keys: static_keys(s)?,
            jwks,
            validations,
            scope_claim: s.scope_claim.clone(),
            client_id_claim: s.client_id_claim.clone(),
            verified: moka::sync::Cache::builder()
                .max_capacity(s.verified_cache_capacity)
                .expire_after(UntilExp)
                .build(),
            seen_revocations: Default::default(),
            id: NEXT_AUTHENTICATOR_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The JWKS source, if configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Arc<Caller>, AuthError> {
        let token = bearer_token(header.ok_or(AuthError::Missing)?)?;
        let revocations = self.revocations();
        if let Some(caller) = self.known(token, revocations) {
            return Ok(caller);
        }
        let caller = Arc::new(self.verify(token).await?);
        if caller.expires_at > now_secs() {
            self.verified.insert(token.into(), caller.clone());
            self.remember(token, revocations, &caller);
        }
        Ok(caller)
    }

    /// The caller of `req` if its bearer token is valid and grants scope `S`: what the
    /// [`Authorized`] extractor and the cache layer both decide with. The caller is kept in
    /// the request's extensions for the access log, even when the scope is missing.
    pub async fn authorize<S: Scope>(&self, req: &HttpRequest) -> Result<Arc<Caller>, ApiError> {
        let header = match req.headers().get(AUTHORIZATION) {
            Some(v) => Some(header_text(v).ok_or_else(|| ApiError::Unauthorized {
                detail: "the Authorization header is not valid text".into(),
            })?),
            None => None,
        };
        let caller = self.authenticate(header).await?;
        req.extensions_mut().insert(CallerSubject(caller.clone()));
        if !caller.scopes.contains(S::NAME) {
            return Err(ApiError::Forbidden { scope: S::NAME });
        }
        Ok(caller)
    }

    /// The JWKS revocation count; a change empties the verified-token cache first.
    fn revocations(&self) -> u64 {
        let Some(jwks) = &self.jwks else { return 0 };
        let revocations = jwks.revocations();
        if self.seen_revocations.swap(revocations, Ordering::AcqRel) != revocations {
            self.verified.invalidate_all();
        }
        revocations
    }

    /// A verified, unexpired caller for `token` from this thread's memo or the shared cache.
    fn known(&self, token: &str, revocations: u64) -> Option<Arc<Caller>> {
        let now = now_secs();
        if let Some(caller) = self.last_verified(token, revocations) {
            if caller.expires_at > now {
                return Some(caller);
            }
        }
        let caller = self.verified.get(token).filter(|c| c.expires_at > now)?;
        self.remember(token, revocations, &caller);
        Some(caller)
    }

    /// This thread's last verified token, if it is `token` and no key was revoked since.
    fn last_verified(&self, token: &str, revocations: u64) -> Option<Arc<Caller>> {
        LAST_VERIFIED.with(|last| {
            last.borrow().as_ref().and_then(|l| {
                (l.authenticator == self.id && l.revocations == revocations && *l.token == *token)
                    .then(|| l.caller.clone())
            })
        })
    }

    fn remember(&self, token: &str, revocations: u64, caller: &Arc<Caller>) {
        LAST_VERIFIED.with(|last| {
            *last.borrow_mut() = Some(LastVerified {
                authenticator: self.id,
                revocations,
                token: token.into(),
                caller: caller.clone(),
            });
        });
    }

    /// Verifies a bare token (no `Bearer`), bypassing the verified-token cache.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let raw_header = token
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
            .ok_or(AuthError::Invalid("the token is malformed"))?;
        // RFC 7515 4.1.11: we implement no extensions, so any `crit` must be refused.
        if raw_header.contains_key("crit") {
            return Err(AuthError::Invalid(
                "the token has critical header parameters",
            ));
        }
        let alg_name = raw_header.get("alg").and_then(Value::as_str).unwrap_or("");
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| self.allowed.contains(a))
            .ok_or(AuthError::Invalid("the token's algorithm is not allowed"))?;
        let kid = match raw_header.get("kid") {
            None => None,
            Some(Value::String(k)) if k.len() <= 256 => Some(k.as_str()),
            Some(_) => return Err(AuthError::Invalid("the token's key id is invalid")),
        };
        let key = self.key_for(alg, kid).await?;
        if key.alg != alg {
            return Err(AuthError::Invalid(
                "the token's algorithm does not match its key",
            ));
        }
        let validation = self
            .validations
            .get(&alg)
            .ok_or(AuthError::Invalid("the token's algorithm is not allowed"))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| AuthError::Invalid(describe(&e)))?;
        self.caller(data.claims)
    }

    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<BoundKey, AuthError> {
        if let Some(k) = self.static_keys.iter().find(|k| k.alg == alg) {
            return Ok(k.clone());
        }
        match &self.jwks {
            Some(jwks) if alg != Algorithm::HS256 => jwks.key(kid).await.map_err(|e| match e {
                KeyError::Unknown => AuthError::Invalid("the token's key is unknown"),
                KeyError::Unavailable => AuthError::KeysUnavailable,
            }),
            _ => Err(AuthError::Invalid(
                "no key is configured for the token's algorithm",
            )),
        }
    }

    fn caller(&self, claims: Map<String, Value>) -> Result<Caller, AuthError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        let client_id = text(&self.client_id_claim);
        let sub = text("sub")
            .or_else(|| client_id.clone())
            .ok_or(AuthError::Invalid("the token has no subject"))?;
        let mut scopes = HashSet::new();
        let claim = claims.get(&self.scope_claim).or_else(|| claims.get("scp"));
        match claim {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_string)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => {}
        }
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::Invalid("the token has no valid exp"))?;
        Ok(Caller {
            sub,
            client_id,
            scopes,
            expires_at,
        })
    }
}

/// A header value as text. Parsed header values hold no control characters, so ASCII is
/// exactly what `to_str` accepts; `is_ascii` checks a word at a time.
fn header_text(v: &HeaderValue) -> Option<&str> {
    std::str::from_utf8(v.as_bytes())
        .ok()
        .filter(|s| s.is_ascii())
}

/// The token of an `Authorization: Bearer <token>` value, checked for presence and size.
fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        // HTTP strips trailing blanks, so `Bearer ` with no token arrives as `Bearer`.
        None if header.trim().eq_ignore_ascii_case("bearer") => "",
        _ => {
            return Err(AuthError::Invalid(
                "the Authorization scheme must be Bearer",
            ))
        }
    };
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid("the token is too large"));
    }
    Ok(token)
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "the token has expired",
        ImmatureSignature => "the token is not valid yet",
        InvalidIssuer => "the token's issuer is not accepted",
        InvalidAudience => "the token's audience is not accepted",
        MissingRequiredClaim(_) => "the token lacks a required claim",
        InvalidSignature => "the token's signature is invalid",
        InvalidAlgorithm => "the token's algorithm is not allowed",
        _ => "the token is invalid",
    }
}

/// A scope a route requires.
pub trait Scope {
    /// The scope string, e.g. `audiences:read`.
    const NAME: &'static str;
}

macro_rules! scopes {
    ($($(#[$doc:meta])* $ty:ident => $name:literal),* $(,)?) => {$(
        $(#[$doc])*
        pub struct $ty;
        impl Scope for $ty {
            const NAME: &'static str = $name;
        }
    )*};
}

scopes! {
    /// `audiences:read`: read audiences, insights, uploads and platform accounts.
    Read => "audiences:read",
    /// `audiences:write`: create campaigns and audiences, update audiences.
    Write => "audiences:write",
    /// `audiences:delete`: delete audiences.
    Delete => "audiences:delete",
    /// `audiences:activate`: activate audiences on platform accounts.
    Activate => "audiences:activate",
    /// `cache:purge`: drop the gateway's cached copies (an operator's scope).
    Purge => "cache:purge",
}

/// Every scope, for the OpenAPI document and token minting.
pub const ALL_SCOPES: [&str; 5] = [
    Read::NAME,
    Write::NAME,
    Delete::NAME,
    Activate::NAME,
    Purge::NAME,
];

/// An authenticated caller holding scope `S`.
pub struct Authorized<S: Scope> {
    pub caller: Arc<Caller>,
    _scope: PhantomData<S>,
}

impl<S: Scope> std::ops::Deref for Authorized<S> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// The request's caller, kept in request extensions for the access log (which logs its
/// subject). Shared, not copied: every authenticated request sets it.
#[derive(Clone)]
pub struct CallerSubject(pub Arc<Caller>);

impl<S: Scope + 'static> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = req
                .app_data::<web::Data<Authenticator>>()
                .ok_or(ApiError::Internal)?
                .clone();
            let caller = auth.authorize::<S>(&req).await?;
            Ok(Authorized {
                caller,
                _scope: PhantomData,
            })
        })
    }
}
