//! `hostwatch-bench sled-space`: what sled's directory takes for the
//! store's write pattern, without the store. Each window writes one
//! incompressible value per series (the size of a raw chunk of an hour)
//! in batches of 8, under 18-byte keys in series order (the store's) or in
//! time order, then flushes; with `--retention-windows`, the oldest window
//! of every series is deleted once that many are held, in batches of a
//! host's series, as retention does.
//! `--order day-trees` puts each 24 windows in a tree of their own, in
//! series order, and drops a tree whole once all of its windows expired.
//! The directory over the bytes of the keys and values still held is
//! sled's own amplification, which no codec of the store can remove.

use crate::storage::dir_size;
use anyhow::{Context, bail};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Values (series) written each window.
    #[arg(long, default_value = "12460", value_parser = clap::value_parser!(u64).range(1..))]
    series: u64,
    /// Windows written.
    #[arg(long, default_value = "48", value_parser = clap::value_parser!(u64).range(1..))]
    windows: u64,
    /// Mean value size in bytes: each series' is this plus or minus 40 %,
    /// as raw chunks of noisy and of flat series differ.
    #[arg(long, default_value = "270", value_parser = clap::value_parser!(u64).range(10..))]
    value_bytes: u64,
    /// Key order: `series` (series id, then window start: the store's),
    /// `time` (window start, then series id), or `day-trees` (series order
    /// in a tree per 24 windows, dropped whole when they all expired).
    #[arg(long, default_value = "series", value_parser = ["series", "time", "day-trees"])]
    order: String,
    /// Delete the oldest window of every series once this many are held.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    retention_windows: Option<u64>,
    /// Idle time after each window, for sled's background segment cleaner.
    #[arg(long, default_value = "0")]
    pause_ms: u64,
    /// sled's page cache (the collector's default).
    #[arg(long, default_value = "16777216")]
    cache_bytes: u64,
    /// Where to put the database (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const BATCH_KEYS: u64 = 8;
/// Keys deleted per batch: a host's series, as retention deletes.
const DELETE_BATCH_KEYS: usize = 89;
const WINDOWS_A_DAY: u64 = 24;
const HOUR_MS: u64 = 3_600_000;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().join("db"));
    if dir.exists() {
        bail!("{} exists; give a new directory", dir.display());
    }
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(args.cache_bytes)
        .open()
        .with_context(|| format!("open {}", dir.display()))?;
    let time_order = args.order == "time";
    let day_trees = args.order == "day-trees";
    println!(
        "# {} series x {} windows, values of {} bytes on average, keys in {} order, retention {}",
        args.series,
        args.windows,
        args.value_bytes,
        args.order,
        args.retention_windows
            .map_or("none".to_string(), |w| format!("{w} windows"))
    );
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    // Per window held: its keys and their bytes, for deletion; with day
    // trees, per day held: its number and bytes.
    let mut held: VecDeque<(Vec<[u8; 18]>, u64)> = VecDeque::new();
    let mut days: VecDeque<(u64, u64)> = VecDeque::new();
    let mut data_bytes = 0u64;
    for window in 0..args.windows {
        let start = window * HOUR_MS;
        let day = window / WINDOWS_A_DAY;
        let tree = if day_trees {
            db.open_tree(day.to_be_bytes())?
        } else {
            (*db).clone()
        };
        // Kept for deletion, which day trees do not need.
        let (keys, bytes) = write_window(&tree, &args, &mut rng, start, time_order, !day_trees)?;
        data_bytes += bytes;
        // Windows up to `window - retention` have expired.
        let expired = |last_window: u64| {
            args.retention_windows
                .is_some_and(|r| last_window + r <= window)
        };
        if day_trees {
            match days.back_mut() {
                Some((d, day_bytes)) if *d == day => *day_bytes += bytes,
                _ => days.push_back((day, bytes)),
            }
            while let Some(&(oldest, day_bytes)) = days.front()
                && expired(oldest * WINDOWS_A_DAY + WINDOWS_A_DAY - 1)
            {
                db.drop_tree(oldest.to_be_bytes())?;
                data_bytes -= day_bytes;
                days.pop_front();
            }
        } else {
            held.push_back((keys, bytes));
            if expired(window + 1 - held.len() as u64)
                && let Some((keys, bytes)) = held.pop_front()
            {
                delete_keys(&db, &keys)?;
                data_bytes -= bytes;
            }
        }
        db.flush()?;
        std::thread::sleep(Duration::from_millis(args.pause_ms));
        if (window + 1) % 12 == 0 || window + 1 == args.windows {
            let (apparent, _) = dir_size(&dir)?;
            println!(
                "window={} data_bytes={data_bytes} dir_bytes={apparent} dir_over_data={:.3}",
                window + 1,
                apparent as f64 / data_bytes as f64
            );
        }
    }
    drop(db);
    let (apparent, _) = dir_size(&dir)?;
    println!("data_bytes={data_bytes}");
    println!("dir_bytes={apparent}");
    println!("dir_over_data={:.3}", apparent as f64 / data_bytes as f64);
    Ok(())
}

/// Writes one window's value of every series into `tree`, `BATCH_KEYS` a
/// batch; the keys written (with `keep_keys`) and the bytes.
fn write_window(
    tree: &sled::Tree,
    args: &Args,
    rng: &mut SmallRng,
    start: u64,
    time_order: bool,
    keep_keys: bool,
) -> anyhow::Result<(Vec<[u8; 18]>, u64)> {
    let mut keys = Vec::with_capacity(if keep_keys { args.series as usize } else { 0 });
    let mut bytes = 0;
    let mut batch = sled::Batch::default();
    for id in 0..args.series {
        let key = chunk_key(time_order, id, start);
        // 60 % to 140 % of the mean, the same for a series every window.
        let len = args.value_bytes * (60 + (id * 37) % 81) / 100;
        let value: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        bytes += key.len() as u64 + len;
        batch.insert(&key[..], value);
        if keep_keys {
            keys.push(key);
        }
        if (id + 1) % BATCH_KEYS == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(batch)?;
    Ok((keys, bytes))
}

/// Deletes an expired window's keys, a host's series a batch.
fn delete_keys(db: &sled::Db, keys: &[[u8; 18]]) -> anyhow::Result<()> {
    for host in keys.chunks(DELETE_BATCH_KEYS) {
        let mut batch = sled::Batch::default();
        for key in host {
            batch.remove(&key[..]);
        }
        db.apply_batch(batch)?;
    }
    Ok(())
}

/// A chunk key as the store's (`C`, tier 0, series id and window start
/// big-endian), or with the two numbers swapped.
fn chunk_key(time_order: bool, id: u64, start: u64) -> [u8; 18] {
    let (first, second) = if time_order { (start, id) } else { (id, start) };
    let mut key = [0u8; 18];
    key[0] = b'C';
    key[2..10].copy_from_slice(&first.to_be_bytes());
    key[10..].copy_from_slice(&second.to_be_bytes());
    key
}
