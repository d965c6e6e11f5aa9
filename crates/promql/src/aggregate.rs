//! Aggregations (`sum`, `topk`, `quantile` ...) with `by`/`without`, per
//! step, as Prometheus 2.42's `aggregation` computes them.

use crate::PromqlError;
use crate::eval::{Evaluator, Grid, StepCursor, StepSeries, Stepped, unsupported};
use crate::instant_fns::string_arg;
use crate::range_fns::quantile;
use crate::value::{Labels, METRIC_NAME, set, valid_label_name};
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

/// Running state of one group at one step.
struct Group {
    /// The group's label set, interned.
    id: usize,
    value: f64,
    mean: f64,
    count: usize,
    /// topk/bottomk: the kept samples as a binary heap; quantile: values.
    heap: Vec<(usize, f64)>,
}

/// Evaluates an aggregation over `grid`.
pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    agg: &AggregateExpr,
    grid: &Grid,
) -> Result<Stepped, PromqlError> {
    let op = match agg.op.id() {
        T_SUM => Op::Sum,
        T_AVG => Op::Avg,
        T_MIN => Op::Min,
        T_MAX => Op::Max,
        T_COUNT => Op::Count,
        T_GROUP => Op::Group,
        T_STDDEV => Op::Stddev,
        T_STDVAR => Op::Stdvar,
        T_TOPK => Op::Topk,
        T_BOTTOMK => Op::Bottomk,
        T_QUANTILE => Op::Quantile,
        T_COUNT_VALUES => Op::CountValues,
        _ => return Err(unsupported(&format!("aggregation {}", agg.op))),
    };
    let mut params = Vec::new();
    let mut value_label = String::new();
    if let Some(param) = &agg.param {
        if op == Op::CountValues {
            value_label = string_arg(param)?;
            if !valid_label_name(&value_label) {
                return Err(PromqlError::Execution(format!(
                    "invalid label name {value_label:?}"
                )));
            }
        } else {
            params = ev.eval_scalar(param, grid)?;
        }
    }
    let input = ev.eval_vector(&agg.expr, grid)?;
    let (without, mut grouping): (bool, Vec<String>) = match &agg.modifier {
        None => (false, Vec::new()),
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
    };
    if op == Op::CountValues && !without {
        grouping.push(value_label.clone());
    }
    let group_labels = |labels: &Labels| -> Labels {
        if without {
            labels
                .iter()
                .filter(|l| l.name != METRIC_NAME && !grouping.contains(&l.name))
                .cloned()
                .collect()
        } else {
            labels
                .iter()
                .filter(|l| grouping.contains(&l.name))
                .cloned()
                .collect()
        }
    };
    // Each input series' group, computed once (count_values' depends on
    // the value, so per sample).
    let mut interned = Interner::default();
    let groups_of: Vec<usize> = input
        .iter()
        .map(|s| interned.id(group_labels(&s.labels)))
        .collect();
    let mut cursor = StepCursor::new(&input);
    let mut out = Output::default();
    // Empty unless the aggregation takes a number.
    let param = |step: usize| params.get(step).copied().unwrap_or(f64::NAN);
    for step in 0..grid.len() {
        if step % 64 == 0 {
            ev.check_deadline()?;
        }
        let samples = cursor.at(step);
        let mut k = 0usize;
        if matches!(op, Op::Topk | Op::Bottomk) {
            let f = param(step);
            if !(f >= i64::MIN as f64 && f <= i64::MAX as f64) {
                return Err(PromqlError::Execution(format!(
                    "Scalar value {f} overflows int64"
                )));
            }
            let kk = f as i64;
            if kk < 1 {
                continue;
            }
            k = usize::try_from(kk).unwrap_or(usize::MAX);
        }
        let mut index: HashMap<usize, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for &(si, v) in &samples {
            let key = if op == Op::CountValues {
                let mut labels = cursor.labels(si).clone();
                set(&mut labels, &value_label, &format_value(v));
                interned.id(group_labels(&labels))
            } else {
                groups_of[si]
            };
            let Some(&g) = index.get(&key) else {
                index.insert(key, groups.len());
                groups.push(Group {
                    id: key,
                    value: match op {
                        Op::Stddev | Op::Stdvar => 0.0,
                        Op::Group => 1.0,
                        _ => v,
                    },
                    mean: v,
                    count: 1,
                    heap: vec![(si, v)],
                });
                continue;
            };
            let g = &mut groups[g];
            match op {
                Op::Sum => g.value += v,
                Op::Avg => {
                    g.count += 1;
                    let skip = g.mean.is_infinite()
                        && ((v.is_infinite() && (g.mean > 0.0) == (v > 0.0))
                            || (!v.is_infinite() && !v.is_nan()));
                    if !skip {
                        let n = g.count as f64;
                        g.mean += v / n - g.mean / n;
                    }
                }
                Op::Group => {}
                Op::Max => {
                    if g.value < v || g.value.is_nan() {
                        g.value = v;
                    }
                }
                Op::Min => {
                    if g.value > v || g.value.is_nan() {
                        g.value = v;
                    }
                }
                Op::Count | Op::CountValues => g.count += 1,
                Op::Stddev | Op::Stdvar => {
                    g.count += 1;
                    let delta = v - g.mean;
                    g.mean += delta / g.count as f64;
                    g.value += delta * (v - g.mean);
                }
                Op::Topk => keep_k(&mut g.heap, k, (si, v), |a, b| a.is_nan() || a < b),
                Op::Bottomk => keep_k(&mut g.heap, k, (si, v), |a, b| a.is_nan() || a > b),
                Op::Quantile => g.heap.push((si, v)),
            }
        }
        for mut g in groups {
            let value = match op {
                Op::Avg => g.mean,
                Op::Count | Op::CountValues => g.count as f64,
                Op::Stdvar => g.value / g.count as f64,
                Op::Stddev => (g.value / g.count as f64).sqrt(),
                Op::Quantile => {
                    let mut values: Vec<f64> = g.heap.iter().map(|s| s.1).collect();
                    quantile(param(step), &mut values)
                }
                Op::Topk | Op::Bottomk => {
                    // Best first; topk and bottomk keep the series' labels.
                    let desc = op == Op::Topk;
                    g.heap.sort_by(|a, b| {
                        let ord = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                        if desc { ord.reverse() } else { ord }
                    });
                    for (si, v) in g.heap {
                        out.push(Key::Series(si), step, v);
                    }
                    continue;
                }
                Op::Sum | Op::Min | Op::Max | Op::Group => g.value,
            };
            out.push(Key::Group(g.id), step, value);
        }
    }
    ev.charge(out.points)?;
    let series = out
        .series
        .into_iter()
        .map(|(key, points)| StepSeries {
            labels: match key {
                Key::Group(id) => std::mem::take(&mut interned.labels[id]),
                Key::Series(si) => cursor.labels(si).clone(),
            },
            points,
        })
        .collect();
    Ok(Stepped::Vector(series))
}

/// Label sets by number, each stored once.
#[derive(Default)]
struct Interner {
    ids: HashMap<Labels, usize>,
    labels: Vec<Labels>,
}

impl Interner {
    fn id(&mut self, labels: Labels) -> usize {
        if let Some(&id) = self.ids.get(&labels) {
            return id;
        }
        self.labels.push(labels.clone());
        self.ids.insert(labels, self.labels.len() - 1);
        self.labels.len() - 1
    }
}

/// An output series: a group's, or (topk, bottomk) an input series'.
/// Distinct keys have distinct label sets: groups by construction, input
/// series because a vector never holds one label set twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Group(usize),
    Series(usize),
}

/// The result's series in the order they first came, by key.
#[derive(Default)]
struct Output {
    index: HashMap<Key, usize>,
    series: Vec<(Key, Vec<(usize, f64)>)>,
    points: usize,
}

impl Output {
    /// Adds a value at `step`; steps come in ascending order, one value
    /// per key and step.
    fn push(&mut self, key: Key, step: usize, v: f64) {
        let i = *self.index.entry(key).or_insert_with(|| {
            self.series.push((key, Vec::new()));
            self.series.len() - 1
        });
        self.series[i].1.push((step, v));
        self.points += 1;
    }
}

/// Keeps the `k` best samples in `heap`, a binary heap ordered by `less`
/// (worst at the root), replacing the root only by a strictly better
/// sample, as Prometheus' topk/bottomk do with Go's `container/heap`, so
/// that ties keep the same series.
fn keep_k(heap: &mut Vec<(usize, f64)>, k: usize, s: (usize, f64), less: fn(f64, f64) -> bool) {
    let root = heap[0].1;
    if heap.len() < k || less(root, s.1) || root.is_nan() {
        if heap.len() == k {
            if k == 1 {
                heap[0] = s;
                return;
            }
            let last = heap.len() - 1;
            heap.swap(0, last);
            down(heap, 0, last, less);
            heap.pop();
        }
        heap.push(s);
        let last = heap.len() - 1;
        up(heap, last, less);
    }
}

fn up(heap: &mut [(usize, f64)], mut j: usize, less: fn(f64, f64) -> bool) {
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(heap[j].1, heap[i].1) {
            break;
        }
        heap.swap(i, j);
        j = i;
    }
}

fn down(heap: &mut [(usize, f64)], mut i: usize, n: usize, less: fn(f64, f64) -> bool) {
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(heap[j1 + 1].1, heap[j1].1) {
            j = j1 + 1;
        }
        if !less(heap[j].1, heap[i].1) {
            break;
        }
        heap.swap(i, j);
        i = j;
    }
}

/// A value as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it: the
/// shortest digits that read back the same, never an exponent.
fn format_value(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use crate::Value;
    use crate::testdata::{Fixture, load_u, show};

    /// `u` (see `load_u`); `w`: 5 on a and b, 7 on c.
    fn fixture() -> Fixture {
        load_u(&[
            ("a", "w", &[], vec![(0, 5.0)]),
            ("b", "w", &[], vec![(0, 5.0)]),
            ("c", "w", &[], vec![(0, 7.0)]),
        ])
    }

    #[test]
    fn aggregations_over_everything() {
        let fx = fixture();
        // 1 2 3 4 10: sum 20, mean 4, deviations -3 -2 -1 0 6, squares 50.
        let cases = [
            ("sum(u)", 20.0),
            ("avg(u)", 4.0),
            ("min(u)", 1.0),
            ("max(u)", 10.0),
            ("count(u)", 5.0),
            ("group(u)", 1.0),
            ("stdvar(u)", 10.0),
            ("stddev(u)", 10f64.sqrt()),
            // Sorted, rank 0.5 * 4 = 2: 3; rank 0.25 * 4 = 1: 2.
            ("quantile(0.5, u)", 3.0),
            ("quantile(0.25, u)", 2.0),
        ];
        for (expr, want) in cases {
            fx.check(expr, 0, &[("", want)]);
        }
    }

    #[test]
    fn by_and_without_group_and_drop_the_name() {
        let fx = fixture();
        let by_host = [("host=a", 3.0), ("host=b", 7.0), ("host=c", 10.0)];
        fx.check("sum by (host) (u)", 0, &by_host);
        fx.check("sum without (mode) (u)", 0, &by_host);
        fx.check("max by (mode) (u)", 0, &[("mode=x", 10.0), ("mode=y", 4.0)]);
        // by (__name__) keeps the name.
        fx.check("count by (__name__) (u)", 0, &[("__name__=u", 5.0)]);
        // A grouping label no series has groups everything together.
        fx.check("sum by (nothing) (u)", 0, &[("", 20.0)]);
    }

    #[test]
    fn topk_and_bottomk_keep_whole_series() {
        let fx = fixture();
        fx.check(
            "topk(2, u)",
            0,
            &[
                ("__name__=u,host=b,mode=y", 4.0),
                ("__name__=u,host=c,mode=x", 10.0),
            ],
        );
        fx.check(
            "bottomk by (host) (1, u)",
            0,
            &[
                ("__name__=u,host=a,mode=x", 1.0),
                ("__name__=u,host=b,mode=x", 3.0),
                ("__name__=u,host=c,mode=x", 10.0),
            ],
        );
        assert!(fx.vector("topk(0, u)", 0).is_empty());
        // Best first.
        let Value::Vector(samples) = fx.instant("topk(3, u)", 0).unwrap() else {
            panic!("not a vector")
        };
        let values: Vec<f64> = samples.iter().map(|s| s.point.value).collect();
        assert_eq!(values, [10.0, 4.0, 3.0]);
        // Ties keep the first series met (hosts a and b both hold 5).
        fx.check("topk(1, w)", 0, &[("__name__=w,host=c", 7.0)]);
        fx.check("bottomk(1, w)", 0, &[("__name__=w,host=a", 5.0)]);
        assert_eq!(show(&[]), "");
    }

    #[test]
    fn count_values_counts_each_value_under_a_label() {
        let fx = fixture();
        fx.check(r#"count_values("v", w)"#, 0, &[("v=5", 2.0), ("v=7", 1.0)]);
        fx.check(
            r#"count_values by (host) ("v", w)"#,
            0,
            &[
                ("host=a,v=5", 1.0),
                ("host=b,v=5", 1.0),
                ("host=c,v=7", 1.0),
            ],
        );
        let err = fx.instant(r#"count_values("9bad", w)"#, 0).unwrap_err();
        assert!(err.to_string().contains("invalid label name"), "{err}");
    }
}
