//! HTTP hooks: the webhook POST (with an optional HMAC-SHA256 signature
//! over the body) and the push to Alertmanager's `/api/v2/alerts`.

use super::{Notification, Outcome, Secret, excerpt, hex};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use std::collections::BTreeMap;

/// Header carrying the notification's idempotency key: the same on every
/// retry of one notification, so a receiver can drop duplicates.
pub(crate) const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// `sha256=<hex HMAC-SHA256 of body>`.
pub(crate) fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

pub(super) async fn webhook(
    client: &reqwest::Client,
    url: &reqwest::Url,
    notification: &Notification,
    key: &str,
    secret: Option<&Secret>,
    signature_header: &str,
) -> Outcome {
    let body = match serde_json::to_vec(notification) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("cannot encode the notification: {e}")),
    };
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, key);
    if let Some(secret) = secret {
        request = request.header(signature_header, signature(secret, &body));
    }
    send(request.body(body)).await
}

/// One alert as Alertmanager's API v2 takes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: &'a str,
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "str::is_empty")]
    generator_url: &'a str,
}

pub(super) async fn alertmanager(
    client: &reqwest::Client,
    url: &reqwest::Url,
    notification: &Notification,
    key: &str,
    firing_ends_ms: i64,
) -> Outcome {
    let firing_ends = crate::format_rfc3339(firing_ends_ms);
    let alerts: Vec<PostableAlert<'_>> = notification
        .alerts
        .iter()
        .map(|a| PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: &a.starts_at,
            ends_at: if a.status == "firing" {
                firing_ends.clone()
            } else {
                a.ends_at.clone()
            },
            generator_url: &a.generator_url,
        })
        .collect();
    let body = match serde_json::to_vec(&alerts) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("cannot encode the alerts: {e}")),
    };
    let request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, key)
        .body(body);
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(hostwatch_stdx::error_chain(&without_secrets(e))),
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let body = response.bytes().await.unwrap_or_default();
    let message = format!("HTTP {status}: {}", excerpt(&body, 200));
    // 408 and 429 are the receiver asking for time; 5xx its own failure.
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Outcome::Retry(message)
    } else {
        Outcome::Failed(message)
    }
}

/// `error` naming only the scheme, host and port of its URL: a hook's
/// path or query may hold a secret (a Slack-style secret path, a token),
/// and delivery errors are logged.
fn without_secrets(error: reqwest::Error) -> reqwest::Error {
    match error.url().map(origin) {
        Some(url) => error.with_url(url),
        None => error,
    }
}

/// `url` without user, password, path, query and fragment.
fn origin(url: &reqwest::Url) -> reqwest::Url {
    let mut origin = url.clone();
    // Both fail only for URLs without a host, which hooks refuse.
    let _ = origin.set_username("");
    let _ = origin.set_password(None);
    origin.set_path("");
    origin.set_query(None);
    origin.set_fragment(None);
    origin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        let secret = Secret(b"Jefe".to_vec());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn origins_keep_scheme_host_and_port_only() {
        let url = reqwest::Url::parse(
            "https://user:pw@hooks.example.com:8443/services/T0/B0/secret?token=abc#frag",
        )
        .unwrap();
        assert_eq!(origin(&url).as_str(), "https://hooks.example.com:8443/");
    }
}
