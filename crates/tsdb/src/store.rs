//! The store: opening and replay, appends, and reads.
//!
//! The index, the sequences and the metadata live in one sled tree,
//! `tsdb` (layout in `keys`); sealed chunks and snapshot blocks in time
//! partitions (see `partition`); the WAL in sled databases of its own
//! (see `commit`). See the crate documentation for the life of a sample.

use crate::TsdbError;
use crate::chunk;
use crate::commit::{Committer, Generation};
use crate::head::{HostState, IdMap, Inserted, Inserts};
use crate::index::Index;
use crate::keys;
use crate::maintain::MaintenanceState;
use crate::model::{
    AppendOutcome, Batch, Matcher, Point, ProcessSnapshot, Rejections, SeriesData, SeriesInput,
    SeriesKey, series_hash,
};
use crate::options::Options;
use crate::shape::ShapeMatch;
use crate::snapshot;
use crate::supervise::{Supervisor, Worker};
use crate::wal::{self, WalRecord};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The time-series store. Cheap to share behind an `Arc`; every method
/// takes `&self`, and appends from many threads share flushes.
pub struct Store {
    supervisor: Arc<Supervisor>,
    worker: Option<Worker>,
    /// Held by the backup running, if any: one at a time.
    backup: Mutex<()>,
}

/// Most threads replaying the WAL at open.
const MAX_REPLAY_THREADS: usize = 4;

/// A submitted batch not yet known durable: wait on it with [`Store::wait`]
/// before acknowledging it.
#[derive(Debug)]
#[must_use = "a submitted batch is acknowledged only after `Store::wait`"]
pub struct Pending {
    /// The state the batch was submitted to: a group number means nothing
    /// to the state rebuilt after a failure.
    incarnation: u64,
    /// The commit group that makes the batch (or the original of a
    /// replayed one) durable; `None` when it already is.
    group: Option<u64>,
    outcome: AppendOutcome,
}

/// Counters since the store was opened.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) duplicate_batches: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) rejected: [AtomicU64; 9],
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
    /// Durations of maintenance passes' phases, by [`MaintenancePhase`].
    pub(crate) maintenance: [hostwatch_stdx::exposition::Histogram; 3],
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
            r.too_dense,
            r.malformed,
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
            too_dense: v(7),
            malformed: v(8),
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

/// A host's state, and the lock that puts its appends in one order.
///
/// An append holds `appends` from start to end, so the host's WAL frames
/// are in the order its head applies them, but holds `state` only in
/// slices (validation, then a few thousand samples at a time), so queries
/// and maintenance of the host wait for a slice, not for a whole batch.
#[derive(Default)]
pub(crate) struct HostEntry {
    appends: Mutex<()>,
    /// Handed over fairly between an append's slices (`MutexGuard::bump`).
    state: parking_lot::Mutex<HostState>,
}

pub(crate) type HostRef = Arc<HostEntry>;

/// Samples an append inserts per hold of its host's state lock.
const INSERTS_PER_LOCK: usize = 4096;

/// The store's state as opened from disk: rebuilt whole after a failure.
pub(crate) struct Inner {
    /// Which opening this is, for [`Pending`] tickets.
    pub(crate) incarnation: u64,
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    pub(crate) options: Options,
    pub(crate) index: RwLock<Index>,
    pub(crate) hosts: RwLock<HashMap<String, HostRef>>,
    pub(crate) commit: Committer,
    /// Kept across rebuilds: counters count since the store was opened.
    pub(crate) counters: Arc<Counters>,
    pub(crate) maintenance: Mutex<MaintenanceState>,
    /// The time partitions holding sealed chunks and snapshot blocks.
    pub(crate) partitions: crate::partition::Partitions,
    /// Decoded tails of sealed chunks that short reads of many series
    /// asked for; emptied by every write of raw chunks.
    pub(crate) tails: crate::tails::Tails,
}

pub(crate) fn poisoned() -> TsdbError {
    TsdbError::Failed("store state poisoned by an earlier panic".into())
}

pub(crate) fn lock(host: &HostRef) -> Result<parking_lot::MutexGuard<'_, HostState>, TsdbError> {
    Ok(host.state.lock())
}

impl Store {
    /// Opens the store in `dir` (created if missing): chunks and the index
    /// in a sled database there, the WAL in sled databases of its own under
    /// `dir/wal`. Replays the WAL and starts the background thread (if
    /// `options.maintenance_interval` is set), which maintains the store
    /// and rebuilds it after a failure. Damaged records are skipped and
    /// counted in [`Store::stats`], never fatal.
    pub fn open(dir: &Path, options: Options) -> Result<Self, TsdbError> {
        options.validate()?;
        let supervisor = Arc::new(Supervisor::open(dir, options)?);
        let worker = match supervisor.options.maintenance_interval {
            Some(interval) => Some(Worker::spawn(supervisor.clone(), interval)?),
            None => None,
        };
        Ok(Store {
            supervisor,
            worker,
            backup: Mutex::new(()),
        })
    }

    /// Stores a batch durably, unless (host, source, seq) was stored before:
    /// returns once the batch's WAL frame is flushed, sharing the flush with
    /// concurrent appends. Invalid samples are counted in the outcome, not
    /// stored; the rest of the batch is. The same as [`Store::submit`]
    /// followed by [`Store::wait`].
    pub fn append(&self, batch: &Batch) -> Result<AppendOutcome, TsdbError> {
        let pending = self.submit(batch)?;
        self.wait(pending)
    }

    /// Queues a batch for the next commit group without waiting for it to
    /// be durable: its samples are in the head (visible to queries) at
    /// once; [`Store::wait`] on the returned ticket says when the batch may
    /// be acknowledged. A caller with many streams keeps several batches in
    /// flight this way, so one flush carries more of them. A queued group
    /// is written when some caller waits (or maintenance runs), so every
    /// ticket should be waited on. Refused ([`TsdbError::ReadOnly`],
    /// [`TsdbError::Failed`]) while the store is not storing.
    pub fn submit(&self, batch: &Batch) -> Result<Pending, TsdbError> {
        self.supervisor.admit()?;
        let inner = self.supervisor.inner()?;
        self.supervisor.written(inner.submit(batch))
    }

    /// Returns once the batch of `pending` is durable (flushing as the
    /// leader of a commit group when no other thread is), with its outcome.
    /// An error means the store failed (see [`TsdbError::Failed`]): the
    /// batch must not be acknowledged.
    pub fn wait(&self, pending: Pending) -> Result<AppendOutcome, TsdbError> {
        let inner = self.supervisor.inner()?;
        if pending.incarnation != inner.incarnation {
            return Err(TsdbError::Failed(
                "the store was rebuilt after a failure since the batch was submitted: \
                 it is not known durable"
                    .into(),
            ));
        }
        if let Some(group) = pending.group {
            self.supervisor.written(inner.commit.wait(group))?;
        }
        Ok(pending.outcome)
    }

    /// Highest sequence stored for (host, source), 0 if none.
    /// Only durable batches count: a batch still being written may yet
    /// fail, and whoever is told it is stored drops its copy.
    pub fn last_seq(&self, host: &str, source: u64) -> Result<u64, TsdbError> {
        let inner = self.supervisor.inner()?;
        let Some(state) = inner.host(host)? else {
            return Ok(0);
        };
        let mut state = lock(&state)?;
        Ok(state.known_source(source).map_or(0, |s| {
            s.promote(inner.commit.durable());
            s.durable()
        }))
    }

    /// Series of `metric` matching every matcher, sorted by key.
    pub fn select(
        &self,
        metric: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesKey, u64)>, TsdbError> {
        Ok(self
            .supervisor
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
        self.supervisor.inner()?.select(metric, matchers)
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
        let Some(state) = self.supervisor.inner()?.host(host)? else {
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
        self.supervisor.inner()?.snapshot_at(host, at_ms)
    }

    /// The state as opened from disk; refused while it is being rebuilt.
    pub(crate) fn inner(&self) -> Result<Arc<Inner>, TsdbError> {
        self.supervisor.inner()
    }

    pub(crate) fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub(crate) fn backup_lock(&self) -> &Mutex<()> {
        &self.backup
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl Inner {
    /// Opens the state on disk in `dir`: the index in `db`, sealed chunks
    /// in the partitions under `dir/partitions` (a store of an older
    /// format migrated first), the WAL under `dir/wal`, replayed into the
    /// head.
    pub(crate) fn open(
        db: sled::Db,
        dir: &Path,
        options: Options,
        counters: Arc<Counters>,
        incarnation: u64,
    ) -> Result<Self, TsdbError> {
        let tree = db.open_tree("tsdb")?;
        let partitions =
            crate::partition::Partitions::open(dir, tree.clone(), &options, counters.clone())?;
        crate::partition::check_format(dir, &tree, &partitions)?;
        let wal_dir = &dir.join("wal");
        let generations = Generation::open_all(wal_dir)?;
        // Definitions of series created since the oldest WAL generation
        // are only there until it is deleted.
        let wal_trees = generations
            .iter()
            .map(|g| Ok((*g.db()?).clone()))
            .collect::<Result<Vec<_>, TsdbError>>()?;
        let index = read_index(std::iter::once(tree.clone()).chain(wal_trees), &counters)?;
        let mut hosts = hosts_of(&index);
        read_last_points(&tree, &index, &mut hosts, &counters)?;
        read_sequences(&tree, &mut hosts, &counters)?;
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
            .map(|(name, state)| {
                let entry = HostEntry {
                    state: parking_lot::Mutex::new(state),
                    ..HostEntry::default()
                };
                (name, Arc::new(entry))
            })
            .collect();
        let tails = crate::tails::Tails::new(options.read_cache_bytes);
        let inner = Inner {
            incarnation,
            commit: Committer::new(
                wal_dir,
                generations,
                next_group.max(1),
                options.accept_log.then(|| tree.clone()),
            )?,
            db,
            tree,
            options,
            index: RwLock::new(index),
            hosts: RwLock::new(hosts),
            counters,
            maintenance: Mutex::new(MaintenanceState::default()),
            partitions,
            tails,
        };
        inner.replay(low)?;
        if inner.options.accept_log {
            inner
                .commit
                .with_generations(|generations| inner.rebuild_accept_log(generations, low))?;
        }
        // Everything is durable now: the generations replay read are
        // closed, and their pages with them.
        inner.commit.close_idle()?;
        Ok(inner)
    }

    /// The state of `host`, if it has ever stored anything.
    pub(crate) fn host(&self, host: &str) -> Result<Option<HostRef>, TsdbError> {
        Ok(self
            .hosts
            .read()
            .map_err(|_| poisoned())?
            .get(host)
            .cloned())
    }

    /// The state of each of `names`, in order, looked up under one hold
    /// of the hosts' lock.
    pub(crate) fn hosts_of<'n>(
        &self,
        names: impl Iterator<Item = &'n str>,
    ) -> Result<Vec<Option<HostRef>>, TsdbError> {
        let hosts = self.hosts.read().map_err(|_| poisoned())?;
        Ok(names.map(|name| hosts.get(name).cloned()).collect())
    }

    fn host_or_create(&self, host: &str) -> Result<HostRef, TsdbError> {
        if let Some(state) = self.host(host)? {
            return Ok(state);
        }
        let mut hosts = self.hosts.write().map_err(|_| poisoned())?;
        Ok(hosts
            .entry(host.to_owned())
            .or_insert_with(Arc::default)
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
        state.source(record.source).replayed(record.seq);
        let now = (self.options.clock)();
        for (id, mut points) in record.series {
            if !state.has_series(id) {
                // Its definition is missing or damaged: nothing to file the samples under.
                bump(&self.counters.orphan_samples, points.len() as u64);
                continue;
            }
            bump(&self.counters.replayed_samples, points.len() as u64);
            // Appends write each series' samples sorted; a stable sort
            // keeps the order of equal times, which decides the value kept.
            points.sort_by_key(|p| p.t_ms);
            let mut ignored = Inserts::default();
            self.insert_runs(
                &mut state,
                id,
                &points,
                group,
                Mode::Replay(sealed),
                now,
                &mut ignored,
            )?;
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

    /// Puts samples of one series (sorted by time) into their windows,
    /// opening (or reopening from its sealed chunk) each window first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_runs(
        &self,
        state: &mut HostState,
        id: u64,
        points: &[Point],
        lsn: u64,
        mut mode: Mode<'_>,
        now: i64,
        counts: &mut Inserts,
    ) -> Result<(), TsdbError> {
        let window_of = |p: &Point| self.options.window_of(p.t_ms);
        for run in points.chunk_by(|a, b| window_of(a) == window_of(b)) {
            let start = window_of(&run[0]);
            if self.open_window(state, id, start, lsn, &mut mode)? {
                if let Some(series) = state.series_mut(id) {
                    let max = self.options.max_window_samples;
                    series.insert_run(start, run, lsn, now, max, counts);
                }
            } else {
                counts.duplicate += run.len() as u64;
            }
        }
        Ok(())
    }

    /// Makes window `start` of a series open for samples of group `lsn`;
    /// false when they are not to be inserted (a sealed chunk already
    /// holds the group, in replay; or the series is unknown).
    fn open_window(
        &self,
        state: &mut HostState,
        id: u64,
        start: i64,
        lsn: u64,
        mode: &mut Mode<'_>,
    ) -> Result<bool, TsdbError> {
        let Some(series) = state.series_mut(id) else {
            return Ok(false);
        };
        if series.has_window(start) {
            return Ok(true);
        }
        if let Mode::Replay(sealed) = mode
            && sealed.series.get(&(id, start)).is_some_and(|&m| m >= lsn)
        {
            return Ok(false);
        }
        // No sealed chunk starts after the window of the newest sealed
        // sample (the `L` record), so new windows need no lookup.
        let may_be_sealed = series.may_be_sealed(start, |t| self.options.window_of(t));
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
                return Ok(false);
            }
        }
        series.open_window(start, base, base_lsn, lsn);
        Ok(true)
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
        if !state.has_snapshot_window(start) {
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
        let key = keys::chunk(keys::TIER_RAW, id, start);
        let Some(value) = self.partitions.value(start, &key)? else {
            return Ok(None);
        };
        Ok(self.decoded(chunk::decode_raw(&value), "chunk", id, start))
    }

    fn sealed_snapshots(
        &self,
        host: &str,
        start: i64,
    ) -> Result<Option<(u64, Vec<ProcessSnapshot>)>, TsdbError> {
        let Some(value) = self
            .partitions
            .value(start, &keys::snapshots(host, start))?
        else {
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
        let _in_order = state.appends.lock().map_err(|_| poisoned())?;
        let mut guard = lock(&state)?;
        let host = &mut *guard;
        let mut outcome = AppendOutcome::default();
        let source = host.source(batch.source);
        source.promote(self.commit.durable());
        if batch.seq <= source.highest() {
            // A replay: acknowledge it once the original is durable too.
            let group = source.newest_group();
            drop(guard);
            bump(&self.counters.duplicate_batches, 1);
            outcome.duplicate = true;
            return Ok(Pending {
                incarnation: self.incarnation,
                group,
                outcome,
            });
        }
        let now = (self.options.clock)();
        let mut defs = Vec::new();
        let listed = self.list_series(batch, host, &mut defs, &mut outcome);
        let accepted = self.accept_samples(listed, host, now, &mut outcome);
        let snapshots = self.accept_snapshots(batch, now, &mut outcome);
        drop(guard);
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
        let mut log = Vec::new();
        if self.options.accept_log {
            crate::forward::encode_record(&accepted, &mut log);
        }
        let group = self.commit.enqueue(&frame, defs, &log)?;
        let mut guard = lock(&state)?;
        guard.source(batch.source).push_pending(group, batch.seq);
        drop(guard);
        self.insert_accepted(&state, &accepted, group, now, &mut outcome)?;
        outcome.rejected.malformed += batch.malformed;
        let mut guard = lock(&state)?;
        for s in snapshots {
            if self.insert_snapshot(&batch.host, &mut guard, s, group, Mode::Append, now)?
                == Inserted::Stored
            {
                bump(&self.counters.snapshots, 1);
            }
        }
        drop(guard);
        bump(&self.counters.batches, 1);
        bump(&self.counters.samples, outcome.stored);
        self.counters.reject(&outcome.rejected);
        Ok(Pending {
            incarnation: self.incarnation,
            group: Some(group),
            outcome,
        })
    }

    /// The batch's series, each once with the inputs that list it: a
    /// series listed twice is validated and stored as one, so a batch's
    /// work stays linear in its samples however it repeats itself. Series
    /// it cannot resolve (invalid, over the host's limit) are counted in
    /// `outcome`; definitions of series it creates go to `defs`.
    fn list_series<'b>(
        &self,
        batch: &'b Batch,
        host: &mut HostState,
        defs: &mut Vec<(Vec<u8>, Vec<u8>)>,
        outcome: &mut AppendOutcome,
    ) -> Vec<(u64, &'b SeriesInput, Vec<&'b SeriesInput>)> {
        let mut listed: Vec<(u64, &SeriesInput, Vec<&SeriesInput>)> =
            Vec::with_capacity(batch.series.len());
        let mut position: IdMap<usize> = IdMap::default();
        let mut shape = ShapeMatch::new(host.take_last_batch());
        for input in &batch.series {
            if input.points.is_empty() {
                continue;
            }
            let n = input.points.len() as u64;
            let known = shape.known(input).filter(|id| host.has_series(*id));
            let resolved = match known {
                Some(id) => Ok(Some(id)),
                None => self.resolve(&batch.host, host, input, defs),
            };
            shape.record(resolved.as_ref().ok().copied().flatten());
            match resolved {
                Ok(Some(id)) => match position.entry(id) {
                    std::collections::hash_map::Entry::Occupied(at) => {
                        listed[*at.get()].2.push(input)
                    }
                    std::collections::hash_map::Entry::Vacant(at) => {
                        at.insert(listed.len());
                        listed.push((id, input, Vec::new()));
                    }
                },
                Ok(None) => {
                    outcome.rejected.series_limit += n;
                    outcome.first_error.get_or_insert_with(|| {
                        format!(
                            "host {} reached its limit of {} series; {} not created",
                            batch.host, self.options.max_series_per_host, input.metric
                        )
                    });
                }
                Err(e) => {
                    outcome.rejected.invalid_series += n;
                    outcome.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        host.set_last_batch(shape.finish(batch.series.iter().filter(|s| !s.points.is_empty())));
        listed
    }

    /// The samples of `listed` the store accepts, as (series id, point)
    /// with each series' points adjacent and in time order; the others are
    /// counted in `outcome` by reason.
    fn accept_samples(
        &self,
        listed: Vec<(u64, &SeriesInput, Vec<&SeriesInput>)>,
        host: &HostState,
        now: i64,
        outcome: &mut AppendOutcome,
    ) -> Vec<(u64, Point)> {
        let oldest = now.saturating_sub(self.options.retention_ms);
        let newest = now.saturating_add(self.options.future_tolerance_ms);
        let mut accepted: Vec<(u64, Point)> = Vec::with_capacity(listed.len());
        for (id, first, more) in listed {
            let Some(series) = host.series(id) else {
                continue;
            };
            // Sorted, so that in-order samples append and the others are
            // merged once; the sort is stable, so of equal times the one
            // listed first is kept.
            let points: std::borrow::Cow<'_, [Point]> =
                if more.is_empty() && first.points.is_sorted_by_key(|p| p.t_ms) {
                    std::borrow::Cow::Borrowed(&first.points)
                } else {
                    let mut all: Vec<Point> = first.points.clone();
                    for input in more {
                        all.extend_from_slice(&input.points);
                    }
                    all.sort_by_key(|p| p.t_ms);
                    std::borrow::Cow::Owned(all)
                };
            let newest_before = series.max_t();
            for p in points.iter() {
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
                } else if newest_before != i64::MIN
                    && p.t_ms < newest_before.saturating_sub(self.options.out_of_order_tolerance_ms)
                {
                    rejected.out_of_order += 1;
                    "timestamp older than the series' newest sample by more than the out-of-order tolerance"
                } else {
                    accepted.push((id, *p));
                    continue;
                };
                outcome.first_error.get_or_insert_with(|| {
                    format!("{}: sample {p:?} rejected: {why}", series.key())
                });
            }
        }
        accepted
    }

    /// The batch's process snapshots within the accepted time window; the
    /// others are counted in `outcome`.
    fn accept_snapshots<'b>(
        &self,
        batch: &'b Batch,
        now: i64,
        outcome: &mut AppendOutcome,
    ) -> Vec<&'b ProcessSnapshot> {
        let oldest = now.saturating_sub(self.options.retention_ms);
        let newest = now.saturating_add(self.options.future_tolerance_ms);
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
        snapshots
    }

    /// Inserts the accepted samples of group `group` into the host's head,
    /// holding its state lock for [`INSERTS_PER_LOCK`] samples at a time;
    /// what the windows refuse is counted in `outcome`.
    fn insert_accepted(
        &self,
        state: &HostRef,
        accepted: &[(u64, Point)],
        group: u64,
        now: i64,
        outcome: &mut AppendOutcome,
    ) -> Result<(), TsdbError> {
        let mut guard = lock(state)?;
        let mut counts = Inserts::default();
        let mut held = 0;
        let mut points: Vec<Point> = Vec::new();
        for run in accepted.chunk_by(|a, b| a.0 == b.0) {
            for piece in run.chunks(INSERTS_PER_LOCK) {
                if held >= INSERTS_PER_LOCK {
                    // Queries and maintenance of the host go in between.
                    parking_lot::MutexGuard::bump(&mut guard);
                    held = 0;
                }
                held += piece.len();
                let id = piece[0].0;
                points.clear();
                points.extend(piece.iter().map(|(_, p)| *p));
                let before = counts;
                self.insert_runs(
                    &mut guard,
                    id,
                    &points,
                    group,
                    Mode::Append,
                    now,
                    &mut counts,
                )?;
                if counts.duplicate > before.duplicate || counts.too_dense > before.too_dense {
                    outcome.first_error.get_or_insert_with(|| {
                        let key = guard.series(id).map(|s| s.key().to_string()).unwrap_or_default();
                        if counts.too_dense > before.too_dense {
                            format!(
                                "{key}: samples rejected: a series holds at most {} samples in one {} ms window",
                                self.options.max_window_samples, self.options.chunk_window_ms
                            )
                        } else {
                            format!("{key}: samples rejected: a sample at that time is already stored")
                        }
                    });
                }
            }
        }
        outcome.stored += counts.stored;
        outcome.rejected.duplicate += counts.duplicate;
        outcome.rejected.too_dense += counts.too_dense;
        Ok(())
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
        if host.series_count() >= self.options.max_series_per_host {
            return Ok(None);
        }
        let mut index = self.index.write().map_err(|_| poisoned())?;
        let id = index.next_id;
        let held = index.insert_created(id, &key);
        drop(index);
        defs.push((keys::series(id).to_vec(), key.encode()));
        host.add(id, held);
        Ok(Some(id))
    }

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
            for entry in db.range(from.clone()..=to.clone()).rev() {
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
/// The series id in a key of the form `prefix, id (8 bytes), ...`.
fn key_series_id(key: &[u8]) -> Option<u64> {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// The series definitions in `trees` (the store's, then the WAL
/// generations'); the first definition of an id wins, and one that does
/// not decode is counted.
fn read_index(
    trees: impl Iterator<Item = sled::Tree>,
    counters: &Counters,
) -> Result<Index, TsdbError> {
    let mut index = Index::default();
    index.next_id = 1;
    for tree in trees {
        for entry in tree.scan_prefix([keys::SERIES]) {
            let (key, value) = entry?;
            let id = key_series_id(&key);
            match (id, SeriesKey::decode(&value)) {
                (Some(id), _) if index.keys.contains_key(&id) => {}
                (Some(id), Ok(series)) if key.len() == 9 => {
                    index.insert(id, &series);
                }
                _ => bump(&counters.corrupt_series, 1),
            }
        }
    }
    index.order_all();
    Ok(index)
}

/// The hosts of the series in `index`, each with its series.
fn hosts_of(index: &Index) -> HashMap<String, HostState> {
    let mut hosts: HashMap<String, HostState> = HashMap::new();
    for (id, key) in &index.keys {
        let host = hosts.entry(key.host().to_owned()).or_default();
        host.add_stored(*id, key.clone());
    }
    hosts
}

/// Reads each series' newest sealed point (its `L` record) into `hosts`;
/// a record of no known series, or one that does not decode, is counted.
fn read_last_points(
    tree: &sled::Tree,
    index: &Index,
    hosts: &mut HashMap<String, HostState>,
    counters: &Counters,
) -> Result<(), TsdbError> {
    for entry in tree.scan_prefix([keys::LAST]) {
        let (key, value) = entry?;
        let series = key_series_id(&key)
            .and_then(|id| index.keys.get(&id).map(|k| (id, k)))
            .and_then(|(id, k)| hosts.get_mut(k.host())?.series_mut(id));
        match (series, keys::decode_last(&value)) {
            (Some(series), Some(p)) => series.restore_last(p),
            _ => bump(&counters.corrupt_series, 1),
        }
    }
    Ok(())
}

/// Reads the persisted batch sequence of each (host, source) into
/// `hosts`; a record that does not decode is counted.
fn read_sequences(
    tree: &sled::Tree,
    hosts: &mut HashMap<String, HostState>,
    counters: &Counters,
) -> Result<(), TsdbError> {
    for entry in tree.scan_prefix([keys::SEQUENCE]) {
        let (key, value) = entry?;
        match (keys::parse_sequence(&key), <[u8; 8]>::try_from(&value[..])) {
            (Some((host, source)), Ok(seq)) => {
                let seq = u64::from_be_bytes(seq);
                let state = hosts.entry(host.to_owned()).or_default();
                state.source(source).restore(seq);
            }
            _ => bump(&counters.corrupt_sequences, 1),
        }
    }
    Ok(())
}
