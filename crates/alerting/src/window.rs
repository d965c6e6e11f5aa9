//! Per-series state for evaluation, updated one point at a time: a
//! sliding window for avg/max/min/last/rate, and a linear trend for
//! predicted exhaustion. Both cost O(window points) memory at most and
//! never read the store.

use serde::Deserialize;
use std::collections::VecDeque;

/// How a window of points becomes one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Avg,
    Max,
    Min,
    Last,
    /// Per-second increase of a counter, resets counted as restarts from 0.
    Rate,
}

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Aggregate::Avg => "avg",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Last => "last",
            Aggregate::Rate => "rate",
        })
    }
}

/// Points of the last `span_ms` of one series.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    aggregate: Aggregate,
    span_ms: i64,
    /// (time, value, increase since the previous point) oldest first.
    points: VecDeque<(i64, f64, f64)>,
}

impl Window {
    pub(crate) fn new(aggregate: Aggregate, span_ms: i64) -> Self {
        Window {
            aggregate,
            span_ms,
            points: VecDeque::new(),
        }
    }

    /// Adds a point (times must not go backwards; the caller drops older
    /// points) and returns the aggregate, if the window holds enough data.
    pub(crate) fn push(&mut self, t_ms: i64, value: f64) -> Option<f64> {
        if self.aggregate == Aggregate::Last {
            // Nothing to remember: the newest value is the figure.
            return Some(value);
        }
        let increase = match self.points.back() {
            Some(&(_, prev, _)) if value >= prev => value - prev,
            // A counter that went down was reset: it counted up from zero.
            Some(_) => value,
            None => 0.0,
        };
        self.points.push_back((t_ms, value, increase));
        // Keep points within the span, but always the newest one.
        while self.points.len() > 1
            && self
                .points
                .front()
                .is_some_and(|p| p.0 <= t_ms - self.span_ms)
        {
            self.points.pop_front();
        }
        self.value()
    }

    fn value(&self) -> Option<f64> {
        let values = self.points.iter().map(|p| p.1);
        match self.aggregate {
            Aggregate::Last => self.points.back().map(|p| p.1),
            Aggregate::Avg => {
                let n = self.points.len();
                (n > 0).then(|| values.sum::<f64>() / n as f64)
            }
            Aggregate::Max => values.reduce(f64::max),
            Aggregate::Min => values.reduce(f64::min),
            Aggregate::Rate => {
                let (first, last) = (self.points.front()?, self.points.back()?);
                let seconds = (last.0 - first.0) as f64 / 1000.0;
                if self.points.len() < 2 || seconds <= 0.0 {
                    return None;
                }
                // The first point's increase is from before the window.
                let increase: f64 = self.points.iter().skip(1).map(|p| p.2).sum();
                Some(increase / seconds)
            }
        }
    }
}

/// Sums for least squares over the points of one time bucket, with times
/// in seconds relative to the bucket's start (precision stays good however
/// large epoch milliseconds get).
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: f64,
    t: f64,
    v: f64,
    tt: f64,
    tv: f64,
}

impl Sums {
    fn add(&mut self, t: f64, v: f64) {
        self.n += 1.0;
        self.t += t;
        self.v += v;
        self.tt += t * t;
        self.tv += t * v;
    }

    /// The same sums with times shifted by `+shift` seconds.
    fn shifted(&self, shift: f64) -> Sums {
        Sums {
            n: self.n,
            t: self.t + self.n * shift,
            v: self.v,
            tt: self.tt + 2.0 * shift * self.t + self.n * shift * shift,
            tv: self.tv + shift * self.v,
        }
    }

    fn merge(&mut self, other: &Sums) {
        self.n += other.n;
        self.t += other.t;
        self.v += other.v;
        self.tt += other.tt;
        self.tv += other.tv;
    }
}

/// Buckets a trend window is split into: memory per series is bounded by
/// this, whatever the sampling interval.
const TREND_BUCKETS: i64 = 16;

/// A linear trend (least squares) over the last `span_ms`, kept as
/// per-bucket sums so that old points leave the window without storing
/// every point.
#[derive(Debug, Clone)]
pub(crate) struct Trend {
    span_ms: i64,
    bucket_ms: i64,
    /// Oldest first.
    buckets: VecDeque<Bucket>,
    last_ms: i64,
}

#[derive(Debug, Clone)]
struct Bucket {
    start_ms: i64,
    first_ms: i64,
    sums: Sums,
}

/// What a trend predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prediction {
    /// The fitted value at the newest point.
    pub(crate) now_value: f64,
    /// Change per second.
    pub(crate) slope: f64,
}

impl Prediction {
    /// Seconds until the fitted line reaches `limit`: 0 if already past it
    /// (seen from the side the line approaches from), infinity if moving away.
    pub(crate) fn seconds_to(&self, limit: f64) -> f64 {
        let gap = limit - self.now_value;
        if gap == 0.0 {
            return 0.0;
        }
        if self.slope == 0.0 || gap.signum() != self.slope.signum() {
            return f64::INFINITY;
        }
        gap / self.slope
    }
}

impl Trend {
    pub(crate) fn new(span_ms: i64) -> Self {
        Trend {
            span_ms,
            bucket_ms: (span_ms / TREND_BUCKETS).max(1),
            buckets: VecDeque::new(),
            last_ms: i64::MIN,
        }
    }

    /// Adds a point (times must not go backwards).
    pub(crate) fn push(&mut self, t_ms: i64, value: f64) {
        self.last_ms = t_ms;
        // Most points fall in the newest bucket: no division needed.
        if let Some(b) = self.buckets.back_mut()
            && t_ms >= b.start_ms
            && t_ms < b.start_ms + self.bucket_ms
        {
            b.sums.add((t_ms - b.start_ms) as f64 / 1000.0, value);
            return;
        }
        let start_ms = t_ms - t_ms.rem_euclid(self.bucket_ms);
        let offset = (t_ms - start_ms) as f64 / 1000.0;
        match self.buckets.back_mut() {
            Some(b) if b.start_ms == start_ms => b.sums.add(offset, value),
            _ => {
                let mut sums = Sums::default();
                sums.add(offset, value);
                self.buckets.push_back(Bucket {
                    start_ms,
                    first_ms: t_ms,
                    sums,
                });
            }
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start_ms + self.bucket_ms <= t_ms - self.span_ms)
        {
            self.buckets.pop_front();
        }
    }

    /// The fitted line, once the points span at least a quarter of the
    /// window (a trend from two close points predicts nonsense).
    pub(crate) fn predict(&self) -> Option<Prediction> {
        let front = self.buckets.front()?;
        let origin = front.start_ms;
        let mut total = Sums::default();
        for b in &self.buckets {
            total.merge(&b.sums.shifted((b.start_ms - origin) as f64 / 1000.0));
        }
        if total.n < 3.0 || self.last_ms - front.first_ms < self.span_ms / 4 {
            return None;
        }
        let denominator = total.n * total.tt - total.t * total.t;
        if denominator <= 0.0 {
            return None;
        }
        let slope = (total.n * total.tv - total.t * total.v) / denominator;
        let intercept = (total.v - slope * total.t) / total.n;
        let now = (self.last_ms - origin) as f64 / 1000.0;
        Some(Prediction {
            now_value: intercept + slope * now,
            slope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn aggregates_over_the_window() {
        let points = [(0, 1.0), (10, 5.0), (20, 3.0), (30, 2.0)];
        let run = |agg| {
            let mut w = Window::new(agg, 25_000);
            let mut out = None;
            for (s, v) in points {
                out = w.push(T0 + s * 1000, v);
            }
            out
        };
        // The window (25 s) holds the points at 10, 20 and 30 s.
        assert_eq!(run(Aggregate::Avg), Some(10.0 / 3.0));
        assert_eq!(run(Aggregate::Max), Some(5.0));
        assert_eq!(run(Aggregate::Min), Some(2.0));
        assert_eq!(run(Aggregate::Last), Some(2.0));
    }

    #[test]
    fn rate_counts_resets_and_needs_two_points() {
        let mut w = Window::new(Aggregate::Rate, 60_000);
        assert_eq!(w.push(T0, 100.0), None);
        assert_eq!(w.push(T0 + 10_000, 200.0), Some(10.0));
        // Reset: the counter restarted and reached 50.
        assert_eq!(w.push(T0 + 20_000, 50.0), Some(7.5));
    }

    #[test]
    fn a_window_keeps_its_newest_point_after_a_gap() {
        let mut w = Window::new(Aggregate::Avg, 10_000);
        w.push(T0, 1.0);
        assert_eq!(w.push(T0 + 3_600_000, 9.0), Some(9.0));
    }

    #[test]
    fn trend_predicts_a_linear_fill_exactly() {
        // 100 GB free, losing 1 MB/s, sampled every 10 s for 2 h of a 6 h window.
        let mut trend = Trend::new(6 * 3_600_000);
        assert!(trend.predict().is_none());
        for i in 0..720 {
            trend.push(T0 + i * 10_000, 100e9 - 1e6 * (i * 10) as f64);
        }
        let p = trend.predict().unwrap();
        assert!((p.slope + 1e6).abs() < 1.0, "{p:?}");
        let expected = (100e9 - 1e6 * 7190.0) / 1e6;
        assert!(
            (p.seconds_to(0.0) - expected).abs() < 1.0,
            "{}",
            p.seconds_to(0.0)
        );
        // Moving away from a limit above never reaches it.
        assert_eq!(p.seconds_to(200e9), f64::INFINITY);
    }

    #[test]
    fn trend_forgets_points_outside_the_window() {
        let mut trend = Trend::new(3_600_000);
        // An hour of growth, then an hour flat: only the flat part counts.
        for i in 0..360 {
            trend.push(T0 + i * 10_000, i as f64);
        }
        for i in 360..720 {
            trend.push(T0 + i * 10_000, 360.0);
        }
        let p = trend.predict().unwrap();
        assert!(p.slope.abs() < 0.01, "{p:?}");
        assert_eq!(p.seconds_to(0.0), f64::INFINITY);
    }

    #[test]
    fn trend_needs_a_quarter_of_its_window() {
        let mut trend = Trend::new(3_600_000);
        for i in 0..50 {
            trend.push(T0 + i * 10_000, i as f64);
        }
        assert!(trend.predict().is_none());
        for i in 50..100 {
            trend.push(T0 + i * 10_000, i as f64);
        }
        assert!(trend.predict().is_some());
    }
}
