//! `hostwatch-bench`: hostwatch's benchmarks, as programs. Each subcommand
//! runs one benchmark in release mode and prints one `name=value` line per
//! figure (medians over the run, ratios measured in the same run).
//!
//! Layout: `measure` (process CPU and memory from /proc, medians), one
//! module per subcommand (`agent`).

mod agent;
mod measure;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => agent::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostwatch-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
