//! The command line: `serve` (default), `sandbox`, `token`, `openapi`, `healthcheck`,
//! `config check`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;

#[cfg(feature = "sandbox")]
use audience_sandbox::{ExpiryStyle, Simulator, SimulatorConfig, VendorStyle};

use crate::auth::mint::{mint_hs256, TokenSpec, SANDBOX_SECRET};
use crate::auth::ALL_SCOPES;
use crate::settings::{Settings, CONFIG_FILE_ENV};
use crate::{telemetry, AppState, Application};

/// audience-gateway: a JWT-authenticated REST gateway over the Digital Audience API.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// TOML config file (between built-in defaults and GATEWAY_* environment variables).
    #[arg(long, global = true, env = CONFIG_FILE_ENV)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway against the configured upstream (the default).
    Serve,
    /// Run a simulated Digital Audience API and the gateway in front of it, and print a token.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Mint a token for the configured HS256 secret (the sandbox secret by default).
    Token(TokenArgs),
    /// Print the OpenAPI document.
    Openapi {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when the URL answers 2xx (for container health checks without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and check the settings as `serve` does, print them as TOML with secrets
    /// redacted, and exit non-zero with start-up's message when they are invalid.
    Check,
}

/// `sandbox` options.
#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Gateway port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Simulated upstream address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub upstream_addr: String,
    /// Upstream session lifetime in seconds.
    #[arg(long, default_value_t = 1800)]
    pub session_ttl_secs: u64,
    /// How the simulator reports an expired session: unauthorized (401), forbidden (403),
    /// redirect (302 to the login page), login-page (200 with its HTML) or envelope (200 with
    /// an envelope whose statusCode is 401).
    #[arg(long, default_value = "unauthorized")]
    pub expiry_style: ExpiryStyle,
    /// Where the simulator departs from the contract, a comma-separated list: contract (none),
    /// strict (required fields, no unknown fields, JSON Content-Type, 64-bit ids; 400
    /// ProblemDetails), problem-details (refusals as 400/404 ProblemDetails), nulls (nulls,
    /// quoted ids, date-only history keys, unknown fields), aspnet (those three) or azure
    /// (strict and problem-details hosted as on Azure App Service: two instances behind an
    /// affinity cookie, sliding sessions, 204 answers, ids beyond 32 bits, .NET dates).
    #[arg(long, default_value = "contract")]
    pub vendor_style: VendorStyle,
    /// Seeded audiences (ids from 1001).
    #[arg(long, default_value_t = 5)]
    pub seed_audiences: usize,
    /// Latency added to every upstream call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of upstream calls answered with HTTP 500 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
}

/// `token` options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long, default_value = "sandbox-user")]
    pub sub: String,
    /// Space-separated scopes; every scope by default.
    #[arg(long)]
    pub scope: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    pub ttl_secs: u64,
    /// Client id claim, for service tokens.
    #[arg(long)]
    pub client_id: Option<String>,
}

fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Runs the parsed command; the exit code is the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = Settings::load(file)?;
            // Held until the command returns: its drop exports the last spans and writes
            // out the last log lines.
            let _telemetry = telemetry::init(&settings.log, &settings.otel)?;
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "audience-gateway listening");
            app.run_until_stopped(true).await?;
            tracing::info!("stopped");
            Ok(())
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sandbox(file, args).await,
        Command::Token(args) => {
            let settings = Settings::load_unvalidated(file, process_env())?;
            let secret = settings
                .auth
                .hs256_secret
                .as_ref()
                .map(|s| s.expose_secret().to_string())
                .unwrap_or_else(|| SANDBOX_SECRET.to_string());
            let spec = token_spec(&settings, args);
            println!("{}", mint_hs256(secret.as_bytes(), &spec)?);
            Ok(())
        }
        Command::Openapi { output } => {
            let text = crate::openapi::spec_json();
            match output {
                Some(path) => std::fs::write(path, text)?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let settings = checked(file)?;
            print!("{}", settings.to_toml()?);
            Ok(())
        }
        Command::Healthcheck { url, timeout_ms } => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(timeout_ms))
                .build()?;
            let status = client.get(&url).send().await?.status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok(())
        }
    }
}

/// The settings `serve` runs with, checked the way `serve` checks them (the same loading
/// and validation, then the application state built from them: keys read, clients built,
/// nothing connected), so an error has start-up's message.
fn checked(file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let settings = Settings::load(file)?;
    AppState::new(settings.clone())?;
    Ok(settings)
}

fn token_spec(settings: &Settings, args: TokenArgs) -> TokenSpec {
    TokenSpec {
        sub: args.sub,
        scopes: args
            .scope
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_else(|| ALL_SCOPES.iter().map(|s| s.to_string()).collect()),
        ttl_secs: args.ttl_secs,
        client_id: args.client_id,
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
    }
}

#[cfg(feature = "sandbox")]
async fn sandbox(file: Option<&std::path::Path>, args: SandboxArgs) -> anyhow::Result<()> {
    let sim_config = SimulatorConfig {
        session_ttl: Duration::from_secs(args.session_ttl_secs),
        expiry_style: args.expiry_style,
        style: args.vendor_style,
        seed_audiences: args.seed_audiences,
        latency: Duration::from_millis(args.latency_ms),
        error_rate: args.error_rate,
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(sim_config.clone(), &args.upstream_addr).await?;
    let mut env = process_env();
    // The sandbox always talks to its own simulator; the rest stays configurable.
    env.insert("GATEWAY_UPSTREAM__BASE_URL".into(), sim.base_url());
    env.insert(
        "GATEWAY_UPSTREAM__USERNAME".into(),
        sim_config.username.clone(),
    );
    env.insert(
        "GATEWAY_UPSTREAM__PASSWORD".into(),
        sim_config.password.clone(),
    );
    env.remove("GATEWAY_UPSTREAM__SESSION_COOKIE");
    env.entry("GATEWAY_SERVER__HOST".into())
        .or_insert_with(|| "127.0.0.1".into());
    env.insert("GATEWAY_SERVER__PORT".into(), args.port.to_string());
    env.entry("GATEWAY_LOG__FORMAT".into())
        .or_insert_with(|| "text".into());
    let has_key = [
        "HS256_SECRET",
        "PUBLIC_KEY_PEM",
        "PUBLIC_KEY_PEM_FILE",
        "JWKS_URL",
    ]
    .iter()
    .any(|k| env.contains_key(&format!("GATEWAY_AUTH__{k}")));
    if !has_key {
        env.insert("GATEWAY_AUTH__HS256_SECRET".into(), SANDBOX_SECRET.into());
    }
    let settings = Settings::load_from(file, env)?;
    let _telemetry = telemetry::init(&settings.log, &settings.otel)?;
    let secret = settings
        .auth
        .hs256_secret
        .as_ref()
        .map(|s| s.expose_secret().to_string());
    let token_args = TokenArgs {
        sub: "sandbox-user".into(),
        scope: None,
        ttl_secs: 12 * 3600,
        client_id: None,
    };
    let spec = token_spec(&settings, token_args);
    let app = Application::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    println!("audience-gateway sandbox");
    println!("  gateway:    {base}");
    println!("  swagger ui: {base}/docs/");
    println!(
        "  upstream:   {} (simulated Digital Audience API)",
        sim.base_url()
    );
    match secret {
        Some(secret) => {
            let token = mint_hs256(secret.as_bytes(), &spec)?;
            println!("  token (all scopes, 12 h):\n{token}\n");
            println!("  try: curl -s -H \"Authorization: Bearer $TOKEN\" {base}/v1/audiences/1001");
        }
        None => println!("  (no HS256 secret configured: bring your own tokens)"),
    }
    app.run_until_stopped(true).await?;
    sim.stop().await;
    Ok(())
}
