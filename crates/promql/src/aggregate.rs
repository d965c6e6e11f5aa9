//! Aggregations (`sum`, `topk`, `quantile` ...) with `by`/`without`, per
//! step, as Prometheus 2.42's `aggregation` computes them.

use crate::PromqlError;
use crate::eval::{Evaluator, Grid, StepSeries, Stepped, unsupported};
use crate::instant_fns::string_arg;
use crate::range_fns::quantile;
use crate::value::{Labels, METRIC_NAME, set, valid_label_name};
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

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

impl Op {
    fn of(agg: &AggregateExpr) -> Result<Op, PromqlError> {
        Ok(match agg.op.id() {
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
        })
    }
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

impl Group {
    fn new(op: Op, id: usize, si: usize, v: f64) -> Self {
        Group {
            id,
            value: match op {
                Op::Stddev | Op::Stdvar => 0.0,
                Op::Group => 1.0,
                _ => v,
            },
            mean: v,
            count: 1,
            // Only topk, bottomk and quantile keep samples.
            heap: if matches!(op, Op::Topk | Op::Bottomk | Op::Quantile) {
                vec![(si, v)]
            } else {
                Vec::new()
            },
        }
    }

    /// Adds sample `v` of input series `si` (`k`: topk's and bottomk's k).
    fn add(&mut self, op: Op, k: usize, si: usize, v: f64) {
        match op {
            Op::Sum => self.value += v,
            Op::Avg => {
                self.count += 1;
                let skip = self.mean.is_infinite()
                    && ((v.is_infinite() && (self.mean > 0.0) == (v > 0.0))
                        || (!v.is_infinite() && !v.is_nan()));
                if !skip {
                    let n = self.count as f64;
                    self.mean += v / n - self.mean / n;
                }
            }
            Op::Group => {}
            Op::Max => {
                if self.value < v || self.value.is_nan() {
                    self.value = v;
                }
            }
            Op::Min => {
                if self.value > v || self.value.is_nan() {
                    self.value = v;
                }
            }
            Op::Count | Op::CountValues => self.count += 1,
            Op::Stddev | Op::Stdvar => {
                self.count += 1;
                let delta = v - self.mean;
                self.mean += delta / self.count as f64;
                self.value += delta * (v - self.mean);
            }
            Op::Topk => keep_k(&mut self.heap, k, (si, v), |a, b| a.is_nan() || a < b),
            Op::Bottomk => keep_k(&mut self.heap, k, (si, v), |a, b| a.is_nan() || a > b),
            Op::Quantile => self.heap.push((si, v)),
        }
    }

    /// Adds the group's result at `step` to `out` (`q`: quantile's φ).
    fn emit(mut self, op: Op, q: f64, step: usize, out: &mut Output) {
        let value = match op {
            Op::Avg => self.mean,
            Op::Count | Op::CountValues => self.count as f64,
            Op::Stdvar => self.value / self.count as f64,
            Op::Stddev => (self.value / self.count as f64).sqrt(),
            Op::Quantile => {
                let mut values: Vec<f64> = self.heap.iter().map(|s| s.1).collect();
                quantile(q, &mut values)
            }
            Op::Topk | Op::Bottomk => {
                // Best first; topk and bottomk keep the series' labels.
                let desc = op == Op::Topk;
                self.heap.sort_by(|a, b| {
                    let ord = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                    if desc { ord.reverse() } else { ord }
                });
                for (si, v) in self.heap {
                    out.push(Key::Series(si), step, v);
                }
                return;
            }
            Op::Sum | Op::Min | Op::Max | Op::Group => self.value,
        };
        out.push(Key::Group(self.id), step, value);
    }
}

/// Which labels an aggregation keeps: `by` these, or all `without` these
/// (and without the name).
struct Grouping {
    without: bool,
    names: Vec<String>,
}

impl Grouping {
    fn new(agg: &AggregateExpr, op: Op, value_label: &str) -> Self {
        let (without, mut names) = match &agg.modifier {
            None => (false, Vec::new()),
            Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
        };
        // count_values by (...) groups by its value label too.
        if op == Op::CountValues && !without {
            names.push(value_label.to_owned());
        }
        Grouping { without, names }
    }

    /// The label set of the group `labels` belongs to.
    fn labels_of(&self, labels: &Labels) -> Labels {
        labels
            .iter()
            .filter(|l| {
                if self.without {
                    l.name != METRIC_NAME && !self.names.contains(&l.name)
                } else {
                    self.names.contains(&l.name)
                }
            })
            .cloned()
            .collect()
    }
}

/// topk's and bottomk's k from its scalar: refused when it overflows an
/// int64 (NaN too), truncated, `None` below 1 (an empty result).
fn topk_k(f: f64) -> Result<Option<usize>, PromqlError> {
    if !(f >= i64::MIN as f64 && f <= i64::MAX as f64) {
        return Err(PromqlError::Execution(format!(
            "Scalar value {f} overflows int64"
        )));
    }
    let k = f as i64;
    Ok((k >= 1).then(|| usize::try_from(k).unwrap_or(usize::MAX)))
}

/// Evaluates an aggregation over `grid`.
pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    agg: &AggregateExpr,
    grid: &Grid,
) -> Result<Stepped, PromqlError> {
    let op = Op::of(agg)?;
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
    let grouping = Grouping::new(agg, op, &value_label);
    // Empty unless the aggregation takes a number.
    let param = |step: usize| params.get(step).copied().unwrap_or(f64::NAN);
    // topk's and bottomk's k per step; an error is given once the input is
    // evaluated, as Prometheus gives its input's errors first.
    let ks: Result<Vec<Option<usize>>, PromqlError> = if matches!(op, Op::Topk | Op::Bottomk) {
        (0..grid.len()).map(|step| topk_k(param(step))).collect()
    } else {
        Ok(vec![Some(0); grid.len()])
    };
    let mut fold = Fold::new(op, grid.len());
    let mut interned = Interner::default();
    // topk and bottomk give input series: their labels are kept.
    let mut input_labels: Vec<Labels> = Vec::new();
    let keeps_input = matches!(op, Op::Topk | Op::Bottomk);
    ev.each_series(&agg.expr, grid, &mut |series| {
        let Ok(ks) = &ks else { return Ok(()) };
        let si = fold.series;
        fold.series += 1;
        let group = interned.id(grouping.labels_of(&series.labels));
        for &(step, v) in &series.points {
            let Some(k) = ks[step] else { continue };
            let key = if op == Op::CountValues {
                let mut labels = series.labels.clone();
                set(&mut labels, &value_label, &format_value(v));
                interned.id(grouping.labels_of(&labels))
            } else {
                group
            };
            fold.add(step, key, k, si, v);
        }
        if keeps_input {
            input_labels.push(series.labels);
        }
        Ok(())
    })?;
    ks?;
    let mut out = Output::default();
    for (step, groups) in fold.by_step.into_iter().enumerate() {
        if step % 64 == 0 {
            ev.check_deadline()?;
        }
        for g in groups {
            g.emit(op, param(step), step, &mut out);
        }
    }
    ev.charge(out.points)?;
    let series = out
        .series
        .into_iter()
        .map(|(key, points)| StepSeries {
            labels: match key {
                Key::Group(id) => std::mem::take(&mut interned.labels[id]),
                Key::Series(si) => std::mem::take(&mut input_labels[si]),
            },
            points,
        })
        .collect();
    Ok(Stepped::Vector(series))
}

/// The groups' running values per step, fed one input series at a time:
/// at each step, a group's samples come in input order, and the groups in
/// the order their first samples came, as a step-by-step walk over the
/// whole input gives them.
struct Fold {
    op: Op,
    /// Input series seen so far.
    series: usize,
    /// (step, group) to its place in `by_step[step]`.
    slots: HashMap<(usize, usize), usize, BuildHasherDefault<NumberHasher>>,
    by_step: Vec<Vec<Group>>,
}

impl Fold {
    fn new(op: Op, steps: usize) -> Self {
        Fold {
            op,
            series: 0,
            slots: HashMap::default(),
            by_step: (0..steps).map(|_| Vec::new()).collect(),
        }
    }

    /// Adds sample `v` of input series `si` to group `key` at `step`.
    fn add(&mut self, step: usize, key: usize, k: usize, si: usize, v: f64) {
        let groups = &mut self.by_step[step];
        match self.slots.entry((step, key)) {
            Entry::Occupied(slot) => groups[*slot.get()].add(self.op, k, si, v),
            Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push(Group::new(self.op, key, si, v));
            }
        }
    }
}

/// A multiplicative hash (as rustc's `FxHasher`) for the fold's (step,
/// group) numbers, looked up once per input sample: they are the engine's
/// own, so SipHash's resistance to chosen keys buys nothing there.
#[derive(Default)]
struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
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
