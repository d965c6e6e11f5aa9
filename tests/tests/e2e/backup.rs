//! Backups with real processes: `hostwatch storage backup` asks a running
//! collector (a real process, under ingest) for a backup; a collector
//! killed with SIGKILL in the middle of one leaves a backup that restore
//! and verify refuse; a finished one, restored with `hostwatch-collector
//! --restore`, holds every sample acknowledged before the backup began.
//! Bad requests (a relative or busy target, a viewer) are refused with a
//! status naming the problem, and a damaged backup fails verification.

use hostwatch_pki::Role;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::collector_message::Kind as Reply;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{
    AgentMessage, BackupRequest, Batch, Hello, Matcher, RangeRequest, SeriesPoints, matcher,
};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "backed-up";
const COLLECTOR: &str = env!("CARGO_BIN_EXE_e2e-collector");
const HOSTWATCH: &str = env!("CARGO_BIN_EXE_e2e-hostwatch");
/// Samples start this far back, so maintenance seals windows into a
/// partition while the test runs.
const BACK_MS: i64 = 3 * 3_600_000;
/// Series per batch: a store of some size.
const SERIES: usize = 20;

fn collector_toml(pki: &TestPki, dir: &Path, name: &str, port: u16) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    pki.collector_toml(&path, "test", port, &dir.join(name), "")
}

fn cli_toml(pki: &TestPki, dir: &Path, port: u16) -> PathBuf {
    let files = pki.files(Role::Operator, "ops");
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "collector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            files.ca, files.cert, files.key
        ),
    )
    .unwrap();
    path
}

fn hostwatch(cli: &Path, args: &[&str]) -> Output {
    std::process::Command::new(HOSTWATCH)
        .arg("--config")
        .arg(cli)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Batch `seq`: `backup_seq{i=...}` = seq at `start + seq * 10 s`.
fn batch(seq: u64, start: i64) -> Batch {
    let t = start + seq as i64 * 10_000;
    Batch {
        seq,
        series: (0..SERIES)
            .map(|i| SeriesPoints {
                metric: "backup_seq".into(),
                labels: vec![hostwatch_proto::v1::Label {
                    name: "i".into(),
                    value: i.to_string(),
                }],
                timestamps_ms: vec![t],
                values: vec![seq as f64],
            })
            .collect(),
        ..Default::default()
    }
}

type Stream = (
    tokio::sync::mpsc::Sender<AgentMessage>,
    tonic::Streaming<hostwatch_proto::v1::CollectorMessage>,
);

/// An agent's stream, once Welcome came.
async fn open_stream(agent: hostwatch_pki::TlsFiles, addr: SocketAddr) -> Option<Stream> {
    let channel = channel(agent, addr).await.ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = Kind::Hello(Hello {
        host_id: HOST.into(),
        spool_id: 1,
        ..Default::default()
    });
    tx.send(AgentMessage { kind: Some(hello) }).await.ok()?;
    let mut replies = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    match replies.message().await {
        Ok(Some(reply)) if matches!(reply.kind, Some(Reply::Welcome(_))) => Some((tx, replies)),
        _ => None,
    }
}

/// Sends batches from `from` on one stream as an agent (once the
/// collector answers), one at a time, recording the highest acknowledged
/// in `acked`, until `until` is acknowledged or the stream breaks.
async fn ingest(
    agent: hostwatch_pki::TlsFiles,
    addr: SocketAddr,
    from: u64,
    until: u64,
    start: i64,
    acked: Arc<AtomicU64>,
) {
    let (tx, mut replies) =
        eventually(WAIT, "an agent stream", || open_stream(agent.clone(), addr)).await;
    for seq in from..=until {
        let message = AgentMessage {
            kind: Some(Kind::Batch(batch(seq, start))),
        };
        if tx.send(message).await.is_err() {
            return;
        }
        match replies.message().await {
            Ok(Some(reply)) => match reply.kind {
                Some(Reply::Ack(a)) if a.seq == seq => acked.store(seq, Ordering::Release),
                other => panic!("batch {seq}: {other:?}"),
            },
            _ => return,
        }
    }
}

/// Every (time, value) of `backup_seq{i="0"}` of the host.
async fn stored(pki: &TestPki, addr: SocketAddr, start: i64) -> Option<Vec<(i64, f64)>> {
    let channel = channel(pki.files(Role::Operator, "tester"), addr)
        .await
        .ok()?;
    let matcher = |name: &str, value: &str| Matcher {
        name: name.into(),
        op: matcher::Op::Equal as i32,
        value: value.into(),
    };
    let series = QueryClient::new(channel)
        .range(RangeRequest {
            metric: "backup_seq".into(),
            matchers: vec![matcher("host", HOST), matcher("i", "0")],
            start_ms: start,
            end_ms: now_ms() + 60_000,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner()
        .series;
    let s = series.into_iter().next()?;
    Some(s.timestamps_ms.into_iter().zip(s.values).collect())
}

// One scenario over real processes: the restore at the end needs the
// backups before it.
#[tokio::test]
async fn a_backup_under_ingest_restores_what_was_acknowledged_and_one_cut_short_is_refused() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (port, restored_port) = (free_port(), free_port());
    let config = collector_toml(&pki, dir.path(), "data", port);
    let restored_config = collector_toml(&pki, dir.path(), "restored", restored_port);
    let cli = cli_toml(&pki, dir.path(), port);
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = now_ms() - BACK_MS;
    let acked = Arc::new(AtomicU64::new(0));

    // A store with sealed windows and an open head.
    let collector = Process::start(Path::new(COLLECTOR), &config, log("collector"));
    let first = tokio::spawn(ingest(
        pki.files(Role::Agent, HOST),
        addr,
        1,
        400,
        start,
        acked.clone(),
    ));
    eventually(WAIT, "400 batches acknowledged", || {
        let n = acked.load(Ordering::Acquire);
        async move { (n >= 400).then_some(()) }
    })
    .await;
    first.await.unwrap();
    eventually(WAIT, "a window sealed into a partition", || async {
        let parts = std::fs::read_dir(dir.path().join("data/store/partitions")).ok()?;
        (parts.count() > 0).then_some(())
    })
    .await;

    // Killed with SIGKILL in the middle of a backup: the marker is there,
    // the manifest never written.
    let cut = dir.path().join("cut");
    let cut_arg = cut.display().to_string();
    let request = {
        let cli = cli.clone();
        std::thread::spawn(move || hostwatch(&cli, &["storage", "backup", "--to", &cut_arg]))
    };
    let marker = cut.join(hostwatch_tsdb::backup::IN_PROGRESS);
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while !marker.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the backup never began"
            );
            std::thread::yield_now();
        }
        collector.kill();
    })
    .await
    .unwrap();
    assert!(
        !cut.join(hostwatch_tsdb::backup::MANIFEST).exists(),
        "the backup finished before the kill"
    );
    let refused = request.join().unwrap();
    assert!(
        !refused.status.success(),
        "the CLI reported a killed backup as done"
    );
    let restore = std::process::Command::new(COLLECTOR)
        .arg("--config")
        .arg(&restored_config)
        .arg("--restore")
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!restore.status.success());
    assert!(
        stderr(&restore).contains("interrupted"),
        "{}",
        stderr(&restore)
    );
    assert!(!dir.path().join("restored/store").exists());
    let verify = hostwatch(
        &cli,
        &["storage", "verify", "--backup", &cut.display().to_string()],
    );
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    assert!(
        stderr(&verify).contains("interrupted"),
        "{}",
        stderr(&verify)
    );

    // Back after the kill; a backup while batches keep coming.
    let collector = Process::start(Path::new(COLLECTOR), &config, log("collector"));
    let ingesting = tokio::spawn(ingest(
        pki.files(Role::Agent, HOST),
        addr,
        401,
        100_000,
        start,
        acked.clone(),
    ));
    eventually(WAIT, "ingest under way again", || {
        let n = acked.load(Ordering::Acquire);
        async move { (n >= 450).then_some(()) }
    })
    .await;
    let acked_before = acked.load(Ordering::Acquire);
    let good = dir.path().join("good");
    let output = tokio::task::spawn_blocking({
        let (cli, good) = (cli.clone(), good.display().to_string());
        move || hostwatch(&cli, &["storage", "backup", "--to", &good, "--json"])
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["bytes_total"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["partitions_copied"].as_u64().unwrap() >= 1,
        "{report}"
    );
    eventually(WAIT, "ingest going on after the backup", || {
        let n = acked.load(Ordering::Acquire);
        async move { (n >= acked_before + 20).then_some(()) }
    })
    .await;
    assert!(collector.terminate(WAIT).await.success());
    ingesting.await.unwrap();
    let verify = hostwatch(
        &cli,
        &["storage", "verify", "--backup", &good.display().to_string()],
    );
    assert!(verify.status.success(), "{}", stderr(&verify));

    // Restored into a new data directory, then serving.
    let restored = Process::start_with_args(
        Path::new(COLLECTOR),
        &restored_config,
        log("restored"),
        &["--restore", &good.display().to_string()],
    );
    let restored_addr: SocketAddr = format!("127.0.0.1:{restored_port}").parse().unwrap();
    let points = eventually(WAIT, "the restored collector answers", || async {
        stored(&pki, restored_addr, start).await
    })
    .await;
    let seqs: Vec<u64> = points.iter().map(|p| p.1 as u64).collect();
    let highest = seqs.last().copied().unwrap_or(0);
    assert!(
        highest >= acked_before,
        "acknowledged up to {acked_before} before the backup, restored up to {highest}"
    );
    let want: Vec<u64> = (1..=highest).collect();
    assert_eq!(seqs, want, "every batch up to the backup's point, once");
    drop(restored);
}

#[tokio::test]
async fn bad_backup_requests_are_refused_with_a_reason() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let operator = channel(pki.files(Role::Operator, "ops"), collector.addr)
        .await
        .unwrap();
    let mut admin = AdminClient::new(operator);
    let request = |to: &Path, incremental: bool| BackupRequest {
        to: to.display().to_string(),
        incremental,
    };

    let relative = admin
        .backup(request(Path::new("backups/today"), false))
        .await
        .unwrap_err();
    assert_eq!(relative.code(), tonic::Code::InvalidArgument);
    assert!(relative.message().contains("absolute"), "{relative:?}");

    let busy = data.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let refused = admin.backup(request(&busy, false)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("not empty"), "{refused:?}");

    let file = data.path().join("file");
    std::fs::write(&file, "").unwrap();
    let unwritable = admin
        .backup(request(&file.join("backup"), false))
        .await
        .unwrap_err();
    assert_eq!(unwritable.code(), tonic::Code::FailedPrecondition);
    assert!(
        unwritable.message().contains("cannot create"),
        "{unwritable:?}"
    );

    let viewer = channel(pki.files(Role::Viewer, "v"), collector.addr)
        .await
        .unwrap();
    let target = data.path().join("backup");
    let denied = AdminClient::new(viewer)
        .backup(request(&target, false))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(!target.exists());

    // A backup, a second one without `incremental` refused, with it kept.
    let done = admin
        .backup(request(&target, false))
        .await
        .unwrap()
        .into_inner();
    assert!(done.files > 0 && done.bytes_total > 0, "{done:?}");
    let again = admin.backup(request(&target, false)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::InvalidArgument);
    assert!(again.message().contains("incremental"), "{again:?}");
    admin.backup(request(&target, true)).await.unwrap();

    // A damaged file fails verification, naming it; the CLI exits 1.
    let manifest = hostwatch_tsdb::backup::verify_backup(&target).unwrap();
    let victim = manifest.files.iter().find(|f| f.size > 0).unwrap();
    let path = target.join(&victim.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();
    let verify = std::process::Command::new(HOSTWATCH)
        .args(["storage", "verify", "--backup"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1));
    let message = stderr(&verify);
    assert!(
        message.contains(&victim.path) && message.contains("checksum"),
        "{message}"
    );
    // And a relative --to is a usage error before any call.
    let usage = std::process::Command::new(HOSTWATCH)
        .args(["storage", "backup", "--to", "relative/dir"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(64), "{}", stderr(&usage));
    collector.stop().await;
}
