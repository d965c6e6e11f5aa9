//! The append path: a batch checked against its host's head, then
//! logged and applied by an [`Appender`] (the WAL frame queued first,
//! the head applied with its group after), then acknowledged by
//! `Store::wait` once the group is durable.

use super::apply::Mode;
use super::{HostRef, Inner, Pending, bump, lock, poisoned};
use crate::TsdbError;
use crate::commit::Group;
use crate::head::{HostState, IdMap, Inserted, Inserts};
use crate::keys;
use crate::model::{
    AppendOutcome, Batch, Point, ProcessSnapshot, SeriesInput, SeriesKey, series_hash,
};
use crate::shape::ShapeMatch;
use crate::wal;

/// Samples an append inserts per hold of its host's state lock.
const INSERTS_PER_LOCK: usize = 4096;

/// A batch checked against its host's head: its series resolved (the
/// definitions of those it creates in `defs`), the samples and snapshots
/// it stores and the count of what it refused. Made only by
/// [`Inner::prepare`]; its one way on is [`Appender::commit`], which
/// owns the order of an append.
struct Appender<'a> {
    inner: &'a Inner,
    batch: &'a Batch,
    state: &'a HostRef,
    now: i64,
    defs: Vec<(Vec<u8>, Vec<u8>)>,
    accepted: Vec<(u64, Point)>,
    snapshots: Vec<&'a ProcessSnapshot>,
    outcome: AppendOutcome,
}

/// What checking a batch found.
enum Prepared<'a> {
    /// Its (host, source, sequence) was stored before: acknowledged once
    /// the original is durable, stored again never.
    Replayed(Pending),
    New(Appender<'a>),
}

impl Inner {
    /// Stores a batch: checked, then logged and applied by an
    /// [`Appender`]; the returned ticket says when it may be acknowledged
    /// (`Store::wait`).
    pub(super) fn submit(&self, batch: &Batch) -> Result<Pending, TsdbError> {
        self.commit.check()?;
        crate::model::validate_host(&batch.host)?;
        let state = self.host_or_create(&batch.host)?;
        // Held to the end: the host's WAL frames go in the order its head
        // applies them.
        let _in_order = state.appends.lock().map_err(|_| poisoned())?;
        match self.prepare(batch, &state)? {
            Prepared::Replayed(pending) => Ok(pending),
            Prepared::New(appender) => appender.commit(),
        }
    }

    /// Checks a batch under its host's state lock: a replay of a stored
    /// sequence, or what an [`Appender`] will log and apply.
    fn prepare<'a>(
        &'a self,
        batch: &'a Batch,
        state: &'a HostRef,
    ) -> Result<Prepared<'a>, TsdbError> {
        let mut guard = lock(state)?;
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
            return Ok(Prepared::Replayed(Pending {
                incarnation: self.incarnation,
                group,
                outcome,
            }));
        }
        let now = (self.options.clock)();
        let mut defs = Vec::new();
        let listed = self.list_series(batch, host, &mut defs, &mut outcome);
        let accepted = self.accept_samples(listed, host, now, &mut outcome);
        let snapshots = self.accept_snapshots(batch, now, &mut outcome);
        Ok(Prepared::New(Appender {
            inner: self,
            batch,
            state,
            now,
            defs,
            accepted,
            snapshots,
            outcome,
        }))
    }
}

impl Appender<'_> {
    /// Logs the batch, then applies it, as Prometheus' head appender
    /// commits: the WAL frame (with the definitions of the series the
    /// batch created, and its accept-log record) is queued into a commit
    /// group first, and the samples and snapshots go into the head only
    /// with that [`Group`], so the head never holds what the WAL does not.
    /// They are visible to queries at once; the group is made durable by
    /// whoever waits on it, and the returned ticket yields the outcome
    /// (the acknowledgement) only then. Should the group's write fail,
    /// the store fails and is rebuilt from disk, without them.
    fn commit(mut self) -> Result<Pending, TsdbError> {
        let (inner, batch, state, now) = (self.inner, self.batch, self.state, self.now);
        // Even an empty batch is logged: its sequence must be remembered.
        let mut frame = Vec::with_capacity(64 + self.accepted.len() * 16);
        wal::encode_frame(
            &batch.host,
            batch.source,
            batch.seq,
            &self.accepted,
            &self.snapshots,
            &mut frame,
        );
        let mut log = Vec::new();
        if inner.options.accept_log {
            crate::forward::encode_record(&self.accepted, &mut log);
        }
        let group = inner.commit.enqueue(&frame, self.defs, &log)?;
        let mut guard = lock(state)?;
        guard
            .source(batch.source)
            .push_pending(group.number(), batch.seq);
        drop(guard);
        let outcome = &mut self.outcome;
        inner.insert_accepted(state, &self.accepted, group, now, outcome)?;
        outcome.rejected.malformed += batch.malformed;
        let mut guard = lock(state)?;
        for s in self.snapshots {
            if inner.insert_snapshot(&batch.host, &mut guard, s, group, Mode::Append, now)?
                == Inserted::Stored
            {
                bump(&inner.counters.snapshots, 1);
            }
        }
        drop(guard);
        bump(&inner.counters.batches, 1);
        bump(&inner.counters.samples, self.outcome.stored);
        inner.counters.reject(&self.outcome.rejected);
        Ok(Pending {
            incarnation: inner.incarnation,
            group: Some(group.number()),
            outcome: self.outcome,
        })
    }
}

impl Inner {
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

    /// The oldest time a sample or snapshot may have to be accepted: the
    /// retention by age, or the end of the partitions retention by size
    /// deleted, whichever is later. A sample behind the latter would
    /// recreate a partition that reads no longer look at.
    fn oldest_accepted(&self, now: i64) -> i64 {
        now.saturating_sub(self.options.retention_ms)
            .max(self.partitions.floor())
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
        let oldest = self.oldest_accepted(now);
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
        let oldest = self.oldest_accepted(now);
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
        group: Group,
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
}
