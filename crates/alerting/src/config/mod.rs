//! The `[alerting]` section of the collector's configuration: settings,
//! rules and hooks as written, and their validation into a [`RuleSet`].
//! Every error names where and the key (`alerting.rules[2] "disk_full":
//! raise ...`).
//!
//! Layout: this file holds the section's settings and its errors; `entry`
//! the steps every rule and hook entry shares (its name, its kind, naming
//! it and the key in errors); `rules` a rule as written, a type per kind;
//! `compile` a rule validated for the evaluator. Hooks keep their configuration beside them, in
//! `crate::hooks`.

mod compile;
pub(crate) mod entry;
mod rules;

pub use compile::{Eval, Kind, Rule, SeriesRule, Source};
pub use rules::{
    Cause, ClockSkewRule, DEFAULT_RULES, EventKind, EventRule, HostDownRule, NotStoringRule, Op,
    PredictionRule, ProcessDownRule, ResolvingEvent, RuleConfig, RuleKind, ThresholdRule,
    default_rules,
};

use crate::hooks::{Hook, HookConfig};
use crate::matcher::LabelMatcher;
use crate::quiet::{TimeInterval, TimeIntervalConfig};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    #[serde(default, deserialize_with = "rule_entries")]
    pub rules: Vec<RuleConfig>,
    /// Where notifications go.
    #[serde(default, deserialize_with = "hook_entries")]
    pub hooks: Vec<HookConfig>,
    /// Named quiet windows, for hooks' `active_time_intervals` and
    /// `mute_time_intervals`.
    #[serde(default, deserialize_with = "time_interval_entries")]
    pub time_intervals: Vec<TimeIntervalConfig>,
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
            time_intervals: Vec::new(),
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

fn rule_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RuleConfig>, D::Error> {
    entry::entries(d, |index, name| Place::Rule { index, name })
}

fn time_interval_entries<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<TimeIntervalConfig>, D::Error> {
    entry::entries(d, |index, name| Place::TimeInterval { index, name })
}

fn hook_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HookConfig>, D::Error> {
    entry::entries(d, |index, name| Place::Hook { index, name })
}

/// Where in `[alerting]` a refused value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A setting of the section itself.
    Section,
    /// A rule of `default_rules.toml`, by its index there.
    DefaultRule { index: usize, name: String },
    /// `[[alerting.rules]]`, by index.
    Rule { index: usize, name: String },
    /// `[[alerting.hooks]]`, by index.
    Hook { index: usize, name: String },
    /// `[[alerting.time_intervals]]`, by index.
    TimeInterval { index: usize, name: String },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Section => f.write_str("alerting"),
            Place::DefaultRule { name, .. } => write!(f, "default rule {name:?}"),
            Place::Rule { index, name } => write!(f, "alerting.rules[{index}] {name:?}"),
            Place::Hook { index, name } => write!(f, "alerting.hooks[{index}] {name:?}"),
            Place::TimeInterval { index, name } => {
                write!(f, "alerting.time_intervals[{index}] {name:?}")
            }
        }
    }
}

/// One key's value refused: the key, and a sentence naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KeyError {
    /// As written in the configuration (`op`, `tls.ca`, `annotations.summary`);
    /// empty only for an error serde cannot tie to one key.
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn at(self, place: Place) -> ConfigError {
        ConfigError { place, error: self }
    }
}

/// An `[alerting]` section refused: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub place: Place,
    pub error: KeyError,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            // The message starts with the key: `alerting.max_alerts must ...`.
            Place::Section => write!(f, "alerting.{}", self.error),
            place => write!(f, "{place}: {}", self.error),
        }
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

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `name` can be a metric or label name.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 200
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `match` key of a rule or hook.
pub(crate) fn parse_matchers(texts: &[String]) -> Result<Vec<LabelMatcher>, KeyError> {
    texts
        .iter()
        .map(|t| LabelMatcher::parse(t).map_err(|e| KeyError::new("match", format!("match: {e}"))))
        .collect()
}

/// Refuses a zero duration for `key`.
pub(crate) fn positive(key: &str, d: Duration) -> Result<(), KeyError> {
    if d.is_zero() {
        return Err(KeyError::new(
            key,
            format!("{key} must be greater than zero"),
        ));
    }
    Ok(())
}

impl AlertingConfig {
    /// Relative paths (hook certificates, secrets, commands with a `/`)
    /// taken from `base`, the directory of the configuration file.
    pub fn resolve_paths(&mut self, base: &Path) {
        for hook in &mut self.hooks {
            hook.resolve_paths(base);
        }
    }

    /// Validates everything and builds the rule set; `host_down_after` is
    /// the default timeout of host-down rules. The error names the key.
    pub fn compile(&self, host_down_after: Duration) -> Result<RuleSet, ConfigError> {
        let section = |key: &str, message: String| KeyError::new(key, message).at(Place::Section);
        if self.stale_after.is_zero() {
            return Err(section(
                "stale_after",
                "stale_after must be greater than zero".to_owned(),
            ));
        }
        if self.history_limit == 0 {
            return Err(section(
                "history_limit",
                "history_limit must be greater than zero".to_owned(),
            ));
        }
        if self.max_alerts == 0 {
            return Err(section(
                "max_alerts",
                "max_alerts must be greater than zero".to_owned(),
            ));
        }
        if !self.external_url.is_empty() {
            reqwest::Url::parse(&self.external_url).map_err(|e| {
                section(
                    "external_url",
                    format!("external_url {:?}: {e}", self.external_url),
                )
            })?;
        }
        Ok(RuleSet {
            rules: self.compile_rules(host_down_after)?,
            hooks: self.compile_hooks()?,
            settings: Settings {
                external_url: self.external_url.trim_end_matches('/').to_owned(),
                stale_after_ms: ms(self.stale_after),
                history_limit: self.history_limit,
                max_alerts: self.max_alerts,
            },
        })
    }

    /// The default rules left in force, then the section's own.
    fn compile_rules(&self, host_down_after: Duration) -> Result<Vec<Rule>, ConfigError> {
        let defaults = if self.default_rules {
            default_rules().map_err(|e| {
                KeyError::new("default_rules", format!("default_rules: {e}")).at(Place::Section)
            })?
        } else {
            Vec::new()
        };
        for name in &self.disabled_rules {
            if !defaults.iter().any(|r| r.name == *name) {
                return Err(KeyError::new(
                    "disabled_rules",
                    format!(
                        "disabled_rules: {name:?} is not a default rule (they are: {})",
                        defaults
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .at(Place::Section));
            }
        }
        let overridden: HashSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let written = defaults
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !self.disabled_rules.contains(&r.name) && !overridden.contains(r.name.as_str())
            })
            .map(|(index, r)| {
                (
                    Place::DefaultRule {
                        index,
                        name: r.name.clone(),
                    },
                    r,
                )
            })
            .chain(self.rules.iter().enumerate().map(|(index, r)| {
                (
                    Place::Rule {
                        index,
                        name: r.name.clone(),
                    },
                    r,
                )
            }));
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(defaults.len() + self.rules.len());
        for (place, config) in written {
            if !names.insert(config.name.as_str()) {
                return Err(
                    KeyError::new("name", "a rule with this name is defined twice").at(place),
                );
            }
            rules.push(
                compile::compile_rule(config, self.flap_window, host_down_after)
                    .map_err(|e| e.at(place))?,
            );
        }
        Ok(rules)
    }

    /// The named time intervals, by name.
    fn compile_time_intervals(&self) -> Result<BTreeMap<String, Arc<TimeInterval>>, ConfigError> {
        let mut intervals = BTreeMap::new();
        for (index, config) in self.time_intervals.iter().enumerate() {
            let place = Place::TimeInterval {
                index,
                name: config.name.clone(),
            };
            let interval = config.compile().map_err(|e| e.at(place.clone()))?;
            if intervals
                .insert(config.name.clone(), Arc::new(interval))
                .is_some()
            {
                return Err(KeyError::new(
                    "name",
                    "a time interval with this name is defined twice",
                )
                .at(place));
            }
        }
        Ok(intervals)
    }

    fn compile_hooks(&self) -> Result<Vec<Hook>, ConfigError> {
        let intervals = self.compile_time_intervals()?;
        let mut names = HashSet::new();
        let mut hooks = Vec::with_capacity(self.hooks.len());
        for (index, config) in self.hooks.iter().enumerate() {
            let place = Place::Hook {
                index,
                name: config.name.clone(),
            };
            if !names.insert(config.name.as_str()) {
                return Err(
                    KeyError::new("name", "a hook with this name is defined twice").at(place),
                );
            }
            hooks.push(config.compile(&intervals).map_err(|e| e.at(place))?);
        }
        Ok(hooks)
    }
}

/// Helpers for the tests of `[alerting]` here and in `crate::hooks`.
#[cfg(test)]
pub(crate) mod testing {
    use super::{AlertingConfig, RuleSet};
    use serde::Deserialize;
    use std::time::Duration;

    /// `text`, a configuration file with an `[alerting]` section, compiled;
    /// the error as the collector shows it.
    pub(crate) fn compile_text(text: &str) -> Result<RuleSet, String> {
        #[derive(Deserialize)]
        struct File {
            alerting: AlertingConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        file.alerting
            .compile(Duration::from_secs(30))
            .map_err(|e| e.to_string())
    }

    /// Every text is refused with its needle in the error, which also
    /// names `place` (`alerting.rules[`), where given.
    pub(crate) fn assert_refused(cases: &[(String, &str)], place: Option<&str>) {
        for (text, needle) in cases {
            let err = compile_text(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            if let Some(place) = place {
                assert!(err.contains(place), "{place:?} not named in {err:?}");
            }
        }
    }

    /// A section without default rules holding one rule named "r".
    pub(crate) fn rule(body: &str) -> String {
        format!("[alerting]\ndefault_rules = false\n[[alerting.rules]]\nname = \"r\"\n{body}\n")
    }

    /// A section holding one hook named "h".
    pub(crate) fn hook(body: &str) -> String {
        format!("[alerting]\n[[alerting.hooks]]\nname = \"h\"\n{body}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_refused, compile_text, hook, rule};
    use super::*;

    #[test]
    fn each_default_rule_reads_as_one_line() {
        let set = compile_text("[alerting]\n").unwrap();
        let line = |name: &str| {
            let rule = set.rules.iter().find(|r| r.name == name).unwrap();
            rule.source.kind.to_string()
        };
        assert_eq!(
            line("cpu_saturated"),
            "avg over 1m of host_cpu_utilization_ratio{cpu=total} > 0.9"
        );
        assert_eq!(line("host_down"), "host down");
        for rule in &set.rules {
            let text = rule.source.kind.to_string();
            assert!(
                !text.is_empty() && !text.contains('\n'),
                "{}: {text:?}",
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
    fn bad_settings_name_the_key() {
        let cases = [
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
            // A key written twice is refused by the TOML parser itself.
            (rule("name = \"x\""), "name"),
        ];
        assert_refused(&cases, None);
    }

    #[test]
    fn names_defined_twice_are_refused() {
        let threshold = "kind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = 1.0\n";
        assert_refused(
            &[(
                format!(
                    "{}{}",
                    rule(threshold),
                    "[[alerting.rules]]\nname = \"r\"\nkind = \"host_down\"\n"
                ),
                "defined twice",
            )],
            Some("alerting.rules[1] \"r\""),
        );
        assert_refused(
            &[(
                format!(
                    "{}[[alerting.hooks]]\nname = \"h\"\nkind = \"exec\"\ncommand = [\"true\"]\n",
                    hook("kind = \"exec\"\ncommand = [\"true\"]")
                ),
                "defined twice",
            )],
            Some("alerting.hooks[1] \"h\""),
        );
    }

    #[test]
    fn errors_carry_where_and_which_key() {
        let config: AlertingConfig = toml::from_str(
            "default_rules = false\n[[rules]]\nname = \"r\"\nkind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = 1.0\nclear = 2.0\n",
        )
        .unwrap();
        let err = config.compile(Duration::from_secs(30)).unwrap_err();
        assert_eq!(
            err.place,
            Place::Rule {
                index: 0,
                name: "r".to_owned()
            }
        );
        assert_eq!(err.error.key, "clear");
        let config = AlertingConfig {
            max_alerts: 0,
            ..AlertingConfig::default()
        };
        let err = config.compile(Duration::from_secs(30)).unwrap_err();
        assert_eq!(
            (err.place, err.error.key.as_str()),
            (Place::Section, "max_alerts")
        );
    }

    #[test]
    fn entries_without_a_name_or_kind_are_refused_naming_the_key() {
        assert_refused(
            &[
                (
                    "[alerting]\n[[alerting.rules]]\nkind = \"not_storing\"\n".to_owned(),
                    "name is required",
                ),
                (rule(""), "kind is required"),
                (rule("kind = 1"), "kind must be a string"),
                (hook(""), "kind is required"),
            ],
            Some("alerting."),
        );
    }
}
