//! [`Alerting`]: the handle the collector holds. Evaluation is synchronous
//! and cheap (called on ingest, on the blocking pool); notification runs
//! in tasks started by [`Alerting::run`].

use crate::clock::Clock;
use crate::config::RuleSet;
use crate::eval::{
    BatchContext, Effects, Evaluator, HostLiveness, Op, SnapshotSource, StorageCondition,
};
use crate::hooks::Outcome;
use crate::machine::Phase;
use crate::matcher::LabelMatcher;
use crate::model::{Alert, DeliveryStats, HistoryFilter, NewSilence, Silence, Transition};
use crate::persist::{Notified, OutboxEntry, Persist};
use crate::{AlertingError, dispatch};
use hostwatch_tsdb::Batch;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, broadcast, watch};

/// Transitions buffered per watcher; a slower watcher misses some and is told.
const WATCH_BUFFER: usize = 4096;

/// The longest a silence may last: longer is a mistake (a unit typed
/// wrong), or a rule that should be changed instead.
pub const MAX_SILENCE_MS: i64 = 365 * 86_400_000;

/// The alerting engine; cheap to clone.
#[derive(Clone)]
pub struct Alerting {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) clock: Clock,
    pub(crate) persist: Persist,
    eval: Mutex<Evaluator>,
    snapshots: SnapshotSource,
    /// Alerts the dispatcher should look at, and its wake-up call.
    dirty: Mutex<HashSet<u64>>,
    pub(crate) wake: Notify,
    pub(crate) rules: watch::Sender<Arc<RuleSet>>,
    transitions: broadcast::Sender<Transition>,
    pub(crate) silences: Mutex<Vec<Silence>>,
    /// What each hook was last told about each alert, by (hook, fingerprint).
    pub(crate) notified: Mutex<HashMap<(String, u64), Notified>>,
    pub(crate) stats: Mutex<BTreeMap<String, DeliveryStats>>,
    /// Notifications the outbox could not take (the database cannot be
    /// written), by hook, oldest first: delivered from memory, bounded by
    /// the hook's `max_queued`.
    pub(crate) unqueued: Mutex<HashMap<String, VecDeque<OutboxEntry>>>,
}

/// A poisoned lock still holds consistent data here: every update under
/// these locks completes before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Alerting {
    /// Opens the alert state in `db` (the collector's database) and starts
    /// evaluating with `rules`. `snapshots` finds a host's process snapshot
    /// at or before a time, for the cause of CPU and memory alerts.
    pub fn open(
        db: &sled::Db,
        rules: RuleSet,
        snapshots: SnapshotSource,
        clock: Clock,
    ) -> Result<Self, AlertingError> {
        let persist = Persist::open(db)?;
        let stored = persist.load_alerts()?;
        let notified = persist
            .load_notified()?
            .into_iter()
            .map(|(hook, fp, n)| ((hook, fp), n))
            .collect();
        let silences = persist.load_silences()?;
        let set = Arc::new(rules);
        let eval = Evaluator::new(set.clone(), stored, clock.now_ms());
        let (rules, _) = watch::channel(set);
        let (transitions, _) = broadcast::channel(WATCH_BUFFER);
        let alerting = Alerting {
            inner: Arc::new(Inner {
                clock,
                persist,
                eval: Mutex::new(eval),
                snapshots,
                dirty: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                rules,
                transitions,
                silences: Mutex::new(silences),
                notified: Mutex::new(notified),
                stats: Mutex::new(BTreeMap::new()),
                unqueued: Mutex::new(HashMap::new()),
            }),
        };
        let now = alerting.inner.clock.now_ms();
        alerting.with_eval(|eval, effects| eval.resolve_orphans(now, |_, _| true, effects));
        Ok(alerting)
    }

    /// Delivers notifications until `stop` completes. Undelivered ones
    /// stay in the outbox for the next start.
    pub async fn run(&self, stop: impl Future<Output = ()> + Send) {
        dispatch::run(self.inner.clone(), stop).await;
    }

    /// Runs `f` on the evaluator and applies its effects under the same
    /// lock, so the stored state follows the evaluation order.
    fn with_eval<T>(&self, f: impl FnOnce(&mut Evaluator, &mut Effects) -> T) -> T {
        let mut eval = lock(&self.inner.eval);
        let mut effects = Effects::default();
        let out = f(&mut eval, &mut effects);
        self.inner.apply(effects, eval.set().settings.history_limit);
        out
    }

    /// Evaluates a stored batch (call it once per batch, after the store
    /// accepted it, and not for replays the store skipped).
    pub fn observe(&self, batch: &Batch, ctx: BatchContext) {
        let now = self.inner.clock.now_ms();
        let inner = &self.inner;
        self.with_eval(|eval, effects| {
            eval.observe(
                batch,
                ctx,
                now,
                &inner.snapshots,
                || match inner.persist.dropped(&batch.host, batch.source) {
                    Ok(n) => n,
                    Err(AlertingError::StateUnavailable(_)) => None,
                    Err(e) => {
                        tracing::warn!(host.id = %batch.host, error = %e, "cannot read the dropped-batch count");
                        None
                    }
                },
                effects,
            )
        });
    }

    /// An agent connected; `previous_boot_id` is the boot id the registry
    /// held (empty if none): a different one means the host rebooted.
    pub fn host_connected(&self, host: &str, previous_boot_id: &str, boot_id: &str) {
        if previous_boot_id.is_empty() || boot_id.is_empty() || previous_boot_id == boot_id {
            return;
        }
        let now = self.inner.clock.now_ms();
        self.with_eval(|eval, effects| {
            eval.rebooted(host, (previous_boot_id, boot_id), now, effects)
        });
    }

    /// Raises or resolves host-down alerts from the registry's view now.
    pub fn check_hosts(&self, hosts: &[HostLiveness]) {
        let now = self.inner.clock.now_ms();
        self.with_eval(|eval, effects| eval.check_hosts(hosts, now, effects));
    }

    /// Raises or resolves the `not_storing` alerts of the collector `host`
    /// from its storage's conditions now.
    pub fn check_storage(&self, host: &str, conditions: &[StorageCondition]) {
        let now = self.inner.clock.now_ms();
        self.with_eval(|eval, effects| eval.check_storage(host, conditions, now, effects));
    }

    /// Time-driven work: event alerts expiring, resolved alerts forgotten.
    pub(crate) fn tick(&self) {
        let now = self.inner.clock.now_ms();
        let needed: HashSet<u64> = lock(&self.inner.notified)
            .keys()
            .map(|(_, fp)| *fp)
            .collect();
        // Resolved alerts stay listed (and available to late group
        // flushes) for a while after their resolution was announced.
        const KEEP_RESOLVED_MS: i64 = 15 * 60_000;
        self.with_eval(|eval, effects| {
            eval.tick(now, KEEP_RESOLVED_MS, |fp| needed.contains(&fp), effects)
        });
    }

    /// Replaces the rules and hooks; the running ones keep going if this is
    /// never called (validation happens before, in `AlertingConfig::compile`).
    pub fn reload(&self, rules: RuleSet) {
        let set = Arc::new(rules);
        let now = self.inner.clock.now_ms();
        self.with_eval(|eval, effects| eval.reload(set.clone(), now, effects));
        tracing::info!(
            rules = set.rules.len(),
            hooks = set.hooks.len(),
            "alert rules reloaded"
        );
        self.inner.rules.send_replace(set);
    }

    /// The shortest timeout of the host-down rules in force, if any.
    pub fn host_down_timeout_ms(&self) -> Option<i64> {
        let set = self.inner.rules.borrow().clone();
        set.rules
            .iter()
            .filter_map(|r| match r.kind {
                crate::config::Kind::HostDown { timeout_ms, .. } => Some(timeout_ms),
                _ => None,
            })
            .min()
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<crate::config::Rule> {
        self.inner.rules.borrow().rules.clone()
    }

    /// Names of the rules and hooks in force.
    pub fn rule_names(&self) -> (Vec<String>, Vec<String>) {
        let set = self.inner.rules.borrow().clone();
        (
            set.rules.iter().map(|r| r.name.clone()).collect(),
            set.hooks.iter().map(|h| h.name.clone()).collect(),
        )
    }

    /// The hooks in force: each one's name and kind, in configuration order.
    pub fn hooks(&self) -> Vec<(String, &'static str)> {
        let set = self.inner.rules.borrow().clone();
        set.hooks
            .iter()
            .map(|h| (h.name.clone(), h.target.kind()))
            .collect()
    }

    /// Sends a test notification (firing, or with `resolved` its
    /// resolution) through the hook `name` at once, outside the outbox
    /// and its retries, and returns what the receiver answered.
    pub async fn test_hook(&self, name: &str, resolved: bool) -> Result<Outcome, AlertingError> {
        let set = self.inner.rules.borrow().clone();
        let hook = set
            .hooks
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| AlertingError::NotFound(format!("no hook named {name:?}")))?;
        let now = self.inner.clock.now_ms();
        let notification =
            dispatch::test_notification(hook, resolved, now, &set.settings.external_url);
        let key = format!("test-{now}");
        let outcome = hook.deliver(&notification, &key, None, now).await;
        tracing::info!(hook = %name, resolved, outcome = ?outcome, "test notification sent");
        Ok(outcome)
    }

    /// Alerts that are pending, firing or recently resolved, by fingerprint.
    pub fn alerts(&self) -> Vec<Alert> {
        let eval = lock(&self.inner.eval);
        let mut out: Vec<Alert> = eval.alerts.values().cloned().collect();
        out.sort_by(|a, b| (&a.rule, &a.labels).cmp(&(&b.rule, &b.labels)));
        out
    }

    /// Ids of the silences muting an alert with `labels` now.
    pub fn silenced_by(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let now = self.inner.clock.now_ms();
        lock(&self.inner.silences)
            .iter()
            .filter(|s| s.active_at(now) && crate::matcher::all_match(&s.parsed(), labels))
            .map(|s| s.id.clone())
            .collect()
    }

    /// For each of `alerts`, the ids of the silences muting it now: one
    /// pass over the silences, each parsed once.
    pub fn silenced(&self, alerts: &[Alert]) -> Vec<Vec<String>> {
        let now = self.inner.clock.now_ms();
        let active: Vec<(String, Vec<crate::matcher::LabelMatcher>)> = lock(&self.inner.silences)
            .iter()
            .filter(|s| s.active_at(now))
            .map(|s| (s.id.clone(), s.parsed()))
            .collect();
        alerts
            .iter()
            .map(|a| {
                active
                    .iter()
                    .filter(|(_, matchers)| crate::matcher::all_match(matchers, &a.labels))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .collect()
    }

    /// Recorded transitions, oldest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<Transition>, AlertingError> {
        self.inner.persist.history(filter)
    }

    /// Every transition from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner.transitions.subscribe()
    }

    /// Creates a silence; matchers are validated, the end must be after
    /// the start and in the future, and at most [`MAX_SILENCE_MS`] after
    /// the start.
    pub async fn create_silence(&self, new: NewSilence) -> Result<Silence, AlertingError> {
        let now = self.inner.clock.now_ms();
        if new.matchers.is_empty() {
            return Err(AlertingError::Invalid(
                "a silence needs at least one matcher".to_owned(),
            ));
        }
        for m in &new.matchers {
            LabelMatcher::parse(m).map_err(|e| AlertingError::Invalid(e.to_string()))?;
        }
        let starts_ms = if new.starts_ms == 0 {
            now
        } else {
            new.starts_ms
        };
        if new.ends_ms <= starts_ms || new.ends_ms <= now {
            return Err(AlertingError::Invalid(format!(
                "the silence must end after it starts and in the future (starts {}, ends {})",
                crate::format_rfc3339(starts_ms),
                crate::format_rfc3339(new.ends_ms)
            )));
        }
        if new.ends_ms.saturating_sub(starts_ms) > MAX_SILENCE_MS {
            return Err(AlertingError::Invalid(format!(
                "a silence may last at most 365 days (starts {}, ends {})",
                crate::format_rfc3339(starts_ms),
                crate::format_rfc3339(new.ends_ms)
            )));
        }
        let silence = Silence {
            id: format!(
                "{:016x}",
                self.inner.persist.new_id()? ^ rand::random::<u64>()
            ),
            matchers: new.matchers,
            starts_ms,
            ends_ms: new.ends_ms,
            created_by: new.created_by,
            comment: new.comment,
            created_ms: now,
        };
        self.inner.persist.save_silence(&silence).await?;
        lock(&self.inner.silences).push(silence.clone());
        tracing::info!(silence.id = %silence.id, matchers = ?silence.matchers, by = %silence.created_by, "silence created");
        self.mark_all_dirty();
        Ok(silence)
    }

    /// Silences not ended longer ago than a day, newest first.
    pub fn silences(&self) -> Vec<Silence> {
        let mut out = lock(&self.inner.silences).clone();
        out.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
        out
    }

    /// Ends a silence now; one that has ended already is refused.
    pub async fn expire_silence(&self, id: &str) -> Result<Silence, AlertingError> {
        let now = self.inner.clock.now_ms();
        let silence = {
            let mut silences = lock(&self.inner.silences);
            let s = silences
                .iter_mut()
                .find(|s| s.id == id)
                .ok_or_else(|| AlertingError::NotFound(format!("no silence with id {id:?}")))?;
            if s.ends_ms <= now {
                return Err(AlertingError::Invalid(format!(
                    "silence {id:?} has already ended (at {})",
                    crate::format_rfc3339(s.ends_ms)
                )));
            }
            s.ends_ms = now;
            s.clone()
        };
        self.inner.persist.save_silence(&silence).await?;
        tracing::info!(silence.id = %id, "silence expired");
        self.mark_all_dirty();
        Ok(silence)
    }

    /// Why the alert state cannot be written, if so: a write to the
    /// collector's database failed (sled refuses writes until the database
    /// is reopened), or it is being reopened.
    pub fn state_failure(&self) -> Option<String> {
        self.inner.persist.failure()
    }

    /// Lets go of the collector's database so that it can be reopened:
    /// until [`Alerting::attach_state`], alert state lives in memory only
    /// and notifications are delivered from memory.
    pub fn detach_state(&self) {
        self.inner.persist.detach();
    }

    /// Takes the trees of the reopened database `db` and writes back what
    /// memory holds that the disk may have missed: the alerts, what each
    /// hook was told, the silences, and the notifications waiting in
    /// memory, which go into the outbox. (Transitions recorded while
    /// writes failed are not in memory and are missing from the history.)
    pub fn attach_state(&self, db: &sled::Db) -> Result<(), AlertingError> {
        self.inner.persist.attach(db)?;
        {
            // Evaluation applies its effects under this lock: none interleaves.
            let eval = lock(&self.inner.eval);
            let alerts: Vec<Alert> = eval.alerts.values().cloned().collect();
            let notified: Vec<(String, u64, Notified)> = lock(&self.inner.notified)
                .iter()
                .map(|((hook, fp), n)| (hook.clone(), *fp, *n))
                .collect();
            let silences = lock(&self.inner.silences).clone();
            self.inner
                .persist
                .write_back(&alerts, &notified, &silences)?;
        }
        let mut waiting: Vec<OutboxEntry> = lock(&self.inner.unqueued)
            .values()
            .flatten()
            .cloned()
            .collect();
        let old_ids: HashSet<u64> = waiting.iter().map(|e| e.id).collect();
        self.inner.persist.requeue(&mut waiting)?;
        // Durable now: off the memory queues. A worker delivering one of
        // them meanwhile may send it twice, with the same key.
        for queue in lock(&self.inner.unqueued).values_mut() {
            queue.retain(|e| !old_ids.contains(&e.id));
        }
        Ok(())
    }

    /// Deliveries per hook since start.
    pub fn delivery_stats(&self) -> BTreeMap<String, DeliveryStats> {
        lock(&self.inner.stats).clone()
    }

    /// Notifications waiting, per hook in force: in the outbox, and in
    /// memory while the outbox cannot be written (those of the outbox are
    /// not counted while its database is being reopened).
    pub fn outbox_depth(&self) -> BTreeMap<String, u64> {
        let hooks: Vec<String> = self
            .inner
            .rules
            .borrow()
            .hooks
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let stored: Vec<usize> = hooks
            .iter()
            .map(|hook| self.inner.persist.outbox_count(hook).unwrap_or(0))
            .collect();
        let unqueued = lock(&self.inner.unqueued);
        hooks
            .into_iter()
            .zip(stored)
            .map(|(hook, stored)| {
                let memory = unqueued.get(&hook).map_or(0, VecDeque::len);
                (hook, (stored + memory) as u64)
            })
            .collect()
    }

    pub(crate) fn mark_all_dirty(&self) {
        self.inner.mark_all_dirty();
    }
}

impl Inner {
    /// Persists and announces an evaluation's effects.
    fn apply(&self, effects: Effects, history_limit: usize) {
        for op in &effects.ops {
            let result = match op {
                Op::Save(alert) => self.persist.save_alert(alert),
                Op::Remove(fp) => self.persist.remove_alert(*fp),
            };
            // Unavailable: written back from memory once it is reopened.
            match result {
                Ok(()) | Err(AlertingError::StateUnavailable(_)) => {}
                Err(e) => tracing::error!(error = %e, "cannot store alert state"),
            }
        }
        for (host, source, count) in &effects.dropped {
            match self.persist.set_dropped(host, *source, *count) {
                Ok(()) | Err(AlertingError::StateUnavailable(_)) => {}
                Err(e) => {
                    tracing::warn!(host.id = %host, error = %e, "cannot store the dropped-batch count")
                }
            }
        }
        for mut t in effects.transitions {
            match self.persist.append_history(&mut t, history_limit) {
                Ok(()) | Err(AlertingError::StateUnavailable(_)) => {}
                Err(e) => tracing::error!(error = %e, "cannot record an alert transition"),
            }
            let host = t.labels.get("host").map(String::as_str).unwrap_or("");
            if t.to == Phase::Firing || t.from == Phase::Firing {
                tracing::info!(alert = %t.rule, host.id = host, from = %t.from, to = %t.to, value = t.value, flapping = t.flapping, fingerprint = %t.fingerprint, "alert");
            } else {
                tracing::debug!(alert = %t.rule, host.id = host, from = %t.from, to = %t.to, "alert");
            }
            // No watcher is fine.
            let _ = self.transitions.send(t);
        }
        if !effects.dirty.is_empty() {
            lock(&self.dirty).extend(effects.dirty);
            self.wake.notify_one();
        }
    }

    pub(crate) fn take_dirty(&self) -> HashSet<u64> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    pub(crate) fn mark_all_dirty(&self) {
        let all: Vec<u64> = lock(&self.eval).alerts.keys().copied().collect();
        lock(&self.dirty).extend(all);
        self.wake.notify_one();
    }

    /// Copies of the alerts with these fingerprints (absent ones: None).
    pub(crate) fn alerts_by_fp(
        &self,
        fps: impl IntoIterator<Item = u64>,
    ) -> Vec<(u64, Option<Alert>)> {
        let eval = lock(&self.eval);
        fps.into_iter()
            .map(|fp| (fp, eval.alerts.get(&fp).cloned()))
            .collect()
    }

    pub(crate) fn tick(self: &Arc<Self>) {
        Alerting {
            inner: self.clone(),
        }
        .tick();
    }
}
