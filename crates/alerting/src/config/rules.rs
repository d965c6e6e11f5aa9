//! `[[alerting.rules]]` as written: the keys every rule has, then a type
//! per `kind` holding only that kind's keys, so a key that does not belong
//! to a kind is refused by deserialization (`deny_unknown_fields`).
//! `compile` turns these into the rules the evaluator runs.

use super::entry::{from_keys, read_entry, take_string, unknown};
use super::{KeyError, Place};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The metric a process-down rule watches unless it names another.
pub(crate) const PROCESS_METRIC: &str = "host_process_running";

/// The rules that ship enabled, in the same format as `[[alerting.rules]]`.
pub const DEFAULT_RULES: &str = include_str!("../default_rules.toml");

/// One `[[alerting.rules]]` entry, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// This rule's flap window instead of `alerting.flap_window`.
    pub flap_window: Option<Duration>,
    /// What the rule watches, with the keys of that kind.
    pub kind: RuleKind,
}

/// The keys every kind of rule has besides its name, as [`Shared`] holds them.
const SHARED_KEYS: [&str; 3] = ["labels", "annotations", "flap_window"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shared {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, with = "humantime_serde::option")]
    flap_window: Option<Duration>,
}

impl TryFrom<toml::Table> for RuleConfig {
    type Error = KeyError;

    fn try_from(table: toml::Table) -> Result<Self, KeyError> {
        let entry = read_entry::<Shared>(table, &SHARED_KEYS)?;
        Ok(RuleConfig {
            name: entry.name,
            labels: entry.shared.labels,
            annotations: entry.shared.annotations,
            flap_window: entry.shared.flap_window,
            kind: RuleKind::from_keys(&entry.kind, entry.own)?,
        })
    }
}

/// What a rule watches, by its `kind` key.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A metric aggregated over a window, compared with thresholds.
    Threshold(ThresholdRule),
    /// A metric's linear trend reaching a limit within a horizon.
    Prediction(PredictionRule),
    /// No data and no open stream from a host for a timeout.
    HostDown(HostDownRule),
    /// Something that happened: a reboot, a watched process gone, data
    /// dropped by an agent, clock skew.
    Event(EventRule),
    /// The collector itself does not store: its store or its own state
    /// database is read-only (free space under the reserve) or failed.
    NotStoring(NotStoringRule),
}

/// `kind = "threshold"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    pub metric: String,
    /// Label matchers: `name=value`, `name!=value`, `name=~re`, `name!~re`.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Divide by this metric of the same host and labels (the denominator
    /// may have no labels at all, like `host_cpu_count`).
    pub divide_by: Option<String>,
    pub cause: Option<Cause>,
    pub aggregate: Option<crate::window::Aggregate>,
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    pub op: Op,
    pub raise: f64,
    pub clear: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde::option")]
    pub for_: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub keep_firing_for: Option<Duration>,
}

/// `kind = "prediction"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionRule {
    pub metric: String,
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    pub divide_by: Option<String>,
    pub cause: Option<Cause>,
    /// The span of the trend.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The value the trend must not reach.
    pub limit: f64,
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    #[serde(default, with = "humantime_serde::option")]
    pub clear_horizon: Option<Duration>,
    #[serde(default, rename = "for", with = "humantime_serde::option")]
    pub for_: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub keep_firing_for: Option<Duration>,
}

/// `kind = "host_down"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDownRule {
    /// Silence after which a host is down (default: the collector's
    /// `host_down_after`).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Also alert when the agent said goodbye (a planned stop).
    pub page_on_clean_shutdown: Option<bool>,
}

/// `kind = "not_storing"`: no keys of its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotStoringRule {}

/// `kind = "event"`, by its `event` key.
#[derive(Debug, Clone, PartialEq)]
pub enum EventRule {
    /// The host's boot id changed.
    Reboot(ResolvingEvent),
    /// The agent's spool dropped batches (it was full).
    DroppedData(ResolvingEvent),
    /// A watched process (`host_process_running{name=...}`) is not running.
    ProcessDown(ProcessDownRule),
    /// The agent's clock and the collector's disagree.
    ClockSkew(ClockSkewRule),
}

/// `event = "reboot"` or `"dropped_data"`: an event that resolves by itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvingEvent {
    /// How long the alert stays firing.
    #[serde(default, with = "humantime_serde::option")]
    pub resolve_after: Option<Duration>,
}

/// `event = "process_down"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessDownRule {
    /// Default `host_process_running`.
    pub metric: Option<String>,
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    #[serde(default, rename = "for", with = "humantime_serde::option")]
    pub for_: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub keep_firing_for: Option<Duration>,
}

/// `event = "clock_skew"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSkewRule {
    /// Largest tolerated difference.
    #[serde(with = "humantime_serde")]
    pub max_skew: Duration,
    #[serde(default, rename = "for", with = "humantime_serde::option")]
    pub for_: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub keep_firing_for: Option<Duration>,
}

impl RuleKind {
    /// The kind named `kind`, from the keys of that kind.
    fn from_keys(kind: &str, keys: toml::Table) -> Result<RuleKind, KeyError> {
        Ok(match kind {
            "threshold" => RuleKind::Threshold(from_keys(keys)?),
            "prediction" => RuleKind::Prediction(from_keys(keys)?),
            "host_down" => RuleKind::HostDown(from_keys(keys)?),
            "event" => RuleKind::Event(EventRule::from_keys(keys)?),
            "not_storing" => RuleKind::NotStoring(from_keys(keys)?),
            other => {
                return Err(unknown(
                    "kind",
                    other,
                    &[
                        "threshold",
                        "prediction",
                        "host_down",
                        "event",
                        "not_storing",
                    ],
                ));
            }
        })
    }

    /// `for` and `keep_firing_for`, for the kinds that have them.
    pub(crate) fn for_and_keep_firing(&self) -> (Option<Duration>, Option<Duration>) {
        match self {
            RuleKind::Threshold(r) => (r.for_, r.keep_firing_for),
            RuleKind::Prediction(r) => (r.for_, r.keep_firing_for),
            RuleKind::Event(EventRule::ProcessDown(r)) => (r.for_, r.keep_firing_for),
            RuleKind::Event(EventRule::ClockSkew(r)) => (r.for_, r.keep_firing_for),
            RuleKind::HostDown(_)
            | RuleKind::NotStoring(_)
            | RuleKind::Event(EventRule::Reboot(_) | EventRule::DroppedData(_)) => (None, None),
        }
    }
}

impl EventRule {
    fn from_keys(mut keys: toml::Table) -> Result<EventRule, KeyError> {
        let event = take_string(&mut keys, "event")?;
        Ok(match event.as_str() {
            "reboot" => EventRule::Reboot(from_keys(keys)?),
            "dropped_data" => EventRule::DroppedData(from_keys(keys)?),
            "process_down" => EventRule::ProcessDown(from_keys(keys)?),
            "clock_skew" => EventRule::ClockSkew(from_keys(keys)?),
            other => {
                return Err(unknown(
                    "event",
                    other,
                    &["reboot", "process_down", "dropped_data", "clock_skew"],
                ));
            }
        })
    }
}

/// Events an `event` rule can watch, as the evaluator tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Reboot,
    ProcessDown,
    DroppedData,
    ClockSkew,
}

/// What an alert's cause annotation shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Top processes by CPU from the snapshot nearest the trigger.
    Cpu,
    /// Top processes by resident memory.
    Memory,
    /// Mount point and predicted time to full.
    Disk,
    None,
}

/// Comparison of a rule: `>`, `>=`, `<` or `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl TryFrom<String> for Op {
    type Error = KeyError;

    fn try_from(s: String) -> Result<Op, KeyError> {
        Ok(match s.as_str() {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return Err(KeyError::new("op", format!("{s:?} must be >, >=, < or <="))),
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        })
    }
}

/// What a rule watches, on one line (the HTTP API's `query` of a rule):
/// `avg(host_cpu_utilization_ratio{cpu=total}[5m]) > 0.9`.
impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let series = |f: &mut fmt::Formatter<'_>,
                      metric: &str,
                      matchers: &[String],
                      divide_by: &Option<String>| {
            write!(f, "{metric}{{{}}}", matchers.join(","))?;
            match divide_by {
                Some(d) => write!(f, " / {d}"),
                None => Ok(()),
            }
        };
        match self {
            RuleKind::Threshold(t) => {
                if let (Some(aggregate), Some(window)) = (t.aggregate, t.window) {
                    write!(
                        f,
                        "{aggregate} over {} of ",
                        humantime::format_duration(window)
                    )?;
                }
                series(f, &t.metric, &t.matchers, &t.divide_by)?;
                write!(f, " {} {}", t.op, t.raise)
            }
            RuleKind::Prediction(p) => {
                series(f, &p.metric, &p.matchers, &p.divide_by)?;
                write!(
                    f,
                    " reaches {} within {} (trend over {})",
                    p.limit,
                    humantime::format_duration(p.horizon),
                    humantime::format_duration(p.window)
                )
            }
            RuleKind::HostDown(_) => f.write_str("host down"),
            RuleKind::Event(EventRule::Reboot(_)) => f.write_str("event: reboot"),
            RuleKind::Event(EventRule::DroppedData(_)) => f.write_str("event: dropped data"),
            RuleKind::Event(EventRule::ProcessDown(p)) => {
                let metric = p.metric.as_deref().unwrap_or(PROCESS_METRIC);
                write!(
                    f,
                    "event: process down, {metric}{{{}}}",
                    p.matchers.join(",")
                )
            }
            RuleKind::Event(EventRule::ClockSkew(c)) => write!(
                f,
                "event: clock skew over {}",
                humantime::format_duration(c.max_skew)
            ),
            RuleKind::NotStoring(_) => f.write_str("collector not storing"),
        }
    }
}

impl Op {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    pub(crate) fn above(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }

    /// As written in a rule.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultRulesFile {
    #[serde(deserialize_with = "default_rule_entries")]
    rules: Vec<RuleConfig>,
}

fn default_rule_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<RuleConfig>, D::Error> {
    super::entry::entries(d, |index, name| Place::DefaultRule { index, name })
}

/// The default rules as written in `default_rules.toml`.
pub fn default_rules() -> Result<Vec<RuleConfig>, toml::de::Error> {
    toml::from_str::<DefaultRulesFile>(DEFAULT_RULES).map(|f| f.rules)
}
