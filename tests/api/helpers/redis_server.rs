//! A real `redis-server` for the shared-state tests, and gateways (replicas) using it.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audience_gateway::settings::Settings;
use audience_sandbox::{Simulator, SimulatorConfig, SimulatorHandle};

use super::*;

/// A `redis-server` child process on a free local port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING. Panics (never skips) when
    /// `redis-server` is not installed: `apt-get install -y redis-server`.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "redis-server must be installed for these tests (apt-get install -y redis-server)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = ::redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING: {pong:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection, for assertions.
    pub fn connection(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("redis connection")
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends SIGSTOP or SIGCONT: a hung server keeps its connections but never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        self.stop();
    }
}

/// Settings of a gateway in front of `sim` sharing `redis`.
pub fn settings(
    sim: &SimulatorHandle,
    redis: &RedisServer,
    overrides: &[(&str, &str)],
) -> Settings {
    let url = redis.url();
    let mut env = vec![
        ("GATEWAY_REDIS__URL", url.as_str()),
        ("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"),
    ];
    env.extend_from_slice(overrides);
    Settings::load_from(None, test_env(&sim.base_url(), &env)).expect("test settings")
}

/// A gateway in front of `sim` sharing `redis`, once Redis is up for it.
pub async fn replica(
    sim: &SimulatorHandle,
    redis: &RedisServer,
    overrides: &[(&str, &str)],
) -> TestApp {
    let app = spawn_settings(settings(sim, redis, overrides), Some(sim.clone())).await;
    wait_for(&app, "up").await;
    app
}

/// A fresh simulator for the replicas to share.
pub async fn simulator() -> SimulatorHandle {
    Simulator::start(SimulatorConfig::default(), "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

/// Waits until the gateway reports Redis `state`.
pub async fn wait_for(app: &TestApp, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.redis_state() != state {
        assert!(
            Instant::now() < deadline,
            "redis state is {} after 10 s, expected {state}",
            app.state.redis_state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls per command name from `INFO commandstats`.
pub fn command_calls(redis: &RedisServer) -> HashMap<String, u64> {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// `/readyz`: status and body.
pub async fn readiness(app: &TestApp) -> (u16, serde_json::Value) {
    let resp = app.get("/readyz").await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The `redis_up` lines of `/metrics`.
pub async fn redis_up_metric(app: &TestApp) -> String {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("audience_gateway_redis_up "))
        .unwrap_or_default()
        .to_string()
}
