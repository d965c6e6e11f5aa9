//! The agent's own figures, sent with every batch: its CPU time and
//! memory, the batch's sequence number, the spool (bytes, batches, drops,
//! damage, disk errors), and the stream (connected, reconnects,
//! acknowledgement latency, which collector, failovers); also written in
//! the Prometheus text format for the loopback `metrics_listen` port
//! ([`Health::exposition`]).

use crate::sampler::Samples;
use crate::spool::Spool;
use hostwatch_stdx::exposition::{Kind, Text};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Figures the shipper updates and the sampling loop reads.
#[derive(Debug, Default)]
pub(crate) struct Health {
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// The position in `collectors` of the collector streamed to or tried.
    collector_index: AtomicU64,
    /// Moves to the next collector after repeated failures.
    failovers: AtomicU64,
    /// Longest time from sending a batch to its acknowledgement since the
    /// last sample, in microseconds; 0 when none was acknowledged.
    max_latency_us: AtomicU64,
    /// What the last sample reported of it, for `/metrics` (which must not
    /// take it from the next sample).
    reported_latency_us: AtomicU64,
    /// The certificate file's validity, ms since the Unix epoch; 0 until read.
    cert_not_before_ms: AtomicI64,
    cert_not_after_ms: AtomicI64,
    renewals: AtomicU64,
    renewal_failures: AtomicU64,
    /// The collector refused the certificate as revoked at the last try.
    revoked: AtomicBool,
}

impl Health {
    pub(crate) fn connected(&self, reconnect: bool) {
        self.connected.store(true, Ordering::Relaxed);
        if reconnect {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The shipper streams to, or tries, entry `index` of `collectors`.
    pub(crate) fn collector(&self, index: usize) {
        self.collector_index.store(index as u64, Ordering::Relaxed);
    }

    /// The shipper moved on to entry `index` after repeated failures.
    pub(crate) fn failed_over(&self, index: usize) {
        self.collector(index);
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    pub(crate) fn acknowledged_after(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.max_latency_us.fetch_max(us.max(1), Ordering::Relaxed);
    }

    /// The validity of the certificate the agent uses (or will, once reloaded).
    pub(crate) fn certificate(&self, not_before_ms: i64, not_after_ms: i64) {
        self.cert_not_before_ms
            .store(not_before_ms, Ordering::Relaxed);
        self.cert_not_after_ms
            .store(not_after_ms, Ordering::Relaxed);
    }

    pub(crate) fn renewed(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the last connection was refused because the certificate
    /// was revoked.
    pub(crate) fn revoked(&self, revoked: bool) {
        self.revoked.store(revoked, Ordering::Relaxed);
    }

    pub(crate) fn renewal_failed(&self) {
        self.renewal_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the certificate's series at `now_ms`: its expiry, the part
    /// of its lifetime left (what `agent_certificate_expiring` watches),
    /// renewals and failed renewals.
    fn sample_certificate(&self, now_ms: i64, out: &mut Samples) {
        let not_after = self.cert_not_after_ms.load(Ordering::Relaxed);
        if not_after != 0 {
            let not_before = self.cert_not_before_ms.load(Ordering::Relaxed);
            out.push(
                "hostwatch_agent_certificate_expiry_timestamp_seconds",
                not_after as f64 / 1e3,
            );
            let lifetime = (not_after - not_before).max(1) as f64;
            out.push(
                "hostwatch_agent_certificate_lifetime_left_ratio",
                ((not_after - now_ms) as f64 / lifetime).clamp(0.0, 1.0),
            );
        }
        out.push(
            "hostwatch_agent_certificate_renewals_total",
            self.renewals.load(Ordering::Relaxed) as f64,
        );
        out.push(
            "hostwatch_agent_certificate_renewal_failures_total",
            self.renewal_failures.load(Ordering::Relaxed) as f64,
        );
        // Spooled while refused, shipped once enrolled again.
        out.push(
            "hostwatch_agent_certificate_revoked",
            f64::from(u8::from(self.revoked.load(Ordering::Relaxed))),
        );
    }

    /// Appends the agent's own series, and the longest acknowledgement
    /// latency since the previous call.
    pub(crate) fn sample(&self, spool: &Spool, out: &mut Samples) {
        self.figures(spool, out);
        let latency = self.max_latency_us.swap(0, Ordering::Relaxed);
        self.reported_latency_us.store(latency, Ordering::Relaxed);
        if latency > 0 {
            out.push("hostwatch_agent_send_latency_seconds", latency as f64 / 1e6);
        }
    }

    /// The agent's own series (those of [`Health::sample`], the latency
    /// as the last sample reported it) and this process's figures, in the
    /// Prometheus text format.
    pub(crate) fn exposition(&self, spool: &Spool) -> String {
        let mut out = Samples::default();
        self.figures(spool, &mut out);
        let latency = self.reported_latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            out.push("hostwatch_agent_send_latency_seconds", latency as f64 / 1e6);
        }
        let mut text = Text::new();
        let mut previous = "";
        for sample in &out.0 {
            if sample.metric != previous {
                let kind = if sample.metric.ends_with("_total") {
                    Kind::Counter
                } else {
                    Kind::Gauge
                };
                text.family(sample.metric, kind, help(sample.metric));
                previous = sample.metric;
            }
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            text.sample(sample.metric, &labels, sample.value);
        }
        hostwatch_runtime::metrics::ProcessFigures::read().write(&mut text);
        text.finish()
    }

    /// The series every sample and scrape have.
    fn figures(&self, spool: &Spool, out: &mut Samples) {
        self.sample_certificate(hostwatch_stdx::now_ms(), out);
        if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        {
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            out.push(
                "hostwatch_agent_cpu_seconds_total",
                seconds(usage.user_time()) + seconds(usage.system_time()),
            );
        }
        if let Some(rss) = resident_bytes() {
            out.push("hostwatch_agent_resident_bytes", rss as f64);
        }
        // This batch's sequence number: it survives restarts, so stored
        // values with a hole mean lost batches.
        out.push("hostwatch_agent_batches_total", spool.next_seq() as f64);
        let stats = spool.stats();
        out.push("hostwatch_agent_spool_bytes", stats.bytes as f64);
        out.push("hostwatch_agent_spool_batches", stats.batches as f64);
        out.push(
            "hostwatch_agent_spool_dropped_batches_total",
            stats.dropped_total as f64,
        );
        out.push(
            "hostwatch_agent_spool_corrupt_records_total",
            stats.corrupt_total as f64,
        );
        out.push(
            "hostwatch_agent_spool_write_errors_total",
            stats.write_errors_total as f64,
        );
        out.push(
            "hostwatch_agent_spool_durable",
            if stats.durable { 1.0 } else { 0.0 },
        );
        out.push(
            "hostwatch_agent_connected",
            if self.connected.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        out.push(
            "hostwatch_agent_reconnects_total",
            self.reconnects.load(Ordering::Relaxed) as f64,
        );
        out.push(
            "hostwatch_agent_collector_index",
            self.collector_index.load(Ordering::Relaxed) as f64,
        );
        out.push(
            "hostwatch_agent_failovers_total",
            self.failovers.load(Ordering::Relaxed) as f64,
        );
    }
}

/// The `# HELP` of each of the agent's own series (docs/metrics.md says
/// more).
fn help(metric: &str) -> &'static str {
    match metric {
        "hostwatch_agent_certificate_expiry_timestamp_seconds" => {
            "When the agent's certificate file expires (its notAfter), seconds since the Unix epoch."
        }
        "hostwatch_agent_certificate_lifetime_left_ratio" => {
            "The part of the certificate's validity still ahead, 0 to 1."
        }
        "hostwatch_agent_certificate_renewals_total" => "Certificates renewed.",
        "hostwatch_agent_certificate_renewal_failures_total" => "Renewals that failed.",
        "hostwatch_agent_certificate_revoked" => {
            "1 while the collector refuses the certificate as revoked."
        }
        "hostwatch_agent_cpu_seconds_total" => "CPU time the agent used, in seconds.",
        "hostwatch_agent_resident_bytes" => "Memory the agent holds, in bytes.",
        "hostwatch_agent_batches_total" => {
            "Batches numbered by this spool, across restarts: the next batch's sequence number."
        }
        "hostwatch_agent_spool_bytes" => "Bytes of batches waiting in the spool.",
        "hostwatch_agent_spool_batches" => "Batches waiting in the spool.",
        "hostwatch_agent_spool_dropped_batches_total" => {
            "Batches dropped because the spool was full."
        }
        "hostwatch_agent_spool_corrupt_records_total" => "Torn or corrupt spool records skipped.",
        "hostwatch_agent_spool_write_errors_total" => "Spool writes the disk refused.",
        "hostwatch_agent_spool_durable" => "1 when batches go to disk, 0 when kept in memory.",
        "hostwatch_agent_connected" => "1 when streaming to the collector.",
        "hostwatch_agent_reconnects_total" => "Streams re-established.",
        "hostwatch_agent_collector_index" => {
            "Which of the configured collectors the agent is on (0: the most preferred)."
        }
        "hostwatch_agent_failovers_total" => "Moves to the next collector after repeated failures.",
        "hostwatch_agent_send_latency_seconds" => {
            "Longest send-to-acknowledgement time over the last sampling interval."
        }
        _ => "The agent's own figure (docs/metrics.md).",
    }
}

/// This process's resident memory, from `/proc/self/statm` (pages).
#[cfg(target_os = "linux")]
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    Some(pages * page)
}

/// This process's resident memory, as `sysinfo` reads it (no `/proc` here).
#[cfg(not(target_os = "linux"))]
fn resident_bytes() -> Option<u64> {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = sysinfo::get_current_pid().ok()?;
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory(),
    );
    system.process(pid).map(|p| p.memory())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_certificates_lifetime_left_and_renewals() {
        let health = Health::default();
        let mut out = Samples::default();
        health.sample_certificate(0, &mut out);
        assert!(
            out.get("hostwatch_agent_certificate_lifetime_left_ratio", &[])
                .is_none()
        );
        health.certificate(10_000, 110_000);
        health.renewed();
        health.renewal_failed();
        health.renewal_failed();
        let mut out = Samples::default();
        health.sample_certificate(90_000, &mut out);
        assert_eq!(
            out.get("hostwatch_agent_certificate_lifetime_left_ratio", &[]),
            Some(0.2)
        );
        assert_eq!(
            out.get("hostwatch_agent_certificate_expiry_timestamp_seconds", &[]),
            Some(110.0)
        );
        assert_eq!(
            out.get("hostwatch_agent_certificate_renewals_total", &[]),
            Some(1.0)
        );
        assert_eq!(
            out.get("hostwatch_agent_certificate_renewal_failures_total", &[]),
            Some(2.0)
        );
        let revoked = |health: &Health| {
            let mut out = Samples::default();
            health.sample_certificate(90_000, &mut out);
            out.get("hostwatch_agent_certificate_revoked", &[])
        };
        assert_eq!(revoked(&health), Some(0.0));
        health.revoked(true);
        assert_eq!(revoked(&health), Some(1.0));
        health.revoked(false);
        assert_eq!(revoked(&health), Some(0.0));
        let mut out = Samples::default();
        health.sample_certificate(200_000, &mut out);
        assert_eq!(
            out.get("hostwatch_agent_certificate_lifetime_left_ratio", &[]),
            Some(0.0)
        );
    }

    #[test]
    fn the_exposition_types_and_describes_every_series_without_taking_the_latency() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20);
        let health = Health::default();
        health.connected(false);
        health.certificate(10_000, i64::MAX / 2);
        health.acknowledged_after(Duration::from_millis(5));
        let text = health.exposition(&spool);
        // Not reported by a sample yet.
        assert!(!text.contains("send_latency"), "{text}");
        let mut out = Samples::default();
        health.sample(&spool, &mut out);
        assert_eq!(
            out.get("hostwatch_agent_send_latency_seconds", &[]),
            Some(0.005)
        );
        for _ in 0..2 {
            let text = health.exposition(&spool);
            assert!(
                text.contains("\nhostwatch_agent_send_latency_seconds 0.005\n"),
                "{text}"
            );
        }
        let text = health.exposition(&spool);
        assert!(text.contains("# TYPE hostwatch_agent_reconnects_total counter\n"));
        assert!(
            text.contains("# TYPE hostwatch_agent_connected gauge\nhostwatch_agent_connected 1\n")
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        // Every family once, with its own help.
        let mut families = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(families.insert(name.to_owned()), "{name} twice");
                assert!(
                    !help.contains("docs/metrics.md"),
                    "{name} has no help of its own"
                );
            }
        }
        assert!(families.len() >= 20, "{families:?}");
    }

    #[test]
    fn reports_own_figures_and_resets_latency() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20);
        let health = Health::default();
        health.connected(false);
        health.disconnected();
        health.connected(true);
        health.acknowledged_after(Duration::from_millis(3));
        health.acknowledged_after(Duration::from_millis(7));
        let mut out = Samples::default();
        health.sample(&spool, &mut out);
        assert_eq!(out.get("hostwatch_agent_collector_index", &[]), Some(0.0));
        assert_eq!(out.get("hostwatch_agent_failovers_total", &[]), Some(0.0));
        assert_eq!(out.get("hostwatch_agent_reconnects_total", &[]), Some(1.0));
        assert_eq!(out.get("hostwatch_agent_connected", &[]), Some(1.0));
        assert_eq!(
            out.get("hostwatch_agent_send_latency_seconds", &[]),
            Some(0.007)
        );
        assert_eq!(out.get("hostwatch_agent_spool_durable", &[]), Some(1.0));
        assert_eq!(out.get("hostwatch_agent_batches_total", &[]), Some(1.0));
        assert!(out.get("hostwatch_agent_resident_bytes", &[]).unwrap() > 0.0);
        assert!(out.get("hostwatch_agent_cpu_seconds_total", &[]).unwrap() > 0.0);
        let mut out = Samples::default();
        health.sample(&spool, &mut out);
        assert!(
            out.get("hostwatch_agent_send_latency_seconds", &[])
                .is_none()
        );
        health.failed_over(1);
        health.failed_over(0);
        health.collector(1);
        let mut out = Samples::default();
        health.sample(&spool, &mut out);
        assert_eq!(out.get("hostwatch_agent_collector_index", &[]), Some(1.0));
        assert_eq!(out.get("hostwatch_agent_failovers_total", &[]), Some(2.0));
    }
}
