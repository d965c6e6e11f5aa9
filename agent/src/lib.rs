//! hostwatch-agent: samples this host every interval, writes each batch to
//! a durable spool, and streams the batches to the collector over mutual
//! TLS, deleting them once acknowledged.
//!
//! Layout:
//! - `config`: `agent.toml`;
//! - `sampler`: one file per metric family, reading `/proc` directly (on
//!   Linux), and the portable `sysinfo` sampler (`sampler` in agent.toml);
//! - `facts`: host facts and boot id for the Hello;
//! - `spool`: unacknowledged batches on disk, bounded, checksummed;
//! - `shipper`: the stream to the collector, acknowledgements, reconnects;
//! - `health`: the agent's own figures (CPU, memory, spool, sending),
//!   also served at `/metrics` on the loopback `metrics_listen` port;
//! - `service`: systemd notifications (ready, watchdog, reloading, stopping);
//! - `enroll`: `hostwatch-agent enroll`, a certificate for a token;
//! - `renew`: renewing the certificate over the shipper's connection;
//! - `alloc`: glibc's allocator set for the agent (one arena, trimmed
//!   every tick);
//! - `cmd`: the binary (configuration, signals, runtime).

pub mod alloc;
pub mod cmd;
pub mod config;
pub mod enroll;
pub mod facts;
mod health;
mod renew;
pub mod sampler;
pub mod service;
mod shipper;
pub mod spool;

pub use config::AgentConfig;

use health::Health;
use hostwatch_pki::transport::ClientTarget;
use hostwatch_proto::v1::{Batch, Hello, Label, ProcessSnapshot, SeriesPoints};
use spool::Spool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Largest message the agent sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Errors that stop the agent before it starts, or keep a reloaded
/// configuration from replacing the running one.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] hostwatch_pki::PkiError),
    /// The collector would refuse it forever: said now instead.
    #[error("{}: the certificate is for {identity}; the agent needs an agent certificate (hostwatch://agent/<host-id>)", path.display())]
    NotAnAgent {
        path: std::path::PathBuf,
        identity: hostwatch_pki::Identity,
    },
    #[error(transparent)]
    Config(#[from] hostwatch_runtime::config::ConfigError),
    /// The metrics port cannot listen (`metrics_listen`: in use, or not
    /// this host's).
    #[error("cannot listen on {address} (metrics_listen): {source}")]
    MetricsListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The host id is where the spool's batches are stored: it changes
    /// only with a restart.
    #[error("{}: the new certificate is for host {host:?}, not {running:?}: a different host id needs a restart", path.display())]
    HostChanged {
        path: std::path::PathBuf,
        host: String,
        running: String,
    },
}

/// The host id this agent runs as: the name in its certificate, which
/// must be an agent's and must load.
pub fn host_id(config: &AgentConfig) -> Result<String, AgentError> {
    let (_, identity) = hostwatch_pki::client_config(&config.tls)?;
    if identity.role != hostwatch_pki::Role::Agent {
        return Err(AgentError::NotAnAgent {
            path: config.tls.cert.clone(),
            identity,
        });
    }
    Ok(identity.name)
}

/// Runs the agent with a fixed configuration until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let (_keep, configs) = watch::channel(config);
    run_reloadable(configs, shutdown).await
}

/// Runs the agent until `shutdown` completes, applying every configuration
/// sent on `configs` (see [`check_reload`]): samples every interval into the
/// spool and ships the spooled batches; at shutdown, sends what it can for a
/// few seconds and syncs the spool to disk.
pub async fn run_reloadable(
    mut configs: watch::Receiver<AgentConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let config = configs.borrow_and_update().clone();
    // Fail now, with a message naming the file, rather than in the loop.
    let host_id = host_id(&config)?;
    let metrics_port = match config.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| AgentError::MetricsListen { address, source })?,
        ),
        None => None,
    };
    let spool = Arc::new(Spool::open(&config.spool_dir(), config.limits.spool_bytes));
    let health = Arc::new(Health::default());
    let hello = Hello {
        host_id: host_id.clone(),
        spool_id: spool.spool_id(),
        boot_id: facts::boot_id(),
        facts: Some(facts::host_facts()),
    };
    let collectors: Vec<&str> = config
        .collectors
        .iter()
        .map(|c| c.address.as_str())
        .collect();
    tracing::info!(host.id = %host_id, collectors = ?collectors, interval = ?config.interval, spool.id = hello.spool_id, "agent starting");
    let stop = CancellationToken::new();
    if let Some(port) = metrics_port {
        serve_metrics(port, health.clone(), spool.clone(), stop.clone());
    }
    let stop_on_shutdown = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        service::stopping();
        stop_on_shutdown.cancel();
    });
    let sampling = tokio::spawn(sample_loop(
        configs.clone(),
        spool.clone(),
        health.clone(),
        stop.clone(),
    ));
    let watchdog = tokio::spawn(service::watchdog());
    service::ready();
    let (channel, connection) = watch::channel(None);
    let renewal = tokio::spawn(renew::run(
        configs.clone(),
        connection,
        health.clone(),
        host_id.clone(),
    ));
    let shipper = shipper::Shipper::new(&config, spool.clone(), health, hello, channel);
    shipper.run(configs, stop.cancelled()).await;
    let _ = sampling.await;
    renewal.abort();
    watchdog.abort();
    spool.sync();
    tracing::info!(spooled = spool.len(), "agent stopped");
    Ok(())
}

/// Serves the agent's own figures at `/metrics` on the loopback `port`
/// (`metrics_listen`) until `stop`.
fn serve_metrics(
    port: tokio::net::TcpListener,
    health: Arc<Health>,
    spool: Arc<Spool>,
    stop: CancellationToken,
) {
    tracing::info!(metrics_listen = %port.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics port serving (loopback, plain HTTP)");
    let render = move || std::future::ready(health.exposition(&spool));
    tokio::spawn(hostwatch_runtime::metrics::serve(
        port,
        render,
        stop.cancelled_owned(),
    ));
}

/// Whether `new` may replace the running `current` configuration of the
/// agent running as `host_id`: its certificates must load, be an agent's,
/// and name that same host (certificates are usually replaced in place, so
/// the running files are no reference). The spool directory is kept until
/// a restart (logged).
pub fn check_reload(
    host_id: &str,
    current: &AgentConfig,
    new: &AgentConfig,
) -> Result<(), AgentError> {
    let host = self::host_id(new)?;
    if host != host_id {
        return Err(AgentError::HostChanged {
            path: new.tls.cert.clone(),
            host,
            running: host_id.to_owned(),
        });
    }
    if new.state_dir != current.state_dir {
        tracing::warn!(state_dir = %new.state_dir.display(), "state_dir changes take effect at the next restart");
    }
    if new.metrics_listen != current.metrics_listen {
        tracing::warn!("metrics_listen changes take effect at the next restart");
    }
    Ok(())
}

/// Completes when the configuration changes; never if nobody can change it.
async fn config_changed(configs: &mut watch::Receiver<AgentConfig>) {
    if configs.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Samples every interval until `stop`, spooling one batch per tick.
async fn sample_loop(
    mut configs: watch::Receiver<AgentConfig>,
    spool: Arc<Spool>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut config = configs.borrow_and_update().clone();
    let mut sampler =
        sampler::HostSampler::new(config.sampler, sampler::Settings::from_config(&config));
    let mut ticker = ticker(config.interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = config_changed(&mut configs) => {
                let new = configs.borrow_and_update().clone();
                let settings = sampler::Settings::from_config(&new);
                if new.sampler == config.sampler {
                    sampler.reconfigure(settings);
                } else {
                    // Another reader: its first tick has no rates yet.
                    sampler = sampler::HostSampler::new(new.sampler, settings);
                }
                spool.set_max_bytes(new.limits.spool_bytes);
                if new.interval != config.interval {
                    ticker = self::ticker(new.interval);
                }
                config = new;
                continue;
            }
            _ = ticker.tick() => {}
        }
        let t_ms = hostwatch_stdx::now_ms();
        let tick = sampler.sample(std::time::Instant::now());
        let mut samples = tick.samples;
        // Only this task pushes: the next sequence is this batch's.
        health.sample(&spool, &mut samples);
        let processes = tick
            .processes
            .map(|processes| {
                vec![ProcessSnapshot {
                    timestamp_ms: t_ms,
                    processes,
                }]
            })
            .unwrap_or_default();
        spool.push(Batch {
            seq: 0,
            series: to_series(samples, t_ms),
            dropped_batches_total: 0,
            processes,
        });
        // The shipper encodes and sends the batch once this task yields;
        // then the tick's freed memory goes back to the kernel rather than
        // staying resident until the next one.
        tokio::task::yield_now().await;
        alloc::release();
    }
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    // After a stall (suspended VM), sample once and continue from now rather
    // than firing a burst of catch-up ticks with identical readings.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// One tick's samples as the series of a batch, each with one point at
/// `t_ms`; public for tests that ship a sampler's readings as the agent does.
pub fn to_series(samples: sampler::Samples, t_ms: i64) -> Vec<SeriesPoints> {
    samples
        .0
        .into_iter()
        .map(|s| SeriesPoints {
            metric: s.metric.to_owned(),
            labels: s
                .labels
                .into_iter()
                .map(|(name, value)| Label {
                    name: name.to_owned(),
                    value,
                })
                .collect(),
            timestamps_ms: vec![t_ms],
            values: vec![s.value],
        })
        .collect()
}

/// Where and how the shipper reaches each collector, in order of
/// preference, from the configuration.
fn client_targets(config: &AgentConfig) -> Vec<ClientTarget> {
    config
        .collectors
        .iter()
        .map(|c| ClientTarget {
            address: c.address.clone(),
            server_name: c.server_name.clone(),
            tls: config.tls.clone(),
            connect_timeout: config.limits.connect_timeout,
            keepalive: config.limits.keepalive(),
        })
        .collect()
}
