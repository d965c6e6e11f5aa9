//! One client must not degrade the collector for the others: operators get
//! in while an agent identity holds its limit of connections and a flood
//! of sockets that never finish their handshake goes on, and a collector
//! told to stop exits within its drain even when clients stopped reading.

use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{
    AgentMessage, Batch, Hello, ListHostsRequest, Matcher, RangeRequest, SeriesPoints, matcher,
};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

/// A TLS connection with `files`' certificate, handshake done, no HTTP/2.
async fn hold(files: &TlsFiles, addr: SocketAddr) -> impl Sized {
    let (config, _) = hostwatch_pki::client_config(files).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A socket that sends a ClientHello and nothing more.
async fn half_handshake(files: &TlsFiles, addr: SocketAddr) -> TcpStream {
    let (config, _) = hostwatch_pki::client_config(files).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    tcp
}

#[tokio::test]
async fn operators_get_in_during_connection_floods() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(
        &pki,
        data.path(),
        "[limits]\nmax_connections = 100\nmax_connections_per_identity = 4\nmax_handshakes = 16\nhandshake_timeout = \"1h\"\n",
    );
    let collector = RunningCollector::start(config).await;
    let addr = collector.addr;

    // One agent certificate tries to take every place.
    let greedy = pki.files(Role::Agent, "greedy");
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(hold(&greedy, addr).await);
    }
    // Sockets that never finish a handshake, more than its pool holds.
    let slow = pki.files(Role::Agent, "slow");
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(TcpStream::connect(addr).await.unwrap());
        flood.push(half_handshake(&slow, addr).await);
    }

    for _ in 0..3 {
        let hosts = operator(&pki, addr)
            .await
            .list_hosts(ListHostsRequest::default())
            .await
            .expect("an operator's call during the floods");
        assert!(hosts.into_inner().hosts.is_empty());
    }
    drop((held, flood));
    collector.stop().await;
}

/// An Ingest stream on `agent`'s connection that says Hello as `host`,
/// then sends the first KiB of a batch declared `declared` bytes long and
/// nothing more; returns the sender (which keeps the stream open) and a
/// task that completes when the collector ends the stream.
async fn partial_batch(
    agent: &tonic::transport::Channel,
    host: &str,
    declared: u32,
) -> (
    tokio::sync::mpsc::Sender<Result<http_body::Frame<tonic::codegen::Bytes>, tonic::Status>>,
    tokio::task::JoinHandle<Option<String>>,
) {
    use http_body_util::BodyExt;
    use prost::Message;
    let hello = AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: host.into(),
            spool_id: 1,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let mut first = vec![0u8];
    first.extend((hello.len() as u32).to_be_bytes());
    first.extend(hello);
    // The batch begins once the Welcome is in, so the refusal reaches the
    // open stream, not its Hello.
    let mut partial = vec![0u8];
    partial.extend(declared.to_be_bytes());
    partial.resize(partial.len() + 1024, 0);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Ok(http_body::Frame::data(first.into())))
        .await
        .unwrap();
    let sender = tx.clone();
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri("/hostwatch.v1.Ingest/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .unwrap();
    let agent = agent.clone();
    // Ends with the call's grpc-status: in the headers of a response that
    // is only a status, else in the trailers.
    let ended = tokio::spawn(async move {
        use tower::ServiceExt;
        let text = |v: &tonic::codegen::http::HeaderValue| v.to_str().ok().map(str::to_owned);
        let response = agent.oneshot(request).await.ok()?;
        if let Some(status) = response.headers().get("grpc-status") {
            return text(status);
        }
        let mut body = response.into_body();
        let _welcome = body.frame().await;
        sender
            .send(Ok(http_body::Frame::data(partial.into())))
            .await
            .ok()?;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                return text(status);
            }
        }
        None
    });
    (tx, ended)
}

#[tokio::test]
async fn incomplete_batches_are_refused_over_the_connection_budget() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    // Defaults: 16 MiB messages, 32 MiB of them pending per connection.
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let agent = channel(pki.files(Role::Agent, "partial"), collector.addr)
        .await
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(partial_batch(&agent, "partial", 15 << 20).await);
    }
    // Two fit in the connection's budget; the collector ends the third.
    eventually(WAIT, "a stream ended by the collector", || {
        let ended = streams.iter().filter(|(_, e)| e.is_finished()).count();
        async move { (ended == 1).then_some(()) }
    })
    .await;
    let at = streams.iter().position(|(_, e)| e.is_finished()).unwrap();
    let (_, ended) = streams.remove(at);
    // The agent is told why: RESOURCE_EXHAUSTED (8), not a bare OK.
    assert_eq!(ended.await.unwrap().as_deref(), Some("8"));
    drop(streams);
    collector.stop().await;
}

fn batch(seq: u64, now: i64) -> Batch {
    Batch {
        seq,
        series: vec![SeriesPoints {
            metric: "host_load1".into(),
            labels: vec![],
            timestamps_ms: vec![now - 60_000 + seq as i64],
            values: vec![seq as f64],
        }],
        ..Default::default()
    }
}

/// A channel whose HTTP/2 stream window is tiny: once its application
/// stops reading, the collector can send it almost nothing.
async fn stingy_channel(files: &TlsFiles, addr: SocketAddr) -> tonic::transport::Channel {
    let (config, _) = hostwatch_pki::client_config(files).unwrap();
    let connector = tower::service_fn(move |_| {
        let tls = tokio_rustls::TlsConnector::from(config.clone());
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(256))
        .connect_with_connector(connector)
        .await
        .unwrap()
}

// One scenario over a real collector process: the clients that stop
// reading must be in place when SIGTERM comes.
#[tokio::test]
async fn sigterm_ends_the_collector_within_its_drain_when_clients_stop_reading() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let files = pki.files(Role::Collector, "test");
    let toml = dir.path().join("collector.toml");
    std::fs::write(
        &toml,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n[limits]\ndrain_timeout = \"1s\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.path().join("data"),
            files.ca,
            files.cert,
            files.key
        ),
    )
    .unwrap();
    let program = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let log = dir.path().join("collector.log");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let collector = Process::start(program, &toml, log.clone());
    let now = now_ms();
    eventually(WAIT, "the collector up", || async {
        channel(pki.files(Role::Operator, "tester"), addr)
            .await
            .ok()
    })
    .await;
    deliver_batch(
        pki.files(Role::Agent, "kept"),
        addr,
        "kept",
        1,
        batch(1, now),
    )
    .await;

    // Agents whose replies nobody reads: their acknowledgements fill the
    // stream window, and their streams block (the collector reads a
    // stream's next batch only once it could send the last one's Ack).
    let mut stalled = Vec::new();
    for i in 0..4 {
        let host = format!("stalled{i}");
        let agent = stingy_channel(&pki.files(Role::Agent, &host), addr).await;
        let (tx, rx) = tokio::sync::mpsc::channel(512);
        tx.send(AgentMessage {
            kind: Some(Kind::Hello(Hello {
                host_id: host.clone(),
                spool_id: 1,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        for seq in 1..=300 {
            tx.send(AgentMessage {
                kind: Some(Kind::Batch(batch(seq, now))),
            })
            .await
            .unwrap();
        }
        let replies = IngestClient::new(agent)
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        stalled.push((tx, replies));
    }
    // Every stalled stream has had most of the acknowledgements its
    // window takes (about 10 bytes each), and never reads them.
    eventually(WAIT, "the stalled streams' batches stored", || async {
        let mut query = operator(&pki, addr).await;
        for i in 0..4 {
            let latest = query
                .range(range(&format!("stalled{i}"), now))
                .await
                .ok()?
                .into_inner();
            let points: usize = latest.series.iter().map(|s| s.values.len()).sum();
            if points < 20 {
                return None;
            }
        }
        Some(())
    })
    .await;

    let status = collector.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    drop(stalled);

    // What was acknowledged is there after a restart.
    let _collector = Process::start(program, &toml, log);
    let series = eventually(WAIT, "the acknowledged batch after a restart", || async {
        let channel = channel(pki.files(Role::Operator, "tester"), addr)
            .await
            .ok()?;
        let mut query = hostwatch_proto::v1::query_client::QueryClient::new(channel);
        let series = query.range(range("kept", now)).await.ok()?.into_inner();
        (!series.series.is_empty()).then_some(series.series)
    })
    .await;
    assert_eq!(series[0].values, vec![1.0]);
}

fn range(host: &str, now: i64) -> RangeRequest {
    RangeRequest {
        metric: "host_load1".into(),
        matchers: vec![Matcher {
            name: "host".into(),
            op: matcher::Op::Equal as i32,
            value: host.into(),
        }],
        start_ms: now - 3_600_000,
        end_ms: now + 60_000,
        ..Default::default()
    }
}
