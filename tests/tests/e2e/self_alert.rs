//! The collector alerts about itself when it cannot store. A collector
//! process with its data on a real small file system (a tmpfs this test
//! mounts) filled to the last byte: the default `collector_not_storing`
//! alert reaches a real webhook although the outbox (in the collector's
//! own database, on the same full disk) cannot be written; once space
//! returns, the store and the state database heal without a restart, the
//! resolution arrives, the failure and the recovery are logged once each,
//! and the alert state written after the recovery survives a restart.

use hostwatch_pki::Role;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{AlertHistoryRequest, AlertState, ListAlertsRequest};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "writer";
/// The collector's certificate name: the self-alert's `host`.
const COLLECTOR: &str = "test";
const RULE: &str = "collector_not_storing";

/// Writes the collector's configuration into `dir`; returns its path.
fn config(pki: &TestPki, dir: &Path, data: &Path, port: u16, receiver: SocketAddr) -> PathBuf {
    let tls = pki.files(Role::Collector, COLLECTOR);
    // No reserve: sled meets ENOSPC itself, in the store and in the
    // collector's own database.
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
data_dir = {data:?}
[tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
[storage]
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
"#,
        ca = tls.ca,
        cert = tls.cert,
        key = tls.key,
    );
    let path = dir.join("collector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A query client, once the collector listens.
async fn query(pki: &TestPki, addr: SocketAddr) -> Option<QueryClient<Channel>> {
    let channel = channel(pki.files(Role::Operator, "ops"), addr).await.ok()?;
    Some(QueryClient::new(channel))
}

async fn storage_stats(
    pki: &TestPki,
    addr: SocketAddr,
) -> hostwatch_proto::v1::StorageStatsResponse {
    let channel = channel(pki.files(Role::Operator, "ops"), addr)
        .await
        .unwrap();
    hostwatch_proto::v1::admin_client::AdminClient::new(channel)
        .storage_stats(hostwatch_proto::v1::StorageStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Batches of the agent stored so far; `None` while the collector cannot
/// answer (starting, or its store being rebuilt).
async fn stored_batches(pki: &TestPki, addr: SocketAddr) -> Option<usize> {
    let series = host_series(pki, addr, HOST, "hostwatch_agent_batches_total").await?;
    Some(series.iter().map(|s| s.values.len()).sum())
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

// One scenario on one tmpfs: fill it, see the page, free it, see the
// database heal; each step needs the state the one before left.
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
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = config(
        &pki,
        dir.path(),
        &fs.path().join("data"),
        port,
        receiver.addr,
    );
    let collector_bin = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let collector = Process::start(collector_bin, &config, log("collector"));
    let agent = RunningAgent::start(agent_config(&pki, HOST, addr, dir.path()));
    eventually(WAIT, "the first batches stored", || async {
        (stored_batches(&pki, addr).await? >= 3).then_some(())
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
    assert!(
        state["cause"].as_str().unwrap().contains("a write failed"),
        "{state}"
    );
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
    // Operators see it in the storage stats too.
    let stats = storage_stats(&pki, addr).await;
    assert!(!stats.state_database_failure.is_empty(), "{stats:?}");

    std::fs::remove_file(filler).unwrap();
    for storage in ["state", "store"] {
        eventually(
            WAIT,
            &format!("the {storage} self-alert resolved"),
            || async { self_alert(&receiver, storage, "resolved") },
        )
        .await;
    }
    let before = eventually(WAIT, "the store answering", || async {
        stored_batches(&pki, addr).await
    })
    .await;
    eventually(WAIT, "batches stored again", || async {
        (stored_batches(&pki, addr).await? > before).then_some(())
    })
    .await;
    let stats = storage_stats(&pki, addr).await;
    assert_eq!(
        (stats.state.as_str(), stats.state_database_failure.as_str()),
        ("storing", ""),
        "{stats:?}"
    );
    agent.stop().await;
    assert!(collector.terminate(WAIT).await.success());
    let text = std::fs::read_to_string(log("collector")).unwrap();
    for (line, what) in [
        ("collector state database failed", "the failure"),
        ("collector state database reopened", "the recovery"),
    ] {
        assert_eq!(text.matches(line).count(), 1, "{what} logged once:\n{text}");
    }

    // What was written after the recovery is on disk: a restarted
    // collector knows both alerts resolved, and their history.
    let collector = Process::start(collector_bin, &config, log("restarted"));
    let mut client = eventually(WAIT, "the restarted collector", || async {
        query(&pki, addr).await
    })
    .await;
    let alerts = client
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
    let history = client
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
    assert!(collector.terminate(WAIT).await.success());
}
