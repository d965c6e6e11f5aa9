//! Wiring: the store, the host registry and the tonic services behind the
//! mTLS listener, the HTTPS API behind its own, with a graceful shutdown.

use crate::CollectorError;
use crate::admin::AdminService;
use crate::config::{CollectorConfig, Limits};
use crate::enroll::{EnrollService, Issuing};
use crate::hosts::HostRegistry;
use crate::ingest::{IngestRoutes, IngestService};
use crate::query::QueryService;
use crate::shared::{Shared, reload_config};
use crate::state::StateDb;
use crate::tokens::TokenStore;
use hostwatch_alerting::{Alerting, Clock, Refusal, SnapshotSource, StorageCondition};
use hostwatch_pki::ClientAuth;
use hostwatch_pki::transport::{CallLimitLayer, ListenerLimits, ServerTls, incoming};
use hostwatch_proto::v1::admin_server::AdminServer;
use hostwatch_proto::v1::enroll_server::EnrollServer;
use hostwatch_proto::v1::ingest_server::IngestServer;
use hostwatch_proto::v1::query_server::QueryServer;
use hostwatch_tsdb::{Condition, Options, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the store's and the state database's conditions are looked
/// at (health service, self-alert, healing the state database).
const STORE_WATCH_TICK: Duration = Duration::from_secs(1);
/// Once `limits.drain_timeout` is over and every connection is closed, a
/// stream's task still in a store call gets this long to finish it before
/// the database is flushed and closed.
const STORE_CALL_GRACE: Duration = Duration::from_secs(5);
/// Largest Enroll request: a token, a host id and a CSR fit many times.
const MAX_ENROLL_MESSAGE_BYTES: usize = 64 << 10;
/// How often host-down alerts look at the registry: a host is reported
/// down at most this long after its timeout.
const HOST_DOWN_TICK: Duration = Duration::from_millis(250);

/// Runs the collector on an already-bound `listener` until `shutdown`
/// completes, then drains open streams and flushes the database. The
/// HTTPS API, when `http_listen` is set, listens there.
pub async fn serve(
    config: CollectorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let http = match config.http_listen {
        Some(address) => {
            Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| CollectorError::Listen {
                        key: "http_listen",
                        address,
                        source,
                    })?,
            )
        }
        None => None,
    };
    serve_with_http(config, listener, http, shutdown).await
}

/// [`serve`], with the HTTPS API on an already-bound `http` listener (or
/// none), whatever `http_listen` says. The plain-HTTP metrics port, when
/// `metrics_listen` is set, is bound here, before anything is opened.
pub async fn serve_with_http(
    config: CollectorConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let metrics_port = match config.metrics_listen {
        Some(address) => {
            Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| CollectorError::Listen {
                        key: "metrics_listen",
                        address,
                        source,
                    })?,
            )
        }
        None => None,
    };
    let tls = ServerTls::load_with_crl(
        config.tls.clone(),
        ClientAuth::Required,
        config.tls_crl.clone(),
    )?;
    let shared = open_shared(&config, &tls)?;
    let tls = tls.with_denylist(shared.denylist.clone())?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServer<IngestService>>()
        .await;
    health_reporter
        .set_serving::<QueryServer<QueryService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hostwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CollectorError::Serve(e.to_string()))?;
    let max_message = config.limits.max_message_bytes;
    let ingest_port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.listen.port());
    let issuing = Issuing::configured(&config, ingest_port)?.map(Arc::new);
    let ingest = IngestRoutes::new(
        IngestService {
            shared: shared.clone(),
            issuing: issuing.clone(),
        },
        max_message,
    );
    let query = QueryServer::new(QueryService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message.max(64 << 20));
    let admin = AdminServer::new(AdminService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max_message);
    let http = start_http(&config, &shared, http)?;
    let enroll = start_enroll(&config, &shared, issuing).await?;
    let mut reloaded = vec![tls.clone()];
    reloaded.extend(http.as_ref().map(|h| h.tls.clone()));
    reloaded.extend(enroll.as_ref().map(|e| e.tls.clone()));
    spawn_alerting(&shared, reloaded, config.tls_check_interval);
    spawn_store_watch(&shared, shared.state.clone(), health_reporter.clone());
    // Logged once SIGHUP is handled: from here on it reloads, not kills.
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), collector = %shared.identity, data_dir = %config.data_dir.display(), "collector serving");

    let stop = shared.stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let limits = &config.limits;
    let connections = incoming(
        listener,
        tls,
        listener_limits(limits),
        shared.stop.clone().cancelled_owned(),
    );
    let mut open = vec![connections.connections()];
    open.extend(http.as_ref().map(|h| h.connections.clone()));
    open.extend(enroll.as_ref().map(|e| e.connections.clone()));
    let names = std::iter::once("grpc")
        .chain(http.as_ref().map(|_| "https"))
        .chain(enroll.as_ref().map(|_| "enroll"));
    shared
        .metrics
        .set_listeners(names.zip(open.iter().cloned()).collect());
    if let Some(port) = metrics_port {
        spawn_metrics_port(&shared, port);
    }
    let drained = close_after_drain(&shared.stop, limits.drain_timeout, open);
    let served = tonic::transport::Server::builder()
        .layer(CallLimitLayer)
        .layer(crate::metrics::GrpcLayer(shared.metrics.clone()))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(health)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(query)
        .add_service(admin)
        .serve_with_incoming_shutdown(connections, shared.stop.clone().cancelled_owned())
        .await;
    if let Some(http) = http {
        // Ends once its connections have closed, by themselves or by the drain.
        let _ = http.task.await;
    }
    if let Some(enroll) = enroll {
        let _ = enroll.task.await;
    }
    drained.cancel();
    finish(&shared).await;
    served.map_err(|e| CollectorError::Serve(hostwatch_stdx::error_chain(&e)))?;
    tracing::info!("collector stopped");
    Ok(())
}

/// Serves `/metrics` without credentials on the loopback `port`
/// (`metrics_listen`) until the collector stops.
fn spawn_metrics_port(shared: &Shared, port: TcpListener) {
    tracing::info!(metrics_listen = %port.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics port serving (loopback, plain HTTP)");
    let for_render = shared.clone();
    let render = move || {
        let shared = for_render.clone();
        async move { crate::metrics::render(&shared).await }
    };
    let stop = shared.stop.clone().cancelled_owned();
    tokio::spawn(hostwatch_runtime::metrics::serve(port, render, stop));
}

/// The HTTPS API while it runs.
struct HttpApi {
    task: tokio::task::JoinHandle<()>,
    connections: hostwatch_pki::transport::Connections,
    /// Its own TLS settings (client certificates optional), reloaded with
    /// the gRPC listener's.
    tls: ServerTls,
}

/// Starts the HTTPS API on `listener`, if any, with the collector's
/// certificate and the gRPC listener's limits.
fn start_http(
    config: &CollectorConfig,
    shared: &Shared,
    listener: Option<TcpListener>,
) -> Result<Option<HttpApi>, CollectorError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let tls = ServerTls::load_with_crl(
        config.tls.clone(),
        ClientAuth::Optional,
        config.tls_crl.clone(),
    )?
    .with_denylist(shared.denylist.clone())?;
    tracing::info!(http_listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "HTTPS API serving");
    let (task, connections) = crate::http::spawn(
        crate::http::Api::new(shared.clone(), config),
        listener,
        tls.clone(),
        &config.limits,
        listener_limits(&config.limits),
        shared.stop.clone(),
    );
    Ok(Some(HttpApi {
        task,
        connections,
        tls,
    }))
}

/// The enrollment listener while it runs.
struct EnrollListener {
    task: tokio::task::JoinHandle<()>,
    connections: hostwatch_pki::transport::Connections,
    /// Its own TLS settings (no client certificates, the CA presented),
    /// reloaded with the gRPC listener's.
    tls: ServerTls,
}

/// Starts the enrollment listener on `enroll_listen`, if set: the Enroll
/// service alone, with the collector's certificate, the main listener's
/// handshake limits, and `enroll.max_connections` anonymous connections,
/// issuing with `issuing` (loaded whenever `enroll_listen` is set).
async fn start_enroll(
    config: &CollectorConfig,
    shared: &Shared,
    issuing: Option<Arc<Issuing>>,
) -> Result<Option<EnrollListener>, CollectorError> {
    let (Some(address), Some(issuing)) = (config.enroll_listen, issuing) else {
        return Ok(None);
    };
    let tls = ServerTls::load_with(config.tls.clone(), ClientAuth::Anonymous)?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| CollectorError::Listen {
            key: "enroll_listen",
            address,
            source,
        })?;
    tracing::info!(enroll_listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "enrollment listener serving");
    let limits = &config.limits;
    let anonymous = config.enroll.max_connections;
    let connections = incoming(
        listener,
        tls.clone(),
        ListenerLimits {
            // Every client is anonymous: one identity, all the places.
            max_connections: anonymous,
            reserved_operator_connections: 0,
            max_connections_per_identity: anonymous,
            ..listener_limits(limits)
        },
        shared.stop.clone().cancelled_owned(),
    );
    let control = connections.connections();
    let service = EnrollServer::new(EnrollService {
        shared: shared.clone(),
        issuing,
    })
    .max_decoding_message_size(MAX_ENROLL_MESSAGE_BYTES);
    let server = tonic::transport::Server::builder()
        .layer(CallLimitLayer)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .add_service(service)
        .serve_with_incoming_shutdown(connections, shared.stop.clone().cancelled_owned());
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %hostwatch_stdx::error_chain(&e), "enrollment listener failed");
        }
    });
    Ok(Some(EnrollListener {
        task,
        connections: control,
        tls,
    }))
}

/// Opens what the services share: the collector's state database, the
/// store, the host registry, the alerting engine and the API tokens.
fn open_shared(config: &CollectorConfig, tls: &ServerTls) -> Result<Shared, CollectorError> {
    let open_data = |source| CollectorError::OpenData {
        path: config.data_dir.display().to_string(),
        source,
    };
    // The collector's own state (hosts, alert state, the outbox), reopened
    // by the state watch after a failed write; the store keeps its series
    // in a directory of its own, which it reopens by itself.
    let (state, db) =
        StateDb::open(&config.data_dir, config.storage.min_free_bytes).map_err(open_data)?;
    let store = Arc::new(Store::open(
        &config.data_dir.join("store"),
        store_options(config),
    )?);
    let hosts =
        HostRegistry::open(&db, config.host_down_after.as_millis() as i64).map_err(open_data)?;
    let alerting = Alerting::open(
        &db,
        config.alert_rules()?,
        snapshot_source(&store),
        Clock::system(),
    )?;
    let tokens = TokenStore::open(&db).map_err(open_data)?;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let forwarding = crate::forward::Forwarding::start(
        store.clone(),
        config.forward_destinations()?,
        &tasks,
        stop.clone(),
    )?;
    // Registry, alerting and tokens hold their own trees; a handle kept here would
    // keep the database from being reopened.
    drop(db);
    let denylist = hostwatch_pki::transport::Denylist::default();
    let metrics = Arc::<crate::metrics::SelfMetrics>::default();
    for revoked in tokens.enroll.revoked() {
        if revoked.in_force() {
            denylist.deny(&revoked.host, &revoked.serials);
        } else {
            denylist.deny_serials(&revoked.serials);
        }
    }
    let appender = crate::append::Appender::start(
        store.clone(),
        crate::append::AfterDurable {
            alerting: alerting.clone(),
            hosts: hosts.clone(),
            metrics: metrics.clone(),
        },
    )
    .map_err(|e| CollectorError::Serve(format!("cannot start the ingest threads: {e}")))?;
    Ok(Shared {
        denylist,
        appender,
        promql: crate::promql::Promql::new(store.clone(), &config.query),
        store,
        hosts,
        alerting,
        tokens,
        future_tolerance_ms: config.storage.future_tolerance.as_millis() as i64,
        config_path: config.path.clone(),
        identity: tls.identity().clone(),
        limits: config.limits.clone(),
        stop,
        tasks,
        forwarding,
        refused_messages: Arc::default(),
        metrics,
        state: Arc::new(state),
    })
}

/// The store's options, from `[storage]` and `[limits]`.
fn store_options(config: &CollectorConfig) -> Options {
    let storage = &config.storage;
    Options {
        retention_ms: storage.retention.as_millis() as i64,
        retention_bytes: storage.retention_bytes,
        partition_ms: storage.partition.as_millis() as i64,
        future_tolerance_ms: storage.future_tolerance.as_millis() as i64,
        out_of_order_tolerance_ms: storage.out_of_order_tolerance.as_millis() as i64,
        max_series_per_host: config.limits.max_series_per_host,
        cache_bytes: storage.cache_bytes,
        read_cache_bytes: storage.read_cache_bytes,
        min_free_bytes: storage.min_free_bytes,
        accept_log: !config.forward.is_empty(),
        ..Options::default()
    }
}

/// Where alerts find the process snapshot that names their cause.
fn snapshot_source(store: &Arc<Store>) -> SnapshotSource {
    let store = store.clone();
    Arc::new(
        move |host: &str, at_ms: i64| match store.process_snapshot_at(host, at_ms) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(host.id = host, error = %e, "cannot read a process snapshot for an alert's cause");
                None
            }
        },
    )
}

/// The mTLS listener's limits, from `[limits]`.
fn listener_limits(limits: &Limits) -> ListenerLimits {
    ListenerLimits {
        max_connections: limits.max_connections,
        reserved_operator_connections: limits.reserved_operator_connections,
        max_connections_per_identity: limits.max_connections_per_identity,
        max_handshakes: limits.max_handshakes,
        handshake_timeout: limits.handshake_timeout,
        idle_timeout: limits.idle_timeout,
        max_pending_bytes_per_connection: limits.max_pending_bytes_per_connection,
        max_pending_bytes: limits.max_pending_bytes,
        message_timeout: limits.message_timeout,
    }
}

/// Graceful shutdown waits for every stream to end, and a stream whose
/// client stopped reading never does: once `stop` is cancelled, the
/// connections still `open` after `drain` are closed whatever their
/// streams are doing. Cancel the returned token when all have closed.
fn close_after_drain(
    stop: &CancellationToken,
    drain: Duration,
    open: Vec<hostwatch_pki::transport::Connections>,
) -> CancellationToken {
    let (draining, drained) = (stop.clone(), CancellationToken::new());
    let all_closed = drained.clone();
    tokio::spawn(async move {
        draining.cancelled().await;
        tokio::select! {
            _ = all_closed.cancelled() => {}
            _ = tokio::time::sleep(drain) => {
                tracing::warn!(?drain, "streams still open after the drain; closing their connections");
                open.iter().for_each(|o| o.close_all());
            }
        }
    });
    drained
}

/// Once the server is done: stops the background tasks, gives the stream
/// tasks still in a store call [`STORE_CALL_GRACE`], writes the hosts'
/// newest last seen and flushes the state database.
async fn finish(shared: &Shared) {
    shared.stop.cancel();
    shared.tasks.close();
    if tokio::time::timeout(STORE_CALL_GRACE, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "stream tasks still running {STORE_CALL_GRACE:?} after their connections closed; closing the database anyway"
        );
    }
    // Batches handed over by streams that are gone are stored and
    // answered (to no one) before the database closes.
    if tokio::time::timeout(STORE_CALL_GRACE, shared.appender.stop())
        .await
        .is_err()
    {
        tracing::warn!(
            "ingest threads still storing {STORE_CALL_GRACE:?} after the streams ended; closing the database anyway"
        );
    }
    for (name, f) in shared.forwarding.figures() {
        tracing::info!(destination = %name, sent = f.sent, failed = f.failed, dropped = f.dropped, pending = f.pending, cursor = f.cursor, "forwarding stopped");
    }
    // Last seen is written at most once a minute per host while batches
    // come; a clean stop writes memory's, so a restart loses none.
    shared.hosts.write_seen();
    if let Err(e) = shared.state.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
}

/// Every [`STORE_WATCH_TICK`]: heals the collector's state database after a
/// failed write (see `state`), reports the Ingest service NOT_SERVING on
/// the standard health service while the store does not store (read-only
/// under the free-space reserve, or failed and rebuilding), so load
/// balancers and probes see it, and raises or resolves the collector's
/// `not_storing` alerts from both conditions.
fn spawn_store_watch(
    shared: &Shared,
    state: Arc<StateDb>,
    health: tonic_health::server::HealthReporter,
) {
    let shared = shared.clone();
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(STORE_WATCH_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut serving = true;
        loop {
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let (store, hosts, alerting, tokens, state) = (
                shared.store.clone(),
                shared.hosts.clone(),
                shared.alerting.clone(),
                shared.tokens.clone(),
                state.clone(),
            );
            // Reopening a database and reading free space block.
            let Ok(conditions) = tokio::task::spawn_blocking(move || {
                let state = state.check(&hosts, &alerting, &tokens);
                storage_conditions(&store, state)
            })
            .await
            else {
                continue;
            };
            shared
                .metrics
                .evaluated(crate::metrics::Evaluation::Storage, || {
                    shared
                        .alerting
                        .check_storage(&shared.identity.name, &conditions)
                });
            let storing = conditions[0].refusal.is_none();
            if storing == serving {
                continue;
            }
            serving = storing;
            if storing {
                health.set_serving::<IngestServer<IngestService>>().await;
            } else {
                health
                    .set_not_serving::<IngestServer<IngestService>>()
                    .await;
            }
        }
    });
}

/// The conditions of the store (first) and of the state database, for the
/// `not_storing` alerts.
fn storage_conditions(store: &Store, state_failure: Option<String>) -> [StorageCondition; 2] {
    let store_refusal = match store.health() {
        Ok(health) => match &health.condition {
            Condition::Storing => None,
            Condition::ReadOnly => Some(Refusal {
                condition: health.condition.to_string(),
                cause: health.refusal().unwrap_or_default(),
            }),
            Condition::Failed { cause } => Some(Refusal {
                condition: health.condition.to_string(),
                cause: cause.clone(),
            }),
        },
        Err(e) => Some(Refusal {
            condition: "failed".to_owned(),
            cause: e.to_string(),
        }),
    };
    [
        StorageCondition {
            storage: "store".to_owned(),
            refusal: store_refusal,
        },
        StorageCondition {
            storage: "state".to_owned(),
            refusal: state_failure.map(|cause| Refusal {
                condition: "failed".to_owned(),
                cause,
            }),
        },
    ]
}

/// Every host's liveness for host-down rules, revoked hosts marked: they
/// are refused on purpose, not down.
fn liveness(
    hosts: &crate::hosts::HostRegistry,
    enroll: &crate::enroll::EnrollStore,
) -> Vec<hostwatch_alerting::HostLiveness> {
    let mut live = hosts.liveness();
    for host in &mut live {
        host.revoked = enroll.revoked_since(&host.host).is_some();
    }
    live
}

/// The alerting tasks: notification delivery, the host-down ticker, and
/// reloads: on SIGHUP (certificates and alert rules), and of certificate
/// files that changed, checked every `tls_check_interval`.
fn spawn_alerting(shared: &Shared, tls: Vec<ServerTls>, tls_check_interval: Duration) {
    let alerting = shared.alerting.clone();
    let stop = shared.stop.clone().cancelled_owned();
    shared.tasks.spawn(async move { alerting.run(stop).await });
    let (alerting, hosts, stop) = (
        shared.alerting.clone(),
        shared.hosts.clone(),
        shared.stop.clone(),
    );
    let enroll = shared.tokens.enroll.clone();
    let metrics = shared.metrics.clone();
    shared.tasks.spawn(async move {
        let mut ticker = tokio::time::interval(HOST_DOWN_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {
                    let live = liveness(&hosts, &enroll);
                    metrics.evaluated(crate::metrics::Evaluation::HostDown, || alerting.check_hosts(&live));
                }
            }
        }
    });
    let shared = shared.clone();
    // Registered before serve() announces itself, so an early SIGHUP
    // cannot hit the default action (termination).
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; reload through Admin only");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = hostwatch_runtime::tls_check_due(tls_check_interval) => {
                    reload_changed_certificates(&tls);
                    continue;
                }
                _ = hangup.recv() => {}
            }
            tracing::info!("SIGHUP: reloading certificates, alert rules and forwarding");
            for tls in &tls {
                if let Err(e) = tls.reload() {
                    tracing::error!(error = %e, "certificates not reloaded; the running ones stay");
                }
            }
            match reload_config(&shared).await {
                // The engine logs what it now runs.
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "alert rules not reloaded; the running ones stay")
                }
            }
        }
    });
}

/// Loads the certificate files that changed on disk since they were last
/// read, for new connections; a broken file is logged once, and the
/// running certificates stay.
fn reload_changed_certificates(tls: &[ServerTls]) {
    for tls in tls {
        match tls.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => tracing::info!("certificate files changed: reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "certificate files changed but do not load; the running ones stay")
            }
        }
    }
}
