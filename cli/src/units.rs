//! Values in their unit, for the tables of `hostwatch query` and
//! `hostwatch promql`: the one place that decides a value's unit and
//! writes it. The unit comes from the metric name's suffix (the naming of
//! docs/metrics.md): `_ratio` as a percentage, `_bytes` in IEC units,
//! `_seconds` as a duration (`_time_seconds`, a moment, as a time), a
//! counter (`_total`) as its count under `increase`, per second under
//! `rate`, `irate` and `deriv`. A PromQL result without a metric name
//! takes its unit from the expression; when the expression does not say
//! (a product, a count, an unknown function), the number is shown as it
//! is. `--json` output never goes through here.

use hostwatch_alerting::format_rfc3339;
use hostwatch_alerting::template::{format_bytes, format_duration, format_number};
use promql_parser::parser::token::{
    T_ADD, T_AVG, T_BOTTOMK, T_DIV, T_LAND, T_LOR, T_LUNLESS, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{BinaryExpr, Expr, VectorSelector};

/// What a value measures, and so how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A fraction of one, written as a percentage (seconds per second too).
    Ratio,
    /// Bytes, in IEC units (KiB, MiB ...).
    Bytes,
    /// A duration in seconds.
    Seconds,
    /// A moment, in seconds since the Unix epoch.
    Timestamp,
    /// Bytes per second.
    BytesPerSecond,
    /// Events per second: a count's rate.
    PerSecond,
    /// Nothing known: the number itself.
    Number,
}

/// Significant digits of plain numbers and rates: the integer part is
/// always written whole, and 0.010050251256281407 reads 0.01005.
const SIGNIFICANT_DIGITS: i32 = 4;

impl Unit {
    /// The unit of metric `name`'s samples, by its suffix.
    pub(crate) fn of_metric(name: &str) -> Unit {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let counter = base.len() < name.len();
        if base.ends_with("_ratio") {
            Unit::Ratio
        } else if base.ends_with("_bytes") {
            Unit::Bytes
        } else if !counter
            && (base.ends_with("_time_seconds") || base.ends_with("_timestamp_seconds"))
        {
            Unit::Timestamp
        } else if base.ends_with("_seconds") {
            Unit::Seconds
        } else {
            Unit::Number
        }
    }

    /// The unit of this quantity's change per second (`rate`, `deriv`):
    /// bytes become bytes per second, seconds a fraction of each second,
    /// counts events per second; anything else is unknown.
    pub(crate) fn per_second(self) -> Unit {
        match self {
            Unit::Bytes => Unit::BytesPerSecond,
            Unit::Seconds => Unit::Ratio,
            Unit::Number => Unit::PerSecond,
            _ => Unit::Number,
        }
    }

    /// `value` written in this unit, for people.
    pub(crate) fn format(self, value: f64) -> String {
        if !value.is_finite() {
            // NaN, +Inf, -Inf, as Prometheus writes them.
            return format_number(value, 0);
        }
        match self {
            Unit::Ratio => format!("{}%", significant(value * 100.0, 3)),
            Unit::Bytes => bytes(value),
            Unit::Seconds => seconds(value),
            Unit::Timestamp => format_rfc3339((value * 1000.0).round() as i64),
            Unit::BytesPerSecond => format!("{}/s", bytes(value)),
            Unit::PerSecond => format!("{}/s", significant(value, SIGNIFICANT_DIGITS)),
            Unit::Number => significant(value, SIGNIFICANT_DIGITS),
        }
    }
}

/// `value` with `digits` significant digits, the integer part always
/// whole, trailing zeros dropped; never an exponent.
fn significant(value: f64, digits: i32) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).clamp(0, 15);
    format_number(value, decimals as usize)
}

/// Bytes in IEC units; below a KiB with three significant digits, so a
/// slow rate (0.25 B/s) is not written as 0.
fn bytes(value: f64) -> String {
    if value.abs() < 1024.0 {
        format!("{} B", significant(value, 3))
    } else {
        format_bytes(value)
    }
}

/// A duration: below a second in ms, µs or ns, below a minute in
/// seconds, then as the alert templates write durations ("1m 30s").
fn seconds(value: f64) -> String {
    if value < 0.0 {
        return format!("-{}", seconds(-value));
    }
    let scaled = |factor: f64, suffix: &str| format!("{}{suffix}", significant(value * factor, 3));
    match value {
        0.0 => "0s".to_owned(),
        v if v < 1e-6 => scaled(1e9, "ns"),
        v if v < 1e-3 => scaled(1e6, "µs"),
        v if v < 1.0 => scaled(1e3, "ms"),
        v if v < 60.0 => scaled(1.0, "s"),
        v => format_duration(v),
    }
}

/// The unit of a PromQL expression's values when its result series carry
/// no metric name; [`Unit::Number`] when the text does not parse or the
/// expression does not say.
pub(crate) fn of_expression(expr: &str) -> Unit {
    promql_parser::parser::parse(expr)
        .ok()
        .and_then(|e| unit_of(&e))
        .unwrap_or(Unit::Number)
}

/// The unit of one series of a PromQL result: its metric name's, if it
/// has one, else the expression's (`expression`).
pub(crate) fn of_series<'a>(
    mut labels: impl Iterator<Item = (&'a str, &'a str)>,
    expression: Unit,
) -> Unit {
    labels
        .find(|(name, _)| *name == "__name__")
        .map_or(expression, |(_, metric)| Unit::of_metric(metric))
}

/// The metric a selector names, by name or by an `__name__="..."` matcher.
fn metric_name(vs: &VectorSelector) -> Option<&str> {
    use promql_parser::label::MatchOp;
    vs.name.as_deref().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str())
    })
}

/// The unit of `expr`'s values, `None` when unknown.
fn unit_of(expr: &Expr) -> Option<Unit> {
    match expr {
        Expr::VectorSelector(vs) => metric_name(vs).map(Unit::of_metric),
        Expr::MatrixSelector(ms) => metric_name(&ms.vs).map(Unit::of_metric),
        Expr::Paren(p) => unit_of(&p.expr),
        Expr::Unary(u) => unit_of(&u.expr),
        Expr::Subquery(s) => unit_of(&s.expr),
        Expr::Aggregate(a) => {
            // Aggregations that keep the values' unit: not count, group,
            // count_values or stdvar (squared units).
            let keeps = [
                T_SUM, T_AVG, T_MIN, T_MAX, T_TOPK, T_BOTTOMK, T_QUANTILE, T_STDDEV,
            ];
            keeps.contains(&a.op.id()).then(|| unit_of(&a.expr))?
        }
        Expr::Call(call) => {
            let args = &call.args.args;
            let arg = |i: usize| args.get(i).and_then(|a| unit_of(a));
            match call.func.name {
                "rate" | "irate" | "deriv" => arg(0).map(Unit::per_second),
                "quantile_over_time" => arg(1),
                "increase" | "delta" | "idelta" | "predict_linear" | "abs" | "ceil" | "floor"
                | "round" | "clamp" | "clamp_min" | "clamp_max" | "sort" | "sort_desc"
                | "label_replace" | "label_join" | "avg_over_time" | "min_over_time"
                | "max_over_time" | "last_over_time" | "stddev_over_time" | "scalar" | "vector" => {
                    arg(0)
                }
                _ => None,
            }
        }
        Expr::Binary(b) => binary_unit(b),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => None,
    }
}

/// The unit of a binary operation's values: comparisons (without `bool`)
/// and `and`/`unless` keep their vector side's values; sums and
/// differences of one unit keep it; a quotient of one unit is a ratio;
/// anything else (products, powers, a scalar operand) is unknown.
fn binary_unit(b: &BinaryExpr) -> Option<Unit> {
    let (lhs, rhs) = (unit_of(&b.lhs), unit_of(&b.rhs));
    let op = b.op.id();
    if b.op.is_comparison_operator() {
        if b.return_bool() {
            return None;
        }
        return if b.lhs.value_type() == ValueType::Scalar {
            rhs
        } else {
            lhs
        };
    }
    let same = lhs.filter(|l| Some(*l) == rhs);
    match op {
        T_LAND | T_LUNLESS => lhs,
        T_LOR | T_ADD | T_SUB => same,
        T_DIV => same.filter(|u| *u != Unit::Timestamp).map(|_| Unit::Ratio),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metric_names_give_their_unit() {
        for (name, unit) in [
            ("host_cpu_utilization_ratio", Unit::Ratio),
            ("host_cpu_time_ratio", Unit::Ratio),
            ("host_memory_available_bytes", Unit::Bytes),
            ("host_network_receive_bytes_total", Unit::Bytes),
            ("host_uptime_seconds", Unit::Seconds),
            ("host_disk_io_time_seconds_total", Unit::Seconds),
            ("hostwatch_agent_send_latency_seconds", Unit::Seconds),
            ("host_boot_time_seconds", Unit::Timestamp),
            ("process_start_timestamp_seconds", Unit::Timestamp),
            ("host_load1", Unit::Number),
            ("host_context_switches_total", Unit::Number),
            ("total", Unit::Number),
            ("", Unit::Number),
        ] {
            assert_eq!(Unit::of_metric(name), unit, "{name}");
        }
    }

    #[test]
    fn expressions_keep_or_change_their_metric_unit() {
        use Unit::*;
        for (expr, unit) in [
            ("host_memory_available_bytes", Bytes),
            (
                "{__name__=\"host_memory_available_bytes\", host=\"a\"}",
                Bytes,
            ),
            ("rate(host_network_receive_bytes_total[5m])", BytesPerSecond),
            (
                "irate(host_network_receive_bytes_total[1m])",
                BytesPerSecond,
            ),
            (
                "sum by (host) (rate(host_network_receive_bytes_total{device!=\"lo\"}[5m]))",
                BytesPerSecond,
            ),
            ("increase(host_network_receive_bytes_total[1h])", Bytes),
            ("rate(host_context_switches_total[5m])", PerSecond),
            ("rate(host_pressure_stalled_seconds_total[5m])", Ratio),
            ("increase(host_disk_io_time_seconds_total[1h])", Seconds),
            ("deriv(host_filesystem_free_bytes[1h])", BytesPerSecond),
            (
                "predict_linear(host_filesystem_free_bytes[1h], 3600)",
                Bytes,
            ),
            (
                "topk(10, avg_over_time(host_cpu_utilization_ratio{cpu=\"total\"}[5m]))",
                Ratio,
            ),
            (
                "quantile_over_time(0.9, host_cpu_utilization_ratio[10m])",
                Ratio,
            ),
            (
                "max_over_time(rate(host_forks_total[1m])[1h:1m])",
                PerSecond,
            ),
            (
                "(host_memory_total_bytes - host_memory_available_bytes)",
                Bytes,
            ),
            (
                "host_memory_available_bytes / host_memory_total_bytes",
                Ratio,
            ),
            ("host_cpu_utilization_ratio > 0.9", Ratio),
            ("0.9 < host_cpu_utilization_ratio", Ratio),
            (
                "host_cpu_utilization_ratio and on(host) host_load1 > 1",
                Ratio,
            ),
            ("-host_uptime_seconds", Seconds),
            ("scalar(sum(host_memory_used_bytes))", Bytes),
            ("sort_desc(clamp_min(host_swap_used_bytes, 0))", Bytes),
            // Not sure: the number as it is.
            ("host_cpu_utilization_ratio * 100", Number),
            ("host_memory_available_bytes / 1024", Number),
            ("host_memory_used_bytes + host_uptime_seconds", Number),
            ("host_cpu_utilization_ratio > bool 0.9", Number),
            ("count(host_memory_used_bytes)", Number),
            ("stdvar(host_memory_used_bytes)", Number),
            ("count_over_time(host_memory_used_bytes[5m])", Number),
            ("changes(host_boot_time_seconds[1h])", Number),
            ("host_boot_time_seconds / host_boot_time_seconds", Number),
            ("rate(host_cpu_utilization_ratio[5m])", Number),
            ("time()", Number),
            ("1 + 1", Number),
            ("{host=\"a\"}", Number),
            ("sum(", Number),
        ] {
            assert_eq!(of_expression(expr), unit, "{expr}");
        }
    }

    #[test]
    fn a_series_metric_name_wins_over_the_expression() {
        let named = [("__name__", "host_uptime_seconds"), ("host", "a")];
        assert_eq!(of_series(named.into_iter(), Unit::Bytes), Unit::Seconds);
        let unnamed = [("host", "a")];
        assert_eq!(of_series(unnamed.into_iter(), Unit::Bytes), Unit::Bytes);
    }

    #[test]
    fn values_are_written_in_their_unit() {
        use Unit::*;
        let gib = 1024.0 * 1024.0 * 1024.0;
        for (unit, value, text) in [
            (Ratio, 0.010050251256281407, "1.01%"),
            (Ratio, 0.5, "50%"),
            (Ratio, 1.0, "100%"),
            (Ratio, 2.5, "250%"),
            (Ratio, 0.0, "0%"),
            (Ratio, 0.000_012_3, "0.00123%"),
            (Bytes, 1.5 * gib, "1.5 GiB"),
            (Bytes, 512.0, "512 B"),
            (Bytes, 0.25, "0.25 B"),
            (Bytes, -2048.0, "-2.0 KiB"),
            (BytesPerSecond, 1536.0, "1.5 KiB/s"),
            (Seconds, 0.0023, "2.3ms"),
            (Seconds, 0.000_150, "150µs"),
            (Seconds, 4e-8, "40ns"),
            (Seconds, 1.25, "1.25s"),
            (Seconds, 90.0, "1m 30s"),
            (Seconds, 3.0 * 86_400.0 + 7_200.0, "3d 2h"),
            (Seconds, -90.0, "-1m 30s"),
            (Seconds, 0.0, "0s"),
            (Timestamp, 1_700_000_000.0, "2023-11-14T22:13:20Z"),
            (PerSecond, 12.345678, "12.35/s"),
            (Number, 0.010050251256281407, "0.01005"),
            (Number, 123_456_789.0, "123456789"),
            (Number, -0.5, "-0.5"),
            (Number, 0.0, "0"),
            (Number, f64::NAN, "NaN"),
            (Bytes, f64::INFINITY, "+Inf"),
            (Seconds, f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(unit.format(value), text, "{unit:?} {value}");
        }
    }

    /// Reads a written value back, for the property below.
    fn read_back(text: &str) -> f64 {
        let number = |s: &str| s.trim().parse::<f64>().unwrap();
        if let Some(p) = text.strip_suffix('%') {
            return number(p) / 100.0;
        }
        let text = text.strip_suffix("/s").unwrap_or(text);
        for (i, unit) in ["B", "KiB", "MiB", "GiB", "TiB", "PiB"].iter().enumerate() {
            if let Some(n) = text.strip_suffix(&format!(" {unit}")) {
                return number(n) * 1024f64.powi(i as i32);
            }
        }
        if let Some(rest) = text.strip_prefix('-') {
            return -read_back(rest);
        }
        for (suffix, factor) in [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)] {
            if let Some(n) = text.strip_suffix(suffix) {
                return number(n) * factor;
            }
        }
        if !text.contains(' ') && text.ends_with('s') && !text.contains(['d', 'h', 'm']) {
            return number(&text[..text.len() - 1]);
        }
        if text.ends_with(['d', 'h', 'm', 's']) {
            return text
                .split(' ')
                .map(|part| {
                    let (n, u) = part.split_at(part.len() - 1);
                    let factor = match u {
                        "d" => 86_400.0,
                        "h" => 3_600.0,
                        "m" => 60.0,
                        _ => 1.0,
                    };
                    number(n) * factor
                })
                .sum();
        }
        number(text)
    }

    /// Metrics of every unit, and wrappers (operators parenthesized, so
    /// that any nesting parses as written) that keep a unit or lose it.
    const METRICS: [&str; 6] = [
        "host_cpu_utilization_ratio",
        "host_memory_available_bytes",
        "host_uptime_seconds",
        "host_boot_time_seconds",
        "host_load1",
        "host_network_receive_bytes_total",
    ];
    const KEEPING: [&str; 9] = [
        "abs({})",
        "sort_desc({})",
        "sum by (host) ({})",
        "({})",
        "-({})",
        "clamp_min({}, 0)",
        "topk(3, {})",
        "max_over_time(({})[10m:1m])",
        "({}) > 0",
    ];
    const LOSING: [&str; 5] = [
        "count({})",
        "({}) * 2",
        "({}) > bool 0",
        "exp({})",
        "count_over_time(({})[10m:1m])",
    ];

    proptest! {
        /// Any chain of unit-keeping wrappers keeps the metric's unit (or
        /// its rate's, inside `rate`); one losing wrapper anywhere makes
        /// it unknown.
        #[test]
        fn wrappers_keep_or_lose_the_unit(
            metric in prop::sample::select(METRICS.to_vec()),
            inner in prop::collection::vec(prop::sample::select(KEEPING.to_vec()), 0..4),
            outer in prop::collection::vec(prop::sample::select(KEEPING.to_vec()), 0..4),
            losing in prop::sample::select(LOSING.to_vec()),
            rate in any::<bool>(),
        ) {
            let wrap = |expr: String, wrappers: &[&str]| {
                wrappers.iter().fold(expr, |e, w| w.replace("{}", &e))
            };
            let (mut expr, mut unit) = (metric.to_owned(), Unit::of_metric(metric));
            if rate {
                expr = format!("rate({metric}[5m])");
                unit = unit.per_second();
            }
            let kept = wrap(expr.clone(), &inner);
            let kept = wrap(kept, &outer);
            prop_assert_eq!(of_expression(&kept), unit, "{}", kept);
            let lost = wrap(losing.replace("{}", &wrap(expr, &inner)), &outer);
            prop_assert_eq!(of_expression(&lost), Unit::Number, "{}", lost);
        }

        /// Whatever the magnitude, what is written reads back close to the
        /// value: within 5 % (a duration keeps its two largest parts, a
        /// size one decimal), or within the rounding of the smallest unit.
        #[test]
        fn written_values_read_back_close(
            mantissa in -1.0f64..1.0,
            exponent in -10i32..16,
            unit in prop::sample::select(vec![
                Unit::Ratio, Unit::Bytes, Unit::Seconds, Unit::BytesPerSecond,
                Unit::PerSecond, Unit::Number,
            ]),
        ) {
            let value = mantissa * 10f64.powi(exponent);
            let text = unit.format(value);
            let back = read_back(&text);
            let tolerance = (value.abs() * 0.05).max(match unit {
                Unit::Seconds => 0.5e-9,
                _ => 0.5e-15,
            });
            prop_assert!((back - value).abs() <= tolerance, "{value} {unit:?} -> {text} -> {back}");
        }
    }
}
