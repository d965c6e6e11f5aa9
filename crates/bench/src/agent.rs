//! `hostwatch-bench agent`: runs the real `hostwatch-agent` binary at a 1 s
//! interval against a collector in this process, and, when Debian's
//! `prometheus-node-exporter` is installed (`crates/bench/install-deps.sh`),
//! a node_exporter on loopback scraped once per interval in the same run.
//!
//! Every interval, half-way between two agent samples, it reads both
//! processes' CPU time (schedstat, nanoseconds) and memory, then scrapes
//! node_exporter once, so each window holds exactly one agent sample and
//! one scrape. It prints medians of CPU per sample / per scrape, steady and
//! peak memory, their ratios, and how far the two agree on memory
//! available, filesystem free bytes, load and boot time. With `--sysinfo`,
//! a second agent with `sampler = "sysinfo"` runs beside the first (which
//! reads /proc) and is measured in the same windows.

use crate::fixture::issue;
use crate::measure::{Probe, median};
use anyhow::{Context, bail};
use hostwatch_agent::sampler::systemd::fake::{FakeSystemd, FakeUnit, PrivateBus};
use hostwatch_pki::transport::{ClientTarget, connect};
use hostwatch_pki::{Ca, Role, TlsFiles};
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{LatestRequest, ListHostsRequest};
use hostwatch_stdx::now_ms;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

const HOST: &str = "bench-agent";
/// The host id of the `--sysinfo` agent.
const SYSINFO_HOST: &str = "bench-agent-sysinfo";
/// The targets (docs/benchmarks.md): CPU per sample at most half of node_exporter's per
/// scrape; steady resident memory at most 8 MiB.
const TARGET_CPU_RATIO: f64 = 0.5;
const TARGET_RSS_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "60")]
    duration_secs: u64,
    /// Time before measuring: connection, first samples, caches.
    #[arg(long, default_value = "10")]
    warmup_secs: u64,
    /// The agent's sampling interval, and the scrape interval.
    #[arg(long, default_value = "1000")]
    interval_ms: u64,
    /// The agent binary; default: the deployed build,
    /// `target/release-small/hostwatch-agent` (`cargo build --profile
    /// release-small -p hostwatch-agent`).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// node_exporter; skipped when absent.
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    node_exporter: PathBuf,
    /// Watched processes for the agent to report (names), as an operator
    /// would configure them.
    #[arg(long, default_value = "sshd,cron")]
    watch: String,
    /// After the measurement, stop the collector this long (the agent
    /// spools), restart it, and measure the replay: time until fresh
    /// samples arrive again, and the agent's memory meanwhile.
    #[arg(long, default_value = "0")]
    outage_secs: u64,
    /// Turn the agent's optional families off (`[families] disabled`:
    /// TCP, sockets, time, file descriptors, conntrack, links,
    /// temperatures, systemd), and leave node_exporter's off-by-default `tcpstat`
    /// off; by default both sample them.
    #[arg(long)]
    families_off: bool,
    /// Also run an agent with `sampler = "sysinfo"` (the portable sampler)
    /// beside the /proc one, measured in the same windows: its CPU per
    /// sample and memory, and their ratios to the /proc agent's.
    #[arg(long)]
    sysinfo: bool,
    /// Point the agent's `[cgroups] root` at a generated cgroup v2 tree
    /// of this many services in `system.slice` (each with the files a
    /// systemd service's cgroup has); 0: the host's own hierarchy (on a
    /// cgroup v1 host the family then reads nothing after telling so).
    #[arg(long, default_value = "0")]
    cgroup_services: usize,
    /// Point `[cgroups] root` at this existing hierarchy instead (such as
    /// a cgroup2 mount with test groups), with `--cgroup-slice`.
    #[arg(long, conflicts_with = "cgroup_services")]
    cgroup_root: Option<PathBuf>,
    /// The slice `[cgroups] slices` names, under `--cgroup-root`.
    #[arg(long, default_value = "system.slice")]
    cgroup_slice: String,
    /// Turn the agent's `cgroups` family off (`[families] disabled`).
    #[arg(long)]
    cgroups_off: bool,
    /// Give the agent a system bus of its own (a private `dbus-daemon`)
    /// with a peer serving this many services as systemd does, one of
    /// which changes state every second; 0: the machine's own bus, if any.
    #[arg(long, default_value = "0")]
    systemd_units: usize,
}

/// The agent's families `--families-off` turns off.
const OPTIONAL_FAMILIES: [&str; 8] = [
    "tcp",
    "sockets",
    "time",
    "file_descriptors",
    "conntrack",
    "links",
    "temperature",
    "systemd",
];

/// Writes a cgroup v2 hierarchy at `root` with `services` services in
/// `system.slice`, each with the files the agent reads (as a systemd
/// service's cgroup has them: CPU, memory, two block devices, pressure),
/// and the slice's own; returns `root`.
fn write_cgroup_tree(root: &Path, services: usize) -> anyhow::Result<PathBuf> {
    let group = |dir: &Path, i: u64| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let pressure = format!(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total={}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total={}\n",
            i * 1000,
            i * 100
        );
        for (file, text) in [
            (
                "cpu.stat",
                format!(
                    "usage_usec {}\nuser_usec {}\nsystem_usec {}\nnice_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
                    i * 1_000_000,
                    i * 700_000,
                    i * 300_000
                ),
            ),
            ("memory.current", format!("{}\n", i * 1_048_576)),
            ("memory.peak", format!("{}\n", i * 2_097_152)),
            (
                "io.stat",
                format!(
                    "8:0 rbytes={} wbytes={} rios=1 wios=1 dbytes=0 dios=0\n253:0 rbytes={} wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
                    i * 4096,
                    i * 8192,
                    i * 512
                ),
            ),
            ("cpu.pressure", pressure.clone()),
            ("memory.pressure", pressure.clone()),
            ("io.pressure", pressure),
        ] {
            std::fs::write(dir.join(file), text)?;
        }
        Ok(())
    };
    std::fs::create_dir_all(root)?;
    std::fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n")?;
    let slice = root.join("system.slice");
    group(&slice, 1_000_000)?;
    for i in 0..services {
        group(&slice.join(format!("service{i:04}.service")), i as u64 + 1)?;
    }
    Ok(root.to_owned())
}

/// Kills a child process when dropped, so an error leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.duration_secs == 0 || args.interval_ms == 0 {
        bail!("--duration-secs and --interval-ms must be greater than zero");
    }
    let agent_bin = match &args.agent_bin {
        Some(path) => path.clone(),
        // This program is target/<profile>/hostwatch-bench.
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no target directory above this program")?
            .join("release-small/hostwatch-agent"),
    };
    if !agent_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --profile release-small -p hostwatch-agent) or pass --agent-bin",
            agent_bin.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(args, agent_bin))
}

async fn bench(args: Args, agent_bin: PathBuf) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki)?;
    let ca = Ca::generate("bench CA", 1)?;
    ca.write(&pki)?;
    let collector_tls = issue(&ca, &pki, Role::Collector, "bench")?;
    let agent_tls = issue(&ca, &pki, Role::Agent, HOST)?;
    let operator_tls = issue(&ca, &pki, Role::Operator, "bench")?;

    // The collector, in this process.
    let config = collector_config(dir.path(), &collector_tls)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector_addr = listener.local_addr()?;
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(hostwatch_collector::serve(
        config.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    let (bus, _systemd) = fake_systemd(args.systemd_units, dir.path()).await?;
    let agent = start_agent(
        &args,
        &agent_bin,
        &dir.path().join("agent"),
        collector_addr,
        &agent_tls,
        "proc",
        bus.as_ref().map(|b| b.address.as_str()),
    )?;
    let agent_probe = Probe::new(agent.0.id());
    let portable = match args.sysinfo {
        true => {
            let tls = issue(&ca, &pki, Role::Agent, SYSINFO_HOST)?;
            let dir = dir.path().join("agent-sysinfo");
            Some(start_agent(
                &args,
                &agent_bin,
                &dir,
                collector_addr,
                &tls,
                "sysinfo",
                bus.as_ref().map(|b| b.address.as_str()),
            )?)
        }
        false => None,
    };
    let portable_probe = portable.as_ref().map(|a| Probe::new(a.0.id()));
    let node = start_node_exporter(&args.node_exporter, !args.families_off)?;

    let channel = connect(&ClientTarget {
        address: collector_addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls: operator_tls,
        connect_timeout: Duration::from_secs(5),
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    })
    .await?
    .0;
    let mut query = QueryClient::new(channel);

    let uptime_at = wait_for_first_samples(&mut query, node.as_ref().map(|(_, a)| *a)).await?;
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let node_probe = node.as_ref().map(|(child, _)| Probe::new(child.0.id()));
    let measured = measure(
        &args,
        uptime_at,
        &agent_probe,
        portable_probe.as_ref(),
        node.as_ref().map(|(_, a)| *a),
        node_probe.as_ref(),
        &mut query,
    )
    .await?;
    print_figures(&args, &agent_bin, &agent_probe, &measured)?;
    if let Some(probe) = &portable_probe {
        print_sysinfo_figures(probe, &measured)?;
    }

    let _ = stop_collector.send(());
    collector.await??;
    if args.outage_secs > 0 {
        outage(&args, config, collector_addr, &agent_probe, &mut query).await?;
    }
    drop(agent);
    drop(portable);
    drop(node);
    Ok(())
}

/// The collector's configuration, written to and loaded from `dir`: on
/// loopback, its data in `dir`.
fn collector_config(
    dir: &Path,
    collector_tls: &TlsFiles,
) -> anyhow::Result<hostwatch_collector::CollectorConfig> {
    let collector_toml = dir.join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join("data"),
            collector_tls.ca,
            collector_tls.cert,
            collector_tls.key
        ),
    )?;
    Ok(hostwatch_collector::CollectorConfig::load(&collector_toml)?)
}

/// With `units` > 0: a private bus in `dir` and a peer on it serving
/// that many services as systemd does, one changing state every second
/// (the task ends with the bus).
async fn fake_systemd(
    units: usize,
    dir: &Path,
) -> anyhow::Result<(Option<PrivateBus>, Option<tokio::task::JoinHandle<()>>)> {
    if units == 0 {
        return Ok((None, None));
    }
    let bus = PrivateBus::start(dir).context("starting dbus-daemon")?;
    let changed_us = u64::try_from(now_ms())? * 1000;
    let names: Vec<String> = (0..units).map(|i| format!("bench-{i}.service")).collect();
    let systemd = FakeSystemd::start(
        &bus.address,
        names
            .iter()
            .map(|n| FakeUnit::new(n, "active", "running", changed_us))
            .collect(),
    )
    .await?;
    let churn = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        for i in 0u64.. {
            ticker.tick().await;
            let name = &names[i as usize % names.len()];
            let (active, sub) = if (i / names.len() as u64).is_multiple_of(2) {
                ("activating", "start")
            } else {
                ("active", "running")
            };
            let at = u64::try_from(now_ms()).unwrap_or(0) * 1000;
            if systemd.set_state(name, active, sub, at).await.is_err() {
                return;
            }
        }
    });
    Ok((Some(bus), Some(churn)))
}

/// The agent, as operators run it: its configuration written to `dir`,
/// sending to `collector_addr`, reading the host with `sampler`; its
/// system bus at `bus` when given.
fn start_agent(
    args: &Args,
    agent_bin: &Path,
    dir: &Path,
    collector_addr: SocketAddr,
    agent_tls: &TlsFiles,
    sampler: &str,
    bus: Option<&str>,
) -> anyhow::Result<Reaped> {
    std::fs::create_dir_all(dir)?;
    let watch: Vec<String> = args
        .watch
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| format!("{{ name = {n:?} }}"))
        .collect();
    let mut disabled: Vec<&str> = Vec::new();
    if args.families_off {
        disabled.extend(OPTIONAL_FAMILIES);
    }
    if args.cgroups_off {
        disabled.push("cgroups");
    }
    let cgroups = match (&args.cgroup_root, args.cgroup_services) {
        (Some(root), _) => format!(
            "[cgroups]\nroot = {:?}\nslices = [{:?}]\n",
            root, args.cgroup_slice
        ),
        (None, 0) => String::new(),
        (None, services) => format!(
            "[cgroups]\nroot = {:?}\n",
            write_cgroup_tree(&dir.join("cgroup"), services)?
        ),
    };
    let agent_toml = dir.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "collector = \"{collector_addr}\"\nserver_name = \"localhost\"\nsampler = \"{sampler}\"\ninterval = \"{}ms\"\nstate_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[processes]\nwatch = [{}]\n[families]\ndisabled = {:?}\n{cgroups}",
            args.interval_ms,
            dir.join("agent-state"),
            agent_tls.ca,
            agent_tls.cert,
            agent_tls.key,
            watch.join(", "),
            disabled,
        ),
    )?;
    let mut agent = Command::new(agent_bin);
    if let Some(bus) = bus {
        agent.env("DBUS_SYSTEM_BUS_ADDRESS", bus);
    }
    Ok(Reaped(
        agent
            .arg("--config")
            .arg(&agent_toml)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", agent_bin.display()))?,
    ))
}

/// node_exporter on a free loopback port, if installed at `path`; with
/// `tcpstat` (connections by state, off by default) when `tcpstat`. Its
/// collectors for the agent's other optional families (hwmon,
/// thermal_zone, netstat, conntrack, timex, filefd, netclass) are on by
/// default.
fn start_node_exporter(path: &Path, tcpstat: bool) -> anyhow::Result<Option<(Reaped, SocketAddr)>> {
    Ok(if path.exists() {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(path)
            .arg(format!("--web.listen-address={addr}"))
            .args(tcpstat.then_some("--collector.tcpstat"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        Some((Reaped(child), addr))
    } else {
        println!(
            "node_exporter=absent ({}; crates/bench/install-deps.sh installs it)",
            path.display()
        );
        None
    })
}

/// Waits for the agent's first samples, and node_exporter's (at `node`)
/// first answer; the time of the first uptime sample.
async fn wait_for_first_samples(
    query: &mut QueryClient<tonic::transport::Channel>,
    node: Option<SocketAddr>,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let uptime_at = loop {
        if let Some(t) = latest(query)
            .await?
            .get(&key("host_uptime_seconds", None))
            .map(|v| v.0)
        {
            break t;
        }
        if Instant::now() > deadline {
            bail!("no samples from the agent within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(addr) = node {
        let deadline = Instant::now() + Duration::from_secs(10);
        while scrape(addr).is_err() {
            if Instant::now() > deadline {
                bail!("node_exporter does not answer on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(uptime_at)
}

/// The figures of the agent and node_exporter: the `name=value` lines
/// `hostwatch-bench figures` reads.
fn print_figures(
    args: &Args,
    agent_bin: &Path,
    agent_probe: &Probe,
    measured: &Measured,
) -> anyhow::Result<()> {
    let stored = measured.agent_cpu.len();
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let agent_cpu_median = median(&measured.agent_cpu).unwrap_or(f64::NAN);
    let agent_rss_median = median(&measured.agent_rss).unwrap_or(f64::NAN);
    println!("agent_binary={}", agent_bin.display());
    println!("families_off={}", args.families_off);
    println!("cgroups_off={}", args.cgroups_off);
    match &args.cgroup_root {
        Some(root) => println!("cgroup_root={}/{}", root.display(), args.cgroup_slice),
        None => println!("cgroup_services={}", args.cgroup_services),
    }
    println!("systemd_units={}", args.systemd_units);
    println!("load_average={}", load_average());
    println!("interval_ms={}", args.interval_ms);
    println!("duration_seconds={}", args.duration_secs);
    println!("agent_windows={stored}");
    println!("agent_series={}", measured.agent_series);
    println!("agent_cpu_per_sample_ms_median={agent_cpu_median:.3}");
    println!(
        "agent_cpu_per_sample_ms_mean={:.3}",
        measured.agent_cpu.iter().sum::<f64>() / stored.max(1) as f64
    );
    // The sample that ranks the services (every cgroups.rank_interval).
    println!(
        "agent_cpu_per_sample_ms_max={:.3}",
        measured.agent_cpu.iter().cloned().fold(0.0, f64::max)
    );
    println!("agent_rss_steady_mib_median={:.2}", mib(agent_rss_median));
    println!("agent_rss_peak_mib={:.2}", mib(measured.agent_peak as f64));
    let (anon, file) = agent_probe.rss_split()?;
    println!("agent_rss_anonymous_mib={:.2}", mib(anon as f64));
    println!("agent_rss_file_backed_mib={:.2}", mib(file as f64));
    if let (Some(node_peak), false) = (measured.node_peak, measured.node_cpu.is_empty()) {
        let node_cpu_median = median(&measured.node_cpu).unwrap_or(f64::NAN);
        let node_rss_median = median(&measured.node_rss).unwrap_or(f64::NAN);
        println!("node_exporter_series={}", measured.node_series);
        println!("node_exporter_cpu_per_scrape_ms_median={node_cpu_median:.3}");
        println!(
            "node_exporter_cpu_per_scrape_ms_mean={:.3}",
            measured.node_cpu.iter().sum::<f64>() / measured.node_cpu.len() as f64
        );
        println!(
            "node_exporter_rss_steady_mib_median={:.2}",
            mib(node_rss_median)
        );
        println!("node_exporter_rss_peak_mib={:.2}", mib(node_peak as f64));
        let cpu_ratio = agent_cpu_median / node_cpu_median;
        println!("ratio_cpu_agent_to_node_exporter={cpu_ratio:.3}");
        println!(
            "ratio_rss_agent_to_node_exporter={:.3}",
            agent_rss_median / node_rss_median
        );
        println!(
            "target_cpu_at_most_half_met={}",
            cpu_ratio <= TARGET_CPU_RATIO
        );
        let mut names: Vec<_> = measured.accuracy.keys().copied().collect();
        names.sort();
        for name in names {
            let diffs = &measured.accuracy[name];
            let m = median(diffs).unwrap_or(f64::NAN);
            println!("accuracy_{name}_relative_difference_median={m:.6}");
            println!("accuracy_{name}_within_1pct={}", m <= 0.01);
        }
    }
    println!(
        "target_rss_at_most_8mib_met={}",
        agent_rss_median <= TARGET_RSS_BYTES
    );
    Ok(())
}

/// The `--sysinfo` agent's figures, and their ratios to the /proc agent's
/// measured in the same windows.
fn print_sysinfo_figures(probe: &Probe, measured: &Measured) -> anyhow::Result<()> {
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let cpu = median(&measured.sysinfo_cpu).unwrap_or(f64::NAN);
    let rss = median(&measured.sysinfo_rss).unwrap_or(f64::NAN);
    let proc_cpu = median(&measured.agent_cpu).unwrap_or(f64::NAN);
    let proc_rss = median(&measured.agent_rss).unwrap_or(f64::NAN);
    println!("sysinfo_agent_windows={}", measured.sysinfo_cpu.len());
    println!("sysinfo_agent_cpu_per_sample_ms_median={cpu:.3}");
    println!("sysinfo_agent_rss_steady_mib_median={:.2}", mib(rss));
    println!(
        "sysinfo_agent_rss_peak_mib={:.2}",
        mib(probe.rss_bytes()?.1 as f64)
    );
    println!("ratio_cpu_sysinfo_to_proc_agent={:.3}", cpu / proc_cpu);
    println!("ratio_rss_sysinfo_to_proc_agent={:.3}", rss / proc_rss);
    Ok(())
}

/// What the measuring windows hold.
struct Measured {
    /// The agent's CPU per window, in ms.
    agent_cpu: Vec<f64>,
    agent_rss: Vec<f64>,
    /// The same of the `--sysinfo` agent, in the same windows.
    sysinfo_cpu: Vec<f64>,
    sysinfo_rss: Vec<f64>,
    /// node_exporter's CPU per window (one scrape each), in ms.
    node_cpu: Vec<f64>,
    node_rss: Vec<f64>,
    /// Relative differences between the two, per quantity.
    accuracy: HashMap<&'static str, Vec<f64>>,
    /// Series in node_exporter's last scrape.
    node_series: usize,
    /// Peak resident memory, read at the end.
    agent_peak: u64,
    node_peak: Option<u64>,
    /// Series of the agent's host in the collector at the end.
    agent_series: usize,
}

/// Reads both processes' CPU and memory once per interval for
/// `duration_secs`, scraping node_exporter (and comparing) after each read.
async fn measure(
    args: &Args,
    uptime_at: i64,
    agent_probe: &Probe,
    sysinfo_probe: Option<&Probe>,
    node: Option<SocketAddr>,
    node_probe: Option<&Probe>,
    query: &mut QueryClient<tonic::transport::Channel>,
) -> anyhow::Result<Measured> {
    let interval = Duration::from_millis(args.interval_ms);
    // Measure half-way between two agent samples: each window then holds
    // exactly one sample (and one scrape, made right after each reading).
    let period = args.interval_ms as i64;
    let phase = (uptime_at + period / 2).rem_euclid(period);
    let wait = (phase - now_ms().rem_euclid(period)).rem_euclid(period);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let start = Instant::now();
    let steps = args.duration_secs * 1000 / args.interval_ms;
    let mut agent_cpu = Vec::new();
    let mut agent_rss = Vec::new();
    let mut sysinfo_cpu = Vec::new();
    let mut sysinfo_rss = Vec::new();
    let mut sysinfo_before: Option<u64> = None;
    let mut node_cpu = Vec::new();
    let mut node_rss = Vec::new();
    let mut accuracy: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut node_series = 0;
    let mut previous: Option<(u64, Option<u64>)> = None;
    for step in 0..=steps {
        tokio::time::sleep_until(start + interval * step as u32).await;
        let agent_ns = agent_probe.cpu_ns()?;
        agent_rss.push(agent_probe.rss_bytes()?.0 as f64);
        if let Some(probe) = sysinfo_probe {
            let ns = probe.cpu_ns()?;
            sysinfo_rss.push(probe.rss_bytes()?.0 as f64);
            if let Some(before) = sysinfo_before {
                sysinfo_cpu.push((ns - before) as f64 / 1e6);
            }
            sysinfo_before = Some(ns);
        }
        let node_ns = match node_probe {
            Some(p) => {
                node_rss.push(p.rss_bytes()?.0 as f64);
                Some(p.cpu_ns()?)
            }
            None => None,
        };
        if let Some((agent_before, node_before)) = previous {
            agent_cpu.push((agent_ns - agent_before) as f64 / 1e6);
            if let (Some(now), Some(before)) = (node_ns, node_before) {
                node_cpu.push((now - before) as f64 / 1e6);
            }
        }
        previous = Some((agent_ns, node_ns));
        if step == steps {
            break;
        }
        if let Some(addr) = node {
            let text = scrape(addr)?;
            node_series = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count();
            let ours = latest(query).await?;
            compare(&text, &ours, &mut accuracy);
        }
    }
    let (_, agent_peak) = agent_probe.rss_bytes()?;
    let node_peak = match node_probe {
        Some(p) => Some(p.rss_bytes()?.1),
        None => None,
    };
    let agent_series = latest_values(query).await?.len();
    Ok(Measured {
        agent_cpu,
        agent_rss,
        sysinfo_cpu,
        sysinfo_rss,
        node_cpu,
        node_rss,
        accuracy,
        node_series,
        agent_peak,
        node_peak,
        agent_series,
    })
}

/// The collector (already stopped) stays away `outage_secs`, comes back on
/// the same address; prints how long until a sample taken after its return
/// is stored (the backlog before it replayed), and the agent's memory.
async fn outage(
    args: &Args,
    config: hostwatch_collector::CollectorConfig,
    addr: SocketAddr,
    agent: &Probe,
    query: &mut QueryClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut rss = Vec::new();
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(args.outage_secs) {
        rss.push(agent.rss_bytes()?.0 as f64);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} again"))?;
    let back_ms = now_ms();
    let back = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(hostwatch_collector::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    let deadline = back + Duration::from_secs(600);
    // Reconnection waits for the agent's backoff (up to limits.max_backoff).
    let reconnected = loop {
        let connected = query
            .list_hosts(ListHostsRequest::default())
            .await
            .ok()
            .is_some_and(|r| {
                r.into_inner()
                    .hosts
                    .iter()
                    .any(|h| h.host_id == HOST && h.connected)
            });
        if connected {
            break back.elapsed();
        }
        if Instant::now() > deadline {
            bail!("the agent did not reconnect within 10 minutes of the collector's return");
        }
        rss.push(agent.rss_bytes()?.0 as f64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let replayed = loop {
        let fresh = latest(query)
            .await
            .ok()
            .and_then(|l| l.get(&key("host_uptime_seconds", None)).map(|v| v.0))
            .is_some_and(|t| t > back_ms);
        if fresh {
            break back.elapsed();
        }
        if Instant::now() > deadline {
            bail!("no fresh sample within 10 minutes of the collector's return");
        }
        rss.push(agent.rss_bytes()?.0 as f64);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (after, peak) = agent.rss_bytes()?;
    println!("outage_seconds={}", args.outage_secs);
    println!("outage_reconnect_seconds={:.3}", reconnected.as_secs_f64());
    println!(
        "outage_replay_after_reconnect_until_fresh_sample_seconds={:.3}",
        (replayed - reconnected).as_secs_f64()
    );
    println!(
        "outage_agent_rss_median_mib={:.2}",
        median(&rss).unwrap_or(f64::NAN) / (1024.0 * 1024.0)
    );
    println!("outage_agent_rss_after_replay_mib={:.2}", mib(after));
    println!("outage_agent_rss_peak_mib={:.2}", mib(peak));
    let (anon, file) = agent.rss_split()?;
    println!(
        "outage_agent_rss_anonymous_after_replay_mib={:.2}",
        mib(anon)
    );
    println!(
        "outage_agent_rss_file_backed_after_replay_mib={:.2}",
        mib(file)
    );
    let _ = stop.send(());
    collector.await??;
    Ok(())
}

/// The 1, 5 and 15 minute load averages of this machine, as /proc/loadavg has them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A label a compared series is picked by: the mount point of file
/// systems, the state of connections.
const KEY_LABELS: [&str; 2] = ["mountpoint", "state"];

/// A series key: metric, and its value of one of `KEY_LABELS`.
fn key(metric: &str, label: Option<(&str, &str)>) -> String {
    match label {
        Some((name, value)) => format!("{metric}{{{name}={value}}}"),
        None => metric.to_owned(),
    }
}

/// The agent's latest values, by [`key`] (one per metric, and per mount
/// point for file systems), with their timestamps.
async fn latest(
    query: &mut QueryClient<tonic::transport::Channel>,
) -> anyhow::Result<HashMap<String, (i64, f64)>> {
    Ok(latest_values(query)
        .await?
        .into_iter()
        .map(|v| {
            let label = v
                .labels
                .iter()
                .find(|l| KEY_LABELS.contains(&l.name.as_str()))
                .map(|l| (l.name.as_str(), l.value.as_str()));
            (key(&v.metric, label), (v.timestamp_ms, v.value))
        })
        .collect())
}

async fn latest_values(
    query: &mut QueryClient<tonic::transport::Channel>,
) -> anyhow::Result<Vec<hostwatch_proto::v1::SeriesValue>> {
    Ok(query
        .latest(LatestRequest {
            host_id: HOST.to_owned(),
        })
        .await?
        .into_inner()
        .values)
}

/// Relative differences between node_exporter's figures and the agent's.
fn compare(text: &str, ours: &HashMap<String, (i64, f64)>, out: &mut HashMap<&str, Vec<f64>>) {
    type Pair<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, &'a str);
    let pairs: [Pair<'_>; 14] = [
        (
            "memory_available",
            "node_memory_MemAvailable_bytes",
            None,
            "host_memory_available_bytes",
        ),
        (
            "filesystem_root_free",
            "node_filesystem_free_bytes",
            Some(("mountpoint", "/")),
            "host_filesystem_free_bytes",
        ),
        (
            "tcp_retransmitted_segments",
            "node_netstat_Tcp_RetransSegs",
            None,
            "host_tcp_retransmitted_segments_total",
        ),
        (
            "tcp_listen_overflows",
            "node_netstat_TcpExt_ListenOverflows",
            None,
            "host_tcp_listen_overflows_total",
        ),
        (
            "tcp_established",
            "node_tcp_connection_states",
            Some(("state", "established")),
            "host_tcp_connections",
        ),
        (
            "tcp_listen",
            "node_tcp_connection_states",
            Some(("state", "listen")),
            "host_tcp_connections",
        ),
        (
            "file_descriptors_allocated",
            "node_filefd_allocated",
            None,
            "host_file_descriptors_allocated",
        ),
        (
            "conntrack_entries",
            "node_nf_conntrack_entries",
            None,
            "host_conntrack_entries",
        ),
        (
            "time_max_error",
            "node_timex_maxerror_seconds",
            None,
            "host_time_max_error_seconds",
        ),
        (
            "time_offset",
            "node_timex_offset_seconds",
            None,
            "host_time_offset_seconds",
        ),
        ("load1", "node_load1", None, "host_load1"),
        ("load5", "node_load5", None, "host_load5"),
        ("load15", "node_load15", None, "host_load15"),
        (
            "boot_time",
            "node_boot_time_seconds",
            None,
            "host_boot_time_seconds",
        ),
    ];
    for (name, node_metric, label, our_metric) in pairs {
        let theirs = prometheus_value(text, node_metric, label);
        let mine = ours.get(&key(our_metric, label)).map(|v| v.1);
        if let (Some(theirs), Some(mine)) = (theirs, mine) {
            let scale = theirs.abs().max(mine.abs());
            let diff = if scale == 0.0 {
                0.0
            } else {
                (theirs - mine).abs() / scale
            };
            out.entry(name).or_default().push(diff);
        }
    }
}

/// The value of `metric` (with the label `name="value"` if given) in a
/// Prometheus text exposition.
fn prometheus_value(text: &str, metric: &str, label: Option<(&str, &str)>) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        if let Some((name, value)) = label
            && !labels.contains(&format!("{name}=\"{value}\""))
        {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// One GET /metrics over plain HTTP/1.0; the body.
fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header from node_exporter")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "node_exporter answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.52\nnode_load15 0.3\nnode_filesystem_free_bytes{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/boot\"} 5\nnode_filesystem_free_bytes{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"} 1.5e+10\n";

    #[test]
    fn reads_prometheus_text() {
        assert_eq!(prometheus_value(TEXT, "node_load1", None), Some(0.52));
        assert_eq!(prometheus_value(TEXT, "node_load15", None), Some(0.3));
        assert_eq!(prometheus_value(TEXT, "node_load5", None), None);
        assert_eq!(
            prometheus_value(
                TEXT,
                "node_filesystem_free_bytes",
                Some(("mountpoint", "/"))
            ),
            Some(1.5e10)
        );
    }

    #[test]
    fn compares_relative_differences() {
        let mut ours = HashMap::new();
        ours.insert("host_load1".to_owned(), (0, 0.52));
        ours.insert(
            "host_filesystem_free_bytes{mountpoint=/}".to_owned(),
            (0, 1.515e10),
        );
        let mut out = HashMap::new();
        compare(TEXT, &ours, &mut out);
        assert_eq!(out["load1"], [0.0]);
        assert!((out["filesystem_root_free"][0] - 0.15 / 15.15).abs() < 1e-9);
        assert!(!out.contains_key("memory_available"));
    }
}
