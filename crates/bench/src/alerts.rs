//! `hostwatch-bench alerts`: what alerting costs and how fast it pages.
//!
//! 1. Evaluation share of ingest CPU: agent-like batches (about 100 series
//!    each, a top-process snapshot, 1% of hosts hot) from `--hosts` hosts,
//!    one tick per round, encoded as agents send them, then run through the
//!    collector's ingest path (protobuf decoding, `convert_batch`, the
//!    store's append) and evaluated by the default rules, on `--threads`
//!    threads, chunk by chunk (16 batches decoded and appended, then
//!    evaluated while still in the caches, as the collector evaluates a
//!    batch right after appending it). Evaluation CPU is measured on the
//!    evaluating threads; ingest CPU is the rest of the process's CPU in
//!    the round (decoding, appends, group commits, the store's background
//!    work); the store's part is ingest minus the measured decoding. TLS
//!    and HTTP/2 are not included, so the shares overstate the collector's.
//!    One warm-up round, then `--rounds` measured ones; shares per round,
//!    medians printed.
//! 2. Notification latency: a real collector (mTLS ingest, sled) with a
//!    `for: 0s` rule and a webhook without grouping delay; agents' streams
//!    send a sample crossing the threshold, and the time until the webhook
//!    receiver holds the page is measured, `--crossings` times.
//! 3. Host down: `--down-hosts` agents stream, then their connections are
//!    cut; the time until the webhook holds each host's host-down page,
//!    beyond `host_down_after`, is measured.

use crate::fixture::{issue, open_ingest, series_to_proto, spawn_collector};
use crate::measure::{median, percentile, process_cpu_ns, thread_cpu_ns};
use anyhow::{Context, bail};
use hostwatch_alerting::{Alerting, AlertingConfig, BatchContext, Clock, SnapshotSource};
use hostwatch_pki::transport::ClientTarget;
use hostwatch_pki::{Ca, Role, TlsFiles};
use hostwatch_proto::v1 as pb;
use hostwatch_stdx::now_ms;
use hostwatch_tsdb::{
    Batch, Label, Options, Point, ProcessInfo, ProcessSnapshot, SeriesInput, Store,
};
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Hosts sending batches for the evaluation-cost figure.
    #[arg(long, default_value_t = 10_000)]
    hosts: u32,
    /// Measured rounds (one tick of every host each), after one warm-up round.
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// Threads appending, then evaluating.
    #[arg(long, default_value_t = 8)]
    threads: u32,
    /// Threshold crossings timed from the sample to the webhook.
    #[arg(long, default_value_t = 400)]
    crossings: u32,
    /// Hosts whose connections are cut for the host-down figure.
    #[arg(long, default_value_t = 20)]
    down_hosts: u32,
    /// Only the latency and host-down figures.
    #[arg(long)]
    skip_evaluation: bool,
    /// Store each thread's chunk of batches pipelined (all submitted, then
    /// waited for, so they share flushes) instead of appending one batch at
    /// a time as the collector's streams do today.
    #[arg(long)]
    pipelined: bool,
}

/// Longest wait for any one page before the benchmark gives up.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// `host_down_after` of the benchmark's collector.
const HOST_DOWN_AFTER: Duration = Duration::from_secs(2);
/// Streams the latency figure spreads its crossings over.
const LATENCY_HOSTS: u32 = 20;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.hosts == 0
        || args.rounds == 0
        || args.threads == 0
        || args.crossings == 0
        || args.down_hosts == 0
    {
        bail!("--hosts, --rounds, --threads, --crossings and --down-hosts must be at least 1");
    }
    // The collector's warnings (a delivery retried, say) explain outliers.
    hostwatch_runtime::init_tracing("warn");
    if !args.skip_evaluation {
        evaluation_share(&args)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        notification_latency(&args).await?;
        host_down_delay(&args).await
    })
}

fn label(name: &str, value: &str) -> Label {
    Label::new(name, value)
}

/// One tick of an agent-like batch: the metric families of docs/metrics.md's
/// table, with realistic label sets and values; `hot` hosts run their CPU
/// at 97% and fill their data disk.
fn agent_batch(host: u32, seq: u64, t_ms: i64, hot: bool) -> Batch {
    let mut s = TickSeries {
        series: Vec::with_capacity(110),
        t_ms,
    };
    let wobble = ((host as u64 * 7919 + seq * 104_729) % 1000) as f64 / 1000.0;
    let cpu = if hot { 0.97 } else { 0.1 + 0.3 * wobble };
    cpu_series(&mut s, cpu);
    pressure_series(&mut s, seq, wobble);
    system_series(&mut s, seq, cpu, wobble);
    filesystem_series(&mut s, seq, hot);
    disk_series(&mut s, seq, wobble);
    network_series(&mut s, seq);
    watched_process_series(&mut s, wobble);
    agent_self_series(&mut s, seq);
    Batch {
        host: format!("host-{host:05}"),
        source: 1,
        seq,
        series: s.series,
        processes: vec![ProcessSnapshot {
            t_ms,
            processes: top_processes(t_ms, hot),
        }],
        malformed: 0,
    }
}

/// The series of one tick, in the order a batch lists them.
struct TickSeries {
    series: Vec<SeriesInput>,
    t_ms: i64,
}

impl TickSeries {
    fn push(&mut self, metric: &str, labels: Vec<Label>, value: f64) {
        self.series.push(SeriesInput {
            metric: metric.to_owned(),
            labels,
            points: vec![Point {
                t_ms: self.t_ms,
                value,
            }],
        })
    }
}

/// The processors, at utilization `cpu`.
fn cpu_series(s: &mut TickSeries, cpu: f64) {
    s.push(
        "host_cpu_utilization_ratio",
        vec![label("cpu", "total")],
        cpu,
    );
    for core in 0..4 {
        s.push(
            "host_cpu_utilization_ratio",
            vec![label("cpu", &core.to_string())],
            cpu,
        );
    }
    for (mode, share) in [
        ("user", 0.6),
        ("nice", 0.0),
        ("system", 0.2),
        ("iowait", 0.05),
        ("irq", 0.0),
        ("softirq", 0.01),
        ("steal", 0.0),
    ] {
        s.push(
            "host_cpu_time_ratio",
            vec![label("mode", mode)],
            cpu * share,
        );
    }
    s.push(
        "host_cpu_time_ratio",
        vec![label("mode", "idle")],
        1.0 - cpu,
    );
    s.push("host_cpu_count", vec![], 4.0);
}

/// Pressure stall information.
fn pressure_series(s: &mut TickSeries, seq: u64, wobble: f64) {
    for resource in ["cpu", "memory", "io"] {
        for kind in ["some", "full"] {
            s.push(
                "host_pressure_avg10_ratio",
                vec![label("kind", kind), label("resource", resource)],
                0.01 * wobble,
            );
            s.push(
                "host_pressure_stalled_seconds_total",
                vec![label("kind", kind), label("resource", resource)],
                seq as f64 * 0.01,
            );
        }
    }
}

/// Memory, swap, load, uptime and the process table.
fn system_series(s: &mut TickSeries, seq: u64, cpu: f64, wobble: f64) {
    let total = 16e9;
    for (metric, value) in [
        ("host_memory_total_bytes", total),
        ("host_memory_available_bytes", total * (0.4 + 0.2 * wobble)),
        ("host_memory_used_bytes", total * 0.5),
        ("host_memory_free_bytes", total * 0.2),
        ("host_memory_cached_bytes", total * 0.2),
        ("host_memory_buffers_bytes", total * 0.01),
        ("host_swap_total_bytes", 4e9),
        ("host_swap_used_bytes", 1e8),
        ("host_swap_in_bytes_total", seq as f64 * 4096.0),
        ("host_swap_out_bytes_total", seq as f64 * 4096.0),
        ("host_load1", 4.0 * cpu),
        ("host_load5", 4.0 * cpu),
        ("host_load15", 4.0 * cpu),
        ("host_uptime_seconds", 86_400.0 + seq as f64 * 10.0),
        ("host_boot_time_seconds", 1.7e9),
        ("host_processes", 300.0),
        ("host_threads", 900.0),
        ("host_procs_running", 2.0),
        ("host_procs_blocked", 0.0),
        ("host_context_switches_total", seq as f64 * 5e4),
        ("host_forks_total", seq as f64 * 30.0),
    ] {
        s.push(metric, vec![], value);
    }
}

/// Three filesystems; a `hot` host fills its data disk.
fn filesystem_series(s: &mut TickSeries, seq: u64, hot: bool) {
    for (mount, device, size) in [
        ("/", "/dev/sda1", 50e9),
        ("/var/lib", "/dev/sdb1", 500e9),
        ("/boot", "/dev/sda2", 1e9),
    ] {
        let labels = || {
            vec![
                label("device", device),
                label("fstype", "ext4"),
                label("mountpoint", mount),
            ]
        };
        let free = if hot && mount == "/var/lib" {
            size * 0.05 - seq as f64 * 1e6
        } else {
            size * 0.6
        };
        s.push("host_filesystem_size_bytes", labels(), size);
        s.push("host_filesystem_free_bytes", labels(), free);
        s.push("host_filesystem_available_bytes", labels(), free * 0.95);
        s.push("host_filesystem_inodes", labels(), 3e6);
        s.push("host_filesystem_inodes_free", labels(), 2e6);
    }
}

/// Two disks.
fn disk_series(s: &mut TickSeries, seq: u64, wobble: f64) {
    for device in ["sda", "sdb"] {
        for metric in [
            "host_disk_read_bytes_total",
            "host_disk_written_bytes_total",
            "host_disk_reads_completed_total",
            "host_disk_writes_completed_total",
            "host_disk_io_time_seconds_total",
        ] {
            s.push(metric, vec![label("device", device)], seq as f64 * 1e5);
        }
        s.push(
            "host_disk_utilization_ratio",
            vec![label("device", device)],
            0.1 * wobble,
        );
    }
}

/// Two network devices.
fn network_series(s: &mut TickSeries, seq: u64) {
    for device in ["eth0", "eth1"] {
        for metric in [
            "host_network_receive_bytes_total",
            "host_network_transmit_bytes_total",
            "host_network_receive_packets_total",
            "host_network_transmit_packets_total",
            "host_network_receive_errors_total",
            "host_network_transmit_errors_total",
            "host_network_receive_drops_total",
            "host_network_transmit_drops_total",
        ] {
            s.push(metric, vec![label("device", device)], seq as f64 * 1e6);
        }
    }
}

/// Two watched processes.
fn watched_process_series(s: &mut TickSeries, wobble: f64) {
    for name in ["nginx", "postgres"] {
        s.push("host_process_running", vec![label("name", name)], 1.0);
        s.push(
            "host_process_cpu_cores",
            vec![label("name", name)],
            0.2 * wobble,
        );
        s.push(
            "host_process_resident_bytes",
            vec![label("name", name)],
            2e8,
        );
    }
}

/// The agent's own metrics.
fn agent_self_series(s: &mut TickSeries, seq: u64) {
    for (metric, value) in [
        ("hostwatch_agent_cpu_seconds_total", seq as f64 * 0.002),
        ("hostwatch_agent_resident_bytes", 6e6),
        ("hostwatch_agent_spool_bytes", 4096.0),
        ("hostwatch_agent_spool_batches", 1.0),
        ("hostwatch_agent_spool_dropped_batches_total", 0.0),
        ("hostwatch_agent_spool_corrupt_records_total", 0.0),
        ("hostwatch_agent_spool_write_errors_total", 0.0),
        ("hostwatch_agent_spool_durable", 1.0),
        ("hostwatch_agent_connected", 1.0),
        ("hostwatch_agent_reconnects_total", 0.0),
        ("hostwatch_agent_send_latency_seconds", 0.002),
    ] {
        s.push(metric, vec![], value);
    }
}

/// The top processes of one snapshot; a `hot` host's first one is busy.
fn top_processes(t_ms: i64, hot: bool) -> Vec<ProcessInfo> {
    (0..20)
        .map(|i| ProcessInfo {
            pid: 1000 + i,
            name: format!("proc{i}"),
            command: format!("/usr/bin/proc{i} --serve"),
            user: "app".to_owned(),
            cpu_cores: if i == 0 && hot {
                3.8
            } else {
                0.01 * f64::from(i)
            },
            rss_bytes: 1 << (20 + i % 8),
            start_time_ms: t_ms - 3_600_000,
        })
        .collect()
}

/// Batches appended then evaluated together: few enough that a chunk's
/// batches are still in the CPU caches when evaluated, as in the collector
/// (which evaluates each batch right after appending it).
const CHUNK: usize = 16;

/// A batch as it comes off the wire, for the agent with this host id.
struct Wire {
    host: String,
    bytes: Vec<u8>,
}

/// The protobuf form of a store batch, as an agent sends it.
fn encode(batch: &Batch) -> Wire {
    let series = series_to_proto(batch);
    let processes = batch
        .processes
        .iter()
        .map(|snapshot| pb::ProcessSnapshot {
            timestamp_ms: snapshot.t_ms,
            processes: snapshot
                .processes
                .iter()
                .map(|p| pb::ProcessInfo {
                    pid: p.pid,
                    name: p.name.clone(),
                    command: p.command.clone(),
                    user: p.user.clone(),
                    cpu_cores: p.cpu_cores,
                    rss_bytes: p.rss_bytes,
                    start_time_ms: p.start_time_ms,
                })
                .collect(),
        })
        .collect();
    let message = pb::Batch {
        seq: batch.seq,
        series,
        processes,
        ..pb::Batch::default()
    };
    Wire {
        host: batch.host.clone(),
        bytes: message.encode_to_vec(),
    }
}

/// CPU of one round, split.
struct RoundCpu {
    /// Decoding, converting and storing (and the store's background work).
    ingest_ns: u64,
    /// The store's part of it: appends, group commits, background work.
    append_ns: u64,
    /// Evaluation, measured on the evaluating threads.
    eval_ns: u64,
}

/// Runs the collector's ingest path (protobuf decoding, conversion, the
/// store's append) and the evaluation that follows it over `wire` on
/// `threads` threads, each taking every `threads`-th chunk (a host's
/// batches stay on one thread, in order).
fn ingest_and_evaluate(
    wire: &[Wire],
    threads: u32,
    pipelined: bool,
    store: &Store,
    alerting: &Alerting,
) -> anyhow::Result<RoundCpu> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (decode_ns, eval_ns, failed) =
        (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let received_ms = now_ms();
    let before = process_cpu_ns()?;
    std::thread::scope(|scope| {
        for t in 0..threads as usize {
            let (decode_ns, eval_ns, failed) = (&decode_ns, &eval_ns, &failed);
            scope.spawn(move || {
                let (mut decoding, mut evaluating) = (0, 0);
                for chunk in wire.chunks(CHUNK).skip(t).step_by(threads as usize) {
                    let Ok(start) = thread_cpu_ns() else { return };
                    let batches: Vec<Batch> = chunk
                        .iter()
                        .filter_map(|w| pb::Batch::decode(w.bytes.as_slice()).ok().map(|b| (w, b)))
                        .map(|(w, b)| hostwatch_collector::convert_batch(&w.host, 1, b))
                        .collect();
                    let Ok(decoded) = thread_cpu_ns() else { return };
                    let stored = if pipelined {
                        let pending: Result<Vec<_>, _> =
                            batches.iter().map(|b| store.submit(b)).collect();
                        pending.is_ok_and(|p| p.into_iter().all(|p| store.wait(p).is_ok()))
                    } else {
                        batches.iter().all(|b| store.append(b).is_ok())
                    };
                    if batches.len() != chunk.len() || !stored {
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    let Ok(appended) = thread_cpu_ns() else {
                        return;
                    };
                    for b in &batches {
                        alerting.observe(
                            b,
                            BatchContext {
                                received_ms,
                                dropped_batches_total: 0,
                                future_tolerance_ms: 600_000,
                            },
                        );
                    }
                    let Ok(evaluated) = thread_cpu_ns() else {
                        return;
                    };
                    drop(batches);
                    let Ok(dropped) = thread_cpu_ns() else { return };
                    decoding += (decoded - start) + (dropped - evaluated);
                    evaluating += evaluated - appended;
                }
                decode_ns.fetch_add(decoding, Ordering::Relaxed);
                eval_ns.fetch_add(evaluating, Ordering::Relaxed);
            });
        }
    });
    if failed.into_inner() {
        bail!("decoding or appending failed");
    }
    let total = process_cpu_ns()?.saturating_sub(before);
    let (decode_ns, eval_ns) = (decode_ns.into_inner(), eval_ns.into_inner());
    let ingest_ns = total.saturating_sub(eval_ns);
    Ok(RoundCpu {
        ingest_ns,
        append_ns: ingest_ns.saturating_sub(decode_ns),
        eval_ns,
    })
}

fn evaluation_share(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // As the collector opens them: its state and the store apart.
    let db = sled::Config::new().path(dir.path()).open()?;
    let store = Arc::new(Store::open(&dir.path().join("store"), Options::default())?);
    let rules = AlertingConfig::default()
        .compile(Duration::from_secs(30))
        .map_err(anyhow::Error::msg)?;
    let rule_count = rules.rules.len();
    let snapshots: SnapshotSource = {
        let store = store.clone();
        Arc::new(move |host: &str, t: i64| store.process_snapshot_at(host, t).ok().flatten())
    };
    let alerting = Alerting::open(&db, rules, snapshots, Clock::system())?;
    let mut figures: [Vec<f64>; 5] = Default::default();
    for round in 0..=args.rounds {
        let seq = u64::from(round) + 1;
        // Sample time is now: the clock-skew rule compares it with arrival.
        let t_ms = now_ms();
        let wire: Vec<Wire> = (0..args.hosts)
            .map(|h| encode(&agent_batch(h, seq, t_ms, h % 100 == 0)))
            .collect();
        let samples = (args.hosts as usize * agent_batch(0, seq, t_ms, false).series.len()) as f64;
        let cpu = ingest_and_evaluate(&wire, args.threads, args.pipelined, &store, &alerting)?;
        if round == 0 {
            continue; // warm-up: series and trackers created
        }
        let [share_ingest, share_append, ingest, append, eval] = &mut figures;
        share_ingest.push(100.0 * cpu.eval_ns as f64 / cpu.ingest_ns as f64);
        share_append.push(100.0 * cpu.eval_ns as f64 / cpu.append_ns as f64);
        ingest.push(cpu.ingest_ns as f64 / samples);
        append.push(cpu.append_ns as f64 / samples);
        eval.push(cpu.eval_ns as f64 / samples);
        eprintln!(
            "round {round}: {samples} samples; CPU: ingest {:.2} s (store {:.2} s), evaluation {:.3} s",
            cpu.ingest_ns as f64 / 1e9,
            cpu.append_ns as f64 / 1e9,
            cpu.eval_ns as f64 / 1e9
        );
    }
    let [share_ingest, share_append, ingest, append, eval] = &figures;
    let med = |v: &Vec<f64>| median(v).unwrap_or(f64::NAN);
    let series_per_batch = agent_batch(1, 1, now_ms(), false).series.len();
    println!("eval_hosts={}", args.hosts);
    println!("eval_rules={rule_count}");
    println!("eval_series_per_batch={series_per_batch}");
    println!("eval_alerts_open={}", alerting.alerts().len());
    println!("ingest_cpu_ns_per_sample={:.0}", med(ingest));
    println!("store_append_cpu_ns_per_sample={:.0}", med(append));
    println!("eval_cpu_ns_per_sample={:.1}", med(eval));
    println!("eval_share_of_ingest_cpu_pct={:.2}", med(share_ingest));
    println!(
        "eval_share_of_store_append_cpu_pct={:.2}",
        med(share_append)
    );
    Ok(())
}

/// A CA and certificates, and the collector's configuration file, in a temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::generate("bench CA", 2)?;
        ca.write(dir.path())?;
        Ok(Setup { dir, ca })
    }

    fn files(&self, role: Role, name: &str) -> anyhow::Result<TlsFiles> {
        issue(&self.ca, self.dir.path(), role, name)
    }

    /// Starts a collector whose rules page a crossing of `bench_value > 0.5`
    /// and host down, to the webhook at `hook`.
    async fn collector(
        &self,
        hook: SocketAddr,
        data: &str,
    ) -> anyhow::Result<(SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
        let files = self.files(Role::Collector, "bench")?;
        let text = format!(
            r#"listen = "127.0.0.1:0"
data_dir = {data:?}
host_down_after = "{down}s"
[tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
[alerting]
default_rules = false
flap_window = "0s"
[[alerting.rules]]
name = "bench_crossing"
kind = "threshold"
metric = "bench_value"
op = ">"
raise = 0.5
[[alerting.rules]]
name = "host_down"
kind = "host_down"
[[alerting.hooks]]
name = "receiver"
kind = "webhook"
url = "http://{hook}/"
group_by = ["..."]
group_wait = "0s"
group_interval = "0s"
"#,
            down = HOST_DOWN_AFTER.as_secs(),
            ca = files.ca.display().to_string(),
            cert = files.cert.display().to_string(),
            key = files.key.display().to_string(),
        );
        let path = self.dir.path().join(format!("collector-{data}.toml"));
        std::fs::write(&path, text)?;
        spawn_collector(&path).await
    }
}

/// (alertname, host, status) of a page.
type PageKey = (String, String, String);

/// Pages the webhook receiver got, with their receipt times.
#[derive(Clone, Default)]
struct Pages(Arc<Mutex<HashMap<PageKey, Vec<Instant>>>>);

impl Pages {
    async fn serve(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pages = self.clone();
        let app =
            axum::Router::new().fallback(axum::routing::post(move |body: axum::body::Bytes| {
                let pages = pages.clone();
                async move {
                    let at = Instant::now();
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut map = pages.0.lock().unwrap_or_else(|p| p.into_inner());
                    for alert in json["alerts"].as_array().into_iter().flatten() {
                        let key = (
                            alert["labels"]["alertname"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                            alert["labels"]["host"].as_str().unwrap_or("").to_owned(),
                            alert["status"].as_str().unwrap_or("").to_owned(),
                        );
                        map.entry(key).or_default().push(at);
                    }
                    axum::http::StatusCode::OK
                }
            }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }

    /// The `n`-th (from 1) receipt of (alertname, host, status), waiting up to PAGE_TIMEOUT.
    async fn nth(
        &self,
        alertname: &str,
        host: &str,
        status: &str,
        n: usize,
    ) -> anyhow::Result<Instant> {
        let key = (alertname.to_owned(), host.to_owned(), status.to_owned());
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if let Some(at) = self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .and_then(|v| v.get(n - 1))
            {
                return Ok(*at);
            }
            if Instant::now() > deadline {
                bail!("no {status} page {n} of {alertname} for {host} within {PAGE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// An agent's ingest stream, driven by hand.
struct Stream {
    tx: mpsc::Sender<pb::AgentMessage>,
    seq: u64,
    last_t: i64,
    _acks: tokio::task::JoinHandle<()>,
}

impl Stream {
    async fn open(setup: &Setup, collector: SocketAddr, host: &str) -> anyhow::Result<Self> {
        let target = ClientTarget {
            address: collector.to_string(),
            server_name: Some("localhost".to_owned()),
            tls: setup.files(Role::Agent, host)?,
            connect_timeout: Duration::from_secs(10),
            keepalive: hostwatch_pki::transport::Keepalive::default(),
        };
        let (tx, mut replies) = open_ingest(&target, host, 64).await?;
        // Acknowledgements are read so the stream flows; their content is the collector's business.
        let acks = tokio::spawn(async move { while let Ok(Some(_)) = replies.message().await {} });
        Ok(Stream {
            tx,
            seq: 0,
            last_t: 0,
            _acks: acks,
        })
    }

    async fn send(&mut self, value: f64) -> anyhow::Result<()> {
        self.seq += 1;
        self.last_t = now_ms().max(self.last_t + 1);
        let batch = pb::Batch {
            seq: self.seq,
            series: vec![pb::SeriesPoints {
                metric: "bench_value".to_owned(),
                labels: vec![],
                timestamps_ms: vec![self.last_t],
                values: vec![value],
            }],
            ..pb::Batch::default()
        };
        self.tx
            .send(pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Batch(batch)),
            })
            .await
            .context("the collector closed the stream")
    }
}

async fn notification_latency(args: &Args) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let pages = Pages::default();
    let hook = pages.serve().await?;
    let (collector, stop, task) = setup.collector(hook, "latency").await?;
    let per_host = args.crossings.div_ceil(LATENCY_HOSTS) as usize;
    let mut runs = Vec::new();
    for h in 0..LATENCY_HOSTS {
        let host = format!("lat-{h}");
        let mut stream = Stream::open(&setup, collector, &host).await?;
        let pages = pages.clone();
        runs.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_host);
            stream.send(0.0).await?;
            for n in 1..=per_host {
                let sent = Instant::now();
                stream.send(1.0).await?;
                let paged = pages.nth("bench_crossing", &host, "firing", n).await?;
                latencies.push(paged.duration_since(sent).as_secs_f64() * 1000.0);
                stream.send(0.0).await?;
                pages.nth("bench_crossing", &host, "resolved", n).await?;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for run in runs {
        latencies.extend(run.await??);
    }
    stop.cancel();
    let _ = task.await;
    println!("latency_crossings={}", latencies.len());
    println!(
        "latency_ms_p50={:.1}",
        percentile(&latencies, 50.0).unwrap_or(f64::NAN)
    );
    println!(
        "latency_ms_p99={:.1}",
        percentile(&latencies, 99.0).unwrap_or(f64::NAN)
    );
    println!(
        "latency_ms_max={:.1}",
        percentile(&latencies, 100.0).unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn host_down_delay(args: &Args) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let pages = Pages::default();
    let hook = pages.serve().await?;
    let (collector, stop, task) = setup.collector(hook, "down").await?;
    let mut streams = Vec::new();
    for h in 0..args.down_hosts {
        let host = format!("down-{h}");
        let stream = Stream::open(&setup, collector, &host).await?;
        streams.push((host, stream));
    }
    for _ in 0..5 {
        for (_, stream) in &mut streams {
            stream.send(0.0).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Cut every connection at once, as a crashed host would.
    let cut = Instant::now();
    let hosts: Vec<String> = streams.into_iter().map(|(h, _)| h).collect();
    let mut beyond = Vec::new();
    for host in &hosts {
        let paged = pages.nth("host_down", host, "firing", 1).await?;
        beyond.push(
            paged.duration_since(cut).as_secs_f64() * 1000.0
                - HOST_DOWN_AFTER.as_secs_f64() * 1000.0,
        );
    }
    stop.cancel();
    let _ = task.await;
    println!("host_down_after_ms={}", HOST_DOWN_AFTER.as_millis());
    println!("host_down_hosts={}", hosts.len());
    println!(
        "host_down_beyond_timeout_ms_median={:.0}",
        median(&beyond).unwrap_or(f64::NAN)
    );
    println!(
        "host_down_beyond_timeout_ms_max={:.0}",
        percentile(&beyond, 100.0).unwrap_or(f64::NAN)
    );
    Ok(())
}
