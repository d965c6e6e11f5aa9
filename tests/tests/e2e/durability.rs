//! The delivery guarantee with real processes: the collector goes away, the
//! agent spools, the agent is killed with SIGKILL, both come back, and
//! every sample taken before the kill is stored, each exactly once (none
//! missing, none sent to the store twice).

use hostwatch_pki::Role;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{ProcessesRequest, RangeRequest, SeriesPoints, StorageStatsRequest};
use hostwatch_tests::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const HOST: &str = "durable";
/// Metrics checked point by point: one plain series, and several with labels.
const METRICS: [&str; 3] = [
    "host_uptime_seconds",
    "host_memory_available_bytes",
    "host_cpu_time_ratio",
];

fn write_configs(pki: &TestPki, dir: &Path, port: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let collector = pki.files(Role::Collector, "test");
    let agent = pki.files(Role::Agent, HOST);
    let tls = |f: &hostwatch_pki::TlsFiles| {
        format!(
            "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            f.ca, f.cert, f.key
        )
    };
    let collector_toml = dir.join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n{}",
            dir.join("data"),
            tls(&collector)
        ),
    )
    .unwrap();
    let agent_toml = dir.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "collector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n{}[limits]\nmax_backoff = \"300ms\"\n",
            dir.join("agent-state"),
            tls(&agent)
        ),
    )
    .unwrap();
    (collector_toml, agent_toml)
}

/// Every stored series of `metric` for the host.
async fn stored(pki: &TestPki, port: u16, metric: &str) -> Option<Vec<SeriesPoints>> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    host_series(pki, addr, HOST, metric).await
}

/// Series identity: metric and labels other than `host`.
fn series_key(metric: &str, labels: &[hostwatch_proto::v1::Label]) -> String {
    let mut labels: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "host")
        .map(|l| format!("{}={}", l.name, l.value))
        .collect();
    labels.sort();
    format!("{metric}{{{}}}", labels.join(","))
}

/// Timestamps per series, from the spool's batches.
fn spooled_points(batches: &[hostwatch_proto::v1::Batch]) -> HashMap<String, BTreeSet<i64>> {
    let mut points: HashMap<String, BTreeSet<i64>> = HashMap::new();
    for batch in batches {
        for series in &batch.series {
            if METRICS.contains(&series.metric.as_str()) {
                points
                    .entry(series_key(&series.metric, &series.labels))
                    .or_default()
                    .extend(&series.timestamps_ms);
            }
        }
    }
    points
}

// One scenario over real processes (spool, SIGKILL, restart, replay):
// the check at the end needs every step before it.
#[tokio::test]
async fn samples_spooled_before_a_sigkill_are_stored_exactly_once() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (collector_toml, agent_toml) = write_configs(&pki, dir.path(), port);
    let spool_dir = dir.path().join("agent-state/spool");
    let collector_bin = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_e2e-agent"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let agent = Process::start(agent_bin, &agent_toml, log("agent"));
    eventually(WAIT, "samples stored", || async {
        let series = stored(&pki, port, "host_uptime_seconds").await?;
        (series.iter().map(|s| s.values.len()).sum::<usize>() >= 5).then_some(())
    })
    .await;

    // The collector goes away; the agent keeps sampling into its spool.
    assert!(collector.terminate(WAIT).await.success());
    let spooled_at_stop = hostwatch_agent::spool::inspect(&spool_dir)
        .unwrap()
        .batches
        .len();
    eventually(WAIT, "eight more batches spooled", || async {
        let now = hostwatch_agent::spool::inspect(&spool_dir)
            .ok()?
            .batches
            .len();
        (now >= spooled_at_stop + 8).then_some(())
    })
    .await;

    // Killed: no goodbye, no sync, possibly in the middle of a write.
    let killed_at = now_ms();
    agent.kill();
    let on_disk = hostwatch_agent::spool::inspect(&spool_dir).unwrap();
    assert!(
        on_disk.damaged <= 1,
        "at most a torn last record: {on_disk:?}"
    );
    let spooled = spooled_points(&on_disk.batches);
    assert!(!spooled.is_empty());

    // Both come back; the backlog is replayed.
    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let agent = Process::start(agent_bin, &agent_toml, log("agent"));
    let stored_points = eventually(WAIT, "every spooled sample stored", || async {
        let mut stored_points: HashMap<String, Vec<i64>> = HashMap::new();
        for metric in METRICS {
            for series in stored(&pki, port, metric).await? {
                stored_points
                    .entry(series_key(metric, &series.labels))
                    .or_default()
                    .extend(series.timestamps_ms);
            }
        }
        let all_there = spooled.iter().all(|(key, times)| {
            stored_points
                .get(key)
                .is_some_and(|s| times.iter().all(|t| s.contains(t)))
        });
        all_there.then_some(stored_points)
    })
    .await;

    for (key, times) in &stored_points {
        let unique: BTreeSet<i64> = times.iter().copied().collect();
        assert_eq!(unique.len(), times.len(), "{key}: a sample stored twice");
    }
    // Nothing lost between what was acknowledged before the collector
    // stopped and what was spooled after: every batch carries its sequence
    // number as a series, and those stored from before the kill follow one
    // another without a hole (a torn last record may be missing at the end);
    // after the restart the numbering continues above them.
    let numbers = eventually(WAIT, "batch numbers after the restart", || async {
        let series = stored(&pki, port, "hostwatch_agent_batches_total").await?;
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
        points.iter().any(|p| p.0 > killed_at).then_some(points)
    })
    .await;
    let before: Vec<u64> = numbers
        .iter()
        .filter(|p| p.0 <= killed_at)
        .map(|p| p.1 as u64)
        .collect();
    assert_eq!(before[0], 1, "the first batch is missing");
    for pair in before.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "batches lost between {} and {}",
            pair[0],
            pair[1]
        );
    }
    let last_spooled = on_disk.batches.iter().map(|b| b.seq).max().unwrap();
    assert_eq!(
        *before.last().unwrap(),
        last_spooled,
        "the newest spooled batch was not stored"
    );
    let after = numbers.iter().find(|p| p.0 > killed_at).unwrap().1 as u64;
    assert!(
        after > last_spooled,
        "numbering went back after the restart: {after}"
    );
    // The store keeps the first sample of a timestamp and counts any second
    // one: the agent never sent a stored sample again as new data (replays
    // of stored batches are recognized by their sequence, not resent).
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin = channel(pki.files(Role::Operator, "tester"), addr)
        .await
        .unwrap();
    let stats = AdminClient::new(admin)
        .storage_stats(StorageStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let duplicates = stats.rejected.expect("rejections").duplicate;
    assert_eq!(duplicates, 0, "the collector received samples twice");
    // The snapshots of top processes travel with the samples.
    let snapshot = operator(&pki, addr)
        .await
        .processes(ProcessesRequest {
            host_id: HOST.into(),
            at_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .expect("a process snapshot");
    assert!(
        snapshot
            .processes
            .iter()
            .any(|p| p.rss_bytes > 0 && !p.command.is_empty()),
        "{snapshot:?}"
    );
    assert!(agent.log().contains("spool opened"));
    drop(agent);
    drop(collector);
}

/// Sends `batch` as agent `HOST` on a stream of its own and returns the
/// collector's reply to it (an Ack, or the status that ended the stream).
async fn send_batch(
    pki: &TestPki,
    port: u16,
    batch: hostwatch_proto::v1::Batch,
) -> hostwatch_proto::v1::CollectorMessage {
    use hostwatch_proto::v1::agent_message::Kind;
    use hostwatch_proto::v1::ingest_client::IngestClient;
    use hostwatch_proto::v1::{AgentMessage, Hello};
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let agent = channel(pki.files(Role::Agent, HOST), addr).await.unwrap();
    let messages = [
        Kind::Hello(Hello {
            host_id: HOST.into(),
            spool_id: 3,
            ..Default::default()
        }),
        Kind::Batch(batch),
    ]
    .map(|kind| AgentMessage { kind: Some(kind) });
    let mut replies = IngestClient::new(agent)
        .max_encoding_message_size(64 << 20)
        .stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let _welcome = replies.message().await.unwrap();
    replies.message().await.unwrap().unwrap()
}

#[tokio::test]
async fn a_batch_of_a_million_samples_and_a_dense_one_survive_a_sigkill() {
    use hostwatch_proto::v1::collector_message::Kind as Reply;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (collector_toml, _) = write_configs(&pki, dir.path(), port);
    // Room for samples up to an hour and a bit ahead.
    let mut config = std::fs::read_to_string(&collector_toml).unwrap();
    config.push_str("[storage]\nfuture_tolerance = \"3h\"\n");
    std::fs::write(&collector_toml, config).unwrap();
    let collector_bin = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let now = now_ms();
    let hour = 3_600_000;
    // 1,050,000 samples of one series, 1 ms apart, in one frame: about
    // 14 MiB, under the default limits.max_message_bytes. Half either side
    // of the next hour, so no hour holds more than a series may.
    let boundary = (now.div_euclid(hour) + 1) * hour;
    let big: Vec<i64> = (0..1_050_000).map(|i| boundary - 525_000 + i).collect();
    // As many samples as one hour of a series may hold, and 100 more.
    let dense_start = now.div_euclid(hour) * hour - hour;
    let dense: Vec<i64> = (0..(1 << 20) + 100).map(|i| dense_start + i).collect();
    let batch = |seq, metric: &str, times: &[i64]| hostwatch_proto::v1::Batch {
        seq,
        series: vec![SeriesPoints {
            metric: metric.into(),
            labels: vec![],
            timestamps_ms: times.to_vec(),
            values: times.iter().map(|t| (t % 1000) as f64).collect(),
        }],
        ..Default::default()
    };
    eventually(WAIT, "the collector up", || async {
        let addr = format!("127.0.0.1:{port}").parse().ok()?;
        channel(pki.files(Role::Operator, "tester"), addr)
            .await
            .ok()
    })
    .await;
    for (seq, metric, times) in [(1, "bulk", &big), (2, "dense", &dense)] {
        let reply = send_batch(&pki, port, batch(seq, metric, times)).await;
        assert!(
            matches!(reply.kind, Some(Reply::Ack(ref a)) if a.seq == seq),
            "{reply:?}"
        );
    }
    // Killed right after the acknowledgements: only the WAL has them.
    collector.kill();
    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let count = |metric: &'static str| {
        let pki = &pki;
        async move {
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let channel = channel(pki.files(Role::Operator, "tester"), addr)
                .await
                .ok()?;
            let series = hostwatch_proto::v1::query_client::QueryClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .range(RangeRequest {
                    metric: metric.into(),
                    start_ms: now - 4 * hour,
                    end_ms: now + 2 * hour,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .series;
            Some(series.iter().map(|s| s.values.len()).sum::<usize>())
        }
    };
    let counts = eventually(WAIT, "both series after the restart", || async {
        let (bulk, dense) = (count("bulk").await?, count("dense").await?);
        (bulk > 0 && dense > 0).then_some((bulk, dense))
    })
    .await;
    assert_eq!(
        counts,
        (big.len(), 1 << 20),
        "every acknowledged sample, the window's limit of the dense one"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let stats = AdminClient::new(
        channel(pki.files(Role::Operator, "tester"), addr)
            .await
            .unwrap(),
    )
    .storage_stats(StorageStatsRequest {})
    .await
    .unwrap()
    .into_inner();
    assert_eq!(stats.corrupt_wal_frames, 0, "{stats:?}");
    drop(collector);
}
