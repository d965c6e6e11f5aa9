//! `hostwatch alerts test-hook` against real receivers: a webhook gets the
//! test alert and its resolution; PagerDuty's stand-in opens an incident
//! that the resolution closes; a receiver that refuses, one that is down
//! and a hook that does not exist each end in a non-zero exit that says
//! why; a viewer may not send tests.

use super::tokens::{Collector, hostwatch, hostwatch_as, text};
use hostwatch_pki::Role;
use hostwatch_tests::providers::{Provider, ProviderReceiver};
use hostwatch_tests::*;

const ROUTING_KEY: &str = "TestHookRoutingKey0123456789abcd";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_notification_reaches_each_receiver_and_its_answer_is_printed() {
    let pki = TestPki::new();
    let webhook = WebhookReceiver::start().await;
    let refusing = WebhookReceiver::start().await;
    refusing.answer(400);
    let pd = ProviderReceiver::start(
        Provider::PagerDuty,
        &pki.files(Role::Collector, "providers"),
        ROUTING_KEY,
    )
    .await;
    let (data, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = work.path().join("pd.key");
    std::fs::write(&key_file, ROUTING_KEY).unwrap();
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
"#,
        webhook = webhook.addr,
        refusing = refusing.addr,
        down = free_port(),
        pd_url = pd.url(),
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
