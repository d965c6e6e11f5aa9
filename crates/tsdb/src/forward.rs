//! The accept log and the forwarding cursors: what forwarding
//! (Prometheus remote_write, in the collector) reads, so that it sends
//! what the store accepted, in the order it accepted it, from a position
//! that survives restarts, without a second copy of the samples.
//!
//! The position is the commit group (see `commit`): groups are numbered in
//! the order they become durable, and an agent's replayed backlog lands in
//! a later group than fresh data it sent before, whatever its sample
//! times, so a cursor over groups misses no late data where a watermark
//! over sample times would.
//!
//! With [`crate::Options::accept_log`] set, the leader of each group that
//! stored samples writes one `A` + group entry to the store's tree after
//! the group's WAL write: for each batch in the group, its time span and
//! the ids of the series it stored samples in. Forwarding reads the
//! entries after its cursor and takes the groups' samples from their WAL
//! frames ([`Store::accepted_samples`]: exactly what each group accepted,
//! nothing decoded twice); for a group the WAL no longer holds, it reads
//! each series' points over each span back from the head or the sealed
//! chunks. An entry is not flushed with
//! its group: a crash may lose it while the group is in the WAL, and open
//! rebuilds the entries of the groups it replays; maintenance flushes the
//! tree before it deletes a WAL generation, so the entries of deleted
//! groups are on disk.
//!
//! A span read back may hold points of other groups too (late samples of a series
//! among its fresher ones): those are sent again, which at-least-once
//! delivery allows.
//!
//! `F` + name holds a destination's cursor: the highest group it has
//! received in full.

use crate::TsdbError;
use crate::codec::{ByteReader, put_ivarint, put_uvarint};
use crate::commit::Generation;
use crate::keys;
use crate::model::{Point, SeriesKey};
use crate::store::{Inner, Store, bump, poisoned};
use crate::wal;
use std::sync::Arc;

/// Series looked up per hold of the index's lock in
/// [`Store::series_keys`].
const KEYS_PER_LOCK: usize = 4096;

/// One batch of an accepted group: its span and the series it stored in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedSpan {
    /// Oldest sample time of the batch (ms).
    pub start_ms: i64,
    /// Past its newest sample time (ms): the span is `[start_ms, end_ms)`.
    pub end_ms: i64,
    /// Ids of the series it stored samples in, ascending.
    pub series: Vec<u64>,
}

/// One series' run of points in [`AcceptedSamples::points`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRun {
    /// The series' id.
    pub id: u64,
    /// Its points: `points[start..end]`.
    pub start: usize,
    pub end: usize,
}

/// What some accepted groups stored, from their WAL frames (see
/// [`Store::accepted_samples`]), flat so that a read allocates nothing
/// per series: per group asked, the range of `runs` it holds, in the
/// order accepted, or `None` when the WAL no longer holds the group.
/// Reused from read to read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AcceptedSamples {
    pub groups: Vec<Option<std::ops::Range<usize>>>,
    pub runs: Vec<SampleRun>,
    pub points: Vec<crate::model::Point>,
}

impl AcceptedSamples {
    /// The runs of the `i`th group asked (none when the WAL no longer
    /// holds it).
    pub fn runs_of(&self, i: usize) -> Option<&[SampleRun]> {
        let range = self.groups.get(i)?.clone()?;
        self.runs.get(range)
    }

    /// The points of `run`.
    pub fn points_of(&self, run: &SampleRun) -> &[crate::model::Point] {
        &self.points[run.start..run.end]
    }
}

/// One commit group's entry of the accept log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedGroup {
    pub group: u64,
    pub spans: Vec<AcceptedSpan>,
}

/// Appends the accept-log record of one batch's accepted samples to `out`:
/// the series count, the span, the ascending ids as deltas. Nothing for a
/// batch that stored no sample.
pub(crate) fn encode_record(accepted: &[(u64, Point)], out: &mut Vec<u8>) {
    let Some(first) = accepted.first() else {
        return;
    };
    let (mut start, mut end) = (first.1.t_ms, first.1.t_ms);
    let mut ids: Vec<u64> = Vec::new();
    for (id, p) in accepted {
        start = start.min(p.t_ms);
        end = end.max(p.t_ms);
        // Each series' points are adjacent: one id per run.
        if ids.last() != Some(id) {
            ids.push(*id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    put_uvarint(out, ids.len() as u64);
    put_ivarint(out, start);
    put_uvarint(out, end.wrapping_sub(start) as u64);
    let mut prev = 0u64;
    for id in ids {
        put_uvarint(out, id - prev);
        prev = id;
    }
}

/// The spans of one accept-log entry.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Vec<AcceptedSpan>, TsdbError> {
    let mut r = ByteReader::new(bytes);
    let mut spans = Vec::new();
    while !r.is_empty() {
        let n = r.count()?;
        let start_ms = r.ivarint()?;
        // Written as `end - start` of a batch's times: more than i64::MAX
        // would be a span ending before it starts.
        let length = i64::try_from(r.uvarint()?)
            .map_err(|_| TsdbError::Corrupt("accept log span is negative".into()))?;
        let end_ms = start_ms
            .checked_add(length)
            .and_then(|t| t.checked_add(1))
            .ok_or_else(|| TsdbError::Corrupt("accept log span overflows".into()))?;
        let mut series = Vec::with_capacity(n);
        let mut id = 0u64;
        for _ in 0..n {
            id = id
                .checked_add(r.uvarint()?)
                .ok_or_else(|| TsdbError::Corrupt("accept log series id overflows".into()))?;
            series.push(id);
        }
        spans.push(AcceptedSpan {
            start_ms,
            end_ms,
            series,
        });
    }
    Ok(spans)
}

fn accepted_key(group: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = keys::ACCEPTED;
    key[1..].copy_from_slice(&group.to_be_bytes());
    key
}

pub(crate) fn cursor_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(keys::CURSOR);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Writes the accept-log entry of `group`, once its WAL write is durable.
pub(crate) fn write_entry(tree: &sled::Tree, group: u64, entry: &[u8]) -> Result<(), TsdbError> {
    tree.insert(accepted_key(group), entry)?;
    Ok(())
}

pub(crate) fn group_of(key: &[u8]) -> Option<u64> {
    (key.len() == 9 && key[0] == keys::ACCEPTED)
        .then(|| key[1..].try_into().ok().map(u64::from_be_bytes))
        .flatten()
}

impl Store {
    /// The highest commit group known durable: everything the store has
    /// accepted so far is in groups up to it.
    pub fn accepted_through(&self) -> Result<u64, TsdbError> {
        Ok(self.inner()?.commit.durable())
    }

    /// Accept-log entries of the durable groups after `after`, oldest
    /// first, at most `max_groups`. A damaged entry is skipped and counted
    /// (its samples are not forwarded), never an error.
    pub fn accepted_after(
        &self,
        after: u64,
        max_groups: usize,
    ) -> Result<Vec<AcceptedGroup>, TsdbError> {
        let inner = self.inner()?;
        let through = inner.commit.durable();
        if after >= through {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let range = accepted_key(after.saturating_add(1))..=accepted_key(through);
        for entry in inner.tree.range(range) {
            if out.len() >= max_groups {
                break;
            }
            let (key, value) = entry?;
            let Some(group) = group_of(&key) else {
                continue;
            };
            match decode_entry(&value) {
                Ok(spans) => out.push(AcceptedGroup { group, spans }),
                Err(e) => {
                    bump(&inner.counters.corrupt_blocks, 1);
                    tracing::warn!(group, error = %e, "skipping a damaged accept log entry");
                }
            }
        }
        Ok(out)
    }

    /// The samples each of `groups` (ascending, durable) stored, read from
    /// the group's WAL frames into `out` (cleared first), which hold
    /// exactly the accepted samples: per series id, its points in the
    /// order accepted. `None` for a group the WAL no longer holds (sealed,
    /// its generation deleted) or whose frames are damaged: the caller
    /// reads those back over their spans.
    ///
    /// This costs a decode of the new samples alone, where a read over the
    /// spans decodes the head blocks they fall in from their start.
    pub fn accepted_samples(
        &self,
        groups: &[u64],
        out: &mut AcceptedSamples,
    ) -> Result<(), TsdbError> {
        let inner = self.inner()?;
        out.groups.clear();
        out.groups.resize(groups.len(), None);
        out.runs.clear();
        out.points.clear();
        let (Some(&low), Some(&high)) = (groups.first(), groups.last()) else {
            return Ok(());
        };
        let mut damaged = vec![false; groups.len()];
        // Held while reading: maintenance cannot delete a generation
        // meanwhile (a deleted one reopened would be created empty).
        inner.commit.with_generations(|generations| {
            // The group whose runs are being added: keys come in group
            // order, and a group lies in one generation.
            let mut current: Option<usize> = None;
            for g in generations {
                // A generation holds the groups after its predecessor's
                // last one, through its own.
                let last = g.last_group.load(std::sync::atomic::Ordering::Acquire);
                if last < low {
                    continue;
                }
                let db = g.db()?;
                let range = keys::wal_start(low)..keys::wal_start(high.saturating_add(1));
                for item in db.range(range) {
                    let (key, value) = item?;
                    let Some(i) = keys::parse_wal(&key).and_then(|n| groups.binary_search(&n).ok())
                    else {
                        continue;
                    };
                    let begin = out.runs.len();
                    let corrupt = wal::samples_of_value(&value, &mut out.runs, &mut out.points) > 0;
                    let end = out.runs.len();
                    match (&mut out.groups[i], current == Some(i)) {
                        (Some(range), true) => range.end = end,
                        // Not contiguous with its earlier frames (not how
                        // the WAL is laid out): read back over its spans.
                        (Some(_), false) => damaged[i] = true,
                        (slot @ None, _) => *slot = Some(begin..end),
                    }
                    current = Some(i);
                    damaged[i] |= corrupt;
                }
                if last >= high {
                    break;
                }
            }
            Ok(())
        })?;
        for (range, damaged) in out.groups.iter_mut().zip(damaged) {
            if damaged {
                *range = None;
            }
        }
        Ok(())
    }

    /// The key of series `id`, if the store knows it.
    pub fn series_key(&self, id: u64) -> Result<Option<Arc<SeriesKey>>, TsdbError> {
        let inner = self.inner()?;
        let index = inner.index.read().map_err(|_| poisoned())?;
        Ok(index.series_key(id))
    }

    /// The keys of series `ids`, in their order, into `out` (cleared
    /// first; `None` for a series the store does not know): what
    /// [`Store::series_key`] gives for each, with the index locked once
    /// per [`KEYS_PER_LOCK`] ids rather than once per id.
    pub fn series_keys(
        &self,
        ids: &[u64],
        out: &mut Vec<Option<Arc<SeriesKey>>>,
    ) -> Result<(), TsdbError> {
        let inner = self.inner()?;
        out.clear();
        out.reserve(ids.len());
        for some in ids.chunks(KEYS_PER_LOCK) {
            // Released between chunks: a writer creating series waits
            // for one chunk's lookups at most.
            let index = inner.index.read().map_err(|_| poisoned())?;
            out.extend(some.iter().map(|id| index.series_key(*id)));
        }
        Ok(())
    }

    /// Every forwarding cursor: (destination name, highest group delivered).
    pub fn forward_cursors(&self) -> Result<Vec<(String, u64)>, TsdbError> {
        let inner = self.inner()?;
        let mut out = Vec::new();
        for entry in inner.tree.scan_prefix([keys::CURSOR]) {
            let (key, value) = entry?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            match <[u8; 8]>::try_from(&value[..]) {
                Ok(v) => out.push((name, u64::from_be_bytes(v))),
                Err(_) => {
                    bump(&inner.counters.corrupt_blocks, 1);
                    tracing::warn!(destination = %name, "ignoring a damaged forwarding cursor");
                }
            }
        }
        Ok(out)
    }

    /// Records that destination `name` received every group up to `group`.
    /// Not flushed: sled writes it out within its flush interval, and a
    /// cursor lost to a crash only sends some groups again.
    pub fn set_forward_cursor(&self, name: &str, group: u64) -> Result<(), TsdbError> {
        let inner = self.inner()?;
        inner
            .tree
            .insert(cursor_key(name), &group.to_be_bytes()[..])?;
        Ok(())
    }

    /// Forgets destination `name`'s cursor (a destination removed from the
    /// configuration).
    pub fn remove_forward_cursor(&self, name: &str) -> Result<(), TsdbError> {
        self.inner()?.tree.remove(cursor_key(name))?;
        Ok(())
    }

    /// Deletes the accept-log entries no destination needs: those of groups
    /// up to `through` (the lowest cursor, which must be stored already),
    /// and the oldest ones whose every span is older than the retention
    /// (their samples are gone). Flushes the cursors first. Returns how
    /// many it deleted.
    pub fn trim_accept_log(&self, through: u64) -> Result<u64, TsdbError> {
        let inner = self.inner()?;
        let cutoff = (inner.options.clock)().saturating_sub(inner.options.retention_ms);
        let mut batch = sled::Batch::default();
        let mut deleted = 0;
        for entry in inner.tree.scan_prefix([keys::ACCEPTED]) {
            let (key, value) = entry?;
            let expired = || {
                decode_entry(&value).map_or(true, |spans| spans.iter().all(|s| s.end_ms <= cutoff))
            };
            if group_of(&key).is_some_and(|g| g <= through) || expired() {
                batch.remove(key);
                deleted += 1;
            } else {
                break;
            }
        }
        if deleted > 0 {
            // The cursors that allow the deletion are on disk first: after
            // a crash, no cursor can point before a deleted entry.
            inner.db.flush()?;
            inner.tree.apply_batch(batch)?;
        }
        Ok(deleted)
    }
}

impl Inner {
    /// Writes the accept-log entries of the groups from `low` on that the
    /// WAL holds and the tree does not: a crash may have lost them (they
    /// are written unflushed), or the log was off when they were stored.
    pub(crate) fn rebuild_accept_log(
        &self,
        generations: &[Arc<Generation>],
        low: u64,
    ) -> Result<(), TsdbError> {
        let mut current: Option<(u64, Vec<u8>)> = None;
        let finish = |current: Option<(u64, Vec<u8>)>| -> Result<(), TsdbError> {
            if let Some((group, entry)) = current
                && !entry.is_empty()
            {
                write_entry(&self.tree, group, &entry)?;
            }
            Ok(())
        };
        for g in generations {
            for item in g
                .db()?
                .range(keys::wal_start(low)..keys::wal_start(u64::MAX))
            {
                let (key, value) = item?;
                let Some(group) = keys::parse_wal(&key) else {
                    continue;
                };
                if current.as_ref().is_none_or(|(c, _)| *c != group) {
                    finish(current.take())?;
                    if self.tree.contains_key(accepted_key(group))? {
                        continue;
                    }
                    current = Some((group, Vec::new()));
                }
                let Some((_, entry)) = current.as_mut() else {
                    continue;
                };
                // Damaged frames were counted by replay.
                for record in wal::decode_value(&value).records {
                    let samples: Vec<(u64, Point)> = record
                        .series
                        .iter()
                        .flat_map(|(id, points)| points.iter().map(move |p| (*id, *p)))
                        .collect();
                    encode_record(&samples, entry);
                }
            }
        }
        finish(current.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Options, SeriesInput};

    const HOUR: i64 = 3_600_000;

    fn p(t_ms: i64) -> Point {
        Point { t_ms, value: 1.0 }
    }

    fn open(dir: &std::path::Path, accept_log: bool) -> Store {
        let options = Options {
            maintenance_interval: None,
            accept_log,
            clock: Arc::new(move || 10 * HOUR),
            ..Options::default()
        };
        Store::open(dir, options).unwrap()
    }

    /// Stores points of series `m{s=..}` of host `h` as batch `seq`.
    fn append(store: &Store, seq: u64, series: &[&str], points: &[Point]) {
        let batch = Batch {
            host: "h".to_owned(),
            source: 1,
            seq,
            series: series
                .iter()
                .map(|s| SeriesInput {
                    metric: "m".to_owned(),
                    labels: vec![crate::Label::new("s", *s)],
                    points: points.to_vec(),
                })
                .collect(),
            processes: vec![],
            malformed: 0,
        };
        assert_eq!(store.append(&batch).unwrap().rejected.total(), 0);
    }

    /// (start, end, series names) of one span.
    type Span = (i64, i64, Vec<String>);

    /// (group, spans) of every entry after `after`.
    fn log(store: &Store, after: u64) -> Vec<(u64, Vec<Span>)> {
        let name = |id: u64| {
            let key = store.series_key(id).unwrap().unwrap();
            key.label("s").unwrap().to_owned()
        };
        store
            .accepted_after(after, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|g| {
                let spans = g.spans.iter().map(|s| {
                    (
                        s.start_ms,
                        s.end_ms,
                        s.series.iter().map(|id| name(*id)).collect(),
                    )
                });
                (g.group, spans.collect())
            })
            .collect()
    }

    #[test]
    fn the_log_lists_batches_in_accepted_order_not_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        let t = 10 * HOUR - 60_000;
        append(&store, 1, &["a", "b"], &[p(t), p(t + 10)]);
        // A late batch (an agent's replayed backlog) after a fresh one.
        append(&store, 2, &["a"], &[p(t - 1_000)]);
        let entries = log(&store, 0);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert!(entries[0].0 < entries[1].0);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(entries[0].1, vec![(t, t + 11, names(&["a", "b"]))]);
        assert_eq!(entries[1].1, vec![(t - 1_000, t - 999, names(&["a"]))]);
        assert_eq!(store.accepted_through().unwrap(), entries[1].0);
        assert_eq!(log(&store, entries[0].0), entries[1..]);
        assert!(log(&store, entries[1].0).is_empty());
    }

    #[test]
    fn open_rebuilds_entries_the_wal_holds_and_sealing_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = 10 * HOUR - 60_000;
        {
            // Stored while the log was off: as if its entries were lost.
            let store = open(dir.path(), false);
            append(&store, 1, &["a"], &[p(t)]);
            assert!(log(&store, 0).is_empty());
        }
        let store = open(dir.path(), true);
        append(&store, 2, &["b"], &[p(t + 5)]);
        let before = log(&store, 0);
        assert_eq!(before.len(), 2, "{before:?}");
        assert_eq!(before[0].1[0].2, vec!["a".to_owned()]);
        let report = store.seal_all().unwrap();
        assert!(report.wal_generations_deleted > 0, "{report:?}");
        drop(store);
        let store = open(dir.path(), true);
        assert_eq!(log(&store, 0), before);
        let (key, id) = store.select("m", &[]).unwrap().remove(0);
        assert_eq!(store.series_points(&key, id, t, t + 1).unwrap(), vec![p(t)]);
    }

    /// The WAL gives each group's samples exactly, late ones included,
    /// across a restart; once sealed and deleted from the WAL, a group
    /// has none (read back over its spans instead).
    #[test]
    fn accepted_samples_come_from_the_wal_until_it_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let t = 10 * HOUR - 60_000;
        let groups: Vec<u64>;
        {
            let store = open(dir.path(), true);
            append(&store, 1, &["a", "b"], &[p(t), p(t + 10)]);
            append(&store, 2, &["a"], &[p(t - 1_000)]);
            groups = log(&store, 0).iter().map(|e| e.0).collect();
            assert_eq!(groups.len(), 2);
        }
        let store = open(dir.path(), true);
        let id = |s: &str| {
            let selected = store.select("m", &[]).unwrap();
            selected
                .into_iter()
                .find(|(k, _)| k.label("s") == Some(s))
                .unwrap()
                .1
        };
        let got = samples(&store, &groups);
        assert_eq!(
            got,
            vec![
                Some(vec![
                    (id("a"), vec![p(t), p(t + 10)]),
                    (id("b"), vec![p(t), p(t + 10)])
                ]),
                Some(vec![(id("a"), vec![p(t - 1_000)])]),
            ]
        );
        assert_eq!(samples(&store, &groups[1..]), got[1..]);
        assert!(samples(&store, &[]).is_empty());
        assert_eq!(samples(&store, &[groups[1] + 5]), vec![None]);
        let report = store.seal_all().unwrap();
        assert!(report.wal_generations_deleted > 0, "{report:?}");
        assert_eq!(samples(&store, &groups), vec![None, None]);
    }

    /// A group's (series id, points) from the WAL, if it holds the group.
    type Group = Option<Vec<(u64, Vec<Point>)>>;

    /// Per group, its (series id, points) from the WAL.
    fn samples(store: &Store, groups: &[u64]) -> Vec<Group> {
        let mut out = AcceptedSamples::default();
        // Filled twice: nothing of the first read stays.
        store.accepted_samples(&[1, 2, 3], &mut out).unwrap();
        store.accepted_samples(groups, &mut out).unwrap();
        assert_eq!(out.groups.len(), groups.len());
        (0..groups.len())
            .map(|i| {
                out.runs_of(i).map(|runs| {
                    runs.iter()
                        .map(|run| (run.id, out.points_of(run).to_vec()))
                        .collect()
                })
            })
            .collect()
    }

    #[test]
    fn cursors_round_trip_and_trimming_keeps_what_a_cursor_needs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        let t = 10 * HOUR - 60_000;
        for seq in 1..=3 {
            append(&store, seq, &["a"], &[p(t + seq as i64)]);
        }
        let groups: Vec<u64> = log(&store, 0).iter().map(|e| e.0).collect();
        store.set_forward_cursor("vm", groups[0]).unwrap();
        store.set_forward_cursor("prom", groups[1]).unwrap();
        let mut cursors = store.forward_cursors().unwrap();
        cursors.sort();
        assert_eq!(
            cursors,
            vec![("prom".to_owned(), groups[1]), ("vm".to_owned(), groups[0])]
        );
        assert_eq!(store.trim_accept_log(groups[0]).unwrap(), 1);
        assert_eq!(log(&store, 0).len(), 2);
        store.remove_forward_cursor("vm").unwrap();
        assert_eq!(store.forward_cursors().unwrap().len(), 1);
    }

    /// Many keys at once are what one key at a time gives, unknown ids
    /// included, across the lock's chunks.
    #[test]
    fn series_keys_match_series_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        let t = 10 * HOUR - 60_000;
        append(&store, 1, &["a", "b", "c"], &[p(t)]);
        let mut ids: Vec<u64> = store
            .select("m", &[])
            .unwrap()
            .iter()
            .map(|s| s.1)
            .collect();
        assert_eq!(ids.len(), 3);
        ids.extend(0..(KEYS_PER_LOCK as u64 + 10));
        ids.push(u64::MAX);
        let mut keys = vec![None];
        store.series_keys(&ids, &mut keys).unwrap();
        let one: Vec<_> = ids
            .iter()
            .map(|id| store.series_key(*id).unwrap())
            .collect();
        assert_eq!(keys, one);
        assert_eq!(keys.iter().flatten().count(), 6, "each of the 3 twice");
        store.series_keys(&[], &mut keys).unwrap();
        assert!(keys.is_empty());
    }

    #[test]
    fn records_round_trip_with_sorted_ids_and_spans() {
        let mut entry = Vec::new();
        encode_record(
            &[(7, p(100)), (7, p(90)), (3, p(120)), (9, p(95))],
            &mut entry,
        );
        encode_record(&[], &mut entry);
        encode_record(&[(1, p(-5))], &mut entry);
        assert_eq!(
            decode_entry(&entry).unwrap(),
            vec![
                AcceptedSpan {
                    start_ms: 90,
                    end_ms: 121,
                    series: vec![3, 7, 9],
                },
                AcceptedSpan {
                    start_ms: -5,
                    end_ms: -4,
                    series: vec![1],
                },
            ]
        );
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        let mut entry = Vec::new();
        encode_record(&[(u64::MAX - 1, p(0)), (u64::MAX, p(1))], &mut entry);
        for cut in 0..entry.len() {
            let _ = decode_entry(&entry[..cut]);
        }
        assert!(decode_entry(&[5, 0, 0, 1]).is_err());
        let mut huge = Vec::new();
        put_uvarint(&mut huge, 2);
        put_ivarint(&mut huge, 0);
        put_uvarint(&mut huge, 0);
        put_uvarint(&mut huge, u64::MAX);
        put_uvarint(&mut huge, u64::MAX);
        assert!(decode_entry(&huge).is_err());
        // A length past i64::MAX read as a negative one gave a span
        // ending before it starts.
        let mut inverted = Vec::new();
        put_uvarint(&mut inverted, 1);
        put_ivarint(&mut inverted, 10);
        put_uvarint(&mut inverted, u64::MAX - 5);
        put_uvarint(&mut inverted, 3);
        let err = decode_entry(&inverted).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }
}
