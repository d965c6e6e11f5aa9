//! Time partitions: the format version and the migration of a format-1
//! store, damaged and missing partitions, and what a kill at each step of
//! a partition's lifecycle (creation, deletion, migration) leaves on disk.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hostwatch_tsdb::{Batch, Options, Store};
use std::path::Path;

/// The points of series `metric` of `host` that `batches` hold, in time order.
fn expected(batches: &[&Batch], host: &str, metric: &str) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = batches
        .iter()
        .filter(|b| b.host == host)
        .flat_map(|b| &b.series)
        .filter(|s| s.metric == metric)
        .flat_map(|s| s.points.iter().map(|p| (p.t_ms, p.value)))
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

/// Everything the fixture's batches hold is there: every series' points,
/// the latest values, the sequences and the process snapshots.
fn check_fixture(store: &Store) {
    let (sealed, open) = fixture_batches();
    let all: Vec<&Batch> = sealed.iter().chain(&open).collect();
    for host in ["a", "b"] {
        for metric in ["m", "n"] {
            let want = expected(&all, host, metric);
            assert_eq!(want.len(), 180);
            assert_eq!(all_points(store, host, metric), want, "{host} {metric}");
        }
        assert_eq!(store.latest(host).unwrap().len(), 2, "{host}");
        assert_eq!(store.last_seq(host, 7).unwrap(), 180, "{host}");
    }
    for b in all.iter().filter(|b| !b.processes.is_empty()) {
        let want = &b.processes[0];
        let got = store.process_snapshot_at("a", want.t_ms + 1).unwrap();
        assert_eq!(got.as_ref(), Some(want), "snapshot at {}", want.t_ms);
    }
}

/// A store written by the previous layout (format 1, chunks in the main
/// database; `tests/fixtures/format-1`, written by commit 3d68b74) is
/// migrated on open: its chunks and snapshot blocks move into the
/// partitions of their days, nothing read differs, and it opens again as
/// format 2 without migrating.
#[test]
fn a_format_1_store_is_migrated_into_partitions_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    copy_dir(&fixture, dir.path());
    let clock = TestClock::new(NOW);
    for round in ["migrated", "reopened"] {
        let store = open(dir.path(), options(&clock));
        check_fixture(&store);
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{round}: {:?}", report.damaged);
        // 30 h of data end 8 h into NOW's day: two days.
        assert_eq!(report.partitions, 2, "{round}");
        // The 29 sealed hours of 4 series; the last hour is in the WAL.
        assert_eq!(report.chunk_samples, 4 * 29 * 6, "{round}");
        assert!(
            report.snapshot_blocks > 0 && report.row_chunks > 0,
            "{round}"
        );
        assert_eq!(partition_dirs(dir.path()).len(), 2, "{round}");
    }
    // The main database holds no chunk any more.
    let db = open_db(dir.path());
    let tree = db.open_tree("tsdb").unwrap();
    assert_eq!(tree.scan_prefix(b"C").count(), 0);
    assert_eq!(tree.scan_prefix(b"P").count(), 0);
    assert_eq!(
        tree.get(b"Mformat").unwrap().as_deref(),
        Some(&3u32.to_be_bytes()[..])
    );
}

/// A format-2 store (snapshot blocks sealed as rows) opens with its
/// blocks read as they are, and its format record says 3.
#[test]
fn a_format_2_store_keeps_its_row_snapshots_and_is_marked_format_3() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    copy_dir(&fixture, dir.path());
    let clock = TestClock::new(NOW);
    // Migrated from format 1, its blocks are as format 2 held them.
    drop(open(dir.path(), options(&clock)));
    {
        let db = open_db(dir.path());
        let tree = db.open_tree("tsdb").unwrap();
        tree.insert(b"Mformat", &2u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path(), options(&clock));
    check_fixture(&store);
    drop(store);
    let db = open_db(dir.path());
    let format = db.open_tree("tsdb").unwrap().get(b"Mformat").unwrap();
    assert_eq!(format.as_deref(), Some(&3u32.to_be_bytes()[..]));
}

/// A kill during the migration, after the chunks were copied into their
/// partitions but before the main database's batch that removes them and
/// writes the format: the next open migrates again, whole.
#[test]
fn a_migration_cut_short_is_done_again() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    copy_dir(&fixture, dir.path());
    let clock = TestClock::new(NOW);
    drop(open(dir.path(), options(&clock)));
    // Put the format-1 main database back: the partitions stay, written.
    for name in ["conf", "db"] {
        std::fs::copy(fixture.join(name), dir.path().join(name)).unwrap();
    }
    let store = open(dir.path(), options(&clock));
    check_fixture(&store);
    assert!(store.verify().unwrap().is_clean());
}

/// A store of a format this build does not know is refused, the message
/// naming both formats; a malformed format record too; neither is changed.
#[test]
fn an_unknown_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    drop(open(dir.path(), options(&clock)));
    for (value, named) in [
        (9u32.to_be_bytes().to_vec(), vec!["format 9", "format 3"]),
        (0u32.to_be_bytes().to_vec(), vec!["format 0", "format 3"]),
        (vec![1, 2], vec!["malformed format record"]),
    ] {
        {
            let db = open_db(dir.path());
            db.open_tree("tsdb")
                .unwrap()
                .insert(b"Mformat", value.clone())
                .unwrap();
            db.flush().unwrap();
        }
        let err = loop {
            match Store::open(dir.path(), options(&clock)) {
                Err(e) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => break e.to_string(),
                Ok(_) => panic!("a store of format {value:?} was opened"),
            }
        };
        for name in named {
            assert!(err.contains(name), "{name} not in {err}");
        }
        let db = open_db(dir.path());
        let kept = db.open_tree("tsdb").unwrap().get(b"Mformat").unwrap();
        assert_eq!(kept.as_deref(), Some(&value[..]));
    }
}

/// [`write_two_days`]'s store, its two day partitions checked.
fn two_days(dir: &Path, clock: &TestClock) -> (Vec<(i64, f64)>, i64) {
    let (written, midnight, _) = write_two_days(dir, clock);
    assert_eq!(partition_dirs(dir).len(), 2);
    (written, midnight)
}

/// A partition whose database is damaged, whose marker names another
/// format, or whose directory is missing is reported by `verify` and
/// skipped by queries, never fatal: the other partition reads whole,
/// appends and sealing into other partitions go on.
#[test]
fn damaged_and_missing_partitions_are_reported_and_skipped() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "missing",
            |p| std::fs::remove_dir_all(p).unwrap(),
            "directory is missing",
        ),
        (
            "other format",
            |p| {
                let marker = p.join("partition");
                let text = std::fs::read_to_string(&marker).unwrap();
                std::fs::write(&marker, text.replace("format 1", "format 7")).unwrap();
            },
            "partition format 7",
        ),
        (
            "damaged database",
            // sled reads a log of garbage as an empty database, so the
            // damage is one it refuses: its file replaced by a directory.
            |p| {
                std::fs::remove_file(p.join("db")).unwrap();
                std::fs::create_dir(p.join("db")).unwrap();
            },
            "does not open",
        ),
    ];
    for (case, damage, reported) in cases {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new(NOW);
        let (written, midnight) = two_days(dir.path(), &clock);
        let parts = partition_dirs(dir.path());
        damage(&parts[0]);
        let store = open(dir.path(), options(&clock));
        let later: Vec<(i64, f64)> = written
            .iter()
            .copied()
            .filter(|p| p.0 >= midnight)
            .collect();
        assert_eq!(all_points(&store, "a", "m"), later, "{case}");
        let report = store.verify().unwrap();
        assert_eq!(report.damaged_total, 1, "{case}: {:?}", report.damaged);
        assert!(
            report.damaged[0].contains(reported)
                && report.damaged[0].contains(&(midnight - DAY).to_string()),
            "{case}: {:?}",
            report.damaged
        );
        assert_eq!(report.partitions, 2, "{case}");
        check_writes_go_on(&store, 1000, case);
    }
}

/// What a kill leaves at each step of a partition's creation and
/// deletion opens whole: a directory without its marker (killed while
/// being created, nothing written to it) is removed; one with its marker
/// but not registered is kept; a deletion renamed but not finished is
/// finished, registered or not; what was acknowledged is all there.
#[test]
fn a_kill_at_each_step_of_a_partitions_life_leaves_the_store_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (written, midnight) = two_days(dir.path(), &clock);
    let parts = partition_dirs(dir.path());
    let later: Vec<(i64, f64)> = written
        .iter()
        .copied()
        .filter(|p| p.0 >= midnight)
        .collect();
    let root = dir.path().join("partitions");

    // Creation cut short before its marker: nothing in it is acknowledged.
    let cut = root.join((midnight + DAY).to_string());
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::write(cut.join("db"), b"half").unwrap();
    // Registration lost (a kill between the marker and the registration):
    // the registry key of the newest partition removed.
    {
        let db = open_db(dir.path());
        let tree = db.open_tree("tsdb").unwrap();
        let mut key = b"Mpart".to_vec();
        key.extend_from_slice(&((midnight as u64) ^ (1 << 63)).to_be_bytes());
        assert!(tree.remove(key).unwrap().is_some());
        db.flush().unwrap();
    }
    {
        let store = open(dir.path(), options(&clock));
        assert_eq!(all_points(&store, "a", "m"), written);
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:?}", report.damaged);
        assert_eq!(report.partitions, 2);
    }
    assert!(!cut.exists());

    // A deletion by retention renamed the oldest partition durably, then
    // was killed before it unregistered and removed it.
    let mut renamed = parts[0].clone().into_os_string();
    renamed.push(".deleted");
    std::fs::rename(&parts[0], &renamed).unwrap();
    let retained = || Options {
        // The first day is past the retention.
        retention_ms: NOW - midnight,
        ..options(&clock)
    };
    let store = open(dir.path(), retained());
    assert!(!Path::new(&renamed).exists());
    assert_eq!(all_points(&store, "a", "m"), later);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.damaged);
    assert_eq!(report.partitions, 1);
    drop(store);

    // Retention deleting a partition whole, through maintenance: the
    // clock a day on, the second day is past the retention too.
    clock.set(NOW + DAY);
    let store = open(dir.path(), retained());
    let report = store.maintain().unwrap();
    assert_eq!(report.deleted_partitions, 1, "{report:?}");
    assert!(report.deleted > 0, "{report:?}");
    assert!(all_points(&store, "a", "m").is_empty());
    assert!(store.latest("a").unwrap().is_empty());
    assert!(partition_dirs(dir.path()).is_empty());
    assert!(store.verify().unwrap().is_clean());
}

/// Queries read only the partitions their range touches: with every
/// partition but NOW's made unreadable (their databases' files replaced
/// by directories), a range inside NOW's day reads whole and counts
/// no damage.
#[test]
fn a_query_reads_only_the_partitions_of_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (written, midnight) = two_days(dir.path(), &clock);
    let parts = partition_dirs(dir.path());
    std::fs::remove_file(parts[0].join("db")).unwrap();
    std::fs::create_dir(parts[0].join("db")).unwrap();
    let store = open(dir.path(), options(&clock));
    let matchers = [hostwatch_tsdb::Matcher::Equal("host".into(), "a".into())];
    let got: Vec<(i64, f64)> = store
        .range("m", &matchers, midnight, midnight + 3 * HOUR)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.points)
        .map(|p| (p.t_ms, p.value))
        .collect();
    let want: Vec<(i64, f64)> = written
        .iter()
        .copied()
        .filter(|p| p.0 >= midnight && p.0 < midnight + 3 * HOUR)
        .collect();
    assert_eq!(got, want);
    assert_eq!(store.stats().unwrap().corrupt_blocks, 0);
    // A range reaching into the damaged day reads the rest, and counts it.
    let _ = all_points(&store, "a", "m");
    assert!(store.stats().unwrap().corrupt_blocks > 0);
}
