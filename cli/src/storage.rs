//! `hostwatch storage stats|verify|backup|restore`: the collector store's
//! counters, a walk over everything stored that reports damage, an online
//! backup written by the collector, and checking or restoring a backup on
//! this host.

use crate::UsageError;
use crate::client::ClientConfig;
use clap::Subcommand;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{BackupRequest, StorageStatsRequest, VerifyStorageRequest};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum StorageCommand {
    /// Counters and sizes of the store since the collector started:
    /// samples stored and refused (by reason), damage skipped, disk use.
    Stats {
        /// Print JSON instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Read and decode everything stored and report damaged records; exits
    /// 1 if any is found. Takes time in proportion to the store's size.
    /// With --backup, checks a backup on this host instead (complete, of a
    /// format this build reads, every file's checksum), without restoring it.
    Verify {
        /// Print JSON instead of a list.
        #[arg(long)]
        json: bool,
        /// A backup directory on this host to check (no collector needed).
        #[arg(long, value_name = "DIR")]
        backup: Option<PathBuf>,
    },
    /// Have the collector write a consistent copy of its data directory
    /// while it keeps ingesting. The directory is on the collector's host
    /// and written by the collector's user.
    Backup {
        /// Absolute path on the collector's host: missing or empty, or an
        /// earlier backup with --incremental.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Update the earlier backup in DIR: unchanged partitions are kept.
        #[arg(long)]
        incremental: bool,
        /// Print JSON instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Fill an empty (or missing) data directory from a backup on this
    /// host, checked first; the collector must not be running on it. Then
    /// start the collector with that data_dir. (`hostwatch-collector
    /// --restore DIR` does both.)
    Restore {
        /// The backup directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The collector's data_dir to fill.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

/// What a backup holds, as `verify --backup` and `restore` print it.
#[derive(Serialize)]
struct BackupSummary {
    group: u64,
    created_ms: i64,
    store_format: u32,
    partitions: usize,
    files: usize,
    bytes: u64,
}

impl From<hostwatch_tsdb::Manifest> for BackupSummary {
    fn from(m: hostwatch_tsdb::Manifest) -> Self {
        BackupSummary {
            group: m.group,
            created_ms: m.created_ms,
            store_format: m.store_format,
            partitions: m.partitions.len(),
            files: m.files.len(),
            bytes: m.bytes(),
        }
    }
}

pub(crate) fn run(config_path: Option<PathBuf>, command: StorageCommand) -> anyhow::Result<()> {
    // Backups on this host need no collector.
    let remote = || -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig::load(&crate::client::config_path(
            config_path.clone(),
        )?)?)
    };
    match command {
        StorageCommand::Stats { json } => {
            let stats = remote()?.call(AdminClient::new, |mut admin| async move {
                admin.storage_stats(StorageStatsRequest {}).await
            })?;
            print(&stats, json)
        }
        StorageCommand::Verify {
            json,
            backup: Some(dir),
        } => {
            let manifest = hostwatch_tsdb::backup::verify_backup(&dir)?;
            print(&BackupSummary::from(manifest), json)
        }
        StorageCommand::Verify { json, backup: None } => {
            let report = remote()?.call(AdminClient::new, |mut admin| async move {
                admin.verify_storage(VerifyStorageRequest {}).await
            })?;
            print(&report, json)?;
            if report.damaged_total > 0 {
                anyhow::bail!("the store holds {} damaged records", report.damaged_total);
            }
            Ok(())
        }
        StorageCommand::Backup {
            to,
            incremental,
            json,
        } => {
            if !to.is_absolute() {
                return Err(UsageError(format!(
                    "--to must be an absolute path on the collector's host, not {}",
                    to.display()
                ))
                .into());
            }
            let to = to.display().to_string();
            let report = remote()?.call(AdminClient::new, |mut admin| async move {
                admin.backup(BackupRequest { to, incremental }).await
            })?;
            print(&report, json)
        }
        StorageCommand::Restore { from, data_dir } => {
            let manifest = hostwatch_tsdb::backup::restore(&from, &data_dir)?;
            println!(
                "restored {} from {}: {} files, {} bytes, up to commit group {}",
                data_dir.display(),
                from.display(),
                manifest.files.len(),
                manifest.bytes(),
                manifest.group
            );
            Ok(())
        }
    }
}

/// Prints a message as JSON, or as `name value` lines (nested messages'
/// fields as `outer.inner`, lists one item per line).
fn print(message: &impl Serialize, json: bool) -> anyhow::Result<()> {
    let value = serde_json::to_value(message)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut lines = Vec::new();
    flatten("", &value, &mut lines);
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in lines {
        println!("{name:width$}  {value}");
    }
    Ok(())
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, v) in fields {
                let name = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                flatten(prefix, item, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}
