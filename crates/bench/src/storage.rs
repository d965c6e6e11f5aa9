//! `hostwatch-bench storage`: the storage engine on agent-like data.
//!
//! Generates `--hosts` hosts with the agent's series (CPU time split and
//! utilization per core, memory, load, uptime, filesystems, disks,
//! network, pressure, watched processes: constant totals, slow gauges in
//! pages, counters, two-decimal load averages, and noisy ratios of kernel
//! ticks), one sample every 10 s for `--hours` (or `--minutes`), each
//! batch with a top-process snapshot as the agent sends it (top 10 by CPU
//! and by memory of about 40 services and short jobs; `--no-snapshots`
//! leaves them out), and measures, in order:
//! - ingest by `--writers` threads, each with up to `--in-flight` batches
//!   submitted and not yet durable, a sample counted once its batch is
//!   (median of per-second rates, and overall), and the process' CPU per
//!   sample meanwhile (the store's work and the generator's);
//! - memory: resident bytes added per series and per host, and the head's
//!   own bytes (`--ingest-only` stops here);
//! - restart: reopening the store as left by ingest (the open hour in the
//!   WAL), then after sealing everything (median of 3 each);
//! - latest values of one host and the range of one series over the whole
//!   run (24 h by default): p50 and p99 over `--queries` random queries,
//!   also for 1 min and 1 h steps;
//! - disk: the store's directory (the WAL's databases included) over the
//!   samples stored, after ingest (the open hour in the WAL) and after
//!   sealing;
//! - with `promtool` (Debian's `prometheus`, `crates/bench/install-deps.sh`):
//!   the first `--promtool-hosts` hosts as OpenMetrics, built into
//!   Prometheus blocks, and the same hosts in a fresh store, side by side;
//! - with `--crash-rounds N`: N SIGKILL crash rounds (the crash test's
//!   workload, this binary as the child).

use crate::measure::{Probe, median, percentile, process_cpu_ns};
use anyhow::{Context, bail};
use hostwatch_stdx::now_ms;
use hostwatch_tsdb::workload::{Workload, child_main, crash_round};
use hostwatch_tsdb::{
    Aggregation, Batch, Clock, Label, Matcher, Options, Point, ProcessInfo, ProcessSnapshot,
    SeriesInput, Store,
};
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const INTERVAL_MS: i64 = 10_000;
const HOUR_MS: i64 = 3_600_000;
/// The targets (listed in docs/benchmarks.md).
const TARGET_INGEST: f64 = 1_000_000.0;
const TARGET_BYTES_PER_SAMPLE: f64 = 1.0;
const TARGET_RANGE_P99_MS: f64 = 2.0;
const TARGET_LATEST_P99_MS: f64 = 1.0;
const TARGET_RESTART_MS: f64 = 2000.0;
const TARGET_RSS_PER_SERIES: f64 = 1024.0;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Hosts simulated (89 series each).
    #[arg(long, default_value = "140")]
    hosts: u32,
    /// Hours of data per series, one sample every 10 s.
    #[arg(long, default_value = "24")]
    hours: u32,
    /// Minutes of data instead of `--hours`: many hosts (about 11,240 for
    /// a million series) in bounded time and memory.
    #[arg(long, conflicts_with = "hours")]
    minutes: Option<u32>,
    /// Batches without process snapshots (by default every tick carries
    /// the agent's top-10 by CPU and by memory).
    #[arg(long)]
    no_snapshots: bool,
    /// Stop after the ingest and memory figures (no restarts, queries,
    /// sealing or Prometheus comparison): for runs with many series.
    #[arg(long)]
    ingest_only: bool,
    /// Concurrent writers; hosts are spread over them.
    #[arg(long, default_value = "8")]
    writers: u32,
    /// Batches each writer keeps in flight (submitted, not yet durable),
    /// like a collector thread serving many agent streams: it waits for
    /// the oldest only when this many are pending. 1: every append waits.
    #[arg(long, default_value = "16")]
    in_flight: u32,
    /// Agent ticks per batch (1: one batch per host per 10 s sample, as
    /// the agent sends them; more: an agent's spool replay after an outage).
    #[arg(long, default_value = "1")]
    ticks_per_batch: u32,
    /// Random queries per latency figure.
    #[arg(long, default_value = "2000")]
    queries: u32,
    /// Where to put the store (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// promtool, for the Prometheus comparison; skipped when absent.
    #[arg(long, default_value = "/usr/bin/promtool")]
    promtool: PathBuf,
    /// Hosts written as OpenMetrics for promtool (text: many bytes a sample).
    #[arg(long, default_value = "5")]
    promtool_hosts: u32,
    /// SIGKILL crash rounds to run after the measurements.
    #[arg(long, default_value = "0")]
    crash_rounds: u32,
    /// Seed of the crash rounds' kill moments (default: the clock).
    #[arg(long)]
    crash_seed: Option<u64>,
    /// sled's page cache, as the collector's `storage.cache_bytes` (same default).
    #[arg(long, default_value = "16777216")]
    cache_bytes: u64,
    /// WAL bytes after which the store starts a new WAL database (its
    /// `wal_generation_bytes`; default the store's).
    #[arg(long, default_value_t = Options::default().wal_generation_bytes)]
    wal_generation_bytes: u64,
    /// Only reopen the store left in `--dir` by an earlier run (with
    /// `--ingest-only`, say) three times: its restart figures, nothing written.
    #[arg(long, requires = "dir")]
    reopen: bool,
    /// Maintenance (sealing, WAL truncation) during ingest every this many
    /// ticks of agent time, as a collector's every 5 s of wall time keeps
    /// up with its agents; 0: only the store's own, every 5 s of the
    /// bench's wall time (over an hour of data at full speed).
    #[arg(long, default_value = "30")]
    maintain_every_ticks: u32,
    /// The store's retention in hours (default: the store's 30 days). The
    /// store's clock then follows the writers' agent time, so windows older
    /// than this are deleted during ingest, as in a collector that has run
    /// longer than its retention; with more `--hours` than this, the disk
    /// figures are those of that steady state.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    retention_hours: Option<u32>,
    /// The store's size limit (`retention_bytes`: chunks, snapshot blocks
    /// and WAL, before sled's own overhead); with less than the data, the
    /// oldest windows are deleted during ingest and the disk figures are
    /// those of that steady state.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    retention_bytes: Option<u64>,
}

/// Arguments of the crash child (`storage-crash-child`, hidden).
#[derive(clap::Args)]
pub(crate) struct CrashChildArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    base_ms: i64,
}

const CRASH_WRITERS: u32 = 4;
const CRASH_SERIES: u32 = 8;

pub(crate) fn crash_child(args: CrashChildArgs) -> anyhow::Result<()> {
    let workload = Workload {
        writers: CRASH_WRITERS,
        series: CRASH_SERIES,
        base_ms: args.base_ms,
    };
    child_main(&args.dir, workload).map_err(anyhow::Error::msg)
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.hosts == 0
        || args.hours == 0
        || args.minutes == Some(0)
        || args.writers == 0
        || args.ticks_per_batch == 0
        || args.in_flight == 0
    {
        bail!(
            "--hosts, --hours, --minutes, --writers, --in-flight and --ticks-per-batch must be greater than zero"
        );
    }
    if args.reopen {
        let dir = args.dir.as_deref().context("--reopen needs --dir")?;
        return reopen(dir, StoreConfig::of(&args));
    }
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().join("store"));
    if dir.exists() {
        bail!("{} exists; give a new directory", dir.display());
    }
    let now = now_ms();
    let minutes = args.minutes.unwrap_or(args.hours * 60);
    let ticks = i64::from(minutes) * 60_000 / INTERVAL_MS;
    // The last sample at least 10 minutes ago, at the moment of the hour
    // when the store holds most in memory and in its WAL: 10 s before the
    // out-of-order tolerance (10 min) lets the previous hour's windows seal,
    // so a full hour and 10 minutes are open. Figures then do not depend on
    // the minute the bench was started.
    let tolerance = Options::default().out_of_order_tolerance_ms;
    let last = (now - 600_000 - tolerance).div_euclid(HOUR_MS) * HOUR_MS + tolerance - INTERVAL_MS;
    let start = last - (ticks - 1) * INTERVAL_MS;
    let snapshots = !args.no_snapshots;
    let hosts: Vec<HostGen> = (0..args.hosts)
        .map(|i| HostGen::new(i, snapshots))
        .collect();
    let series_per_host = hosts[0].series.len();
    println!(
        "# {} hosts x {} series x {} samples (10 s for {} min) = {} samples, {}; {} writers with {} batches in flight each, {} tick(s) per batch; loadavg {}",
        args.hosts,
        series_per_host,
        ticks,
        minutes,
        u64::from(args.hosts) * series_per_host as u64 * ticks as u64,
        if snapshots {
            "a top-process snapshot every tick"
        } else {
            "no process snapshots"
        },
        args.writers,
        args.in_flight,
        args.ticks_per_batch,
        loadavg()
    );
    let me = Probe::new(std::process::id());
    let rss_before = me.rss_bytes()?.0;

    // Ingest.
    let progress = writer_progress(args.writers);
    let config = StoreConfig {
        reopen_at_ms: args.retention_hours.map(|_| start + ticks * INTERVAL_MS),
        ..StoreConfig::of(&args)
    };
    // With a retention by age, the store's clock is the slowest writer's
    // agent time (the system clock is past all of it).
    let clock: Clock = match config.reopen_at_ms {
        Some(_) => {
            let progress = progress.clone();
            Arc::new(move || start + slowest(&progress).min(ticks) * INTERVAL_MS)
        }
        None => Options::default().clock,
    };
    let store = Arc::new(open_with_clock(&dir, config, clock)?);
    let ingest = ingest(
        &store,
        &progress,
        hosts,
        Writers {
            in_flight: args.in_flight,
            ticks_per_batch: args.ticks_per_batch,
            maintain_every: args.maintain_every_ticks,
        },
        start,
        ticks,
    )?;
    println!("ingest_samples={}", ingest.samples);
    println!("ingest_seconds={:.1}", ingest.seconds);
    println!(
        "ingest_samples_per_sec={:.0}",
        ingest.samples as f64 / ingest.seconds
    );
    println!(
        "ingest_samples_per_sec_median={:.0} target>={TARGET_INGEST:.0}",
        ingest.median_rate
    );
    println!(
        "ingest_samples_per_cpu_sec={:.0}",
        ingest.samples as f64 / ingest.cpu_seconds
    );
    println!(
        "ingest_cpu_ns_per_sample={:.0}",
        ingest.cpu_seconds * 1e9 / ingest.samples as f64
    );
    println!(
        "ingest_maintenance_passes={} seconds={:.1}",
        ingest.maintenance_passes, ingest.maintenance_seconds
    );
    let stats = store.stats()?;
    println!(
        "ingest_batches_per_flush={:.1}",
        stats.batches as f64 / stats.commit_groups.max(1) as f64
    );
    if stats.rejected.total() > 0 {
        bail!("the store rejected generated samples: {:?}", stats.rejected);
    }

    // Memory, with the background maintenance caught up.
    store.maintain()?;
    let stats = store.stats()?;
    let (rss_after, settle) = settled_rss(&me)?;
    println!("rss_settle_seconds={}", settle.as_secs());
    let per_series = rss_after.saturating_sub(rss_before) as f64 / stats.series as f64;
    println!("series={}", stats.series);
    println!("rss_bytes_per_series={per_series:.0} target<={TARGET_RSS_PER_SERIES:.0}");
    println!(
        "head_bytes_per_series={:.0}",
        stats.head_bytes as f64 / stats.series as f64
    );
    println!("head_samples={}", stats.head_samples);
    println!("snapshots_stored={}", stats.snapshots_stored);
    println!(
        "head_host_bytes_per_host={:.0}",
        stats.head_host_bytes as f64 / stats.hosts.max(1) as f64
    );
    println!(
        "rss_bytes_per_host={:.0}",
        rss_after.saturating_sub(rss_before) as f64 / stats.hosts.max(1) as f64
    );
    println!("wal_bytes={}", stats.wal_bytes);
    if args.ingest_only {
        return Ok(());
    }
    // What the store takes while running, the open hour still in the WAL;
    // with a retention shorter than the data, over the samples it holds.
    let (unsealed, _) = dir_size(&dir)?;
    let held = if config.deletes() {
        store.verify()?.chunk_samples + stats.head_samples
    } else {
        stats.samples_stored
    };
    println!("samples_held={held}");
    println!(
        "bytes_per_sample_before_sealing={:.3}",
        unsealed as f64 / held as f64
    );
    drop(store);

    // Restart with the open hour in the WAL; queries on the last instance,
    // over the retained span.
    let (restart_ms, store) = restart(&dir, config)?;
    println!("restart_ms={restart_ms:.0} target<={TARGET_RESTART_MS:.0}");
    print_replayed(&store)?;
    let retained_ticks = ticks.min(config.retention_ms / INTERVAL_MS);
    let queried_from = start + (ticks - retained_ticks) * INTERVAL_MS;
    // First right after the restart (caches cold), then again (warm).
    queries(&store, &args, queried_from, retained_ticks, "cold_")?;
    queries(&store, &args, queried_from, retained_ticks, "")?;
    store.seal_all()?;
    drop(store);

    // Disk after sealing, then restart of the sealed store.
    let (apparent, allocated) = dir_size(&dir)?;
    let (restart_sealed, store) = restart(&dir, config)?;
    println!("restart_sealed_ms={restart_sealed:.0}");
    let started = Instant::now();
    let verify = store.verify()?;
    println!("verify_seconds={:.1}", started.elapsed().as_secs_f64());
    println!("verify_damaged={}", verify.damaged_total);
    // Every sample is in a raw chunk now: what the disk holds.
    let stored = verify.chunk_samples;
    if !config.deletes() && stored != stats.samples_stored {
        bail!(
            "sealed chunks hold {stored} samples, {} were acknowledged",
            stats.samples_stored
        );
    }
    println!("samples_held_sealed={stored}");
    println!("disk_bytes={apparent}");
    println!("disk_allocated_bytes={allocated}");
    println!(
        "bytes_per_sample={:.3} target<={TARGET_BYTES_PER_SAMPLE}",
        apparent as f64 / stored as f64
    );
    let per = |b: u64| b as f64 / stored as f64;
    println!("raw_chunk_bytes_per_sample={:.3}", per(verify.raw_bytes));
    println!("tier_chunk_bytes_per_sample={:.3}", per(verify.row_bytes));
    println!(
        "wal_and_other_bytes_per_sample={:.3}",
        per(verify.wal_bytes + verify.other_bytes)
    );
    println!(
        "snapshot_bytes_per_sample={:.3}",
        per(verify.snapshot_bytes)
    );
    println!(
        "sled_overhead_bytes_per_sample={:.3}",
        per(apparent.saturating_sub(
            verify.raw_bytes
                + verify.row_bytes
                + verify.snapshot_bytes
                + verify.wal_bytes
                + verify.other_bytes
        ))
    );
    drop(store);

    if args.promtool.exists() {
        promtool(&args, start, ticks, temp.path())?;
    } else {
        println!(
            "# {} not found: no Prometheus comparison (crates/bench/install-deps.sh installs it)",
            args.promtool.display()
        );
    }
    if args.crash_rounds > 0 {
        crash_rounds(&args, temp.path())?;
    }
    Ok(())
}

/// The settings the bench opens its store with; the rest are the store's defaults.
#[derive(Clone, Copy)]
struct StoreConfig {
    cache_bytes: u64,
    wal_generation_bytes: u64,
    retention_ms: i64,
    retention_bytes: Option<u64>,
    /// The store's clock when the bench reopens it: with a retention by
    /// age, the end of the generated data, where the writers' clock left
    /// the running store (the system clock is the run's length past it,
    /// and would expire windows the running store held); otherwise the
    /// system clock.
    reopen_at_ms: Option<i64>,
}

impl StoreConfig {
    fn of(args: &Args) -> Self {
        StoreConfig {
            cache_bytes: args.cache_bytes,
            wal_generation_bytes: args.wal_generation_bytes,
            retention_ms: args
                .retention_hours
                .map_or(Options::default().retention_ms, |h| i64::from(h) * HOUR_MS),
            retention_bytes: args.retention_bytes,
            reopen_at_ms: None,
        }
    }

    /// Whether the store may delete some of the generated data.
    fn deletes(&self) -> bool {
        self.retention_ms < Options::default().retention_ms || self.retention_bytes.is_some()
    }
}

fn open(dir: &Path, config: StoreConfig) -> anyhow::Result<Store> {
    let clock: Clock = match config.reopen_at_ms {
        Some(t) => Arc::new(move || t),
        None => Options::default().clock,
    };
    open_with_clock(dir, config, clock)
}

fn open_with_clock(dir: &Path, config: StoreConfig, clock: Clock) -> anyhow::Result<Store> {
    // As the collector opens it.
    let options = Options {
        wal_generation_bytes: config.wal_generation_bytes,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        cache_bytes: config.cache_bytes,
        clock,
        ..Options::default()
    };
    Store::open(dir, options).with_context(|| format!("open {}", dir.display()))
}

/// Restart figures of an existing store.
fn reopen(dir: &Path, config: StoreConfig) -> anyhow::Result<()> {
    if !dir.join("db").is_file() {
        bail!("{} holds no store", dir.display());
    }
    let me = Probe::new(std::process::id());
    let rss_before = me.rss_bytes()?.0;
    let (restart_ms, store) = restart(dir, config)?;
    println!("restart_ms={restart_ms:.0} target<={TARGET_RESTART_MS:.0}");
    print_replayed(&store)?;
    let (rss, _) = settled_rss(&me)?;
    let stats = store.stats()?;
    println!("series={}", stats.series);
    println!(
        "rss_bytes_per_series_after_restart={:.0}",
        rss.saturating_sub(rss_before) as f64 / stats.series.max(1) as f64
    );
    Ok(())
}

/// What the last restart read back from the WAL.
fn print_replayed(store: &Store) -> anyhow::Result<()> {
    let stats = store.stats()?;
    println!("restart_replayed_frames={}", stats.replayed_frames);
    println!("restart_replayed_samples={}", stats.replayed_samples);
    Ok(())
}

/// Median time of three reopenings, and the last store.
fn restart(dir: &Path, config: StoreConfig) -> anyhow::Result<(f64, Store)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        drop(last.take());
        let started = Instant::now();
        let store = open_retrying(dir, config)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        last = Some(store);
    }
    let store = last.context("no store")?;
    Ok((median(&times).unwrap_or(f64::NAN), store))
}

/// sled's background threads may hold the lock of a store just dropped
/// for a moment; polls until it opens or 30 s pass.
fn open_retrying(dir: &Path, config: StoreConfig) -> anyhow::Result<Store> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match open(dir, config) {
            Ok(store) => return Ok(store),
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("lock") => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

struct Ingest {
    samples: u64,
    seconds: f64,
    cpu_seconds: f64,
    median_rate: f64,
    /// Maintenance passes the bench ran, and their wall time.
    maintenance_passes: u32,
    maintenance_seconds: f64,
}

/// How ingest writes: batches in flight per writer, ticks per batch.
#[derive(Clone, Copy)]
struct Writers {
    in_flight: u32,
    ticks_per_batch: u32,
    maintain_every: u32,
}

/// Runs a writer for each of `progress`' entries and, every
/// `maintain_every` ticks of the slowest, maintenance.
fn ingest(
    store: &Arc<Store>,
    progress: &Progress,
    hosts: Vec<HostGen>,
    writers: Writers,
    start: i64,
    ticks: i64,
) -> anyhow::Result<Ingest> {
    let Writers {
        in_flight,
        ticks_per_batch,
        maintain_every,
    } = writers;
    let writers = progress.len();
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let mut per_writer: Vec<Vec<HostGen>> = (0..writers).map(|_| Vec::new()).collect();
    for (i, host) in hosts.into_iter().enumerate() {
        per_writer[i % writers].push(host);
    }
    let per_batch = i64::from(ticks_per_batch);
    let maintain_every = i64::from(maintain_every);
    // getrusage: the writers' CPU counts after they exit too.
    let cpu_before = process_cpu_ns()?;
    let started = Instant::now();
    let writers: Vec<_> = per_writer
        .into_iter()
        .enumerate()
        .map(|(me, mut hosts)| {
            let (store, done, progress) = (store.clone(), done.clone(), progress.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                // However it ends, this writer no longer holds the others back.
                let _done = WriterDone(&progress[me]);
                let mut batches: Vec<Batch> = hosts.iter().map(HostGen::batch).collect();
                let mut pending = VecDeque::with_capacity(in_flight as usize);
                let mut tick = 0;
                let mut seq = 0;
                while tick < ticks {
                    progress[me].store(tick, Ordering::Release);
                    while tick > slowest(&progress) + MAX_TICK_SKEW {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let n = per_batch.min(ticks - tick);
                    seq += 1;
                    for (host, batch) in hosts.iter_mut().zip(&mut batches) {
                        host.fill(batch, seq, start + tick * INTERVAL_MS, n);
                        if pending.len() == in_flight as usize
                            && let Some(oldest) = pending.pop_front()
                        {
                            // Counted once durable, as an acknowledgement would be.
                            let outcome = store.wait(oldest)?;
                            done.fetch_add(outcome.stored, Ordering::Relaxed);
                        }
                        pending.push_back(store.submit(batch)?);
                    }
                    tick += n;
                }
                for p in pending {
                    let outcome = store.wait(p)?;
                    done.fetch_add(outcome.stored, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    // Maintenance (sealing, WAL truncation) every few minutes of agent
    // time, as the collector's runs every 5 s of wall time: driven by the
    // wall clock alone, the bench's day of data, written in far less wall
    // time, was sealed in steps of over an hour of data, and the WAL and
    // its memory held that much more than a collector's do.
    let maintainer = {
        let (store, progress, finished) = (store.clone(), progress.clone(), finished.clone());
        std::thread::spawn(move || -> anyhow::Result<(u32, Duration)> {
            let (mut last, mut passes, mut took) = (0, 0, Duration::ZERO);
            while !finished.load(Ordering::Relaxed) {
                let now = slowest(&progress);
                if maintain_every > 0 && now != i64::MAX && now >= last + maintain_every {
                    let started = Instant::now();
                    store.maintain()?;
                    took += started.elapsed();
                    passes += 1;
                    last = now;
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok((passes, took))
        })
    };
    // Per-second rates while the writers run.
    let monitor = {
        let (done, finished) = (done.clone(), finished.clone());
        std::thread::spawn(move || {
            let mut rates = Vec::new();
            let mut last = 0;
            let mut at = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = done.load(Ordering::Relaxed);
                let elapsed = at.elapsed().as_secs_f64();
                at = Instant::now();
                if !finished.load(Ordering::Relaxed) {
                    rates.push((now - last) as f64 / elapsed);
                }
                last = now;
            }
            rates
        })
    };
    let mut failure = None;
    for w in writers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a writer panicked")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (process_cpu_ns()? - cpu_before) as f64 / 1e9;
    finished.store(true, Ordering::Relaxed);
    let rates = monitor
        .join()
        .map_err(|_| anyhow::anyhow!("monitor panicked"))?;
    let (maintenance_passes, maintenance_time) = maintainer
        .join()
        .map_err(|_| anyhow::anyhow!("maintenance thread panicked"))??;
    if let Some(e) = failure {
        return Err(e);
    }
    let samples = done.load(Ordering::Relaxed);
    Ok(Ingest {
        samples,
        seconds,
        cpu_seconds,
        median_rate: median(&rates).unwrap_or(samples as f64 / seconds),
        maintenance_passes,
        maintenance_seconds: maintenance_time.as_secs_f64(),
    })
}

/// Each writer's next tick: a writer waits while it is more than
/// MAX_TICK_SKEW ahead of the slowest, as agents sending in real time are
/// (unbounded, fast writers ran up to 40 minutes ahead and the WAL after
/// ingest held that much more than the open hour).
type Progress = Arc<Vec<AtomicI64>>;

fn writer_progress(writers: u32) -> Progress {
    Arc::new((0..writers).map(|_| AtomicI64::new(0)).collect())
}

/// Ticks (10 s each) a writer may run ahead of the slowest one.
const MAX_TICK_SKEW: i64 = 30;

/// Marks a writer's progress as past the end when it drops.
struct WriterDone<'a>(&'a AtomicI64);

impl Drop for WriterDone<'_> {
    fn drop(&mut self) {
        self.0.store(i64::MAX, Ordering::Release);
    }
}

fn slowest(progress: &[AtomicI64]) -> i64 {
    progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .min()
        .unwrap_or(0)
}

/// Resident bytes once they stop falling: the allocator hands pages that
/// ingest freed back to the system over seconds (jemalloc's decay), and a
/// running collector is measured in that state, not right after a burst.
/// Polls each second until three polls in a row fall by less than 1 %, at
/// most 30 s; returns the last reading and how long it took.
fn settled_rss(me: &Probe) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut last = me.rss_bytes()?.0;
    let mut steady = 0;
    while steady < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        let now = me.rss_bytes()?.0;
        steady = if now as f64 >= last as f64 * 0.99 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    Ok((last, started.elapsed()))
}

/// Latest and range latencies over random hosts and series.
fn queries(store: &Store, args: &Args, start: i64, ticks: i64, prefix: &str) -> anyhow::Result<()> {
    let end = start + ticks * INTERVAL_MS;
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let series = HostGen::new(0, false).series;
    let mut time = |label: &str, f: &mut dyn FnMut(&mut SmallRng) -> anyhow::Result<usize>| {
        let mut ms = Vec::with_capacity(args.queries as usize);
        let mut points = 0;
        for _ in 0..args.queries {
            let started = Instant::now();
            points += f(&mut rng)?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "{label}_p50_ms={:.3}",
            percentile(&ms, 50.0).unwrap_or(f64::NAN)
        );
        let p99 = percentile(&ms, 99.0).unwrap_or(f64::NAN);
        Ok::<_, anyhow::Error>((p99, points / args.queries.max(1) as usize))
    };
    let hosts = args.hosts;
    let (p99, n) = time("latest", &mut |rng| {
        let host = format!("host-{}", rng.random_range(0..hosts.max(1)));
        Ok(store.latest(&host)?.len())
    })?;
    println!(
        "{prefix}latest_p99_ms={p99:.3} target<={TARGET_LATEST_P99_MS} (values per query: {n})"
    );
    let pick = |rng: &mut SmallRng| {
        let host = format!("host-{}", rng.random_range(0..hosts.max(1)));
        let s = &series[rng.random_range(0..series.len())];
        let mut matchers = vec![Matcher::Equal("host".into(), host)];
        matchers.extend(
            s.labels
                .iter()
                .map(|l| Matcher::Equal(l.name.clone(), l.value.clone())),
        );
        (s.metric.clone(), matchers)
    };
    let (p99, n) = time("range", &mut |rng| {
        let (metric, matchers) = pick(rng);
        let data = store.range(&metric, &matchers, start, end)?;
        Ok(data.iter().map(|d| d.points.len()).sum())
    })?;
    println!("{prefix}range_p99_ms={p99:.3} target<={TARGET_RANGE_P99_MS} (points per query: {n})");
    for (name, step) in [("range_step_1m", 60_000), ("range_step_1h", 3_600_000)] {
        let (p99, n) = time(name, &mut |rng| {
            let (metric, matchers) = pick(rng);
            let data = store.range_step(&metric, &matchers, start, end, step, Aggregation::Avg)?;
            Ok(data.iter().map(|d| d.points.len()).sum())
        })?;
        println!("{prefix}{name}_p99_ms={p99:.3} (points per query: {n})");
    }
    Ok(())
}

/// Apparent and allocated bytes of every file under `dir`.
pub(crate) fn dir_size(dir: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, b) = dir_size(&entry.path())?;
            apparent += a;
            allocated += b;
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((apparent, allocated))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first hosts as OpenMetrics, through `promtool tsdb
/// create-blocks-from openmetrics`, against the same hosts in a new store.
fn promtool(args: &Args, start: i64, ticks: i64, temp: &Path) -> anyhow::Result<()> {
    let hosts = args.promtool_hosts.min(args.hosts);
    let text = temp.join("samples.om");
    let mut out = BufWriter::new(std::fs::File::create(&text)?);
    let mut gens: Vec<HostGen> = (0..hosts).map(|i| HostGen::new(i, false)).collect();
    // Families must be contiguous: generate every host's values first.
    let mut values: Vec<Vec<Vec<f64>>> = Vec::new();
    for host in &mut gens {
        let mut per_series = vec![Vec::with_capacity(ticks as usize); host.series.len()];
        for _ in 0..ticks {
            for (i, v) in host.next_values().into_iter().enumerate() {
                per_series[i].push(v);
            }
        }
        values.push(per_series);
    }
    let template = HostGen::new(0, false);
    let mut families: Vec<&str> = Vec::new();
    for s in &template.series {
        if !families.contains(&s.metric.as_str()) {
            families.push(&s.metric);
        }
    }
    let mut samples = 0u64;
    for family in families {
        writeln!(out, "# TYPE {family} gauge")?;
        for (h, host) in gens.iter().enumerate() {
            for (i, s) in host.series.iter().enumerate() {
                if s.metric != family {
                    continue;
                }
                let mut labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|l| format!("{}=\"{}\"", l.name, l.value))
                    .collect();
                labels.push(format!("host=\"{}\"", host.name));
                labels.sort();
                let labels = labels.join(",");
                for (k, v) in values[h][i].iter().enumerate() {
                    let t = start + k as i64 * INTERVAL_MS;
                    writeln!(out, "{family}{{{labels}}} {v} {}", t / 1000)?;
                    samples += 1;
                }
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    drop(out);
    let blocks = temp.join("prometheus-blocks");
    let started = Instant::now();
    let status = Command::new(&args.promtool)
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=24h",
        ])
        .arg(&text)
        .arg(&blocks)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", args.promtool.display()))?;
    if !status.success() {
        bail!("promtool failed: {status}");
    }
    let promtool_seconds = started.elapsed().as_secs_f64();
    let (prom_bytes, _) = dir_size(&blocks)?;
    // The same hosts in a new store.
    let dir = temp.join("subset");
    // All of the data, as in Prometheus' blocks, whatever the retention.
    let config = StoreConfig {
        retention_ms: Options::default().retention_ms,
        retention_bytes: None,
        ..StoreConfig::of(args)
    };
    let store = Arc::new(open(&dir, config)?);
    // Without snapshots: Prometheus' blocks hold only the series.
    let gens = (0..hosts).map(|i| HostGen::new(i, false)).collect();
    let writers = Writers {
        in_flight: args.in_flight,
        ticks_per_batch: args.ticks_per_batch,
        maintain_every: args.maintain_every_ticks,
    };
    let progress = writer_progress(args.writers.min(hosts));
    let ingested = ingest(&store, &progress, gens, writers, start, ticks)?;
    store.seal_all()?;
    drop(store);
    let (ours, _) = dir_size(&dir)?;
    println!("promtool_hosts={hosts}");
    println!("promtool_samples={samples}");
    println!("promtool_seconds={promtool_seconds:.1}");
    println!(
        "prometheus_bytes_per_sample={:.3}",
        prom_bytes as f64 / samples as f64
    );
    println!(
        "hostwatch_same_hosts_bytes_per_sample={:.3}",
        ours as f64 / ingested.samples as f64
    );
    Ok(())
}

fn crash_rounds(args: &Args, temp: &Path) -> anyhow::Result<()> {
    let seed = args.crash_seed.unwrap_or_else(|| now_ms() as u64);
    let exe = std::env::current_exe()?;
    let mut jitter = StdRng::seed_from_u64(seed);
    let mut current = None;
    let mut acked = 0;
    for round in 0..args.crash_rounds {
        // A fresh store every 50 rounds keeps each round's check short;
        // the workload's times are fixed per store.
        if round % 50 == 0 {
            current = Some((
                temp.join(format!("crash-{round}")),
                Workload::new(CRASH_WRITERS, CRASH_SERIES, now_ms()),
            ));
        }
        let (dir, workload) = current.as_ref().context("no directory")?;
        let (dir, workload) = (dir.as_path(), *workload);
        let kill_after = Duration::from_millis(jitter.random_range(0..300));
        let mut command = Command::new(&exe);
        command
            .arg("storage-crash-child")
            .arg("--dir")
            .arg(dir)
            .arg("--base-ms")
            .arg(workload.base_ms.to_string());
        let report = crash_round(command, dir, workload, kill_after)
            .map_err(|e| anyhow::anyhow!("crash round {round} (seed {seed}): {e}"))?;
        acked += report.acked;
    }
    println!("crash_rounds_passed={}", args.crash_rounds);
    println!("crash_acks_checked={acked}");
    println!("crash_seed={seed}");
    Ok(())
}

// ------------------------------------------------------------ the data

/// Uniform in [-1, 1): the generated data's noise.
fn noise(rng: &mut SmallRng) -> f64 {
    rng.random_range(-1.0..1.0)
}

/// How one series' values evolve, tick by tick.
enum Shape {
    Constant(f64),
    /// Busy ticks over total ticks of an interval (the agent's ratios):
    /// a noisy fraction around a slowly moving level.
    Ticks {
        level: f64,
        total: u64,
    },
    /// A counter growing by about `rate` per interval, in multiples of `unit`.
    Counter {
        value: u64,
        rate: f64,
        unit: u64,
    },
    /// A counter in seconds counted in `per_second` units (pressure stalls
    /// in microseconds, disk busy time in milliseconds).
    Seconds {
        value: u64,
        rate: f64,
        per_second: f64,
    },
    /// A gauge in whole pages (memory, filesystems), drifting.
    Pages {
        pages: i64,
        step: i64,
        min: i64,
    },
    /// A non-negative integer gauge taking small steps.
    Walk {
        value: i64,
        step: i64,
        max: i64,
    },
    /// A gauge of `value / scale` (load averages in hundredths, pressure
    /// in hundredths of a percent), mean-reverting towards `center`.
    Decimal {
        value: i64,
        step: i64,
        center: i64,
        scale: f64,
    },
    /// Seconds since boot with two decimals, 10 s more each tick.
    Uptime {
        centis: i64,
    },
}

impl Shape {
    fn next(&mut self, rng: &mut SmallRng) -> f64 {
        match self {
            Shape::Constant(v) => *v,
            Shape::Ticks { level, total } => {
                *level = (*level + noise(rng) * 0.01).clamp(0.0, 0.95);
                let total_now = *total + rng.random_range(0..5);
                let busy = ((*level + noise(rng) * 0.02).max(0.0) * total_now as f64) as u64;
                busy.min(total_now) as f64 / total_now as f64
            }
            Shape::Counter { value, rate, unit } => {
                let step = (*rate * (1.0 + noise(rng) * 0.5)).max(0.0) as u64;
                *value += step / *unit * *unit;
                *value as f64
            }
            Shape::Seconds {
                value,
                rate,
                per_second,
            } => {
                *value += (*rate * (1.0 + noise(rng))).max(0.0) as u64;
                *value as f64 / *per_second
            }
            Shape::Pages { pages, step, min } => {
                if rng.random_range(0..3) > 0 {
                    *pages = (*pages + (noise(rng) * *step as f64) as i64).max(*min);
                }
                (*pages * 4096) as f64
            }
            Shape::Walk { value, step, max } => {
                *value = (*value + (noise(rng) * *step as f64).round() as i64).clamp(0, *max);
                *value as f64
            }
            Shape::Decimal {
                value,
                step,
                center,
                scale,
            } => {
                let pull = if *value > *center { -1 } else { 1 };
                *value = (*value + (noise(rng) * *step as f64) as i64 + pull).max(0);
                *value as f64 / *scale
            }
            Shape::Uptime { centis } => {
                *centis += 1000 + rng.random_range(0..3) as i64 - 1;
                *centis as f64 / 100.0
            }
        }
    }
}

struct SeriesGen {
    metric: String,
    labels: Vec<Label>,
    shape: Shape,
}

/// One simulated host: the agent's series with a typical machine's shape
/// (4 cores, 2 mounts, 2 disks, 2 network devices, 2 watched processes).
struct HostGen {
    name: String,
    series: Vec<SeriesGen>,
    rng: SmallRng,
    /// The host's processes, when batches carry snapshots.
    processes: Option<ProcessGen>,
}

impl HostGen {
    fn new(index: u32, snapshots: bool) -> Self {
        let mut rng = SmallRng::seed_from_u64(u64::from(index));
        let mut series = Vec::new();
        let mut add = |metric: &str, labels: &[(&str, &str)], shape: Shape| {
            series.push(SeriesGen {
                metric: metric.to_owned(),
                labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
                shape,
            });
        };
        let level = 0.05 + (rng.random_range(0..30) as f64) / 100.0;
        let cores = 4u64;
        add(
            "host_cpu_utilization_ratio",
            &[("cpu", "total")],
            Shape::Ticks {
                level,
                total: 1000 * cores,
            },
        );
        for cpu in ["0", "1", "2", "3"] {
            add(
                "host_cpu_utilization_ratio",
                &[("cpu", cpu)],
                Shape::Ticks { level, total: 1000 },
            );
        }
        for (mode, share) in [
            ("user", 0.6),
            ("system", 0.3),
            ("iowait", 0.05),
            ("softirq", 0.02),
        ] {
            add(
                "host_cpu_time_ratio",
                &[("mode", mode)],
                Shape::Ticks {
                    level: level * share,
                    total: 1000 * cores,
                },
            );
        }
        add(
            "host_cpu_time_ratio",
            &[("mode", "idle")],
            Shape::Ticks {
                level: 1.0 - level,
                total: 1000 * cores,
            },
        );
        for mode in ["nice", "irq", "steal"] {
            add(
                "host_cpu_time_ratio",
                &[("mode", mode)],
                Shape::Constant(0.0),
            );
        }
        add("host_cpu_count", &[], Shape::Constant(cores as f64));
        add(
            "host_context_switches_total",
            &[],
            Shape::Counter {
                value: 1 << 30,
                rate: 30_000.0,
                unit: 1,
            },
        );
        add(
            "host_forks_total",
            &[],
            Shape::Counter {
                value: 1 << 20,
                rate: 20.0,
                unit: 1,
            },
        );
        add(
            "host_procs_running",
            &[],
            Shape::Walk {
                value: 2,
                step: 2,
                max: 8,
            },
        );
        add(
            "host_procs_blocked",
            &[],
            Shape::Walk {
                value: 0,
                step: 1,
                max: 2,
            },
        );
        let mem_pages = 4 << 20; // 16 GiB
        add(
            "host_memory_total_bytes",
            &[],
            Shape::Constant((mem_pages * 4096) as f64),
        );
        for (metric, pages) in [
            ("host_memory_available_bytes", mem_pages / 2),
            ("host_memory_used_bytes", mem_pages / 3),
            ("host_memory_free_bytes", mem_pages / 8),
            ("host_memory_buffers_bytes", mem_pages / 64),
            ("host_memory_cached_bytes", mem_pages / 4),
        ] {
            add(
                metric,
                &[],
                Shape::Pages {
                    pages,
                    step: 64,
                    min: 0,
                },
            );
        }
        add(
            "host_swap_total_bytes",
            &[],
            Shape::Constant((2u64 << 30) as f64),
        );
        add(
            "host_swap_used_bytes",
            &[],
            Shape::Constant((12u64 << 20) as f64),
        );
        add(
            "host_swap_in_bytes_total",
            &[],
            Shape::Constant((40u64 << 20) as f64),
        );
        add(
            "host_swap_out_bytes_total",
            &[],
            Shape::Constant((52u64 << 20) as f64),
        );
        let load = |step| Shape::Decimal {
            value: 80,
            step,
            center: 80,
            scale: 100.0,
        };
        add("host_load1", &[], load(20));
        add("host_load5", &[], load(5));
        add("host_load15", &[], load(2));
        add(
            "host_threads",
            &[],
            Shape::Walk {
                value: 600,
                step: 4,
                max: 5000,
            },
        );
        add(
            "host_processes",
            &[],
            Shape::Walk {
                value: 250,
                step: 2,
                max: 5000,
            },
        );
        add(
            "host_uptime_seconds",
            &[],
            Shape::Uptime {
                centis: 12 * 86_400 * 100,
            },
        );
        add(
            "host_boot_time_seconds",
            &[],
            Shape::Constant(1_790_000_000.0 + f64::from(index)),
        );
        for (mount, device) in [("/", "/dev/sda1"), ("/var", "/dev/sdb1")] {
            let labels = [
                ("mountpoint", mount),
                ("device", device),
                ("fstype", "ext4"),
            ];
            let size_pages: i64 = 50 << 20;
            add(
                "host_filesystem_size_bytes",
                &labels,
                Shape::Constant((size_pages * 4096) as f64),
            );
            add(
                "host_filesystem_available_bytes",
                &labels,
                Shape::Pages {
                    pages: size_pages / 3,
                    step: 8,
                    min: 0,
                },
            );
            add(
                "host_filesystem_free_bytes",
                &labels,
                Shape::Pages {
                    pages: size_pages / 3 + 100_000,
                    step: 8,
                    min: 0,
                },
            );
            add(
                "host_filesystem_inodes",
                &labels,
                Shape::Constant(6_553_600.0),
            );
            add(
                "host_filesystem_inodes_free",
                &labels,
                Shape::Walk {
                    value: 6_000_000,
                    step: 3,
                    max: 6_553_600,
                },
            );
        }
        for (device, scale) in [("sda", 1.0), ("sdb", 0.2)] {
            let l = [("device", device)];
            add(
                "host_disk_read_bytes_total",
                &l,
                Shape::Counter {
                    value: 1 << 34,
                    rate: 200_000.0 * scale,
                    unit: 512,
                },
            );
            add(
                "host_disk_written_bytes_total",
                &l,
                Shape::Counter {
                    value: 1 << 35,
                    rate: 1_000_000.0 * scale,
                    unit: 512,
                },
            );
            add(
                "host_disk_reads_completed_total",
                &l,
                Shape::Counter {
                    value: 1 << 22,
                    rate: 50.0 * scale,
                    unit: 1,
                },
            );
            add(
                "host_disk_writes_completed_total",
                &l,
                Shape::Counter {
                    value: 1 << 24,
                    rate: 200.0 * scale,
                    unit: 1,
                },
            );
            add(
                "host_disk_io_time_seconds_total",
                &l,
                Shape::Seconds {
                    value: 1 << 32,
                    rate: 800.0 * scale,
                    per_second: 1e3,
                },
            );
            add(
                "host_disk_utilization_ratio",
                &l,
                Shape::Ticks {
                    level: 0.08 * scale,
                    total: 10_000,
                },
            );
        }
        for (device, scale) in [("lo", 0.05), ("eth0", 1.0)] {
            let l = [("device", device)];
            add(
                "host_network_receive_bytes_total",
                &l,
                Shape::Counter {
                    value: 1 << 36,
                    rate: 500_000.0 * scale,
                    unit: 1,
                },
            );
            add(
                "host_network_transmit_bytes_total",
                &l,
                Shape::Counter {
                    value: 1 << 35,
                    rate: 300_000.0 * scale,
                    unit: 1,
                },
            );
            add(
                "host_network_receive_packets_total",
                &l,
                Shape::Counter {
                    value: 1 << 28,
                    rate: 800.0 * scale,
                    unit: 1,
                },
            );
            add(
                "host_network_transmit_packets_total",
                &l,
                Shape::Counter {
                    value: 1 << 28,
                    rate: 600.0 * scale,
                    unit: 1,
                },
            );
            for metric in [
                "host_network_receive_errors_total",
                "host_network_transmit_errors_total",
                "host_network_receive_drops_total",
                "host_network_transmit_drops_total",
            ] {
                add(metric, &l, Shape::Constant(0.0));
            }
        }
        for (resource, kind) in [
            ("cpu", "some"),
            ("memory", "some"),
            ("memory", "full"),
            ("io", "some"),
            ("io", "full"),
        ] {
            let l = [("resource", resource), ("kind", kind)];
            let avg10 = Shape::Decimal {
                value: 10,
                step: 3,
                center: 10,
                scale: 10_000.0,
            };
            add("host_pressure_avg10_ratio", &l, avg10);
            add(
                "host_pressure_stalled_seconds_total",
                &l,
                Shape::Seconds {
                    value: 1 << 30,
                    rate: 20_000.0,
                    per_second: 1e6,
                },
            );
        }
        for name in ["nginx", "postgres"] {
            let l = [("name", name)];
            add("host_process_running", &l, Shape::Constant(1.0));
            add(
                "host_process_cpu_cores",
                &l,
                Shape::Ticks {
                    level: 0.1,
                    total: 1000,
                },
            );
            add(
                "host_process_resident_bytes",
                &l,
                Shape::Pages {
                    pages: 50_000,
                    step: 16,
                    min: 1000,
                },
            );
        }
        HostGen {
            name: format!("host-{index}"),
            series,
            rng,
            processes: snapshots.then(|| ProcessGen::new(index)),
        }
    }

    fn next_values(&mut self) -> Vec<f64> {
        let rng = &mut self.rng;
        self.series.iter_mut().map(|s| s.shape.next(rng)).collect()
    }

    /// An empty batch with this host's series.
    fn batch(&self) -> Batch {
        Batch {
            host: self.name.clone(),
            source: 1,
            seq: 0,
            series: self
                .series
                .iter()
                .map(|s| SeriesInput {
                    metric: s.metric.clone(),
                    labels: s.labels.clone(),
                    points: Vec::new(),
                })
                .collect(),
            processes: Vec::new(),
            malformed: 0,
        }
    }

    /// Refills `batch` with `n` ticks from `t_ms`, as batch `seq`.
    fn fill(&mut self, batch: &mut Batch, seq: u64, t_ms: i64, n: i64) {
        batch.seq = seq;
        for input in &mut batch.series {
            input.points.clear();
        }
        // Snapshots are refilled in place: the generator's allocations
        // would otherwise count as the store's CPU.
        let snapshots = if self.processes.is_some() {
            n as usize
        } else {
            0
        };
        batch.processes.resize_with(snapshots, || ProcessSnapshot {
            t_ms: 0,
            processes: Vec::new(),
        });
        for k in 0..n {
            let t_ms = t_ms + k * INTERVAL_MS;
            for (s, input) in self.series.iter_mut().zip(&mut batch.series) {
                let value = s.shape.next(&mut self.rng);
                input.points.push(Point { t_ms, value });
            }
            if let Some(processes) = &mut self.processes {
                processes.snapshot(t_ms, &mut batch.processes[k as usize]);
            }
        }
    }
}

/// Processes in an agent's snapshot: the top N by CPU and the top N by
/// resident memory (`processes.top`, default 10), as the agent's sampler
/// picks them.
const TOP_PROCESSES: usize = 10;

/// A process of a simulated host.
struct SimProcess {
    pid: u32,
    name: String,
    command: String,
    user: &'static str,
    start_time_ms: i64,
    /// Typical CPU, in cores.
    cpu_level: f64,
    rss_pages: i64,
    /// Largest change of `rss_pages` in one tick.
    rss_step: i64,
    /// Ticks left for a short-lived job; `None` for a service.
    ticks_left: Option<u32>,
}

/// The processes of a simulated host: about 40 long-running services (a
/// web server, a database, an application server, the system's daemons,
/// kernel threads) and short jobs (cron, backups) coming and going, so an
/// hour of snapshots lists a few dozen distinct processes.
struct ProcessGen {
    processes: Vec<SimProcess>,
    next_pid: u32,
    rng: SmallRng,
}

impl ProcessGen {
    fn new(index: u32) -> Self {
        // Seeds of their own, apart from the hosts' series.
        let mut rng = SmallRng::seed_from_u64(!u64::from(index));
        let boot_ms = 1_790_000_000_000 + i64::from(index) * 1000;
        let mut host = ProcessGen {
            processes: Vec::new(),
            next_pid: 1,
            rng: SmallRng::seed_from_u64(0),
        };
        let mut add = |host: &mut ProcessGen,
                       name: &str,
                       command: String,
                       user: &'static str,
                       cpu_level: f64,
                       rss_mib: i64| {
            let pid = host.next_pid;
            host.next_pid += 1 + rng.random_range(0..40) as u32;
            host.processes.push(SimProcess {
                pid,
                name: name.to_owned(),
                command,
                user,
                start_time_ms: boot_ms + i64::from(pid) * 137,
                cpu_level,
                rss_pages: rss_mib * 256,
                rss_step: (rss_mib * 256 / 500).max(1),
                ticks_left: None,
            });
        };
        add(
            &mut host,
            "systemd",
            "/sbin/init splash".into(),
            "root",
            0.001,
            12,
        );
        for (name, command, mib) in [
            ("systemd-journal", "/lib/systemd/systemd-journald", 48),
            ("systemd-udevd", "/lib/systemd/systemd-udevd", 8),
            ("systemd-logind", "/lib/systemd/systemd-logind", 7),
            (
                "dbus-daemon",
                "/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only",
                5,
            ),
            ("rsyslogd", "/usr/sbin/rsyslogd -n -iNONE", 6),
            ("cron", "/usr/sbin/cron -f -P", 3),
            (
                "sshd",
                "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
                9,
            ),
            ("containerd", "/usr/bin/containerd", 45),
            (
                "dockerd",
                "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock",
                80,
            ),
        ] {
            add(&mut host, name, command.into(), "root", 0.002, mib);
        }
        add(
            &mut host,
            "hostwatch-agent",
            "/usr/bin/hostwatch-agent --config /etc/hostwatch/agent.toml".into(),
            "hostwatch",
            0.003,
            9,
        );
        add(
            &mut host,
            "nginx",
            "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;".into(),
            "root",
            0.0,
            10,
        );
        for _ in 0..4 {
            add(
                &mut host,
                "nginx",
                "nginx: worker process".into(),
                "www-data",
                0.05,
                24,
            );
        }
        add(
            &mut host,
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf".into(),
            "postgres",
            0.002,
            220,
        );
        for role in [
            "checkpointer",
            "background writer",
            "walwriter",
            "autovacuum launcher",
            "logical replication launcher",
        ] {
            add(
                &mut host,
                "postgres",
                format!("postgres: 15/main: {role}"),
                "postgres",
                0.001,
                40,
            );
        }
        for i in 0..8 {
            add(
                &mut host,
                "postgres",
                format!(
                    "postgres: 15/main: app appdb 10.0.3.{}({}) idle",
                    10 + i,
                    40_000 + i * 113
                ),
                "postgres",
                0.04,
                150,
            );
        }
        add(
            &mut host,
            "java",
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java -Xms2g -Xmx2g -XX:+UseG1GC -Dspring.profiles.active=prod -jar /opt/app/app.jar".into(),
            "app",
            0.35,
            2300,
        );
        for _ in 0..4 {
            add(
                &mut host,
                "gunicorn",
                "/opt/web/venv/bin/python3 /opt/web/venv/bin/gunicorn -w 4 -b 127.0.0.1:8000 web.wsgi:application".into(),
                "app",
                0.08,
                180,
            );
        }
        add(
            &mut host,
            "node",
            "node /srv/frontend/server.js --port 3000".into(),
            "app",
            0.06,
            160,
        );
        add(
            &mut host,
            "redis-server",
            "/usr/bin/redis-server 127.0.0.1:6379".into(),
            "redis",
            0.01,
            64,
        );
        for cpu in 0..4 {
            add(
                &mut host,
                &format!("kworker/{cpu}:1-events"),
                format!("[kworker/{cpu}:1-events]"),
                "root",
                0.002,
                0,
            );
            add(
                &mut host,
                &format!("ksoftirqd/{cpu}"),
                format!("[ksoftirqd/{cpu}]"),
                "root",
                0.001,
                0,
            );
        }
        host.rng = rng;
        host
    }

    /// The snapshot of one tick at `t_ms`, into `out`: every process moves
    /// on, short jobs end and start, and the top N by CPU and by memory are
    /// listed.
    fn snapshot(&mut self, t_ms: i64, out: &mut ProcessSnapshot) {
        let rng = &mut self.rng;
        self.processes.retain(|p| p.ticks_left != Some(0));
        let mut cpus = Vec::with_capacity(self.processes.len());
        for p in &mut self.processes {
            if let Some(left) = &mut p.ticks_left {
                *left -= 1;
            }
            if rng.random_range(0..4) == 0 {
                p.rss_pages = (p.rss_pages + (noise(rng) * p.rss_step as f64) as i64).max(0);
            }
            // CPU as the agent computes it: ticks of 1/100 s over 10 s.
            let cpu = (p.cpu_level * (1.0 + 0.8 * noise(rng)) * 1000.0)
                .round()
                .max(0.0);
            cpus.push(cpu / 1000.0);
        }
        // A short job now and then: cron, a backup, log rotation.
        if rng.random_range(0..10) == 0 {
            const JOBS: [(&str, &str, &str); 4] = [
                (
                    "sh",
                    "/bin/sh -c /usr/local/bin/backup.sh --incremental /var/lib/app",
                    "root",
                ),
                (
                    "python3",
                    "python3 /opt/scripts/report.py --daily --output /var/reports",
                    "app",
                ),
                ("gzip", "gzip -9 /var/log/app/app.log.1", "root"),
                ("run-parts", "run-parts --report /etc/cron.hourly", "root"),
            ];
            let (name, command, user) = JOBS[rng.random_range(0..JOBS.len())];
            self.next_pid += 1 + rng.random_range(0..200) as u32;
            self.processes.push(SimProcess {
                pid: self.next_pid,
                name: name.to_owned(),
                command: command.to_owned(),
                user,
                start_time_ms: t_ms - rng.random_range(0..10_000) as i64,
                cpu_level: 0.3 + noise(rng).abs() * 0.7,
                rss_pages: 2000 + rng.random_range(0..20_000) as i64,
                rss_step: 200,
                ticks_left: Some(1 + rng.random_range(0..6) as u32),
            });
            cpus.push(0.5);
        }
        let mut by_cpu: Vec<usize> = (0..cpus.len()).filter(|&i| cpus[i] > 0.0).collect();
        by_cpu.sort_unstable_by(|&a, &b| cpus[b].total_cmp(&cpus[a]));
        by_cpu.truncate(TOP_PROCESSES);
        let mut by_rss: Vec<usize> = (0..self.processes.len())
            .filter(|&i| self.processes[i].rss_pages > 0)
            .collect();
        by_rss.sort_unstable_by_key(|&i| std::cmp::Reverse(self.processes[i].rss_pages));
        by_rss.truncate(TOP_PROCESSES);
        for i in by_rss {
            if !by_cpu.contains(&i) {
                by_cpu.push(i);
            }
        }
        out.t_ms = t_ms;
        out.processes.resize_with(by_cpu.len(), || ProcessInfo {
            pid: 0,
            name: String::new(),
            command: String::new(),
            user: String::new(),
            cpu_cores: 0.0,
            rss_bytes: 0,
            start_time_ms: 0,
        });
        for (info, i) in out.processes.iter_mut().zip(by_cpu) {
            let p = &self.processes[i];
            info.pid = p.pid;
            info.name.clone_from(&p.name);
            info.command.clone_from(&p.command);
            info.user.clear();
            info.user.push_str(p.user);
            info.cpu_cores = cpus[i];
            info.rss_bytes = p.rss_pages as u64 * 4096;
            info.start_time_ms = p.start_time_ms;
        }
    }
}
