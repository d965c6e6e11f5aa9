//! Functions over range vectors, as Prometheus 2.42's `functions.go`
//! defines them: each sees one series' points in one window.

use crate::eval::{Grid, Span};
use hostwatch_tsdb::Point;

/// What a range function knows besides the window's points.
pub(crate) struct Window {
    /// The window is `[end - range_ms, end]`.
    pub(crate) end: i64,
    pub(crate) range_ms: i64,
    /// The step's evaluation time (`predict_linear` predicts from it).
    pub(crate) eval_ts: i64,
}

/// A function of a range vector, by name; `None` when the name is not one.
pub(crate) fn lookup(name: &str) -> Option<RangeFn> {
    use RangeFn::*;
    Some(match name {
        "rate" => Rate,
        "increase" => Increase,
        "delta" => Delta,
        "irate" => Irate,
        "idelta" => Idelta,
        "deriv" => Deriv,
        "predict_linear" => PredictLinear,
        "resets" => Resets,
        "changes" => Changes,
        "avg_over_time" => AvgOverTime,
        "min_over_time" => MinOverTime,
        "max_over_time" => MaxOverTime,
        "sum_over_time" => SumOverTime,
        "count_over_time" => CountOverTime,
        "stddev_over_time" => StddevOverTime,
        "stdvar_over_time" => StdvarOverTime,
        "last_over_time" => LastOverTime,
        "present_over_time" => PresentOverTime,
        "quantile_over_time" => QuantileOverTime,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    StddevOverTime,
    StdvarOverTime,
    LastOverTime,
    PresentOverTime,
    QuantileOverTime,
}

impl RangeFn {
    /// The function's value for one window (never empty), given its scalar
    /// arguments in order; `None` leaves the step out.
    pub(crate) fn apply(
        self,
        points: &[Point],
        w: &Window,
        args: &[f64],
        scratch: &mut Scratch,
    ) -> Option<f64> {
        use RangeFn::*;
        let values = || points.iter().map(|p| p.value);
        match self {
            Rate => extrapolated_rate(points, w, true, true),
            Increase => extrapolated_rate(points, w, true, false),
            Delta => extrapolated_rate(points, w, false, false),
            Irate => instant_value(points, true),
            Idelta => instant_value(points, false),
            Deriv => {
                if points.len() < 2 {
                    return None;
                }
                Some(scratch.regression.fit(points, points[0].t_ms).0)
            }
            PredictLinear => {
                if points.len() < 2 {
                    return None;
                }
                let (slope, intercept) = scratch.regression.fit(points, w.eval_ts);
                Some(slope * args[0] + intercept)
            }
            Resets => Some(
                points
                    .windows(2)
                    .filter(|p| p[1].value < p[0].value)
                    .count() as f64,
            ),
            Changes => Some(
                points
                    .windows(2)
                    .filter(|p| {
                        let (a, b) = (p[0].value, p[1].value);
                        a != b && !(a.is_nan() && b.is_nan())
                    })
                    .count() as f64,
            ),
            AvgOverTime => {
                let mut mean = Mean::default();
                values().for_each(|v| mean.add(v));
                Some(mean.value())
            }
            MinOverTime => {
                Some(values().fold(
                    points[0].value,
                    |m, v| {
                        if v < m || m.is_nan() { v } else { m }
                    },
                ))
            }
            MaxOverTime => {
                Some(values().fold(
                    points[0].value,
                    |m, v| {
                        if v > m || m.is_nan() { v } else { m }
                    },
                ))
            }
            SumOverTime => {
                let (sum, c) = values().fold((0.0, 0.0), |(s, c), v| kahan_inc(v, s, c));
                Some(if sum.is_infinite() { sum } else { sum + c })
            }
            CountOverTime => Some(points.len() as f64),
            StddevOverTime => Some(variance(values()).sqrt()),
            StdvarOverTime => Some(variance(values())),
            LastOverTime => points.last().map(|p| p.value),
            PresentOverTime => Some(1.0),
            QuantileOverTime => {
                scratch.values.clear();
                scratch.values.extend(values());
                Some(quantile(args[0], &mut scratch.values))
            }
        }
    }
}

/// Where each step's window ends and what a function is called with.
pub(crate) struct Steps<'a> {
    /// Each step's window is `[ends[step] - range_ms, ends[step]]`.
    pub(crate) ends: &'a [i64],
    pub(crate) range_ms: i64,
    /// The evaluation times.
    pub(crate) grid: Grid,
    /// The function's scalar arguments in order, each a value per step.
    pub(crate) scalars: &'a [Vec<f64>],
}

impl RangeFn {
    /// The function's value for each window of `spans` over `points` that
    /// has one, pushed to `out` as (step, value); `avg_over_time` walks
    /// several windows at once.
    pub(crate) fn apply_windows(
        self,
        points: &[Point],
        spans: &[Span],
        steps: &Steps<'_>,
        scratch: &mut Scratch,
        out: &mut Vec<(usize, f64)>,
    ) {
        if self == RangeFn::AvgOverTime {
            return avg_windows(points, spans, out);
        }
        let mut args = vec![0.0; steps.scalars.len()];
        for s in spans {
            for (a, values) in args.iter_mut().zip(steps.scalars) {
                *a = values[s.step];
            }
            let w = Window {
                end: steps.ends[s.step],
                range_ms: steps.range_ms,
                eval_ts: steps.grid.ts(s.step),
            };
            if let Some(v) = self.apply(&points[s.start..s.end], &w, &args, scratch) {
                out.push((s.step, v));
            }
        }
    }
}

/// `rate`, `increase` and `delta`: the change over the window, corrected
/// for counter resets, extrapolated towards the window's ends when the
/// first or last sample is near them (Prometheus' `extrapolatedRate`).
fn extrapolated_rate(points: &[Point], w: &Window, counter: bool, per_second: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.value - first.value;
    if counter {
        for pair in points.windows(2) {
            if pair[1].value < pair[0].value {
                result += pair[0].value;
            }
        }
    }
    let range_start = w.end.saturating_sub(w.range_ms);
    let mut to_start = first.t_ms.saturating_sub(range_start) as f64 / 1000.0;
    let to_end = w.end.saturating_sub(last.t_ms) as f64 / 1000.0;
    let sampled = (last.t_ms - first.t_ms) as f64 / 1000.0;
    let average_gap = sampled / (points.len() - 1) as f64;
    if counter && result > 0.0 && first.value >= 0.0 {
        // A counter starts at zero: never extrapolate below it.
        let to_zero = sampled * (first.value / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average_gap / 2.0
    };
    let mut factor = interval / sampled;
    if per_second {
        factor /= w.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(points: &[Point], rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev, last) = (points[points.len() - 2], points[points.len() - 1]);
    let mut result = if rate && last.value < prev.value {
        last.value
    } else {
        last.value - prev.value
    };
    let interval = last.t_ms - prev.t_ms;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Kahan-Babuska compensated summation: one step, returning the new sum
/// and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The mean as `avg_over_time` computes it: incrementally, compensated,
/// infinities kept.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    mean: f64,
    c: f64,
    count: f64,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.count += 1.0;
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        let inc = v / self.count - self.mean / self.count;
        (self.mean, self.c) = kahan_inc(inc, self.mean, self.c);
    }

    fn value(&self) -> f64 {
        if self.mean.is_infinite() {
            self.mean
        } else {
            self.mean + self.c
        }
    }
}

/// Windows `avg_over_time` walks in step: each window's mean is a chain
/// of divisions, each waiting for the one before; several chains at once
/// keep the divider busy.
const MEAN_LANES: usize = 4;

/// `avg_over_time` of every window in `spans` of `points`, pushed to
/// `out` as (step, mean). Each window still takes its own samples in
/// order, so each mean is the one a window alone gives, to the bit.
fn avg_windows(points: &[Point], spans: &[Span], out: &mut Vec<(usize, f64)>) {
    let mut groups = spans.chunks_exact(MEAN_LANES);
    for group in &mut groups {
        let mut means = [Mean::default(); MEAN_LANES];
        let windows: [&[Point]; MEAN_LANES] =
            std::array::from_fn(|j| &points[group[j].start..group[j].end]);
        let common = windows.iter().map(|w| w.len()).min().unwrap_or(0);
        for i in 0..common {
            for (mean, window) in means.iter_mut().zip(&windows) {
                mean.add(window[i].value);
            }
        }
        for ((mean, window), span) in means.iter_mut().zip(&windows).zip(group) {
            window[common..].iter().for_each(|p| mean.add(p.value));
            out.push((span.step, mean.value()));
        }
    }
    for span in groups.remainder() {
        let mut mean = Mean::default();
        points[span.start..span.end]
            .iter()
            .for_each(|p| mean.add(p.value));
        out.push((span.step, mean.value()));
    }
}

/// Population variance, Welford's method with compensated sums.
fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// What range functions keep from one window to the next: the windows of
/// a range query overlap, and a function called for each of them reuses
/// its buffers and what it can of the previous window's work.
#[derive(Default)]
pub(crate) struct Scratch {
    /// `quantile_over_time`'s values, sorted in place.
    values: Vec<f64>,
    regression: Regression,
}

/// The least-squares fit of `deriv` and `predict_linear`, computed as
/// Prometheus' `linearRegression` (compensated sums, each in the same
/// order) so its results are Prometheus' to the last bit. The sums of x
/// and x² depend only on the window's times relative to the intercept:
/// regular samples read at a regular step repeat them from window to
/// window, and those two sums are then taken from the previous window.
#[derive(Default)]
struct Regression {
    /// The last window's times relative to its intercept (ms).
    relative_ms: Vec<i64>,
    /// The same in seconds: the regression's x.
    xs: Vec<f64>,
    /// Σx and Σx² over `xs`, with their compensations.
    sum_x: (f64, f64),
    sum_x2: (f64, f64),
}

impl Regression {
    /// Least-squares slope (per second) and intercept at `intercept_ms`
    /// of `points` (at least two).
    fn fit(&mut self, points: &[Point], intercept_ms: i64) -> (f64, f64) {
        if !self.same_times(points, intercept_ms) {
            self.set_times(points, intercept_ms);
        }
        let mut ys = YSums::new(points[0].value);
        for (i, (p, &x)) in points.iter().zip(&self.xs).enumerate() {
            ys.add(i == 0, x, p.value);
        }
        self.line(&ys)
    }

    /// Whether `points` relative to `intercept_ms` are the last window's.
    fn same_times(&self, points: &[Point], intercept_ms: i64) -> bool {
        self.relative_ms.len() == points.len()
            && points
                .iter()
                .zip(&self.relative_ms)
                .all(|(p, &r)| p.t_ms - intercept_ms == r)
    }

    fn set_times(&mut self, points: &[Point], intercept_ms: i64) {
        self.relative_ms.clear();
        self.xs.clear();
        let ((mut sx, mut cx), (mut sx2, mut cx2)) = ((0.0, 0.0), (0.0, 0.0));
        for p in points {
            let relative = p.t_ms - intercept_ms;
            let x = relative as f64 / 1e3;
            self.relative_ms.push(relative);
            self.xs.push(x);
            (sx, cx) = kahan_inc(x, sx, cx);
            (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
        }
        (self.sum_x, self.sum_x2) = ((sx, cx), (sx2, cx2));
    }

    /// Slope and intercept from the window's sums and the last times'.
    fn line(&self, ys: &YSums) -> (f64, f64) {
        if ys.const_y {
            if ys.init_y.is_infinite() {
                return (f64::NAN, f64::NAN);
            }
            return (0.0, ys.init_y);
        }
        let n = self.xs.len() as f64;
        let (sx, sy) = (self.sum_x.0 + self.sum_x.1, ys.sy + ys.cy);
        let (sxy, sx2) = (ys.sxy + ys.cxy, self.sum_x2.0 + self.sum_x2.1);
        let cov_xy = sxy - sx * sy / n;
        let var_x = sx2 - sx * sx / n;
        let slope = cov_xy / var_x;
        (slope, sy / n - slope * sx / n)
    }
}

/// A window's compensated sums of y and x·y, and whether y stayed at its
/// first value.
#[derive(Debug, Clone, Copy)]
struct YSums {
    init_y: f64,
    const_y: bool,
    sy: f64,
    cy: f64,
    sxy: f64,
    cxy: f64,
}

impl YSums {
    fn new(init_y: f64) -> Self {
        YSums {
            init_y,
            const_y: true,
            sy: 0.0,
            cy: 0.0,
            sxy: 0.0,
            cxy: 0.0,
        }
    }

    /// Adds the point (`x`, `y`), `first` the window's first.
    #[inline(always)]
    fn add(&mut self, first: bool, x: f64, y: f64) {
        // Prometheus' `i > 0 && y != initY` clears it.
        self.const_y &= first || y == self.init_y;
        (self.sy, self.cy) = kahan_inc(y, self.sy, self.cy);
        (self.sxy, self.cxy) = kahan_inc(x * y, self.sxy, self.cxy);
    }
}

/// The φ-quantile of `values` (sorted here), interpolating between the
/// two nearest ranks; NaN for none, ±Inf for φ outside [0, 1].
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as Go's `vectorByValueHeap` orders it.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

#[cfg(test)]
mod tests {
    use super::{Mean, Regression, avg_windows};
    use crate::eval::Span;
    use crate::testdata::{Fixture, assert_close, every, load};
    use hostwatch_tsdb::Point;

    /// `c`, a counter on host a every minute from 0 s to 600 s:
    /// 0 10 20 30 40, reset at 300 s to 5, then 15 25 35 45 55;
    /// `c` on host b: 100 at 0 s and 160 at 600 s only;
    /// `g`, a line on host a: 1 + t/30 every minute (slope 1/30 per s);
    /// `h`, on host a: 3 1 4 1 5 at 0, 60 ... 240 s.
    fn fixture() -> Fixture {
        let counter = [
            0.0, 10.0, 20.0, 30.0, 40.0, 5.0, 15.0, 25.0, 35.0, 45.0, 55.0,
        ];
        load(&[
            (
                "a",
                "c",
                &[],
                every(0, 600, 60, |t| counter[(t / 60) as usize]),
            ),
            ("b", "c", &[], vec![(0, 100.0), (600, 160.0)]),
            ("a", "g", &[], every(0, 600, 60, |t| 1.0 + t as f64 / 30.0)),
            (
                "a",
                "h",
                &[],
                vec![(0, 3.0), (60, 1.0), (120, 4.0), (180, 1.0), (240, 5.0)],
            ),
        ])
    }

    /// Asserts the one-sample vector of `expr` at `t` s is `want`.
    fn close(fx: &Fixture, expr: &str, t: i64, want: f64) {
        assert_close(one(fx, expr, t), want, expr);
    }

    fn one(fx: &Fixture, expr: &str, t: i64) -> f64 {
        let v = fx.vector(expr, t);
        assert_eq!(v.len(), 1, "{expr} at {t}: {v:?}");
        v[0].1
    }

    #[test]
    fn rate_increase_delta_extrapolate_as_prometheus() {
        let fx = fixture();
        // At 600 s, [300 s, 600 s]: 5 ... 55, no reset, first and last on
        // the window's ends: increase 50 over 300 s, nothing to extrapolate.
        close(&fx, r#"increase(c{host="a"}[5m])"#, 600, 50.0);
        close(&fx, r#"rate(c{host="a"}[5m])"#, 600, 50.0 / 300.0);
        // At 330 s, [30 s, 330 s]: 10 20 30 40 5 (60 ... 300 s). 5 - 10
        // plus 40 lost at the reset = 35 over 240 s sampled, 60 s apart.
        // Zero point: 240 * 10/35 = 68.6 s back, further than the 30 s
        // to the start; both ends 30 s < 1.1 * 60 s away: extrapolated to
        // 300 s. increase = 35 * 300/240 = 43.75.
        close(&fx, r#"increase(c{host="a"}[5m])"#, 330, 43.75);
        close(&fx, r#"rate(c{host="a"}[5m])"#, 330, 43.75 / 300.0);
        // delta ignores resets: (5 - 10) * 300/240.
        close(&fx, r#"delta(c{host="a"}[5m])"#, 330, -6.25);
        // Host b at 600 s, [0 s, 600 s] with [10m]: 100 -> 160 on the ends:
        // 60. The zero point (600 * 100/60 s back) is further than the start.
        close(&fx, r#"increase(c{host="b"}[10m])"#, 600, 60.0);
        // At 630 s, [330 s, 630 s] for b: its only sample is 600 s: dropped.
        assert!(fx.vector(r#"rate(c{host="b"}[5m])"#, 630).is_empty());
        // At 150 s, [-150 s, 150 s] for a: 0 10 20 at 0 60 120 s: 20 over
        // 120 s; the zero point is the first sample (0 back): no start
        // extrapolation; end 30 s < 66 s: +30. 20 * 150/120 = 25.
        close(&fx, r#"increase(c{host="a"}[5m])"#, 150, 25.0);
    }

    #[test]
    fn a_sample_far_from_the_window_end_extrapolates_half_an_interval() {
        // Samples at 100 s and 160 s (1 -> 4) in [0 s, 300 s]: 3 over 60 s;
        // to start 100 s and to end 140 s are both > 66 s: each side adds
        // 30 s: 3 * 120/60 = 6. Zero point 60 * 1/3 = 20 s < 100 s, so the
        // start side is 20 s (< 66 s): 3 * (60 + 20 + 30)/60 = 5.5.
        let fx = load(&[("a", "k", &[], vec![(100, 1.0), (160, 4.0)])]);
        assert_close(fx.vector("increase(k[5m])", 300)[0].1, 5.5, "counter");
        assert_close(fx.vector("delta(k[5m])", 300)[0].1, 6.0, "gauge");
    }

    #[test]
    fn irate_idelta_resets_changes() {
        let fx = fixture();
        // At 330 s the last two samples are 40 (240 s) and 5 (300 s): a
        // reset, so irate counts 5 from zero over 60 s.
        close(&fx, r#"irate(c{host="a"}[5m])"#, 330, 5.0 / 60.0);
        close(&fx, r#"idelta(c{host="a"}[5m])"#, 330, -35.0);
        close(&fx, r#"irate(c{host="a"}[5m])"#, 600, 10.0 / 60.0);
        // Over all of a: one reset, ten changes.
        close(&fx, r#"resets(c{host="a"}[10m])"#, 600, 1.0);
        close(&fx, r#"changes(c{host="a"}[10m])"#, 600, 10.0);
        // h: 3 1 4 1 5: two decreases, four changes.
        close(&fx, "resets(h[4m])", 240, 2.0);
        close(&fx, "changes(h[4m])", 240, 4.0);
    }

    #[test]
    fn deriv_and_predict_linear_fit_a_line_relative_to_the_eval_time() {
        let fx = fixture();
        close(&fx, "deriv(g[5m])", 600, 1.0 / 30.0);
        // g(600) = 21, plus 60 s at 1/30.
        close(&fx, "predict_linear(g[5m], 60)", 600, 23.0);
        // With an offset the window is [240 s, 540 s], but the line is
        // still read at the evaluation time, 600 s: the same 23.
        close(&fx, "predict_linear(g[5m] offset 1m, 60)", 600, 23.0);
        // A constant series has slope 0 and its value as intercept.
        let flat = load(&[("a", "f", &[], every(0, 300, 60, |_| 4.0))]);
        assert_close(
            flat.vector("predict_linear(f[5m], 600)", 300)[0].1,
            4.0,
            "flat",
        );
    }

    #[test]
    fn over_time_functions_of_one_window() {
        let fx = fixture();
        // h = 3 1 4 1 5 in [0 s, 240 s].
        let cases = [
            ("avg_over_time", 2.8),
            ("min_over_time", 1.0),
            ("max_over_time", 5.0),
            ("sum_over_time", 14.0),
            ("count_over_time", 5.0),
            // Deviations from 2.8: .2 -1.8 1.2 -1.8 2.2; squares sum 12.8.
            ("stdvar_over_time", 2.56),
            ("stddev_over_time", 1.6),
            ("last_over_time", 5.0),
            ("present_over_time", 1.0),
        ];
        for (f, want) in cases {
            assert_close(one(&fx, &format!("{f}(h[4m])"), 240), want, f);
        }
        // Sorted 1 1 3 4 5: the median is rank 2; 0.9 is rank 3.6.
        close(&fx, "quantile_over_time(0.5, h[4m])", 240, 3.0);
        close(&fx, "quantile_over_time(0.9, h[4m])", 240, 4.6);
        close(&fx, "quantile_over_time(2, h[4m])", 240, f64::INFINITY);
        // last_over_time keeps the name; the others drop it.
        fx.check("last_over_time(h[4m])", 240, &[("__name__=h,host=a", 5.0)]);
        fx.check("max_over_time(h[4m])", 240, &[("host=a", 5.0)]);
        // A window holding nothing gives nothing.
        assert!(fx.vector("avg_over_time(h[1m])", 400).is_empty());
    }

    #[test]
    fn absent_over_time_and_range_steps() {
        let fx = fixture();
        // h's last sample is 240 s: [1m] windows hold nothing after 300 s.
        fx.check(
            r#"absent_over_time(h{host="a"}[1m])"#,
            400,
            &[("host=a", 1.0)],
        );
        assert!(
            fx.vector(r#"absent_over_time(h{host="a"}[1m])"#, 240)
                .is_empty()
        );
        // A range query of rate: at 300 s, [0 s, 300 s]: 0 ... 40, 5: 5 + 40
        // = 45 over the whole 300 s (zero point at the first sample):
        // 0.15/s; at 600 s 50/300.
        let series = fx.range(r#"rate(c{host="a"}[5m])"#, 300, 600, 300);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].0, "host=a");
        let points = &series[0].1;
        assert_eq!(points.len(), 2);
        assert_close(points[0].1, 0.15, "rate at 300");
        assert_close(points[1].1, 50.0 / 300.0, "rate at 600");
        // rate over a subquery: c's values each minute in [300 s, 600 s].
        close(&fx, r#"rate(c{host="a"}[5m:1m])"#, 600, 50.0 / 300.0);
    }

    #[test]
    fn series_that_collide_once_the_name_is_dropped_are_refused() {
        let fx = load(&[
            ("a", "x1", &[], vec![(0, 1.0), (60, 2.0)]),
            ("a", "x2", &[], vec![(0, 1.0), (60, 2.0)]),
        ]);
        let err = fx
            .instant(r#"rate({__name__=~"x1|x2"}[5m])"#, 60)
            .unwrap_err();
        assert_eq!(err.error_type(), "execution");
        assert!(err.to_string().contains("same labelset"), "{err}");
    }

    /// Irregular values over irregular times: sums that round differently
    /// in any other order.
    fn wobbly(n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                t_ms: 1_700_000_000_000 + i as i64 * 10_000 + (i as i64 % 3) * 7,
                value: 1e11 + (i as f64).sin() * 4096.0 + 1.0 / (i as f64 + 3.0),
            })
            .collect()
    }

    #[test]
    fn windows_averaged_in_step_give_each_windows_own_mean_to_the_bit() {
        let mut points = wobbly(200);
        points[150].value = f64::INFINITY;
        points[160].value = f64::NAN;
        // Eleven windows of different lengths, overlapping: two groups of
        // four walked in step, three alone.
        let spans: Vec<Span> = (0..11)
            .map(|k| Span {
                step: k * 2,
                start: k * 13,
                end: k * 13 + 20 + k % 4 * 5,
            })
            .collect();
        let mut out = Vec::new();
        avg_windows(&points, &spans, &mut out);
        assert_eq!(out.len(), spans.len());
        for (span, &(step, got)) in spans.iter().zip(&out) {
            let mut alone = Mean::default();
            points[span.start..span.end]
                .iter()
                .for_each(|p| alone.add(p.value));
            assert_eq!(step, span.step);
            assert_eq!(got.to_bits(), alone.value().to_bits(), "{span:?}");
        }
    }

    #[test]
    fn a_regression_reusing_the_last_windows_times_matches_a_fresh_one() {
        let points = wobbly(400);
        let mut kept = Regression::default();
        // Windows of 60 points every 6, read at an intercept that moves
        // with them (the same relative times, reused) or stays (new ones),
        // and one window a point shorter.
        let cases = (0..40).map(|k| (k * 6, 60, points[k * 6 + 59].t_ms + 5));
        let cases = cases.chain([(7, 59, points[70].t_ms), (13, 60, points[0].t_ms)]);
        for (start, len, intercept) in cases {
            let window = &points[start..start + len];
            let got = kept.fit(window, intercept);
            let want = Regression::default().fit(window, intercept);
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "slope at {start}");
            assert_eq!(got.1.to_bits(), want.1.to_bits(), "intercept at {start}");
        }
    }
}
