//! `redis.*`: where the state shared by the replicas lives (one server, a Sentinel-managed
//! primary or a Cluster, over TCP or TLS, with an ACL user), and what each replica does
//! while it is down. The URL and the password are secrets: no message here echoes them.

use std::time::Duration;

use redis::IntoConnectionInfo;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{duration, ensure, SettingsError};

/// Shared state across replicas (activation limits, idempotency records, cache evictions).
/// Without `url` every replica keeps its own state in process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Where Redis is, a secret as it may hold a password:
    /// `redis[s]://[user:password@]host:port[/db]` or `unix:///path` (one server),
    /// `redis[s]+sentinel://[user:password@]h1:p1,h2:p2/<master>[/db]` (the primary the
    /// sentinels name), `redis[s]+cluster://[user:password@]h1:p1,h2:p2` (cluster seeds).
    /// `rediss` is TLS, to every node (sentinels included).
    #[serde(serialize_with = "super::redacted")]
    pub url: Option<SecretString>,
    /// ACL user, when not in the URL.
    pub username: Option<String>,
    /// Password of the ACL user (or of `default`), when not in the URL.
    #[serde(serialize_with = "super::redacted")]
    pub password: Option<SecretString>,
    /// PEM file of the CA(s) that sign the servers' certificates (`rediss` only); without
    /// it the system roots are used.
    pub ca_file: Option<String>,
    /// PEM certificate chain for mutual TLS (`rediss` only; with `client_key_file`).
    pub client_cert_file: Option<String>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<String>,
    /// Upper bound for every Redis call and connection attempt; past it the call counts as
    /// failed, Redis is marked down and the fallback answers.
    #[serde(rename = "timeout_ms", with = "duration::millis")]
    pub timeout: Duration,
    /// How often the connection is checked while up, and retried while down.
    #[serde(rename = "health_interval_ms", with = "duration::millis")]
    pub health_interval: Duration,
    /// What activations do while Redis is down: `local` limits with a share of the quota
    /// on each replica, or `refuse` with 503.
    pub limiter_fallback: LimiterFallback,
    /// Share of every quota and burst a replica enforces alone while Redis is down (e.g.
    /// 1 / replicas); at least 1 request each.
    pub fallback_quota_share: f64,
    /// Prefix of every key and of the eviction channel, so deployments can share a Redis.
    pub key_prefix: String,
}

/// How the Redis named by `redis.url` is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`redis://`, `rediss://`, `unix://`).
    Server,
    /// The primary that the sentinels report for `master`.
    Sentinel { master: String },
    /// A Redis Cluster, found from its seed nodes.
    Cluster,
}

/// `redis.url` taken apart: the topology, TLS, and one `redis[s]://` URL per node listed
/// (the server, each sentinel, each seed), each with the URL's credentials and database.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub topology: RedisTopology,
    pub tls: bool,
    pub nodes: Vec<SecretString>,
}

const URL: &str = "redis.url";
const URL_FORMS: &str = "redis[s]://[user:password@]host:port[/db], unix:///path, \
     redis[s]+sentinel://[user:password@]host:port,.../<master>[/db] or \
     redis[s]+cluster://[user:password@]host:port,...";

fn invalid(expected: &str) -> SettingsError {
    ensure(false, URL, expected).unwrap_err()
}

/// Takes `url` apart; errors never contain it.
fn parse_url(url: &str) -> Result<RedisTarget, SettingsError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid(URL_FORMS))?;
    let (base, topology) = match scheme.split_once('+') {
        None => (scheme, None),
        Some((base, kind)) => (base, Some(kind)),
    };
    let tls = match (base, topology) {
        ("redis", _) | ("unix", None) => false,
        ("rediss", _) => true,
        _ => return Err(invalid(URL_FORMS)),
    };
    let Some(kind) = topology else {
        let info = url.into_connection_info();
        ensure(info.is_ok(), URL, "a valid redis[s]:// or unix:// URL")?;
        let insecure = info.as_ref().is_ok_and(|i| {
            matches!(
                i.addr(),
                redis::ConnectionAddr::TcpTls { insecure: true, .. }
            )
        });
        ensure(
            !insecure,
            URL,
            "no `#insecure`: the server's certificate is always verified",
        )?;
        return Ok(RedisTarget {
            topology: RedisTopology::Server,
            tls,
            nodes: vec![url.into()],
        });
    };
    let (userinfo, hosts_path) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hosts, path) = hosts_path.split_once('/').unwrap_or((hosts_path, ""));
    let (topology, db) = match kind {
        "sentinel" => {
            let (master, db) = path.split_once('/').unwrap_or((path, ""));
            ensure(
                !master.is_empty(),
                URL,
                "the master's name after the sentinels: redis[s]+sentinel://host:port,.../<master>",
            )?;
            (
                RedisTopology::Sentinel {
                    master: master.to_string(),
                },
                db,
            )
        }
        "cluster" => {
            ensure(
                path.is_empty(),
                URL,
                "no database or path in a cluster URL (a cluster has database 0 only)",
            )?;
            (RedisTopology::Cluster, "")
        }
        _ => return Err(invalid(URL_FORMS)),
    };
    let nodes = hosts
        .split(',')
        .map(|host| {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
            ensure(
                !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
                URL,
                "a comma-separated list of host:port",
            )?;
            let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            let node = format!("{base}://{auth}{host}/{db}");
            ensure(
                node.as_str().into_connection_info().is_ok(),
                URL,
                "valid credentials, hosts and database",
            )?;
            Ok(SecretString::from(node))
        })
        .collect::<Result<Vec<_>, SettingsError>>()?;
    Ok(RedisTarget {
        topology,
        tls,
        nodes,
    })
}

impl RedisSettings {
    /// The Redis to use, when `redis.url` is set.
    pub fn target(&self) -> Result<Option<RedisTarget>, SettingsError> {
        self.url
            .as_ref()
            .map(|url| parse_url(url.expose_secret().trim()))
            .transpose()
    }

    /// Checks the URL (never echoing it), the credentials, the TLS files and the bounds.
    pub fn validate(&self) -> Result<(), SettingsError> {
        ensure(
            self.client_cert_file.is_some() == self.client_key_file.is_some(),
            "redis.client_cert_file",
            "both redis.client_cert_file and redis.client_key_file, or neither",
        )?;
        if let Some(target) = self.target()? {
            let first = target.nodes[0].expose_secret().into_connection_info();
            let in_url = first.as_ref().map(|i| i.redis_settings()).ok();
            ensure(
                self.username.is_none() || in_url.is_some_and(|r| r.username().is_none()),
                "redis.username",
                "the user either in redis.url or in redis.username, not both",
            )?;
            ensure(
                self.password.is_none() || in_url.is_some_and(|r| r.password().is_none()),
                "redis.password",
                "the password either in redis.url or in redis.password, not both",
            )?;
            let files = [&self.ca_file, &self.client_cert_file, &self.client_key_file];
            ensure(
                target.tls || files.iter().all(|f| f.is_none()),
                "redis.ca_file",
                "TLS files only with a rediss:// URL (rediss, rediss+sentinel, rediss+cluster)",
            )?;
        }
        ensure(
            self.username.as_ref().is_none_or(|u| !u.trim().is_empty()),
            "redis.username",
            "a non-empty user name",
        )?;
        ensure(
            !self.timeout.is_zero() && self.timeout <= Duration::from_secs(10),
            "redis.timeout_ms",
            "1 to 10000 milliseconds",
        )?;
        ensure(
            self.health_interval >= Duration::from_millis(10),
            "redis.health_interval_ms",
            "at least 10 milliseconds",
        )?;
        ensure(
            self.fallback_quota_share > 0.0 && self.fallback_quota_share <= 1.0,
            "redis.fallback_quota_share",
            "a share above 0 and at most 1",
        )?;
        let prefix = self.key_prefix.trim();
        ensure(
            !prefix.is_empty()
                && prefix.len() == self.key_prefix.len()
                && !prefix.contains(['{', '}']),
            "redis.key_prefix",
            "a non-empty prefix without surrounding blanks or braces (braces mark cluster hash tags)",
        )?;
        Ok(())
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            username: None,
            password: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            timeout: Duration::from_millis(200),
            health_interval: Duration::from_secs(1),
            limiter_fallback: LimiterFallback::Local,
            fallback_quota_share: 0.5,
            key_prefix: "audience-gateway".into(),
        }
    }
}

/// Activation limiting while the shared store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimiterFallback {
    /// In-process limits with `redis.fallback_quota_share` of the quota.
    Local,
    /// No activations (503) until Redis is back.
    Refuse,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(t: &RedisTarget) -> Vec<&str> {
        t.nodes.iter().map(|n| n.expose_secret()).collect()
    }

    #[test]
    fn urls_name_the_topology_and_give_one_url_per_node() {
        let t = parse_url("rediss://gw:p%40ss@cache:6380/2").unwrap();
        assert_eq!((t.topology.clone(), t.tls), (RedisTopology::Server, true));
        assert_eq!(nodes(&t), ["rediss://gw:p%40ss@cache:6380/2"]);

        let t = parse_url("redis+sentinel://gw:pw@s1:26379,s2:26380/mymaster/3").unwrap();
        let master = "mymaster".to_string();
        assert_eq!(
            (t.topology.clone(), t.tls),
            (RedisTopology::Sentinel { master }, false)
        );
        assert_eq!(
            nodes(&t),
            ["redis://gw:pw@s1:26379/3", "redis://gw:pw@s2:26380/3"]
        );

        let t = parse_url("rediss+cluster://n1:7000,n2:7001,n3:7002").unwrap();
        assert_eq!((t.topology.clone(), t.tls), (RedisTopology::Cluster, true));
        assert_eq!(
            nodes(&t),
            [
                "rediss://n1:7000/",
                "rediss://n2:7001/",
                "rediss://n3:7002/"
            ]
        );

        let t = parse_url("unix:///run/redis.sock").unwrap();
        assert_eq!((t.topology, t.tls), (RedisTopology::Server, false));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "http://:hunter2@cache",
            "redis+sentinel://:hunter2@s1:26379",
            "redis+sentinel://:hunter2@s1:26379/",
            "redis+cluster://:hunter2@n1:7000/1",
            "redis+cluster://:hunter2@n1",
            "redis+cluster://:hunter2@n1:7000,",
            "redis+mesh://:hunter2@n1:7000",
            "unix+cluster://:hunter2@n1:7000",
            "rediss://:hunter2@cache:6380/#insecure",
        ] {
            let err = parse_url(url).unwrap_err().to_string();
            assert!(
                err.contains("redis.url (env GATEWAY_REDIS__URL)"),
                "{url}: {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = parse_url("rediss://cache:6380/#insecure").unwrap_err();
        assert!(err.to_string().contains("always verified"), "{err}");
    }
}
