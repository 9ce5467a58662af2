//! Bench-only baselines that `bench/run` measures the gateway against, in the same run and
//! under the same pinning, and the trace collector its traced rows export to. None is part
//! of the gateway.
//!
//! ```text
//! bench_baseline static    --addr 127.0.0.1:P --body-file audience.json
//! bench_baseline forward   --addr 127.0.0.1:P --upstream http://127.0.0.1:U
//! bench_baseline forward-ledger --addr 127.0.0.1:P --upstream http://127.0.0.1:U --ledger-file F
//! bench_baseline otlp-sink --addr 127.0.0.1:P
//! ```
//! `static` is the least an actix-web server can do for `GET /v1/audiences/{id}`: answer
//! fixed bytes (the gateway's cached body). `forward` is a plain reqwest forwarder: it logs
//! in to the simulator once, then passes each `GET /v1/audiences/{id}` to
//! `/audience/loadAudienceById/{id}` with the session cookie and returns the upstream body
//! as-is (no auth, no envelope decoding, no cache, no telemetry); likewise each
//! `POST /v1/audiences/{id}/activations` to `/audience/activate`, with `audienceId` added to
//! the body. `forward-ledger` is `forward` plus, for each activation the vendor accepted,
//! one insert into a SQLite file opened with the gateway ledger's settings (WAL journal,
//! `synchronous = NORMAL`, the busy timeout and pool size of `ledger.*`'s defaults) into the
//! ledger's own table (`migrations/20261201000000_activations.sql`), awaited before the
//! answer as the gateway awaits its ledger write; the pool is the worker's own, so the
//! insert runs where the request does. `otlp-sink` takes OTLP/HTTP exports (`POST /v1/traces`) as a collector would,
//! without decoding them, and counts them (`GET /stats`: exports and bytes).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    /// Listen address.
    #[arg(long, global = true, default_value = "127.0.0.1:0")]
    addr: String,
    /// Server worker threads.
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Answer the bytes of a file.
    Static {
        #[arg(long)]
        body_file: std::path::PathBuf,
    },
    /// Forward to the simulator with reqwest.
    Forward {
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value = "sandbox")]
        username: String,
        #[arg(long, default_value = "sandbox-password")]
        password: String,
    },
    /// `forward`, plus one SQLite insert per activation.
    ForwardLedger {
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value = "sandbox")]
        username: String,
        #[arg(long, default_value = "sandbox-password")]
        password: String,
        /// The SQLite file (created with its directory and table).
        #[arg(long)]
        ledger_file: std::path::PathBuf,
        /// Most connections of the pool (the gateway's `ledger.max_connections` default).
        #[arg(long, default_value_t = 5)]
        max_connections: u32,
    },
    /// Accept OTLP/HTTP trace exports and count them.
    OtlpSink,
}

/// The gateway ledger's table, from its migration.
const ACTIVATIONS_TABLE: &str = include_str!("../migrations/20261201000000_activations.sql");

/// The insert the gateway's ledger makes (`src/ledger/sql.rs`).
const INSERT: &str = "INSERT INTO activations (audience_id, flow_id, segment_id, \
    account_id, account_name, segment_name, segment_description, start_date, end_date, \
    activated_at, caller_sub, caller_client_id, request_id, idempotency_key) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT (audience_id, flow_id) DO NOTHING";

/// The gateway's `ledger.timeout_ms` default: SQLite's busy timeout and the pool's acquire
/// timeout.
const LEDGER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The connection options of the gateway's SQLite ledger (`src/ledger/sqlite.rs`).
fn ledger_options(path: &std::path::Path) -> sqlx::sqlite::SqliteConnectOptions {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(LEDGER_TIMEOUT)
}

/// What the insert needs of an activation request and of the vendor's answer.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Asked {
    account_id: i64,
    name: String,
    description: String,
    start_date: String,
    end_date: String,
}

/// The flow and segment ids of the vendor's answer: under `data`, or at the envelope's top
/// level (the simulator's loose style).
fn accepted(body: &[u8]) -> Option<(String, i64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let at = if v["data"]["flowId"].is_string() {
        &v["data"]
    } else {
        &v
    };
    Some((
        at["flowId"].as_str()?.to_string(),
        at["segmentId"].as_i64()?,
    ))
}

#[derive(Default)]
struct Received {
    exports: AtomicU64,
    bytes: AtomicU64,
}

async fn export(received: web::Data<Received>, body: Bytes) -> HttpResponse {
    received.exports.fetch_add(1, Ordering::Relaxed);
    received
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

async fn stats(received: web::Data<Received>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "exports": received.exports.load(Ordering::Relaxed),
        "bytes": received.bytes.load(Ordering::Relaxed),
    }))
}

struct Forwarder {
    http: reqwest::Client,
    upstream: String,
    cookie: String,
}

/// `forward-ledger`'s per-worker state: the pool, and a counter for request ids.
struct LedgerPool {
    pool: sqlx::SqlitePool,
    requests: AtomicU64,
}

async fn fixed(body: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.get_ref().clone())
}

async fn forward(f: web::Data<Forwarder>, id: web::Path<i64>) -> HttpResponse {
    let url = format!("{}/audience/loadAudienceById/{id}", f.upstream);
    let sent = f
        .http
        .get(url)
        .header("cookie", &f.cookie)
        .header("accept", "application/json")
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(_) => return HttpResponse::BadGateway().finish(),
    };
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(body) => HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
        )
        .content_type("application/json")
        .body(body),
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn forward_activation(
    f: web::Data<Forwarder>,
    id: web::Path<i64>,
    body: web::Json<serde_json::Map<String, serde_json::Value>>,
) -> HttpResponse {
    let mut body = body.into_inner();
    body.insert("audienceId".into(), (*id).into());
    let sent = f
        .http
        .post(format!("{}/audience/activate", f.upstream))
        .header("cookie", &f.cookie)
        .json(&body)
        .send()
        .await;
    match sent {
        Ok(resp) => match resp.bytes().await {
            Ok(body) => HttpResponse::Ok()
                .content_type("application/json")
                .body(body),
            Err(_) => HttpResponse::BadGateway().finish(),
        },
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn forward_activation_recorded(
    f: web::Data<Forwarder>,
    ledger: web::Data<LedgerPool>,
    id: web::Path<i64>,
    body: web::Json<serde_json::Map<String, serde_json::Value>>,
) -> HttpResponse {
    let id = id.into_inner();
    let mut body = body.into_inner();
    let asked: Asked = match serde_json::from_value(serde_json::Value::Object(body.clone())) {
        Ok(a) => a,
        Err(_) => return HttpResponse::BadRequest().finish(),
    };
    body.insert("audienceId".into(), id.into());
    let sent = f
        .http
        .post(format!("{}/audience/activate", f.upstream))
        .header("cookie", &f.cookie)
        .json(&body)
        .send()
        .await;
    let answer = match sent {
        Ok(resp) => match resp.bytes().await {
            Ok(body) => body,
            Err(_) => return HttpResponse::BadGateway().finish(),
        },
        Err(_) => return HttpResponse::BadGateway().finish(),
    };
    let Some((flow_id, segment_id)) = accepted(&answer) else {
        return HttpResponse::BadGateway().finish();
    };
    let request = ledger.requests.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let written = sqlx::query(INSERT)
        .bind(id)
        .bind(&flow_id)
        .bind(segment_id)
        .bind(asked.account_id)
        .bind(None::<String>)
        .bind(&asked.name)
        .bind(&asked.description)
        .bind(&asked.start_date)
        .bind(&asked.end_date)
        .bind(now)
        .bind("bench")
        .bind(None::<String>)
        .bind(format!("bench-{request}"))
        .bind(None::<String>)
        .execute(&ledger.pool)
        .await;
    match written {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body(answer),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn login(
    http: &reqwest::Client,
    upstream: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{upstream}/account/login"))
        .json(&serde_json::json!({"userName": user, "password": password}))
        .send()
        .await?;
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("login answered no cookie"))?;
    Ok(cookie)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = std::net::TcpListener::bind(&args.addr)?;
    let addr = listener.local_addr()?;
    let server = match args.mode {
        Mode::Static { body_file } => {
            let body = web::Data::new(Bytes::from(std::fs::read(body_file)?));
            HttpServer::new(move || {
                App::new()
                    .app_data(body.clone())
                    .route("/v1/audiences/{id}", web::get().to(fixed))
            })
            .workers(args.workers)
            .listen(listener)?
            .run()
        }
        Mode::Forward {
            upstream,
            username,
            password,
        } => {
            let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
            let upstream = upstream.trim_end_matches('/').to_string();
            let cookie = login(&http, &upstream, &username, &password).await?;
            let f = web::Data::new(Forwarder {
                http,
                upstream,
                cookie,
            });
            HttpServer::new(move || {
                App::new()
                    .app_data(f.clone())
                    .route("/v1/audiences/{id}", web::get().to(forward))
                    .route(
                        "/v1/audiences/{id}/activations",
                        web::post().to(forward_activation),
                    )
            })
            .workers(args.workers)
            .listen(listener)?
            .run()
        }
        Mode::ForwardLedger {
            upstream,
            username,
            password,
            ledger_file,
            max_connections,
        } => {
            if let Some(dir) = ledger_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let options = ledger_options(&ledger_file);
            {
                use sqlx::ConnectOptions;
                let mut conn = options.connect().await?;
                sqlx::raw_sql(ACTIVATIONS_TABLE).execute(&mut conn).await?;
            }
            let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
            let upstream = upstream.trim_end_matches('/').to_string();
            let cookie = login(&http, &upstream, &username, &password).await?;
            let f = web::Data::new(Forwarder {
                http,
                upstream,
                cookie,
            });
            HttpServer::new(move || {
                // Made on the worker's runtime, where its requests use it.
                let ledger = web::Data::new(LedgerPool {
                    pool: sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(max_connections)
                        .acquire_timeout(LEDGER_TIMEOUT)
                        .connect_lazy_with(options.clone()),
                    requests: AtomicU64::new(0),
                });
                App::new()
                    .app_data(f.clone())
                    .app_data(ledger)
                    .route("/v1/audiences/{id}", web::get().to(forward))
                    .route(
                        "/v1/audiences/{id}/activations",
                        web::post().to(forward_activation_recorded),
                    )
            })
            .workers(args.workers)
            .listen(listener)?
            .run()
        }
        Mode::OtlpSink => {
            let received = web::Data::new(Received::default());
            HttpServer::new(move || {
                App::new()
                    .app_data(received.clone())
                    .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                    .route("/v1/traces", web::post().to(export))
                    .route("/stats", web::get().to(stats))
            })
            .workers(args.workers)
            .listen(listener)?
            .run()
        }
    };
    println!("http://{addr}");
    std::io::stdout().flush()?;
    server.await?;
    Ok(())
}
