//! PromQL over hostwatch's store: expressions parsed by `promql-parser`,
//! evaluated here with Prometheus 2.42's semantics over
//! [`hostwatch_tsdb::Store`]. A stored series (host, metric, labels) is,
//! in PromQL, the label set `__name__` = metric, `host` = host, plus its
//! own labels.
//!
//! The evaluation model is Prometheus' own: every expression is evaluated
//! over a grid of steps (one step for an instant query); a vector
//! selector takes, at each step, the newest sample at most the lookback
//! (5 minutes) old; a range selector the samples in `[t - range, t]`, both
//! ends closed as in 2.42. Each selected series' raw points are read once
//! for the whole grid, one series at a time, and windows slide over them.
//!
//! Layout:
//! - `value`: results ([`Value`]) and label sets;
//! - `eval`: the grid, the walk over the syntax tree, selectors and
//!   subqueries, limits;
//! - `select`: reading series from the store;
//! - `range_fns`: functions over range vectors (`rate`, `*_over_time` ...);
//! - `instant_fns`: functions over instant vectors and scalars;
//! - `aggregate`: `sum`, `topk`, `quantile` ... with `by`/`without`;
//! - `binary`: operators and vector matching.
//!
//! No HTTP and no protobuf here: the collector wraps the engine.

mod aggregate;
mod binary;
mod eval;
mod instant_fns;
mod range_fns;
mod select;
mod value;

#[cfg(test)]
mod testdata;

pub use value::{Sample, Series, Value, valid_label_name};

use hostwatch_tsdb::Store;
use std::time::{Duration, Instant};

/// How far back a vector selector looks for a sample (Prometheus' default).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// Step of a subquery that names none (Prometheus' default global
/// evaluation interval).
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60 * 1000;
/// Most points a range query may return per series (Prometheus' rule).
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// What one query may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Samples a query may touch: raw samples read from the store plus the
    /// points that selectors, range functions, aggregations and operators
    /// produce, counted as they are made.
    pub max_samples: usize,
    /// Wall-clock time a query may take.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Errors of a query, one variant per Prometheus error type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PromqlError {
    /// The query is unusable: a parse error, an unsupported construct
    /// (named), a bad time or step (Prometheus' `bad_data`).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but its evaluation failed, e.g. on duplicate
    /// label sets or a failing store (Prometheus' `execution`).
    #[error("{0}")]
    Execution(String),
    /// The query ran past [`Limits::timeout`] (Prometheus' `timeout`).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query touched more than [`Limits::max_samples`] samples
    /// (Prometheus' `execution`, with its message).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
}

impl PromqlError {
    /// The Prometheus HTTP API's `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromqlError::BadData(_) => "bad_data",
            PromqlError::Execution(_) | PromqlError::TooManySamples(_) => "execution",
            PromqlError::Timeout(_) => "timeout",
        }
    }
}

/// The PromQL engine: limits and the evaluation defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engine {
    limits: Limits,
}

impl Engine {
    /// An engine whose queries each stay within `limits`.
    pub fn new(limits: Limits) -> Self {
        Engine { limits }
    }

    /// Evaluates `expr` at `at_ms`: a scalar, a string, an instant vector,
    /// or (for a range selector or subquery) a matrix.
    pub fn instant(&self, store: &Store, expr: &str, at_ms: i64) -> Result<Value, PromqlError> {
        let expr = parse(expr)?;
        let grid = eval::Grid::new(at_ms, at_ms, 1);
        let mut ev = eval::Evaluator::new(store, self.limits, Instant::now(), grid);
        ev.instant(&expr)
    }

    /// Evaluates `expr` at every `step_ms` from `start_ms` to `end_ms`:
    /// a matrix (a scalar expression gives one series without labels).
    pub fn range(
        &self,
        store: &Store,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, PromqlError> {
        if step_ms <= 0 {
            return Err(PromqlError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(PromqlError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        if end_ms.saturating_sub(start_ms) / step_ms > MAX_POINTS_PER_SERIES {
            return Err(PromqlError::BadData(format!(
                "exceeded maximum resolution of {MAX_POINTS_PER_SERIES} points per timeseries. Try decreasing the query resolution (?step=XX)"
            )));
        }
        let expr = parse(expr)?;
        let grid = eval::Grid::new(start_ms, end_ms, step_ms);
        let mut ev = eval::Evaluator::new(store, self.limits, Instant::now(), grid);
        ev.range(&expr)
    }

    /// The label sets (sorted by name, `__name__` included) of the stored
    /// series matching any of `selectors` and, given a `range` (start and
    /// end ms), with a sample in it; sorted, each once: the HTTP API's
    /// series, labels and label values. Each series looked at counts as
    /// one sample against [`Limits::max_samples`]; [`Limits::timeout`]
    /// holds as for queries.
    pub fn series(
        &self,
        store: &Store,
        selectors: &[String],
        range: Option<(i64, i64)>,
    ) -> Result<Vec<Vec<hostwatch_tsdb::Label>>, PromqlError> {
        select::matching_series(store, selectors, range, self.limits, Instant::now())
    }
}

fn parse(expr: &str) -> Result<promql_parser::parser::Expr, PromqlError> {
    promql_parser::parser::parse(expr).map_err(PromqlError::BadData)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::load;

    #[test]
    fn bad_queries_are_bad_data() {
        let fx = load(&[("a", "m", &[], vec![(0, 1.0)])]);
        let engine = Engine::default();
        let err = engine.instant(&fx.store, "sum(", 0).unwrap_err();
        assert_eq!(err.error_type(), "bad_data", "{err}");
        let err = engine
            .instant(&fx.store, "no_such_function(m)", 0)
            .unwrap_err();
        assert!(err.to_string().contains("no_such_function"), "{err}");
        assert_eq!(err.error_type(), "bad_data");
        for (start, end, step, why) in [
            (0, 60_000, 0, "zero or negative"),
            (0, 60_000, -1, "zero or negative"),
            (60_000, 0, 1_000, "before start time"),
            (0, 11_001_000, 1_000, "maximum resolution"),
        ] {
            let err = engine.range(&fx.store, "m", start, end, step).unwrap_err();
            assert_eq!(err.error_type(), "bad_data", "{why}: {err}");
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
        // 11,000 steps exactly are allowed.
        assert!(engine.range(&fx.store, "1", 0, 11_000_000, 1_000).is_ok());
    }

    /// Prometheus' definition of a range query: at every step, what the
    /// instant query at that step gives. Checked over agent-like data (a
    /// counter with a reset on three hosts, one of them starting and one
    /// stopping mid-range, a gauge) for expressions of every kind.
    #[test]
    fn a_range_query_is_the_instant_query_at_every_step() {
        use crate::testdata::{assert_close, every, show};
        let counter = |shift: f64| {
            move |t: i64| {
                if t < 1800 {
                    t as f64 * 2.0 + shift
                } else {
                    (t - 1800) as f64
                }
            }
        };
        let fx = load(&[
            (
                "a",
                "c_total",
                &[("cpu", "0")],
                every(0, 3600, 15, counter(0.0)),
            ),
            (
                "b",
                "c_total",
                &[("cpu", "0")],
                every(900, 3600, 15, counter(7.0)),
            ),
            (
                "c",
                "c_total",
                &[("cpu", "0")],
                every(0, 2000, 30, counter(1.0)),
            ),
            ("a", "g", &[], every(0, 3600, 60, |t| ((t / 60) % 7) as f64)),
            ("b", "g", &[], every(0, 3600, 60, |t| ((t / 60) % 5) as f64)),
        ]);
        let engine = Engine::default();
        let exprs = [
            "c_total",
            "rate(c_total[5m])",
            "increase(c_total[2m] offset 1m)",
            "sum by (cpu) (irate(c_total[1m]))",
            "delta(g[10m])",
            "deriv(g[5m])",
            "predict_linear(g[10m], 300)",
            "resets(c_total[30m])",
            "avg_over_time(g[7m])",
            "quantile_over_time(0.3, g[10m])",
            "max_over_time(rate(c_total[2m])[10m:1m])",
            "topk(1, g)",
            "count(c_total) + sum(g)",
            "g > on(host) group_left rate(c_total[5m])",
            "g * on(host) group_left(cpu) c_total",
            "c_total unless on(host) g",
            "absent(c_total{host=\"c\"})",
            "absent_over_time(c_total{host=\"c\"}[5m])",
            "g @ 600",
            "time() - timestamp(c_total)",
            "label_replace(g, \"h\", \"$1\", \"host\", \"(.)\")",
            "scalar(sum(g)) * 2",
        ];
        let (start, end, step) = (300_000, 3_600_000, 150_000);
        for expr in exprs {
            let Value::Matrix(range) = engine.range(&fx.store, expr, start, end, step).unwrap()
            else {
                panic!("{expr}: not a matrix")
            };
            let mut from_range: Vec<(i64, String, f64)> = range
                .iter()
                .flat_map(|s| s.points.iter().map(|p| (p.t_ms, show(&s.labels), p.value)))
                .collect();
            let mut from_instants = Vec::new();
            for t in (start..=end).step_by(step as usize) {
                match engine.instant(&fx.store, expr, t).unwrap() {
                    Value::Vector(samples) => from_instants
                        .extend(samples.iter().map(|s| (t, show(&s.labels), s.point.value))),
                    Value::Scalar(p) => from_instants.push((t, String::new(), p.value)),
                    other => panic!("{expr}: {other:?}"),
                }
            }
            let key =
                |a: &(i64, String, f64), b: &(i64, String, f64)| (a.0, &a.1).cmp(&(b.0, &b.1));
            from_range.sort_by(key);
            from_instants.sort_by(key);
            assert!(!from_range.is_empty(), "{expr}: nothing");
            assert_eq!(from_range.len(), from_instants.len(), "{expr}");
            for (r, i) in from_range.iter().zip(&from_instants) {
                assert_eq!((r.0, &r.1), (i.0, &i.1), "{expr}");
                assert_close(r.2, i.2, &format!("{expr} at {}", r.0));
            }
        }
    }

    /// Times and durations at the ends of the representable range give
    /// an answer or an error, never an arithmetic overflow.
    #[test]
    fn extreme_times_and_durations_do_not_overflow() {
        let fx = load(&[("a", "m", &[], vec![(0, 1.0), (60, 2.0)])]);
        let engine = Engine::default();
        let exprs = [
            "m",
            "rate(m[5m])",
            "m offset -100000000y",
            "m offset 100000000y",
            "max_over_time(m[100000000y])",
            "max_over_time(m[100000000y:1h])",
            "m @ -9000000000000000",
        ];
        for expr in exprs {
            for at in [i64::MIN, -1, 0, 60_000, i64::MAX] {
                let _ = engine.instant(&fx.store, expr, at);
            }
            let _ = engine.range(&fx.store, expr, i64::MIN, i64::MAX, i64::MAX);
        }
        // Not refused for its own sake: the ordinary answer still comes.
        let Value::Vector(v) = engine.instant(&fx.store, "m offset -1m", 0).unwrap() else {
            panic!("not a vector")
        };
        assert_eq!(v[0].point.value, 2.0);
    }

    #[test]
    fn series_lists_each_matching_label_set_once_within_the_range() {
        let fx = load(&[
            ("a", "m", &[("cpu", "0")], vec![(0, 1.0)]),
            ("b", "m", &[], vec![(600, 1.0)]),
            ("a", "n", &[], vec![(0, 1.0)]),
        ]);
        let engine = Engine::default();
        let names = |selectors: &[&str], range| {
            let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
            engine
                .series(&fx.store, &selectors, range)
                .unwrap()
                .iter()
                .map(|labels| testdata::show(labels))
                .collect::<Vec<_>>()
        };
        let all = names(&["m", "{host=\"a\"}"], None);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(names(&["m", "{host=\"a\"}"], Some((0, 600_000))).len(), 3);
        assert_eq!(names(&["m"], Some((0, 0))).len(), 1);
        let re = names(&["{__name__=~\"n|m\", host=\"b\"}"], None);
        assert_eq!(re, ["__name__=m,host=b"]);
        let err = engine
            .series(&fx.store, &["sum(m)".to_owned()], None)
            .unwrap_err();
        assert_eq!(err.error_type(), "bad_data", "{err}");
    }

    #[test]
    fn series_count_against_the_sample_limit_and_keep_the_deadline() {
        let fx = load(&[
            ("a", "m", &[], vec![(0, 1.0)]),
            ("b", "m", &[], vec![(0, 1.0)]),
        ]);
        let selectors = ["m".to_owned()];
        let limited = |max_samples, timeout| {
            Engine::new(Limits {
                max_samples,
                timeout,
            })
            .series(&fx.store, &selectors, None)
        };
        assert_eq!(limited(2, Duration::from_secs(60)).unwrap().len(), 2);
        let err = limited(1, Duration::from_secs(60)).unwrap_err();
        assert_eq!(err, PromqlError::TooManySamples("series selection"));
        let err = limited(2, Duration::ZERO).unwrap_err();
        assert_eq!(err, PromqlError::Timeout("series selection"));
    }

    #[test]
    fn each_error_has_prometheus_error_type() {
        assert_eq!(PromqlError::BadData("x".into()).error_type(), "bad_data");
        assert_eq!(PromqlError::Execution("x".into()).error_type(), "execution");
        assert_eq!(PromqlError::Timeout("x").error_type(), "timeout");
        assert_eq!(PromqlError::TooManySamples("x").error_type(), "execution");
    }
}
