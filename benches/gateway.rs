//! Microbenchmarks of the gateway's per-request hot paths:
//! - `auth/*`: token verification per algorithm (signature checked every time, through
//!   `Authenticator::verify`), and a repeat of an already verified token through
//!   `Authenticator::authenticate` (the verified-token cache);
//! - `cache/hit`: `AudienceCache::get` on a warm entry (what a cached read costs);
//! - `upstream/decode_audience`: `upstream::read_audience` of a real simulator answer (the
//!   one answer reading, then the conversion to the gateway's types), and
//!   `cache/build_entry`: turning that into the three cached representations (the miss path);
//! - `log/*`: formatting one access line, with the gateway's subscriber and with
//!   tracing-subscriber's JSON formatter;
//! - `log_writer/*`: handing an access-line-sized line to the log writer that
//!   `telemetry::init` starts (`telemetry::writer`) and to tracing-appender's non-blocking
//!   writer over a 64 KiB `BufWriter` (what the gateway used before), each with its thread
//!   writing to `/dev/null`, in bursts of 1,000 lines with pauses for the writer to catch
//!   up: `*/call` times the call on the logging thread, `*/cpu` the CPU time of the whole
//!   process (both threads) per line, and `log_writer/access_line_*/cpu` the same for a
//!   whole access line through the gateway's subscriber (formatting too).
//!
//! Run: `cargo bench --bench gateway` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use audience_gateway::auth::Authenticator;
use audience_gateway::cache::{AudienceCache, CachedAudience};
use audience_gateway::metrics::Metrics;
use audience_gateway::settings::{AuthSettings, CacheSettings, UpstreamSettings};
use audience_gateway::telemetry::CallContext;
use audience_gateway::upstream::{read_audience, read_audience_only, UpstreamClient};
use audience_sandbox::{Simulator, SimulatorConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const RSA_PRIVATE: &[u8] = include_bytes!("../tests/api/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../tests/api/keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../tests/api/keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../tests/api/keys/ec_public.pem");

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = get_current_timestamp();
    let claims = json!({
        "sub": "bench-user",
        "scope": "audiences:read audiences:write audiences:delete audiences:activate",
        "iat": now,
        "nbf": now - 1,
        "exp": now + 3600,
    });
    encode(&Header::new(alg), &claims, key).expect("sign")
}

fn authenticator(public_pem: &str) -> Authenticator {
    let settings = AuthSettings {
        hs256_secret: Some(SECRET.into()),
        public_key_pem: Some(public_pem.into()),
        ..AuthSettings::default()
    };
    Authenticator::new(&settings, Arc::new(Metrics::new())).expect("authenticator")
}

fn auth(c: &mut Criterion) {
    let rsa = authenticator(RSA_PUBLIC);
    let ec = authenticator(EC_PUBLIC);
    let hs_token = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let rs_token = token(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key"),
    );
    let es_token = token(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec key"),
    );
    let mut group = c.benchmark_group("auth");
    // With static keys nothing in verification awaits, so polling once completes it.
    for (name, a, t) in [
        ("verify_hs256", &rsa, &hs_token),
        ("verify_rs256", &rsa, &rs_token),
        ("verify_es256", &ec, &es_token),
    ] {
        assert!(a.verify(t).now_or_never().expect("ready").is_ok());
        group.bench_function(name, |b| {
            b.iter(|| a.verify(black_box(t)).now_or_never().expect("ready"))
        });
    }
    let header = format!("Bearer {rs_token}");
    assert!(rsa
        .authenticate(Some(&header))
        .now_or_never()
        .expect("ready")
        .is_ok());
    group.bench_function("authenticate_repeat_rs256", |b| {
        b.iter(|| {
            rsa.authenticate(black_box(Some(header.as_str())))
                .now_or_never()
                .expect("ready")
        })
    });
    group.finish();
}

/// A simulator, an upstream client for it and one raw `loadAudienceById/1001` answer.
struct Upstream {
    system: actix_rt::SystemRunner,
    client: Arc<UpstreamClient>,
    raw: bytes::Bytes,
}

fn upstream() -> Upstream {
    let system = actix_rt::System::new();
    let (client, raw) = system.block_on(async {
        let sim = Simulator::start(SimulatorConfig::default(), "127.0.0.1:0")
            .await
            .expect("simulator");
        let settings = UpstreamSettings {
            base_url: sim.base_url(),
            username: Some("sandbox".into()),
            password: Some("sandbox-password".into()),
            ..UpstreamSettings::default()
        };
        let client = Arc::new(
            UpstreamClient::new(&settings, Duration::from_secs(10), Arc::new(Metrics::new()))
                .expect("client"),
        );
        let http = reqwest::Client::new();
        let login = http
            .post(format!("{}/account/login", sim.base_url()))
            .json(&json!({"userName": "sandbox", "password": "sandbox-password"}))
            .send()
            .await
            .expect("login");
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("cookie")
            .to_string();
        let raw = http
            .get(format!("{}/audience/loadAudienceById/1001", sim.base_url()))
            .header("cookie", cookie)
            .send()
            .await
            .expect("load")
            .bytes()
            .await
            .expect("body");
        (client, raw)
    });
    Upstream {
        system,
        client,
        raw,
    }
}

fn cache(c: &mut Criterion) {
    let up = upstream();
    let cache = AudienceCache::new(&CacheSettings::default(), Arc::new(Metrics::new()));
    let ctx = CallContext::default();
    up.system
        .block_on(cache.get(&up.client, &ctx, 1001, false))
        .expect("warm-up read");
    let mut group = c.benchmark_group("cache");
    group.bench_function("hit", |b| {
        b.iter(|| {
            let (entry, _) = up
                .system
                .block_on(cache.get(&up.client, &ctx, black_box(1001), false))
                .expect("hit");
            entry
        })
    });
    // What `block_on` alone costs, to subtract from `hit`.
    group.bench_function("block_on_overhead", |b| {
        b.iter(|| up.system.block_on(async { black_box(1) }))
    });
    let record = read_audience(&up.raw).expect("the simulator's answer reads");
    group.bench_function("build_entry", |b| {
        b.iter(|| CachedAudience::from_record(black_box(&record)).expect("entry"))
    });
    group.finish();

    let mut group = c.benchmark_group("upstream");
    group.throughput(criterion::Throughput::Bytes(up.raw.len() as u64));
    group.bench_function("decode_audience", |b| {
        b.iter(|| read_audience(black_box(&up.raw)).expect("reads"))
    });
    // The audience without its upload history (a read with the cache disabled).
    group.bench_function("decode_audience_only", |b| {
        b.iter(|| read_audience_only(black_box(&up.raw)).expect("reads"))
    });
    group.finish();
}

/// JSON lines at `info`, and the scope of a request being served.
fn access_setup() -> (
    audience_gateway::settings::LogSettings,
    std::rc::Rc<audience_gateway::telemetry::RequestScope>,
) {
    use audience_gateway::settings::{LogFormat, LogSettings};
    let settings = LogSettings {
        format: LogFormat::Json,
        level: "info".into(),
    };
    let scope = std::rc::Rc::new(audience_gateway::telemetry::RequestScope {
        id: "3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a".into(),
        sampled: false,
        trace: Default::default(),
    });
    (settings, scope)
}

/// The gateway's access line for a cached read.
fn access_line() {
    tracing::info!(
        target: "access",
        method = "GET",
        route = "/v1/audiences/{id}",
        status = 200u16,
        latency_ms = 0.123,
        sub = "bench-user",
        "request"
    )
}

/// One access line through the subscriber `telemetry::init` installs (JSON), and through
/// tracing-subscriber's own JSON formatter, both into a sink: what keeps `telemetry/json.rs`.
fn log(c: &mut Criterion) {
    use audience_gateway::telemetry::{self, REQUEST};
    let (settings, scope) = access_setup();
    let access = access_line;
    let mut group = c.benchmark_group("log");
    let shipped = telemetry::subscriber(&settings, std::io::sink, None);
    tracing::subscriber::with_default(shipped, || {
        group.bench_function("access_line", |b| {
            b.iter(|| REQUEST.sync_scope(scope.clone(), access))
        })
    });
    // The same fields without `request_id`, which this formatter has no way to add.
    let library = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .finish();
    tracing::subscriber::with_default(library, || {
        group.bench_function("access_line_tracing_subscriber_json", |b| b.iter(access))
    });
    group.finish();
}

/// CPU time consumed by every thread of the process so far.
fn process_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Lines written back to back before a pause: a burst well within what either writer
/// holds (tracing-appender's queue takes 128,000 lines, a thread's buffer 4 MiB here), so
/// that neither drops lines and both do all the work of writing them.
const BURST: u64 = 1000;

/// `iters` calls of `f` in bursts of [`BURST`], each followed by a pause that lets the
/// writer thread catch up (at the gateway's rate of lines, it always has); the time of the
/// calls alone (`Clock::Call`) or the CPU time of the whole process, the writer thread's
/// included, until the writer has written the last line (`Clock::Cpu`).
fn paced(iters: u64, clock: Clock, mut f: impl FnMut()) -> Duration {
    let pause = Duration::from_millis(2);
    let cpu = process_cpu();
    let mut calls = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BURST);
        let started = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        calls += started.elapsed();
        left -= n;
        std::thread::sleep(pause);
    }
    match clock {
        Clock::Call => calls,
        Clock::Cpu => {
            // Past the writer's 10 ms interval: the last lines are written.
            std::thread::sleep(Duration::from_millis(15));
            process_cpu() - cpu
        }
    }
}

#[derive(Clone, Copy)]
enum Clock {
    Call,
    Cpu,
}

fn dev_null() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null")
}

/// The two log writers, from a thread writing lines to them, with their threads writing
/// to `/dev/null`.
fn log_writer(c: &mut Criterion) {
    use std::io::Write;

    use audience_gateway::telemetry::writer::{LogWriter, Options};
    use audience_gateway::telemetry::{self, REQUEST};
    use tracing_appender::non_blocking::NonBlockingBuilder;

    // An access line as the gateway writes it (244 bytes).
    const LINE: &[u8] = br#"{"timestamp":"2026-12-06T21:49:16.123456Z","level":"INFO","message":"request","method":"GET","route":"/v1/audiences/{id}","status":200,"latency_ms":0.123,"sub":"bench-user","request_id":"3f1c1f1e-6a4b-4f0e-9a55-2d1f7f0f9c1a","target":"access"}
"#;
    let mut group = c.benchmark_group("log_writer");
    group.throughput(criterion::Throughput::Elements(1));

    let (mut old, old_guard) = NonBlockingBuilder::default()
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, dev_null()));
    for (name, clock) in [
        ("nonblocking/call", Clock::Call),
        ("nonblocking/cpu", Clock::Cpu),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| paced(iters, clock, || drop(old.write_all(black_box(LINE)))))
        });
    }
    let old_dropped = old.error_counter().dropped_lines();
    drop(old_guard);

    let (new, new_guard) = LogWriter::spawn(dev_null(), Options::default()).expect("writer");
    let mut w = &new;
    for (name, clock) in [
        ("log_writer/call", Clock::Call),
        ("log_writer/cpu", Clock::Cpu),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| paced(iters, clock, || drop(w.write_all(black_box(LINE)))))
        });
    }
    let new_dropped = new.dropped();
    drop(new_guard);

    // A whole access line: formatted by the gateway's subscriber, then written.
    let (settings, scope) = access_setup();
    let access = access_line;
    let line = || REQUEST.sync_scope(scope.clone(), access);
    let (old, old_guard) = NonBlockingBuilder::default()
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, dev_null()));
    let old_lines = old.error_counter();
    tracing::subscriber::with_default(telemetry::subscriber(&settings, old, None), || {
        group.bench_function("access_line_nonblocking/cpu", |b| {
            b.iter_custom(|iters| paced(iters, Clock::Cpu, line))
        })
    });
    let old_line_dropped = old_lines.dropped_lines();
    drop(old_guard);
    let (new, new_guard) = LogWriter::spawn(dev_null(), Options::default()).expect("writer");
    let new_lines = new.clone();
    tracing::subscriber::with_default(telemetry::subscriber(&settings, new, None), || {
        group.bench_function("access_line_log_writer/cpu", |b| {
            b.iter_custom(|iters| paced(iters, Clock::Cpu, line))
        })
    });
    let new_line_dropped = new_lines.dropped();
    drop(new_guard);
    group.finish();
    // A writer that drops lines does less work: say so next to the numbers.
    eprintln!(
        "log_writer: lines dropped: nonblocking {old_dropped}, log_writer {new_dropped}; \
         access lines: nonblocking {old_line_dropped}, log_writer {new_line_dropped}"
    );
}

criterion_group!(benches, auth, cache, log, log_writer);
criterion_main!(benches);
