//! The store through its public API: appends, exactly-once, rejections,
//! out-of-order samples, sealing, reopening, snapshots, aggregation.

mod common;

use common::*;
use hostwatch_tsdb::{
    Aggregation, Batch, Label, Matcher, Point, ProcessInfo, ProcessSnapshot, SeriesInput,
    SeriesKey, Store,
};
use std::sync::Arc;

#[test]
fn append_then_query_and_replays_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let out = store
        .append(&batch(
            "a",
            1,
            "host_load1",
            &[],
            &[(NOW - 20, 1.0), (NOW - 10, 2.0)],
        ))
        .unwrap();
    assert_eq!(out.stored, 2);
    let out = store
        .append(&batch("a", 1, "host_load1", &[], &[(NOW - 5, 9.0)]))
        .unwrap();
    assert!(out.duplicate);
    store
        .append(&batch("b", 1, "host_load1", &[], &[(NOW - 5, 3.0)]))
        .unwrap();
    let a = Matcher::Equal("host".into(), "a".into());
    let data = store.range("host_load1", &[a], NOW - 100, NOW).unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].points.len(), 2);
    assert_eq!(
        store
            .range("host_load1", &[], NOW - 100, NOW)
            .unwrap()
            .len(),
        2
    );
    let latest = store.latest("a").unwrap();
    assert_eq!(
        latest[0].1,
        Point {
            t_ms: NOW - 10,
            value: 2.0
        }
    );
    assert_eq!(store.last_seq("a", 7).unwrap(), 1);
    assert_eq!(store.last_seq("a", 8).unwrap(), 0);
    assert_eq!(store.last_seq("nobody", 7).unwrap(), 0);
    assert!(store.latest("nobody").unwrap().is_empty());
}

#[test]
fn verify_counts_a_series_once_while_its_definition_is_in_the_wal_and_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    {
        let store = open(dir.path(), options(&clock));
        for host in ["a", "b"] {
            store
                .append(&batch(host, 1, "m", &[], &[(NOW - 5, 1.0)]))
                .unwrap();
        }
    }
    // As after a crash between maintenance copying the definitions into
    // the tree and deleting their WAL generation.
    let generation = std::fs::read_dir(wal_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let wal = open_db(&generation);
    let db = open_db(dir.path());
    let tree = db.open_tree("tsdb").unwrap();
    let mut copied = 0;
    for entry in wal.scan_prefix(b"S") {
        let (key, value) = entry.unwrap();
        tree.insert(key, value).unwrap();
        copied += 1;
    }
    assert_eq!(copied, 2);
    db.flush().unwrap();
    drop((tree, db, wal));
    let store = open(dir.path(), options(&clock));
    let report = store.verify().unwrap();
    assert_eq!(report.series, 2, "{report:?}");
    assert!(report.is_clean(), "{:?}", report.damaged);
    assert_eq!(store.stats().unwrap().series, 2);
}

#[test]
fn data_and_sequences_survive_reopen_from_the_wal_and_from_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let t0 = NOW - 5 * HOUR;
    {
        let store = open(dir.path(), options(&clock));
        for seq in 1..=200 {
            let t = t0 + seq as i64 * 60_000;
            store
                .append(&batch("a", seq, "m", &[("k", "v")], &[(t, seq as f64)]))
                .unwrap();
        }
        // Seal what is finished: hours that the series has moved past.
        let report = store.maintain().unwrap();
        assert!(report.sealed_chunks >= 2, "{report:?}");
    }
    let store = open(dir.path(), options(&clock));
    // Replay starts behind the sealed hours.
    let replayed = store.stats().unwrap().replayed_frames;
    assert!(replayed > 0 && replayed < 200, "{replayed} frames replayed");
    let got = all_points(&store, "a", "m");
    assert_eq!(got.len(), 200);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, &(t, v))| t == t0 + (i as i64 + 1) * 60_000 && v == (i + 1) as f64)
    );
    assert!(
        store
            .append(&batch("a", 200, "m", &[("k", "v")], &[(NOW, 1.0)]))
            .unwrap()
            .duplicate
    );
    assert_eq!(store.last_seq("a", 7).unwrap(), 200);
    // Everything sealed, the WAL emptied: still all there after another reopen.
    let report = store.seal_all().unwrap();
    assert!(report.wal_generations_deleted >= 1, "{report:?}");
    assert_eq!(store.stats().unwrap().head_samples, 0);
    assert_eq!(store.stats().unwrap().wal_bytes, 0);
    drop(store);
    let store = open(dir.path(), options(&clock));
    assert_eq!(store.stats().unwrap().replayed_frames, 0);
    assert_eq!(all_points(&store, "a", "m").len(), 200);
    assert_eq!(store.last_seq("a", 7).unwrap(), 200);
    assert_eq!(store.latest("a").unwrap()[0].1.t_ms, t0 + 200 * 60_000);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn passes_that_move_no_window_write_nothing_and_sequences_still_survive() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    // The size of the store's own sled file (the WAL is in databases of its
    // own); every maintenance pass flushes it.
    let tree_bytes = || std::fs::metadata(dir.path().join("db")).unwrap().len();
    let t0 = NOW - 5 * HOUR;
    let append = |seq: u64, t: i64| {
        store
            .append(&batch("a", seq, "m", &[], &[(t, seq as f64)]))
            .unwrap()
    };
    append(1, t0);
    store.maintain().unwrap();
    let size = tree_bytes();
    // More batches into the same open window: the WAL has them, replay
    // starts where it did, and the store's tree is not written.
    for seq in 2..=20 {
        append(seq, t0 + seq as i64 * 10_000);
        store.maintain().unwrap();
    }
    assert_eq!(tree_bytes(), size);
    // Sealing moves replay's start and deletes the WAL: the sequences are
    // written then, and a resent batch is still known after a reopen.
    let report = store.seal_all().unwrap();
    assert!(report.wal_generations_deleted >= 1, "{report:?}");
    drop(store);
    let store = open(dir.path(), options(&clock));
    assert_eq!(store.stats().unwrap().replayed_frames, 0);
    assert_eq!(store.last_seq("a", 7).unwrap(), 20);
    assert!(
        store
            .append(&batch("a", 20, "m", &[], &[(NOW, 1.0)]))
            .unwrap()
            .duplicate
    );
    assert_eq!(all_points(&store, "a", "m").len(), 20);
}

#[test]
fn every_maintenance_pass_times_each_of_its_phases() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let counts = |store: &Store| -> Vec<(&'static str, u64)> {
        store
            .maintenance_durations()
            .into_iter()
            .map(|(phase, h)| (phase.name(), h.count()))
            .collect()
    };
    assert_eq!(counts(&store), [("seal", 0), ("wal", 0), ("retention", 0)]);
    store
        .append(&batch("a", 1, "m", &[], &[(NOW - 5 * HOUR, 1.0)]))
        .unwrap();
    store.maintain().unwrap();
    store.seal_all().unwrap();
    assert_eq!(counts(&store), [("seal", 2), ("wal", 2), ("retention", 2)]);
    let durations = store.maintenance_durations();
    assert!(durations.iter().all(|(_, h)| h.sum_seconds >= 0.0));
}

#[test]
fn closed_wal_generations_are_read_verified_and_deleted_with_their_series() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    // Every pass starts a new generation: the older ones get closed.
    let options = || hostwatch_tsdb::Options {
        wal_generation_bytes: 1,
        ..options(&clock)
    };
    let t0 = NOW - 5 * HOUR;
    let store = open(dir.path(), options());
    for (seq, metric) in [(1, "m1"), (2, "m2"), (3, "m3")] {
        store
            .append(&batch("a", seq, metric, &[], &[(t0 + seq as i64, 1.0)]))
            .unwrap();
        store.maintain().unwrap();
    }
    store.maintain().unwrap();
    let stats = store.stats().unwrap();
    assert!(stats.disk_bytes > 0, "{stats:?}");
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.damaged);
    assert_eq!(report.series, 3, "{report:?}");
    drop(store);
    // Replay reads them back and closes them again; sealed, they go, the
    // series definitions they held kept in the tree.
    let store = open(dir.path(), options());
    assert_eq!(store.stats().unwrap().replayed_frames, 3);
    let report = store.seal_all().unwrap();
    assert!(report.wal_generations_deleted >= 3, "{report:?}");
    drop(store);
    let store = open(dir.path(), options());
    assert_eq!(store.stats().unwrap().replayed_frames, 0);
    for metric in ["m1", "m2", "m3"] {
        assert_eq!(all_points(&store, "a", metric).len(), 1, "{metric}");
    }
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn thousands_of_series_definitions_outlive_their_wal_generation() {
    // More definitions than one sled batch of them takes.
    const SERIES: usize = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let options = || hostwatch_tsdb::Options {
        wal_generation_bytes: 1,
        ..options(&clock)
    };
    let store = open(dir.path(), options());
    let series = (0..SERIES)
        .map(|i| SeriesInput {
            metric: "m".to_owned(),
            labels: vec![Label::new("i", i.to_string())],
            points: vec![Point {
                t_ms: NOW - 2 * HOUR,
                value: i as f64,
            }],
        })
        .collect();
    let mut batch = batch("a", 1, "m", &[], &[]);
    batch.series = series;
    store.append(&batch).unwrap();
    let report = store.seal_all().unwrap();
    assert!(report.wal_generations_deleted >= 1, "{report:?}");
    drop(store);
    let store = open(dir.path(), options());
    let stats = store.stats().unwrap();
    assert_eq!((stats.series, stats.replayed_frames), (SERIES as u64, 0));
    for i in [0, 1023, 1024, SERIES - 1] {
        let matchers = [Matcher::Equal("i".into(), i.to_string())];
        let found = store.range("m", &matchers, NOW - 3 * HOUR, NOW).unwrap();
        assert_eq!(found.len(), 1, "series {i}");
        assert_eq!(found[0].points[0].value, i as f64, "series {i}");
    }
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn bad_samples_are_counted_by_reason_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    store
        .append(&batch("a", 1, "m", &[], &[(NOW, 1.0)]))
        .unwrap();
    let out = store
        .append(&batch(
            "a",
            2,
            "m",
            &[],
            &[
                (NOW - 1, f64::NAN),
                (NOW - 2, f64::INFINITY),
                (NOW + 3_600_000, 1.0),
                (NOW - 365 * 24 * 3_600_000, 1.0),
                (NOW - 3_600_000, 1.0),
                (NOW, 5.0),
                (NOW - 60_000, 2.0),
            ],
        ))
        .unwrap();
    assert_eq!(out.stored, 1, "{out:?}");
    assert_eq!(out.rejected.non_finite, 2);
    assert_eq!(out.rejected.future, 1);
    assert_eq!(out.rejected.too_old, 1);
    assert_eq!(out.rejected.out_of_order, 1);
    assert_eq!(out.rejected.duplicate, 1);
    // Samples are validated in time order: the oldest refusal is named.
    assert!(
        out.first_error
            .unwrap()
            .contains("older than the retention")
    );
    assert_eq!(store.stats().unwrap().rejected, out.rejected);
    // The first value at a timestamp stays.
    assert_eq!(
        all_points(&store, "a", "m"),
        vec![(NOW - 60_000, 2.0), (NOW, 1.0)]
    );
    let err = store
        .append(&batch("", 3, "m", &[], &[(NOW, 1.0)]))
        .unwrap_err();
    assert!(err.to_string().contains("host"), "{err}");
}

fn open_with_three_series_per_host(dir: &std::path::Path, clock: &TestClock) -> Store {
    open(
        dir,
        hostwatch_tsdb::Options {
            max_series_per_host: 3,
            ..options(clock)
        },
    )
}

#[test]
fn series_limit_per_host_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open_with_three_series_per_host(dir.path(), &clock);
    let series = (0..5)
        .map(|i| SeriesInput {
            metric: "m".to_owned(),
            labels: vec![Label::new("i", i.to_string())],
            points: vec![Point {
                t_ms: NOW,
                value: 1.0,
            }],
        })
        .chain([SeriesInput {
            metric: "bad name".to_owned(),
            labels: vec![],
            points: vec![Point {
                t_ms: NOW,
                value: 1.0,
            }],
        }])
        .collect();
    let out = store
        .append(&Batch {
            host: "a".into(),
            source: 1,
            seq: 1,
            series,
            processes: vec![],
            malformed: 0,
        })
        .unwrap();
    assert_eq!(out.stored, 3);
    assert_eq!(out.rejected.series_limit, 2);
    assert_eq!(out.rejected.invalid_series, 1);
    assert!(out.first_error.unwrap().contains("limit of 3 series"));
    assert_eq!(store.select("m", &[]).unwrap().len(), 3);
}

#[test]
fn late_samples_within_the_tolerance_merge_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let t = NOW - 2 * HOUR;
    // Fresh data first, then an agent's replay interleaving older samples.
    store
        .append(&batch("a", 1, "m", &[], &[(t, 0.0), (t + 20_000, 2.0)]))
        .unwrap();
    let out = store
        .append(&batch(
            "a",
            2,
            "m",
            &[],
            &[(t + 10_000, 1.0), (t - 5 * MINUTE, -1.0)],
        ))
        .unwrap();
    assert_eq!(out.stored, 2, "{out:?}");
    let expected = vec![
        (t - 5 * MINUTE, -1.0),
        (t, 0.0),
        (t + 10_000, 1.0),
        (t + 20_000, 2.0),
    ];
    assert_eq!(all_points(&store, "a", "m"), expected);
    // Sealed, then a late sample reopens the window: still one ordered copy.
    store.seal_all().unwrap();
    store
        .append(&batch("a", 3, "m", &[], &[(t + 5_000, 0.5)]))
        .unwrap();
    let mut with_late = expected.clone();
    with_late.insert(2, (t + 5_000, 0.5));
    assert_eq!(all_points(&store, "a", "m"), with_late);
    store.seal_all().unwrap();
    drop(store);
    let store = open(dir.path(), options(&clock));
    assert_eq!(all_points(&store, "a", "m"), with_late);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_series_back_after_an_outage_reopens_its_idle_sealed_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let hour = NOW.div_euclid(HOUR) * HOUR;
    store
        .append(&batch("a", 1, "m", &[], &[(hour + 1000, 1.0)]))
        .unwrap();
    // An hour of silence: the window seals on the wall clock.
    clock.set(hour + 2 * HOUR);
    assert_eq!(store.maintain().unwrap().sealed_chunks, 1);
    // The agent's spool replays what it sampled during the outage.
    let out = store
        .append(&batch(
            "a",
            2,
            "m",
            &[],
            &[(hour + 2000, 2.0), (hour + HOUR + 10, 3.0)],
        ))
        .unwrap();
    assert_eq!(out.stored, 2, "{out:?}");
    assert_eq!(
        all_points(&store, "a", "m"),
        vec![
            (hour + 1000, 1.0),
            (hour + 2000, 2.0),
            (hour + HOUR + 10, 3.0)
        ]
    );
}

fn snapshot(t_ms: i64, pid: u32) -> ProcessSnapshot {
    ProcessSnapshot {
        t_ms,
        processes: vec![ProcessInfo {
            pid,
            name: "nginx".into(),
            command: "nginx -g daemon off;".into(),
            user: "www-data".into(),
            cpu_cores: 1.5,
            rss_bytes: 1 << 20,
            start_time_ms: NOW - 1000,
        }],
    }
}

#[test]
fn process_snapshots_are_found_at_or_before_a_time_in_head_and_sealed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let old = NOW - 3 * HOUR;
    let mut b = batch("a", 1, "m", &[], &[]);
    b.processes = vec![snapshot(old, 1), snapshot(old + 10, 2)];
    store.append(&b).unwrap();
    let mut other = batch("ab", 1, "m", &[], &[]);
    other.processes = vec![snapshot(NOW - 15, 3)];
    store.append(&other).unwrap();
    let check = |store: &Store| {
        let pid = |host: &str, at| {
            store
                .process_snapshot_at(host, at)
                .unwrap()
                .map(|s| s.processes[0].pid)
        };
        assert_eq!(pid("a", NOW), Some(5));
        assert_eq!(pid("a", NOW - 11), Some(2));
        assert_eq!(pid("a", old + 9), Some(1));
        assert_eq!(pid("a", old - 1), None);
        assert_eq!(pid("b", NOW), None);
        assert_eq!(pid("ab", NOW), Some(3));
    };
    let mut newer = batch("a", 2, "m", &[], &[]);
    newer.processes = vec![snapshot(NOW - 10, 5)];
    store.append(&newer).unwrap();
    check(&store);
    store.seal_all().unwrap();
    check(&store);
    drop(store);
    let store = open(dir.path(), options(&clock));
    check(&store);
}

#[test]
fn concurrent_appends_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = Arc::new(open(dir.path(), options(&clock)));
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for seq in 1..=40u64 {
                    let t = NOW - 10_000 + seq as i64;
                    store
                        .append(&batch(&format!("h{w}"), seq, "m", &[], &[(t, 1.0)]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.batches, stats.samples_stored), (320, 320));
    assert!(
        stats.commit_groups < stats.batches,
        "{} groups for {} batches",
        stats.commit_groups,
        stats.batches
    );
}

#[test]
fn submitted_batches_share_one_flush_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let pending: Vec<_> = (1..=20u64)
        .map(|seq| {
            let t = NOW - 1_000 + seq as i64;
            store
                .submit(&batch("a", seq, "m", &[], &[(t, seq as f64)]))
                .unwrap()
        })
        .collect();
    // A replay of a batch still in flight is a duplicate that waits for the original.
    let replay = store
        .submit(&batch("a", 20, "m", &[], &[(NOW - 1, 0.0)]))
        .unwrap();
    let outcomes: Vec<_> = pending
        .into_iter()
        .map(|p| store.wait(p).unwrap())
        .collect();
    assert!(outcomes.iter().all(|o| o.stored == 1 && !o.duplicate));
    assert!(store.wait(replay).unwrap().duplicate);
    let stats = store.stats().unwrap();
    assert_eq!((stats.batches, stats.commit_groups), (20, 1));
    assert_eq!(store.last_seq("a", 7).unwrap(), 20);
    drop(store);
    let store = open(dir.path(), options(&clock));
    let expected: Vec<(i64, f64)> = (1..=20)
        .map(|seq| (NOW - 1_000 + seq, seq as f64))
        .collect();
    assert_eq!(all_points(&store, "a", "m"), expected);
    assert_eq!(store.last_seq("a", 7).unwrap(), 20);
}

#[test]
fn wal_generations_cut_short_by_a_crash_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    {
        let store = open(dir.path(), options(&clock));
        store
            .append(&batch("a", 1, "m", &[], &[(NOW - 10, 1.0)]))
            .unwrap();
    }
    let wal = wal_dir(dir.path());
    // A generation whose creation was cut short (no ready marker, a torn
    // database file) and one whose removal was.
    let unready = wal.join(format!("{:020}", 99));
    std::fs::create_dir_all(&unready).unwrap();
    std::fs::write(unready.join("conf"), b"torn").unwrap();
    std::fs::write(unready.join("db"), b"\x01\x02").unwrap();
    let removing = wal.join(format!("{:020}.deleted", 1));
    std::fs::create_dir_all(&removing).unwrap();
    std::fs::write(removing.join("db"), b"half gone").unwrap();
    let store = open(dir.path(), options(&clock));
    assert!(!unready.exists() && !removing.exists());
    assert_eq!(all_points(&store, "a", "m"), vec![(NOW - 10, 1.0)]);
    store
        .append(&batch("a", 2, "m", &[], &[(NOW - 5, 2.0)]))
        .unwrap();
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn steps_aggregate_the_same_from_tiers_as_from_raw_samples() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let day = NOW.div_euclid(24 * HOUR) * 24 * HOUR - 24 * HOUR;
    // A counter with a reset, every 10 s for 30 h, in 3 h batches.
    let mut counter = 0.0;
    let mut values = Vec::new();
    for i in 0..(30 * 360) {
        counter += (i % 7) as f64;
        if i == 5000 {
            counter = 3.0;
        }
        values.push((day + i * 10_000, counter));
    }
    for (seq, part) in values.chunks(3 * 360).enumerate() {
        store
            .append(&batch("a", seq as u64 + 1, "c", &[], part))
            .unwrap();
    }
    let query = |step, agg| {
        let mut data = store
            .range_step("c", &[], day, day + 30 * HOUR, step, agg)
            .unwrap();
        assert_eq!(data.len(), 1);
        data.remove(0).points
    };
    // Before sealing everything comes from raw samples.
    let mut raw = Vec::new();
    for agg in Aggregation::ALL {
        for step in [MINUTE, 5 * MINUTE, HOUR, 3 * HOUR] {
            raw.push(query(step, agg));
        }
    }
    let report = store.seal_all().unwrap();
    assert_eq!(report.sealed_chunks, 30);
    // The first day's hours, written with its last window; the second
    // day (6 h) has none yet: its steps fold the raw chunks.
    assert_eq!(store.verify().unwrap().row_chunks, 1);
    let mut i = 0;
    for agg in Aggregation::ALL {
        for step in [MINUTE, 5 * MINUTE, HOUR, 3 * HOUR] {
            let tiered = query(step, agg);
            if agg == Aggregation::Rate && step % HOUR == 0 {
                // From the 1 h tier the first row's inner increase is not
                // known, nor an increase before a reset inside one row;
                // finer steps read the raw samples.
                assert!(raw[i].len() - tiered.len() <= 1, "{agg:?} {step}");
                let reset_at = values[5000].0;
                for p in &tiered {
                    let r = raw[i].iter().find(|r| r.t_ms == p.t_ms).unwrap();
                    if p.t_ms != day && !(p.t_ms..p.t_ms + step).contains(&reset_at) {
                        assert!(
                            (p.value - r.value).abs() < 1e-9,
                            "{agg:?} {step} {p:?} {r:?}"
                        );
                    }
                }
            } else {
                assert_eq!(tiered, raw[i], "{agg:?} step {step}");
            }
            i += 1;
        }
    }
    let hourly = query(HOUR, Aggregation::Count);
    assert_eq!(hourly.len(), 30);
    assert!(hourly.iter().all(|p| p.value == 360.0));
    let rate = query(HOUR, Aggregation::Rate);
    // Increments average 3 per 10 s: 0.3/s.
    let reset_hour = values[5000].0.div_euclid(HOUR) * HOUR;
    assert!(
        rate.iter()
            .filter(|p| p.t_ms != reset_hour)
            .all(|p| (p.value - 0.3).abs() < 0.01),
        "{rate:?}"
    );
    assert!(
        store
            .range_step("c", &[], 0, 1, 0, Aggregation::Avg)
            .is_err()
    );
}

#[test]
fn matchers_select_by_label() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    for (seq, cpu) in ["0", "1", "total"].iter().enumerate() {
        store
            .append(&batch(
                "a",
                seq as u64 + 1,
                "cpu",
                &[("cpu", cpu)],
                &[(NOW, 0.5)],
            ))
            .unwrap();
    }
    let count = |matchers: &[Matcher]| store.select("cpu", matchers).unwrap().len();
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&[Matcher::Equal("cpu".into(), "total".into())]), 1);
    assert_eq!(count(&[Matcher::NotEqual("cpu".into(), "total".into())]), 2);
    assert_eq!(count(&[Matcher::regex("cpu", "[0-9]+", false).unwrap()]), 2);
    assert_eq!(count(&[Matcher::Equal("host".into(), "b".into())]), 0);
    assert_eq!(store.select("nothing", &[]).unwrap().len(), 0);
}

/// Selections agree with looking at every series the test created, as
/// series are created (past the point where the index merges new series
/// into its key order) and after a reopen builds the index from disk.
#[test]
fn selections_agree_with_every_series_created_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let mut created: Vec<SeriesKey> = Vec::new();
    let matchers = [
        vec![],
        vec![Matcher::Equal("cpu".into(), "total".into())],
        vec![Matcher::Equal("host".into(), "h1".into())],
        vec![Matcher::NotEqual("mode".into(), "idle".into())],
        vec![Matcher::Equal("mode".into(), "".into())],
        vec![
            Matcher::regex("cpu", "1.*", false).unwrap(),
            Matcher::regex("host", "h[02]", true).unwrap(),
        ],
    ];
    let check = |store: &Store, created: &[SeriesKey]| {
        for m in &matchers {
            let mut expected: Vec<&SeriesKey> = created
                .iter()
                .filter(|k| m.iter().all(|m| m.matches(k)))
                .collect();
            expected.sort();
            let got: Vec<SeriesKey> = store
                .select("cpu", m)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{m:?}");
        }
    };
    let store = open(dir.path(), options(&clock));
    let mut seq = 0;
    // Hosts in turn, so that each host's series come in bursts and the
    // newest ones are often not yet in the key order when selected.
    for round in 0..3 {
        for host in ["h2", "h0", "h1"] {
            for i in (round * 40..round * 40 + 40).rev() {
                let cpu = if i % 10 == 0 {
                    "total".to_owned()
                } else {
                    i.to_string()
                };
                let mut labels = vec![("cpu", cpu.as_str())];
                if i % 3 == 0 {
                    labels.push(("mode", if i % 2 == 0 { "idle" } else { "user" }));
                }
                seq += 1;
                store
                    .append(&batch(host, seq, "cpu", &labels, &[(NOW, 0.5)]))
                    .unwrap();
                let labels: Vec<Label> = labels.iter().map(|(n, v)| Label::new(*n, *v)).collect();
                let key = SeriesKey::for_host(host, "cpu", &labels).unwrap();
                if !created.contains(&key) {
                    created.push(key);
                }
            }
            check(&store, &created);
        }
    }
    drop(store);
    let store = open(dir.path(), options(&clock));
    check(&store, &created);
}

/// A minute-by-minute series `m` of host `a` over `[from, to)`, one batch per hour.
fn fill(store: &Store, from: i64, to: i64) {
    let values: Vec<(i64, f64)> = (from..to)
        .step_by(MINUTE as usize)
        .map(|t| (t, (t / MINUTE % 1000) as f64))
        .collect();
    for (seq, part) in values.chunks(60).enumerate() {
        let outcome = store.append(&batch("a", seq as u64 + 1, "m", &[], part));
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

#[test]
fn retention_by_age_deletes_whole_old_hours_and_stale_latest_values() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    // Partitions of an hour: retention deletes whole partitions.
    let opts = || hostwatch_tsdb::Options {
        retention_ms: 4 * HOUR,
        partition_ms: HOUR,
        ..options(&clock)
    };
    let store = open(dir.path(), opts());
    let start = (NOW - 3 * HOUR).div_euclid(HOUR) * HOUR;
    fill(&store, start, NOW);
    store.seal_all().unwrap();
    assert_eq!(all_points(&store, "a", "m").first().unwrap().0, start);
    // Two hours later the cutoff is NOW - 2h: the hours before its hour go.
    clock.set(NOW + 2 * HOUR);
    let report = store.maintain().unwrap();
    assert!(report.deleted > 0, "{report:?}");
    let cutoff_hour = (NOW - 2 * HOUR).div_euclid(HOUR) * HOUR;
    let left = all_points(&store, "a", "m");
    assert_eq!(left.first().unwrap().0, cutoff_hour);
    assert_eq!(left.last().unwrap().0, NOW - MINUTE);
    assert_eq!(store.latest("a").unwrap().len(), 1);
    // Much later everything has expired, the latest value too, also after a reopen.
    clock.set(NOW + 10 * HOUR);
    store.maintain().unwrap();
    assert!(all_points(&store, "a", "m").is_empty());
    assert!(store.latest("a").unwrap().is_empty());
    assert!(store.verify().unwrap().is_clean());
    drop(store);
    let store = open(dir.path(), opts());
    assert!(store.latest("a").unwrap().is_empty());
    assert!(all_points(&store, "a", "m").is_empty());
}

#[test]
fn retention_by_size_drops_the_oldest_hours_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let start = (NOW - 6 * HOUR).div_euclid(HOUR) * HOUR;
    // Partitions of an hour: retention deletes whole partitions.
    let hourly = || hostwatch_tsdb::Options {
        partition_ms: HOUR,
        ..options(&clock)
    };
    let (all, stored, chunks) = {
        let store = open(dir.path(), hourly());
        fill(&store, start, NOW);
        // Host b reported in the oldest hour only.
        let points = [(start, 1.0), (start + MINUTE, 2.0)];
        store.append(&batch("b", 1, "m", &[], &points)).unwrap();
        store.seal_all().unwrap();
        assert_eq!(store.latest("b").unwrap().len(), 1);
        let v = store.verify().unwrap();
        (
            all_points(&store, "a", "m"),
            v.raw_bytes + v.row_bytes,
            v.chunks + v.row_chunks,
        )
    };
    // The whole directory counts (sled's files, the WAL): the limit
    // leaves room for about half the partitions' files, measured after
    // a reopen (which writes to the main database).
    drop(open(dir.path(), hourly()));
    let parts: u64 = partition_dirs(dir.path())
        .iter()
        .map(|p| dir_bytes(p))
        .sum();
    let disk = dir_bytes(dir.path());
    assert!(stored < parts, "{stored} {parts}");
    let opts = || hostwatch_tsdb::Options {
        retention_bytes: Some(disk - parts / 2),
        ..hourly()
    };
    let store = open(dir.path(), opts());
    let report = store.maintain().unwrap();
    // The report counts chunks, as retention by age does.
    let v = store.verify().unwrap();
    assert!(v.is_clean());
    assert_eq!(
        report.deleted,
        chunks - v.chunks - v.row_chunks,
        "{report:?}"
    );
    assert!(report.deleted > 1, "{report:?}");
    // Host b's latest value went with its chunk, also after a reopen.
    assert!(store.latest("b").unwrap().is_empty());
    assert!(all_points(&store, "b", "m").is_empty());
    drop(store);
    let store = open(dir.path(), opts());
    assert!(store.latest("b").unwrap().is_empty());
    let left = all_points(&store, "a", "m");
    assert!(
        !left.is_empty() && left.len() < all.len(),
        "{} of {}",
        left.len(),
        all.len()
    );
    // What is left is the newest part, whole hours.
    assert_eq!(left[..], all[all.len() - left.len()..]);
    assert_eq!(left[0].0 % HOUR, 0);
    assert!(store.verify().unwrap().is_clean());
}

/// A store of host a's minutes over the four hours before NOW, sealed
/// into partitions of an hour: its points and partition directories.
fn four_sealed_hours(
    dir: &std::path::Path,
    clock: &TestClock,
) -> (Vec<(i64, f64)>, Vec<std::path::PathBuf>) {
    let store = open(
        dir,
        hostwatch_tsdb::Options {
            partition_ms: HOUR,
            ..options(clock)
        },
    );
    fill(&store, NOW - 4 * HOUR, NOW);
    let sealed = store.seal_all();
    assert!(sealed.is_ok(), "{sealed:?}");
    let all = all_points(&store, "a", "m");
    drop(store);
    let parts = partition_dirs(dir);
    assert_eq!(parts.len(), 4, "{parts:?}");
    (all, parts)
}

/// `four_sealed_hours` reopened with room for everything but half the
/// oldest partition, and one maintenance pass, which deletes it alone:
/// the store, its limit, and what `four_sealed_hours` gave.
fn four_hours_the_oldest_deleted_by_size(
    dir: &std::path::Path,
    clock: &TestClock,
) -> (Store, u64, Vec<(i64, f64)>, Vec<std::path::PathBuf>) {
    let (all, parts) = four_sealed_hours(dir, clock);
    let opts = |limit| hostwatch_tsdb::Options {
        partition_ms: HOUR,
        retention_bytes: Some(limit),
        ..options(clock)
    };
    drop(open(dir, opts(u64::MAX)));
    let limit = dir_bytes(dir) - dir_bytes(&parts[0]) / 2;
    let store = open(dir, opts(limit));
    let report = store.maintain();
    assert!(
        report.as_ref().is_ok_and(|r| r.deleted_partitions == 1),
        "{report:?}"
    );
    (store, limit, all, parts)
}

#[test]
fn retention_by_size_deletes_only_while_the_store_is_over_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (store, limit, all, parts) = four_hours_the_oldest_deleted_by_size(dir.path(), &clock);
    assert_eq!(partition_dirs(dir.path()), parts[1..]);
    assert!(dir_bytes(dir.path()) <= limit);
    // Under the limit now: later passes delete nothing.
    assert_eq!(store.maintain().unwrap().deleted_partitions, 0);
    let left = all_points(&store, "a", "m");
    assert_eq!(left[..], all[60..]);
}

#[test]
fn a_sample_behind_what_retention_by_size_deleted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (store, _, _, parts) = four_hours_the_oldest_deleted_by_size(dir.path(), &clock);
    // Within the retention by age, but in the hour just deleted: stored,
    // it would be sealed into a partition that reads no longer look at.
    let late = NOW - 4 * HOUR + MINUTE;
    let outcome = store
        .append(&batch("a", 1000, "n", &[], &[(late, 1.0), (NOW, 2.0)]))
        .unwrap();
    assert_eq!(outcome.rejected.too_old, 1, "{outcome:?}");
    assert_eq!(all_points(&store, "a", "n"), vec![(NOW, 2.0)]);
    store.seal_all().unwrap();
    assert!(!partition_dirs(dir.path()).contains(&parts[0]));
}

#[test]
fn retention_by_size_keeps_the_newest_partition_when_no_data_came_for_days() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let (all, parts) = four_sealed_hours(dir.path(), &clock);
    // Every agent gone for three days: the current window has no
    // partition, and one byte is far less than the newest one alone.
    clock.set(NOW + 72 * HOUR);
    let store = open(
        dir.path(),
        hostwatch_tsdb::Options {
            partition_ms: HOUR,
            retention_bytes: Some(1),
            ..options(&clock)
        },
    );
    let report = store.maintain().unwrap();
    assert_eq!(report.deleted_partitions, 3, "{report:?}");
    assert_eq!(partition_dirs(dir.path()), parts[3..]);
    let left = all_points(&store, "a", "m");
    assert_eq!(left[..], all[180..]);
    assert_eq!(store.latest("a").unwrap().len(), 1);
    // Still over the limit, with nothing more it may delete.
    assert_eq!(store.maintain().unwrap().deleted_partitions, 0);
    assert_eq!(all_points(&store, "a", "m"), left);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn damaged_wal_frames_and_chunks_are_skipped_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let start = (NOW - 3 * HOUR).div_euclid(HOUR) * HOUR;
    {
        let store = open(dir.path(), options(&clock));
        fill(&store, start, start + 2 * HOUR);
        store.seal_all().unwrap();
        // These stay in the WAL.
        store
            .append(&batch("a", 100, "m", &[], &[(NOW - 2 * MINUTE, 1.0)]))
            .unwrap();
        store
            .append(&batch("a", 101, "m", &[], &[(NOW - MINUTE, 2.0)]))
            .unwrap();
    }
    {
        let flip = |tree: &sled::Tree, prefix: &[u8]| {
            let (key, value) = tree.scan_prefix(prefix).next().unwrap().unwrap();
            let mut value = value.to_vec();
            let middle = value.len() / 2;
            value[middle] ^= 0x55;
            tree.insert(key, value).unwrap();
        };
        // Every chunk is in the partition of today.
        let partitions = partition_dirs(dir.path());
        assert_eq!(partitions.len(), 1, "{partitions:?}");
        let db = open_db(&partitions[0]);
        flip(&db, &[b'C', 0]);
        // A chunk of a tier this build does not write (tier 1).
        let (key, value) = db.scan_prefix([b'C', 0]).next_back().unwrap().unwrap();
        let mut key = key.to_vec();
        key[1] = 1;
        db.insert(key, value).unwrap();
        db.flush().unwrap();
        drop(db);
        // The newest WAL generation holds the two later batches.
        let wal = wal_dir(dir.path());
        let newest = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        let db = open_db(&newest);
        flip(&db, b"W");
        db.flush().unwrap();
        drop(db);
    }
    let store = open(dir.path(), options(&clock));
    let stats = store.stats().unwrap();
    assert!(stats.corrupt_wal_frames >= 1, "{stats:?}");
    // The first hour's raw chunk is gone; the second hour and the later WAL
    // frame remain; nothing crashes.
    let left = all_points(&store, "a", "m");
    assert!(left.iter().all(|(t, _)| *t >= start + HOUR), "{left:?}");
    assert_eq!(
        left.iter().filter(|(t, _)| *t < NOW - 10 * MINUTE).count(),
        60
    );
    assert!(store.stats().unwrap().corrupt_blocks >= 1);
    let report = store.verify().unwrap();
    assert_eq!(report.damaged_total, 3, "{:?}", report.damaged);
    assert!(
        report.damaged.iter().any(|d| d.contains("unknown tier")),
        "{:?}",
        report.damaged
    );
    assert!(
        report.damaged.iter().any(|d| d.contains("WAL")),
        "{:?}",
        report.damaged
    );
    assert!(
        report.damaged.iter().any(|d| d.contains("tier 0")),
        "{:?}",
        report.damaged
    );
    // Appends go on.
    store
        .append(&batch("a", 102, "m", &[], &[(NOW, 3.0)]))
        .unwrap();
}

#[test]
fn snapshots_out_of_order_reopened_and_replayed_keep_one_per_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let hour = NOW - NOW.rem_euclid(HOUR) - HOUR;
    let append = |store: &Store, seq: u64, snapshots: Vec<ProcessSnapshot>| {
        let mut b = batch("a", seq, "m", &[], &[]);
        b.processes = snapshots;
        store.append(&b).unwrap();
    };
    append(
        &store,
        1,
        vec![snapshot(hour + 20, 1), snapshot(hour + 30, 2)],
    );
    // An older snapshot lands between; one at a time already held is dropped.
    append(
        &store,
        2,
        vec![snapshot(hour + 10, 3), snapshot(hour + 30, 9)],
    );
    assert_eq!(store.stats().unwrap().snapshots_stored, 3);
    let pid = |store: &Store, at| {
        store
            .process_snapshot_at("a", at)
            .unwrap()
            .map(|s| s.processes[0].pid)
    };
    let check = |store: &Store, want: &[(i64, Option<u32>)]| {
        for &(at, p) in want {
            assert_eq!(pid(store, at), p, "at hour + {}", at - hour);
        }
    };
    let first = [
        (hour + 9, None),
        (hour + 15, Some(3)),
        (hour + 25, Some(1)),
        (hour + 30, Some(2)),
    ];
    check(&store, &first);
    // Replayed from the WAL.
    drop(store);
    let store = open(dir.path(), options(&clock));
    check(&store, &first);
    // Sealed, then reopened by a snapshot of the same hour.
    store.seal_all().unwrap();
    append(&store, 3, vec![snapshot(hour + 25, 4)]);
    let second = [
        (hour + 15, Some(3)),
        (hour + 24, Some(1)),
        (hour + 27, Some(4)),
        (hour + 40, Some(2)),
    ];
    check(&store, &second);
    store.seal_all().unwrap();
    check(&store, &second);
    drop(store);
    let store = open(dir.path(), options(&clock));
    check(&store, &second);
    assert_eq!(store.verify().unwrap().damaged_total, 0);
}

#[test]
fn a_window_of_many_snapshots_reads_back_each_from_head_replay_and_block() {
    // More snapshots than the head keeps as rows, in runs of several
    // lengths, one of them arriving late into an older run.
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let hour = NOW - NOW.rem_euclid(HOUR) - HOUR;
    let times: Vec<i64> = (0..300).map(|i| hour + 1000 + i * 10).collect();
    let late = times[100] + 5;
    for (seq, chunk) in times.chunks(7).enumerate() {
        let mut b = batch("a", seq as u64 + 1, "m", &[], &[]);
        b.processes = chunk
            .iter()
            .map(|&t| snapshot(t, (t / 10) as u32))
            .collect();
        store.append(&b).unwrap();
    }
    let mut b = batch("a", 1000, "m", &[], &[]);
    b.processes = vec![snapshot(late, 1)];
    store.append(&b).unwrap();
    let check = |store: &Store| {
        for &t in &times {
            let got = store.process_snapshot_at("a", t + 1).unwrap().unwrap();
            assert_eq!(
                (got.t_ms, got.processes[0].pid),
                (t, (t / 10) as u32),
                "at hour + {}",
                t - hour
            );
        }
        let got = store.process_snapshot_at("a", late + 4).unwrap().unwrap();
        assert_eq!((got.t_ms, got.processes[0].pid), (late, 1));
        assert!(
            store
                .process_snapshot_at("a", times[0] - 1)
                .unwrap()
                .is_none()
        );
    };
    check(&store);
    assert_eq!(store.stats().unwrap().snapshots_stored, 301);
    drop(store);
    let store = open(dir.path(), options(&clock));
    check(&store);
    store.seal_all().unwrap();
    check(&store);
    drop(store);
    let store = open(dir.path(), options(&clock));
    check(&store);
    assert_eq!(store.verify().unwrap().damaged_total, 0);
}

#[test]
fn batches_whose_series_change_order_or_labels_store_each_sample_in_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open_with_three_series_per_host(dir.path(), &clock);
    let series = |labels: &[&str], t_ms: i64| -> Vec<SeriesInput> {
        labels
            .iter()
            .map(|l| SeriesInput {
                metric: "m".to_owned(),
                labels: vec![Label::new("l", *l)],
                // The value names its series.
                points: vec![Point {
                    t_ms,
                    value: l.parse().unwrap(),
                }],
            })
            .collect()
    };
    let shapes: [&[&str]; 6] = [
        &["1", "2"],
        &["1", "2"],
        &["2", "1"],
        &["1", "3"],
        &["1", "3", "4"],
        &["1", "2", "3"],
    ];
    let mut stored = 0;
    for (i, labels) in shapes.iter().enumerate() {
        let out = store
            .append(&Batch {
                host: "a".into(),
                source: 1,
                seq: i as u64 + 1,
                series: series(labels, NOW - 100 + i as i64),
                processes: vec![],
                malformed: 0,
            })
            .unwrap();
        stored += out.stored;
        // "4" is over the limit of 3 series, every time.
        assert_eq!(out.rejected.series_limit, u64::from(labels.contains(&"4")));
    }
    assert_eq!(stored, 13);
    for data in store.range("m", &[], NOW - 1000, NOW + 1).unwrap() {
        let want: f64 = data.key.label("l").unwrap().parse().unwrap();
        assert!(
            data.points.iter().all(|p| p.value == want),
            "{}: {:?}",
            data.key,
            data.points
        );
    }
    let counts: Vec<usize> = store
        .range("m", &[], NOW - 1000, NOW + 1)
        .unwrap()
        .iter()
        .map(|d| d.points.len())
        .collect();
    assert_eq!(counts, vec![6, 4, 3]);
}
