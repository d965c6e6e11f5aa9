//! Whatever the store accepts, it replays and seals: batches as large as a
//! collector's message limit lets through, series as dense as a window may
//! hold, series listed many times in one batch.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hostwatch_tsdb::{Batch, Options, SeriesInput, Store};

/// Reopens the store in `dir` (replaying its WAL) and checks that it holds
/// exactly `want` for series `m` of host `a`, with nothing damaged.
fn reopen_and_check(
    store: Store,
    dir: &std::path::Path,
    options: Options,
    want: &[(i64, f64)],
) -> Store {
    drop(store);
    let store = open(dir, options);
    let stats = store.stats().unwrap();
    assert_eq!(
        stats.corrupt_wal_frames + stats.corrupt_blocks,
        0,
        "{stats:?}"
    );
    assert_eq!(all_points(&store, "a", "m"), want);
    store
}

#[test]
fn a_batch_of_more_than_a_million_samples_replays_and_seals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    // One series' 1,050,000 samples in one WAL frame, over three windows.
    let values: Vec<(i64, f64)> = (0..1_050_000)
        .map(|i| (NOW - 2 * HOUR + i * 6, (i % 1000) as f64 / 8.0))
        .collect();
    let out = store.append(&batch("a", 1, "m", &[], &values)).unwrap();
    assert_eq!((out.stored, out.rejected.total()), (values.len() as u64, 0));
    let store = reopen_and_check(store, dir.path(), options(&clock), &values);
    assert_eq!(store.stats().unwrap().replayed_samples, values.len() as u64);
    store.seal_all().unwrap();
    let store = reopen_and_check(store, dir.path(), options(&clock), &values);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_window_holds_at_most_its_limit_and_what_it_holds_seals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let limit = 1_000;
    let options = || Options {
        max_window_samples: limit,
        ..options(&clock)
    };
    let store = open(dir.path(), options());
    let start = NOW - 2 * HOUR;
    let values: Vec<(i64, f64)> = (0..limit as i64 + 50)
        .map(|i| (start + i, i as f64))
        .collect();
    // Three batches, as a dense series arrives in practice: the limit counts
    // what the window already holds.
    let mut stored = 0;
    let mut too_dense = 0;
    for (seq, part) in values.chunks(400).enumerate() {
        let out = store
            .append(&batch("a", seq as u64 + 1, "m", &[], part))
            .unwrap();
        stored += out.stored;
        too_dense += out.rejected.too_dense;
        if out.rejected.too_dense > 0 {
            assert!(out.first_error.unwrap().contains("at most 1000 samples"));
        }
    }
    assert_eq!((stored, too_dense), (limit as u64, 50));
    assert_eq!(store.stats().unwrap().rejected.too_dense, 50);
    let kept = &values[..limit];
    let store = reopen_and_check(store, dir.path(), options(), kept);
    store.seal_all().unwrap();
    let store = reopen_and_check(store, dir.path(), options(), kept);
    // A late sample for the full, sealed window is refused too.
    let out = store
        .append(&batch("a", 9, "m", &[], &[(start + 5_000, 1.0)]))
        .unwrap();
    assert_eq!(out.rejected.too_dense, 1);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn the_default_window_limit_seals_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    let limit = hostwatch_tsdb::MAX_WINDOW_SAMPLES;
    let start = NOW - 2 * HOUR;
    let values: Vec<(i64, f64)> = (0..limit as i64 + 10)
        .map(|i| (start + i, (i % 7) as f64))
        .collect();
    let out = store.append(&batch("a", 1, "m", &[], &values)).unwrap();
    assert_eq!((out.stored, out.rejected.too_dense), (limit as u64, 10));
    store.seal_all().unwrap();
    reopen_and_check(store, dir.path(), options(&clock), &values[..limit]);
}

#[test]
fn a_series_listed_many_times_is_stored_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    // Listed 20,000 times, newest first: within one batch order does not
    // matter (one listing of it, sorted, stores the same).
    let series = (0..20_000)
        .map(|i| SeriesInput {
            metric: "m".into(),
            labels: vec![],
            points: points(&[(NOW - i * 10, i as f64)]),
        })
        .collect();
    let out = store
        .append(&Batch {
            host: "a".into(),
            source: 7,
            seq: 1,
            series,
            processes: vec![],
            malformed: 0,
        })
        .unwrap();
    assert_eq!((out.stored, out.rejected.total()), (20_000, 0), "{out:?}");
    let stored = all_points(&store, "a", "m");
    assert_eq!(stored.len(), 20_000);
    assert_eq!(stored[0], (NOW - 199_990, 19_999.0));
    assert_eq!(store.stats().unwrap().series, 1);
}
