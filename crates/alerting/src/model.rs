//! What the alerting API hands out: alerts, transitions, silences.

use crate::machine::{Machine, Phase};
use crate::matcher::LabelMatcher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One alert: a rule's verdict on one host (and label set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// 16 hex digits of a hash of the labels (which include `alertname`).
    pub fingerprint: String,
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub machine: Machine,
    /// The compared figure at the newest evaluation.
    #[serde(with = "finite_or_text")]
    pub value: f64,
    /// Time of the newest evaluation: sample time for series rules.
    pub evaluated_ms: i64,
    /// Collector time of the last phase change.
    pub changed_ms: i64,
    /// Collector time from which a resolution may be announced (the flap
    /// window after it resolved).
    pub announce_resolved_ms: Option<i64>,
}

impl Alert {
    pub fn phase(&self) -> Phase {
        self.machine.phase
    }

    /// The fingerprint as a number (its hex form is what people see).
    pub(crate) fn fp(&self) -> u64 {
        u64::from_str_radix(&self.fingerprint, 16).unwrap_or(0)
    }
}

/// A change of an alert's phase, as recorded in the history and streamed to watchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Position in the history (increasing).
    pub id: u64,
    pub fingerprint: String,
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub from: Phase,
    pub to: Phase,
    /// Time of the evaluation that changed it (sample time for series rules).
    pub at_ms: i64,
    /// Collector time when it was recorded.
    pub recorded_ms: i64,
    #[serde(with = "finite_or_text")]
    pub value: f64,
    /// Fired again within the flap window: the same alert continues.
    pub flapping: bool,
}

/// A silence: alerts matching every matcher are not notified between start and end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    /// As written: `name=value`, `name!=value`, `name=~re`, `name!~re`.
    pub matchers: Vec<String>,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub created_ms: i64,
}

impl Silence {
    /// Whether it mutes at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.starts_ms <= now_ms && now_ms < self.ends_ms
    }

    /// Its matchers, parsed (they were validated when it was created).
    pub(crate) fn parsed(&self) -> Vec<LabelMatcher> {
        self.matchers
            .iter()
            .filter_map(|m| LabelMatcher::parse(m).ok())
            .collect()
    }
}

/// A silence to create.
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub matchers: Vec<String>,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub created_by: String,
    pub comment: String,
}

/// Which transitions [`crate::Alerting::history`] returns.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only transitions recorded at or after this collector time.
    pub since_ms: i64,
    /// Only alerts of this host (all if empty).
    pub host: String,
    /// Only this rule (all if empty).
    pub rule: String,
    /// Only transitions into this phase (all if `None`).
    pub to: Option<Phase>,
    /// At most this many, the newest.
    pub limit: usize,
}

/// Counters of one hook's deliveries since the collector started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub delivered: u64,
    /// Attempts that will be retried.
    pub retried: u64,
    /// Notifications given up: a permanent failure, or retried for too long.
    pub failed: u64,
    /// Oldest notifications dropped because the hook's queue was full.
    pub dropped: u64,
    /// When the hook's oldest notification is next attempted (ms since
    /// the Unix epoch, the engine's clock) while it waits to be retried:
    /// after its backoff, or the receiver's `Retry-After` if later.
    pub next_attempt_ms: Option<i64>,
}

/// Non-finite floats as JSON text ("+Inf", "NaN"), which JSON numbers cannot hold.
mod finite_or_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&crate::template::format_number(*v, 0))
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(f64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(match Either::deserialize(d)? {
            Either::Number(n) => n,
            Either::Text(t) => match t.as_str() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                _ => f64::NAN,
            },
        })
    }
}
