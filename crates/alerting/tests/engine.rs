//! The evaluator and alert states through the public API, on a real sled
//! database, with tokio's clock paused: samples carry the (paused) wall
//! time, and time moves only when a test advances it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use hostwatch_alerting::{
    Alert, Alerting, BatchContext, Clock, HistoryFilter, HostLiveness, Phase, Refusal,
    SnapshotSource, StorageCondition, Transition,
};
use hostwatch_tsdb::{Batch, Label, Point, ProcessInfo, ProcessSnapshot, SeriesInput};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const T0: i64 = 1_800_000_000_000;

fn no_snapshots() -> SnapshotSource {
    Arc::new(|_, _| None)
}

struct Harness {
    _dir: tempfile::TempDir,
    db: sled::Db,
    alerting: Alerting,
    clock: Clock,
    rx: broadcast::Receiver<Transition>,
    seq: u64,
}

impl Harness {
    fn new(text: &str) -> Self {
        Self::with_snapshots(text, no_snapshots())
    }

    fn with_snapshots(text: &str, snapshots: SnapshotSource) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let clock = Clock::starting_at(T0);
        let alerting = Alerting::open(&db, rules(text), snapshots, clock).unwrap();
        let rx = alerting.subscribe();
        Harness {
            _dir: dir,
            db,
            alerting,
            clock,
            rx,
            seq: 0,
        }
    }

    /// The same database opened again, as after a collector restart.
    fn reopen(&mut self, text: &str) {
        self.alerting = Alerting::open(&self.db, rules(text), no_snapshots(), self.clock).unwrap();
        self.rx = self.alerting.subscribe();
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn send(&mut self, host: &str, series: Vec<SeriesInput>, processes: Vec<ProcessSnapshot>) {
        self.send_ctx(host, series, processes, 0);
    }

    fn send_ctx(
        &mut self,
        host: &str,
        series: Vec<SeriesInput>,
        processes: Vec<ProcessSnapshot>,
        dropped: u64,
    ) {
        self.seq += 1;
        let batch = Batch {
            host: host.to_owned(),
            source: 1,
            seq: self.seq,
            series,
            processes,
            malformed: 0,
        };
        self.alerting.observe(
            &batch,
            BatchContext {
                received_ms: self.now(),
                dropped_batches_total: dropped,
                future_tolerance_ms: 600_000,
            },
        );
    }

    fn transitions(&mut self) -> Vec<(String, Phase, Phase)> {
        let mut out = Vec::new();
        while let Ok(t) = self.rx.try_recv() {
            out.push((t.rule, t.from, t.to));
        }
        out
    }

    fn alert(&self, rule: &str) -> Option<Alert> {
        self.alerting.alerts().into_iter().find(|a| a.rule == rule)
    }
}

fn series(metric: &str, labels: &[(&str, &str)], t_ms: i64, value: f64) -> SeriesInput {
    SeriesInput {
        metric: metric.to_owned(),
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        points: vec![Point { t_ms, value }],
    }
}

async fn advance(seconds: u64) {
    tokio::time::advance(Duration::from_secs(seconds)).await;
}

const CPU_RULE: &str = r#"
[alerting]
default_rules = false
flap_window = "0s"
[[alerting.rules]]
name = "cpu_busy"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
match = ["cpu=total"]
op = ">"
raise = 0.9
clear = 0.8
for = "30s"
labels = { severity = "page" }
annotations = { summary = "CPU of {{ host }} at {{ value | percent }} (over {{ threshold | percent }})" }
"#;

fn cpu(t_ms: i64, value: f64) -> Vec<SeriesInput> {
    vec![
        series(
            "host_cpu_utilization_ratio",
            &[("cpu", "total")],
            t_ms,
            value,
        ),
        // Another core: not matched by the rule.
        series("host_cpu_utilization_ratio", &[("cpu", "0")], t_ms, 1.0),
    ]
}

#[tokio::test(start_paused = true)]
async fn threshold_goes_pending_firing_resolved_with_hysteresis() {
    let mut h = Harness::new(CPU_RULE);
    let mut phases = Vec::new();
    for value in [0.95, 0.85, 0.85, 0.95, 0.85, 0.75] {
        let now = h.now();
        h.send("web1", cpu(now, value), vec![]);
        phases.push(h.alert("cpu_busy").map(|a| a.phase()));
        advance(10).await;
    }
    use Phase::*;
    // Pending at 0 s; 0.85 is above clear, so it holds; firing once 30 s
    // have passed; 0.85 keeps it firing; 0.75 clears it.
    assert_eq!(
        phases,
        [
            Some(Pending),
            Some(Pending),
            Some(Pending),
            Some(Firing),
            Some(Firing),
            Some(Resolved)
        ]
    );
    let t: Vec<(Phase, Phase)> = h
        .transitions()
        .into_iter()
        .map(|(_, f, t)| (f, t))
        .collect();
    assert_eq!(
        t,
        [(Inactive, Pending), (Pending, Firing), (Firing, Resolved)]
    );
    let alert = h.alert("cpu_busy").unwrap();
    assert_eq!(alert.labels["host"], "web1");
    assert_eq!(alert.labels["alertname"], "cpu_busy");
    assert_eq!(alert.labels["severity"], "page");
    assert_eq!(alert.labels["cpu"], "total");
    assert_eq!(alert.machine.active_since_ms, T0);
    assert_eq!(alert.machine.fired_ms, Some(T0 + 30_000));
    assert_eq!(
        alert.annotations["summary"],
        "CPU of web1 at 75% (over 90%)"
    );
    // The history holds the same transitions, persisted.
    let history = h.alerting.history(&HistoryFilter::default()).unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.windows(2).all(|w| w[0].id < w[1].id));
    let fired = h
        .alerting
        .history(&HistoryFilter {
            to: Some(Phase::Firing),
            ..HistoryFilter::default()
        })
        .unwrap();
    let want: Vec<u64> = history
        .iter()
        .filter(|t| t.to == Phase::Firing)
        .map(|t| t.id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(fired.iter().map(|t| t.id).collect::<Vec<_>>(), want);
    assert_eq!(
        h.alerting
            .history(&HistoryFilter {
                host: "web2".into(),
                ..HistoryFilter::default()
            })
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn pending_that_clears_before_for_never_fires() {
    let mut h = Harness::new(CPU_RULE);
    for value in [0.95, 0.95, 0.5, 0.95] {
        let now = h.now();
        h.send("web1", cpu(now, value), vec![]);
        advance(10).await;
    }
    let t: Vec<Phase> = h.transitions().into_iter().map(|(_, _, t)| t).collect();
    assert_eq!(t, [Phase::Pending, Phase::Inactive, Phase::Pending]);
    assert_eq!(
        h.alert("cpu_busy").unwrap().machine.active_since_ms,
        T0 + 30_000
    );
}

#[tokio::test(start_paused = true)]
async fn samples_older_than_the_newest_evaluated_are_ignored() {
    let mut h = Harness::new(CPU_RULE.replace("for = \"30s\"", "for = \"0s\"").as_str());
    let now = h.now();
    h.send("web1", cpu(now, 0.5), vec![]);
    // A late sample from before: stored by the collector, not evaluated.
    h.send("web1", cpu(now - 5_000, 0.99), vec![]);
    assert!(h.alert("cpu_busy").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_restart_in_the_middle_of_an_alert_continues_it() {
    let mut h = Harness::new(CPU_RULE);
    for _ in 0..4 {
        let now = h.now();
        h.send("web1", cpu(now, 0.95), vec![]);
        advance(10).await;
    }
    let before = h.alert("cpu_busy").unwrap();
    assert_eq!(before.phase(), Phase::Firing);
    h.reopen(CPU_RULE);
    let after = h.alert("cpu_busy").unwrap();
    assert_eq!(after, before);
    // Still high: still the same firing alert, no new transition.
    let now = h.now();
    h.send("web1", cpu(now, 0.95), vec![]);
    assert!(h.transitions().is_empty());
    advance(10).await;
    let now = h.now();
    h.send("web1", cpu(now, 0.5), vec![]);
    assert_eq!(
        h.transitions(),
        [("cpu_busy".to_owned(), Phase::Firing, Phase::Resolved)]
    );
}

#[tokio::test(start_paused = true)]
async fn keep_firing_for_and_flapping() {
    let text = CPU_RULE
        .replace("for = \"30s\"", "for = \"0s\"\nkeep_firing_for = \"20s\"")
        .replace("flap_window = \"0s\"", "flap_window = \"2m\"");
    let mut h = Harness::new(&text);
    // Fires, dips for 10 s (bridged by keep_firing_for), then clears for 30 s.
    for value in [0.95, 0.5, 0.95, 0.5, 0.5, 0.5] {
        let now = h.now();
        h.send("web1", cpu(now, value), vec![]);
        advance(10).await;
    }
    let t: Vec<Phase> = h.transitions().into_iter().map(|(_, _, t)| t).collect();
    assert_eq!(t, [Phase::Firing, Phase::Resolved]);
    let first = h.alert("cpu_busy").unwrap();
    assert_eq!(first.machine.resolved_ms, Some(T0 + 50_000));
    // Fires again within the flap window: the same alert continues.
    let now = h.now();
    h.send("web1", cpu(now, 0.95), vec![]);
    let again = h.alert("cpu_busy").unwrap();
    assert_eq!(again.phase(), Phase::Firing);
    assert_eq!(again.machine.fired_ms, first.machine.fired_ms);
    assert_eq!(again.machine.flaps, 1);
    let history = h.alerting.history(&HistoryFilter::default()).unwrap();
    assert!(history.last().unwrap().flapping);
}

#[tokio::test(start_paused = true)]
async fn ratios_and_predicted_exhaustion_carry_the_disk_cause() {
    let text = r#"
[alerting]
default_rules = false
[[alerting.rules]]
name = "fs_full"
kind = "threshold"
metric = "host_filesystem_available_bytes"
divide_by = "host_filesystem_size_bytes"
op = "<"
raise = 0.1
annotations = { summary = "{{ labels.mountpoint }} on {{ host }}: {{ value | percent }} left" }
[[alerting.rules]]
name = "fs_filling"
kind = "prediction"
metric = "host_filesystem_available_bytes"
divide_by = "host_filesystem_size_bytes"
window = "1h"
limit = 0.0
horizon = "24h"
annotations = { summary = "{{ labels.mountpoint }} full in {{ value | duration }}" }
"#;
    let mut h = Harness::new(text);
    let size = 100e9;
    let fs = |t: i64, free: f64, mount: &str| {
        let labels = [
            ("mountpoint", mount),
            ("device", "/dev/sda1"),
            ("fstype", "ext4"),
        ];
        vec![
            // Denominator after the numerator in the batch: order does not matter.
            series("host_filesystem_available_bytes", &labels, t, free),
            series("host_filesystem_size_bytes", &labels, t, size),
        ]
    };
    // /var loses 10 MB a minute from 9.5 GB free; /home stays put.
    for minute in 0..31 {
        let now = h.now();
        let mut batch = fs(now, 9.5e9 - 10e6 * minute as f64, "/var");
        batch.extend(fs(now, 50e9, "/home"));
        h.send("db1", batch, vec![]);
        advance(60).await;
    }
    let alerts = h.alerting.alerts();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let full = alerts.iter().find(|a| a.rule == "fs_full").unwrap();
    assert_eq!(full.phase(), Phase::Firing);
    assert_eq!(full.labels["mountpoint"], "/var");
    assert_eq!(full.annotations["mountpoint"], "/var");
    assert_eq!(full.annotations["summary"], "/var on db1: 9.5% left");
    // The trend was still building when it fired (at the first sample).
    assert!(
        full.annotations["time_to_full"].starts_with("unknown"),
        "{:?}",
        full.annotations
    );
    let filling = alerts.iter().find(|a| a.rule == "fs_filling").unwrap();
    assert_eq!(filling.phase(), Phase::Firing);
    // Fired once the trend spanned a quarter of its window (15 minutes):
    // then 9.35 GB were left at 10 MB a minute, 935 minutes.
    assert_eq!(filling.machine.fired_ms, Some(T0 + 15 * 60_000));
    // Annotations are rendered at the transition; the value is current
    // (9.2 GB left after 30 minutes: 920 minutes).
    assert_eq!(filling.annotations["summary"], "/var full in 15h 35m");
    assert_eq!(filling.annotations["time_to_full"], "15h 35m");
    assert!(
        (filling.value - 920.0 * 60.0).abs() < 60.0,
        "{}",
        filling.value
    );
}

fn process(pid: u32, name: &str, cpu: f64, rss: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        name: name.to_owned(),
        command: format!("/usr/bin/{name}"),
        user: "app".to_owned(),
        cpu_cores: cpu,
        rss_bytes: rss,
        start_time_ms: T0 - 1_000,
    }
}

#[tokio::test(start_paused = true)]
async fn cpu_and_memory_alerts_name_the_top_processes() {
    let text = r#"
[alerting]
default_rules = false
[[alerting.rules]]
name = "cpu_busy"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
op = ">"
raise = 0.9
[[alerting.rules]]
name = "memory_low"
kind = "threshold"
metric = "host_memory_available_bytes"
divide_by = "host_memory_total_bytes"
op = "<"
raise = 0.1
"#;
    // The memory alert's batch has no snapshot: the store is asked.
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    let source: SnapshotSource = Arc::new(move |host: &str, t: i64| {
        log.lock().unwrap().push((host.to_owned(), t));
        Some(ProcessSnapshot {
            t_ms: t - 500,
            processes: vec![
                process(7, "java", 0.1, 8 << 30),
                process(8, "nginx", 0.5, 1 << 20),
            ],
        })
    });
    let mut h = Harness::with_snapshots(text, source);
    let now = h.now();
    let snapshot = |t| ProcessSnapshot {
        t_ms: t,
        processes: vec![
            process(1, "sshd", 0.0, 1 << 20),
            process(4242, "busy-loop", 1.98, 3 << 20),
            process(9, "rsyslogd", 0.02, 2 << 20),
        ],
    };
    h.send(
        "web1",
        vec![series("host_cpu_utilization_ratio", &[], now, 0.99)],
        vec![snapshot(now - 30_000), snapshot(now)],
    );
    let cpu = h.alert("cpu_busy").unwrap();
    assert!(
        cpu.annotations["cause"].starts_with("busy-loop (pid 4242"),
        "{:?}",
        cpu.annotations
    );
    assert!(
        cpu.annotations["top_processes"].starts_with("busy-loop (pid 4242, user app, cpu 198%")
    );
    assert_eq!(
        cpu.annotations["processes_at"],
        hostwatch_alerting::format_rfc3339(now)
    );
    assert!(asked.lock().unwrap().is_empty());

    h.send(
        "web1",
        vec![
            series("host_memory_available_bytes", &[], now, 0.5e9),
            series("host_memory_total_bytes", &[], now, 16e9),
        ],
        vec![],
    );
    let memory = h.alert("memory_low").unwrap();
    assert!(
        memory.annotations["cause"].starts_with("java (pid 7"),
        "{:?}",
        memory.annotations
    );
    assert_eq!(*asked.lock().unwrap(), [("web1".to_owned(), now)]);
}

const HOST_DOWN: &str = r#"
[alerting]
default_rules = false
flap_window = "0s"
[[alerting.rules]]
name = "host_down"
kind = "host_down"
timeout = "30s"
annotations = { summary = "{{ host }} silent for {{ value | duration }}" }
[[alerting.rules]]
name = "host_stopped"
kind = "host_down"
timeout = "1m"
page_on_clean_shutdown = true
"#;

fn liveness(host: &str, last_seen_ms: i64, clean_shutdown: bool) -> HostLiveness {
    HostLiveness {
        host: host.to_owned(),
        last_seen_ms,
        clean_shutdown,
        revoked: false,
    }
}

/// A revoked host was cut off on purpose: its silence pages no one, and
/// the alert of a host down before its revocation resolves.
#[tokio::test(start_paused = true)]
async fn a_revoked_host_is_not_paged_as_down() {
    let mut h = Harness::new(HOST_DOWN);
    let seen = h.now();
    let revoked = |host: &str| HostLiveness {
        revoked: true,
        ..liveness(host, seen, false)
    };
    h.alerting
        .check_hosts(&[liveness("a", seen, false), revoked("b")]);
    advance(61).await;
    h.alerting
        .check_hosts(&[liveness("a", seen, false), revoked("b")]);
    let mut firing: Vec<(String, String)> = h
        .alerting
        .alerts()
        .iter()
        .map(|a| (a.rule.clone(), a.labels["host"].clone()))
        .collect();
    firing.sort();
    assert_eq!(
        firing,
        [
            ("host_down".to_owned(), "a".to_owned()),
            ("host_stopped".to_owned(), "a".to_owned())
        ]
    );
    h.transitions();
    // a, down, is revoked now: its alerts resolve.
    h.alerting.check_hosts(&[revoked("a"), revoked("b")]);
    let t = h.transitions();
    assert_eq!(
        t,
        [
            ("host_down".to_owned(), Phase::Firing, Phase::Resolved),
            ("host_stopped".to_owned(), Phase::Firing, Phase::Resolved)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn host_down_after_the_timeout_unless_stopped_cleanly() {
    let mut h = Harness::new(HOST_DOWN);
    let seen = h.now();
    h.alerting
        .check_hosts(&[liveness("a", seen, false), liveness("b", seen, true)]);
    assert!(h.alerting.alerts().is_empty());
    advance(31).await;
    h.alerting
        .check_hosts(&[liveness("a", seen, false), liveness("b", seen, true)]);
    let firing: Vec<(String, String)> = h
        .alerting
        .alerts()
        .iter()
        .map(|a| (a.rule.clone(), a.labels["host"].clone()))
        .collect();
    assert_eq!(firing, [("host_down".to_owned(), "a".to_owned())]);
    assert_eq!(
        h.alert("host_down").unwrap().annotations["summary"],
        "a silent for 31s"
    );
    advance(30).await;
    h.alerting
        .check_hosts(&[liveness("a", seen, false), liveness("b", seen, true)]);
    // The rule that pages planned stops too now sees both hosts.
    let mut firing: Vec<(String, String)> = h
        .alerting
        .alerts()
        .iter()
        .map(|a| (a.rule.clone(), a.labels["host"].clone()))
        .collect();
    firing.sort();
    assert_eq!(firing.len(), 3, "{firing:?}");
    // A restarted collector knows which hosts were down.
    h.reopen(HOST_DOWN);
    let back = h.now();
    h.alerting
        .check_hosts(&[liveness("a", back, false), liveness("b", seen, true)]);
    let t = h.transitions();
    assert_eq!(
        t,
        [
            ("host_down".to_owned(), Phase::Firing, Phase::Resolved),
            ("host_stopped".to_owned(), Phase::Firing, Phase::Resolved)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_collector_back_from_a_long_stop_pages_only_hosts_silent_for_the_timeout_since() {
    let mut h = Harness::new(HOST_DOWN);
    let seen = h.now();
    h.alerting
        .check_hosts(&[liveness("a", seen, false), liveness("b", seen, false)]);
    // The collector stops for ten minutes; what the hosts sent meanwhile
    // is unknown, so its return is no reason to page them.
    advance(600).await;
    h.reopen(HOST_DOWN);
    h.alerting
        .check_hosts(&[liveness("a", seen, false), liveness("b", seen, false)]);
    assert!(h.alerting.alerts().is_empty());
    // a's agent reconnects in time; b stays silent for the timeout.
    advance(20).await;
    let back = h.now();
    h.alerting
        .check_hosts(&[liveness("a", back, false), liveness("b", seen, false)]);
    assert!(h.alerting.alerts().is_empty());
    // Past the timeout since the start, agents may still be waiting out
    // their longest backoff (a third of the timeout): no page yet.
    advance(11).await;
    h.alerting
        .check_hosts(&[liveness("a", back, false), liveness("b", seen, false)]);
    assert!(h.alerting.alerts().is_empty());
    advance(10).await;
    h.alerting
        .check_hosts(&[liveness("a", back, false), liveness("b", seen, false)]);
    let firing: Vec<String> = h
        .alerting
        .alerts()
        .iter()
        .map(|a| a.labels["host"].clone())
        .collect();
    assert_eq!(firing, ["b"]);
    // Its value is the whole silence, the collector's stop included.
    assert_eq!(
        h.alert("host_down").unwrap().annotations["summary"],
        "b silent for 10m 41s"
    );
}

#[tokio::test(start_paused = true)]
async fn reboots_fire_and_expire_by_themselves() {
    let text = r#"
[alerting]
default_rules = false
flap_window = "0s"
[[alerting.rules]]
name = "rebooted"
kind = "event"
event = "reboot"
resolve_after = "10m"
annotations = { summary = "{{ host }} rebooted" }
"#;
    let h = Harness::new(text);
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = {
        let alerting = h.alerting.clone();
        let stop = stop.clone();
        tokio::spawn(async move { alerting.run(stop.cancelled_owned()).await })
    };
    h.alerting.host_connected("web1", "", "boot-a");
    h.alerting.host_connected("web1", "boot-a", "boot-a");
    assert!(h.alerting.alerts().is_empty());
    h.alerting.host_connected("web1", "boot-a", "boot-b");
    let alert = h.alert("rebooted").unwrap();
    assert_eq!(alert.phase(), Phase::Firing);
    assert_eq!(alert.annotations["previous_boot_id"], "boot-a");
    assert_eq!(alert.annotations["boot_id"], "boot-b");
    advance(9 * 60).await;
    assert_eq!(h.alert("rebooted").unwrap().phase(), Phase::Firing);
    for _ in 0..120 {
        if h.alert("rebooted")
            .is_some_and(|a| a.phase() == Phase::Resolved)
        {
            break;
        }
        advance(1).await;
    }
    assert_eq!(h.alert("rebooted").unwrap().phase(), Phase::Resolved);
    stop.cancel();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropped_batches_fire_once_per_increase_also_across_restarts() {
    let text = r#"
[alerting]
default_rules = false
[[alerting.rules]]
name = "dropped"
kind = "event"
event = "dropped_data"
annotations = { summary = "{{ value | round }} batches lost" }
"#;
    let mut h = Harness::new(text);
    h.send_ctx("web1", vec![], vec![], 0);
    assert!(h.alerting.alerts().is_empty());
    h.send_ctx("web1", vec![], vec![], 3);
    let alert = h.alert("dropped").unwrap();
    assert_eq!((alert.phase(), alert.value), (Phase::Firing, 3.0));
    assert_eq!(alert.annotations["summary"], "3 batches lost");
    assert_eq!(alert.annotations["dropped_batches_total"], "3");
    h.send_ctx("web1", vec![], vec![], 3);
    assert_eq!(h.alert("dropped").unwrap().value, 3.0);
    h.transitions();
    h.reopen(text);
    h.send_ctx("web1", vec![], vec![], 3);
    assert!(h.transitions().is_empty());
    h.send_ctx("web1", vec![], vec![], 5);
    assert_eq!(h.alert("dropped").unwrap().value, 5.0);
}

#[tokio::test(start_paused = true)]
async fn clock_skew_fires_when_the_agent_runs_ahead() {
    let text = r#"
[alerting]
default_rules = false
[[alerting.rules]]
name = "skew"
kind = "event"
event = "clock_skew"
max_skew = "30s"
for = "1m"
"#;
    let mut h = Harness::new(text);
    for i in 0..8 {
        let now = h.now();
        // web1's clock is 90 s ahead; web2's agent replays a backlog an hour
        // old, but its fresh batches arrive too.
        h.send(
            "web1",
            vec![series("host_load1", &[], now + 90_000, 1.0)],
            vec![],
        );
        let t = if i % 2 == 0 {
            now - 3_600_000 + i * 10_000
        } else {
            now
        };
        h.send("web2", vec![series("host_load1", &[], t, 1.0)], vec![]);
        advance(10).await;
    }
    let alerts = h.alerting.alerts();
    let firing: Vec<&str> = alerts
        .iter()
        .filter(|a| a.phase() == Phase::Firing)
        .map(|a| a.labels["host"].as_str())
        .collect();
    assert_eq!(firing, ["web1"]);
    assert!((alerts[0].value - 90.0).abs() < 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_unchanged_rules_and_resolves_removed_ones() {
    let two = format!(
        "{CPU_RULE}\n[[alerting.rules]]\nname = \"load\"\nkind = \"threshold\"\nmetric = \"host_load1\"\nop = \">\"\nraise = 4.0\n"
    )
    .replace("for = \"30s\"", "for = \"0s\"");
    let mut h = Harness::new(&two);
    let now = h.now();
    let mut batch = cpu(now, 0.95);
    batch.push(series("host_load1", &[], now, 8.0));
    h.send("web1", batch, vec![]);
    assert_eq!(h.alerting.alerts().len(), 2);
    h.transitions();
    let only_cpu = CPU_RULE.replace("for = \"30s\"", "for = \"0s\"");
    h.alerting.reload(rules(&only_cpu));
    assert_eq!(
        h.transitions(),
        [("load".to_owned(), Phase::Firing, Phase::Resolved)]
    );
    advance(10).await;
    let now = h.now();
    let mut batch = cpu(now, 0.95);
    batch.push(series("host_load1", &[], now, 8.0));
    h.send("web1", batch, vec![]);
    assert!(h.transitions().is_empty());
    assert_eq!(h.alert("cpu_busy").unwrap().phase(), Phase::Firing);
    assert_eq!(h.alerting.rule_names().0, ["cpu_busy"]);
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_a_rules_labels_raises_its_alerts_with_them() {
    let page = CPU_RULE.replace("for = \"30s\"", "for = \"0s\"");
    let mut h = Harness::new(&page);
    h.send("web1", cpu(h.now(), 0.95), vec![]);
    assert_eq!(h.alert("cpu_busy").unwrap().labels["severity"], "page");
    h.alerting.reload(rules(
        &page.replace("severity = \"page\"", "severity = \"ticket\""),
    ));
    advance(10).await;
    h.send("web1", cpu(h.now(), 0.95), vec![]);
    // The old alert resolved by the reload, a new one with the new labels.
    let phases = |h: &Harness| {
        let mut alerts: Vec<(String, Phase)> = h
            .alerting
            .alerts()
            .into_iter()
            .map(|a| (a.labels["severity"].clone(), a.phase()))
            .collect();
        alerts.sort_by(|a, b| a.0.cmp(&b.0));
        alerts
    };
    let expected = [
        ("page".to_owned(), Phase::Resolved),
        ("ticket".to_owned(), Phase::Firing),
    ];
    assert_eq!(phases(&h), expected);
    // Its fingerprint is that of its labels: the next batch finds it.
    advance(10).await;
    h.send("web1", cpu(h.now(), 0.95), vec![]);
    assert_eq!(phases(&h), expected);
}

#[tokio::test(start_paused = true)]
async fn a_denominator_without_labels_divides_every_series_of_its_host() {
    let text = r#"
[alerting]
default_rules = false
[[alerting.rules]]
name = "load_per_core"
kind = "threshold"
metric = "host_load5"
divide_by = "host_cpu_count"
op = ">"
raise = 2.0
annotations = { summary = "{{ value }} per core" }
"#;
    let mut h = Harness::new(text);
    let now = h.now();
    h.send(
        "web1",
        vec![
            series("host_load5", &[], now, 6.0),
            series("host_cpu_count", &[], now, 4.0),
        ],
        vec![],
    );
    assert!(h.alerting.alerts().is_empty());
    advance(10).await;
    let now = h.now();
    h.send(
        "web1",
        vec![
            series("host_load5", &[], now, 10.0),
            series("host_cpu_count", &[], now, 4.0),
        ],
        vec![],
    );
    assert_eq!(
        h.alert("load_per_core").unwrap().annotations["summary"],
        "2.5 per core"
    );
}

#[tokio::test(start_paused = true)]
async fn a_watched_process_that_stops_fires_after_for() {
    let text = r#"
[alerting]
default_rules = false
[[alerting.rules]]
name = "process_down"
kind = "event"
event = "process_down"
for = "20s"
annotations = { summary = "{{ labels.name }} is not running on {{ host }}" }
"#;
    let mut h = Harness::new(text);
    let running = |t, nginx, api| {
        vec![
            series("host_process_running", &[("name", "nginx")], t, nginx),
            series("host_process_running", &[("name", "api")], t, api),
        ]
    };
    for (nginx, api) in [(1.0, 2.0), (0.0, 2.0), (0.0, 2.0), (0.0, 1.0)] {
        let now = h.now();
        h.send("web1", running(now, nginx, api), vec![]);
        advance(10).await;
    }
    let alerts = h.alerting.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].phase(), Phase::Firing);
    assert_eq!(
        alerts[0].annotations["summary"],
        "nginx is not running on web1"
    );
    let now = h.now();
    h.send("web1", running(now, 1.0, 1.0), vec![]);
    assert_eq!(h.alert("process_down").unwrap().phase(), Phase::Resolved);
}

#[tokio::test(start_paused = true)]
async fn silences_survive_a_restart() {
    let mut h = Harness::new(CPU_RULE);
    let silence = h
        .alerting
        .create_silence(hostwatch_alerting::NewSilence {
            matchers: vec!["host=web1".into(), "alertname=~cpu.*".into()],
            starts_ms: 0,
            ends_ms: h.now() + 3_600_000,
            created_by: "alice".into(),
            comment: "kernel upgrade".into(),
        })
        .await
        .unwrap();
    h.reopen(CPU_RULE);
    assert_eq!(h.alerting.silences(), std::slice::from_ref(&silence));
    let labels = [
        ("host".to_owned(), "web1".to_owned()),
        ("alertname".to_owned(), "cpu_busy".to_owned()),
    ]
    .into();
    assert_eq!(
        h.alerting.silenced_by(&labels),
        std::slice::from_ref(&silence.id)
    );
    h.alerting.expire_silence(&silence.id).await.unwrap();
    h.reopen(CPU_RULE);
    assert!(h.alerting.silenced_by(&labels).is_empty());
}

#[tokio::test(start_paused = true)]
async fn each_alert_is_paired_with_the_active_silences_muting_it() {
    let mut h = Harness::new(&CPU_RULE.replace("for = \"30s\"", "for = \"0s\""));
    let now = h.now();
    h.send("web1", cpu(now, 0.99), vec![]);
    h.send("web2", cpu(now, 0.99), vec![]);
    let silence = |matchers: &[&str], starts_ms: i64| hostwatch_alerting::NewSilence {
        matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
        starts_ms,
        ends_ms: now + 3_600_000,
        created_by: "alice".into(),
        comment: String::new(),
    };
    let web1 = h.alerting.create_silence(silence(&["host=web1"], 0)).await;
    let all = h
        .alerting
        .create_silence(silence(&["alertname=~cpu.*"], 0))
        .await;
    // Not started yet: mutes nothing now.
    let later = h
        .alerting
        .create_silence(silence(&["host=web2"], now + 60_000))
        .await;
    let (web1, all) = (web1.unwrap().id, all.unwrap().id);
    assert!(later.is_ok());
    let alerts = h.alerting.alerts();
    let hosts: Vec<&str> = alerts.iter().map(|a| a.labels["host"].as_str()).collect();
    assert_eq!(hosts, ["web1", "web2"]);
    let mut by = h.alerting.silenced(&alerts);
    for ids in &mut by {
        ids.sort();
    }
    let mut both = vec![web1.clone(), all.clone()];
    both.sort();
    assert_eq!(by, [both, vec![all]]);
    // The same as asking alert by alert.
    for (alert, ids) in alerts.iter().zip(&by) {
        let mut one = h.alerting.silenced_by(&alert.labels);
        one.sort();
        assert_eq!(&one, ids);
    }
}

#[tokio::test(start_paused = true)]
async fn a_sample_from_far_ahead_is_not_evaluated_and_hides_nothing() {
    let mut h = Harness::new(&CPU_RULE.replace("for = \"30s\"", "for = \"0s\""));
    let now = h.now();
    // An hour ahead (agent clock wrong): stored by no one, evaluated by no one.
    h.send("web1", cpu(now + 3_600_000, 0.99), vec![]);
    assert!(h.alert("cpu_busy").is_none());
    h.send("web1", cpu(now, 0.99), vec![]);
    assert_eq!(h.alert("cpu_busy").unwrap().phase(), Phase::Firing);
}

fn storage(storage: &str, refusal: Option<(&str, &str)>) -> StorageCondition {
    StorageCondition {
        storage: storage.to_owned(),
        refusal: refusal.map(|(condition, cause)| Refusal {
            condition: condition.to_owned(),
            cause: cause.to_owned(),
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn the_collector_not_storing_fires_by_default_with_its_cause_and_resolves() {
    // The shipped rule, with nothing else configured.
    let mut h = Harness::new("[alerting]\nflap_window = \"0s\"\n");
    let storing = [storage("store", None), storage("state", None)];
    h.alerting.check_storage("central", &storing);
    assert!(h.alerting.alerts().is_empty());
    let full =
        "4096 bytes free on the store's file system, under the reserve of 65536 (min_free_bytes)";
    h.alerting.check_storage(
        "central",
        &[
            storage("store", Some(("read-only", full))),
            storage("state", None),
        ],
    );
    let alert = h.alert("collector_not_storing").unwrap();
    assert_eq!(alert.phase(), Phase::Firing);
    assert_eq!(
        (
            alert.labels["host"].as_str(),
            alert.labels["storage"].as_str()
        ),
        ("central", "store")
    );
    assert_eq!(alert.annotations["condition"], "read-only");
    assert_eq!(alert.annotations["cause"], full);
    assert_eq!(
        alert.annotations["summary"],
        format!("The collector on central does not store (store read-only): {full}")
    );
    // A new cause updates the firing alert; it is the same alert.
    let failed = "a write failed (No space left on device)";
    h.alerting.check_storage(
        "central",
        &[
            storage("store", Some(("failed", failed))),
            storage("state", Some(("failed", failed))),
        ],
    );
    let alerts = h.alerting.alerts();
    assert_eq!(alerts.len(), 2);
    assert!(
        alerts
            .iter()
            .all(|a| a.annotations["condition"] == "failed")
    );
    advance(5).await;
    h.alerting.check_storage("central", &storing);
    let t = h.transitions();
    let resolved = t.iter().filter(|(_, _, to)| *to == Phase::Resolved).count();
    assert_eq!(resolved, 2, "{t:?}");
    assert_eq!(t.len(), 4, "{t:?}");
    // Disabled like any default rule.
    let mut h = Harness::new("[alerting]\ndisabled_rules = [\"collector_not_storing\"]\n");
    h.alerting
        .check_storage("central", &[storage("store", Some(("failed", failed)))]);
    assert!(h.alerting.alerts().is_empty());
    assert!(h.transitions().is_empty());
}
