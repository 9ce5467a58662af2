//! `audience-gateway config check`, the real binary: the effective settings as TOML with
//! every secret redacted, and start-up's own message and a non-zero exit for invalid
//! settings (`serve` is run with the same environment to compare).

use std::process::{Command, Output};

use crate::helpers::SECRET;

const PASSWORD: &str = "pw-Config-Check-7f3a";
const REDIS_PASSWORD: &str = "redis-pw-91b2";

/// The binary with `args` and only `env` (nothing inherited from the test's environment).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_audience-gateway"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

fn base_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        (
            "GATEWAY_UPSTREAM__BASE_URL",
            "https://api.digital-audience.example",
        ),
        ("GATEWAY_UPSTREAM__USERNAME", "svc"),
        ("GATEWAY_UPSTREAM__PASSWORD", PASSWORD),
        ("GATEWAY_AUTH__HS256_SECRET", SECRET),
        ("GATEWAY_SERVER__PORT", "0"),
    ];
    env.extend_from_slice(extra);
    env
}

#[test]
fn prints_the_effective_settings_with_secrets_redacted() {
    let url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1");
    let out = run(
        &["config", "check"],
        &base_env(&[
            ("GATEWAY_REDIS__URL", url.as_str()),
            ("GATEWAY_CACHE__TTL_SECS", "42"),
            ("GATEWAY_LOG__LEVEL", "info,audit=info"),
        ]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let printed: toml::Table = toml::from_str(&stdout).expect("TOML");
    assert_eq!(
        printed["upstream"]["base_url"].as_str(),
        Some("https://api.digital-audience.example")
    );
    assert_eq!(printed["upstream"]["password"].as_str(), Some("[REDACTED]"));
    assert_eq!(printed["auth"]["hs256_secret"].as_str(), Some("[REDACTED]"));
    assert_eq!(printed["redis"]["url"].as_str(), Some("[REDACTED]"));
    assert_eq!(printed["cache"]["ttl_secs"].as_integer(), Some(42));
    assert_eq!(printed["log"]["level"].as_str(), Some("info,audit=info"));
    // Unset options are left out, defaults are printed.
    assert!(
        printed["upstream"].get("session_cookie").is_none(),
        "{stdout}"
    );
    assert_eq!(
        printed["upstream"]["max_concurrency"].as_integer(),
        Some(256),
        "{stdout}"
    );
    for secret in [PASSWORD, SECRET, REDIS_PASSWORD] {
        assert!(!stdout.contains(secret), "{secret} printed");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
    }
}

/// `config check` and `serve` fail alike: non-zero, the same message on stderr, nothing
/// on stdout, no secret.
fn fails_like_start_up(extra: &[(&str, &str)], message: &str) {
    let env = base_env(extra);
    let check = run(&["config", "check"], &env);
    let serve = run(&["serve"], &env);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert_eq!(stderr, format!("audience-gateway: {message}\n"));
    assert!(check.stdout.is_empty(), "{check:?}");
    assert_eq!(serve.status.code(), Some(1), "{serve:?}");
    assert_eq!(
        String::from_utf8_lossy(&serve.stderr),
        stderr,
        "serve says the same"
    );
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains(SECRET),
        "{stderr}"
    );
}

#[test]
fn an_invalid_setting_fails_with_start_ups_message() {
    fails_like_start_up(
        &[("GATEWAY_UPSTREAM__BASE_URL", "ftp://vendor.example")],
        "invalid configuration: upstream.base_url (env GATEWAY_UPSTREAM__BASE_URL): expected an absolute http(s) URL",
    );
    fails_like_start_up(
        &[("GATEWAY_CACHE__TTL_SECS", "soon")],
        "invalid configuration: cache.ttl_secs (env GATEWAY_CACHE__TTL_SECS): expected an integer, found string \"soon\"",
    );
}

#[test]
fn an_invalid_log_level_stops_start_up() {
    fails_like_start_up(
        &[("GATEWAY_LOG__LEVEL", "infoo")],
        "invalid configuration: log.level (env GATEWAY_LOG__LEVEL): expected a level (off, error, warn, info, debug, trace) or directives such as `info,audience_gateway=debug`, found `infoo`: `infoo` is not a level",
    );
}

#[test]
fn the_standard_otel_variables_configure_traces_and_their_headers_stay_secret() {
    let out = run(
        &["config", "check"],
        &base_env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=otlp-key-5d1e"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("GATEWAY_OTEL__SERVICE_NAME", "gateway-eu"),
        ]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let printed: toml::Table = toml::from_str(&stdout).expect("TOML");
    let otel = &printed["otel"];
    assert_eq!(otel["exporter"].as_str(), Some("otlp"));
    assert_eq!(otel["endpoint"].as_str(), Some("http://collector:4318"));
    assert_eq!(otel["headers"].as_str(), Some("[REDACTED]"));
    assert_eq!(otel["sampler"].as_str(), Some("parentbased_traceidratio"));
    assert_eq!(otel["sampler_arg"].as_float(), Some(0.25));
    assert_eq!(otel["service_name"].as_str(), Some("gateway-eu"));
    assert!(!stdout.contains("otlp-key-5d1e"), "{stdout}");
}

#[test]
fn an_invalid_otel_variable_stops_start_up() {
    fails_like_start_up(
        &[("OTEL_TRACES_SAMPLER", "sometimes")],
        "invalid configuration: otel.sampler (env OTEL_TRACES_SAMPLER): expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio, found `sometimes`",
    );
    fails_like_start_up(
        &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        "invalid configuration: otel.protocol (env OTEL_EXPORTER_OTLP_PROTOCOL): expected `http/protobuf` (the only protocol this gateway exports with), found `grpc`",
    );
}
