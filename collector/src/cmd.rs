//! The `hostwatch-collector --config FILE` command.

use crate::CollectorConfig;
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// hostwatch's collector: receives agents' samples over mutual TLS, stores
/// them, and answers operators.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path of collector.toml.
    #[arg(long, short)]
    config: PathBuf,
}

/// The binary's whole behaviour, in the library so that end-to-end tests
/// can build the same program as a real process.
pub fn main() -> ExitCode {
    hostwatch_runtime::init_tracing("info");
    let args = Args::parse();
    let config = match CollectorConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostwatch-collector: invalid configuration: {e}");
            return ExitCode::from(hostwatch_runtime::EXIT_USAGE);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostwatch-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: CollectorConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        crate::serve(config, listener, hostwatch_runtime::shutdown_signal()).await?;
        Ok(())
    })
}
