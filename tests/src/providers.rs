//! Stand-ins for PagerDuty, Opsgenie and Slack on loopback HTTPS, for the
//! collector's native hooks. Each checks every request against what the
//! provider documents (required fields, types, lengths, allowed values),
//! answers as the provider does (202 or 200, 400 or 422 with the
//! provider's error body, 429), and keeps what the provider would hold:
//! incidents by `dedup_key`, alerts by `alias`, messages. A request
//! breaking the schema is answered as the provider would and recorded as
//! a violation, which tests assert there are none of.
//!
//! Sources: PagerDuty Events API v2 (developer.pagerduty.com, "Send an
//! Alert Event"), Opsgenie Alert API (docs.opsgenie.com, "Alert API":
//! create and close), Slack incoming webhooks and Block Kit
//! (api.slack.com, "Sending messages using incoming webhooks", "Blocks").

use axum::http::{HeaderMap, StatusCode, Uri};
use hostwatch_pki::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Which provider a receiver stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    PagerDuty,
    Opsgenie,
    Slack,
}

/// One request a provider got, and the status it answered.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    /// Percent-decoded.
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub status: u16,
}

/// An incident (PagerDuty) or alert (Opsgenie) by its key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incident {
    /// Times it was opened (a trigger while it was not open).
    pub opened: u32,
    /// Triggers or creates accepted for it, the first included.
    pub events: u32,
    /// Times it was resolved or closed while open.
    pub closed: u32,
    pub open: bool,
}

#[derive(Default)]
struct Model {
    requests: Vec<ProviderRequest>,
    scripted: VecDeque<u16>,
    incidents: BTreeMap<String, Incident>,
    violations: Vec<String>,
}

/// A provider on loopback HTTPS (its certificate from the test CA).
pub struct ProviderReceiver {
    pub addr: SocketAddr,
    provider: Provider,
    /// PagerDuty's routing key, Opsgenie's API key, Slack's webhook path.
    secret: String,
    model: Arc<Mutex<Model>>,
    task: JoinHandle<()>,
}

impl ProviderReceiver {
    /// Starts `provider` on 127.0.0.1 with the server certificate of
    /// `files` (which must name localhost), accepting `secret`.
    pub async fn start(provider: Provider, files: &TlsFiles, secret: &str) -> Self {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let model: Arc<Mutex<Model>> = Arc::default();
        let app = {
            let (model, secret) = (model.clone(), secret.to_owned());
            axum::Router::new().fallback(
                move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                    let (model, secret) = (model.clone(), secret.clone());
                    async move {
                        let (status, answer, content_type) =
                            answer(provider, &secret, &model, &uri, headers, &body);
                        (
                            StatusCode::from_u16(status).unwrap(),
                            [(axum::http::header::CONTENT_TYPE, content_type)],
                            answer,
                        )
                    }
                },
            )
        };
        let listener = crate::TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ProviderReceiver {
            addr,
            provider,
            secret: secret.to_owned(),
            model,
            task,
        }
    }

    /// The URL a hook is given: the API's base (PagerDuty: its enqueue
    /// endpoint), or Slack's full webhook URL.
    pub fn url(&self) -> String {
        let base = format!("https://localhost:{}", self.addr.port());
        match self.provider {
            Provider::PagerDuty => format!("{base}/v2/enqueue"),
            Provider::Opsgenie => base,
            Provider::Slack => format!("{base}{}", self.secret),
        }
    }

    /// Answers the next requests with these statuses (and the provider's
    /// body for them) whatever they hold; then as the provider would.
    pub fn script(&self, statuses: &[u16]) {
        self.model.lock().unwrap().scripted.extend(statuses);
    }

    pub fn requests(&self) -> Vec<ProviderRequest> {
        self.model.lock().unwrap().requests.clone()
    }

    /// Requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<ProviderRequest> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Schema violations seen so far, one sentence each.
    pub fn violations(&self) -> Vec<String> {
        self.model.lock().unwrap().violations.clone()
    }

    /// PagerDuty's incidents by `dedup_key`, Opsgenie's alerts by `alias`.
    pub fn incidents(&self) -> BTreeMap<String, Incident> {
        self.model.lock().unwrap().incidents.clone()
    }
}

impl Drop for ProviderReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The status, body and content type for one request, recorded.
fn answer(
    provider: Provider,
    secret: &str,
    model: &Mutex<Model>,
    uri: &Uri,
    headers: HeaderMap,
    raw: &[u8],
) -> (u16, String, &'static str) {
    let mut model = model.lock().unwrap();
    let path = percent_decode(uri.path());
    let query = uri.query().unwrap_or("").to_owned();
    let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let scripted = model.scripted.pop_front();
    let (status, text, content_type) = match scripted {
        Some(status) => {
            let (text, content_type) = canned(provider, status);
            (status, text, content_type)
        }
        None => {
            let mut errors = Vec::new();
            let outcome = match provider {
                Provider::PagerDuty => pagerduty(secret, &path, &headers, &body, &mut errors),
                Provider::Opsgenie => opsgenie(secret, &path, &query, &headers, &body, &mut errors),
                Provider::Slack => slack(secret, &path, &body, &mut errors),
            };
            for e in &errors {
                model.violations.push(format!("{provider:?} {path}: {e}"));
            }
            match outcome {
                Ok(change) => {
                    if let Some((key, open)) = change {
                        let incident = model.incidents.entry(key.clone()).or_default();
                        if open {
                            if !incident.open {
                                incident.opened += 1;
                                incident.open = true;
                            }
                            incident.events += 1;
                        } else if incident.open {
                            incident.open = false;
                            incident.closed += 1;
                        }
                    }
                    success(provider, &body)
                }
                Err(status) => {
                    let (text, content_type) = refusal(provider, status, &errors);
                    (status, text, content_type)
                }
            }
        }
    };
    model.requests.push(ProviderRequest {
        path,
        query,
        headers,
        body,
        status,
    });
    (status, text, content_type)
}

/// What a change does to the provider's incidents: (key, opens) or
/// nothing; or the refusing status.
type Change = Result<Option<(String, bool)>, u16>;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

fn success(provider: Provider, body: &Value) -> (u16, String, &'static str) {
    match provider {
        Provider::PagerDuty => (
            202,
            json!({"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]})
                .to_string(),
            JSON,
        ),
        Provider::Opsgenie => (
            202,
            json!({"result": "Request will be processed", "took": 0.012, "requestId": "43a29c5c-3dbf-4fa4-9c26-f4f71023e120"})
                .to_string(),
            JSON,
        ),
        Provider::Slack => (200, "ok".to_owned(), TEXT),
    }
}

fn refusal(provider: Provider, status: u16, errors: &[String]) -> (String, &'static str) {
    match provider {
        Provider::PagerDuty => (
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
                .to_string(),
            JSON,
        ),
        Provider::Opsgenie => {
            let errors: Map<String, Value> = errors
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("error{i}"), json!(e)))
                .collect();
            (
                json!({"message": "Request body is not processable. Please check the errors.", "errors": errors, "took": 0.001, "requestId": "0c1c5c4e-8f5a-4a0f-9f7e-3c0c7f0b5d2e"})
                    .to_string(),
                JSON,
            )
        }
        Provider::Slack => (
            match status {
                404 => "no_service",
                403 => "invalid_token",
                _ => "invalid_blocks",
            }
            .to_owned(),
            TEXT,
        ),
    }
}

/// The provider's answer with `status`, whatever the request held.
fn canned(provider: Provider, status: u16) -> (String, &'static str) {
    match (provider, status) {
        (_, 429) => match provider {
            Provider::Slack => ("rate_limited".to_owned(), TEXT),
            _ => (
                json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."})
                    .to_string(),
                JSON,
            ),
        },
        (_, 400) => refusal(
            provider,
            400,
            &["Length of 'summary' is incorrect (scripted refusal)".to_owned()],
        ),
        _ => (String::new(), TEXT),
    }
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// `object[key]`, if present, is a string of `min..=max` characters.
fn string(errors: &mut Vec<String>, object: &Value, key: &str, min: usize, max: usize) {
    match object.get(key) {
        None => {
            if min > 0 {
                errors.push(format!("'{key}' is required"));
            }
        }
        Some(v) if !v.is_string() => errors.push(format!("'{key}' must be a string, got {v}")),
        Some(v) if chars(v) < min || chars(v) > max => errors.push(format!(
            "length of '{key}' is {} (allowed {min} to {max})",
            chars(v)
        )),
        Some(_) => {}
    }
}

fn only_keys(errors: &mut Vec<String>, object: &Value, what: &str, allowed: &[&str]) {
    match object.as_object() {
        Some(map) => {
            for key in map.keys() {
                if !allowed.contains(&key.as_str()) {
                    errors.push(format!("unknown field '{key}' in {what}"));
                }
            }
        }
        None => errors.push(format!("{what} must be an object")),
    }
}

fn one_of(errors: &mut Vec<String>, object: &Value, key: &str, values: &[&str]) {
    match object.get(key).and_then(Value::as_str) {
        Some(v) if values.contains(&v) => {}
        other => errors.push(format!("'{key}' must be one of {values:?}, got {other:?}")),
    }
}

fn rfc3339(errors: &mut Vec<String>, object: &Value, key: &str) {
    if let Some(v) = object.get(key) {
        let ok = v.as_str().is_some_and(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        });
        if !ok {
            errors.push(format!("'{key}' must be an ISO 8601 date, got {v}"));
        }
    }
}

/// PagerDuty Events API v2, `POST /v2/enqueue`.
fn pagerduty(
    secret: &str,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    errors: &mut Vec<String>,
) -> Change {
    if path != "/v2/enqueue" {
        errors.push(format!("no such endpoint {path}"));
        return Err(404);
    }
    if !headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        errors.push("Content-Type must be application/json".to_owned());
    }
    only_keys(
        errors,
        body,
        "the event",
        &[
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ],
    );
    string(errors, body, "routing_key", 32, 32);
    if body["routing_key"].is_string() && body["routing_key"] != secret {
        errors.push("'routing_key' is not this integration's".to_owned());
    }
    one_of(
        errors,
        body,
        "event_action",
        &["trigger", "acknowledge", "resolve"],
    );
    let action = body["event_action"].as_str().unwrap_or("");
    string(
        errors,
        body,
        "dedup_key",
        usize::from(action != "trigger"),
        255,
    );
    if action == "trigger" {
        let payload = &body["payload"];
        only_keys(
            errors,
            payload,
            "payload",
            &[
                "summary",
                "source",
                "severity",
                "timestamp",
                "component",
                "group",
                "class",
                "custom_details",
            ],
        );
        string(errors, payload, "summary", 1, 1024);
        string(errors, payload, "source", 1, 255);
        one_of(
            errors,
            payload,
            "severity",
            &["critical", "error", "warning", "info"],
        );
        rfc3339(errors, payload, "timestamp");
        for key in ["component", "group", "class"] {
            string(errors, payload, key, 0, 255);
        }
        if payload
            .get("custom_details")
            .is_some_and(|d| !d.is_object())
        {
            errors.push("'custom_details' must be an object".to_owned());
        }
    }
    if let Some(links) = body.get("links") {
        match links.as_array() {
            Some(links) => {
                for link in links {
                    only_keys(errors, link, "a link", &["href", "text"]);
                    string(errors, link, "href", 1, 2048);
                    string(errors, link, "text", 0, 1024);
                }
            }
            None => errors.push("'links' must be an array".to_owned()),
        }
    }
    string(errors, body, "client", 0, 255);
    string(errors, body, "client_url", 0, 2048);
    if !errors.is_empty() {
        return Err(400);
    }
    let key = body["dedup_key"].as_str().unwrap_or("generated").to_owned();
    Ok(match action {
        "trigger" => Some((key, true)),
        "resolve" => Some((key, false)),
        _ => None,
    })
}

/// Opsgenie Alert API: create (`POST /v2/alerts`) and close
/// (`POST /v2/alerts/{identifier}/close`).
fn opsgenie(
    secret: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Value,
    errors: &mut Vec<String>,
) -> Change {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("GenieKey {secret}") {
        errors.push("Authorization must be 'GenieKey <the integration's API key>'".to_owned());
        return Err(401);
    }
    if path == "/v2/alerts" {
        only_keys(
            errors,
            body,
            "the alert",
            &[
                "message",
                "alias",
                "description",
                "responders",
                "visibleTo",
                "actions",
                "tags",
                "details",
                "entity",
                "source",
                "priority",
                "user",
                "note",
            ],
        );
        string(errors, body, "message", 1, 130);
        string(errors, body, "alias", 0, 512);
        string(errors, body, "description", 0, 15_000);
        string(errors, body, "entity", 0, 512);
        string(errors, body, "source", 0, 100);
        string(errors, body, "user", 0, 100);
        string(errors, body, "note", 0, 25_000);
        if body.get("priority").is_some() {
            one_of(errors, body, "priority", &["P1", "P2", "P3", "P4", "P5"]);
        }
        for (key, most, longest) in [("tags", 20, 50), ("actions", 10, 50)] {
            if let Some(v) = body.get(key) {
                match v.as_array() {
                    Some(items)
                        if items.len() <= most
                            && items.iter().all(|i| i.is_string() && chars(i) <= longest) => {}
                    _ => errors.push(format!(
                        "'{key}' must be at most {most} strings of at most {longest} characters"
                    )),
                }
            }
        }
        if let Some(details) = body.get("details") {
            let total: usize = details.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, v)| k.chars().count() + chars(v))
                    .sum::<usize>()
            });
            let strings = details
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !strings || total > 8000 {
                errors.push(
                    "'details' must map strings to strings, 8000 characters in all".to_owned(),
                );
            }
        }
        if !errors.is_empty() {
            return Err(422);
        }
        let alias = body
            .get("alias")
            .or(body.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        return Ok(Some((alias, true)));
    }
    let close = path
        .strip_prefix("/v2/alerts/")
        .and_then(|rest| rest.strip_suffix("/close"))
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let Some(identifier) = close else {
        errors.push(format!("no such endpoint {path}"));
        return Err(404);
    };
    let identifier_type = query
        .split('&')
        .find_map(|p| p.strip_prefix("identifierType="))
        .unwrap_or("id");
    if !["id", "tiny", "alias"].contains(&identifier_type) {
        errors.push(format!("identifierType {identifier_type:?} is unknown"));
    }
    if !body.is_null() {
        only_keys(
            errors,
            body,
            "the close request",
            &["user", "source", "note"],
        );
        string(errors, body, "user", 0, 100);
        string(errors, body, "source", 0, 100);
        string(errors, body, "note", 0, 25_000);
    }
    if !errors.is_empty() {
        return Err(422);
    }
    if identifier_type != "alias" {
        // A close by id: these tests only ever close by alias.
        errors.push("closed by id, not by alias".to_owned());
        return Ok(None);
    }
    Ok(Some((identifier.to_owned(), false)))
}

/// A Slack incoming webhook.
fn slack(secret: &str, path: &str, body: &Value, errors: &mut Vec<String>) -> Change {
    if path != secret {
        errors.push("no such webhook".to_owned());
        return Err(404);
    }
    only_keys(
        errors,
        body,
        "the message",
        &[
            "text",
            "blocks",
            "attachments",
            "thread_ts",
            "mrkdwn",
            "username",
            "icon_emoji",
        ],
    );
    let has_content = ["text", "blocks", "attachments"]
        .iter()
        .any(|k| body.get(*k).is_some());
    if !has_content {
        errors.push("a message needs text, blocks or attachments".to_owned());
    }
    string(errors, body, "text", 0, 40_000);
    if let Some(blocks) = body.get("blocks") {
        check_blocks(errors, blocks);
    }
    if let Some(attachments) = body.get("attachments") {
        match attachments.as_array() {
            Some(list) if list.len() <= 100 => {
                for a in list {
                    only_keys(
                        errors,
                        a,
                        "an attachment",
                        &["color", "blocks", "fallback", "text"],
                    );
                    if let Some(colour) = a.get("color").and_then(Value::as_str) {
                        let hex = colour.len() == 7
                            && colour.starts_with('#')
                            && colour[1..].bytes().all(|b| b.is_ascii_hexdigit());
                        if !hex && !["good", "warning", "danger"].contains(&colour) {
                            errors.push(format!("attachment color {colour:?} is not #RRGGBB"));
                        }
                    }
                    if let Some(blocks) = a.get("blocks") {
                        check_blocks(errors, blocks);
                    }
                }
            }
            _ => errors.push("'attachments' must be an array of at most 100".to_owned()),
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(400)
    }
}

/// A text object: plain_text or mrkdwn, 1 to `max` characters.
fn text_object(errors: &mut Vec<String>, what: &str, v: &Value, max: usize, plain_only: bool) {
    let kinds: &[&str] = if plain_only {
        &["plain_text"]
    } else {
        &["plain_text", "mrkdwn"]
    };
    one_of(errors, v, "type", kinds);
    only_keys(errors, v, what, &["type", "text", "emoji", "verbatim"]);
    string(errors, v, "text", 1, max);
}

fn check_blocks(errors: &mut Vec<String>, blocks: &Value) {
    let Some(list) = blocks.as_array().filter(|l| l.len() <= 50) else {
        errors.push("'blocks' must be an array of at most 50".to_owned());
        return;
    };
    for block in list {
        match block["type"].as_str() {
            Some("header") => {
                only_keys(
                    errors,
                    block,
                    "a header block",
                    &["type", "text", "block_id"],
                );
                text_object(errors, "a header's text", &block["text"], 150, true);
            }
            Some("section") => {
                only_keys(
                    errors,
                    block,
                    "a section block",
                    &["type", "text", "fields", "accessory", "block_id"],
                );
                if block.get("text").is_none() && block.get("fields").is_none() {
                    errors.push("a section needs text or fields".to_owned());
                }
                if let Some(text) = block.get("text") {
                    text_object(errors, "a section's text", text, 3000, false);
                }
                if let Some(fields) = block.get("fields") {
                    match fields.as_array() {
                        Some(f) if !f.is_empty() && f.len() <= 10 => {
                            for field in f {
                                text_object(errors, "a field", field, 2000, false);
                            }
                        }
                        _ => errors.push("'fields' must hold 1 to 10 text objects".to_owned()),
                    }
                }
            }
            Some("context") => {
                only_keys(
                    errors,
                    block,
                    "a context block",
                    &["type", "elements", "block_id"],
                );
                match block["elements"].as_array() {
                    Some(e) if !e.is_empty() && e.len() <= 10 => {
                        for element in e {
                            text_object(errors, "a context element", element, 3000, false);
                        }
                    }
                    _ => errors.push("a context needs 1 to 10 elements".to_owned()),
                }
            }
            Some("actions") => {
                only_keys(
                    errors,
                    block,
                    "an actions block",
                    &["type", "elements", "block_id"],
                );
                match block["elements"].as_array() {
                    Some(e) if !e.is_empty() && e.len() <= 25 => {
                        for button in e {
                            one_of(errors, button, "type", &["button"]);
                            only_keys(
                                errors,
                                button,
                                "a button",
                                &["type", "text", "url", "action_id", "value", "style"],
                            );
                            text_object(errors, "a button's text", &button["text"], 75, true);
                            string(errors, button, "url", 0, 3000);
                        }
                    }
                    _ => errors.push("an actions block needs 1 to 25 elements".to_owned()),
                }
            }
            Some("divider") => only_keys(errors, block, "a divider", &["type", "block_id"]),
            other => errors.push(format!("unknown block type {other:?}")),
        }
    }
}
