//! Binary operators: arithmetic, comparison (with `bool`), `and`/`or`/
//! `unless`, and vector matching with `on`/`ignoring` and
//! `group_left`/`group_right`, as Prometheus 2.42 defines them.

use crate::PromqlError;
use crate::eval::{Collect, Evaluator, Grid, StepCursor, StepSeries, Stepped, unsupported};
use crate::value::{Labels, METRIC_NAME, drop_name, get, set};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// Arithmetic drops the metric name; comparisons keep it.
    fn drops_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow
        )
    }

    /// The result, and whether a comparison holds (always true otherwise);
    /// a comparison's result is its left-hand side.
    fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Op::Add => (l + r, true),
            Op::Sub => (l - r, true),
            Op::Mul => (l * r, true),
            Op::Div => (l / r, true),
            Op::Mod => (go_mod(l, r), true),
            Op::Pow => (l.powf(r), true),
            Op::Atan2 => (l.atan2(r), true),
            Op::Eq => (l, l == r),
            Op::Ne => (l, l != r),
            Op::Gt => (l, l > r),
            Op::Lt => (l, l < r),
            Op::Ge => (l, l >= r),
            Op::Le => (l, l <= r),
            Op::And | Op::Or | Op::Unless => (l, true),
        }
    }
}

/// Go's `math.Mod`: the remainder with the dividend's sign, as Rust's `%`.
fn go_mod(l: f64, r: f64) -> f64 {
    l % r
}

/// How two vectors' samples are matched.
struct Matching {
    card: VectorMatchCardinality,
    /// `on(...)` when true, `ignoring(...)` otherwise.
    on: bool,
    labels: Vec<String>,
    return_bool: bool,
}

impl Matching {
    /// The labels two samples must share to match.
    fn signature(&self, labels: &Labels) -> Labels {
        labels
            .iter()
            .filter(|l| {
                if self.on {
                    self.labels.contains(&l.name)
                } else {
                    l.name != METRIC_NAME && !self.labels.contains(&l.name)
                }
            })
            .cloned()
            .collect()
    }
}

/// Evaluates a binary expression over `grid`.
pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    b: &BinaryExpr,
    grid: &Grid,
) -> Result<Stepped, PromqlError> {
    let op = match b.op.id() {
        T_ADD => Op::Add,
        T_SUB => Op::Sub,
        T_MUL => Op::Mul,
        T_DIV => Op::Div,
        T_MOD => Op::Mod,
        T_POW => Op::Pow,
        T_ATAN2 => Op::Atan2,
        T_EQLC => Op::Eq,
        T_NEQ => Op::Ne,
        T_GTR => Op::Gt,
        T_LSS => Op::Lt,
        T_GTE => Op::Ge,
        T_LTE => Op::Le,
        T_LAND => Op::And,
        T_LOR => Op::Or,
        T_LUNLESS => Op::Unless,
        _ => return Err(unsupported(&format!("operator {}", b.op))),
    };
    let matching = match &b.modifier {
        None => Matching {
            card: VectorMatchCardinality::OneToOne,
            on: false,
            labels: Vec::new(),
            return_bool: false,
        },
        Some(m) => {
            if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                return Err(unsupported("fill modifiers of binary operators"));
            }
            let (on, labels) = match &m.matching {
                None => (false, Vec::new()),
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            };
            Matching {
                card: m.card.clone(),
                on,
                labels,
                return_bool: m.return_bool,
            }
        }
    };
    let lhs = ev.eval(&b.lhs, grid)?;
    let rhs = ev.eval(&b.rhs, grid)?;
    let out = match (lhs, rhs) {
        (Stepped::Scalar(l), Stepped::Scalar(r)) => {
            return Ok(Stepped::Scalar(
                l.into_iter()
                    .zip(r)
                    .map(|(l, r)| {
                        let (v, keep) = op.apply(l, r);
                        if op.comparison() {
                            f64::from(u8::from(keep))
                        } else {
                            v
                        }
                    })
                    .collect(),
            ));
        }
        (Stepped::Vector(v), Stepped::Scalar(s)) => vector_scalar(op, &matching, v, &s, false)?,
        (Stepped::Scalar(s), Stepped::Vector(v)) => vector_scalar(op, &matching, v, &s, true)?,
        (Stepped::Vector(l), Stepped::Vector(r)) => match op {
            Op::And | Op::Or | Op::Unless => set_op(ev, op, &matching, &l, &r, grid.len())?,
            _ => vector_vector(ev, op, &matching, &l, &r, grid.len())?,
        },
        _ => return Err(unsupported(&format!("operator {} on strings", b.op))),
    };
    ev.charge(out.iter().map(|s| s.points.len()).sum())?;
    Ok(Stepped::Vector(out))
}

/// A vector and a scalar (`swap`: the scalar is on the left).
fn vector_scalar(
    op: Op,
    matching: &Matching,
    v: Vec<StepSeries>,
    s: &[f64],
    swap: bool,
) -> Result<Vec<StepSeries>, PromqlError> {
    let mut collect = Collect::default();
    for series in v {
        let labels = if op.drops_name() || matching.return_bool {
            drop_name(series.labels)
        } else {
            series.labels
        };
        let mut values = Vec::with_capacity(series.points.len());
        for (step, x) in series.points {
            let (l, r) = if swap { (s[step], x) } else { (x, s[step]) };
            let (mut value, keep) = op.apply(l, r);
            // A comparison filters the vector's own values.
            if op.comparison() && swap {
                value = r;
            }
            if matching.return_bool {
                value = f64::from(u8::from(keep));
            } else if !keep {
                continue;
            }
            values.push((step, value));
        }
        collect.extend(labels, values);
    }
    collect.finish()
}

/// `and`, `or`, `unless`, step by step.
fn set_op(
    ev: &Evaluator<'_>,
    op: Op,
    matching: &Matching,
    l: &[StepSeries],
    r: &[StepSeries],
    steps: usize,
) -> Result<Vec<StepSeries>, PromqlError> {
    let l_sigs: Vec<Labels> = l.iter().map(|s| matching.signature(&s.labels)).collect();
    let r_sigs: Vec<Labels> = r.iter().map(|s| matching.signature(&s.labels)).collect();
    let (l_ids, r_ids, sigs) = number_signatures(&l_sigs, &r_sigs);
    // Per signature, the step (plus one) at which the other side had it.
    let mut present_at = vec![0; sigs];
    let (mut lc, mut rc) = (StepCursor::new(l), StepCursor::new(r));
    let mut collect = Collect::default();
    // Each input series' result series, by number, made on first use.
    let (mut l_slots, mut r_slots) = (vec![None; l.len()], vec![None; r.len()]);
    fn slot(
        collect: &mut Collect,
        slots: &mut [Option<usize>],
        side: &[StepSeries],
        i: usize,
    ) -> usize {
        *slots[i].get_or_insert_with(|| collect.slot(side[i].labels.clone()))
    }
    for step in 0..steps {
        if step % 64 == 0 {
            ev.check_deadline()?;
        }
        let (ls, rs) = (lc.at(step), rc.at(step));
        let stamp = step + 1;
        match op {
            Op::And | Op::Unless => {
                for &(i, _) in &rs {
                    present_at[r_ids[i]] = stamp;
                }
                for &(i, v) in &ls {
                    if (present_at[l_ids[i]] == stamp) == (op == Op::And) {
                        let at = slot(&mut collect, &mut l_slots, l, i);
                        collect.push_slot(at, step, v)?;
                    }
                }
            }
            _ => {
                for &(i, v) in &ls {
                    present_at[l_ids[i]] = stamp;
                    let at = slot(&mut collect, &mut l_slots, l, i);
                    collect.push_slot(at, step, v)?;
                }
                for &(i, v) in &rs {
                    if present_at[r_ids[i]] != stamp {
                        let at = slot(&mut collect, &mut r_slots, r, i);
                        collect.push_slot(at, step, v)?;
                    }
                }
            }
        }
    }
    collect.finish()
}

/// Arithmetic and comparisons between two vectors, one-to-one or with
/// `group_left`/`group_right`.
fn vector_vector(
    ev: &Evaluator<'_>,
    op: Op,
    matching: &Matching,
    l: &[StepSeries],
    r: &[StepSeries],
    steps: usize,
) -> Result<Vec<StepSeries>, PromqlError> {
    // The "many" side first; `group_right` swaps, then swaps the values back.
    let (include, swapped) = match &matching.card {
        VectorMatchCardinality::OneToOne => (None, false),
        VectorMatchCardinality::ManyToOne(labels) => (Some(&labels.labels), false),
        VectorMatchCardinality::OneToMany(labels) => (Some(&labels.labels), true),
        VectorMatchCardinality::ManyToMany => {
            return Err(PromqlError::BadData(
                "many-to-many matching is only allowed for set operators".into(),
            ));
        }
    };
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let many_sigs: Vec<Labels> = many.iter().map(|s| matching.signature(&s.labels)).collect();
    let one_sigs: Vec<Labels> = one.iter().map(|s| matching.signature(&s.labels)).collect();
    let (many_ids, one_ids, sigs) = number_signatures(&many_sigs, &one_sigs);
    // Per signature, the step (plus one) at which the "one" side had it
    // and its (series, value); the step at which a "many" sample matched
    // it (one-to-one); the (signature, result) pairs matched at this step
    // (group_left/group_right).
    let mut one_at: Vec<(usize, usize, f64)> = vec![(0, 0, 0.0); sigs];
    let mut matched_at = vec![0; sigs];
    let mut matched: HashSet<(usize, usize)> = HashSet::new();
    let (mut mc, mut oc) = (StepCursor::new(many), StepCursor::new(one));
    // Each matched pair's result series: per "many" series, (one, slot).
    let mut result_slots: Vec<Vec<(usize, usize)>> = vec![Vec::new(); many.len()];
    let mut collect = Collect::default();
    for step in 0..steps {
        if step % 64 == 0 {
            ev.check_deadline()?;
        }
        let (ms, os) = (mc.at(step), oc.at(step));
        if ms.is_empty() || os.is_empty() {
            continue;
        }
        let stamp = step + 1;
        for &(i, v) in &os {
            let at = &mut one_at[one_ids[i]];
            if at.0 == stamp {
                let side = if swapped { "left" } else { "right" };
                return Err(PromqlError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    show(&one_sigs[i]),
                    show(&one[i].labels),
                    show(&one[at.1].labels)
                )));
            }
            *at = (stamp, i, v);
        }
        matched.clear();
        for &(mi, mv) in &ms {
            let sig = many_ids[mi];
            let (at, oi, ov) = one_at[sig];
            if at != stamp {
                continue;
            }
            let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
            let (mut value, keep) = op.apply(lv, rv);
            if matching.return_bool {
                value = f64::from(u8::from(keep));
            } else if !keep {
                continue;
            }
            let slot = match result_slots[mi].iter().find(|(o, _)| *o == oi) {
                Some(&(_, slot)) => slot,
                None => {
                    let slot = collect.slot(result_metric(
                        op,
                        matching,
                        include,
                        &many[mi].labels,
                        &one[oi].labels,
                    ));
                    result_slots[mi].push((oi, slot));
                    slot
                }
            };
            if include.is_none() {
                if matched_at[sig] == stamp {
                    return Err(PromqlError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                matched_at[sig] = stamp;
            } else if !matched.insert((sig, slot)) {
                return Err(PromqlError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
            collect.push_slot(slot, step, value)?;
        }
    }
    collect.finish()
}

/// The signatures of two operands by number (equal label sets, equal
/// numbers), and how many there are: each step then looks them up in
/// arrays rather than hashing label sets.
fn number_signatures(a: &[Labels], b: &[Labels]) -> (Vec<usize>, Vec<usize>, usize) {
    let mut ids: HashMap<&Labels, usize> = HashMap::new();
    let mut id = |sig| {
        let next = ids.len();
        *ids.entry(sig).or_insert(next)
    };
    let a_ids = a.iter().map(&mut id).collect();
    let b_ids = b.iter().map(&mut id).collect();
    (a_ids, b_ids, ids.len())
}

/// The label set of a matched pair: the "many" side's, without the name
/// for arithmetic, restricted (`on`) or reduced (`ignoring`) for
/// one-to-one matching, plus `group_*`'s labels from the "one" side.
fn result_metric(
    op: Op,
    matching: &Matching,
    include: Option<&Vec<String>>,
    many: &Labels,
    one: &Labels,
) -> Labels {
    let mut labels = many.clone();
    if op.drops_name() {
        labels.retain(|l| l.name != METRIC_NAME);
    }
    match include {
        None if matching.on => labels.retain(|l| matching.labels.contains(&l.name)),
        None => labels.retain(|l| !matching.labels.contains(&l.name)),
        Some(names) => {
            for name in names {
                set(&mut labels, name, get(one, name));
            }
        }
    }
    if matching.return_bool {
        labels = drop_name(labels);
    }
    labels
}

fn show(labels: &Labels) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use crate::testdata::{Fixture, load, load_u};

    /// `u` (see `load_u`); `info`: a{role=web} 1, b{role=db} 2.
    fn fixture() -> Fixture {
        load_u(&[
            ("a", "info", &[("role", "web")], vec![(0, 1.0)]),
            ("b", "info", &[("role", "db")], vec![(0, 2.0)]),
        ])
    }

    #[test]
    fn scalar_arithmetic_and_comparison() {
        let fx = fixture();
        assert_eq!(fx.scalar("1 + 2 * 3", 0), 7.0);
        assert_eq!(fx.scalar("2 ^ 3 ^ 2", 0), 512.0);
        assert_eq!(fx.scalar("7 % 4", 0), 3.0);
        assert_eq!(fx.scalar("-7 % 4", 0), -3.0);
        assert_eq!(fx.scalar("1 < bool 2", 0), 1.0);
        assert_eq!(fx.scalar("2 == bool 3", 0), 0.0);
        assert_eq!(fx.scalar("(1 atan2 1) * 4", 0), std::f64::consts::PI);
    }

    #[test]
    fn vector_and_scalar() {
        let fx = fixture();
        // Arithmetic drops the name.
        fx.check(
            r#"u{host="a"} * 2"#,
            0,
            &[("host=a,mode=x", 2.0), ("host=a,mode=y", 4.0)],
        );
        let over_two = [
            ("__name__=u,host=b,mode=x", 3.0),
            ("__name__=u,host=b,mode=y", 4.0),
            ("__name__=u,host=c,mode=x", 10.0),
        ];
        // A comparison filters, keeps the name.
        fx.check("u > 2", 0, &over_two);
        // Scalar on the left keeps the vector's values.
        fx.check("2 < u", 0, &over_two);
        fx.check(
            r#"u{host="a"} > bool 1"#,
            0,
            &[("host=a,mode=x", 0.0), ("host=a,mode=y", 1.0)],
        );
        fx.check(r#"10 - u{host="c"}"#, 0, &[("host=c,mode=x", 0.0)]);
    }

    #[test]
    fn one_to_one_matching() {
        let fx = fixture();
        // Identical label sets but the name: every series with itself.
        let v = fx.vector("u / u", 0);
        assert_eq!(v.len(), 5);
        assert!(v.iter().all(|(l, x)| !l.contains("__name__") && *x == 1.0));
        // on() keeps only the matching labels.
        fx.check(
            r#"u{mode="x"} - on(host) u{mode="y"}"#,
            0,
            &[("host=a", -1.0), ("host=b", -1.0)],
        );
        // ignoring(mode) drops mode.
        fx.check(
            r#"u{mode="x"} + ignoring(mode) u{mode="y"}"#,
            0,
            &[("host=a", 3.0), ("host=b", 7.0)],
        );
        // A comparison keeps the left value and the name; one-to-one
        // matching still drops the ignored labels.
        fx.check(
            r#"u{mode="y"} > ignoring(mode) u{mode="x"}"#,
            0,
            &[("__name__=u,host=a", 2.0), ("__name__=u,host=b", 4.0)],
        );
    }

    #[test]
    fn group_left_and_group_right_copy_labels_from_the_one_side() {
        let fx = fixture();
        let want = [
            ("host=a,mode=x,role=web", 1.0),
            ("host=a,mode=y,role=web", 2.0),
            ("host=b,mode=x,role=db", 6.0),
            ("host=b,mode=y,role=db", 8.0),
        ];
        fx.check("u * on(host) group_left(role) info", 0, &want);
        fx.check("info * on(host) group_right(role) u", 0, &want);
        // group_right's comparison keeps the left (one) side's value.
        fx.check(
            "info < on(host) group_right u",
            0,
            &[
                ("__name__=u,host=a,mode=y", 1.0),
                ("__name__=u,host=b,mode=x", 2.0),
                ("__name__=u,host=b,mode=y", 2.0),
            ],
        );
    }

    #[test]
    fn ambiguous_matches_are_refused() {
        let fx = fixture();
        let err = fx.instant("u * on(host) info", 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("many-to-one matching must be explicit"),
            "{err}"
        );
        let err = fx.instant("info * on(host) u", 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("many-to-many matching not allowed"),
            "{err}"
        );
        let err = fx.instant("info * on(host) group_left u", 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("many-to-many matching not allowed"),
            "{err}"
        );
        assert_eq!(err.error_type(), "execution");
    }

    #[test]
    fn set_operators() {
        let fx = fixture();
        assert_eq!(fx.vector("u and on(host) info", 0).len(), 4);
        fx.check(
            "u unless on(host) info",
            0,
            &[("__name__=u,host=c,mode=x", 10.0)],
        );
        // Or adds the right side's unmatched series.
        fx.check(
            r#"u{host="c"} or on(mode) u{host="a"}"#,
            0,
            &[
                ("__name__=u,host=a,mode=y", 2.0),
                ("__name__=u,host=c,mode=x", 10.0),
            ],
        );
        fx.check(r#"u and u{host="zzz"}"#, 0, &[]);
    }

    #[test]
    fn range_query_of_a_binary_expression_matches_per_step() {
        // x on a: 1 at 0 s, 2 at 60 s; y on a: 10 at 60 s only.
        let fx = load(&[
            ("a", "x", &[], vec![(0, 1.0), (60, 2.0)]),
            ("a", "y", &[], vec![(60, 10.0)]),
        ]);
        assert_eq!(
            fx.range("x + y", 0, 60, 60),
            vec![("host=a".to_owned(), vec![(60, 12.0)])]
        );
        assert_eq!(
            fx.range("x or y", 0, 60, 60),
            vec![("__name__=x,host=a".to_owned(), vec![(0, 1.0), (60, 2.0)])]
        );
    }
}
