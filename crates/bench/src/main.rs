//! `hostwatch-bench`: hostwatch's benchmarks, as programs. Each subcommand
//! runs one benchmark in release mode and prints one `name=value` line per
//! figure (medians over the run, ratios measured in the same run).
//!
//! Layout: `measure` (process CPU and memory from /proc and getrusage,
//! thread CPU, medians and percentiles), one module per subcommand
//! (`agent`, `storage`, `alerts`).

mod agent;
mod alerts;
mod measure;
mod storage;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "hostwatch's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The agent's CPU per sample and memory, against node_exporter's per
    /// scrape on the same machine in the same run, and their agreement.
    Agent(agent::Args),
    /// The storage engine on agent-like data: durable ingest with
    /// concurrent writers, bytes per sample, query latencies, restart,
    /// memory per series; against Prometheus' promtool when installed.
    Storage(storage::Args),
    /// Alert evaluation's CPU as a share of the collector's ingest CPU with
    /// 10,000 hosts and the default rules, sample-to-webhook latency, and
    /// host-down delay.
    Alerts(alerts::Args),
    /// The crash rounds' child process (internal).
    #[command(hide = true)]
    StorageCrashChild(storage::CrashChildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => agent::run(args),
        Command::Storage(args) => storage::run(args),
        Command::Alerts(args) => alerts::run(args),
        Command::StorageCrashChild(args) => storage::crash_child(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostwatch-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
