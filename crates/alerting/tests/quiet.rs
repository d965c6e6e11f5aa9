//! Routing by severity with a quiet window, through the public API on a
//! real sled database with tokio's clock paused (the collector's clock
//! starts on a Saturday): warnings go to a "chat" hook only in working
//! hours, everything to a "mail" hook at once. Both hooks are commands
//! appending the notification JSON to a file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use hostwatch_alerting::{Alerting, BatchContext, Clock};
use hostwatch_tsdb::{Batch, Point, SeriesInput};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// 2026-12-05T12:00:00Z, a Saturday.
const SATURDAY_NOON: i64 = 1_796_472_000_000;
/// 2026-12-07T09:00:00Z, the Monday after.
const MONDAY_NINE: i64 = 1_796_634_000_000;

/// The rule, the windows, and hooks "chat" (warnings, with `chat_keys`)
/// and "mail" (everything).
fn config(dir: &Path, chat_keys: &str) -> String {
    let hook = |name: &str, keys: &str| {
        format!(
            "[[alerting.hooks]]\nname = \"{name}\"\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"cat >> \\\"$0\\\"; echo >> \\\"$0\\\"\", \"{}\"]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\ntimeout = \"1h\"\n{keys}\n",
            dir.join(name).display()
        )
    };
    format!(
        r#"
[alerting]
default_rules = false
flap_window = "0s"
[[alerting.rules]]
name = "cpu_busy"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
op = ">"
raise = 0.9
labels = {{ severity = "warning" }}
[[alerting.time_intervals]]
name = "working_hours"
[[alerting.time_intervals.intervals]]
weekdays = ["monday:friday"]
times = [{{ start_time = "09:00", end_time = "17:00" }}]
location = "UTC"
[[alerting.time_intervals]]
name = "maintenance"
[[alerting.time_intervals.intervals]]
weekdays = ["saturday"]
times = [{{ start_time = "13:00", end_time = "14:00" }}]
{}{}"#,
        hook(
            "chat",
            &format!("match = [\"severity=warning\"]\n{chat_keys}")
        ),
        hook("mail", "")
    )
}

/// The notifications a hook's command wrote, oldest first.
fn received(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits (in real time: the commands run outside tokio's clock) until
/// `file` holds `count` notifications and the hook of that name has
/// nothing left in its outbox: a command that has written its line may
/// not have exited yet, and a clock advanced past the hook's timeout
/// before it exits would fail the delivery and send it again.
async fn wait_for(alerting: &Alerting, file: &Path, count: usize) -> Vec<Value> {
    let hook = file.file_name().unwrap().to_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = received(file);
        let pending = alerting.outbox_depth().get(hook).copied().unwrap_or(0);
        if got.len() >= count && pending == 0 {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {count} notifications in {} ({pending} in the outbox): {got:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `host`'s CPU at the clock's now.
fn cpu(alerting: &Alerting, clock: &Clock, seq: u64, host: &str, value: f64) {
    let batch = Batch {
        host: host.to_owned(),
        source: 1,
        seq,
        series: vec![SeriesInput {
            metric: "host_cpu_utilization_ratio".to_owned(),
            labels: vec![],
            points: vec![Point {
                t_ms: clock.now_ms(),
                value,
            }],
        }],
        processes: vec![],
        malformed: 0,
    };
    alerting.observe(
        &batch,
        BatchContext {
            received_ms: clock.now_ms(),
            dropped_batches_total: 0,
            future_tolerance_ms: 600_000,
        },
    );
}

fn hosts(notification: &Value) -> Vec<(&str, &str)> {
    notification["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["host"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn warnings_outside_working_hours_are_held_until_monday_if_still_firing() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mail) = (dir.path().join("chat"), dir.path().join("mail"));
    let db = sled::open(dir.path().join("db")).unwrap();
    let clock = Clock::starting_at(SATURDAY_NOON);
    let alerting = Alerting::open(
        &db,
        rules(&config(
            dir.path(),
            "active_time_intervals = [\"working_hours\"]",
        )),
        Arc::new(|_, _| None),
        clock,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = {
        let alerting = alerting.clone();
        let stop = stop.clone();
        tokio::spawn(async move { alerting.run(stop.cancelled_owned()).await })
    };

    // Saturday: web1 fires and stays; web2 fires and ends within the hour.
    cpu(&alerting, &clock, 1, "web1", 0.99);
    cpu(&alerting, &clock, 1, "web2", 0.99);
    let got = wait_for(&alerting, &mail, 2).await;
    assert!(got.iter().all(|n| n["status"] == "firing"));
    tokio::time::advance(Duration::from_secs(3600)).await;
    cpu(&alerting, &clock, 2, "web2", 0.1);
    let got = wait_for(&alerting, &mail, 3).await;
    assert_eq!(hosts(&got[2]), [("web2", "resolved")]);
    // Chat heard nothing, and has nothing queued: it is held, not queued.
    assert!(received(&chat).is_empty());
    assert_eq!(alerting.outbox_depth().get("chat").copied().unwrap_or(0), 0);

    // Monday 08:58: web1 still fires (fresh data), still outside the window.
    let to_monday = MONDAY_NINE - 120_000 - clock.now_ms();
    tokio::time::advance(Duration::from_millis(to_monday as u64)).await;
    cpu(&alerting, &clock, 3, "web1", 0.99);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(received(&chat).is_empty(), "{:?}", received(&chat));

    // 09:00: the window opens and chat hears of web1 only.
    tokio::time::advance(Duration::from_secs(61)).await;
    let got = wait_for(&alerting, &chat, 1).await;
    assert_eq!(hosts(&got[0]), [("web1", "firing")]);
    assert!(clock.now_ms() >= MONDAY_NINE);
    // Once told, its resolution in working hours goes at once.
    cpu(&alerting, &clock, 4, "web1", 0.1);
    let got = wait_for(&alerting, &chat, 2).await;
    assert_eq!(hosts(&got[1]), [("web1", "resolved")]);
    assert_eq!(received(&chat).len(), 2);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_resolution_inside_a_mute_window_is_sent_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mail) = (dir.path().join("chat"), dir.path().join("mail"));
    let db = sled::open(dir.path().join("db")).unwrap();
    let clock = Clock::starting_at(SATURDAY_NOON);
    let alerting = Alerting::open(
        &db,
        rules(&config(
            dir.path(),
            "mute_time_intervals = [\"maintenance\"]",
        )),
        Arc::new(|_, _| None),
        clock,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = {
        let alerting = alerting.clone();
        let stop = stop.clone();
        tokio::spawn(async move { alerting.run(stop.cancelled_owned()).await })
    };
    // 12:00, before the window: chat hears of it at once.
    cpu(&alerting, &clock, 1, "web1", 0.99);
    let got = wait_for(&alerting, &chat, 1).await;
    assert_eq!(hosts(&got[0]), [("web1", "firing")]);
    // Both delivered before the clock jumps (past the commands' timeout).
    wait_for(&alerting, &mail, 1).await;
    // 13:30, inside it: mail hears of the resolution, chat does not...
    tokio::time::advance(Duration::from_secs(90 * 60)).await;
    cpu(&alerting, &clock, 2, "web1", 0.1);
    let got = wait_for(&alerting, &mail, 2).await;
    assert_eq!(hosts(&got[1]), [("web1", "resolved")]);
    // ... for the half hour left, though resolved alerts are otherwise
    // forgotten 15 minutes after their resolution.
    for _ in 0..29 {
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    assert_eq!(received(&chat).len(), 1);
    // 14:00: the window ends and the resolution goes out.
    tokio::time::advance(Duration::from_secs(61)).await;
    let got = wait_for(&alerting, &chat, 2).await;
    assert_eq!(hosts(&got[1]), [("web1", "resolved")]);
    stop.cancel();
    task.await.unwrap();
}
