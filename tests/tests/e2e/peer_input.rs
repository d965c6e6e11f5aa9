//! What agents say about themselves is bounded and logged safely: strings
//! from a peer cannot forge log lines, host facts cannot grow the host list
//! past what a client can receive, and the list pages.

use hostwatch_pki::Role;
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::collector_message::Kind as Reply;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{
    AgentMessage, CollectorMessage, Goodbye, Hello, HostFacts, HostStatus, ListHostsRequest,
};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(30);
/// CR/LF that would start a forged line, and an ANSI colour sequence.
const EVIL: &str = "x\r\n2026-01-01T00:00:00Z  INFO forged: \u{1b}[31mred";

/// Opens an agent stream as `files` sending `messages`; the reply stream,
/// or the refusal.
async fn agent_stream(
    files: hostwatch_pki::TlsFiles,
    addr: SocketAddr,
    messages: Vec<Kind>,
) -> Result<Streaming<CollectorMessage>, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len().max(1));
    for kind in messages {
        tx.send(AgentMessage { kind: Some(kind) }).await.unwrap();
    }
    // Dropping the sender ends the stream after the messages.
    drop(tx);
    let channel = channel(files, addr).await.unwrap();
    IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner())
}

fn hello(host: &str) -> Hello {
    Hello {
        host_id: host.into(),
        spool_id: 1,
        boot_id: "boot-1".into(),
        facts: None,
    }
}

fn collector_toml(pki: &TestPki, dir: &Path, port: u16) -> std::path::PathBuf {
    pki.collector_toml(
        &dir.join("collector.toml"),
        "test",
        port,
        &dir.join("data"),
        "",
    )
}

#[tokio::test]
async fn peer_strings_reach_the_log_escaped_on_one_line() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = collector_toml(&pki, dir.path(), port);
    let collector = Process::start(
        Path::new(env!("CARGO_BIN_EXE_e2e-collector")),
        &config,
        dir.path().join("collector.log"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let agent = pki.files(Role::Agent, "web1");
    eventually(WAIT, "the collector to listen", || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await;

    // A Hello claiming another host, refused and logged with the claim.
    let refused = agent_stream(agent.clone(), addr, vec![Kind::Hello(hello(EVIL))])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // A goodbye with a reason.
    let mut replies = agent_stream(
        agent,
        addr,
        vec![
            Kind::Hello(hello("web1")),
            Kind::Goodbye(Goodbye {
                reason: EVIL.into(),
            }),
        ],
    )
    .await
    .unwrap();
    while let Ok(Some(_)) = replies.message().await {}
    let log = eventually(WAIT, "the goodbye in the log", || {
        let log = collector.log();
        async move { log.contains("agent said goodbye").then_some(log) }
    })
    .await;

    assert!(!log.contains(['\r', '\u{1b}']), "raw CR or ESC in:\n{log}");
    for line in log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "a line not starting with a timestamp: {line:?}\n{log}"
        );
    }
    let escaped = r"x\r\n2026-01-01T00:00:00Z  INFO forged: \u{1b}[31mred";
    for event in ["agent claims another host", "agent said goodbye"] {
        let line = log.lines().find(|l| l.contains(event)).unwrap();
        assert!(line.contains(escaped), "{line}");
    }
}

#[tokio::test]
async fn oversized_facts_are_cut_and_an_oversized_boot_id_refused() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let agent = pki.files(Role::Agent, "web1");

    let mut big = hello("web1");
    big.facts = Some(HostFacts {
        hostname: "h".repeat(12 << 20),
        kernel_version: "6.1.0".into(),
        ..HostFacts::default()
    });
    let mut replies = agent_stream(agent.clone(), collector.addr, vec![Kind::Hello(big)])
        .await
        .unwrap();
    let welcome = replies.message().await.unwrap().unwrap();
    assert!(matches!(welcome.kind, Some(Reply::Welcome(_))));
    let hosts = operator(&pki, collector.addr)
        .await
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let facts = hosts[0].facts.clone().unwrap();
    assert!(facts.hostname.len() <= 256, "{}", facts.hostname.len());
    assert!(
        facts.hostname.ends_with("[truncated]"),
        "{}",
        facts.hostname
    );
    assert_eq!(facts.kernel_version, "6.1.0");

    let mut long_boot = hello("web1");
    long_boot.boot_id = "b".repeat(100_000);
    let status = match agent_stream(agent, collector.addr, vec![Kind::Hello(long_boot)]).await {
        Err(status) => status,
        Ok(mut replies) => replies.message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("boot_id"), "{status:?}");
    collector.stop().await;
}

/// A `cli.toml` in `dir` for an operator of the collector at `addr`.
fn cli_toml(pki: &TestPki, addr: SocketAddr, dir: &Path) -> std::path::PathBuf {
    let files = pki.files(Role::Operator, "tester");
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "collector = \"{addr}\"\nserver_name = \"localhost\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            files.ca, files.cert, files.key
        ),
    )
    .unwrap();
    path
}

/// Runs the `hostwatch` program with `cli_toml` and `args`.
async fn hostwatch(cli_toml: &Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-hostwatch"));
    command.arg("--config").arg(cli_toml).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn samples_from_a_clock_ahead_are_shown_with_until() {
    use hostwatch_proto::v1::{Batch, SeriesPoints};
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    // The host's clock is five minutes ahead.
    let batch = Batch {
        seq: 1,
        series: vec![SeriesPoints {
            metric: "host_load1".into(),
            labels: vec![],
            timestamps_ms: vec![now_ms() + 300_000],
            values: vec![4.25],
        }],
        ..Default::default()
    };
    let files = pki.files(Role::Agent, "ahead");
    deliver_batch(files, collector.addr, "ahead", 1, batch).await;
    let cli_toml = cli_toml(&pki, collector.addr, data.path());
    let query = ["query", "host_load1", "--host", "ahead", "--json"];
    let points = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let series: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        series
            .iter()
            .map(|s| s["points"].as_array().unwrap().len())
            .sum::<usize>()
    };
    assert_eq!(points(hostwatch(&cli_toml, &query).await), 0);
    let until = [&query[..], &["--until", "+10m"]].concat();
    assert_eq!(points(hostwatch(&cli_toml, &until).await), 1);
    collector.stop().await;
}

/// More hosts than fitted in one 4 MiB response before `ListHosts` paged.
const MANY_HOSTS: usize = 25_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_lists_more_hosts_than_one_response_holds() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    // Registered as the collector's registry stores hosts, with facts of
    // realistic size (connecting 25,000 agents would take minutes).
    {
        let db = sled::open(data.path()).unwrap();
        let tree = db.open_tree("hosts").unwrap();
        for i in 0..MANY_HOSTS {
            let host_id = format!("host-{i:05}");
            let record = HostStatus {
                host_id: host_id.clone(),
                last_seen_ms: now_ms(),
                boot_id: format!("2b7e4c1a-5d3f-4e8b-9a6c-{i:012}"),
                facts: Some(HostFacts {
                    hostname: format!("{host_id}.rack-17.eu-west.example.internal"),
                    os_name: "Debian GNU/Linux".into(),
                    os_version: "12 (bookworm)".into(),
                    kernel_version: "6.1.0-28-amd64".into(),
                    architecture: "x86_64".into(),
                    cpu_model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into(),
                    cpu_count: 64,
                    memory_total_bytes: 256 << 30,
                    agent_version: "0.1.0".into(),
                    boot_time_ms: now_ms(),
                }),
                ..HostStatus::default()
            };
            tree.insert(host_id.as_bytes(), prost::Message::encode_to_vec(&record))
                .unwrap();
        }
        db.flush().unwrap();
    }
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let cli_toml = cli_toml(&pki, collector.addr, data.path());
    let output = hostwatch(&cli_toml, &["hosts", "--json"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let hosts: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(hosts.len(), MANY_HOSTS);
    // In order, each once.
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(host["host_id"], format!("host-{i:05}"));
    }
    collector.stop().await;
}
