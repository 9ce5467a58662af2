//! `server.*`: the HTTP listener, its limits and shutdown.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Time in-flight requests get to finish on shutdown.
    #[serde(rename = "shutdown_grace_secs", with = "duration::secs")]
    pub shutdown_grace: Duration,
    /// Time between turning not-ready and closing the listener on SIGTERM, so load
    /// balancers stop sending first (Kubernetes deployments use a preStop pause instead).
    #[serde(rename = "shutdown_drain_ms", with = "duration::millis")]
    pub shutdown_drain: Duration,
    pub max_body_bytes: usize,
    /// Largest accepted request head (all header names and values); larger gets 431.
    pub max_header_bytes: usize,
    /// Time a client has to send its request head; zero turns the limit off.
    #[serde(rename = "client_request_timeout_ms", with = "duration::millis")]
    pub client_request_timeout: Duration,
    /// Time a client has to send its whole request body once the handler reads it; a body
    /// that stops arriving or trickles in is cut with 408 and the connection closed.
    #[serde(rename = "client_body_timeout_ms", with = "duration::millis")]
    pub client_body_timeout: Duration,
    /// Time a client has to take a response once it is ready; past it the connection is
    /// closed (a client that reads too slowly, or not at all).
    #[serde(rename = "client_response_timeout_ms", with = "duration::millis")]
    pub client_response_timeout: Duration,
    /// Upper bound for one whole request through the gateway (the caller's budget).
    #[serde(rename = "request_budget_ms", with = "duration::millis")]
    pub request_budget: Duration,
    pub cors_allowed_origins: Vec<String>,
}

impl ServerSettings {
    /// Whether browser origins are allowed (the CORS middleware is installed): it adds
    /// headers to every answer, so cached hits are then answered inside it.
    pub fn cors_configured(&self) -> bool {
        !self.cors_allowed_origins.is_empty()
    }

    /// Checks what the types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let timeout = self.client_request_timeout;
        // actix-web measures it with a clock that ticks every 500 ms.
        ensure(
            timeout.is_zero() || timeout >= Duration::from_secs(1),
            "server.client_request_timeout_ms",
            "0 (off) or at least 1000",
        )?;
        ensure(
            self.client_body_timeout >= Duration::from_millis(100),
            "server.client_body_timeout_ms",
            "at least 100",
        )?;
        ensure(
            self.client_response_timeout >= Duration::from_secs(1),
            "server.client_response_timeout_ms",
            "at least 1000",
        )?;
        ensure(
            self.max_header_bytes >= 1024,
            "server.max_header_bytes",
            "at least 1024",
        )?;
        ensure(
            self.max_body_bytes > 0,
            "server.max_body_bytes",
            "a positive number of bytes",
        )?;
        Ok(())
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            workers: 0,
            shutdown_grace: Duration::from_secs(25),
            shutdown_drain: Duration::ZERO,
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            client_request_timeout: Duration::from_secs(5),
            client_body_timeout: Duration::from_secs(10),
            client_response_timeout: Duration::from_secs(30),
            request_budget: Duration::from_secs(15),
            cors_allowed_origins: Vec::new(),
        }
    }
}
