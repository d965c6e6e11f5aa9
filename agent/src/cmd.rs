//! The `hostwatch-agent --config FILE` command.

use crate::AgentConfig;
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// hostwatch's agent: samples this host and streams the samples to the
/// collector over mutual TLS.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path of agent.toml.
    #[arg(long, short)]
    config: PathBuf,
}

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 64;

/// The binary's whole behaviour, in the library so that end-to-end tests
/// can build the same program as a real process.
pub fn main() -> ExitCode {
    hostwatch_pki::process::init_tracing("info");
    let args = Args::parse();
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostwatch-agent: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostwatch-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: AgentConfig) -> anyhow::Result<()> {
    // One thread: the agent's work is a few reads of /proc per interval.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(crate::run(
        config,
        hostwatch_pki::process::shutdown_signal(),
    ))?;
    Ok(())
}
