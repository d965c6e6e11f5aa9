//! Helpers shared by the alerting engine's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use hostwatch_alerting::{Alerting, AlertingConfig, BatchContext, Clock, RuleSet};
use hostwatch_stdx::now_ms;
use hostwatch_tsdb::{Batch, Point, SeriesInput};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The rules and hooks of a collector.toml's `[alerting]` section.
pub fn rules(text: &str) -> RuleSet {
    #[derive(serde::Deserialize)]
    struct File {
        alerting: AlertingConfig,
    }
    let file: File = toml::from_str(text).unwrap();
    file.alerting.compile(Duration::from_secs(30)).unwrap()
}

/// An alerting engine on `db`, running its dispatcher, fed CPU samples.
pub struct Engine {
    pub alerting: Alerting,
    stop: CancellationToken,
    task: JoinHandle<()>,
    pub seq: u64,
}

impl Engine {
    pub fn start(db: &sled::Db, text: &str) -> Self {
        Self::start_after(db, text, 0)
    }

    /// Its batches numbered after `seq` (those of an earlier run of the
    /// same host were numbered up to it).
    pub fn start_after(db: &sled::Db, text: &str, seq: u64) -> Self {
        let alerting =
            Alerting::open(db, rules(text), Arc::new(|_, _| None), Clock::system()).unwrap();
        let stop = CancellationToken::new();
        let task = {
            let alerting = alerting.clone();
            let stop = stop.clone();
            tokio::spawn(async move { alerting.run(stop.cancelled_owned()).await })
        };
        Engine {
            alerting,
            stop,
            task,
            seq,
        }
    }

    /// Waits (up to 10 s) until hook `hook` has nothing left in its
    /// outbox: a message the receiver has may not be marked delivered
    /// yet, and an engine stopped before that sends it again when it
    /// starts (at least once).
    pub async fn until_delivered(&self, hook: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let pending = self.alerting.outbox_depth().get(hook).copied().unwrap_or(0);
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} deliveries of {hook} still in the outbox after 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    pub fn cpu(&mut self, host: &str, t_ms: i64, value: f64) {
        self.seq += 1;
        let batch = Batch {
            host: host.to_owned(),
            source: 1,
            seq: self.seq,
            series: vec![SeriesInput {
                metric: "host_cpu_utilization_ratio".to_owned(),
                labels: vec![],
                points: vec![Point { t_ms, value }],
            }],
            processes: vec![],
            malformed: 0,
        };
        self.alerting.observe(
            &batch,
            BatchContext {
                received_ms: now_ms(),
                dropped_batches_total: 0,
                future_tolerance_ms: 600_000,
            },
        );
    }
}
