//! What the hooks that write for people (PagerDuty, Opsgenie, Slack) take
//! from a notification: its title and body from the hook's templates, its
//! lead alert (the first firing one, else the first), host, cause, top
//! processes, severity, a link to the console, and the group's stable key.

use super::{Notification, NotifiedAlert};
use crate::config::KeyError;
use crate::template::{Context, Template, Vocabulary};
use std::collections::BTreeMap;

/// The title of a notification unless the hook's `title` says otherwise.
pub const DEFAULT_TITLE: &str = "{{ summary }}";
/// Its body unless the hook's `body` says otherwise.
pub const DEFAULT_BODY: &str = "{{ rule }} on {{ host }}: {{ count }} alert(s) {{ status }}";

/// A hook's title and body templates.
#[derive(Debug, Clone)]
pub struct Texts {
    title: Template,
    body: Template,
}

impl Texts {
    /// The templates as written (`None`: the defaults); the error names
    /// `title` or `body`.
    pub(super) fn compile(title: Option<&str>, body: Option<&str>) -> Result<Self, KeyError> {
        let parse = |key: &str, text: &str| {
            Template::parse_for(text, Vocabulary::Notification)
                .map_err(|e| KeyError::new(key, format!("{key}: {e}")))
        };
        Ok(Texts {
            title: parse("title", title.unwrap_or(DEFAULT_TITLE))?,
            body: parse("body", body.unwrap_or(DEFAULT_BODY))?,
        })
    }
}

/// A notification as people read it.
pub(super) struct Message<'a> {
    pub(super) notification: &'a Notification,
    /// The first firing alert, else the first (a notification has one or more).
    pub(super) lead: Option<&'a NotifiedAlert>,
    pub(super) title: String,
    pub(super) body: String,
    pub(super) firing: usize,
    pub(super) resolved: usize,
}

impl<'a> Message<'a> {
    pub(super) fn new(notification: &'a Notification, texts: &Texts) -> Self {
        let lead = notification
            .alerts
            .iter()
            .find(|a| a.status == "firing")
            .or_else(|| notification.alerts.first());
        let firing = notification
            .alerts
            .iter()
            .filter(|a| a.status == "firing")
            .count();
        let empty = BTreeMap::new();
        let labels = lead.map_or(&empty, |a| &a.labels);
        let annotations = lead.map_or(&empty, |a| &a.annotations);
        let rule = labels.get("alertname").map_or("?", String::as_str);
        let summary = match annotations.get("summary") {
            Some(s) => s.clone(),
            None => format!(
                "{rule} on {}",
                labels.get("host").map_or("?", String::as_str)
            ),
        };
        let ctx = Context {
            labels: Some(labels),
            annotations: Some(annotations),
            rule,
            status: Some(&notification.status),
            count: Some(notification.alerts.len() as f64),
            summary: Some(&summary),
            ..Context::default()
        };
        Message {
            notification,
            lead,
            title: texts.title.render(&ctx),
            body: texts.body.render(&ctx),
            firing,
            resolved: notification.alerts.len() - firing,
        }
    }

    pub(super) fn firing(&self) -> bool {
        self.notification.status == "firing"
    }

    fn label(&self, name: &str) -> Option<&'a str> {
        self.lead
            .and_then(|a| a.labels.get(name))
            .map(String::as_str)
    }

    fn annotation(&self, name: &str) -> Option<&'a str> {
        self.lead
            .and_then(|a| a.annotations.get(name))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The host the alert is about ("hostwatch" for one about no host).
    pub(super) fn host(&self) -> &'a str {
        self.label("host").unwrap_or("hostwatch")
    }

    pub(super) fn rule(&self) -> &'a str {
        self.label("alertname").unwrap_or("hostwatch")
    }

    /// The alert's cause annotation (top process, full mount, ...).
    pub(super) fn cause(&self) -> Option<&'a str> {
        self.annotation("cause")
    }

    /// The top processes at the trigger, one each.
    pub(super) fn top_processes(&self) -> Vec<&'a str> {
        self.annotation("top_processes")
            .map(|t| t.split("; ").filter(|p| !p.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The highest severity among the notification's alerts, from their
    /// `severity` labels.
    pub(super) fn severity(&self) -> Severity {
        self.notification
            .alerts
            .iter()
            .map(|a| Severity::of(a.labels.get("severity").map_or("", String::as_str)))
            .max()
            .unwrap_or(Severity::Unknown)
    }

    /// The console's page of the lead alert, when `external_url` is set.
    pub(super) fn link(&self) -> Option<&'a str> {
        self.lead
            .map(|a| a.generator_url.as_str())
            .filter(|u| !u.is_empty())
    }

    /// The group's key at the receiver: the same for every notification
    /// of the group, across restarts (hashed from the hook's name and the
    /// group's labels), so a resolve closes what the trigger opened and a
    /// repeat adds to it. At most 128 characters.
    pub(super) fn group_id(&self) -> String {
        let fp = crate::eval::fingerprint(&self.notification.group_labels);
        format!("hostwatch:{}:{fp:016x}", self.notification.receiver)
    }
}

/// A rule's severity label, normalised (see `docs/alerting.md` for the
/// words each level takes). Ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Severity {
    /// No `severity` label, or a word not known.
    Unknown,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    fn of(label: &str) -> Self {
        match label.to_ascii_lowercase().as_str() {
            "critical" | "page" | "emergency" | "fatal" | "disaster" => Severity::Critical,
            "error" | "high" | "major" => Severity::Error,
            "warning" | "warn" | "ticket" | "minor" | "average" => Severity::Warning,
            "info" | "information" | "informational" | "low" | "none" => Severity::Info,
            _ => Severity::Unknown,
        }
    }
}

/// `text` cut to at most `max` characters (not bytes: the providers
/// count characters), ending in "…" when cut.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::NotifiedAlert;

    fn alert(status: &str, severity: &str, annotations: &[(&str, &str)]) -> NotifiedAlert {
        NotifiedAlert {
            status: status.into(),
            labels: [
                ("alertname".into(), "cpu_saturated".into()),
                ("host".into(), "web1".into()),
                ("severity".into(), severity.into()),
            ]
            .into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: "2026-12-06T10:00:00Z".into(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            generator_url: String::new(),
            fingerprint: "00000000000000aa".into(),
        }
    }

    pub(crate) fn notification(alerts: Vec<NotifiedAlert>) -> Notification {
        Notification {
            version: "4".into(),
            group_key: "oncall:{}".into(),
            truncated_alerts: 0,
            status: if alerts.iter().any(|a| a.status == "firing") {
                "firing"
            } else {
                "resolved"
            }
            .into(),
            receiver: "oncall".into(),
            group_labels: [("alertname".into(), "cpu_saturated".into())].into(),
            common_labels: BTreeMap::new(),
            common_annotations: BTreeMap::new(),
            external_url: String::new(),
            alerts,
        }
    }

    #[test]
    fn defaults_read_the_lead_alert() {
        let n = notification(vec![
            alert("resolved", "info", &[]),
            alert(
                "firing",
                "Warning",
                &[
                    ("summary", "CPU of web1 at 97%"),
                    ("cause", "burn (pid 7)"),
                    ("top_processes", "burn (pid 7); sshd (pid 1)"),
                ],
            ),
        ]);
        let texts = Texts::compile(None, None).unwrap();
        let m = Message::new(&n, &texts);
        assert_eq!(m.title, "CPU of web1 at 97%");
        assert_eq!(m.body, "cpu_saturated on web1: 2 alert(s) firing");
        assert_eq!((m.firing, m.resolved), (1, 1));
        assert_eq!(m.cause(), Some("burn (pid 7)"));
        assert_eq!(m.top_processes(), ["burn (pid 7)", "sshd (pid 1)"]);
        assert_eq!(m.severity(), Severity::Warning);
        assert_eq!(m.link(), None);
        let id = m.group_id();
        assert!(
            id.starts_with("hostwatch:oncall:") && id.len() == 33,
            "{id}"
        );
        // Without a summary: "RULE on HOST".
        let n = notification(vec![alert("resolved", "nonsense", &[])]);
        let m = Message::new(&n, &texts);
        assert_eq!(m.title, "cpu_saturated on web1");
        assert_eq!(m.severity(), Severity::Unknown);
    }

    #[test]
    fn bad_templates_name_their_key() {
        let err = Texts::compile(Some("{{ value }}"), None).unwrap_err();
        assert_eq!(err.key, "title");
        let err = Texts::compile(None, Some("{{ status")).unwrap_err();
        assert_eq!(err.key, "body");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("ééé", 3), "ééé");
        assert_eq!(truncate("éééé", 3), "éé…");
        assert_eq!(truncate("abcd", 3).chars().count(), 3);
    }
}
