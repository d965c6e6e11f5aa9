//! The head: per host, the samples and snapshots not yet sealed into
//! chunks, and the batch sequences per source.
//!
//! A series' open windows hold in-order samples Gorilla-encoded and the
//! few out-of-order ones in a sorted side list; both merge when the window
//! seals. Each open window remembers the lowest commit group whose samples
//! it holds: the WAL may drop groups below the lowest of all of them.

use crate::TsdbError;
use crate::codec::HeadChunk;
use crate::index::Key;
use crate::model::{HOST_LABEL, Label, Point, ProcessSnapshot, series_hash_of};
use crate::shape::BatchShape;
use crate::snapshot::OpenBlock;

/// A map keyed by series ids (assigned by the store) or by hashes: such
/// keys need mixing, not SipHash's protection against chosen keys, and
/// replay and appends look one up per sample.
pub(crate) type IdMap<V> = rustc_hash::FxHashMap<u64, V>;

/// What inserting samples did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inserts {
    pub(crate) stored: u64,
    /// At a time the series already holds: the first value stays.
    pub(crate) duplicate: u64,
    /// Over the limit of samples a series may hold in one window.
    pub(crate) too_dense: u64,
}

/// What inserting one process snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    Stored,
    /// The host already holds a snapshot at that time; the first one stays.
    Duplicate,
}

/// A window's samples older than its chunk's newest: seldom any, so a
/// window without them holds a pointer, not an empty vector.
type Late = Option<Box<Vec<Point>>>;

/// One window of a series still in memory.
#[derive(Debug)]
pub(crate) struct OpenWindow {
    start: i64,
    /// Samples in time order; `None` until the first sample.
    chunk: Option<HeadChunk>,
    /// Samples older than the chunk's newest, sorted, not in `chunk`.
    late: Late,
    /// Lowest and highest commit group whose samples this window holds.
    min_lsn: u64,
    max_lsn: u64,
}

impl OpenWindow {
    /// A window holding `base` (the sealed chunk it reopens, sorted, from
    /// groups up to `base_lsn`), about to receive a sample of group `lsn`.
    fn new(start: i64, base: Vec<Point>, base_lsn: u64, lsn: u64) -> Self {
        let mut points = base.into_iter();
        let chunk = points.next().map(|first| {
            let mut chunk = HeadChunk::new(first);
            for p in points {
                chunk.push(p);
            }
            chunk
        });
        OpenWindow {
            start,
            chunk,
            late: Late::default(),
            min_lsn: lsn,
            max_lsn: base_lsn.max(lsn),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.chunk.as_ref().map_or(0, HeadChunk::len) + self.late().len()
    }

    fn late(&self) -> &[Point] {
        self.late.as_deref().map_or(&[], Vec::as_slice)
    }

    pub(crate) fn start(&self) -> i64 {
        self.start
    }

    /// Highest commit group whose samples this window holds.
    pub(crate) fn max_lsn(&self) -> u64 {
        self.max_lsn
    }

    /// Inserts `points` (sorted by time; of equal times the first counts)
    /// of commit group `lsn`, keeping at most `max_len` samples in the
    /// window. Returns the newest sample stored, if any.
    fn insert_run(
        &mut self,
        points: &[Point],
        lsn: u64,
        max_len: usize,
        counts: &mut Inserts,
    ) -> Option<Point> {
        self.max_lsn = self.max_lsn.max(lsn);
        let mut newest = None;
        // Samples at or before the chunk's newest go to `late`, checked
        // against the chunk's times decoded once for the whole run.
        let split = self
            .chunk
            .as_ref()
            .map_or(0, |c| points.partition_point(|p| p.t_ms <= c.last_t()));
        let (late, fresh) = points.split_at(split);
        if !late.is_empty() {
            let chunk_times: Vec<i64> = self
                .chunk
                .as_ref()
                .map(|c| c.points().iter().map(|p| p.t_ms).collect())
                .unwrap_or_default();
            let mut added: Vec<Point> = Vec::new();
            for p in late {
                let duplicate = chunk_times.binary_search(&p.t_ms).is_ok()
                    || self
                        .late()
                        .binary_search_by_key(&p.t_ms, |q| q.t_ms)
                        .is_ok()
                    || added.last().is_some_and(|q| q.t_ms == p.t_ms);
                if duplicate {
                    counts.duplicate += 1;
                } else if self.len() + added.len() >= max_len {
                    counts.too_dense += 1;
                } else {
                    added.push(*p);
                }
            }
            counts.stored += added.len() as u64;
            newest = added.last().copied();
            if !added.is_empty() {
                let late = self.late.get_or_insert_with(Box::default);
                late.extend(added);
                late.sort_by_key(|p| p.t_ms);
            }
        }
        for p in fresh {
            let full = self.len() >= max_len;
            match &mut self.chunk {
                Some(chunk) if p.t_ms == chunk.last_t() => {
                    counts.duplicate += 1;
                    continue;
                }
                _ if full => {
                    counts.too_dense += 1;
                    continue;
                }
                Some(chunk) => chunk.push(*p),
                None => self.chunk = Some(HeadChunk::new(*p)),
            }
            counts.stored += 1;
            newest = Some(*p);
        }
        newest
    }

    /// Every sample, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        let mut points = self
            .chunk
            .as_ref()
            .map(HeadChunk::points)
            .unwrap_or_default();
        if !self.late().is_empty() {
            points.extend_from_slice(self.late());
            points.sort_by_key(|p| p.t_ms);
        }
        points
    }

    /// Appends the samples with times in `[start, end)` to `out`, oldest
    /// first, decoding only the part of the window that may hold them.
    pub(crate) fn points_within(&self, start: i64, end: i64, out: &mut Vec<Point>) {
        let from = out.len();
        if let Some(chunk) = &self.chunk {
            chunk.points_within(start, end, out);
        }
        let late = self.late();
        let first = late.partition_point(|p| p.t_ms < start);
        let past = late.partition_point(|p| p.t_ms < end);
        if first < past {
            out.extend_from_slice(&late[first..past]);
            out[from..].sort_by_key(|p| p.t_ms);
        }
    }

    /// The newest sample before `end`, decoding at most one block (see
    /// [`HeadChunk::newest_before`]).
    pub(crate) fn newest_before(&self, end: i64) -> Option<Point> {
        let chunk = self.chunk.as_ref().and_then(|c| c.newest_before(end));
        let late = self.late();
        let late = late[..late.partition_point(|p| p.t_ms < end)].last();
        chunk
            .into_iter()
            .chain(late.copied())
            .max_by_key(|p| p.t_ms)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunk.as_ref().map_or(0, HeadChunk::heap_bytes)
            + self.late.as_ref().map_or(0, |late| {
                std::mem::size_of::<Vec<Point>>() + late.capacity() * std::mem::size_of::<Point>()
            })
    }
}

/// A series of the host: identity, newest sample, open windows.
#[derive(Debug)]
pub(crate) struct SeriesHead {
    key: Key,
    /// The newest sample: from appends, replay, or the series' `L` record
    /// (the newest sealed sample, loaded at open).
    last: Option<Point>,
    /// Time of the sample in the series' `L` record, `i64::MIN` if none.
    /// No sealed chunk starts after this sample's window.
    persisted_last_t: i64,
    /// Whether `persisted_last_t` is known to bound the sealed chunks
    /// (false after a restart until the `L` record is read, and for good
    /// if it is missing or damaged: then every window is looked up).
    sealed_known: bool,
    /// Open windows, sorted by start.
    windows: Vec<OpenWindow>,
    /// Wall-clock time of the last sample inserted.
    touched_ms: i64,
}

impl SeriesHead {
    pub(crate) fn new(key: Key) -> Self {
        SeriesHead {
            key,
            last: None,
            persisted_last_t: i64::MIN,
            sealed_known: true,
            windows: Vec::new(),
            touched_ms: i64::MIN,
        }
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    /// The newest sample known.
    pub(crate) fn last(&self) -> Option<Point> {
        self.last
    }

    /// Newest sample time known, `i64::MIN` if none.
    pub(crate) fn max_t(&self) -> i64 {
        self.last.map_or(i64::MIN, |p| p.t_ms)
    }

    /// Wall-clock time of the last sample inserted.
    pub(crate) fn touched_ms(&self) -> i64 {
        self.touched_ms
    }

    /// Open windows, sorted by start.
    pub(crate) fn windows(&self) -> &[OpenWindow] {
        &self.windows
    }

    /// Samples in the open windows.
    pub(crate) fn samples(&self) -> usize {
        self.windows.iter().map(OpenWindow::len).sum()
    }

    pub(crate) fn has_window(&self, start: i64) -> bool {
        self.windows.iter().any(|w| w.start == start)
    }

    fn window_mut(&mut self, start: i64) -> Option<&mut OpenWindow> {
        self.windows.iter_mut().find(|w| w.start == start)
    }

    /// The newest sample, when it is known to be newer than every sealed
    /// one (so a sealed chunk cannot hold a newer sample).
    pub(crate) fn known_last(&self) -> Option<Point> {
        self.last.filter(|_| self.sealed_known)
    }

    /// The window (by `window_of` a time) after which no sealed chunk
    /// starts: `Some(i64::MAX)` when that is not known, `None` when
    /// nothing was sealed.
    pub(crate) fn sealed_through(&self, window_of: impl Fn(i64) -> i64) -> Option<i64> {
        if !self.sealed_known {
            Some(i64::MAX)
        } else if self.persisted_last_t == i64::MIN {
            None
        } else {
            Some(window_of(self.persisted_last_t))
        }
    }

    /// Whether window `start` may have a sealed chunk (by `window_of` a time).
    pub(crate) fn may_be_sealed(&self, start: i64, window_of: impl Fn(i64) -> i64) -> bool {
        self.sealed_through(window_of).is_some_and(|w| start <= w)
    }

    /// Whether the series' newest sealed sample is unknown (its `L` record
    /// missing or damaged, or not read yet).
    pub(crate) fn sealed_unknown(&self) -> bool {
        !self.sealed_known
    }

    /// The series' `L` record, read at open.
    fn restore_last(&mut self, p: Point) {
        self.last = Some(p);
        self.persisted_last_t = p.t_ms;
        self.sealed_known = true;
    }

    /// The newest sealed sample, found by looking at the sealed chunks
    /// (`None`: there are none): the sealed chunks are known from now on.
    pub(crate) fn learn_sealed(&mut self, newest: Option<Point>) {
        if let Some(p) = newest {
            self.persisted_last_t = self.persisted_last_t.max(p.t_ms);
        }
        self.sealed_known = true;
    }

    /// Notes `last` sealed; true when it is newer than the sealed sample
    /// recorded, so its `L` record is to be written.
    pub(crate) fn record_sealed(&mut self, last: Point) -> bool {
        if last.t_ms > self.persisted_last_t {
            self.persisted_last_t = last.t_ms;
            true
        } else {
            false
        }
    }

    /// Closes the windows `sealed` says were sealed; true if any was.
    fn drop_windows(&mut self, mut sealed: impl FnMut(&OpenWindow) -> bool) -> bool {
        let open = self.windows.len();
        self.windows.retain(|w| !sealed(w));
        self.windows.shrink_to_fit();
        self.windows.len() < open
    }

    /// Forgets the newest sample if the series has no open window and it
    /// is older than `before` (retention); true if it did.
    pub(crate) fn forget_last_before(&mut self, before: i64) -> bool {
        if self.windows.is_empty() && self.last.is_some_and(|p| p.t_ms < before) {
            self.last = None;
            self.persisted_last_t = i64::MIN;
            true
        } else {
            false
        }
    }

    /// Opens window `start` on `base` (sealed points) for a sample of group `lsn`.
    fn open_window(&mut self, start: i64, base: Vec<Point>, base_lsn: u64, lsn: u64) {
        let at = self.windows.partition_point(|w| w.start < start);
        // A series seldom has more than two windows open, and an amortized
        // insert into a one-window vector makes room for four.
        self.windows.reserve_exact(1);
        self.windows
            .insert(at, OpenWindow::new(start, base, base_lsn, lsn));
    }

    /// Inserts `points` (sorted by time, all in window `start`, which must
    /// be open) of commit group `lsn`, at most `max_len` in the window.
    fn insert_run(
        &mut self,
        start: i64,
        points: &[Point],
        lsn: u64,
        now_ms: i64,
        max_len: usize,
        counts: &mut Inserts,
    ) {
        let Some(window) = self.window_mut(start) else {
            counts.duplicate += points.len() as u64;
            return;
        };
        if let Some(newest) = window.insert_run(points, lsn, max_len, counts) {
            self.touched_ms = now_ms;
            if self.last.is_none_or(|last| newest.t_ms > last.t_ms) {
                self.last = Some(newest);
            }
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.windows
            .iter()
            .map(OpenWindow::heap_bytes)
            .sum::<usize>()
            + self.windows.capacity() * std::mem::size_of::<OpenWindow>()
    }
}

/// One window of a host's process snapshots still in memory, encoded.
#[derive(Debug)]
pub(crate) struct SnapshotWindow {
    start: i64,
    /// Sorted by time, distinct times.
    block: OpenBlock,
    min_lsn: u64,
    max_lsn: u64,
}

impl SnapshotWindow {
    pub(crate) fn start(&self) -> i64 {
        self.start
    }

    /// The window's snapshots, sorted by time, distinct times.
    pub(crate) fn block(&self) -> &OpenBlock {
        &self.block
    }

    /// Highest commit group whose snapshots this window holds.
    pub(crate) fn max_lsn(&self) -> u64 {
        self.max_lsn
    }
}

/// Batch sequences of one (host, source).
#[derive(Debug, Default)]
pub(crate) struct SourceSeq {
    /// Highest sequence whose group is known durable.
    durable: u64,
    /// (group, sequence) of appends whose group may not be durable yet.
    pending: Vec<(u64, u64)>,
    /// The value last written under the `Q` key.
    persisted: u64,
}

impl SourceSeq {
    /// The sequence persisted under the `Q` key, read at open.
    pub(crate) fn restore(&mut self, seq: u64) {
        self.durable = seq;
        self.persisted = seq;
    }

    /// Highest sequence whose group is known durable.
    pub(crate) fn durable(&self) -> u64 {
        self.durable
    }

    /// A batch replayed from the WAL: durable.
    pub(crate) fn replayed(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
    }

    /// A batch appended in group `group`, not durable yet.
    pub(crate) fn push_pending(&mut self, group: u64, seq: u64) {
        self.pending.push((group, seq));
    }

    /// The durable sequence if it is past the one persisted, which it
    /// becomes (the caller writes it under the `Q` key).
    pub(crate) fn take_unpersisted(&mut self) -> Option<u64> {
        (self.durable > self.persisted).then(|| {
            self.persisted = self.durable;
            self.durable
        })
    }

    /// Moves pending sequences of groups up to `durable_group` into `durable`.
    pub(crate) fn promote(&mut self, durable_group: u64) {
        let durable = &mut self.durable;
        self.pending.retain(|&(group, seq)| {
            if group <= durable_group {
                *durable = (*durable).max(seq);
                false
            } else {
                true
            }
        });
    }

    /// Highest sequence stored or being stored.
    pub(crate) fn highest(&self) -> u64 {
        self.pending
            .iter()
            .map(|&(_, seq)| seq)
            .fold(self.durable, u64::max)
    }

    /// The newest group an acknowledgement of a replay must wait for.
    pub(crate) fn newest_group(&self) -> Option<u64> {
        self.pending.iter().map(|&(group, _)| group).max()
    }
}

/// What a maintenance pass needs to know of a host's open series windows
/// without visiting its series: a window is sealed (unless forced) only
/// once its series' newest sample is past its end, or the clock is and
/// the series has been idle long enough; and the lowest commit group held
/// bounds where WAL replay starts.
///
/// Over the series with an open window; kept by the [`HostState`]
/// methods that open windows, insert samples and restore a series' newest
/// sample. Closing a window forgets them until the next walk over the
/// series ([`HostState::series_bounds`]); a walk also makes them exact
/// again ([`HostState::refresh_series_bounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesBounds {
    /// At or before the start of every open series window; `i64::MAX`
    /// when there is none.
    pub(crate) earliest_start: i64,
    /// At or after the newest sample time ([`SeriesHead::max_t`]) of
    /// every series with an open window.
    pub(crate) newest: i64,
    /// At or before the last insertion ([`SeriesHead::touched_ms`]) into
    /// every series with an open window.
    pub(crate) earliest_touched: i64,
    /// The lowest commit group an open series window holds, exactly.
    pub(crate) min_lsn: Option<u64>,
}

impl SeriesBounds {
    /// The bounds of a host with no open series window.
    const NONE: SeriesBounds = SeriesBounds {
        earliest_start: i64::MAX,
        newest: i64::MIN,
        earliest_touched: i64::MAX,
        min_lsn: None,
    };

    /// Whether the host has an open series window.
    pub(crate) fn any_open(&self) -> bool {
        self.min_lsn.is_some()
    }

    /// Takes in `series`, which has window `start` holding group `lsn` open.
    fn open(&mut self, series: &SeriesHead, start: i64, lsn: u64) {
        self.earliest_start = self.earliest_start.min(start);
        self.min_lsn = Some(self.min_lsn.map_or(lsn, |m| m.min(lsn)));
        self.inserted(series);
    }

    /// Takes in `series`' newest sample and last insertion.
    fn inserted(&mut self, series: &SeriesHead) {
        self.newest = self.newest.max(series.max_t());
        self.earliest_touched = self.earliest_touched.min(series.touched_ms());
    }

    /// The exact bounds of `series`.
    fn of<'a>(series: impl Iterator<Item = &'a SeriesHead>) -> Self {
        let mut bounds = SeriesBounds::NONE;
        for s in series {
            for w in &s.windows {
                bounds.open(s, w.start, w.min_lsn);
            }
        }
        bounds
    }
}

/// Ids of the series whose (metric, labels) hash to one value.
#[derive(Debug)]
enum Ids {
    One(u64),
    Many(Vec<u64>),
}

/// Everything in memory about one host. Appends of one host are serialized
/// by its lock, so a host's WAL frames are in the order its head applied them.
#[derive(Debug)]
pub(crate) struct HostState {
    series: IdMap<SeriesHead>,
    by_hash: IdMap<Ids>,
    sources: IdMap<SourceSeq>,
    snapshot_windows: Vec<SnapshotWindow>,
    /// Bounds over the series' open windows; `None` once a window was
    /// closed, until the next walk over the series (see [`SeriesBounds`]).
    bounds: Option<SeriesBounds>,
    /// Newest snapshot time known.
    snapshot_max_t: i64,
    /// Wall-clock time of the last snapshot inserted.
    snapshot_touched_ms: i64,
    /// The previous batch's series and their ids, for the next batch's lookups.
    last_batch: BatchShape,
}

/// Whether `key` is `metric` with exactly `labels` plus its host label.
fn same_series(key: &Key, metric: &str, labels: &[Label]) -> bool {
    key.metric() == metric
        && key.label_count() == labels.len() + 1
        && labels
            .iter()
            .all(|l| l.name != HOST_LABEL && key.label(&l.name) == Some(l.value.as_str()))
}

impl Default for HostState {
    fn default() -> Self {
        HostState {
            series: IdMap::default(),
            by_hash: IdMap::default(),
            sources: IdMap::default(),
            snapshot_windows: Vec::new(),
            bounds: Some(SeriesBounds::NONE),
            snapshot_max_t: i64::MIN,
            snapshot_touched_ms: i64::MIN,
            last_batch: BatchShape::default(),
        }
    }
}

impl HostState {
    pub(crate) fn series(&self, id: u64) -> Option<&SeriesHead> {
        self.series.get(&id)
    }

    pub(crate) fn series_mut(&mut self, id: u64) -> Option<&mut SeriesHead> {
        self.series.get_mut(&id)
    }

    pub(crate) fn has_series(&self, id: u64) -> bool {
        self.series.contains_key(&id)
    }

    pub(crate) fn series_count(&self) -> usize {
        self.series.len()
    }

    pub(crate) fn series_ids(&self) -> Vec<u64> {
        self.series.keys().copied().collect()
    }

    pub(crate) fn all_series(&self) -> impl Iterator<Item = &SeriesHead> {
        self.series.values()
    }

    pub(crate) fn all_series_mut(&mut self) -> impl Iterator<Item = (u64, &mut SeriesHead)> {
        self.series.iter_mut().map(|(id, s)| (*id, s))
    }

    /// The sequences of `source`, starting empty.
    pub(crate) fn source(&mut self, source: u64) -> &mut SourceSeq {
        self.sources.entry(source).or_default()
    }

    /// The sequences of `source`, if it sent anything.
    pub(crate) fn known_source(&mut self, source: u64) -> Option<&mut SourceSeq> {
        self.sources.get_mut(&source)
    }

    pub(crate) fn sources_mut(&mut self) -> impl Iterator<Item = (u64, &mut SourceSeq)> {
        self.sources.iter_mut().map(|(id, s)| (*id, s))
    }

    /// The previous batch's series, for the next batch's lookups (to be
    /// given back with [`HostState::set_last_batch`]).
    pub(crate) fn take_last_batch(&mut self) -> BatchShape {
        std::mem::take(&mut self.last_batch)
    }

    pub(crate) fn set_last_batch(&mut self, shape: BatchShape) {
        self.last_batch = shape;
    }

    /// Open snapshot windows, sorted by start.
    pub(crate) fn snapshot_windows(&self) -> &[SnapshotWindow] {
        &self.snapshot_windows
    }

    pub(crate) fn has_snapshot_window(&self, start: i64) -> bool {
        self.snapshot_windows.iter().any(|w| w.start == start)
    }

    /// Newest snapshot time known, and the wall-clock time of the last
    /// snapshot inserted.
    pub(crate) fn snapshot_times(&self) -> (i64, i64) {
        (self.snapshot_max_t, self.snapshot_touched_ms)
    }

    /// Closes the snapshot windows `sealed` says were sealed.
    pub(crate) fn drop_snapshot_windows(
        &mut self,
        mut sealed: impl FnMut(&SnapshotWindow) -> bool,
    ) {
        self.snapshot_windows.retain(|w| !sealed(w));
    }

    /// Adds a series found at open: until its `L` record is read, any of
    /// its windows may be sealed.
    pub(crate) fn add_stored(&mut self, id: u64, key: Key) {
        self.add(id, key);
        if let Some(series) = self.series.get_mut(&id) {
            series.sealed_known = false;
        }
    }

    /// The id of the series `metric` + `labels` (as an agent sends them), if known.
    pub(crate) fn find(&self, hash: u64, metric: &str, labels: &[Label]) -> Option<u64> {
        let matches = |id: &u64| {
            self.series
                .get(id)
                .is_some_and(|s| same_series(&s.key, metric, labels))
        };
        match self.by_hash.get(&hash)? {
            Ids::One(id) => Some(*id).filter(matches),
            Ids::Many(ids) => ids.iter().copied().find(matches),
        }
    }

    /// Adds a series to the host.
    pub(crate) fn add(&mut self, id: u64, key: Key) {
        let own = key.labels().filter(|(name, _)| *name != HOST_LABEL);
        let hash = series_hash_of(key.metric(), own);
        match self.by_hash.get_mut(&hash) {
            None => {
                self.by_hash.insert(hash, Ids::One(id));
            }
            Some(Ids::One(other)) => {
                let other = *other;
                self.by_hash.insert(hash, Ids::Many(vec![other, id]));
            }
            Some(Ids::Many(ids)) => ids.push(id),
        }
        self.series.insert(id, SeriesHead::new(key));
    }

    /// Lowest commit group any open window of this host holds, if any.
    pub(crate) fn min_lsn(&mut self) -> Option<u64> {
        let series = self.series_bounds().min_lsn;
        let snapshots = self.snapshot_windows.iter().map(|w| w.min_lsn);
        series.into_iter().chain(snapshots).min()
    }

    /// Bounds over the open series windows; after a window was closed,
    /// the series are walked once to recompute them.
    pub(crate) fn series_bounds(&mut self) -> SeriesBounds {
        *self
            .bounds
            .get_or_insert_with(|| SeriesBounds::of(self.series.values()))
    }

    /// Walks the series to make the bounds exact again: kept bounds only
    /// ever widen (an earlier insertion stays their earliest).
    pub(crate) fn refresh_series_bounds(&mut self) {
        self.bounds = Some(SeriesBounds::of(self.series.values()));
    }

    /// Opens window `start` of series `id` (which must not be open) on
    /// `base` (its sealed points, from groups up to `base_lsn`) for a
    /// sample of group `lsn`.
    pub(crate) fn open_window(
        &mut self,
        id: u64,
        start: i64,
        base: Vec<Point>,
        base_lsn: u64,
        lsn: u64,
    ) {
        let Some(series) = self.series.get_mut(&id) else {
            return;
        };
        series.open_window(start, base, base_lsn, lsn);
        if let Some(bounds) = &mut self.bounds {
            bounds.open(series, start, lsn);
        }
    }

    /// Inserts `points` (sorted by time, all in window `start`, which must
    /// be open) of commit group `lsn` into series `id`, at most `max_len`
    /// in the window.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_run(
        &mut self,
        id: u64,
        start: i64,
        points: &[Point],
        lsn: u64,
        now_ms: i64,
        max_len: usize,
        counts: &mut Inserts,
    ) {
        let Some(series) = self.series.get_mut(&id) else {
            return;
        };
        series.insert_run(start, points, lsn, now_ms, max_len, counts);
        if let Some(bounds) = &mut self.bounds {
            bounds.inserted(series);
        }
    }

    /// Closes the windows of series `id` that `sealed` says were sealed.
    pub(crate) fn drop_windows(&mut self, id: u64, sealed: impl FnMut(&OpenWindow) -> bool) {
        if let Some(series) = self.series.get_mut(&id)
            && series.drop_windows(sealed)
        {
            self.bounds = None;
        }
    }

    /// Series `id`'s `L` record, read at open; false if there is no such series.
    pub(crate) fn restore_last(&mut self, id: u64, p: Point) -> bool {
        let Some(series) = self.series.get_mut(&id) else {
            return false;
        };
        series.restore_last(p);
        if let Some(bounds) = &mut self.bounds
            && !series.windows.is_empty()
        {
            bounds.inserted(series);
        }
        true
    }

    /// Opens snapshot window `start` on `base` (the sealed block it
    /// reopens, from groups up to `base_lsn`) for a snapshot of group `lsn`.
    pub(crate) fn open_snapshot_window(
        &mut self,
        start: i64,
        base: Vec<ProcessSnapshot>,
        base_lsn: u64,
        lsn: u64,
    ) {
        let at = self.snapshot_windows.partition_point(|w| w.start < start);
        if let Some(t) = base.iter().map(|s| s.t_ms).max() {
            self.snapshot_max_t = self.snapshot_max_t.max(t);
        }
        self.snapshot_windows.insert(
            at,
            SnapshotWindow {
                start,
                block: OpenBlock::from_snapshots(base),
                min_lsn: lsn,
                max_lsn: base_lsn.max(lsn),
            },
        );
    }

    /// Stores a snapshot in its open window (opened empty if missing); a
    /// snapshot at a time the window already holds is a duplicate and is
    /// dropped. Appends in time order only encode the new snapshot; an
    /// older one (rare: replays interleaving with fresh data) re-encodes
    /// the window.
    pub(crate) fn insert_snapshot(
        &mut self,
        start: i64,
        snapshot: &ProcessSnapshot,
        lsn: u64,
        now_ms: i64,
    ) -> Result<Inserted, TsdbError> {
        let at = self.snapshot_windows.partition_point(|w| w.start < start);
        if self
            .snapshot_windows
            .get(at)
            .is_none_or(|w| w.start != start)
        {
            // Snapshots come in time order but for replays: the window
            // before a new newest one is complete.
            if at == self.snapshot_windows.len()
                && let Some(previous) = self.snapshot_windows.last_mut()
            {
                previous.block.close_rows();
            }
            self.open_snapshot_window(start, Vec::new(), 0, lsn);
        }
        let window = &mut self.snapshot_windows[at];
        window.max_lsn = window.max_lsn.max(lsn);
        match window.block.last_t() {
            Some(last) if snapshot.t_ms == last => return Ok(Inserted::Duplicate),
            Some(last) if snapshot.t_ms < last => {
                let mut all = window.block.snapshots()?;
                match all.binary_search_by_key(&snapshot.t_ms, |s| s.t_ms) {
                    Ok(_) => return Ok(Inserted::Duplicate),
                    Err(i) => all.insert(i, snapshot.clone()),
                }
                window.block = OpenBlock::from_snapshots(all);
            }
            _ => window.block.push(snapshot),
        }
        self.snapshot_max_t = self.snapshot_max_t.max(snapshot.t_ms);
        self.snapshot_touched_ms = now_ms;
        Ok(Inserted::Stored)
    }

    /// Heap bytes of the host's own structures: the open snapshot
    /// windows and the previous batch's series.
    pub(crate) fn host_heap_bytes(&self) -> usize {
        self.snapshot_heap_bytes() + self.last_batch.heap_bytes()
    }

    /// Heap bytes of the open snapshot windows.
    fn snapshot_heap_bytes(&self) -> usize {
        self.snapshot_windows
            .iter()
            .map(|w| w.block.heap_bytes())
            .sum::<usize>()
            + self.snapshot_windows.capacity() * std::mem::size_of::<SnapshotWindow>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::model::{SeriesKey, series_hash};

    /// The key of series `m` of host `h` with `labels`, as the index holds it.
    fn key(labels: &[Label]) -> Key {
        Index::default().insert(1, &SeriesKey::for_host("h", "m", labels).unwrap())
    }

    #[test]
    fn windows_merge_late_samples_and_refuse_duplicates() {
        let mut s = SeriesHead::new(key(&[]));
        s.open_window(0, vec![], 0, 1);
        let p = |t_ms, value| Point { t_ms, value };
        let mut counts = Inserts::default();
        s.insert_run(0, &[p(20, 2.0), p(30, 3.0)], 1, 0, 10, &mut counts);
        assert_eq!(counts.stored, 2);
        let mut counts = Inserts::default();
        let late = [p(10, 1.0), p(10, 9.0), p(20, 9.0), p(30, 9.0)];
        s.insert_run(0, &late, 2, 0, 10, &mut counts);
        assert_eq!((counts.stored, counts.duplicate), (1, 3));
        let w = &s.windows[0];
        assert_eq!(w.points(), vec![p(10, 1.0), p(20, 2.0), p(30, 3.0)]);
        // A range takes the late samples in it, merged in time order.
        for (start, end, want) in [
            (0, 100, vec![p(10, 1.0), p(20, 2.0), p(30, 3.0)]),
            (10, 30, vec![p(10, 1.0), p(20, 2.0)]),
            (11, 31, vec![p(20, 2.0), p(30, 3.0)]),
            (0, 10, vec![]),
            (20, 20, vec![]),
        ] {
            let mut got = Vec::new();
            w.points_within(start, end, &mut got);
            assert_eq!(got, want, "[{start}, {end})");
        }
        assert_eq!((w.min_lsn, w.max_lsn, w.len()), (1, 2, 3));
        assert_eq!(s.last, Some(p(30, 3.0)));
    }

    #[test]
    fn a_window_keeps_at_most_its_limit_of_samples() {
        let mut s = SeriesHead::new(key(&[]));
        s.open_window(0, vec![], 0, 1);
        let points: Vec<Point> = (10..20)
            .map(|t| Point {
                t_ms: t,
                value: 1.0,
            })
            .collect();
        let mut counts = Inserts::default();
        s.insert_run(0, &points, 1, 0, 4, &mut counts);
        // Late samples count against the limit as well.
        s.insert_run(
            0,
            &[Point {
                t_ms: 1,
                value: 1.0,
            }],
            2,
            0,
            4,
            &mut counts,
        );
        assert_eq!((counts.stored, counts.too_dense), (4, 7));
        assert_eq!(s.windows[0].len(), 4);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever opens windows, inserts samples, restores a newest
        /// sample or closes windows, the bounds a host keeps (when it
        /// keeps them) are no later, no older and exactly as low as a walk
        /// over its series finds, and a walk finds them again after a close.
        #[test]
        fn series_bounds_follow_every_change(
            ops in proptest::collection::vec((0u8..6, 0u64..3, 0i64..6, 0i64..1000), 1..80),
        ) {
            let mut h = HostState::default();
            for (id, name) in ["a", "b", "c"].into_iter().enumerate() {
                h.add(id as u64, key(&[Label::new("s", name)]));
            }
            let p = |t_ms| Point { t_ms, value: 1.0 };
            let mut counts = Inserts::default();
            for (lsn, (op, id, w, t)) in (1..).zip(ops) {
                let start = w * 1000;
                let open = h.series(id).is_some_and(|s| s.has_window(start));
                match op {
                    0 if !open => h.open_window(id, start, vec![], 0, lsn),
                    // Reopened from a sealed chunk.
                    1 if !open => h.open_window(id, start, vec![p(start + t)], lsn / 2, lsn),
                    0 | 1 => h.insert_run(id, start, &[p(start + t)], lsn, t, 100, &mut counts),
                    2 => h.drop_windows(id, |w| w.start() <= start),
                    3 => {
                        h.restore_last(id, p(start + t));
                    }
                    // A maintenance pass's walk.
                    5 => h.refresh_series_bounds(),
                    _ => {
                        let walked = SeriesBounds::of(h.series.values());
                        let lowest = h
                            .series
                            .values()
                            .flat_map(|s| s.windows.iter().map(|w| w.min_lsn))
                            .min();
                        let forgotten = h.bounds.is_none();
                        proptest::prop_assert_eq!(h.min_lsn(), lowest);
                        if forgotten {
                            proptest::prop_assert_eq!(h.series_bounds(), walked);
                        }
                    }
                }
                let walked = SeriesBounds::of(h.series.values());
                if let Some(kept) = h.bounds {
                    proptest::prop_assert!(kept.earliest_start <= walked.earliest_start);
                    proptest::prop_assert!(kept.newest >= walked.newest);
                    proptest::prop_assert!(kept.earliest_touched <= walked.earliest_touched);
                    proptest::prop_assert_eq!(kept.min_lsn, walked.min_lsn);
                }
            }
        }
    }

    #[test]
    fn lookups_ignore_label_order_and_check_equality() {
        let mut h = HostState::default();
        let labels = vec![Label::new("b", "2"), Label::new("a", "1")];
        h.add(7, key(&labels));
        let swapped = vec![Label::new("a", "1"), Label::new("b", "2")];
        assert_eq!(h.find(series_hash("m", &swapped), "m", &swapped), Some(7));
        let other = vec![Label::new("a", "1"), Label::new("b", "3")];
        assert_eq!(h.find(series_hash("m", &other), "m", &other), None);
        let with_host = vec![
            Label::new("a", "1"),
            Label::new("b", "2"),
            Label::new("host", "h"),
        ];
        // The hash of the series' own labels, so the equality check decides.
        assert_eq!(
            h.find(series_hash("m", &swapped), "m", &with_host),
            None,
            "an agent may not name the host label"
        );
    }
}
