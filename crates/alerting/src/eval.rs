//! The evaluator: incremental on ingest. Each batch's samples update only
//! the windows of the rules that watch their metric; nothing reads the
//! store back, apart from a process snapshot when a CPU or memory alert
//! fires and its batch holds none.
//!
//! State per host: for every (metric, labels) a rule watches, a slot with
//! one tracker per matching rule (window or trend, and the alert's state
//! machine); the newest value of every denominator metric; the clock-skew
//! estimate; dropped-batch counters; which host-down alerts fire.
//! Alerts that are not inactive live in one map by fingerprint.

use crate::config::{Cause, Eval, EventKind, Kind, Rule, RuleSet, SeriesRule, Source};
use crate::machine::{Change, Cond, Machine, Phase};
use crate::model::{Alert, Transition};
use crate::template::{Context, format_bytes, format_duration, format_number};
use crate::window::{Aggregate, Trend, Window};
use hostwatch_tsdb::{Batch, Label, ProcessInfo, ProcessSnapshot, SeriesInput, series_hash};
use rustc_hash::FxHashMap;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Finds the newest process snapshot of a host at or before a time.
pub type SnapshotSource = Arc<dyn Fn(&str, i64) -> Option<ProcessSnapshot> + Send + Sync>;

/// Processes listed in a cause annotation.
const TOP_PROCESSES: usize = 5;
/// Span over which the clock-skew estimate takes the batch that arrived
/// freshest (a replayed backlog alone does not look like skew).
const SKEW_WINDOW_MS: i64 = 120_000;
const SKEW_SAMPLES: usize = 64;

/// What a batch brings besides its samples.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext {
    /// Collector time when the batch arrived.
    pub received_ms: i64,
    /// The agent's running count of batches its spool dropped.
    pub dropped_batches_total: u64,
    /// Samples further ahead of `received_ms` than this are not evaluated
    /// (the store refuses them too): one would otherwise stand ahead of
    /// every real sample of its series until the clock catches up.
    pub future_tolerance_ms: i64,
}

/// A host's liveness, from the collector's registry.
#[derive(Debug, Clone)]
pub struct HostLiveness {
    pub host: String,
    /// Last time a batch of the host was stored (before its first, when
    /// it first connected); never a stream opening or closing. An open
    /// stream alone does not keep a host up: a hung agent keeps its
    /// connection but sends nothing.
    pub last_seen_ms: i64,
    /// The agent said goodbye before its stream closed (a planned stop).
    pub clean_shutdown: bool,
    /// The host was revoked: cut off on purpose, so its silence pages no
    /// one, and a host-down alert it had resolves.
    pub revoked: bool,
}

/// Whether a part of the collector's storage stores, for `not_storing` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageCondition {
    /// `store` (the series) or `state` (hosts, alert state, the outbox).
    pub storage: String,
    /// Why it does not store; `None` while it stores.
    pub refusal: Option<Refusal>,
}

/// Why a part of the collector's storage does not store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `read-only` (free space under the reserve) or `failed`.
    pub condition: String,
    pub cause: String,
}

/// Changes to apply after an evaluation step, in order.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) transitions: Vec<Transition>,
    pub(crate) ops: Vec<Op>,
    /// Alerts the dispatcher should look at again.
    pub(crate) dirty: Vec<u64>,
    /// (host, spool id, dropped batches) to remember.
    pub(crate) dropped: Vec<(String, u64, u64)>,
}

pub(crate) enum Op {
    Save(Alert),
    Remove(u64),
}

/// Where a tracker's denominator is: the series of the denominator metric
/// with the same labels, or else the one without labels.
struct DenKey {
    same_labels: u64,
    no_labels: u64,
}

/// One rule watching one series.
struct Tracker {
    rule: usize,
    /// The fingerprint of its alert's labels; the labels themselves are
    /// made again from the rule and the series when an alert is raised,
    /// as most trackers never raise one.
    fp: u64,
    denominator: Option<DenKey>,
    /// For aggregates over a window (`last` needs none); boxed, as most
    /// trackers have none and the per-host array of trackers stays small.
    window: Option<Box<Window>>,
    trend: Option<Box<Trend>>,
    machine: Machine,
    last_t: i64,
}

/// A series some rule watches, in a host's state: its hash and where its
/// trackers are.
#[derive(Clone, Copy)]
struct Watched {
    hash: u64,
    first: u32,
    count: u32,
}

/// A host's evaluation state, laid out for the per-batch walk: an agent
/// lists its series in the same order every time, so the watched series
/// and their trackers are kept in that order, contiguous, and the next one
/// expected is found without a map lookup. A series is recognized by a
/// 64-bit hash of its metric and labels.
#[derive(Default)]
struct HostState {
    watched: Vec<Watched>,
    /// Metric and sorted labels of each watched series (read on reloads only).
    names: Vec<(String, Vec<Label>)>,
    trackers: Vec<Tracker>,
    /// Newest value of each denominator series, by series hash (few: linear).
    denominators: Vec<(u64, f64)>,
    /// (received, newest sample time - received), newest last.
    skew: VecDeque<(i64, i64)>,
    skew_trackers: Vec<Tracker>,
    dropped: Vec<(u64, u64)>,
    /// Per host-down rule (by position): the firing alert.
    down: Vec<Option<u64>>,
}

/// What a metric is to the rules: watched by some, denominator of some.
#[derive(Default)]
struct MetricUse {
    rules: Vec<usize>,
    denominator: bool,
}

/// Metric names to numbers, looked up once per series of every batch, so
/// without hashing: by length, then the last 8 bytes, then the whole name.
#[derive(Default)]
struct MetricIndex {
    /// By name length: (last 8 bytes, number).
    by_len: Vec<Vec<(u64, u32)>>,
    names: Vec<String>,
}

/// The last (up to) 8 bytes of a name, as a number.
fn tail(name: &str) -> u64 {
    let bytes = name.as_bytes();
    match bytes
        .len()
        .checked_sub(8)
        .and_then(|start| bytes.get(start..))
    {
        Some(last) => last.iter().fold(0, |w, &b| (w << 8) | u64::from(b)),
        None => bytes.iter().fold(0, |w, &b| (w << 8) | u64::from(b)),
    }
}

impl MetricIndex {
    fn get(&self, name: &str) -> Option<u32> {
        let candidates = self.by_len.get(name.len())?;
        let t = tail(name);
        candidates
            .iter()
            .find(|(c, i)| *c == t && self.names[*i as usize] == name)
            .map(|(_, i)| *i)
    }

    /// Adds `name` (not present) as number `i`; returns `i`.
    fn insert(&mut self, name: &str, i: u32) -> u32 {
        if self.by_len.len() <= name.len() {
            self.by_len.resize_with(name.len() + 1, Vec::new);
        }
        self.by_len[name.len()].push((tail(name), i));
        if self.names.len() <= i as usize {
            self.names.resize(i as usize + 1, String::new());
        }
        self.names[i as usize] = name.to_owned();
        i
    }
}

/// Which rules react to what.
#[derive(Default)]
struct Index {
    /// Metric name -> its entry in `uses`.
    by_metric: MetricIndex,
    uses: Vec<MetricUse>,
    skew: Vec<usize>,
    host_down: Vec<usize>,
    not_storing: Vec<usize>,
    reboot: Vec<usize>,
    dropped: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl Index {
    fn use_of(&mut self, metric: &str) -> &mut MetricUse {
        let i = match self.by_metric.get(metric) {
            Some(i) => i,
            None => {
                self.uses.push(MetricUse::default());
                self.by_metric.insert(metric, self.uses.len() as u32 - 1)
            }
        };
        &mut self.uses[i as usize]
    }

    /// The rules watching `metric`.
    fn rules_of(&self, metric: &str) -> &[usize] {
        self.by_metric
            .get(metric)
            .map(|i| self.uses[i as usize].rules.as_slice())
            .unwrap_or(&[])
    }

    fn build(rules: &[Rule]) -> Index {
        let mut index = Index::default();
        for (i, rule) in rules.iter().enumerate() {
            index.by_name.insert(rule.name.clone(), i);
            match &rule.kind {
                Kind::Series(s) => match &s.source {
                    Source::Metric {
                        metric, divide_by, ..
                    } => {
                        index.use_of(metric).rules.push(i);
                        if let Some(d) = divide_by {
                            index.use_of(d).denominator = true;
                        }
                    }
                    Source::ClockSkew => index.skew.push(i),
                },
                Kind::HostDown { .. } => index.host_down.push(i),
                Kind::NotStoring => index.not_storing.push(i),
                Kind::Event {
                    event: EventKind::Reboot,
                    ..
                } => index.reboot.push(i),
                Kind::Event { .. } => index.dropped.push(i),
            }
        }
        index
    }
}

pub(crate) struct Evaluator {
    set: Arc<RuleSet>,
    index: Index,
    /// Reused per batch: (series position, metric use) of watched series.
    scratch: Vec<(u32, u32)>,
    /// Host id -> position in `states`.
    hosts: FxHashMap<String, u32>,
    states: Vec<HostState>,
    pub(crate) alerts: FxHashMap<u64, Alert>,
    /// When this evaluator started (the collector's start): host silence
    /// is counted from here at the earliest, as what hosts sent while the
    /// collector was down is unknown (plus the agents' longest backoff,
    /// a third of the timeout, for hosts not heard from since).
    started_ms: i64,
}

/// Everything an evaluation step needs besides the tracker.
struct Step<'a> {
    set: &'a RuleSet,
    alerts: &'a mut FxHashMap<u64, Alert>,
    effects: &'a mut Effects,
    now_ms: i64,
    host: &'a str,
    processes: &'a [ProcessSnapshot],
    snapshots: &'a SnapshotSource,
}

/// The position of `id`'s state, created if new (one hash when it exists).
fn host_index(hosts: &mut FxHashMap<String, u32>, states: &mut Vec<HostState>, id: &str) -> usize {
    if let Some(&i) = hosts.get(id) {
        return i as usize;
    }
    states.push(HostState::default());
    hosts.insert(id.to_owned(), states.len() as u32 - 1);
    states.len() - 1
}

/// The fingerprint of a label set: the first 8 bytes of SHA-256 over the
/// sorted labels, stable across restarts and versions.
pub(crate) fn fingerprint(labels: &BTreeMap<String, String>) -> u64 {
    let mut hasher = sha2::Sha256::new();
    for (k, v) in labels {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// An alert's labels: the series' labels, `host`, the rule's labels (which
/// win), and `alertname`.
fn alert_labels(rule: &Rule, host: &str, series: &[Label]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = series
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    labels.insert("host".to_owned(), host.to_owned());
    labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.insert("alertname".to_owned(), rule.name.clone());
    labels
}

impl Evaluator {
    pub(crate) fn new(set: Arc<RuleSet>, stored: Vec<Alert>, now_ms: i64) -> Self {
        let mut eval = Evaluator {
            index: Index::build(&set.rules),
            scratch: Vec::new(),
            set,
            hosts: FxHashMap::default(),
            states: Vec::new(),
            alerts: stored.into_iter().map(|a| (a.fp(), a)).collect(),
            started_ms: now_ms,
        };
        eval.bind_host_down();
        eval
    }

    pub(crate) fn set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Marks host-down alerts that fire (after a restart or reload) in their host's state.
    fn bind_host_down(&mut self) {
        let positions: HashMap<&str, usize> = self
            .index
            .host_down
            .iter()
            .enumerate()
            .map(|(pos, &i)| (self.set.rules[i].name.as_str(), pos))
            .collect();
        for host in &mut self.states {
            host.down = vec![None; positions.len()];
        }
        for alert in self.alerts.values() {
            let (Some(&pos), Some(host)) =
                (positions.get(alert.rule.as_str()), alert.labels.get("host"))
            else {
                continue;
            };
            if alert.phase() == Phase::Firing {
                let i = host_index(&mut self.hosts, &mut self.states, host);
                let state = &mut self.states[i];
                state.down.resize(positions.len(), None);
                state.down[pos] = Some(alert.fp());
            }
        }
    }

    /// A host's agent connected after its boot id changed.
    pub(crate) fn rebooted(
        &mut self,
        host: &str,
        (previous, current): (&str, &str),
        now_ms: i64,
        effects: &mut Effects,
    ) {
        for &i in &self.index.reboot.clone() {
            let extra = [
                ("previous_boot_id".to_owned(), previous.to_owned()),
                ("boot_id".to_owned(), current.to_owned()),
            ];
            self.event(i, host, now_ms, 1.0, &extra, effects);
        }
    }

    /// Fires (or, if firing, renews) an event alert of rule `i` for `host`.
    fn event(
        &mut self,
        i: usize,
        host: &str,
        now_ms: i64,
        value: f64,
        extra: &[(String, String)],
        effects: &mut Effects,
    ) {
        let rule = &self.set.rules[i];
        let labels = alert_labels(rule, host, &[]);
        let fp = fingerprint(&labels);
        let max_alerts = self.set.settings.max_alerts;
        let alerts_len = self.alerts.len();
        let alert = match self.alerts.get_mut(&fp) {
            Some(a) => a,
            None if alerts_len >= max_alerts => {
                tracing::error!(rule = %rule.name, host, max_alerts, "too many alerts (alerting.max_alerts); this one is not raised");
                return;
            }
            None => self
                .alerts
                .entry(fp)
                .or_insert_with(|| new_alert(rule, fp, labels)),
        };
        let firing = alert.phase() == Phase::Firing;
        alert.value = if firing { alert.value + value } else { value };
        alert.evaluated_ms = now_ms;
        let change = alert.machine.force_fire(now_ms);
        alert.annotations = render(rule, &alert.labels, Some(alert.value), None);
        alert.annotations.extend(extra.iter().cloned());
        match change {
            Some(change) => record(alert, change, now_ms, now_ms, effects),
            None => effects.ops.push(Op::Save(alert.clone())),
        }
    }

    /// Evaluates one batch of `host`: its watched series, then the clock
    /// skew and dropped data it tells of.
    pub(crate) fn observe(
        &mut self,
        batch: &Batch,
        ctx: BatchContext,
        now_ms: i64,
        snapshots: &SnapshotSource,
        persisted_dropped: impl FnOnce() -> Option<u64>,
        effects: &mut Effects,
    ) {
        let host_id = batch.host.as_str();
        let series = &batch.series[..];
        let mut watched = std::mem::take(&mut self.scratch);
        let dropped_event = {
            let Evaluator {
                set,
                index,
                hosts,
                states,
                alerts,
                ..
            } = self;
            let position = host_index(hosts, states, host_id);
            let host = &mut states[position];
            host.scan(index, series, &mut watched);
            let mut step = Step {
                set,
                alerts,
                effects,
                now_ms,
                host: host_id,
                processes: &batch.processes,
                snapshots,
            };
            let horizon = ctx.received_ms.saturating_add(ctx.future_tolerance_ms);
            host.feed(index, &mut step, series, &watched, horizon);
            if let Some(newest) = newest_sample(series, &watched) {
                host.observe_skew(index, &mut step, ctx.received_ms, newest);
            }
            host.observe_dropped(
                index,
                &mut step,
                batch.source,
                ctx.dropped_batches_total,
                persisted_dropped,
            )
        };
        self.scratch = watched;
        if let Some((increase, total)) = dropped_event {
            let extra = [("dropped_batches_total".to_owned(), total.to_string())];
            for i in self.index.dropped.clone() {
                self.event(i, host_id, now_ms, increase as f64, &extra, effects);
            }
        }
    }

    /// Raises or resolves host-down alerts from the registry's view at `now_ms`.
    pub(crate) fn check_hosts(
        &mut self,
        hosts: &[HostLiveness],
        now_ms: i64,
        effects: &mut Effects,
    ) {
        if self.index.host_down.is_empty() {
            return;
        }
        let rules = self.index.host_down.len();
        for h in hosts {
            let i = host_index(&mut self.hosts, &mut self.states, &h.host);
            let state = &mut self.states[i];
            state.down.resize(rules, None);
            for pos in 0..rules {
                let i = self.index.host_down[pos];
                let rule = &self.set.rules[i];
                let Kind::HostDown {
                    timeout_ms,
                    page_on_clean_shutdown,
                } = rule.kind
                else {
                    continue;
                };
                let silent_ms = now_ms - h.last_seen_ms;
                // Raising takes a silence this collector watched for the
                // whole timeout, so its own restart pages no host; a host
                // already down stays down until its data are fresh. A host
                // not heard from since the start is given a third of the
                // timeout more: its agent's longest reconnection backoff
                // (kept below a third of the collector's shortest host-down
                // timeout), so agents queued to reconnect are not paged.
                let watched_ms = if state.down[pos].is_some() {
                    silent_ms
                } else if h.last_seen_ms < self.started_ms {
                    now_ms - self.started_ms - timeout_ms / 3
                } else {
                    now_ms - h.last_seen_ms
                };
                let down = !h.revoked
                    && watched_ms > timeout_ms
                    && (page_on_clean_shutdown || !h.clean_shutdown);
                match (down, state.down[pos]) {
                    (true, None) => {
                        let labels = alert_labels(rule, &h.host, &[]);
                        let fp = fingerprint(&labels);
                        if self.alerts.len() >= self.set.settings.max_alerts
                            && !self.alerts.contains_key(&fp)
                        {
                            tracing::error!(rule = %rule.name, host.id = %h.host, "too many alerts (alerting.max_alerts); host down not raised");
                            continue;
                        }
                        let alert = self
                            .alerts
                            .entry(fp)
                            .or_insert_with(|| new_alert(rule, fp, labels));
                        alert.value = silent_ms as f64 / 1000.0;
                        alert.evaluated_ms = now_ms;
                        alert.annotations = render(rule, &alert.labels, Some(alert.value), None);
                        alert.annotations.insert(
                            "last_seen".to_owned(),
                            crate::format_rfc3339(h.last_seen_ms),
                        );
                        if let Some(change) = alert.machine.force_fire(now_ms) {
                            record(alert, change, now_ms, now_ms, effects);
                        }
                        state.down[pos] = Some(fp);
                    }
                    (false, Some(fp)) => {
                        state.down[pos] = None;
                        if let Some(alert) = self.alerts.get_mut(&fp) {
                            alert.evaluated_ms = now_ms;
                            if let Some(change) = alert.machine.force_resolve(now_ms) {
                                alert.announce_resolved_ms =
                                    Some(now_ms + rule.timing.flap_window_ms);
                                record(alert, change, now_ms, now_ms, effects);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Raises, updates or resolves the `not_storing` alerts of the
    /// collector `host` (labelled with the part's `storage`).
    pub(crate) fn check_storage(
        &mut self,
        host: &str,
        conditions: &[StorageCondition],
        now_ms: i64,
        effects: &mut Effects,
    ) {
        let set = self.set.clone();
        for &i in &self.index.not_storing {
            let rule = &set.rules[i];
            for c in conditions {
                let part = Label {
                    name: "storage".to_owned(),
                    value: c.storage.clone(),
                };
                let labels = alert_labels(rule, host, &[part]);
                let fp = fingerprint(&labels);
                let Some(refusal) = &c.refusal else {
                    if let Some(alert) = self.alerts.get_mut(&fp)
                        && let Some(change) = alert.machine.force_resolve(now_ms)
                    {
                        alert.evaluated_ms = now_ms;
                        alert.announce_resolved_ms = Some(now_ms + rule.timing.flap_window_ms);
                        record(alert, change, now_ms, now_ms, effects);
                    }
                    continue;
                };
                let told = [
                    ("condition".to_owned(), refusal.condition.clone()),
                    ("cause".to_owned(), refusal.cause.clone()),
                ];
                let mut shown = labels.clone();
                shown.extend(told.iter().cloned());
                let mut annotations = render(rule, &shown, None, None);
                annotations.extend(told);
                if self.alerts.len() >= set.settings.max_alerts && !self.alerts.contains_key(&fp) {
                    tracing::error!(rule = %rule.name, "too many alerts (alerting.max_alerts); not-storing alert not raised");
                    continue;
                }
                let alert = self
                    .alerts
                    .entry(fp)
                    .or_insert_with(|| new_alert(rule, fp, labels));
                // Fresh while it lasts, so a hook added meanwhile is told.
                alert.evaluated_ms = now_ms;
                let firing = alert.phase() == Phase::Firing;
                if firing && alert.annotations == annotations {
                    continue;
                }
                alert.annotations = annotations;
                match alert.machine.force_fire(now_ms) {
                    Some(change) => record(alert, change, now_ms, now_ms, effects),
                    None => effects.ops.push(Op::Save(alert.clone())),
                }
            }
        }
    }

    /// Time-driven changes: event alerts expire; resolved alerts no hook
    /// still needs are forgotten once `keep_ms` past their announcement.
    pub(crate) fn tick(
        &mut self,
        now_ms: i64,
        keep_ms: i64,
        needed: impl Fn(u64) -> bool,
        effects: &mut Effects,
    ) {
        let mut forget = Vec::new();
        for (fp, alert) in &mut self.alerts {
            let Some(&i) = self.index.by_name.get(&alert.rule) else {
                continue;
            };
            let rule = &self.set.rules[i];
            if let Kind::Event {
                resolve_after_ms, ..
            } = rule.kind
                && alert.phase() == Phase::Firing
                && now_ms - alert.evaluated_ms >= resolve_after_ms
                && let Some(change) = alert.machine.force_resolve(now_ms)
            {
                alert.announce_resolved_ms = Some(now_ms + rule.timing.flap_window_ms);
                record(alert, change, now_ms, now_ms, effects);
            }
            if alert.phase() == Phase::Resolved
                && alert
                    .announce_resolved_ms
                    .is_some_and(|t| now_ms - t >= keep_ms)
                && !needed(*fp)
            {
                forget.push(*fp);
            }
        }
        for fp in forget {
            self.alerts.remove(&fp);
            effects.ops.push(Op::Remove(fp));
        }
    }

    /// Switches to a new rule set. Trackers of rules that did not change
    /// keep their windows; alerts of rules that are gone, or whose labels
    /// changed (so their fingerprints did), are resolved.
    pub(crate) fn reload(&mut self, set: Arc<RuleSet>, now_ms: i64, effects: &mut Effects) {
        let index = Index::build(&set.rules);
        let same: HashMap<usize, usize> = self
            .set
            .rules
            .iter()
            .enumerate()
            .filter_map(|(old, rule)| {
                let new = *index.by_name.get(&rule.name)?;
                (set.rules[new].source == rule.source).then_some((old, new))
            })
            .collect();
        for (host_id, &i) in &self.hosts {
            let host = &mut self.states[i as usize];
            let mut old = std::mem::take(&mut host.trackers).into_iter();
            let watched = std::mem::take(&mut host.watched);
            let names = std::mem::take(&mut host.names);
            for (w, (metric, labels)) in watched.into_iter().zip(names) {
                let mut reuse: Vec<Tracker> = old
                    .by_ref()
                    .take(w.count as usize)
                    .filter_map(|mut t| {
                        t.rule = *same.get(&t.rule)?;
                        Some(t)
                    })
                    .collect();
                let ids = index.rules_of(&metric);
                if ids.is_empty() {
                    continue;
                }
                let trackers =
                    build_trackers(&set, ids, host_id, &labels, &mut self.alerts, &mut reuse);
                host.watched.push(Watched {
                    hash: w.hash,
                    first: host.trackers.len() as u32,
                    count: trackers.len() as u32,
                });
                host.trackers.extend(trackers);
                host.names.push((metric, labels));
            }
            host.skew_trackers.clear();
        }
        let old_labels: HashMap<String, BTreeMap<String, String>> = self
            .set
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.labels.clone()))
            .collect();
        self.set = set;
        self.index = index;
        self.resolve_orphans(
            now_ms,
            |rule, new| old_labels.get(rule).is_none_or(|old| old == new),
            effects,
        );
        self.bind_host_down();
    }

    /// Resolves alerts whose rule is gone, or whose labels changed
    /// (`keep(rule, new labels)` false): nothing would evaluate them again.
    pub(crate) fn resolve_orphans(
        &mut self,
        now_ms: i64,
        keep: impl Fn(&str, &BTreeMap<String, String>) -> bool,
        effects: &mut Effects,
    ) {
        for alert in self.alerts.values_mut() {
            let keeps = self
                .index
                .by_name
                .get(&alert.rule)
                .is_some_and(|&i| keep(&alert.rule, &self.set.rules[i].labels));
            if !keeps && let Some(change) = alert.machine.force_resolve(now_ms) {
                alert.announce_resolved_ms = Some(now_ms);
                alert.annotations.insert(
                    "resolved_by".to_owned(),
                    "its rule was removed or relabelled".to_owned(),
                );
                record(alert, change, now_ms, now_ms, effects);
            }
        }
    }
}

/// The batch's newest sample time, for the clock skew: from the watched
/// series (all series of a tick share its time), else from all.
fn newest_sample(series: &[SeriesInput], watched: &[(u32, u32)]) -> Option<i64> {
    let newest_of = |s: &SeriesInput| s.points.iter().map(|p| p.t_ms).max();
    if watched.is_empty() {
        series.iter().filter_map(newest_of).max()
    } else {
        watched
            .iter()
            .filter_map(|&(i, _)| newest_of(&series[i as usize]))
            .max()
    }
}

/// `value` divided by the newest value of the tracker's denominator, if it
/// has one; `None` while that is unknown or zero.
fn over_denominator(denominators: &[(u64, f64)], tracker: &Tracker, value: f64) -> Option<f64> {
    let Some(key) = &tracker.denominator else {
        return Some(value);
    };
    let d = denominators
        .iter()
        .find(|(k, _)| *k == key.same_labels)
        .or_else(|| denominators.iter().find(|(k, _)| *k == key.no_labels));
    match d {
        Some(&(_, d)) if d != 0.0 => Some(value / d),
        _ => None,
    }
}

impl HostState {
    /// Keeps the newest value of every denominator in `series`, and lists
    /// in `watched` the series some rule watches (position, metric number).
    /// One lookup per series (most metrics no rule watches); denominators
    /// first, as a batch may list them after their ratios.
    fn scan(&mut self, index: &Index, series: &[SeriesInput], watched: &mut Vec<(u32, u32)>) {
        watched.clear();
        for (i, s) in series.iter().enumerate() {
            let Some(u) = index.by_metric.get(&s.metric) else {
                continue;
            };
            let used = &index.uses[u as usize];
            if used.denominator
                && let Some(p) = s.points.iter().rev().find(|p| p.value.is_finite())
            {
                let key = series_hash(&s.metric, &s.labels);
                match self.denominators.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 = p.value,
                    None => self.denominators.push((key, p.value)),
                }
            }
            if !used.rules.is_empty() {
                watched.push((i as u32, u));
            }
        }
    }

    /// Steps the trackers of every watched series through its points up to
    /// `horizon` (later ones are from a clock ahead of ours).
    fn feed(
        &mut self,
        index: &Index,
        step: &mut Step<'_>,
        series: &[SeriesInput],
        watched: &[(u32, u32)],
        horizon: i64,
    ) {
        let mut cursor = 0;
        for &(i, u) in watched {
            let s = &series[i as usize];
            let pos = self.watched_position(index, step, s, u, cursor);
            cursor = pos + 1;
            let w = self.watched[pos];
            let labels = &self.names[pos].1;
            let trackers = &mut self.trackers[w.first as usize..(w.first + w.count) as usize];
            for point in &s.points {
                if !point.value.is_finite() || point.t_ms > horizon {
                    continue;
                }
                for tracker in trackers.iter_mut() {
                    if point.t_ms <= tracker.last_t {
                        continue;
                    }
                    if let Some(value) = over_denominator(&self.denominators, tracker, point.value)
                    {
                        step.point(tracker, labels, point.t_ms, value);
                    }
                }
            }
        }
    }

    /// Where series `s` (metric number `u`) is in `watched`, its trackers
    /// built if it is new; tried first at `cursor`, as an agent lists its
    /// series in the same order every time.
    fn watched_position(
        &mut self,
        index: &Index,
        step: &mut Step<'_>,
        s: &SeriesInput,
        u: u32,
        cursor: usize,
    ) -> usize {
        let hash = series_hash(&s.metric, &s.labels);
        if self.watched.get(cursor).is_some_and(|w| w.hash == hash) {
            return cursor;
        }
        if let Some(pos) = self.watched.iter().position(|w| w.hash == hash) {
            return pos;
        }
        let mut labels = s.labels.clone();
        labels.sort();
        let trackers = build_trackers(
            step.set,
            &index.uses[u as usize].rules,
            step.host,
            &labels,
            step.alerts,
            &mut Vec::new(),
        );
        self.watched.push(Watched {
            hash,
            first: self.trackers.len() as u32,
            count: trackers.len() as u32,
        });
        self.trackers.extend(trackers);
        self.names.push((s.metric.clone(), labels));
        self.watched.len() - 1
    }

    /// Clock skew: the freshest batch of the last two minutes tells the
    /// difference best; a backlog's old samples never come out ahead.
    fn observe_skew(&mut self, index: &Index, step: &mut Step<'_>, received_ms: i64, newest: i64) {
        if index.skew.is_empty() {
            return;
        }
        self.skew.push_back((received_ms, newest - received_ms));
        while self.skew.len() > SKEW_SAMPLES
            || self
                .skew
                .front()
                .is_some_and(|(r, _)| *r < received_ms - SKEW_WINDOW_MS)
        {
            self.skew.pop_front();
        }
        let offset = self.skew.iter().map(|s| s.1).max().unwrap_or(0);
        if self.skew_trackers.len() != index.skew.len() {
            self.skew_trackers = index
                .skew
                .iter()
                .map(|&i| new_tracker(step.set, i, step.host, &[], None, step.alerts))
                .collect();
        }
        for tracker in &mut self.skew_trackers {
            if received_ms > tracker.last_t {
                step.point(tracker, &[], received_ms, (offset as f64 / 1000.0).abs());
            }
        }
    }

    /// Dropped batches: the agent's running count per spool (`source`), now
    /// `total`. Returns the increase and the total if the count grew.
    fn observe_dropped(
        &mut self,
        index: &Index,
        step: &mut Step<'_>,
        source: u64,
        total: u64,
        persisted_dropped: impl FnOnce() -> Option<u64>,
    ) -> Option<(u64, u64)> {
        if index.dropped.is_empty() {
            return None;
        }
        let known = self.dropped.iter().position(|(s, _)| *s == source);
        let previous = match known {
            Some(k) => Some(self.dropped[k].1),
            None => persisted_dropped(),
        };
        match known {
            Some(k) => self.dropped[k].1 = total,
            None => self.dropped.push((source, total)),
        }
        let increase = match previous {
            Some(p) if total > p => total - p,
            None if total > 0 => total,
            _ => 0,
        };
        if previous != Some(total) {
            step.effects
                .dropped
                .push((step.host.to_owned(), source, total));
        }
        (increase > 0).then_some((increase, total))
    }
}

fn new_alert(rule: &Rule, fp: u64, labels: BTreeMap<String, String>) -> Alert {
    Alert {
        fingerprint: format!("{fp:016x}"),
        rule: rule.name.clone(),
        labels,
        annotations: BTreeMap::new(),
        machine: Machine::default(),
        value: 0.0,
        evaluated_ms: 0,
        changed_ms: 0,
        announce_resolved_ms: None,
    }
}

/// Records a phase change of `alert` at evaluation time `at_ms`.
fn record(alert: &mut Alert, change: Change, at_ms: i64, now_ms: i64, effects: &mut Effects) {
    alert.changed_ms = now_ms;
    if change.to == Phase::Firing {
        alert.announce_resolved_ms = None;
    }
    effects.transitions.push(Transition {
        id: 0,
        fingerprint: alert.fingerprint.clone(),
        rule: alert.rule.clone(),
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
        from: change.from,
        to: change.to,
        at_ms,
        recorded_ms: now_ms,
        value: alert.value,
        flapping: change.flapping,
    });
    effects.ops.push(if change.to == Phase::Inactive {
        Op::Remove(alert.fp())
    } else {
        Op::Save(alert.clone())
    });
    effects.dirty.push(alert.fp());
}

/// The rule's annotation templates, rendered.
fn render(
    rule: &Rule,
    labels: &BTreeMap<String, String>,
    value: Option<f64>,
    series: Option<&SeriesRule>,
) -> BTreeMap<String, String> {
    let (threshold, clear, window_s, horizon_s, limit) = match series {
        Some(s) => match s.eval {
            Eval::Window { span_ms, .. } => (
                Some(s.raise),
                Some(s.clear),
                Some(span_ms as f64 / 1000.0),
                None,
                None,
            ),
            Eval::Predict { span_ms, limit } => (
                Some(s.raise),
                Some(s.clear),
                Some(span_ms as f64 / 1000.0),
                Some(s.raise),
                Some(limit),
            ),
        },
        None => (None, None, None, None, None),
    };
    let ctx = Context {
        labels: Some(labels),
        rule: &rule.name,
        value,
        threshold,
        clear,
        for_s: Some(rule.timing.for_ms as f64 / 1000.0),
        window_s,
        horizon_s,
        limit,
        ..Context::default()
    };
    rule.annotations
        .iter()
        .map(|(k, t)| (k.clone(), t.render(&ctx)))
        .collect()
}

fn new_tracker(
    set: &RuleSet,
    i: usize,
    host: &str,
    labels: &[Label],
    denominator: Option<DenKey>,
    alerts: &FxHashMap<u64, Alert>,
) -> Tracker {
    let rule = &set.rules[i];
    let alert_labels = alert_labels(rule, host, labels);
    let fp = fingerprint(&alert_labels);
    let (window, trend) = match &rule.kind {
        Kind::Series(s) => match s.eval {
            Eval::Window { aggregate, span_ms } => (
                (aggregate != Aggregate::Last).then(|| Box::new(Window::new(aggregate, span_ms))),
                s.trend_ms.map(|ms| Box::new(Trend::new(ms))),
            ),
            Eval::Predict { span_ms, .. } => (None, Some(Box::new(Trend::new(span_ms)))),
        },
        _ => (None, None),
    };
    // After a restart or reload, the alert's state carries on.
    let (machine, last_t) = match alerts.get(&fp) {
        Some(a) => (a.machine, a.evaluated_ms),
        None => (Machine::default(), i64::MIN),
    };
    Tracker {
        rule: i,
        fp,
        denominator,
        window,
        trend,
        machine,
        last_t,
    }
}

/// Trackers for a series with `labels` (sorted) on `host`:
/// one per rule among `rule_ids` whose matchers accept it, reusing those
/// in `reuse` (already mapped to the new rule indices).
fn build_trackers(
    set: &RuleSet,
    rule_ids: &[usize],
    host: &str,
    labels: &[Label],
    alerts: &mut FxHashMap<u64, Alert>,
    reuse: &mut Vec<Tracker>,
) -> Vec<Tracker> {
    let mut out = Vec::new();
    for &i in rule_ids {
        let Kind::Series(SeriesRule {
            source:
                Source::Metric {
                    matchers,
                    divide_by,
                    ..
                },
            ..
        }) = &set.rules[i].kind
        else {
            continue;
        };
        let get = |name: &str| {
            if name == "host" {
                Some(host)
            } else {
                labels
                    .iter()
                    .find(|l| l.name == name)
                    .map(|l| l.value.as_str())
            }
        };
        if !matchers.iter().all(|m| m.matches(get)) {
            continue;
        }
        if let Some(pos) = reuse.iter().position(|t| t.rule == i) {
            let tracker = reuse.swap_remove(pos);
            // A rule whose labels changed makes other alerts: its tracker
            // starts again.
            if tracker.fp == fingerprint(&alert_labels(&set.rules[i], host, labels)) {
                out.push(tracker);
                continue;
            }
        }
        let denominator = divide_by.as_ref().map(|d| DenKey {
            same_labels: series_hash(d, labels),
            no_labels: series_hash(d, &[]),
        });
        out.push(new_tracker(set, i, host, labels, denominator, alerts));
    }
    out
}

impl Step<'_> {
    /// Feeds one value at `t_ms` to `tracker` and steps its alert.
    /// `labels` are the series' (sorted), none for the clock skew.
    fn point(&mut self, tracker: &mut Tracker, labels: &[Label], t_ms: i64, value: f64) {
        tracker.last_t = t_ms;
        let rule = &self.set.rules[tracker.rule];
        let Kind::Series(sr) = &rule.kind else {
            return;
        };
        let figure = match sr.eval {
            Eval::Window { .. } => {
                if let Some(trend) = tracker.trend.as_mut() {
                    trend.push(t_ms, value);
                }
                match tracker.window.as_mut() {
                    Some(w) => w.push(t_ms, value),
                    None => Some(value),
                }
            }
            Eval::Predict { limit, .. } => tracker.trend.as_mut().and_then(|trend| {
                trend.push(t_ms, value);
                trend.predict().map(|p| p.seconds_to(limit))
            }),
        };
        // Not enough data yet: no verdict, the alert stays as it is.
        let Some(figure) = figure else {
            return;
        };
        let cond = if sr.op.holds(figure, sr.raise) {
            Cond::Raise
        } else if sr.op.holds(figure, sr.clear) {
            Cond::Hold
        } else {
            Cond::Clear
        };
        let change = tracker.machine.step(t_ms, cond, &rule.timing);
        // The common case: nothing going on, no alert to look up.
        if change.is_none() && tracker.machine.phase == Phase::Inactive {
            return;
        }
        let stale_after = self.set.settings.stale_after_ms;
        let alerts_len = self.alerts.len();
        let alert = match self.alerts.get_mut(&tracker.fp) {
            Some(a) => {
                // A firing alert seen fresh again after stale data: the
                // dispatcher may now page it.
                if a.phase() == Phase::Firing
                    && self.now_ms - a.evaluated_ms > stale_after
                    && self.now_ms - t_ms <= stale_after
                {
                    self.effects.dirty.push(tracker.fp);
                }
                a
            }
            None => {
                if change.is_none_or(|c| c.to == Phase::Inactive) {
                    return;
                }
                if alerts_len >= self.set.settings.max_alerts {
                    tracing::error!(rule = %rule.name, host.id = self.host, max_alerts = self.set.settings.max_alerts, "too many alerts (alerting.max_alerts); this one is not raised");
                    tracker.machine = Machine::default();
                    return;
                }
                self.alerts.entry(tracker.fp).or_insert_with(|| {
                    new_alert(rule, tracker.fp, alert_labels(rule, self.host, labels))
                })
            }
        };
        alert.value = figure;
        alert.evaluated_ms = t_ms;
        alert.machine = tracker.machine;
        let Some(change) = change else {
            return;
        };
        alert.annotations = render(rule, &alert.labels, Some(figure), Some(sr));
        if change.to == Phase::Firing || change.to == Phase::Pending {
            let cause = cause_annotations(
                sr,
                tracker,
                labels,
                self.host,
                t_ms,
                self.processes,
                self.snapshots,
            );
            alert.annotations.extend(cause);
        }
        if change.to == Phase::Resolved {
            alert.announce_resolved_ms = Some(self.now_ms + rule.timing.flap_window_ms);
        }
        record(alert, change, t_ms, self.now_ms, self.effects);
    }
}

/// The cause of a bottleneck: top processes for CPU and memory, the mount
/// and time to full for disks.
fn cause_annotations(
    sr: &SeriesRule,
    tracker: &Tracker,
    labels: &[Label],
    host: &str,
    t_ms: i64,
    processes: &[ProcessSnapshot],
    snapshots: &SnapshotSource,
) -> Vec<(String, String)> {
    match sr.cause {
        Cause::None => Vec::new(),
        Cause::Cpu | Cause::Memory => {
            let nearest = processes
                .iter()
                .min_by_key(|s| (s.t_ms - t_ms).abs())
                .cloned();
            let Some(snapshot) = nearest.or_else(|| snapshots(host, t_ms)) else {
                return vec![(
                    "cause".to_owned(),
                    "no process snapshot near the trigger".to_owned(),
                )];
            };
            let mut procs: Vec<&ProcessInfo> = snapshot.processes.iter().collect();
            if sr.cause == Cause::Cpu {
                procs.sort_by(|a, b| b.cpu_cores.total_cmp(&a.cpu_cores));
            } else {
                procs.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes));
            }
            procs.truncate(TOP_PROCESSES);
            let describe = |p: &ProcessInfo| {
                format!(
                    "{} (pid {}, user {}, cpu {}%, rss {})",
                    p.name,
                    p.pid,
                    p.user,
                    format_number(p.cpu_cores * 100.0, 0),
                    format_bytes(p.rss_bytes as f64)
                )
            };
            let list: Vec<String> = procs.iter().map(|p| describe(p)).collect();
            let mut out = vec![
                ("top_processes".to_owned(), list.join("; ")),
                (
                    "processes_at".to_owned(),
                    crate::format_rfc3339(snapshot.t_ms),
                ),
            ];
            if let Some(top) = procs.first() {
                out.push(("cause".to_owned(), describe(top)));
            }
            out
        }
        Cause::Disk => {
            let mut out = Vec::new();
            if let Some(m) = labels.iter().find(|l| l.name == "mountpoint") {
                out.push(("mountpoint".to_owned(), m.value.clone()));
            }
            let seconds = match sr.eval {
                Eval::Predict { limit, .. } => tracker
                    .trend
                    .as_ref()
                    .and_then(|t| t.predict())
                    .map(|p| p.seconds_to(limit)),
                // Ratio rules (free / size): full at 0.
                Eval::Window { .. } => tracker
                    .trend
                    .as_ref()
                    .and_then(|t| t.predict())
                    .map(|p| p.seconds_to(0.0)),
            };
            match seconds {
                Some(s) if s.is_finite() => {
                    out.push(("time_to_full".to_owned(), format_duration(s)));
                    out.push((
                        "predicted_full_at".to_owned(),
                        crate::format_rfc3339(t_ms + (s * 1000.0) as i64),
                    ));
                }
                Some(_) => out.push(("time_to_full".to_owned(), "not filling".to_owned())),
                None => out.push((
                    "time_to_full".to_owned(),
                    "unknown (trend still building)".to_owned(),
                )),
            }
            out
        }
    }
}
