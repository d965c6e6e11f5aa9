//! A collector and an agent run as the quick start runs them, but as real
//! processes: `hostwatch quickstart` writes the PKI and the configuration
//! files (its HTTPS API on), then the collector and agent programs run from
//! those files, as an operator would run them after the quick start.

use crate::{Process, channel, eventually, free_port, now_ms};
use hostwatch_pki::TlsFiles;
use hostwatch_proto::v1::RangeRequest;
use hostwatch_proto::v1::query_client::QueryClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// The programs the fixture runs: the tests crate's `e2e-*` binaries
/// (`env!("CARGO_BIN_EXE_...")`, which only integration tests see).
pub struct Programs<'a> {
    pub hostwatch: &'a Path,
    pub collector: &'a Path,
    pub agent: &'a Path,
}

/// A quick start's collector and agent, running; both killed when dropped.
pub struct QuickStart {
    /// The quick start's directory (`certs/`, the three `.toml` files).
    pub dir: PathBuf,
    /// The agent's host id (this machine's).
    pub host: String,
    /// The collector's gRPC address.
    pub grpc: SocketAddr,
    /// The collector's HTTPS API (`http_listen`).
    pub http: SocketAddr,
    pub collector: Process,
    pub agent: Process,
    _tmp: TempDir,
}

/// Where a quick start's collector listens once [`write_files`] moved it.
pub struct Addresses {
    /// gRPC (`listen`).
    pub grpc: SocketAddr,
    /// The HTTPS API (`http_listen`).
    pub http: SocketAddr,
}

/// Writes a quick start's files in `dir` (`hostwatch quickstart`, which
/// also runs it for a second), then changes them for tests: both of the
/// collector's addresses moved to free ports (those free when the quick
/// start ran may be taken by other tests' by now), the agent sampling
/// every `agent_interval` (a TOML duration) instead of 2 s, and
/// `collector_toml` appended to collector.toml (sections such as
/// `[[alerting.rules]]`).
pub fn write_files(
    hostwatch: &Path,
    dir: &Path,
    agent_interval: &str,
    collector_toml: &str,
) -> Addresses {
    let out = Command::new(hostwatch)
        .args(["quickstart", "--duration", "1", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quickstart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let collector_toml_path = dir.join("collector.toml");
    let text = std::fs::read_to_string(&collector_toml_path).unwrap();
    let value = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("collector.toml has no {key} line"))
            .trim_matches('"')
            .to_owned()
    };
    let (listen, http_listen) = (value("listen"), value("http_listen"));
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    for file in ["collector.toml", "agent.toml", "cli.toml"] {
        edit(&dir.join(file), &listen, &grpc.to_string());
    }
    edit(&collector_toml_path, &http_listen, &http.to_string());
    edit(
        &dir.join("agent.toml"),
        "interval = \"2s\"",
        &format!("interval = \"{agent_interval}\""),
    );
    let mut text = std::fs::read_to_string(&collector_toml_path).unwrap();
    text.push_str(collector_toml);
    std::fs::write(&collector_toml_path, text).unwrap();
    Addresses { grpc, http }
}

impl QuickStart {
    /// A quick start's files ([`write_files`]), and its collector and
    /// agent running from them.
    pub fn start(programs: &Programs<'_>, agent_interval: &str, collector_toml: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("qs");
        let Addresses { grpc, http } =
            write_files(programs.hostwatch, &dir, agent_interval, collector_toml);
        let log = |name: &str| tmp.path().join(format!("{name}.log"));
        let collector = Process::start(
            programs.collector,
            &dir.join("collector.toml"),
            log("collector"),
        );
        let agent = Process::start(programs.agent, &dir.join("agent.toml"), log("agent"));
        QuickStart {
            host: hostwatch::local_host_id(),
            dir,
            grpc,
            http,
            collector,
            agent,
            _tmp: tmp,
        }
    }

    /// The quick start's operator certificate.
    pub fn operator(&self) -> TlsFiles {
        self.files("operator-quickstart")
    }

    /// A viewer certificate, issued from the quick start's CA by
    /// `hostwatch certs issue --role viewer` (as docs/grafana.md tells).
    pub fn viewer(&self, programs: &Programs<'_>, name: &str) -> TlsFiles {
        let out = Command::new(programs.hostwatch)
            .args([
                "certs", "issue", "--role", "viewer", "--name", name, "--dir",
            ])
            .arg(self.dir.join("certs"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "certs issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.files(&format!("viewer-{name}"))
    }

    fn files(&self, stem: &str) -> TlsFiles {
        let certs = self.dir.join("certs");
        TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("{stem}.pem")),
            key: certs.join(format!("{stem}.key")),
        }
    }

    /// Waits (at most `timeout`) until the collector holds at least
    /// `count` samples of the agent's `metric`, so that rates over a few
    /// samples have data; asks through gRPC, not the API under test.
    pub async fn wait_for_samples(&self, metric: &str, count: usize, timeout: Duration) {
        let what = format!("{count} samples of {metric} from {}", self.host);
        eventually(timeout, &what, || async {
            let channel = channel(self.operator(), self.grpc).await.ok()?;
            let series = QueryClient::new(channel)
                .range(RangeRequest {
                    metric: metric.to_owned(),
                    start_ms: now_ms() - 3_600_000,
                    end_ms: now_ms() + 60_000,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .series;
            let held: usize = series.iter().map(|s| s.timestamps_ms.len()).sum();
            (held >= count).then_some(())
        })
        .await;
    }
}

/// Replaces `from` (which must be there) by `to` in the file at `path`.
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} has no {from:?}:\n{text}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}
