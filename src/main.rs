//! Wiring only: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser;

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
