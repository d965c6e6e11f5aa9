//! Compatibility with Prometheus itself: the same agent-like
//! samples loaded into Debian's `prometheus` 2.42 (blocks written by
//! `promtool tsdb create-blocks-from openmetrics`) and into a hostwatch
//! store, then every query of `tests/compat/queries.txt` asked of both,
//! each over its HTTP API: Prometheus' over HTTP, a hostwatch collector's
//! (the `e2e-collector` program, on the store's directory) over HTTPS with
//! an operator certificate. Answers must have the same type, label sets,
//! timestamps and values within a relative 1e-9 (NaN equal to NaN). Run by
//! `tests/compat/run.sh`, which installs Prometheus where it is missing.
//!
//! Layout: the data ([`data`]), the corpus ([`corpus`]), each side's
//! answer normalised to an [`Answer`] ([`prometheus_answer`],
//! [`Collector::answer`]), and the comparison ([`differences`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::Role;
use hostwatch_tests::{Process, TestPki, free_port};
use hostwatch_tsdb::{Batch, Label, Options, Point, SeriesInput, Store};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The data spans this many seconds, ending at `E` (see [`data_end_s`]).
const SPAN_S: i64 = 3 * 3600;

#[test]
#[ignore = "needs Debian's prometheus 2.42: tests/compat/run.sh"]
fn hostwatch_answers_as_prometheus_does() {
    let end_s = data_end_s();
    println!("compat: data ends at E = {end_s} (COMPAT_DATA_END)");
    let series = data::series(end_s);
    let corpus = corpus::parse(include_str!("../compat/queries.txt"), end_s);
    assert!(corpus.len() >= 200, "{} corpus lines", corpus.len());

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("hostwatch");
    write_store(&data_dir.join("store"), &series);
    let collector = Collector::start(&data_dir);
    let prometheus = Prometheus::start(dir.path(), &series);

    let (mut asked, mut equal) = (0, 0);
    let mut report = String::new();
    for query in &corpus {
        for eval in &query.evals {
            asked += 1;
            let want = prometheus_answer(&prometheus, &query.expr, eval);
            let got = collector.answer(&query.expr, eval);
            match differences(&query.expr, &got, &want) {
                None => equal += 1,
                Some(why) => {
                    let _ = writeln!(
                        report,
                        "line {}: {} {}\n  {why}\n  prometheus: {}\n  hostwatch:  {}",
                        query.line,
                        eval.show(end_s),
                        query.expr,
                        shorten(&want),
                        shorten(&got)
                    );
                }
            }
        }
    }
    print!("{report}");
    println!(
        "compat: {equal} of {asked} queries equal ({} corpus lines)",
        corpus.len()
    );
    assert!(
        equal == asked,
        "{} queries differ (listed above)",
        asked - equal
    );
}

/// The data's last instant (seconds): a whole minute, two to three minutes
/// ago, so that Prometheus' retention keeps it and hostwatch's store does
/// not take it for the future; both sides are given the same times.
/// `COMPAT_DATA_END` (seconds, printed by every run) replays a run: where
/// E falls against subquery steps varies from run to run.
fn data_end_s() -> i64 {
    if let Some(end) = std::env::var_os("COMPAT_DATA_END") {
        return end
            .to_str()
            .and_then(|s| s.parse().ok())
            .expect("COMPAT_DATA_END: seconds since the epoch");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now / 60 * 60 - 120
}

/// One series of the data set: metric, labels (with `host`), and points
/// (seconds, value), oldest first.
struct DataSeries {
    metric: &'static str,
    labels: Vec<(&'static str, String)>,
    points: Vec<(i64, f64)>,
}

/// Agent-like samples, deterministic: five hosts sampled every 10 or 15 s
/// at different phases, one starting late and stopping early and one
/// stopping an hour before the end (both go stale mid-range), counters
/// that reset (a reboot), ratios in [0, 1], gauges, constants and flapping
/// 0/1 gauges; names and labels as docs/metrics.md has them.
mod data {
    use super::{DataSeries, SPAN_S};

    /// A host: name, sampling interval and phase (s), first and last
    /// sample (s after the start), when its counters reset (s after the
    /// start), cores, memory (GiB).
    struct Host {
        name: &'static str,
        every: i64,
        phase: i64,
        from: i64,
        to: i64,
        reboot: Option<i64>,
        cores: u32,
        memory_gib: f64,
    }

    const HOSTS: [Host; 5] = [
        Host {
            name: "web-1",
            every: 15,
            phase: 0,
            from: 0,
            to: SPAN_S,
            reboot: Some(5400),
            cores: 2,
            memory_gib: 8.0,
        },
        Host {
            name: "web-2",
            every: 15,
            phase: 5,
            from: 0,
            to: SPAN_S,
            reboot: None,
            cores: 4,
            memory_gib: 16.0,
        },
        Host {
            name: "db-1",
            every: 10,
            phase: 0,
            from: 0,
            to: SPAN_S,
            reboot: Some(7777),
            cores: 8,
            memory_gib: 32.0,
        },
        Host {
            name: "batch-1",
            every: 15,
            phase: 0,
            from: 3600,
            to: SPAN_S - 3000,
            reboot: None,
            cores: 1,
            memory_gib: 4.0,
        },
        Host {
            name: "edge-1",
            every: 10,
            phase: 3,
            from: 0,
            to: SPAN_S - 3607,
            reboot: Some(1800),
            cores: 6,
            memory_gib: 12.0,
        },
    ];

    /// A value in [0, 1) that depends only on `key` and `t` (splitmix64
    /// over an FNV-1a hash of the key).
    fn noise(key: &str, t: i64) -> f64 {
        let seed = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut x = (seed ^ t as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Every series, with sample times in seconds since the epoch; the
    /// data ends at `end_s`.
    pub(super) fn series(end_s: i64) -> Vec<DataSeries> {
        let start_s = end_s - SPAN_S;
        let mut out = Vec::new();
        for host in &HOSTS {
            let times: Vec<i64> = (0..)
                .map(|i| host.phase + i * host.every)
                .skip_while(|t| *t < host.from)
                .take_while(|t| *t <= host.to)
                .collect();
            let sampled = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
                times.iter().map(|&t| (t, f(t))).collect()
            };
            let mut add =
                |metric: &'static str, labels: &[(&'static str, &str)], points: Vec<(i64, f64)>| {
                    let mut all = vec![("host", host.name.to_owned())];
                    all.extend(labels.iter().map(|(n, v)| (*n, (*v).to_owned())));
                    out.push(DataSeries {
                        metric,
                        labels: all,
                        points: points.into_iter().map(|(t, v)| (start_s + t, v)).collect(),
                    });
                };
            let key = |what: &str| format!("{}/{what}", host.name);
            // A counter growing by about `per_s` a second, from 0 again
            // at the first sample after the host's reboot.
            let counter = |what: &str, per_s: f64| {
                let key = key(what);
                let mut total = (1000.0 * noise(&key, -1)).floor();
                let mut rebooted = false;
                let mut points = Vec::with_capacity(times.len());
                for &t in &times {
                    if host.reboot.is_some_and(|r| t >= r) && !rebooted {
                        rebooted = true;
                        total = 0.0;
                    }
                    total += (per_s * host.every as f64 * (0.5 + noise(&key, t))).round();
                    points.push((t, total));
                }
                points
            };
            // Wanders in [0.05, 0.95]: a per-minute level plus jitter.
            let ratio = |what: &str| {
                let key = key(what);
                sampled(&|t| 0.05 + 0.45 * noise(&key, t / 60) + 0.45 * noise(&key, t))
            };

            for cpu in ["total", "0", "1"] {
                add(
                    "host_cpu_utilization_ratio",
                    &[("cpu", cpu)],
                    ratio(&format!("cpu{cpu}")),
                );
            }
            for mode in ["user", "system", "iowait", "idle"] {
                add("host_cpu_time_ratio", &[("mode", mode)], ratio(mode));
            }
            let cores = f64::from(host.cores);
            add("host_cpu_count", &[], sampled(&|_| cores));
            let load = key("load");
            add(
                "host_load1",
                &[],
                sampled(&|t| cores * (0.2 + noise(&load, t))),
            );
            let memory = host.memory_gib * (1_u64 << 30) as f64;
            add("host_memory_total_bytes", &[], sampled(&|_| memory));
            let available = key("available");
            add(
                "host_memory_available_bytes",
                &[],
                sampled(&|t| (memory * (0.3 + 0.4 * noise(&available, t))).round()),
            );
            let boot = host.reboot.unwrap_or(-86_400);
            add(
                "host_uptime_seconds",
                &[],
                sampled(&|t| (if t >= boot { t - boot } else { t + 86_400 }) as f64),
            );
            add(
                "host_context_switches_total",
                &[],
                counter("switches", 4000.0),
            );
            for (device, per_s) in [("eth0", 125_000.0), ("lo", 900.0)] {
                let labels = [("device", device)];
                let rx = counter(&format!("rx{device}"), per_s);
                add("host_network_receive_bytes_total", &labels, rx);
                let tx = counter(&format!("tx{device}"), per_s / 3.0);
                add("host_network_transmit_bytes_total", &labels, tx);
            }
            let labels = [("device", "sda")];
            add(
                "host_disk_read_bytes_total",
                &labels,
                counter("reads", 2_000_000.0),
            );
            let disk = key("disk");
            add(
                "host_disk_utilization_ratio",
                &labels,
                sampled(&|t| noise(&disk, t / 30)),
            );
            for (mountpoint, device, fstype, size_gib, fill_per_s) in [
                ("/", "sda1", "ext4", 50.0, 900.0),
                ("/var", "sdb1", "xfs", 200.0, 52_000.0),
            ] {
                let labels = [
                    ("mountpoint", mountpoint),
                    ("device", device),
                    ("fstype", fstype),
                ];
                let size = size_gib * (1_u64 << 30) as f64;
                add("host_filesystem_size_bytes", &labels, sampled(&|_| size));
                let wobble = key(mountpoint);
                let available = |t: i64| {
                    let wobble = 4096.0 * (1000.0 * noise(&wobble, t)).floor();
                    (size * 0.6 - fill_per_s * t as f64 + wobble).round()
                };
                add(
                    "host_filesystem_available_bytes",
                    &labels,
                    sampled(&available),
                );
            }
            add(
                "host_process_running",
                &[("name", "sshd")],
                sampled(&|_| 1.0),
            );
            let cron = key("cron");
            add(
                "host_process_running",
                &[("name", "cron")],
                sampled(&|t| {
                    if noise(&cron, t / 300) < 0.3 {
                        0.0
                    } else {
                        1.0
                    }
                }),
            );
            // A process that runs for a while on one host only.
            if host.name == "db-1" {
                let backup = times
                    .iter()
                    .filter(|t| (6000..=8400).contains(*t))
                    .map(|&t| (t, 1.0))
                    .collect();
                add("host_process_running", &[("name", "backup")], backup);
            }
        }
        out
    }
}

/// The corpus: one query a line, `instant T... | EXPR` (evaluated at each
/// time T) or `range START END STEP | EXPR`, times in seconds relative to
/// the data's end `E`; in EXPR, `{E}` and `{E-N}`/`{E+N}` stand for
/// absolute times (for `@`). `#` starts a comment line.
mod corpus {
    /// One line of the corpus.
    pub(super) struct Query {
        pub(super) line: usize,
        pub(super) expr: String,
        pub(super) evals: Vec<Eval>,
    }

    /// Where a query is evaluated, in milliseconds since the epoch.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Eval {
        Instant(i64),
        Range { start: i64, end: i64, step: i64 },
    }

    impl Eval {
        /// The evaluation, with times relative to the data's end.
        pub(super) fn show(&self, end_s: i64) -> String {
            let rel = |ms: i64| format!("E{:+}", (ms - end_s * 1000) as f64 / 1000.0);
            match *self {
                Eval::Instant(t) => format!("instant at {}", rel(t)),
                Eval::Range { start, end, step } => format!(
                    "range {}..{} step {}s",
                    rel(start),
                    rel(end),
                    step as f64 / 1000.0
                ),
            }
        }
    }

    pub(super) fn parse(text: &str, end_s: i64) -> Vec<Query> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, expr) = line
                .split_once(" | ")
                .unwrap_or_else(|| panic!("queries.txt:{line_no}: no ` | `"));
            let mut words = head.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let times: Vec<i64> = words
                .map(|w| {
                    let s: f64 = w
                        .parse()
                        .unwrap_or_else(|e| panic!("queries.txt:{line_no}: {w}: {e}"));
                    (s * 1000.0).round() as i64
                })
                .collect();
            let evals = match (kind, times.as_slice()) {
                ("instant", ts) if !ts.is_empty() => {
                    ts.iter().map(|t| Eval::Instant(end_s * 1000 + t)).collect()
                }
                ("range", &[start, end, step]) => vec![Eval::Range {
                    start: end_s * 1000 + start,
                    end: end_s * 1000 + end,
                    step,
                }],
                _ => panic!("queries.txt:{line_no}: want `instant T...` or `range START END STEP`"),
            };
            out.push(Query {
                line: line_no,
                expr: absolute_times(expr, end_s, line_no),
                evals,
            });
        }
        out
    }

    /// `expr` with each `{E}`, `{E-N}` and `{E+N}` replaced by that time
    /// in seconds since the epoch.
    fn absolute_times(expr: &str, end_s: i64, line_no: usize) -> String {
        let mut out = String::new();
        let mut rest = expr;
        while let Some(open) = rest.find("{E") {
            let close = open
                + rest[open..]
                    .find('}')
                    .unwrap_or_else(|| panic!("queries.txt:{line_no}: unclosed {{E"));
            let offset = &rest[open + 2..close];
            let offset: i64 = if offset.is_empty() {
                0
            } else {
                offset
                    .trim_start_matches('+')
                    .parse()
                    .unwrap_or_else(|e| panic!("queries.txt:{line_no}: {offset}: {e}"))
            };
            out.push_str(&rest[..open]);
            out.push_str(&(end_s + offset).to_string());
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

use corpus::Eval;

/// A query's answer, as both sides give it: the result type and its
/// data, labels as sorted maps, times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Scalar(i64, f64),
    String(i64, String),
    /// In the order given.
    Vector(Vec<(Labels, i64, f64)>),
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
    /// The error type (`bad_data`, `execution` ...) and message.
    Error(String, String),
}

type Labels = BTreeMap<String, String>;

/// Writes a hostwatch store in `dir` holding `series`, one batch per
/// host, maintained once (as on a running collector, finished windows are
/// then read from sealed chunks and the newest from the head), and closes
/// it for the collector to open.
fn write_store(dir: &Path, series: &[DataSeries]) {
    let options = Options {
        maintenance_interval: None,
        ..Options::default()
    };
    let store = Store::open(dir, options).unwrap();
    let mut batches: BTreeMap<&str, Vec<SeriesInput>> = BTreeMap::new();
    for s in series {
        let host = s.labels.iter().find(|l| l.0 == "host").unwrap();
        batches.entry(&host.1).or_default().push(SeriesInput {
            metric: s.metric.to_owned(),
            labels: s
                .labels
                .iter()
                .filter(|l| l.0 != "host")
                .map(|(n, v)| Label::new(*n, v))
                .collect(),
            points: s
                .points
                .iter()
                .map(|&(t, value)| Point {
                    t_ms: t * 1000,
                    value,
                })
                .collect(),
        });
    }
    for (seq, (host, series)) in batches.into_iter().enumerate() {
        let batch = Batch {
            host: host.to_owned(),
            source: 1,
            seq: seq as u64 + 1,
            series,
            processes: vec![],
            malformed: 0,
        };
        let outcome = store.append(&batch).unwrap();
        assert_eq!(outcome.rejected.total(), 0, "{:?}", outcome.first_error);
    }
    let report = store.maintain().unwrap();
    assert!(report.sealed_chunks > 0, "{report:?}");
}

/// A hostwatch collector (the `e2e-collector` program) serving its HTTPS
/// API over a data directory, killed when dropped; asked as Prometheus is
/// asked, with an operator certificate.
struct Collector {
    _process: Process,
    _pki: TestPki,
    client: reqwest::Client,
    port: u16,
    runtime: tokio::runtime::Runtime,
}

impl Collector {
    /// Starts the collector on `data_dir` and waits (bounded) until ready.
    fn start(data_dir: &Path) -> Collector {
        let pki = TestPki::new();
        let server = pki.files(Role::Collector, "compat");
        let port = free_port();
        let config = data_dir.with_extension("toml");
        let text = format!(
            "listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
             [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            free_port(),
            data_dir.display().to_string(),
            server.ca.display().to_string(),
            server.cert.display().to_string(),
            server.key.display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        let program = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
        let process = Process::start(program, &config, data_dir.with_extension("log"));
        let operator = pki.files(Role::Operator, "compat");
        let tls = hostwatch_pki::client_config(&operator).unwrap().0;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.as_ref().clone())
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .timeout(Duration::from_secs(150))
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let collector = Collector {
            _process: process,
            _pki: pki,
            client,
            port,
            runtime,
        };
        for _ in 0..600 {
            if collector
                .get("/-/ready")
                .is_ok_and(|(status, _)| status == 200)
            {
                return collector;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the collector is not ready");
    }

    /// `GET path` over HTTPS: the status and the body.
    fn get(&self, path: &str) -> reqwest::Result<(u16, String)> {
        let url = format!("https://localhost:{}{path}", self.port);
        self.runtime.block_on(async {
            let response = self.client.get(url).send().await?;
            let status = response.status().as_u16();
            Ok((status, response.text().await?))
        })
    }

    /// hostwatch's answer, over its HTTP API.
    fn answer(&self, expr: &str, eval: &Eval) -> Answer {
        let (_, body) = self
            .get(&api_path(expr, eval))
            .unwrap_or_else(|e| panic!("collector: {e}"));
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the collector answered {body:?}: {e}"));
        parse_prometheus(&json)
            .unwrap_or_else(|| panic!("unexpected answer from the collector: {body}"))
    }
}

/// A Prometheus server on loopback over blocks of the data, killed when
/// dropped (also when the test panics).
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// Writes `series` as OpenMetrics text, has promtool turn it into
    /// blocks, and starts Prometheus on them; waits (bounded) until ready.
    fn start(dir: &Path, series: &[DataSeries]) -> Prometheus {
        let text = dir.join("samples.om.txt");
        std::fs::write(&text, openmetrics(series)).unwrap();
        let data = dir.join("prometheus");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&text)
            .arg(&data)
            .output()
            .expect("promtool (tests/compat/run.sh installs it)");
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // No scrape jobs: the blocks are the only data.
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "scrape_configs: []\n").unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=15d")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus (tests/compat/run.sh installs it)");
        let mut prometheus = Prometheus { child, port, log };
        for _ in 0..600 {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log_tail());
            }
            if http_get(port, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                return prometheus;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus not ready:\n{}", prometheus.log_tail());
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `series` as OpenMetrics text: one line a sample, times in seconds.
fn openmetrics(series: &[DataSeries]) -> String {
    let mut out = String::new();
    for s in series {
        let labels = s
            .labels
            .iter()
            .map(|(n, v)| format!("{n}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",");
        for (t, v) in &s.points {
            // `{}` prints the shortest decimal that reads back as the
            // same f64, which Prometheus' parser does.
            let _ = writeln!(out, "{}{{{labels}}} {v} {t}", s.metric);
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The query API's path and query string for `expr` evaluated at `eval`.
fn api_path(expr: &str, eval: &Eval) -> String {
    let seconds = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    match *eval {
        Eval::Instant(t) => format!(
            "/api/v1/query?query={}&time={}",
            url_encode(expr),
            seconds(t)
        ),
        Eval::Range { start, end, step } => format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            url_encode(expr),
            seconds(start),
            seconds(end),
            seconds(step)
        ),
    }
}

/// Prometheus' answer, over its HTTP API.
fn prometheus_answer(prometheus: &Prometheus, expr: &str, eval: &Eval) -> Answer {
    let (_, body) = http_get(prometheus.port, &api_path(expr, eval))
        .unwrap_or_else(|e| panic!("prometheus: {e}\n{}", prometheus.log_tail()));
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("prometheus answered {body:?}: {e}"));
    parse_prometheus(&json).unwrap_or_else(|| panic!("unexpected answer from prometheus: {body}"))
}

/// The API's JSON as an [`Answer`]; `None` when it is not the API's shape.
fn parse_prometheus(json: &serde_json::Value) -> Option<Answer> {
    if json["status"] == "error" {
        return Some(Answer::Error(
            json["errorType"].as_str()?.to_owned(),
            json["error"].as_str()?.to_owned(),
        ));
    }
    let data = &json["data"];
    let point = |p: &serde_json::Value| -> Option<(i64, f64)> {
        let t = (p[0].as_f64()? * 1000.0).round() as i64;
        Some((t, p[1].as_str()?.parse().ok()?))
    };
    let labels = |m: &serde_json::Value| -> Option<Labels> {
        m.as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    };
    let result = &data["result"];
    Some(match data["resultType"].as_str()? {
        "scalar" => {
            let (t, v) = point(result)?;
            Answer::Scalar(t, v)
        }
        "string" => Answer::String(
            (result[0].as_f64()? * 1000.0).round() as i64,
            result[1].as_str()?.to_owned(),
        ),
        "vector" => Answer::Vector(
            result
                .as_array()?
                .iter()
                .map(|s| {
                    let (t, v) = point(&s["value"])?;
                    Some((labels(&s["metric"])?, t, v))
                })
                .collect::<Option<_>>()?,
        ),
        "matrix" => Answer::Matrix(
            result
                .as_array()?
                .iter()
                .map(|s| {
                    let points = s["values"]
                        .as_array()?
                        .iter()
                        .map(point)
                        .collect::<Option<_>>()?;
                    Some((labels(&s["metric"])?, points))
                })
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// A GET over HTTP/1.0 on loopback (the server closes the connection
/// after the body, which is neither chunked nor compressed): the status
/// and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let bad = || std::io::Error::other(format!("not an HTTP response: {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// `s` percent-encoded for a URL's query string.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why `got` (hostwatch) differs from `want` (Prometheus), or `None`.
/// Instant vectors are compared in order when the query's outermost
/// operation orders them (`sort`, `sort_desc`, `topk`, `bottomk`), as
/// sets otherwise; matrices as sets.
fn differences(expr: &str, got: &Answer, want: &Answer) -> Option<String> {
    match (got, want) {
        (Answer::Error(a, _), Answer::Error(b, _)) if a == b => None,
        (Answer::Scalar(t1, v1), Answer::Scalar(t2, v2)) => {
            (t1 != t2 || !close(*v1, *v2)).then(|| "scalars differ".to_owned())
        }
        (Answer::String(t1, s1), Answer::String(t2, s2)) => {
            (t1 != t2 || s1 != s2).then(|| "strings differ".to_owned())
        }
        (Answer::Vector(a), Answer::Vector(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            if !ordered(expr) {
                a.sort_by(|x, y| x.0.cmp(&y.0));
                b.sort_by(|x, y| x.0.cmp(&y.0));
            }
            if a.len() != b.len() {
                return Some(format!("{} samples, want {}", a.len(), b.len()));
            }
            a.iter().zip(&b).find_map(|(x, y)| {
                (x.0 != y.0 || x.1 != y.1 || !close(x.2, y.2))
                    .then(|| format!("first difference: {x:?}, want {y:?}"))
            })
        }
        (Answer::Matrix(a), Answer::Matrix(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            if a.len() != b.len() {
                return Some(format!("{} series, want {}", a.len(), b.len()));
            }
            a.iter().zip(&b).find_map(|(x, y)| {
                if x.0 != y.0 {
                    return Some(format!("labels {:?}, want {:?}", x.0, y.0));
                }
                if x.1.len() != y.1.len() {
                    return Some(format!(
                        "{:?}: {} points, want {}",
                        x.0,
                        x.1.len(),
                        y.1.len()
                    ));
                }
                x.1.iter().zip(&y.1).find_map(|(p, q)| {
                    (p.0 != q.0 || !close(p.1, q.1))
                        .then(|| format!("{:?}: point {p:?}, want {q:?}", x.0))
                })
            })
        }
        _ => Some("result types differ".to_owned()),
    }
}

/// Whether the expression's outermost operation orders an instant vector.
fn ordered(expr: &str) -> bool {
    use promql_parser::parser::{Expr, token};
    let mut expr = promql_parser::parser::parse(expr).ok();
    while let Some(Expr::Paren(p)) = expr {
        expr = Some(*p.expr);
    }
    match expr {
        Some(Expr::Call(call)) => ["sort", "sort_desc"].contains(&call.func.name),
        Some(Expr::Aggregate(agg)) => [token::T_TOPK, token::T_BOTTOMK].contains(&agg.op.id()),
        _ => false,
    }
}

/// Equal within a relative 1e-9; NaN equals NaN, infinities themselves.
fn close(a: f64, b: f64) -> bool {
    // Infinities only in the first two cases: in the third, Inf would
    // be within Inf of anything.
    (a.is_nan() && b.is_nan())
        || a == b
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
}

/// An answer in a few hundred characters.
fn shorten(answer: &Answer) -> String {
    let text = format!("{answer:?}");
    match text.char_indices().nth(600) {
        Some((i, _)) => format!("{} ...", &text[..i]),
        None => text,
    }
}

/// The comparison and the parsing of Prometheus' answers, without
/// Prometheus: a harness that found everything equal would prove nothing.
#[test]
fn the_comparison_finds_each_kind_of_difference() {
    let labels = |host: &str| -> Labels { [("host".to_owned(), host.to_owned())].into() };
    let vector = |values: &[(&str, f64)]| {
        Answer::Vector(values.iter().map(|(h, v)| (labels(h), 1000, *v)).collect())
    };
    let a_b = vector(&[("a", 1.0), ("b", 2.0)]);
    let b_a = vector(&[("b", 2.0), ("a", 1.0)]);
    assert_eq!(differences("m", &a_b, &b_a), None, "sets");
    assert!(differences("sort(m)", &a_b, &b_a).is_some(), "order");
    assert!(differences("(topk(2, m))", &a_b, &b_a).is_some(), "order");
    assert_eq!(differences("topk(2, m) + 1", &a_b, &b_a), None);
    let near = vector(&[("a", 1.0 + 1e-12), ("b", 2.0)]);
    assert_eq!(differences("m", &a_b, &near), None, "within 1e-9");
    for other in [
        vector(&[("a", 1.0 + 1e-8), ("b", 2.0)]),
        vector(&[("a", 1.0), ("c", 2.0)]),
        vector(&[("a", 1.0)]),
        vector(&[("a", f64::NAN), ("b", 2.0)]),
        Answer::Vector(vec![(labels("a"), 2000, 1.0), (labels("b"), 1000, 2.0)]),
        Answer::Matrix(vec![(labels("a"), vec![(1000, 1.0)])]),
        Answer::Error("bad_data".into(), "no".into()),
    ] {
        assert!(differences("m", &a_b, &other).is_some(), "{other:?}");
    }
    let nan = Answer::Scalar(0, f64::NAN);
    assert_eq!(differences("m", &nan, &nan), None, "NaN equals NaN");
    let inf = Answer::Scalar(0, f64::INFINITY);
    assert_eq!(differences("m", &inf, &inf), None);
    for other in [f64::NEG_INFINITY, f64::MAX, 1.0, f64::NAN] {
        assert!(
            differences("m", &inf, &Answer::Scalar(0, other)).is_some(),
            "{other}"
        );
        assert!(
            differences("m", &Answer::Scalar(0, other), &inf).is_some(),
            "{other}"
        );
    }
    let matrix = |points: Vec<(i64, f64)>| Answer::Matrix(vec![(labels("a"), points)]);
    let m = matrix(vec![(0, 1.0), (15_000, 2.0)]);
    assert_eq!(differences("m", &m, &m.clone()), None);
    assert!(differences("m", &m, &matrix(vec![(0, 1.0)])).is_some());
    assert!(differences("m", &m, &matrix(vec![(0, 1.0), (15_001, 2.0)])).is_some());
    let errors = |t: &str| Answer::Error(t.into(), String::new());
    assert_eq!(
        differences("m", &errors("execution"), &errors("execution")),
        None
    );
    assert!(differences("m", &errors("bad_data"), &errors("execution")).is_some());

    let json = |text: &str| parse_prometheus(&serde_json::from_str(text).unwrap()).unwrap();
    assert_eq!(
        json(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#),
        Answer::Scalar(1500, f64::INFINITY)
    );
    assert_eq!(
        json(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"host":"a"},"value":[1,"2"]}]}}"#
        ),
        vector(&[("a", 2.0)])
    );
    assert_eq!(
        json(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"host":"a"},"values":[[0,"1"],[15,"2"]]}]}}"#
        ),
        m
    );
    assert_eq!(
        json(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
        Answer::Error("bad_data".into(), "parse error".into())
    );
    assert_eq!(url_encode("a{b=\"c d\"}"), "a%7Bb%3D%22c%20d%22%7D");
}
