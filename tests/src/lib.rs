//! Fixtures for hostwatch's end-to-end tests: a PKI generated at test
//! time, collectors and agents running in-process on real loopback
//! sockets with real mutual TLS, clients, an `eventually` helper, webhook
//! receivers, stand-ins for PagerDuty, Opsgenie and Slack ([`providers`]),
//! small file systems that fill ([`Tmpfs`]), and a quick start's collector
//! and agent as processes ([`quickstart`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod providers;
pub mod quickstart;

use hostwatch_agent::AgentConfig;
use hostwatch_collector::CollectorConfig;
use hostwatch_pki::transport::{ClientTarget, connect};
use hostwatch_pki::{Ca, Identity, IssueOptions, Role, TlsFiles, cert_stem};
use hostwatch_proto::v1::query_client::QueryClient;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A CA and the certificates issued from it, in a temporary directory.
pub struct TestPki {
    pub dir: TempDir,
    ca: Ca,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", 2).unwrap();
        ca.write(dir.path()).unwrap();
        TestPki { dir, ca }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A valid certificate for `role`/`name`; collectors also get the loopback names.
    pub fn files(&self, role: Role, name: &str) -> TlsFiles {
        let mut options = IssueOptions::valid_for_days(1);
        if role == Role::Collector {
            options = options.with_local_names(None);
        }
        self.files_with(role, name, &options)
    }

    /// Writes `path`, a collector.toml for a collector process named
    /// `name` listening on 127.0.0.1:`port` with its data in `data_dir`,
    /// followed by `extra` (more sections, or nothing).
    pub fn collector_toml(
        &self,
        path: &Path,
        name: &str,
        port: u16,
        data_dir: &Path,
        extra: &str,
    ) -> PathBuf {
        let tls = self.files(Role::Collector, name);
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {data_dir:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n{extra}",
            tls.ca, tls.cert, tls.key
        );
        std::fs::write(path, text).unwrap();
        path.to_path_buf()
    }

    /// An issuing CA signed by this CA (`issuing.pem`, `issuing.key`), as
    /// `hostwatch certs init` makes it: its certificate and key paths.
    pub fn issuing(&self) -> (PathBuf, PathBuf) {
        let issuing = self.ca.generate_issuing(1).unwrap();
        issuing.write_issuing(self.dir.path()).unwrap();
        (
            self.dir.path().join("issuing.pem"),
            self.dir.path().join("issuing.key"),
        )
    }

    /// The CA's pin, as `hostwatch certs pin` prints it.
    pub fn pin(&self) -> hostwatch_pki::CaPin {
        hostwatch_pki::CaPin::of(&self.ca.cert_der().unwrap()).unwrap()
    }

    /// A certificate with explicit options (expired ones, say).
    pub fn files_with(&self, role: Role, name: &str, options: &IssueOptions) -> TlsFiles {
        let identity = Identity::new(role, name).unwrap();
        let stem = format!("{}-{}", cert_stem(&identity), rand_suffix());
        let (cert, key) = self
            .ca
            .issue(&identity, options)
            .unwrap()
            .write(self.dir.path(), &stem)
            .unwrap();
        TlsFiles {
            ca: self.ca_path(),
            cert,
            key,
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A collector configuration on 127.0.0.1 with its data in `data_dir`.
pub fn collector_config(pki: &TestPki, data_dir: &Path) -> CollectorConfig {
    collector_config_with(pki, data_dir, "")
}

/// A collector configuration with `extra` TOML: top-level keys first,
/// then sections such as `[alerting]`.
pub fn collector_config_with(pki: &TestPki, data_dir: &Path, extra: &str) -> CollectorConfig {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n{extra}\n[tls]\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n",
        data_dir.display().to_string()
    );
    let path = pki
        .dir
        .path()
        .join(format!("collector-{}.toml", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    let mut config = CollectorConfig::load(&path).unwrap();
    config.tls = pki.files(Role::Collector, "test");
    config
}

/// An agent configuration for host `host`, sampling every 200 ms, with its
/// state (spool) in `state_dir/<host>`.
pub fn agent_config(
    pki: &TestPki,
    host: &str,
    collector: SocketAddr,
    state_dir: &Path,
) -> AgentConfig {
    let text = format!(
        "collector = \"{collector}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n[tls]\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n[limits]\nmax_backoff = \"500ms\"\n",
        state_dir.join(host).display().to_string()
    );
    let path = pki.dir.path().join(format!("agent-{}.toml", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    let mut config = AgentConfig::load(&path).unwrap();
    config.tls = pki.files(Role::Agent, host);
    config
}

/// An agent configuration as [`agent_config`], with `collectors` (in
/// order of preference) instead of one collector, and `limits` (TOML
/// lines) added to its `[limits]`.
pub fn agent_config_failover(
    pki: &TestPki,
    host: &str,
    collectors: &[SocketAddr],
    state_dir: &Path,
    limits: &str,
) -> AgentConfig {
    let list: Vec<String> = collectors.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "collectors = [{}]\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n[tls]\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n[limits]\nmax_backoff = \"500ms\"\n{limits}\n",
        list.join(", "),
        state_dir.join(host).display().to_string()
    );
    let path = pki.dir.path().join(format!("agent-{}.toml", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    let mut config = AgentConfig::load(&path).unwrap();
    config.tls = pki.files(Role::Agent, host);
    config
}

/// A collector serving in this process until stopped.
pub struct RunningCollector {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), hostwatch_collector::CollectorError>>,
}

impl RunningCollector {
    pub async fn start(config: CollectorConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(config, listener)
    }

    pub fn start_on(config: CollectorConfig, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(hostwatch_collector::serve(
            config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        RunningCollector { addr, stop, task }
    }

    /// Stops gracefully and waits until the database is closed.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// An agent running in this process.
pub struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<Result<(), hostwatch_agent::AgentError>>,
}

impl RunningAgent {
    pub fn start(config: AgentConfig) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(hostwatch_agent::run(config, stop.clone().cancelled_owned()));
        RunningAgent { stop, task }
    }

    /// Clean stop: the agent drains and says goodbye.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Abrupt stop: the task is dropped mid-flight, as in a crash; no goodbye.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The raw points of the last hour (and a minute ahead) of every series
/// of `metric` for `host`; `None` while the collector cannot answer (not
/// up yet, or its store being rebuilt).
pub async fn host_series(
    pki: &TestPki,
    addr: SocketAddr,
    host: &str,
    metric: &str,
) -> Option<Vec<hostwatch_proto::v1::SeriesPoints>> {
    host_series_as(pki.files(Role::Operator, "tester"), addr, host, metric).await
}

/// [`host_series`] asked with the operator certificate `operator`.
pub async fn host_series_as(
    operator: TlsFiles,
    addr: SocketAddr,
    host: &str,
    metric: &str,
) -> Option<Vec<hostwatch_proto::v1::SeriesPoints>> {
    use hostwatch_proto::v1::{Matcher, RangeRequest, matcher};
    let channel = channel(operator, addr).await.ok()?;
    let response = QueryClient::new(channel)
        .range(RangeRequest {
            metric: metric.into(),
            matchers: vec![Matcher {
                name: "host".into(),
                op: matcher::Op::Equal as i32,
                value: host.into(),
            }],
            start_ms: now_ms() - 3_600_000,
            end_ms: now_ms() + 60_000,
            // Raw points: no step, no aggregation.
            ..Default::default()
        })
        .await
        .ok()?;
    Some(response.into_inner().series)
}

/// Listener limits for a test's own gRPC server on `incoming` (serve it
/// with `CallLimitLayer`): room for one test's few connections.
pub fn test_listener_limits() -> hostwatch_pki::transport::ListenerLimits {
    hostwatch_pki::transport::ListenerLimits {
        max_connections: 16,
        reserved_operator_connections: 0,
        max_connections_per_identity: 16,
        max_handshakes: 16,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(3600),
        max_pending_bytes_per_connection: 1 << 20,
        max_pending_bytes: 1 << 20,
        message_timeout: Duration::from_secs(60),
    }
}

/// A channel to `addr` with `files` as client identity.
pub async fn channel(files: TlsFiles, addr: SocketAddr) -> Result<Channel, String> {
    let target = ClientTarget {
        address: addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls: files,
        connect_timeout: Duration::from_secs(5),
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    };
    connect(&target)
        .await
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

/// A Query client with an operator certificate.
pub async fn operator(pki: &TestPki, addr: SocketAddr) -> QueryClient<Channel> {
    QueryClient::new(
        channel(pki.files(Role::Operator, "tester"), addr)
            .await
            .unwrap(),
    )
}

/// A channel over TLS 1.3 with an arbitrary client configuration (no
/// certificate, say), for refusal tests.
pub async fn raw_channel(
    config: rustls::ClientConfig,
    addr: SocketAddr,
) -> Result<Channel, String> {
    let config = Arc::new(config);
    let connector = tower::service_fn(move |_| {
        let tls = tokio_rustls::TlsConnector::from(config.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .map_err(|e| e.to_string())
}

/// A rustls client configuration trusting `ca`, TLS 1.3, without a client certificate.
pub fn client_without_certificate(ca: &Path) -> rustls::ClientConfig {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub use hostwatch_stdx::now_ms;

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
    pub at: std::time::Instant,
}

/// An HTTP(S) receiver on loopback recording every POST to any path,
/// answering 200 OK unless told otherwise ([`WebhookReceiver::answer`]).
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Plain HTTP.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, status) = (Arc::default(), Arc::new(200.into()));
        let app = Self::app(&received, &status);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        WebhookReceiver {
            addr,
            received,
            status,
            task,
        }
    }

    /// HTTPS over TLS 1.3 that requires a client certificate from the CA
    /// of `files`, presenting `files`' certificate.
    pub async fn start_mtls(files: &TlsFiles) -> Self {
        let (config, _) = hostwatch_pki::server_config(files).unwrap();
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, status) = (Arc::default(), Arc::new(200.into()));
        let app = Self::app(&received, &status);
        let tls = TlsListener {
            tcp: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            axum::serve(tls, app).await.unwrap();
        });
        WebhookReceiver {
            addr,
            received,
            status,
            task,
        }
    }

    /// Answers every request from now on with `status` (a 503 makes the
    /// collector retry).
    pub fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    fn app(
        received: &Arc<std::sync::Mutex<Vec<Received>>>,
        status: &Arc<std::sync::atomic::AtomicU16>,
    ) -> axum::Router {
        let (received, status) = (received.clone(), status.clone());
        axum::Router::new().fallback(axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (received, status) = (received.clone(), status.clone());
                async move {
                    received.lock().unwrap().push(Received {
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                        at: std::time::Instant::now(),
                    });
                    let code = status.load(std::sync::atomic::Ordering::Relaxed);
                    axum::http::StatusCode::from_u16(code).unwrap()
                }
            },
        ))
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Alerts received so far, flattened: (status, labels, annotations).
    pub fn alerts(&self) -> Vec<(String, serde_json::Value, serde_json::Value)> {
        self.received()
            .iter()
            .flat_map(|r| {
                let alerts = r.body["alerts"].as_array().cloned().unwrap_or_default();
                alerts.into_iter().map(|a| {
                    (
                        a["status"].as_str().unwrap_or("").to_owned(),
                        a["labels"].clone(),
                        a["annotations"].clone(),
                    )
                })
            })
            .collect()
    }

    /// The first alert received with this alertname and status.
    pub fn find(
        &self,
        alertname: &str,
        status: &str,
    ) -> Option<(serde_json::Value, serde_json::Value)> {
        self.alerts()
            .into_iter()
            .find(|(s, l, _)| s == status && l["alertname"] == alertname)
            .map(|(_, l, a)| (l, a))
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that fails the handshake (no certificate) is dropped.
            if let Ok(stream) = self.acceptor.accept(tcp).await {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A program run as a real process, its stderr in a log file. Dropped, it
/// is killed; if the test is failing, its log is printed.
pub struct Process {
    pub child: std::process::Child,
    name: String,
    log: PathBuf,
}

impl Process {
    /// Runs `program --config config`, logging at `info`.
    pub fn start(program: &Path, config: &Path, log: PathBuf) -> Self {
        Process::start_as(program, config, log, None)
    }

    /// As [`start`](Self::start), as `user` (and its group) if given:
    /// only root can.
    pub fn start_as(
        program: &Path,
        config: &Path,
        log: PathBuf,
        user: Option<&nix::unistd::User>,
    ) -> Self {
        Process::spawn(program, config, log, user, &[])
    }

    /// As [`start`](Self::start), with `env` added to (or overriding,
    /// `RUST_LOG` too) its environment.
    pub fn start_with_env(
        program: &Path,
        config: &Path,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        Process::spawn(program, config, log, None, env)
    }

    /// As [`start`](Self::start), with `args` after `--config FILE`.
    pub fn start_with_args(program: &Path, config: &Path, log: PathBuf, args: &[&str]) -> Self {
        Process::spawn_with(program, config, log, None, &[], args)
    }

    fn spawn(
        program: &Path,
        config: &Path,
        log: PathBuf,
        user: Option<&nix::unistd::User>,
        env: &[(&str, &str)],
    ) -> Self {
        Process::spawn_with(program, config, log, user, env, &[])
    }

    fn spawn_with(
        program: &Path,
        config: &Path,
        log: PathBuf,
        user: Option<&nix::unistd::User>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        use std::os::unix::process::CommandExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = std::process::Command::new(program);
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file);
        if let Some(user) = user {
            // std drops root's supplementary groups with the uid.
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = command.spawn().unwrap();
        Process {
            child,
            name: program.display().to_string(),
            log,
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit status.
    pub async fn terminate(mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        eventually(timeout, &format!("{} to exit", self.name), || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of {}:\n{}", self.name, self.log());
        }
    }
}

/// Sends `batch` as agent `host` (spool `spool_id`) on a stream of its own,
/// as an agent would, and waits for its ack.
pub async fn deliver_batch(
    files: TlsFiles,
    addr: SocketAddr,
    host: &str,
    spool_id: u64,
    batch: hostwatch_proto::v1::Batch,
) {
    use hostwatch_proto::v1::agent_message::Kind;
    use hostwatch_proto::v1::collector_message::Kind as Reply;
    use hostwatch_proto::v1::ingest_client::IngestClient;
    use hostwatch_proto::v1::{AgentMessage, Hello};
    let agent = channel(files, addr).await.unwrap();
    let seq = batch.seq;
    let messages = [
        Kind::Hello(Hello {
            host_id: host.into(),
            spool_id,
            ..Default::default()
        }),
        Kind::Batch(batch),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for kind in messages {
        tx.send(AgentMessage { kind: Some(kind) }).await.unwrap();
    }
    let mut replies = IngestClient::new(agent)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let welcome = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(welcome.kind, Some(Reply::Welcome(_))),
        "{welcome:?}"
    );
    let ack = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(ack.kind, Some(Reply::Ack(a)) if a.seq == seq),
        "{ack:?}"
    );
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a process that
/// must listen on the same port after a restart. Taken below the kernel's
/// ephemeral range (32768 and up by default), so the port-0 listeners of
/// concurrent tests cannot be handed it before the process binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries of one run start at different offsets.
    let start = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

/// A tmpfs mounted for one test, unmounted when dropped: a small file
/// system that fills.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes, or prints why it cannot (mounting
    /// needs root, or CAP_SYS_ADMIN) and where what the test covers is
    /// tested instead (`elsewhere`), and returns `None`.
    pub fn mount(size: u64, elsewhere: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                println!(
                    "NOT RUN: cannot mount a tmpfs here ({}); {elsewhere}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("NOT RUN: cannot run mount ({e}); {elsewhere}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a file until at most `leave` bytes are
    /// free (all of it: `leave` = 0 writes until the disk is full).
    pub fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a; 64 << 10];
        loop {
            let stat = nix::sys::statvfs::statvfs(self.path()).unwrap();
            let free = stat.blocks_available() * stat.fragment_size();
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            match file.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        file.sync_all().ok();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One `GET /metrics` on a plain-HTTP metrics port (`metrics_listen`):
/// the status line and the body; `Err` while nothing listens there.
pub async fn scrape(addr: SocketAddr) -> Result<(String, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head: {answer:?}"))?;
    Ok((head.to_owned(), body.to_owned()))
}

/// The value of the sample `name{labels}` (labels exactly as written, in
/// order, e.g. `reason="role"`; empty for none) in a text exposition.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
}
