//! The two servers, each its own process on loopback over the data set:
//! a release `hostwatch-collector` serving its HTTPS API, and Debian's
//! `prometheus` over blocks built by promtool. Each is killed when
//! dropped, also when the bench fails.

use super::http::{Client, Endpoint};
use crate::fixture::issue;
use crate::measure::Probe;
use anyhow::{Context, bail};
use hostwatch_pki::{Ca, Role};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a server may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(600);

/// A server process and a client of its query API.
pub(super) struct Server {
    child: Child,
    log: PathBuf,
    pub(super) endpoint: Endpoint,
}

impl Server {
    pub(super) fn probe(&self) -> Probe {
        Probe::new(self.child.id())
    }

    pub(super) fn client(&self) -> Client {
        Client::new(self.endpoint.clone())
    }

    /// Polls `/-/ready` until it answers 200 (bounded by [`READY_WITHIN`]).
    fn wait_ready(mut self, what: &str) -> anyhow::Result<Server> {
        let started = Instant::now();
        let mut client = self.client();
        while started.elapsed() < READY_WITHIN {
            if let Some(status) = self.child.try_wait()? {
                bail!("{what} exited ({status}):\n{}", self.log_tail());
            }
            if client
                .get("/-/ready")
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(self);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{what} not ready in {READY_WITHIN:?}:\n{}", self.log_tail())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Certificates for the collector and the bench (an operator), and the
/// client's TLS configuration (HTTP/1.1 by ALPN).
pub(super) struct Pki {
    dir: PathBuf,
    collector: hostwatch_pki::TlsFiles,
    client: Arc<rustls::ClientConfig>,
    /// The collector's `storage.cache_bytes`.
    cache_bytes: u64,
}

impl Pki {
    pub(super) fn new(dir: &Path, cache_bytes: u64) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca::generate("bench CA", 2)?;
        ca.write(dir)?;
        let collector = issue(&ca, dir, Role::Collector, "bench")?;
        let operator = issue(&ca, dir, Role::Operator, "bench")?;
        let (config, _) = hostwatch_pki::client_config(&operator)?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Pki {
            dir: dir.to_owned(),
            collector,
            client: Arc::new(config),
            cache_bytes,
        })
    }
}

/// A collector (`binary`) on `data_dir`, its HTTPS API on loopback, no
/// alert rules (their evaluation would compete with the queries).
pub(super) fn collector(binary: &Path, data_dir: &Path, pki: &Pki) -> anyhow::Result<Server> {
    let port = free_port()?;
    let config = pki.dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
             [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[alerting]\ndefault_rules = false\n\
             [storage]\ncache_bytes = {}\n",
            data_dir.display().to_string(),
            pki.collector.ca.display().to_string(),
            pki.collector.cert.display().to_string(),
            pki.collector.key.display().to_string(),
            pki.cache_bytes,
        ),
    )?;
    let log = pki.dir.join("collector.log");
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Server {
        child,
        log,
        endpoint: Endpoint::Tls(addr, pki.client.clone()),
    }
    .wait_ready("the collector")
}

/// promtool's blocks of the OpenMetrics `text` in `blocks`.
pub(super) fn create_blocks(promtool: &Path, text: &Path, blocks: &Path) -> anyhow::Result<()> {
    let status = Command::new(promtool)
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            "--max-block-duration=24h",
        ])
        .arg(text)
        .arg(blocks)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", promtool.display()))?;
    if !status.success() {
        bail!("promtool failed: {status}");
    }
    Ok(())
}

/// Prometheus (`binary`) on the blocks in `data`, on loopback, no scrape
/// jobs: the blocks are its only data.
pub(super) fn prometheus(binary: &Path, data: &Path, dir: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "scrape_configs: []\n")?;
    let log = dir.join("prometheus.log");
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=15d")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Server {
        child,
        log,
        endpoint: Endpoint::Plain(addr),
    }
    .wait_ready("prometheus")
}
