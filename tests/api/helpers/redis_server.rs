//! Real Redis deployments for the shared-state tests, on loopback: one `redis-server`, one
//! behind TLS with client certificates (a CA and certificates made here with the `openssl`
//! CLI), a primary and a replica watched by three `redis-sentinel`s, and a three-primary
//! Redis Cluster made with `redis-cli --cluster create` (over plain TCP or TLS); and gateways
//! (replicas) using them.
//! [`on_every_topology!`] runs one scenario on each.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audience_gateway::settings::Settings;
use audience_sandbox::{Simulator, SimulatorConfig, SimulatorHandle};

use super::*;

/// Master name the sentinels watch.
pub const MASTER: &str = "mymaster";

/// A directory of its own under the system's temporary directory.
pub fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join(format!("ag-{what}-{}", std::process::id()))
        .join(n.to_string());
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `redis-server` (or `redis-sentinel`) child process on a free local port, killed on
/// drop. Always listens on plain TCP at `port`, which the tests' own connections use.
pub struct RedisServer {
    port: u16,
    /// Arguments after the port (TLS, replication, cluster, or a sentinel's config file).
    args: Vec<String>,
    program: &'static str,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING. Panics (never skips) when
    /// `redis-server` is not installed: `apt-get install -y redis-server`.
    pub fn start() -> Self {
        Self::start_with(port(), "redis-server", Vec::new())
    }

    fn start_with(port: u16, program: &'static str, args: Vec<String>) -> Self {
        let mut server = Self {
            port,
            args,
            program,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(self.program);
        if self.program == "redis-sentinel" {
            // The config file first; a sentinel rewrites it as it learns the topology.
            cmd.args(&self.args)
                .args(["--port", &self.port.to_string()]);
        } else {
            // A directory of its own, emptied: a server starts with nothing, whatever a
            // `dump.rdb` another process left in the shared temporary directory.
            let dir = std::env::temp_dir().join(format!(
                "ag-redis-data-{}-{}",
                std::process::id(),
                self.port
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a data directory for redis-server");
            cmd.args(["--port", &self.port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .args(&self.args);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} must be installed for these tests (apt-get install -y redis-server \
                     redis-sentinel): {e}",
                    self.program
                )
            });
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
                "{} on port {} did not answer PING: {pong:?}",
                self.program,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The plain TCP port.
    pub fn port(&self) -> u16 {
        self.port
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

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed for the TLS tests (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA made for one test, and certificates it signs (EC P-256 keys, PEM files in `dir`).
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

impl TestCa {
    /// A new CA `<name>.crt` / `<name>.key` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &crt,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The CA certificate file.
    pub fn cert(&self) -> String {
        self.dir
            .join(format!("{}.crt", self.name))
            .display()
            .to_string()
    }

    /// Issues `<name>.crt` / `<name>.key` for `127.0.0.1` and `localhost`, for servers
    /// (`serverAuth`) or clients (`clientAuth`); returns (certificate, key) paths.
    pub fn issue(&self, name: &str, usage: &str) -> (String, String) {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .expect("extension file");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{}.crt", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        );
        let path = |f: &str| self.dir.join(f).display().to_string();
        (path(&crt), path(&key))
    }
}

/// Polls `ready` on a connection to `node` until it holds (20 s at most).
fn await_node(
    node: &RedisServer,
    mut ready: impl FnMut(&mut ::redis::Connection) -> Result<(), String>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Err(state) = ready(&mut node.connection()) else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "{} on port {} never got ready: {state}",
            node.program,
            node.port
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA, a server certificate (`usage`) and a client certificate in `dir`: the
/// `redis-server` arguments that serve TLS with them and require a client certificate
/// (the `--tls-port` aside), and the `GATEWAY_REDIS__*` settings of a client.
fn tls_material(dir: &Path, usage: &str) -> (Vec<String>, Vec<(String, String)>) {
    let ca = TestCa::new(dir, "ca");
    let (cert, key) = ca.issue("server", usage);
    let (client_cert, client_key) = ca.issue("client", "clientAuth");
    let args = [
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca.cert(),
        "--tls-auth-clients",
        "yes",
    ];
    let env = vec![
        ("GATEWAY_REDIS__CA_FILE".to_string(), ca.cert()),
        ("GATEWAY_REDIS__CLIENT_CERT_FILE".to_string(), client_cert),
        ("GATEWAY_REDIS__CLIENT_KEY_FILE".to_string(), client_key),
    ];
    (args.iter().map(|a| a.to_string()).collect(), env)
}

/// The ways Redis is deployed that the gateway supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server over plain TCP.
    Server,
    /// One server over TLS that requires a client certificate.
    Tls,
    /// A primary and a replica, three sentinels.
    Sentinel,
    /// Three primaries without replicas.
    Cluster,
    /// The same over TLS, with client certificates.
    TlsCluster,
}

/// A running Redis deployment of one [`Topology`], with the settings that name it.
pub struct RedisDeployment {
    pub topology: Topology,
    /// Data nodes: the server; the primary then the replica; the cluster's primaries.
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
    /// `GATEWAY_REDIS__*` settings that point a gateway at it.
    env: Vec<(String, String)>,
}

impl RedisDeployment {
    /// Starts one and waits until it serves.
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Server => Self::server(),
            Topology::Tls => Self::tls(),
            Topology::Sentinel => Self::sentinel(),
            Topology::Cluster => Self::cluster(false),
            Topology::TlsCluster => Self::cluster(true),
        }
    }

    fn server() -> Self {
        let server = RedisServer::start();
        Self {
            topology: Topology::Server,
            env: vec![("GATEWAY_REDIS__URL".into(), server.url())],
            servers: vec![server],
            sentinels: Vec::new(),
        }
    }

    fn tls() -> Self {
        let (mut args, mut env) = tls_material(&scratch_dir("redis-tls"), "serverAuth");
        let tls_port = port();
        args.extend(["--tls-port".to_string(), tls_port.to_string()]);
        let server = RedisServer::start_with(port(), "redis-server", args);
        env.insert(
            0,
            (
                "GATEWAY_REDIS__URL".into(),
                format!("rediss://127.0.0.1:{tls_port}"),
            ),
        );
        Self {
            topology: Topology::Tls,
            env,
            servers: vec![server],
            sentinels: Vec::new(),
        }
    }

    fn sentinel() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_with(
            port(),
            "redis-server",
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port().to_string(),
            ],
        );
        let dir = scratch_dir("redis-sentinel");
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|i| {
                let file = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &file,
                    format!(
                        "sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {MASTER} 500\n\
                         sentinel failover-timeout {MASTER} 2000\n\
                         sentinel parallel-syncs {MASTER} 1\n",
                        primary.port()
                    ),
                )
                .expect("sentinel config");
                RedisServer::start_with(port(), "redis-sentinel", vec![file.display().to_string()])
            })
            .collect();
        let list: Vec<String> = sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let deployment = Self {
            topology: Topology::Sentinel,
            env: vec![(
                "GATEWAY_REDIS__URL".into(),
                format!("redis+sentinel://{}/{MASTER}", list.join(",")),
            )],
            servers: vec![primary, replica],
            sentinels,
        };
        deployment.await_sentinels_see_everyone();
        deployment
    }

    /// Waits until every sentinel knows the replica and the other two sentinels, so a
    /// failover can be agreed on.
    pub fn await_sentinels_see_everyone(&self) {
        for s in &self.sentinels {
            await_node(s, |c| {
                let mut list = |what: &str| -> Vec<HashMap<String, String>> {
                    ::redis::cmd("SENTINEL")
                        .arg(what)
                        .arg(MASTER)
                        .query(c)
                        .unwrap_or_default()
                };
                let (replicas, peers) = (list("REPLICAS"), list("SENTINELS"));
                let replica_up = replicas
                    .iter()
                    .any(|r| r.get("flags").is_some_and(|f| f == "slave"));
                (replica_up && peers.len() == self.sentinels.len() - 1)
                    .then_some(())
                    .ok_or(format!("replicas {replicas:?}, peers {peers:?}"))
            });
        }
    }

    /// Three primaries; with `tls`, each also serves TLS (clients must show a certificate)
    /// and the cluster bus is TLS too.
    fn cluster(tls: bool) -> Self {
        let dir = scratch_dir("redis-cluster");
        let (mut tls_args, mut env) = if tls {
            // The nodes' certificate also serves as the client's on the cluster bus.
            tls_material(&dir, "serverAuth,clientAuth")
        } else {
            Default::default()
        };
        if tls {
            tls_args.extend(["--tls-cluster".to_string(), "yes".to_string()]);
            // A connection is TLS handshakes with every node (unoptimised rustls in tests)
            // plus CLUSTER SLOTS, within one redis.timeout_ms: 200 ms is too tight for that
            // on a loaded 2-core machine.
            env.push(("GATEWAY_REDIS__TIMEOUT_MS".to_string(), "1000".to_string()));
        }
        let mut tls_ports = Vec::new();
        let servers: Vec<RedisServer> = (0..3)
            .map(|i| {
                let conf = dir.join(format!("nodes-{i}.conf")).display().to_string();
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                ]
                .iter()
                .map(|a| a.to_string())
                .collect();
                if tls {
                    let tls_port = port();
                    tls_ports.push(tls_port);
                    args.extend(["--tls-port".to_string(), tls_port.to_string()]);
                    args.extend(tls_args.iter().cloned());
                }
                RedisServer::start_with(port(), "redis-server", args)
            })
            .collect();
        let nodes: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli must be installed (apt-get install -y redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Any seed may come first: the list starts with the last node created.
        let (scheme, seeds) = if tls {
            let tls_nodes: Vec<String> =
                tls_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            ("rediss+cluster", tls_nodes)
        } else {
            ("redis+cluster", nodes)
        };
        let url = format!("{scheme}://{},{},{}", seeds[2], seeds[0], seeds[1]);
        env.insert(0, ("GATEWAY_REDIS__URL".into(), url));
        let deployment = Self {
            topology: if tls {
                Topology::TlsCluster
            } else {
                Topology::Cluster
            },
            env,
            servers,
            sentinels: Vec::new(),
        };
        deployment.await_cluster_ok();
        deployment
    }

    /// Waits until every node reports `cluster_state:ok` and knows all three nodes.
    pub fn await_cluster_ok(&self) {
        for s in &self.servers {
            await_node(s, |c| {
                let info: String = ::redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(c)
                    .unwrap_or_default();
                (info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3"))
                    .then_some(())
                    .ok_or(info)
            });
        }
    }

    /// The `GATEWAY_REDIS__*` settings that name it.
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The value of `GATEWAY_REDIS__URL`.
    pub fn url(&self) -> &str {
        &self.env[0].1
    }

    /// The servers that hold data: the server, the primary, or every cluster node.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        match self.topology {
            Topology::Sentinel => {
                let primary = self.servers.iter().find(|s| {
                    s.child.is_some()
                        && ::redis::cmd("ROLE")
                            .query::<Vec<::redis::Value>>(&mut s.connection())
                            .is_ok_and(|r| {
                                matches!(r.first(), Some(::redis::Value::BulkString(b)) if b == b"master")
                            })
                });
                primary.into_iter().collect()
            }
            _ => self.servers.iter().collect(),
        }
    }

    /// Keys matching `pattern` on every primary.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.keys_with_ttl(pattern)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Keys matching `pattern` on every primary, with their milliseconds to live.
    pub fn keys_with_ttl(&self, pattern: &str) -> Vec<(String, i64)> {
        self.primaries()
            .into_iter()
            .flat_map(|s| {
                let mut conn = s.connection();
                let keys: Vec<String> = ::redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut conn)
                    .expect("KEYS");
                keys.into_iter()
                    .map(|k| {
                        let ttl = ::redis::cmd("PTTL").arg(&k).query(&mut conn).expect("PTTL");
                        (k, ttl)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Kills every data node (the sentinels stay).
    pub fn stop(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }

    /// Starts every data node again on its port, and waits until the deployment serves.
    pub fn restart(&mut self) {
        for s in &mut self.servers {
            s.restart();
        }
        if matches!(self.topology, Topology::Cluster | Topology::TlsCluster) {
            self.await_cluster_ok();
        }
    }
}

/// Runs each scenario `async fn(RedisDeployment)` as one test per topology, in modules
/// named after it: `server::<scenario>`, `tls::…`, `sentinel::…`, `cluster::…`,
/// `tls_cluster::…`.
macro_rules! on_every_topology {
    ($($scenario:ident),* $(,)?) => {
        $crate::helpers::redis_server::on_every_topology!(@in server Server $($scenario),*);
        $crate::helpers::redis_server::on_every_topology!(@in tls Tls $($scenario),*);
        $crate::helpers::redis_server::on_every_topology!(@in sentinel Sentinel $($scenario),*);
        $crate::helpers::redis_server::on_every_topology!(@in cluster Cluster $($scenario),*);
        $crate::helpers::redis_server::on_every_topology!(@in tls_cluster TlsCluster $($scenario),*);
    };
    (@in $module:ident $topology:ident $($scenario:ident),*) => {
        mod $module {
            use $crate::helpers::redis_server::{RedisDeployment, Topology};
            $(
                #[actix_web::test]
                async fn $scenario() {
                    super::$scenario(RedisDeployment::start(Topology::$topology)).await;
                }
            )*
        }
    };
}
pub(crate) use on_every_topology;

/// Settings of a gateway in front of `sim` sharing `redis`.
pub fn settings(
    sim: &SimulatorHandle,
    redis: &RedisDeployment,
    overrides: &[(&str, &str)],
) -> Settings {
    let mut env = redis.env();
    env.push(("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"));
    env.extend_from_slice(overrides);
    Settings::load_from(None, test_env(&sim.base_url(), &env)).expect("test settings")
}

/// A gateway in front of `sim` sharing `redis`, once Redis is up for it.
pub async fn replica(
    sim: &SimulatorHandle,
    redis: &RedisDeployment,
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
    wait_for_within(app, state, Duration::from_secs(10)).await;
}

/// Waits up to `limit` until the gateway reports Redis `state`.
pub async fn wait_for_within(app: &TestApp, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while app.state.redis_state() != state {
        assert!(
            Instant::now() < deadline,
            "redis state is {} after {limit:?}, expected {state}",
            app.state.redis_state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls per command name from `INFO commandstats`, summed over the primaries.
pub fn command_calls(redis: &RedisDeployment) -> HashMap<String, u64> {
    let mut calls = HashMap::new();
    for s in redis.primaries() {
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut s.connection())
            .expect("INFO");
        for (name, n) in info
            .lines()
            .filter_map(|l| l.strip_prefix("cmdstat_"))
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let n: u64 = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), n))
            })
        {
            *calls.entry(name).or_insert(0) += n;
        }
    }
    calls
}

/// Eight concurrent activations by the caller holding `bearer`, split over `a` and `b`:
/// how many were admitted.
pub async fn admitted_of_eight(a: &TestApp, b: &TestApp, bearer: &str) -> usize {
    let statuses = futures_util::future::join_all((0..8).map(|i| async move {
        let app = if i % 2 == 0 { a } else { b };
        activate(app, bearer).await.status().as_u16()
    }))
    .await;
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 429)),
        "{statuses:?}"
    );
    statuses.iter().filter(|s| **s == 201).count()
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
