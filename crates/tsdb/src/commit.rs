//! Group commit: concurrent appends share one sled write and one flush.
//!
//! An append enqueues its WAL frame and gets the number of the group that
//! will carry it (the group's LSN). Then it waits: the first waiter that
//! finds no flush in progress becomes the leader, takes everything queued
//! so far as one group, writes it in one atomic sled batch, flushes, marks
//! the group durable and wakes the others. Appends arriving during a flush
//! queue up for the next group, so the number of flushes follows the disk,
//! not the number of writers.
//!
//! A failed write or flush poisons the committer: the frames may or may not
//! be on disk, but they are already visible in memory, so the store refuses
//! every later append rather than acknowledge anything it cannot vouch for.

use crate::TsdbError;
use crate::keys;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Largest WAL value written: sled stores values over a quarter of its
/// segment (512 KiB by default) as separate files and rewrites a leaf of up
/// to 16 values whole, so frames are packed into values of at most this
/// size (a single larger frame gets a value of its own).
const MAX_WAL_VALUE: usize = 8 << 10;

#[derive(Default)]
struct Queue {
    /// Encoded frames of the next group.
    frames: Vec<u8>,
    /// Offsets in `frames` where each frame starts.
    starts: Vec<usize>,
    /// Series definitions (key, value) to write with the next group.
    defs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Number of the next group.
    next: u64,
    /// A leader is writing a group.
    writing: bool,
    /// Why the committer stopped, after a failed write.
    failed: Option<String>,
}

pub(crate) struct Committer {
    tree: sled::Tree,
    db: sled::Db,
    queue: Mutex<Queue>,
    done: Condvar,
    /// Highest group known durable.
    durable: AtomicU64,
    /// Groups and flushes written, for the stats.
    pub(crate) groups: AtomicU64,
    /// Bytes of WAL values in the tree (maintenance subtracts what it deletes).
    pub(crate) wal_bytes: AtomicU64,
}

impl Committer {
    /// A committer whose next group is `next`; everything before it is durable.
    pub(crate) fn new(db: sled::Db, tree: sled::Tree, next: u64, wal_bytes: u64) -> Self {
        Committer {
            tree,
            db,
            queue: Mutex::new(Queue {
                next,
                ..Queue::default()
            }),
            done: Condvar::new(),
            durable: AtomicU64::new(next.saturating_sub(1)),
            groups: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(wal_bytes),
        }
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

    /// Queues a frame (and the series definitions it needs); returns its group.
    pub(crate) fn enqueue(
        &self,
        frame: &[u8],
        defs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u64, TsdbError> {
        let mut q = self.lock()?;
        if let Some(why) = &q.failed {
            return Err(TsdbError::Failed(why.clone()));
        }
        let at = q.frames.len();
        q.starts.push(at);
        q.frames.extend_from_slice(frame);
        q.defs.extend(defs);
        Ok(q.next)
    }

    /// Makes everything queued so far durable.
    pub(crate) fn sync(&self) -> Result<(), TsdbError> {
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
            drop(q);
            let result = self.write(number, &frames, &starts, defs);
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

    fn write(
        &self,
        group: u64,
        frames: &[u8],
        starts: &[usize],
        defs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), TsdbError> {
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
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.wal_bytes
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
