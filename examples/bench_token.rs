//! Bench-only: mints a token with every scope, for `bench/run` and `bench/load`.
//!
//! ```text
//! bench_token --alg HS256 --secret <32+ bytes>
//! bench_token --alg RS256 --key rsa_private.pem     (PKCS#8 PEM, e.g. `openssl genpkey`)
//! bench_token --alg ES256 --key ec_private.pem      (P-256, PKCS#8 PEM)
//! ```

use std::path::PathBuf;

use audience_gateway::auth::ALL_SCOPES;
use clap::Parser;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// HS256, RS256 or ES256.
    #[arg(long)]
    alg: String,
    /// HS256 secret.
    #[arg(long)]
    secret: Option<String>,
    /// Private key PEM file for RS256 or ES256.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Subject.
    #[arg(long, default_value = "bench-user")]
    sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pem = || -> anyhow::Result<Vec<u8>> {
        let path = args
            .key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--key is required for {}", args.alg))?;
        Ok(std::fs::read(path)?)
    };
    let (alg, key) = match args.alg.as_str() {
        "HS256" => {
            let secret = args
                .secret
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--secret is required for HS256"))?;
            (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
            )
        }
        "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem()?)?),
        "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem()?)?),
        other => anyhow::bail!("unsupported algorithm {other}"),
    };
    let now = get_current_timestamp();
    let claims = json!({
        "sub": args.sub,
        "scope": ALL_SCOPES.join(" "),
        "iat": now,
        "nbf": now.saturating_sub(1),
        "exp": now + args.ttl_secs,
    });
    println!("{}", encode(&Header::new(alg), &claims, &key)?);
    Ok(())
}
