//! Bench-only: the simulated Digital Audience API on its own, so that `bench/run` and
//! `bench/load` can pin it, size it and measure it apart from the gateway.
//!
//! ```text
//! bench_upstream --addr 127.0.0.1:18081 [--workers 1] [--seed-audiences 5] [--latency-ms 0]
//! ```
//! Prints the base URL once listening; runs until killed. Fault knobs stay available at
//! `POST /__sim/faults`.

use std::io::Write;
use std::time::Duration;

use audience_sandbox::{Simulator, SimulatorConfig};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Server worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seeded audiences (ids from 1001).
    #[arg(long, default_value_t = 5)]
    seed_audiences: usize,
    /// Latency added to every vendor call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = SimulatorConfig {
        workers: args.workers,
        seed_audiences: args.seed_audiences,
        latency: Duration::from_millis(args.latency_ms),
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(config, &args.addr).await?;
    println!("{}", sim.base_url());
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
