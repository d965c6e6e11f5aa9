//! What the store holds, for query engines: the metric names of its
//! series (to select series by a pattern over names rather than by one
//! name), and one series' points at a time (so an engine holds one
//! series' samples at once, not every selected series').

use crate::TsdbError;
use crate::model::{Point, SeriesKey};
use crate::read::Read;
use crate::store::{Store, poisoned};

impl Store {
    /// Names of the metrics with at least one series, sorted.
    pub fn metric_names(&self) -> Result<Vec<String>, TsdbError> {
        let inner = self.inner()?;
        let index = inner.index.read().map_err(|_| poisoned())?;
        let mut names: Vec<String> = index
            .by_metric
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        drop(index);
        names.sort();
        Ok(names)
    }

    /// Raw points in `[start_ms, end_ms)` of one series as
    /// [`Store::select`] lists it (its key and id), oldest first.
    pub fn series_points(
        &self,
        key: &SeriesKey,
        id: u64,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, TsdbError> {
        self.inner()?.raw_points(key.host(), id, start_ms, end_ms)
    }

    /// Whether one series as [`Store::select`] lists it has a point in
    /// `[start_ms, end_ms)`, decoding as few chunks as it can (none when
    /// a window inside the range answers).
    pub fn series_has_points(
        &self,
        key: &SeriesKey,
        id: u64,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<bool, TsdbError> {
        let inner = self.inner()?;
        let host = inner.host(key.host())?;
        inner.has_points(host.as_ref(), id, start_ms, end_ms)
    }

    /// [`Store::series_points`] of many series over one short span (an
    /// instant query's lookback), in the order given. They are read in the
    /// order of the store's keys (by series id), so that each page of
    /// chunks is read once for all its series rather than once per series
    /// when the order given (by label set) jumps across the key space.
    /// The answer holds every series' points at once: for short spans.
    pub fn series_points_many(
        &self,
        series: &[(&SeriesKey, u64)],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Vec<Point>>, TsdbError> {
        let inner = self.inner()?;
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_unstable_by_key(|&i| series[i].1);
        // Hosts looked up under one hold of the hosts' lock, not one each.
        let hosts = inner.hosts_of(series.iter().map(|(key, _)| key.host()))?;
        let mut out = vec![Vec::new(); series.len()];
        for i in order {
            let id = series[i].1;
            let span = (start_ms, end_ms);
            inner.raw_points_into(hosts[i].as_ref(), id, span, Read::Tails, &mut out[i])?;
        }
        Ok(out)
    }

    /// The newest point in `[start_ms, end_ms)` of each of many series,
    /// in the order given: what an instant vector selector keeps of
    /// [`Store::series_points_many`]. A series whose newest sample lies
    /// in the range or before it (a live series at now, one that stopped)
    /// is answered from memory; the others are read in key order.
    pub fn series_newest_many(
        &self,
        series: &[(&SeriesKey, u64)],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Option<Point>>, TsdbError> {
        let inner = self.inner()?;
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_unstable_by_key(|&i| series[i].1);
        let hosts = inner.hosts_of(series.iter().map(|(key, _)| key.host()))?;
        let mut out = vec![None; series.len()];
        let mut scratch = Vec::new();
        for i in order {
            let id = series[i].1;
            out[i] = inner.newest_point(hosts[i].as_ref(), id, start_ms, end_ms, &mut scratch)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Batch, Label, Matcher, Options, Point, SeriesInput, Store};
    use std::sync::Arc;

    fn open(dir: &std::path::Path) -> Store {
        let options = Options {
            maintenance_interval: None,
            clock: std::sync::Arc::new(|| 1_000_000),
            ..Options::default()
        };
        Store::open(dir, options).unwrap()
    }

    #[test]
    fn metric_names_lists_each_stored_metric_once_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert!(store.metric_names().unwrap().is_empty());
        let series = |metric: &str| SeriesInput {
            metric: metric.to_owned(),
            labels: vec![],
            points: vec![Point {
                t_ms: 999_000,
                value: 1.0,
            }],
        };
        for (seq, host) in ["a", "b"].into_iter().enumerate() {
            let batch = Batch {
                host: host.to_owned(),
                source: 1,
                seq: seq as u64 + 1,
                series: vec![series("host_load1"), series("host_cpu_seconds_total")],
                processes: vec![],
                malformed: 0,
            };
            store.append(&batch).unwrap();
        }
        assert_eq!(
            store.metric_names().unwrap(),
            ["host_cpu_seconds_total", "host_load1"]
        );
    }

    #[test]
    fn series_points_reads_one_series_in_a_half_open_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let points: Vec<Point> = (0..5)
            .map(|i| Point {
                t_ms: 900_000 + i * 10_000,
                value: i as f64,
            })
            .collect();
        let series = |cpu: &str| SeriesInput {
            metric: "host_cpu_seconds_total".to_owned(),
            labels: vec![Label::new("cpu", cpu)],
            points: points.clone(),
        };
        let batch = Batch {
            host: "a".to_owned(),
            source: 1,
            seq: 1,
            series: vec![series("0"), series("1")],
            processes: vec![],
            malformed: 0,
        };
        store.append(&batch).unwrap();
        let cpu1 = Matcher::Equal("cpu".into(), "1".into());
        let selected = store.select("host_cpu_seconds_total", &[cpu1]).unwrap();
        assert_eq!(selected.len(), 1);
        let (key, id) = &selected[0];
        // [910 s, 930 s): the second and third points only.
        let got = store.series_points(key, *id, 910_000, 930_000).unwrap();
        assert_eq!(got, points[1..3]);
        assert!(
            store
                .series_points(key, *id, 0, 900_000)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn series_points_many_gives_each_series_points_in_the_order_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let series = |cpu: &str, offset: f64| SeriesInput {
            metric: "m".to_owned(),
            labels: vec![Label::new("cpu", cpu)],
            points: (0..5)
                .map(|i| Point {
                    t_ms: 900_000 + i * 10_000,
                    value: offset + i as f64,
                })
                .collect(),
        };
        let batch = Batch {
            host: "a".to_owned(),
            source: 1,
            seq: 1,
            series: vec![series("0", 0.0), series("1", 100.0), series("2", 200.0)],
            processes: vec![],
            malformed: 0,
        };
        store.append(&batch).unwrap();
        store.seal_all().unwrap();
        let mut selected = store.select("m", &[]).unwrap();
        selected.reverse();
        let asked: Vec<_> = selected.iter().map(|(k, id)| (k, *id)).collect();
        let many = store.series_points_many(&asked, 910_000, 930_000).unwrap();
        assert_eq!(many.len(), 3);
        for ((key, id), got) in asked.iter().zip(&many) {
            assert_eq!(got.len(), 2);
            assert_eq!(
                *got,
                store.series_points(key, *id, 910_000, 930_000).unwrap()
            );
        }
        assert_eq!(many[0][0].value, 201.0);
        assert!(store.series_points_many(&[], 0, 1).unwrap().is_empty());
    }

    /// Lookbacks of many series over sealed windows are answered from the
    /// tails kept of earlier ones, and never from a tail older than the
    /// store: a window reopened by a late sample and sealed again, and
    /// windows deleted by retention, read what the store holds.
    #[test]
    fn lookbacks_over_sealed_windows_follow_reseals_and_retention() {
        use crate::read::tests::{HOUR as hour, append, every};
        use std::sync::atomic::{AtomicI64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(10 * hour));
        let clock = now.clone();
        let options = Options {
            maintenance_interval: None,
            retention_ms: 20 * hour,
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let mut written = every(2 * hour, 4 * hour, 60_000);
        append(&store, 1, written.clone());
        store.seal_all().unwrap();
        let (key, id) = store.select("m", &[]).unwrap().remove(0);
        let asked = [(&key, id), (&key, id)];
        let check = |written: &[Point], round: &str| {
            for (start, end) in [
                (3 * hour - 300_000, 3 * hour),
                (3 * hour - 330_000, 3 * hour + 1),
                (3 * hour - 200_000, 3 * hour - 100_000),
                (3 * hour - 120_000, 3 * hour + 300_000),
                (4 * hour - 300_000, 4 * hour + 1),
                (5 * hour, 5 * hour + 300_000),
            ] {
                let want: Vec<Point> = written
                    .iter()
                    .copied()
                    .filter(|p| p.t_ms >= start && p.t_ms < end)
                    .collect();
                for pass in ["read", "again"] {
                    let got = store.series_points_many(&asked, start, end).unwrap();
                    assert_eq!(
                        got,
                        [want.clone(), want.clone()],
                        "[{start}, {end}) {round} {pass}"
                    );
                }
            }
        };
        check(&written, "sealed");
        // A late sample reopens the window of hour 3; sealed again, the
        // chunk holds it.
        let late = Point {
            t_ms: 4 * hour - 90_000,
            value: -1.0,
        };
        append(&store, 2, vec![late]);
        written.push(late);
        written.sort_by_key(|p| p.t_ms);
        check(&written, "reopened");
        store.seal_all().unwrap();
        check(&written, "sealed again");
        // Past the retention of hour 2's window, then of every window.
        now.store(2 * hour + 20 * hour + hour, Ordering::SeqCst);
        store.maintain().unwrap();
        written.retain(|p| p.t_ms >= 3 * hour);
        check(&written, "hour 2 expired");
        now.store(30 * hour, Ordering::SeqCst);
        store.maintain().unwrap();
        check(&[], "every window expired");
    }

    /// Sealed windows are read by key for a window or two and by range
    /// for more, the open window from the head: every range gives the
    /// points a plain filter of everything written gives.
    #[test]
    fn series_points_read_sealed_and_open_windows_alike() {
        use crate::read::tests::{HOUR as hour, append, every, open};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let every = |from, to| every(from, to, 600_000);
        let append = |seq, points| append(&store, seq, points);
        // Hours 2 to 6 sealed, hour 6 to 7 left open in the head.
        append(1, every(2 * hour, 6 * hour));
        store.seal_all().unwrap();
        append(2, every(6 * hour, 7 * hour));
        let all = every(2 * hour, 7 * hour);
        let (key, id) = store.select("m", &[]).unwrap().remove(0);
        for (start, end) in [
            (3 * hour + 60_000, 3 * hour + 360_000),
            (3 * hour - 300_000, 3 * hour + 300_000),
            (2 * hour, 6 * hour),
            (hour, 8 * hour),
            (6 * hour - 300_000, 6 * hour + 300_000),
            (6 * hour, 7 * hour),
            (7 * hour, 9 * hour),
        ] {
            let want: Vec<Point> = all
                .iter()
                .copied()
                .filter(|p| p.t_ms >= start && p.t_ms < end)
                .collect();
            let got = store.series_points(&key, id, start, end).unwrap();
            assert_eq!(got, want, "[{start}, {end})");
        }
    }
}
