//! Range queries with a step and an aggregation: steps of whole hours are
//! served from the 1 h tier, any other step from raw samples.
//!
//! There is no 1 min tier: a window's minute aggregates (min, max, sum,
//! count, last) took as many bytes as its raw chunk (sums of noisy ratios
//! do not compress), so reading them cost what reading the raw chunk
//! costs, and the store twice the disk.
//!
//! Buckets are aligned to multiples of the step since the epoch and the
//! range is widened to whole buckets, so every 1 h row falls in exactly
//! one bucket. Windows still in the head are aggregated from raw samples;
//! sealed windows from their tier. `rate` adds the increases between
//! consecutive samples (between consecutive rows' last values when served
//! from the 1 h tier, so a reset inside one row loses the increase before
//! it) and divides by the step.

use crate::TsdbError;
use crate::chunk::{self, Row};
use crate::keys;
use crate::model::{Aggregation, Matcher, Point, SeriesData, SeriesKey};
use crate::options::{DAY_MS, HOUR_MS, align};
use crate::read::Read;
use crate::store::{Inner, Store};

/// One input of a bucket: a raw sample or a downsampled row.
enum Item {
    Sample(Point),
    Row(Row),
}

impl Item {
    fn t_ms(&self) -> i64 {
        match self {
            Item::Sample(p) => p.t_ms,
            Item::Row(r) => r.t_ms,
        }
    }
}

/// Running aggregates of one bucket.
struct Bucket {
    start: i64,
    row: Option<Row>,
    increase: f64,
    /// Number of increases added (rate needs at least one).
    pairs: u64,
}

impl Store {
    /// Points of every series of `metric` matching every matcher in
    /// `[start_ms, end_ms)` widened to whole steps: one point per non-empty
    /// step, at the step's start, holding `aggregation` of its samples.
    pub fn range_step(
        &self,
        metric: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        aggregation: Aggregation,
    ) -> Result<Vec<SeriesData>, TsdbError> {
        let step = Step::Every(step_ms, aggregation);
        self.range_within(metric, matchers, start_ms, end_ms, step, usize::MAX)
    }

    /// [`Store::range`] or [`Store::range_step`], as `step` says, refused
    /// with [`TsdbError::TooManyPoints`] once the series read so far hold
    /// more than `max_points` points: a query over the limit stops one
    /// series past it instead of building its whole result first.
    pub fn range_within(
        &self,
        metric: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        step: Step,
        max_points: usize,
    ) -> Result<Vec<SeriesData>, TsdbError> {
        let inner = self.inner()?;
        let (start, end, fold_by) = match step {
            Step::Raw => (start_ms, end_ms, None),
            Step::Every(step_ms, aggregation) => {
                if step_ms <= 0 {
                    return Err(TsdbError::Invalid(format!(
                        "step must be positive, not {step_ms} ms"
                    )));
                }
                let start = align(start_ms, step_ms);
                let end = align(end_ms.saturating_add(step_ms - 1), step_ms);
                (start, end, Some((step_ms, aggregation)))
            }
        };
        let mut out = Vec::new();
        let mut selected = 0usize;
        for (key, id) in inner.select(metric, matchers)? {
            let points = match fold_by {
                None => inner.raw_points(key.host(), id, start, end)?,
                Some((step_ms, aggregation)) => fold(
                    inner.items(&key, id, start, end, step_ms)?,
                    step_ms,
                    aggregation,
                ),
            };
            selected = selected.saturating_add(points.len());
            if selected > max_points {
                return Err(TsdbError::TooManyPoints { limit: max_points });
            }
            if !points.is_empty() {
                out.push(SeriesData {
                    key: (*key).clone(),
                    points,
                });
            }
        }
        Ok(out)
    }
}

/// What a range query returns of each series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every raw sample.
    Raw,
    /// One point per step of this many milliseconds, folded by the
    /// aggregation.
    Every(i64, Aggregation),
}

impl Inner {
    /// Samples (head and, for steps not of whole hours, sealed raw chunks)
    /// and 1 h rows of one series in `[start, end)`, sorted by time.
    fn items(
        &self,
        key: &SeriesKey,
        id: u64,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Item>, TsdbError> {
        if start >= end {
            return Ok(Vec::new());
        }
        if step % HOUR_MS != 0 {
            return Ok(self
                .raw_points(key.host(), id, start, end)?
                .into_iter()
                .map(Item::Sample)
                .collect());
        }
        let mut head_samples = Vec::new();
        let host = self.host(key.host())?;
        let head = self.head_points(host.as_ref(), id, start, end, &mut head_samples)?;
        let open = &head.open;
        let mut items: Vec<Item> = head_samples.into_iter().map(Item::Sample).collect();
        let in_range = |r: &Row| r.t_ms >= start && r.t_ms < end;
        let open_window = |t: i64| open.contains(&self.options.window_of(t));
        let (from, to) = (align(start, DAY_MS), align(end - 1, DAY_MS));
        // A day's hours are written with its last window: until then (or
        // if its series stopped during the day) its raw chunks serve. The
        // gaps between the days that have their hours are read raw.
        let mut gaps = Vec::new();
        let mut covered_to = start;
        // Days past the retention are not read (the day holding its
        // cutoff is, as retention by key deleted it only after).
        let from = from.max(align(self.partitions.floor(), DAY_MS));
        let (first, last) = (self.partitions.of_day(from), self.partitions.of_day(to));
        let range = keys::chunk(keys::TIER_HOUR, id, from)..=keys::chunk(keys::TIER_HOUR, id, to);
        let dbs = if from <= to {
            self.partitions.within(first, last)?
        } else {
            Vec::new()
        };
        for db in dbs {
            for entry in db.range(range.start(), range.end()) {
                let (k, value) = entry?;
                let Some((_, _, day)) = keys::parse_chunk(&k) else {
                    continue;
                };
                if let Some((_, rows)) = self.decoded(chunk::decode_rows(&value), "rows", id, day) {
                    gaps.push((covered_to, day));
                    covered_to = covered_to.max(day.saturating_add(DAY_MS));
                    items.extend(
                        rows.into_iter()
                            .filter(|r| in_range(r) && !open_window(r.t_ms))
                            .map(Item::Row),
                    );
                }
            }
        }
        gaps.push((covered_to, end));
        for (gap_start, gap_end) in gaps {
            let (s, e) = (gap_start.max(start), gap_end.min(end));
            let mut sealed = Vec::new();
            self.sealed_points(id, s, e, &head, Read::Store, &mut sealed)?;
            items.extend(sealed.into_iter().map(Item::Sample));
        }
        items.sort_by_key(Item::t_ms);
        Ok(items)
    }
}

/// Folds time-sorted items into one point per non-empty step.
fn fold(items: Vec<Item>, step: i64, aggregation: Aggregation) -> Vec<Point> {
    let mut out = Vec::new();
    let mut bucket: Option<Bucket> = None;
    let mut previous_last: Option<f64> = None;
    for item in items {
        let start = align(item.t_ms(), step);
        if bucket.as_ref().is_some_and(|b| b.start != start) {
            emit(bucket.take(), step, aggregation, &mut out);
        }
        let b = bucket.get_or_insert(Bucket {
            start,
            row: None,
            increase: 0.0,
            pairs: 0,
        });
        let row = match item {
            Item::Sample(p) => Row {
                t_ms: p.t_ms,
                min: p.value,
                max: p.value,
                sum: p.value,
                count: 1,
                last: p.value,
            },
            Item::Row(r) => r,
        };
        if let Some(prev) = previous_last {
            // A decrease is a counter reset: the counter restarted from zero.
            b.increase += if row.last >= prev {
                row.last - prev
            } else {
                row.last
            };
            b.pairs += 1;
        }
        previous_last = Some(row.last);
        match &mut b.row {
            Some(acc) => acc.merge(&row),
            None => b.row = Some(row),
        }
    }
    emit(bucket, step, aggregation, &mut out);
    out
}

fn emit(bucket: Option<Bucket>, step: i64, aggregation: Aggregation, out: &mut Vec<Point>) {
    let Some(Bucket {
        start,
        row: Some(row),
        increase,
        pairs,
    }) = bucket
    else {
        return;
    };
    let value = match aggregation {
        Aggregation::Avg => row.sum / row.count as f64,
        Aggregation::Min => row.min,
        Aggregation::Max => row.max,
        Aggregation::Sum => row.sum,
        Aggregation::Count => row.count as f64,
        Aggregation::Last => row.last,
        Aggregation::Rate if pairs == 0 => return,
        Aggregation::Rate => increase / (step as f64 / 1000.0),
    };
    out.push(Point { t_ms: start, value });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[(i64, f64)]) -> Vec<Item> {
        values
            .iter()
            .map(|&(t_ms, value)| Item::Sample(Point { t_ms, value }))
            .collect()
    }

    #[test]
    fn buckets_aggregate_and_rate_handles_resets() {
        let items = || samples(&[(0, 1.0), (10, 3.0), (20, 2.0), (100, 10.0), (110, 4.0)]);
        let at = |agg| {
            fold(items(), 100, agg)
                .into_iter()
                .map(|p| (p.t_ms, p.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(Aggregation::Avg), vec![(0, 2.0), (100, 7.0)]);
        assert_eq!(at(Aggregation::Min), vec![(0, 1.0), (100, 4.0)]);
        assert_eq!(at(Aggregation::Max), vec![(0, 3.0), (100, 10.0)]);
        assert_eq!(at(Aggregation::Sum), vec![(0, 6.0), (100, 14.0)]);
        assert_eq!(at(Aggregation::Count), vec![(0, 3.0), (100, 2.0)]);
        assert_eq!(at(Aggregation::Last), vec![(0, 2.0), (100, 4.0)]);
        // 1 -> 3 (+2), 3 -> 2 reset (+2); 2 -> 10 (+8), 10 -> 4 reset (+4); per 0.1 s.
        assert_eq!(at(Aggregation::Rate), vec![(0, 40.0), (100, 120.0)]);
    }
}
