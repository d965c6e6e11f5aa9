//! hostwatch's alerting: rules evaluated incrementally on ingest, alert
//! state persisted in the collector's sled database, and notifications
//! delivered at least once through a durable outbox to webhooks, an
//! Alertmanager, commands, PagerDuty, Opsgenie or Slack.
//!
//! Layout:
//! - `config`: the `[alerting]` section (settings, rules as written with a
//!   type per kind, their validation into a [`RuleSet`]) and its errors;
//!   `default_rules.toml`, the shipped rules;
//! - `matcher`, `template`: label matchers and annotation templates;
//! - `window`: sliding windows and linear trends, one point at a time;
//! - `machine`: an alert's states (pending, firing, resolved), hysteresis,
//!   `for`, `keep_firing_for`, flap damping;
//! - `eval`: the evaluator (per host and series, no store scans), events,
//!   host down, causes;
//! - `engine`: [`Alerting`], the collector's handle; `persist`: sled trees;
//! - `dispatch`: grouping, silences, repeats, the outbox; `deliver`: one
//!   worker per hook with retries; `hooks`: webhook, Alertmanager, exec,
//!   PagerDuty, Opsgenie, Slack, e-mail, each with its configuration;
//! - `quiet`: named time intervals (quiet windows) and a hook's schedule
//!   of them;
//! - `clock`: wall-clock time on tokio's (pausable) clock.
//!
//! This crate sees neither protobuf nor tonic; the collector converts at its edge.

mod clock;
pub mod config;
mod deliver;
mod dispatch;
mod engine;
mod eval;
pub mod hooks;
mod machine;
pub mod matcher;
mod model;
mod persist;
pub mod quiet;
pub mod template;
mod window;

pub use clock::Clock;
pub use config::{AlertingConfig, ConfigError, RuleSet};
pub use engine::{Alerting, MAX_SILENCE_MS};
pub use eval::{BatchContext, HostLiveness, Refusal, SnapshotSource, StorageCondition};
pub use machine::Phase;
pub use model::{Alert, DeliveryStats, HistoryFilter, NewSilence, Silence, Transition};
pub use window::Aggregate;

/// Errors of the alerting engine.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// The caller's input is unusable; the message says why.
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored alert state does not decode.
    #[error("corrupt alert state: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// The collector's database cannot be written (a write failed; it is
    /// reopened once writes can succeed) or is being reopened. Not logged
    /// where it happens: the collector logs the failure once.
    #[error("alert state unavailable: {0}")]
    StateUnavailable(String),
}

/// RFC 3339 UTC time of a millisecond timestamp.
pub fn format_rfc3339(t_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t_ms.to_string())
}
