//! Keeping the store whole: the free-space reserve, failures and
//! rebuilding from disk, and the background thread.
//!
//! A write that fails (a WAL group commit, or maintenance) leaves memory
//! ahead of the disk: the head holds samples of a group that may not be
//! durable, and sled refuses every write after an I/O error until its
//! database is opened again. So nothing is undone in place: the store
//! refuses appends ([`TsdbError::Failed`]) and rebuilds its whole state
//! from disk (its sled databases reopened, the WAL replayed), which holds
//! exactly what is durable. The background thread tries every second, once
//! the free space is back above the reserve (and a few MiB in any case);
//! until the rebuild starts, the failed state still answers reads.
//!
//! The reserve: while the file system holding the store has less than
//! [`Options::min_free_bytes`] free, appends are refused
//! ([`TsdbError::ReadOnly`]) before the disk is full, so the writes that
//! free space (sealing, which deletes WAL generations, and retention) and
//! the other programs on the host still have room.

use crate::TsdbError;
use crate::maintain::MaintenanceReport;
use crate::options::Options;
use crate::store::{Counters, Inner, bump};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often appends look at the free space: a disk filling at full
/// ingest speed is noticed within this, so the reserve must absorb this
/// long of writes.
const SPACE_CHECK: Duration = Duration::from_millis(250);
/// How often the background thread looks at the free space and, after a
/// failure, tries to rebuild.
const RECOVERY_TICK: Duration = Duration::from_secs(1);
/// Free space a reopen of a sled database after a failure waits for (when
/// the reserve is smaller): reopening its files and starting to write
/// again needs some, and a rebuild that fails for want of it leaves the
/// store without a state to read from.
pub const REOPEN_MIN_FREE_BYTES: u64 = 8 << 20;
/// How long a rebuild waits for calls still using the failed state.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the store stores appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Condition {
    #[default]
    Storing,
    /// Less free space than the reserve: appends are refused; reads and
    /// maintenance go on.
    ReadOnly,
    /// A write failed: appends are refused until the state is rebuilt
    /// from disk.
    Failed { cause: String },
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Storing => f.write_str("storing"),
            Condition::ReadOnly => f.write_str("read-only"),
            Condition::Failed { .. } => f.write_str("failed"),
        }
    }
}

/// The store's condition and what it is based on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub condition: Condition,
    /// When the condition began (ms since the epoch, the store's clock).
    pub since_ms: i64,
    /// Rebuilds after failures since the store was opened.
    pub recoveries: u64,
    /// Free bytes of the store's file system at the last look.
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

impl Health {
    /// Why appends are refused, for an error or a log line; `None` while storing.
    pub fn refusal(&self) -> Option<String> {
        match &self.condition {
            Condition::Storing => None,
            Condition::ReadOnly => Some(format!(
                "{} bytes free on the store's file system, under the reserve of {} (min_free_bytes)",
                self.free_bytes, self.min_free_bytes
            )),
            Condition::Failed { cause } => Some(format!(
                "a write failed ({cause}); rebuilding from disk once writes can succeed"
            )),
        }
    }
}

/// What outlives a rebuild: where the store lives, its options and
/// counters, its condition, and the state currently opened from disk.
pub(crate) struct Supervisor {
    dir: PathBuf,
    pub(crate) options: Options,
    counters: Arc<Counters>,
    /// `None` while a rebuild is under way or has not succeeded yet.
    current: RwLock<Option<Arc<Inner>>>,
    health: Mutex<Health>,
    /// Openings so far: each state's number, for its tickets.
    incarnations: AtomicU64,
    /// When the free space was last looked at, in ms since `started`.
    space_checked_ms: AtomicU64,
    started: Instant,
    /// One rebuild at a time.
    rebuilding: Mutex<()>,
    /// Set when the store is being dropped: a partition rewrite under way
    /// stops (it is done again later), so closing does not wait for it.
    pub(crate) closing: AtomicBool,
}

fn poisoned() -> TsdbError {
    TsdbError::Failed("store health poisoned by an earlier panic".into())
}

impl Supervisor {
    pub(crate) fn open(dir: &Path, options: Options) -> Result<Self, TsdbError> {
        let counters = Arc::new(Counters::default());
        let inner = open_state(dir, &options, counters.clone(), 1)?;
        let supervisor = Supervisor {
            dir: dir.to_owned(),
            counters,
            current: RwLock::new(Some(Arc::new(inner))),
            health: Mutex::new(Health {
                since_ms: (options.clock)(),
                min_free_bytes: options.min_free_bytes,
                ..Health::default()
            }),
            options,
            incarnations: AtomicU64::new(1),
            space_checked_ms: AtomicU64::new(0),
            started: Instant::now(),
            rebuilding: Mutex::new(()),
            closing: AtomicBool::new(false),
        };
        supervisor.check_space(true)?;
        Ok(supervisor)
    }

    fn health_lock(&self) -> Result<MutexGuard<'_, Health>, TsdbError> {
        self.health.lock().map_err(|_| poisoned())
    }

    /// Counted since the store was opened, across rebuilds.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn health(&self) -> Result<Health, TsdbError> {
        Ok(self.health_lock()?.clone())
    }

    /// The state as opened from disk.
    pub(crate) fn inner(&self) -> Result<Arc<Inner>, TsdbError> {
        self.current
            .read()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or_else(|| {
                TsdbError::Failed("the store is being rebuilt from disk after a failure".into())
            })
    }

    /// Refuses an append while the store is not storing.
    pub(crate) fn admit(&self) -> Result<(), TsdbError> {
        self.check_space(false)?;
        let health = self.health_lock()?;
        match (&health.condition, health.refusal()) {
            (Condition::ReadOnly, Some(why)) => Err(TsdbError::ReadOnly(why)),
            (_, Some(why)) => Err(TsdbError::Failed(why)),
            (_, None) => Ok(()),
        }
    }

    /// Passes on the result of a write, marking the store failed if the
    /// write failed.
    pub(crate) fn written<T>(&self, result: Result<T, TsdbError>) -> Result<T, TsdbError> {
        if let Err(e @ (TsdbError::Failed(_) | TsdbError::Sled(_))) = &result {
            self.fail(e.to_string())?;
        }
        result
    }

    fn fail(&self, cause: String) -> Result<(), TsdbError> {
        let mut health = self.health_lock()?;
        if matches!(health.condition, Condition::Failed { .. }) {
            return Ok(());
        }
        tracing::error!(error = %cause, "store failed: refusing appends until it is rebuilt from disk");
        health.condition = Condition::Failed { cause };
        health.since_ms = (self.options.clock)();
        Ok(())
    }

    /// Looks at the free space (at most every [`SPACE_CHECK`] unless
    /// `force`) and enters or leaves read-only.
    pub(crate) fn check_space(&self, force: bool) -> Result<(), TsdbError> {
        let min = self.options.min_free_bytes;
        if min == 0 {
            return Ok(());
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.space_checked_ms.load(Ordering::Relaxed);
        if !force {
            let due = now.saturating_sub(last) >= SPACE_CHECK.as_millis() as u64;
            // One caller looks; the others go on with the last figure.
            if !due
                || self
                    .space_checked_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return Ok(());
            }
        }
        let free = free_bytes(&self.dir)?;
        let mut health = self.health_lock()?;
        health.free_bytes = free;
        let now_ms = (self.options.clock)();
        match health.condition {
            Condition::Storing if free < min => {
                health.condition = Condition::ReadOnly;
                health.since_ms = now_ms;
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = min,
                    "store read-only: free space under the reserve; appends refused until it is back"
                );
            }
            Condition::ReadOnly if free >= min => {
                health.condition = Condition::Storing;
                health.since_ms = now_ms;
                tracing::info!(
                    free_bytes = free,
                    "store storing again: free space above the reserve"
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// One maintenance pass over the current state.
    pub(crate) fn maintain(&self, force: bool) -> Result<MaintenanceReport, TsdbError> {
        let inner = self.inner()?;
        let result = inner.maintain(force, &self.closing);
        if result.is_err() {
            bump(&self.counters.maintenance_errors, 1);
        }
        self.written(result)
    }

    /// After a failure, rebuilds the state from disk once the free space is
    /// back above the reserve. Returns whether the store stores (or is
    /// read-only) again.
    pub(crate) fn recover(&self) -> Result<bool, TsdbError> {
        let _one = self.rebuilding.lock().map_err(|_| poisoned())?;
        if !matches!(self.health_lock()?.condition, Condition::Failed { .. }) {
            return Ok(true);
        }
        self.check_space(true)?;
        let free = free_bytes(&self.dir)?;
        if free < self.options.min_free_bytes.max(REOPEN_MIN_FREE_BYTES) {
            // Meanwhile the failed state still answers reads.
            return Ok(false);
        }
        let old = self.current.write().map_err(|_| poisoned())?.take();
        if let Some(old) = old {
            // Its databases close when the calls still using it let go.
            let deadline = Instant::now() + RELEASE_TIMEOUT;
            while Arc::strong_count(&old) > 1 {
                if Instant::now() >= deadline {
                    *self.current.write().map_err(|_| poisoned())? = Some(old);
                    return Err(TsdbError::Failed(
                        "the failed state is still in use; rebuilding later".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(old);
        }
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed) + 1;
        match open_state(&self.dir, &self.options, self.counters.clone(), incarnation) {
            Ok(inner) => {
                *self.current.write().map_err(|_| poisoned())? = Some(Arc::new(inner));
                let mut health = self.health_lock()?;
                health.condition = Condition::Storing;
                health.since_ms = (self.options.clock)();
                health.recoveries += 1;
                drop(health);
                tracing::info!("store rebuilt from disk after a failure: storing again");
                self.check_space(true)?;
                Ok(true)
            }
            Err(e) => {
                let mut health = self.health_lock()?;
                health.condition = Condition::Failed {
                    cause: format!("rebuilding from disk failed: {e}"),
                };
                Err(e)
            }
        }
    }
}

/// Opens the state in `dir`. Files are synced first: a failed instance's
/// writes that never reached its flush are read back, and are made durable
/// before anyone is told they are stored.
fn open_state(
    dir: &Path,
    options: &Options,
    counters: Arc<Counters>,
    incarnation: u64,
) -> Result<Inner, TsdbError> {
    std::fs::create_dir_all(dir).map_err(|e| TsdbError::io("create", dir, e))?;
    sync_files(dir)?;
    let db = crate::commit::open_sled(dir, options.cache_bytes)?;
    Inner::open(db, dir, options.clone(), counters, incarnation)
}

/// Syncs every file below `dir`.
fn sync_files(dir: &Path) -> Result<(), TsdbError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TsdbError::io("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| TsdbError::io("list", dir, e))?.path();
        if path.is_dir() {
            sync_files(&path)?;
        } else if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| TsdbError::io("sync", &path, e))?;
        }
    }
    Ok(())
}

/// Bytes of the file system holding `dir` available to this process.
pub fn free_bytes(dir: &Path) -> Result<u64, TsdbError> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| TsdbError::io("read the free space of", dir, e.into()))?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The background thread: maintenance every interval, and every
/// [`RECOVERY_TICK`] a look at the free space and, after a failure, a
/// rebuild. Dropping the sender stops it.
pub(crate) struct Worker {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Worker {
    pub(crate) fn spawn(
        supervisor: Arc<Supervisor>,
        interval: Duration,
    ) -> Result<Self, TsdbError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("tsdb-maintenance".into())
            .spawn(move || {
                let mut next_pass = Instant::now() + interval;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval.min(RECOVERY_TICK))
                {
                    if let Err(e) = supervisor.check_space(true) {
                        tracing::warn!(error = %e, "cannot read the store's free space");
                    }
                    let failed = supervisor
                        .health()
                        .is_ok_and(|h| matches!(h.condition, Condition::Failed { .. }));
                    if failed {
                        // The failure was logged when it happened; a rebuild
                        // that fails again keeps the store failed, with that
                        // cause in its health.
                        let _ = supervisor.recover();
                        continue;
                    }
                    if Instant::now() < next_pass {
                        continue;
                    }
                    next_pass = Instant::now() + interval;
                    match supervisor.maintain(false) {
                        // A failed write was logged as the store's failure.
                        Err(TsdbError::Failed(_) | TsdbError::Sled(_)) | Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "storage maintenance failed"),
                    }
                }
            })
            .map_err(|e| TsdbError::Failed(format!("cannot start the maintenance thread: {e}")))?;
        Ok(Worker { stop, handle })
    }

    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, Matcher, Point, SeriesInput};
    use crate::store::Store;

    const NOW: i64 = 1_800_000_000_000;

    fn options() -> Options {
        Options {
            clock: Arc::new(|| NOW),
            maintenance_interval: None,
            ..Options::default()
        }
    }

    fn batch(seq: u64) -> Batch {
        Batch {
            host: "a".into(),
            source: 7,
            seq,
            series: vec![SeriesInput {
                metric: "m".into(),
                labels: vec![],
                points: vec![Point {
                    t_ms: NOW - 1_000 + seq as i64,
                    value: seq as f64,
                }],
            }],
            processes: vec![],
            malformed: 0,
        }
    }

    fn stored(store: &Store) -> Vec<f64> {
        let host = Matcher::Equal("host".into(), "a".into());
        store
            .range("m", &[host], 0, i64::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.points)
            .map(|p| p.value)
            .collect()
    }

    #[test]
    fn a_failed_commit_is_never_reported_stored_and_the_store_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options()).unwrap();
        store.append(&batch(1)).unwrap();
        let fail = |on: bool| {
            let inner = store.inner().unwrap();
            inner.commit.fail_writes.store(on, Ordering::Relaxed);
        };
        fail(true);
        let error = store.append(&batch(2)).unwrap_err();
        assert!(error.to_string().contains("no storage space"), "{error}");
        // What a Welcome tells the agent: only the durable batch.
        assert_eq!(store.last_seq("a", 7).unwrap(), 1);
        let health = store.health().unwrap();
        assert!(
            matches!(health.condition, Condition::Failed { .. }),
            "{health:?}"
        );
        assert_eq!(store.stats().unwrap().health, health);
        assert!(matches!(store.append(&batch(3)), Err(TsdbError::Failed(_))));
        assert!(store.verify().is_err());
        fail(false);
        assert!(store.recover().unwrap());
        let health = store.health().unwrap();
        assert_eq!(
            (health.condition, health.recoveries),
            (Condition::Storing, 1)
        );
        // Batch 2 never reached the disk: it is gone from memory too, and
        // its resend is stored, not taken for a replay.
        assert_eq!(store.last_seq("a", 7).unwrap(), 1);
        assert_eq!(stored(&store), vec![1.0]);
        let out = store.append(&batch(2)).unwrap();
        assert_eq!((out.duplicate, out.stored), (false, 1));
        assert_eq!(stored(&store), vec![1.0, 2.0]);
        assert!(store.verify().unwrap().is_clean());
        drop(store);
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(stored(&store), vec![1.0, 2.0]);
    }

    #[test]
    fn a_ticket_from_before_a_rebuild_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options()).unwrap();
        let pending = store.submit(&batch(1)).unwrap();
        store
            .inner()
            .unwrap()
            .commit
            .fail_writes
            .store(true, Ordering::Relaxed);
        assert!(store.append(&batch(2)).is_err());
        assert!(store.recover().unwrap());
        assert!(store.wait(pending).is_err());
        assert_eq!(store.last_seq("a", 7).unwrap(), 0);
    }
}
