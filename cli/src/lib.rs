//! `hostwatch`, the operator's command: certificates, a local quick start,
//! and reads from a running collector.
//!
//! Layout:
//! - this file: arguments and dispatch, exit codes;
//! - `client`: `cli.toml` and the mTLS connection to the collector;
//! - `certs`: `hostwatch certs init|issue`;
//! - `quickstart`: PKI, configs, collector and agent in one process;
//! - `read`: `hosts`, `query` and `processes`, as tables or JSON;
//! - `promql`: `promql`, PromQL through the collector's engine;
//! - `units`: values in their unit (from metric names and expressions);
//! - `alerts`: `alerts` (list, history, watch), `silence`, `reload`;
//! - `storage`: `storage stats|verify`, the collector store's health;
//!   `storage backup|restore`, its backups;
//! - `tokens`: `token create|list|revoke`, the HTTPS API's bearer tokens.

mod alerts;
mod certs;
pub mod client;
mod promql;
mod quickstart;
mod read;
mod revoke;
mod storage;
mod tokens;
mod units;

pub use client::ClientConfig;
pub use quickstart::local_host_id;

use clap::{Parser, Subcommand};
use hostwatch_runtime::EXIT_USAGE;
use std::path::PathBuf;
use std::process::ExitCode;

/// An error in what the user asked for (arguments, configuration), as
/// opposed to a failure while doing it; exits with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// hostwatch: host monitoring with an agent, a collector and this command.
#[derive(Parser)]
#[command(name = "hostwatch", version)]
struct Args {
    /// Client configuration (collector address and certificates); needed by
    /// the commands that talk to a collector.
    #[arg(long, short, global = true, env = "HOSTWATCH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA and issue role certificates.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Run a collector and an agent for this machine and show a live summary.
    Quickstart(quickstart::QuickstartArgs),
    /// List hosts with their status; revoke a host, list revoked hosts.
    Hosts {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: read::HostFilter,
        #[command(subcommand)]
        command: Option<revoke::HostsCommand>,
    },
    /// Show the samples of a metric of one host.
    Query(read::QueryArgs),
    /// Evaluate a PromQL expression: now, at a time, or over a range.
    Promql(promql::PromqlArgs),
    /// Show the top processes of one host, now or at a past time.
    Processes(read::ProcessesArgs),
    /// List alerts (pending and firing); `history` and `watch` their transitions.
    Alerts(alerts::AlertsArgs),
    /// Create, list and expire silences.
    Silence {
        #[command(subcommand)]
        command: alerts::SilenceCommand,
    },
    /// Make the collector re-read its configuration's [alerting] section.
    Reload,
    /// The collector's store: counters and sizes, a check for damage,
    /// backups and restoring from one.
    Storage {
        #[command(subcommand)]
        command: storage::StorageCommand,
    },
    /// Create, list and revoke bearer tokens of the collector's HTTPS API.
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
}

/// The whole program; `main.rs` only calls this.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Warnings only: the quick start's summary is the output people read.
    hostwatch_runtime::init_tracing("warn");
    match dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostwatch: {e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<hostwatch_runtime::config::ConfigError>()
                    .is_some();
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

fn dispatch(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Certs { command } => certs::run(command),
        Command::Quickstart(q) => quickstart::run(q),
        Command::Hosts {
            command: Some(command),
            ..
        } => revoke::run(&client::config_path(args.config)?, command),
        Command::Hosts {
            json,
            filter,
            command: None,
        } => read::hosts(&client::config_path(args.config)?, json, &filter),
        Command::Query(q) => read::query(&client::config_path(args.config)?, q),
        Command::Promql(p) => promql::run(&client::config_path(args.config)?, p),
        Command::Processes(p) => read::processes(&client::config_path(args.config)?, p),
        Command::Alerts(a) => alerts::alerts(&client::config_path(args.config)?, a),
        Command::Silence { command } => {
            alerts::silence(&client::config_path(args.config)?, command)
        }
        Command::Reload => alerts::reload(&client::config_path(args.config)?),
        Command::Storage { command } => storage::run(args.config, command),
        Command::Token { command } => tokens::run(&client::config_path(args.config)?, command),
    }
}
