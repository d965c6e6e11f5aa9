//! Group commit into the WAL: concurrent appends share one sled write and
//! one flush.
//!
//! An append enqueues its WAL frame and gets the number of the group that
//! will carry it (the group's LSN). Then it waits: the first waiter that
//! finds no flush in progress becomes the leader, takes everything queued
//! so far as one group, writes it in one atomic sled batch, flushes, marks
//! the group durable and wakes the others. Appends arriving during a flush
//! queue up for the next group, so the number of flushes follows the disk,
//! not the number of writers.
//!
//! The WAL lives in sled databases of its own, its *generations*
//! (`<wal dir>/<number>/`), apart from the chunks: a WAL record lives
//! about an hour, and deleted records would otherwise leave garbage in the
//! chunks' sled file that sled reclaims only slowly (a segment is cleaned
//! once half of it is dead). New groups go to the newest generation;
//! maintenance starts a new one when the newest is large or holds nothing
//! unsealed, and deletes a whole older generation (its directory) once
//! every group in it is sealed. A group is one atomic sled batch in one
//! generation: its frames and the definitions of the series it created.
//!
//! A failed write or flush poisons the committer: the frames may or may not
//! be on disk, but they are already visible in memory, so the store refuses
//! every later append rather than acknowledge anything it cannot vouch for.

use crate::TsdbError;
use crate::keys;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Largest WAL value written: sled stores values over a quarter of its
/// segment (512 KiB by default) as separate files and rewrites a leaf of up
/// to 16 values whole, so frames are packed into values of at most this
/// size (a single larger frame gets a value of its own).
const MAX_WAL_VALUE: usize = 8 << 10;

/// A commit group, as the head is applied with it: made only here, for
/// a frame queued into the group ([`Committer::enqueue`]) or for a group
/// read back from a WAL generation ([`Generation::groups_from`]). The
/// store's head insertions take one, so nothing reaches the head that is
/// not in a WAL group; sealing takes only windows whose every group is
/// durable, and an append is acknowledged only once its group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Group(u64);

impl Group {
    /// The group's number (its LSN): groups are numbered in the order
    /// they become durable.
    pub(crate) fn number(self) -> u64 {
        self.0
    }
}

/// One WAL database.
pub(crate) struct Generation {
    /// Position in the order of generations (the directory name).
    pub(crate) number: u64,
    pub(crate) path: PathBuf,
    /// Open while groups may still go to it; closed once it is neither the
    /// current generation nor being written, because sled keeps the pages
    /// it wrote or read in memory far beyond its cache capacity (values
    /// written, and again those read back, stay resident). Reopened when
    /// read again.
    state: Mutex<State>,
    /// Highest group taken for this generation (0: none). Set when a
    /// leader takes the group, before writing it, so a generation that is
    /// no longer the newest has its final value here.
    pub(crate) last_group: AtomicU64,
    /// Frame bytes written to it.
    pub(crate) bytes: AtomicU64,
}

/// A file in a generation's directory, written once the database is
/// created: a directory without it was cut short while being created
/// (never written to) and is removed at open.
const READY: &str = "ready";
/// Suffix a generation's directory is renamed to before it is removed, so
/// a removal cut short is never taken for a generation.
const DELETED: &str = ".deleted";

enum State {
    Open(sled::Db),
    /// Closed, with what deletion and the stats need: its series
    /// definitions and its size on disk.
    Closed {
        series: Vec<(sled::IVec, sled::IVec)>,
        disk_bytes: u64,
    },
}

fn poisoned() -> TsdbError {
    TsdbError::Failed("WAL generation poisoned by a panic".into())
}

/// Opens the sled database at `path`. sled's threads may hold the file
/// lock of a database just closed (by this store: a WAL generation closed
/// when idle, the whole state after a failure) for a moment, so an open
/// retries on a lock error for up to 2 s.
pub(crate) fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, TsdbError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Makes a directory's entries (a created or renamed file) durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), TsdbError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| TsdbError::io("sync directory", path, e))
}

impl Generation {
    fn path(dir: &Path, number: u64) -> PathBuf {
        dir.join(format!("{number:020}"))
    }

    fn open_db(path: &Path) -> Result<sled::Db, TsdbError> {
        // The WAL is read only at restart: a small cache suffices.
        open_sled(path, 1 << 20)
    }

    fn open(dir: &Path, number: u64) -> Result<Self, TsdbError> {
        let path = Self::path(dir, number);
        let db = Self::open_db(&path)?;
        Ok(Generation {
            number,
            path,
            state: Mutex::new(State::Open(db)),
            last_group: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, TsdbError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// The generation's database, reopened if it was closed.
    pub(crate) fn db(&self) -> Result<sled::Db, TsdbError> {
        let mut state = self.state()?;
        if let State::Open(db) = &*state {
            return Ok(db.clone());
        }
        let reopened = Self::open_db(&self.path)?;
        *state = State::Open(reopened.clone());
        Ok(reopened)
    }

    /// Closes the database, keeping what deletion and the stats need.
    fn close(&self) -> Result<(), TsdbError> {
        let mut state = self.state()?;
        let State::Open(db) = &*state else {
            return Ok(());
        };
        let series = db
            .scan_prefix([keys::SERIES])
            .collect::<Result<Vec<_>, _>>()?;
        db.flush()?;
        let disk_bytes = db.size_on_disk()?;
        *state = State::Closed { series, disk_bytes };
        Ok(())
    }

    /// Its series definitions (created by its groups).
    pub(crate) fn series(&self) -> Result<Vec<(sled::IVec, sled::IVec)>, TsdbError> {
        match &*self.state()? {
            State::Open(db) => Ok(db
                .scan_prefix([keys::SERIES])
                .collect::<Result<Vec<_>, _>>()?),
            State::Closed { series, .. } => Ok(series.clone()),
        }
    }

    /// The WAL values of the groups from `from` on, in group order, each
    /// with its group; `None` for a key that does not parse (damage).
    pub(crate) fn groups_from(
        &self,
        from: u64,
    ) -> Result<impl Iterator<Item = Result<(Option<Group>, sled::IVec), TsdbError>>, TsdbError>
    {
        let values = self
            .db()?
            .range(keys::wal_start(from)..keys::wal_start(u64::MAX));
        Ok(values.map(|entry| {
            let (key, value) = entry?;
            Ok((keys::parse_wal(&key).map(Group), value))
        }))
    }

    pub(crate) fn size_on_disk(&self) -> Result<u64, TsdbError> {
        match &*self.state()? {
            State::Open(db) => Ok(db.size_on_disk()?),
            State::Closed { disk_bytes, .. } => Ok(*disk_bytes),
        }
    }

    /// Creates generation `number` under `dir`, marked ready once its
    /// database is on disk.
    pub(crate) fn create(dir: &Path, number: u64) -> Result<Self, TsdbError> {
        let generation = Self::open(dir, number)?;
        generation.db()?.flush()?;
        let ready = generation.path.join(READY);
        std::fs::File::create(&ready)
            .and_then(|f| f.sync_all())
            .map_err(|e| TsdbError::io("create", &ready, e))?;
        sync_dir(&generation.path)?;
        sync_dir(dir)?;
        Ok(generation)
    }

    /// Every ready generation under `dir` (created if missing), oldest
    /// first; what a crash left of a creation or a removal is removed.
    pub(crate) fn open_all(dir: &Path) -> Result<Vec<Self>, TsdbError> {
        std::fs::create_dir_all(dir).map_err(|e| TsdbError::io("create WAL directory", dir, e))?;
        let entries =
            std::fs::read_dir(dir).map_err(|e| TsdbError::io("list WAL directory", dir, e))?;
        let mut numbers = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| TsdbError::io("list WAL directory", dir, e))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match name.parse::<u64>() {
                Ok(n) if path.join(READY).is_file() => numbers.push(n),
                Ok(_) => {
                    tracing::info!(path = %path.display(), "removing a WAL generation cut short while being created");
                    std::fs::remove_dir_all(&path)
                        .map_err(|e| TsdbError::io("remove", &path, e))?;
                }
                Err(_) if name.ends_with(DELETED) => {
                    std::fs::remove_dir_all(&path)
                        .map_err(|e| TsdbError::io("remove", &path, e))?;
                }
                Err(_) => tracing::warn!(
                    path = %path.display(),
                    "ignoring a file that is not a WAL generation"
                ),
            }
        }
        numbers.sort_unstable();
        numbers.into_iter().map(|n| Self::open(dir, n)).collect()
    }
}

/// A truncation of the WAL, whose steps can only go in the order that
/// survives a crash at any of them: every queued group is made durable
/// ([`Committer::truncation`]); the caller seals windows whose every group
/// is at or below [`Truncation::durable`]; then [`Truncation::finish`]
/// makes the sealed chunks durable, persists where replay starts (the
/// lowest group not sealed) with the definitions of the series created
/// in the generations about to go, and only then deletes those
/// generations, whose every group lies below it. A crash before the
/// deletion leaves every group not sealed, and more, in the WAL.
#[must_use = "a truncation deletes nothing until it is finished"]
pub(crate) struct Truncation<'c> {
    commit: &'c Committer,
    durable: u64,
}

impl Truncation<'_> {
    /// The highest durable group: windows holding a later group are not
    /// sealed, so a chunk never holds a sample the WAL could still lose.
    pub(crate) fn durable(&self) -> u64 {
        self.durable
    }

    /// Ends the truncation at `low`, the lowest group not sealed: `flush`
    /// makes the chunks sealed since [`Committer::truncation`] durable; a
    /// new generation is started when the current one holds
    /// `generation_bytes` or nothing unsealed; `persist(durable, low,
    /// gone)` writes and flushes where replay starts, the batch sequences
    /// and the series definitions of the generations `gone`; only then
    /// are those deleted, and the idle ones closed. Returns how many went.
    pub(crate) fn finish(
        self,
        low: u64,
        generation_bytes: u64,
        flush: impl FnOnce() -> Result<(), TsdbError>,
        persist: impl FnOnce(u64, u64, &[Arc<Generation>]) -> Result<(), TsdbError>,
    ) -> Result<u64, TsdbError> {
        // Groups after `durable` may be in no chunk yet, whatever `low` says.
        let low = low.min(self.durable + 1);
        flush()?;
        self.commit.rotate_if_due(low, generation_bytes)?;
        let gone = self.commit.deletable(low)?;
        persist(self.durable, low, &gone)?;
        let deleted = gone.len() as u64;
        self.commit.delete(gone)?;
        self.commit.close_idle()?;
        Ok(deleted)
    }
}

struct Queue {
    /// Encoded frames of the next group.
    frames: Vec<u8>,
    /// Offsets in `frames` where each frame starts.
    starts: Vec<usize>,
    /// Series definitions (key, value) to write with the next group.
    defs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The next group's accept-log entry (see `forward`).
    accepted: Vec<u8>,
    /// Number of the next group.
    next: u64,
    /// A leader is writing a group.
    writing: bool,
    /// Why the committer stopped, after a failed write.
    failed: Option<String>,
    /// The generation new groups go to.
    current: Arc<Generation>,
}

pub(crate) struct Committer {
    dir: PathBuf,
    /// Where each group's accept-log entry goes once the group is
    /// durable; `None` when the log is off.
    accept_log: Option<sled::Tree>,
    queue: Mutex<Queue>,
    /// Every generation, oldest first (the current one last).
    generations: Mutex<Vec<Arc<Generation>>>,
    done: Condvar,
    /// Highest group known durable.
    durable: AtomicU64,
    /// Groups and flushes written, for the stats.
    pub(crate) groups: AtomicU64,
    /// Bytes of WAL values in the tree (maintenance subtracts what it deletes).
    pub(crate) wal_bytes: AtomicU64,
    /// Makes group writes fail as a full disk would, for unit tests of
    /// what a failed commit leaves behind.
    #[cfg(test)]
    pub(crate) fail_writes: std::sync::atomic::AtomicBool,
}

impl Committer {
    /// A committer over the generations under `dir` (oldest first; a new
    /// one is created when there is none) whose next group is `next`;
    /// everything before it is durable. Accept-log entries go to
    /// `accept_log` when set.
    pub(crate) fn new(
        dir: &Path,
        mut generations: Vec<Generation>,
        next: u64,
        accept_log: Option<sled::Tree>,
    ) -> Result<Self, TsdbError> {
        if generations.is_empty() {
            generations.push(Generation::create(dir, 1)?);
        }
        let generations: Vec<Arc<Generation>> = generations.into_iter().map(Arc::new).collect();
        let wal_bytes = generations
            .iter()
            .map(|g| g.bytes.load(Ordering::Relaxed))
            .sum();
        let current = generations
            .last()
            .cloned()
            .ok_or_else(|| TsdbError::Failed("no WAL generation".into()))?;
        Ok(Committer {
            dir: dir.to_owned(),
            accept_log,
            queue: Mutex::new(Queue {
                frames: Vec::new(),
                starts: Vec::new(),
                defs: Vec::new(),
                accepted: Vec::new(),
                next,
                writing: false,
                failed: None,
                current,
            }),
            generations: Mutex::new(generations),
            done: Condvar::new(),
            durable: AtomicU64::new(next.saturating_sub(1)),
            groups: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(wal_bytes),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn generations(&self) -> Result<MutexGuard<'_, Vec<Arc<Generation>>>, TsdbError> {
        self.generations
            .lock()
            .map_err(|_| TsdbError::Failed("WAL generations poisoned by a panic".into()))
    }

    /// The generations, oldest first, held while the caller reads them
    /// (maintenance cannot delete one meanwhile).
    pub(crate) fn with_generations<T>(
        &self,
        f: impl FnOnce(&[Arc<Generation>]) -> Result<T, TsdbError>,
    ) -> Result<T, TsdbError> {
        let generations = self.generations()?;
        f(&generations)
    }

    /// Starts a new generation for the groups taken from now on when the
    /// current one holds at least `max_bytes` of frames (so an old one can
    /// be deleted while the WAL still holds the newest hour), or holds
    /// frames and no group at or above `low` (nothing unsealed: it can go
    /// at once).
    fn rotate_if_due(&self, low: u64, max_bytes: u64) -> Result<(), TsdbError> {
        let current = self.lock()?.current.clone();
        let bytes = current.bytes.load(Ordering::Relaxed);
        let last = current.last_group.load(Ordering::Acquire);
        let sealed = last != 0 && last < low;
        if bytes < max_bytes && !sealed {
            return Ok(());
        }
        let next = Arc::new(Generation::create(&self.dir, current.number + 1)?);
        let mut generations = self.generations()?;
        self.lock()?.current = next.clone();
        generations.push(next);
        Ok(())
    }

    /// Closes every generation that no group will go to any more: not the
    /// current one, and every group taken for it durable (so no leader is
    /// writing to it). Replay and deletion read them again; sled's caches
    /// of their pages go meanwhile.
    pub(crate) fn close_idle(&self) -> Result<(), TsdbError> {
        // The current generation is read under the queue's lock, where
        // leaders take it: any group taken for another one has already set
        // that one's `last_group`.
        let current = self.lock()?.current.number;
        let durable = self.durable();
        for g in self.generations()?.iter() {
            if g.number != current && g.last_group.load(Ordering::Acquire) <= durable {
                g.close()?;
            }
        }
        Ok(())
    }

    /// Generations older than the current one whose every group is below
    /// `low`: what maintenance may delete once everything below `low` is
    /// durable outside the WAL.
    fn deletable(&self, low: u64) -> Result<Vec<Arc<Generation>>, TsdbError> {
        let generations = self.generations()?;
        let n = generations.len().saturating_sub(1);
        Ok(generations[..n]
            .iter()
            .filter(|g| g.last_group.load(Ordering::Acquire) < low)
            .cloned()
            .collect())
    }

    /// Deletes the generations `gone` (from [`Committer::deletable`]): their
    /// directories are removed once their databases are closed.
    fn delete(&self, gone: Vec<Arc<Generation>>) -> Result<(), TsdbError> {
        let mut generations = self.generations()?;
        for g in gone {
            generations.retain(|other| other.number != g.number);
            let freed = g.bytes.load(Ordering::Relaxed);
            let _ = self
                .wal_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
            // The last handle closes the database; a leader that wrote an
            // earlier group may hold one for a moment more, which on Unix
            // does not keep the directory from going.
            let path = g.path.clone();
            drop(g);
            // Renamed first, durably: a removal cut short leaves a
            // directory open_all removes, never a damaged generation.
            let mut gone = path.clone().into_os_string();
            gone.push(DELETED);
            let gone = PathBuf::from(gone);
            std::fs::rename(&path, &gone).map_err(|e| TsdbError::io("rename", &path, e))?;
            sync_dir(&self.dir)?;
            std::fs::remove_dir_all(&gone).map_err(|e| TsdbError::io("remove", &gone, e))?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Queue>, TsdbError> {
        self.queue
            .lock()
            .map_err(|_| TsdbError::Failed("group commit poisoned by a panic".into()))
    }

    /// Highest durable group.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Refuses work once a write has failed.
    pub(crate) fn check(&self) -> Result<(), TsdbError> {
        match &self.lock()?.failed {
            Some(why) => Err(TsdbError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Queues a frame (and the series definitions it needs, and its
    /// accept-log record); returns its group, which the frame's samples
    /// go into the head with.
    pub(crate) fn enqueue(
        &self,
        frame: &[u8],
        defs: Vec<(Vec<u8>, Vec<u8>)>,
        accepted: &[u8],
    ) -> Result<Group, TsdbError> {
        let mut q = self.lock()?;
        if let Some(why) = &q.failed {
            return Err(TsdbError::Failed(why.clone()));
        }
        let at = q.frames.len();
        q.starts.push(at);
        q.frames.extend_from_slice(frame);
        q.defs.extend(defs);
        q.accepted.extend_from_slice(accepted);
        Ok(Group(q.next))
    }

    /// Starts a truncation of the WAL (see [`Truncation`]): everything
    /// queued so far is made durable first.
    pub(crate) fn truncation(&self) -> Result<Truncation<'_>, TsdbError> {
        self.sync()?;
        Ok(Truncation {
            commit: self,
            durable: self.durable(),
        })
    }

    /// Makes everything queued so far durable.
    fn sync(&self) -> Result<(), TsdbError> {
        let target = {
            let q = self.lock()?;
            if q.frames.is_empty() && q.defs.is_empty() {
                q.next.saturating_sub(1)
            } else {
                q.next
            }
        };
        self.wait(target)
    }

    /// Returns once group `group` is durable, writing groups as the leader
    /// when no other thread is.
    pub(crate) fn wait(&self, group: u64) -> Result<(), TsdbError> {
        let mut q = self.lock()?;
        loop {
            if let Some(why) = &q.failed {
                return Err(TsdbError::Failed(why.clone()));
            }
            if self.durable() >= group {
                return Ok(());
            }
            if q.writing {
                q = self
                    .done
                    .wait(q)
                    .map_err(|_| TsdbError::Failed("group commit poisoned by a panic".into()))?;
                continue;
            }
            // Lead: take the queue as one group and write it unlocked.
            q.writing = true;
            let number = q.next;
            q.next += 1;
            let frames = std::mem::take(&mut q.frames);
            let starts = std::mem::take(&mut q.starts);
            let defs = std::mem::take(&mut q.defs);
            let accepted = std::mem::take(&mut q.accepted);
            let generation = q.current.clone();
            generation.last_group.store(number, Ordering::Release);
            drop(q);
            let result = self
                .write(&generation, number, &frames, &starts, defs)
                .and_then(|()| self.log_accepted(number, &accepted));
            drop(generation);
            q = self.lock()?;
            q.writing = false;
            match result {
                Ok(()) => {
                    self.durable.store(number, Ordering::Release);
                    self.groups.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => q.failed = Some(format!("WAL write failed: {e}")),
            }
            self.done.notify_all();
        }
    }

    /// Writes a durable group's accept-log entry before the group is
    /// marked durable, so that forwarding, which reads durable groups,
    /// finds it complete.
    fn log_accepted(&self, group: u64, accepted: &[u8]) -> Result<(), TsdbError> {
        match &self.accept_log {
            Some(tree) if !accepted.is_empty() => {
                crate::forward::write_entry(tree, group, accepted)
            }
            _ => Ok(()),
        }
    }

    fn write(
        &self,
        generation: &Generation,
        group: u64,
        frames: &[u8],
        starts: &[usize],
        defs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), TsdbError> {
        #[cfg(test)]
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(sled::Error::Io(std::io::ErrorKind::StorageFull.into()).into());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in defs {
            batch.insert(key, value);
        }
        let mut piece = 0u32;
        let mut emit = |range: std::ops::Range<usize>| {
            batch.insert(&keys::wal(group, piece)[..], &frames[range]);
            piece += 1;
        };
        // Pack whole frames into values of at most MAX_WAL_VALUE bytes; a
        // frame larger than that gets a value of its own.
        let mut piece_start = 0;
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(frames.len());
            if end - piece_start > MAX_WAL_VALUE && start > piece_start {
                emit(piece_start..start);
                piece_start = start;
            }
        }
        if piece_start < frames.len() {
            emit(piece_start..frames.len());
        }
        let db = generation.db()?;
        db.apply_batch(batch)?;
        db.flush()?;
        let n = frames.len() as u64;
        generation.bytes.fetch_add(n, Ordering::Relaxed);
        self.wal_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A committer over a fresh WAL directory with one durable group in
    /// generation 1; returns it with generation 1's directory.
    fn with_one_group(wal: &Path) -> (Committer, PathBuf) {
        let c = Committer::new(wal, Generation::open_all(wal).unwrap(), 1, None).unwrap();
        let group = c.enqueue(b"frame", Vec::new(), &[]).unwrap();
        c.wait(group.number()).unwrap();
        (c, Generation::path(wal, 1))
    }

    #[test]
    fn a_truncation_deletes_a_generation_only_after_flush_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        let (c, first) = with_one_group(&wal);
        let queued = c.enqueue(b"frame", Vec::new(), &[]).unwrap();
        let t = c.truncation().unwrap();
        // Starting a truncation made the queued group durable.
        assert_eq!(t.durable(), queued.number());
        let steps = RefCell::new(Vec::new());
        let deleted = t
            .finish(
                // Nothing unsealed: everything is below `low`, and more
                // than `durable + 1` is clamped to it.
                u64::MAX,
                u64::MAX,
                || {
                    steps.borrow_mut().push("flush");
                    Ok(())
                },
                |durable, low, gone| {
                    assert!(first.is_dir(), "a generation went before persist");
                    assert_eq!((durable, low), (2, 3));
                    assert_eq!(gone.iter().map(|g| g.number).collect::<Vec<_>>(), [1]);
                    steps.borrow_mut().push("persist");
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(steps.into_inner(), ["flush", "persist"]);
        assert_eq!(deleted, 1);
        assert!(!first.exists());
    }

    #[test]
    fn a_failed_flush_or_persist_deletes_no_generation() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        let (c, first) = with_one_group(&wal);
        let failed = || Err(TsdbError::Failed("disk full".into()));
        let persisted = RefCell::new(false);
        let result = c
            .truncation()
            .unwrap()
            .finish(2, u64::MAX, failed, |_, _, _| {
                *persisted.borrow_mut() = true;
                Ok(())
            });
        assert!(result.is_err());
        assert!(!*persisted.borrow(), "persisted after a failed flush");
        assert!(first.is_dir());
        let result = c
            .truncation()
            .unwrap()
            .finish(2, u64::MAX, || Ok(()), |_, _, _| failed());
        assert!(result.is_err());
        assert!(first.is_dir());
        // Once both succeed, it goes.
        let deleted = c
            .truncation()
            .unwrap()
            .finish(2, u64::MAX, || Ok(()), |_, _, _| Ok(()))
            .unwrap();
        assert_eq!(deleted, 1);
        assert!(!first.exists());
    }
}
