//! Agent failover between collectors (`collectors = [A, B]`): the real
//! programs with two collector processes, the preferred one killed with
//! SIGKILL and restarted; peers that are not hostwatch collectors, in
//! process; and a collector storing a batch after a gap in the sequence
//! (the batches in between went to the other collector).

use hostwatch_pki::transport::{CallLimitLayer, ServerTls, incoming};
use hostwatch_pki::{IssueOptions, Role};
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::collector_message::Kind as Reply;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{
    AgentMessage, Batch, Hello, HostStatus, Label, ListHostsRequest, SeriesPoints,
};
use hostwatch_tests::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "roaming";

/// The TOML of a collector named `name` on `port`, its data in `dir/name`.
fn write_collector(pki: &TestPki, dir: &Path, name: &str, port: u16) -> PathBuf {
    let path = dir.join(format!("collector-{name}.toml"));
    pki.collector_toml(&path, name, port, &dir.join(name), "")
}

/// The TOML of the agent, streaming to the collectors on `ports` by
/// preference; short intervals, so the test stays short.
fn write_agent(pki: &TestPki, dir: &Path, ports: &[u16]) -> PathBuf {
    let files = pki.files(Role::Agent, HOST);
    let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "collectors = [{}]\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n\
             [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
             [limits]\nmax_backoff = \"300ms\"\nconnect_timeout = \"2s\"\nfailover_after = 3\nprobe_interval = \"500ms\"\n",
            list.join(", "),
            dir.join("agent-state"),
            files.ca,
            files.cert,
            files.key
        ),
    )
    .unwrap();
    path
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// (timestamp, value) of every stored point of `metric` for the host on
/// the collector at `at`, in time order; `None` while it cannot answer.
async fn points(pki: &TestPki, at: SocketAddr, metric: &str) -> Option<Vec<(i64, f64)>> {
    let series: Vec<SeriesPoints> = host_series(pki, at, HOST, metric).await?;
    let mut points: Vec<(i64, f64)> = series
        .iter()
        .flat_map(|s| {
            s.timestamps_ms
                .iter()
                .copied()
                .zip(s.values.iter().copied())
        })
        .collect();
    points.sort_by_key(|p| p.0);
    Some(points)
}

/// How many batches of the host the collector at `at` holds.
async fn count(pki: &TestPki, at: SocketAddr) -> Option<usize> {
    let batches = points(pki, at, "hostwatch_agent_batches_total").await?;
    Some(batches.len())
}

/// The host as the collector at `at` sees it.
async fn host_status(pki: &TestPki, at: SocketAddr, host: &str) -> Option<HostStatus> {
    let hosts = operator(pki, at)
        .await
        .list_hosts(ListHostsRequest::default())
        .await
        .ok()?
        .into_inner()
        .hosts;
    hosts.into_iter().find(|h| h.host_id == host)
}

/// What one collector holds of the agent: its batch sequence numbers (from
/// `hostwatch_agent_batches_total`, one point per batch), each checked
/// to be stored once, and its samples of a plain series checked likewise.
async fn held(pki: &TestPki, at: SocketAddr, name: &str) -> BTreeSet<u64> {
    let batches = points(pki, at, "hostwatch_agent_batches_total")
        .await
        .unwrap();
    let seqs: BTreeSet<u64> = batches.iter().map(|p| p.1 as u64).collect();
    assert_eq!(
        seqs.len(),
        batches.len(),
        "{name}: a batch stored twice: {batches:?}"
    );
    let times: BTreeSet<i64> = batches.iter().map(|p| p.0).collect();
    assert_eq!(times.len(), batches.len(), "{name}: a timestamp twice");
    // Every batch carries one uptime sample, at the batch's time.
    let uptime = points(pki, at, "host_uptime_seconds").await.unwrap();
    let uptime_times: BTreeSet<i64> = uptime.iter().map(|p| p.0).collect();
    assert_eq!(uptime_times.len(), uptime.len(), "{name}: a sample twice");
    assert_eq!(uptime_times, times, "{name}: samples and batches differ");
    seqs
}

// One scenario over real processes: each check needs the steps before it.
#[tokio::test]
async fn the_agent_fails_over_to_the_next_collector_and_returns_without_loss() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (addr(port_a), addr(port_b));
    let a_toml = write_collector(&pki, dir.path(), "a", port_a);
    let b_toml = write_collector(&pki, dir.path(), "b", port_b);
    let agent_toml = write_agent(&pki, dir.path(), &[port_a, port_b]);
    let collector_bin = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_e2e-agent"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let batches = "hostwatch_agent_batches_total";

    let collector_a = Process::start(collector_bin, &a_toml, log("a"));
    let _collector_b = Process::start(collector_bin, &b_toml, log("b"));
    let agent = Process::start(agent_bin, &agent_toml, log("agent"));
    eventually(WAIT, "batches stored on A, the preferred", || async {
        (count(&pki, a).await? >= 5).then_some(())
    })
    .await;
    assert_eq!(count(&pki, b).await, Some(0), "B is only the fallback");

    // A dies: the agent moves on to B after a few failures.
    collector_a.kill();
    eventually(WAIT, "batches stored on B", || async {
        (count(&pki, b).await? >= 10).then_some(())
    })
    .await;

    // A is back: a probe finds it, the agent returns, says goodbye to B.
    let collector_a = Process::start(collector_bin, &a_toml, log("a"));
    let back = now_ms();
    eventually(WAIT, "batches stored on A again", || async {
        let points = points(&pki, a, batches).await?;
        (points.iter().filter(|p| p.0 > back).count() >= 5).then_some(())
    })
    .await;
    let on_b = eventually(WAIT, "B told the host left", || async {
        host_status(&pki, b, HOST)
            .await
            .filter(|h| !h.connected && h.clean_shutdown)
    })
    .await;
    assert!(on_b.last_seen_ms > 0);

    // A clean stop drains the spool to A. The spool's files still hold
    // the newest batch (acknowledgements are not written): the last one
    // the agent produced.
    assert!(agent.terminate(WAIT).await.success());
    let spool = hostwatch_agent::spool::inspect(&dir.path().join("agent-state/spool")).unwrap();
    let last = spool.batches.iter().map(|b| b.seq).max().unwrap();

    let on_a = held(&pki, a, "A").await;
    let on_b = held(&pki, b, "B").await;
    let all: BTreeSet<u64> = on_a.union(&on_b).copied().collect();
    assert_eq!(all.last(), Some(&last), "the newest batch is stored");
    let missing: Vec<u64> = (1..=last).filter(|s| !all.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "batches on neither collector: {missing:?}"
    );
    // Only the batches in flight when A was killed may be on both.
    let both = on_a.intersection(&on_b).count();
    assert!(both <= 32, "{both} batches on both collectors");
    let (first_b, last_b) = (on_b.first().unwrap(), on_b.last().unwrap());
    assert!(on_a.iter().any(|s| s < first_b) && on_a.iter().any(|s| s > last_b));

    // The agent's own series say where it streamed and that it failed over.
    let index_b = points(&pki, b, "hostwatch_agent_collector_index")
        .await
        .unwrap();
    assert!(index_b.iter().any(|p| p.1 == 1.0), "{index_b:?}");
    let index_a = points(&pki, a, "hostwatch_agent_collector_index")
        .await
        .unwrap();
    assert_eq!(index_a.last().map(|p| p.1), Some(0.0));
    let failovers = points(&pki, a, "hostwatch_agent_failovers_total")
        .await
        .unwrap();
    assert_eq!(failovers.last().map(|p| p.1), Some(1.0), "{failovers:?}");
    let agent_log = std::fs::read_to_string(log("agent")).unwrap();
    for line in [
        "failing over to the next collector",
        "returning to a more preferred collector",
    ] {
        assert!(agent_log.contains(line), "{line:?} not in the agent's log");
    }
    drop(collector_a);
}

/// A gRPC server over TLS with `files`, serving only the standard health
/// service: a TLS peer that is no hostwatch collector.
fn impostor(files: hostwatch_pki::TlsFiles, listener: tokio::net::TcpListener) {
    let tls = ServerTls::load(files).unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(CallLimitLayer)
            .add_service(health)
            .serve_with_incoming(incoming(
                listener,
                tls,
                test_listener_limits(),
                std::future::pending(),
            )),
    );
}

#[tokio::test]
async fn peers_that_are_not_hostwatch_collectors_are_failures_passed_over() {
    let pki = TestPki::new();
    // A certificate without the collector role (a viewer's, for the
    // right name), then a collector's certificate on a server without the
    // Ingest service, then the real collector.
    let not_a_collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let viewer = addr(not_a_collector.local_addr().unwrap().port());
    let options = IssueOptions::valid_for_days(1).with_local_names(None);
    impostor(
        pki.files_with(Role::Viewer, "impostor", &options),
        not_a_collector,
    );
    let no_ingest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = addr(no_ingest.local_addr().unwrap().port());
    impostor(pki.files(Role::Collector, "other"), no_ingest);
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let state = tempfile::tempdir().unwrap();
    let config = agent_config_failover(
        &pki,
        HOST,
        &[viewer, other, collector.addr],
        state.path(),
        "failover_after = 1\nprobe_interval = \"30s\"",
    );
    let agent = RunningAgent::start(config);
    let index = eventually(
        WAIT,
        "the agent streaming to the real collector",
        || async {
            let index = points(&pki, collector.addr, "hostwatch_agent_collector_index").await?;
            index.last().filter(|p| p.1 == 2.0).copied()
        },
    )
    .await;
    assert_eq!(index.1, 2.0);
    let failovers = points(&pki, collector.addr, "hostwatch_agent_failovers_total")
        .await
        .unwrap();
    assert!(
        failovers.last().is_some_and(|p| p.1 >= 2.0),
        "{failovers:?}"
    );
    agent.stop().await;
    collector.stop().await;
}

/// Opens a stream as the agent `host` with spool `spool_id`; the Welcome's
/// last stored sequence.
async fn welcome(pki: &TestPki, at: SocketAddr, host: &str, spool_id: u64) -> u64 {
    let channel = channel(pki.files(Role::Agent, host), at).await.unwrap();
    let hello = AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: host.into(),
            spool_id,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(hello).await.unwrap();
    let mut replies = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match replies.message().await.unwrap().and_then(|m| m.kind) {
        Some(Reply::Welcome(w)) => w.last_stored_seq,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

fn batch(seq: u64, t_ms: i64) -> Batch {
    Batch {
        seq,
        series: vec![SeriesPoints {
            metric: "host_load1".into(),
            labels: Vec::<Label>::new(),
            timestamps_ms: vec![t_ms],
            values: vec![seq as f64],
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_collector_stores_a_batch_after_a_gap_in_the_sequence() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let files = || pki.files(Role::Agent, "gappy");
    let t = now_ms() - 10_000;
    // Batches 2 to 4 went to another collector meanwhile.
    deliver_batch(files(), collector.addr, "gappy", 7, batch(1, t)).await;
    assert_eq!(welcome(&pki, collector.addr, "gappy", 7).await, 1);
    deliver_batch(files(), collector.addr, "gappy", 7, batch(5, t + 4_000)).await;
    assert_eq!(welcome(&pki, collector.addr, "gappy", 7).await, 5);
    let stored = eventually(WAIT, "both batches readable", || async {
        let series = host_series(&pki, collector.addr, "gappy", "host_load1").await?;
        let values: Vec<f64> = series.iter().flat_map(|s| s.values.clone()).collect();
        (values.len() == 2).then_some(values)
    })
    .await;
    assert_eq!(stored, [1.0, 5.0]);
    collector.stop().await;
}
