//! `hostwatch-bench backup`: online backups of a collector under ingest.
//!
//! 1. Fills a store with `--hosts` hosts of the storage benchmark's series,
//!    a batch every 10 s over the last `--hours` (sealed into partitions,
//!    the last minutes left in the WAL), and prints its size.
//! 2. Serves it with a collector in this process (real mTLS sockets) while
//!    `--agents` agent streams each send a batch every `--interval-ms`
//!    and time its acknowledgement.
//! 3. Asks Admin.Backup for `--rounds` full backups (each into a new
//!    directory, removed after the next), then one incremental backup into
//!    the first: their duration, bytes, how long maintenance waited.
//! 4. Prints acknowledgement latencies of batches sent while a backup ran
//!    against those sent while none did, in the same run.

use crate::fixture::{issue, open_ingest, series_to_proto, spawn_collector};
use crate::measure::{load_average, median, percentile};
use crate::storage::INTERVAL_MS;
use crate::storage::data::HostGen;
use anyhow::Context;
use hostwatch_pki::transport::ClientTarget;
use hostwatch_pki::{Ca, Role, TlsFiles};
use hostwatch_proto::v1 as pb;
use hostwatch_tsdb::{Options, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Hosts in the store before the collector starts.
    #[arg(long, default_value_t = 100)]
    hosts: u32,
    /// Hours of data per host (a batch every 10 s).
    #[arg(long, default_value_t = 12)]
    hours: i64,
    /// Agent streams ingesting during the backups.
    #[arg(long, default_value_t = 20)]
    agents: u32,
    /// Each agent's batch interval.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Full backups.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Work directory (kept); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    println!("load_average_before={:.2}", load_average()?);
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let (samples, seconds) = fill(&data.join("store"), &args)?;
    println!("fill_samples={samples}");
    println!("fill_seconds={seconds:.1}");
    println!("store_bytes={}", dir_bytes(&data.join("store")));
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(bench(&args, &dir));
    runtime.shutdown_timeout(Duration::from_secs(10));
    println!("load_average_after={:.2}", load_average()?);
    result
}

/// Fills the store at `path`: every host's batches of the last hours,
/// one tick of all hosts per commit group, sealed every simulated hour.
fn fill(path: &Path, args: &Args) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let options = Options {
        maintenance_interval: None,
        ..Options::default()
    };
    let store = Store::open(path, options)?;
    let mut hosts: Vec<HostGen> = (0..args.hosts).map(|i| HostGen::new(i, false)).collect();
    let mut batches: Vec<_> = hosts.iter().map(HostGen::batch).collect();
    let now = hostwatch_stdx::now_ms();
    let first = now - args.hours * 3_600_000;
    let ticks = args.hours * 3_600_000 / INTERVAL_MS;
    let mut samples = 0;
    for tick in 0..ticks {
        let t = first + tick * INTERVAL_MS;
        let mut pending = Vec::with_capacity(hosts.len());
        for (host, batch) in hosts.iter_mut().zip(&mut batches) {
            host.fill(batch, tick as u64 + 1, t, 1);
            pending.push(store.submit(batch)?);
        }
        for p in pending {
            samples += store.wait(p)?.stored;
        }
        if (tick + 1) % (3_600_000 / INTERVAL_MS) == 0 {
            store.maintain()?;
        }
    }
    store.maintain()?;
    Ok((samples, started.elapsed().as_secs_f64()))
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One acknowledged batch: when it was sent (since the start) and how
/// long its acknowledgement took.
type Acks = Arc<Mutex<Vec<(Duration, Duration)>>>;

async fn bench(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    let ca = Ca::generate("bench CA", 2)?;
    ca.write(&pki)?;
    let collector_tls = issue(&ca, &pki, Role::Collector, "bench")?;
    let operator = issue(&ca, &pki, Role::Operator, "bench")?;
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join("data"),
            collector_tls.ca,
            collector_tls.cert,
            collector_tls.key
        ),
    )?;
    let (addr, stop, task) = spawn_collector(&config).await?;
    let target = |tls: TlsFiles| ClientTarget {
        address: addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls,
        connect_timeout: Duration::from_secs(10),
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    };
    let epoch = Instant::now();
    let acks: Acks = Arc::default();
    let halt = tokio_util::sync::CancellationToken::new();
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let host = format!("live-{i}");
        let tls = issue(&ca, &pki, Role::Agent, &host)?;
        let (tx, replies) = open_ingest(&target(tls), &host, 4).await?;
        let generator = HostGen::new(10_000 + i, false);
        agents.push(tokio::spawn(agent(
            generator,
            tx,
            replies,
            Duration::from_millis(args.interval_ms),
            epoch,
            acks.clone(),
            halt.clone(),
        )));
    }
    let (channel, _) = hostwatch_pki::transport::connect(&target(operator)).await?;
    let mut admin = pb::admin_client::AdminClient::new(channel);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut during: Vec<(Duration, Duration)> = Vec::new();
    let mut full = Vec::new();
    let first = dir.join("backup-0");
    let mut previous: Option<PathBuf> = None;
    for round in 0..args.rounds {
        let to = dir.join(format!("backup-{round}"));
        let _ = std::fs::remove_dir_all(&to);
        let (report, span) = backup(&mut admin, &to, false, epoch).await?;
        during.push(span);
        full.push(report);
        // Keeps the first, for the incremental round, and the newest.
        if let Some(old) = previous.take()
            && old != first
        {
            std::fs::remove_dir_all(&old)?;
        }
        previous = Some(to);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (incremental, span) = backup(&mut admin, &first, true, epoch).await?;
    during.push(span);
    tokio::time::sleep(Duration::from_secs(3)).await;
    halt.cancel();
    for a in agents {
        a.await??;
    }
    stop.cancel();
    task.await?;

    let seconds: Vec<f64> = full.iter().map(|r| r.duration_ms as f64 / 1e3).collect();
    let paused: Vec<f64> = full
        .iter()
        .map(|r| r.maintenance_paused_ms as f64)
        .collect();
    let bytes = full.last().map_or(0, |r| r.bytes_total);
    println!("backup_rounds={}", full.len());
    println!("backup_bytes={bytes}");
    println!("backup_files={}", full.last().map_or(0, |r| r.files));
    println!(
        "backup_partitions={}",
        full.last().map_or(0, |r| r.partitions_copied)
    );
    let secs = median(&seconds).unwrap_or(0.0);
    println!("backup_seconds_median={secs:.3}");
    println!(
        "backup_mib_per_second_median={:.1}",
        bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );
    println!(
        "backup_maintenance_paused_ms_median={:.0}",
        median(&paused).unwrap_or(0.0)
    );
    println!(
        "incremental_seconds={:.3}",
        incremental.duration_ms as f64 / 1e3
    );
    println!("incremental_bytes_written={}", incremental.bytes_written);
    println!(
        "incremental_partitions_kept={}",
        incremental.partitions_kept
    );
    let acks = acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for (sent, took) in acks.iter() {
        let ms = took.as_secs_f64() * 1e3;
        if during.iter().any(|(from, to)| sent >= from && sent <= to) {
            inside.push(ms);
        } else {
            outside.push(ms);
        }
    }
    for (name, values) in [("during_backup", &inside), ("without_backup", &outside)] {
        println!("ack_batches_{name}={}", values.len());
        for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            println!(
                "ack_ms_{label}_{name}={:.1}",
                percentile(values, p).unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// One Backup call; its answer and when it ran (since `epoch`).
async fn backup(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    to: &Path,
    incremental: bool,
    epoch: Instant,
) -> anyhow::Result<(pb::BackupResponse, (Duration, Duration))> {
    let from = epoch.elapsed();
    let report = admin
        .backup(pb::BackupRequest {
            to: to.display().to_string(),
            incremental,
        })
        .await
        .with_context(|| format!("backup to {}", to.display()))?
        .into_inner();
    Ok((report, (from, epoch.elapsed())))
}

/// An agent: a batch every `interval`, each acknowledgement timed.
async fn agent(
    mut host: HostGen,
    tx: tokio::sync::mpsc::Sender<pb::AgentMessage>,
    mut replies: tonic::Streaming<pb::CollectorMessage>,
    interval: Duration,
    epoch: Instant,
    acks: Acks,
    halt: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use pb::collector_message::Kind as Reply;
    match replies.message().await? {
        Some(pb::CollectorMessage {
            kind: Some(Reply::Welcome(_)),
        }) => {}
        other => anyhow::bail!("no welcome: {other:?}"),
    }
    let mut batch = host.batch();
    let mut ticker = tokio::time::interval(interval);
    let mut last_t = 0;
    for seq in 1u64.. {
        tokio::select! {
            _ = halt.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        last_t = hostwatch_stdx::now_ms().max(last_t + 1);
        host.fill(&mut batch, seq, last_t, 1);
        let message = pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Batch(pb::Batch {
                seq,
                series: series_to_proto(&batch),
                ..Default::default()
            })),
        };
        let sent = Instant::now();
        tx.send(message).await?;
        match replies.message().await? {
            Some(pb::CollectorMessage {
                kind: Some(Reply::Ack(a)),
            }) if a.seq == seq => {}
            other => anyhow::bail!("batch {seq}: {other:?}"),
        }
        let took = sent.elapsed();
        acks.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((sent.duration_since(epoch), took));
    }
    Ok(())
}
