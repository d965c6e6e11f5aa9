//! Test fixtures: a real store in a temporary directory, loaded with
//! series given as (host, metric, labels, points at seconds).

use crate::{Engine, Limits, PromqlError, Value};
use hostwatch_tsdb::{Batch, Label, Options, Point, SeriesInput, Store};
use std::sync::Arc;

/// The stores' clock: ten hours after the epoch, so that test samples at
/// small timestamps are neither too old nor in the future.
const NOW_MS: i64 = 10 * 3600 * 1000;

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) store: Store,
}

/// One series to load: host, metric, labels, and (seconds, value) points.
pub(crate) type Spec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Vec<(i64, f64)>);

pub(crate) fn load(specs: &[Spec<'_>]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        maintenance_interval: None,
        clock: Arc::new(|| NOW_MS),
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    for (seq, (host, metric, labels, points)) in specs.iter().enumerate() {
        let batch = Batch {
            host: (*host).to_owned(),
            source: 1,
            seq: seq as u64 + 1,
            series: vec![SeriesInput {
                metric: (*metric).to_owned(),
                labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
                points: points
                    .iter()
                    .map(|&(s, value)| Point {
                        t_ms: s * 1000,
                        value,
                    })
                    .collect(),
            }],
            processes: vec![],
            malformed: 0,
        };
        let outcome = store.append(&batch).unwrap();
        assert_eq!(outcome.rejected.total(), 0, "{:?}", outcome.first_error);
    }
    Fixture { _dir: dir, store }
}

/// `u` at 0 s, by host and mode: a{mode=x} 1, a{mode=y} 2, b{mode=x} 3,
/// b{mode=y} 4, c{mode=x} 10; then `extra`.
pub(crate) fn load_u(extra: &[Spec<'_>]) -> Fixture {
    let mut specs: Vec<Spec<'_>> = vec![
        ("a", "u", &[("mode", "x")], vec![(0, 1.0)]),
        ("a", "u", &[("mode", "y")], vec![(0, 2.0)]),
        ("b", "u", &[("mode", "x")], vec![(0, 3.0)]),
        ("b", "u", &[("mode", "y")], vec![(0, 4.0)]),
        ("c", "u", &[("mode", "x")], vec![(0, 10.0)]),
    ];
    specs.extend(extra.iter().cloned());
    load(&specs)
}

/// Points every `every` seconds from `from` to `to` (inclusive), valued `f(t)`.
pub(crate) fn every(from: i64, to: i64, every: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    (0..)
        .map(|i| from + i * every)
        .take_while(|t| *t <= to)
        .map(|t| (t, f(t)))
        .collect()
}

/// A label set written `k=v,k=v` (sorted), for comparisons.
pub(crate) fn show(labels: &[Label]) -> String {
    labels
        .iter()
        .map(|l| format!("{}={}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

impl Fixture {
    /// An instant query at `t` seconds.
    pub(crate) fn instant(&self, expr: &str, t: i64) -> Result<Value, PromqlError> {
        Engine::new(Limits::default()).instant(&self.store, expr, t * 1000)
    }

    /// An instant query's vector at `t` seconds, as (labels, value), sorted by labels.
    pub(crate) fn vector(&self, expr: &str, t: i64) -> Vec<(String, f64)> {
        match self.instant(expr, t).unwrap() {
            Value::Vector(samples) => {
                let mut out: Vec<(String, f64)> = samples
                    .into_iter()
                    .map(|s| {
                        assert_eq!(s.point.t_ms, t * 1000);
                        (show(&s.labels), s.point.value)
                    })
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            other => panic!("{expr}: not a vector: {other:?}"),
        }
    }

    /// Asserts the instant query's vector at `t` seconds is `want`
    /// (labels, value), sorted by labels, values within 1e-9.
    pub(crate) fn check(&self, expr: &str, t: i64, want: &[(&str, f64)]) {
        assert_vector(&self.vector(expr, t), want, expr);
    }

    /// [`Fixture::check`] for cases (expression, time, value) whose
    /// answer is one sample labelled `labels`.
    pub(crate) fn check_each(&self, labels: &str, cases: &[(&str, i64, f64)]) {
        for &(expr, t, want) in cases {
            self.check(expr, t, &[(labels, want)]);
        }
    }

    /// An instant query's scalar at `t` seconds.
    pub(crate) fn scalar(&self, expr: &str, t: i64) -> f64 {
        match self.instant(expr, t).unwrap() {
            Value::Scalar(p) => p.value,
            other => panic!("{expr}: not a scalar: {other:?}"),
        }
    }

    /// A range query from `start` to `end` seconds every `step`: each
    /// series' labels and (seconds, value) points.
    pub(crate) fn range(
        &self,
        expr: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Vec<(String, Vec<(i64, f64)>)> {
        let value = Engine::new(Limits::default())
            .range(&self.store, expr, start * 1000, end * 1000, step * 1000)
            .unwrap();
        match value {
            Value::Matrix(series) => series
                .into_iter()
                .map(|s| {
                    let points = s.points.iter().map(|p| (p.t_ms / 1000, p.value)).collect();
                    (show(&s.labels), points)
                })
                .collect(),
            other => panic!("{expr}: not a matrix: {other:?}"),
        }
    }
}

/// Asserts two floats are equal within a relative 1e-9 (NaN equals NaN),
/// the compatibility harness' tolerance.
pub(crate) fn assert_close(got: f64, want: f64, what: &str) {
    let ok = (got.is_nan() && want.is_nan())
        || got == want
        // Finite only: Inf would be within Inf of anything.
        || (got.is_finite()
            && want.is_finite()
            && (got - want).abs() <= 1e-9 * want.abs().max(got.abs()));
    assert!(ok, "{what}: got {got}, want {want}");
}

/// Asserts a vector equals `want` (labels, value), values within 1e-9.
pub(crate) fn assert_vector(got: &[(String, f64)], want: &[(&str, f64)], what: &str) {
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        "{what}: labels"
    );
    for (g, w) in got.iter().zip(want) {
        assert_close(g.1, w.1, &format!("{what} {}", w.0));
    }
}

#[cfg(test)]
mod tests {
    use super::assert_close;

    #[test]
    fn assert_close_takes_nan_as_equal_and_infinities_as_themselves() {
        assert_close(f64::NAN, f64::NAN, "NaN");
        assert_close(f64::INFINITY, f64::INFINITY, "Inf");
        assert_close(1.0 + 1e-12, 1.0, "near");
        for (got, want) in [
            (f64::INFINITY, 1.0),
            (1.0, f64::NEG_INFINITY),
            (1.0 + 1e-8, 1.0),
        ] {
            let caught = std::panic::catch_unwind(|| assert_close(got, want, "far"));
            assert!(caught.is_err(), "{got} taken for {want}");
        }
    }
}
