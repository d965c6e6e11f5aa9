//! The e-mail hook against a real SMTP server on loopback: Python's
//! aiosmtpd (`tests/smtp/server.py`, installed by `tests/smtp/install.sh`
//! into a virtual environment under the target directory), with STARTTLS
//! or implicit TLS on a certificate from a test CA, and authentication.
//! Without that environment the tests that need the server say so and
//! pass without running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use hostwatch_stdx::now_ms;
use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);
/// Every test's SMTP password; the log test checks it never shows.
const PASSWORD: &str = "correct-horse-SMTP-secret-7e1f";
const USER: &str = "hostwatch";

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The virtual environment's Python, if `tests/smtp/install.sh` ran.
fn python() -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent()?;
    let python = target.join("smtp-venv/bin/python");
    if python.is_file() {
        Some(python)
    } else {
        // .ci/run installs it: in CI a missing one is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing in CI: crates/alerting/tests/smtp/install.sh did not run",
            python.display()
        );
        eprintln!(
            "SKIPPED: {} is missing; run crates/alerting/tests/smtp/install.sh (CI does)",
            python.display()
        );
        None
    }
}

/// A test CA and a server certificate for localhost and 127.0.0.1, in `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = hostwatch_pki::Ca::generate("smtp test", 1).unwrap();
    let server = hostwatch_pki::Identity::new(hostwatch_pki::Role::Collector, "smtp").unwrap();
    let (cert, key) = ca
        .issue(
            &server,
            &hostwatch_pki::IssueOptions::valid_for_days(1).with_local_names(None),
        )
        .unwrap()
        .write(dir, "smtp")
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    (ca_file, cert, key)
}

/// aiosmtpd on 127.0.0.1, recording what it receives.
struct SmtpServer {
    port: u16,
    records: Arc<Mutex<Vec<Value>>>,
    _child: tokio::process::Child,
    reader: JoinHandle<()>,
}

impl SmtpServer {
    async fn start(python: &Path, cert: &Path, key: &Path, mode: &str, refuse_auth: u32) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/server.py");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .args(["--cert".as_ref(), cert.as_os_str()])
            .args(["--key".as_ref(), key.as_os_str()])
            .args(["--mode", mode, "--user", USER, "--password", PASSWORD])
            .args(["--refuse-auth", &refuse_auth.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the SMTP server did not start")
            .unwrap()
            .expect("the SMTP server exited");
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        let records = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let records = records.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    records
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&line).unwrap());
                }
            })
        };
        SmtpServer {
            port,
            records,
            _child: child,
            reader,
        }
    }

    fn messages(&self) -> Vec<Value> {
        let records = self.records.lock().unwrap();
        records
            .iter()
            .filter(|r| r.get("headers").is_some())
            .cloned()
            .collect()
    }

    fn refusals(&self) -> usize {
        let records = self.records.lock().unwrap();
        records
            .iter()
            .filter(|r| r.get("auth_refused").is_some())
            .count()
    }

    async fn wait_for(&self, count: usize) -> Vec<Value> {
        eventually(&format!("{count} messages"), || async {
            let messages = self.messages();
            (messages.len() >= count).then_some(messages)
        })
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// An engine whose batches are numbered after those of an earlier run of
/// the same host.
fn start_engine(db: &sled::Db, text: &str) -> Engine {
    Engine::start_after(db, text, now_ms() as u64)
}

/// A CPU rule and an e-mail hook to `port`, trusting `ca`, with the
/// password in `password_file`.
fn config(port: u16, ca: &Path, password_file: &Path, mode: &str) -> String {
    format!(
        r#"
[alerting]
default_rules = false
flap_window = "0s"
external_url = "https://hostwatch.example.com"
[[alerting.rules]]
name = "cpu_busy"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
op = ">"
raise = 0.9
labels = {{ severity = "warning" }}
annotations = {{ summary = "CPU of {{{{ host }}}} at {{{{ value | percent }}}} <hot>" }}
[[alerting.hooks]]
name = "mail"
kind = "email"
smarthost = "127.0.0.1:{port}"
encryption = "{mode}"
from = "Hostwatch <alerts@example.com>"
to = ["oncall@example.com", "Ops <ops@example.org>"]
hello = "collector.example.com"
auth_username = "{USER}"
auth_password_file = "{}"
group_wait = "0s"
group_interval = "0s"
min_backoff = "50ms"
max_backoff = "200ms"
[alerting.hooks.tls]
ca = "{}"
"#,
        password_file.display(),
        ca.display()
    )
}

fn temp_db(dir: &Path) -> sled::Db {
    sled::open(dir.join("db")).unwrap()
}

fn header<'a>(message: &'a Value, name: &str) -> &'a str {
    message["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} header in {message:#}"))
}

#[tokio::test]
async fn starttls_messages_arrive_with_both_parts_and_the_resolution_threads_to_the_page() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let password = dir.path().join("smtp.password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let server = SmtpServer::start(&python, &cert, &key, "starttls", 0).await;
    let text = config(server.port, &ca, &password, "starttls");
    let db = temp_db(dir.path());
    let mut engine = start_engine(&db, &text);
    engine.cpu("web1", now_ms(), 0.99);
    let firing = server.wait_for(1).await.remove(0);
    assert_eq!(firing["mail_from"], "alerts@example.com");
    assert_eq!(
        firing["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "ops@example.org"])
    );
    assert_eq!(firing["login"], USER);
    assert_eq!(firing["content_type"], "multipart/alternative");
    assert_eq!(header(&firing, "Subject"), "[FIRING:1] cpu_busy web1");
    assert_eq!(header(&firing, "From"), "Hostwatch <alerts@example.com>");
    assert!(header(&firing, "To").contains("Ops <ops@example.org>"));
    assert!(!header(&firing, "Date").is_empty());
    let id = header(&firing, "Message-ID").to_owned();
    assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
    assert!(firing["headers"].get("In-Reply-To").is_none(), "{firing:#}");
    let plain = firing["parts"]["text/plain"].as_str().unwrap();
    assert!(plain.contains("[FIRING] cpu_busy on web1"), "{plain}");
    assert!(
        plain.contains("summary: CPU of web1 at 99% <hot>"),
        "{plain}"
    );
    let html = firing["parts"]["text/html"].as_str().unwrap();
    assert!(html.contains("CPU of web1 at 99% &lt;hot&gt;"), "{html}");
    assert!(
        html.contains("https://hostwatch.example.com/alerts/"),
        "{html}"
    );

    // A restart between the page and its resolution: the thread is kept
    // with what the hook was told.
    engine.until_delivered("mail").await;
    engine.stop().await;
    let mut engine = start_engine(&db, &text);
    engine.cpu("web1", now_ms(), 0.1);
    let resolved = server.wait_for(2).await.remove(1);
    assert_eq!(header(&resolved, "Subject"), "[RESOLVED] cpu_busy web1");
    assert_eq!(header(&resolved, "In-Reply-To"), id);
    assert_eq!(header(&resolved, "References"), id);
    assert_ne!(header(&resolved, "Message-ID"), id);
    let plain = resolved["parts"]["text/plain"].as_str().unwrap();
    assert!(plain.contains("[RESOLVED] cpu_busy on web1"), "{plain}");
    assert!(resolved["parts"]["text/html"].is_string());

    // A new episode starts a new thread.
    engine.cpu("web1", now_ms(), 0.99);
    let again = server.wait_for(3).await.remove(2);
    assert!(again["headers"].get("In-Reply-To").is_none(), "{again:#}");
    engine.stop().await;
}

#[tokio::test]
async fn implicit_tls_delivers_and_an_unknown_ca_is_refused() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let password = dir.path().join("smtp.password");
    std::fs::write(&password, PASSWORD).unwrap();
    let server = SmtpServer::start(&python, &cert, &key, "implicit", 0).await;

    // Trusting another CA: no message gets through.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = certificates(other.path());
    let db = temp_db(dir.path());
    let mut engine = start_engine(&db, &config(server.port, &other_ca, &password, "implicit"));
    engine.cpu("web1", now_ms(), 0.99);
    eventually("a failed attempt", || async {
        let stats = engine.alerting.delivery_stats();
        stats
            .get("mail")
            .is_some_and(|s| s.retried >= 2)
            .then_some(())
    })
    .await;
    assert!(server.messages().is_empty());
    engine.stop().await;

    // Trusting the right one, the queued page goes out.
    let mut engine = start_engine(&db, &config(server.port, &ca, &password, "implicit"));
    let messages = server.wait_for(1).await;
    assert_eq!(header(&messages[0], "Subject"), "[FIRING:1] cpu_busy web1");
    assert_eq!(messages[0]["login"], USER);
    engine.cpu("web1", now_ms(), 0.5);
    engine.stop().await;
}

/// A log writer into memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refused_authentication_is_a_clear_error_retried_and_the_password_is_never_logged() {
    let Some(python) = python() else { return };
    // The process-wide subscriber: it sees every test's lines, and none may
    // carry the password.
    let log = LogBuffer::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let password = dir.path().join("smtp.password");
    std::fs::write(&password, PASSWORD).unwrap();
    let server = SmtpServer::start(&python, &cert, &key, "starttls", 2).await;
    let db = temp_db(dir.path());
    let mut engine = start_engine(&db, &config(server.port, &ca, &password, "starttls"));
    engine.cpu("web1", now_ms(), 0.99);
    let messages = server.wait_for(1).await;
    assert_eq!(server.refusals(), 2);
    assert_eq!(header(&messages[0], "Subject"), "[FIRING:1] cpu_busy web1");
    engine.stop().await;
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("authentication refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    for line in refused {
        assert!(line.contains("will retry"), "{line}");
        assert!(line.contains("535"), "{line}");
        assert!(
            line.contains(&format!("127.0.0.1:{}", server.port)),
            "{line}"
        );
    }
    assert!(!text.contains(PASSWORD), "the password was logged:\n{text}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_retried_after_the_timeout() {
    // Takes connections and says nothing, not even its greeting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = certificates(dir.path());
    let password = dir.path().join("smtp.password");
    std::fs::write(&password, PASSWORD).unwrap();
    let text = config(port, &ca, &password, "starttls").replace(
        "group_wait = \"0s\"",
        "group_wait = \"0s\"\ntimeout = \"200ms\"",
    );
    let db = temp_db(dir.path());
    let mut engine = start_engine(&db, &text);
    engine.cpu("web1", now_ms(), 0.99);
    eventually("two attempts timed out", || async {
        let stats = engine.alerting.delivery_stats();
        stats
            .get("mail")
            .is_some_and(|s| s.retried >= 2 && s.delivered == 0 && s.failed == 0)
            .then_some(())
    })
    .await;
    assert_eq!(engine.alerting.outbox_depth().get("mail"), Some(&1));
    engine.stop().await;
    silent.abort();
}
