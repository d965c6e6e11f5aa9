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
//!   own bytes;
//! - maintenance right after ingest, as a collector's every 5 s: the
//!   median time of a pass's sealing phase (`--ingest-only` stops here);
//! - restart: reopening the store as left by ingest (the open hour in the
//!   WAL), then after sealing everything (median of 3 each);
//! - latest values of one host and the range of one series over the whole
//!   run (24 h by default): p50 and p99 over `--queries` random queries,
//!   also for 1 min and 1 h steps; cold after the restart, warm, and
//!   (`sealed_`) once sealing rewrote the closed partitions into files;
//! - disk: the store's directory (the WAL's databases included) over the
//!   samples stored, after ingest (the open hour in the WAL) and after
//!   sealing;
//! - with `promtool` (Debian's `prometheus`, `crates/bench/install-deps.sh`):
//!   the first `--promtool-hosts` hosts as OpenMetrics, built into
//!   Prometheus blocks, and the same hosts in a fresh store, side by side;
//! - with `--crash-rounds N`: N SIGKILL crash rounds (the crash test's
//!   workload, this binary as the child).
//!
//! Layout: this module runs and reports the phases; `data` generates the
//! hosts' batches.

pub(crate) mod data;

use crate::fixture::retry_while_locked;
use crate::measure::{Probe, median, percentile, process_cpu_ns};
use anyhow::{Context, bail};
use data::HostGen;
use hostwatch_stdx::now_ms;
use hostwatch_tsdb::workload::{KillAt, KilledOn, Workload, child_main, crash_round};
use hostwatch_tsdb::{
    Aggregation, Batch, Clock, MaintenancePhase, Matcher, Options, Store, StoreStats,
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

pub(crate) const INTERVAL_MS: i64 = 10_000;
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
    #[arg(long, default_value = "67108864")]
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
    /// Writers wait for maintenance: none gets more than two
    /// `--maintain-every-ticks` ahead of the last pass, as agents sending
    /// in real time are of a collector's passes every 5 s. Without it,
    /// ingest outruns sealing and the WAL holds hours of data.
    #[arg(long)]
    paced: bool,
    /// The store's retention in hours (default: the store's 30 days). The
    /// store's clock then follows the writers' agent time, so partitions
    /// (a day each) whose windows are all older than this are deleted
    /// during ingest, as in a collector that has run longer than its
    /// retention; with more `--hours` than this, the disk figures are
    /// those of that steady state (over the samples held: up to a
    /// partition more than the retention).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    retention_hours: Option<u32>,
    /// The store's size limit (`retention_bytes`: its whole directory);
    /// with less than the data, the oldest partitions are deleted during
    /// ingest and the disk figures are those of that steady state.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    retention_bytes: Option<u64>,
    /// Hours of one time partition (`storage.partition`; default the
    /// store's day): whole hours dividing a day, or whole days.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    partition_hours: Option<u32>,
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
    Ok(child_main(&args.dir, workload)?)
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
    let span = Span::of(&args, now_ms());
    let (start, ticks) = (span.start, span.ticks);
    let snapshots = !args.no_snapshots;
    let hosts: Vec<HostGen> = (0..args.hosts)
        .map(|i| HostGen::new(i, snapshots))
        .collect();
    print_header(&args, span, hosts[0].series.len(), snapshots);
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
            paced: args.paced,
        },
        start,
        ticks,
        config.retention_bytes.map(|_| dir.clone()),
    )?;
    print_ingest(&ingest, &store)?;
    if let (Some(limit), Some(sizes)) = (config.retention_bytes, &ingest.sizes) {
        print_sizes(limit, sizes);
    }
    let stats = print_memory(&store, &me, rss_before)?;
    print_passes(&store)?;
    if args.ingest_only {
        return Ok(());
    }
    print_held(&dir, &store, config, &stats)?;
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
    // Again once sealing rewrote every closed partition into its file:
    // the same queries, read from there.
    queries(&store, &args, queried_from, retained_ticks, "sealed_")?;
    drop(store);

    print_sealed(&dir, config, &stats)?;
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

/// The generated data's span: `ticks` samples 10 s apart from `start`.
#[derive(Clone, Copy)]
struct Span {
    start: i64,
    ticks: i64,
    minutes: u32,
}

impl Span {
    fn of(args: &Args, now: i64) -> Self {
        let minutes = args.minutes.unwrap_or(args.hours * 60);
        let ticks = i64::from(minutes) * 60_000 / INTERVAL_MS;
        // The last sample at least 10 minutes ago, at the moment of the hour
        // when the store holds most in memory and in its WAL: 10 s before the
        // out-of-order tolerance (10 min) lets the previous hour's windows seal,
        // so a full hour and 10 minutes are open. Figures then do not depend on
        // the minute the bench was started.
        let tolerance = Options::default().out_of_order_tolerance_ms;
        let last =
            (now - 600_000 - tolerance).div_euclid(HOUR_MS) * HOUR_MS + tolerance - INTERVAL_MS;
        Span {
            start: last - (ticks - 1) * INTERVAL_MS,
            ticks,
            minutes,
        }
    }
}

/// The comment line that says what the run generates and how it writes.
fn print_header(args: &Args, span: Span, series_per_host: usize, snapshots: bool) {
    println!(
        "# {} hosts x {} series x {} samples (10 s for {} min) = {} samples, {}; {} writers with {} batches in flight each, {} tick(s) per batch; loadavg {}",
        args.hosts,
        series_per_host,
        span.ticks,
        span.minutes,
        u64::from(args.hosts) * series_per_host as u64 * span.ticks as u64,
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
}

/// The ingest figures; an error if the store rejected a generated sample.
fn print_ingest(ingest: &Ingest, store: &Store) -> anyhow::Result<()> {
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
    Ok(())
}

/// The memory figures, with the background maintenance caught up; the
/// store's statistics then.
fn print_memory(store: &Store, me: &Probe, rss_before: u64) -> anyhow::Result<StoreStats> {
    store.maintain()?;
    let stats = store.stats()?;
    let (rss_after, settle) = settled_rss(me)?;
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
    Ok(stats)
}

/// Maintenance passes timed after ingest.
const PASSES: usize = 9;

/// The median time of the sealing phase of a maintenance pass, over
/// [`PASSES`] passes (with the background thread's passes in between,
/// each is the mean of those it ran meanwhile).
fn print_passes(store: &Store) -> anyhow::Result<()> {
    let mut seal_ms = Vec::new();
    for _ in 0..PASSES {
        let before = seal_phase(store);
        store.maintain()?;
        let (seconds, passes) = seal_phase(store);
        let passes = passes.saturating_sub(before.1).max(1);
        seal_ms.push((seconds - before.0) * 1000.0 / passes as f64);
    }
    println!(
        "maintenance_seal_ms_median={:.2}",
        median(&seal_ms).unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Seconds spent sealing by the maintenance passes so far, and their number.
fn seal_phase(store: &Store) -> (f64, u64) {
    store
        .maintenance_durations()
        .into_iter()
        .find(|(phase, _)| *phase == MaintenancePhase::Seal)
        .map_or((0.0, 0), |(_, h)| (h.sum_seconds, h.count()))
}

/// What the store takes while running, the open hour still in the WAL;
/// with a retention shorter than the data, over the samples it holds.
fn print_held(
    dir: &Path,
    store: &Store,
    config: StoreConfig,
    stats: &StoreStats,
) -> anyhow::Result<()> {
    let (unsealed, _) = dir_size(dir)?;
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
    Ok(())
}

/// Disk after sealing, then restart of the sealed store.
fn print_sealed(dir: &Path, config: StoreConfig, stats: &StoreStats) -> anyhow::Result<()> {
    let (apparent, allocated) = dir_size(dir)?;
    let (restart_sealed, store) = restart(dir, config)?;
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
    let (files, partitions) = rewritten_partitions(dir);
    println!("partitions_rewritten={files} of {partitions}");
    println!("disk_bytes={apparent}");
    println!("disk_allocated_bytes={allocated}");
    println!(
        "bytes_per_sample={:.3} target<={TARGET_BYTES_PER_SAMPLE}",
        apparent as f64 / stored as f64
    );
    let per = |b: u64| b as f64 / stored as f64;
    println!("raw_chunk_bytes_per_sample={:.3}", per(verify.raw_bytes));
    // Where the raw chunks' bytes go, and each metric's values.
    let raw = verify.raw_parts;
    println!("raw_key_bytes_per_sample={:.3}", per(raw.keys));
    println!("raw_header_bytes_per_sample={:.3}", per(raw.headers));
    println!("raw_time_bytes_per_sample={:.3}", per(raw.times));
    println!("raw_value_bytes_per_sample={:.3}", per(raw.values));
    println!(
        "raw_bytes_per_chunk={:.1}",
        verify.raw_bytes as f64 / verify.chunks.max(1) as f64
    );
    for (metric, m) in &verify.raw_by_metric {
        println!(
            "# raw_value_bytes_per_sample{{metric=\"{metric}\"}}={:.3} ({} samples)",
            m.value_bytes as f64 / m.samples.max(1) as f64,
            m.samples
        );
    }
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
    Ok(())
}

/// The settings the bench opens its store with; the rest are the store's defaults.
#[derive(Clone, Copy)]
struct StoreConfig {
    cache_bytes: u64,
    wal_generation_bytes: u64,
    retention_ms: i64,
    retention_bytes: Option<u64>,
    partition_ms: i64,
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
            partition_ms: args
                .partition_hours
                .map_or(Options::default().partition_ms, |h| i64::from(h) * HOUR_MS),
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
        partition_ms: config.partition_ms,
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
        let store = retry_while_locked(|| open(dir, config))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        last = Some(store);
    }
    let store = last.context("no store")?;
    Ok((median(&times).unwrap_or(f64::NAN), store))
}

struct Ingest {
    samples: u64,
    seconds: f64,
    cpu_seconds: f64,
    median_rate: f64,
    /// Maintenance passes the bench ran, and their wall time.
    maintenance_passes: u32,
    maintenance_seconds: f64,
    /// With a size limit: the directory's size while ingest ran, once
    /// retention had deleted a partition.
    sizes: Option<DirSizes>,
}

/// How ingest writes: batches in flight per writer, ticks per batch.
#[derive(Clone, Copy)]
struct Writers {
    in_flight: u32,
    ticks_per_batch: u32,
    maintain_every: u32,
    /// Whether writers wait for maintenance.
    paced: bool,
}

/// Runs a writer for each of `progress`' entries and, every
/// `maintain_every` ticks of the slowest, maintenance; with `watch`, the
/// store's directory, samples its size meanwhile.
fn ingest(
    store: &Arc<Store>,
    progress: &Progress,
    hosts: Vec<HostGen>,
    writers: Writers,
    start: i64,
    ticks: i64,
    watch: Option<PathBuf>,
) -> anyhow::Result<Ingest> {
    let Writers {
        in_flight,
        ticks_per_batch,
        maintain_every,
        paced,
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
    // The tick the last maintenance pass started at; unpaced writers
    // never wait for it.
    let maintained = Arc::new(AtomicI64::new(if paced && maintain_every > 0 {
        0
    } else {
        i64::MAX / 4
    }));
    // getrusage: the writers' CPU counts after they exit too.
    let cpu_before = process_cpu_ns()?;
    let started = Instant::now();
    let writers: Vec<_> = per_writer
        .into_iter()
        .enumerate()
        .map(|(me, hosts)| {
            let writer = Writer {
                store: store.clone(),
                progress: progress.clone(),
                done: done.clone(),
                me,
                hosts,
                in_flight: in_flight as usize,
                per_batch,
                start,
                ticks,
                maintained: maintained.clone(),
                ahead: 2 * maintain_every,
            };
            std::thread::spawn(move || writer.run())
        })
        .collect();
    // Maintenance (sealing, WAL truncation) every few minutes of agent
    // time, as the collector's runs every 5 s of wall time: driven by the
    // wall clock alone, the bench's day of data, written in far less wall
    // time, was sealed in steps of over an hour of data, and the WAL and
    // its memory held that much more than a collector's do.
    let maintainer = {
        let (store, progress, finished) = (store.clone(), progress.clone(), finished.clone());
        let maintained = maintained.clone();
        std::thread::spawn(move || {
            maintain_while(&store, &progress, &finished, &maintained, maintain_every)
        })
    };
    // Per-second rates while the writers run.
    let monitor = {
        let (done, finished) = (done.clone(), finished.clone());
        std::thread::spawn(move || rates_while(&done, &finished))
    };
    let sampler = watch.map(|dir| {
        let finished = finished.clone();
        std::thread::spawn(move || sizes_while(&dir, &finished))
    });
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
    let sizes = match sampler {
        Some(s) => Some(
            s.join()
                .map_err(|_| anyhow::anyhow!("size sampler panicked"))?,
        ),
        None => None,
    };
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
        sizes,
    })
}

/// The store directory's sizes sampled while ingest ran, from the first
/// sample after retention deleted a partition on: the whole directory
/// and its WAL.
#[derive(Default)]
struct DirSizes {
    whole: Vec<f64>,
    wal: Vec<f64>,
    /// Times the oldest partition went between two samples (retention
    /// deleted one or more).
    deletions: u32,
}

/// How often the directory's size is sampled during ingest.
const SIZE_EVERY: Duration = Duration::from_millis(250);

/// Samples `dir`'s size every SIZE_EVERY until `finished`, keeping the
/// samples taken once its oldest partition has gone (retention deleted
/// it). A file that vanishes during a walk (a WAL generation or a
/// partition being deleted) skips that sample.
fn sizes_while(dir: &Path, finished: &AtomicBool) -> DirSizes {
    let mut sizes = DirSizes::default();
    let mut oldest: Option<i64> = None;
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(SIZE_EVERY);
        let Some(now_oldest) = oldest_partition(dir) else {
            continue;
        };
        if oldest.is_some_and(|o| now_oldest > o) {
            sizes.deletions += 1;
        }
        oldest = Some(oldest.map_or(now_oldest, |o| o.max(now_oldest)));
        if sizes.deletions == 0 {
            continue;
        }
        if let (Ok((whole, _)), Ok((wal, _))) = (dir_size(dir), dir_size(&dir.join("wal"))) {
            sizes.whole.push(whole as f64);
            sizes.wal.push(wal as f64);
        }
    }
    sizes
}

/// The start of the oldest partition directory in the store at `dir`.
fn oldest_partition(dir: &Path) -> Option<i64> {
    std::fs::read_dir(dir.join("partitions"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .min()
}

/// The directory against the size limit while ingest ran.
fn print_sizes(limit: u64, sizes: &DirSizes) {
    let limit = limit as f64;
    let stat = |v: &[f64], p: f64| percentile(v, p).unwrap_or(f64::NAN) / limit;
    println!(
        "size_limit_partitions_deleted={} samples={}",
        sizes.deletions,
        sizes.whole.len()
    );
    println!(
        "dir_over_limit_min={:.3} median={:.3} max={:.3} target=0.9..1.1",
        stat(&sizes.whole, 0.0),
        stat(&sizes.whole, 50.0),
        stat(&sizes.whole, 100.0)
    );
    println!(
        "wal_over_limit_min={:.3} median={:.3} max={:.3}",
        stat(&sizes.wal, 0.0),
        stat(&sizes.wal, 50.0),
        stat(&sizes.wal, 100.0)
    );
}

/// One writer of the ingest: its hosts' batches, `in_flight` of them
/// submitted and not yet durable at a time.
struct Writer {
    store: Arc<Store>,
    progress: Progress,
    /// Samples durable so far, over all writers.
    done: Arc<AtomicU64>,
    /// This writer's entry in `progress`.
    me: usize,
    hosts: Vec<HostGen>,
    in_flight: usize,
    per_batch: i64,
    start: i64,
    ticks: i64,
    /// The tick the last maintenance pass started at (see `--paced`).
    maintained: Arc<AtomicI64>,
    /// Ticks a writer may run past it.
    ahead: i64,
}

impl Writer {
    fn run(mut self) -> anyhow::Result<()> {
        let (store, progress, me) = (&self.store, &self.progress, self.me);
        // However it ends, this writer no longer holds the others back.
        let _done = WriterDone(&progress[me]);
        let mut batches: Vec<Batch> = self.hosts.iter().map(HostGen::batch).collect();
        let mut pending = VecDeque::with_capacity(self.in_flight);
        let mut tick = 0;
        let mut seq = 0;
        while tick < self.ticks {
            progress[me].store(tick, Ordering::Release);
            while tick > slowest(progress) + MAX_TICK_SKEW
                || tick > self.maintained.load(Ordering::Acquire) + self.ahead
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            let n = self.per_batch.min(self.ticks - tick);
            seq += 1;
            for (host, batch) in self.hosts.iter_mut().zip(&mut batches) {
                host.fill(batch, seq, self.start + tick * INTERVAL_MS, n);
                if pending.len() == self.in_flight
                    && let Some(oldest) = pending.pop_front()
                {
                    // Counted once durable, as an acknowledgement would be.
                    let outcome = store.wait(oldest)?;
                    self.done.fetch_add(outcome.stored, Ordering::Relaxed);
                }
                pending.push_back(store.submit(batch)?);
            }
            tick += n;
        }
        for p in pending {
            let outcome = store.wait(p)?;
            self.done.fetch_add(outcome.stored, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Runs maintenance every `maintain_every` ticks of the slowest writer
/// until `finished`, recording in `maintained` the tick each pass
/// started at once it is done; the passes run and their wall time.
fn maintain_while(
    store: &Store,
    progress: &Progress,
    finished: &AtomicBool,
    maintained: &AtomicI64,
    maintain_every: i64,
) -> anyhow::Result<(u32, Duration)> {
    let (mut last, mut passes, mut took) = (0, 0, Duration::ZERO);
    while !finished.load(Ordering::Relaxed) {
        let now = slowest(progress);
        if maintain_every > 0 && now != i64::MAX && now >= last + maintain_every {
            let started = Instant::now();
            store.maintain()?;
            took += started.elapsed();
            passes += 1;
            last = now;
            maintained.fetch_max(now, Ordering::AcqRel);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok((passes, took))
}

/// The rates of `done` in each whole second until `finished`.
fn rates_while(done: &AtomicU64, finished: &AtomicBool) -> Vec<f64> {
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

/// Partitions of the store in `dir` rewritten into their immutable file
/// (a `chunks` file in their directory), and all of them.
fn rewritten_partitions(dir: &Path) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(dir.join("partitions")) else {
        return (0, 0);
    };
    let dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    let files = dirs.iter().filter(|d| d.join("chunks").is_file()).count();
    (files, dirs.len())
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
    let samples = write_openmetrics(&text, hosts, start, ticks)?;
    let blocks = temp.join("prometheus-blocks");
    let started = Instant::now();
    create_blocks(&args.promtool, &text, &blocks)?;
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
        paced: args.paced,
    };
    let progress = writer_progress(args.writers.min(hosts));
    let ingested = ingest(&store, &progress, gens, writers, start, ticks, None)?;
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

/// The first `hosts` hosts' `ticks` samples from `start` as OpenMetrics
/// text in `path`, every series a gauge; the samples written.
fn write_openmetrics(path: &Path, hosts: u32, start: i64, ticks: i64) -> anyhow::Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
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
    Ok(samples)
}

/// `promtool tsdb create-blocks-from openmetrics` of `text` into `blocks`.
fn create_blocks(promtool: &Path, text: &Path, blocks: &Path) -> anyhow::Result<()> {
    let status = Command::new(promtool)
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=24h",
        ])
        .arg(text)
        .arg(blocks)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", promtool.display()))?;
    if !status.success() {
        bail!("promtool failed: {status}");
    }
    Ok(())
}

fn crash_rounds(args: &Args, temp: &Path) -> anyhow::Result<()> {
    let seed = args.crash_seed.unwrap_or_else(|| now_ms() as u64);
    let exe = std::env::current_exe()?;
    let mut jitter = StdRng::seed_from_u64(seed);
    let mut current = None;
    let mut acked = 0;
    let (mut on_created, mut on_deleted, mut on_rewritten, mut expired) = (0, 0, 0, 0);
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
        // A random moment, or the next partition's creation, or its
        // rewrite into its file, or retention's next deletion of a whole
        // partition (with a random moment if it does not come within 2 s).
        let moment = Duration::from_millis(jitter.random_range(0..300));
        let step_wait = Duration::from_secs(2);
        let kill = match round % 4 {
            0 => KillAt::After(moment),
            1 => KillAt::PartitionCreated {
                fallback: step_wait,
            },
            2 => KillAt::PartitionRewritten {
                fallback: step_wait,
            },
            _ => KillAt::PartitionDeleted {
                fallback: step_wait,
            },
        };
        let mut command = Command::new(&exe);
        command
            .arg("storage-crash-child")
            .arg("--dir")
            .arg(dir)
            .arg("--base-ms")
            .arg(workload.base_ms.to_string());
        let report = crash_round(command, dir, workload, kill)
            .map_err(|e| anyhow::anyhow!("crash round {round} ({kill:?}, seed {seed}): {e}"))?;
        acked += report.acked;
        match report.killed_on {
            KilledOn::Moment => {}
            KilledOn::PartitionCreated => on_created += 1,
            KilledOn::PartitionDeleted => on_deleted += 1,
            KilledOn::PartitionRewritten => on_rewritten += 1,
        }
        expired = expired.max(report.check.expired_batches);
    }
    println!("crash_rounds_passed={}", args.crash_rounds);
    println!("crash_acks_checked={acked}");
    println!("crash_kills_on_partition_creation={on_created}");
    println!("crash_kills_on_partition_deletion={on_deleted}");
    println!("crash_kills_on_partition_rewrite={on_rewritten}");
    println!("crash_batches_deleted_by_retention_max={expired}");
    println!("crash_seed={seed}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seal_phase_counts_each_pass() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            maintenance_interval: None,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        assert_eq!(seal_phase(&store), (0.0, 0));
        store.maintain().unwrap();
        store.maintain().unwrap();
        let (seconds, passes) = seal_phase(&store);
        assert_eq!(passes, 2);
        assert!(seconds > 0.0, "{seconds}");
    }
}
