//! Putting samples and snapshots of a WAL group into the head: shared
//! by appends and by replay.
//!
//! Every insertion takes the [`Group`] its samples are logged in, which
//! only the committer hands out (for a frame it queued) or a WAL
//! generation gives back (for a frame read at replay): the head holds
//! nothing that is not in the WAL, and each window knows its newest
//! group, so sealing can wait until that group is durable.

use super::Inner;
use crate::TsdbError;
use crate::chunk;
use crate::commit::Group;
use crate::head::{HostState, Inserted, Inserts};
use crate::keys;
use crate::model::{Point, ProcessSnapshot};
use crate::snapshot;
use std::collections::HashMap;

/// How a sample reaches the head.
pub(super) enum Mode<'a> {
    Append,
    /// From the WAL at open: a sealed chunk already holding the sample's
    /// group makes it a no-op. Remembers the newest group of each sealed
    /// window seen, so later samples of the window need not read it again.
    Replay(&'a mut Sealed),
}

/// Newest commit group of sealed windows met during replay: series
/// windows by (series id, start), snapshot windows by (host, start).
#[derive(Default)]
pub(super) struct Sealed {
    series: HashMap<(u64, i64), u64>,
    snapshots: HashMap<(String, i64), u64>,
}

impl Inner {
    /// Puts samples of one series (sorted by time) into their windows,
    /// opening (or reopening from its sealed chunk) each window first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_runs(
        &self,
        state: &mut HostState,
        id: u64,
        points: &[Point],
        group: Group,
        mut mode: Mode<'_>,
        now: i64,
        counts: &mut Inserts,
    ) -> Result<(), TsdbError> {
        let lsn = group.number();
        let window_of = |p: &Point| self.options.window_of(p.t_ms);
        for run in points.chunk_by(|a, b| window_of(a) == window_of(b)) {
            let start = window_of(&run[0]);
            if self.open_window(state, id, start, lsn, &mut mode)? {
                let max = self.options.max_window_samples;
                state.insert_run(id, start, run, lsn, now, max, counts);
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
        let Some(series) = state.series(id) else {
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
        state.open_window(id, start, base, base_lsn, lsn);
        Ok(true)
    }

    /// Puts a process snapshot into its window, opening (or reopening
    /// from its sealed block) the window first.
    pub(super) fn insert_snapshot(
        &self,
        host: &str,
        state: &mut HostState,
        snapshot: &ProcessSnapshot,
        group: Group,
        mode: Mode<'_>,
        now: i64,
    ) -> Result<Inserted, TsdbError> {
        let lsn = group.number();
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
    fn sealed_raw(&self, id: u64, start: i64) -> Result<Option<(u64, Vec<Point>)>, TsdbError> {
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
}
