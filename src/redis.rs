//! The connection to Redis that the shared implementations of the activation limits
//! (`limits::redis`), idempotency records (`idempotency::redis`) and cache coherence
//! (`coherence::redis`) use; they depend on this module, never the reverse. Chosen by
//! `redis.url`; without it every capability uses its in-process implementation. This is the
//! only module that knows the topology: the others get a [`Connection`] that routes each
//! command (one server, the primary the sentinels name, or the cluster node owning the
//! command's keys) and a [`PubSub`] on which evictions reach every replica.
//!
//! Topologies. One server; Sentinel: the primary is asked of the sentinels on every
//! (re)connection, and the health check also requires it to still be the primary (`ROLE`),
//! so a failover is followed within a health interval of the sentinels' promotion; Cluster:
//! commands go to the node owning their key's slot (keys one operation uses share a hash
//! tag, [`Redis::tagged_key`]), and the eviction channel is a regular (not sharded) pub/sub
//! channel, which the cluster bus forwards to every node, so subscribing on any one node
//! hears every replica's evictions.
//!
//! TLS (`rediss`) is rustls with the process's crypto provider (aws-lc-rs, as for the
//! vendor and JWKS clients), verified against `redis.ca_file` or the system roots, with an
//! optional client certificate; a server whose certificate does not verify never answers a
//! command: Redis is down, and the log says why.
//!
//! Every Redis call is bounded by `redis.timeout_ms`. A failed or late call marks Redis down;
//! while down, requests do not wait on Redis at all and each capability falls back by the
//! policy its Redis module states. A background task probes every `redis.health_interval_ms`
//! and reconnects while down. Redis counts as up when commands answer and the eviction
//! subscription is live; the state is reported by `audience_gateway_redis_up` and the
//! readiness body (`redis`), and never fails readiness: a Redis outage must not take every
//! replica out of the Service.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ClientTlsConfig, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};
use secrecy::ExposeSecret;

use crate::metrics::Metrics;
use crate::settings::{RedisSettings, RedisTopology, Settings};

/// Why a Redis call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// Marked down; the call was not attempted.
    #[error("redis is down")]
    Down,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected value in redis: {0}")]
    Decode(String),
}

/// A connection that sends each command where the topology wants it; cheap to clone.
#[derive(Clone)]
pub enum Connection {
    /// One server, or the primary the sentinels named.
    Node(ConnectionManager),
    /// A cluster: each command goes to the node that owns its keys' slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How to reach Redis, from `redis.url` and the credential and TLS settings.
enum Topology {
    Server(redis::Client),
    /// Asked for the primary on every (re)connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// The cluster, and a client per seed node for the eviction subscription (any node
    /// hears every regular PUBLISH).
    Cluster {
        client: ClusterClient,
        seeds: Vec<redis::Client>,
        next_seed: AtomicUsize,
    },
}

/// Reads a PEM file named by `setting`.
fn read_pem(setting: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting}: cannot read {path}"))
}

/// The CA and client certificate of `rediss` connections.
fn certificates(r: &RedisSettings) -> anyhow::Result<TlsCertificates> {
    let root_cert = r
        .ca_file
        .as_deref()
        .map(|p| read_pem("redis.ca_file", p))
        .transpose()?;
    let client_tls = match (&r.client_cert_file, &r.client_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem("redis.client_cert_file", cert)?,
            client_key: read_pem("redis.client_key_file", key)?,
        }),
        _ => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

impl Topology {
    /// Builds the clients; nothing connects yet.
    fn open(r: &RedisSettings) -> anyhow::Result<Option<Self>> {
        let Some(target) = r.target()? else {
            return Ok(None);
        };
        let invalid = || anyhow::anyhow!("redis.url (env GATEWAY_REDIS__URL) is not valid");
        let nodes = target
            .nodes
            .iter()
            .map(|node| {
                let info = node
                    .expose_secret()
                    .into_connection_info()
                    .map_err(|_| invalid())?;
                // The client library does not name itself (`CLIENT SETINFO`): one command
                // less for the ACL to grant.
                let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
                if let Some(user) = &r.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &r.password {
                    redis = redis.set_password(password.expose_secret());
                }
                Ok(info.set_redis_settings(redis))
            })
            .collect::<anyhow::Result<Vec<ConnectionInfo>>>()?;
        let certs = target.tls.then(|| certificates(r)).transpose()?;
        let client = |info: ConnectionInfo| -> anyhow::Result<redis::Client> {
            match &certs {
                Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
                None => redis::Client::open(info),
            }
            .context("redis: cannot build the client (check redis.url and the TLS files)")
        };
        Ok(Some(match target.topology {
            RedisTopology::Server => {
                let info = nodes.into_iter().next().ok_or_else(invalid)?;
                Self::Server(client(info)?)
            }
            RedisTopology::Sentinel { master } => {
                let first = nodes.first().ok_or_else(invalid)?.redis_settings().clone();
                let sentinels = nodes.iter().map(|n| n.addr().clone());
                let mut b =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?
                        .set_client_to_redis_db(first.db());
                if let Some(user) = first.username() {
                    b = b.set_client_to_redis_username(user);
                }
                if let Some(password) = first.password() {
                    b = b.set_client_to_redis_password(password);
                }
                if let Some(certs) = &certs {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_certificates(certs.clone());
                }
                let sentinel = b
                    .build()
                    .context("redis: cannot build the sentinel client")?;
                Self::Sentinel(tokio::sync::Mutex::new(sentinel))
            }
            RedisTopology::Cluster => {
                let seeds = nodes
                    .iter()
                    .cloned()
                    .map(client)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut b = ClusterClientBuilder::new(nodes)
                    .connection_timeout(r.timeout)
                    .response_timeout(r.timeout);
                if let Some(certs) = &certs {
                    b = b.certs(certs.clone());
                }
                let client = b
                    .build()
                    .context("redis: cannot build the cluster client")?;
                Self::Cluster {
                    client,
                    seeds,
                    next_seed: AtomicUsize::new(0),
                }
            }
        }))
    }

    /// A client of the primary, as the sentinels name it now.
    async fn primary(
        sentinel: &tokio::sync::Mutex<SentinelClient>,
    ) -> redis::RedisResult<redis::Client> {
        sentinel.lock().await.async_get_client().await
    }

    /// A new command connection (not bounded: the caller applies the timeout).
    async fn connect(&self, config: ConnectionManagerConfig) -> redis::RedisResult<Connection> {
        Ok(match self {
            Self::Server(client) => Connection::Node(ConnectionManager::new_lazy_with_config(
                client.clone(),
                config,
            )?),
            Self::Sentinel(sentinel) => Connection::Node(ConnectionManager::new_lazy_with_config(
                Self::primary(sentinel).await?,
                config,
            )?),
            Self::Cluster { client, .. } => {
                Connection::Cluster(client.get_async_connection().await?)
            }
        })
    }

    /// A new pub/sub connection: to the server, the primary, or the next seed node.
    async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        match self {
            Self::Server(client) => client.get_async_pubsub().await,
            Self::Sentinel(sentinel) => Self::primary(sentinel).await?.get_async_pubsub().await,
            Self::Cluster {
                seeds, next_seed, ..
            } => {
                // Round robin: a seed that is gone is skipped at the next attempt.
                let i = next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len();
                seeds[i].get_async_pubsub().await
            }
        }
    }

    /// Checks that `conn` answers (and, under Sentinel, is still the primary).
    async fn check(&self, conn: &mut Connection) -> Result<(), RedisFailure> {
        if let Self::Sentinel(_) = self {
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
            return match role.first() {
                Some(redis::Value::BulkString(r)) if r == b"master" => Ok(()),
                _ => Err(RedisFailure::Decode(
                    "the server the sentinels named is no longer the primary".into(),
                )),
            };
        }
        redis::cmd("PING").query_async::<String>(conn).await?;
        Ok(())
    }
}

/// One replica's connection to Redis, with its health.
pub struct Redis {
    topology: Topology,
    /// Replaced by the health task after a failed probe, so a broken connection never lingers.
    connection: RwLock<Option<Connection>>,
    timeout: Duration,
    interval: Duration,
    prefix: String,
    replica: String,
    /// Commands answer (last probe or call succeeded).
    commands_up: AtomicBool,
    /// The eviction subscription is live.
    subscribed: AtomicBool,
    /// An outcome has been logged.
    reported: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Redis {
    /// The connection when `redis.url` is set; connects lazily, in [`spawn_health`].
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Option<Self>> {
        let r = &settings.redis;
        let Some(topology) = Topology::open(r)? else {
            return Ok(None);
        };
        metrics.redis_up(false);
        Ok(Some(Self {
            topology,
            connection: RwLock::new(None),
            timeout: r.timeout,
            interval: r.health_interval,
            prefix: r.key_prefix.clone(),
            replica: uuid::Uuid::new_v4().to_string(),
            commands_up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            metrics,
        }))
    }

    /// A key under `redis.key_prefix`: `<prefix>:<part>:<part>...`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// A key in the hash-tag group `group`: `{<prefix>:<group>}:<part>...`. Keys of one
    /// group share a cluster slot, so one script may use several of them.
    pub fn tagged_key(&self, group: &str, parts: &[&str]) -> String {
        let mut k = format!("{{{}}}", self.key(&[group]));
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// This replica's id, carried by the messages it publishes.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether commands can be sent (requests use Redis, not the fallback).
    pub fn commands_up(&self) -> bool {
        self.commands_up.load(Ordering::Acquire)
    }

    /// Commands answer and the eviction subscription is live.
    pub fn is_up(&self) -> bool {
        self.commands_up() && self.subscribed.load(Ordering::Acquire)
    }

    fn set_commands_up(&self, up: bool, why: &dyn std::fmt::Display) {
        let changed = self.commands_up.swap(up, Ordering::AcqRel) != up;
        // The first outcome is reported too: a Redis that never answers (a certificate that
        // does not verify, a refused user) says why at start-up.
        let first = !self.reported.swap(true, Ordering::AcqRel);
        if changed || first {
            if up {
                tracing::info!("redis is up; shared state in use");
            } else {
                tracing::warn!(error = %why, "redis is down; using the fallbacks");
            }
        }
        self.metrics.redis_up(self.is_up());
    }

    /// Bound of every call and connection attempt (`redis.timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time between health checks and between reconnection attempts.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A new pub/sub connection (not bounded: callers apply [`Redis::timeout`]).
    pub async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        self.topology.pubsub().await
    }

    /// `up` or `down`, as readiness and metrics report it.
    pub fn state(&self) -> &'static str {
        if self.is_up() {
            "up"
        } else {
            "down"
        }
    }

    /// Records whether the eviction subscription is live.
    pub fn set_subscribed(&self, up: bool) {
        self.subscribed.store(up, Ordering::Release);
        self.metrics.redis_up(self.is_up());
    }

    fn config(&self) -> ConnectionManagerConfig {
        // One attempt per reconnection: the health task is the retry loop.
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0)
    }

    fn connection(&self) -> Option<Connection> {
        self.connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs one Redis operation within `redis.timeout_ms`; any failure marks Redis down.
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.commands_up() {
            return Err(RedisFailure::Down);
        }
        let Some(conn) = self.connection() else {
            return Err(RedisFailure::Down);
        };
        let failure = match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => RedisFailure::Redis(e),
            Err(_) => RedisFailure::Timeout(self.timeout),
        };
        tracing::debug!(op, error = %failure, "redis call failed");
        self.set_commands_up(false, &failure);
        Err(failure)
    }

    /// Checks the connection (connecting first if needed) and records the outcome; true
    /// when up.
    async fn probe(&self) -> bool {
        let existing = self.connection();
        let attempt = async {
            let mut conn = match existing {
                Some(c) => c,
                None => self.topology.connect(self.config()).await?,
            };
            self.topology.check(&mut conn).await?;
            Ok::<_, RedisFailure>(conn)
        };
        let failure = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(conn)) => {
                *self
                    .connection
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(conn);
                self.set_commands_up(true, &"redis answered");
                return true;
            }
            Ok(Err(e)) => e,
            Err(_) => RedisFailure::Timeout(self.timeout),
        };
        *self
            .connection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.set_commands_up(false, &failure);
        false
    }
}

/// Starts the health task on the current (actix) runtime: it probes every
/// `redis.health_interval_ms` and runs `on_up` after every probe that Redis answered (not
/// only after a recovery: work kept just after a probe found Redis up again would otherwise
/// wait for the next outage). Holds only a weak reference, so it ends with the connection.
pub fn spawn_health<F, Fut>(redis: &Arc<Redis>, mut on_up: F)
where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let redis: Weak<Redis> = Arc::downgrade(redis);
    actix_rt::spawn(async move {
        loop {
            let Some(r) = redis.upgrade() else { return };
            if r.probe().await {
                on_up().await;
            }
            let every = r.interval;
            drop(r);
            tokio::time::sleep(every).await;
        }
    });
}
