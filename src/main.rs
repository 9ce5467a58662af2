//! Wiring only: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: every request allocates many small, short-lived objects (headers, futures,
/// JSON values), which it serves from per-thread pages; docs/BENCHMARKS.md measures the
/// minimal handler on both allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = audience_gateway::cli::Cli::parse();
    match audience_gateway::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audience-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
