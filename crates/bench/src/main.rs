//! `hostwatch-bench`: hostwatch's benchmarks, as programs. Each subcommand
//! runs one benchmark in release mode and prints one `name=value` line per
//! figure (medians over the run, ratios measured in the same run).
//!
//! Layout: `measure` (process CPU and memory from /proc and getrusage,
//! thread CPU, medians and percentiles), one module per subcommand
//! (`agent`, `storage`, `sled_space`, `alerts`, `connections`, `backup`,
//! `promql`, `console`, `enroll`, `fleet`, `forward_read`, `forward`),
//! and
//! `figures`, which writes their output into `docs/benchmarks.md`.

mod agent;
mod alerts;
mod backup;
mod batch_shapes;
mod connections;
mod console;
mod enroll;
mod figures;
mod fixture;
mod fleet;
mod forward;
mod forward_read;
mod measure;
mod promql;
mod sled_space;
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
    /// sled's directory over the data it holds, for the store's chunk
    /// writes and retention deletes without the store.
    SledSpace(sled_space::Args),
    /// Alert evaluation's CPU as a share of the collector's ingest CPU with
    /// 10,000 hosts and the default rules, sample-to-webhook latency, and
    /// host-down delay.
    Alerts(alerts::Args),
    /// What one hostile batch (a series listed once per sample, samples
    /// newest first, a dense series) costs the store, and how long the
    /// host's readers wait meanwhile.
    BatchShapes(batch_shapes::Args),
    /// Operator call latency during connection floods at the collector's
    /// limit (idle mTLS from one certificate, idle TCP, half handshakes),
    /// and its memory under streams holding incomplete batches.
    Connections(connections::Args),
    /// PromQL over the collector's HTTPS API against Prometheus 2.42 on
    /// the same data: a host dashboard, fleet queries over a day, instant
    /// queries over many hosts; and a query's memory.
    Promql(promql::Args),
    /// The web console with 10,000 simulated hosts: the fleet page's API
    /// requests replayed, page loads in headless chromium, the tab's
    /// memory, and ingest CPU with the console idle against off.
    Console(console::Args),
    /// 1,000 simulated agents enrolling at once against one collector
    /// process, then renewing: the time for all, and the collector's CPU
    /// per enrollment and per renewal.
    Enroll(enroll::Args),
    /// Simulated agents (each its own certificate, TLS connection and
    /// stream) against a collector process: its CPU per sample, memory per
    /// agent and acknowledgement latency, then a SIGKILL and restart: the
    /// time until all are back and drained, host-down pages, samples lost.
    Fleet(fleet::Args),
    /// Forwarding's read path (the accept log, then each listed series'
    /// points read back) against ingest, in CPU per sample, as the
    /// hour's windows fill.
    ForwardRead(forward_read::Args),
    /// One remote_write destination against a local receiver (a child
    /// process, its limit measured too): ingest's CPU per sample with
    /// forwarding against without, in the same run, and whether
    /// forwarding keeps up.
    Forward(forward::Args),
    /// Rewrites the figures table of docs/benchmarks.md from output files
    /// of one benchmark's runs.
    Figures(figures::Args),
    /// Online backups of a collector under ingest: a store of a known size
    /// backed up (full, then incremental) while agents stream batches;
    /// duration, bytes, and acknowledgement latency during a backup
    /// against without.
    Backup(backup::Args),
    /// The crash rounds' child process (internal).
    #[command(hide = true)]
    StorageCrashChild(storage::CrashChildArgs),
    /// The forward benchmark's receiver process (internal).
    #[command(hide = true)]
    ForwardReceiver(forward::ReceiverArgs),
}

/// The collector's allocator (collector/src/main.rs): the collector runs in
/// this process, and the storage, alerts and connections figures, its
/// memory above all, stand for the collector's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => agent::run(args),
        Command::Backup(args) => backup::run(args),
        Command::ForwardRead(args) => forward_read::run(args),
        Command::Forward(args) => forward::run(args),
        Command::ForwardReceiver(args) => forward::receiver(args),
        Command::Storage(args) => storage::run(args),
        Command::SledSpace(args) => sled_space::run(args),
        Command::Alerts(args) => alerts::run(args),
        Command::BatchShapes(args) => batch_shapes::run(args),
        Command::Connections(args) => connections::run(args),
        Command::Promql(args) => promql::run(args),
        Command::Console(args) => console::run(args),
        Command::Enroll(args) => enroll::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Figures(args) => figures::run(args),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn storage_args(args: &[&str]) -> Result<storage::Args, clap::Error> {
        let argv = ["hostwatch-bench", "storage"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Storage(args) => Ok(args),
            _ => unreachable!("parsed as storage"),
        }
    }

    fn sled_space_args(args: &[&str]) -> Result<sled_space::Args, clap::Error> {
        let argv = ["hostwatch-bench", "sled-space"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::SledSpace(args) => Ok(args),
            _ => unreachable!("parsed as sled-space"),
        }
    }

    #[test]
    fn batch_shapes_runs_and_refuses_an_empty_batch() {
        let parse = |args: &[&str]| {
            let argv = ["hostwatch-bench", "batch-shapes"].iter().chain(args);
            match Cli::try_parse_from(argv)?.command {
                Command::BatchShapes(args) => Ok(args),
                _ => unreachable!("parsed as batch-shapes"),
            }
        };
        // (clap reads `-1` as a flag of its own.)
        for bad in ["0", "x", "1.5"] {
            let e: clap::Error = parse(&["--samples", bad]).err().expect("refused");
            assert!(e.to_string().contains("--samples"), "{bad}: {e}");
        }
        batch_shapes::run(parse(&["--samples", "100"]).unwrap()).unwrap();
    }

    fn console_args(args: &[&str]) -> Result<console::Args, clap::Error> {
        let argv = ["hostwatch-bench", "console"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Console(args) => Ok(args),
            _ => unreachable!("parsed as console"),
        }
    }

    #[test]
    fn console_flags_refuse_bad_values() {
        for (flag, bad) in [
            ("--hosts", "0"),
            ("--minutes", "0"),
            ("--host-hours", "0"),
            ("--host-hours", "721"),
            ("--lead-minutes", "0"),
            ("--runs", "0"),
            ("--replays", "x"),
            ("--ingest-seconds", "0"),
            ("--ingest-pairs", "1.5"),
        ] {
            let e = console_args(&[flag, bad]).err().expect("refused");
            assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
        }
        assert!(console_args(&["--ingest-hosts", "0"]).is_ok());
    }

    #[test]
    fn console_refuses_a_missing_collector_and_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-collector");
        let args = ["--collector-bin", missing.to_str().unwrap()];
        let e = console::run(console_args(&args).unwrap()).expect_err("refused");
        assert!(format!("{e:#}").contains("no collector program"), "{e:#}");
        // Any existing file stands in for the collector: the directory is
        // refused before it runs.
        let bin = std::env::current_exe().unwrap();
        let args = ["--collector-bin", bin.to_str().unwrap()];
        let args = [&args[..], &["--dir", dir.path().to_str().unwrap()]].concat();
        let e = console::run(console_args(&args).unwrap()).expect_err("refused");
        assert!(format!("{e:#}").contains("exists"), "{e:#}");
    }

    #[test]
    fn enroll_flags_refuse_bad_values() {
        let parse = |args: &[&str]| {
            let argv = ["hostwatch-bench", "enroll"].iter().chain(args);
            match Cli::try_parse_from(argv)?.command {
                Command::Enroll(args) => Ok(args),
                _ => unreachable!("parsed as enroll"),
            }
        };
        for (flag, bad) in [
            ("--agents", "0"),
            ("--rounds", "0"),
            ("--deadline-s", "0"),
            ("--enroll-max-connections", "0"),
            ("--agents", "x"),
        ] {
            let e: clap::Error = parse(&[flag, bad]).err().expect("refused");
            assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-collector");
        let args = parse(&["--collector-bin", missing.to_str().unwrap()]).unwrap();
        let e = enroll::run(args).expect_err("refused");
        assert!(format!("{e:#}").contains("no collector program"), "{e:#}");
    }

    #[test]
    fn fleet_flags_refuse_bad_values_and_a_missing_collector() {
        let parse = |args: &[&str]| {
            let argv = ["hostwatch-bench", "fleet"].iter().chain(args);
            match Cli::try_parse_from(argv)?.command {
                Command::Fleet(args) => Ok(args),
                _ => unreachable!("parsed as fleet"),
            }
        };
        for (flag, bad) in [
            ("--agents", "0"),
            ("--agents", "x"),
            ("--interval-secs", "0"),
            ("--duration-secs", "0"),
            ("--outage-secs", "601"),
            ("--deadline-secs", "5"),
            ("--check-hosts", "0"),
            ("--max-handshakes", "0"),
        ] {
            let e: clap::Error = parse(&[flag, bad]).err().expect("refused");
            assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-collector");
        let args = parse(&["--collector-bin", missing.to_str().unwrap()]).unwrap();
        let e = fleet::run(args).expect_err("refused");
        assert!(format!("{e:#}").contains("no collector program"), "{e:#}");
    }

    #[test]
    fn sled_space_flags_refuse_bad_values() {
        for (flag, bad) in [
            ("--series", "0"),
            ("--windows", "0"),
            ("--value-bytes", "9"),
            ("--order", "random"),
            ("--retention-windows", "0"),
            ("--pause-ms", "x"),
        ] {
            let e = sled_space_args(&[flag, bad]).err().expect("refused");
            assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
        }
    }

    #[test]
    fn sled_space_refuses_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let args = sled_space_args(&["--dir", dir.path().to_str().unwrap()]).unwrap();
        let e = sled_space::run(args).expect_err("refused");
        assert!(format!("{e:#}").contains("exists"), "{e:#}");
    }

    #[test]
    fn sled_space_runs_with_retention_in_every_order() {
        for order in ["series", "time", "day-trees"] {
            let args = [
                "--series",
                "40",
                "--windows",
                "3",
                "--retention-windows",
                "2",
            ];
            let args = sled_space_args(&[&args[..], &["--order", order]].concat()).unwrap();
            sled_space::run(args).unwrap();
        }
    }

    #[test]
    fn storage_flags_refuse_bad_values() {
        let e = storage_args(&["--reopen"])
            .err()
            .expect("--reopen needs --dir");
        assert!(e.to_string().contains("--dir"), "{e}");
        for flag in ["--maintain-every-ticks", "--wal-generation-bytes"] {
            for bad in ["x", "", "1.5"] {
                let e = storage_args(&[flag, bad]).err().expect("refused");
                assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
            }
        }
        // A negative number reads as an unknown flag, named in the error.
        let e = storage_args(&["--maintain-every-ticks", "-1"])
            .err()
            .expect("refused");
        assert!(e.to_string().contains("'-1'"), "{e}");
        assert!(storage_args(&["--maintain-every-ticks", "0"]).is_ok());
        // No retention at all is not a retention.
        for flag in ["--retention-hours", "--retention-bytes"] {
            for bad in ["0", "x", "1.5"] {
                let e = storage_args(&[flag, bad]).err().expect("refused");
                assert!(e.to_string().contains(flag), "{flag} {bad}: {e}");
            }
            assert!(storage_args(&[flag, "1"]).is_ok());
        }
    }

    #[test]
    fn an_empty_wal_generation_is_refused_by_the_store() {
        let args = ["--hosts", "1", "--hours", "1", "--ingest-only"];
        let args = storage_args(&[&args[..], &["--wal-generation-bytes", "0"]].concat()).unwrap();
        let e = storage::run(args).expect_err("refused");
        assert!(format!("{e:#}").contains("wal_generation_bytes"), "{e:#}");
    }

    #[test]
    fn a_retention_shorter_than_the_data_runs_on_the_writers_clock() {
        // On the system clock, the first two hours would be refused as
        // older than the retention, and the bench fails on any refusal.
        let args = ["--hosts", "1", "--hours", "3", "--retention-hours", "1"];
        let args = storage_args(&[&args[..], &["--ingest-only"]].concat()).unwrap();
        storage::run(args).unwrap();
    }

    #[test]
    fn reopen_refuses_a_directory_without_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let e = storage::run(storage_args(&["--reopen", "--dir", path]).unwrap())
            .expect_err("no store to reopen");
        assert!(format!("{e:#}").contains("holds no store"), "{e:#}");
    }
}
