//! The e-mail hook: one message per notification (so per group), sent
//! over SMTP with STARTTLS or implicit TLS, the server's certificate
//! verified against `tls.ca` or the system's roots, with optional
//! authentication. A message has a plain text and an HTML part; its
//! `Message-ID` is the notification's idempotency key (the same on every
//! retry), and every message after the first of a group's episode (repeats,
//! changes, the resolution) names the first in `In-Reply-To` and
//! `References`, so mail readers thread the resolution under the page.
//! The hook's keys as written, and their validation, are here too.

use super::http::{HookTls, read_certs};
use super::{HookTarget, Notification, NotifiedAlert, Outcome};
use crate::config::KeyError;
use hostwatch_stdx::escape_html;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Tls, TlsParameters, TlsVersion,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use std::fmt;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// `kind = "email"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server, `host:port`.
    pub smarthost: String,
    /// `"starttls"` (default; port 587 or 25) or `"implicit"` (TLS from the
    /// first byte; port 465). There is no plain text SMTP.
    pub encryption: Option<String>,
    /// Sender address, `alerts@example.com` or `Hostwatch <alerts@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Name given in EHLO (default `localhost`).
    pub hello: Option<String>,
    /// User name for SMTP authentication (PLAIN or LOGIN, over TLS only).
    pub auth_username: Option<String>,
    /// File holding the password.
    pub auth_password_file: Option<std::path::PathBuf>,
    /// Environment variable holding the password.
    pub auth_password_env: Option<String>,
    /// Trust (`ca`, default the system's roots), a client certificate
    /// (`cert`, `key`) and the lowest TLS version (`min_version`, default
    /// `"1.2"` here: mail servers are often not ours).
    pub tls: Option<HookTls>,
}

/// A validated e-mail hook.
#[derive(Clone)]
pub struct EmailTarget {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// Right-hand side of Message-IDs: the sender's domain.
    domain: String,
    /// `host:port`, for errors.
    server: String,
    /// One attempt's time, all commands together (the transport's own
    /// timeout is per command).
    timeout: Duration,
}

impl fmt::Debug for EmailTarget {
    // The transport holds the credentials: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailTarget")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

/// Reply codes with which a server refuses authentication (RFC 4954):
/// worth retrying, since the credentials or the server may be fixed.
const AUTH_REFUSED: [u16; 4] = [530, 534, 535, 538];

impl EmailConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.auth_password_file.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    pub(super) fn compile(&self, timeout: Duration) -> Result<HookTarget, KeyError> {
        let (host, port) = parse_smarthost(&self.smarthost)?;
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| KeyError::new("from", format!("from {:?}: {e}", self.from)))?;
        if self.to.is_empty() {
            return Err(KeyError::new("to", "to needs at least one address"));
        }
        let to = self
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| KeyError::new("to", format!("to {t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = self.tls_parameters(&host)?;
        let tls = match self.encryption.as_deref() {
            None | Some("starttls") => Tls::Required(tls),
            Some("implicit") => Tls::Wrapper(tls),
            Some(other) => {
                return Err(KeyError::new(
                    "encryption",
                    format!("encryption {other:?} must be \"starttls\" or \"implicit\""),
                ));
            }
        };
        let hello = match &self.hello {
            None => ClientId::Domain("localhost".to_owned()),
            Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => {
                ClientId::Domain(h.clone())
            }
            Some(h) => {
                return Err(KeyError::new(
                    "hello",
                    format!("hello {h:?} must be a host name"),
                ));
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .hello_name(hello)
            .timeout(Some(timeout));
        if let Some(credentials) = self.credentials()? {
            builder = builder.credentials(credentials);
        }
        let domain = from.email.domain().to_owned();
        Ok(HookTarget::Email(Box::new(EmailTarget {
            transport: builder.build(),
            from,
            to,
            domain,
            server: self.smarthost.clone(),
            timeout,
        })))
    }

    fn tls_parameters(&self, host: &str) -> Result<TlsParameters, KeyError> {
        let tls = self.tls.as_ref();
        let mut builder = TlsParameters::builder(host.to_owned());
        builder = match tls.and_then(|t| t.min_version.as_deref()) {
            None | Some("1.2") => builder.set_min_tls_version(TlsVersion::Tlsv12),
            Some("1.3") => builder.set_min_tls_version(TlsVersion::Tlsv13),
            Some(other) => {
                return Err(KeyError::new(
                    "tls.min_version",
                    format!("tls.min_version {other:?} must be \"1.2\" or \"1.3\""),
                ));
            }
        };
        if let Some(ca) = tls.and_then(|t| t.ca.as_ref()) {
            builder = builder.certificate_store(CertificateStore::None);
            for der in read_certs("tls.ca", ca)? {
                let cert = Certificate::from_der(der.to_vec()).map_err(|e| {
                    KeyError::new(
                        "tls.ca",
                        format!("tls.ca {}: not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
                builder = builder.add_root_certificate(cert);
            }
        }
        match (
            tls.and_then(|t| t.cert.as_ref()),
            tls.and_then(|t| t.key.as_ref()),
        ) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let identity = lettre::transport::smtp::client::Identity::from_pem(
                    &read_file("tls.cert", cert)?,
                    &read_file("tls.key", key)?,
                )
                .map_err(|e| KeyError::new("tls.cert", format!("tls.cert/tls.key: {e}")))?;
                builder = builder.identify_with(identity);
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
        }
        builder
            .build_rustls()
            .map_err(|e| KeyError::new("tls", format!("tls: {e}")))
    }

    /// The user name and password, if authentication is configured. The
    /// password is read now, so a missing one refuses the configuration.
    fn credentials(&self) -> Result<Option<Credentials>, KeyError> {
        let password = match (&self.auth_password_file, &self.auth_password_env) {
            (None, None) => None,
            (file, env) => Some(
                super::secret::read_text("auth_password", file.as_deref(), env.as_deref())?
                    .expose()
                    .to_owned(),
            ),
        };
        match (&self.auth_username, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) if !user.is_empty() => {
                Ok(Some(Credentials::new(user.clone(), password)))
            }
            (Some(_), Some(_)) => Err(KeyError::new(
                "auth_username",
                "auth_username must not be empty",
            )),
            (Some(_), None) => Err(KeyError::new(
                "auth_password_file",
                "auth_username needs auth_password_file or auth_password_env",
            )),
            (None, Some(_)) => Err(KeyError::new(
                "auth_username",
                "auth_username is required with a password",
            )),
        }
    }
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::new(key, format!("{key} {}: {e}", path.display())))
}

/// `host:port`, the host a name, an IPv4 address or a bracketed IPv6 one.
fn parse_smarthost(text: &str) -> Result<(String, u16), KeyError> {
    let invalid = |why: &str| {
        KeyError::new(
            "smarthost",
            format!("smarthost {text:?} must be host:port ({why})"),
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
            .ok_or_else(|| invalid("not an IPv6 address in brackets"))?,
        None => host,
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(invalid("no host name"));
    }
    Ok((host.to_owned(), port))
}

/// One delivery attempt: the message built from `notification`, sent over
/// a new connection. `thread` is the idempotency key of the first message
/// of the group's episode.
pub(super) async fn send(
    target: &EmailTarget,
    notification: &Notification,
    key: &str,
    thread: Option<&str>,
) -> Outcome {
    let message = match message(target, notification, key, thread) {
        Ok(m) => m,
        Err(e) => return Outcome::Failed(format!("cannot build the message: {e}")),
    };
    let sent = tokio::time::timeout(target.timeout, target.transport.send(message)).await;
    match sent {
        Err(_) => Outcome::retry(format!(
            "{}: not sent within {:?}",
            target.server, target.timeout
        )),
        Ok(Ok(response)) => Outcome::Delivered(format!(
            "{}: {} {}",
            target.server,
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        )),
        Ok(Err(e)) => {
            let text = hostwatch_stdx::error_chain(&e);
            let code = e.status().map(u16::from);
            if code.is_some_and(|c| AUTH_REFUSED.contains(&c)) {
                Outcome::retry(format!(
                    "{}: authentication refused (check auth_username and the password): {text}",
                    target.server
                ))
            } else if e.is_permanent() {
                Outcome::Failed(format!("{}: {text}", target.server))
            } else {
                Outcome::retry(format!("{}: {text}", target.server))
            }
        }
    }
}

/// `<key@domain>`.
fn message_id(key: &str, domain: &str) -> String {
    format!("<{key}@{domain}>")
}

fn message(
    target: &EmailTarget,
    notification: &Notification,
    key: &str,
    thread: Option<&str>,
) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(target.from.clone())
        .subject(subject(notification))
        .message_id(Some(message_id(key, &target.domain)));
    for to in &target.to {
        builder = builder.to(to.clone());
    }
    if let Some(root) = thread.filter(|root| *root != key) {
        let root = message_id(root, &target.domain);
        builder = builder.in_reply_to(root.clone()).references(root);
    }
    builder.multipart(MultiPart::alternative_plain_html(
        plain_text(notification),
        html(notification),
    ))
}

/// `[FIRING:2] cpu_busy web1`, `[RESOLVED] cpu_busy web1`, as
/// Alertmanager's default subject.
pub(crate) fn subject(n: &Notification) -> String {
    let firing = n.alerts.iter().filter(|a| a.status == "firing").count();
    let status = if firing > 0 {
        format!("FIRING:{firing}")
    } else {
        "RESOLVED".to_owned()
    };
    let mut what: Vec<&str> = n.group_labels.values().map(String::as_str).collect();
    if what.is_empty() {
        what.extend(n.common_labels.get("alertname").map(String::as_str));
    }
    if what.is_empty() {
        what.push("alerts");
    }
    format!("[{status}] {}", what.join(" "))
}

fn pairs(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn firing_then_resolved(n: &Notification) -> impl Iterator<Item = &NotifiedAlert> {
    let firing = n.alerts.iter().filter(|a| a.status == "firing");
    let resolved = n.alerts.iter().filter(|a| a.status != "firing");
    firing.chain(resolved)
}

/// An alert's annotations, `summary` and `description` first.
fn annotations(a: &NotifiedAlert) -> impl Iterator<Item = (&String, &String)> {
    const FIRST: [&str; 2] = ["summary", "description"];
    let first = FIRST
        .into_iter()
        .filter_map(|k| a.annotations.get_key_value(k));
    let rest = a
        .annotations
        .iter()
        .filter(|(k, _)| !FIRST.contains(&k.as_str()));
    first.chain(rest)
}

fn title(a: &NotifiedAlert) -> String {
    let name = a.labels.get("alertname").map_or("alert", String::as_str);
    match a.labels.get("host") {
        Some(host) => format!("{name} on {host}"),
        None => name.to_owned(),
    }
}

fn plain_text(n: &Notification) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", subject(n));
    for a in firing_then_resolved(n) {
        let _ = writeln!(out, "[{}] {}", a.status.to_uppercase(), title(a));
        for (name, value) in annotations(a) {
            let _ = writeln!(out, "  {name}: {value}");
        }
        let _ = writeln!(out, "  labels: {}", pairs(&a.labels));
        let _ = writeln!(out, "  since: {}", a.starts_at);
        if a.status != "firing" {
            let _ = writeln!(out, "  ended: {}", a.ends_at);
        }
        if !a.generator_url.is_empty() {
            let _ = writeln!(out, "  link: {}", a.generator_url);
        }
        out.push('\n');
    }
    if !n.external_url.is_empty() {
        let _ = writeln!(out, "hostwatch: {}", n.external_url);
    }
    out
}

fn html(n: &Notification) -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n");
    let _ = writeln!(out, "<h2>{}</h2>", escape_html(&subject(n)));
    for a in firing_then_resolved(n) {
        let colour = if a.status == "firing" {
            "#b00020"
        } else {
            "#1b5e20"
        };
        let _ = writeln!(
            out,
            "<h3><span style=\"color: {colour}\">{}</span> {}</h3>\n<table>",
            escape_html(&a.status.to_uppercase()),
            escape_html(&title(a))
        );
        let mut row = |name: &str, value: &str| {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape_html(name),
                escape_html(value)
            );
        };
        for (name, value) in annotations(a) {
            row(name, value);
        }
        row("labels", &pairs(&a.labels));
        row("since", &a.starts_at);
        if a.status != "firing" {
            row("ended", &a.ends_at);
        }
        out.push_str("</table>\n");
        if !a.generator_url.is_empty() {
            let url = escape_html(&a.generator_url);
            let _ = writeln!(out, "<p><a href=\"{url}\">{url}</a></p>");
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{assert_refused, hook};

    fn email(extra: &str) -> String {
        hook(&format!(
            "kind = \"email\"\nsmarthost = \"127.0.0.1:587\"\nfrom = \"alerts@example.com\"\nto = [\"oncall@example.com\"]\n{extra}"
        ))
    }

    #[test]
    fn bad_email_hooks_name_the_hook_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let empty = empty.display().to_string();
        let cases = [
            (
                hook("kind = \"email\"\nfrom = \"a@b\"\nto = [\"c@d\"]"),
                "smarthost is required",
            ),
            (
                email("").replace("127.0.0.1:587", "mail.example.com"),
                "smarthost \"mail.example.com\" must be host:port",
            ),
            (email("").replace("127.0.0.1:587", "m:0"), "smarthost"),
            (email("").replace("127.0.0.1:587", ":25"), "smarthost"),
            (email("").replace("127.0.0.1:587", "[x]:25"), "smarthost"),
            (
                email("").replace("alerts@example.com", "not an address"),
                "from",
            ),
            (
                email("").replace("[\"oncall@example.com\"]", "[]"),
                "to needs",
            ),
            (
                email("").replace("oncall@example.com", "oncall"),
                "to \"oncall\"",
            ),
            (email("encryption = \"none\""), "encryption \"none\""),
            (email("hello = \"\""), "hello"),
            (email("auth_username = \"u\""), "auth_password_file"),
            (
                email("auth_password_file = \"/nonexistent/pw\"\nauth_username = \"u\""),
                "auth_password_file /nonexistent/pw",
            ),
            (
                email(&format!(
                    "auth_password_file = {empty:?}\nauth_username = \"u\""
                )),
                "is empty",
            ),
            (
                email(
                    "auth_password_env = \"HOSTWATCH_TEST_NO_SUCH_VARIABLE\"\nauth_username = \"u\"",
                ),
                "auth_password_env: the environment variable HOSTWATCH_TEST_NO_SUCH_VARIABLE is not set",
            ),
            (
                email(&format!(
                    "auth_password_file = {empty:?}\nauth_password_env = \"X\"\nauth_username = \"u\""
                )),
                "give one of them, not both",
            ),
            (email("url = \"http://x\""), "url does not apply"),
            (
                email("[alerting.hooks.tls]\nca = \"/nonexistent/ca.pem\""),
                "tls.ca /nonexistent/ca.pem",
            ),
            (
                email("[alerting.hooks.tls]\nca = \"/etc/hostname\""),
                "tls.ca",
            ),
            (
                email("[alerting.hooks.tls]\nmin_version = \"1.1\""),
                "tls.min_version",
            ),
            (
                email("[alerting.hooks.tls]\ncert = \"/etc/hostname\""),
                "tls.key is required",
            ),
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
    }

    #[test]
    fn a_password_without_a_user_is_refused_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2-SECRET\n").unwrap();
        let text = email(&format!(
            "auth_password_file = {:?}",
            file.display().to_string()
        ));
        let err = crate::config::testing::compile_text(&text).unwrap_err();
        assert!(err.contains("auth_username is required"), "{err}");
        let text = email(&format!(
            "auth_password_file = {:?}\nauth_username = \"u\"",
            file.display().to_string()
        ));
        let set = crate::config::testing::compile_text(&text).unwrap();
        let shown = format!("{:?}", set.hooks[0]);
        assert!(!shown.contains("hunter2"), "{shown}");
        // From the environment: PATH is set wherever tests run.
        let text = email("auth_password_env = \"PATH\"\nauth_username = \"u\"");
        crate::config::testing::compile_text(&text).unwrap();
        let path = std::env::var("PATH").unwrap();
        let read = crate::hooks::secret::read_text("auth_password", None, Some("PATH")).unwrap();
        assert_eq!(read.expose(), path.trim());
    }

    #[test]
    fn smarthosts_parse() {
        assert_eq!(
            parse_smarthost("mail.example.com:465").unwrap(),
            ("mail.example.com".to_owned(), 465)
        );
        assert_eq!(parse_smarthost("[::1]:25").unwrap(), ("::1".to_owned(), 25));
    }

    #[test]
    fn subjects_and_bodies_say_what_fires_and_escape_html() {
        let alert = |status: &str, summary: &str| NotifiedAlert {
            status: status.to_owned(),
            labels: [("alertname", "cpu_busy"), ("host", "web1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            annotations: [("summary".to_owned(), summary.to_owned())].into(),
            starts_at: "2026-01-01T00:00:00Z".to_owned(),
            ends_at: "0001-01-01T00:00:00Z".to_owned(),
            generator_url: String::new(),
            fingerprint: "00".to_owned(),
        };
        let mut n = Notification {
            version: "4".to_owned(),
            group_key: "k".to_owned(),
            truncated_alerts: 0,
            status: "firing".to_owned(),
            receiver: "mail".to_owned(),
            group_labels: [("alertname".to_owned(), "cpu_busy".to_owned())].into(),
            common_labels: Default::default(),
            common_annotations: Default::default(),
            external_url: String::new(),
            alerts: vec![
                alert("firing", "<b>99%</b> & more"),
                alert("resolved", "ok"),
            ],
        };
        assert_eq!(subject(&n), "[FIRING:1] cpu_busy");
        let html = html(&n);
        assert!(html.contains("&lt;b&gt;99%&lt;/b&gt; &amp; more"), "{html}");
        assert!(!html.contains("<b>99%"), "{html}");
        assert!(plain_text(&n).contains("[FIRING] cpu_busy on web1\n  summary: <b>99%</b> & more"));
        n.alerts[0]
            .annotations
            .insert("cause".to_owned(), "busy".to_owned());
        assert!(plain_text(&n).contains("summary: <b>99%</b> & more\n  cause: busy\n"));
        n.alerts.remove(0);
        assert_eq!(subject(&n), "[RESOLVED] cpu_busy");
    }
}
