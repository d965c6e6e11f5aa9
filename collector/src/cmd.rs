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
    let path = Args::parse().config;
    hostwatch_runtime::run_main("hostwatch-collector", || CollectorConfig::load(&path), run)
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
