//! Validation of a rule as written ([`RuleConfig`]) into the [`Rule`] the
//! evaluator runs: thresholds on their quiet side, windows bounded,
//! matchers and templates parsed, defaults filled in per kind.

use super::rules::{
    Cause, EventKind, EventRule, HostDownRule, Op, PredictionRule, ResolvingEvent, RuleConfig,
    RuleKind, ThresholdRule,
};
use super::{KeyError, ms, parse_matchers, positive, valid_name};
use crate::machine::Timing;
use crate::matcher::LabelMatcher;
use crate::template::Template;
use crate::window::Aggregate;
use std::collections::BTreeMap;
use std::time::Duration;

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: Vec<(String, Template)>,
    pub timing: Timing,
    pub kind: Kind,
    /// As written, to tell on reload whether its evaluation state carries over.
    pub source: RuleConfig,
}

/// What a validated rule evaluates.
#[derive(Debug, Clone)]
pub enum Kind {
    Series(SeriesRule),
    HostDown {
        timeout_ms: i64,
        page_on_clean_shutdown: bool,
    },
    /// Reboots and dropped data: fire when they happen, resolve by themselves.
    Event {
        event: EventKind,
        resolve_after_ms: i64,
    },
    /// Fires while a part of the collector's storage does not store.
    NotStoring,
}

/// A rule over a series of values per host (and labels).
#[derive(Debug, Clone)]
pub struct SeriesRule {
    pub source: Source,
    pub eval: Eval,
    pub op: Op,
    pub raise: f64,
    pub clear: f64,
    pub cause: Cause,
    /// For `disk` causes: the trend window behind the time-to-full figure.
    pub trend_ms: Option<i64>,
}

/// Where a series rule's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    Metric {
        metric: String,
        matchers: Vec<LabelMatcher>,
        /// Denominator metric of a ratio rule.
        divide_by: Option<String>,
    },
    /// Seconds between the agent's clock and the collector's, per host.
    ClockSkew,
}

/// How values become the compared figure.
#[derive(Debug, Clone, Copy)]
pub enum Eval {
    Window {
        aggregate: Aggregate,
        span_ms: i64,
    },
    /// Seconds until the linear trend over `span_ms` reaches `limit`.
    Predict {
        span_ms: i64,
        limit: f64,
    },
}

/// Longest window of a threshold rule: its samples are kept in memory per
/// series (3,600 at a 1 s interval).
const MAX_THRESHOLD_WINDOW: Duration = Duration::from_secs(3600);

/// Trend window for the time-to-full figure of disk alerts.
const DISK_TREND_MS: i64 = 6 * 3_600_000;

/// How long a reboot or dropped-data alert fires unless the rule says.
const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(900);

/// Validates `config`; `flap_window` and `host_down_after` are the
/// section's defaults. The error names the key.
pub(crate) fn compile_rule(
    config: &RuleConfig,
    flap_window: Duration,
    host_down_after: Duration,
) -> Result<Rule, KeyError> {
    if !valid_name(&config.name) {
        return Err(KeyError::new(
            "name",
            "name must match [a-zA-Z_][a-zA-Z0-9_]* (it becomes the alertname label)",
        ));
    }
    for name in config.labels.keys() {
        if !valid_name(name) || name == "alertname" {
            return Err(KeyError::new(
                "labels",
                format!("labels: invalid label name {name:?}"),
            ));
        }
    }
    let mut annotations = Vec::new();
    for (name, text) in &config.annotations {
        let key = format!("annotations.{name}");
        let template =
            Template::parse(text).map_err(|e| KeyError::new(&key, format!("{key}: {e}")))?;
        annotations.push((name.clone(), template));
    }
    let (for_, keep_firing_for) = config.kind.for_and_keep_firing();
    let timing = Timing {
        for_ms: for_.map(ms).unwrap_or(0),
        keep_firing_for_ms: keep_firing_for.map(ms).unwrap_or(0),
        flap_window_ms: ms(config.flap_window.unwrap_or(flap_window)),
    };
    let kind = match &config.kind {
        RuleKind::Threshold(t) => Kind::Series(threshold(t)?),
        RuleKind::Prediction(p) => Kind::Series(prediction(p)?),
        RuleKind::HostDown(h) => host_down(h, host_down_after)?,
        RuleKind::NotStoring(_) => Kind::NotStoring,
        RuleKind::Event(e) => event(e)?,
    };
    Ok(Rule {
        name: config.name.clone(),
        labels: config.labels.clone(),
        annotations,
        timing,
        kind,
        source: config.clone(),
    })
}

fn threshold(config: &ThresholdRule) -> Result<SeriesRule, KeyError> {
    let op = config.op;
    let raise = config.raise;
    let clear = config.clear.unwrap_or(raise);
    check_thresholds(op, raise, clear)?;
    let aggregate = config.aggregate.unwrap_or(Aggregate::Last);
    let span_ms = match (aggregate, config.window) {
        (Aggregate::Last, None) => 0,
        (_, Some(w)) if w > MAX_THRESHOLD_WINDOW => {
            return Err(KeyError::new(
                "window",
                format!(
                    "window {} is longer than {}: a threshold window keeps every sample in memory; for trends over longer spans use kind = \"prediction\"",
                    humantime::format_duration(w),
                    humantime::format_duration(MAX_THRESHOLD_WINDOW)
                ),
            ));
        }
        (_, Some(w)) if !w.is_zero() => ms(w),
        _ => {
            return Err(KeyError::new(
                "window",
                "window is required (and non-zero) with this aggregate",
            ));
        }
    };
    let cause = config
        .cause
        .unwrap_or_else(|| default_cause(&config.metric, &config.matchers));
    Ok(SeriesRule {
        source: metric_source(
            &config.metric,
            &config.matchers,
            config.divide_by.as_deref(),
        )?,
        eval: Eval::Window { aggregate, span_ms },
        op,
        raise,
        clear,
        cause,
        trend_ms: (cause == Cause::Disk).then_some(DISK_TREND_MS),
    })
}

fn prediction(config: &PredictionRule) -> Result<SeriesRule, KeyError> {
    positive("window", config.window)?;
    if !config.limit.is_finite() {
        return Err(KeyError::new("limit", "limit must be a finite number"));
    }
    positive("horizon", config.horizon)?;
    let clear_horizon = config.clear_horizon.unwrap_or(config.horizon);
    if clear_horizon < config.horizon {
        return Err(KeyError::new(
            "clear_horizon",
            "clear_horizon must not be shorter than horizon",
        ));
    }
    Ok(SeriesRule {
        source: metric_source(
            &config.metric,
            &config.matchers,
            config.divide_by.as_deref(),
        )?,
        eval: Eval::Predict {
            span_ms: ms(config.window),
            limit: config.limit,
        },
        op: Op::Lt,
        raise: config.horizon.as_secs_f64(),
        clear: clear_horizon.as_secs_f64(),
        cause: config
            .cause
            .unwrap_or_else(|| default_cause(&config.metric, &config.matchers)),
        trend_ms: None,
    })
}

fn host_down(config: &HostDownRule, host_down_after: Duration) -> Result<Kind, KeyError> {
    let timeout = config.timeout.unwrap_or(host_down_after);
    positive("timeout", timeout)?;
    Ok(Kind::HostDown {
        timeout_ms: ms(timeout),
        page_on_clean_shutdown: config.page_on_clean_shutdown.unwrap_or(false),
    })
}

fn event(config: &EventRule) -> Result<Kind, KeyError> {
    // A series rule that compares the last value, for the events that are
    // a state (a process not running, clocks apart) rather than a moment.
    let last_value = |source, op, limit| {
        Kind::Series(SeriesRule {
            source,
            eval: Eval::Window {
                aggregate: Aggregate::Last,
                span_ms: 0,
            },
            op,
            raise: limit,
            clear: limit,
            cause: Cause::None,
            trend_ms: None,
        })
    };
    Ok(match config {
        EventRule::Reboot(e) => resolving(EventKind::Reboot, e)?,
        EventRule::DroppedData(e) => resolving(EventKind::DroppedData, e)?,
        EventRule::ProcessDown(r) => {
            let metric = r.metric.as_deref().unwrap_or(super::rules::PROCESS_METRIC);
            last_value(metric_source(metric, &r.matchers, None)?, Op::Lt, 1.0)
        }
        EventRule::ClockSkew(r) => {
            positive("max_skew", r.max_skew)?;
            last_value(Source::ClockSkew, Op::Gt, r.max_skew.as_secs_f64())
        }
    })
}

fn resolving(event: EventKind, config: &ResolvingEvent) -> Result<Kind, KeyError> {
    let resolve_after = config.resolve_after.unwrap_or(DEFAULT_RESOLVE_AFTER);
    positive("resolve_after", resolve_after)?;
    Ok(Kind::Event {
        event,
        resolve_after_ms: ms(resolve_after),
    })
}

fn check_thresholds(op: Op, raise: f64, clear: f64) -> Result<(), KeyError> {
    for (key, value) in [("raise", raise), ("clear", clear)] {
        if !value.is_finite() {
            return Err(KeyError::new(key, "raise and clear must be finite numbers"));
        }
    }
    // Hysteresis: the alert clears only once back past `clear`, which
    // must therefore lie on the quiet side of `raise`.
    let wrong_side = if op.above() {
        clear > raise
    } else {
        clear < raise
    };
    if wrong_side {
        return Err(KeyError::new(
            "clear",
            format!(
                "clear ({clear}) must be {} raise ({raise}) for op {}",
                if op.above() { "at most" } else { "at least" },
                op.symbol()
            ),
        ));
    }
    Ok(())
}

fn metric_source(
    metric: &str,
    matchers: &[String],
    divide_by: Option<&str>,
) -> Result<Source, KeyError> {
    if !valid_name(metric) {
        return Err(KeyError::new(
            "metric",
            format!("metric {metric:?} is not a valid metric name"),
        ));
    }
    if let Some(m) = divide_by.filter(|m| !valid_name(m)) {
        return Err(KeyError::new(
            "divide_by",
            format!("divide_by {m:?} must be a metric name"),
        ));
    }
    Ok(Source::Metric {
        metric: metric.to_owned(),
        matchers: parse_matchers(matchers)?,
        divide_by: divide_by.map(str::to_owned),
    })
}

/// The cause a metric's alerts carry unless the rule says otherwise.
/// Pressure (PSI) series tell their resource by a label, which the rule's
/// matchers pin.
fn default_cause(metric: &str, matchers: &[String]) -> Cause {
    let pressure_on = |resource: &str| {
        metric.starts_with("host_pressure")
            && matchers
                .iter()
                .any(|m| *m == format!("resource={resource}"))
    };
    if metric.starts_with("host_cpu") || metric.starts_with("host_load") || pressure_on("cpu") {
        Cause::Cpu
    } else if metric.starts_with("host_memory")
        || metric.starts_with("host_swap")
        || pressure_on("memory")
    {
        Cause::Memory
    } else if metric.starts_with("host_filesystem") {
        Cause::Disk
    } else {
        Cause::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertingConfig;
    use crate::config::testing::{assert_refused, rule};

    const THRESHOLD: &str = "kind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = 1.0\n";
    const RULE: Option<&str> = Some("alerting.rules[0] \"r\"");

    /// `THRESHOLD` with `extra` keys.
    fn threshold_with(extra: &str) -> String {
        rule(&format!("{THRESHOLD}{extra}"))
    }

    #[test]
    fn default_rules_compile_and_cover_the_bottlenecks() {
        let set = AlertingConfig::default()
            .compile(Duration::from_secs(30))
            .unwrap();
        let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
        for expected in [
            "cpu_saturated",
            "cpu_iowait_high",
            "cpu_steal_high",
            "memory_low",
            "memory_pressure",
            "swapping",
            "filesystem_almost_full",
            "filesystem_filling",
            "inodes_almost_full",
            "inodes_filling",
            "load_per_core_high",
            "host_down",
            "host_rebooted",
            "process_down",
            "agent_dropped_data",
            "agent_certificate_expiring",
            "clock_skew",
            "collector_not_storing",
            "temperature_high",
            "clock_unsynchronized",
            "tcp_listen_overflows",
            "file_descriptors_almost_exhausted",
            "conntrack_almost_full",
            "network_link_down",
            "systemd_unit_failed",
            "systemd_unit_flapping",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        // CPU and memory bottlenecks name their top processes, disks their mount.
        let cause = |name: &str| match &set.rules.iter().find(|r| r.name == name).unwrap().kind {
            Kind::Series(sr) => sr.cause,
            _ => Cause::None,
        };
        for (name, expected) in [
            ("cpu_saturated", Cause::Cpu),
            ("cpu_iowait_high", Cause::Cpu),
            ("load_per_core_high", Cause::Cpu),
            ("memory_low", Cause::Memory),
            ("memory_pressure", Cause::Memory),
            ("swapping", Cause::Memory),
            ("filesystem_almost_full", Cause::Disk),
            ("filesystem_filling", Cause::Disk),
            ("inodes_filling", Cause::Disk),
        ] {
            assert_eq!(cause(name), expected, "{name}");
        }
        for rule in &set.rules {
            assert!(
                rule.labels.contains_key("severity"),
                "{} has no severity",
                rule.name
            );
            assert!(
                rule.annotations.iter().any(|(k, _)| k == "summary"),
                "{} has no summary",
                rule.name
            );
        }
    }

    #[test]
    fn bad_threshold_rules_name_the_rule_and_the_key() {
        let cases = [
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nraise = 1.0"),
                "op is required",
            ),
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nop = \"=\"\nraise = 1.0"),
                "op: \"=\" must be",
            ),
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nop = \">\""),
                "raise is required",
            ),
            (threshold_with("clear = 2.0"), "clear (2)"),
            (threshold_with("aggregate = \"avg\""), "window is required"),
            (threshold_with("aggregate = \"median\""), "median"),
            (
                threshold_with("aggregate = \"avg\"\nwindow = \"7d\""),
                "window 7days is longer than 1h",
            ),
            (threshold_with("match = [\"cpu=~(\"]"), "match"),
            (threshold_with("horizon = \"1h\""), "horizon does not apply"),
            (
                threshold_with("for = \"soon\""),
                "for: invalid value: string \"soon\"",
            ),
            (
                threshold_with("annotations = { summary = \"{{ nope }}\" }"),
                "annotations.summary",
            ),
            (threshold_with("labels = { alertname = \"x\" }"), "labels"),
            (threshold_with("divide_by = \"not a metric\""), "divide_by"),
            (threshold_with("colour = \"red\""), "colour"),
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = nan"),
                "raise and clear must be finite",
            ),
            (
                threshold_with("keep_firing_for = \"a while\""),
                "keep_firing_for",
            ),
            (threshold_with("flap_window = \"often\""), "flap_window"),
            (threshold_with("cause = \"gpu\""), "gpu"),
        ];
        assert_refused(&cases, RULE);
    }

    #[test]
    fn bad_prediction_rules_name_the_rule_and_the_key() {
        let cases = [
            (
                rule("kind = \"prediction\"\nmetric = \"m\"\nwindow = \"1h\"\nhorizon = \"1h\""),
                "limit",
            ),
            (
                rule(
                    "kind = \"prediction\"\nmetric = \"m\"\nwindow = \"1h\"\nlimit = 0.0\nhorizon = \"2h\"\nclear_horizon = \"1h\"",
                ),
                "clear_horizon",
            ),
            (
                rule(
                    "kind = \"prediction\"\nmetric = \"m\"\nwindow = \"1h\"\nlimit = inf\nhorizon = \"1h\"",
                ),
                "limit must be a finite number",
            ),
            (
                rule("kind = \"prediction\"\nmetric = \"m\"\nlimit = 0.0\nhorizon = \"1h\""),
                "window",
            ),
            (
                rule("kind = \"prediction\"\nmetric = \"m\"\nwindow = \"1h\"\nlimit = 0.0"),
                "horizon is required",
            ),
        ];
        assert_refused(&cases, RULE);
    }

    #[test]
    fn bad_event_rules_name_the_rule_and_the_key() {
        let cases = [
            (rule("kind = \"event\""), "event is required"),
            (rule("kind = \"event\"\nevent = \"eclipse\""), "eclipse"),
            (rule("kind = \"event\"\nevent = \"clock_skew\""), "max_skew"),
            (
                rule("kind = \"event\"\nevent = \"reboot\"\nresolve_after = \"0s\""),
                "resolve_after",
            ),
            (
                rule("kind = \"event\"\nevent = \"reboot\"\nraise = 1.0"),
                "raise does not apply",
            ),
            (
                rule("kind = \"event\"\nevent = \"process_down\"\nmetric = \"bad metric\""),
                "metric",
            ),
            (
                rule("kind = \"event\"\nevent = \"clock_skew\"\nmax_skew = \"0s\""),
                "max_skew",
            ),
        ];
        assert_refused(&cases, RULE);
    }

    #[test]
    fn bad_rules_of_other_kinds_name_the_rule_and_the_key() {
        let cases = [
            (
                rule("kind = \"not_storing\"\nfor = \"1m\""),
                "for does not apply",
            ),
            (rule("kind = \"host_down\"\ntimeout = \"0s\""), "timeout"),
            (
                rule("kind = \"host_down\"\npage_on_clean_shutdown = \"yes\""),
                "page_on_clean_shutdown",
            ),
            (rule("kind = \"volcano\""), "volcano"),
        ];
        assert_refused(&cases, RULE);
    }
}
