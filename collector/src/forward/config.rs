//! `[[forward]]` sections: remote_write destinations as written, their
//! validation, and what the sender uses (client, headers, matchers).

use hostwatch_alerting::hooks::{HookTls, http_client};
use hostwatch_alerting::matcher::LabelMatcher;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One `[[forward]]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Names the destination in logs and counters, and its cursor in the
    /// store: renaming a destination starts it afresh.
    pub name: String,
    /// The receiver's remote_write endpoint (http or https).
    pub url: String,
    /// File holding a bearer token sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Over https: trust, client certificate (mTLS), lowest version.
    #[serde(default)]
    pub tls: Option<HookTls>,
    /// Extra headers on every request (`X-Scope-OrgID` for a tenant).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Label matchers (`name=value`, `!=`, `=~`, `!~`; `__name__` is the
    /// metric): only series matching all of them go. None: every series.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Longest one request may take, connection included.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// The remote_write version spoken: "1.0" (the default, what every
    /// receiver takes) or "2.0" (a symbol table per request; the receiver
    /// must take it).
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub queue: QueueConfig,
}

/// `protocol`: the remote_write version a destination speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// `WriteRequest` (`prometheus.WriteRequest`), remote_write 1.0.
    #[default]
    #[serde(rename = "1.0")]
    V1,
    /// `io.prometheus.write.v2.Request`, remote_write 2.0.
    #[serde(rename = "2.0")]
    V2,
}

/// `[forward.basic_auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// File holding the password.
    pub password_file: PathBuf,
}

/// `[forward.queue]`: how samples are grouped into requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Requests in flight at once; a series always goes through the same
    /// shard, so its samples arrive in order.
    pub shards: usize,
    /// Most samples in one request.
    pub max_samples_per_request: usize,
    /// A request is sent once its oldest sample waited this long, full or not.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Samples waiting per shard before reading from the store pauses.
    pub capacity: usize,
    /// First delay before a retry; it doubles per failure, with jitter ...
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// ... up to this.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            shards: 4,
            max_samples_per_request: 2_000,
            max_age: Duration::from_secs(5),
            capacity: 20_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Most shards of one destination.
const MAX_SHARDS: usize = 64;
/// Most samples in one request (Prometheus sends 2,000 by default).
const MAX_SAMPLES_PER_REQUEST: usize = 100_000;

/// Headers the sender sets itself: remote_write's, and authentication,
/// which has keys of its own (whose files are never logged).
const RESERVED_HEADERS: [&str; 7] = [
    "authorization",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// A destination ready to send to.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    pub(crate) name: String,
    pub(crate) url: reqwest::Url,
    pub(crate) client: reqwest::Client,
    /// Authentication and extra headers; `Authorization` is marked
    /// sensitive, so it is never shown.
    pub(crate) headers: HeaderMap,
    pub(crate) matchers: Vec<LabelMatcher>,
    pub(crate) protocol: Protocol,
    pub(crate) queue: QueueConfig,
    /// The section as written, to tell a reload what changed.
    pub(crate) section: ForwardConfig,
}

impl Destination {
    /// Whether a reload must restart the destination: its section, or
    /// the secrets its files held, changed.
    pub(crate) fn differs(&self, other: &Destination) -> bool {
        self.section != other.section || self.headers != other.headers
    }
}

/// A refused `[[forward]]` section: the error names the section and key.
fn refuse(name: &str, key: &str, message: impl std::fmt::Display) -> String {
    format!("forward[{name}].{key}: {message}")
}

impl ForwardConfig {
    /// Makes relative file names relative to `base` (the file's directory).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.bearer_token_file.as_mut() {
            resolve(p);
        }
        if let Some(auth) = self.basic_auth.as_mut() {
            resolve(&mut auth.password_file);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    /// Checks every key, reads the secret files and builds the client;
    /// the error names the section and the key, never a secret.
    pub(crate) fn compile(&self) -> Result<Destination, String> {
        let name = &self.name;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            return Err(format!(
                "forward.name {name:?}: 1 to 64 letters, digits, '_', '-' or '.'"
            ));
        }
        // The URL is not repeated: its path or query may hold a secret.
        let url = reqwest::Url::parse(&self.url).map_err(|e| refuse(name, "url", e))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(refuse(
                name,
                "url",
                "must be an http or https URL with a host",
            ));
        }
        let (zero, key) = [
            (self.timeout.is_zero(), "timeout"),
            (self.queue.max_age.is_zero(), "queue.max_age"),
            (self.queue.min_backoff.is_zero(), "queue.min_backoff"),
        ]
        .into_iter()
        .find(|(zero, _)| *zero)
        .unwrap_or((false, ""));
        if zero {
            return Err(refuse(name, key, "must be greater than zero"));
        }
        self.check_queue()?;
        let matchers = self
            .matchers
            .iter()
            .map(|m| LabelMatcher::parse(m).map_err(|e| refuse(name, "match", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tls = self.tls.clone().unwrap_or(HookTls {
            ca: None,
            cert: None,
            key: None,
            min_version: None,
        });
        // The receiver is not ours: TLS 1.2 is allowed unless the section
        // asks for 1.3 only.
        tls.min_version.get_or_insert_with(|| "1.2".to_owned());
        let client =
            http_client(Some(&tls), self.timeout).map_err(|e| refuse(name, &e.key, e.message))?;
        let headers = self.headers()?;
        Ok(Destination {
            name: name.clone(),
            url,
            client,
            headers,
            matchers,
            protocol: self.protocol,
            queue: self.queue.clone(),
            section: self.clone(),
        })
    }

    fn check_queue(&self) -> Result<(), String> {
        let (name, q) = (&self.name, &self.queue);
        if !(1..=MAX_SHARDS).contains(&q.shards) {
            return Err(refuse(
                name,
                "queue.shards",
                format!("must be 1 to {MAX_SHARDS}"),
            ));
        }
        if !(1..=MAX_SAMPLES_PER_REQUEST).contains(&q.max_samples_per_request) {
            return Err(refuse(
                name,
                "queue.max_samples_per_request",
                format!("must be 1 to {MAX_SAMPLES_PER_REQUEST}"),
            ));
        }
        if q.capacity < q.max_samples_per_request {
            return Err(refuse(
                name,
                "queue.capacity",
                "must be at least queue.max_samples_per_request",
            ));
        }
        if q.max_backoff < q.min_backoff {
            return Err(refuse(
                name,
                "queue.max_backoff",
                "must be at least queue.min_backoff",
            ));
        }
        Ok(())
    }

    /// Authentication and the extra headers.
    fn headers(&self) -> Result<HeaderMap, String> {
        let name = &self.name;
        let mut headers = HeaderMap::new();
        for (key, value) in &self.headers {
            let place = format!("headers.{key}");
            let header = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| refuse(name, &place, "not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(refuse(
                    name,
                    &place,
                    "set by the collector itself (authentication has keys of its own)",
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| refuse(name, &place, "not a valid header value"))?;
            headers.insert(header, value);
        }
        let authorization = match (&self.bearer_token_file, &self.basic_auth) {
            (Some(_), Some(_)) => {
                return Err(refuse(
                    name,
                    "bearer_token_file",
                    "cannot be used with basic_auth",
                ));
            }
            (Some(file), None) => {
                let token = read_secret(name, "bearer_token_file", file)?;
                Some(format!("Bearer {token}"))
            }
            (None, Some(auth)) => {
                if auth.username.is_empty() || auth.username.contains(':') {
                    return Err(refuse(
                        name,
                        "basic_auth.username",
                        "must be non-empty, without ':'",
                    ));
                }
                let password = read_secret(name, "basic_auth.password_file", &auth.password_file)?;
                let pair = format!("{}:{password}", auth.username);
                let encoded = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    pair.as_bytes(),
                );
                Some(format!("Basic {encoded}"))
            }
            (None, None) => None,
        };
        if let Some(text) = authorization {
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                refuse(
                    name,
                    "bearer_token_file",
                    "the secret holds characters a header cannot carry",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(headers)
    }
}

/// A secret file's text without surrounding whitespace; never quoted in errors.
fn read_secret(name: &str, key: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| refuse(name, key, format!("{}: {e}", path.display())))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(refuse(name, key, format!("{} is empty", path.display())));
    }
    if secret.bytes().any(|b| b.is_ascii_control()) {
        return Err(refuse(
            name,
            key,
            format!("{} holds control characters", path.display()),
        ));
    }
    Ok(secret.to_owned())
}

/// Checks every section, and that names are unique.
pub(crate) fn compile_all(sections: &[ForwardConfig]) -> Result<Vec<Destination>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(sections.len());
    for section in sections {
        if !seen.insert(section.name.as_str()) {
            return Err(format!(
                "forward.name {:?} is used by two sections",
                section.name
            ));
        }
        out.push(section.compile()?);
    }
    Ok(out)
}
