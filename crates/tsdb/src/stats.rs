//! Counters and sizes of a running store, and its maintenance entry points.

use crate::TsdbError;
use crate::maintain::{MaintenancePhase, MaintenanceReport};
use crate::model::Rejections;
use crate::store::{Store, lock, poisoned};
use crate::supervise::Health;
use std::sync::atomic::Ordering;

/// What the store holds and has done since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub hosts: u64,
    pub series: u64,
    /// Samples in memory, not yet sealed into chunks.
    pub head_samples: u64,
    /// Heap bytes of the head's encoded samples.
    pub head_bytes: u64,
    /// Heap bytes of the head's process snapshots (encoded) and of each
    /// host's previous batch's series (for lookups).
    pub head_host_bytes: u64,
    /// Bytes of WAL records on disk (before sled's own overhead).
    pub wal_bytes: u64,
    /// Size on disk of the whole sled database and of the WAL's.
    pub disk_bytes: u64,
    /// Batches appended (not counting replays of stored batches).
    pub batches: u64,
    /// Replays of stored batches, acknowledged without storing.
    pub duplicate_batches: u64,
    pub samples_stored: u64,
    pub snapshots_stored: u64,
    /// Samples refused, by reason.
    pub rejected: Rejections,
    /// Commit groups written: each one sled batch and one flush.
    pub commit_groups: u64,
    pub sealed_chunks: u64,
    /// Chunks and snapshot blocks deleted by retention.
    pub deleted_chunks: u64,
    /// WAL frames replayed at open, and the samples in them.
    pub replayed_frames: u64,
    pub replayed_samples: u64,
    /// Damage skipped: WAL frames, chunks or snapshot blocks, series
    /// definitions, sequence records, and WAL samples of unknown series.
    pub corrupt_wal_frames: u64,
    pub corrupt_blocks: u64,
    pub corrupt_series: u64,
    pub corrupt_sequences: u64,
    pub orphan_samples: u64,
    pub maintenance_errors: u64,
    /// Whether appends are stored, and if not why.
    pub health: Health,
}

impl Store {
    /// Counters and sizes. While the store rebuilds itself after a
    /// failure it has no state to size: then only its health and counters.
    pub fn stats(&self) -> Result<StoreStats, TsdbError> {
        let c = self.supervisor().counters();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut stats = StoreStats {
            batches: get(&c.batches),
            duplicate_batches: get(&c.duplicate_batches),
            samples_stored: get(&c.samples),
            snapshots_stored: get(&c.snapshots),
            rejected: c.rejections(),
            sealed_chunks: get(&c.sealed_chunks),
            deleted_chunks: get(&c.deleted_chunks),
            replayed_frames: get(&c.replayed_frames),
            replayed_samples: get(&c.replayed_samples),
            corrupt_wal_frames: get(&c.corrupt_wal_frames),
            corrupt_blocks: get(&c.corrupt_blocks),
            corrupt_series: get(&c.corrupt_series),
            corrupt_sequences: get(&c.corrupt_sequences),
            orphan_samples: get(&c.orphan_samples),
            maintenance_errors: get(&c.maintenance_errors),
            health: self.supervisor().health()?,
            ..StoreStats::default()
        };
        let Ok(inner) = self.inner() else {
            return Ok(stats);
        };
        stats.series = inner.index.read().map_err(|_| poisoned())?.len() as u64;
        stats.wal_bytes = get(&inner.commit.wal_bytes);
        stats.commit_groups = get(&inner.commit.groups);
        stats.disk_bytes = inner.db.size_on_disk()?
            + inner.partitions.disk_bytes()?
            + inner.commit.with_generations(|generations| {
                let mut bytes = 0;
                for g in generations {
                    bytes += g.size_on_disk()?;
                }
                Ok(bytes)
            })?;
        for (_, host) in inner.all_hosts()? {
            let host = lock(&host)?;
            stats.hosts += 1;
            stats.head_host_bytes += host.host_heap_bytes() as u64;
            for series in host.all_series() {
                stats.head_bytes += series.heap_bytes() as u64;
                stats.head_samples += series.samples() as u64;
            }
        }
        Ok(stats)
    }

    /// Runs one maintenance pass now: seals finished windows, truncates
    /// the WAL, persists sequences, enforces retention. The background
    /// thread does the same every `maintenance_interval`.
    pub fn maintain(&self) -> Result<MaintenanceReport, TsdbError> {
        self.supervisor().maintain(false)
    }

    /// Seals every window, finished or not, and truncates the WAL: what a
    /// benchmark measures as the sealed size. Later samples of those
    /// windows reopen them.
    pub fn seal_all(&self) -> Result<MaintenanceReport, TsdbError> {
        self.supervisor().maintain(true)
    }

    /// How long each phase of the maintenance passes since the store was
    /// opened took.
    pub fn maintenance_durations(
        &self,
    ) -> Vec<(
        MaintenancePhase,
        hostwatch_stdx::exposition::HistogramSnapshot,
    )> {
        let c = self.supervisor().counters();
        MaintenancePhase::ALL
            .into_iter()
            .map(|phase| (phase, c.maintenance[phase as usize].snapshot()))
            .collect()
    }

    /// Whether the store is storing appends, and if not why.
    pub fn health(&self) -> Result<Health, TsdbError> {
        self.supervisor().health()
    }

    /// After a failed write, rebuilds the store from disk once the free
    /// space is back above the reserve; returns whether it stores again.
    /// The background thread calls this every second; a store opened
    /// without one (no `maintenance_interval`) needs it called.
    pub fn recover(&self) -> Result<bool, TsdbError> {
        self.supervisor().recover()
    }
}
