//! The `hostwatch-collector --config FILE [--restore DIR]` command.

use crate::CollectorConfig;
use anyhow::Context;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// hostwatch's collector: receives agents' samples over mutual TLS, stores
/// them, and answers operators.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path of collector.toml.
    #[arg(long, short)]
    config: PathBuf,
    /// Restore the data directory (`data_dir`, which must be empty or
    /// missing) from the backup in DIR, checked first, then start.
    #[arg(long, value_name = "DIR")]
    restore: Option<PathBuf>,
}

/// The binary's whole behaviour, in the library so that end-to-end tests
/// can build the same program as a real process.
pub fn main() -> ExitCode {
    let Args { config, restore } = Args::parse();
    hostwatch_runtime::run_main(
        "hostwatch-collector",
        || CollectorConfig::load(&config),
        |config| {
            if let Some(from) = &restore {
                restore_data(from, &config.data_dir)?;
            }
            run(config)
        },
    )
}

/// Restores `data_dir` from the backup in `from`; refused for a backup cut
/// short, damaged or of a newer format, or a data directory in use.
fn restore_data(from: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let manifest = hostwatch_tsdb::backup::restore(from, data_dir).with_context(|| {
        format!(
            "cannot restore {} from {}",
            data_dir.display(),
            from.display()
        )
    })?;
    tracing::info!(from = %from.display(), data_dir = %data_dir.display(), group = manifest.group, created_ms = manifest.created_ms, files = manifest.files.len(), "restored from a backup: starting");
    Ok(())
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
