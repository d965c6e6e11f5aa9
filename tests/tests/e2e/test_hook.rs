//! `hostwatch alerts test-hook` against real receivers: a webhook gets the
//! test alert and its resolution; PagerDuty's and Opsgenie's stand-ins
//! open an incident that the resolution closes, Slack's gets both
//! messages; a receiver that refuses, one that is down and a hook that
//! does not exist each end in a non-zero exit that says why; a viewer may
//! not send tests. The e-mail hook's test reaches a real SMTP server
//! (aiosmtpd) marked as a test, and the CLI prints the server's answer.
//! The console's endpoint sends the same test: to
//! operators with their CSRF token only, its receiver's answer or error
//! in a 200, an unknown hook a 404.

use super::sessions::{client, get, session};
use super::silences::{Via, send};
use super::tokens::{Collector, create, hostwatch, hostwatch_as, text};
use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::Role as Wire;
use hostwatch_tests::providers::{Provider, ProviderReceiver};
use hostwatch_tests::*;
use serde_json::{Value, json};

const ROUTING_KEY: &str = "TestHookRoutingKey0123456789abcd";
const API_KEY: &str = "7e57h00c-0b1c-4d5e-8f90-a1b2c3d4e5f6";
const SLACK_PATH: &str = "/services/TTEST0001/BTEST0001/testHookSlackPathXyZ";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_notification_reaches_each_receiver_and_its_answer_is_printed() {
    let pki = TestPki::new();
    let webhook = WebhookReceiver::start().await;
    let refusing = WebhookReceiver::start().await;
    refusing.answer(400);
    let provider_tls = pki.files(Role::Collector, "providers");
    let pd = ProviderReceiver::start(Provider::PagerDuty, &provider_tls, ROUTING_KEY).await;
    let og = ProviderReceiver::start(Provider::Opsgenie, &provider_tls, API_KEY).await;
    let slack = ProviderReceiver::start(Provider::Slack, &provider_tls, SLACK_PATH).await;
    let (data, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = work.path().join("pd.key");
    std::fs::write(&key_file, ROUTING_KEY).unwrap();
    let api_key_file = work.path().join("og.key");
    std::fs::write(&api_key_file, API_KEY).unwrap();
    let slack_url_file = work.path().join("slack.url");
    std::fs::write(&slack_url_file, slack.url()).unwrap();
    let extra = format!(
        r#"
[alerting]
default_rules = false
[[alerting.hooks]]
name = "wh"
kind = "webhook"
url = "http://{webhook}/hook"
[[alerting.hooks]]
name = "refusing"
kind = "webhook"
url = "http://{refusing}/hook"
[[alerting.hooks]]
name = "down"
kind = "webhook"
url = "http://127.0.0.1:{down}/hook"
timeout = "2s"
[[alerting.hooks]]
name = "pd"
kind = "pagerduty"
routing_key_file = {key_file:?}
url = {pd_url:?}
[alerting.hooks.tls]
ca = {ca:?}
[[alerting.hooks]]
name = "og"
kind = "opsgenie"
api_key_file = {api_key_file:?}
url = {og_url:?}
[alerting.hooks.tls]
ca = {ca:?}
[[alerting.hooks]]
name = "slack"
kind = "slack"
webhook_url_file = {slack_url_file:?}
[alerting.hooks.tls]
ca = {ca:?}
"#,
        webhook = webhook.addr,
        refusing = refusing.addr,
        down = free_port(),
        pd_url = pd.url(),
        og_url = og.url(),
        ca = pki.ca_path(),
    );
    let collector = Collector::start_with(&pki, data.path(), &extra).await;
    let grpc = collector.grpc;
    let run = |args: &'static [&'static str]| hostwatch(&pki, grpc, work.path(), args);

    // A webhook: the test alert, then its resolution, with the same labels.
    let out = run(&["alerts", "test-hook", "wh"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.starts_with("wh: delivered: HTTP 200"), "{printed}");
    let (labels, annotations) = webhook
        .find("HostwatchTestNotification", "firing")
        .expect("the firing test alert");
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .starts_with("Test notification from hostwatch"),
        "{annotations}"
    );
    let out = run(&["alerts", "test-hook", "wh", "--resolve"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (resolved, _) = webhook
        .find("HostwatchTestNotification", "resolved")
        .expect("the resolved test alert");
    assert_eq!(resolved, labels);

    // PagerDuty: the test opens an incident and its resolution closes it.
    let out = run(&["alerts", "test-hook", "pd"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("pd: delivered: HTTP 202"));
    let out = run(&["alerts", "test-hook", "pd", "--resolve", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["result"], "delivered", "{answer}");
    let events = pd.accepted();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e.body["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    assert_eq!(events[0].body["dedup_key"], events[1].body["dedup_key"]);
    let incidents = pd.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = incidents.values().next().unwrap();
    assert_eq!(
        (incident.opened, incident.closed, incident.open),
        (1, 1, false)
    );
    assert_eq!(pd.violations(), Vec::<String>::new());

    // Opsgenie: created, then closed by its alias; Slack: both messages.
    for hook in ["og", "slack"] {
        for args in [
            &["alerts", "test-hook", hook][..],
            &["alerts", "test-hook", hook, "--resolve"][..],
        ] {
            let out = hostwatch(&pki, grpc, work.path(), args).await;
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            let printed = text(&out.stdout);
            assert!(
                printed.starts_with(&format!("{hook}: delivered: HTTP 20")),
                "{printed}"
            );
            for secret in [API_KEY, SLACK_PATH] {
                assert!(!printed.contains(secret), "{printed}");
            }
        }
    }
    let created = og.accepted();
    assert_eq!(created.len(), 2, "{created:?}");
    let alias = created[0].body["alias"].as_str().unwrap();
    assert_eq!(created[1].path, format!("/v2/alerts/{alias}/close"));
    let incidents = og.incidents();
    let incident = &incidents[alias];
    assert_eq!(
        (incident.opened, incident.closed, incident.open),
        (1, 1, false)
    );
    let messages = slack.accepted();
    assert_eq!(messages.len(), 2);
    assert!(messages[1].body.to_string().contains("[RESOLVED]"));
    for receiver in [&og, &slack] {
        assert_eq!(receiver.violations(), Vec::<String>::new());
    }

    // What is not delivered fails, saying why.
    for (args, expected) in [
        (
            &["alerts", "test-hook", "refusing"][..],
            "refusing: refused: HTTP 400",
        ),
        (
            &["alerts", "test-hook", "down"][..],
            "down: not delivered (a retry might succeed)",
        ),
        (&["alerts", "test-hook", "nope"][..], "no hook named"),
    ] {
        let out = hostwatch(&pki, grpc, work.path(), args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(refusing.received().len(), 1);

    // Viewers read; they do not send.
    let out = hostwatch_as(
        &pki,
        Role::Viewer,
        grpc,
        work.path(),
        &["alerts", "test-hook", "wh"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).to_lowercase().contains("permission"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(webhook.received().len(), 2);
    collector.stop().await;
}

/// The console's test of `hook` (`body` as JSON, none when `None`).
async fn console_test(
    client: &reqwest::Client,
    http: std::net::SocketAddr,
    via: Via<'_>,
    hook: &str,
    body: Option<Value>,
) -> super::sessions::Answer {
    let path = format!("/api/v1/hostwatch/hooks/{hook}/test");
    send(client, http, reqwest::Method::POST, &path, via, body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_endpoint_sends_the_same_test_for_operators_only() {
    let pki = TestPki::new();
    let webhook = WebhookReceiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[alerting]
default_rules = false
[[alerting.hooks]]
name = "wh"
kind = "webhook"
url = "http://{webhook}/hook"
[[alerting.hooks]]
name = "down"
kind = "webhook"
url = "http://127.0.0.1:{down}/hook"
timeout = "2s"
"#,
        webhook = webhook.addr,
        down = free_port(),
    );
    let collector = Collector::start_with(&pki, data.path(), &extra).await;
    let http = collector.http;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let viewer_token = create(&mut admin, "watcher", Wire::Viewer, 0)
        .await
        .unwrap()
        .token;
    let operator_token = create(&mut admin, "scripts", Wire::Operator, 0)
        .await
        .unwrap()
        .token;

    // Any role lists the hooks, by name and kind.
    let script = client(&pki, None, http);
    let (cookie, viewer_csrf) = session(&script, http, &viewer_token).await;
    let listed = get(&script, http, "/api/v1/hostwatch/hooks", &cookie).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.body["data"],
        json!([{"name": "wh", "kind": "webhook"}, {"name": "down", "kind": "webhook"}])
    );

    // An operator's browser needs its CSRF token; a viewer may not test,
    // by session, token or certificate.
    let alice = client(&pki, Some(&pki.files(Role::Operator, "alice")), http);
    let who = get(&alice, http, "/api/v1/session", "").await;
    let csrf = who.body["data"]["csrfToken"].as_str().unwrap().to_owned();
    let browser = |csrf| Via::Browser { cookie: "", csrf };
    let firing = Some(json!({"resolve": false}));
    console_test(&alice, http, browser(None), "wh", firing.clone())
        .await
        .assert_error(403, "forbidden", "missing X-CSRF-Token");
    console_test(&alice, http, browser(Some("AAAA")), "wh", firing.clone())
        .await
        .assert_error(403, "forbidden", "does not match");
    let viewer = Via::Browser {
        cookie: &cookie,
        csrf: Some(&viewer_csrf),
    };
    console_test(&script, http, viewer, "wh", firing.clone())
        .await
        .assert_error(403, "forbidden", "needs the operator role");
    console_test(
        &script,
        http,
        Via::Bearer(&viewer_token),
        "wh",
        firing.clone(),
    )
    .await
    .assert_error(403, "forbidden", "the viewer role");
    let val = client(&pki, Some(&pki.files(Role::Viewer, "val")), http);
    let val_csrf = get(&val, http, "/api/v1/session", "").await.body["data"]["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    console_test(&val, http, browser(Some(&val_csrf)), "wh", firing.clone())
        .await
        .assert_error(403, "forbidden", "needs the operator role");
    assert!(webhook.received().is_empty(), "{:?}", webhook.received());

    // An unknown hook and bad bodies name the problem.
    console_test(&alice, http, browser(Some(&csrf)), "nope", firing.clone())
        .await
        .assert_error(404, "not_found", "no hook named \"nope\"");
    console_test(
        &alice,
        http,
        browser(Some(&csrf)),
        "wh",
        Some(json!({"resolve": "yes"})),
    )
    .await
    .assert_error(400, "bad_data", "invalid type");
    console_test(
        &alice,
        http,
        browser(Some(&csrf)),
        "wh",
        Some(json!({"hook": "wh"})),
    )
    .await
    .assert_error(400, "bad_data", "unknown field `hook`");
    console_test(&alice, http, browser(Some(&csrf)), "wh", None)
        .await
        .assert_error(400, "bad_data", "send a JSON body");
    assert!(webhook.received().is_empty());

    // The test alert, then its resolution (by an operator's token): the
    // receiver's answer comes back.
    let sent = console_test(&alice, http, browser(Some(&csrf)), "wh", firing.clone()).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let data = &sent.body["data"];
    assert_eq!(
        (&data["hook"], &data["resolve"], &data["result"]),
        (&json!("wh"), &json!(false), &json!("delivered")),
        "{data}"
    );
    assert!(
        data["answer"].as_str().unwrap().starts_with("HTTP 200"),
        "{data}"
    );
    let (labels, annotations) = webhook
        .find("HostwatchTestNotification", "firing")
        .expect("the firing test alert");
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .starts_with("Test notification from hostwatch"),
        "{annotations}"
    );
    let resolved = console_test(
        &script,
        http,
        Via::Bearer(&operator_token),
        "wh",
        Some(json!({"resolve": true})),
    )
    .await;
    assert_eq!(
        resolved.body["data"]["result"], "delivered",
        "{}",
        resolved.body
    );
    let (resolved_labels, _) = webhook
        .find("HostwatchTestNotification", "resolved")
        .expect("the resolved test alert");
    assert_eq!(resolved_labels, labels);

    // A receiver that is down: the error, in words, not a server error.
    let down = console_test(&alice, http, browser(Some(&csrf)), "down", firing).await;
    assert_eq!(down.status, 200, "{}", down.body);
    assert_eq!(down.body["data"]["result"], "retry", "{}", down.body);
    let answer = down.body["data"]["answer"].as_str().unwrap();
    assert!(
        answer.contains("error sending request") && answer.contains("127.0.0.1"),
        "{answer}"
    );
    assert!(
        !answer.contains("panicked") && !answer.contains("backtrace"),
        "{answer}"
    );
    assert_eq!(webhook.received().len(), 2);
    collector.stop().await;
}

/// The SMTP password of the e-mail hook's test.
const SMTP_PASSWORD: &str = "test-hook-SMTP-secret-51c2";

/// The Python of the virtual environment with aiosmtpd that
/// crates/alerting/tests/smtp/install.sh makes under the target
/// directory. Without it the test fails, saying how to make it.
fn smtp_python() -> std::path::PathBuf {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap();
    let python = target.join("smtp-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run crates/alerting/tests/smtp/install.sh (with the same CARGO_TARGET_DIR) to make it; .ci/run does",
        python.display()
    );
    python
}

/// crates/alerting/tests/smtp/server.py on 127.0.0.1 with STARTTLS and
/// `user`'s login: its port, and the messages it received (one JSON
/// object each), read from its output by a thread. It stops when dropped.
struct SmtpServer {
    port: u16,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    child: std::process::Child,
}

impl SmtpServer {
    fn start(tls: &TlsFiles, user: &str) -> Self {
        use std::io::BufRead;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/alerting/tests/smtp/server.py");
        let mut child = std::process::Command::new(smtp_python())
            .arg(script)
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .args(["--mode", "starttls", "--user", user])
            .args(["--password", SMTP_PASSWORD])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // The server's first line, once it listens: {"port": N}.
        let first = lines.next().expect("the SMTP server exited").unwrap();
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = messages.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let record: Value = serde_json::from_str(&line).unwrap();
                if record.get("headers").is_some() {
                    kept.lock().unwrap().push(record);
                }
            }
        });
        SmtpServer {
            port,
            messages,
            child,
        }
    }

    fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// The messages, once there are `count` (the server answers before
    /// its output is read).
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} messages, not {count}",
                messages.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_e_mail_test_reaches_a_real_smtp_server_and_its_answer_is_printed() {
    let pki = TestPki::new();
    let server_tls = pki.files(Role::Collector, "smtp");
    let smtp = SmtpServer::start(&server_tls, "hostwatch");
    let (data, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let password_file = work.path().join("smtp.password");
    std::fs::write(&password_file, SMTP_PASSWORD).unwrap();
    let extra = format!(
        r#"
[alerting]
default_rules = false
[[alerting.hooks]]
name = "mail"
kind = "email"
smarthost = "127.0.0.1:{port}"
encryption = "starttls"
from = "Hostwatch <alerts@example.com>"
to = ["oncall@example.com"]
auth_username = "hostwatch"
auth_password_file = {password_file:?}
[alerting.hooks.tls]
ca = {ca:?}
"#,
        port = smtp.port,
        ca = pki.ca_path(),
    );
    let collector = Collector::start_with(&pki, data.path(), &extra).await;
    let grpc = collector.grpc;

    // The test alert, then its resolution: both arrive marked as a test,
    // and the CLI prints what the server answered to each.
    for (count, args, subject) in [
        (1, &["alerts", "test-hook", "mail"][..], "[FIRING:1] "),
        (
            2,
            &["alerts", "test-hook", "mail", "--resolve"][..],
            "[RESOLVED] ",
        ),
    ] {
        let out = hostwatch(&pki, grpc, work.path(), args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let printed = text(&out.stdout);
        let answer = format!("mail: delivered: 127.0.0.1:{}: 250 OK", smtp.port);
        assert!(printed.starts_with(&answer), "{args:?}: {printed}");
        assert!(!printed.contains(SMTP_PASSWORD), "{printed}");
        let messages = smtp.wait_for(count).await;
        let message = &messages[count - 1];
        let sent_subject = message["headers"]["Subject"].as_str().unwrap();
        assert!(
            sent_subject.starts_with(subject) && sent_subject.contains("HostwatchTestNotification"),
            "{message:#}"
        );
        assert_eq!(message["rcpt_tos"], json!(["oncall@example.com"]));
        assert_eq!(message["login"], "hostwatch");
        let plain = message["parts"]["text/plain"].as_str().unwrap();
        assert!(
            plain.contains("Test notification from hostwatch: nothing is wrong")
                && plain.contains("hostwatch alerts test-hook mail"),
            "{plain}"
        );
    }
    assert_eq!(smtp.messages().len(), 2);

    // The server gone: the CLI fails, saying why.
    drop(smtp);
    let out = hostwatch(&pki, grpc, work.path(), &["alerts", "test-hook", "mail"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("mail: not delivered (a retry might succeed)"),
        "{stderr}"
    );
    collector.stop().await;
}
