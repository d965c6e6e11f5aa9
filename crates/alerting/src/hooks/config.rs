//! `[[alerting.hooks]]` as written: the delivery keys every hook has, then
//! the keys of its `kind`, held by that kind's own type beside it
//! ([`WebhookConfig`] and [`AlertmanagerConfig`] in `http`, [`ExecConfig`]
//! in `exec`, [`PagerDutyConfig`], [`OpsgenieConfig`] and [`SlackConfig`]
//! in their own files, [`EmailConfig`] in `email`), so a key that does not
//! belong to a kind is refused by deserialization.

use super::email::EmailConfig;
use super::exec::ExecConfig;
use super::http::{AlertmanagerConfig, WebhookConfig};
use super::{Hook, HookTarget};
use super::{OpsgenieConfig, PagerDutyConfig, SlackConfig};
use crate::config::entry::{from_keys, read_entry, unknown};
use crate::config::{KeyError, ms, parse_matchers, positive, valid_name};
use crate::quiet::{Schedule, TimeInterval};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One `[[alerting.hooks]]` entry, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    pub name: String,
    /// When and how often notifications go, and which.
    pub delivery: DeliveryConfig,
    /// Where they go, with the keys of that kind.
    pub kind: HookKind,
}

/// The keys every kind of hook has, as [`DeliveryConfig`] holds them.
const SHARED_KEYS: [&str; 13] = [
    "match",
    "active_time_intervals",
    "mute_time_intervals",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "send_resolved",
    "timeout",
    "min_backoff",
    "max_backoff",
    "retry_for",
    "max_queued",
];

/// The keys of a hook that do not depend on its kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Which alerts this hook gets (all if empty).
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Names of `[[alerting.time_intervals]]` outside all of which the
    /// hook's notifications are held (none: always active).
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    /// Names of `[[alerting.time_intervals]]` during which they are held.
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
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
}

/// Where a hook delivers, by its `kind` key.
#[derive(Debug, Clone, PartialEq)]
pub enum HookKind {
    /// POST of an Alertmanager-compatible (version 4) JSON body.
    Webhook(WebhookConfig),
    /// Push to an Alertmanager's `/api/v2/alerts`.
    Alertmanager(AlertmanagerConfig),
    /// A command receiving the JSON body on stdin.
    Exec(ExecConfig),
    /// PagerDuty's Events API v2.
    PagerDuty(PagerDutyConfig),
    /// Opsgenie's Alert API.
    Opsgenie(OpsgenieConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// A message per group over SMTP.
    Email(EmailConfig),
}

/// The values `kind` takes.
const KINDS: &[&str] = &[
    "webhook",
    "alertmanager",
    "exec",
    "pagerduty",
    "opsgenie",
    "slack",
    "email",
];

impl TryFrom<toml::Table> for HookConfig {
    type Error = KeyError;

    fn try_from(table: toml::Table) -> Result<Self, KeyError> {
        let entry = read_entry(table, &SHARED_KEYS)?;
        let own = entry.own;
        let kind = match entry.kind.as_str() {
            "webhook" => HookKind::Webhook(from_keys(own)?),
            "alertmanager" => HookKind::Alertmanager(from_keys(own)?),
            "exec" => HookKind::Exec(from_keys(own)?),
            "pagerduty" => HookKind::PagerDuty(from_keys(own)?),
            "opsgenie" => HookKind::Opsgenie(from_keys(own)?),
            "slack" => HookKind::Slack(from_keys(own)?),
            "email" => HookKind::Email(from_keys(own)?),
            other => return Err(unknown("kind", other, KINDS)),
        };
        Ok(HookConfig {
            name: entry.name,
            delivery: entry.shared,
            kind,
        })
    }
}

/// Grouping and repeats of a hook whose configuration does not say.
struct Defaults {
    group_by: &'static [&'static str],
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
}

const DEFAULTS: Defaults = Defaults {
    group_by: &["alertname", "host"],
    group_wait: Duration::from_secs(30),
    group_interval: Duration::from_secs(300),
    repeat_interval: Duration::from_secs(4 * 3600),
};

/// Alertmanager groups and routes by itself: push every change at once,
/// and re-push firing alerts before its resolve_timeout (5m) expires them.
const ALERTMANAGER_DEFAULTS: Defaults = Defaults {
    group_by: &[],
    group_wait: Duration::ZERO,
    group_interval: Duration::ZERO,
    repeat_interval: Duration::from_secs(60),
};

impl HookConfig {
    /// Relative paths (certificates, secrets, commands with a `/`) taken
    /// from `base`, the directory of the configuration file.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match &mut self.kind {
            HookKind::Webhook(w) => w.resolve_paths(base),
            HookKind::Alertmanager(a) => a.resolve_paths(base),
            HookKind::Exec(e) => e.resolve_paths(base),
            HookKind::PagerDuty(p) => p.resolve_paths(base),
            HookKind::Opsgenie(o) => o.resolve_paths(base),
            HookKind::Slack(s) => s.resolve_paths(base),
            HookKind::Email(e) => e.resolve_paths(base),
        }
    }

    /// Validates the hook, given the named time intervals; the error
    /// names the key.
    pub(crate) fn compile(
        &self,
        intervals: &BTreeMap<String, Arc<TimeInterval>>,
    ) -> Result<Hook, KeyError> {
        if self.name.is_empty() || self.name.len() > 100 || self.name.contains(['\0', '/']) {
            return Err(KeyError::new(
                "name",
                "name must be 1 to 100 characters, without NUL or '/'",
            ));
        }
        let config = &self.delivery;
        let matchers = parse_matchers(&config.matchers)?;
        let named = |key: &str, names: &[String]| {
            names
                .iter()
                .map(|name| {
                    intervals.get(name).cloned().ok_or_else(|| {
                        let defined: Vec<&str> = intervals.keys().map(String::as_str).collect();
                        KeyError::new(
                            key,
                            format!(
                                "{key}: no time interval named {name:?} (defined: {})",
                                defined.join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let schedule = Schedule {
            active: named("active_time_intervals", &config.active_time_intervals)?,
            mute: named("mute_time_intervals", &config.mute_time_intervals)?,
        };
        let defaults = match self.kind {
            HookKind::Alertmanager(_) => &ALERTMANAGER_DEFAULTS,
            _ => &DEFAULTS,
        };
        let group_by = config
            .group_by
            .clone()
            .unwrap_or_else(|| defaults.group_by.iter().map(|&l| l.to_owned()).collect());
        if group_by.iter().any(|l| l != "..." && !valid_name(l)) {
            return Err(KeyError::new(
                "group_by",
                format!("group_by: {group_by:?} must be label names or [\"...\"]"),
            ));
        }
        let group_wait = config.group_wait.unwrap_or(defaults.group_wait);
        let group_interval = config.group_interval.unwrap_or(defaults.group_interval);
        let repeat_interval = config.repeat_interval.unwrap_or(defaults.repeat_interval);
        positive("repeat_interval", repeat_interval)?;
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
            positive(key, d)?;
        }
        let max_queued = config.max_queued.unwrap_or(10_000);
        if max_queued == 0 {
            return Err(KeyError::new(
                "max_queued",
                "max_queued must be greater than zero",
            ));
        }
        if max_backoff < min_backoff {
            return Err(KeyError::new(
                "max_backoff",
                "max_backoff must not be shorter than min_backoff",
            ));
        }
        let target = match &self.kind {
            HookKind::Webhook(w) => w.compile(timeout)?,
            HookKind::Alertmanager(a) => a.compile(timeout)?,
            HookKind::Exec(e) => HookTarget::Exec {
                command: e.compile()?,
            },
            HookKind::PagerDuty(p) => p.compile(timeout)?,
            HookKind::Opsgenie(o) => o.compile(timeout)?,
            HookKind::Slack(s) => s.compile(timeout)?,
            HookKind::Email(e) => e.compile(timeout)?,
        };
        Ok(Hook {
            name: self.name.clone(),
            target,
            matchers,
            schedule,
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
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_refused, compile_text, hook};
    use crate::hooks::HookTarget;

    /// A webhook with `extra` keys.
    fn webhook_with(extra: &str) -> String {
        hook(&format!("kind = \"webhook\"\nurl = \"http://x\"\n{extra}"))
    }

    #[test]
    fn bad_delivery_keys_name_the_hook_and_the_key() {
        let cases = [
            (webhook_with("repeat_interval = \"0s\""), "repeat_interval"),
            (
                webhook_with("min_backoff = \"10s\"\nmax_backoff = \"1s\""),
                "max_backoff",
            ),
            (webhook_with("group_by = [\"a-b\"]"), "group_by"),
            (webhook_with("match = [\"x\"]"), "match"),
            (
                webhook_with("timeout = \"0s\""),
                "timeout must be greater than zero",
            ),
            (
                webhook_with("retry_for = \"0s\""),
                "retry_for must be greater than zero",
            ),
            (
                webhook_with("min_backoff = \"0s\""),
                "min_backoff must be greater than zero",
            ),
            (webhook_with("max_queued = 0"), "max_queued"),
            (webhook_with("send_resolved = \"yes\""), "send_resolved"),
            (webhook_with("group_wait = \"soon\""), "group_wait"),
            (webhook_with("group_interval = \"-1s\""), "group_interval"),
            (hook("kind = \"pager\""), "pager"),
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
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
