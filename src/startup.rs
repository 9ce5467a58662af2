//! The application: its state, bound and served, and graceful shutdown. The listener is
//! bound first, so port 0 works and `port()` tells the real one.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;

use crate::settings::Settings;
use crate::AppState;

/// A built, bound, not yet running gateway.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Binds `server.host:server.port` and builds the server.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (server.host/server.port): {e}")
        })?;
        Self::build_with_listener(settings, listener)
    }

    /// Builds the server on an already bound listener.
    pub fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState::new(settings)?);
        let server = crate::server::build(state.clone(), listener)?;
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Starts background tasks (JWKS refresh) and serves until stopped. With `signals`,
    /// SIGTERM/SIGINT start a graceful shutdown: not ready first, then stop accepting and
    /// finish in-flight requests within `server.shutdown_grace_secs`. Once the server has
    /// stopped, the ledger writes its queue in what is left of that grace period (from the
    /// signal on; the whole period when stopped through the handle) and spools the rest.
    pub async fn run_until_stopped(self, signals: bool) -> std::io::Result<()> {
        crate::state::spawn_background(&self.state);
        let grace = self.state.settings.server.shutdown_grace;
        let deadline = Arc::new(OnceLock::new());
        if signals {
            let handle = self.server.handle();
            let state = self.state.clone();
            let drain = state.settings.server.shutdown_drain;
            let deadline = deadline.clone();
            actix_rt::spawn(async move {
                wait_for_signal().await;
                let _ = deadline.set(Instant::now() + drain + grace);
                tracing::info!("shutdown signal received; not ready, draining");
                state.begin_shutdown();
                tokio::time::sleep(drain).await;
                handle.stop(true).await;
            });
        }
        let served = self.server.await;
        let left = deadline.get().map_or(grace, |d: &Instant| {
            d.saturating_duration_since(Instant::now())
        });
        self.state.ledger.shutdown(left).await;
        served
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
