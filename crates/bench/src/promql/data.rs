//! The promql bench's data set, written into a hostwatch store and into
//! OpenMetrics text for promtool from one pass of the generator, so both
//! systems hold the same samples.
//!
//! Three tiers of the storage bench's agent-like hosts ([`HostGen`]):
//! - the dashboard host (`host-0`): every series, over the whole span;
//! - the fleet (`host-0` ... `host-{fleet-1}`): the fleet queries' series
//!   (CPU utilization per core and in total, bytes received per device)
//!   over the whole span;
//! - the instant tier (up to `host-{instant-1}`): those series for the
//!   [`INSTANT_DATA_MS`] before the instant queries' time, which lies
//!   [`INSTANT_GAP_MS`] before the range queries' start, so the range
//!   queries see the fleet alone (the other hosts are series that stopped,
//!   matched but empty in the span, on both systems).

use crate::storage::data::HostGen;
use anyhow::{Context, ensure};
use hostwatch_tsdb::{Batch, Options, Pending, Point, SeriesInput, Store};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The metrics of the fleet and instant tiers.
pub(super) const FLEET_METRICS: [&str; 2] = [
    "host_cpu_utilization_ratio",
    "host_network_receive_bytes_total",
];
/// How much data the instant tier's hosts have before the instant.
pub(super) const INSTANT_DATA_MS: i64 = 10 * 60_000;
/// From the instant queries' time to the range queries' start: longer
/// than the lookback and the fleet queries' 5-minute windows.
pub(super) const INSTANT_GAP_MS: i64 = 10 * 60_000;
/// How much data the live instant tier's hosts have before the instant
/// (the console's fleet page shows an hour).
pub(super) const LIVE_DATA_MS: i64 = 60 * 60_000;
/// Ticks per batch (an hour of samples at 10 s).
const TICKS_PER_BATCH: i64 = 360;
/// Batches submitted and not yet durable.
const IN_FLIGHT: usize = 32;
/// Hosts written between two maintenance passes (sealing, WAL truncation).
const HOSTS_PER_MAINTENANCE: u32 = 50;

/// The data set's shape and times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) fleet_hosts: u32,
    pub(super) instant_hosts: u32,
    pub(super) interval_ms: i64,
    /// The range queries' span: `[end - span, end]`.
    pub(super) span_ms: i64,
    /// The data's last instant and the range queries' end (ms).
    pub(super) end_ms: i64,
}

impl Shape {
    /// The range queries' start.
    pub(super) fn range_start_ms(&self) -> i64 {
        self.end_ms - self.span_ms
    }

    /// The instant queries' time.
    pub(super) fn instant_ms(&self) -> i64 {
        self.range_start_ms() - INSTANT_GAP_MS
    }

    /// The first sample's time.
    fn data_start_ms(&self) -> i64 {
        self.instant_ms() - INSTANT_DATA_MS
    }
}

/// What was written.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) samples: u64,
    pub(super) series: u64,
}

/// Writes the data set into a store in `store_dir` and as OpenMetrics
/// text into `text`.
pub(super) fn write(
    shape: &Shape,
    store_dir: &Path,
    text: &Path,
    temp: &Path,
) -> anyhow::Result<Written> {
    let options = Options {
        maintenance_interval: None,
        ..Options::default()
    };
    let store = Store::open(store_dir, options)?;
    let mut families = Families::new(temp.join("families"))?;
    let mut written = Written::default();
    let mut pending = VecDeque::new();
    let hosts = shape.fleet_hosts.max(shape.instant_hosts);
    for index in 0..hosts {
        let (from, to) = if index < shape.fleet_hosts {
            (shape.data_start_ms(), shape.end_ms)
        } else {
            (shape.data_start_ms(), shape.instant_ms())
        };
        let mut host = HostGen::new(index, false);
        // Which of the host's series this tier keeps.
        let keep: Vec<usize> = (0..host.series.len())
            .filter(|&i| index == 0 || FLEET_METRICS.contains(&host.series[i].metric.as_str()))
            .collect();
        let span = Span {
            from,
            to,
            interval_ms: shape.interval_ms,
        };
        let sink = Sink {
            store: &store,
            pending: &mut pending,
            written: &mut written,
        };
        write_host(&mut host, &keep, span, sink, Some(&mut families))?;
        if index % HOSTS_PER_MAINTENANCE == HOSTS_PER_MAINTENANCE - 1 {
            while let Some(p) = pending.pop_front() {
                settle(&store, Some(p))?;
            }
            store.maintain()?;
        }
    }
    while let Some(p) = pending.pop_front() {
        settle(&store, Some(p))?;
    }
    drop(store);
    seal_finished(store_dir)?;
    families.finish(text)?;
    Ok(written)
}

/// The samples' times of one host: `[from, to]`, every `interval_ms`.
#[derive(Clone, Copy)]
struct Span {
    from: i64,
    to: i64,
    interval_ms: i64,
}

/// Where a host's batches go: the store, its tickets not yet waited for,
/// and the counts.
struct Sink<'a> {
    store: &'a Store,
    pending: &'a mut VecDeque<Pending>,
    written: &'a mut Written,
}

/// Submits the series `keep` of `host` over `span`, in batches of
/// [`TICKS_PER_BATCH`] ticks, keeping at most [`IN_FLIGHT`] in flight;
/// with `families`, writes them as OpenMetrics text too.
fn write_host(
    host: &mut HostGen,
    keep: &[usize],
    span: Span,
    sink: Sink<'_>,
    mut families: Option<&mut Families>,
) -> anyhow::Result<()> {
    sink.written.series += keep.len() as u64;
    let ticks = (span.to - span.from) / span.interval_ms + 1;
    let mut seq = 0;
    let mut tick = 0;
    while tick < ticks {
        let n = TICKS_PER_BATCH.min(ticks - tick);
        let mut series: Vec<SeriesInput> = keep
            .iter()
            .map(|&i| SeriesInput {
                metric: host.series[i].metric.clone(),
                labels: host.series[i].labels.clone(),
                points: Vec::with_capacity(n as usize),
            })
            .collect();
        for k in 0..n {
            let t_ms = span.from + (tick + k) * span.interval_ms;
            let values = host.next_values();
            for (input, &i) in series.iter_mut().zip(keep) {
                input.points.push(Point {
                    t_ms,
                    value: values[i],
                });
            }
        }
        for input in &series {
            if let Some(families) = families.as_deref_mut() {
                families.write(&host.name, input)?;
            }
            sink.written.samples += input.points.len() as u64;
        }
        seq += 1;
        let batch = Batch {
            host: host.name.clone(),
            source: 1,
            seq,
            series,
            processes: Vec::new(),
            malformed: 0,
        };
        sink.pending.push_back(sink.store.submit(&batch)?);
        if sink.pending.len() >= IN_FLIGHT {
            settle(sink.store, sink.pending.pop_front())?;
        }
        tick += n;
    }
    Ok(())
}

/// The instant tier live, as the console's fleet page finds it: `hosts`
/// hosts with the fleet metrics' series over the hour up to `end_ms`,
/// written into a store in `store_dir` and left in its head (nothing
/// sealed, as a collector holds its agents' current hour).
pub(super) fn write_live(
    hosts: u32,
    interval_ms: i64,
    end_ms: i64,
    store_dir: &Path,
) -> anyhow::Result<(Store, Written)> {
    let options = Options {
        maintenance_interval: None,
        ..Options::default()
    };
    let store = Store::open(store_dir, options)?;
    let mut written = Written::default();
    let mut pending = VecDeque::new();
    let span = Span {
        from: end_ms - LIVE_DATA_MS,
        to: end_ms,
        interval_ms,
    };
    for index in 0..hosts {
        let mut host = HostGen::new(index, false);
        let keep: Vec<usize> = (0..host.series.len())
            .filter(|&i| FLEET_METRICS.contains(&host.series[i].metric.as_str()))
            .collect();
        let sink = Sink {
            store: &store,
            pending: &mut pending,
            written: &mut written,
        };
        write_host(&mut host, &keep, span, sink, None)?;
    }
    while let Some(p) = pending.pop_front() {
        settle(&store, Some(p))?;
    }
    Ok((store, written))
}

/// Seals every finished window of the store in `dir`, as a collector's
/// maintenance has once its hosts have been quiet for its idle time: the
/// instant tier's hosts stopped a day ago; the fleet's newest window stays
/// in the head and its WAL.
pub(super) fn seal_finished(dir: &Path) -> anyhow::Result<()> {
    let options = Options {
        maintenance_interval: None,
        idle_seal_ms: 1,
        ..Options::default()
    };
    Store::open(dir, options)?.maintain()?;
    Ok(())
}

/// Waits for a submitted batch; any refused sample is an error (the two
/// systems would not hold the same data).
fn settle(store: &Store, pending: Option<Pending>) -> anyhow::Result<()> {
    let Some(pending) = pending else {
        return Ok(());
    };
    let outcome = store.wait(pending)?;
    ensure!(
        outcome.rejected.total() == 0,
        "the store refused samples: {:?}",
        outcome.first_error
    );
    Ok(())
}

/// OpenMetrics text, one file per metric family while generating (a
/// family's samples must be contiguous), joined at the end.
struct Families {
    dir: PathBuf,
    files: BTreeMap<String, BufWriter<std::fs::File>>,
}

impl Families {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Families {
            dir,
            files: BTreeMap::new(),
        })
    }

    /// One series' points, a line each, times in seconds.
    fn write(&mut self, host: &str, input: &SeriesInput) -> anyhow::Result<()> {
        if !self.files.contains_key(&input.metric) {
            let path = self.dir.join(&input.metric);
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            self.files
                .insert(input.metric.clone(), BufWriter::new(file));
        }
        let Some(out) = self.files.get_mut(&input.metric) else {
            unreachable!("inserted above")
        };
        let mut labels = format!("host=\"{host}\"");
        for l in &input.labels {
            labels.push_str(&format!(",{}=\"{}\"", l.name, l.value));
        }
        for p in &input.points {
            // `{}` prints the shortest decimal that reads back as the
            // same f64; times are whole seconds.
            writeln!(
                out,
                "{}{{{labels}}} {} {}",
                input.metric,
                p.value,
                p.t_ms / 1000
            )?;
        }
        Ok(())
    }

    /// The families one after another in `text`, then `# EOF`.
    fn finish(self, text: &Path) -> anyhow::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(text)?);
        for (metric, file) in self.files {
            file.into_inner()
                .map_err(|e| anyhow::anyhow!("writing {metric}: {e}"))?;
            let path = self.dir.join(&metric);
            std::io::copy(&mut std::fs::File::open(&path)?, &mut out)?;
            std::fs::remove_file(&path)?;
        }
        writeln!(out, "# EOF")?;
        out.flush()?;
        Ok(())
    }
}
