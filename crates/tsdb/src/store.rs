//! The store: opening and replay, appends, and reads.
//!
//! Chunks, the index and the sequences live in one sled tree, `tsdb`
//! (layout in `keys`); the WAL in sled databases of its own (see
//! `commit`). See the crate documentation for the life of a sample.

use crate::TsdbError;
use crate::chunk;
use crate::commit::{Committer, Generation};
use crate::head::{HostState, IdMap, Inserted, series_hash};
use crate::keys;
use crate::maintain::MaintenanceState;
use crate::model::{
    AppendOutcome, Batch, Matcher, Point, ProcessSnapshot, Rejections, SeriesData, SeriesInput,
    SeriesKey,
};
use crate::options::Options;
use crate::shape::ShapeMatch;
use crate::snapshot;
use crate::wal::{self, WalRecord};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};
use std::thread::JoinHandle;

/// The time-series store. Cheap to share behind an `Arc`; every method
/// takes `&self`, and appends from many threads share flushes.
pub struct Store {
    inner: Arc<Inner>,
    worker: Option<Worker>,
}

/// The background maintenance thread; dropping the sender stops it.
struct Worker {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

/// Most threads replaying the WAL at open.
const MAX_REPLAY_THREADS: usize = 4;

/// A submitted batch not yet known durable: wait on it with [`Store::wait`]
/// before acknowledging it.
#[derive(Debug)]
#[must_use = "a submitted batch is acknowledged only after `Store::wait`"]
pub struct Pending {
    /// The commit group that makes the batch (or the original of a
    /// replayed one) durable; `None` when it already is.
    group: Option<u64>,
    outcome: AppendOutcome,
}

/// The series index: ids to keys, metrics and hosts to ids.
#[derive(Default)]
pub(crate) struct Index {
    pub(crate) keys: IdMap<Arc<SeriesKey>>,
    pub(crate) by_metric: HashMap<String, Vec<u64>>,
    pub(crate) by_host: HashMap<String, Vec<u64>>,
    pub(crate) next_id: u64,
}

impl Index {
    fn insert(&mut self, id: u64, key: Arc<SeriesKey>) {
        self.by_metric
            .entry(key.metric.clone())
            .or_default()
            .push(id);
        self.by_host
            .entry(key.host().to_owned())
            .or_default()
            .push(id);
        self.keys.insert(id, key);
        self.next_id = self.next_id.max(id + 1);
    }
}

/// Counters since the store was opened.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) duplicate_batches: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) rejected: [AtomicU64; 7],
    pub(crate) corrupt_wal_frames: AtomicU64,
    pub(crate) corrupt_blocks: AtomicU64,
    pub(crate) corrupt_series: AtomicU64,
    pub(crate) corrupt_sequences: AtomicU64,
    pub(crate) orphan_samples: AtomicU64,
    pub(crate) replayed_frames: AtomicU64,
    pub(crate) replayed_samples: AtomicU64,
    pub(crate) sealed_chunks: AtomicU64,
    pub(crate) deleted_chunks: AtomicU64,
    pub(crate) maintenance_errors: AtomicU64,
}

impl Counters {
    fn reject(&self, r: &Rejections) {
        let values = [
            r.non_finite,
            r.future,
            r.too_old,
            r.out_of_order,
            r.duplicate,
            r.series_limit,
            r.invalid_series,
        ];
        for (counter, v) in self.rejected.iter().zip(values) {
            if v > 0 {
                counter.fetch_add(v, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn rejections(&self) -> Rejections {
        let v = |i: usize| self.rejected[i].load(Ordering::Relaxed);
        Rejections {
            non_finite: v(0),
            future: v(1),
            too_old: v(2),
            out_of_order: v(3),
            duplicate: v(4),
            series_limit: v(5),
            invalid_series: v(6),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// How a sample reaches the head.
pub(crate) enum Mode<'a> {
    Append,
    /// From the WAL at open: a sealed chunk already holding the sample's
    /// group makes it a no-op. Remembers the newest group of each sealed
    /// window seen, so later samples of the window need not read it again.
    Replay(&'a mut Sealed),
}

/// Newest commit group of sealed windows met during replay: series
/// windows by (series id, start), snapshot windows by (host, start).
#[derive(Default)]
pub(crate) struct Sealed {
    series: HashMap<(u64, i64), u64>,
    snapshots: HashMap<(String, i64), u64>,
}

pub(crate) type HostRef = Arc<Mutex<HostState>>;

pub(crate) struct Inner {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    pub(crate) options: Options,
    pub(crate) index: RwLock<Index>,
    pub(crate) hosts: RwLock<HashMap<String, HostRef>>,
    pub(crate) commit: Committer,
    pub(crate) counters: Counters,
    pub(crate) maintenance: Mutex<MaintenanceState>,
}

pub(crate) fn poisoned() -> TsdbError {
    TsdbError::Failed("store state poisoned by an earlier panic".into())
}

pub(crate) fn lock(host: &HostRef) -> Result<MutexGuard<'_, HostState>, TsdbError> {
    host.lock().map_err(|_| poisoned())
}

impl Store {
    /// Opens the store: chunks and the index in `db` (which the caller may
    /// share with other trees), the WAL in sled databases of its own under
    /// `wal_dir` (created if missing; nothing else may live there). Replays
    /// the WAL and starts the background maintenance (if
    /// `options.maintenance_interval` is set). Damaged records are skipped
    /// and counted in [`Store::stats`], never fatal.
    pub fn open(db: sled::Db, wal_dir: &Path, options: Options) -> Result<Self, TsdbError> {
        options.validate()?;
        let tree = db.open_tree("tsdb")?;
        let generations = Generation::open_all(wal_dir)?;
        let counters = Counters::default();
        let mut index = Index {
            next_id: 1,
            ..Index::default()
        };
        // Definitions of series created since the oldest WAL generation
        // are only there until it is deleted.
        let wal_trees = generations
            .iter()
            .map(|g| Ok((*g.db()?).clone()))
            .collect::<Result<Vec<_>, TsdbError>>()?;
        for tree in std::iter::once(tree.clone()).chain(wal_trees) {
            for entry in tree.scan_prefix([keys::SERIES]) {
                let (key, value) = entry?;
                let id = key
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes);
                match (id, SeriesKey::decode(&value)) {
                    (Some(id), _) if index.keys.contains_key(&id) => {}
                    (Some(id), Ok(series)) if key.len() == 9 => index.insert(id, Arc::new(series)),
                    _ => bump(&counters.corrupt_series, 1),
                }
            }
        }
        let mut hosts: HashMap<String, HostState> = HashMap::new();
        for (id, key) in &index.keys {
            let host = hosts.entry(key.host().to_owned()).or_default();
            host.add(*id, key.clone());
            if let Some(series) = host.series.get_mut(id) {
                // Until its `L` record is read, any window may be sealed.
                series.sealed_known = false;
            }
        }
        for entry in tree.scan_prefix([keys::LAST]) {
            let (key, value) = entry?;
            let id = key
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let series = id
                .and_then(|id| index.keys.get(&id).map(|k| (id, k)))
                .and_then(|(id, k)| hosts.get_mut(k.host())?.series.get_mut(&id));
            match (series, keys::decode_last(&value)) {
                (Some(series), Some(p)) => {
                    series.last = Some(p);
                    series.persisted_last_t = p.t_ms;
                    series.sealed_known = true;
                }
                _ => bump(&counters.corrupt_series, 1),
            }
        }
        for entry in tree.scan_prefix([keys::SEQUENCE]) {
            let (key, value) = entry?;
            match (keys::parse_sequence(&key), <[u8; 8]>::try_from(&value[..])) {
                (Some((host, source)), Ok(seq)) => {
                    let seq = u64::from_be_bytes(seq);
                    let state = hosts.entry(host.to_owned()).or_default();
                    let source = state.sources.entry(source).or_default();
                    source.durable = seq;
                    source.persisted = seq;
                }
                _ => bump(&counters.corrupt_sequences, 1),
            }
        }
        let meta = |key: &[u8], default: u64| -> Result<u64, TsdbError> {
            Ok(match tree.get(key)? {
                Some(v) if v.len() == 8 => u64::from_be_bytes(v[..].try_into().unwrap_or([0; 8])),
                _ => default,
            })
        };
        let mut next_group = meta(keys::META_NEXT_GROUP, 1)?;
        let low = meta(keys::META_LOW_GROUP, 0)?;
        for g in &generations {
            if let Some(entry) = g.db()?.scan_prefix([keys::WAL]).keys().next_back()
                && let Some(last) = keys::parse_wal(&entry?)
            {
                g.last_group.store(last, Ordering::Relaxed);
                next_group = next_group.max(last + 1);
            }
        }
        let hosts = hosts
            .into_iter()
            .map(|(name, state)| (name, Arc::new(Mutex::new(state))))
            .collect();
        let inner = Inner {
            commit: Committer::new(wal_dir, generations, next_group.max(1))?,
            db,
            tree,
            options,
            index: RwLock::new(index),
            hosts: RwLock::new(hosts),
            counters,
            maintenance: Mutex::new(MaintenanceState::default()),
        };
        inner.replay(low)?;
        // Everything is durable now: the generations replay read are
        // closed, and their pages with them.
        inner.commit.close_idle()?;
        let inner = Arc::new(inner);
        let worker = match inner.options.maintenance_interval {
            Some(interval) => Some(spawn_worker(inner.clone(), interval)?),
            None => None,
        };
        Ok(Store { inner, worker })
    }

    /// Stores a batch durably, unless (host, source, seq) was stored before:
    /// returns once the batch's WAL frame is flushed, sharing the flush with
    /// concurrent appends. Invalid samples are counted in the outcome, not
    /// stored; the rest of the batch is. The same as [`Store::submit`]
    /// followed by [`Store::wait`].
    pub fn append(&self, batch: &Batch) -> Result<AppendOutcome, TsdbError> {
        let pending = self.inner.submit(batch)?;
        self.wait(pending)
    }

    /// Queues a batch for the next commit group without waiting for it to
    /// be durable: its samples are in the head (visible to queries) at
    /// once; [`Store::wait`] on the returned ticket says when the batch may
    /// be acknowledged. A caller with many streams keeps several batches in
    /// flight this way, so one flush carries more of them. A queued group
    /// is written when some caller waits (or maintenance runs), so every
    /// ticket should be waited on.
    pub fn submit(&self, batch: &Batch) -> Result<Pending, TsdbError> {
        self.inner.submit(batch)
    }

    /// Returns once the batch of `pending` is durable (flushing as the
    /// leader of a commit group when no other thread is), with its outcome.
    /// An error means the store failed (see [`TsdbError::Failed`]): the
    /// batch must not be acknowledged.
    pub fn wait(&self, pending: Pending) -> Result<AppendOutcome, TsdbError> {
        if let Some(group) = pending.group {
            self.inner.commit.wait(group)?;
        }
        Ok(pending.outcome)
    }

    /// Highest sequence stored for (host, source), 0 if none.
    pub fn last_seq(&self, host: &str, source: u64) -> Result<u64, TsdbError> {
        let Some(state) = self.inner.host(host)? else {
            return Ok(0);
        };
        let state = lock(&state)?;
        Ok(state.sources.get(&source).map_or(0, |s| s.highest()))
    }

    /// Series of `metric` matching every matcher, sorted by key.
    pub fn select(
        &self,
        metric: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesKey, u64)>, TsdbError> {
        Ok(self
            .inner
            .select(metric, matchers)?
            .into_iter()
            .map(|(key, id)| ((*key).clone(), id))
            .collect())
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
        let Some(state) = self.inner.host(host)? else {
            return Ok(Vec::new());
        };
        let state = lock(&state)?;
        let mut out = Vec::with_capacity(state.series.len());
        for series in state.series.values() {
            if let Some(last) = series.last {
                out.push(((*series.key).clone(), last));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The newest process snapshot of `host` at or before `at_ms`.
    pub fn process_snapshot_at(
        &self,
        host: &str,
        at_ms: i64,
    ) -> Result<Option<ProcessSnapshot>, TsdbError> {
        self.inner.snapshot_at(host, at_ms)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            drop(worker.stop);
            let _ = worker.handle.join();
        }
    }
}

fn spawn_worker(inner: Arc<Inner>, interval: std::time::Duration) -> Result<Worker, TsdbError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("tsdb-maintenance".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                if let Err(e) = inner.maintain(false) {
                    bump(&inner.counters.maintenance_errors, 1);
                    tracing::error!(error = %e, "storage maintenance failed");
                }
            }
        })
        .map_err(|e| TsdbError::Failed(format!("cannot start the maintenance thread: {e}")))?;
    Ok(Worker { stop, handle })
}

impl Inner {
    /// The state of `host`, if it has ever stored anything.
    pub(crate) fn host(&self, host: &str) -> Result<Option<HostRef>, TsdbError> {
        Ok(self
            .hosts
            .read()
            .map_err(|_| poisoned())?
            .get(host)
            .cloned())
    }

    fn host_or_create(&self, host: &str) -> Result<HostRef, TsdbError> {
        if let Some(state) = self.host(host)? {
            return Ok(state);
        }
        let mut hosts = self.hosts.write().map_err(|_| poisoned())?;
        Ok(hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(HostState::default())))
            .clone())
    }

    /// Every host with its state, for passes over the whole store.
    pub(crate) fn all_hosts(&self) -> Result<Vec<(String, HostRef)>, TsdbError> {
        let hosts = self.hosts.read().map_err(|_| poisoned())?;
        Ok(hosts.iter().map(|(n, s)| (n.clone(), s.clone())).collect())
    }

    /// Replays the WAL from group `low` on into the head: every group
    /// below it is sealed, its sequences and series definitions persisted.
    /// Hosts are independent, so each of a few threads replays the frames
    /// of its share of the hosts, in WAL order.
    fn replay(&self, low: u64) -> Result<(), TsdbError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_REPLAY_THREADS);
        self.commit.with_generations(|generations| {
            let results: Vec<Result<Vec<u64>, TsdbError>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|share| {
                        scope.spawn(move || self.replay_share(generations, low, share, threads))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join().unwrap_or_else(|_| {
                            Err(TsdbError::Failed("a WAL replay thread panicked".into()))
                        })
                    })
                    .collect()
            });
            let results = results.into_iter().collect::<Result<Vec<_>, TsdbError>>()?;
            // Every share read every value; the first one's sizes serve.
            let sizes = results.into_iter().next().unwrap_or_default();
            for (g, bytes) in generations.iter().zip(&sizes) {
                g.bytes.store(*bytes, Ordering::Relaxed);
            }
            let total = sizes.iter().sum();
            self.commit.wal_bytes.store(total, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Replays the frames of the hosts that hash to `share` of `shares`;
    /// damage that names no host is counted by share 0. Returns the bytes
    /// of the WAL values read, per generation.
    fn replay_share(
        &self,
        generations: &[Arc<Generation>],
        low: u64,
        share: usize,
        shares: usize,
    ) -> Result<Vec<u64>, TsdbError> {
        let mine = |host: Option<&str>| {
            let Some(host) = host else {
                return share == 0;
            };
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(host, &mut h);
            std::hash::Hasher::finish(&h) as usize % shares == share
        };
        let mut sealed = Sealed::default();
        let mut sizes = Vec::with_capacity(generations.len());
        for g in generations {
            let mut bytes = 0;
            for entry in g
                .db()?
                .range(keys::wal_start(low)..keys::wal_start(u64::MAX))
            {
                let (key, value) = entry?;
                bytes += value.len() as u64;
                let Some(group) = keys::parse_wal(&key) else {
                    if share == 0 {
                        bump(&self.counters.corrupt_wal_frames, 1);
                    }
                    continue;
                };
                for frame in wal::frames(&value) {
                    let record = match frame {
                        Ok(frame) if !mine(frame.host()) => continue,
                        Ok(frame) => frame.decode(),
                        Err(e) if share == 0 => Err(e),
                        Err(_) => continue,
                    };
                    match record {
                        Ok(record) => self.replay_record(group, record, &mut sealed)?,
                        Err(e) => {
                            tracing::warn!(group, error = %e, "skipping a damaged WAL frame");
                            bump(&self.counters.corrupt_wal_frames, 1);
                        }
                    }
                }
            }
            sizes.push(bytes);
        }
        Ok(sizes)
    }

    fn replay_record(
        &self,
        group: u64,
        record: WalRecord,
        sealed: &mut Sealed,
    ) -> Result<(), TsdbError> {
        bump(&self.counters.replayed_frames, 1);
        let state = self.host_or_create(&record.host)?;
        let mut state = lock(&state)?;
        let source = state.sources.entry(record.source).or_default();
        source.durable = source.durable.max(record.seq);
        let now = (self.options.clock)();
        for (id, points) in record.series {
            if !state.series.contains_key(&id) {
                // Its definition is missing or damaged: nothing to file the samples under.
                bump(&self.counters.orphan_samples, points.len() as u64);
                continue;
            }
            bump(&self.counters.replayed_samples, points.len() as u64);
            for p in points {
                self.insert(&mut state, id, p, group, Mode::Replay(sealed), now)?;
            }
        }
        for snapshot in &record.snapshots {
            self.insert_snapshot(
                &record.host,
                &mut state,
                snapshot,
                group,
                Mode::Replay(sealed),
                now,
            )?;
        }
        Ok(())
    }

    /// Puts one sample into its series' open window, opening (or reopening
    /// from its sealed chunk) the window first.
    pub(crate) fn insert(
        &self,
        state: &mut HostState,
        id: u64,
        p: Point,
        lsn: u64,
        mode: Mode<'_>,
        now: i64,
    ) -> Result<Inserted, TsdbError> {
        let start = self.options.window_of(p.t_ms);
        let Some(series) = state.series.get_mut(&id) else {
            return Ok(Inserted::Duplicate);
        };
        if series.window_mut(start).is_none() {
            if let Mode::Replay(sealed) = &mode
                && sealed.series.get(&(id, start)).is_some_and(|&m| m >= lsn)
            {
                return Ok(Inserted::Duplicate);
            }
            // No sealed chunk starts after the window of the newest sealed
            // sample (the `L` record), so new windows need no lookup.
            let may_be_sealed = !series.sealed_known
                || (series.persisted_last_t != i64::MIN
                    && start <= self.options.window_of(series.persisted_last_t));
            let (base_lsn, base) = if may_be_sealed {
                self.sealed_raw(id, start)?.unwrap_or_default()
            } else {
                (0, Vec::new())
            };
            if let Mode::Replay(sealed) = mode
                && !base.is_empty()
            {
                sealed.series.insert((id, start), base_lsn);
                if base_lsn >= lsn {
                    // The sealed chunk already holds this group's samples.
                    return Ok(Inserted::Duplicate);
                }
            }
            series.open_window(start, base, base_lsn, lsn);
        }
        Ok(series.insert(start, p, lsn, now))
    }

    pub(crate) fn insert_snapshot(
        &self,
        host: &str,
        state: &mut HostState,
        snapshot: &ProcessSnapshot,
        lsn: u64,
        mode: Mode<'_>,
        now: i64,
    ) -> Result<Inserted, TsdbError> {
        let start = self.options.window_of(snapshot.t_ms);
        if !state.snapshot_windows.iter().any(|w| w.start == start) {
            if let Mode::Replay(sealed) = &mode
                && sealed
                    .snapshots
                    .get(&(host.to_owned(), start))
                    .is_some_and(|&m| m >= lsn)
            {
                return Ok(Inserted::Duplicate);
            }
            let (base_lsn, base) = self.sealed_snapshots(host, start)?.unwrap_or_default();
            if let Mode::Replay(sealed) = mode
                && !base.is_empty()
            {
                sealed.snapshots.insert((host.to_owned(), start), base_lsn);
                if base_lsn >= lsn {
                    return Ok(Inserted::Duplicate);
                }
            }
            state.open_snapshot_window(start, base, base_lsn, lsn);
        }
        state.insert_snapshot(start, snapshot, lsn, now)
    }

    /// The sealed raw chunk of (series, window), if any; a damaged one is
    /// counted and treated as absent.
    pub(crate) fn sealed_raw(
        &self,
        id: u64,
        start: i64,
    ) -> Result<Option<(u64, Vec<Point>)>, TsdbError> {
        let Some(value) = self.tree.get(keys::chunk(keys::TIER_RAW, id, start))? else {
            return Ok(None);
        };
        Ok(self.decoded(chunk::decode_raw(&value), "chunk", id, start))
    }

    fn sealed_snapshots(
        &self,
        host: &str,
        start: i64,
    ) -> Result<Option<(u64, Vec<ProcessSnapshot>)>, TsdbError> {
        let Some(value) = self.tree.get(keys::snapshots(host, start))? else {
            return Ok(None);
        };
        Ok(self.decoded(snapshot::decode(&value), "snapshot block", 0, start))
    }

    /// The value of a decoded block, or `None` after counting and logging the damage.
    pub(crate) fn decoded<T>(
        &self,
        result: Result<T, TsdbError>,
        what: &str,
        id: u64,
        start: i64,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                bump(&self.counters.corrupt_blocks, 1);
                tracing::warn!(series.id = id, start, error = %e, "skipping damaged {what}");
                None
            }
        }
    }

    fn submit(&self, batch: &Batch) -> Result<Pending, TsdbError> {
        self.commit.check()?;
        crate::model::validate_host(&batch.host)?;
        let state = self.host_or_create(&batch.host)?;
        let mut guard = lock(&state)?;
        let host = &mut *guard;
        let mut outcome = AppendOutcome::default();
        let source = host.sources.entry(batch.source).or_default();
        source.promote(self.commit.durable());
        if batch.seq <= source.highest() {
            // A replay: acknowledge it once the original is durable too.
            let group = source.newest_group();
            drop(guard);
            bump(&self.counters.duplicate_batches, 1);
            outcome.duplicate = true;
            return Ok(Pending { group, outcome });
        }
        let now = (self.options.clock)();
        let oldest = now.saturating_sub(self.options.retention_ms);
        let newest = now.saturating_add(self.options.future_tolerance_ms);
        let mut defs = Vec::new();
        let mut accepted: Vec<(u64, Point)> = Vec::with_capacity(batch.series.len());
        let mut shape = ShapeMatch::new(std::mem::take(&mut host.last_batch));
        for input in &batch.series {
            if input.points.is_empty() {
                continue;
            }
            let n = input.points.len() as u64;
            let known = shape.known(input).filter(|id| host.series.contains_key(id));
            let resolved = match known {
                Some(id) => Ok(Some(id)),
                None => self.resolve(&batch.host, host, input, &mut defs),
            };
            shape.record(resolved.as_ref().ok().copied().flatten());
            let id = match resolved {
                Ok(Some(id)) => id,
                Ok(None) => {
                    outcome.rejected.series_limit += n;
                    outcome.first_error.get_or_insert_with(|| {
                        format!(
                            "host {} reached its limit of {} series; {} not created",
                            batch.host, self.options.max_series_per_host, input.metric
                        )
                    });
                    continue;
                }
                Err(e) => {
                    outcome.rejected.invalid_series += n;
                    outcome.first_error.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            let Some(series) = host.series.get_mut(&id) else {
                continue;
            };
            // A series listed twice in one batch sees its earlier points too.
            let mut newest_seen = accepted
                .iter()
                .filter(|(other, _)| *other == id)
                .map(|(_, p)| p.t_ms)
                .fold(series.max_t(), i64::max);
            for p in &input.points {
                let rejected = &mut outcome.rejected;
                let why = if !p.value.is_finite() {
                    rejected.non_finite += 1;
                    "value is not finite"
                } else if p.t_ms > newest {
                    rejected.future += 1;
                    "timestamp too far in the future"
                } else if p.t_ms < oldest {
                    rejected.too_old += 1;
                    "timestamp older than the retention"
                } else if newest_seen != i64::MIN
                    && p.t_ms < newest_seen.saturating_sub(self.options.out_of_order_tolerance_ms)
                {
                    rejected.out_of_order += 1;
                    "timestamp older than the series' newest sample by more than the out-of-order tolerance"
                } else {
                    newest_seen = newest_seen.max(p.t_ms);
                    accepted.push((id, *p));
                    continue;
                };
                outcome
                    .first_error
                    .get_or_insert_with(|| format!("{}: sample {p:?} rejected: {why}", series.key));
            }
        }
        host.last_batch = shape.finish(batch.series.iter().filter(|s| !s.points.is_empty()));
        let mut snapshots = Vec::with_capacity(batch.processes.len());
        for s in &batch.processes {
            if s.t_ms > newest {
                outcome.rejected.future += 1;
            } else if s.t_ms < oldest {
                outcome.rejected.too_old += 1;
            } else {
                snapshots.push(s);
                continue;
            }
            outcome.first_error.get_or_insert_with(|| {
                format!(
                    "process snapshot at {} rejected: outside the accepted time window",
                    s.t_ms
                )
            });
        }
        // Even an empty batch is logged: its sequence must be remembered.
        let mut frame = Vec::with_capacity(64 + accepted.len() * 16);
        wal::encode_frame(
            &batch.host,
            batch.source,
            batch.seq,
            &accepted,
            &snapshots,
            &mut frame,
        );
        let group = self.commit.enqueue(&frame, defs)?;
        for (id, p) in accepted {
            match self.insert(host, id, p, group, Mode::Append, now)? {
                Inserted::Stored => outcome.stored += 1,
                Inserted::Duplicate => {
                    outcome.rejected.duplicate += 1;
                    outcome
                        .first_error
                        .get_or_insert_with(|| format!("duplicate sample {p:?} in series {id}"));
                }
            }
        }
        for s in snapshots {
            if self.insert_snapshot(&batch.host, host, s, group, Mode::Append, now)?
                == Inserted::Stored
            {
                bump(&self.counters.snapshots, 1);
            }
        }
        host.sources
            .entry(batch.source)
            .or_default()
            .pending
            .push((group, batch.seq));
        drop(guard);
        bump(&self.counters.batches, 1);
        bump(&self.counters.samples, outcome.stored);
        self.counters.reject(&outcome.rejected);
        Ok(Pending {
            group: Some(group),
            outcome,
        })
    }

    /// The id of the series of `input`, creating it if the host is under
    /// its limit (`None` when it is not); invalid names are an error.
    fn resolve(
        &self,
        host_name: &str,
        host: &mut HostState,
        input: &SeriesInput,
        defs: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Option<u64>, TsdbError> {
        let hash = series_hash(&input.metric, &input.labels);
        if let Some(id) = host.find(hash, &input.metric, &input.labels) {
            return Ok(Some(id));
        }
        let key = SeriesKey::for_host(host_name, &input.metric, &input.labels)?;
        if host.series.len() >= self.options.max_series_per_host {
            return Ok(None);
        }
        let key = Arc::new(key);
        let mut index = self.index.write().map_err(|_| poisoned())?;
        let id = index.next_id;
        index.insert(id, key.clone());
        drop(index);
        defs.push((keys::series(id).to_vec(), key.encode()));
        host.add(id, key);
        Ok(Some(id))
    }

    /// The newest sample of the newest raw chunk of a series that decodes.
    pub(crate) fn newest_sealed(&self, id: u64) -> Result<Option<Point>, TsdbError> {
        let prefix = keys::chunk(keys::TIER_RAW, id, 0);
        for entry in self.tree.scan_prefix(&prefix[..10]).rev() {
            let (key, value) = entry?;
            let start = keys::parse_chunk(&key).map_or(0, |(_, _, s)| s);
            if let Some((_, points)) = self.decoded(chunk::decode_raw(&value), "chunk", id, start) {
                return Ok(points.last().copied());
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
        // Candidates: the metric's series, or the host's when a matcher
        // names the host and it has fewer.
        let mut candidates = index.by_metric.get(metric);
        for m in matchers {
            if let Matcher::Equal(name, host) = m
                && name == crate::model::HOST_LABEL
            {
                let of_host = index.by_host.get(host);
                if of_host.map_or(0, Vec::len) < candidates.map_or(0, Vec::len) {
                    candidates = of_host;
                }
            }
        }
        let mut out: Vec<(Arc<SeriesKey>, u64)> = candidates
            .into_iter()
            .flatten()
            .filter_map(|id| index.keys.get(id).map(|k| (k.clone(), *id)))
            .filter(|(key, _)| key.metric == metric && matchers.iter().all(|m| m.matches(key)))
            .collect();
        drop(index);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Head windows of a series overlapping `[start, end)`: their starts
    /// and points in the range.
    pub(crate) fn head_points(
        &self,
        key: &SeriesKey,
        id: u64,
        start: i64,
        end: i64,
    ) -> Result<(Vec<i64>, Vec<Point>), TsdbError> {
        let mut starts = Vec::new();
        let mut points = Vec::new();
        let Some(state) = self.host(key.host())? else {
            return Ok((starts, points));
        };
        let state = lock(&state)?;
        let Some(series) = state.series.get(&id) else {
            return Ok((starts, points));
        };
        let window = self.options.chunk_window_ms;
        for w in &series.windows {
            if w.start < end && w.start.saturating_add(window) > start {
                starts.push(w.start);
                points.extend(
                    w.points()
                        .into_iter()
                        .filter(|p| p.t_ms >= start && p.t_ms < end),
                );
            }
        }
        Ok((starts, points))
    }

    /// Raw points of one series in `[start, end)`, oldest first.
    pub(crate) fn raw_points(
        &self,
        key: &SeriesKey,
        id: u64,
        start: i64,
        end: i64,
    ) -> Result<Vec<Point>, TsdbError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (open, mut points) = self.head_points(key, id, start, end)?;
        points.extend(self.sealed_points(id, start, end, &open)?);
        // Windows never overlap, so sorting merges without duplicates.
        points.sort_by_key(|p| p.t_ms);
        Ok(points)
    }

    /// Points of the sealed raw chunks of one series in `[start, end)`,
    /// skipping the windows starting at `open` (in the head), oldest first.
    pub(crate) fn sealed_points(
        &self,
        id: u64,
        start: i64,
        end: i64,
        open: &[i64],
    ) -> Result<Vec<Point>, TsdbError> {
        let mut points = Vec::new();
        if start >= end {
            return Ok(points);
        }
        let from = keys::chunk(keys::TIER_RAW, id, self.options.window_of(start));
        let to = keys::chunk(keys::TIER_RAW, id, self.options.window_of(end - 1));
        for entry in self.tree.range(from..=to) {
            let (k, value) = entry?;
            let Some((_, _, chunk_start)) = keys::parse_chunk(&k) else {
                continue;
            };
            if open.contains(&chunk_start) {
                continue;
            }
            if let Some((_, sealed)) =
                self.decoded(chunk::decode_raw(&value), "chunk", id, chunk_start)
            {
                points.extend(
                    sealed
                        .into_iter()
                        .filter(|p| p.t_ms >= start && p.t_ms < end),
                );
            }
        }
        Ok(points)
    }

    fn snapshot_at(&self, host: &str, at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
        let mut best: Option<ProcessSnapshot> = None;
        let mut open = Vec::new();
        if let Some(state) = self.host(host)? {
            let state = lock(&state)?;
            for w in &state.snapshot_windows {
                open.push(w.start);
                if w.start > at_ms {
                    continue;
                }
                if let Some(s) = w.block.at(at_ms)?
                    && best.as_ref().is_none_or(|b| s.t_ms > b.t_ms)
                {
                    best = Some(s);
                }
            }
        }
        let from = keys::snapshots(host, i64::MIN);
        let to = keys::snapshots(host, self.options.window_of(at_ms));
        for entry in self.tree.range(from..=to).rev() {
            let (key, value) = entry?;
            let Some((_, start)) = keys::parse_snapshots(&key) else {
                continue;
            };
            if open.contains(&start) {
                continue;
            }
            if best.as_ref().is_some_and(|b| b.t_ms >= start) {
                break;
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
                break;
            }
        }
        Ok(best)
    }
}
