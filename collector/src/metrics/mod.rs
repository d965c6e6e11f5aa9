//! Self-monitoring: the collector's own figures in the Prometheus text
//! format, at `/metrics` on the HTTPS listener (authenticated as every
//! read) and, with `metrics_listen`, on a loopback-only plain-HTTP port
//! (`hostwatch_runtime::metrics`).
//!
//! Most figures are counters that already exist, read at scrape time: the
//! store's (`Store::stats`), the listeners' (`Connections::stats`), the
//! refused messages', alerting's deliveries, forwarding's destinations.
//! What had no counter is counted here, in [`SelfMetrics`], with relaxed
//! atomics only: nothing on the ingest path takes a lock for it.
//!
//! Layout: this file (the counters and [`render`]), `endpoints` (the
//! HTTP API's handlers as labels), `grpc` (the tower layer timing gRPC
//! calls). The families are listed in docs/self-monitoring.md.

mod endpoints;
mod grpc;

pub(crate) use endpoints::HttpFigures;
pub(crate) use grpc::GrpcLayer;

use crate::shared::Shared;
use hostwatch_pki::transport::Connections;
use hostwatch_stdx::exposition::{Histogram, Kind, Text};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an agent's stream was refused before its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamRefusal {
    /// The certificate is not an agent's.
    Role,
    /// The Hello claims another host than the certificate's.
    HostMismatch,
    /// No Hello first, or none within `limits.handshake_timeout`.
    NoHello,
    /// The Hello's facts are out of bounds.
    BadHello,
    /// The store does not store (read-only or failed): come back later.
    NotStoring,
    /// The store could not tell the last sequence it holds.
    StorageError,
}

impl StreamRefusal {
    const ALL: [StreamRefusal; 6] = [
        StreamRefusal::Role,
        StreamRefusal::HostMismatch,
        StreamRefusal::NoHello,
        StreamRefusal::BadHello,
        StreamRefusal::NotStoring,
        StreamRefusal::StorageError,
    ];

    fn label(self) -> &'static str {
        match self {
            StreamRefusal::Role => "role",
            StreamRefusal::HostMismatch => "host_mismatch",
            StreamRefusal::NoHello => "no_hello",
            StreamRefusal::BadHello => "bad_hello",
            StreamRefusal::NotStoring => "not_storing",
            StreamRefusal::StorageError => "storage_error",
        }
    }
}

/// Why an agent's message on an open stream was refused (the stream
/// then ends). Too large and undecodable messages are counted in
/// `RefusedMessages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageRefusal {
    /// A batch sequence not above the previous one on the stream.
    BadSequence,
    /// An empty message, or a second Hello.
    Unexpected,
    /// A batch the store did not store (not storing, or a failed write).
    NotStored,
}

impl MessageRefusal {
    const ALL: [MessageRefusal; 3] = [
        MessageRefusal::BadSequence,
        MessageRefusal::Unexpected,
        MessageRefusal::NotStored,
    ];

    fn label(self) -> &'static str {
        match self {
            MessageRefusal::BadSequence => "bad_sequence",
            MessageRefusal::Unexpected => "unexpected",
            MessageRefusal::NotStored => "not_stored",
        }
    }
}

/// What an alert evaluation looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evaluation {
    /// A stored batch's samples.
    Batch,
    /// The host registry, for host-down rules.
    HostDown,
    /// The store's and the state database's conditions.
    Storage,
}

impl Evaluation {
    const ALL: [Evaluation; 3] = [Evaluation::Batch, Evaluation::HostDown, Evaluation::Storage];

    fn label(self) -> &'static str {
        match self {
            Evaluation::Batch => "batch",
            Evaluation::HostDown => "host_down",
            Evaluation::Storage => "storage",
        }
    }
}

/// Figures counted for `/metrics` that had no counter elsewhere.
#[derive(Default)]
pub(crate) struct SelfMetrics {
    /// From a batch's arrival to its Ack queued on the stream.
    pub(crate) ack_latency: Histogram,
    /// By [`StreamRefusal`].
    streams_refused: [AtomicU64; StreamRefusal::ALL.len()],
    /// By [`MessageRefusal`].
    messages_refused: [AtomicU64; MessageRefusal::ALL.len()],
    /// By [`Evaluation`].
    evaluations: [Histogram; Evaluation::ALL.len()],
    /// The HTTPS API's requests by handler.
    pub(crate) http: HttpFigures,
    /// gRPC calls by method.
    pub(crate) grpc: grpc::GrpcFigures,
    /// The listeners, by name (`grpc`, `https`, `enroll`), once serving.
    listeners: OnceLock<Vec<(&'static str, Connections)>>,
}

impl SelfMetrics {
    pub(crate) fn stream_refused(&self, reason: StreamRefusal) {
        self.streams_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn message_refused(&self, reason: MessageRefusal) {
        self.messages_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `evaluate`, timed as an evaluation of `kind`.
    pub(crate) fn evaluated<T>(&self, kind: Evaluation, evaluate: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = evaluate();
        self.evaluations[kind as usize].observe(started.elapsed());
        out
    }

    /// The listeners whose connections `/metrics` counts; set once.
    pub(crate) fn set_listeners(&self, listeners: Vec<(&'static str, Connections)>) {
        let _ = self.listeners.set(listeners);
    }
}

/// The collector's figures now, in the text format. Store sizes are read
/// on the blocking pool (they sum the head's series and ask sled).
pub(crate) async fn render(shared: &Shared) -> String {
    let store = shared.store.clone();
    let stats =
        tokio::task::spawn_blocking(move || (store.stats(), store.maintenance_durations())).await;
    let mut text = Text::new();
    text.family(
        "hostwatch_collector_build_info",
        Kind::Gauge,
        "The collector's version, as a label; always 1.",
    )
    .sample(
        "hostwatch_collector_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    agents(shared, &mut text);
    match stats {
        Ok((Ok(stats), maintenance)) => store_figures(&stats, &maintenance, &mut text),
        Ok((Err(e), _)) => tracing::debug!(error = %e, "/metrics: no store statistics"),
        Err(e) => tracing::debug!(error = %e, "/metrics: no store statistics"),
    }
    listeners(shared, &mut text);
    shared.metrics.http.write(&mut text);
    shared.metrics.grpc.write(&mut text);
    alerting(shared, &mut text);
    forwarding(shared, &mut text);
    hostwatch_runtime::metrics::ProcessFigures::read().write(&mut text);
    text.finish()
}

fn counter(text: &mut Text, name: &str, help: &str, value: u64) {
    text.single(name, Kind::Counter, help, value as f64);
}

fn gauge(text: &mut Text, name: &str, help: &str, value: f64) {
    text.single(name, Kind::Gauge, help, value);
}

/// Streams, refusals before the store, acknowledgements, certificates.
fn agents(shared: &Shared, text: &mut Text) {
    let m = &shared.metrics;
    let (hosts, streams) = shared.hosts.streams();
    gauge(
        text,
        "hostwatch_collector_agents_connected",
        "Hosts with at least one open stream.",
        hosts as f64,
    );
    gauge(
        text,
        "hostwatch_collector_streams_open",
        "Agent streams open.",
        streams as f64,
    );
    let name = "hostwatch_collector_streams_refused_total";
    text.family(
        name,
        Kind::Counter,
        "Agent streams refused before their first batch, by reason.",
    );
    for reason in StreamRefusal::ALL {
        let value = m.streams_refused[reason as usize].load(Ordering::Relaxed);
        text.sample(name, &[("reason", reason.label())], value as f64);
    }
    let name = "hostwatch_collector_agent_messages_refused_total";
    text.family(
        name,
        Kind::Counter,
        "Agent messages refused on an open stream (which then ends), by reason.",
    );
    let refused = &shared.refused_messages;
    let existing = [
        ("too_large", refused.oversized.load(Ordering::Relaxed)),
        ("undecodable", refused.undecodable.load(Ordering::Relaxed)),
    ];
    let counted = MessageRefusal::ALL.map(|r| {
        (
            r.label(),
            m.messages_refused[r as usize].load(Ordering::Relaxed),
        )
    });
    for (reason, value) in existing.into_iter().chain(counted) {
        text.sample(name, &[("reason", reason)], value as f64);
    }
    let name = "hostwatch_collector_ack_latency_seconds";
    text.family(
        name,
        Kind::Histogram,
        "Time from a batch received to its acknowledgement queued on the stream (stored and flushed in between).",
    );
    text.histogram(name, &[], &m.ack_latency.snapshot());
    let name = "hostwatch_collector_certificates_issued_total";
    text.family(
        name,
        Kind::Counter,
        "Agent certificates issued, by how: enroll or renew.",
    );
    text.sample(
        name,
        &[("how", "enroll")],
        refused.enrollments.load(Ordering::Relaxed) as f64,
    )
    .sample(
        name,
        &[("how", "renew")],
        refused.renewals.load(Ordering::Relaxed) as f64,
    );
    let name = "hostwatch_collector_certificate_requests_refused_total";
    text.family(
        name,
        Kind::Counter,
        "Enroll and Renew calls refused, whatever the reason, by how.",
    );
    text.sample(
        name,
        &[("how", "enroll")],
        refused.enrollments_refused.load(Ordering::Relaxed) as f64,
    )
    .sample(
        name,
        &[("how", "renew")],
        refused.renewals_refused.load(Ordering::Relaxed) as f64,
    );
    counter(
        text,
        "hostwatch_collector_http_unauthorized_requests_total",
        "HTTPS requests refused without a valid credential (401).",
        refused.http_unauthorized.load(Ordering::Relaxed),
    );
}

/// What the store ingested, refused and holds, and its maintenance.
fn store_figures(
    stats: &hostwatch_tsdb::StoreStats,
    maintenance: &[(
        hostwatch_tsdb::MaintenancePhase,
        hostwatch_stdx::exposition::HistogramSnapshot,
    )],
    text: &mut Text,
) {
    counter(
        text,
        "hostwatch_collector_batches_ingested_total",
        "Batches stored (replays of stored batches not counted).",
        stats.batches,
    );
    counter(
        text,
        "hostwatch_collector_batches_duplicate_total",
        "Replays of batches already stored, acknowledged without storing.",
        stats.duplicate_batches,
    );
    counter(
        text,
        "hostwatch_collector_samples_ingested_total",
        "Samples stored.",
        stats.samples_stored,
    );
    counter(
        text,
        "hostwatch_collector_process_snapshots_ingested_total",
        "Process snapshots stored.",
        stats.snapshots_stored,
    );
    let r = &stats.rejected;
    let name = "hostwatch_collector_samples_refused_total";
    text.family(
        name,
        Kind::Counter,
        "Samples of stored batches refused, by reason (the rest of the batch is stored).",
    );
    for (reason, value) in [
        ("non_finite", r.non_finite),
        ("future", r.future),
        ("too_old", r.too_old),
        ("out_of_order", r.out_of_order),
        ("duplicate", r.duplicate),
        ("series_limit", r.series_limit),
        ("invalid_series", r.invalid_series),
        ("too_dense", r.too_dense),
        ("malformed", r.malformed),
    ] {
        text.sample(name, &[("reason", reason)], value as f64);
    }
    for (name, help, value) in [
        (
            "hostwatch_collector_store_disk_bytes",
            "Size on disk of the store's databases (chunks, index, WAL).",
            stats.disk_bytes,
        ),
        (
            "hostwatch_collector_store_wal_bytes",
            "Bytes of WAL records on disk, before sled's own overhead.",
            stats.wal_bytes,
        ),
        (
            "hostwatch_collector_store_series",
            "Series in the store's index.",
            stats.series,
        ),
        (
            "hostwatch_collector_store_hosts",
            "Hosts with data in the store.",
            stats.hosts,
        ),
        (
            "hostwatch_collector_store_head_samples",
            "Samples in memory, not yet sealed into chunks.",
            stats.head_samples,
        ),
        (
            "hostwatch_collector_store_head_bytes",
            "Heap bytes of the head: encoded samples, process snapshots, previous batches' series.",
            stats.head_bytes + stats.head_host_bytes,
        ),
        (
            "hostwatch_collector_store_free_bytes",
            "Free bytes of the store's file system at the last look.",
            stats.health.free_bytes,
        ),
    ] {
        gauge(text, name, help, value as f64);
    }
    gauge(
        text,
        "hostwatch_collector_store_storing",
        "1 while the store stores appends, 0 while read-only or failed.",
        f64::from(u8::from(matches!(
            stats.health.condition,
            hostwatch_tsdb::Condition::Storing
        ))),
    );
    for (name, help, value) in [
        (
            "hostwatch_collector_store_commit_groups_total",
            "Group commits: each one sled batch and one flush.",
            stats.commit_groups,
        ),
        (
            "hostwatch_collector_store_sealed_chunks_total",
            "Chunks sealed from the head.",
            stats.sealed_chunks,
        ),
        (
            "hostwatch_collector_store_deleted_chunks_total",
            "Chunks and snapshot blocks deleted by retention.",
            stats.deleted_chunks,
        ),
        (
            "hostwatch_collector_store_replayed_samples_total",
            "Samples replayed from the WAL at open.",
            stats.replayed_samples,
        ),
        (
            "hostwatch_collector_store_maintenance_errors_total",
            "Maintenance passes that failed.",
            stats.maintenance_errors,
        ),
        (
            "hostwatch_collector_store_recoveries_total",
            "Rebuilds from disk after a failed write.",
            stats.health.recoveries,
        ),
    ] {
        counter(text, name, help, value);
    }
    let name = "hostwatch_collector_store_corrupt_records_total";
    text.family(name, Kind::Counter, "Damaged records skipped, by kind.");
    for (kind, value) in [
        ("wal_frame", stats.corrupt_wal_frames),
        ("block", stats.corrupt_blocks),
        ("series", stats.corrupt_series),
        ("sequence", stats.corrupt_sequences),
        ("orphan_sample", stats.orphan_samples),
    ] {
        text.sample(name, &[("kind", kind)], value as f64);
    }
    let name = "hostwatch_collector_store_maintenance_duration_seconds";
    text.family(
        name,
        Kind::Histogram,
        "Duration of the phases of the store's maintenance passes: seal (windows into chunks), wal (flush, WAL truncation), retention.",
    );
    for (phase, histogram) in maintenance {
        text.histogram(name, &[("phase", phase.name())], histogram);
    }
}

/// Each listener's connections and refusals.
fn listeners(shared: &Shared, text: &mut Text) {
    let Some(listeners) = shared.metrics.listeners.get() else {
        return;
    };
    let stats: Vec<(&str, _)> = listeners.iter().map(|(n, c)| (*n, c.stats())).collect();
    type Figure = fn(&hostwatch_pki::transport::ListenerStats) -> u64;
    let families: [(&str, Kind, &str, Figure); 6] = [
        (
            "hostwatch_collector_connections_open",
            Kind::Gauge,
            "Authenticated connections open, by listener.",
            |s| s.connections as u64,
        ),
        (
            "hostwatch_collector_tls_handshakes_in_progress",
            Kind::Gauge,
            "TLS handshakes in progress, by listener.",
            |s| s.handshakes as u64,
        ),
        (
            "hostwatch_collector_tls_handshakes_refused_total",
            Kind::Counter,
            "TLS handshakes that failed (no or a bad certificate, timeout, garbage), by listener.",
            |s| s.handshakes_refused,
        ),
        (
            "hostwatch_collector_tls_handshakes_evicted_total",
            Kind::Counter,
            "TLS handshakes dropped to make room for a newer peer, by listener.",
            |s| s.handshakes_evicted,
        ),
        (
            "hostwatch_collector_connections_closed_idle_total",
            Kind::Counter,
            "Connections closed after limits.idle_timeout without a call, by listener.",
            |s| s.connections_closed_idle,
        ),
        (
            "hostwatch_collector_incomplete_messages_refused_total",
            Kind::Counter,
            "Calls ended because a message exceeded the pending-bytes budget or limits.message_timeout, by listener.",
            |s| s.messages_refused,
        ),
    ];
    for (name, kind, help, figure) in families {
        text.family(name, kind, help);
        for (listener, s) in &stats {
            text.sample(name, &[("listener", *listener)], figure(s) as f64);
        }
    }
    let name = "hostwatch_collector_connections_refused_total";
    text.family(
        name,
        Kind::Counter,
        "Authenticated peers refused, by listener and reason: limit (their identity's or role's) or revoked.",
    );
    for &(listener, ref s) in &stats {
        let limit = s.connections_refused.saturating_sub(s.connections_revoked);
        text.sample(
            name,
            &[("listener", listener), ("reason", "limit")],
            limit as f64,
        )
        .sample(
            name,
            &[("listener", listener), ("reason", "revoked")],
            s.connections_revoked as f64,
        );
    }
}

/// Evaluations, alerts, and each hook's outbox and deliveries.
fn alerting(shared: &Shared, text: &mut Text) {
    let name = "hostwatch_collector_alert_evaluation_duration_seconds";
    text.family(
        name,
        Kind::Histogram,
        "Alert evaluations and their duration, by what was evaluated: batch (a stored batch), host_down, storage.",
    );
    for kind in Evaluation::ALL {
        let snapshot = shared.metrics.evaluations[kind as usize].snapshot();
        text.histogram(name, &[("kind", kind.label())], &snapshot);
    }
    let alerts = shared.alerting.alerts();
    let count = |phase| alerts.iter().filter(|a| a.machine.phase == phase).count();
    let name = "hostwatch_collector_alerts";
    text.family(name, Kind::Gauge, "Alerts now, by state.");
    for (state, phase) in [
        ("pending", hostwatch_alerting::Phase::Pending),
        ("firing", hostwatch_alerting::Phase::Firing),
    ] {
        text.sample(name, &[("state", state)], count(phase) as f64);
    }
    let name = "hostwatch_collector_hook_outbox_notifications";
    text.family(
        name,
        Kind::Gauge,
        "Notifications waiting for delivery, by hook.",
    );
    for (hook, depth) in shared.alerting.outbox_depth() {
        text.sample(name, &[("hook", hook.as_str())], depth as f64);
    }
    let name = "hostwatch_collector_hook_notifications_total";
    text.family(
        name,
        Kind::Counter,
        "Notification delivery outcomes, by hook: delivered, retried (an attempt that failed and will be retried), failed (given up), dropped (queue full).",
    );
    for (hook, s) in shared.alerting.delivery_stats() {
        for (outcome, value) in [
            ("delivered", s.delivered),
            ("retried", s.retried),
            ("failed", s.failed),
            ("dropped", s.dropped),
        ] {
            text.sample(
                name,
                &[("hook", hook.as_str()), ("outcome", outcome)],
                value as f64,
            );
        }
    }
}

/// Each `[[forward]]` destination's figures.
fn forwarding(shared: &Shared, text: &mut Text) {
    let figures = shared.forwarding.figures();
    type Figure = fn(&crate::ForwardFigures) -> f64;
    let families: [(&str, Kind, &str, Figure); 8] = [
        (
            "hostwatch_collector_forward_samples_sent_total",
            Kind::Counter,
            "Samples the destination accepted (2xx).",
            |f| f.sent as f64,
        ),
        (
            "hostwatch_collector_forward_samples_failed_total",
            Kind::Counter,
            "Samples in requests that failed and are retried (network errors, 5xx, 429), once per attempt.",
            |f| f.failed as f64,
        ),
        (
            "hostwatch_collector_forward_samples_dropped_total",
            Kind::Counter,
            "Samples in requests the destination refused (other 4xx), not sent again.",
            |f| f.dropped as f64,
        ),
        (
            "hostwatch_collector_forward_samples_pending",
            Kind::Gauge,
            "Samples read from the store and not yet answered.",
            |f| f.pending as f64,
        ),
        (
            "hostwatch_collector_forward_lag_seconds",
            Kind::Gauge,
            "Newest sample time read less the newest delivered; 0 when nothing waits.",
            |f| f.lag_ms as f64 / 1e3,
        ),
        (
            "hostwatch_collector_forward_lag_groups",
            Kind::Gauge,
            "Commit groups accepted by the store and not yet delivered.",
            |f| f.lag_groups as f64,
        ),
        (
            "hostwatch_collector_forward_read_seconds_total",
            Kind::Counter,
            "Time spent reading forwarded samples back from the store.",
            |f| f.read_ns as f64 / 1e9,
        ),
        (
            "hostwatch_collector_forward_encode_seconds_total",
            Kind::Counter,
            "Time spent encoding and compressing remote_write requests.",
            |f| f.encode_ns as f64 / 1e9,
        ),
    ];
    if figures.is_empty() {
        return;
    }
    for (name, kind, help, figure) in families {
        text.family(name, kind, help);
        for (destination, f) in &figures {
            text.sample(name, &[("destination", destination.as_str())], figure(f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_evaluations_are_counted_by_their_reason() {
        let m = SelfMetrics::default();
        m.stream_refused(StreamRefusal::Role);
        m.stream_refused(StreamRefusal::Role);
        m.stream_refused(StreamRefusal::NotStoring);
        m.message_refused(MessageRefusal::BadSequence);
        assert_eq!(m.evaluated(Evaluation::HostDown, || 7), 7);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(load(&m.streams_refused[StreamRefusal::Role as usize]), 2);
        assert_eq!(
            load(&m.streams_refused[StreamRefusal::NotStoring as usize]),
            1
        );
        assert_eq!(
            load(&m.messages_refused[MessageRefusal::BadSequence as usize]),
            1
        );
        assert_eq!(
            m.evaluations[Evaluation::HostDown as usize]
                .snapshot()
                .count(),
            1
        );
        assert_eq!(
            m.evaluations[Evaluation::Batch as usize].snapshot().count(),
            0
        );
        // Labels are distinct per enum.
        let labels: std::collections::BTreeSet<_> =
            StreamRefusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), StreamRefusal::ALL.len());
        for (i, r) in StreamRefusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in MessageRefusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in Evaluation::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
