//! Background maintenance: sealing windows into chunks (with their hours
//! in the 1 h tier), truncating the WAL, persisting batch sequences, and
//! retention by age and by size.
//!
//! Order matters for crash safety: sealed chunks are written to their
//! partitions (see `partition`) and flushed first, then the newest sealed
//! points in the main tree; then the batch sequences, the series definitions of the WAL
//! generations about to go, and the lowest group not sealed (where replay
//! starts), flushed again; only then are WAL generations whose every group
//! lies below that deleted. Only windows whose samples are all durable are
//! sealed, so a chunk never holds a sample the WAL could still lose. A
//! `commit::Truncation` takes the WAL's side of these steps in this order.

use crate::TsdbError;
use crate::chunk::{self, Row};
use crate::commit::Generation;
use crate::head::{HostState, SeriesBounds};
use crate::keys;
use crate::options::{DAY_MS, HOUR_MS, align};
use crate::read::Read;
use crate::store::{HostRef, Inner, bump, lock, poisoned};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Series definitions written to the tree per sled batch.
const DEFINITIONS_PER_BATCH: usize = 1024;

/// Series sealed per hold of their host's lock.
const SEAL_SERIES_PER_LOCK: usize = 8;

/// State kept between maintenance passes.
#[derive(Debug, Default)]
pub(crate) struct MaintenanceState {
    /// Windows before this start are already deleted by age (retention by
    /// size may have deleted later ones too).
    expired_before: Option<i64>,
    /// The lowest unsealed group last written to `META_LOW_GROUP`.
    persisted_low: Option<u64>,
    /// The store is over `retention_bytes` with nothing left that
    /// retention may delete, and was said so (once until it is not).
    over_size_limit: bool,
}

/// The phases of a maintenance pass, each timed (`Store::maintenance_durations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenancePhase {
    /// Sealing due windows into chunks.
    Seal = 0,
    /// Flushing the chunks, persisting where replay starts, deleting and
    /// closing WAL generations.
    Wal = 1,
    /// Deleting partitions past the retention (age and size), and
    /// rewriting closed ones into their immutable files.
    Retention = 2,
}

impl MaintenancePhase {
    pub const ALL: [MaintenancePhase; 3] = [
        MaintenancePhase::Seal,
        MaintenancePhase::Wal,
        MaintenancePhase::Retention,
    ];

    /// The phase's name, as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            MaintenancePhase::Seal => "seal",
            MaintenancePhase::Wal => "wal",
            MaintenancePhase::Retention => "retention",
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Raw chunks written.
    pub sealed_chunks: u64,
    /// Snapshot blocks written.
    pub sealed_snapshot_blocks: u64,
    /// WAL generations deleted because every sample in them is sealed.
    pub wal_generations_deleted: u64,
    /// Chunks and snapshot blocks deleted by retention (age or size).
    pub deleted: u64,
    /// Partitions deleted by retention (each deleted whole).
    pub deleted_partitions: u64,
    /// Closed partitions rewritten into their immutable files.
    pub rewritten_partitions: u64,
}

/// Which hosts' series a maintenance pass visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visit {
    /// Those whose [`SeriesBounds`] do not prove that none of their
    /// windows is due.
    MayBeDue,
    /// Every host's: what the bounds must not change (tests compare).
    #[cfg(test)]
    Every,
}

impl Inner {
    /// One pass; `force` seals every window regardless of its age. A
    /// partition rewrite stops once `closing` is set.
    pub(crate) fn maintain(
        &self,
        force: bool,
        closing: &AtomicBool,
    ) -> Result<MaintenanceReport, TsdbError> {
        self.maintain_visiting(force, closing, Visit::MayBeDue)
    }

    /// One pass visiting the series of the hosts `visit` says.
    pub(crate) fn maintain_visiting(
        &self,
        force: bool,
        closing: &AtomicBool,
        visit: Visit,
    ) -> Result<MaintenanceReport, TsdbError> {
        let mut state = self.maintenance.lock().map_err(|_| poisoned())?;
        let mut report = MaintenanceReport::default();
        let timed = |phase: MaintenancePhase, started: Instant| {
            self.counters.maintenance[phase as usize].observe(started.elapsed());
        };
        let started = Instant::now();
        let now = (self.options.clock)();
        let truncation = self.commit.truncation()?;
        let durable = truncation.durable();
        let mut low = durable + 1;
        let due = Due {
            now,
            durable,
            force,
            window: self.options.chunk_window_ms,
            tolerance: self.options.out_of_order_tolerance_ms,
            idle: self.options.idle_seal_ms,
        };
        let hosts = self.all_hosts()?;
        for (name, entry) in &hosts {
            let mut seal = |host: &mut HostState, ids: Option<&[u64]>| {
                self.seal_host(name, host, ids, due, &mut report)
            };
            let mut host = lock(entry)?;
            // Most passes seal nothing of most hosts: their bounds prove
            // it without a visit to each series.
            let bounds = host.series_bounds();
            if visit != Visit::MayBeDue || due.may_seal(&bounds) {
                let ids = host.series_ids();
                drop(host);
                // A few series per hold of the host's lock: its queries and
                // appends wait for at most that much encoding.
                for part in ids.chunks(SEAL_SERIES_PER_LOCK) {
                    seal(&mut *lock(entry)?, Some(part))?;
                }
                host = lock(entry)?;
                // Kept bounds only widen (an idle series' old insertion
                // stays their earliest): the walk that `min_lsn` did at
                // every pass, now once a visit, narrows them again.
                host.refresh_series_bounds();
            }
            seal(&mut host, None)?;
            if let Some(m) = host.min_lsn() {
                low = low.min(m);
            }
        }
        timed(MaintenancePhase::Seal, started);
        let started = Instant::now();
        // Chunks are durable before the WAL groups they replace go.
        let flush = || {
            self.partitions.flush()?;
            Ok(self.db.flush().map(drop)?)
        };
        // Replay starts at `low` and recovers the sequences of every batch
        // from there on, so they and the metadata need writing only when
        // `low` moves (about once a window) or a generation goes, not at
        // every pass (every 5 s: a key per agent source and two flushes).
        let persist = |durable, low, gone: &[Arc<Generation>]| {
            if state.persisted_low != Some(low) || !gone.is_empty() {
                self.persist_low(&hosts, durable, low, gone)?;
                state.persisted_low = Some(low);
            }
            Ok(())
        };
        report.wal_generations_deleted +=
            truncation.finish(low, self.options.wal_generation_bytes, flush, persist)?;
        timed(MaintenancePhase::Wal, started);
        let started = Instant::now();
        self.expire_by_age(now, &mut state, &mut report)?;
        self.expire_by_size(now, &mut state, &mut report)?;
        self.rewrite_closed(now, force, closing, &mut report);
        self.partitions.close_idle()?;
        timed(MaintenancePhase::Retention, started);
        Ok(report)
    }

    /// Writes the batch sequences stored up to group `durable`, the
    /// definitions of the series created in the generations `gone`, the
    /// next group and `low`, where replay starts, and flushes them.
    fn persist_low(
        &self,
        hosts: &[(String, HostRef)],
        durable: u64,
        low: u64,
        gone: &[Arc<Generation>],
    ) -> Result<(), TsdbError> {
        let mut batch = sled::Batch::default();
        for (name, host) in hosts {
            let mut host = lock(host)?;
            for (source, seq) in host.sources_mut() {
                seq.promote(durable);
                if let Some(durable) = seq.take_unpersisted() {
                    batch.insert(keys::sequence(name, source), &durable.to_be_bytes()[..]);
                }
            }
        }
        // The definitions of series created in the generations about to go,
        // before the batch that moves `low`: a crash between leaves them in
        // the tree and in their generation, and open takes the first. In
        // batches of DEFINITIONS_PER_BATCH: one sled batch of them all
        // left sled's leaf writes and node splits under it resident
        // (heaptrack).
        for g in gone {
            for definitions in g.series()?.chunks(DEFINITIONS_PER_BATCH) {
                let mut batch = sled::Batch::default();
                for (key, value) in definitions {
                    batch.insert(key, value);
                }
                self.tree.apply_batch(batch)?;
            }
        }
        batch.insert(keys::META_NEXT_GROUP, &(durable + 1).to_be_bytes()[..]);
        batch.insert(keys::META_LOW_GROUP, &low.to_be_bytes()[..]);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Seals the due windows of the series `ids` of a host, or with
    /// `None` its due snapshot windows.
    fn seal_host(
        &self,
        name: &str,
        host: &mut HostState,
        ids: Option<&[u64]>,
        due: Due,
        report: &mut MaintenanceReport,
    ) -> Result<(), TsdbError> {
        let mut writes = SealWrites::default();
        for id in ids.unwrap_or_default() {
            self.seal_series(host, *id, due, &mut writes)?;
        }
        self.write_hour_chunks(due, &mut writes)?;
        if ids.is_none() {
            seal_snapshots(name, host, due, |t| self.partitions.of(t), &mut writes);
        }
        // Every write above comes with a sealed window. Most passes seal
        // nothing for most series, and an empty sled batch still appends a
        // record to sled's log (48 bytes). Chunks first, then the newest
        // sealed points: a crash between leaves `L` records behind the
        // chunks, which only costs lookups (the WAL still holds the
        // windows, as `low` has not moved).
        for (start, batch) in std::mem::take(&mut writes.parts) {
            self.partitions.for_write(start)?.apply_batch(batch)?;
        }
        if writes.lasts > 0 {
            self.tree.apply_batch(writes.main)?;
        }
        if writes.chunks > 0 {
            self.tails.clear();
        }
        report.sealed_chunks += writes.chunks;
        report.sealed_snapshot_blocks += writes.snapshot_blocks;
        bump(&self.counters.sealed_chunks, writes.chunks);
        Ok(())
    }

    /// Seals the due windows of one series into raw chunks, gathers their
    /// hours for the 1 h tier and records the series' newest sealed point.
    fn seal_series(
        &self,
        host: &mut HostState,
        id: u64,
        due: Due,
        writes: &mut SealWrites,
    ) -> Result<(), TsdbError> {
        let Some(series) = host.series_mut(id) else {
            return Ok(());
        };
        let (newest, touched) = (series.max_t(), series.touched_ms());
        let mut sealed_any = false;
        let mut sealed_last: Option<crate::model::Point> = None;
        for w in series.windows() {
            if !due.seals(w.start(), w.max_lsn(), newest, touched) {
                continue;
            }
            sealed_any = true;
            let points = w.points();
            let Some(&last) = points.last() else {
                continue;
            };
            if sealed_last.is_none_or(|p| last.t_ms > p.t_ms) {
                sealed_last = Some(last);
            }
            let raw = chunk::encode_raw(&points, w.max_lsn());
            writes
                .parts
                .entry(self.partitions.of(w.start()))
                .or_default()
                .insert(&keys::chunk(keys::TIER_RAW, id, w.start())[..], raw);
            let day = align(w.start(), DAY_MS);
            let (rows, completes_day) = writes.hour_rows.entry((id, day)).or_default();
            rows.extend(chunk::rows(&points, HOUR_MS));
            *completes_day |= w.start().saturating_add(due.window) >= day.saturating_add(DAY_MS);
            writes.chunks += 1;
        }
        if sealed_last.is_some() && series.sealed_unknown() {
            // No trustworthy `L` record: find the newest chunk once.
            let found = self.newest_sealed(id)?;
            if let Some(p) = found
                && sealed_last.is_none_or(|s| p.t_ms > s.t_ms)
            {
                sealed_last = Some(p);
            }
            series.learn_sealed(found);
        }
        if let Some(last) = sealed_last
            && series.record_sealed(last)
        {
            writes
                .main
                .insert(&keys::last(id)[..], &keys::encode_last(last)[..]);
            writes.lasts += 1;
        }
        if sealed_any {
            host.drop_windows(id, |w| due.seals(w.start(), w.max_lsn(), newest, touched));
        }
        Ok(())
    }

    /// Writes the 1 h chunks of the days whose windows were sealed now.
    fn write_hour_chunks(&self, due: Due, writes: &mut SealWrites) -> Result<(), TsdbError> {
        for ((id, day), (rows, completes_day)) in std::mem::take(&mut writes.hour_rows) {
            let key = keys::chunk(keys::TIER_HOUR, id, day);
            let home = self.partitions.of_day(day);
            // A day's hours are written once, with its last window (queries
            // read the raw chunks of a day without them): rewritten at every
            // window, the day's chunk was much of sled's writes and its
            // garbage (more disk in a replay of the storage bench's seal
            // writes). A window sealed again, or late, after that replaces
            // its hours.
            let stored = match self.partitions.get(home)? {
                Some(part) => part.get(&key)?,
                None => None,
            };
            let (mut lsn, mut merged) = match stored {
                Some(v) => self
                    .decoded(chunk::decode_rows(&v), "hour chunk", id, day)
                    .unwrap_or_default(),
                None if completes_day => (0, self.sealed_hours(id, day)?),
                None => continue,
            };
            // A resealed window replaces its hours.
            merged.retain(|r| !rows.iter().any(|n| n.t_ms == r.t_ms));
            merged.extend(rows);
            merged.sort_by_key(|r| r.t_ms);
            lsn = lsn.max(due.durable);
            let value = chunk::encode_rows(&merged, lsn);
            writes
                .parts
                .entry(home)
                .or_default()
                .insert(&key[..], value);
        }
        Ok(())
    }

    /// The 1 h rows of the raw chunks of a series' day sealed so far.
    fn sealed_hours(&self, id: u64, day: i64) -> Result<Vec<Row>, TsdbError> {
        let end = day.saturating_add(DAY_MS);
        let mut points = Vec::new();
        let every_window = crate::read::HeadPart::unknown();
        self.sealed_points(id, day, end, &every_window, Read::Store, &mut points)?;
        Ok(chunk::rows(&points, HOUR_MS))
    }

    /// Rewrites the partitions no accepted sample is expected in any more
    /// (see `partition`): those ending before the clock minus the
    /// out-of-order tolerance and the idle sealing delay, past which
    /// every window of theirs is sealed unless a series comes back after
    /// a long silence (then a late write thaws the partition). All of
    /// them when forced, else one a pass. A failure is logged and leaves
    /// the partition as it was: the store goes on.
    fn rewrite_closed(
        &self,
        now: i64,
        force: bool,
        closing: &AtomicBool,
        report: &mut MaintenanceReport,
    ) {
        let before = now
            .saturating_sub(self.options.out_of_order_tolerance_ms)
            .saturating_sub(self.options.idle_seal_ms);
        match self.partitions.rewrite_closed(before, force, closing) {
            Ok(n) => report.rewritten_partitions += n,
            Err(_) if closing.load(Ordering::Acquire) => {
                tracing::info!("a partition rewrite stopped: the store is closing");
            }
            Err(e) => {
                bump(&self.counters.maintenance_errors, 1);
                tracing::warn!(error = %e, "cannot rewrite a closed partition: it stays in its sled database");
            }
        }
    }

    /// Hides the windows entirely older than the retention from reads,
    /// clears the latest values they held, and deletes the partitions
    /// whose every window is among them.
    fn expire_by_age(
        &self,
        now: i64,
        state: &mut MaintenanceState,
        report: &mut MaintenanceReport,
    ) -> Result<(), TsdbError> {
        let cutoff = now.saturating_sub(self.options.retention_ms);
        let before = self.options.window_of(cutoff);
        if state.expired_before.is_some_and(|done| done >= before) {
            return Ok(());
        }
        self.partitions.raise_floor(before);
        self.clear_expired_latest(before)?;
        for p in self.partitions.all()? {
            if p.end <= before {
                self.delete_partition(p.start, report)?;
            }
        }
        state.expired_before = Some(before);
        Ok(())
    }

    /// Deletes the oldest partitions, whole, while the store's directory
    /// (the WAL and the main database included) is larger than
    /// `retention_bytes`; never the partition of the current window nor
    /// the newest one, so the newest data stays even when the clock has
    /// run past it (no data for days) or one partition alone is over the
    /// limit. Over the limit with nothing left to delete, it warns once.
    fn expire_by_size(
        &self,
        now: i64,
        state: &mut MaintenanceState,
        report: &mut MaintenanceReport,
    ) -> Result<(), TsdbError> {
        let Some(limit) = self.options.retention_bytes else {
            return Ok(());
        };
        let mut total = self.partitions.store_bytes();
        if total <= limit {
            state.over_size_limit = false;
            return Ok(());
        }
        let current = self.partitions.of(self.options.window_of(now));
        let partitions = self.partitions.all()?;
        let newest = partitions.last().map(|p| p.start);
        let (mut floor, mut freed, mut deleted) = (None, 0, 0);
        for p in &partitions {
            if total <= limit || p.start >= current || Some(p.start) == newest {
                break;
            }
            let bytes = p.disk_bytes();
            self.delete_partition(p.start, report)?;
            total = total.saturating_sub(bytes);
            freed += bytes;
            deleted += 1;
            floor = Some(p.end);
        }
        if total > limit && !state.over_size_limit {
            tracing::warn!(
                bytes = total,
                limit,
                partitions = partitions.len() - deleted,
                "the store is over retention_bytes and may delete none of the partitions left (the newest, the current window's): raise the limit"
            );
        }
        state.over_size_limit = total > limit;
        let Some(floor) = floor else {
            return Ok(());
        };
        self.partitions.raise_floor(floor);
        self.clear_expired_latest(floor)?;
        tracing::info!(
            before = floor,
            bytes = freed,
            left = total,
            limit,
            "deleted the oldest partitions: store over its size limit"
        );
        Ok(())
    }

    /// Deletes one partition (see `partition`), counting what it held.
    fn delete_partition(
        &self,
        start: i64,
        report: &mut MaintenanceReport,
    ) -> Result<(), TsdbError> {
        let n = self.partitions.delete(start)?;
        self.tails.clear();
        report.deleted += n;
        report.deleted_partitions += 1;
        bump(&self.counters.deleted_chunks, n);
        Ok(())
    }

    /// Clears the latest value of every series whose newest sample lies
    /// before `before` (hidden or deleted by retention).
    fn clear_expired_latest(&self, before: i64) -> Result<(), TsdbError> {
        for (_, host) in self.all_hosts()? {
            let mut batch = sled::Batch::default();
            let mut cleared = false;
            let mut host = lock(&host)?;
            for (id, series) in host.all_series_mut() {
                if series.forget_last_before(before) {
                    batch.remove(&keys::last(id)[..]);
                    cleared = true;
                }
            }
            drop(host);
            // An empty sled batch still appends a record to its log.
            if cleared {
                self.tree.apply_batch(batch)?;
            }
        }
        self.tails.clear();
        Ok(())
    }
}

/// Which windows a maintenance pass seals: those whose samples are all
/// durable and that no accepted sample can land in any more (past their
/// end and the out-of-order tolerance, or idle), or every durable one when
/// forced.
#[derive(Debug, Clone, Copy)]
struct Due {
    now: i64,
    durable: u64,
    force: bool,
    window: i64,
    tolerance: i64,
    idle: i64,
}

impl Due {
    /// Whether the window starting at `start`, whose newest group is
    /// `max_lsn`, of a series (or host) last written at `touched` with its
    /// newest sample at `newest`, is sealed now.
    fn seals(&self, start: i64, max_lsn: u64, newest: i64, touched: i64) -> bool {
        let end = self.end(start);
        max_lsn <= self.durable
            && (self.force
                || newest >= end
                || (self.now >= end && self.now.saturating_sub(touched) >= self.idle))
    }

    /// Past this time no sample lands in the window starting at `start`.
    fn end(&self, start: i64) -> i64 {
        start
            .saturating_add(self.window)
            .saturating_add(self.tolerance)
    }

    /// Whether a window of a host with `bounds` may be sealed now; false
    /// proves none is. Unless forced, a window is sealed only once its
    /// series' newest sample is past its end, or the clock is and the
    /// series was last written `idle` ago; no window ends before the one
    /// starting at `bounds.earliest_start`, no series with an open window
    /// has a sample after `bounds.newest` nor was last written before
    /// `bounds.earliest_touched`.
    fn may_seal(&self, bounds: &SeriesBounds) -> bool {
        let end = self.end(bounds.earliest_start);
        bounds.any_open()
            && (self.force
                || bounds.newest >= end
                || (self.now >= end
                    && self.now.saturating_sub(bounds.earliest_touched) >= self.idle))
    }
}

/// What sealing one host writes: a sled batch per partition, one for the
/// main tree, and their tallies.
#[derive(Default)]
struct SealWrites {
    /// Chunks and snapshot blocks, by partition start.
    parts: BTreeMap<i64, sled::Batch>,
    /// Newest sealed points (`L` records).
    main: sled::Batch,
    /// `L` records in `main`.
    lasts: u64,
    /// Raw chunks in the batch.
    chunks: u64,
    /// Snapshot blocks in the batch.
    snapshot_blocks: u64,
    /// Per (series, day): the hours of the windows sealed now, and
    /// whether the day's last window is one of them.
    hour_rows: HashMap<(u64, i64), (Vec<Row>, bool)>,
}

/// Seals a host's due snapshot windows into blocks.
fn seal_snapshots(
    name: &str,
    host: &mut HostState,
    due: Due,
    partition_of: impl Fn(i64) -> i64,
    writes: &mut SealWrites,
) {
    let (newest, touched) = host.snapshot_times();
    let before = writes.snapshot_blocks;
    let mut unsealed = Vec::new();
    for w in host.snapshot_windows() {
        if !due.seals(w.start(), w.max_lsn(), newest, touched) {
            continue;
        }
        let value = match w.block().seal(w.max_lsn()) {
            Ok(value) => value,
            // The head's own encoding failed to decode: a bug, not data
            // on disk. The window stays open (and its WAL groups with it)
            // rather than being sealed without some of its snapshots.
            Err(e) => {
                tracing::error!(host.id = name, window = w.start(), error = %e, "cannot seal a snapshot window");
                unsealed.push(w.start());
                continue;
            }
        };
        writes
            .parts
            .entry(partition_of(w.start()))
            .or_default()
            .insert(keys::snapshots(name, w.start()), value);
        writes.snapshot_blocks += 1;
    }
    if writes.snapshot_blocks > before {
        host.drop_snapshot_windows(|w| {
            !unsealed.contains(&w.start()) && due.seals(w.start(), w.max_lsn(), newest, touched)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, Matcher, Point, SeriesInput};
    use crate::options::{MINUTE_MS, Options};
    use crate::store::Store;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicI64;

    /// An hour boundary.
    const T0: i64 = 1_800_000_000_000;
    const HOSTS: [&str; 3] = ["a", "b", "c"];
    const METRICS: [&str; 3] = ["m0", "m1", "m2"];

    /// What happens to the two stores alike.
    #[derive(Debug, Clone)]
    enum Op {
        /// A sample of metric `series` of host `host`, at the host's data
        /// time moved `step` ms on (up to the clock) less `back` ms: late
        /// (out of order), or behind the clock as an agent's backlog is.
        Append {
            host: usize,
            series: usize,
            step: i64,
            back: i64,
        },
        /// The wall clock moves on.
        Tick(i64),
        Maintain,
        /// Seals every window: later samples of theirs reopen them.
        SealAll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..HOSTS.len(), 0..METRICS.len(), 0..20 * MINUTE_MS, 0..15 * MINUTE_MS)
                .prop_map(|(host, series, step, back)| Op::Append { host, series, step, back }),
            3 => prop_oneof![Just(MINUTE_MS), Just(5 * MINUTE_MS), Just(20 * MINUTE_MS), Just(2 * HOUR_MS)]
                .prop_map(Op::Tick),
            3 => Just(Op::Maintain),
            1 => Just(Op::SealAll),
        ]
    }

    /// Every open window of the store's head: (host, series, start,
    /// samples, newest group).
    fn open_windows(inner: &Inner) -> Vec<(String, u64, i64, usize, u64)> {
        let mut open = Vec::new();
        for (name, host) in inner.all_hosts().unwrap() {
            let host = lock(&host).unwrap();
            for id in host.series_ids() {
                for w in host.series(id).unwrap().windows() {
                    open.push((name.clone(), id, w.start(), w.len(), w.max_lsn()));
                }
            }
        }
        open.sort();
        open
    }

    fn stored(store: &Store) -> Vec<(String, Vec<Point>)> {
        let mut all = Vec::new();
        for metric in METRICS {
            let any = Matcher::regex("host", ".+", false).unwrap();
            for s in store.range(metric, &[any], 0, i64::MAX).unwrap() {
                all.push((format!("{:?}", s.key), s.points));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn low_group(inner: &Inner) -> Option<sled::IVec> {
        inner.tree.get(keys::META_LOW_GROUP).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// A pass that skips the hosts whose bounds prove nothing due
        /// seals the same windows, writes the same `low` and reports the
        /// same as one visiting every series: over windows opening, late
        /// samples, windows reopened from their sealed chunk, idle series
        /// and forced passes.
        #[test]
        fn skipping_hosts_seals_what_visiting_every_series_does(
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let now = Arc::new(AtomicI64::new(T0));
            let clock = now.clone();
            let options = Options {
                clock: Arc::new(move || clock.load(Ordering::Relaxed)),
                maintenance_interval: None,
                ..Options::default()
            };
            let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
            let stores = dirs.each_ref().map(|d| Store::open(d.path(), options.clone()).unwrap());
            let visits = [Visit::MayBeDue, Visit::Every];
            let closing = AtomicBool::new(false);
            let mut data_t = [T0; HOSTS.len()];
            for (seq, op) in (1..).zip(ops) {
                match op {
                    Op::Append { host, series, step, back } => {
                        let clock = now.load(Ordering::Relaxed);
                        data_t[host] = (data_t[host] + step).min(clock);
                        let batch = Batch {
                            host: HOSTS[host].into(),
                            source: 1,
                            seq,
                            series: vec![SeriesInput {
                                metric: METRICS[series].into(),
                                labels: vec![],
                                points: vec![Point { t_ms: data_t[host] - back, value: seq as f64 }],
                            }],
                            processes: vec![],
                            malformed: 0,
                        };
                        let [a, b] = stores.each_ref().map(|s| s.append(&batch).unwrap());
                        prop_assert_eq!(a, b);
                    }
                    Op::Tick(ms) => {
                        now.fetch_add(ms, Ordering::Relaxed);
                    }
                    Op::Maintain | Op::SealAll => {
                        let force = matches!(op, Op::SealAll);
                        let mut reports = Vec::new();
                        for (store, visit) in stores.iter().zip(visits) {
                            let inner = store.inner().unwrap();
                            reports.push(inner.maintain_visiting(force, &closing, visit).unwrap());
                        }
                        prop_assert_eq!(reports[0], reports[1]);
                        let [a, b] = stores.each_ref().map(|s| s.inner().unwrap());
                        prop_assert_eq!(open_windows(&a), open_windows(&b));
                        prop_assert_eq!(low_group(&a), low_group(&b));
                    }
                }
            }
            let [a, b] = stores.each_ref().map(stored);
            prop_assert_eq!(a, b);
        }
    }

    /// The skip is taken: a host whose windows are all open for more
    /// samples is proven to have nothing due, until its newest sample or
    /// the clock passes the end of a window.
    #[test]
    fn a_host_with_nothing_due_is_not_visited() {
        let options = Options::default();
        let due = |now, force| Due {
            now,
            durable: u64::MAX,
            force,
            window: options.chunk_window_ms,
            tolerance: options.out_of_order_tolerance_ms,
            idle: options.idle_seal_ms,
        };
        let mut host = HostState::default();
        assert!(!due(T0, true).may_seal(&host.series_bounds()), "no window");
        let key = crate::index::Index::default().insert(
            1,
            &crate::model::SeriesKey::for_host("a", "m", &[]).unwrap(),
        );
        host.add(1, key);
        host.open_window(1, T0, vec![], 0, 1);
        let mut counts = crate::head::Inserts::default();
        let p = |t_ms| Point { t_ms, value: 1.0 };
        let end = T0 + HOUR_MS + options.out_of_order_tolerance_ms;
        // Written a minute before the window's end, by the wall clock.
        let written = end - MINUTE_MS;
        host.insert_run(1, T0, &[p(T0 + 5)], 1, written, 100, &mut counts);
        // The window opened before its series was ever written: kept
        // bounds count it as idle until a visit's walk.
        assert!(due(end, false).may_seal(&host.series_bounds()));
        host.refresh_series_bounds();
        let bounds = host.series_bounds();
        assert!(!due(end - 1, false).may_seal(&bounds));
        assert!(due(end - 1, true).may_seal(&bounds), "forced");
        assert!(
            !due(end, false).may_seal(&bounds),
            "the clock past the end, not idle"
        );
        let idle = written + options.idle_seal_ms;
        assert!(!due(idle - 1, false).may_seal(&bounds));
        assert!(
            due(idle, false).may_seal(&bounds),
            "the clock past the end, idle"
        );
        host.open_window(1, T0 + HOUR_MS, vec![], 0, 2);
        host.insert_run(1, T0 + HOUR_MS, &[p(end)], 2, T0, 100, &mut counts);
        assert!(
            due(T0, false).may_seal(&host.series_bounds()),
            "a sample past the end"
        );
    }
}
