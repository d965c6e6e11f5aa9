//! `hostwatch-bench fleet`: `--agents` simulated agents streaming over
//! real mTLS to a real collector process, then the collector killed and
//! restarted under them.
//!
//! 1. Certificates: a test CA, the collector's, an operator's and one per
//!    agent (`certs`, kept in `--dir` for the next run). RLIMIT_NOFILE is
//!    raised to its hard limit, for this process and the collector.
//! 2. The collector program (`--collector-bin`) with a generated
//!    collector.toml: the default alert rules, `limits.max_connections`
//!    above the agents, and a webhook hook to `pages`' receiver.
//! 3. Its resident size idle; then every agent (`agent`: its own
//!    certificate, connection and stream, a batch of about 90 series and
//!    a process snapshot every `--interval-secs`) starts at a random
//!    moment of the first interval. Once all are welcomed and two
//!    intervals have passed, `--duration-secs` are measured: the
//!    collector's CPU (utime + stime from /proc/<pid>/stat) per sample
//!    acknowledged and as a share of one core, its resident memory beyond
//!    idle per agent, and the acknowledgement latency of the batches sent
//!    meanwhile.
//! 4. SIGKILL; `--outage-secs` later the collector starts again on the
//!    same data directory. Measured from that start: until every agent is
//!    welcomed again, and until every agent's batches made before it are
//!    acknowledged; then, past `host_down_after` and a third, the `host_down` pages
//!    the receiver got and the alerts the collector holds.
//! 5. The agents stop sampling and drain; the samples the collector stored
//!    for `--check-hosts` hosts (through PromQL) against those the agents
//!    made, their process snapshots, and the store's duplicate counters.
//!    Last, the memory the collector gives back once the agents are gone.

mod agent;
mod certs;
mod pages;
mod verify;

use crate::console::{Collector, free_port};
use crate::measure::{Probe, load_average, median, percentile, process_cpu_ns};
use crate::storage::data::HostGen;
use agent::{Agent, Fleet, Shipper};
use anyhow::{Context, ensure};
use hostwatch_pki::TlsFiles;
use hostwatch_pki::transport::{ClientTarget, Keepalive};
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    agents: u32,
    /// Each agent's sampling interval.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    interval_secs: u64,
    /// The measured window, once every agent streams.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    duration_secs: u64,
    /// How long the collector stays down after its SIGKILL.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    outage_secs: u64,
    /// No kill and restart: the steady state only.
    #[arg(long)]
    no_restart: bool,
    /// Longest wait for the agents to connect, to come back after the
    /// restart, and to drain at the end.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=3_600))]
    deadline_secs: u64,
    /// Hosts whose stored samples are counted (all when there are fewer).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    check_hosts: u32,
    /// Of those, hosts whose every process snapshot is looked up.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..))]
    check_snapshot_hosts: u32,
    /// The collector's `limits.max_handshakes`; its default when not given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_handshakes: Option<u64>,
    /// Work directory, kept (certificates are reused from it); a
    /// temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The collector program; by default the one next to this program.
    #[arg(long)]
    collector_bin: Option<PathBuf>,
}

/// How often the restart's progress is looked at.
const POLL: Duration = Duration::from_millis(50);
/// The collector's `host_down_after` (its default).
const HOST_DOWN_AFTER: Duration = Duration::from_secs(30);
/// After `host_down_after` and a third have passed since the restart, how long to wait
/// for a page that would have been raised (the host-down tick, the hook's
/// delivery).
const PAGE_GRACE: Duration = Duration::from_secs(10);
/// How long the collector gets to give back what its agents' connections
/// held, once they are gone.
const RELEASE_WAIT: Duration = Duration::from_secs(15);
/// Descriptors beyond one per agent each process needs (the store's
/// files, the listeners, the operator's connection).
const SPARE_FILES: u64 = 512;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let bin = match &args.collector_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("hostwatch-collector"),
    };
    ensure!(
        bin.is_file(),
        "no collector program at {} (build it with `cargo build --release -p hostwatch-collector` or give --collector-bin)",
        bin.display()
    );
    let nofile = raise_nofile()?;
    ensure!(
        nofile >= u64::from(args.agents) + SPARE_FILES,
        "RLIMIT_NOFILE's hard limit is {nofile}: too low for {} agents' connections (one descriptor each, in this process and in the collector, plus {SPARE_FILES}); raise it or give fewer --agents",
        args.agents
    );
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    let certs = certs::prepare(&dir, args.agents)?;
    println!("agents={}", args.agents);
    println!("interval_secs={}", args.interval_secs);
    println!("nofile_limit={nofile}");
    let max_handshakes = args
        .max_handshakes
        .unwrap_or(hostwatch_collector::config::Limits::default().max_handshakes as u64);
    println!("max_handshakes={max_handshakes}");
    println!("certs_issued={}", certs.issued);
    println!("certs_seconds={:.1}", certs.seconds);
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(bench(&args, &dir, &bin, &certs));
    // Whatever the agents' tasks still hold goes with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(10));
    result
}

/// Raises this process' soft RLIMIT_NOFILE to its hard limit (the
/// collector, a child, inherits it); the limit now.
fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// The collector's configuration: listening on `grpc`, its data in
/// `dir/data`, the default rules and a webhook to `hook`.
fn collector_config(
    args: &Args,
    dir: &Path,
    tls: &TlsFiles,
    grpc: u16,
    hook: std::net::SocketAddr,
) -> String {
    // The operators' reserve comes out of max_connections.
    let max_connections = u64::from(args.agents) + 64 + 1_000;
    let max_handshakes = args
        .max_handshakes
        .map(|n| format!("max_handshakes = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"listen = "127.0.0.1:{grpc}"
data_dir = {data:?}
host_down_after = "{down}s"

[tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}

[limits]
max_connections = {max_connections}
{max_handshakes}
[alerting]
default_rules = true

[[alerting.hooks]]
name = "pager"
kind = "webhook"
url = "http://{hook}/"
group_by = ["..."]
group_wait = "0s"
group_interval = "0s"
"#,
        data = dir.join("data").display().to_string(),
        down = HOST_DOWN_AFTER.as_secs(),
        ca = tls.ca.display().to_string(),
        cert = tls.cert.display().to_string(),
        key = tls.key.display().to_string(),
    )
}

/// Starts the collector with `config`, its output in `log`, off the
/// runtime's threads; the collector and how long it took to serve.
async fn start_collector(
    bin: &Path,
    config: &Path,
    log: &Path,
    name: &str,
) -> anyhow::Result<(Collector, f64)> {
    let (bin, config, log, name) = (
        bin.to_owned(),
        config.to_owned(),
        log.to_owned(),
        name.to_owned(),
    );
    let started = Instant::now();
    let collector =
        tokio::task::spawn_blocking(move || Collector::spawn(&bin, &config, &log, &name)).await??;
    Ok((collector, started.elapsed().as_secs_f64()))
}

/// The module doc's phases 2 to 5, in order: one function, so each
/// phase's figures print as soon as it ends.
async fn bench(args: &Args, dir: &Path, bin: &Path, certs: &certs::Certs) -> anyhow::Result<()> {
    let pager = pages::Pager::default();
    let hook = pager.serve().await?;
    let grpc = free_port()?;
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        collector_config(args, dir, &certs.collector, grpc, hook),
    )?;
    let (collector, open_seconds) =
        start_collector(bin, &config, &dir.join("collector-1.log"), "fleet").await?;
    println!("collector_open_seconds={open_seconds:.1}");
    let probe = Probe::new(collector.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = settled_rss(&probe).await?;

    let interval = Duration::from_secs(args.interval_secs);
    let deadline = Duration::from_secs(args.deadline_secs);
    let fleet = Arc::new(Fleet::default());
    let load_start = load_average()?;
    let cpu_idle = probe.stat_cpu_ns()?;
    let started = Instant::now();
    let (agents, mut tasks) = start_agents(args, &certs.agents, grpc, &fleet)?;
    wait_until(deadline, "every agent welcomed", || {
        agents
            .iter()
            .all(|a| a.welcomes.load(Ordering::Acquire) > 0)
    })
    .await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    let connect_cpu_ns = probe.stat_cpu_ns()? - cpu_idle;
    println!("connect_all_seconds={connect_seconds:.1}");
    println!(
        "connect_collector_cpu_ms_per_agent={:.2}",
        connect_cpu_ns as f64 / 1e6 / f64::from(args.agents)
    );
    // Every agent past its first batches (which create its series):
    // streaming, not starting.
    tokio::time::sleep(interval * 2).await;
    let steady = measure_steady(args, &probe, &fleet, rss_idle).await?;
    steady.print(args);

    let (collector, stats_before) = if args.no_restart {
        (collector, None)
    } else {
        let restart = Restart {
            args,
            bin,
            config: &config,
            dir,
            grpc,
            operator: &certs.operator,
            agents: &agents,
            fleet: &fleet,
        };
        let (collector, figures) = restart.run(collector, &pager).await?;
        figures.print();
        (collector, Some(figures.stats_before))
    };

    // The end: sampling stops, every agent drains, the collector is read.
    fleet.sampling.cancel();
    wait_until(deadline, "every agent drained at the end", || {
        agents
            .iter()
            .all(|a| a.acked.load(Ordering::Acquire) >= a.generated.load(Ordering::Acquire))
    })
    .await?;
    let checked = check_stored(args, grpc, &certs.operator, &agents).await?;
    checked.print(stats_before.as_ref());
    let failures = fleet.failures();
    println!(
        "session_failures={}",
        fleet.failed_sessions.load(Ordering::Relaxed)
    );
    for (kind, n) in failures.iter().take(8) {
        println!("# session failures: {n} x {kind}");
    }
    println!("load_average_start={load_start:.2}");
    println!("load_average_end={:.2}", load_average()?);
    // What the connections held: given back once every agent is gone
    // (jemalloc's background threads return freed pages within seconds).
    let probe = Probe::new(collector.pid());
    let rss_connected = settled_rss(&probe).await?;
    fleet.stop.cancel();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(RELEASE_WAIT).await;
    let rss_gone = settled_rss(&probe).await?;
    println!(
        "collector_rss_released_kib_per_agent={:.1}",
        rss_connected.saturating_sub(rss_gone) as f64 / 1024.0 / f64::from(args.agents)
    );
    tokio::task::spawn_blocking(move || collector.stop()).await??;
    Ok(())
}

/// Every agent's state, and its sampling and shipping tasks, each agent
/// starting at a random moment of the first interval (a fleet whose
/// agents started at different times).
fn start_agents(
    args: &Args,
    certs: &[TlsFiles],
    grpc: u16,
    fleet: &Arc<Fleet>,
) -> anyhow::Result<(Vec<Arc<Agent>>, JoinSet<()>)> {
    let interval = Duration::from_secs(args.interval_secs);
    let mut agents = Vec::with_capacity(args.agents as usize);
    let mut tasks = JoinSet::new();
    for (i, tls) in (0..args.agents).zip(certs) {
        let host = HostGen::new(i, true);
        let agent = Arc::new(Agent::new(host.name.clone()));
        let shipper = Shipper {
            agent: agent.clone(),
            fleet: fleet.clone(),
            target: ClientTarget {
                address: format!("127.0.0.1:{grpc}"),
                server_name: Some("localhost".to_owned()),
                tls: tls.clone(),
                connect_timeout: Duration::from_secs(10),
                keepalive: Keepalive::default(),
            },
            hello: agent::hello(i, &agent.host),
            host_down_after: None,
        };
        // The agent samples once at its start, then every interval.
        let first = interval.mul_f64(rand::rng().random::<f64>());
        tasks.spawn(agent::sample(
            agent.clone(),
            host,
            interval,
            first,
            fleet.clone(),
        ));
        tasks.spawn(shipper.run(first));
        agents.push(agent);
    }
    Ok((agents, tasks))
}

/// Polls `done` every [`POLL`] until it holds, at most `deadline`.
async fn wait_until(
    deadline: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while !done() {
        ensure!(
            Instant::now() < until,
            "not {what} within {deadline:?} (--deadline-secs)"
        );
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// The median of three readings of the resident size, half a second apart.
async fn settled_rss(probe: &Probe) -> anyhow::Result<u64> {
    let mut readings = Vec::new();
    for _ in 0..3 {
        readings.push(probe.rss_bytes()?.0 as f64);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(median(&readings).unwrap_or_default() as u64)
}

/// The steady state's figures.
struct Steady {
    seconds: f64,
    samples: u64,
    cpu_ns: u64,
    bench_cpu_ns: u64,
    rss_idle: u64,
    rss_streaming: u64,
    agents: u32,
    latencies: Vec<f64>,
}

/// The measured window: CPU and samples between its ends, resident size
/// at its end, latencies of the batches sent within it.
async fn measure_steady(
    args: &Args,
    probe: &Probe,
    fleet: &Fleet,
    rss_idle: u64,
) -> anyhow::Result<Steady> {
    let (cpu, bench_cpu) = (probe.stat_cpu_ns()?, process_cpu_ns()?);
    let acked = fleet.acked_samples.load(Ordering::Relaxed);
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    let to = Instant::now();
    let (cpu_end, bench_cpu_end) = (probe.stat_cpu_ns()?, process_cpu_ns()?);
    let acked_end = fleet.acked_samples.load(Ordering::Relaxed);
    let rss_streaming = settled_rss(probe).await?;
    Ok(Steady {
        seconds: (to - from).as_secs_f64(),
        samples: acked_end - acked,
        cpu_ns: cpu_end - cpu,
        bench_cpu_ns: bench_cpu_end - bench_cpu,
        rss_idle,
        rss_streaming,
        agents: args.agents,
        latencies: fleet.latencies_sent(from, to),
    })
}

impl Steady {
    fn print(&self, args: &Args) {
        let ms = |v: Option<f64>| v.map_or("n/a".to_owned(), |s| format!("{:.1}", s * 1e3));
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        println!("duration_secs={}", args.duration_secs);
        println!("samples_per_sec={:.0}", self.samples as f64 / self.seconds);
        println!(
            "collector_cpu_ns_per_sample={:.0}",
            self.cpu_ns as f64 / self.samples.max(1) as f64
        );
        println!(
            "collector_cpu_cores={:.3} target<=0.5",
            self.cpu_ns as f64 / 1e9 / self.seconds
        );
        println!("collector_rss_idle_mib={:.1}", mib(self.rss_idle));
        println!("collector_rss_streaming_mib={:.1}", mib(self.rss_streaming));
        println!(
            "collector_rss_kib_per_agent={:.1} target<=48",
            self.rss_streaming.saturating_sub(self.rss_idle) as f64
                / 1024.0
                / f64::from(self.agents)
        );
        println!("acks_measured={}", self.latencies.len());
        println!("ack_p50_ms={}", ms(percentile(&self.latencies, 50.0)));
        println!(
            "ack_p99_ms={} target<=250",
            ms(percentile(&self.latencies, 99.0))
        );
        println!("ack_max_ms={}", ms(percentile(&self.latencies, 100.0)));
        println!(
            "bench_cpu_cores={:.3}",
            self.bench_cpu_ns as f64 / 1e9 / self.seconds
        );
    }
}

/// The kill and restart, and what it needs.
struct Restart<'a> {
    args: &'a Args,
    bin: &'a Path,
    config: &'a Path,
    dir: &'a Path,
    grpc: u16,
    operator: &'a TlsFiles,
    agents: &'a [Arc<Agent>],
    fleet: &'a Fleet,
}

/// The restart's figures.
struct RestartFigures {
    backlog_batches: u64,
    open_seconds: f64,
    all_back_seconds: f64,
    drained_seconds: f64,
    cpu_seconds: f64,
    session_failures: u64,
    /// The store's counters just before the kill.
    stats_before: hostwatch_proto::v1::StorageStatsResponse,
    /// Pages before the kill, and since.
    host_down_pages_before: u64,
    host_down_pages: u64,
    down_hosts: Vec<String>,
    host_down_alerts: u64,
    host_down_transitions: u64,
    other_pages: pages::Counts,
}

impl Restart<'_> {
    async fn run(
        &self,
        collector: Collector,
        pager: &pages::Pager,
    ) -> anyhow::Result<(Collector, RestartFigures)> {
        let agents = self.agents;
        let welcomes: Vec<u64> = agents
            .iter()
            .map(|a| a.welcomes.load(Ordering::Acquire))
            .collect();
        let acked: Vec<u64> = agents
            .iter()
            .map(|a| a.acked.load(Ordering::Acquire))
            .collect();
        let failures = self.fleet.failed_sessions.load(Ordering::Relaxed);
        let (pages_before, _) = pager.host_down();
        let stats_before = verify::Operator::connect(self.grpc, self.operator)
            .await?
            .storage_stats()
            .await?;
        tokio::task::spawn_blocking(move || collector.kill()).await??;
        tokio::time::sleep(Duration::from_secs(self.args.outage_secs)).await;

        // The backlog: what every agent made up to the restart.
        let targets: Vec<u64> = agents
            .iter()
            .map(|a| a.generated.load(Ordering::Acquire))
            .collect();
        let backlog_batches = targets
            .iter()
            .zip(&acked)
            .map(|(t, a)| t.saturating_sub(*a))
            .sum();
        let restarted_ms = hostwatch_stdx::now_ms();
        let restarted = Instant::now();
        let log = self.dir.join("collector-2.log");
        let (collector, open_seconds) =
            start_collector(self.bin, self.config, &log, "fleet-restarted").await?;
        let probe = Probe::new(collector.pid());
        let deadline = Duration::from_secs(self.args.deadline_secs);
        let back = || {
            agents
                .iter()
                .zip(&welcomes)
                .all(|(a, w)| a.welcomes.load(Ordering::Acquire) > *w)
        };
        wait_until(deadline, "every agent back after the restart", back).await?;
        let all_back_seconds = restarted.elapsed().as_secs_f64();
        let drained = || {
            agents
                .iter()
                .zip(&targets)
                .all(|(a, t)| a.acked.load(Ordering::Acquire) >= *t)
        };
        wait_until(deadline, "every backlog drained after the restart", drained).await?;
        let drained_seconds = restarted.elapsed().as_secs_f64();
        let cpu_seconds = probe.stat_cpu_ns()? as f64 / 1e9;
        let session_failures = self.fleet.failed_sessions.load(Ordering::Relaxed) - failures;

        // A host the restarted collector does not hear from within
        // host_down_after of its start, plus the third of it a host unseen
        // since the start is given (the agents' longest backoff), would be
        // paged by now.
        let pages_due = restarted
            + Duration::from_secs_f64(open_seconds)
            + HOST_DOWN_AFTER
            + HOST_DOWN_AFTER / 3;
        tokio::time::sleep_until(pages_due + PAGE_GRACE).await;
        let (pages, down_hosts) = pager.host_down();
        let (alerts, _) = pager.summary();
        let mut operator = verify::Operator::connect(self.grpc, self.operator).await?;
        let (host_down_alerts, host_down_transitions) =
            operator.host_down_alerts(restarted_ms).await?;
        Ok((
            collector,
            RestartFigures {
                backlog_batches,
                open_seconds,
                all_back_seconds,
                drained_seconds,
                cpu_seconds,
                session_failures,
                stats_before,
                host_down_pages_before: pages_before,
                host_down_pages: pages - pages_before,
                down_hosts,
                host_down_alerts,
                host_down_transitions,
                other_pages: alerts
                    .into_iter()
                    .filter(|((name, _), _)| name != "host_down")
                    .collect(),
            },
        ))
    }
}

impl RestartFigures {
    fn print(&self) {
        println!("restart_backlog_batches={}", self.backlog_batches);
        println!("restart_open_seconds={:.1}", self.open_seconds);
        println!("restart_all_back_seconds={:.1}", self.all_back_seconds);
        println!(
            "restart_drained_seconds={:.1} target<=60",
            self.drained_seconds
        );
        println!("restart_collector_cpu_seconds={:.1}", self.cpu_seconds);
        println!("restart_session_failures={}", self.session_failures);
        println!(
            "host_down_pages_before_restart={}",
            self.host_down_pages_before
        );
        println!("host_down_pages={} target=0", self.host_down_pages);
        if !self.down_hosts.is_empty() {
            println!("# paged as down: {}", self.down_hosts.join(" "));
        }
        println!("host_down_alerts_held={}", self.host_down_alerts);
        println!("host_down_transitions={}", self.host_down_transitions);
        for ((name, status), n) in &self.other_pages {
            println!("# other pages: {n} x {name} {status}");
        }
    }
}

/// What the collector stored against what the agents made.
struct Checked {
    hosts: usize,
    generated: u64,
    lost: u64,
    extra: u64,
    snapshot_hosts: usize,
    snapshots: u64,
    snapshots_missing: u64,
    stats: hostwatch_proto::v1::StorageStatsResponse,
}

async fn check_stored(
    args: &Args,
    grpc: u16,
    operator: &TlsFiles,
    agents: &[Arc<Agent>],
) -> anyhow::Result<Checked> {
    let mut client = verify::Operator::connect(grpc, operator).await?;
    let checked: Vec<&Arc<Agent>> = verify::hosts_to_check(args.agents, args.check_hosts)
        .into_iter()
        .map(|i| &agents[i as usize])
        .collect();
    let first_ms = checked
        .iter()
        .filter_map(|a| a.batch_times.lock().ok().and_then(|t| t.first().copied()))
        .min()
        .unwrap_or_else(hostwatch_stdx::now_ms);
    let at_ms = hostwatch_stdx::now_ms();
    let range_s = (at_ms - first_ms) / 1000 + 60;
    let hosts: Vec<String> = checked.iter().map(|a| a.host.clone()).collect();
    // Every host has the same metrics.
    let mut metrics: Vec<String> = HostGen::new(0, true)
        .series
        .iter()
        .map(|s| s.metric.clone())
        .collect();
    metrics.sort();
    metrics.dedup();
    let stored = client
        .stored_points(&metrics, &hosts, at_ms, range_s)
        .await?;
    let (mut generated, mut lost, mut extra) = (0, 0, 0);
    for agent in &checked {
        let made = agent.samples.load(Ordering::Acquire);
        let times: std::collections::HashSet<i64> = agent
            .batch_times
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        let (matched, unexpected) = stored
            .get(&agent.host)
            .map(|series| compare(series, &times))
            .unwrap_or_default();
        generated += made;
        lost += made.saturating_sub(matched);
        extra += unexpected;
        if matched != made || unexpected > 0 {
            println!(
                "# {}: made {made} samples, stored {matched} of them and {unexpected} others",
                agent.host
            );
        }
    }
    let (mut snapshots, mut snapshots_missing) = (0, 0);
    let snapshot_hosts = checked.len().min(args.check_snapshot_hosts as usize);
    for agent in checked.iter().take(snapshot_hosts) {
        let times = agent
            .batch_times
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        snapshots += times.len() as u64;
        snapshots_missing += client.missing_snapshots(&agent.host, &times).await?;
    }
    let stats = client.storage_stats().await?;
    Ok(Checked {
        hosts: checked.len(),
        generated,
        lost,
        extra,
        snapshot_hosts,
        snapshots,
        snapshots_missing,
        stats,
    })
}

/// Of one host's stored series (each its timestamps), the samples taken
/// at `times` (each series once per time), and the others: at other
/// times, or a time stored twice.
fn compare(series: &[Vec<i64>], times: &std::collections::HashSet<i64>) -> (u64, u64) {
    let (mut matched, mut others) = (0, 0);
    for timestamps in series {
        let mut seen = std::collections::HashSet::with_capacity(timestamps.len());
        for t in timestamps {
            if times.contains(t) && seen.insert(*t) {
                matched += 1;
            } else {
                others += 1;
            }
        }
    }
    (matched, others)
}

impl Checked {
    /// With the counters of the collector's first life (`before` the
    /// kill), if it was restarted: each life counts from its start.
    fn print(&self, before: Option<&hostwatch_proto::v1::StorageStatsResponse>) {
        println!("checked_hosts={}", self.hosts);
        println!("checked_samples={}", self.generated);
        println!("samples_lost={} target=0", self.lost);
        println!("samples_stored_twice={} target=0", self.extra);
        println!("checked_snapshot_hosts={}", self.snapshot_hosts);
        println!("checked_snapshots={}", self.snapshots);
        println!("snapshots_lost={} target=0", self.snapshots_missing);
        let lives = std::iter::once(&self.stats).chain(before);
        let (mut duplicate, mut refused, mut skipped) = (0, 0, 0);
        for stats in lives {
            let r = stats.rejected.unwrap_or_default();
            duplicate += r.duplicate;
            refused += r.non_finite
                + r.future
                + r.too_old
                + r.out_of_order
                + r.series_limit
                + r.invalid_series
                + r.too_dense
                + r.malformed;
            skipped += stats.duplicate_batches;
        }
        println!("duplicate_samples_refused={duplicate} target=0");
        println!("other_samples_refused={refused}");
        println!("duplicate_batches_skipped={skipped}");
    }
}
