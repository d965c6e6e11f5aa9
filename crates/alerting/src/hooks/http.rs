//! HTTP hooks: the webhook POST (with an optional HMAC-SHA256 signature
//! over the body) and the push to Alertmanager's `/api/v2/alerts`; their
//! keys as written, their validation and their TLS clients.

use super::{HookTarget, Notification, Outcome, Secret, excerpt, hex};
use crate::config::KeyError;
use hmac::{KeyInit, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    send_explained(request, |body| excerpt(body, 200)).await
}

/// Sends `request`: a 2xx is delivered; 408, 429 and 5xx are retried
/// (after the receiver's `Retry-After`, if it sent one); other statuses
/// fail, with `explain` turning the receiver's answer into words for the
/// log.
pub(super) async fn send_explained(
    request: reqwest::RequestBuilder,
    explain: impl Fn(&[u8]) -> String,
) -> Outcome {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::retry(hostwatch_stdx::error_chain(&without_secrets(e))),
    };
    let status = response.status();
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hostwatch_stdx::retry_after(v, SystemTime::now()));
    let body = response.bytes().await.unwrap_or_default();
    let message = format!("HTTP {status}: {}", explain(&body));
    if status.is_success() {
        return Outcome::Delivered(message);
    }
    // 408 and 429 are the receiver asking for time; 5xx its own failure.
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        let answer = match after {
            Some(after) => format!("{message} (Retry-After: {} s)", after.as_secs()),
            None => message,
        };
        Outcome::Retry { answer, after }
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

/// `kind = "webhook"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// File holding the HMAC-SHA256 key for the signature header.
    pub hmac_secret_file: Option<PathBuf>,
    /// Name of the signature header.
    pub signature_header: Option<String>,
    /// Over https: trust and client certificate.
    pub tls: Option<HookTls>,
}

/// `kind = "alertmanager"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Its base URL; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// Over https: trust and client certificate.
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

impl WebhookConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.hmac_secret_file.as_mut() {
            resolve(base, p);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    pub(super) fn compile(&self, timeout: Duration) -> Result<HookTarget, KeyError> {
        let url = parse_url(&self.url)?;
        let client = http_client(self.tls.as_ref(), timeout)?;
        let secret = match &self.hmac_secret_file {
            Some(path) => Some(super::secret::from_file("hmac_secret_file", path)?),
            None => None,
        };
        let header = self
            .signature_header
            .clone()
            .unwrap_or_else(|| "X-Hostwatch-Signature".to_owned());
        reqwest::header::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            KeyError::new(
                "signature_header",
                format!("signature_header {header:?} is not a valid header name"),
            )
        })?;
        Ok(HookTarget::Webhook {
            url,
            client,
            secret,
            signature_header: header,
        })
    }
}

impl AlertmanagerConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    pub(super) fn compile(&self, timeout: Duration) -> Result<HookTarget, KeyError> {
        let mut url = parse_url(&self.url)?;
        let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let client = http_client(self.tls.as_ref(), timeout)?;
        Ok(HookTarget::Alertmanager { url, client })
    }
}

impl HookTls {
    /// Makes its relative file names relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key]
            .into_iter()
            .flatten()
        {
            resolve(base, p);
        }
    }
}

pub(super) fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

pub(super) fn parse_url(url: &str) -> Result<reqwest::Url, KeyError> {
    // The URL is not repeated: its path or query may hold a secret.
    let url = reqwest::Url::parse(url).map_err(|e| KeyError::new("url", format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(KeyError::new(
            "url",
            format!("url: scheme {:?} must be http or https", url.scheme()),
        ));
    }
    Ok(url)
}

/// An HTTP client for a hook (and for the collector's forwarding, whose
/// receivers are not ours either): rustls with the ring provider, TLS 1.3
/// unless `min_version = "1.2"`, the system's roots or `tls.ca`, and a
/// client certificate if configured. Proxies from the environment are not
/// used: a request goes where its URL says.
pub fn http_client(tls: Option<&HookTls>, timeout: Duration) -> Result<reqwest::Client, KeyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        match tls.and_then(|t| t.min_version.as_deref()) {
            None | Some("1.3") => &[&rustls::version::TLS13],
            Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some(other) => {
                return Err(KeyError::new(
                    "tls.min_version",
                    format!("tls.min_version {other:?} must be \"1.2\" or \"1.3\""),
                ));
            }
        };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| KeyError::new("tls", format!("tls: {e}")))?;
    let builder = match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("tls.ca", ca)? {
                roots.add(cert).map_err(|e| {
                    KeyError::new(
                        "tls.ca",
                        format!("tls.ca {}: not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|e| {
                KeyError::new(
                    "tls",
                    format!("tls: cannot load the system's trusted roots: {e}"),
                )
            })?;
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
                KeyError::new(
                    "tls.key",
                    format!("tls.key {}: no usable PEM private key: {e}", key.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| KeyError::new("tls.cert", format!("tls.cert/tls.key: {e}")))?
        }
        (Some(_), None) => {
            return Err(KeyError::new(
                "tls.key",
                "tls.key is required with tls.cert",
            ));
        }
        (None, Some(_)) => {
            return Err(KeyError::new(
                "tls.cert",
                "tls.cert is required with tls.key",
            ));
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .no_proxy()
        .user_agent(concat!("hostwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| KeyError::new("tls", format!("http client: {e}")))
}

pub(super) fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| KeyError::new(key, format!("{key} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(KeyError::new(
            key,
            format!("{key} {}: no PEM certificate in file", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{assert_refused, hook};

    #[test]
    fn bad_http_hooks_name_the_hook_and_the_key() {
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
                hook("kind = \"webhook\"\nurl = \"http://x\"\nsignature_header = \"bad header\""),
                "signature_header",
            ),
            (
                hook("kind = \"webhook\"\nurl = \"http://x\"\nhmac_secret_file = \"/dev/null\""),
                "/dev/null is empty",
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
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
    }

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
