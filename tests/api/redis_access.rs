//! Who may talk to Redis: the real binary against a real `redis-server` (and a Sentinel
//! deployment, and a cluster) whose `default` user is off and whose only grant is the least ACL the README gives (nothing refused in
//! `ACL LOG`, the password in no log line, `/readyz`, `/metrics` or `config check`); and a
//! TLS server whose certificate does not verify, or that wants a client certificate the
//! gateway lacks, is never used: Redis stays down, and the log says why.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::redis_server::*;
use crate::helpers::*;

const REDIS_PASSWORD: &str = "gw-acl-pw-5d17c0";
const ADMIN_PASSWORD: &str = "admin-pw-77e1";

/// The least ACL of the README for one server (Sentinel adds `+role`, a cluster
/// `+cluster|slots +readonly`).
const LEAST_ACL: &[&str] = &[
    "resetkeys",
    "~audience-gateway:*",
    "~{audience-gateway:*",
    "resetchannels",
    "&audience-gateway:evict",
    "-@all",
    "+ping",
    "+evalsha",
    "+script|load",
    "+get",
    "+set",
    "+del",
    "+time",
    "+publish",
    "+subscribe",
];

/// A request to the binary at `base`, with an idempotency key when given.
async fn call(base: &str, method: &str, path: &str, key: Option<&str>, body: Value) -> u16 {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(full_token())
        .json(&body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.expect("request").status().as_u16()
}

async fn redis_state(base: &str) -> Value {
    let body: Value = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    body["redis"].clone()
}

#[actix_web::test]
async fn a_least_privilege_acl_user_is_all_the_gateway_needs() {
    least_acl(RedisDeployment::start(Topology::Server), &[]).await;
}

#[actix_web::test]
async fn a_least_privilege_acl_user_is_all_the_gateway_needs_in_a_cluster() {
    least_acl(
        RedisDeployment::start(Topology::Cluster),
        &["+cluster|slots", "+readonly"],
    )
    .await;
}

#[actix_web::test]
async fn a_least_privilege_acl_user_is_all_the_gateway_needs_behind_sentinel() {
    least_acl(RedisDeployment::start(Topology::Sentinel), &["+role"]).await;
}

/// An admin connection to `server` once `default` is off.
fn admin(server: &RedisServer) -> ::redis::Connection {
    ::redis::Client::open(format!(
        "redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}",
        server.port()
    ))
    .and_then(|c| c.get_connection())
    .expect("admin connection")
}

/// The binary as user `gw` holding [`LEAST_ACL`] plus `extra` on every data node of
/// `redis`, where `default` is off.
async fn least_acl(redis: RedisDeployment, extra: &[&str]) {
    let admin_pw = format!(">{ADMIN_PASSWORD}");
    let gw_pw = format!(">{REDIS_PASSWORD}");
    let gw_rules = [&["reset", "on", gw_pw.as_str()], LEAST_ACL, extra].concat();
    let setuser = |server: &RedisServer, user: &str, rules: &[&str]| {
        ::redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(rules)
            .query::<()>(&mut server.connection())
            .expect("ACL SETUSER");
    };
    for server in &redis.servers {
        setuser(server, "admin", &["on", &admin_pw, "~*", "&*", "+@all"]);
        setuser(server, "gw", &gw_rules);
    }
    if redis.topology == Topology::Sentinel {
        // The sentinels and the replica reach the primary as `admin` once `default` is off.
        for s in &redis.sentinels {
            ::redis::cmd("SENTINEL")
                .arg(
                    &[
                        "SET",
                        MASTER,
                        "auth-user",
                        "admin",
                        "auth-pass",
                        ADMIN_PASSWORD,
                    ][..],
                )
                .query::<()>(&mut s.connection())
                .expect("SENTINEL SET");
        }
        ::redis::cmd("CONFIG")
            .arg(&["SET", "masteruser", "admin", "masterauth", ADMIN_PASSWORD][..])
            .query::<()>(&mut redis.servers[1].connection())
            .expect("CONFIG SET");
    }
    for server in &redis.servers {
        setuser(server, "default", &["off"]);
        ::redis::cmd("ACL")
            .arg("LOG")
            .arg("RESET")
            .query::<()>(&mut admin(server))
            .unwrap();
    }

    // The user in the URL, the password in its own setting.
    let url = redis.url().replacen("://", "://gw@", 1);
    let env = [
        ("GATEWAY_REDIS__URL", url.as_str()),
        ("GATEWAY_REDIS__PASSWORD", REDIS_PASSWORD),
        ("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"),
        ("GATEWAY_LOG__LEVEL", "debug"),
    ];
    let (sim, child, base) = serve_binary_with_simulator(&env).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_state(&base).await != "up" {
        assert!(Instant::now() < deadline, "redis never came up as gw");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every kind of Redis use: the rate-limit script, an idempotency claim and its
    // completion, a released claim, an eviction published, the subscription's PINGs.
    let activation = activation_body();
    let path = "/v1/audiences/1001/activations";
    assert_eq!(
        call(&base, "POST", path, Some("acl-1"), activation.clone()).await,
        201
    );
    assert_eq!(
        call(&base, "POST", path, Some("acl-1"), activation.clone()).await,
        201
    );
    sim.set_down(true);
    assert_eq!(
        call(&base, "POST", path, Some("acl-2"), activation).await,
        503
    );
    sim.set_down(false);
    assert_eq!(
        call(&base, "GET", "/v1/audiences/1001", None, json!(null)).await,
        200
    );
    let rename = json!({"name": "Renamed by gw"});
    assert_eq!(
        call(&base, "PATCH", "/v1/audiences/1001", None, rename).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis_state(&base).await, "up");

    let text = |path: &'static str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let (readyz, metrics) = (text("/readyz").await, text("/metrics").await);
    assert!(metrics.contains("audience_gateway_redis_up 1"), "{metrics}");
    let stderr = stop_binary(child);
    let logs = String::from_utf8_lossy(&stderr);
    assert!(logs.contains("redis is up"), "{logs}");

    // Nothing was refused: every command and key the gateway used is in the ACL.
    let mut keys = Vec::new();
    for server in &redis.servers {
        let refused: Vec<::redis::Value> = ::redis::cmd("ACL")
            .arg("LOG")
            .query(&mut admin(server))
            .expect("ACL LOG");
        assert!(
            refused.is_empty(),
            "ACL LOG of {}: {refused:?}",
            server.port()
        );
        let found: Vec<String> = ::redis::cmd("KEYS")
            .arg("*")
            .query(&mut admin(server))
            .unwrap();
        keys.extend(found);
    }
    assert!(
        keys.iter().any(|k| k.starts_with("{audience-gateway:rl}:"))
            && keys.iter().any(|k| k.starts_with("audience-gateway:idem:")),
        "{keys:?}"
    );

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
        .args(["config", "check"])
        .envs(env)
        .env("GATEWAY_UPSTREAM__BASE_URL", sim.base_url())
        .env("GATEWAY_UPSTREAM__USERNAME", "svc")
        .env("GATEWAY_UPSTREAM__PASSWORD", "pw")
        .env("GATEWAY_AUTH__HS256_SECRET", SECRET)
        .output()
        .expect("config check runs");
    assert!(check.status.success(), "{check:?}");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("password = \"[REDACTED]\""), "{printed}");
    for (what, text) in [
        ("logs", logs.as_ref()),
        ("/readyz", readyz.as_str()),
        ("/metrics", metrics.as_str()),
        ("config check", printed.as_ref()),
    ] {
        assert!(!text.contains(REDIS_PASSWORD), "the password is in {what}");
    }
}

/// The binary against the TLS deployment with `overrides` on its settings, for a second:
/// returns what `/readyz` reported for Redis and the log.
async fn tls_attempt(redis: &RedisDeployment, overrides: &[(&str, &str)]) -> (Value, String) {
    let mut env: Vec<(&str, &str)> = redis
        .env()
        .into_iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    env.extend_from_slice(overrides);
    env.retain(|(_, v)| !v.is_empty());
    env.push(("GATEWAY_REDIS__HEALTH_INTERVAL_MS", "100"));
    let (_sim, child, base) = serve_binary_with_simulator(&env).await;
    // Ten health checks' worth of attempts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = redis_state(&base).await;
    let logs = String::from_utf8_lossy(&stop_binary(child)).into_owned();
    (state, logs)
}

#[actix_web::test]
async fn a_tls_server_that_does_not_verify_is_never_used() {
    let redis = RedisDeployment::start(Topology::Tls);
    let other = TestCa::new(&scratch_dir("redis-rogue-ca"), "other-ca");

    let (state, logs) =
        tls_attempt(&redis, &[("GATEWAY_REDIS__CA_FILE", other.cert().as_str())]).await;
    assert_eq!(state, "down", "{logs}");
    let down = logs
        .lines()
        .find(|l| l.contains("redis is down; using the fallbacks"))
        .unwrap_or_else(|| panic!("no log line says why: {logs}"));
    assert!(down.contains("certificate"), "{down}");

    // The right CA, but no client certificate for a server that requires one.
    let (state, logs) = tls_attempt(
        &redis,
        &[
            ("GATEWAY_REDIS__CLIENT_CERT_FILE", ""),
            ("GATEWAY_REDIS__CLIENT_KEY_FILE", ""),
        ],
    )
    .await;
    assert_eq!(state, "down", "{logs}");
    assert!(
        logs.contains("redis is down; using the fallbacks"),
        "{logs}"
    );

    // The same deployment with everything it needs serves.
    let (state, logs) = tls_attempt(&redis, &[]).await;
    assert_eq!(state, "up", "{logs}");
}
