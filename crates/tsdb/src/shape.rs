//! The series of a host's previous batch, in order, with the ids they
//! resolved to.
//!
//! An agent sends the same series in the same order in every batch. The
//! general lookup (hash of the metric and labels, a map probe, then the
//! series' key compared string by string) touches several scattered heap
//! objects per sample, which with a million series means a cache miss at
//! each step. Comparing a batch against its predecessor's series, kept as
//! one contiguous byte string, takes one sequential comparison per series
//! instead; only a series that differs from the one at its position last
//! time takes the general lookup. The comparison is exact (the encoding
//! is length-prefixed, so equal bytes are equal names and labels), never
//! a hash.

use crate::codec::{put_str, put_uvarint};
use crate::model::SeriesInput;

/// The previous batch's series (those with points), in order.
#[derive(Debug, Default)]
pub(crate) struct BatchShape {
    /// Per series: label count, metric, then each label's name and value,
    /// all length-prefixed.
    bytes: Vec<u8>,
    /// The id each series resolved to; 0 when it was not stored (invalid,
    /// or over the host's series limit).
    ids: Vec<u64>,
}

impl BatchShape {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ids.capacity() * 8
    }
}

fn encode(input: &SeriesInput, out: &mut Vec<u8>) {
    put_uvarint(out, input.labels.len() as u64);
    put_str(out, &input.metric);
    for label in &input.labels {
        put_str(out, &label.name);
        put_str(out, &label.value);
    }
}

/// Matches a batch's series (those with points), one by one, against the
/// previous batch's.
pub(crate) struct ShapeMatch {
    old: BatchShape,
    /// Where the next series starts in `old.bytes`.
    at: usize,
    /// Every series so far was the one at its position last time.
    same: bool,
    ids: Vec<u64>,
    scratch: Vec<u8>,
}

impl ShapeMatch {
    pub(crate) fn new(old: BatchShape) -> Self {
        let ids = Vec::with_capacity(old.ids.len());
        ShapeMatch {
            old,
            at: 0,
            same: true,
            ids,
            scratch: Vec::with_capacity(256),
        }
    }

    /// The id of `input` if it is the series at the same position in the
    /// previous batch and that one was stored. Call [`ShapeMatch::record`]
    /// after every call, with the id `input` resolved to.
    pub(crate) fn known(&mut self, input: &SeriesInput) -> Option<u64> {
        if !self.same {
            return None;
        }
        let i = self.ids.len();
        self.scratch.clear();
        encode(input, &mut self.scratch);
        let end = self.at + self.scratch.len();
        if i < self.old.ids.len() && self.old.bytes.get(self.at..end) == Some(&self.scratch[..]) {
            self.at = end;
            Some(self.old.ids[i]).filter(|id| *id != 0)
        } else {
            self.same = false;
            None
        }
    }

    /// What the series just passed to [`ShapeMatch::known`] resolved to.
    pub(crate) fn record(&mut self, id: Option<u64>) {
        self.ids.push(id.unwrap_or(0));
    }

    /// The shape for the next batch: the old one when nothing changed,
    /// else rebuilt from `inputs` (the batch's series with points, in
    /// the order they were matched).
    pub(crate) fn finish<'a>(self, inputs: impl Iterator<Item = &'a SeriesInput>) -> BatchShape {
        if self.same && self.at == self.old.bytes.len() && self.ids == self.old.ids {
            return self.old;
        }
        let mut bytes = Vec::with_capacity(self.old.bytes.len().max(64));
        for input in inputs {
            encode(input, &mut bytes);
        }
        BatchShape {
            bytes,
            ids: self.ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Label;

    fn input(metric: &str, labels: &[(&str, &str)]) -> SeriesInput {
        SeriesInput {
            metric: metric.into(),
            labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            points: Vec::new(),
        }
    }

    /// Runs a batch through a match, resolving misses with `resolve`;
    /// returns the ids that came from the shape.
    fn pass(
        shape: BatchShape,
        batch: &[SeriesInput],
        resolve: impl Fn(usize) -> Option<u64>,
    ) -> (BatchShape, Vec<Option<u64>>) {
        let mut m = ShapeMatch::new(shape);
        let mut hits = Vec::new();
        for (i, s) in batch.iter().enumerate() {
            let hit = m.known(s);
            hits.push(hit);
            m.record(hit.or_else(|| resolve(i)));
        }
        (m.finish(batch.iter()), hits)
    }

    #[test]
    fn only_the_same_series_at_the_same_position_is_known() {
        let batch = vec![
            input("cpu", &[("cpu", "0")]),
            input("cpu", &[("cpu", "1")]),
            input("load", &[]),
        ];
        let (shape, hits) = pass(BatchShape::default(), &batch, |i| Some(10 + i as u64));
        assert_eq!(hits, vec![None, None, None]);
        let (shape, hits) = pass(shape, &batch, |_| panic!("all known"));
        assert_eq!(hits, vec![Some(10), Some(11), Some(12)]);
        // A changed label value, and what follows it, take the lookup.
        let changed = vec![
            input("cpu", &[("cpu", "0")]),
            input("cpu", &[("cpu", "2")]),
            input("load", &[]),
        ];
        let (shape, hits) = pass(shape, &changed, |i| Some(20 + i as u64));
        assert_eq!(hits, vec![Some(10), None, None]);
        let (_, hits) = pass(shape, &changed, |_| panic!("all known"));
        assert_eq!(hits, vec![Some(10), Some(21), Some(22)]);
    }

    #[test]
    fn boundaries_between_names_and_values_are_not_confused() {
        let first = vec![input("ab", &[("c", "d")])];
        let (shape, _) = pass(BatchShape::default(), &first, |_| Some(1));
        for other in [
            input("a", &[("bc", "d")]),
            input("ab", &[("cd", "")]),
            input("ab", &[("c", "d"), ("", "")]),
            input("ab", &[]),
        ] {
            let mut m = ShapeMatch::new(BatchShape {
                bytes: shape.bytes.clone(),
                ids: shape.ids.clone(),
            });
            assert_eq!(m.known(&other), None, "{other:?}");
        }
    }

    #[test]
    fn series_not_stored_are_looked_up_again() {
        let batch = vec![input("a", &[]), input("b", &[])];
        let (shape, _) = pass(BatchShape::default(), &batch, |i| (i == 0).then_some(5));
        let (shape, hits) = pass(shape, &batch, |i| (i == 1).then_some(6));
        assert_eq!(hits, vec![Some(5), None]);
        let (_, hits) = pass(shape, &batch, |_| panic!("all known"));
        assert_eq!(hits, vec![Some(5), Some(6)]);
        // A shorter batch is a prefix: known, then the shape shrinks.
        let (shape, hits) = pass(
            pass(BatchShape::default(), &batch, |i| Some(i as u64 + 1)).0,
            &batch[..1],
            |_| panic!("known"),
        );
        assert_eq!(hits, vec![Some(1)]);
        assert_eq!(shape.ids, vec![1]);
    }
}
