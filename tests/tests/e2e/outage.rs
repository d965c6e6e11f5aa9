//! A collector outage long enough for the agent's backoff to grow: when
//! the collector returns, the agent is back before the host-down timeout, so
//! the outage pages no host. The agent learned the host-down timeout (a
//! rule's, shorter than `host_down_after`) from the collector's Welcome
//! and keeps its backoff below a third of it, whatever its own
//! `limits.max_backoff`.
//!
//! A clean stop keeps every host's newest last seen, though the registry
//! writes it at most once a minute while batches come.

use hostwatch_proto::v1::ListHostsRequest;
use hostwatch_tests::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

async fn last_seen(pki: &TestPki, addr: std::net::SocketAddr, host: &str) -> Option<i64> {
    let hosts = operator(pki, addr)
        .await
        .list_hosts(ListHostsRequest::default())
        .await
        .ok()?
        .into_inner()
        .hosts;
    hosts
        .iter()
        .find(|h| h.host_id == host)
        .map(|h| h.last_seen_ms)
}

#[tokio::test]
async fn a_returning_collector_pages_no_host_for_its_outage() {
    let pki = TestPki::new();
    let receiver = WebhookReceiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(
        &pki,
        data.path(),
        &format!(
            "[alerting]\ndefault_rules = false\n\
             [[alerting.rules]]\nname = \"host_down\"\nkind = \"host_down\"\ntimeout = \"4s\"\n\
             [[alerting.hooks]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\n\
             group_wait = \"0s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n",
            receiver.addr
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = RunningCollector::start_on(config.clone(), listener);
    let state = tempfile::tempdir().unwrap();
    let mut agent_config = agent_config(&pki, "returning", addr, state.path());
    agent_config.limits.max_backoff = Duration::from_secs(60);
    let agent = RunningAgent::start(agent_config);
    eventually(WAIT, "the host's first batch", || async {
        last_seen(&pki, addr, "returning").await.filter(|&t| t > 0)
    })
    .await;

    // The outage: connections are accepted and dropped, counted, until
    // the agent has failed seven times: its own backoff would now wait 8
    // to 16 s, a third of host_down_after (30 s) 5 to 10 s, all longer
    // than the rule's 4 s.
    collector.stop().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let away = TcpListener::bind(addr).await.unwrap();
    let refusing = tokio::spawn({
        let attempts = attempts.clone();
        async move {
            while let Ok((connection, _)) = away.accept().await {
                attempts.fetch_add(1, Ordering::SeqCst);
                drop(connection);
            }
        }
    });
    eventually(WAIT, "seven failed attempts", || async {
        (attempts.load(Ordering::SeqCst) >= 7).then_some(())
    })
    .await;
    refusing.abort();
    let _ = refusing.await;

    let back_ms = now_ms();
    let collector = RunningCollector::start_on(config, TcpListener::bind(addr).await.unwrap());
    eventually(WAIT, "data after the collector's return", || async {
        last_seen(&pki, addr, "returning")
            .await
            .filter(|&t| t > back_ms)
    })
    .await;
    let pages: Vec<_> = receiver
        .alerts()
        .into_iter()
        .filter(|(_, labels, _)| labels["alertname"] == "host_down")
        .collect();
    assert!(pages.is_empty(), "the outage paged the host: {pages:?}");
    agent.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn a_clean_stop_keeps_the_newest_last_seen() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config(&pki, data.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = RunningCollector::start_on(config.clone(), listener);
    let state = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(agent_config(&pki, "steady", addr, state.path()));
    let first = eventually(WAIT, "the host's first batch", || async {
        last_seen(&pki, addr, "steady").await.filter(|&t| t > 0)
    })
    .await;
    // Batches a second after the first, well within the interval the
    // registry writes last seen at.
    eventually(WAIT, "batches after the first", || async {
        last_seen(&pki, addr, "steady")
            .await
            .filter(|&t| t > first + 1_000)
    })
    .await;
    // No goodbye, which would write the record itself.
    agent.kill().await;
    let before_stop = last_seen(&pki, addr, "steady").await.unwrap();
    collector.stop().await;

    let collector = RunningCollector::start_on(config, TcpListener::bind(addr).await.unwrap());
    let after_restart = eventually(WAIT, "the restarted collector's host list", || async {
        last_seen(&pki, addr, "steady").await
    })
    .await;
    assert!(
        after_restart >= before_stop,
        "the restart lost last seen: {after_restart} < {before_stop} (first batch {first})"
    );
    collector.stop().await;
}
