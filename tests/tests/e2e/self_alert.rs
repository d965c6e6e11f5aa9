//! The collector alerts about itself when it cannot store. On a real small
//! file system (a tmpfs this test mounts) filled to the last byte, the
//! default `collector_not_storing` alert reaches a real webhook although
//! the outbox (in the collector's own database, on the same full disk)
//! cannot be written; once space returns, the store and the state
//! database heal without a restart, the resolution arrives, and the alert
//! state written after the recovery survives a restart.

use hostwatch_proto::v1::{
    AlertHistoryRequest, AlertState, ListAlertsRequest, Matcher, RangeRequest, matcher,
};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "writer";
/// The collector's certificate name: the self-alert's `host`.
const COLLECTOR: &str = "test";
const RULE: &str = "collector_not_storing";

fn config(
    pki: &TestPki,
    data: &Path,
    receiver: SocketAddr,
) -> hostwatch_collector::CollectorConfig {
    // No reserve: sled meets ENOSPC itself, in the store and in the
    // collector's own database.
    collector_config_with(
        pki,
        data,
        &format!(
            r#"[storage]
min_free_bytes = 0
[alerting]
flap_window = "0s"
[[alerting.hooks]]
name = "oncall"
kind = "webhook"
url = "http://{receiver}/hook"
group_by = ["alertname", "storage"]
group_wait = "0s"
group_interval = "0s"
repeat_interval = "1h"
min_backoff = "50ms"
max_backoff = "200ms"
"#
        ),
    )
}

/// Batches of the agent stored so far.
async fn stored_batches(pki: &TestPki, addr: SocketAddr) -> usize {
    let mut query = operator(pki, addr).await;
    let series = query
        .range(RangeRequest {
            metric: "hostwatch_agent_batches_total".into(),
            matchers: vec![Matcher {
                name: "host".into(),
                op: matcher::Op::Equal as i32,
                value: HOST.into(),
            }],
            start_ms: now_ms() - 3_600_000,
            end_ms: now_ms() + 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .series;
    series.iter().map(|s| s.values.len()).sum()
}

/// The self-alert about `storage` the webhook got with `status`: its annotations.
fn self_alert(
    receiver: &WebhookReceiver,
    storage: &str,
    status: &str,
) -> Option<serde_json::Value> {
    receiver
        .alerts()
        .into_iter()
        .find(|(s, labels, _)| {
            s == status && labels["alertname"] == RULE && labels["storage"] == storage
        })
        .map(|(_, labels, annotations)| {
            assert_eq!(labels["host"], COLLECTOR);
            annotations
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pages_through_the_webhook_and_the_state_database_heals() {
    let Some(fs) = Tmpfs::mount(
        96 << 20,
        "delivery from memory and the write-back are tested in hostwatch-alerting's delivery tests",
    ) else {
        return;
    };
    let pki = TestPki::new();
    let receiver = WebhookReceiver::start().await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(&pki, &fs.path().join("data"), receiver.addr);
    let collector = RunningCollector::start(config.clone()).await;
    let addr = collector.addr;
    let agent = RunningAgent::start(agent_config(&pki, HOST, addr, spool.path()));
    eventually(WAIT, "the first batches stored", || async {
        (stored_batches(&pki, addr).await >= 3).then_some(())
    })
    .await;

    let filler = fs.fill(0);
    // The store fails on its next batch; the state database when the
    // alert about it is written. Its own alert can only go out from memory:
    // the outbox lives in the database that failed.
    let state = eventually(WAIT, "the state database's self-alert", || async {
        self_alert(&receiver, "state", "firing")
    })
    .await;
    assert_eq!(state["condition"], "failed", "{state}");
    let cause = state["cause"].as_str().unwrap();
    assert!(cause.contains("a write failed"), "{state}");
    assert!(
        state["summary"]
            .as_str()
            .unwrap()
            .starts_with("The collector on test does not store (state failed): "),
        "{state}"
    );
    let store = eventually(WAIT, "the store's self-alert", || async {
        self_alert(&receiver, "store", "firing")
    })
    .await;
    assert_eq!(store["condition"], "failed", "{store}");
    assert!(!store["cause"].as_str().unwrap().is_empty(), "{store}");

    std::fs::remove_file(filler).unwrap();
    for storage in ["state", "store"] {
        eventually(
            WAIT,
            &format!("the {storage} self-alert resolved"),
            || async { self_alert(&receiver, storage, "resolved") },
        )
        .await;
    }
    let before = stored_batches(&pki, addr).await;
    eventually(WAIT, "batches stored again", || async {
        (stored_batches(&pki, addr).await > before).then_some(())
    })
    .await;
    agent.stop().await;
    collector.stop().await;

    // What was written after the recovery is on disk: a restarted
    // collector knows both alerts resolved, and their history.
    let collector = RunningCollector::start(config).await;
    let mut query = operator(&pki, collector.addr).await;
    let alerts = query
        .list_alerts(ListAlertsRequest {
            include_resolved: true,
            ..ListAlertsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    for storage in ["state", "store"] {
        let alert = alerts
            .iter()
            .find(|a| a.rule == RULE && a.labels["storage"] == storage)
            .unwrap_or_else(|| panic!("no {storage} self-alert in {alerts:?}"));
        assert_eq!(alert.state, AlertState::Resolved as i32, "{alert:?}");
    }
    let history = query
        .alert_history(AlertHistoryRequest {
            rule: RULE.into(),
            ..AlertHistoryRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .transitions;
    assert!(
        history
            .iter()
            .any(|t| t.labels["storage"] == "state" && t.to == AlertState::Resolved as i32),
        "{history:?}"
    );
    collector.stop().await;
}
