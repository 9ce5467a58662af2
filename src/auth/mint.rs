//! Token minting for the sandbox and tests (`audience-gateway token`).

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

/// Well-known HS256 secret of the sandbox. Never configure it in production: anyone can
/// mint tokens for it.
pub const SANDBOX_SECRET: &str = "sandbox-only-secret-do-not-use-in-production";

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub scopes: Vec<String>,
    pub ttl_secs: u64,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Mints an HS256 token.
pub fn mint_hs256(secret: &[u8], spec: &TokenSpec) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({
        "sub": spec.sub,
        "scope": spec.scopes.join(" "),
        "iat": now,
        "nbf": now.saturating_sub(1),
        "exp": now + spec.ttl_secs,
    });
    if let Some(c) = &spec.client_id {
        claims["client_id"] = json!(c);
    }
    if let Some(i) = &spec.issuer {
        claims["iss"] = json!(i);
    }
    if let Some(a) = &spec.audience {
        claims["aud"] = json!(a);
    }
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}
