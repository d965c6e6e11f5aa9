//! `hostwatch-bench forward-read`: what forwarding's read path costs the
//! store, against what ingest costs it, on agent-like data.
//!
//! `--hosts` hosts (the storage benchmark's series, without process
//! snapshots) send one batch every 10 s of a simulated clock for
//! `--minutes`, each tick appended by one thread; after each tick the
//! accept log is read from a cursor and every listed series' points read
//! back over its span, as the collector's forwarding does before it
//! encodes and sends them. Prints the process CPU per sample of each,
//! per 10 minutes of the run: reading back a series' newest samples
//! decodes its open window, so the cost may grow as the hour fills.

use crate::measure::process_cpu_ns;
use crate::storage::INTERVAL_MS;
use crate::storage::data::HostGen;
use hostwatch_tsdb::{Options, SeriesKey, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Simulated hosts.
    #[arg(long, default_value_t = 200)]
    hosts: u32,
    /// Simulated minutes (one batch per host every 10 s).
    #[arg(long, default_value_t = 60)]
    minutes: i64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Starts on an hour boundary, so the run fills windows from empty.
    let start = hostwatch_stdx::now_ms() / 3_600_000 * 3_600_000 - 2 * 3_600_000;
    let clock = Arc::new(AtomicI64::new(start));
    let now = clock.clone();
    let options = Options {
        accept_log: true,
        maintenance_interval: None,
        clock: Arc::new(move || now.load(Ordering::Relaxed)),
        ..Options::default()
    };
    let store = Store::open(dir.path(), options)?;
    let mut hosts: Vec<HostGen> = (0..args.hosts).map(|i| HostGen::new(i, false)).collect();
    let mut batches: Vec<_> = hosts.iter().map(HostGen::batch).collect();
    let ticks = args.minutes * 60_000 / INTERVAL_MS;
    let per_part = 600_000 / INTERVAL_MS;
    let mut cursor = store.accepted_through()?;
    let (mut append_ns, mut read_ns, mut samples, mut read_samples) = (0u64, 0u64, 0u64, 0u64);
    for tick in 0..ticks {
        let t = start + tick * INTERVAL_MS;
        clock.store(t + 1_000, Ordering::Relaxed);
        let before = process_cpu_ns()?;
        for (host, batch) in hosts.iter_mut().zip(&mut batches) {
            host.fill(batch, tick as u64 + 1, t, 1);
            samples += store.append(batch)?.stored;
        }
        let appended = process_cpu_ns()?;
        for group in store.accepted_after(cursor, usize::MAX)? {
            for span in &group.spans {
                let keys: Vec<(Arc<SeriesKey>, u64)> = span
                    .series
                    .iter()
                    .filter_map(|id| store.series_key(*id).ok().flatten().map(|k| (k, *id)))
                    .collect();
                let refs: Vec<(&SeriesKey, u64)> = keys.iter().map(|(k, id)| (&**k, *id)).collect();
                for points in store.series_points_many(&refs, span.start_ms, span.end_ms)? {
                    read_samples += points.len() as u64;
                }
            }
            cursor = group.group;
        }
        let read = process_cpu_ns()?;
        append_ns += appended - before;
        read_ns += read - appended;
        if (tick + 1) % per_part == 0 || tick + 1 == ticks {
            let minute = (tick + 1) * INTERVAL_MS / 60_000;
            // One `name=value` line per figure, named by the part's end.
            println!(
                "append_cpu_ns_per_sample_to_minute_{minute}={:.0}",
                append_ns as f64 / samples.max(1) as f64
            );
            println!(
                "readback_cpu_ns_per_sample_to_minute_{minute}={:.0}",
                read_ns as f64 / read_samples.max(1) as f64
            );
            println!(
                "readback_samples_per_sample_to_minute_{minute}={:.3}",
                read_samples as f64 / samples.max(1) as f64
            );
            (append_ns, read_ns, samples, read_samples) = (0, 0, 0, 0);
        }
    }
    Ok(())
}
