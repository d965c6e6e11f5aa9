//! `hostwatch storage stats|verify`: the collector store's counters, and a
//! walk over everything stored that reports damage.

use crate::client::ClientConfig;
use clap::Subcommand;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{StorageStatsRequest, VerifyStorageRequest};
use serde::Serialize;
use std::path::Path;

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
    Verify {
        /// Print JSON instead of a list.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(config_path: &Path, command: StorageCommand) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    match command {
        StorageCommand::Stats { json } => {
            let stats = config.call(AdminClient::new, |mut admin| async move {
                admin.storage_stats(StorageStatsRequest {}).await
            })?;
            print(&stats, json)
        }
        StorageCommand::Verify { json } => {
            let report = config.call(AdminClient::new, |mut admin| async move {
                admin.verify_storage(VerifyStorageRequest {}).await
            })?;
            print(&report, json)?;
            if report.damaged_total > 0 {
                anyhow::bail!("the store holds {} damaged records", report.damaged_total);
            }
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
