//! `hostwatch alerts test-hook` against real receivers: a webhook gets the
//! test alert and its resolution; PagerDuty's and Opsgenie's stand-ins
//! open an incident that the resolution closes, Slack's gets both
//! messages; a receiver that refuses, one that is down and a hook that
//! does not exist each end in a non-zero exit that says why; a viewer may
//! not send tests. (The e-mail hook's answer is tested with its SMTP
//! server in crates/alerting/tests/email.rs.)

use super::tokens::{Collector, hostwatch, hostwatch_as, text};
use hostwatch_pki::Role;
use hostwatch_tests::providers::{Provider, ProviderReceiver};
use hostwatch_tests::*;

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
