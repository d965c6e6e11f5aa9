//! Helpers shared by the store's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use hostwatch_tsdb::{
    Batch, Label, MaintenanceReport, Options, Point, SeriesInput, Store, TsdbError,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A fixed "now": 2027-01-15.
pub const NOW: i64 = 1_800_000_000_000;
pub const HOUR: i64 = 3_600_000;
pub const MINUTE: i64 = 60_000;
pub const DAY: i64 = 24 * HOUR;

/// A clock tests move by hand.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn new(at: i64) -> Self {
        TestClock(Arc::new(AtomicI64::new(at)))
    }
    pub fn set(&self, at: i64) {
        self.0.store(at, Ordering::SeqCst);
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Options with the test clock and no background thread.
pub fn options(clock: &TestClock) -> Options {
    let c = clock.clone();
    Options {
        clock: Arc::new(move || c.now()),
        maintenance_interval: None,
        ..Options::default()
    }
}

/// sled's background threads may hold the file lock of a store just
/// dropped (of its tree or of a WAL generation) for a moment, so opens
/// after a drop retry on a lock error until a deadline.
fn retrying<T>(what: &Path, mut open: impl FnMut() -> Result<T, TsdbError>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("cannot open {}: {e}", what.display()),
        }
    }
}

/// Opens the store in `dir`, its WAL in [`wal_dir`].
pub fn open(dir: &Path, options: Options) -> Store {
    retrying(dir, || Store::open(dir, options.clone()))
}

/// Opens a sled database (a store's tree or a WAL generation) directly.
pub fn open_db(path: &Path) -> sled::Db {
    retrying(path, || Ok(sled::open(path)?))
}

/// The store's partition directories, oldest first.
pub fn partition_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<(i64, std::path::PathBuf)> = std::fs::read_dir(dir.join("partitions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some((p.file_name()?.to_str()?.parse().ok()?, p)))
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// Bytes of the files below `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                dir_bytes(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

/// Where [`open`] puts the store's WAL.
pub fn wal_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("wal")
}

pub fn points(values: &[(i64, f64)]) -> Vec<Point> {
    values
        .iter()
        .map(|&(t_ms, value)| Point { t_ms, value })
        .collect()
}

/// A batch of one series `metric` (with `labels`) for `host`, source 7.
pub fn batch(
    host: &str,
    seq: u64,
    metric: &str,
    labels: &[(&str, &str)],
    values: &[(i64, f64)],
) -> Batch {
    Batch {
        host: host.to_owned(),
        source: 7,
        seq,
        series: vec![SeriesInput {
            metric: metric.to_owned(),
            labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            points: points(values),
        }],
        processes: vec![],
        malformed: 0,
    }
}

/// Every point of `metric` of `host`, all time.
pub fn all_points(store: &Store, host: &str, metric: &str) -> Vec<(i64, f64)> {
    let matchers = [hostwatch_tsdb::Matcher::Equal("host".into(), host.into())];
    store
        .range(metric, &matchers, i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.points)
        .map(|p| (p.t_ms, p.value))
        .collect()
}

/// The batches of the format-1 fixture store (`tests/fixtures/format-1`),
/// in the order they were appended: hosts `a` and `b`, series `m` and
/// `n{k="v"}` each, a sample every 10 minutes from 30 h before [`NOW`] to
/// [`NOW`], and a process snapshot of host `a` every 30 minutes; the
/// fixture sealed every batch but the last hour's, which it left in the
/// WAL.
pub fn fixture_batches() -> (Vec<Batch>, Vec<Batch>) {
    let start = NOW - 30 * HOUR;
    let (mut sealed, mut open) = (Vec::new(), Vec::new());
    for (i, t) in (start..NOW).step_by(10 * MINUTE as usize).enumerate() {
        for host in ["a", "b"] {
            let value = (t - start) as f64 / MINUTE as f64 + if host == "a" { 0.5 } else { 0.25 };
            let processes = if host == "a" && i % 3 == 0 {
                vec![hostwatch_tsdb::ProcessSnapshot {
                    t_ms: t,
                    processes: vec![hostwatch_tsdb::ProcessInfo {
                        pid: 1 + i as u32,
                        name: "init".to_owned(),
                        command: "/sbin/init".to_owned(),
                        user: "root".to_owned(),
                        cpu_cores: 0.125,
                        rss_bytes: 4096 * i as u64,
                        start_time_ms: start,
                    }],
                }]
            } else {
                vec![]
            };
            let batch = Batch {
                host: host.to_owned(),
                source: 7,
                seq: i as u64 + 1,
                series: vec![
                    SeriesInput {
                        metric: "m".to_owned(),
                        labels: vec![],
                        points: points(&[(t, value)]),
                    },
                    SeriesInput {
                        metric: "n".to_owned(),
                        labels: vec![Label::new("k", "v")],
                        points: points(&[(t, -value)]),
                    },
                ],
                processes,
                malformed: 0,
            };
            if t < NOW - HOUR {
                sealed.push(batch);
            } else {
                open.push(batch);
            }
        }
    }
    (sealed, open)
}

/// Copies `from` into `to`, directories and regular files (sled's `blobs` too).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Points of series `metric` of host `a`, a point a minute, from `from`
/// to `to`, appended in batches of an hour.
pub fn fill(store: &Store, seq: &mut u64, metric: &str, from: i64, to: i64) -> Vec<(i64, f64)> {
    let values: Vec<(i64, f64)> = (from..to)
        .step_by(MINUTE as usize)
        .map(|t| (t, (t / MINUTE % 1000) as f64))
        .collect();
    for part in values.chunks(60) {
        *seq += 1;
        let outcome = store.append(&batch("a", *seq, metric, &[], part)).unwrap();
        assert_eq!(outcome.rejected.total(), 0, "{outcome:?}");
    }
    values
}

/// A store in `dir` with six hours of `a`'s series `m` on each side of
/// [`NOW`]'s midnight, sealed: two day partitions. Returns the points,
/// midnight and what sealing did.
pub fn write_two_days(dir: &Path, clock: &TestClock) -> (Vec<(i64, f64)>, i64, MaintenanceReport) {
    let midnight = NOW - NOW.rem_euclid(DAY);
    let store = open(dir, options(clock));
    let mut seq = 0;
    let written = fill(
        &store,
        &mut seq,
        "m",
        midnight - 6 * HOUR,
        midnight + 6 * HOUR,
    );
    let report = store.seal_all().unwrap();
    (written, midnight, report)
}

/// After a partition was found damaged (`case`): a new sample of `a`'s
/// series `m` at [`NOW`] (batch `seq`) is stored, sealed and read back.
pub fn check_writes_go_on(store: &Store, seq: u64, case: &str) {
    let outcome = store
        .append(&batch("a", seq, "m", &[], &[(NOW, 1.0)]))
        .unwrap();
    assert_eq!(outcome.stored, 1, "{case}");
    store.seal_all().unwrap();
    assert_eq!(all_points(store, "a", "m").last(), Some(&(NOW, 1.0)));
}
