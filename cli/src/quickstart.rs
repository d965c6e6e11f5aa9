//! `hostwatch quickstart`: everything needed to watch this machine, in one
//! directory and one process. Creates (or reuses) a PKI and the three
//! configuration files, runs a collector and an agent, gives Grafana and
//! scripts a viewer token of the HTTPS API (`grafana.token`) and the web
//! console's user an operator token to log in with (`console.token`),
//! and prints a live summary of this host until the duration ends or
//! Ctrl-C.

use crate::UsageError;
use crate::certs::create_dir;
use crate::client::ClientConfig;
use crate::read::host_status_word;
use crate::tokens::{DEFAULT_TTL, TokenRole, Ttl};
use clap::Args;
use hostwatch_agent::AgentConfig;
use hostwatch_alerting::template::format_bytes;
use hostwatch_collector::CollectorConfig;
use hostwatch_pki::{Ca, Identity, IssueOptions, Role, cert_stem};
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{
    LatestRequest, ListHostsRequest, ListTokensRequest, RevokeTokenRequest, SeriesValue,
};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Ports the quick start's collector prefers for its agents' gRPC and for
/// its HTTPS API and console, so that bookmarks and a Grafana data source
/// outlive a fresh quick start; another is picked if one is taken.
const PREFERRED_PORT: u16 = 7070;
const PREFERRED_HTTP_PORT: u16 = 9443;
/// Sampling interval of the quick start's agent: short, so figures show up fast.
const AGENT_INTERVAL: &str = "2s";
/// Time between summary lines.
const SUMMARY_EVERY: Duration = Duration::from_secs(2);
/// Name of the quick start's collector and operator certificates.
const QUICKSTART: &str = "quickstart";
/// Name of the quick start's viewer token, and its file's stem.
const GRAFANA: &str = "grafana";
/// Name of the quick start's operator token for the web console, and
/// its file's stem: an operator may also manage silences there.
const CONSOLE: &str = "console";
/// How long the quick start waits for its collector to answer Admin.
const COLLECTOR_UP_WAIT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub(crate) struct QuickstartArgs {
    /// Directory for certificates, configurations and data; reused if it exists.
    #[arg(long, default_value = "hostwatch-quickstart")]
    dir: PathBuf,
    /// Stop after this many seconds instead of at Ctrl-C.
    #[arg(long)]
    duration: Option<u64>,
}

pub(crate) fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    if args.duration == Some(0) {
        return Err(UsageError("--duration must be at least 1 second".to_owned()).into());
    }
    // Private, as the units' UMask=0077 and StateDirectoryMode=0700 make
    // them: the spool holds command lines, the store what hosts reported.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    create_dir(&args.dir)?;
    std::fs::set_permissions(&args.dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| anyhow::anyhow!("cannot make {} private: {e}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", args.dir.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(dir, args.duration.map(Duration::from_secs)))
}

async fn run_async(dir: PathBuf, duration: Option<Duration>) -> anyhow::Result<()> {
    let host_id = local_host_id();
    ensure_certificates(&dir, &host_id)?;
    let (
        Listeners {
            grpc: listener,
            http,
        },
        paths,
    ) = write_configs(&dir, &host_id).await?;
    let address = listener.local_addr()?;
    // Read back through the real loaders: what runs is what the files say.
    let collector_config = CollectorConfig::load(&paths.collector)?;
    let agent_config = AgentConfig::load(&paths.agent)?;
    let cli_config = ClientConfig::load(&paths.cli)?;
    let agent_host = agent_config.tls.own_identity()?.name;

    println!("hostwatch quick start in {}", dir.display());
    println!(
        "  collector listening on {address}, agent for host {agent_host:?} every {AGENT_INTERVAL}"
    );
    let http_port = collector_config.http_listen.map(|http| http.port());
    if let Some(port) = http_port {
        println!(
            "  Prometheus HTTP API at https://localhost:{port}/ (client certificate {})",
            dir.join("certs")
                .join(format!("operator-{QUICKSTART}.pem"))
                .display()
        );
    }

    let stop = CancellationToken::new();
    let collector = tokio::spawn(hostwatch_collector::serve_with_http(
        collector_config,
        listener,
        http,
        stop.clone().cancelled_owned(),
    ));
    if let Some(port) = http_port {
        match ensure_token(&cli_config, &dir, GRAFANA, TokenRole::Viewer).await {
            Ok(file) => print_token_use(&dir, &file, port),
            Err(e) => println!("  no viewer token for the HTTP API: {e:#}"),
        }
        match ensure_token(&cli_config, &dir, CONSOLE, TokenRole::Operator).await {
            Ok(file) => print_console_use(&dir, &file, port),
            Err(e) => println!("  no operator token for the web console: {e:#}"),
        }
    }
    match duration {
        Some(d) => println!("  running for {}s (Ctrl-C stops earlier)\n", d.as_secs()),
        None => println!("  press Ctrl-C to stop\n"),
    }
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(hostwatch_agent::run(
        agent_config,
        agent_stop.clone().cancelled_owned(),
    ));
    let started = tokio::time::Instant::now();
    print_summaries(&cli_config, &agent_host, &collector, duration).await;

    // The agent first, so its goodbye reaches a running collector.
    agent_stop.cancel();
    let agent_result = agent.await;
    stop.cancel();
    let collector_result = collector.await;
    collector_result??;
    agent_result??;
    println!(
        "\nstopped after {}s; certificates, configurations and data are in {}",
        started.elapsed().as_secs(),
        dir.display()
    );
    print_next_steps(&paths, &agent_host);
    Ok(())
}

/// The file `<name>.token` of a token named `name` with `role`, created
/// through Admin as `hostwatch token create` does. Kept if the file exists
/// and the collector lists the token as live; otherwise (a first start, a
/// lost file, an expired token) a new one replaces it. The token itself
/// is never printed.
async fn ensure_token(
    cli: &ClientConfig,
    dir: &Path,
    name: &str,
    role: TokenRole,
) -> anyhow::Result<PathBuf> {
    let file = dir.join(format!("{name}.token"));
    let deadline = tokio::time::Instant::now() + COLLECTOR_UP_WAIT;
    let channel = loop {
        match cli.connect().await {
            Ok(channel) => break channel,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut admin = AdminClient::new(channel.clone());
    let tokens = admin
        .list_tokens(ListTokensRequest {})
        .await?
        .into_inner()
        .tokens;
    let listed = tokens.iter().find(|t| t.name == name);
    if listed.is_some_and(|t| !t.expired) && file.exists() {
        return Ok(file);
    }
    if listed.is_some() {
        admin
            .revoke_token(RevokeTokenRequest {
                name: name.to_owned(),
            })
            .await?;
    }
    let created = crate::tokens::create(channel, name, role, Ttl::For(DEFAULT_TTL)).await?;
    write_secret(&file, &created.token)?;
    Ok(file)
}

/// Writes `text` to `path`, readable by its owner only.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(cannot)?;
    // The mode above applies to a new file only.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(cannot)?;
    file.write_all(text.as_bytes()).map_err(cannot)
}

fn print_token_use(dir: &Path, file: &Path, port: u16) {
    println!(
        "  viewer token for Grafana and scripts in {} (mode 0600); for example:",
        file.display()
    );
    println!(
        "    curl --cacert {} -H \"Authorization: Bearer $(cat {})\" 'https://localhost:{port}/api/v1/query?query=host_load1'",
        dir.join("certs").join("ca.pem").display(),
        file.display()
    );
}

fn print_console_use(dir: &Path, file: &Path, port: u16) {
    println!(
        "  web console at https://localhost:{port}/ (its certificate is from {}):",
        dir.join("certs").join("ca.pem").display()
    );
    println!(
        "    log in with the operator token in {} (mode 0600): paste what `cat {}` prints",
        file.display(),
        file.display()
    );
}

/// Where the quick start keeps each program's configuration.
struct ConfigPaths {
    collector: PathBuf,
    agent: PathBuf,
    cli: PathBuf,
}

/// The collector's listeners, bound before the collector runs and kept
/// until it does, so that another quick start starting meanwhile cannot
/// take the same preferred port.
struct Listeners {
    grpc: TcpListener,
    /// `http_listen`, when collector.toml sets it.
    http: Option<TcpListener>,
}

/// Binds the collector's listeners (the addresses collector.toml names, or
/// new ones written there) and writes the configuration files that do
/// not exist yet, so a second quick start in the same folder keeps the
/// first one's addresses and whatever the operator edited.
async fn write_configs(dir: &Path, host_id: &str) -> anyhow::Result<(Listeners, ConfigPaths)> {
    let paths = ConfigPaths {
        collector: dir.join("collector.toml"),
        agent: dir.join("agent.toml"),
        cli: dir.join("cli.toml"),
    };
    let listeners = if paths.collector.exists() {
        let config = CollectorConfig::load(&paths.collector)?;
        let http = match config.http_listen {
            Some(address) => Some(bind(address, "http_listen").await?),
            None => None,
        };
        Listeners {
            grpc: bind(config.listen, "listen").await?,
            http,
        }
    } else {
        let grpc = bind_preferred(PREFERRED_PORT).await?;
        let http = bind_preferred(PREFERRED_HTTP_PORT).await?;
        write_collector_config(&paths.collector, grpc.local_addr()?, http.local_addr()?)?;
        Listeners {
            grpc,
            http: Some(http),
        }
    };
    let address = listeners.grpc.local_addr()?;
    if !paths.agent.exists() {
        write_agent_config(&paths.agent, address, host_id)?;
    }
    if !paths.cli.exists() {
        write_cli_config(&paths.cli, address)?;
    }
    Ok((listeners, paths))
}

/// A loopback listener on `port`, or on a free port if it is taken.
async fn bind_preferred(port: u16) -> anyhow::Result<TcpListener> {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    match TcpListener::bind(loopback(port)).await {
        Ok(listener) => Ok(listener),
        Err(_) => Ok(TcpListener::bind(loopback(0)).await?),
    }
}

/// Prints a line on what the collector holds of `agent_host` every
/// [`SUMMARY_EVERY`] until Ctrl-C, the end of `duration` or the
/// collector's end.
async fn print_summaries(
    cli_config: &ClientConfig,
    agent_host: &str,
    collector: &tokio::task::JoinHandle<Result<(), hostwatch_collector::CollectorError>>,
    duration: Option<Duration>,
) {
    let started = tokio::time::Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut ticker = tokio::time::interval(SUMMARY_EVERY);
    ticker.tick().await;
    let mut client = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = until_deadline => break,
            _ = ticker.tick() => {}
        }
        if collector.is_finished() {
            break;
        }
        if client.is_none() {
            client = cli_config.connect().await.ok().map(QueryClient::new);
        }
        if let Some(c) = client.as_mut() {
            let elapsed = started.elapsed().as_secs();
            match summary(c, agent_host).await {
                Ok(line) => println!("{elapsed:>5}s  {line}"),
                Err(e) => println!("{elapsed:>5}s  collector not answering: {e}"),
            }
        }
    }
}

fn print_next_steps(paths: &ConfigPaths, agent_host: &str) {
    println!("next:");
    println!(
        "  cargo run --release --bin hostwatch-collector -- --config {}",
        paths.collector.display()
    );
    println!(
        "  cargo run --release --bin hostwatch -- --config {} hosts",
        paths.cli.display()
    );
    println!(
        "  cargo run --release --bin hostwatch -- --config {} query host_memory_available_bytes --host {agent_host}",
        paths.cli.display()
    );
    println!(
        "  cargo run --release --bin hostwatch -- --config {} token list",
        paths.cli.display()
    );
}

/// A listener on `addr`, which collector.toml's `key` names.
async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({key} in collector.toml): {e}"))
}

/// This machine's host id, which the quick start gives its agent: the
/// hostname, reduced to the characters an identity may hold.
pub fn local_host_id() -> String {
    let name = sysinfo::System::host_name()
        .unwrap_or_default()
        .to_lowercase();
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "localhost".to_owned()
    } else {
        cleaned
    }
}

/// Creates the CA and the three role certificates, keeping any that exist.
fn ensure_certificates(dir: &Path, host_id: &str) -> anyhow::Result<()> {
    let certs = dir.join("certs");
    create_dir(&certs)?;
    let ca = if certs.join("ca.pem").exists() {
        Ca::load(&certs)?
    } else {
        let ca = Ca::generate("hostwatch quick start CA", 3650)?;
        ca.write(&certs)?;
        ca
    };
    let hostname = sysinfo::System::host_name();
    for (role, name) in [
        (Role::Collector, QUICKSTART),
        (Role::Agent, host_id),
        (Role::Operator, QUICKSTART),
    ] {
        let identity = Identity::new(role, name)?;
        let stem = cert_stem(&identity);
        if certs.join(format!("{stem}.pem")).exists() {
            continue;
        }
        let mut options = IssueOptions::valid_for_days(825);
        if role == Role::Collector {
            options = options.with_local_names(hostname.as_deref());
        }
        ca.issue(&identity, &options)?.write(&certs, &stem)?;
    }
    Ok(())
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn tls_section(role: Role, name: &str) -> String {
    let stem = format!("{role}-{name}");
    format!(
        "[tls]\nca = {}\ncert = {}\nkey = {}\n",
        quote("certs/ca.pem"),
        quote(&format!("certs/{stem}.pem")),
        quote(&format!("certs/{stem}.key"))
    )
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn write_collector_config(path: &Path, listen: SocketAddr, http: SocketAddr) -> anyhow::Result<()> {
    let text = format!(
        "# hostwatch collector, written by `hostwatch quickstart`.\n\
         # Relative paths are relative to this file's directory.\n\
         listen = {}\n\
         http_listen = {}\n\
         data_dir = \"collector-data\"\n\
         host_down_after = \"10s\"\n\n{}",
        quote(&listen.to_string()),
        quote(&http.to_string()),
        tls_section(Role::Collector, QUICKSTART)
    );
    write(path, &text)
}

fn write_agent_config(path: &Path, collector: SocketAddr, host_id: &str) -> anyhow::Result<()> {
    let text = format!(
        "# hostwatch agent, written by `hostwatch quickstart`.\n\
         collector = {}\n\
         server_name = \"localhost\"\n\
         interval = {}\n\
         state_dir = \"agent-state\"\n\n{}",
        quote(&collector.to_string()),
        quote(AGENT_INTERVAL),
        tls_section(Role::Agent, host_id)
    );
    write(path, &text)
}

fn write_cli_config(path: &Path, collector: SocketAddr) -> anyhow::Result<()> {
    let text = format!(
        "# hostwatch CLI, written by `hostwatch quickstart`.\n\
         collector = {}\n\
         server_name = \"localhost\"\n\n{}",
        quote(&collector.to_string()),
        tls_section(Role::Operator, QUICKSTART)
    );
    write(path, &text)
}

/// One line about `host`: status, CPU, memory, root disk, load.
async fn summary(
    client: &mut QueryClient<tonic::transport::Channel>,
    host: &str,
) -> anyhow::Result<String> {
    let hosts = client
        .list_hosts(ListHostsRequest::default())
        .await?
        .into_inner()
        .hosts;
    let Some(status) = hosts.iter().find(|h| h.host_id == host) else {
        return Ok(format!("{host}: waiting for the agent to connect"));
    };
    let latest = client
        .latest(LatestRequest {
            host_id: host.to_owned(),
        })
        .await?
        .into_inner()
        .values;
    let value = |metric: &str, label: Option<(&str, &str)>| -> Option<f64> {
        latest
            .iter()
            .find(|v| v.metric == metric && label.is_none_or(|(n, val)| has_label(v, n, val)))
            .map(|v| v.value)
    };
    let mut parts = vec![format!("{host} {}", host_status_word(status))];
    match value("host_cpu_utilization_ratio", Some(("cpu", "total"))) {
        Some(cpu) => parts.push(format!("cpu {:.1}%", cpu * 100.0)),
        None => parts.push("cpu -".to_owned()),
    }
    if let (Some(avail), Some(total)) = (
        value("host_memory_available_bytes", None),
        value("host_memory_total_bytes", None),
    ) {
        parts.push(format!(
            "memory {} available of {}",
            format_bytes(avail),
            format_bytes(total)
        ));
    }
    if let Some((mount, avail, size)) = root_disk(&latest) {
        parts.push(format!(
            "disk {mount} {} available of {}",
            format_bytes(avail),
            format_bytes(size)
        ));
    }
    if let Some(load) = value("host_load1", None) {
        parts.push(format!("load {load:.2}"));
    }
    Ok(parts.join("  "))
}

fn has_label(value: &SeriesValue, name: &str, expected: &str) -> bool {
    value
        .labels
        .iter()
        .any(|l| l.name == name && l.value == expected)
}

/// The filesystem mounted on "/" or, failing that, the largest one.
fn root_disk(latest: &[SeriesValue]) -> Option<(String, f64, f64)> {
    let mount = |v: &SeriesValue| {
        v.labels
            .iter()
            .find(|l| l.name == "mountpoint")
            .map(|l| l.value.clone())
    };
    let sizes: Vec<(String, f64)> = latest
        .iter()
        .filter(|v| v.metric == "host_filesystem_size_bytes")
        .filter_map(|v| Some((mount(v)?, v.value)))
        .collect();
    let (mountpoint, size) = sizes
        .iter()
        .find(|(m, _)| m == "/")
        .or_else(|| sizes.iter().max_by(|a, b| a.1.total_cmp(&b.1)))?
        .clone();
    let available = latest
        .iter()
        .find(|v| {
            v.metric == "host_filesystem_available_bytes"
                && mount(v).as_deref() == Some(&mountpoint)
        })?
        .value;
    Some((mountpoint, available, size))
}

#[cfg(test)]
mod tests {
    use super::bind_preferred;

    #[tokio::test]
    async fn a_taken_preferred_port_gives_another_and_a_free_one_is_kept() {
        let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = held.local_addr().unwrap().port();
        let other = bind_preferred(taken).await.unwrap();
        assert_ne!(other.local_addr().unwrap().port(), taken);

        let free = other.local_addr().unwrap().port();
        drop(other);
        let again = bind_preferred(free).await.unwrap();
        assert_eq!(again.local_addr().unwrap().port(), free);
    }
}
