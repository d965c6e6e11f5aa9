//! Reading one series' raw points: its open windows from the head, then
//! its sealed chunks, each decoded only as far as the range needs.
//!
//! A read takes the head's part under the host's lock and notes which
//! windows are open (their sealed chunks, if any, are stale) and the
//! newest window a sealed chunk may have (from the series' `L` record), so
//! that a series living in the head alone costs no lookup in sled.

use crate::TsdbError;
use crate::chunk;
use crate::head::HostState;
use crate::keys;
use crate::model::{Matcher, Point, ProcessSnapshot, SeriesData, SeriesKey};
use crate::snapshot;
use crate::store::{HostRef, Inner, Store, lock, poisoned};
use std::sync::Arc;

/// Where a read of sealed windows takes their points from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The store: a lookup and a decode for each chunk.
    Store,
    /// The decoded tails the store keeps (see the `tails` module), and the
    /// store for the windows they do not hold, keeping what it decodes.
    Tails,
}

/// What a read of one series learnt from the head, for its sealed part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeadPart {
    /// Starts of the series' open windows overlapping the range.
    pub(crate) open: Vec<i64>,
    /// Start of the newest window a sealed chunk of the series may have;
    /// `None` when it has none.
    pub(crate) sealed_through: Option<i64>,
}

impl HeadPart {
    /// Nothing known: every sealed window may hold points.
    pub(crate) fn unknown() -> Self {
        HeadPart {
            open: Vec::new(),
            sealed_through: Some(i64::MAX),
        }
    }
}

impl Inner {
    /// The head's points of series `id` in `[start, end)`, appended to
    /// `out` in time order, and what its sealed part needs.
    pub(crate) fn head_points(
        &self,
        host: Option<&HostRef>,
        id: u64,
        start: i64,
        end: i64,
        out: &mut Vec<Point>,
    ) -> Result<HeadPart, TsdbError> {
        let Some(host) = host else {
            return Ok(HeadPart::unknown());
        };
        let state = lock(host)?;
        Ok(self.head_points_locked(&state, id, start, end, out))
    }

    fn head_points_locked(
        &self,
        state: &HostState,
        id: u64,
        start: i64,
        end: i64,
        out: &mut Vec<Point>,
    ) -> HeadPart {
        let Some(series) = state.series(id) else {
            return HeadPart::unknown();
        };
        let window = self.options.chunk_window_ms;
        let mut open = Vec::new();
        for w in series.windows() {
            if w.start() < end && w.start().saturating_add(window) > start {
                open.push(w.start());
                w.points_within(start, end, out);
            }
        }
        // No sealed chunk starts after the window of the newest sealed
        // sample (the `L` record), when that is known.
        let sealed_through = series.sealed_through(|t| self.options.window_of(t));
        HeadPart {
            open,
            sealed_through,
        }
    }

    /// Raw points of series `id` of `host` in `[start, end)`, oldest
    /// first, appended to `out`. With `Read::Tails`, the sealed windows'
    /// points come from the decoded tails kept in `tails` when they hold
    /// them, and are kept there when read (for short spans asked of many
    /// series).
    pub(crate) fn raw_points_into(
        &self,
        host: Option<&HostRef>,
        id: u64,
        (start, end): (i64, i64),
        read: Read,
        out: &mut Vec<Point>,
    ) -> Result<(), TsdbError> {
        if start >= end {
            return Ok(());
        }
        let from = out.len();
        let head = self.head_points(host, id, start, end, out)?;
        let sealed_from = out.len();
        self.sealed_points(id, start, end, &head, read, out)?;
        // Windows never overlap: head and sealed points are each sorted,
        // and sorting merges them without duplicates.
        if sealed_from > from && out.len() > sealed_from {
            out[from..].sort_by_key(|p| p.t_ms);
        }
        Ok(())
    }

    /// Raw points of one series in `[start, end)`, oldest first.
    pub(crate) fn raw_points(
        &self,
        host: &str,
        id: u64,
        start: i64,
        end: i64,
    ) -> Result<Vec<Point>, TsdbError> {
        let mut points = Vec::new();
        let host = self.host(host)?;
        self.raw_points_into(host.as_ref(), id, (start, end), Read::Store, &mut points)?;
        Ok(points)
    }

    /// The newest point of series `id` of `host` in `[start, end)`. The
    /// head knows each series' newest sample (`last`, kept by appends,
    /// replay and the `L` record; what [`crate::Store::latest`] reports)
    /// once its `L` record is read: when it lies in the range it is the
    /// answer, and when it lies before, nothing is, both without a lookup
    /// or a decoded sample. When it lies at or past `end` and the window
    /// of `end - 1` is open, that window holds every sample of its hour
    /// (a sealed chunk of it is stale): its newest sample before `end`,
    /// decoded from one block, is the answer or lies before the range.
    /// Otherwise (a range in the past, a series whose sealed part is not
    /// known) the range is read, into `scratch`.
    pub(crate) fn newest_point(
        &self,
        host: Option<&HostRef>,
        id: u64,
        start: i64,
        end: i64,
        scratch: &mut Vec<Point>,
    ) -> Result<Option<Point>, TsdbError> {
        if start >= end {
            return Ok(None);
        }
        if let Some(host) = host {
            let state = lock(host)?;
            if let Some(series) = state.series(id) {
                if let Some(last) = series.known_last() {
                    if last.t_ms < start {
                        return Ok(None);
                    }
                    if last.t_ms < end {
                        return Ok(Some(last));
                    }
                }
                // Points of earlier windows lie before this window's.
                let window = self.options.window_of(end - 1);
                if let Some(open) = series.windows().iter().find(|w| w.start() == window)
                    && let Some(newest) = open.newest_before(end)
                {
                    return Ok((newest.t_ms >= start).then_some(newest));
                }
            }
        }
        scratch.clear();
        self.raw_points_into(host, id, (start, end), Read::Store, scratch)?;
        Ok(scratch.last().copied())
    }

    /// The window starts of series `id`'s sealed chunks that may hold
    /// points in `[start, end)`: from the window of `start` to that of
    /// `end - 1`, at most through `head.sealed_through`; `None` when no
    /// window may.
    fn sealed_windows(&self, start: i64, end: i64, head: &HeadPart) -> Option<(i64, i64)> {
        let through = head.sealed_through?;
        if start >= end {
            return None;
        }
        // Windows past the retention are not read, deleted or not yet.
        let first = self.options.window_of(start).max(self.partitions.floor());
        let last = self.options.window_of(end - 1).min(through);
        (first <= last).then_some((first, last))
    }

    /// Appends the points of the sealed raw chunks of one series in
    /// `[start, end)` to `out`, oldest first, skipping the windows open in
    /// the head (`head.open`).
    pub(crate) fn sealed_points(
        &self,
        id: u64,
        start: i64,
        end: i64,
        head: &HeadPart,
        read: Read,
        out: &mut Vec<Point>,
    ) -> Result<(), TsdbError> {
        let Some((first, last)) = self.sealed_windows(start, end, head) else {
            return Ok(());
        };
        let decode = |chunk_start: i64, value: &[u8], out: &mut Vec<Point>| {
            if head.open.contains(&chunk_start) {
                return;
            }
            let read = chunk::decode_raw_within(value, start, end, out);
            self.decoded(read, "chunk", id, chunk_start);
        };
        // A window or two (an instant query's lookback) are read by key: a
        // range would walk on to the next key past them, often in another
        // leaf, which costs a page read of its own.
        if last.saturating_sub(first) <= self.options.chunk_window_ms {
            let starts = [first, last];
            let starts = if first == last {
                &starts[..1]
            } else {
                &starts[..]
            };
            for &chunk_start in starts {
                if read == Read::Tails && !head.open.contains(&chunk_start) {
                    self.sealed_tail(id, chunk_start, start, end, out)?;
                } else if let Some(value) = self
                    .partitions
                    .value(chunk_start, &keys::chunk(keys::TIER_RAW, id, chunk_start))?
                {
                    decode(chunk_start, &value, out);
                }
            }
            return Ok(());
        }
        let from = keys::chunk(keys::TIER_RAW, id, first);
        let to = keys::chunk(keys::TIER_RAW, id, last);
        for db in self.partitions.within(first, last)? {
            for entry in db.range(&from, &to) {
                let (k, value) = entry?;
                if let Some((_, _, chunk_start)) = keys::parse_chunk(&k) {
                    decode(chunk_start, &value, out);
                }
            }
        }
        Ok(())
    }

    /// Appends the points in `[start, end)` of series `id`'s sealed chunk
    /// of window `window` to `out`: from its decoded tail when one is kept
    /// from `start` or earlier, else read and decoded from `start` to the
    /// chunk's end, and kept (or, without a chunk, that there is none).
    fn sealed_tail(
        &self,
        id: u64,
        window: i64,
        start: i64,
        end: i64,
        out: &mut Vec<Point>,
    ) -> Result<(), TsdbError> {
        let Err(miss) = self.tails.read(id, window, start, end, out) else {
            return Ok(());
        };
        let key = keys::chunk(keys::TIER_RAW, id, window);
        let Some(value) = self.partitions.value(window, &key)? else {
            self.tails.insert(id, window, miss, i64::MIN, Vec::new());
            return Ok(());
        };
        let mut tail = Vec::new();
        let read = chunk::decode_raw_within(&value, start, i64::MAX, &mut tail);
        if self.decoded(read, "chunk", id, window).is_some() {
            let to = tail.partition_point(|p| p.t_ms < end);
            out.extend_from_slice(&tail[..to]);
            self.tails.insert(id, window, miss, start, tail);
        }
        Ok(())
    }

    /// Whether series `id` of `host` has a point in `[start, end)`,
    /// decoding as little as it can: a non-empty open window or a sealed
    /// chunk whose window lies inside the range answers at once; only the
    /// chunks of the range's two edge windows are decoded, and only when
    /// nothing inside answered.
    pub(crate) fn has_points(
        &self,
        host: Option<&HostRef>,
        id: u64,
        start: i64,
        end: i64,
    ) -> Result<bool, TsdbError> {
        if start >= end {
            return Ok(false);
        }
        let window = self.options.chunk_window_ms;
        let inside = |w: i64| w >= start && w.saturating_add(window) <= end;
        let head = match host {
            None => HeadPart::unknown(),
            Some(host) => {
                let state = lock(host)?;
                if let Some(series) = state.series(id) {
                    let whole = series
                        .windows()
                        .iter()
                        .any(|w| inside(w.start()) && w.len() > 0);
                    if whole {
                        return Ok(true);
                    }
                }
                let mut points = Vec::new();
                let head = self.head_points_locked(&state, id, start, end, &mut points);
                if !points.is_empty() {
                    return Ok(true);
                }
                head
            }
        };
        let Some((first, last)) = self.sealed_windows(start, end, &head) else {
            return Ok(false);
        };
        // Windows inside the range: any chunk key of one not open will do.
        let (inner_first, inner_last) = (
            if inside(first) {
                first
            } else {
                first.saturating_add(window)
            },
            if inside(last) {
                last
            } else {
                last.saturating_sub(window)
            },
        );
        if inner_first <= inner_last {
            let from = keys::chunk(keys::TIER_RAW, id, inner_first);
            let to = keys::chunk(keys::TIER_RAW, id, inner_last);
            for db in self.partitions.within(inner_first, inner_last)? {
                for entry in db.range(&from, &to) {
                    let (k, _) = entry?;
                    if let Some((_, _, w)) = keys::parse_chunk(&k)
                        && !head.open.contains(&w)
                    {
                        return Ok(true);
                    }
                }
            }
        }
        // The edge windows, partly inside the range: decoded.
        let edges = [first, last];
        let edges = if first == last {
            &edges[..1]
        } else {
            &edges[..]
        };
        for &edge in edges {
            if inside(edge) || head.open.contains(&edge) {
                continue;
            }
            let mut points = Vec::new();
            let edge_head = HeadPart {
                open: head.open.clone(),
                sealed_through: Some(edge),
            };
            let (s, e) = (start.max(edge), end.min(edge.saturating_add(window)));
            self.sealed_points(id, s, e, &edge_head, Read::Store, &mut points)?;
            if !points.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Store {
    /// Series of `metric` matching every matcher, sorted by key.
    pub fn select(
        &self,
        metric: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesKey, u64)>, TsdbError> {
        Ok(self
            .inner()?
            .select(metric, matchers)?
            .into_iter()
            .map(|(key, id)| (Arc::unwrap_or_clone(key), id))
            .collect())
    }

    /// [`Store::select`] sharing the index's keys rather than copying
    /// them: for engines selecting many series per query.
    pub fn select_shared(
        &self,
        metric: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(Arc<SeriesKey>, u64)>, TsdbError> {
        self.inner()?.select(metric, matchers)
    }

    /// Points in `[start_ms, end_ms)` of every series of `metric` matching
    /// every matcher; series without points in the range are left out.
    pub fn range(
        &self,
        metric: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, TsdbError> {
        let step = crate::query::Step::Raw;
        self.range_within(metric, matchers, start_ms, end_ms, step, usize::MAX)
    }

    /// The newest point of every series of `host`, sorted by key.
    pub fn latest(&self, host: &str) -> Result<Vec<(SeriesKey, Point)>, TsdbError> {
        let Some(state) = self.inner()?.host(host)? else {
            return Ok(Vec::new());
        };
        let state = lock(&state)?;
        let mut out = Vec::with_capacity(state.series_count());
        for series in state.all_series() {
            if let Some(last) = series.last() {
                out.push((series.key().to_series_key(), last));
            }
        }
        // Keys are distinct: an unstable sort gives the same order, faster.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The newest process snapshot of `host` at or before `at_ms`.
    pub fn process_snapshot_at(
        &self,
        host: &str,
        at_ms: i64,
    ) -> Result<Option<ProcessSnapshot>, TsdbError> {
        self.inner()?.snapshot_at(host, at_ms)
    }
}

impl Inner {
    /// The newest sample of the newest raw chunk of a series that decodes.
    pub(crate) fn newest_sealed(&self, id: u64) -> Result<Option<Point>, TsdbError> {
        let prefix = keys::chunk(keys::TIER_RAW, id, 0);
        let floor = self.partitions.floor();
        for db in self.partitions.within(floor, i64::MAX)?.into_iter().rev() {
            for entry in db.scan_prefix(&prefix[..10]).rev() {
                let (key, value) = entry?;
                let start = keys::parse_chunk(&key).map_or(0, |(_, _, s)| s);
                if start < floor {
                    break;
                }
                if let Some((_, points)) =
                    self.decoded(chunk::decode_raw(&value), "chunk", id, start)
                {
                    return Ok(points.last().copied());
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn select(
        &self,
        metric: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(Arc<SeriesKey>, u64)>, TsdbError> {
        let index = self.index.read().map_err(|_| poisoned())?;
        Ok(index.select(metric, matchers))
    }

    fn snapshot_at(&self, host: &str, at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
        let mut best: Option<ProcessSnapshot> = None;
        let mut open = Vec::new();
        if let Some(state) = self.host(host)? {
            let state = lock(&state)?;
            for w in state.snapshot_windows() {
                open.push(w.start());
                if w.start() > at_ms {
                    continue;
                }
                if let Some(s) = w.block().at(at_ms)?
                    && best.as_ref().is_none_or(|b| s.t_ms > b.t_ms)
                {
                    best = Some(s);
                }
            }
        }
        let floor = self.partitions.floor();
        let newest = self.options.window_of(at_ms);
        let from = keys::snapshots(host, floor);
        let to = keys::snapshots(host, newest);
        if floor > newest {
            return Ok(best);
        }
        // Newest partition first; each block starts its window, so the
        // first block with a snapshot at or before `at_ms` answers unless
        // an open window holds a newer one.
        'partitions: for db in self.partitions.within(floor, newest)?.into_iter().rev() {
            for entry in db.range(&from, &to).rev() {
                let (key, value) = entry?;
                let Some((_, start)) = keys::parse_snapshots(&key) else {
                    continue;
                };
                if open.contains(&start) {
                    continue;
                }
                if best.as_ref().is_some_and(|b| b.t_ms >= start) {
                    break 'partitions;
                }
                let Some(found) = self.decoded(
                    snapshot::decode_at(&value, at_ms),
                    "snapshot block",
                    0,
                    start,
                ) else {
                    continue;
                };
                if let Some(s) = found {
                    if best.as_ref().is_none_or(|b| s.t_ms > b.t_ms) {
                        best = Some(s);
                    }
                    break 'partitions;
                }
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also the store the catalog's read tests use: one series `m` of
    //! host `a`, appended batch by batch, a clock at hour 10.

    use crate::{Batch, Options, Point, SeriesInput, Store};

    pub(crate) const HOUR: i64 = 3_600_000;

    pub(crate) fn open(dir: &std::path::Path) -> Store {
        let options = Options {
            maintenance_interval: None,
            clock: std::sync::Arc::new(move || 10 * HOUR),
            ..Options::default()
        };
        Store::open(dir, options).unwrap()
    }

    pub(crate) fn append(store: &Store, seq: u64, points: Vec<Point>) {
        let batch = Batch {
            host: "a".to_owned(),
            source: 1,
            seq,
            series: vec![SeriesInput {
                metric: "m".to_owned(),
                labels: vec![],
                points,
            }],
            processes: vec![],
            malformed: 0,
        };
        assert_eq!(store.append(&batch).unwrap().rejected.total(), 0);
    }

    /// A point every `step` in `[from, to)`, its value its time.
    pub(crate) fn every(from: i64, to: i64, step: i64) -> Vec<Point> {
        (from..to)
            .step_by(step as usize)
            .map(|t| Point {
                t_ms: t,
                value: t as f64,
            })
            .collect()
    }

    /// Ranges with ends on, between and around window edges, empty and
    /// reversed ones included.
    fn ranges() -> Vec<(i64, i64)> {
        let ends: Vec<i64> = (HOUR..8 * HOUR + 1).step_by(420_000).collect();
        let mut out = Vec::new();
        for &s in &ends {
            for &e in &ends {
                out.push((s, e));
            }
        }
        out.extend([
            (2 * HOUR, 2 * HOUR),
            (5 * HOUR, 4 * HOUR),
            (i64::MIN, i64::MAX),
        ]);
        out
    }

    /// Each range's points are the written ones inside it, and the
    /// existence check agrees with them: over sealed windows, a window
    /// sealed with half its hour, a gap, and the open window in the head,
    /// before and after a restart (which reads the `L` records back).
    #[test]
    fn points_and_existence_agree_with_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = every(2 * HOUR, 4 * HOUR, 60_000);
        written.extend(every(5 * HOUR, 5 * HOUR + 1_800_000, 60_000));
        let head = every(6 * HOUR + 30_000, 7 * HOUR, 60_000);
        {
            let store = open(dir.path());
            append(&store, 1, written.clone());
            store.seal_all().unwrap();
            append(&store, 2, head.clone());
        }
        written.extend(head);
        for round in ["before a restart", "after a restart"] {
            let store = open(dir.path());
            let (key, id) = store.select("m", &[]).unwrap().remove(0);
            for (start, end) in ranges() {
                let want: Vec<Point> = written
                    .iter()
                    .copied()
                    .filter(|p| p.t_ms >= start && p.t_ms < end)
                    .collect();
                let got = store.series_points(&key, id, start, end).unwrap();
                assert_eq!(got, want, "[{start}, {end}) {round}");
                let exists = store.series_has_points(&key, id, start, end).unwrap();
                assert_eq!(exists, !want.is_empty(), "[{start}, {end}) {round}");
                let newest = store.series_newest_many(&[(&key, id)], start, end);
                assert_eq!(
                    newest.unwrap(),
                    [want.last().copied()],
                    "[{start}, {end}) {round}"
                );
            }
        }
    }

    /// Lookbacks over open windows of many head blocks (an hour at 10 s,
    /// and the next hour begun): every 5-minute span, stepped across
    /// block and window edges, reads what was written in it, alone and
    /// with other series, and its existence check agrees.
    ///
    /// The newest point of each span is the last of them, from memory
    /// or, after a restart (no `L` record: nothing was sealed), read.
    #[test]
    fn lookbacks_over_open_windows_read_only_their_span() {
        let dir = tempfile::tempdir().unwrap();
        let points = every(8 * HOUR, 9 * HOUR + 600_000, 10_000);
        append(&open(dir.path()), 1, points.clone());
        let store = open(dir.path());
        let other = Batch {
            host: "b".to_owned(),
            source: 1,
            seq: 1,
            series: vec![SeriesInput {
                metric: "m".to_owned(),
                labels: vec![],
                points: points.clone(),
            }],
            processes: vec![],
            malformed: 0,
        };
        store.append(&other).unwrap();
        let selected = store.select("m", &[]).unwrap();
        let asked: Vec<_> = selected.iter().map(|(key, id)| (key, *id)).collect();
        // Ends stepping across blocks and windows, and on and around the
        // newest sample's time, so that the lookback ends just before it,
        // takes it, or starts on it or just past it.
        let last = points[points.len() - 1].t_ms;
        let ends = (8 * HOUR - 300_000..9 * HOUR + 900_000)
            .step_by(70_000)
            .chain([last, last + 1, last + 300_000, last + 300_001]);
        for end in ends {
            let start = end - 300_000;
            let want: Vec<Point> = points
                .iter()
                .copied()
                .filter(|p| p.t_ms >= start && p.t_ms < end)
                .collect();
            let newest = store.series_newest_many(&asked, start, end).unwrap();
            assert_eq!(newest, [want.last().copied(); 2], "[{start}, {end})");
        }
        let (key, id) = selected.into_iter().next().unwrap();
        for end in (8 * HOUR - 300_000..9 * HOUR + 900_000).step_by(70_000) {
            let start = end - 300_000;
            let want: Vec<Point> = points
                .iter()
                .copied()
                .filter(|p| p.t_ms >= start && p.t_ms < end)
                .collect();
            assert_eq!(
                store.series_points(&key, id, start, end).unwrap(),
                want,
                "[{start}, {end})"
            );
            let many = store
                .series_points_many(&[(&key, id), (&key, id)], start, end)
                .unwrap();
            assert_eq!(many, vec![want.clone(), want.clone()], "[{start}, {end})");
            let exists = store.series_has_points(&key, id, start, end).unwrap();
            assert_eq!(exists, !want.is_empty(), "[{start}, {end})");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// The newest point of a span is the last point a read of the
        /// span gives, whichever way it is found (the newest sample in
        /// memory, an open window's newest before the span's end, or the
        /// read itself): over sealed windows, windows reopened on their
        /// sealed chunk, late samples and open windows, before and after a
        /// restart.
        #[test]
        fn the_newest_point_of_a_span_is_the_last_read_in_it(
            times in proptest::collection::btree_set(2 * HOUR / 1000..8 * HOUR / 1000, 1..300),
            groups in proptest::collection::vec(0u8..3, 300),
            spans in proptest::collection::vec((HOUR / 1000..9 * HOUR / 1000, 0i64..3 * HOUR / 1000), 40),
            edges in proptest::collection::vec(
                (proptest::arbitrary::any::<proptest::sample::Index>(), proptest::arbitrary::any::<proptest::sample::Index>(), -1i64..=1, -1i64..=1),
                40,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            // Three batches of the times, in order of group: the first
            // sealed, the later ones reopening windows and landing before
            // samples already there (late samples).
            let mut batches = vec![Vec::new(); 3];
            for (t, g) in times.iter().zip(&groups) {
                batches[usize::from(*g)].push(Point { t_ms: t * 1000, value: *t as f64 });
            }
            batches[2].reverse();
            // Spans anywhere, and spans starting and ending on, just before
            // and just after written times.
            let written: Vec<i64> = times.iter().map(|t| t * 1000).collect();
            let on = |i: &proptest::sample::Index, d: i64| written[i.index(written.len())] + d;
            let spans: Vec<(i64, i64)> = spans
                .iter()
                .map(|&(end, len)| ((end - len) * 1000, end * 1000))
                .chain(edges.iter().map(|(a, b, da, db)| (on(a, *da), on(b, *db))))
                .collect();
            // Samples more than an hour older than the newest are refused,
            // and need not be stored: the reads are the model.
            let open = |dir: &std::path::Path| {
                let options = Options {
                    maintenance_interval: None,
                    clock: std::sync::Arc::new(move || 10 * HOUR),
                    out_of_order_tolerance_ms: HOUR,
                    ..Options::default()
                };
                Store::open(dir, options).unwrap()
            };
            {
                let store = open(dir.path());
                let mut seq = 0;
                let mut append = |points: Vec<Point>| {
                    seq += 1;
                    let batch = Batch {
                        host: "a".to_owned(),
                        source: 1,
                        seq,
                        series: vec![SeriesInput { metric: "m".to_owned(), labels: vec![], points }],
                        processes: vec![],
                        malformed: 0,
                    };
                    store.append(&batch).unwrap();
                };
                for (i, batch) in batches.iter().enumerate() {
                    if i == 2 {
                        // One by one, newest first: each a late sample.
                        for p in batch {
                            append(vec![*p]);
                        }
                    } else if !batch.is_empty() {
                        append(batch.clone());
                    }
                    if i == 0 {
                        store.seal_all().unwrap();
                    }
                }
                check_newest(&store, &spans)?;
            }
            check_newest(&open(dir.path()), &spans)?;
        }
    }

    fn check_newest(
        store: &Store,
        spans: &[(i64, i64)],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let (key, id) = store.select("m", &[]).unwrap().remove(0);
        for &(start, end) in spans {
            let read = store.series_points(&key, id, start, end).unwrap();
            let newest = store.series_newest_many(&[(&key, id)], start, end).unwrap();
            proptest::prop_assert_eq!(newest, vec![read.last().copied()], "[{}, {})", start, end);
        }
        Ok(())
    }

    /// A series that never had a window sealed is read from the head
    /// alone, and one whose newest sealed window is old reads nothing
    /// sealed past it: both give every point written.
    #[test]
    fn series_of_the_head_alone_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let points = every(9 * HOUR, 9 * HOUR + 600_000, 10_000);
        append(&store, 1, points.clone());
        let (key, id) = store.select("m", &[]).unwrap().remove(0);
        let got = store.series_points(&key, id, 0, 10 * HOUR).unwrap();
        assert_eq!(got, points);
        assert!(
            store
                .series_has_points(&key, id, 9 * HOUR, 9 * HOUR + 1)
                .unwrap()
        );
        assert!(!store.series_has_points(&key, id, 0, 9 * HOUR).unwrap());
        let many = store
            .series_points_many(&[(&key, id)], 9 * HOUR + 300_000, 10 * HOUR)
            .unwrap();
        assert_eq!(many, vec![points[30..].to_vec()]);
    }
}
