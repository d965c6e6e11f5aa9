//! `hostwatch-bench connections`: operator calls against floods at the
//! collector's connection limit, and memory under streams holding
//! incomplete messages. The collector runs in this process on 127.0.0.1
//! with its default limits but `max_connections`; every operator call opens
//! a connection of its own, as the CLI does.

use crate::fixture::{issue, spawn_collector};
use crate::measure::{Probe, median, percentile};
use hostwatch_pki::transport::{ClientTarget, connect};
use hostwatch_pki::{Ca, Role, TlsFiles};
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{AgentMessage, Hello, ListHostsRequest};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Bytes;

/// One operator call gives up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Operator calls measured per scenario.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// The collector's `limits.max_connections`.
    #[arg(long, default_value_t = 300)]
    max_connections: usize,
    /// Sockets in each flood of unfinished handshakes.
    #[arg(long, default_value_t = 400)]
    flood: usize,
    /// Streams each sending all but the last byte of a batch.
    #[arg(long, default_value_t = 64)]
    partial_streams: usize,
    /// Declared size of each of those batches, in bytes (under the default
    /// `max_message_bytes`).
    #[arg(long, default_value_t = 15 << 20)]
    partial_bytes: u32,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.calls == 0 || args.max_connections < 100 || args.partial_bytes < 1024 {
        anyhow::bail!(
            "--calls must be at least 1, --max-connections at least 100 (the operators' reserve is 64), --partial-bytes at least 1024"
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let setup = Setup::new(args.max_connections)?;
        for scenario in [
            Scenario::Quiet,
            Scenario::IdleMtlsOneIdentity,
            Scenario::IdleTcp,
            Scenario::HalfHandshakes,
        ] {
            let (addr, stop, task) = setup.collector().await?;
            let flood = scenario.flood(&setup, addr, &args).await?;
            let latencies = operator_calls(&setup, addr, args.calls).await?;
            report(scenario.name(), &latencies, args.calls);
            drop(flood);
            stop.cancel();
            task.await?;
        }
        partial_messages(&setup, &args).await
    })
}

#[derive(Clone, Copy)]
enum Scenario {
    Quiet,
    /// `max_connections` idle mTLS connections from one agent certificate.
    IdleMtlsOneIdentity,
    /// `flood` TCP connections that send nothing.
    IdleTcp,
    /// `flood` connections that send a ClientHello and nothing more.
    HalfHandshakes,
}

/// Whatever a flood holds open; dropped, it closes.
type Held = Vec<Box<dyn Send>>;

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Quiet => "quiet",
            Scenario::IdleMtlsOneIdentity => "idle_mtls_one_identity",
            Scenario::IdleTcp => "idle_tcp",
            Scenario::HalfHandshakes => "half_handshakes",
        }
    }

    async fn flood(self, setup: &Setup, addr: SocketAddr, args: &Args) -> anyhow::Result<Held> {
        let mut held: Held = Vec::new();
        match self {
            Scenario::Quiet => {}
            Scenario::IdleMtlsOneIdentity => {
                let (config, _) = hostwatch_pki::client_config(&setup.agent)?;
                for _ in 0..args.max_connections {
                    let tcp = TcpStream::connect(addr).await?;
                    let name = rustls::pki_types::ServerName::try_from("localhost")?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await?;
                    held.push(Box::new(tls));
                }
            }
            Scenario::IdleTcp => {
                for _ in 0..args.flood {
                    held.push(Box::new(TcpStream::connect(addr).await?));
                }
            }
            Scenario::HalfHandshakes => {
                let (config, _) = hostwatch_pki::client_config(&setup.agent)?;
                for _ in 0..args.flood {
                    let name = rustls::pki_types::ServerName::try_from("localhost")?;
                    let mut tls = rustls::ClientConnection::new(config.clone(), name)?;
                    let mut hello = Vec::new();
                    tls.write_tls(&mut hello)?;
                    let mut tcp = TcpStream::connect(addr).await?;
                    tcp.write_all(&hello).await?;
                    held.push(Box::new(tcp));
                }
            }
        }
        Ok(held)
    }
}

/// Latencies in seconds of `calls` ListHosts calls, each on a connection
/// of its own; a failed or timed-out call counts as `None`.
async fn operator_calls(
    setup: &Setup,
    addr: SocketAddr,
    calls: usize,
) -> anyhow::Result<Vec<Option<f64>>> {
    let target = ClientTarget {
        address: addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls: setup.operator.clone(),
        connect_timeout: CALL_TIMEOUT,
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    };
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let call = async {
            let (channel, _) = connect(&target).await.ok()?;
            QueryClient::new(channel)
                .list_hosts(ListHostsRequest::default())
                .await
                .ok()
        };
        let ok = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .ok()
            .flatten()
            .is_some();
        latencies.push(ok.then(|| start.elapsed().as_secs_f64()));
    }
    Ok(latencies)
}

fn report(scenario: &str, latencies: &[Option<f64>], calls: usize) {
    let ok: Vec<f64> = latencies.iter().flatten().copied().collect();
    let ms = |v: Option<f64>| v.map_or("n/a".to_owned(), |s| format!("{:.1}", s * 1e3));
    println!("{scenario}_calls={calls}");
    println!("{scenario}_failed={}", calls - ok.len());
    println!("{scenario}_median_ms={}", ms(median(&ok)));
    println!("{scenario}_p99_ms={}", ms(percentile(&ok, 99.0)));
    println!("{scenario}_max_ms={}", ms(percentile(&ok, 100.0)));
}

/// Streams that say Hello and then send all but the last byte of a batch,
/// each on a connection of its own; the collector's resident memory (this
/// process's: the clients share chunks, so they add little) before, at the
/// peak, and after the clients leave, and an operator call meanwhile.
async fn partial_messages(setup: &Setup, args: &Args) -> anyhow::Result<()> {
    let probe = Probe::new(std::process::id());
    let (addr, stop, task) = setup.collector().await?;
    let before = probe.rss_bytes()?.0;
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    let mut streams = Vec::new();
    for i in 0..args.partial_streams {
        let host = format!("partial{i}");
        streams.push(partial_stream(setup, addr, host, args.partial_bytes, chunk.clone()).await?);
    }
    // Every stream has sent what it could: finished, or stuck on flow control.
    let peak = settled_peak(&probe, before).await?;
    let ended = streams.iter().filter(|s| s.is_finished()).count();
    let latencies = operator_calls(setup, addr, args.calls.min(50)).await?;
    report("partial_messages", &latencies, args.calls.min(50));
    for stream in &streams {
        stream.abort();
    }
    drop(streams);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = probe.rss_bytes()?.0;
    let mib = |b: u64| format!("{:.0}", b as f64 / f64::from(1 << 20));
    println!("partial_streams={}", args.partial_streams);
    println!("partial_streams_ended_by_collector={ended}");
    println!("partial_rss_before_mib={}", mib(before));
    println!("partial_rss_peak_mib={}", mib(peak));
    println!("partial_rss_after_mib={}", mib(after));
    stop.cancel();
    task.await?;
    Ok(())
}

/// A frame of a request body sent through a channel.
type BodyFrame = Result<http_body::Frame<Bytes>, tonic::Status>;

/// What a partial stream's task ends with: the bytes it sent, and its
/// request body's sender, kept so the stream stays open.
type PartialStream = (usize, mpsc::Sender<BodyFrame>);

/// A stream of its own connection for `host`: Hello, then all but the last
/// byte of a batch of `partial_bytes`, sent `chunk` by `chunk`.
async fn partial_stream(
    setup: &Setup,
    addr: SocketAddr,
    host: String,
    partial_bytes: u32,
    chunk: Bytes,
) -> anyhow::Result<JoinHandle<PartialStream>> {
    let agent = setup.files(Role::Agent, &host)?;
    let target = ClientTarget {
        address: addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls: agent,
        connect_timeout: CALL_TIMEOUT,
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    };
    let (channel, _) = connect(&target).await?;
    let hello = prost::Message::encode_to_vec(&AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: host,
            spool_id: 1,
            ..Default::default()
        })),
    });
    let mut head = vec![0u8];
    head.extend((hello.len() as u32).to_be_bytes());
    head.extend(hello);
    head.push(0);
    head.extend(partial_bytes.to_be_bytes());
    let (tx, rx) = mpsc::channel::<BodyFrame>(2);
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri("/hostwatch.v1.Ingest/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))?;
    let total = partial_bytes as usize - 1;
    Ok(tokio::spawn(async move {
        use tower::ServiceExt;
        let response = tokio::spawn(channel.oneshot(request));
        let mut sent = 0;
        if tx
            .send(Ok(http_body::Frame::data(head.into())))
            .await
            .is_err()
        {
            return (sent, tx);
        }
        while sent < total {
            let n = (total - sent).min(chunk.len());
            if tx
                .send(Ok(http_body::Frame::data(chunk.slice(..n))))
                .await
                .is_err()
            {
                break;
            }
            sent += n;
        }
        // Keep reading replies (none come) so the stream stays open.
        if let Ok(Ok(response)) = response.await {
            let mut body = response.into_body();
            while let Some(Ok(_)) = body.frame().await {}
        }
        (sent, tx)
    }))
}

/// The peak of this process's resident memory until it stops changing
/// (four readings half a second apart alike), at most a minute.
async fn settled_peak(probe: &Probe, before: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = before;
    let mut last = 0;
    let mut still = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = probe.rss_bytes()?.0;
        peak = peak.max(rss);
        if rss == last {
            still += 1;
            if still >= 4 {
                break;
            }
        } else {
            still = 0;
        }
        last = rss;
    }
    Ok(peak)
}

/// A CA, an operator and an agent certificate, and the collectors' data.
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    max_connections: usize,
    operator: TlsFiles,
    agent: TlsFiles,
    collectors: std::sync::atomic::AtomicUsize,
}

impl Setup {
    fn new(max_connections: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::generate("bench CA", 2)?;
        ca.write(dir.path())?;
        let operator = issue(&ca, dir.path(), Role::Operator, "bench")?;
        let agent = issue(&ca, dir.path(), Role::Agent, "flood")?;
        Ok(Setup {
            dir,
            ca,
            max_connections,
            operator,
            agent,
            collectors: Default::default(),
        })
    }

    fn files(&self, role: Role, name: &str) -> anyhow::Result<TlsFiles> {
        issue(&self.ca, self.dir.path(), role, name)
    }

    /// A fresh collector with default limits but `max_connections`.
    async fn collector(
        &self,
    ) -> anyhow::Result<(SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
        let files = self.files(Role::Collector, "bench")?;
        let n = self
            .collectors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = self.dir.path().join(format!("collector-{n}"));
        std::fs::create_dir(&data)?;
        let path = data.join("collector.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[limits]\nmax_connections = {}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
                data.join("data").display().to_string(),
                self.max_connections,
                files.ca.display().to_string(),
                files.cert.display().to_string(),
                files.key.display().to_string(),
            ),
        )?;
        spawn_collector(&path).await
    }
}
