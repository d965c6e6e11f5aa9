//! The store: the [`Store`] facade and the state it opens from disk
//! ([`Inner`]), shared by the modules that work on it.
//!
//! The index, the sequences and the metadata live in one sled tree,
//! `tsdb` (layout in `keys`); sealed chunks and snapshot blocks in time
//! partitions (see `partition`); the WAL in sled databases of its own
//! (see `commit`). See the crate documentation for the life of a sample.
//!
//! Layout:
//! - `open`: the state read from disk, then the WAL replayed into the head;
//! - `append`: a batch validated, its WAL frame queued, then applied;
//! - `apply`: samples and snapshots of a WAL group put into the head,
//!   for appends and replay alike;
//! - beside this folder, `read` (reads), `query` (steps and
//!   aggregations) and `maintain` (sealing, WAL truncation, retention)
//!   add their methods to [`Inner`] and [`Store`].

use crate::TsdbError;
use crate::commit::Committer;
use crate::head::HostState;
use crate::index::Index;
use crate::maintain::MaintenanceState;
use crate::model::{AppendOutcome, Batch, Rejections};
use crate::options::Options;
use crate::supervise::{Supervisor, Worker};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod append;
mod apply;
mod open;

/// The time-series store. Cheap to share behind an `Arc`; every method
/// takes `&self`, and appends from many threads share flushes.
pub struct Store {
    supervisor: Arc<Supervisor>,
    worker: Option<Worker>,
    /// Held by the backup running, if any: one at a time.
    backup: Mutex<()>,
}

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
    /// Durations of maintenance passes' phases, by [`crate::MaintenancePhase`].
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
            self.supervisor.closing.store(true, Ordering::Release);
            worker.stop();
        }
    }
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
}
