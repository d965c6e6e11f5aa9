//! Where notifications go: webhook (Alertmanager-compatible body), a real
//! Alertmanager (`/api/v2/alerts`), a command (`exec`), straight to
//! PagerDuty, Opsgenie or Slack, or e-mail. Each delivery attempt ends in
//! an [`Outcome`] that decides whether the outbox retries.
//!
//! Layout: this file holds the validated hook and the notification body;
//! `config` a hook as written (the keys every kind has) and its
//! validation; `http` the webhook and Alertmanager hooks (their keys, TLS,
//! requests); `exec` the command hook (its keys, running it);
//! `pagerduty`, `opsgenie`, `slack` those hooks, each with its keys;
//! `message` what those three take from a notification (title and body
//! templates, severity, the group's key); `email` the e-mail hook (its
//! keys, SMTP, the message); `secret` reading secrets from a file or the
//! environment.

mod config;
mod email;
mod exec;
mod http;
mod message;
mod opsgenie;
mod pagerduty;
mod secret;
mod slack;

pub use config::{DeliveryConfig, HookConfig, HookKind};
pub use email::{EmailConfig, EmailTarget};
pub use exec::{EXIT_RETRY, ExecConfig};
pub use http::{AlertmanagerConfig, HookTls, WebhookConfig, http_client};
pub use message::{DEFAULT_BODY, DEFAULT_TITLE, Texts};
pub use opsgenie::{OPSGENIE_EU_URL, OPSGENIE_US_URL, Opsgenie, OpsgenieConfig};
pub use pagerduty::{PAGERDUTY_URL, PagerDuty, PagerDutyConfig};
pub use secret::SecretText;
pub use slack::{Slack, SlackConfig};

use crate::matcher::LabelMatcher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A validated hook.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub target: HookTarget,
    /// Which alerts this hook gets.
    pub matchers: Vec<LabelMatcher>,
    /// When it may notify; outside, its notifications are held.
    pub schedule: crate::quiet::Schedule,
    /// Labels whose values form a group; `["..."]`: every label.
    pub group_by: Vec<String>,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub send_resolved: bool,
    pub timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_for_ms: i64,
    pub max_queued: usize,
}

/// Where a hook delivers.
#[derive(Debug, Clone)]
pub enum HookTarget {
    Webhook {
        url: reqwest::Url,
        client: reqwest::Client,
        secret: Option<Secret>,
        signature_header: String,
    },
    Alertmanager {
        /// `<base>/api/v2/alerts`.
        url: reqwest::Url,
        client: reqwest::Client,
    },
    Exec {
        command: Vec<String>,
    },
    PagerDuty(Box<PagerDuty>),
    Opsgenie(Box<Opsgenie>),
    Slack(Box<Slack>),
    Email(Box<EmailTarget>),
}

impl HookTarget {
    /// Its `kind` as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            HookTarget::Webhook { .. } => "webhook",
            HookTarget::Alertmanager { .. } => "alertmanager",
            HookTarget::Exec { .. } => "exec",
            HookTarget::PagerDuty(_) => "pagerduty",
            HookTarget::Opsgenie(_) => "opsgenie",
            HookTarget::Slack(_) => "slack",
            HookTarget::Email(_) => "email",
        }
    }
}

/// A secret (an HMAC key, say); never printed.
#[derive(Clone)]
pub struct Secret(pub(crate) Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The body of a notification: Alertmanager's webhook format, version 4.
/// Exec hooks get the same JSON on stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    /// "firing" if any alert in it fires, else "resolved".
    pub status: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<NotifiedAlert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; "0001-01-01T00:00:00Z" while firing, as Alertmanager sends.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken; what the receiver answered (status and an excerpt).
    Delivered(String),
    /// Worth another attempt later (network error, timeout, 5xx, 429):
    /// what happened, and how long the receiver asked to wait (its
    /// `Retry-After`, at most `hostwatch_stdx::MAX_RETRY_AFTER`) if it said.
    Retry {
        answer: String,
        after: Option<Duration>,
    },
    /// Another attempt would fail the same way (4xx, exit status).
    Failed(String),
}

impl Outcome {
    /// A failure worth retrying, with no wait asked for.
    pub fn retry(answer: impl Into<String>) -> Self {
        Outcome::Retry {
            answer: answer.into(),
            after: None,
        }
    }

    /// What the receiver answered, or why it could not be reached.
    pub fn answer(&self) -> &str {
        match self {
            Outcome::Delivered(a) | Outcome::Failed(a) | Outcome::Retry { answer: a, .. } => a,
        }
    }

    /// The same outcome with its answer passed through `f` (to redact a
    /// secret the receiver may have quoted).
    pub(crate) fn map_answer(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Outcome::Delivered(a) => Outcome::Delivered(f(&a)),
            Outcome::Failed(a) => Outcome::Failed(f(&a)),
            Outcome::Retry { answer, after } => Outcome::Retry {
                answer: f(&answer),
                after,
            },
        }
    }
}

impl Hook {
    /// Whether this hook gets an alert with `labels`.
    pub fn wants(&self, labels: &BTreeMap<String, String>) -> bool {
        crate::matcher::all_match(&self.matchers, labels)
    }

    /// The group an alert falls in: the values of the `group_by` labels.
    pub fn group_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        if self.group_by.iter().any(|l| l == "...") {
            return labels.clone();
        }
        self.group_by
            .iter()
            .filter_map(|l| labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect()
    }

    /// One delivery attempt; `key` is the notification's idempotency key,
    /// `thread` that of the first notification of the group's episode (the
    /// e-mail hook's replies point to it).
    pub async fn deliver(
        &self,
        notification: &Notification,
        key: &str,
        thread: Option<&str>,
        now_ms: i64,
    ) -> Outcome {
        match &self.target {
            HookTarget::Webhook {
                url,
                client,
                secret,
                signature_header,
            } => {
                http::webhook(
                    client,
                    url,
                    notification,
                    key,
                    secret.as_ref(),
                    signature_header,
                )
                .await
            }
            HookTarget::Alertmanager { url, client } => {
                // Alertmanager ends an alert by itself at endsAt: keep that
                // beyond the next re-push, so only a silent collector ends it.
                let ends = now_ms + 4 * self.repeat_interval_ms;
                http::alertmanager(client, url, notification, key, ends).await
            }
            HookTarget::Exec { command } => {
                exec::run(command, notification, key, &self.name, self.timeout).await
            }
            HookTarget::PagerDuty(p) => p.deliver(notification, key).await,
            HookTarget::Opsgenie(o) => o.deliver(notification, key).await,
            HookTarget::Slack(s) => s.deliver(notification, key).await,
            HookTarget::Email(target) => email::send(target, notification, key, thread).await,
        }
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The first `max` bytes of a response or output, for logs.
pub(crate) fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    text.trim().replace(['\n', '\r'], " ")
}
