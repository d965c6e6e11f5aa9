//! Forwarding into the real receivers Debian ships: `prometheus` 2.42
//! (`--web.enable-remote-write-receiver`) and `victoria-metrics` 1.79
//! (single node), both on loopback over temporary directories. A real
//! collector process forwards to both while real agent processes stream
//! to it; it is SIGKILLed mid-forwarding and started again; once the
//! agents have stopped, every series the collector stores is found at
//! each receiver with the same samples (count and times equal, values
//! equal), so nothing was skipped across the kill. Run by
//! `tests/remote_write/run.sh`, which installs both where missing.
//!
//! At least once means a restart may send some samples again: the
//! receivers are set to take them (Prometheus with an out-of-order window,
//! VictoriaMetrics deduplicating equal timestamps), as docs/operations.md
//! says receivers must be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::Role;
use hostwatch_proto::v1::{PromqlRequest, promql_request, promql_response};
use hostwatch_tests::{Process, TestPki, eventually, free_port, operator};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const HOSTS: [&str; 2] = ["rw1", "rw2"];

/// Series (labels as `name=value`, sorted, `__name__` among them) to
/// their samples (time in ms, value), oldest first.
type Samples = BTreeMap<Vec<String>, Vec<(i64, f64)>>;

#[tokio::test]
#[ignore = "needs Debian's prometheus and victoria-metrics: tests/remote_write/run.sh"]
async fn every_stored_sample_reaches_prometheus_and_victoria_metrics_across_a_sigkill() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Receiver::prometheus(dir.path());
    let victoria = Receiver::victoria_metrics(dir.path());
    let port = free_port();
    let collector_toml = write_collector(&pki, dir.path(), port, &prometheus, &victoria);
    let collector_bin = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_e2e-agent"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let agents: Vec<Process> = HOSTS
        .iter()
        .map(|host| {
            let toml = write_agent(&pki, dir.path(), port, host);
            Process::start(agent_bin, &toml, log(host))
        })
        .collect();
    let client = reqwest::Client::new();
    eventually(
        WAIT,
        "three seconds of samples at both receivers",
        || async {
            let p = prometheus.samples(&client, HOSTS[0]).await?;
            let v = victoria.samples(&client, HOSTS[0]).await?;
            let span = |s: &Samples| {
                let times = s.values().flatten().map(|(t, _)| *t);
                times.clone().max().unwrap_or(0) - times.min().unwrap_or(0)
            };
            (span(&p) >= 3_000 && span(&v) >= 3_000).then_some(())
        },
    )
    .await;

    // Mid-forwarding: the agents keep streaming, the collector dies.
    collector.kill();
    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let restarted_ms = hostwatch_stdx::now_ms();
    // It resumes from the cursors it stored, not from the start.
    let resumed = eventually(WAIT, "forwarding resumed", || async {
        let log = std::fs::read_to_string(log("collector")).ok()?;
        let starts: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forwarding starts"))
            .collect();
        (starts.len() == 4).then(|| starts[2..].join("\n"))
    })
    .await;
    assert!(!resumed.contains("cursor=0"), "{resumed}");
    eventually(WAIT, "samples from after the restart forwarded", || async {
        let p = prometheus.samples(&client, HOSTS[1]).await?;
        let newest = p.values().filter_map(|s| s.last()).map(|s| s.0).max()?;
        (newest > restarted_ms + 1_000).then_some(())
    })
    .await;
    for agent in agents {
        assert!(agent.terminate(WAIT).await.success());
    }

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for host in HOSTS {
        let stored = eventually(WAIT, "the collector's samples", || async {
            stored(&pki, addr, host).await
        })
        .await;
        let total: usize = stored.values().map(Vec::len).sum();
        assert!(
            stored.len() >= 10 && total >= 200,
            "{host}: {} series, {total} samples",
            stored.len()
        );
        for receiver in [&prometheus, &victoria] {
            let what = format!("{host}'s samples at {} equal to the store's", receiver.name);
            let last = std::sync::Mutex::new(String::new());
            let found = tokio::time::timeout(WAIT, async {
                loop {
                    if let Some(got) = receiver.samples(&client, host).await {
                        match differences(&stored, &got, receiver.tolerance) {
                            None => return,
                            Some(why) => *last.lock().unwrap() = why,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
            .await;
            assert!(found.is_ok(), "{what}: {}", last.lock().unwrap());
        }
    }
    assert!(collector.terminate(WAIT).await.success());
}

/// The first difference between the store's samples and a receiver's.
fn differences(want: &Samples, got: &Samples, tolerance: f64) -> Option<String> {
    for (series, samples) in want {
        let Some(theirs) = got.get(series) else {
            return Some(format!("{series:?} missing ({} samples)", samples.len()));
        };
        if theirs.len() != samples.len() {
            return Some(format!(
                "{series:?}: {} samples, {} stored",
                theirs.len(),
                samples.len()
            ));
        }
        for (a, b) in samples.iter().zip(theirs) {
            let close = (a.1 - b.1).abs() <= tolerance * a.1.abs().max(b.1.abs());
            if a.0 != b.0 || !close {
                return Some(format!("{series:?}: {b:?} where {a:?} is stored"));
            }
        }
    }
    // The receivers hold only what was forwarded: nothing else of the host.
    got.keys()
        .find(|series| !want.contains_key(*series))
        .map(|series| format!("{series:?} is not stored"))
}

/// Every series of `host` the collector stores, with its samples.
async fn stored(pki: &TestPki, addr: std::net::SocketAddr, host: &str) -> Option<Samples> {
    let mut client = tokio::time::timeout(Duration::from_secs(5), operator(pki, addr))
        .await
        .ok()?;
    let response = client
        .promql(PromqlRequest {
            expr: format!("{{host=\"{host}\"}}[1h]"),
            when: Some(promql_request::When::TimeMs(
                hostwatch_stdx::now_ms() + 60_000,
            )),
        })
        .await
        .ok()?
        .into_inner();
    let Some(promql_response::Result::Matrix(matrix)) = response.result else {
        return None;
    };
    let mut out = Samples::new();
    for series in matrix.series {
        let mut labels: Vec<String> = series
            .labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        labels.sort();
        let samples = series
            .timestamps_ms
            .into_iter()
            .zip(series.values)
            .collect();
        out.insert(labels, samples);
    }
    Some(out)
}

fn write_collector(
    pki: &TestPki,
    dir: &Path,
    port: u16,
    prometheus: &Receiver,
    victoria: &Receiver,
) -> std::path::PathBuf {
    let files = pki.files(Role::Collector, "test");
    let path = dir.join("collector.toml");
    let forward = |name: &str, receiver: &Receiver| {
        format!(
            "[[forward]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{}{}\"\n[forward.queue]\nmax_age = \"200ms\"\nmax_samples_per_request = 500\nmin_backoff = \"50ms\"\nmax_backoff = \"500ms\"\n",
            receiver.port, receiver.write_path
        )
    };
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n{}{}[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join("data"),
            forward("prometheus", prometheus),
            forward("victoria", victoria),
            files.ca,
            files.cert,
            files.key
        ),
    )
    .unwrap();
    path
}

fn write_agent(pki: &TestPki, dir: &Path, port: u16, host: &str) -> std::path::PathBuf {
    let files = pki.files(Role::Agent, host);
    let path = dir.join(format!("{host}.toml"));
    std::fs::write(
        &path,
        format!(
            "collector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[limits]\nmax_backoff = \"300ms\"\n",
            dir.join(format!("{host}-state")),
            files.ca,
            files.cert,
            files.key
        ),
    )
    .unwrap();
    path
}

/// A receiver process on loopback.
struct Receiver {
    name: &'static str,
    child: Child,
    port: u16,
    write_path: &'static str,
    /// Relative difference allowed between values: VictoriaMetrics keeps
    /// values as decimals of 12 significant digits, not the float64 sent.
    tolerance: f64,
    log: std::path::PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- {} log:\n{}",
                self.name,
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

impl Receiver {
    fn prometheus(dir: &Path) -> Self {
        let config = dir.join("prometheus.yml");
        // Samples sent again after a restart are older than the newest:
        // taken within the out-of-order window, merged with the originals.
        std::fs::write(
            &config,
            "scrape_configs: []\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n",
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus (tests/remote_write/run.sh installs it)");
        Receiver {
            name: "prometheus",
            child,
            port,
            write_path: "/api/v1/write",
            tolerance: 0.0,
            log,
        }
        .ready("/-/ready")
    }

    fn victoria_metrics(dir: &Path) -> Self {
        let port = free_port();
        let log = dir.join("victoria-metrics.log");
        let child = Command::new("victoria-metrics")
            .arg(format!(
                "-storageDataPath={}",
                dir.join("victoria").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            // Samples sent again after a restart are dropped as duplicates.
            .arg("-dedup.minScrapeInterval=1ms")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("victoria-metrics (tests/remote_write/run.sh installs it)");
        Receiver {
            name: "victoria-metrics",
            child,
            port,
            write_path: "/api/v1/write",
            tolerance: 1e-11,
            log,
        }
        .ready("/health")
    }

    /// Waits (bounded) until `path` answers 200.
    fn ready(mut self, path: &str) -> Self {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status})", self.name);
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && blocking_status(&url) == Some(200)
            {
                return self;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} not ready", self.name);
    }

    /// Every series of `host` the receiver holds, with its samples.
    async fn samples(&self, client: &reqwest::Client, host: &str) -> Option<Samples> {
        let selector = format!("{{host=\"{host}\"}}");
        if self.name == "prometheus" {
            let time = (hostwatch_stdx::now_ms() + 60_000) as f64 / 1000.0;
            let url = format!(
                "http://127.0.0.1:{}/api/v1/query?query={}&time={time}",
                self.port,
                encode(&format!("{selector}[1h]"))
            );
            let text = client.get(url).send().await.ok()?.text().await.ok()?;
            let body: serde_json::Value = serde_json::from_str(&text).ok()?;
            prometheus_matrix(&body)
        } else {
            // Recent samples become searchable once flushed.
            let base = format!("http://127.0.0.1:{}", self.port);
            client
                .get(format!("{base}/internal/force_flush"))
                .send()
                .await
                .ok()?;
            let url = format!("{base}/api/v1/export?match[]={}", encode(&selector));
            let text = client.get(url).send().await.ok()?.text().await.ok()?;
            victoria_export(&text)
        }
    }
}

fn blocking_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    use std::io::{Read, Write};
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn labels_of(metric: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut labels: Vec<String> = metric
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    labels.sort();
    labels
}

/// A Prometheus range-vector answer as [`Samples`].
fn prometheus_matrix(body: &serde_json::Value) -> Option<Samples> {
    let mut out = Samples::new();
    for series in body["data"]["result"].as_array()? {
        let labels = labels_of(series["metric"].as_object()?);
        let mut samples = Vec::new();
        for pair in series["values"].as_array()? {
            let t = (pair[0].as_f64()? * 1000.0).round() as i64;
            let v: f64 = pair[1].as_str()?.parse().ok()?;
            samples.push((t, v));
        }
        out.insert(labels, samples);
    }
    Some(out)
}

/// VictoriaMetrics' export (a JSON object per line) as [`Samples`].
fn victoria_export(text: &str) -> Option<Samples> {
    let mut out = Samples::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let series: serde_json::Value = serde_json::from_str(line).ok()?;
        let labels = labels_of(series["metric"].as_object()?);
        let times = series["timestamps"].as_array()?;
        let values = series["values"].as_array()?;
        let mut samples: Vec<(i64, f64)> = times
            .iter()
            .zip(values)
            .map(|(t, v)| Some((t.as_i64()?, v.as_f64()?)))
            .collect::<Option<_>>()?;
        samples.sort_by_key(|s| s.0);
        out.entry(labels).or_default().extend(samples);
    }
    for samples in out.values_mut() {
        samples.sort_by_key(|s| s.0);
    }
    Some(out)
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
