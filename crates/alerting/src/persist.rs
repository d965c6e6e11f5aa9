//! Alert state in sled trees of the collector's database, so a restart
//! neither forgets an alert nor pages it again.
//!
//! Trees (values JSON, so records written by an older version still load):
//! - `alerts`: fingerprint (u64 BE) -> [`Alert`] (pending, firing, recently resolved);
//! - `alert_history`: id (u64 BE, increasing) -> [`Transition`];
//! - `alert_notified`: hook, NUL, fingerprint -> [`Notified`]: what each
//!   hook was last told about an alert;
//! - `alert_outbox`: hook, NUL, id (u64 BE) -> [`OutboxEntry`]: notifications
//!   not yet delivered, oldest first;
//! - `silences`: id -> [`Silence`];
//! - `alert_meta`: `dropped`, NUL, host, NUL, spool id -> dropped batches
//!   last seen (u64 BE).
//!
//! A group flush writes its outbox entry and the notified records in one
//! transaction, so after a crash either both exist or neither.

use crate::AlertingError;
use crate::hooks::Notification;
use crate::machine::Phase;
use crate::model::{Alert, HistoryFilter, Silence, Transition};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a hook was last told about one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Notified {
    pub(crate) status: Phase,
    pub(crate) sent_ms: i64,
}

/// A notification waiting for delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutboxEntry {
    pub(crate) id: u64,
    pub(crate) hook: String,
    /// Sent with every attempt, so receivers can drop duplicates.
    pub(crate) key: String,
    pub(crate) created_ms: i64,
    pub(crate) notification: Notification,
}

pub(crate) struct Persist {
    db: sled::Db,
    alerts: sled::Tree,
    history: sled::Tree,
    notified: sled::Tree,
    outbox: sled::Tree,
    silences: sled::Tree,
    meta: sled::Tree,
    history_len: AtomicUsize,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> AlertingError {
    AlertingError::Corrupt(format!("{what}: {e}"))
}

fn hook_key(hook: &str, id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(hook.len() + 9);
    key.extend_from_slice(hook.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn hook_prefix(hook: &str) -> Vec<u8> {
    let mut key = hook.as_bytes().to_vec();
    key.push(0);
    key
}

fn split_hook_key(key: &[u8]) -> Option<(String, u64)> {
    let (hook, id) = key.split_at(key.len().checked_sub(9)?);
    if id[0] != 0 {
        return None;
    }
    let id = u64::from_be_bytes(id[1..].try_into().ok()?);
    Some((String::from_utf8(hook.to_vec()).ok()?, id))
}

impl Persist {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, AlertingError> {
        let history = db.open_tree("alert_history")?;
        let history_len = history.len();
        Ok(Persist {
            db: db.clone(),
            alerts: db.open_tree("alerts")?,
            history,
            notified: db.open_tree("alert_notified")?,
            outbox: db.open_tree("alert_outbox")?,
            silences: db.open_tree("silences")?,
            meta: db.open_tree("alert_meta")?,
            history_len: AtomicUsize::new(history_len),
        })
    }

    /// Every stored alert; undecodable records are skipped and logged.
    pub(crate) fn load_alerts(&self) -> Result<Vec<Alert>, AlertingError> {
        let mut out = Vec::new();
        for entry in self.alerts.iter() {
            let (key, value) = entry?;
            match serde_json::from_slice(&value) {
                Ok(alert) => out.push(alert),
                Err(e) => {
                    tracing::warn!(key = ?key, error = %e, "skipping undecodable alert record")
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn save_alert(&self, alert: &Alert) -> Result<(), AlertingError> {
        let value = serde_json::to_vec(alert).map_err(|e| corrupt("alert", e))?;
        self.alerts.insert(alert.fp().to_be_bytes(), value)?;
        Ok(())
    }

    pub(crate) fn remove_alert(&self, fp: u64) -> Result<(), AlertingError> {
        self.alerts.remove(fp.to_be_bytes())?;
        Ok(())
    }

    /// Appends `t` (giving it its id) and drops the oldest beyond `limit`.
    pub(crate) fn append_history(
        &self,
        t: &mut Transition,
        limit: usize,
    ) -> Result<(), AlertingError> {
        t.id = self.db.generate_id()?;
        let value = serde_json::to_vec(t).map_err(|e| corrupt("transition", e))?;
        self.history.insert(t.id.to_be_bytes(), value)?;
        let len = self.history_len.fetch_add(1, Ordering::Relaxed) + 1;
        if len > limit {
            let mut removed = 0;
            for key in self.history.iter().keys().take(len - limit) {
                self.history.remove(key?)?;
                removed += 1;
            }
            self.history_len.fetch_sub(removed, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Transitions matching `filter`, oldest first.
    pub(crate) fn history(&self, filter: &HistoryFilter) -> Result<Vec<Transition>, AlertingError> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        for entry in self.history.iter().rev() {
            let (_, value) = entry?;
            let Ok(t) = serde_json::from_slice::<Transition>(&value) else {
                continue;
            };
            if t.recorded_ms < filter.since_ms {
                break;
            }
            let host_ok = filter.host.is_empty() || t.labels.get("host") == Some(&filter.host);
            let rule_ok = filter.rule.is_empty() || t.rule == filter.rule;
            if host_ok && rule_ok {
                out.push(t);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    pub(crate) fn load_notified(&self) -> Result<Vec<(String, u64, Notified)>, AlertingError> {
        let mut out = Vec::new();
        for entry in self.notified.iter() {
            let (key, value) = entry?;
            let (Some((hook, fp)), Ok(n)) = (split_hook_key(&key), serde_json::from_slice(&value))
            else {
                tracing::warn!(key = ?key, "skipping undecodable notified record");
                continue;
            };
            out.push((hook, fp, n));
        }
        Ok(out)
    }

    pub(crate) fn remove_notified(&self, hook: &str, fp: u64) -> Result<(), AlertingError> {
        self.notified.remove(hook_key(hook, fp))?;
        Ok(())
    }

    /// Writes a notification into the outbox together with what the hook
    /// now knows about each alert (`None`: forget), atomically, then flushes.
    pub(crate) async fn enqueue(
        &self,
        entry: &OutboxEntry,
        notified: &[(u64, Option<Notified>)],
    ) -> Result<(), AlertingError> {
        let value = serde_json::to_vec(entry).map_err(|e| corrupt("outbox entry", e))?;
        let mut records = Vec::with_capacity(notified.len());
        for (fp, n) in notified {
            let v = match n {
                Some(n) => Some(serde_json::to_vec(n).map_err(|e| corrupt("notified", e))?),
                None => None,
            };
            records.push((hook_key(&entry.hook, *fp), v));
        }
        let outbox_key = hook_key(&entry.hook, entry.id);
        (&self.outbox, &self.notified)
            .transaction(|(outbox, notified)| {
                outbox.insert(outbox_key.as_slice(), value.as_slice())?;
                for (key, v) in &records {
                    match v {
                        Some(v) => notified.insert(key.as_slice(), v.as_slice())?,
                        None => notified.remove(key.as_slice())?,
                    };
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => AlertingError::Sled(e),
                TransactionError::Abort(()) => {
                    AlertingError::Corrupt("outbox transaction aborted".to_owned())
                }
            })?;
        self.db.flush_async().await?;
        Ok(())
    }

    pub(crate) fn new_id(&self) -> Result<u64, AlertingError> {
        Ok(self.db.generate_id()?)
    }

    /// The oldest undelivered notification of `hook`.
    pub(crate) fn outbox_first(&self, hook: &str) -> Result<Option<OutboxEntry>, AlertingError> {
        for entry in self.outbox.scan_prefix(hook_prefix(hook)) {
            let (key, value) = entry?;
            match serde_json::from_slice(&value) {
                Ok(e) => return Ok(Some(e)),
                Err(e) => {
                    tracing::error!(hook, key = ?key, error = %e, "dropping undecodable outbox entry");
                    self.outbox.remove(key)?;
                }
            }
        }
        Ok(None)
    }

    /// Entries queued for `hook`.
    pub(crate) fn outbox_len(&self, hook: &str) -> usize {
        self.outbox.scan_prefix(hook_prefix(hook)).keys().count()
    }

    /// Drops the oldest entries of `hook` beyond `max`; returns how many.
    pub(crate) fn outbox_trim(&self, hook: &str, max: usize) -> Result<u64, AlertingError> {
        let len = self.outbox_len(hook);
        let mut dropped = 0;
        if len > max {
            for key in self
                .outbox
                .scan_prefix(hook_prefix(hook))
                .keys()
                .take(len - max)
            {
                self.outbox.remove(key?)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    pub(crate) fn outbox_remove(&self, hook: &str, id: u64) -> Result<(), AlertingError> {
        self.outbox.remove(hook_key(hook, id))?;
        Ok(())
    }

    /// Hooks with queued notifications.
    pub(crate) fn outbox_hooks(&self) -> Result<Vec<String>, AlertingError> {
        let mut hooks: Vec<String> = Vec::new();
        for key in self.outbox.iter().keys() {
            if let Some((hook, _)) = split_hook_key(&key?)
                && hooks.last() != Some(&hook)
            {
                hooks.push(hook);
            }
        }
        Ok(hooks)
    }

    /// Forgets everything queued for and notified by `hook` (it was removed).
    pub(crate) fn forget_hook(&self, hook: &str) -> Result<usize, AlertingError> {
        let mut dropped = 0;
        for key in self.outbox.scan_prefix(hook_prefix(hook)).keys() {
            self.outbox.remove(key?)?;
            dropped += 1;
        }
        for key in self.notified.scan_prefix(hook_prefix(hook)).keys() {
            self.notified.remove(key?)?;
        }
        Ok(dropped)
    }

    pub(crate) fn load_silences(&self) -> Result<Vec<Silence>, AlertingError> {
        let mut out = Vec::new();
        for entry in self.silences.iter() {
            let (key, value) = entry?;
            match serde_json::from_slice(&value) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(key = ?key, error = %e, "skipping undecodable silence"),
            }
        }
        Ok(out)
    }

    pub(crate) async fn save_silence(&self, silence: &Silence) -> Result<(), AlertingError> {
        let value = serde_json::to_vec(silence).map_err(|e| corrupt("silence", e))?;
        self.silences.insert(silence.id.as_bytes(), value)?;
        self.db.flush_async().await?;
        Ok(())
    }

    pub(crate) fn remove_silence(&self, id: &str) -> Result<(), AlertingError> {
        self.silences.remove(id.as_bytes())?;
        Ok(())
    }

    fn dropped_key(host: &str, source: u64) -> Vec<u8> {
        let mut key = b"dropped\0".to_vec();
        key.extend_from_slice(host.as_bytes());
        key.push(0);
        key.extend_from_slice(&source.to_be_bytes());
        key
    }

    /// Dropped batches last seen from (host, spool), if ever.
    pub(crate) fn dropped(&self, host: &str, source: u64) -> Result<Option<u64>, AlertingError> {
        Ok(self
            .meta
            .get(Self::dropped_key(host, source))?
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))))
    }

    pub(crate) fn set_dropped(
        &self,
        host: &str,
        source: u64,
        count: u64,
    ) -> Result<(), AlertingError> {
        self.meta
            .insert(Self::dropped_key(host, source), &count.to_be_bytes())?;
        Ok(())
    }
}
