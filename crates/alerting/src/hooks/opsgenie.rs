//! `kind = "opsgenie"`: Opsgenie's Alert API. A firing group creates an
//! alert (`POST /v2/alerts`) whose `alias` is the group's key, so a repeat
//! adds to the open alert instead of opening another; its resolution
//! closes it by alias (`POST /v2/alerts/{alias}/close?identifierType=alias`).
//! 202 is delivered; 429 and 5xx are retried; other 4xx fail with
//! Opsgenie's message.

use super::http::{HookTls, http_client, parse_url, resolve, send_explained};
use super::message::{Message, Severity, Texts, truncate};
use super::secret::{SecretText, read_text};
use super::{HookTarget, Notification, Outcome, excerpt};
use crate::config::KeyError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Opsgenie's API in the US and in the EU.
pub const OPSGENIE_US_URL: &str = "https://api.opsgenie.com";
pub const OPSGENIE_EU_URL: &str = "https://api.eu.opsgenie.com";
/// Opsgenie's limits, in characters.
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
const MAX_DESCRIPTION: usize = 15_000;
const MAX_ENTITY: usize = 512;
const MAX_TAG: usize = 50;

/// `kind = "opsgenie"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    /// File holding the API integration's key.
    pub api_key_file: Option<PathBuf>,
    /// Environment variable holding it instead.
    pub api_key_env: Option<String>,
    /// "us" (default) or "eu": which of Opsgenie's APIs.
    pub region: Option<String>,
    /// The API's base URL instead of the region's.
    pub url: Option<String>,
    /// Template of the alert's `message`.
    pub title: Option<String>,
    /// Template of the start of its `description`.
    pub body: Option<String>,
    pub tls: Option<HookTls>,
}

/// A compiled Opsgenie hook.
#[derive(Debug, Clone)]
pub struct Opsgenie {
    /// The API's base URL.
    url: reqwest::Url,
    client: reqwest::Client,
    api_key: SecretText,
    texts: Texts,
}

impl OpsgenieConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.api_key_file.as_mut() {
            resolve(base, p);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    pub(super) fn compile(&self, timeout: Duration) -> Result<HookTarget, KeyError> {
        let api_key = read_text(
            "api_key",
            self.api_key_file.as_deref(),
            self.api_key_env.as_deref(),
        )?;
        if !api_key.expose().bytes().all(|b| b.is_ascii_graphic()) {
            let key = if self.api_key_file.is_some() {
                "api_key_file"
            } else {
                "api_key_env"
            };
            return Err(KeyError::new(
                key,
                format!("{key}: an API key is printable characters without spaces"),
            ));
        }
        let base = match (self.region.as_deref(), self.url.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(KeyError::new(
                    "region",
                    "region and url: give one of them, not both",
                ));
            }
            (None | Some("us"), None) => OPSGENIE_US_URL,
            (Some("eu"), None) => OPSGENIE_EU_URL,
            (Some(other), None) => {
                return Err(KeyError::new(
                    "region",
                    format!("region {other:?} must be \"us\" or \"eu\""),
                ));
            }
            (None, Some(url)) => url,
        };
        Ok(HookTarget::Opsgenie(Box::new(Opsgenie {
            url: parse_url(base)?,
            client: http_client(self.tls.as_ref(), timeout)?,
            api_key,
            texts: Texts::compile(self.title.as_deref(), self.body.as_deref())?,
        })))
    }
}

/// A create request of the Alert API.
#[derive(Debug, Serialize)]
struct Create<'a> {
    message: String,
    alias: &'a str,
    description: String,
    tags: Vec<String>,
    details: BTreeMap<String, String>,
    entity: String,
    source: &'static str,
    priority: &'static str,
}

/// A close request of the Alert API.
#[derive(Debug, Serialize)]
struct Close {
    source: &'static str,
    note: String,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: BTreeMap<String, String>,
}

impl Opsgenie {
    pub(super) async fn deliver(&self, notification: &Notification, key: &str) -> Outcome {
        let m = Message::new(notification, &self.texts);
        let alias = truncate(&m.group_id(), MAX_ALIAS);
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        let body = if m.firing() {
            url.set_path(&format!("{base}/v2/alerts"));
            serde_json::to_vec(&self.create(&m, &alias))
        } else {
            // The alias as one path segment, percent-encoded.
            match url.path_segments_mut() {
                Ok(mut segments) => {
                    segments
                        .pop_if_empty()
                        .extend(["v2", "alerts", &alias, "close"]);
                }
                Err(()) => return Outcome::Failed("the Opsgenie URL has no path".to_owned()),
            }
            url.set_query(Some("identifierType=alias"));
            serde_json::to_vec(&Close {
                source: "hostwatch",
                note: truncate(&format!("Resolved: {}", m.title), 25_000),
            })
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(format!("cannot encode the request: {e}")),
        };
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::AUTHORIZATION,
                format!("GenieKey {}", self.api_key.expose()),
            )
            .header(super::http::IDEMPOTENCY_HEADER, key)
            .body(body);
        send_explained(request, explain)
            .await
            .map_answer(|m| self.api_key.redact(m))
    }

    fn create<'a>(&self, m: &Message<'_>, alias: &'a str) -> Create<'a> {
        let mut description = m.body.clone();
        if let Some(cause) = m.cause() {
            description.push_str(&format!("\n\nCause: {cause}"));
        }
        let top = m.top_processes();
        if !top.is_empty() {
            description.push_str("\n\nTop processes:");
            for p in top {
                description.push_str(&format!("\n- {p}"));
            }
        }
        if m.notification.alerts.len() > 1 {
            description.push_str(&format!(
                "\n\nAlerts: {} firing, {} resolved",
                m.firing, m.resolved
            ));
        }
        if let Some(link) = m.link() {
            description.push_str(&format!("\n\n{link}"));
        }
        let mut details: BTreeMap<String, String> = m
            .lead
            .map(|a| {
                a.labels
                    .iter()
                    .chain(
                        a.annotations
                            .iter()
                            .filter(|(k, _)| k.as_str() != "summary"),
                    )
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        details.insert("alerts".into(), m.notification.alerts.len().to_string());
        let mut tags = vec![truncate(m.rule(), MAX_TAG), truncate(m.host(), MAX_TAG)];
        tags.dedup();
        Create {
            message: truncate(&m.title, MAX_MESSAGE),
            alias,
            description: truncate(&description, MAX_DESCRIPTION),
            tags,
            details,
            entity: truncate(m.host(), MAX_ENTITY),
            source: "hostwatch",
            priority: priority(m.severity()),
        }
    }
}

/// Opsgenie's priorities, P1 the highest; P3 is its default.
fn priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "P1",
        Severity::Error => "P2",
        Severity::Warning | Severity::Unknown => "P3",
        Severity::Info => "P5",
    }
}

fn explain(answer: &[u8]) -> String {
    match serde_json::from_slice::<Refusal>(answer) {
        Ok(r) if !r.message.is_empty() => {
            let errors: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let text = if errors.is_empty() {
                r.message
            } else {
                format!("{} ({})", r.message, errors.join("; "))
            };
            excerpt(text.as_bytes(), 500)
        }
        _ => excerpt(answer, 200),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_refused, compile_text, hook};
    use crate::hooks::HookTarget;

    #[test]
    fn bad_opsgenie_hooks_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "eb243592-faa2-4ba2-a551q-1afdf565c889\n").unwrap();
        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "two words\n").unwrap();
        let (key, spaced) = (key.display().to_string(), spaced.display().to_string());
        let og = |extra: &str| hook(&format!("kind = \"opsgenie\"\n{extra}"));
        let cases = [
            (og(""), "api_key_file or api_key_env is required"),
            (
                og(&format!("api_key_file = {spaced:?}")),
                "api_key_file: an API key is printable characters",
            ),
            (
                og(&format!("api_key_file = {key:?}\nregion = \"asia\"")),
                "region \"asia\" must be \"us\" or \"eu\"",
            ),
            (
                og(&format!(
                    "api_key_file = {key:?}\nregion = \"eu\"\nurl = \"https://x\""
                )),
                "region and url",
            ),
            (
                og(&format!("api_key_file = {key:?}\nurl = \"nope\"")),
                "url: relative URL",
            ),
            (
                og(&format!(
                    "api_key_file = {key:?}\ntitle = \"{{{{ nope }}}}\""
                )),
                "title: unknown template variable",
            ),
            (
                og(&format!(
                    "api_key_file = {key:?}\nbody = \"{{{{ count | bytez }}}}\""
                )),
                "body: unknown template filter",
            ),
            (
                og("api_key_env = \"HOSTWATCH_TEST_UNSET_OPSGENIE_KEY\""),
                "api_key_env: the environment variable HOSTWATCH_TEST_UNSET_OPSGENIE_KEY is not set",
            ),
            (
                og(&format!("api_key_file = {key:?}\nregion = 1")),
                "region: invalid type",
            ),
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
        for (region, url) in [
            ("", "https://api.opsgenie.com/"),
            ("region = \"eu\"", "https://api.eu.opsgenie.com/"),
            ("region = \"us\"", "https://api.opsgenie.com/"),
            (
                "url = \"https://proxy.example.com/og\"",
                "https://proxy.example.com/og",
            ),
        ] {
            let set = compile_text(&og(&format!("api_key_file = {key:?}\n{region}"))).unwrap();
            let HookTarget::Opsgenie(o) = &set.hooks[0].target else {
                panic!("{:?}", set.hooks[0].target);
            };
            assert_eq!(o.url.as_str(), url);
            assert_eq!(o.api_key.expose(), "eb243592-faa2-4ba2-a551q-1afdf565c889");
        }
    }
}
