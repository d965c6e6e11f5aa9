//! From alert changes to queued notifications: per hook, alerts fall into
//! groups (by the hook's `group_by` labels); a group is flushed after
//! `group_wait` when new, at most every `group_interval` after that, and
//! again every `repeat_interval` while it has firing alerts. A flush writes
//! one notification into the durable outbox, together with what the hook
//! has now been told, and wakes the hook's delivery worker. When the outbox
//! cannot be written (the collector's database failed), the notification
//! is handed to the worker in memory instead, bounded by the hook's
//! `max_queued`: an alert about a full disk still goes out. Once the
//! database is reopened, those still waiting go into the outbox.
//!
//! Outside a hook's time intervals (`active_time_intervals`,
//! `mute_time_intervals`) its groups are held whole and looked at again
//! when the window opens. Silenced alerts are left out (and told later if
//! still firing when the silence ends); a firing alert whose data is stale (a replayed backlog)
//! waits for fresh data; a resolution is announced only after the flap window.

use crate::AlertingError;
use crate::config::RuleSet;
use crate::deliver;
use crate::engine::{Inner, lock};
use crate::hooks::{Hook, Notification, NotifiedAlert};
use crate::machine::Phase;
use crate::model::{Alert, Silence};
use crate::persist::{Notified, OutboxEntry};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest sleep of the dispatcher: time-driven work (event expiry,
/// silences ending) is looked at at least this often.
const TICK: Duration = Duration::from_secs(1);
/// Ended silences are kept this long (for `hostwatch silence list`).
const KEEP_ENDED_SILENCES_MS: i64 = 24 * 3_600_000;

#[derive(Default)]
struct Group {
    labels: BTreeMap<String, String>,
    alerts: BTreeSet<u64>,
    next_flush: Option<i64>,
    last_sent: Option<i64>,
}

struct Worker {
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Dispatcher {
    inner: Arc<Inner>,
    set: Arc<RuleSet>,
    /// By hook name, then group key.
    groups: HashMap<String, BTreeMap<String, Group>>,
    workers: HashMap<String, Worker>,
}

pub(crate) async fn run(inner: Arc<Inner>, stop: impl Future<Output = ()> + Send) {
    let mut rules = inner.rules.subscribe();
    let set = rules.borrow_and_update().clone();
    let mut d = Dispatcher {
        inner: inner.clone(),
        set: set.clone(),
        groups: HashMap::new(),
        workers: HashMap::new(),
    };
    d.use_hooks(set);
    tokio::pin!(stop);
    let mut next_tick = inner.clock.now_ms();
    loop {
        let now = inner.clock.now_ms();
        let next = d
            .groups
            .values()
            .flat_map(|g| g.values().filter_map(|g| g.next_flush))
            .min()
            .unwrap_or(i64::MAX)
            .min(next_tick);
        tokio::select! {
            _ = &mut stop => break,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep_until(inner.clock.instant_at(next.max(now))) => {}
            changed = rules.changed() => {
                if changed.is_ok() {
                    let set = rules.borrow_and_update().clone();
                    d.use_hooks(set);
                }
            }
        }
        let now = inner.clock.now_ms();
        if now >= next_tick {
            inner.tick();
            d.purge_silences(now);
            next_tick = now + TICK.as_millis() as i64;
        }
        d.take_dirty(now);
        d.flush_due(now).await;
    }
    for (_, worker) in d.workers.drain() {
        worker.stop.cancel();
        let _ = worker.task.await;
    }
}

impl Dispatcher {
    /// Starts workers for the hooks of `set`, stops those of removed hooks
    /// (dropping what was queued for them), and regroups every alert.
    fn use_hooks(&mut self, set: Arc<RuleSet>) {
        let names: BTreeSet<&str> = set.hooks.iter().map(|h| h.name.as_str()).collect();
        for (name, worker) in std::mem::take(&mut self.workers) {
            worker.stop.cancel();
            if !names.contains(name.as_str()) {
                self.forget_hook(&name);
            }
        }
        match self.inner.persist.outbox_hooks() {
            Ok(queued) => {
                for name in queued.iter().filter(|n| !names.contains(n.as_str())) {
                    self.forget_hook(name);
                }
            }
            Err(AlertingError::StateUnavailable(_)) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the alert outbox"),
        }
        let stale: Vec<(String, u64)> = lock(&self.inner.notified)
            .keys()
            .filter(|(hook, _)| !names.contains(hook.as_str()))
            .cloned()
            .collect();
        for (hook, fp) in stale {
            self.forget_notified(&hook, fp);
        }
        for hook in &set.hooks {
            let hook = Arc::new(hook.clone());
            let wake = Arc::new(Notify::new());
            let stop = CancellationToken::new();
            let task = tokio::spawn(deliver::worker(
                self.inner.clone(),
                hook.clone(),
                wake.clone(),
                stop.clone(),
            ));
            // Whatever the outbox holds goes out first.
            wake.notify_one();
            self.workers
                .insert(hook.name.clone(), Worker { wake, stop, task });
        }
        if set.hooks.is_empty() && !set.rules.is_empty() {
            tracing::warn!("no alert hooks configured: alerts are only visible through the API");
        }
        self.set = set;
        self.groups.clear();
        self.inner.mark_all_dirty();
    }

    fn forget_hook(&self, name: &str) {
        lock(&self.inner.unqueued).remove(name);
        match self.inner.persist.forget_hook(name) {
            Ok(0) | Err(AlertingError::StateUnavailable(_)) => {}
            Ok(dropped) => tracing::warn!(
                hook = name,
                dropped,
                "hook removed from the configuration; its queued notifications are dropped"
            ),
            Err(e) => {
                tracing::error!(hook = name, error = %e, "cannot drop a removed hook's notifications")
            }
        }
        lock(&self.inner.notified).retain(|(hook, _), _| hook != name);
    }

    fn forget_notified(&self, hook: &str, fp: u64) {
        lock(&self.inner.notified).remove(&(hook.to_owned(), fp));
        match self.inner.persist.remove_notified(hook, fp) {
            Ok(()) | Err(AlertingError::StateUnavailable(_)) => {}
            Err(e) => tracing::error!(hook, error = %e, "cannot update notification state"),
        }
    }

    fn purge_silences(&self, now: i64) {
        let ended: Vec<String> = {
            let mut silences = lock(&self.inner.silences);
            let ended = silences
                .iter()
                .filter(|s| now - s.ends_ms > KEEP_ENDED_SILENCES_MS)
                .map(|s| s.id.clone())
                .collect();
            silences.retain(|s| now - s.ends_ms <= KEEP_ENDED_SILENCES_MS);
            ended
        };
        for id in ended {
            match self.inner.persist.remove_silence(&id) {
                Ok(()) | Err(AlertingError::StateUnavailable(_)) => {}
                Err(e) => {
                    tracing::warn!(silence.id = %id, error = %e, "cannot delete an ended silence")
                }
            }
        }
    }

    /// Puts changed alerts into their groups and schedules those groups.
    fn take_dirty(&mut self, now: i64) {
        let dirty = self.inner.take_dirty();
        if dirty.is_empty() {
            return;
        }
        for (fp, alert) in self.inner.alerts_by_fp(dirty) {
            let Some(alert) = alert else { continue };
            for hook in &self.set.hooks {
                if !hook.wants(&alert.labels) {
                    continue;
                }
                let labels = hook.group_labels(&alert.labels);
                let key = group_key(&hook.name, &labels);
                let group = self
                    .groups
                    .entry(hook.name.clone())
                    .or_default()
                    .entry(key)
                    .or_insert_with(|| Group {
                        labels,
                        ..Group::default()
                    });
                group.alerts.insert(fp);
                // A group that has not notified yet waits group_wait; one
                // that has, group_interval since its last notification.
                let when = match group.last_sent {
                    None => now + hook.group_wait_ms,
                    Some(last) => (last + hook.group_interval_ms).max(now),
                };
                group.next_flush = Some(group.next_flush.map_or(when, |n| n.min(when)));
            }
        }
    }

    async fn flush_due(&mut self, now: i64) {
        let hooks = self.set.hooks.clone();
        for hook in &hooks {
            let due: Vec<String> = self
                .groups
                .get(&hook.name)
                .map(|g| {
                    g.iter()
                        .filter(|(_, g)| g.next_flush.is_some_and(|t| t <= now))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            for key in due {
                self.flush(hook, &key, now).await;
            }
        }
    }

    /// Decides what a group's receiver must hear now, and queues it.
    async fn flush(&mut self, hook: &Hook, key: &str, now: i64) {
        let Some(group) = self.groups.get_mut(&hook.name).and_then(|g| g.get_mut(key)) else {
            return;
        };
        // Outside the hook's schedule nothing is decided: the group is
        // looked at again when the window opens, as it then is.
        if hook.schedule.muted_at(now) {
            let open = hook.schedule.next_open(now);
            tracing::debug!(hook = %hook.name, group = key, until = %crate::format_rfc3339(open), "notification held: outside the hook's time intervals");
            group.next_flush = Some(open);
            return;
        }
        let stale_after = self.set.settings.stale_after_ms;
        let silences: Vec<_> = lock(&self.inner.silences)
            .iter()
            .filter(|s| s.active_at(now) || s.starts_ms > now)
            .cloned()
            .collect();
        let alerts = self.inner.alerts_by_fp(group.alerts.iter().copied());
        let known: HashMap<u64, Notified> = {
            let notified = lock(&self.inner.notified);
            group
                .alerts
                .iter()
                .filter_map(|fp| notified.get(&(hook.name.clone(), *fp)).map(|n| (*fp, *n)))
                .collect()
        };
        let Sorted {
            firing,
            resolved,
            mut updates,
            keep,
            recheck,
        } = sort(alerts, &known, &silences, now, stale_after);
        let changed = firing.iter().any(|a| !known.contains_key(&a.fp()));
        let last_sent = known
            .values()
            .map(|n| n.sent_ms)
            .chain(group.last_sent)
            .max();
        let repeat_due =
            !firing.is_empty() && last_sent.is_none_or(|t| now - t >= hook.repeat_interval_ms);
        let announce_resolved = !resolved.is_empty() && hook.send_resolved;
        group.alerts = keep;
        if changed || repeat_due || announce_resolved {
            for a in &firing {
                updates.push((
                    a.fp(),
                    Some(Notified {
                        status: Phase::Firing,
                        sent_ms: now,
                        // Set by enqueue, which names the notification.
                        thread: None,
                    }),
                ));
            }
            group.last_sent = Some(now);
            let notification = notification(
                hook,
                key,
                &group.labels,
                &firing,
                if hook.send_resolved { &resolved } else { &[] },
                &self.set.settings.external_url,
            );
            // Alerts told before carry the episode's first notification.
            let thread = known.values().filter_map(|n| n.thread).min();
            self.enqueue(hook, notification, updates, thread, now).await;
        } else if !updates.is_empty() {
            for (fp, _) in &updates {
                self.forget_notified(&hook.name, *fp);
            }
        }
        let Some(group) = self.groups.get_mut(&hook.name).and_then(|g| g.get_mut(key)) else {
            return;
        };
        let repeat = (!firing.is_empty()).then(|| now + hook.repeat_interval_ms);
        group.next_flush = match (recheck, repeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if group.alerts.is_empty()
            && let Some(groups) = self.groups.get_mut(&hook.name)
        {
            groups.remove(key);
        }
    }

    /// Writes a notification and the hook's new knowledge atomically, then
    /// wakes the hook's worker. `thread` is the outbox id of the
    /// notification that opened the group's episode; without one, this
    /// notification opens it. If the outbox cannot be written, the
    /// notification goes to the worker in memory, and what the hook was
    /// told is kept in memory (written back once the database is reopened).
    async fn enqueue(
        &mut self,
        hook: &Hook,
        notification: Notification,
        mut updates: Vec<(u64, Option<Notified>)>,
        thread: Option<u64>,
        now: i64,
    ) {
        // An id from memory only names the notification for the receiver's
        // duplicate detection: it is never stored.
        let id = self
            .inner
            .persist
            .new_id()
            .unwrap_or_else(|_| rand::random());
        let group = crate::eval::fingerprint(&notification.group_labels);
        for n in updates.iter_mut().filter_map(|(_, n)| n.as_mut()) {
            n.thread = Some(thread.unwrap_or(id));
        }
        let entry = OutboxEntry {
            id,
            hook: hook.name.clone(),
            key: outbox_key(id, group),
            created_ms: now,
            notification,
            thread: thread.map(|root| outbox_key(root, group)),
        };
        let queued = self.inner.persist.enqueue(&entry, &updates).await;
        {
            let mut notified = lock(&self.inner.notified);
            for (fp, n) in updates {
                match n {
                    Some(n) => notified.insert((hook.name.clone(), fp), n),
                    None => notified.remove(&(hook.name.clone(), fp)),
                };
            }
        }
        let (trimmed, place) = match queued {
            Ok(()) => (
                self.inner.persist.outbox_trim(&hook.name, hook.max_queued),
                "outbox",
            ),
            Err(e) => {
                if !matches!(e, AlertingError::StateUnavailable(_)) {
                    tracing::error!(hook = %hook.name, error = %e, "cannot queue a notification in the outbox; delivering it from memory");
                }
                (Ok(self.queue_in_memory(hook, entry.clone())), "memory")
            }
        };
        match trimmed {
            Ok(0) | Err(AlertingError::StateUnavailable(_)) => {}
            Ok(dropped) => {
                tracing::error!(hook = %hook.name, dropped, max_queued = hook.max_queued, "hook's queue is full: oldest notifications dropped");
                lock(&self.inner.stats)
                    .entry(hook.name.clone())
                    .or_default()
                    .dropped += dropped;
            }
            Err(e) => {
                tracing::error!(hook = %hook.name, error = %e, "cannot trim the hook's queue")
            }
        }
        tracing::debug!(hook = %hook.name, notification.key = %entry.key, alerts = entry.notification.alerts.len(), status = %entry.notification.status, queue = place, "notification queued");
        if let Some(worker) = self.workers.get(&hook.name) {
            worker.wake.notify_one();
        }
    }

    /// Queues `entry` for the hook's worker in memory, dropping the oldest
    /// beyond `max_queued`; returns how many were dropped.
    fn queue_in_memory(&self, hook: &Hook, entry: OutboxEntry) -> u64 {
        let mut unqueued = lock(&self.inner.unqueued);
        let queue = unqueued.entry(hook.name.clone()).or_default();
        queue.push_back(entry);
        let excess = queue.len().saturating_sub(hook.max_queued);
        queue.drain(..excess);
        excess as u64
    }
}

/// A notification's idempotency key: its outbox id and its group.
fn outbox_key(id: u64, group: u64) -> String {
    format!("{id:016x}-{group:016x}")
}

fn group_key(hook: &str, labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{hook}:{{{}}}", pairs.join(","))
}

/// Labels (or annotations) every alert shares.
fn common(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A group's alerts sorted by what its receiver must hear.
#[derive(Default)]
struct Sorted {
    /// Firing, not silenced, and fresh or told before.
    firing: Vec<Alert>,
    /// Told as firing, now no longer (resolved, pending again).
    resolved: Vec<Alert>,
    /// What the hook will have been told, by fingerprint (`None`: forget).
    updates: Vec<(u64, Option<Notified>)>,
    /// The alerts that stay in the group.
    keep: BTreeSet<u64>,
    /// When to look again: a silence starts or ends, a resolution is due.
    recheck: Option<i64>,
}

/// Sorts a group's `alerts` (by fingerprint; `None`: gone), given what
/// the hook was told (`known`) and the silences active now or later.
fn sort(
    alerts: Vec<(u64, Option<Alert>)>,
    known: &HashMap<u64, Notified>,
    silences: &[Silence],
    now: i64,
    stale_after: i64,
) -> Sorted {
    let mut sorted = Sorted::default();
    let Sorted {
        firing,
        resolved,
        updates,
        keep,
        recheck,
    } = &mut sorted;
    let mut later = |t: i64| *recheck = Some(recheck.map_or(t, |r: i64| r.min(t)));
    for (fp, alert) in alerts {
        let told = known.get(&fp);
        let Some(alert) = alert else {
            if told.is_some() {
                updates.push((fp, None));
            }
            continue;
        };
        match alert.phase() {
            Phase::Firing => {
                keep.insert(fp);
                let muted_until = silences
                    .iter()
                    .filter(|s| crate::matcher::all_match(&s.parsed(), &alert.labels))
                    .filter_map(|s| {
                        if s.active_at(now) {
                            Some(s.ends_ms)
                        } else {
                            later(s.starts_ms);
                            None
                        }
                    })
                    .max();
                if let Some(end) = muted_until {
                    later(end);
                    continue;
                }
                // Stale: fired in a replayed backlog; paged only once
                // fresh data confirm it (the evaluator marks it dirty).
                if told.is_none() && now - alert.evaluated_ms > stale_after {
                    continue;
                }
                firing.push(alert);
            }
            Phase::Resolved | Phase::Pending | Phase::Inactive => {
                if told.is_none() {
                    if alert.phase() == Phase::Pending {
                        keep.insert(fp);
                    }
                    continue;
                }
                let announce = alert.announce_resolved_ms.unwrap_or(now);
                if alert.phase() == Phase::Resolved && now < announce {
                    keep.insert(fp);
                    later(announce);
                    continue;
                }
                updates.push((fp, None));
                if alert.phase() == Phase::Pending {
                    keep.insert(fp);
                }
                resolved.push(alert);
            }
        }
    }
    sorted
}

fn notification(
    hook: &Hook,
    key: &str,
    group_labels: &BTreeMap<String, String>,
    firing: &[Alert],
    resolved: &[Alert],
    external_url: &str,
) -> Notification {
    let alerts: Vec<NotifiedAlert> = firing
        .iter()
        .map(|a| notified_alert(a, true, external_url))
        .chain(
            resolved
                .iter()
                .map(|a| notified_alert(a, false, external_url)),
        )
        .collect();
    let labels: Vec<&BTreeMap<String, String>> = alerts.iter().map(|a| &a.labels).collect();
    let annotations: Vec<&BTreeMap<String, String>> =
        alerts.iter().map(|a| &a.annotations).collect();
    Notification {
        version: "4".to_owned(),
        group_key: key.to_owned(),
        truncated_alerts: 0,
        status: if firing.is_empty() {
            "resolved"
        } else {
            "firing"
        }
        .to_owned(),
        receiver: hook.name.clone(),
        group_labels: group_labels.clone(),
        common_labels: common(&labels),
        common_annotations: common(&annotations),
        external_url: external_url.to_owned(),
        alerts,
    }
}

/// The alert name of [`test_notification`]'s alert.
const TEST_ALERTNAME: &str = "HostwatchTestNotification";

/// A notification of a made-up alert, firing or resolved, marked as a test
/// in its name and summary: what `hostwatch alerts test-hook` sends to
/// check a hook's receiver. Its labels do not change, so a resolved test
/// closes what a firing one opened (an incident keyed by the group).
pub(crate) fn test_notification(
    hook: &Hook,
    resolved: bool,
    now_ms: i64,
    external_url: &str,
) -> Notification {
    let labels: BTreeMap<String, String> =
        [("alertname", TEST_ALERTNAME), ("host", "hostwatch-test")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
    let annotations: BTreeMap<String, String> = [
        (
            "summary",
            "Test notification from hostwatch: nothing is wrong".to_owned(),
        ),
        (
            "description",
            format!(
                "Sent by `hostwatch alerts test-hook {}` to check that this hook reaches its receiver.",
                hook.name
            ),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    let group_labels = hook.group_labels(&labels);
    let status = if resolved { "resolved" } else { "firing" };
    let alert = NotifiedAlert {
        status: status.to_owned(),
        starts_at: crate::format_rfc3339(now_ms),
        ends_at: if resolved {
            crate::format_rfc3339(now_ms)
        } else {
            "0001-01-01T00:00:00Z".to_owned()
        },
        generator_url: String::new(),
        fingerprint: format!("{:016x}", crate::eval::fingerprint(&labels)),
        labels: labels.clone(),
        annotations: annotations.clone(),
    };
    Notification {
        version: "4".to_owned(),
        group_key: group_key(&hook.name, &group_labels),
        truncated_alerts: 0,
        status: status.to_owned(),
        receiver: hook.name.clone(),
        group_labels,
        common_labels: labels,
        common_annotations: annotations,
        external_url: external_url.to_owned(),
        alerts: vec![alert],
    }
}

fn notified_alert(alert: &Alert, firing: bool, external_url: &str) -> NotifiedAlert {
    let starts = alert
        .machine
        .fired_ms
        .unwrap_or(alert.machine.active_since_ms);
    let ends = if firing {
        "0001-01-01T00:00:00Z".to_owned()
    } else {
        crate::format_rfc3339(alert.machine.resolved_ms.unwrap_or(alert.evaluated_ms))
    };
    NotifiedAlert {
        status: if firing { "firing" } else { "resolved" }.to_owned(),
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
        starts_at: crate::format_rfc3339(starts),
        ends_at: ends,
        generator_url: if external_url.is_empty() {
            String::new()
        } else {
            format!("{external_url}/alerts/{}", alert.fingerprint)
        },
        fingerprint: alert.fingerprint.clone(),
    }
}
