//! Where notifications go: webhook (Alertmanager-compatible body), a real
//! Alertmanager (`/api/v2/alerts`), or a command (`exec`). Each delivery
//! attempt ends in an [`Outcome`] that decides whether the outbox retries.
//!
//! Layout: this file holds the hook, the notification body and TLS for
//! HTTP hooks; `http` sends webhook and Alertmanager requests; `exec`
//! runs commands.

mod exec;
pub use exec::EXIT_RETRY;
mod http;

use crate::config::HookTls;
use crate::matcher::LabelMatcher;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A validated hook.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub target: HookTarget,
    /// Which alerts this hook gets.
    pub matchers: Vec<LabelMatcher>,
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
}

/// An HMAC key; never printed.
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
    Delivered,
    /// Worth another attempt later (network error, timeout, 5xx, 429).
    Retry(String),
    /// Another attempt would fail the same way (4xx, exit status).
    Failed(String),
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

    /// One delivery attempt; `key` is the notification's idempotency key.
    pub async fn deliver(&self, notification: &Notification, key: &str, now_ms: i64) -> Outcome {
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
        }
    }
}

/// An HTTP client for a hook: rustls with the ring provider, TLS 1.3
/// unless `min_version = "1.2"`, the system's roots or `tls.ca`, and a
/// client certificate if configured. Proxies from the environment are not
/// used: a hook goes where its URL says.
pub(crate) fn http_client(
    tls: Option<&HookTls>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        match tls.and_then(|t| t.min_version.as_deref()) {
            None | Some("1.3") => &[&rustls::version::TLS13],
            Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some(other) => {
                return Err(format!(
                    "tls.min_version {other:?} must be \"1.2\" or \"1.3\""
                ));
            }
        };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("tls.ca", ca)? {
                roots.add(cert).map_err(|e| {
                    format!("tls.ca {}: not a usable CA certificate: {e}", ca.display())
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("tls: cannot load the system's trusted roots: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let mut config = match (
        tls.and_then(|t| t.cert.as_ref()),
        tls.and_then(|t| t.key.as_ref()),
    ) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs("tls.cert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!("tls.key {}: no usable PEM private key: {e}", key.display())
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("tls.cert/tls.key: {e}"))?
        }
        (Some(_), None) => return Err("tls.key is required with tls.cert".to_owned()),
        (None, Some(_)) => return Err("tls.cert is required with tls.key".to_owned()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .no_proxy()
        .user_agent(concat!("hostwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("http client: {e}"))
}

fn read_certs(key: &str, path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in file",
            path.display()
        ));
    }
    Ok(certs)
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
