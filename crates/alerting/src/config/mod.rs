//! The `[alerting]` section of the collector's configuration: settings,
//! rules and hooks as written, and their validation into a [`RuleSet`].
//! Every error names the key (`alerting.rules[2] "disk_full": raise ...`).

use crate::hooks::{Hook, HookTarget};
use crate::machine::Timing;
use crate::matcher::LabelMatcher;
use crate::template::Template;
use crate::window::Aggregate;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rules that ship enabled, in the same format as `[[alerting.rules]]`.
pub const DEFAULT_RULES: &str = include_str!("default_rules.toml");

/// `[alerting]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Whether the default rules (see `default_rules.toml`) are loaded.
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Names of default rules to leave out.
    #[serde(default)]
    pub disabled_rules: Vec<String>,
    /// Base URL of this collector as people reach it, for links in
    /// notifications (`externalURL`, `generatorURL`).
    #[serde(default)]
    pub external_url: String,
    /// An alert whose newest sample is older than this when it fires (a
    /// replayed backlog) is recorded but not paged unless fresh data
    /// confirm it.
    #[serde(default = "default_stale_after", with = "humantime_serde")]
    pub stale_after: Duration,
    /// Default flap window of rules: an alert that fires again this soon
    /// after resolving continues, and its resolution is announced only
    /// once it stayed resolved this long.
    #[serde(default = "default_flap_window", with = "humantime_serde")]
    pub flap_window: Duration,
    /// Transitions kept in the history (oldest dropped first).
    #[serde(default = "default_history_limit")]
    pub history_limit: usize,
    /// Most alerts (pending, firing, recently resolved) held at once.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    /// Rules added to (or, by name, replacing) the default rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where notifications go.
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            default_rules: true,
            disabled_rules: Vec::new(),
            external_url: String::new(),
            stale_after: default_stale_after(),
            flap_window: default_flap_window(),
            history_limit: default_history_limit(),
            max_alerts: default_max_alerts(),
            rules: Vec::new(),
            hooks: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_stale_after() -> Duration {
    Duration::from_secs(300)
}
fn default_flap_window() -> Duration {
    Duration::from_secs(300)
}
fn default_history_limit() -> usize {
    100_000
}
fn default_max_alerts() -> usize {
    100_000
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A metric aggregated over a window, compared with thresholds.
    Threshold,
    /// A metric's linear trend reaching a limit within a horizon.
    Prediction,
    /// No data and no open stream from a host for a timeout.
    HostDown,
    /// Something that happened: a reboot, a watched process gone, data
    /// dropped by an agent, clock skew.
    Event,
    /// The collector itself does not store: its store or its own state
    /// database is read-only (free space under the reserve) or failed.
    NotStoring,
}

/// Events an `event` rule can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The host's boot id changed.
    Reboot,
    /// A watched process (`host_process_running{name=...}`) is not running.
    ProcessDown,
    /// The agent's spool dropped batches (it was full).
    DroppedData,
    /// The agent's clock and the collector's disagree.
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

/// One `[[alerting.rules]]` entry, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub kind: RuleKind,
    pub metric: Option<String>,
    /// Label matchers: `name=value`, `name!=value`, `name=~re`, `name!~re`.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Divide by this metric of the same host and labels (the denominator
    /// may have no labels at all, like `host_cpu_count`).
    pub divide_by: Option<String>,
    pub aggregate: Option<Aggregate>,
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    /// `>`, `>=`, `<` or `<=`.
    pub op: Option<String>,
    pub raise: Option<f64>,
    pub clear: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde::option")]
    pub for_: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub keep_firing_for: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub flap_window: Option<Duration>,
    /// Prediction: the value the trend must not reach.
    pub limit: Option<f64>,
    #[serde(default, with = "humantime_serde::option")]
    pub horizon: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub clear_horizon: Option<Duration>,
    /// Host down: silence after which a host is down (default: the
    /// collector's `host_down_after`).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Host down: also alert when the agent said goodbye (a planned stop).
    pub page_on_clean_shutdown: Option<bool>,
    pub event: Option<EventKind>,
    /// Events: how long a reboot or drop alert stays firing.
    #[serde(default, with = "humantime_serde::option")]
    pub resolve_after: Option<Duration>,
    /// Clock skew: largest tolerated difference.
    #[serde(default, with = "humantime_serde::option")]
    pub max_skew: Option<Duration>,
    pub cause: Option<Cause>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Hook kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// POST of an Alertmanager-compatible (version 4) JSON body.
    Webhook,
    /// Push to an Alertmanager's `/api/v2/alerts`.
    Alertmanager,
    /// A command receiving the JSON body on stdin.
    Exec,
}

/// One `[[alerting.hooks]]` entry, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub name: String,
    pub kind: HookKind,
    /// webhook: the URL; alertmanager: its base URL.
    pub url: Option<String>,
    /// exec: program and arguments.
    pub command: Option<Vec<String>>,
    /// Which alerts this hook gets (all if empty).
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Labels whose values form a group; `["..."]` groups by every label.
    pub group_by: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde::option")]
    pub group_wait: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub group_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub repeat_interval: Option<Duration>,
    pub send_resolved: Option<bool>,
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub min_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub max_backoff: Option<Duration>,
    /// A notification not delivered after this long is given up (and logged).
    #[serde(default, with = "humantime_serde::option")]
    pub retry_for: Option<Duration>,
    /// Most notifications queued for delivery; beyond, the oldest are
    /// dropped (and logged).
    pub max_queued: Option<usize>,
    /// webhook: file holding the HMAC-SHA256 key for the signature header.
    pub hmac_secret_file: Option<PathBuf>,
    /// webhook: name of the signature header.
    pub signature_header: Option<String>,
    /// webhook/alertmanager over https: trust and client certificate.
    pub tls: Option<HookTls>,
}

/// TLS settings of an https hook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookTls {
    /// CA file to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the receiver; needs `key`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Lowest TLS version: "1.3" (default) or "1.2".
    pub min_version: Option<String>,
}

/// Comparison of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return None,
        })
    }

    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    fn above(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }
}

/// Settings every rule and hook shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub external_url: String,
    pub stale_after_ms: i64,
    pub history_limit: usize,
    pub max_alerts: usize,
}

/// A validated rule set with its hooks, ready to run.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub hooks: Vec<Hook>,
    pub settings: Settings,
}

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

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultRulesFile {
    rules: Vec<RuleConfig>,
}

/// The default rules as written in `default_rules.toml`.
pub fn default_rules() -> Result<Vec<RuleConfig>, String> {
    toml::from_str::<DefaultRulesFile>(DEFAULT_RULES)
        .map(|f| f.rules)
        .map_err(|e| format!("default rules: {e}"))
}

impl AlertingConfig {
    /// Relative paths (hook certificates, secrets, commands with a `/`)
    /// taken from `base`, the directory of the configuration file.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for hook in &mut self.hooks {
            if let Some(p) = hook.hmac_secret_file.as_mut() {
                resolve(p);
            }
            if let Some(tls) = hook.tls.as_mut() {
                for p in [&mut tls.ca, &mut tls.cert, &mut tls.key]
                    .into_iter()
                    .flatten()
                {
                    resolve(p);
                }
            }
            if let Some(program) = hook.command.as_mut().and_then(|c| c.first_mut())
                && program.contains('/')
                && Path::new(program.as_str()).is_relative()
            {
                *program = base.join(&*program).display().to_string();
            }
        }
    }

    /// Validates everything and builds the rule set; `host_down_after` is
    /// the default timeout of host-down rules. The error names the key.
    pub fn compile(&self, host_down_after: Duration) -> Result<RuleSet, String> {
        if self.stale_after.is_zero() {
            return Err("alerting.stale_after must be greater than zero".to_owned());
        }
        if self.history_limit == 0 {
            return Err("alerting.history_limit must be greater than zero".to_owned());
        }
        if self.max_alerts == 0 {
            return Err("alerting.max_alerts must be greater than zero".to_owned());
        }
        if !self.external_url.is_empty() {
            reqwest::Url::parse(&self.external_url)
                .map_err(|e| format!("alerting.external_url {:?}: {e}", self.external_url))?;
        }
        let mut written: Vec<(String, &RuleConfig)> = Vec::new();
        let defaults = if self.default_rules {
            default_rules()?
        } else {
            Vec::new()
        };
        let known_defaults: HashSet<&str> = defaults.iter().map(|r| r.name.as_str()).collect();
        for name in &self.disabled_rules {
            if !known_defaults.contains(name.as_str()) {
                return Err(format!(
                    "alerting.disabled_rules: {name:?} is not a default rule (they are: {})",
                    defaults
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let overridden: HashSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        for rule in &defaults {
            if !self.disabled_rules.contains(&rule.name) && !overridden.contains(rule.name.as_str())
            {
                written.push((format!("default rule {:?}", rule.name), rule));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            written.push((format!("alerting.rules[{i}] {:?}", rule.name), rule));
        }
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(written.len());
        for (key, config) in written {
            if !names.insert(config.name.clone()) {
                return Err(format!("{key}: a rule with this name is defined twice"));
            }
            let rule = compile_rule(config, self.flap_window, host_down_after)
                .map_err(|e| format!("{key}: {e}"))?;
            rules.push(rule);
        }
        let mut hook_names = HashSet::new();
        let mut hooks = Vec::with_capacity(self.hooks.len());
        for (i, config) in self.hooks.iter().enumerate() {
            let key = format!("alerting.hooks[{i}] {:?}", config.name);
            if !hook_names.insert(config.name.clone()) {
                return Err(format!("{key}: a hook with this name is defined twice"));
            }
            hooks.push(compile_hook(config).map_err(|e| format!("{key}: {e}"))?);
        }
        Ok(RuleSet {
            rules,
            hooks,
            settings: Settings {
                external_url: self.external_url.trim_end_matches('/').to_owned(),
                stale_after_ms: ms(self.stale_after),
                history_limit: self.history_limit,
                max_alerts: self.max_alerts,
            },
        })
    }
}

/// Refuses keys a kind does not use, so a misplaced key is not silently ignored.
fn refuse_unused(rule: &RuleConfig, allowed: &[&str]) -> Result<(), String> {
    let present = [
        ("metric", rule.metric.is_some()),
        ("match", !rule.matchers.is_empty()),
        ("divide_by", rule.divide_by.is_some()),
        ("aggregate", rule.aggregate.is_some()),
        ("window", rule.window.is_some()),
        ("op", rule.op.is_some()),
        ("raise", rule.raise.is_some()),
        ("clear", rule.clear.is_some()),
        ("for", rule.for_.is_some()),
        ("keep_firing_for", rule.keep_firing_for.is_some()),
        ("limit", rule.limit.is_some()),
        ("horizon", rule.horizon.is_some()),
        ("clear_horizon", rule.clear_horizon.is_some()),
        ("timeout", rule.timeout.is_some()),
        (
            "page_on_clean_shutdown",
            rule.page_on_clean_shutdown.is_some(),
        ),
        ("event", rule.event.is_some()),
        ("resolve_after", rule.resolve_after.is_some()),
        ("max_skew", rule.max_skew.is_some()),
        ("cause", rule.cause.is_some()),
    ];
    for (key, set) in present {
        if set && !allowed.contains(&key) {
            return Err(format!("{key} does not apply to this kind of rule"));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 200
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn compile_rule(
    config: &RuleConfig,
    flap_window: Duration,
    host_down_after: Duration,
) -> Result<Rule, String> {
    if !valid_name(&config.name) {
        return Err(
            "name must match [a-zA-Z_][a-zA-Z0-9_]* (it becomes the alertname label)".to_owned(),
        );
    }
    for name in config.labels.keys() {
        if !valid_name(name) || name == "alertname" {
            return Err(format!("labels: invalid label name {name:?}"));
        }
    }
    let mut annotations = Vec::new();
    for (name, text) in &config.annotations {
        let template = Template::parse(text).map_err(|e| format!("annotations.{name}: {e}"))?;
        annotations.push((name.clone(), template));
    }
    let timing = Timing {
        for_ms: config.for_.map(ms).unwrap_or(0),
        keep_firing_for_ms: config.keep_firing_for.map(ms).unwrap_or(0),
        flap_window_ms: ms(config.flap_window.unwrap_or(flap_window)),
    };
    const SERIES_KEYS: [&str; 11] = [
        "metric",
        "match",
        "divide_by",
        "aggregate",
        "window",
        "op",
        "raise",
        "clear",
        "for",
        "keep_firing_for",
        "cause",
    ];
    let kind = match config.kind {
        RuleKind::Threshold => {
            refuse_unused(config, &SERIES_KEYS)?;
            let op_text = config
                .op
                .as_deref()
                .ok_or("op is required (>, >=, < or <=)")?;
            let op = Op::parse(op_text)
                .ok_or_else(|| format!("op {op_text:?} must be >, >=, < or <="))?;
            let raise = config.raise.ok_or("raise (the threshold) is required")?;
            let clear = config.clear.unwrap_or(raise);
            check_thresholds(op, raise, clear)?;
            let aggregate = config.aggregate.unwrap_or(Aggregate::Last);
            let span_ms = match (aggregate, config.window) {
                (Aggregate::Last, None) => 0,
                (_, Some(w)) if w > MAX_THRESHOLD_WINDOW => {
                    return Err(format!(
                        "window {} is longer than {}: a threshold window keeps every sample in memory; for trends over longer spans use kind = \"prediction\"",
                        humantime::format_duration(w),
                        humantime::format_duration(MAX_THRESHOLD_WINDOW)
                    ));
                }
                (_, Some(w)) if !w.is_zero() => ms(w),
                _ => return Err("window is required (and non-zero) with this aggregate".to_owned()),
            };
            let (source, cause) = metric_source(config)?;
            Kind::Series(SeriesRule {
                source,
                eval: Eval::Window { aggregate, span_ms },
                op,
                raise,
                clear,
                cause,
                trend_ms: (cause == Cause::Disk).then_some(DISK_TREND_MS),
            })
        }
        RuleKind::Prediction => {
            refuse_unused(
                config,
                &[
                    "metric",
                    "match",
                    "divide_by",
                    "window",
                    "limit",
                    "horizon",
                    "clear_horizon",
                    "for",
                    "keep_firing_for",
                    "cause",
                ],
            )?;
            let window = config
                .window
                .filter(|w| !w.is_zero())
                .ok_or("window (the trend's span) is required")?;
            let limit = config
                .limit
                .ok_or("limit (the value the trend must not reach) is required")?;
            if !limit.is_finite() {
                return Err("limit must be a finite number".to_owned());
            }
            let horizon = config
                .horizon
                .filter(|h| !h.is_zero())
                .ok_or("horizon is required")?;
            let clear_horizon = config.clear_horizon.unwrap_or(horizon);
            if clear_horizon < horizon {
                return Err("clear_horizon must not be shorter than horizon".to_owned());
            }
            let (source, cause) = metric_source(config)?;
            Kind::Series(SeriesRule {
                source,
                eval: Eval::Predict {
                    span_ms: ms(window),
                    limit,
                },
                op: Op::Lt,
                raise: horizon.as_secs_f64(),
                clear: clear_horizon.as_secs_f64(),
                cause,
                trend_ms: None,
            })
        }
        RuleKind::HostDown => {
            refuse_unused(config, &["timeout", "page_on_clean_shutdown"])?;
            let timeout = config.timeout.unwrap_or(host_down_after);
            if timeout.is_zero() {
                return Err("timeout must be greater than zero".to_owned());
            }
            Kind::HostDown {
                timeout_ms: ms(timeout),
                page_on_clean_shutdown: config.page_on_clean_shutdown.unwrap_or(false),
            }
        }
        RuleKind::NotStoring => {
            refuse_unused(config, &[])?;
            Kind::NotStoring
        }
        RuleKind::Event => {
            let event = config
                .event
                .ok_or("event is required (reboot, process_down, dropped_data or clock_skew)")?;
            match event {
                EventKind::Reboot | EventKind::DroppedData => {
                    refuse_unused(config, &["event", "resolve_after"])?;
                    let resolve_after = config.resolve_after.unwrap_or(Duration::from_secs(900));
                    if resolve_after.is_zero() {
                        return Err("resolve_after must be greater than zero".to_owned());
                    }
                    Kind::Event {
                        event,
                        resolve_after_ms: ms(resolve_after),
                    }
                }
                EventKind::ProcessDown => {
                    refuse_unused(
                        config,
                        &["event", "metric", "match", "for", "keep_firing_for"],
                    )?;
                    let metric = config
                        .metric
                        .clone()
                        .unwrap_or_else(|| "host_process_running".to_owned());
                    if !valid_name(&metric) {
                        return Err(format!("metric {metric:?} is not a valid metric name"));
                    }
                    Kind::Series(SeriesRule {
                        source: Source::Metric {
                            metric,
                            matchers: parse_matchers(&config.matchers)?,
                            divide_by: None,
                        },
                        eval: Eval::Window {
                            aggregate: Aggregate::Last,
                            span_ms: 0,
                        },
                        op: Op::Lt,
                        raise: 1.0,
                        clear: 1.0,
                        cause: Cause::None,
                        trend_ms: None,
                    })
                }
                EventKind::ClockSkew => {
                    refuse_unused(config, &["event", "max_skew", "for", "keep_firing_for"])?;
                    let max = config
                        .max_skew
                        .filter(|d| !d.is_zero())
                        .ok_or("max_skew is required")?;
                    Kind::Series(SeriesRule {
                        source: Source::ClockSkew,
                        eval: Eval::Window {
                            aggregate: Aggregate::Last,
                            span_ms: 0,
                        },
                        op: Op::Gt,
                        raise: max.as_secs_f64(),
                        clear: max.as_secs_f64(),
                        cause: Cause::None,
                        trend_ms: None,
                    })
                }
            }
        }
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

fn check_thresholds(op: Op, raise: f64, clear: f64) -> Result<(), String> {
    if !raise.is_finite() || !clear.is_finite() {
        return Err("raise and clear must be finite numbers".to_owned());
    }
    // Hysteresis: the alert clears only once back past `clear`, which
    // must therefore lie on the quiet side of `raise`.
    let wrong_side = if op.above() {
        clear > raise
    } else {
        clear < raise
    };
    if wrong_side {
        return Err(format!(
            "clear ({clear}) must be {} raise ({raise}) for op {}",
            if op.above() { "at most" } else { "at least" },
            match op {
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                Op::Le => "<=",
            }
        ));
    }
    Ok(())
}

fn parse_matchers(texts: &[String]) -> Result<Vec<LabelMatcher>, String> {
    texts
        .iter()
        .map(|t| LabelMatcher::parse(t).map_err(|e| format!("match: {e}")))
        .collect()
}

fn metric_source(config: &RuleConfig) -> Result<(Source, Cause), String> {
    let metric = config.metric.clone().ok_or("metric is required")?;
    if !valid_name(&metric) {
        return Err(format!("metric {metric:?} is not a valid metric name"));
    }
    let divide_by = match config.divide_by.as_deref() {
        None => None,
        Some(m) if valid_name(m) => Some(m.to_owned()),
        Some(m) => return Err(format!("divide_by {m:?} must be a metric name")),
    };
    let cause = config
        .cause
        .unwrap_or_else(|| default_cause(&metric, &config.matchers));
    let source = Source::Metric {
        matchers: parse_matchers(&config.matchers)?,
        metric,
        divide_by,
    };
    Ok((source, cause))
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

fn compile_hook(config: &HookConfig) -> Result<Hook, String> {
    if config.name.is_empty() || config.name.len() > 100 || config.name.contains(['\0', '/']) {
        return Err("name must be 1 to 100 characters, without NUL or '/'".to_owned());
    }
    let matchers = parse_matchers(&config.matchers)?;
    let am = config.kind == HookKind::Alertmanager;
    // Alertmanager groups and routes by itself: push every change at once,
    // and re-push firing alerts before its resolve_timeout (5m) expires them.
    let group_by = config.group_by.clone().unwrap_or_else(|| {
        if am {
            Vec::new()
        } else {
            vec!["alertname".to_owned(), "host".to_owned()]
        }
    });
    if group_by.iter().any(|l| l != "..." && !valid_name(l)) {
        return Err(format!(
            "group_by: {group_by:?} must be label names or [\"...\"]"
        ));
    }
    let group_wait = config.group_wait.unwrap_or(if am {
        Duration::ZERO
    } else {
        Duration::from_secs(30)
    });
    let group_interval = config.group_interval.unwrap_or(if am {
        Duration::ZERO
    } else {
        Duration::from_secs(300)
    });
    let repeat_interval = config.repeat_interval.unwrap_or(if am {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(4 * 3600)
    });
    if repeat_interval.is_zero() {
        return Err("repeat_interval must be greater than zero".to_owned());
    }
    let timeout = config.timeout.unwrap_or(Duration::from_secs(10));
    let min_backoff = config.min_backoff.unwrap_or(Duration::from_secs(1));
    let max_backoff = config.max_backoff.unwrap_or(Duration::from_secs(300));
    let retry_for = config.retry_for.unwrap_or(Duration::from_secs(24 * 3600));
    for (key, d) in [
        ("timeout", timeout),
        ("min_backoff", min_backoff),
        ("max_backoff", max_backoff),
        ("retry_for", retry_for),
    ] {
        if d.is_zero() {
            return Err(format!("{key} must be greater than zero"));
        }
    }
    let max_queued = config.max_queued.unwrap_or(10_000);
    if max_queued == 0 {
        return Err("max_queued must be greater than zero".to_owned());
    }
    if max_backoff < min_backoff {
        return Err("max_backoff must not be shorter than min_backoff".to_owned());
    }
    let only = |allowed: &[&str]| -> Result<(), String> {
        let present = [
            ("url", config.url.is_some()),
            ("command", config.command.is_some()),
            ("hmac_secret_file", config.hmac_secret_file.is_some()),
            ("signature_header", config.signature_header.is_some()),
            ("tls", config.tls.is_some()),
        ];
        match present.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            Some((k, _)) => Err(format!("{k} does not apply to {:?} hooks", config.kind)),
            None => Ok(()),
        }
    };
    let target = match config.kind {
        HookKind::Webhook | HookKind::Alertmanager => {
            if am {
                only(&["url", "tls"])?;
            } else {
                only(&["url", "tls", "hmac_secret_file", "signature_header"])?;
            }
            let url = config.url.as_deref().ok_or("url is required")?;
            // The URL is not repeated: its path or query may hold a secret.
            let mut url = reqwest::Url::parse(url).map_err(|e| format!("url: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "url: scheme {:?} must be http or https",
                    url.scheme()
                ));
            }
            if am {
                let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
                url.set_path(&path);
            }
            let client = crate::hooks::http_client(config.tls.as_ref(), timeout)?;
            if am {
                HookTarget::Alertmanager { url, client }
            } else {
                let secret = match &config.hmac_secret_file {
                    Some(path) => {
                        let bytes = std::fs::read(path)
                            .map_err(|e| format!("hmac_secret_file {}: {e}", path.display()))?;
                        let trimmed = bytes.trim_ascii().to_vec();
                        if trimmed.is_empty() {
                            return Err(format!("hmac_secret_file {} is empty", path.display()));
                        }
                        Some(crate::hooks::Secret(trimmed))
                    }
                    None => None,
                };
                let header = config
                    .signature_header
                    .clone()
                    .unwrap_or_else(|| "X-Hostwatch-Signature".to_owned());
                reqwest::header::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    format!("signature_header {header:?} is not a valid header name")
                })?;
                HookTarget::Webhook {
                    url,
                    client,
                    secret,
                    signature_header: header,
                }
            }
        }
        HookKind::Exec => {
            only(&["command"])?;
            let command = config.command.clone().unwrap_or_default();
            let program = command
                .first()
                .ok_or("command is required: [program, args...]")?;
            if program.is_empty() {
                return Err("command: the program name is empty".to_owned());
            }
            // Found now rather than at the first page: a typo is a
            // refused configuration, not a page that never leaves.
            let path = if program.contains('/') {
                PathBuf::from(program)
            } else {
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths)
                    .map(|dir| dir.join(program))
                    .find(|p| p.is_file())
                    .ok_or_else(|| format!("command {program}: not found on PATH"))?
            };
            let meta = std::fs::metadata(&path).map_err(|e| format!("command {program}: {e}"))?;
            if !meta.is_file() {
                return Err(format!("command {program} is not a file"));
            }
            if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 {
                return Err(format!("command {program} is not executable"));
            }
            HookTarget::Exec { command }
        }
    };
    Ok(Hook {
        name: config.name.clone(),
        target,
        matchers,
        group_by,
        group_wait_ms: ms(group_wait),
        group_interval_ms: ms(group_interval),
        repeat_interval_ms: ms(repeat_interval),
        send_resolved: config.send_resolved.unwrap_or(true),
        timeout,
        min_backoff,
        max_backoff,
        retry_for_ms: ms(retry_for),
        max_queued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> Result<RuleSet, String> {
        #[derive(Deserialize)]
        struct File {
            alerting: AlertingConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        file.alerting.compile(Duration::from_secs(30))
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
            "clock_skew",
            "collector_not_storing",
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
    fn user_rules_replace_defaults_by_name_and_defaults_can_be_disabled() {
        let set = compile_text(
            r#"
[alerting]
disabled_rules = ["swapping"]
[[alerting.rules]]
name = "cpu_saturated"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
op = ">"
raise = 0.5
"#,
        )
        .unwrap();
        assert!(!set.rules.iter().any(|r| r.name == "swapping"));
        let cpu: Vec<&Rule> = set
            .rules
            .iter()
            .filter(|r| r.name == "cpu_saturated")
            .collect();
        assert_eq!(cpu.len(), 1);
        let Kind::Series(s) = &cpu[0].kind else {
            panic!()
        };
        assert_eq!((s.raise, s.clear), (0.5, 0.5));
        let set = compile_text("[alerting]\ndefault_rules = false\n").unwrap();
        assert!(set.rules.is_empty());
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_key() {
        let rule = |body: &str| {
            format!("[alerting]\ndefault_rules = false\n[[alerting.rules]]\nname = \"r\"\n{body}\n")
        };
        let threshold = "kind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = 1.0\n";
        let cases = [
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nraise = 1.0"),
                "op is required",
            ),
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nop = \"=\"\nraise = 1.0"),
                "op \"=\"",
            ),
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nop = \">\""),
                "raise",
            ),
            (rule(&format!("{threshold}clear = 2.0")), "clear (2)"),
            (
                rule(&format!("{threshold}aggregate = \"avg\"")),
                "window is required",
            ),
            (
                rule(&format!("{threshold}aggregate = \"median\"")),
                "median",
            ),
            (
                rule(&format!("{threshold}aggregate = \"avg\"\nwindow = \"7d\"")),
                "window 7days is longer than 1h",
            ),
            (rule(&format!("{threshold}match = [\"cpu=~(\"]")), "match"),
            (
                rule(&format!("{threshold}horizon = \"1h\"")),
                "horizon does not apply",
            ),
            (rule(&format!("{threshold}for = \"soon\"")), "soon"),
            (
                rule(&format!(
                    "{threshold}annotations = {{ summary = \"{{{{ nope }}}}\" }}"
                )),
                "annotations.summary",
            ),
            (
                rule(&format!("{threshold}labels = {{ alertname = \"x\" }}")),
                "labels",
            ),
            (
                rule(&format!("{threshold}divide_by = \"not a metric\"")),
                "divide_by",
            ),
            (rule(&format!("{threshold}colour = \"red\"")), "colour"),
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
            (rule("kind = \"event\""), "event is required"),
            (
                rule("kind = \"not_storing\"\nfor = \"1m\""),
                "for does not apply",
            ),
            (rule("kind = \"event\"\nevent = \"eclipse\""), "eclipse"),
            (rule("kind = \"event\"\nevent = \"clock_skew\""), "max_skew"),
            (rule("kind = \"host_down\"\ntimeout = \"0s\""), "timeout"),
            (
                rule("kind = \"host_down\"\npage_on_clean_shutdown = \"yes\""),
                "page_on_clean_shutdown",
            ),
            (
                rule("kind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = nan"),
                "raise and clear must be finite",
            ),
            (
                rule(&format!("{threshold}keep_firing_for = \"a while\"")),
                "keep_firing_for",
            ),
            (
                rule(&format!("{threshold}flap_window = \"often\"")),
                "flap_window",
            ),
            (rule(&format!("{threshold}cause = \"gpu\"")), "gpu"),
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
            (rule("kind = \"volcano\""), "volcano"),
            (
                format!(
                    "{}{}",
                    rule(threshold),
                    "[[alerting.rules]]\nname = \"r\"\nkind = \"host_down\"\n"
                ),
                "defined twice",
            ),
            (rule("name = \"x\""), "name"),
            (
                "[alerting]\ndisabled_rules = [\"nope\"]\n".to_owned(),
                "disabled_rules",
            ),
            (
                "[alerting]\nstale_after = \"0s\"\n".to_owned(),
                "alerting.stale_after",
            ),
            (
                "[alerting]\nexternal_url = \"not a url\"\n".to_owned(),
                "external_url",
            ),
            (
                "[alerting]\nhistory_limit = 0\n".to_owned(),
                "alerting.history_limit",
            ),
            (
                "[alerting]\nmax_alerts = 0\n".to_owned(),
                "alerting.max_alerts",
            ),
            (
                "[alerting]\nflap_window = \"often\"\n".to_owned(),
                "flap_window",
            ),
            (
                "[alerting]\ndefault_rules = \"yes\"\n".to_owned(),
                "default_rules",
            ),
            ("[alerting]\nmax_alerts = -1\n".to_owned(), "max_alerts"),
        ];
        for (text, needle) in cases {
            let err = compile_text(&text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            if text.contains("[[alerting.rules]]")
                && !needle.contains("median")
                && !needle.contains("soon")
                && !needle.contains("colour")
                && !needle.contains("eclipse")
                && !needle.contains("volcano")
                && !needle.contains("gpu")
                && !["page_on_clean_shutdown", "keep_firing_for", "flap_window"].contains(&needle)
                && needle != "name"
            {
                assert!(err.contains("alerting.rules["), "rule not named in {err:?}");
            }
        }
    }

    #[test]
    fn bad_hooks_name_the_hook_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("pager.txt");
        std::fs::write(&plain, "not a program").unwrap();
        let plain = plain.display().to_string();
        let hook = |body: &str| format!("[alerting]\n[[alerting.hooks]]\nname = \"h\"\n{body}\n");
        let cases = [
            (hook("kind = \"webhook\""), "url is required"),
            (hook("kind = \"webhook\"\nurl = \"ftp://x\""), "scheme"),
            (hook("kind = \"webhook\"\nurl = \"::\""), "url"),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\ncommand = [\"a\"]"),
                "command does not apply",
            ),
            (
                hook(
                    "kind = \"webhook\"\nurl = \"http://x\"\nhmac_secret_file = \"/nonexistent/secret\"",
                ),
                "hmac_secret_file",
            ),
            (
                hook(
                    "kind = \"webhook\"\nurl = \"https://x\"\n[alerting.hooks.tls]\nca = \"/nonexistent/ca.pem\"",
                ),
                "tls.ca",
            ),
            (
                hook(
                    "kind = \"webhook\"\nurl = \"https://x\"\n[alerting.hooks.tls]\ncert = \"/etc/hostname\"",
                ),
                "tls.key",
            ),
            (
                hook(
                    "kind = \"webhook\"\nurl = \"https://x\"\n[alerting.hooks.tls]\nmin_version = \"1.1\"",
                ),
                "min_version",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nrepeat_interval = \"0s\""),
                "repeat_interval",
            ),
            (
                hook(
                    "kind = \"webhook\"\nurl = \"http://x\"\nmin_backoff = \"10s\"\nmax_backoff = \"1s\"",
                ),
                "max_backoff",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nsignature_header = \"bad header\""),
                "signature_header",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\ngroup_by = [\"a-b\"]"),
                "group_by",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nmatch = [\"x\"]"),
                "match",
            ),
            (hook("kind = \"exec\""), "command is required"),
            (hook("kind = \"exec\"\ncommand = []"), "command is required"),
            (
                hook("kind = \"exec\"\ncommand = [\"\"]"),
                "program name is empty",
            ),
            (
                hook("kind = \"exec\"\ncommand = [\"no-such-pager-anywhere\"]"),
                "no-such-pager-anywhere: not found on PATH",
            ),
            (
                hook(&format!("kind = \"exec\"\ncommand = [{plain:?}]")),
                "is not executable",
            ),
            (
                hook("kind = \"exec\"\ncommand = [\"/\"]"),
                "/ is not a file",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nhmac_secret_file = \"/dev/null\""),
                "/dev/null is empty",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\ntimeout = \"0s\""),
                "timeout must be greater than zero",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nretry_for = \"0s\""),
                "retry_for must be greater than zero",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nmin_backoff = \"0s\""),
                "min_backoff must be greater than zero",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nmax_queued = 0"),
                "max_queued",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nsend_resolved = \"yes\""),
                "send_resolved",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\ngroup_wait = \"soon\""),
                "group_wait",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\ngroup_interval = \"-1s\""),
                "group_interval",
            ),
            (
                hook(
                    "kind = \"alertmanager\"\nurl = \"http://x\"\nhmac_secret_file = \"/dev/null\"",
                ),
                "hmac_secret_file does not apply",
            ),
            (
                hook(
                    "kind = \"webhook\"\nurl = \"https://x\"\n[alerting.hooks.tls]\nkey = \"/etc/hostname\"",
                ),
                "tls",
            ),
            (
                hook("kind = \"exec\"\ncommand = [\"/nonexistent/page\"]"),
                "/nonexistent/page",
            ),
            (hook("kind = \"pager\""), "pager"),
            (
                format!(
                    "{}[[alerting.hooks]]\nname = \"h\"\nkind = \"exec\"\ncommand = [\"true\"]\n",
                    hook("kind = \"exec\"\ncommand = [\"true\"]")
                ),
                "defined twice",
            ),
        ];
        for (text, needle) in cases {
            let err = compile_text(&text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn hook_defaults_depend_on_the_kind() {
        let set = compile_text(
            "[alerting]\n[[alerting.hooks]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093/\"\n[[alerting.hooks]]\nname = \"wh\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/x\"\n",
        )
        .unwrap();
        let am = &set.hooks[0];
        assert!(
            matches!(&am.target, HookTarget::Alertmanager { url, .. } if url.as_str() == "http://127.0.0.1:9093/api/v2/alerts")
        );
        assert_eq!((am.group_wait_ms, am.repeat_interval_ms), (0, 60_000));
        assert!(am.group_by.is_empty());
        let wh = &set.hooks[1];
        assert_eq!(wh.group_by, ["alertname", "host"]);
        assert_eq!(wh.group_wait_ms, 30_000);
    }
}
