//! hostwatch-agent: samples this host every interval and streams numbered
//! batches to the collector over mutual TLS.
//!
//! Layout:
//! - `config`: `agent.toml`;
//! - `sampler`: one file per metric family, sysinfo underneath;
//! - `facts`: host facts and boot id for the Hello;
//! - `queue`: unacknowledged batches, bounded by bytes;
//! - `shipper`: the stream to the collector, acknowledgements, reconnects.

pub mod cmd;
pub mod config;
pub mod facts;
pub mod queue;
pub mod sampler;
mod shipper;

pub use config::AgentConfig;

use hostwatch_pki::transport::ClientTarget;
use hostwatch_proto::v1::{Hello, Label, SeriesPoints};
use queue::Queue;
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Largest message the agent sends or accepts.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Errors that stop the agent before it starts.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] hostwatch_pki::PkiError),
}

/// Runs the agent until `shutdown` completes: samples every interval and
/// ships the batches; at shutdown, sends what it can for a few seconds.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    // Fail now, with a message naming the file, rather than in the loop.
    let (_, identity) = hostwatch_pki::client_config(&config.tls)?;
    let host_id = identity.name;
    let queue = Arc::new(Queue::new(config.limits.queue_bytes));
    let hello = Hello {
        host_id: host_id.clone(),
        spool_id: rand::random(),
        boot_id: facts::boot_id(),
        facts: Some(facts::host_facts()),
    };
    tracing::info!(host.id = %host_id, collector = %config.collector, interval = ?config.interval, "agent starting");
    let stop = CancellationToken::new();
    let stop_on_shutdown = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_on_shutdown.cancel();
    });
    let sampling = tokio::spawn(sample_loop(config.interval, queue.clone(), stop.clone()));
    let shipper = shipper::Shipper {
        target: ClientTarget {
            address: config.collector.clone(),
            server_name: config.server_name.clone(),
            tls: config.tls.clone(),
            connect_timeout: config.limits.connect_timeout,
        },
        queue,
        hello,
        max_in_flight: config.limits.max_in_flight,
        max_backoff: config.limits.max_backoff,
        max_message_bytes: MAX_MESSAGE_BYTES,
    };
    shipper.run(stop.cancelled()).await;
    let _ = sampling.await;
    tracing::info!("agent stopped");
    Ok(())
}

/// Samples every `interval` until `stop`, queueing one batch per tick.
async fn sample_loop(interval: std::time::Duration, queue: Arc<Queue>, stop: CancellationToken) {
    let mut sampler = sampler::Sampler::new();
    let mut ticker = tokio::time::interval(interval);
    // After a stall (suspended VM), sample once and continue from now rather
    // than firing a burst of catch-up ticks with identical readings.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let t_ms = now_ms();
        let samples = sampler.sample();
        queue.push(to_series(samples, t_ms));
    }
}

fn to_series(samples: sampler::Samples, t_ms: i64) -> Vec<SeriesPoints> {
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

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
