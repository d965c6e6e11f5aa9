//! `hostwatch-bench forward`: what one remote_write destination adds to
//! ingest, and whether it keeps up, against a local receiver whose own
//! limit is measured in the same run.
//!
//! The receiver is a child process (`forward-receiver`): an HTTP/1.1
//! server that decompresses each body (snappy), decodes it (1.0 or 2.0
//! by its Content-Type) and counts the samples, so its CPU is its own.
//! First its limit: pre-encoded 2,000-sample requests posted by
//! `--receiver-clients` clients for `--receiver-secs`, its samples per
//! second and CPU per sample. Then `--rounds` rounds, each of two phases
//! in alternating order on a fresh store: agent-like batches (the storage
//! benchmark's hosts, one point per series per batch, 10 s of a simulated
//! clock per tick) appended by `--writers` threads at `--rate` samples per
//! second for `--secs`, once with the store's accept log off and no
//! forwarding ("alone"), once with the accept log on and forwarding to the
//! receiver ("forward"). The forward phase's CPU runs until forwarding has
//! sent every stored sample (or `--drain-timeout-secs`). `--rate 0` first
//! measures the flat-out rate alone and runs at 80% of it.
//!
//! Prints the process' CPU per stored sample of each phase (this process:
//! store, accept log, forwarding; not the receiver), their ratio, the
//! rates reached, the forwarding figures at the end of ingest (pending,
//! lag) and the drain time after it, the time forwarding spent reading
//! back and encoding per sample, and the receiver's count against what
//! was sent. Medians over the rounds.

use crate::measure::{Probe, median, process_cpu_ns};
use crate::storage::INTERVAL_MS;
use crate::storage::data::HostGen;
use anyhow::Context;
use hostwatch_collector::Forwarder;
use hostwatch_collector::config::{ForwardConfig, Protocol, QueueConfig};
use hostwatch_tsdb::{Options, Store};
use prost::Message;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Simulated hosts (about 89 series each).
    #[arg(long, default_value_t = 2_000)]
    hosts: u32,
    /// Target ingest rate in samples per second; 0: 80% of the flat-out
    /// rate measured first.
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// Seconds of ingest per phase.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Rounds (each one phase alone, one with forwarding).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Threads appending batches.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// remote_write version sent: "1.0" or "2.0".
    #[arg(long, default_value = "1.0")]
    protocol: String,
    /// The destination's `queue.shards`.
    #[arg(long, default_value_t = QueueConfig::default().shards)]
    shards: usize,
    /// The destination's `queue.max_samples_per_request`.
    #[arg(long, default_value_t = QueueConfig::default().max_samples_per_request)]
    max_samples_per_request: usize,
    /// Concurrent clients measuring the receiver's limit.
    #[arg(long, default_value_t = 4)]
    receiver_clients: usize,
    /// Seconds measuring the receiver's limit.
    #[arg(long, default_value_t = 5)]
    receiver_secs: u64,
    /// Longest wait for forwarding to send everything after ingest.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    /// Directory for the stores (a temporary one inside it, removed).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// `forward-receiver`: the bench's receiver process (internal).
#[derive(clap::Args)]
pub(crate) struct ReceiverArgs {}

/// What one phase measured.
struct Phase {
    stored: u64,
    rate: f64,
    cpu_ns_per_sample: f64,
    /// Forward phases only.
    forward: Option<ForwardPhase>,
}

struct ForwardPhase {
    pending_at_end: u64,
    max_pending: u64,
    lag_groups_at_end: u64,
    drain_secs: f64,
    sent: u64,
    dropped: u64,
    failed: u64,
    received: u64,
    read_ns_per_sample: f64,
    encode_ns_per_sample: f64,
    receiver_cpu_ns_per_sample: f64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let protocol = match args.protocol.as_str() {
        "1.0" => Protocol::V1,
        "2.0" => Protocol::V2,
        other => anyhow::bail!("--protocol {other:?}: must be \"1.0\" or \"2.0\""),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let receiver = Receiver::spawn()?;
    let url = format!("http://127.0.0.1:{}/write", receiver.port);
    let (limit, limit_cpu) = runtime.block_on(receiver_limit(&args, &receiver, &url))?;
    println!("receiver_limit_samples_per_s={limit:.0}");
    println!("receiver_limit_cpu_ns_per_sample={limit_cpu:.0}");
    let parent = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent)?;
    let rate = if args.rate == 0 {
        let flat = run_phase(&args, &runtime, &parent, None, 0, &receiver)?;
        println!("flat_out_alone_samples_per_s={:.0}", flat.rate);
        (flat.rate * 0.8) as u64
    } else {
        args.rate
    };
    println!("target_samples_per_s={rate}");
    let mut alone = Vec::new();
    let mut forward = Vec::new();
    for round in 0..args.rounds {
        // Alternating which goes first, so that a trend in the machine's
        // load falls on both.
        for forwarding in [round % 2 == 1, round % 2 == 0] {
            let section = forwarding.then(|| section(&args, &url, protocol));
            let phase = run_phase(&args, &runtime, &parent, section, rate, &receiver)?;
            eprintln!(
                "round {round} {}: {:.0} samples/s, {:.0} ns/sample",
                if forwarding { "forward" } else { "alone" },
                phase.rate,
                phase.cpu_ns_per_sample
            );
            if forwarding {
                forward.push(phase);
            } else {
                alone.push(phase);
            }
        }
    }
    report(&alone, &forward);
    receiver.stop();
    Ok(())
}

fn section(args: &Args, url: &str, protocol: Protocol) -> ForwardConfig {
    ForwardConfig {
        name: "bench".to_owned(),
        url: url.to_owned(),
        bearer_token_file: None,
        basic_auth: None,
        tls: None,
        headers: Default::default(),
        matchers: Vec::new(),
        timeout: Duration::from_secs(30),
        protocol,
        queue: QueueConfig {
            shards: args.shards,
            max_samples_per_request: args.max_samples_per_request,
            capacity: (args.max_samples_per_request * 10).max(QueueConfig::default().capacity),
            ..QueueConfig::default()
        },
    }
}

fn report(alone: &[Phase], forward: &[Phase]) {
    let med = |phases: &[Phase], f: &dyn Fn(&Phase) -> f64| {
        median(&phases.iter().map(f).collect::<Vec<f64>>()).unwrap_or(f64::NAN)
    };
    let fwd = |f: &dyn Fn(&ForwardPhase) -> f64| {
        med(forward, &|p: &Phase| p.forward.as_ref().map_or(f64::NAN, f))
    };
    let alone_cpu = med(alone, &|p| p.cpu_ns_per_sample);
    let forward_cpu = med(forward, &|p| p.cpu_ns_per_sample);
    println!("alone_samples_per_s_median={:.0}", med(alone, &|p| p.rate));
    println!(
        "forward_samples_per_s_median={:.0}",
        med(forward, &|p| p.rate)
    );
    println!("alone_cpu_ns_per_sample_median={alone_cpu:.0}");
    println!("forward_cpu_ns_per_sample_median={forward_cpu:.0}");
    // Per round, so that each ratio compares phases run back to back.
    let ratios: Vec<f64> = alone
        .iter()
        .zip(forward)
        .map(|(a, f)| f.cpu_ns_per_sample / a.cpu_ns_per_sample)
        .collect();
    println!(
        "ratio_cpu_forward_to_alone_median={:.3}",
        median(&ratios).unwrap_or(f64::NAN)
    );
    println!(
        "forward_pending_at_end_median={:.0}",
        fwd(&|f| f.pending_at_end as f64)
    );
    println!(
        "forward_max_pending_median={:.0}",
        fwd(&|f| f.max_pending as f64)
    );
    println!(
        "forward_lag_groups_at_end_median={:.0}",
        fwd(&|f| f.lag_groups_at_end as f64)
    );
    println!("forward_drain_secs_median={:.2}", fwd(&|f| f.drain_secs));
    println!(
        "forward_read_ns_per_sample_median={:.0}",
        fwd(&|f| f.read_ns_per_sample)
    );
    println!(
        "forward_encode_ns_per_sample_median={:.0}",
        fwd(&|f| f.encode_ns_per_sample)
    );
    println!(
        "receiver_cpu_ns_per_sample_median={:.0}",
        fwd(&|f| f.receiver_cpu_ns_per_sample)
    );
    let sum = |f: &dyn Fn(&ForwardPhase) -> u64| -> u64 {
        forward
            .iter()
            .filter_map(|p| p.forward.as_ref())
            .map(f)
            .sum()
    };
    println!(
        "forward_stored_total={}",
        forward.iter().map(|p| p.stored).sum::<u64>()
    );
    println!("forward_sent_total={}", sum(&|f| f.sent));
    println!("forward_received_total={}", sum(&|f| f.received));
    println!("forward_failed_total={}", sum(&|f| f.failed));
    println!("forward_dropped_total={}", sum(&|f| f.dropped));
}

/// One phase on a fresh store: `rate` samples/s (0: flat out) for
/// `--secs`, forwarding to `section` if given.
fn run_phase(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    parent: &std::path::Path,
    section: Option<ForwardConfig>,
    rate: u64,
    receiver: &Receiver,
) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir_in(parent)?;
    // An hour boundary two hours back: the simulated clock runs ahead of
    // the wall clock by up to the run's ticks.
    let start = hostwatch_stdx::now_ms() / 3_600_000 * 3_600_000 - 2 * 3_600_000;
    let clock = Arc::new(AtomicI64::new(start + 1_000));
    let now = clock.clone();
    let options = Options {
        accept_log: section.is_some(),
        clock: Arc::new(move || now.load(Ordering::Relaxed)),
        ..Options::default()
    };
    let store = Arc::new(Store::open(dir.path(), options)?);
    let writers = args.writers.max(1);
    let mut groups: Vec<Vec<HostGen>> = (0..writers).map(|_| Vec::new()).collect();
    for i in 0..args.hosts {
        groups[i as usize % writers].push(HostGen::new(i, false));
    }
    // Tick 0 creates every series, outside the measurement.
    let mut batches: Vec<Vec<_>> = groups
        .iter()
        .map(|hosts| hosts.iter().map(HostGen::batch).collect())
        .collect();
    for (hosts, batches) in groups.iter_mut().zip(&mut batches) {
        for (host, batch) in hosts.iter_mut().zip(batches.iter_mut()) {
            host.fill(batch, 1, start, 1);
            store.append(batch)?;
        }
    }
    let forwarder = match section {
        Some(section) => {
            let _guard = runtime.enter();
            Some(Forwarder::start(store.clone(), &[section]).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let received_before = receiver.count()?;
    let receiver_cpu_before = receiver.probe.cpu_ns()?;
    let stored = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu_ns()?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(args.secs);
    let per_writer = rate as f64 / writers as f64;
    let mut max_pending = 0u64;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (hosts, batches) in groups.iter_mut().zip(&mut batches) {
            let (store, clock, stored) = (&store, &clock, &stored);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut mine = 0u64;
                let mut tick = 1i64;
                while Instant::now() < deadline {
                    let t = start + tick * INTERVAL_MS;
                    clock.fetch_max(t + 1_000, Ordering::Relaxed);
                    for (host, batch) in hosts.iter_mut().zip(batches.iter_mut()) {
                        host.fill(batch, tick as u64 + 1, t, 1);
                        mine += store.append(batch)?.stored;
                    }
                    tick += 1;
                    if per_writer > 0.0 {
                        let due = began + Duration::from_secs_f64(mine as f64 / per_writer);
                        let until = due.min(deadline);
                        let now = Instant::now();
                        if until > now {
                            std::thread::sleep(until - now);
                        }
                    }
                }
                stored.fetch_add(mine, Ordering::Relaxed);
                Ok(())
            }));
        }
        // Forwarding's pending samples, four times a second meanwhile.
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            if let Some(f) = &forwarder {
                max_pending = max_pending.max(figures(f).pending);
            }
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    let ingest_secs = began.elapsed().as_secs_f64();
    let stored = stored.load(Ordering::Relaxed);
    let forward = match forwarder {
        Some(forwarder) => {
            let at_end = figures(&forwarder);
            max_pending = max_pending.max(at_end.pending);
            // Tick 0's samples were accepted before forwarding started.
            let drained = Instant::now();
            let limit = drained + Duration::from_secs(args.drain_timeout_secs);
            let mut last = at_end;
            while last.sent + last.dropped < stored && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(20));
                last = figures(&forwarder);
            }
            let drain_secs = drained.elapsed().as_secs_f64();
            let cpu = process_cpu_ns()? - cpu_before;
            runtime.block_on(forwarder.stop());
            // The receiver counts a request before it answers.
            let received = receiver.count()? - received_before;
            let receiver_cpu = receiver.probe.cpu_ns()? - receiver_cpu_before;
            let per = |ns: u64| ns as f64 / stored.max(1) as f64;
            Some((
                cpu,
                ForwardPhase {
                    pending_at_end: at_end.pending,
                    max_pending,
                    lag_groups_at_end: at_end.lag_groups,
                    drain_secs,
                    sent: last.sent,
                    dropped: last.dropped,
                    failed: last.failed,
                    received,
                    read_ns_per_sample: per(last.read_ns),
                    encode_ns_per_sample: per(last.encode_ns),
                    receiver_cpu_ns_per_sample: per(receiver_cpu),
                },
            ))
        }
        None => None,
    };
    let (cpu, forward) = match forward {
        Some((cpu, f)) => (cpu, Some(f)),
        None => (process_cpu_ns()? - cpu_before, None),
    };
    drop(store);
    dir.close()?;
    Ok(Phase {
        stored,
        rate: stored as f64 / ingest_secs,
        cpu_ns_per_sample: cpu as f64 / stored.max(1) as f64,
        forward,
    })
}

fn figures(forwarder: &Forwarder) -> hostwatch_collector::ForwardFigures {
    forwarder
        .figures()
        .into_iter()
        .map(|(_, f)| f)
        .next()
        .unwrap_or(hostwatch_collector::ForwardFigures {
            sent: 0,
            failed: 0,
            dropped: 0,
            pending: 0,
            cursor: 0,
            lag_groups: 0,
            lag_ms: 0,
            read_ns: 0,
            encode_ns: 0,
        })
}

/// The receiver's limit: pre-encoded 1.0 requests of 2,000 samples posted
/// by concurrent clients. (samples/s, its CPU ns per sample).
async fn receiver_limit(args: &Args, receiver: &Receiver, url: &str) -> anyhow::Result<(f64, f64)> {
    let mut host = HostGen::new(0, false);
    let mut bodies = Vec::new();
    let mut per_body = 0u64;
    for b in 0..16i64 {
        let mut series = Vec::new();
        let mut n = 0;
        let values = host.next_values();
        'fill: for tick in 0..100i64 {
            for (s, v) in host.series.iter().zip(&values) {
                let mut labels = vec![hostwatch_proto::prometheus::Label {
                    name: "__name__".into(),
                    value: s.metric.clone(),
                }];
                labels.push(hostwatch_proto::prometheus::Label {
                    name: "host".into(),
                    value: format!("host-{b}-{tick}"),
                });
                labels.extend(s.labels.iter().map(|l| hostwatch_proto::prometheus::Label {
                    name: l.name.clone(),
                    value: l.value.clone(),
                }));
                series.push(hostwatch_proto::prometheus::TimeSeries {
                    labels,
                    samples: vec![hostwatch_proto::prometheus::Sample {
                        value: *v,
                        timestamp: 1_700_000_000_000 + tick * INTERVAL_MS,
                    }],
                });
                n += 1;
                if n == 2_000 {
                    break 'fill;
                }
            }
        }
        per_body = n;
        let raw = hostwatch_proto::prometheus::WriteRequest { timeseries: series }.encode_to_vec();
        bodies.push(bytes_of(snap::raw::Encoder::new().compress_vec(&raw)?));
    }
    let client = reqwest::Client::new();
    let before = receiver.count()?;
    let cpu_before = receiver.probe.cpu_ns()?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(args.receiver_secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.receiver_clients.max(1) {
        let (client, url, bodies) = (client.clone(), url.to_owned(), bodies.clone());
        tasks.spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let response = client
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "receiver: {}",
                    response.status()
                );
                i += 1;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let secs = began.elapsed().as_secs_f64();
    let samples = receiver.count()? - before;
    let cpu = receiver.probe.cpu_ns()? - cpu_before;
    anyhow::ensure!(
        samples > 0 && samples % per_body == 0,
        "the receiver counted {samples}"
    );
    Ok((samples as f64 / secs, cpu as f64 / samples as f64))
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

/// The receiver child process.
struct Receiver {
    child: std::process::Child,
    port: u16,
    probe: Probe,
}

impl Receiver {
    fn spawn() -> anyhow::Result<Self> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("forward-receiver")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = line
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the receiver said {line:?}"))?;
        let probe = Probe::new(child.id());
        Ok(Receiver { child, port, probe })
    }

    /// Samples the receiver has counted so far.
    fn count(&self) -> anyhow::Result<u64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text)?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        body.trim()
            .parse()
            .with_context(|| format!("the receiver's count: {text:?}"))
    }

    fn stop(mut self) {
        // Closing its stdin ends it.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The receiver: counts the samples of each request and answers 204 (with
/// 2.0's samples-written header for a 2.0 request); ends when its stdin
/// closes.
pub(crate) fn receiver(_: ReceiverArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let count = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("port={}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let writes = count.clone();
        let app = axum::Router::new()
            .route(
                "/write",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                    let count = writes.clone();
                    async move { decode_and_count(&headers, &body, &count) }
                }),
            )
            .route(
                "/count",
                axum::routing::get(move || {
                    let n = count.load(Ordering::Relaxed);
                    async move { n.to_string() }
                }),
            );
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                    sink.clear();
                }
            })
            .await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stdin_closed)
            .await?;
        Ok(())
    })
}

fn decode_and_count(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    count: &AtomicU64,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(raw) => raw,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("snappy: {e}")).into_response(),
    };
    let v2 = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("io.prometheus.write.v2.Request"));
    let samples = if v2 {
        match hostwatch_proto::prometheus_v2::Request::decode(&raw[..]) {
            Ok(r) => r.timeseries.iter().map(|t| t.samples.len() as u64).sum(),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("protobuf: {e}")).into_response(),
        }
    } else {
        match hostwatch_proto::prometheus::WriteRequest::decode(&raw[..]) {
            Ok(r) => r.timeseries.iter().map(|t| t.samples.len() as u64).sum(),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("protobuf: {e}")).into_response(),
        }
    };
    count.fetch_add(samples, Ordering::Relaxed);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if v2 {
        response.headers_mut().insert(
            "x-prometheus-remote-write-samples-written",
            axum::http::HeaderValue::from(samples),
        );
    }
    response
}
