//! Closed partitions rewritten into one immutable file: reads see the
//! same data; a late write thaws the partition; what a kill leaves at
//! each step of a rewrite opens whole; a damaged file is reported by
//! `verify` and skipped by queries, never fatal; backups keep an earlier
//! copy of a rewritten partition; retention deletes it whole.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hostwatch_tsdb::backup;
use hostwatch_tsdb::{BackupOptions, Options, Store};
use std::path::{Path, PathBuf};

/// [`write_two_days`]'s store; the first partition is closed, and,
/// written just now, not rewritten before `partition_idle_close`.
fn two_days(dir: &Path, clock: &TestClock) -> (Vec<(i64, f64)>, i64) {
    let (written, midnight, report) = write_two_days(dir, clock);
    assert_eq!(report.rewritten_partitions, 0, "{report:?}");
    (written, midnight)
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn marker_format(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("partition")).unwrap();
    text.lines().nth(1).unwrap().to_owned()
}

/// Opens the store and rewrites its closed partition; checks the
/// partition's directory holds only its marker and its file.
fn rewritten(dir: &Path, clock: &TestClock) -> (Store, PathBuf) {
    let store = open(dir, options(clock));
    let report = store.maintain().unwrap();
    assert_eq!(report.rewritten_partitions, 1, "{report:?}");
    let first = partition_dirs(dir)[0].clone();
    assert_eq!(names(&first), ["chunks", "partition"]);
    assert_eq!(marker_format(&first), "format 2");
    // The day still open is not rewritten.
    assert_eq!(marker_format(&partition_dirs(dir)[1]), "format 1");
    (store, first)
}

#[test]
fn a_rewritten_partition_reads_the_same_and_takes_less_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (written, midnight) = two_days(dir.path(), &clock);
    let before = dir_bytes(&partition_dirs(dir.path())[0]);
    let (store, first) = rewritten(dir.path(), &clock);
    assert!(
        dir_bytes(&first) < before,
        "{} >= {before}",
        dir_bytes(&first)
    );
    assert_eq!(all_points(&store, "a", "m"), written);
    // Ranges within the rewritten day, across both days, and 1 h steps.
    let matchers = [hostwatch_tsdb::Matcher::Equal("host".into(), "a".into())];
    for (from, to) in [
        (midnight - 5 * HOUR, midnight - 4 * HOUR + 7 * MINUTE),
        (midnight - 2 * HOUR, midnight + 2 * HOUR),
    ] {
        let got: Vec<(i64, f64)> = store
            .range("m", &matchers, from, to)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.points)
            .map(|p| (p.t_ms, p.value))
            .collect();
        let want: Vec<(i64, f64)> = written
            .iter()
            .copied()
            .filter(|p| p.0 >= from && p.0 < to)
            .collect();
        assert_eq!(got, want, "{from} {to}");
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.damaged);
    assert_eq!(report.chunk_samples, written.len() as u64);
    // Rewritten once: the next passes leave it.
    assert_eq!(store.maintain().unwrap().rewritten_partitions, 0);
    drop(store);
    let store = open(dir.path(), options(&clock));
    assert_eq!(store.maintain().unwrap().rewritten_partitions, 0);
    assert_eq!(all_points(&store, "a", "m"), written);
    assert_eq!(store.stats().unwrap().corrupt_blocks, 0);
}

/// A sample landing in a rewritten partition after all (a new series,
/// within the retention) thaws it back into sled; it is rewritten again
/// once closed; nothing is lost on the way.
#[test]
fn a_late_write_thaws_a_rewritten_partition() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (written, midnight) = two_days(dir.path(), &clock);
    let (store, first) = rewritten(dir.path(), &clock);
    let mut seq = 10_000;
    let late = fill(
        &store,
        &mut seq,
        "n",
        midnight - 3 * HOUR,
        midnight - 2 * HOUR,
    );
    let report = store.seal_all().unwrap();
    assert_eq!(report.rewritten_partitions, 0, "{report:?}");
    assert_eq!(marker_format(&first), "format 1");
    assert!(!first.join("chunks").exists());
    assert_eq!(all_points(&store, "a", "m"), written);
    assert_eq!(all_points(&store, "a", "n"), late);
    drop(store);
    let (store, _) = rewritten(dir.path(), &clock);
    assert_eq!(all_points(&store, "a", "m"), written);
    assert_eq!(all_points(&store, "a", "n"), late);
    assert!(store.verify().unwrap().is_clean());
}

/// What a kill leaves at each step of a rewrite opens whole: a file
/// being written (`chunks.tmp`), a file renamed into place before the
/// marker said so (the sled database wins, the file goes), a marker
/// being replaced (`partition.tmp`), and the sled database partly
/// removed after the marker said format 2 (the file wins, the rest goes).
#[test]
fn a_kill_at_each_step_of_a_rewrite_leaves_the_store_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (written, _) = two_days(dir.path(), &clock);
    let first = partition_dirs(dir.path())[0].clone();
    let saved = dir.path().join("saved-sled");
    copy_dir(&first, &saved);
    let (store, _) = rewritten(dir.path(), &clock);
    drop(store);
    let file = std::fs::read(first.join("chunks")).unwrap();

    // The marker says format 2; the sled database half removed, a marker
    // being replaced left behind.
    std::fs::copy(saved.join("conf"), first.join("conf")).unwrap();
    std::fs::write(first.join("snap.0000000000000001"), b"half").unwrap();
    std::fs::write(first.join("partition.tmp"), b"hostwatch").unwrap();
    let store = open(dir.path(), options(&clock));
    assert_eq!(names(&first), ["chunks", "partition"]);
    assert_eq!(all_points(&store, "a", "m"), written);
    assert!(store.verify().unwrap().is_clean());
    drop(store);

    // Killed after the file was renamed into place, before the marker:
    // the sled database as it was, the file beside it.
    std::fs::remove_dir_all(&first).unwrap();
    copy_dir(&saved, &first);
    std::fs::write(first.join("chunks"), &file).unwrap();
    std::fs::write(first.join("chunks.tmp"), &file[..file.len() / 2]).unwrap();
    let store = open(dir.path(), options(&clock));
    assert!(!first.join("chunks").exists() && !first.join("chunks.tmp").exists());
    assert_eq!(marker_format(&first), "format 1");
    assert_eq!(all_points(&store, "a", "m"), written);
    assert!(store.verify().unwrap().is_clean());
    // And rewritten again by the next pass.
    assert_eq!(store.maintain().unwrap().rewritten_partitions, 1);
    assert_eq!(names(&first), ["chunks", "partition"]);
    assert_eq!(all_points(&store, "a", "m"), written);
}

/// A damaged file: a block whose checksum does not match is skipped by
/// queries (counted) and named by `verify`; a truncated file, one of
/// another magic or version is a damaged partition, skipped whole and
/// reported naming the file and the problem. Never fatal: the other day
/// reads, appends and sealing go on.
#[test]
fn a_damaged_file_is_reported_and_skipped() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 4] = [
        ("bad checksum", |b| b[100] ^= 0xff, "checksum mismatch"),
        ("truncated", |b| b.truncate(b.len() / 2), "truncated"),
        ("wrong magic", |b| b[0] = b'X', "wrong magic"),
        (
            "wrong version",
            |b| b[8] = 9,
            "partition file format 9; this build reads partition file format 1",
        ),
    ];
    for (case, damage, reported) in cases {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new(NOW);
        let (written, midnight) = two_days(dir.path(), &clock);
        let (store, first) = rewritten(dir.path(), &clock);
        drop(store);
        let path = first.join("chunks");
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        let store = open(dir.path(), options(&clock));
        let got = all_points(&store, "a", "m");
        let later: Vec<(i64, f64)> = written
            .iter()
            .copied()
            .filter(|p| p.0 >= midnight)
            .collect();
        assert!(got.ends_with(&later), "{case}");
        assert!(got.len() < written.len(), "{case}: nothing skipped");
        assert!(store.stats().unwrap().corrupt_blocks > 0, "{case}");
        let report = store.verify().unwrap();
        assert_eq!(report.damaged_total, 1, "{case}: {:?}", report.damaged);
        assert!(
            report.damaged[0].contains(reported)
                && report.damaged[0].contains(&path.display().to_string()),
            "{case}: {:?}",
            report.damaged
        );
        check_writes_go_on(&store, 100_000, case);
    }
}

/// A backup copies a rewritten partition as it is and restores it; an
/// incremental backup keeps its earlier copy; retention deletes it whole.
#[test]
fn rewritten_partitions_are_backed_up_restored_and_deleted_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let clock = TestClock::new(NOW);
    let (written, midnight) = two_days(&dir, &clock);
    let (store, _) = rewritten(&dir, &clock);
    let target = tmp.path().join("backup");
    let first = store.backup(&target, BackupOptions::default()).unwrap();
    assert_eq!(first.partitions_copied, 2, "{first:?}");
    let incremental = BackupOptions {
        incremental: true,
        ..BackupOptions::default()
    };
    let second = store.backup(&target, incremental).unwrap();
    assert!(second.partitions_kept >= 1, "{second:?}");
    let restored = tmp.path().join("restored");
    backup::restore(&target, &restored).unwrap();
    let again = open(&restored.join("store"), options(&clock));
    assert_eq!(all_points(&again, "a", "m"), written);
    assert!(again.verify().unwrap().is_clean());
    drop(again);
    drop(store);

    // A day on, with a day's retention, the rewritten day goes whole.
    clock.set(NOW + DAY);
    let retained = Options {
        retention_ms: NOW - midnight,
        ..options(&clock)
    };
    let store = open(&dir, retained);
    let report = store.maintain().unwrap();
    assert!(report.deleted_partitions >= 1, "{report:?}");
    assert!(
        !partition_dirs(&dir)
            .iter()
            .any(|p| p.join("chunks").exists())
    );
}
