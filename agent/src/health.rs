//! The agent's own figures, sent with every batch: its CPU time and
//! memory, the batch's sequence number, the spool (bytes, batches, drops,
//! damage, disk errors), and the stream (connected, reconnects,
//! acknowledgement latency).

use crate::sampler::Samples;
use crate::spool::Spool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Figures the shipper updates and the sampling loop reads.
#[derive(Debug, Default)]
pub(crate) struct Health {
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// Longest time from sending a batch to its acknowledgement since the
    /// last sample, in microseconds; 0 when none was acknowledged.
    max_latency_us: AtomicU64,
}

impl Health {
    pub(crate) fn connected(&self, reconnect: bool) {
        self.connected.store(true, Ordering::Relaxed);
        if reconnect {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    pub(crate) fn acknowledged_after(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.max_latency_us.fetch_max(us.max(1), Ordering::Relaxed);
    }

    /// Appends the agent's own series.
    pub(crate) fn sample(&self, spool: &Spool, out: &mut Samples) {
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
        let latency = self.max_latency_us.swap(0, Ordering::Relaxed);
        if latency > 0 {
            out.push("hostwatch_agent_send_latency_seconds", latency as f64 / 1e6);
        }
    }
}

/// This process's resident memory, from `/proc/self/statm` (pages).
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
