//! `hostwatch-bench promql`: PromQL query latency against Prometheus 2.42
//! on the same data, and the memory a query costs the collector.
//!
//! One data set ([`data`]: a dashboard host with every agent series, a
//! fleet of `--fleet-hosts` with the fleet queries' series over
//! `--hours`, and `--instant-hosts` with those series for the instant
//! queries) is written into a hostwatch store and, through promtool, into
//! Prometheus blocks. A release `hostwatch-collector` serves the store
//! over its HTTPS API (an operator certificate) and Debian's `prometheus`
//! the blocks over HTTP, each its own process on loopback; the bench asks
//! both the same queries on one kept-alive HTTP/1.1 connection each,
//! alternating which goes first, `--runs` rounds, and prints per query the
//! median and p99 of each and their ratio, and for the dashboard (all its
//! panels one after another) the same. The answers are compared (label
//! sets, times, values within a relative 1e-9) so that like is timed
//! with like.
//!
//! Then memory: a fresh collector per query, its peak resident growth
//! over one query with a small answer over the whole span, the same over
//! a 24th of it, and a large answer over the whole span. Last, the same
//! queries in this process through the engine alone (no HTTP, no JSON).
//!
//! `--dir` keeps the data set (store, blocks, and its times) for later
//! runs, which then skip generating it.

mod data;
mod http;
mod servers;

use crate::measure::{Probe, median, percentile, thread_cpu_ns};
use anyhow::{Context, bail, ensure};
use data::Shape;
use hostwatch_promql::{Engine, Value};
use hostwatch_tsdb::{Options, Store};
use http::{Client, url_encode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOUR_MS: i64 = 3_600_000;
/// The targets (listed in docs/benchmarks.md).
const TARGET_RATIO: f64 = 1.0;
const TARGET_DASHBOARD_P99_MS: f64 = 50.0;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Hosts with the fleet queries' series over the whole span.
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u32).range(1..))]
    fleet_hosts: u32,
    /// Hosts in the instant queries (the fleet's included).
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u32).range(1..))]
    instant_hosts: u32,
    /// The range queries' span in hours (the data covers it and 20 minutes more).
    #[arg(long, default_value = "24", value_parser = clap::value_parser!(u32).range(1..=720))]
    hours: u32,
    /// Seconds between samples (the agent's default is 10).
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(1..=3600))]
    interval_s: u32,
    /// Timed rounds: every query once on each system per round.
    #[arg(long, default_value = "20", value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Where to keep the data set; reused when it holds one already
    /// (the scale flags are then those it was written with).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The collector binary (default: `hostwatch-collector` beside this one).
    #[arg(long)]
    collector: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus: PathBuf,
    #[arg(long, default_value = "/usr/bin/promtool")]
    promtool: PathBuf,
    /// Only the in-process engine timings (no servers): for profiling.
    #[arg(long)]
    engine_only: bool,
    /// sled's page cache of the collector and of the in-process engine
    /// (the collector's `storage.cache_bytes`, same default).
    #[arg(long, default_value = "67108864")]
    cache_bytes: u64,
    /// Only the queries whose name contains this (e.g. `instant_`).
    #[arg(long)]
    only: Option<String>,
    /// With `--engine-only`: the instant queries over a fleet of
    /// `--instant-hosts` whose last hour is live in the store's head (as
    /// the console's fleet page asks them), written afresh into a
    /// temporary store, instead of over the data set's sealed tier.
    #[arg(long, requires = "engine_only")]
    instant_in_head: bool,
}

/// One query of the bench.
struct Query {
    name: String,
    expr: String,
    at: Eval,
}

#[derive(Clone, Copy)]
enum Eval {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

impl Query {
    fn path(&self) -> String {
        let s = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
        match self.at {
            Eval::Instant(t) => format!(
                "/api/v1/query?query={}&time={}",
                url_encode(&self.expr),
                s(t)
            ),
            Eval::Range { start, end, step } => format!(
                "/api/v1/query_range?query={}&start={}&end={}&step={}",
                url_encode(&self.expr),
                s(start),
                s(end),
                s(step)
            ),
        }
    }
}

/// The dashboard host's panels: PromQL as a host dashboard asks it.
const PANELS: [(&str, &str); 12] = [
    (
        "cpu_by_mode",
        r#"sum by (mode) (host_cpu_time_ratio{host="$h", mode!="idle"})"#,
    ),
    (
        "cpu_utilization",
        r#"host_cpu_utilization_ratio{host="$h"}"#,
    ),
    (
        "memory_used",
        r#"host_memory_total_bytes{host="$h"} - host_memory_available_bytes{host="$h"}"#,
    ),
    (
        "load_per_core",
        r#"host_load1{host="$h"} / on(host) host_cpu_count{host="$h"}"#,
    ),
    ("pressure", r#"host_pressure_avg10_ratio{host="$h"}"#),
    (
        "network_receive",
        r#"rate(host_network_receive_bytes_total{host="$h"}[5m])"#,
    ),
    (
        "network_transmit",
        r#"rate(host_network_transmit_bytes_total{host="$h"}[5m])"#,
    ),
    (
        "disk_read",
        r#"rate(host_disk_read_bytes_total{host="$h"}[5m])"#,
    ),
    (
        "disk_utilization",
        r#"host_disk_utilization_ratio{host="$h"}"#,
    ),
    (
        "filesystem_used",
        r#"1 - host_filesystem_available_bytes{host="$h"} / host_filesystem_size_bytes{host="$h"}"#,
    ),
    (
        "filesystem_predicted",
        r#"predict_linear(host_filesystem_available_bytes{host="$h"}[6h], 86400)"#,
    ),
    (
        "inodes_used",
        r#"1 - host_filesystem_inodes_free{host="$h"} / host_filesystem_inodes{host="$h"}"#,
    ),
];

const FLEET: [(&str, &str); 2] = [
    (
        "fleet_network_by_host",
        "sum by (host) (rate(host_network_receive_bytes_total[5m]))",
    ),
    (
        "fleet_cpu_top10",
        r#"topk(10, avg_over_time(host_cpu_utilization_ratio{cpu="total"}[5m]))"#,
    ),
];

const INSTANT: [(&str, &str); 5] = [
    (
        "instant_cpu_all",
        r#"host_cpu_utilization_ratio{cpu="total"}"#,
    ),
    (
        "instant_cpu_top10",
        r#"topk(10, host_cpu_utilization_ratio{cpu="total"})"#,
    ),
    (
        "instant_network_by_host",
        "sum by (host) (rate(host_network_receive_bytes_total[5m]))",
    ),
    (
        "instant_cpu_busy_count",
        r#"count(host_cpu_utilization_ratio{cpu="total"} > 0.5)"#,
    ),
    (
        "instant_cpu_avg_5m",
        r#"avg(avg_over_time(host_cpu_utilization_ratio{cpu="total"}[5m]))"#,
    ),
];

fn queries(shape: &Shape) -> Vec<Query> {
    let (start, end) = (shape.range_start_ms(), shape.end_ms);
    let mut out = Vec::new();
    for (name, expr) in PANELS {
        out.push(Query {
            name: format!("dashboard_{name}"),
            expr: expr.replace("$h", "host-0"),
            at: Eval::Range {
                start,
                end,
                step: 60_000,
            },
        });
    }
    for (name, expr) in FLEET {
        out.push(Query {
            name: name.to_owned(),
            expr: expr.to_owned(),
            at: Eval::Range {
                start,
                end,
                step: 300_000,
            },
        });
    }
    for (name, expr) in INSTANT {
        out.push(Query {
            name: name.to_owned(),
            expr: expr.to_owned(),
            at: Eval::Instant(shape.instant_ms()),
        });
    }
    out
}

/// The memory queries: a small answer over the whole span and over a
/// 24th of it, a large answer over the whole span.
fn memory_queries(shape: &Shape) -> Vec<Query> {
    let (start, end) = (shape.range_start_ms(), shape.end_ms);
    let range = |start| Eval::Range {
        start,
        end,
        step: 300_000,
    };
    let sum = "sum(rate(host_network_receive_bytes_total[5m]))";
    vec![
        Query {
            name: "small_answer_whole_span".into(),
            expr: sum.into(),
            at: range(start),
        },
        Query {
            name: "small_answer_24th_of_span".into(),
            expr: sum.into(),
            at: range(end - (end - start) / 24),
        },
        Query {
            name: "large_answer_whole_span".into(),
            expr: "rate(host_network_receive_bytes_total[5m])".into(),
            at: range(start),
        },
    ]
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    if args.instant_in_head {
        return live_timings(&args, temp.path());
    }
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().join("data"));
    let shape = data_set(&args, &dir)?;
    let mut queries = queries(&shape);
    if let Some(only) = &args.only {
        queries.retain(|q| q.name.contains(only.as_str()));
        ensure!(!queries.is_empty(), "no query's name contains {only:?}");
    }
    if args.engine_only {
        return engine_timings(&dir, &queries, args.runs, args.cache_bytes);
    }
    let collector_bin = match &args.collector {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("hostwatch-collector"),
    };
    let pki = servers::Pki::new(&temp.path().join("pki"), args.cache_bytes)?;
    let collector = servers::collector(&collector_bin, &dir.join("collector"), &pki)?;
    let prometheus = servers::prometheus(&args.prometheus, &dir.join("prometheus"), temp.path())?;
    compare(&collector, &prometheus, &queries, args.runs)?;
    drop(collector);
    drop(prometheus);
    memory(&collector_bin, &dir, &pki, &shape)?;
    println!("cache_bytes={}", args.cache_bytes);
    engine_timings(&dir, &queries, args.runs, args.cache_bytes)
}

/// The data set in `dir`: written there unless it holds one already.
fn data_set(args: &Args, dir: &Path) -> anyhow::Result<Shape> {
    let marker = dir.join("shape.txt");
    if marker.exists() {
        let text = std::fs::read_to_string(&marker)?;
        let shape = parse_shape(&text).with_context(|| format!("reading {}", marker.display()))?;
        println!("# promql: reusing the data set in {}", dir.display());
        ensure!(
            args.engine_only || dir.join("prometheus").exists(),
            "{} was written with --engine-only: it holds no Prometheus blocks",
            dir.display()
        );
        data::seal_finished(&dir.join("collector").join("store"))?;
        print_shape(&shape);
        return Ok(shape);
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and holds no data set of this bench",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // A whole minute, two to three minutes ago: within both systems'
    // retention and not in the store's future.
    let shape = Shape {
        fleet_hosts: args.fleet_hosts,
        instant_hosts: args.instant_hosts,
        interval_ms: i64::from(args.interval_s) * 1000,
        span_ms: i64::from(args.hours) * HOUR_MS,
        end_ms: now / 60_000 * 60_000 - 120_000,
    };
    print_shape(&shape);
    let started = Instant::now();
    let text = dir.join("samples.om.txt");
    let store_dir = dir.join("collector").join("store");
    let written = data::write(&shape, &store_dir, &text, dir)?;
    println!("generate_seconds={:.1}", started.elapsed().as_secs_f64());
    println!("samples={}", written.samples);
    println!("series={}", written.series);
    if !args.engine_only {
        let started = Instant::now();
        servers::create_blocks(&args.promtool, &text, &dir.join("prometheus"))?;
        println!("promtool_seconds={:.1}", started.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&text)?;
    std::fs::write(
        &marker,
        format!(
            "{} {} {} {} {}\n",
            shape.fleet_hosts, shape.instant_hosts, shape.interval_ms, shape.span_ms, shape.end_ms
        ),
    )?;
    Ok(shape)
}

fn parse_shape(text: &str) -> anyhow::Result<Shape> {
    let v: Vec<i64> = text
        .split_whitespace()
        .map(|w| w.parse())
        .collect::<Result<_, _>>()?;
    let [fleet, instant, interval_ms, span_ms, end_ms] = v[..] else {
        bail!("want five numbers, not {text:?}");
    };
    Ok(Shape {
        fleet_hosts: u32::try_from(fleet)?,
        instant_hosts: u32::try_from(instant)?,
        interval_ms,
        span_ms,
        end_ms,
    })
}

fn print_shape(shape: &Shape) {
    println!("fleet_hosts={}", shape.fleet_hosts);
    println!("instant_hosts={}", shape.instant_hosts);
    println!("span_hours={}", shape.span_ms / HOUR_MS);
    println!("interval_s={}", shape.interval_ms / 1000);
}

/// Times every query on both systems, alternating which goes first.
fn compare(
    collector: &servers::Server,
    prometheus: &servers::Server,
    queries: &[Query],
    runs: u32,
) -> anyhow::Result<()> {
    let (mut hw, mut prom) = (collector.client(), prometheus.client());
    // One untimed round: caches warm, answers compared.
    let mut agree = 0;
    for q in queries {
        let ours = answer(&mut hw, q, "hostwatch")?;
        let theirs = answer(&mut prom, q, "prometheus")?;
        match differences(&ours, &theirs) {
            None => agree += 1,
            Some(why) => println!("# promql: {} differs from prometheus: {why}", q.name),
        }
    }
    println!("answers_equal={agree} of {}", queries.len());
    let mut hw_ms = vec![Vec::new(); queries.len()];
    let mut prom_ms = vec![Vec::new(); queries.len()];
    for round in 0..runs {
        for (i, q) in queries.iter().enumerate() {
            let path = q.path();
            if round % 2 == 0 {
                hw_ms[i].push(timed(&mut hw, &path)?);
                prom_ms[i].push(timed(&mut prom, &path)?);
            } else {
                prom_ms[i].push(timed(&mut prom, &path)?);
                hw_ms[i].push(timed(&mut hw, &path)?);
            }
        }
    }
    let mut worst: f64 = 0.0;
    let mut within = 0;
    for (i, q) in queries.iter().enumerate() {
        let ratio = print_pair(&q.name, &hw_ms[i], &prom_ms[i]);
        worst = worst.max(ratio);
        if ratio <= TARGET_RATIO {
            within += 1;
        }
    }
    // The dashboard: all panels one after another, per round.
    let panels: Vec<usize> = (0..queries.len())
        .filter(|&i| queries[i].name.starts_with("dashboard_"))
        .collect();
    let total = |ms: &[Vec<f64>], round: usize| panels.iter().map(|&i| ms[i][round]).sum::<f64>();
    let hw_dash: Vec<f64> = (0..runs as usize).map(|r| total(&hw_ms, r)).collect();
    let prom_dash: Vec<f64> = (0..runs as usize).map(|r| total(&prom_ms, r)).collect();
    let ratio = print_pair("dashboard", &hw_dash, &prom_dash);
    worst = worst.max(ratio);
    let p99 = percentile(&hw_dash, 99.0).unwrap_or(f64::NAN);
    println!(
        "dashboard_hostwatch_p99_within_target={} target<={TARGET_DASHBOARD_P99_MS}",
        p99 <= TARGET_DASHBOARD_P99_MS
    );
    println!("ratio_worst={worst:.2} target<={TARGET_RATIO}");
    println!("queries_within_ratio_target={within} of {}", queries.len());
    Ok(())
}

/// Prints medians and p99 of both and their ratio; the ratio of medians.
fn print_pair(name: &str, hw: &[f64], prom: &[f64]) -> f64 {
    let (hw_med, prom_med) = (
        median(hw).unwrap_or(f64::NAN),
        median(prom).unwrap_or(f64::NAN),
    );
    let ratio = hw_med / prom_med;
    println!("{name}_hostwatch_ms_median={hw_med:.2}");
    println!(
        "{name}_hostwatch_ms_p99={:.2}",
        percentile(hw, 99.0).unwrap_or(f64::NAN)
    );
    println!("{name}_prometheus_ms_median={prom_med:.2}");
    println!(
        "{name}_prometheus_ms_p99={:.2}",
        percentile(prom, 99.0).unwrap_or(f64::NAN)
    );
    println!("{name}_ratio={ratio:.2} target<={TARGET_RATIO}");
    ratio
}

/// One request's time in milliseconds, request written to body read;
/// anything but 200 is an error.
fn timed(client: &mut Client, path: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (status, body) = client.get(path)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        status == 200,
        "{path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(ms)
}

/// A query's answer as comparable data: sorted (labels, points).
type Answer = Vec<(Vec<(String, String)>, Vec<(i64, f64)>)>;

fn answer(client: &mut Client, q: &Query, who: &str) -> anyhow::Result<Answer> {
    let (status, body) = client.get(&q.path())?;
    let text = String::from_utf8_lossy(&body);
    ensure!(status == 200, "{who}: {}: {status} {text}", q.name);
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    parse_answer(&json).with_context(|| format!("{who}: {}: unexpected answer {text:.300}", q.name))
}

fn parse_answer(json: &serde_json::Value) -> anyhow::Result<Answer> {
    let point = |p: &serde_json::Value| -> Option<(i64, f64)> {
        Some((
            (p[0].as_f64()? * 1000.0).round() as i64,
            p[1].as_str()?.parse().ok()?,
        ))
    };
    let result = json["data"]["result"]
        .as_array()
        .context("no data.result")?;
    let mut out: Answer = Vec::with_capacity(result.len());
    for s in result {
        let mut labels: Vec<(String, String)> = s["metric"]
            .as_object()
            .context("no metric")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        labels.sort();
        let points = match s.get("values") {
            Some(values) => values
                .as_array()
                .context("values")?
                .iter()
                .map(point)
                .collect(),
            None => point(&s["value"]).map(|p| vec![p]),
        }
        .context("a malformed point")?;
        out.push((labels, points));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Why two answers differ, or `None`: same label sets, times, and values
/// within a relative 1e-9 (NaN equal to NaN).
fn differences(a: &Answer, b: &Answer) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} series, prometheus {}", a.len(), b.len()));
    }
    let close = |x: f64, y: f64| {
        (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
    };
    a.iter().zip(b).find_map(|(x, y)| {
        if x.0 != y.0 {
            return Some(format!("labels {:?}, prometheus {:?}", x.0, y.0));
        }
        if x.1.len() != y.1.len() {
            return Some(format!(
                "{:?}: {} points, prometheus {}",
                x.0,
                x.1.len(),
                y.1.len()
            ));
        }
        x.1.iter()
            .zip(&y.1)
            .find(|(p, q)| p.0 != q.0 || !close(p.1, q.1))
            .map(|(p, q)| format!("{:?}: {p:?}, prometheus {q:?}", x.0))
    })
}

/// Peak resident growth of a fresh collector over one query, for each
/// memory query.
fn memory(binary: &Path, dir: &Path, pki: &servers::Pki, shape: &Shape) -> anyhow::Result<()> {
    for q in memory_queries(shape) {
        let collector = servers::collector(binary, &dir.join("collector"), pki)?;
        let probe = collector.probe();
        let mut client = collector.client();
        // Warm: the connection, the handshake, the query path's first use.
        timed(&mut client, "/api/v1/query?query=1")?;
        std::thread::sleep(Duration::from_millis(200));
        reset_peak(&probe)?;
        let (before, _) = probe.rss_bytes()?;
        let (status, body) = client.get(&q.path())?;
        ensure!(status == 200, "{}: {status}", q.name);
        let (_, peak) = probe.rss_bytes()?;
        let answer = parse_answer(&serde_json::from_slice(&body)?)?;
        let points: usize = answer.iter().map(|s| s.1.len()).sum();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!("memory_{}_points={points}", q.name);
        println!("memory_{}_json_mib={:.2}", q.name, mib(body.len() as u64));
        println!(
            "memory_{}_rss_growth_mib={:.2}",
            q.name,
            mib(peak.saturating_sub(before))
        );
    }
    Ok(())
}

/// Resets the process' peak resident size (VmHWM) to its current size.
fn reset_peak(probe: &Probe) -> anyhow::Result<()> {
    let path = format!("/proc/{}/clear_refs", probe.pid());
    std::fs::write(&path, "5").with_context(|| format!("writing {path}"))
}

/// The queries through the engine in this process: no HTTP, no JSON.
fn engine_timings(
    dir: &Path,
    queries: &[Query],
    runs: u32,
    cache_bytes: u64,
) -> anyhow::Result<()> {
    let options = Options {
        maintenance_interval: None,
        cache_bytes,
        ..Options::default()
    };
    let store = Store::open(&dir.join("collector").join("store"), options)?;
    time_engine(&store, queries, runs)
}

/// `--instant-in-head`: the instant queries through the engine alone, at
/// the newest sample of a fleet whose data is all in the store's head.
fn live_timings(args: &Args, temp: &Path) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let end_ms = now / 60_000 * 60_000;
    let interval_ms = i64::from(args.interval_s) * 1000;
    let started = Instant::now();
    let (store, written) =
        data::write_live(args.instant_hosts, interval_ms, end_ms, &temp.join("live"))?;
    println!("live_hosts={}", args.instant_hosts);
    println!(
        "live_generate_seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    println!("live_samples={}", written.samples);
    println!("live_series={}", written.series);
    let mut queries: Vec<Query> = INSTANT
        .iter()
        .map(|(name, expr)| Query {
            name: format!("{name}_in_head"),
            expr: (*expr).to_owned(),
            at: Eval::Instant(end_ms),
        })
        .collect();
    if let Some(only) = &args.only {
        queries.retain(|q| q.name.contains(only.as_str()));
        ensure!(!queries.is_empty(), "no query's name contains {only:?}");
    }
    time_engine(&store, &queries, args.runs)
}

/// Each query's median time through the engine alone, after one untimed
/// evaluation.
fn time_engine(store: &Store, queries: &[Query], runs: u32) -> anyhow::Result<()> {
    let engine = Engine::default();
    let eval = |q: &Query| -> anyhow::Result<Value> {
        Ok(match q.at {
            Eval::Instant(t) => engine.instant(store, &q.expr, t)?,
            Eval::Range { start, end, step } => engine.range(store, &q.expr, start, end, step)?,
        })
    };
    for q in queries {
        if let Value::Vector(samples) = eval(q)? {
            println!("{}_answer_samples={}", q.name, samples.len());
        }
        let mut ms = Vec::with_capacity(runs as usize);
        // CPU time too: on a busy machine it moves less than wall time.
        let mut cpu_ms = Vec::with_capacity(runs as usize);
        for _ in 0..runs {
            let (started, cpu) = (Instant::now(), thread_cpu_ns()?);
            std::hint::black_box(eval(q)?);
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            cpu_ms.push((thread_cpu_ns()? - cpu) as f64 / 1e6);
        }
        println!(
            "{}_engine_ms_median={:.2}",
            q.name,
            median(&ms).unwrap_or(f64::NAN)
        );
        println!(
            "{}_engine_cpu_ms_median={:.2}",
            q.name,
            median(&cpu_ms).unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        parse_answer(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn answers_of_both_shapes_compare_by_labels_times_and_values() {
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"host":"b"},"values":[[1,"2"],[2,"NaN"]]},
            {"metric":{"host":"a","__name__":"m"},"values":[[1,"1"]]}]}}"#;
        let a = answer(matrix);
        assert_eq!(a[0].0[1], ("host".to_owned(), "a".to_owned()), "sorted");
        assert_eq!(differences(&a, &answer(matrix)), None, "NaN equals NaN");
        let vector = |v: &str| {
            answer(&format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"host":"a"}},"value":[1.5,"{v}"]}}]}}}}"#
            ))
        };
        assert_eq!(vector("1")[0].1, vec![(1500, 1.0)]);
        assert_eq!(differences(&vector("1"), &vector("1.0000000000001")), None);
        for other in [vector("1.001"), vector("NaN"), answer(matrix)] {
            assert!(differences(&vector("1"), &other).is_some(), "{other:?}");
        }
        let error = r#"{"status":"error","errorType":"bad_data","error":"x"}"#;
        assert!(parse_answer(&serde_json::from_str(error).unwrap()).is_err());
    }

    #[test]
    fn the_shape_file_reads_back_and_refuses_what_it_does_not_hold() {
        let shape = parse_shape("1000 10000 10000 86400000 1765000000000\n").unwrap();
        assert_eq!(
            shape.instant_ms(),
            1_765_000_000_000 - 86_400_000 - data::INSTANT_GAP_MS
        );
        for bad in ["", "1 2 3 4", "1 2 3 4 x", "-1 2 3 4 5"] {
            assert!(parse_shape(bad).is_err(), "{bad:?}");
        }
    }

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let argv = ["promql"].iter().chain(extra);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        for (flag, bad) in [
            ("--fleet-hosts", "0"),
            ("--instant-hosts", "x"),
            ("--hours", "0"),
            ("--interval-s", "0"),
            ("--runs", "0"),
            ("--cache-bytes", "-5"),
        ] {
            let e = args(&[flag, bad]).err().expect("refused");
            assert!(
                e.to_string().contains(flag) || e.to_string().contains(bad),
                "{flag} {bad}: {e}"
            );
        }
    }

    /// The whole data path on a small data set, without the servers: the
    /// store is written, sealed, reopened, and every query answers.
    #[test]
    fn a_small_data_set_answers_every_query_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let small = [
            "--fleet-hosts",
            "2",
            "--instant-hosts",
            "3",
            "--hours",
            "1",
            "--runs",
            "1",
            "--engine-only",
            "--dir",
        ];
        let run_with = |extra: &[&str]| {
            let mut argv = small.to_vec();
            argv.push(data.to_str().unwrap());
            argv.extend_from_slice(extra);
            run(args(&argv).unwrap())
        };
        run_with(&[]).unwrap();
        // Reused, not rewritten; a filter that matches nothing is refused.
        run_with(&["--only", "fleet_"]).unwrap();
        let e = run(args(
            &[
                &small[..small.len() - 2],
                &["--dir", data.to_str().unwrap()],
            ]
            .concat(),
        )
        .unwrap())
        .unwrap_err();
        assert!(format!("{e:#}").contains("--engine-only"), "{e:#}");
        let e = run_with(&["--only", "no_such_query"]).unwrap_err();
        assert!(format!("{e:#}").contains("no_such_query"), "{e:#}");
        // A directory holding something else is not overwritten.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("file"), "x").unwrap();
        let mut argv = small.to_vec();
        argv.push(other.to_str().unwrap());
        let e = run(args(&argv).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("holds no data set"), "{e:#}");
    }
}
