//! Self-monitoring: the collector's `/metrics` (HTTPS, authenticated; and
//! the loopback plain-HTTP port of `metrics_listen`) follows what agents
//! stream and what is refused; the agent's port serves its own figures;
//! bad `metrics_listen` values and ports in use stop the programs with
//! the key named.

use super::tokens;
use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::collector_message::Kind as Reply;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{AgentMessage, Batch, CollectorMessage, Hello, SeriesPoints};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(30);
/// Series per batch, one point each.
const SERIES: usize = 3;

/// An agent stream as `files`, its Hello sent for `host`: the sender of
/// further messages and the replies (or the refusal).
async fn open_stream(
    files: TlsFiles,
    addr: SocketAddr,
    host: &str,
    spool_id: u64,
) -> (
    mpsc::Sender<AgentMessage>,
    Result<Streaming<CollectorMessage>, tonic::Status>,
) {
    let (tx, rx) = mpsc::channel(64);
    let hello = Kind::Hello(Hello {
        host_id: host.into(),
        spool_id,
        boot_id: "boot-1".into(),
        facts: None,
    });
    tx.send(AgentMessage { kind: Some(hello) }).await.unwrap();
    let channel = channel(files, addr).await.unwrap();
    let replies = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, replies)
}

/// Batch `seq`: [`SERIES`] series of one point each.
fn batch(seq: u64) -> Kind {
    let now = hostwatch_stdx::now_ms();
    Kind::Batch(Batch {
        seq,
        series: (0..SERIES)
            .map(|i| SeriesPoints {
                metric: format!("test_metric_{i}"),
                labels: Vec::new(),
                timestamps_ms: vec![now - 1_000 + seq as i64],
                values: vec![seq as f64],
            })
            .collect(),
        dropped_batches_total: 0,
        processes: Vec::new(),
    })
}

/// Streams batches 1..=n as `host` on one stream and waits for every ack.
async fn stream_batches(files: TlsFiles, addr: SocketAddr, host: &str, n: u64) {
    let (tx, replies) = open_stream(files, addr, host, 7).await;
    let mut replies = replies.unwrap();
    let welcome = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(welcome.kind, Some(Reply::Welcome(_))),
        "{welcome:?}"
    );
    for seq in 1..=n {
        tx.send(AgentMessage {
            kind: Some(batch(seq)),
        })
        .await
        .unwrap();
        let ack = replies.message().await.unwrap().unwrap();
        assert!(
            matches!(ack.kind, Some(Reply::Ack(a)) if a.seq == seq),
            "{ack:?}"
        );
    }
}

/// The exposition of the plain port once `check` holds on it.
async fn scraped_when(port: SocketAddr, what: &str, check: impl Fn(&str) -> bool + Copy) -> String {
    eventually(WAIT, what, || async move {
        let (_, text) = scrape(port).await.ok()?;
        check(&text).then_some(text)
    })
    .await
}

fn value(text: &str, name: &str, labels: &str) -> f64 {
    metric_value(text, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{text}"))
}

/// A TLS 1.3 client trusting the test CA, presenting `files` if given.
fn https(pki: &TestPki, files: Option<&TlsFiles>, http: SocketAddr) -> reqwest::Client {
    let config = match files {
        Some(files) => hostwatch_pki::client_config(files)
            .unwrap()
            .0
            .as_ref()
            .clone(),
        None => client_without_certificate(&pki.ca_path()),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", http)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_metrics_follow_ingest_and_refusals_and_https_needs_credentials() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let port: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let collector =
        tokens::Collector::start_with(&pki, data.path(), &format!("metrics_listen = \"{port}\""))
            .await;
    let (head, text) = eventually(WAIT, "the metrics port", || async {
        scrape(port).await.ok()
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        value(&text, "hostwatch_collector_batches_ingested_total", ""),
        0.0
    );
    assert_eq!(value(&text, "hostwatch_collector_streams_open", ""), 0.0);

    // N batches on one stream: each counted once, its samples, its ack.
    const N: u64 = 5;
    let agent = pki.files(Role::Agent, "web1");
    stream_batches(agent.clone(), collector.grpc, "web1", N).await;
    let text = scraped_when(port, "N batches ingested", |t| {
        metric_value(t, "hostwatch_collector_batches_ingested_total", "") == Some(N as f64)
    })
    .await;
    let samples = (N as usize * SERIES) as f64;
    assert_eq!(
        value(&text, "hostwatch_collector_samples_ingested_total", ""),
        samples
    );
    assert_eq!(
        value(&text, "hostwatch_collector_ack_latency_seconds_count", ""),
        N as f64
    );
    assert_eq!(
        value(
            &text,
            "hostwatch_collector_ack_latency_seconds_bucket",
            "le=\"+Inf\""
        ),
        N as f64
    );
    assert_eq!(
        value(
            &text,
            "hostwatch_collector_alert_evaluation_duration_seconds_count",
            "kind=\"batch\""
        ),
        N as f64
    );
    assert_eq!(
        value(&text, "hostwatch_collector_batches_duplicate_total", ""),
        0.0
    );
    assert!(value(&text, "hostwatch_collector_store_series", "") >= SERIES as f64);
    assert!(value(&text, "hostwatch_collector_store_disk_bytes", "") > 0.0);
    assert!(
        value(
            &text,
            "hostwatch_collector_grpc_calls_total",
            "method=\"/hostwatch.v1.Ingest/Stream\""
        ) >= 1.0
    );
    assert!(value(&text, "process_resident_memory_bytes", "") > 0.0);

    // The same batches again (a replay after a lost ack): acknowledged,
    // counted as duplicates, not ingested again.
    stream_batches(agent.clone(), collector.grpc, "web1", N).await;
    let text = scraped_when(port, "N duplicates", |t| {
        metric_value(t, "hostwatch_collector_batches_duplicate_total", "") == Some(N as f64)
    })
    .await;
    assert_eq!(
        value(&text, "hostwatch_collector_batches_ingested_total", ""),
        N as f64
    );

    // An open stream is counted while open.
    let (open, replies) = open_stream(agent.clone(), collector.grpc, "web1", 8).await;
    let mut replies = replies.unwrap();
    replies.message().await.unwrap().unwrap();
    scraped_when(port, "one stream open", |t| {
        metric_value(t, "hostwatch_collector_streams_open", "") == Some(1.0)
            && metric_value(t, "hostwatch_collector_agents_connected", "") == Some(1.0)
    })
    .await;
    // A sequence that does not increase ends it, counted by its reason.
    open.send(AgentMessage {
        kind: Some(batch(0)),
    })
    .await
    .unwrap();
    let refusal = replies.message().await.unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal:?}");
    let text = scraped_when(port, "the stream closed", |t| {
        metric_value(t, "hostwatch_collector_streams_open", "") == Some(0.0)
    })
    .await;
    assert_eq!(
        value(
            &text,
            "hostwatch_collector_agent_messages_refused_total",
            "reason=\"bad_sequence\""
        ),
        1.0
    );

    // Refused streams: an operator's certificate, a Hello for another host.
    let (_tx, refused) =
        open_stream(pki.files(Role::Operator, "ops"), collector.grpc, "web1", 1).await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
    let (_tx, refused) =
        open_stream(pki.files(Role::Agent, "web2"), collector.grpc, "web1", 1).await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
    let text = scraped_when(port, "two refused streams", |t| {
        metric_value(
            t,
            "hostwatch_collector_streams_refused_total",
            "reason=\"host_mismatch\"",
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        value(
            &text,
            "hostwatch_collector_streams_refused_total",
            "reason=\"role\""
        ),
        1.0
    );
    for reason in ["no_hello", "bad_hello", "not_storing", "storage_error"] {
        assert_eq!(
            value(
                &text,
                "hostwatch_collector_streams_refused_total",
                &format!("reason=\"{reason}\"")
            ),
            0.0,
            "{reason}"
        );
    }

    // HTTPS: 401 without a credential, the same figures with a viewer's
    // certificate, and the request counted by its handler.
    let url = format!("https://localhost:{}/metrics", collector.http.port());
    let anonymous = https(&pki, None, collector.http)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let viewer = pki.files(Role::Viewer, "grafana");
    let answer = https(&pki, Some(&viewer), collector.http)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = answer.text().await.unwrap();
    assert_eq!(
        value(&text, "hostwatch_collector_batches_ingested_total", ""),
        N as f64
    );
    assert!(
        value(
            &text,
            "hostwatch_collector_http_unauthorized_requests_total",
            ""
        ) >= 1.0
    );
    let text = scraped_when(port, "the HTTPS scrape counted", |t| {
        metric_value(
            t,
            "hostwatch_collector_http_requests_total",
            "handler=\"/metrics\",code=\"2xx\"",
        ) == Some(1.0)
    })
    .await;
    assert!(
        value(
            &text,
            "hostwatch_collector_connections_open",
            "listener=\"grpc\""
        ) >= 0.0
    );
    assert_eq!(
        value(
            &text,
            "hostwatch_collector_connections_refused_total",
            "listener=\"https\",reason=\"revoked\""
        ),
        0.0
    );
    collector.stop().await;
}

/// collector.toml for a process, with `top` as its first lines.
fn collector_toml(pki: &TestPki, dir: &Path, top: &str) -> std::path::PathBuf {
    let files = pki.files(Role::Collector, "test");
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "{top}\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join("data"),
            files.ca,
            files.cert,
            files.key
        ),
    )
    .unwrap();
    path
}

/// Runs `program --config config` to its end (it must end within
/// [`WAIT`]): its exit code and standard error.
async fn run_to_end(program: &'static str, config: std::path::PathBuf) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(program)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return (status.code(), stderr);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{program} still running after {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// Runs `program` with `metrics_listen` set to each of `bad` (exit 64,
/// naming the key and what is wrong) and to a port another process holds
/// (exit 1, naming the key); `config` writes the program's file for a
/// `metrics_listen` line into a directory.
async fn metrics_listen_refusals(
    program: &'static str,
    bad: [(&str, &str); 3],
    config: impl Fn(&Path, &str) -> std::path::PathBuf,
) {
    for (value, says) in bad {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &format!("metrics_listen = \"{value}\""));
        let (code, stderr) = run_to_end(program, config).await;
        assert_eq!(code, Some(64), "{value}: {stderr}");
        assert!(
            stderr.contains("metrics_listen") && stderr.contains(says),
            "{value}: {stderr}"
        );
    }
    // A port another process holds: a startup error naming the key.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("metrics_listen = \"{address}\""));
    let (code, stderr) = run_to_end(program, config).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address} (metrics_listen)")),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_metrics_listen_values_and_a_port_in_use_stop_the_collector_naming_the_key() {
    let pki = TestPki::new();
    let bad = [
        ("0.0.0.0:9464", "not a loopback address"),
        ("192.168.1.10:9464", "not a loopback address"),
        ("nowhere:9464", "not an address"),
    ];
    metrics_listen_refusals(env!("CARGO_BIN_EXE_e2e-collector"), bad, |dir, top| {
        collector_toml(&pki, dir, top)
    })
    .await;
}

/// agent.toml for a process (its collector nowhere), with `top` as its
/// first lines.
fn agent_toml(pki: &TestPki, dir: &Path, top: &str) -> std::path::PathBuf {
    let files = pki.files(Role::Agent, "web1");
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "{top}\ncollector = \"127.0.0.1:9\"\nserver_name = \"localhost\"\nstate_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join("state"),
            files.ca,
            files.cert,
            files.key
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn bad_metrics_listen_values_and_a_port_in_use_stop_the_agent_naming_the_key() {
    let pki = TestPki::new();
    let bad = [
        ("0.0.0.0:9465", "not a loopback address"),
        ("[::]:9465", "not a loopback address"),
        ("127.0.0.1", "not an address"),
    ];
    metrics_listen_refusals(env!("CARGO_BIN_EXE_e2e-agent"), bad, |dir, top| {
        agent_toml(&pki, dir, top)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_own_figures_on_its_loopback_port() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let state = tempfile::tempdir().unwrap();
    let port: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = agent_config(&pki, "web1", collector.addr, state.path());
    config.metrics_listen = Some(port);
    let agent = RunningAgent::start(config.clone());
    let text = scraped_when(port, "the agent streaming", |t| {
        metric_value(t, "hostwatch_agent_connected", "") == Some(1.0)
            && metric_value(t, "hostwatch_agent_send_latency_seconds", "").is_some()
    })
    .await;
    assert!(
        text.contains("# TYPE hostwatch_agent_reconnects_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hostwatch_agent_spool_bytes gauge\n"),
        "{text}"
    );
    assert!(value(&text, "hostwatch_agent_batches_total", "") >= 1.0);
    assert!(value(&text, "process_resident_memory_bytes", "") > 0.0);
    assert!(value(&text, "process_cpu_seconds_total", "") >= 0.0);
    let (head, _) = scrape(port).await.unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );

    // A second agent on the same port cannot start: the key is named.
    let other = tempfile::tempdir().unwrap();
    let mut second = agent_config(&pki, "web2", collector.addr, other.path());
    second.metrics_listen = Some(port);
    let e = tokio::time::timeout(WAIT, hostwatch_agent::run(second, std::future::pending()))
        .await
        .expect("the agent gives up at once")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("cannot listen on {port} (metrics_listen)")),
        "{e}"
    );
    agent.stop().await;
    collector.stop().await;
}
