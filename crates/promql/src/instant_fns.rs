//! Function calls: range functions over windows (see `range_fns`), and
//! functions of instant vectors and scalars.

use crate::PromqlError;
use crate::eval::{Collect, Evaluator, Grid, StepCursor, StepSeries, Stepped, unsupported};
use crate::range_fns::{self, RangeFn, Scratch, Steps};
use crate::value::{Labels, METRIC_NAME, drop_name, get, set, valid_label_name};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr, VectorSelector};
use std::collections::HashSet;

/// Evaluates a function call over `grid`. One arm per function, so the
/// list of what is supported reads in one place; the longer ones are
/// functions of their own.
pub(crate) fn call(
    ev: &mut Evaluator<'_>,
    call: &Call,
    grid: &Grid,
) -> Result<Stepped, PromqlError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    if let Some(f) = range_fns::lookup(name) {
        return range_call(ev, f, &args, grid);
    }
    let n = grid.len();
    Ok(match name {
        "time" => Stepped::Scalar((0..n).map(|i| grid.ts(i) as f64 / 1000.0).collect()),
        "pi" => Stepped::Scalar(vec![std::f64::consts::PI; n]),
        "vector" => {
            let values = ev.eval_scalar(args[0], grid)?;
            let points = values.into_iter().enumerate().collect();
            Stepped::Vector(vec![StepSeries {
                labels: Vec::new(),
                points,
            }])
        }
        "scalar" => {
            let input = ev.eval_vector(args[0], grid)?;
            let mut cursor = StepCursor::new(&input);
            Stepped::Scalar(
                (0..n)
                    .map(|step| match cursor.at(step)[..] {
                        [(_, v)] => v,
                        _ => f64::NAN,
                    })
                    .collect(),
            )
        }
        "timestamp" => timestamp(ev, args[0], grid)?,
        "absent" => {
            let input = ev.eval_vector(args[0], grid)?;
            let mut present = vec![false; n];
            for s in &input {
                for &(step, _) in &s.points {
                    present[step] = true;
                }
            }
            absent_result(&present, absent_labels(args[0]))
        }
        "absent_over_time" => {
            let windows = ev.maybe_windows(args[0], grid)?.ok_or_else(|| {
                PromqlError::BadData("absent_over_time needs a range vector".into())
            })?;
            let mut present = vec![false; n];
            for i in 0..windows.series.len() {
                ev.each_window(&windows, i, |step, _| {
                    present[step] = true;
                    Ok(())
                })?;
            }
            absent_result(&present, absent_labels(args[0]))
        }
        "sort" | "sort_desc" => sort(ev, args[0], grid, name == "sort_desc")?,
        "label_replace" => label_replace(ev, &args, grid)?,
        "label_join" => label_join(ev, &args, grid)?,
        "round" => {
            let input = ev.eval_vector(args[0], grid)?;
            let to_nearest = match args.get(1) {
                Some(a) => ev.eval_scalar(a, grid)?,
                None => vec![1.0; n],
            };
            map_series(input, drop_name, |step, v| {
                // Dividing by the inverse, as Prometheus does, for the same rounding.
                let inverse = 1.0 / to_nearest[step];
                Some((v * inverse + 0.5).floor() / inverse)
            })?
        }
        "clamp" => {
            let input = ev.eval_vector(args[0], grid)?;
            let (min, max) = (
                ev.eval_scalar(args[1], grid)?,
                ev.eval_scalar(args[2], grid)?,
            );
            // Nothing only when max < min: a NaN bound clamps to NaN.
            map_series(input, drop_name, |step, v| {
                let (min, max) = (min[step], max[step]);
                (max >= min || min.is_nan() || max.is_nan()).then(|| go_max(min, go_min(max, v)))
            })?
        }
        "clamp_min" => {
            let input = ev.eval_vector(args[0], grid)?;
            let min = ev.eval_scalar(args[1], grid)?;
            map_series(input, drop_name, |step, v| Some(go_max(min[step], v)))?
        }
        "clamp_max" => {
            let input = ev.eval_vector(args[0], grid)?;
            let max = ev.eval_scalar(args[1], grid)?;
            map_series(input, drop_name, |step, v| Some(go_min(max[step], v)))?
        }
        _ => match math(name) {
            Some(f) => {
                let input = ev.eval_vector(args[0], grid)?;
                map_series(input, drop_name, |_, v| Some(f(v)))?
            }
            None => return Err(unsupported(&format!("function {name}()"))),
        },
    })
}

/// The functions of one value.
/// Go's `math.Max`, which `clamp*` use in Prometheus: +Inf wins, then
/// NaN (Rust's `f64::max` ignores a NaN instead).
fn go_max(a: f64, b: f64) -> f64 {
    go_extreme(a, b, f64::INFINITY, f64::max)
}

/// Go's `math.Min`: -Inf wins, then NaN.
fn go_min(a: f64, b: f64) -> f64 {
    go_extreme(a, b, f64::NEG_INFINITY, f64::min)
}

/// `wins` if either is `wins`, else NaN if either is NaN, else `pick`'s.
fn go_extreme(a: f64, b: f64, wins: f64, pick: fn(f64, f64) -> f64) -> f64 {
    if a == wins || b == wins {
        wins
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        pick(a, b)
    }
}

fn math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "rad" => f64::to_radians,
        "deg" => f64::to_degrees,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

/// `sort` and `sort_desc`: each step's samples by value, NaN last
/// either way, as Prometheus orders them.
fn sort(
    ev: &mut Evaluator<'_>,
    arg: &Expr,
    grid: &Grid,
    descending: bool,
) -> Result<Stepped, PromqlError> {
    let input = ev.eval_vector(arg, grid)?;
    let mut cursor = StepCursor::new(&input);
    let mut collect = Collect::default();
    for step in 0..grid.len() {
        let mut at = cursor.at(step);
        at.sort_by(|a, b| match (a.1.is_nan(), b.1.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if descending => b.1.total_cmp(&a.1),
            _ => a.1.total_cmp(&b.1),
        });
        for (i, v) in at {
            collect.push(step, cursor.labels(i).clone(), v)?;
        }
    }
    Ok(Stepped::Vector(collect.finish()?))
}

/// `timestamp`: of a selector, each sample's own time; of any other
/// expression, the evaluation time (Prometheus special-cases selectors).
fn timestamp(ev: &mut Evaluator<'_>, arg: &Expr, grid: &Grid) -> Result<Stepped, PromqlError> {
    let input = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => ev.vector_selector(vs, grid, true)?,
        other => {
            let mut input = ev.eval_vector(other, grid)?;
            for s in &mut input {
                for p in &mut s.points {
                    p.1 = grid.ts(p.0) as f64 / 1000.0;
                }
            }
            input
        }
    };
    map_series(input, drop_name, |_, v| Some(v))
}

/// `label_replace(v, dst, replacement, src, regex)`.
fn label_replace(
    ev: &mut Evaluator<'_>,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Stepped, PromqlError> {
    let input = ev.eval_vector(args[0], grid)?;
    let (dst, repl, src, pattern) = (
        string_arg(args[1])?,
        string_arg(args[2])?,
        string_arg(args[3])?,
        string_arg(args[4])?,
    );
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| {
        PromqlError::Execution(format!(
            "invalid regular expression in label_replace(): {pattern}"
        ))
    })?;
    check_label_name(&dst, "destination", "label_replace")?;
    map_series(
        input,
        |mut labels| {
            let value = get(&labels, &src).to_owned();
            if let Some(caps) = re.captures(&value) {
                let mut out = String::new();
                caps.expand(&repl, &mut out);
                set(&mut labels, &dst, &out);
            }
            labels
        },
        |_, v| Some(v),
    )
}

/// `label_join(v, dst, separator, src...)`.
fn label_join(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Stepped, PromqlError> {
    let input = ev.eval_vector(args[0], grid)?;
    let (dst, sep) = (string_arg(args[1])?, string_arg(args[2])?);
    let srcs = args[3..]
        .iter()
        .map(|a| string_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    for src in &srcs {
        check_label_name(src, "source", "label_join")?;
    }
    check_label_name(&dst, "destination", "label_join")?;
    map_series(
        input,
        |mut labels| {
            let joined: Vec<&str> = srcs.iter().map(|s| get(&labels, s)).collect();
            let joined = joined.join(&sep);
            set(&mut labels, &dst, &joined);
            labels
        },
        |_, v| Some(v),
    )
}

/// A range function over every window of its range argument; the
/// function's other (scalar) arguments are evaluated per step.
fn range_call(
    ev: &mut Evaluator<'_>,
    f: RangeFn,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Stepped, PromqlError> {
    let mut out = Vec::new();
    range_call_each(ev, f, args, grid, |series| {
        out.push(series);
        Ok(())
    })?;
    Ok(Stepped::Vector(out))
}

/// A call of a range function as `sink` takes its result: one series at
/// a time, as each is read; `None` for any other call.
pub(crate) fn range_call_series(
    ev: &mut Evaluator<'_>,
    call: &Call,
    grid: &Grid,
    sink: &mut dyn FnMut(StepSeries) -> Result<(), PromqlError>,
) -> Option<Result<(), PromqlError>> {
    let f = range_fns::lookup(call.func.name)?;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    Some(range_call_each(ev, f, &args, grid, sink))
}

/// [`range_call`]'s series, each given to `sink` once computed.
fn range_call_each(
    ev: &mut Evaluator<'_>,
    f: RangeFn,
    args: &[&Expr],
    grid: &Grid,
    mut sink: impl FnMut(StepSeries) -> Result<(), PromqlError>,
) -> Result<(), PromqlError> {
    let matrix_at = usize::from(f == RangeFn::QuantileOverTime);
    let mut scalars = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i != matrix_at {
            scalars.push(ev.eval_scalar(arg, grid)?);
        }
    }
    let mut windows = ev.maybe_windows(args[matrix_at], grid)?.ok_or_else(|| {
        PromqlError::BadData(format!("expected a range vector: {}", args[matrix_at]))
    })?;
    let keeps_name = f == RangeFn::LastOverTime;
    // Distinct inputs give distinct outputs when the name is kept, or
    // when every input has the same name: then the set that catches
    // duplicate outputs (and the copy of each label set it holds) is not
    // needed. Inputs in strictly increasing order (a selector's) are
    // distinct.
    let distinct_inputs = windows
        .series
        .windows(2)
        .all(|w| w[0].labels() < w[1].labels());
    let one_name = windows.series.first().is_none_or(|first| {
        let name = get(first.labels(), METRIC_NAME);
        windows
            .series
            .iter()
            .all(|s| get(s.labels(), METRIC_NAME) == name)
    });
    let mut seen = (!(distinct_inputs && (keeps_name || one_name))).then(HashSet::new);
    let steps = Steps {
        ends: &windows.ends,
        range_ms: windows.range_ms,
        grid: *grid,
        scalars: &scalars,
    };
    let mut scratch = Scratch::default();
    let mut spans = Vec::new();
    for i in 0..windows.series.len() {
        ev.check_deadline()?;
        let mut points = Vec::new();
        ev.with_windows(&windows, i, &mut spans, |series, spans| {
            f.apply_windows(series, spans, &steps, &mut scratch, &mut points);
        })?;
        if points.is_empty() {
            continue;
        }
        ev.charge(points.len())?;
        // last_over_time acts like an offset and keeps the name.
        let labels = if keeps_name {
            windows.series[i].take_labels()
        } else {
            drop_name(windows.series[i].take_labels())
        };
        if let Some(seen) = &mut seen
            && !seen.insert(labels.clone())
        {
            return Err(crate::eval::duplicate_labelset());
        }
        sink(StepSeries { labels, points })?;
    }
    Ok(())
}

/// Applies a label mapping and a value mapping (`None` drops the point)
/// to every series.
fn map_series(
    input: Vec<StepSeries>,
    mut labels_of: impl FnMut(Labels) -> Labels,
    mut value_of: impl FnMut(usize, f64) -> Option<f64>,
) -> Result<Stepped, PromqlError> {
    let mut collect = Collect::default();
    for s in input {
        let values = s
            .points
            .into_iter()
            .filter_map(|(step, v)| value_of(step, v).map(|v| (step, v)))
            .collect();
        collect.extend(labels_of(s.labels), values);
    }
    Ok(Stepped::Vector(collect.finish()?))
}

/// `absent`'s result: 1 at the steps where nothing was present.
fn absent_result(present: &[bool], labels: Labels) -> Stepped {
    let points: Vec<(usize, f64)> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(step, _)| (step, 1.0))
        .collect();
    if points.is_empty() {
        return Stepped::Vector(Vec::new());
    }
    Stepped::Vector(vec![StepSeries { labels, points }])
}

/// The labels `absent` gives: those a selector pins with `=` (once).
fn absent_labels(arg: &Expr) -> Labels {
    let vs: &VectorSelector = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Vec::new(),
    };
    let mut labels: Labels = Vec::new();
    let mut pinned = HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == crate::value::METRIC_NAME {
            continue;
        }
        if m.op == MatchOp::Equal && !pinned.contains(&m.name) {
            set(&mut labels, &m.name, &m.value);
            pinned.insert(m.name.clone());
        } else {
            set(&mut labels, &m.name, "");
        }
    }
    labels
}

/// Refuses an invalid label name given to `function` as its `role` label.
fn check_label_name(name: &str, role: &str, function: &str) -> Result<(), PromqlError> {
    if valid_label_name(name) {
        return Ok(());
    }
    Err(PromqlError::Execution(format!(
        "invalid {role} label name in {function}(): {name}"
    )))
}

pub(crate) fn unwrap_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// A string literal argument (through parentheses).
pub(crate) fn string_arg(expr: &Expr) -> Result<String, PromqlError> {
    match unwrap_parens(expr) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => Err(PromqlError::BadData(format!(
            "expected a string literal: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use crate::Value;
    use crate::testdata::{Fixture, assert_close, assert_vector, load_u};

    /// `u` (see `load_u`); `m` on a: 1 at 0 s, 2 at 60 s.
    fn fixture() -> Fixture {
        load_u(&[("a", "m", &[], vec![(0, 1.0), (60, 2.0)])])
    }

    #[test]
    fn math_functions_drop_the_name() {
        let fx = fixture();
        let c = r#"u{host="c"}"#;
        let cases = [
            (format!("abs(-{c})"), 10.0),
            (format!("ceil({c} / 3)"), 4.0),
            (format!("floor({c} / 3)"), 3.0),
            (format!("sqrt({c})"), 10f64.sqrt()),
            (format!("exp({c})"), 10f64.exp()),
            (format!("ln({c})"), 10f64.ln()),
            (format!("log2({c})"), 10f64.log2()),
            (format!("log10({c})"), 1.0),
            // Ties round up: 10/4 = 2.5 -> 3; to the nearest 0.5: 10/3 -> 3.5.
            (format!("round({c} / 4)"), 3.0),
            (format!("round({c} / 3, 0.5)"), 3.5),
            (format!("clamp({c}, 0, 5)"), 5.0),
            (format!("clamp_max({c}, 4)"), 4.0),
            (format!("clamp_min({c}, 12)"), 12.0),
        ];
        for (expr, want) in &cases {
            let v = fx.vector(expr, 0);
            assert_eq!(v.len(), 1, "{expr}");
            assert_eq!(v[0].0, "host=c,mode=x", "{expr}");
            assert_close(v[0].1, *want, expr);
        }
        // clamp with min above max gives nothing.
        assert!(fx.vector("clamp(u, 5, 1)", 0).is_empty());
        // A NaN bound gives NaN, as Go's math.Max and math.Min do; an
        // infinite one wins over NaN.
        for expr in [
            format!("clamp_min({c}, NaN)"),
            format!("clamp_max({c}, NaN)"),
            format!("clamp({c}, 0, NaN)"),
            format!("clamp({c}, NaN, 5)"),
            format!("clamp_min({c} * NaN, 0)"),
        ] {
            let v = fx.vector(&expr, 0);
            assert_eq!(v.len(), 1, "{expr}");
            assert!(v[0].1.is_nan(), "{expr}: {}", v[0].1);
        }
        fx.check(
            &format!("clamp_min({c} * NaN, Inf)"),
            0,
            &[("host=c,mode=x", f64::INFINITY)],
        );
        fx.check(
            &format!("clamp_max({c} * NaN, -Inf)"),
            0,
            &[("host=c,mode=x", f64::NEG_INFINITY)],
        );
    }

    #[test]
    fn scalar_vector_time_timestamp() {
        let fx = fixture();
        assert_eq!(fx.scalar(r#"scalar(u{host="c"})"#, 0), 10.0);
        assert!(fx.scalar("scalar(u)", 0).is_nan(), "more than one sample");
        fx.check("vector(3)", 0, &[("", 3.0)]);
        assert_eq!(fx.scalar("time()", 90), 90.0);
        // timestamp() of a selector is the sample's time, not the step's.
        fx.check("timestamp(m)", 90, &[("host=a", 60.0)]);
        fx.check("timestamp(m @ 30)", 90, &[("host=a", 0.0)]);
        // Of any other expression, the evaluation time.
        fx.check("timestamp(m + 1)", 90, &[("host=a", 90.0)]);
    }

    #[test]
    fn absent_gives_the_labels_pinned_by_equality() {
        let fx = fixture();
        fx.check(
            r#"absent(nothing{job="x", env=~"p.*"})"#,
            0,
            &[("job=x", 1.0)],
        );
        assert!(fx.vector("absent(u)", 0).is_empty());
        fx.check("absent(sum(nothing))", 0, &[("", 1.0)]);
    }

    #[test]
    fn label_replace_and_label_join() {
        let fx = fixture();
        assert_vector(
            &fx.vector(
                r#"label_replace(u{host="a", mode="x"}, "dst", "$1-z", "host", "(.*)")"#,
                0,
            ),
            &[("__name__=u,dst=a-z,host=a,mode=x", 1.0)],
            "replace",
        );
        // No match: unchanged.
        assert_vector(
            &fx.vector(
                r#"label_replace(u{host="a", mode="x"}, "dst", "$1", "host", "b(.*)")"#,
                0,
            ),
            &[("__name__=u,host=a,mode=x", 1.0)],
            "no match",
        );
        // An empty replacement removes the label.
        assert_vector(
            &fx.vector(
                r#"label_replace(u{host="a", mode="x"}, "mode", "", "host", ".*")"#,
                0,
            ),
            &[("__name__=u,host=a", 1.0)],
            "remove",
        );
        assert_vector(
            &fx.vector(
                r#"label_join(u{host="a", mode="x"}, "j", "/", "host", "mode")"#,
                0,
            ),
            &[("__name__=u,host=a,j=a/x,mode=x", 1.0)],
            "join",
        );
        // Two series made equal are refused.
        let err = fx
            .instant(r#"label_replace(u{host="a"}, "mode", "", "mode", ".*")"#, 0)
            .unwrap_err();
        assert!(err.to_string().contains("same labelset"), "{err}");
        let err = fx
            .instant(r#"label_replace(u, "dst", "", "host", "(")"#, 0)
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid regular expression"),
            "{err}"
        );
    }

    #[test]
    fn sort_and_sort_desc_order_an_instant_vector() {
        let fx = fixture();
        let order = |expr: &str| -> Vec<f64> {
            let Value::Vector(samples) = fx.instant(expr, 0).unwrap() else {
                panic!("not a vector")
            };
            samples.iter().map(|s| s.point.value).collect()
        };
        assert_eq!(order("sort(u)"), [1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!(order("sort_desc(u)"), [10.0, 4.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn functions_outside_the_supported_set_are_refused_by_name() {
        let fx = fixture();
        for (expr, name) in [
            ("hour()", "hour"),
            ("histogram_quantile(0.9, u)", "histogram_quantile"),
            ("limitk(1, u)", "limitk"),
            (r#"u{host="a" or host="b"}"#, "`or` between label matchers"),
            (
                "double_exponential_smoothing(u[5m], 0.5, 0.5)",
                "double_exponential_smoothing",
            ),
        ] {
            let err = fx.instant(expr, 0).unwrap_err();
            assert_eq!(err.error_type(), "bad_data", "{expr}");
            assert!(err.to_string().contains(name), "{expr}: {err}");
        }
    }
}
