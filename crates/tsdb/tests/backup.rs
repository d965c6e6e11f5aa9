//! Online backups: taken while batches are appended, restored, every batch
//! acknowledged before the backup began is there; incremental backups
//! keep unchanged partitions; a backup cut short, damaged, of a newer
//! format, or a bad target or data directory is refused with a message
//! naming the problem.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hostwatch_tsdb::backup::{self, IN_PROGRESS, MANIFEST};
use hostwatch_tsdb::{BackupOptions, Store, TsdbError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A store holding the fixture's batches: sealed ones in two day
/// partitions, the last hour's in the WAL.
fn fixture_store(data: &Path, clock: &TestClock) -> Store {
    let store = open(&data.join("store"), options(clock));
    let (sealed, open_batches) = fixture_batches();
    for b in &sealed {
        store.append(b).unwrap();
    }
    store.maintain().unwrap();
    for b in &open_batches {
        store.append(b).unwrap();
    }
    store
}

fn check_fixture(store: &Store) {
    let (sealed, open_batches) = fixture_batches();
    for host in ["a", "b"] {
        let want: usize = sealed
            .iter()
            .chain(&open_batches)
            .filter(|b| b.host == host)
            .count();
        assert_eq!(all_points(store, host, "m").len(), want, "{host}");
        assert_eq!(store.last_seq(host, 7).unwrap(), want as u64, "{host}");
    }
}

fn backup_err(result: Result<impl std::fmt::Debug, TsdbError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn a_backup_taken_under_ingest_restores_every_acknowledged_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = fixture_store(&tmp.path().join("data"), &clock);
    assert!(partition_dirs(&tmp.path().join("data/store")).len() >= 2);
    let target = tmp.path().join("backup");
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (report, acked_before) = std::thread::scope(|s| {
        s.spawn(|| {
            for seq in 1..=100_000u64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let t = NOW - HOUR + seq as i64 * 100;
                store
                    .append(&batch("c", seq, "load", &[], &[(t, seq as f64)]))
                    .unwrap();
                acked.store(seq, Ordering::Release);
            }
        });
        // Ingest is under way before the backup begins.
        while acked.load(Ordering::Acquire) < 50 {
            std::thread::yield_now();
        }
        let acked_before = acked.load(Ordering::Acquire);
        let report = store.backup(&target, BackupOptions::default()).unwrap();
        stop.store(true, Ordering::Release);
        (report, acked_before)
    });
    assert!(report.partitions_copied >= 2, "{report:?}");
    assert_eq!(report.partitions_kept, 0);
    assert_eq!(report.bytes_total, report.bytes_written);
    assert!(!target.join(IN_PROGRESS).exists());
    let manifest = backup::verify_backup(&target).unwrap();
    assert_eq!(manifest, report.manifest);
    drop(store);

    let restored = tmp.path().join("restored");
    backup::restore(&target, &restored).unwrap();
    let store = open(&restored.join("store"), options(&clock));
    check_fixture(&store);
    let stored = store.last_seq("c", 7).unwrap();
    assert!(
        stored >= acked_before,
        "acknowledged {acked_before} before the backup, restored {stored}"
    );
    let points = all_points(&store, "c", "load");
    assert_eq!(points.len() as u64, stored, "every batch up to the last");
    assert!(store.verify().unwrap().is_clean());
    // The restored store goes on: appends after the backup's point.
    let t = NOW - HOUR + (stored as i64 + 1) * 100;
    store
        .append(&batch("c", stored + 1, "load", &[], &[(t, 1.0)]))
        .unwrap();
    assert_eq!(store.last_seq("c", 7).unwrap(), stored + 1);
}

#[test]
fn an_incremental_backup_keeps_unchanged_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = fixture_store(&tmp.path().join("data"), &clock);
    let target = tmp.path().join("backup");
    let first = store.backup(&target, BackupOptions::default()).unwrap();
    // Without `incremental`, a target holding a backup is refused.
    let again = backup_err(store.backup(&target, BackupOptions::default()));
    assert!(again.contains("already holds a backup"), "{again}");

    // A new hour sealed into today's partition; yesterday's is unchanged.
    let (sealed, open_batches) = fixture_batches();
    let next = (sealed.len() + open_batches.len()) as u64 / 2;
    for i in 1..=6u64 {
        let t = NOW + i as i64 * 10 * MINUTE;
        store
            .append(&batch("a", next + i, "m", &[], &[(t, 1.0)]))
            .unwrap();
    }
    clock.set(NOW + 3 * HOUR);
    store.maintain().unwrap();
    let incremental = BackupOptions {
        incremental: true,
        ..BackupOptions::default()
    };
    let second = store.backup(&target, incremental).unwrap();
    assert!(second.partitions_kept >= 1, "{second:?}");
    assert!(second.partitions_copied >= 1, "{second:?}");
    assert!(second.bytes_written < second.bytes_total, "{second:?}");
    assert!(second.manifest.group > first.manifest.group);
    drop(store);

    let restored = tmp.path().join("restored");
    backup::restore(&target, &restored).unwrap();
    let store = open(&restored.join("store"), options(&clock));
    assert_eq!(store.last_seq("a", 7).unwrap(), next + 6);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_backup_cut_short_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = fixture_store(&tmp.path().join("data"), &clock);
    let target = tmp.path().join("backup");
    store.backup(&target, BackupOptions::default()).unwrap();
    drop(store);
    // What a kill before the manifest leaves: the marker, no manifest.
    std::fs::write(target.join(IN_PROGRESS), "started 1\n").unwrap();
    let restored = tmp.path().join("restored");
    let err = backup_err(backup::restore(&target, &restored));
    assert!(err.contains("interrupted"), "{err}");
    assert!(!restored.exists());
    std::fs::remove_file(target.join(IN_PROGRESS)).unwrap();
    std::fs::remove_file(target.join(MANIFEST)).unwrap();
    let err = backup_err(backup::verify_backup(&target));
    assert!(err.contains("MANIFEST is missing"), "{err}");
}

/// The backup of the fixture store, written to `tmp/backup`.
fn backed_up(tmp: &Path) -> PathBuf {
    let clock = TestClock::new(NOW);
    let store = fixture_store(&tmp.join("data"), &clock);
    let target = tmp.join("backup");
    store.backup(&target, BackupOptions::default()).unwrap();
    target
}

#[test]
fn a_damaged_file_is_named_and_nothing_is_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let target = backed_up(tmp.path());
    let manifest = backup::verify_backup(&target).unwrap();
    let victim = manifest
        .files
        .iter()
        .find(|f| f.path.contains("partitions/") && f.size > 0)
        .unwrap();
    let path = target.join(&victim.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = backup_err(backup::verify_backup(&target));
    assert!(
        err.contains(&victim.path) && err.contains("checksum"),
        "{err}"
    );
    let restored = tmp.path().join("restored");
    let err = backup_err(backup::restore(&target, &restored));
    assert!(err.contains("damaged"), "{err}");
    assert!(!restored.exists());
    // A missing file too.
    std::fs::remove_file(&path).unwrap();
    let err = backup_err(backup::verify_backup(&target));
    assert!(err.contains(&victim.path), "{err}");
}

#[test]
fn a_backup_of_a_newer_format_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let target = backed_up(tmp.path());
    let manifest = std::fs::read_to_string(target.join(MANIFEST)).unwrap();
    let newer = manifest.replace("store_format 3\n", "store_format 9\n");
    assert_ne!(newer, manifest);
    std::fs::write(target.join(MANIFEST), newer).unwrap();
    let err = backup_err(backup::restore(&target, &tmp.path().join("restored")));
    assert!(
        err.contains("format 9") && err.contains("format 3"),
        "{err}"
    );
    let other = manifest.replace("format 1\n", "format 2\n");
    std::fs::write(target.join(MANIFEST), other).unwrap();
    let err = backup_err(backup::verify_backup(&target));
    assert!(err.contains("backup format 2"), "{err}");
    // A manifest naming a path outside the backup.
    let escaping = manifest.replacen(" data/", " data/../../", 1);
    std::fs::write(target.join(MANIFEST), escaping).unwrap();
    let err = backup_err(backup::verify_backup(&target));
    assert!(err.contains("leaves the backup"), "{err}");
}

#[test]
fn bad_targets_and_data_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = fixture_store(&tmp.path().join("data"), &clock);
    let relative = backup_err(store.backup(Path::new("backup"), BackupOptions::default()));
    assert!(relative.contains("absolute"), "{relative}");
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let err = backup_err(store.backup(&busy, BackupOptions::default()));
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(busy.join("notes.txt")).unwrap(),
        "mine"
    );
    // Incremental or not: it is not a backup to update.
    let incremental = BackupOptions {
        incremental: true,
        ..BackupOptions::default()
    };
    let err = backup_err(store.backup(&busy, incremental));
    assert!(err.contains("does not hold a hostwatch backup"), "{err}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    // Not writable: a path below a regular file (mode bits do not stop root).
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = backup_err(store.backup(&file.join("backup"), BackupOptions::default()));
    assert!(err.contains("cannot create the backup directory"), "{err}");
    if !nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        let locked = tmp.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
        let err = backup_err(store.backup(&locked.join("b"), BackupOptions::default()));
        assert!(err.contains("Permission denied"), "{err}");
    }

    let target = tmp.path().join("backup");
    store.backup(&target, BackupOptions::default()).unwrap();
    // A restore never writes over a data directory in use.
    let err = backup_err(backup::restore(&target, &tmp.path().join("data")));
    assert!(err.contains("is not empty"), "{err}");
    let err = backup_err(backup::restore(&file, &tmp.path().join("restored")));
    assert!(err.contains("MANIFEST"), "{err}");
}
