//! Wiring: the store, the host registry and the tonic services behind the
//! mTLS listener, with a graceful shutdown.

use crate::config::{CollectorConfig, Limits};
use crate::hosts::HostRegistry;
use crate::ingest::IngestService;
use crate::query::QueryService;
use hostwatch_pki::Identity;
use hostwatch_pki::transport::{ListenerLimits, ServerTls, incoming};
use hostwatch_proto::v1::ingest_server::IngestServer;
use hostwatch_proto::v1::query_server::QueryServer;
use hostwatch_tsdb::{Options, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long open agent streams get to finish their current batch at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Tls(#[from] hostwatch_pki::PkiError),
    #[error("cannot open data directory {path}: {source}")]
    OpenData { path: String, source: sled::Error },
    #[error("storage: {0}")]
    Storage(#[from] hostwatch_tsdb::TsdbError),
    #[error("gRPC server: {0}")]
    Serve(String),
}

/// State every service shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) hosts: HostRegistry,
    pub(crate) identity: Identity,
    pub(crate) limits: Limits,
    /// Cancelled at shutdown; long-lived streams end on it.
    pub(crate) stop: CancellationToken,
    /// Tasks that hold the store; awaited before the database closes.
    pub(crate) tasks: TaskTracker,
}

/// Runs the collector on an already-bound `listener` until `shutdown`
/// completes, then drains open streams and flushes the database.
pub async fn serve(
    config: CollectorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let tls = ServerTls::load(config.tls.clone())?;
    let db = sled::Config::new()
        .path(&config.data_dir)
        .open()
        .map_err(|source| CollectorError::OpenData {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    let options = Options {
        retention_ms: config.storage.retention.as_millis() as i64,
        retention_bytes: config.storage.retention_bytes,
        future_tolerance_ms: config.storage.future_tolerance.as_millis() as i64,
        out_of_order_tolerance_ms: config.storage.out_of_order_tolerance.as_millis() as i64,
        max_series_per_host: config.limits.max_series_per_host,
        ..Options::default()
    };
    let store = Arc::new(Store::open(db.clone(), options)?);
    let hosts =
        HostRegistry::open(&db, config.host_down_after.as_millis() as i64).map_err(|source| {
            CollectorError::OpenData {
                path: config.data_dir.display().to_string(),
                source,
            }
        })?;
    let stop = CancellationToken::new();
    let shared = Shared {
        store,
        hosts,
        identity: tls.identity().clone(),
        limits: config.limits.clone(),
        stop: stop.clone(),
        tasks: TaskTracker::new(),
    };
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), collector = %shared.identity, data_dir = %config.data_dir.display(), "collector serving");

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServer<IngestService>>()
        .await;
    health_reporter
        .set_serving::<QueryServer<QueryService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hostwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CollectorError::Serve(e.to_string()))?;
    let max_message = config.limits.max_message_bytes;
    let ingest = IngestServer::new(IngestService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max_message);
    let query = QueryServer::new(QueryService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message.max(64 << 20));

    let stop_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_signal.cancel();
    });
    let limits = ListenerLimits {
        max_connections: config.limits.max_connections,
        handshake_timeout: config.limits.handshake_timeout,
    };
    let connections = incoming(listener, tls, limits, stop.clone().cancelled_owned());
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(config.limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(connections, stop.clone().cancelled_owned())
        .await;
    stop.cancel();
    shared.tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("agent streams still open after {DRAIN_TIMEOUT:?}; closing anyway");
    }
    if let Err(e) = db.flush_async().await {
        tracing::error!(error = %e, "final flush failed");
    }
    served.map_err(|e| CollectorError::Serve(hostwatch_pki::transport::error_chain(&e)))?;
    tracing::info!("collector stopped");
    Ok(())
}
