//! `kind = "pagerduty"`: PagerDuty's Events API v2 (`POST /v2/enqueue`).
//! A firing group triggers an alert, its resolution resolves it; both
//! carry the group's `dedup_key`, so a repeat adds to the open incident
//! instead of opening another. 202 is delivered; 429 and 5xx are retried
//! by the outbox; 400 (an event PagerDuty refuses) fails with its message.

use super::http::{HookTls, http_client, parse_url, resolve, send_explained};
use super::message::{Message, Severity, Texts, truncate};
use super::secret::{SecretText, read_text};
use super::{HookTarget, Notification, Outcome, excerpt};
use crate::config::KeyError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty's limits on `payload.summary` and `dedup_key`, in characters.
const MAX_SUMMARY: usize = 1024;
const MAX_DEDUP_KEY: usize = 255;

/// `kind = "pagerduty"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// File holding the integration's routing key (32 characters).
    pub routing_key_file: Option<PathBuf>,
    /// Environment variable holding it instead.
    pub routing_key_env: Option<String>,
    /// The Events API v2 endpoint (PagerDuty's unless set).
    pub url: Option<String>,
    /// Template of `payload.summary`.
    pub title: Option<String>,
    /// Template of `custom_details.body`.
    pub body: Option<String>,
    pub tls: Option<HookTls>,
}

/// A compiled PagerDuty hook.
#[derive(Debug, Clone)]
pub struct PagerDuty {
    url: reqwest::Url,
    client: reqwest::Client,
    routing_key: SecretText,
    texts: Texts,
}

impl PagerDutyConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.routing_key_file.as_mut() {
            resolve(base, p);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    pub(super) fn compile(&self, timeout: Duration) -> Result<HookTarget, KeyError> {
        let routing_key = read_text(
            "routing_key",
            self.routing_key_file.as_deref(),
            self.routing_key_env.as_deref(),
        )?;
        // Every Events API v2 routing key is 32 characters: anything else
        // is a wrong file or variable, better refused now than at a page.
        let length = routing_key.expose().chars().count();
        if length != 32 || !routing_key.expose().bytes().all(|b| b.is_ascii_graphic()) {
            let key = if self.routing_key_file.is_some() {
                "routing_key_file"
            } else {
                "routing_key_env"
            };
            return Err(KeyError::new(
                key,
                format!(
                    "{key}: a routing key is 32 printable characters, this one has {length} characters"
                ),
            ));
        }
        let url = parse_url(self.url.as_deref().unwrap_or(PAGERDUTY_URL))?;
        Ok(HookTarget::PagerDuty(Box::new(PagerDuty {
            url,
            client: http_client(self.tls.as_ref(), timeout)?,
            routing_key,
            texts: Texts::compile(self.title.as_deref(), self.body.as_deref())?,
        })))
    }
}

/// An event as the Events API v2 takes it.
#[derive(Debug, Serialize)]
struct Event<'a> {
    routing_key: &'a str,
    event_action: &'static str,
    dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<Link<'a>>,
}

#[derive(Debug, Serialize)]
struct Payload<'a> {
    summary: String,
    source: &'a str,
    severity: &'static str,
    timestamp: &'a str,
    class: &'a str,
    group: &'a str,
    custom_details: Value,
}

#[derive(Debug, Serialize)]
struct Link<'a> {
    href: &'a str,
    text: &'static str,
}

/// What PagerDuty answers to an event it refuses.
#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<String>,
}

impl PagerDuty {
    pub(super) async fn deliver(&self, notification: &Notification, key: &str) -> Outcome {
        let message = Message::new(notification, &self.texts);
        let event = self.event(&message);
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(format!("cannot encode the event: {e}")),
        };
        let request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(super::http::IDEMPOTENCY_HEADER, key)
            .body(body);
        let outcome = send_explained(request, explain).await;
        // PagerDuty's answer could quote what it was sent.
        outcome.map_answer(|m| self.routing_key.redact(m))
    }

    fn event<'a>(&'a self, m: &'a Message<'a>) -> Event<'a> {
        let dedup_key = truncate(&m.group_id(), MAX_DEDUP_KEY);
        let n = m.notification;
        if !m.firing() {
            return Event {
                routing_key: self.routing_key.expose(),
                event_action: "resolve",
                dedup_key,
                payload: None,
                client: None,
                client_url: None,
                links: Vec::new(),
            };
        }
        let summary = match m.cause() {
            Some(cause) if !m.title.contains(cause) => format!("{} (cause: {cause})", m.title),
            _ => m.title.clone(),
        };
        let mut details = serde_json::Map::new();
        details.insert("body".into(), json!(m.body));
        details.insert("firing".into(), json!(m.firing));
        details.insert("resolved".into(), json!(m.resolved));
        if let Some(lead) = m.lead {
            details.insert("labels".into(), json!(lead.labels));
            let annotations: serde_json::Map<String, Value> = lead
                .annotations
                .iter()
                .filter(|(k, _)| k.as_str() != "top_processes")
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            details.insert("annotations".into(), Value::Object(annotations));
        }
        let top = m.top_processes();
        if !top.is_empty() {
            details.insert("top_processes".into(), json!(top));
        }
        if n.alerts.len() > 1 {
            let others: Vec<Value> = n
                .alerts
                .iter()
                .map(|a| json!({"status": a.status, "labels": a.labels, "starts_at": a.starts_at}))
                .collect();
            details.insert("alerts".into(), Value::Array(others));
        }
        let console = (!n.external_url.is_empty()).then_some(n.external_url.as_str());
        let links = m
            .link()
            .map(|href| Link {
                href,
                text: "Alert in the hostwatch console",
            })
            .into_iter()
            .collect();
        Event {
            routing_key: self.routing_key.expose(),
            event_action: "trigger",
            dedup_key,
            payload: Some(Payload {
                summary: truncate(&summary, MAX_SUMMARY),
                source: m.host(),
                severity: severity(m.severity()),
                timestamp: m.lead.map_or("", |a| a.starts_at.as_str()),
                class: m.rule(),
                group: m.rule(),
                custom_details: Value::Object(details),
            }),
            client: Some("hostwatch"),
            client_url: console,
            links,
        }
    }
}

/// PagerDuty's four severities.
fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Error | Severity::Unknown => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// PagerDuty's message and errors, else the start of its answer.
fn explain(answer: &[u8]) -> String {
    match serde_json::from_slice::<Refusal>(answer) {
        Ok(r) if !r.message.is_empty() || !r.errors.is_empty() => {
            let errors = r.errors.join("; ");
            excerpt(format!("{}: {errors}", r.message).as_bytes(), 500)
        }
        _ => excerpt(answer, 200),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_refused, hook};

    #[test]
    fn bad_pagerduty_hooks_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").unwrap();
        let (short, good) = (short.display().to_string(), good.display().to_string());
        let pd = |extra: &str| hook(&format!("kind = \"pagerduty\"\n{extra}"));
        let cases = [
            (pd(""), "routing_key_file or routing_key_env is required"),
            (
                pd(&format!("routing_key_file = {short:?}")),
                "routing_key_file: a routing key is 32 printable characters, this one has 3",
            ),
            (
                pd("routing_key_env = \"HOSTWATCH_TEST_UNSET_ROUTING_KEY\""),
                "routing_key_env: the environment variable HOSTWATCH_TEST_UNSET_ROUTING_KEY is not set",
            ),
            (
                pd(&format!(
                    "routing_key_file = {good:?}\nrouting_key_env = \"PATH\""
                )),
                "not both",
            ),
            (
                pd(&format!("routing_key_file = {good:?}\nurl = \"ftp://x\"")),
                "url: scheme",
            ),
            (
                pd(&format!(
                    "routing_key_file = {good:?}\ntitle = \"{{{{ value }}}}\""
                )),
                "title: unknown template variable \"value\"",
            ),
            (
                pd(&format!(
                    "routing_key_file = {good:?}\nbody = \"{{{{ host\""
                )),
                "body: unclosed",
            ),
            (
                pd(&format!(
                    "routing_key_file = {good:?}\nrouting_key = \"inline\""
                )),
                "routing_key does not apply",
            ),
            (
                pd(&format!("routing_key_file = {good:?}\ntitle = 3")),
                "title: invalid type",
            ),
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
        let ok = crate::config::testing::compile_text(&pd(&format!("routing_key_file = {good:?}")));
        assert!(ok.is_ok(), "{ok:?}");
    }
}
