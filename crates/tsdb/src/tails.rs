//! Decoded tails of sealed raw chunks, for reads of many series over one
//! short span (an instant query's lookback, see
//! [`crate::Store::series_points_many`]).
//!
//! Such a read costs, per series, a lookup in sled and the chunk decoded
//! from its start; asked again (a dashboard refreshing, the same lookback
//! over every host), it pays both again. This keeps, per (series,
//! window), the chunk's points from the span's start to its end (or that
//! the window has no chunk), so a later read whose span starts at or after
//! that point is answered from memory.
//!
//! **Bounded:** the tails' points and entries count against
//! [`crate::Options::read_cache_bytes`]; an insert that would pass it
//! empties the cache first (0: nothing is kept).
//!
//! **Never stale:** every write that adds, replaces or deletes raw chunks
//! (sealing, retention) empties the cache after the write and moves its
//! generation on; a read that missed inserts what it decoded only if the
//! generation is still the one it saw before reading sled, so a chunk
//! read before such a write is never kept after it.

use crate::model::Point;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// What an entry costs beside its points: the key, the map's slot, the
/// boxed slice's header.
const ENTRY_BYTES: usize = 64;

/// The cache; one per opening of the store.
pub(crate) struct Tails {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Moved on by every [`Tails::clear`].
    generation: u64,
    bytes: usize,
    entries: FxHashMap<(u64, i64), Tail>,
}

/// The points of one chunk with times at or after `from`, oldest first;
/// empty when the window has no chunk (then `from` is `i64::MIN`).
struct Tail {
    from: i64,
    points: Box<[Point]>,
}

/// A read the cache could not answer: hand it to [`Tails::insert`] with
/// what was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Miss {
    generation: u64,
}

impl Tails {
    pub(crate) fn new(budget: u64) -> Self {
        Tails {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            state: Mutex::new(State::default()),
        }
    }

    /// Appends the points in `[start, end)` of series `id`'s chunk of
    /// window `window` to `out` when a kept tail holds them all.
    pub(crate) fn read(
        &self,
        id: u64,
        window: i64,
        start: i64,
        end: i64,
        out: &mut Vec<Point>,
    ) -> Result<(), Miss> {
        let state = self.state.lock();
        match state.entries.get(&(id, window)) {
            Some(tail) if tail.from <= start => {
                let from = tail.points.partition_point(|p| p.t_ms < start);
                let to = tail.points.partition_point(|p| p.t_ms < end);
                if from < to {
                    out.extend_from_slice(&tail.points[from..to]);
                }
                Ok(())
            }
            _ => Err(Miss {
                generation: state.generation,
            }),
        }
    }

    /// Keeps `points` (the chunk's points at or after `from`, oldest first;
    /// none with `from` = `i64::MIN` when the window has no chunk) for
    /// series `id`, window `window`, unless a write came since `miss`.
    pub(crate) fn insert(&self, id: u64, window: i64, miss: Miss, from: i64, points: Vec<Point>) {
        let cost = ENTRY_BYTES + points.len() * std::mem::size_of::<Point>();
        if cost > self.budget {
            return;
        }
        let mut state = self.state.lock();
        if state.generation != miss.generation {
            return;
        }
        if state.bytes + cost > self.budget {
            state.entries = FxHashMap::default();
            state.bytes = 0;
        }
        let tail = Tail {
            from,
            points: points.into_boxed_slice(),
        };
        if let Some(old) = state.entries.insert((id, window), tail) {
            state.bytes -= ENTRY_BYTES + old.points.len() * std::mem::size_of::<Point>();
        }
        state.bytes += cost;
    }

    /// Forgets every tail: for a write of raw chunks, after it.
    pub(crate) fn clear(&self) {
        let mut state = self.state.lock();
        state.generation += 1;
        if !state.entries.is_empty() {
            state.entries = FxHashMap::default();
            state.bytes = 0;
        }
    }

    /// Bytes the kept tails count for.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(times: &[i64]) -> Vec<Point> {
        times
            .iter()
            .map(|&t| Point {
                t_ms: t,
                value: t as f64,
            })
            .collect()
    }

    #[test]
    fn a_tail_answers_spans_it_covers_and_misses_the_others() {
        let tails = Tails::new(1 << 20);
        let mut out = Vec::new();
        let miss = tails.read(1, 0, 20, 40, &mut out).unwrap_err();
        tails.insert(1, 0, miss, 20, points(&[20, 30, 40, 50]));
        tails.read(1, 0, 20, 40, &mut out).unwrap();
        assert_eq!(out, points(&[20, 30]));
        out.clear();
        tails.read(1, 0, 35, 1_000, &mut out).unwrap();
        assert_eq!(out, points(&[40, 50]));
        // Before the tail's start, another window, another series: misses.
        assert!(tails.read(1, 0, 10, 40, &mut out).is_err());
        assert!(tails.read(1, 3_600_000, 20, 40, &mut out).is_err());
        assert!(tails.read(2, 0, 20, 40, &mut out).is_err());
        // A window without a chunk answers every span with nothing.
        let miss = tails.read(2, 0, 20, 40, &mut out).unwrap_err();
        tails.insert(2, 0, miss, i64::MIN, Vec::new());
        out.clear();
        tails.read(2, 0, i64::MIN, i64::MAX, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_write_between_a_miss_and_its_insert_keeps_nothing() {
        let tails = Tails::new(1 << 20);
        let mut out = Vec::new();
        let miss = tails.read(1, 0, 0, 100, &mut out).unwrap_err();
        tails.clear();
        tails.insert(1, 0, miss, 0, points(&[10]));
        assert!(tails.read(1, 0, 0, 100, &mut out).is_err());
        assert_eq!(tails.bytes(), 0);
        // A write after the insert forgets it.
        let miss = tails.read(1, 0, 0, 100, &mut out).unwrap_err();
        tails.insert(1, 0, miss, 0, points(&[10]));
        assert!(tails.read(1, 0, 0, 100, &mut out).is_ok());
        tails.clear();
        assert!(tails.read(1, 0, 0, 100, &mut out).is_err());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let one = ENTRY_BYTES + 10 * std::mem::size_of::<Point>();
        let tails = Tails::new(3 * one as u64);
        let mut out = Vec::new();
        let ten: Vec<i64> = (0..10).collect();
        for id in 0..10u64 {
            let miss = tails.read(id, 0, 0, 10, &mut out).unwrap_err();
            tails.insert(id, 0, miss, 0, points(&ten));
            assert!(tails.bytes() <= 3 * one, "{}", tails.bytes());
            assert!(
                tails.read(id, 0, 0, 10, &mut out).is_ok(),
                "the newest stays"
            );
        }
        // Replacing an entry counts it once.
        let miss = tails.read(9, 0, -5, 10, &mut out).unwrap_err();
        let before = tails.bytes();
        tails.insert(9, 0, miss, -5, points(&ten));
        assert_eq!(tails.bytes(), before);
        // Nothing is kept without a budget, or past it.
        let none = Tails::new(0);
        let miss = none.read(1, 0, 0, 10, &mut out).unwrap_err();
        none.insert(1, 0, miss, 0, Vec::new());
        assert!(none.read(1, 0, 0, 10, &mut out).is_err());
        let small = Tails::new(one as u64 - 1);
        let miss = small.read(1, 0, 0, 10, &mut out).unwrap_err();
        small.insert(1, 0, miss, 0, points(&ten));
        assert_eq!(small.bytes(), 0);
    }
}
