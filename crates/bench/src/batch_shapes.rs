//! `hostwatch-bench batch-shapes`: what one hostile batch costs the store,
//! and how long it keeps the host's other readers waiting.
//!
//! Each shape is one batch appended to a fresh store while another thread
//! asks for the host's latest values in a loop, as an operator's `Latest`
//! call would: a series listed once per sample (`repeated`), one series'
//! samples newest first (`reversed`), and as many samples of one series as
//! a window holds (`dense`). Prints the append's wall and CPU time, its CPU
//! per sample, and the readers' median, p99 and longest wait.

use crate::measure::{median, percentile, thread_cpu_ns};
use anyhow::Context;
use hostwatch_tsdb::{Batch, Options, Point, SeriesInput, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Samples in each batch.
    #[arg(long, default_value_t = 320_000, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
}

/// A fixed "now" the samples lie just before.
const NOW: i64 = 1_800_000_000_000;

fn shapes(n: i64) -> [(&'static str, Vec<SeriesInput>); 3] {
    let series = |points: Vec<Point>| SeriesInput {
        metric: "m".into(),
        labels: vec![],
        points,
    };
    let point = |i: i64| Point {
        t_ms: NOW - 3_000_000 + i,
        value: (i % 100) as f64,
    };
    [
        ("repeated", (0..n).map(|i| series(vec![point(i)])).collect()),
        ("reversed", vec![series((0..n).rev().map(point).collect())]),
        ("dense", vec![series((0..n).map(point).collect())]),
    ]
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    println!("samples={}", args.samples);
    for (name, series) in shapes(i64::from(args.samples)) {
        let dir = tempfile::tempdir()?;
        let options = Options {
            clock: Arc::new(|| NOW),
            maintenance_interval: None,
            ..Options::default()
        };
        let store = Arc::new(Store::open(dir.path(), options).context("open the store")?);
        // The host exists, with a series the readers find.
        store.append(&batch(
            1,
            vec![SeriesInput {
                metric: "other".into(),
                labels: vec![],
                points: vec![Point {
                    t_ms: NOW - 4_000_000,
                    value: 1.0,
                }],
            }],
        ))?;
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut waits = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    store.latest("a")?;
                    waits.push(start.elapsed().as_secs_f64() * 1e3);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(waits)
            })
        };
        let batch = batch(2, series);
        let (cpu, wall) = (thread_cpu_ns()?, Instant::now());
        let outcome = store.append(&batch)?;
        let (cpu, wall) = (thread_cpu_ns()? - cpu, wall.elapsed());
        done.store(true, Ordering::Relaxed);
        let waits = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
        let samples = f64::from(args.samples);
        println!("{name}_stored={}", outcome.stored);
        println!("{name}_append_wall_ms={:.1}", wall.as_secs_f64() * 1e3);
        println!("{name}_append_cpu_ms={:.1}", cpu as f64 / 1e6);
        println!(
            "{name}_append_cpu_ns_per_sample={:.0}",
            cpu as f64 / samples
        );
        println!("{name}_latest_calls={}", waits.len());
        let show = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.3}"));
        println!("{name}_latest_median_ms={}", show(median(&waits)));
        println!("{name}_latest_p99_ms={}", show(percentile(&waits, 99.0)));
        println!(
            "{name}_latest_max_ms={}",
            show(waits.iter().copied().reduce(f64::max))
        );
    }
    Ok(())
}

fn batch(seq: u64, series: Vec<SeriesInput>) -> Batch {
    Batch {
        host: "a".into(),
        source: 1,
        seq,
        series,
        processes: vec![],
        malformed: 0,
    }
}
