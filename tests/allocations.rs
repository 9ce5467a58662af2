//! Heap allocations per cached read, counted in the whole process: the gateway (one worker,
//! cache on, the access log on at `info` in JSON through the log writer `telemetry::init`
//! installs, into a sink), the simulator behind it and the client. The client sends the same
//! authenticated `GET /v1/audiences/1001` over one keep-alive connection from request bytes
//! built beforehand, into a read buffer made beforehand, so it allocates nothing per request;
//! every allocation counted is the gateway's (its worker, the log writer thread, its timers).
//!
//! Run alone with `cargo test --test allocations -- --nocapture` to see the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use audience_gateway::auth::mint::{mint_hs256, TokenSpec};
use audience_gateway::auth::ALL_SCOPES;
use audience_gateway::settings::{LogFormat, LogSettings, OtelSettings, Settings};
use audience_gateway::{telemetry, Application};
use audience_sandbox::{Simulator, SimulatorConfig};

/// Counts every allocation (and reallocation) made through it.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Cached reads counted.
const HITS: u64 = 2000;
/// Cached reads before counting starts (buffers and caches reach their working size).
const WARM_UP: u64 = 200;
/// The committed bound: allocations per cached read, the count measured rounded up a little.
const MAX_PER_HIT: u64 = 17;

/// The log sink: counts the lines and keeps the first bytes, into a buffer made beforehand.
#[derive(Clone)]
struct Sink {
    lines: Arc<AtomicU64>,
    head: Arc<Mutex<Vec<u8>>>,
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let lines = b.iter().filter(|&&c| c == b'\n').count() as u64;
        self.lines.fetch_add(lines, Ordering::Relaxed);
        let mut head = self.head.lock().unwrap();
        let room = head.capacity() - head.len();
        head.extend_from_slice(&b[..b.len().min(room)]);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Sends `request` and reads the whole response into `buf`; its length.
fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut [u8]) -> usize {
    stream.write_all(request).expect("request sent");
    let mut len = 0;
    let mut want = None;
    loop {
        let n = stream.read(&mut buf[len..]).expect("response read");
        assert!(n > 0, "the gateway closed the connection");
        len += n;
        if want.is_none() {
            if let Some(end) = find(&buf[..len], b"\r\n\r\n") {
                let at = find(&buf[..end], b"\r\ncontent-length:").expect("content-length");
                let value = &buf[at + 17..end];
                let digits = value
                    .iter()
                    .skip_while(|b| **b == b' ')
                    .take_while(|b| b.is_ascii_digit());
                let body = digits.fold(0, |n, d| n * 10 + usize::from(d - b'0'));
                want = Some(end + 4 + body);
            }
        }
        if want.is_some_and(|want| len >= want) {
            return len;
        }
    }
}

#[actix_rt::test]
async fn a_cached_read_allocates_at_most_the_committed_count() {
    let sink = Sink {
        lines: Arc::default(),
        head: Arc::new(Mutex::new(Vec::with_capacity(16 * 1024))),
    };
    let log = LogSettings {
        format: LogFormat::Json,
        level: "info".into(),
    };
    let telemetry =
        telemetry::init_with_sink(&log, &OtelSettings::default(), sink.clone()).expect("telemetry");

    let config = SimulatorConfig::default();
    let sim = Simulator::start(config.clone(), "127.0.0.1:0")
        .await
        .expect("simulator starts");
    let secret = "allocations-secret-0123456789abcdef-0123";
    let ledger = std::env::temp_dir().join(format!("ag-allocations-{}", std::process::id()));
    let env = [
        ("GATEWAY_LEDGER__DIR", ledger.display().to_string()),
        ("GATEWAY_SERVER__HOST", "127.0.0.1".into()),
        ("GATEWAY_SERVER__PORT", "0".into()),
        ("GATEWAY_SERVER__WORKERS", "1".into()),
        ("GATEWAY_UPSTREAM__BASE_URL", sim.base_url()),
        ("GATEWAY_UPSTREAM__USERNAME", config.username.clone()),
        ("GATEWAY_UPSTREAM__PASSWORD", config.password.clone()),
        ("GATEWAY_AUTH__HS256_SECRET", secret.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Settings::load_from(None, env).expect("settings");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with_listener(settings, listener).expect("app builds");
    let port = app.port();
    let handle = app.handle();
    actix_rt::spawn(app.run_until_stopped(false));

    let token = mint_hs256(
        secret.as_bytes(),
        &TokenSpec {
            sub: "allocations".into(),
            scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            ttl_secs: 3600,
            client_id: None,
            issuer: None,
            audience: None,
        },
    )
    .expect("token");
    let request = format!(
        "GET /v1/audiences/1001 HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\
         authorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes();

    // A blocking client on a thread of its own: the simulator serves on this one.
    let counted = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; 256 * 1024];
        // The miss that fills the cache, then hits.
        let len = exchange(&mut stream, &request, &mut buf);
        assert!(buf.starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..len]);
        for _ in 0..WARM_UP {
            exchange(&mut stream, &request, &mut buf);
        }
        let len = exchange(&mut stream, &request, &mut buf);
        assert!(buf.starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..len]);
        assert!(
            find(&buf[..len], b"\r\ncache-status: audience-gateway; hit").is_some(),
            "not a cache hit: {}",
            String::from_utf8_lossy(&buf[..len])
        );
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..HITS {
            exchange(&mut stream, &request, &mut buf);
        }
        ALLOCATIONS.load(Ordering::Relaxed) - before
    })
    .await
    .expect("client thread");

    handle.stop(true).await;
    // Writes out every line still buffered.
    drop(telemetry);
    let per_hit = counted as f64 / HITS as f64;
    println!("allocations per cached read: {per_hit:.2} ({counted} over {HITS})");
    let lines = sink.lines.load(Ordering::Relaxed);
    let head = String::from_utf8_lossy(&sink.head.lock().unwrap()).into_owned();
    assert!(lines > HITS + WARM_UP, "{lines} lines: {head}");
    assert!(head.contains(r#""target":"access""#), "{head}");
    assert!(
        counted <= MAX_PER_HIT * HITS,
        "{per_hit:.2} allocations per cached read, more than {MAX_PER_HIT}"
    );
}
