//! `kind = "slack"`: a Slack incoming webhook. One message per group and
//! notification: a Block Kit message (header, body, fields for status,
//! host, cause and the number of alerts, a button to the console) inside
//! an attachment whose colour says firing or resolved. The webhook URL is
//! a secret (its path is the credential): read from a file or the
//! environment, and never in a log line or an error, which name only its
//! scheme, host and port. 200 is delivered; 429 and 5xx are retried;
//! other 4xx fail with Slack's error word (`invalid_blocks`, `no_service`).

use super::http::{HookTls, http_client, resolve, send_explained};
use super::message::{Message, Texts, truncate};
use super::secret::read_text;
use super::{HookTarget, Notification, Outcome, excerpt};
use crate::config::KeyError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Block Kit's limits, in characters.
const MAX_HEADER: usize = 150;
const MAX_SECTION: usize = 3000;
const MAX_FIELD: usize = 2000;
const MAX_CONTEXT: usize = 2000;
/// Colours of the attachment: Slack's red and green.
const FIRING_COLOUR: &str = "#E01E5A";
const RESOLVED_COLOUR: &str = "#2EB67D";

/// `kind = "slack"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// File holding the incoming webhook's URL.
    pub webhook_url_file: Option<PathBuf>,
    /// Environment variable holding it instead.
    pub webhook_url_env: Option<String>,
    /// Template of the message's header.
    pub title: Option<String>,
    /// Template of its text.
    pub body: Option<String>,
    pub tls: Option<HookTls>,
}

/// A compiled Slack hook.
#[derive(Clone)]
pub struct Slack {
    url: reqwest::Url,
    client: reqwest::Client,
    texts: Texts,
}

impl fmt::Debug for Slack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slack")
            .field("url", &"<redacted>")
            .field("texts", &self.texts)
            .finish_non_exhaustive()
    }
}

impl SlackConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.webhook_url_file.as_mut() {
            resolve(base, p);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    pub(super) fn compile(&self, timeout: Duration) -> Result<HookTarget, KeyError> {
        let secret = read_text(
            "webhook_url",
            self.webhook_url_file.as_deref(),
            self.webhook_url_env.as_deref(),
        )?;
        let key = if self.webhook_url_file.is_some() {
            "webhook_url_file"
        } else {
            "webhook_url_env"
        };
        // Neither the URL nor the parser's words about it are repeated:
        // they could quote the secret path.
        let url = reqwest::Url::parse(secret.expose())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                KeyError::new(
                    key,
                    format!("{key}: the webhook URL is not an http or https URL"),
                )
            })?;
        Ok(HookTarget::Slack(Box::new(Slack {
            url,
            client: http_client(self.tls.as_ref(), timeout)?,
            texts: Texts::compile(self.title.as_deref(), self.body.as_deref())?,
        })))
    }
}

impl Slack {
    pub(super) async fn deliver(&self, notification: &Notification, key: &str) -> Outcome {
        let m = Message::new(notification, &self.texts);
        let body = match serde_json::to_vec(&message(&m)) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(format!("cannot encode the message: {e}")),
        };
        let request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(super::http::IDEMPOTENCY_HEADER, key)
            .body(body);
        let path = self.url.path().to_owned();
        // Slack answers a word (`invalid_blocks`); a proxy in between might
        // echo the request line.
        send_explained(request, |answer| {
            excerpt(answer, 200).replace(&path, "/<redacted>")
        })
        .await
    }
}

/// Text for Slack's mrkdwn: `&`, `<` and `>` escaped as Slack asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

/// The message: a fallback `text` for notifications, and the blocks in an
/// attachment for the status colour.
fn message(m: &Message<'_>) -> Value {
    let (colour, mark) = if m.firing() {
        (FIRING_COLOUR, "🔥")
    } else {
        (RESOLVED_COLOUR, "✅")
    };
    let status = m.notification.status.to_uppercase();
    let header = truncate(&format!("{mark} [{status}] {}", m.title), MAX_HEADER);
    let mut fields = vec![
        mrkdwn(truncate(&format!("*Status*\n{status}"), MAX_FIELD)),
        mrkdwn(truncate(
            &format!("*Host*\n{}", escape(m.host())),
            MAX_FIELD,
        )),
        mrkdwn(format!(
            "*Alerts*\n{} firing, {} resolved",
            m.firing, m.resolved
        )),
    ];
    if let Some(cause) = m.cause() {
        fields.push(mrkdwn(truncate(
            &format!("*Cause*\n{}", escape(cause)),
            MAX_FIELD,
        )));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
    ];
    if !m.body.trim().is_empty() {
        blocks.push(
            json!({"type": "section", "text": mrkdwn(truncate(&escape(&m.body), MAX_SECTION))}),
        );
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    let top = m.top_processes();
    if !top.is_empty() {
        let text = format!("Top processes: {}", escape(&top.join("; ")));
        blocks.push(json!({"type": "context", "elements": [mrkdwn(truncate(&text, MAX_CONTEXT))]}));
    }
    if let Some(link) = m.link() {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in hostwatch"},
            "url": link,
        }]}));
    }
    json!({
        "text": truncate(&format!("[{status}] {}", m.title), MAX_SECTION),
        "attachments": [{"color": colour, "blocks": blocks}],
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_refused, compile_text, hook};

    #[test]
    fn bad_slack_hooks_name_the_key_and_never_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "hooks.slack.com/services/T0/B0/SECRETPATH\n").unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "https://hooks.slack.com/services/T0/B0/SECRETPATH\n").unwrap();
        let (bad, good) = (bad.display().to_string(), good.display().to_string());
        let slack = |extra: &str| hook(&format!("kind = \"slack\"\n{extra}"));
        let cases = [
            (slack(""), "webhook_url_file or webhook_url_env is required"),
            (
                slack(&format!("webhook_url_file = {bad:?}")),
                "webhook_url_file: the webhook URL is not an http or https URL",
            ),
            (
                slack(&format!("webhook_url_file = {good:?}\nurl = \"https://x\"")),
                "url does not apply",
            ),
            (
                slack(&format!(
                    "webhook_url_file = {good:?}\ntitle = \"{{{{ valu }}}}\""
                )),
                "title: unknown template variable",
            ),
            (
                slack(&format!(
                    "webhook_url_file = {good:?}\nbody = \"{{{{ status\""
                )),
                "body: unclosed",
            ),
            (
                slack("webhook_url_env = \"\""),
                "webhook_url_env: \"\" is not an environment variable name",
            ),
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
        for (text, _) in &cases {
            let err = compile_text(text).unwrap_err();
            assert!(!err.contains("SECRETPATH"), "{err}");
        }
        let ok = compile_text(&slack(&format!("webhook_url_file = {good:?}"))).unwrap();
        assert!(!format!("{:?}", ok.hooks).contains("SECRETPATH"));
    }
}
