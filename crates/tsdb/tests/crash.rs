//! Crash test: writers in a child process (this very binary, re-executed)
//! are killed with SIGKILL at random moments; after each kill the store is
//! reopened and every acknowledged batch must be present exactly once,
//! every other batch whole or absent, replays recognized, `verify` clean.
//! Kills land at random moments, while a partition is created, while one
//! is rewritten into its immutable file, and while retention deletes one
//! (the child's partitions are also closed at every maintenance pass),
//! see `Workload::options` and `KillAt`.
//!
//! A custom harness (`harness = false`), so the child mode is not a test.
//! `HOSTWATCH_CRASH_ROUNDS` and `HOSTWATCH_CRASH_SEED` override the
//! bounded defaults; `hostwatch-bench storage --crash-rounds N` runs many more.

use hostwatch_tsdb::workload::{KillAt, Workload, child_main, crash_round};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::{Command, ExitCode};
use std::time::Duration;

const CHILD_DIR: &str = "HOSTWATCH_TSDB_CRASH_CHILD_DIR";
const CHILD_BASE: &str = "HOSTWATCH_TSDB_CRASH_CHILD_BASE";
const WRITERS: u32 = 4;
const SERIES: u32 = 8;
/// How long a round waits for the lifecycle step it kills on.
const STEP_WAIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let base: i64 = std::env::var(CHILD_BASE)
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or_default();
        let workload = Workload {
            writers: WRITERS,
            series: SERIES,
            base_ms: base,
        };
        return match child_main(dir.as_ref(), workload) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crash child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rounds: u32 = std::env::var("HOSTWATCH_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("HOSTWATCH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| hostwatch_stdx::now_ms() as u64);
    println!("crash test: {rounds} rounds, seed {seed} (HOSTWATCH_CRASH_SEED)");
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workload = Workload::new(WRITERS, SERIES, hostwatch_stdx::now_ms());
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("current_exe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut jitter = StdRng::seed_from_u64(seed);
    let mut expired = 0;
    for round in 1..=rounds {
        // A random moment, or the next partition's creation, or its
        // rewrite into its file, or retention's next deletion of a whole
        // partition.
        let moment = Duration::from_millis(jitter.random_range(0..150));
        let kill = match round % 4 {
            0 => KillAt::PartitionCreated {
                fallback: STEP_WAIT,
            },
            1 => KillAt::After(moment),
            3 => KillAt::PartitionRewritten {
                fallback: STEP_WAIT,
            },
            _ => KillAt::PartitionDeleted {
                fallback: STEP_WAIT,
            },
        };
        let mut command = Command::new(&exe);
        command
            .env(CHILD_DIR, dir.path())
            .env(CHILD_BASE, workload.base_ms.to_string());
        match crash_round(command, dir.path(), workload, kill) {
            Ok(report) => {
                expired = report.check.expired_batches;
                println!(
                    "round {round}: {kill:?}, killed on {:?}, {} acks seen, {} batches stored, {} partly deleted by retention, {} partitions, {} WAL frames replayed",
                    report.killed_on,
                    report.acked,
                    report.check.batches,
                    report.check.expired_batches,
                    report.check.partitions,
                    report.check.replayed_frames
                )
            }
            Err(e) => {
                eprintln!("round {round} ({kill:?}, seed {seed}): {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Partitions of an hour and a retention of two (`Workload::options`).
    let partitions = std::fs::read_dir(dir.path().join("partitions")).map_or(0, |d| d.count());
    println!(
        "crash test: ok, {partitions} partition(s) held, {expired} batch(es) deleted by retention"
    );
    ExitCode::SUCCESS
}
