//! The state every service shares, in a module of its own: the server
//! builds it and the services (ingest, query, admin) use it, and neither
//! the server nor the services depend on each other.

use crate::config::{CollectorConfig, Limits};
use crate::hosts::HostRegistry;
use crate::promql::Promql;
use crate::state::StateDb;
use crate::tokens::TokenStore;
use hostwatch_alerting::Alerting;
use hostwatch_pki::Identity;
use hostwatch_tsdb::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State every service shares; cheap to clone (handles).
#[derive(Clone)]
pub(crate) struct Shared {
    /// The time-series store: appends from agents, reads for operators.
    pub(crate) store: Arc<Store>,
    /// Where agents' batches go into the store (its own threads).
    pub(crate) appender: crate::append::Appender,
    /// Hosts that ever connected: facts, last seen, up/down.
    pub(crate) hosts: HostRegistry,
    /// Rules, alert state, silences and the notification outbox.
    pub(crate) alerting: Alerting,
    /// The HTTPS API's bearer tokens.
    pub(crate) tokens: TokenStore,
    /// `storage.future_tolerance`: newer samples are neither stored nor evaluated.
    pub(crate) future_tolerance_ms: i64,
    /// The configuration file, re-read on reload.
    pub(crate) config_path: Option<PathBuf>,
    /// This collector's identity, from its certificate (in Welcomes).
    pub(crate) identity: Identity,
    /// `[limits]`, for the services' own checks.
    pub(crate) limits: Limits,
    /// Cancelled at shutdown; long-lived streams end on it.
    pub(crate) stop: CancellationToken,
    /// Tasks that hold the store; awaited before the database closes.
    pub(crate) tasks: TaskTracker,
    /// Agent messages refused before they reached the store.
    pub(crate) refused_messages: Arc<RefusedMessages>,
    /// The collector's own database (hosts, alert state, the outbox, tokens).
    pub(crate) state: Arc<StateDb>,
    /// The PromQL engine behind `[query]`'s limits, for the HTTP API and
    /// `Query.Promql` alike.
    pub(crate) promql: Promql,
    /// The `[[forward]]` destinations' counters.
    pub(crate) forwarding: crate::forward::Forwarding,
    /// Revoked hosts and serials, which every listener refuses; filled
    /// from the enrollment store's `revoked_hosts` at start.
    pub(crate) denylist: hostwatch_pki::transport::Denylist,
    /// Figures for `/metrics` that have no counter elsewhere.
    pub(crate) metrics: Arc<crate::metrics::SelfMetrics>,
}

impl Shared {
    /// The shortest silence after which a host is paged as down
    /// (`host_down_after`, or a host-down rule's shorter timeout), told
    /// to agents so they keep their reconnection backoff below it.
    pub(crate) fn host_down_after_ms(&self) -> u64 {
        let rules = self.alerting.host_down_timeout_ms();
        let rules = rules.map_or(u64::MAX, |ms| u64::try_from(ms).unwrap_or(0));
        self.hosts.down_after_ms().min(rules)
    }

    /// Runs a store call on the blocking pool (sled calls may hit the
    /// disk), mapping its error to a gRPC status.
    pub(crate) async fn on_store<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> Result<T, hostwatch_tsdb::TsdbError> + Send + 'static,
    ) -> Result<T, tonic::Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .map_err(crate::convert::storage_status)
    }
}

/// Messages refused before they reached the store or the engine, for
/// `storage stats`.
#[derive(Debug, Default)]
pub(crate) struct RefusedMessages {
    /// HTTP API requests without an operator's or viewer's certificate
    /// or a valid API token.
    pub(crate) http_unauthorized: AtomicU64,
    /// Larger than `limits.max_message_bytes`.
    pub(crate) oversized: AtomicU64,
    /// Not a decodable `AgentMessage`.
    pub(crate) undecodable: AtomicU64,
    /// Agent certificates issued through Enroll.
    pub(crate) enrollments: AtomicU64,
    /// Enroll calls refused, whatever the reason.
    pub(crate) enrollments_refused: AtomicU64,
    /// Agent certificates renewed through Ingest.Renew.
    pub(crate) renewals: AtomicU64,
    /// Renew calls refused, whatever the reason.
    pub(crate) renewals_refused: AtomicU64,
}

/// Re-reads the configuration file and applies its `[alerting]` and
/// `[[forward]]` sections; an invalid file leaves the running ones in
/// place. Returns the names of the rules and hooks in force. Other
/// sections need a restart.
pub(crate) async fn reload_config(shared: &Shared) -> Result<(Vec<String>, Vec<String>), String> {
    let path = shared
        .config_path
        .clone()
        .ok_or("the collector was not started from a configuration file")?;
    let (rules, destinations) = tokio::task::spawn_blocking(move || {
        let config = CollectorConfig::load(&path)?;
        Ok::<_, hostwatch_runtime::config::ConfigError>((
            config.alert_rules()?,
            config.forward_destinations()?,
        ))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    shared.alerting.reload(rules);
    shared.forwarding.reload(destinations).await;
    Ok(shared.alerting.rule_names())
}
