//! `hostwatch-bench console`: the web console against a fleet of
//! `--hosts` simulated agents, served by a real collector process.
//!
//! 1. Data: every host's agent series (storage's generator: about 90 per
//!    host, and the agent's own health series, which the host page charts;
//!    one sample per 10 s) for the last `--minutes`, and `--host-hours` for
//!    `host-0`, written straight into a store in the collector's data
//!    directory. The data runs `--lead-minutes` past the start of the
//!    measurement, so the pages see a live fleet without 10,000 agents'
//!    streams running meanwhile. Every host is entered in the collector's
//!    host registry as if its agent's last batch had been stored at the
//!    data's end. With `--dir` and `--reuse`, a fleet an earlier run wrote
//!    there is used again while its data still runs past now.
//! 2. The collector binary (`--collector-bin`) serves that directory with
//!    its HTTPS listener; `console_bench.py` (run by `--python`, which must
//!    have playwright) logs headless chromium in with a viewer's token
//!    (chromium trusting the collector's certificate by its key), records
//!    the fleet page's API requests, replays them with viewers' client
//!    certificates, then times the fleet page and the host page at 24 h
//!    and reports the tab's memory.
//! 3. Ingest cost with the console on but idle against off: a fresh
//!    collector per phase, with and without `http_listen`, alternated,
//!    `--ingest-hosts` agents' streams sending one tick a second each; the
//!    collector process's CPU per stored sample, per phase.

use crate::fixture::{issue, open_ingest, series_to_proto};
use crate::measure::{Probe, median};
use crate::storage::INTERVAL_MS;
use crate::storage::data::HostGen;
use anyhow::{Context, bail, ensure};
use hostwatch_pki::transport::{ClientTarget, Keepalive, connect};
use hostwatch_pki::{Ca, CaPin, Role, TlsFiles};
use hostwatch_proto::v1 as pb;
use hostwatch_tsdb::{Batch, Options, Store};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Hosts in the fleet.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    hosts: u32,
    /// History of every host, in minutes (the fleet's sparklines show 60).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    minutes: u32,
    /// History of host-0, whose page is loaded, in hours.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720))]
    host_hours: u32,
    /// Minutes of data past the start of the measurement.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=120))]
    lead_minutes: u32,
    /// Page loads of each page, and sets of the fleet's requests replayed.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    replays: u32,
    /// Seconds a page load may take before it counts as not interactive.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..))]
    page_timeout_s: u32,
    /// Host page loads traced after the timed ones: the renderer main
    /// thread's CPU time per load, by kind of work (0: none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    trace_loads: u32,
    /// The collector program; by default the one next to this program.
    #[arg(long)]
    collector_bin: Option<PathBuf>,
    /// A Python with playwright (tests/console/run.sh installs one in
    /// `$CARGO_TARGET_DIR/console-venv`).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Streams sending in the ingest comparison (0: no comparison).
    #[arg(long, default_value_t = 200)]
    ingest_hosts: u32,
    /// Seconds each ingest phase is measured.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    ingest_seconds: u32,
    /// Pairs of ingest phases (console on, then off).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    ingest_pairs: u32,
    /// Work directory (kept); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// With `--dir`: the fleet an earlier run generated there, used again
    /// while its data runs at least 5 minutes past now; generated
    /// when there is none.
    #[arg(long, requires = "dir")]
    reuse: bool,
}

/// What an earlier run generated, in `generated.txt` of its directory.
struct Generated {
    end_ms: i64,
    hosts: u32,
    samples: u64,
}

impl Generated {
    const FILE: &str = "generated.txt";

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let text = format!("{} {} {}\n", self.end_ms, self.hosts, self.samples);
        Ok(std::fs::write(dir.join(Self::FILE), text)?)
    }

    /// The earlier run's fleet in `dir`, if there is one.
    fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [end_ms, hosts, samples] = fields[..] else {
            bail!("{}: not `end_ms hosts samples`", path.display());
        };
        Ok(Some(Generated {
            end_ms: end_ms.parse()?,
            hosts: hosts.parse()?,
            samples: samples.parse()?,
        }))
    }
}

/// The browser half, written into the work directory and run there.
const SCRIPT: &str = include_str!("../console_bench.py");
/// Longest wait for a collector to listen, or to stop: replaying a
/// 10,000-host fleet's open hours on a loaded 2-core machine may take
/// several minutes.
const START_TIMEOUT: Duration = Duration::from_secs(900);
/// Batches in flight per generating thread (they share group commits).
const PIPELINE: usize = 64;
/// Viewers the replay's requests are spread over (more than the fleet
/// page's requests).
const REPLAY_VIEWERS: u32 = 16;
/// Ticks per generated batch.
const TICKS_PER_BATCH: i64 = 30;
/// Least time a reused fleet's data must still run past now.
const REUSE_MARGIN_MS: i64 = 5 * 60_000;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let collector_bin = match &args.collector_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("hostwatch-collector"),
    };
    ensure!(
        collector_bin.is_file(),
        "no collector program at {} (build it with `cargo build --release -p hostwatch-collector` or give --collector-bin)",
        collector_bin.display()
    );
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            ensure!(
                args.reuse || !dir.exists(),
                "--dir {} exists: give a new directory (or --reuse)",
                dir.display()
            );
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    let ca = Ca::generate("bench CA", 2)?;
    ca.write(&dir)?;
    let server = issue(&ca, &dir, Role::Collector, "bench")?;
    // The browser signs in with a viewer's token, which this operator
    // creates (see `viewer_token`).
    let operator = issue(&ca, &dir, Role::Operator, "bench")?;
    // The replay's requests, each as a viewer of its own: the collector
    // limits each identity's connections.
    for i in 0..REPLAY_VIEWERS {
        issue(&ca, &dir, Role::Viewer, &format!("replay-{i}"))?;
    }

    let earlier = if args.reuse {
        Generated::read(&dir)?
    } else {
        None
    };
    let samples = match earlier {
        Some(earlier) => {
            ensure!(
                earlier.hosts == args.hosts,
                "--reuse: {} holds {} hosts, not {}",
                dir.display(),
                earlier.hosts,
                args.hosts
            );
            let left_ms = earlier.end_ms - hostwatch_stdx::now_ms();
            ensure!(
                left_ms >= REUSE_MARGIN_MS,
                "--reuse: the data in {} runs {} s past now, less than {} s: give a new directory",
                dir.display(),
                left_ms / 1000,
                REUSE_MARGIN_MS / 1000
            );
            println!("# reusing the fleet in {}", dir.display());
            // The ingest comparison's collectors start empty.
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("ingest-") && path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                }
            }
            earlier.samples
        }
        None => {
            let now_ms = hostwatch_stdx::now_ms();
            let end_ms =
                (now_ms / INTERVAL_MS) * INTERVAL_MS + i64::from(args.lead_minutes) * 60_000;
            let started = Instant::now();
            let data = dir.join("data");
            let samples = generate(&args, &data.join("store"), end_ms)?;
            // Seen at the data's end, as a live fleet is during the
            // measurement: a host last seen before it would turn down
            // (host-down alerts firing for the whole fleet).
            register_hosts(&data, args.hosts, end_ms)?;
            println!("generation_seconds={:.0}", started.elapsed().as_secs_f64());
            let generated = Generated {
                end_ms,
                hosts: args.hosts,
                samples,
            };
            generated.write(&dir)?;
            samples
        }
    };
    println!("hosts={}", args.hosts);
    println!("generated_samples={samples}");
    browse(&args, &dir, &collector_bin, &server, &operator)?;
    if args.ingest_hosts > 0 {
        ingest_comparison(&args, &dir, &collector_bin, &ca, &server)?;
    }
    Ok(())
}

/// Writes the fleet's history into a store at `path`, ending at `end_ms`;
/// the samples stored.
fn generate(args: &Args, path: &Path, end_ms: i64) -> anyhow::Result<u64> {
    let options = Options {
        // The lead lies in the future; the collector checks its agents'
        // clocks on ingest, not the data it reopens.
        future_tolerance_ms: i64::from(args.lead_minutes + 1) * 60_000,
        ..Options::default()
    };
    let store = Store::open(path, options).with_context(|| format!("open {}", path.display()))?;
    let lead_ticks = i64::from(args.lead_minutes) * 60_000 / INTERVAL_MS;
    let fleet_ticks = i64::from(args.minutes) * 60_000 / INTERVAL_MS + lead_ticks;
    let host_ticks = i64::from(args.host_hours) * 3_600_000 / INTERVAL_MS + lead_ticks;
    // host-0 alone, then the rest on two threads (this machine's cores).
    let samples = write_hosts(&store, &[0], end_ms, host_ticks)?;
    let threads = 2;
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, hosts) = (&store, (1..args.hosts).skip(t).step_by(threads));
                let hosts: Vec<u32> = hosts.collect();
                scope.spawn(move || write_hosts(store, &hosts, end_ms, fleet_ticks))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generating thread panicked")))
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    Ok(samples + counts.iter().sum::<u64>())
}

/// Enters hosts `host-0` to `host-<hosts - 1>` in the host registry of
/// the collector whose data directory is `data`, last seen at `seen_ms`,
/// as the collector records a host whose agent connected
/// (collector/src/hosts.rs: the `hosts` tree of its state database, a
/// `HostStatus` by host id); the fleet page lists the registry's hosts.
fn register_hosts(data: &Path, hosts: u32, seen_ms: i64) -> anyhow::Result<()> {
    use prost::Message;
    let db = sled::open(data).with_context(|| format!("open {}", data.display()))?;
    let tree = db.open_tree("hosts")?;
    for i in 0..hosts {
        let host_id = HostGen::new(i, false).name;
        let record = pb::HostStatus {
            host_id: host_id.clone(),
            last_seen_ms: seen_ms,
            ..pb::HostStatus::default()
        };
        tree.insert(host_id.as_bytes(), record.encode_to_vec())?;
    }
    db.flush()?;
    Ok(())
}

/// `ticks` ticks of each of `hosts` ending at `end_ms`, time-major (as
/// agents send them), pipelined; the samples stored.
fn write_hosts(store: &Store, hosts: &[u32], end_ms: i64, ticks: i64) -> anyhow::Result<u64> {
    let mut gens: Vec<(HostGen, Batch)> = hosts
        .iter()
        .map(|&i| {
            let host = HostGen::new(i, false).with_agent_health();
            let batch = host.batch();
            (host, batch)
        })
        .collect();
    let start_ms = end_ms - (ticks - 1) * INTERVAL_MS;
    let mut stored = 0;
    let mut tick = 0;
    let mut seq = 0;
    while tick < ticks {
        let n = TICKS_PER_BATCH.min(ticks - tick);
        seq += 1;
        for chunk in gens.chunks_mut(PIPELINE) {
            let mut pending = Vec::with_capacity(chunk.len());
            for (host, batch) in chunk.iter_mut() {
                host.fill(batch, seq, start_ms + tick * INTERVAL_MS, n);
                pending.push(store.submit(batch)?);
            }
            for p in pending {
                let outcome = store.wait(p)?;
                if let Some(e) = outcome.first_error {
                    bail!("the store refused generated samples: {e}");
                }
                stored += outcome.stored;
            }
        }
        tick += n;
    }
    Ok(stored)
}

/// A free port on 127.0.0.1 (released for the collector to take).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A collector process on `data`, its gRPC listener at `grpc` and, with
/// `http`, its HTTPS listener; its output goes to `<name>.log`.
pub(crate) struct Collector {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Collector {
    fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        tls: &TlsFiles,
        grpc: u16,
        http: Option<u16>,
    ) -> anyhow::Result<Self> {
        Self::start_with(bin, dir, name, tls, grpc, http, ("", ""))
    }

    /// With `extra`: top-level keys put before the tables, and tables
    /// after them.
    pub(crate) fn start_with(
        bin: &Path,
        dir: &Path,
        name: &str,
        tls: &TlsFiles,
        grpc: u16,
        http: Option<u16>,
        extra: (&str, &str),
    ) -> anyhow::Result<Self> {
        let http_line = http
            .map(|p| format!("http_listen = \"127.0.0.1:{p}\"\n"))
            .unwrap_or_default();
        let (keys, tables) = extra;
        let config = format!(
            "listen = \"127.0.0.1:{grpc}\"\n{http_line}{keys}data_dir = {data:?}\n\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n{tables}",
            data = dir.join(name).display().to_string(),
            ca = tls.ca.display().to_string(),
            cert = tls.cert.display().to_string(),
            key = tls.key.display().to_string(),
        );
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config)?;
        Self::spawn(bin, &config_path, &dir.join(format!("{name}.log")), name)
    }

    /// The collector program with the configuration at `config`, its
    /// output in `log` (a new file), once it serves.
    pub(crate) fn spawn(bin: &Path, config: &Path, log: &Path, name: &str) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut collector = Collector {
            child,
            name: name.to_owned(),
            log: log.to_owned(),
        };
        collector.wait_serving()?;
        Ok(collector)
    }

    /// Until the collector logs that it serves: its listeners accept
    /// connections while it still opens (replays) its store.
    fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&self.log)?;
            if log.contains("collector serving") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "collector {} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "collector {} not serving within {START_TIMEOUT:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would, and the process reaped.
    pub(crate) fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL when it has not stopped within the timeout.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGTERM)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("collector {} did not stop on SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// A bench that fails midway leaves no collector behind.
impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The collector on the generated data, and the browser half against it,
/// signed in with a viewer token `operator` creates.
fn browse(
    args: &Args,
    dir: &Path,
    bin: &Path,
    server: &TlsFiles,
    operator: &TlsFiles,
) -> anyhow::Result<()> {
    let (grpc, http) = (free_port()?, free_port()?);
    let started = Instant::now();
    let collector = Collector::start(bin, dir, "data", server, grpc, Some(http))?;
    println!(
        "collector_open_seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    let script = dir.join("console_bench.py");
    std::fs::write(&script, SCRIPT)?;
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(viewer_token(grpc, operator)))
        .and_then(|token| run_script(args, &script, http, server, &token));
    let rss = Probe::new(collector.pid()).rss_bytes();
    collector.stop()?;
    result?;
    println!("collector_rss_bytes={}", rss?.0);
    Ok(())
}

/// A viewer's API token, for the browser to log in with, created as
/// `hostwatch token create --role viewer` does. The browser signs in
/// with it rather than a client certificate: playwright presents client
/// certificates through a proxy of its own in front of the browser, which
/// a user's browser does not have.
async fn viewer_token(grpc: u16, operator: &TlsFiles) -> anyhow::Result<String> {
    let target = ClientTarget {
        address: format!("127.0.0.1:{grpc}"),
        server_name: Some("localhost".to_owned()),
        tls: operator.clone(),
        connect_timeout: Duration::from_secs(30),
        keepalive: Keepalive::default(),
    };
    let (channel, _) = connect(&target).await.context("connecting as operator")?;
    let created = pb::admin_client::AdminClient::new(channel)
        .create_token(pb::CreateTokenRequest {
            // Unique in a reused fleet's collector, which keeps its tokens.
            name: format!("console-bench-{}", hostwatch_stdx::now_ms()),
            role: pb::Role::Viewer as i32,
            ttl_ms: 24 * 3_600_000,
            ..Default::default()
        })
        .await
        .context("creating the browser's viewer token")?;
    Ok(created.into_inner().token)
}

/// The browser half, logged in with `token`, trusting the collector's
/// certificate (`server`) by its key's digest, replaying as the replay
/// viewers.
fn run_script(
    args: &Args,
    script: &Path,
    http: u16,
    server: &TlsFiles,
    token: &str,
) -> anyhow::Result<()> {
    let pin = CaPin::of_file(&server.cert)?.to_string();
    let spki = pin.strip_prefix("sha256:").context("a pin's prefix")?;
    let mut child = Command::new(&args.python)
        .arg(script)
        .arg("--origin")
        .arg(format!("https://127.0.0.1:{http}"))
        .arg("--ca")
        .arg(&server.ca)
        .args(["--spki-sha256", spki])
        // In the environment, not on a command line others can read.
        .env("CONSOLE_BENCH_TOKEN", token)
        .arg("--replay-dir")
        .arg(script.parent().context("the script's directory")?)
        .args(["--replay-viewers", &REPLAY_VIEWERS.to_string()])
        .args(["--host", "host-0", "--hosts", &args.hosts.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(["--replays", &args.replays.to_string()])
        .args(["--page-timeout-s", &args.page_timeout_s.to_string()])
        .args(["--trace-loads", &args.trace_loads.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.python.display()))?;
    let stdout = child.stdout.take().context("the script's output")?;
    for line in BufReader::new(stdout).lines() {
        println!("{}", line?);
    }
    let status = child.wait()?;
    ensure!(status.success(), "{} failed ({status})", script.display());
    Ok(())
}

/// Collector CPU per stored sample with the console on (listening, nobody
/// looking) and off, phases alternated.
fn ingest_comparison(
    args: &Args,
    dir: &Path,
    bin: &Path,
    ca: &Ca,
    server: &TlsFiles,
) -> anyhow::Result<()> {
    let agents = (0..args.ingest_hosts)
        .map(|i| {
            let host = HostGen::new(i, false);
            let tls = issue(ca, dir, Role::Agent, &host.name)?;
            Ok((host, tls))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut agents = agents;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for pair in 0..args.ingest_pairs {
        for console in [true, false] {
            let name = format!("ingest-{pair}-{}", if console { "on" } else { "off" });
            let grpc = free_port()?;
            let http = if console { Some(free_port()?) } else { None };
            let collector = Collector::start(bin, dir, &name, server, grpc, http)?;
            let result = runtime.block_on(ingest_phase(args, &mut agents, &collector, grpc));
            collector.stop()?;
            let ns = result?;
            println!("# {name}: {ns:.0} ns of collector CPU per sample");
            if console { &mut on } else { &mut off }.push(ns);
        }
    }
    let (on, off) = (
        median(&on).context("no phase")?,
        median(&off).context("no phase")?,
    );
    println!("ingest_cpu_ns_per_sample_console_idle={on:.0}");
    println!("ingest_cpu_ns_per_sample_console_off={off:.0}");
    println!(
        "ingest_console_idle_over_off_pct={:.1}",
        (on / off - 1.0) * 100.0
    );
    Ok(())
}

/// One phase: every agent streams a tick a second for `--ingest-seconds`
/// after one warm-up tick; the collector's CPU per stored sample.
async fn ingest_phase(
    args: &Args,
    agents: &mut [(HostGen, TlsFiles)],
    collector: &Collector,
    grpc: u16,
) -> anyhow::Result<f64> {
    let mut streams = Vec::with_capacity(agents.len());
    for (host, tls) in agents.iter() {
        streams.push(AgentStream::open(grpc, &host.name, tls).await?);
    }
    let probe = Probe::new(collector.pid());
    let mut batches: Vec<Batch> = agents.iter().map(|(h, _)| h.batch()).collect();
    let mut samples = 0u64;
    let mut cpu_start = 0;
    for round in 0..=args.ingest_seconds {
        let due = Instant::now() + Duration::from_secs(1);
        if round == 1 {
            cpu_start = probe.cpu_ns()?;
        }
        let t_ms = hostwatch_stdx::now_ms();
        for (((host, _), batch), stream) in agents.iter_mut().zip(&mut batches).zip(&mut streams) {
            stream.seq += 1;
            host.fill(batch, stream.seq, t_ms, 1);
            stream.send(batch).await?;
            if round > 0 {
                samples += batch.series.len() as u64;
            }
        }
        tokio::time::sleep_until(due.into()).await;
    }
    for stream in &streams {
        stream.acked(Duration::from_secs(30)).await?;
    }
    let cpu = probe.cpu_ns()? - cpu_start;
    Ok(cpu as f64 / samples as f64)
}

/// An agent's ingest stream, sending whole batches.
struct AgentStream {
    tx: mpsc::Sender<pb::AgentMessage>,
    seq: u64,
    acked: Arc<AtomicU64>,
    _acks: tokio::task::JoinHandle<()>,
}

impl AgentStream {
    async fn open(grpc: u16, host: &str, tls: &TlsFiles) -> anyhow::Result<Self> {
        let target = ClientTarget {
            address: format!("127.0.0.1:{grpc}"),
            server_name: Some("localhost".to_owned()),
            tls: tls.clone(),
            connect_timeout: Duration::from_secs(10),
            keepalive: Keepalive::default(),
        };
        let (tx, mut replies) = open_ingest(&target, host, 8).await?;
        let acked = Arc::new(AtomicU64::new(0));
        let acks = {
            let acked = acked.clone();
            tokio::spawn(async move {
                while let Ok(Some(reply)) = replies.message().await {
                    if let Some(pb::collector_message::Kind::Ack(ack)) = reply.kind {
                        acked.fetch_max(ack.seq, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(AgentStream {
            tx,
            seq: 0,
            acked,
            _acks: acks,
        })
    }

    async fn send(&self, batch: &Batch) -> anyhow::Result<()> {
        let series = series_to_proto(batch);
        let message = pb::Batch {
            seq: batch.seq,
            series,
            ..pb::Batch::default()
        };
        self.tx
            .send(pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Batch(message)),
            })
            .await
            .context("the collector closed the stream")
    }

    /// Until the collector has acknowledged every batch sent, within `limit`.
    async fn acked(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.acked.load(Ordering::Relaxed) < self.seq {
            ensure!(
                Instant::now() < deadline,
                "batches unacknowledged after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_store_takes_every_generated_sample() {
        let dir = tempfile::tempdir().unwrap();
        let argv = [
            "console",
            "--hosts",
            "3",
            "--minutes",
            "2",
            "--host-hours",
            "1",
        ];
        let args = Cli::parse_from(argv.iter().chain(&["--lead-minutes", "1"])).args;
        let end_ms = hostwatch_stdx::now_ms() / INTERVAL_MS * INTERVAL_MS + 60_000;
        let stored = generate(&args, &dir.path().join("store"), end_ms).unwrap();
        let series = HostGen::new(0, false).with_agent_health().series.len() as u64;
        // host-0: 1 h and the lead; hosts 1 and 2: 2 min and the lead.
        assert_eq!(stored, series * ((360 + 6) + 2 * (12 + 6)));
    }

    #[test]
    fn traced_loads_default_to_none_and_a_count_past_100_is_refused() {
        assert_eq!(Cli::parse_from(["console"]).args.trace_loads, 0);
        assert_eq!(
            Cli::parse_from(["console", "--trace-loads", "5"])
                .args
                .trace_loads,
            5
        );
        let e = Cli::try_parse_from(["console", "--trace-loads", "101"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--trace-loads"), "{e}");
    }

    #[test]
    fn registered_hosts_are_in_the_registry_tree() {
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        register_hosts(dir.path(), 3, 1_234).unwrap();
        let db = crate::fixture::retry_while_locked(|| Ok(sled::open(dir.path())?)).unwrap();
        let tree = db.open_tree("hosts").unwrap();
        let records: Vec<pb::HostStatus> = tree
            .iter()
            .map(|e| pb::HostStatus::decode(&*e.unwrap().1).unwrap())
            .collect();
        let ids: Vec<&str> = records.iter().map(|r| r.host_id.as_str()).collect();
        assert_eq!(ids, ["host-0", "host-1", "host-2"]);
        assert!(records.iter().all(|r| r.last_seen_ms == 1_234));
    }

    #[test]
    fn a_generated_fleet_is_read_back_and_a_bad_note_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Generated::read(dir.path()).unwrap().is_none());
        let generated = Generated {
            end_ms: 99,
            hosts: 7,
            samples: 1_000,
        };
        generated.write(dir.path()).unwrap();
        let read = Generated::read(dir.path()).unwrap().unwrap();
        assert_eq!((read.end_ms, read.hosts, read.samples), (99, 7, 1_000));
        std::fs::write(dir.path().join(Generated::FILE), "99 7\n").unwrap();
        let e = Generated::read(dir.path()).err().unwrap();
        assert!(e.to_string().contains("end_ms hosts samples"), "{e}");
    }
}
