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
//!
//! After a failed write (a full disk) sled refuses every write until its
//! database is opened again. The first failure is recorded
//! ([`Persist::failure`]) and from then on writes are refused with
//! [`AlertingError::StateUnavailable`] without touching sled (callers do
//! not log those: the collector logs the failure once). The collector
//! heals the database: [`Persist::detach`] lets go of the trees (sled keeps
//! its file locked until every handle is gone), it reopens the database,
//! and [`Persist::attach`] takes the new trees, clears the failure and has
//! the engine write back what memory holds.

use crate::AlertingError;
use crate::hooks::Notification;
use crate::machine::Phase;
use crate::model::{Alert, HistoryFilter, Silence, Transition};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// What a hook was last told about one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Notified {
    pub(crate) status: Phase,
    pub(crate) sent_ms: i64,
    /// Outbox id of the notification that opened the group's episode (the
    /// first firing one since its alerts were all quiet): later
    /// notifications of the episode are threaded to it (e-mail
    /// `In-Reply-To`). Absent in records of older versions.
    #[serde(default)]
    pub(crate) thread: Option<u64>,
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
    /// The key of the notification that opened the group's episode, if
    /// not this one.
    #[serde(default)]
    pub(crate) thread: Option<String>,
}

/// Why calls fail between [`Persist::detach`] and [`Persist::attach`].
const REOPENING: &str = "the database is being reopened";

/// The trees of one opening of the collector's database.
struct Trees {
    db: sled::Db,
    alerts: sled::Tree,
    history: sled::Tree,
    notified: sled::Tree,
    outbox: sled::Tree,
    silences: sled::Tree,
    meta: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Trees {
            db: db.clone(),
            alerts: db.open_tree("alerts")?,
            history: db.open_tree("alert_history")?,
            notified: db.open_tree("alert_notified")?,
            outbox: db.open_tree("alert_outbox")?,
            silences: db.open_tree("silences")?,
            meta: db.open_tree("alert_meta")?,
        })
    }
}

pub(crate) struct Persist {
    /// `None` while the collector reopens its database. Calls hold a clone
    /// only for the call, so detaching lets go of the database quickly.
    trees: RwLock<Option<Arc<Trees>>>,
    /// The first failed write since the trees were attached: writes are
    /// refused until the database is reopened.
    failure: Mutex<Option<String>>,
    history_len: AtomicUsize,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> AlertingError {
    AlertingError::Corrupt(format!("{what}: {e}"))
}

/// Every record of `tree`; an undecodable one is skipped and logged.
fn load_all<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &str,
) -> Result<Vec<T>, AlertingError> {
    let mut out = Vec::new();
    for entry in tree.iter() {
        let (key, value) = entry?;
        match serde_json::from_slice(&value) {
            Ok(record) => out.push(record),
            Err(e) => tracing::warn!(key = ?key, error = %e, "skipping undecodable {what} record"),
        }
    }
    Ok(out)
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

/// A poisoned lock still holds consistent data here: each update is a
/// single assignment.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Persist {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, AlertingError> {
        let trees = Trees::open(db)?;
        let history_len = trees.history.len();
        Ok(Persist {
            trees: RwLock::new(Some(Arc::new(trees))),
            failure: Mutex::new(None),
            history_len: AtomicUsize::new(history_len),
        })
    }

    /// Why writes are refused: a write failed since the trees were
    /// attached (the database must be reopened). `None` while writable.
    pub(crate) fn failure(&self) -> Option<String> {
        locked(&self.failure).clone()
    }

    /// Lets go of the database's trees, so that it can be reopened; reads
    /// and writes fail until [`Persist::attach`].
    pub(crate) fn detach(&self) {
        let mut trees = self.trees.write().unwrap_or_else(|p| p.into_inner());
        *trees = None;
        locked(&self.failure).get_or_insert_with(|| REOPENING.to_owned());
    }

    /// Takes the trees of the reopened `db` and accepts writes again.
    pub(crate) fn attach(&self, db: &sled::Db) -> Result<(), AlertingError> {
        let trees = Trees::open(db)?;
        self.history_len
            .store(trees.history.len(), Ordering::Relaxed);
        *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(trees));
        *locked(&self.failure) = None;
        Ok(())
    }

    /// The trees, for a read.
    fn trees(&self) -> Result<Arc<Trees>, AlertingError> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| AlertingError::StateUnavailable(REOPENING.to_owned()))
    }

    /// The trees, for a write: refused after a failed write.
    fn writable(&self) -> Result<Arc<Trees>, AlertingError> {
        if let Some(cause) = self.failure() {
            return Err(AlertingError::StateUnavailable(cause));
        }
        self.trees()
    }

    /// Passes on a write's result; a storage error fails the database
    /// (sled refuses writes after one until it is reopened) and is
    /// reported as [`AlertingError::StateUnavailable`].
    fn written<T>(&self, result: Result<T, AlertingError>) -> Result<T, AlertingError> {
        match result {
            Err(AlertingError::Sled(e)) => {
                let cause = format!("a write failed ({e})");
                let mut failure = locked(&self.failure);
                Err(AlertingError::StateUnavailable(
                    failure.get_or_insert(cause).clone(),
                ))
            }
            other => other,
        }
    }

    /// Runs a write on the trees, recording a failure.
    fn write<T>(
        &self,
        f: impl FnOnce(&Trees) -> Result<T, AlertingError>,
    ) -> Result<T, AlertingError> {
        let trees = self.writable()?;
        self.written(f(&trees))
    }

    /// Flushes `db` after a write, recording a failure; the handle goes
    /// at once (sled keeps its files locked until every handle is gone,
    /// and a reopen needs them).
    async fn flush(&self, db: sled::Db) -> Result<(), AlertingError> {
        let flushed = db.flush_async().await;
        drop(db);
        self.written(flushed.map_err(AlertingError::from))?;
        Ok(())
    }

    /// Makes `tree` hold exactly `records` (key -> value), writing only
    /// what differs: the write-back after a reopen.
    fn sync_tree(
        tree: &sled::Tree,
        records: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(), AlertingError> {
        for key in tree.iter().keys() {
            let key = key?;
            if !records.contains_key(key.as_ref()) {
                tree.remove(key)?;
            }
        }
        for (key, value) in records {
            if tree.get(key)?.as_deref() != Some(value.as_slice()) {
                tree.insert(key.as_slice(), value.as_slice())?;
            }
        }
        Ok(())
    }

    /// Writes back what memory holds (the alerts, what each hook was told,
    /// the silences) over what the disk has, then flushes: the writes
    /// refused while the database had failed are not lost.
    pub(crate) fn write_back(
        &self,
        alerts: &[Alert],
        notified: &[(String, u64, Notified)],
        silences: &[Silence],
    ) -> Result<(), AlertingError> {
        let mut records = BTreeMap::new();
        for alert in alerts {
            let value = serde_json::to_vec(alert).map_err(|e| corrupt("alert", e))?;
            records.insert(alert.fp().to_be_bytes().to_vec(), value);
        }
        let alerts = std::mem::take(&mut records);
        for (hook, fp, n) in notified {
            let value = serde_json::to_vec(n).map_err(|e| corrupt("notified", e))?;
            records.insert(hook_key(hook, *fp), value);
        }
        let notified = std::mem::take(&mut records);
        for silence in silences {
            let value = serde_json::to_vec(silence).map_err(|e| corrupt("silence", e))?;
            records.insert(silence.id.as_bytes().to_vec(), value);
        }
        self.write(|t| {
            Self::sync_tree(&t.alerts, &alerts)?;
            Self::sync_tree(&t.notified, &notified)?;
            Self::sync_tree(&t.silences, &records)?;
            t.db.flush()?;
            Ok(())
        })
    }

    /// Puts notifications that were queued in memory into the outbox, in
    /// order, each with a new id (after those queued before), then flushes.
    pub(crate) fn requeue(&self, entries: &mut [OutboxEntry]) -> Result<(), AlertingError> {
        self.write(|t| {
            for entry in entries.iter_mut() {
                entry.id = t.db.generate_id()?;
                let value = serde_json::to_vec(entry).map_err(|e| corrupt("outbox entry", e))?;
                t.outbox.insert(hook_key(&entry.hook, entry.id), value)?;
            }
            t.db.flush()?;
            Ok(())
        })
    }

    /// Every stored alert; undecodable records are skipped and logged.
    pub(crate) fn load_alerts(&self) -> Result<Vec<Alert>, AlertingError> {
        load_all(&self.trees()?.alerts, "alert")
    }

    pub(crate) fn save_alert(&self, alert: &Alert) -> Result<(), AlertingError> {
        let value = serde_json::to_vec(alert).map_err(|e| corrupt("alert", e))?;
        self.write(|t| {
            t.alerts.insert(alert.fp().to_be_bytes(), value)?;
            Ok(())
        })
    }

    pub(crate) fn remove_alert(&self, fp: u64) -> Result<(), AlertingError> {
        self.write(|t| {
            t.alerts.remove(fp.to_be_bytes())?;
            Ok(())
        })
    }

    /// Appends `t` (giving it its id) and drops the oldest beyond `limit`.
    pub(crate) fn append_history(
        &self,
        t: &mut Transition,
        limit: usize,
    ) -> Result<(), AlertingError> {
        self.write(|trees| {
            t.id = trees.db.generate_id()?;
            let value = serde_json::to_vec(t).map_err(|e| corrupt("transition", e))?;
            trees.history.insert(t.id.to_be_bytes(), value)?;
            let len = self.history_len.fetch_add(1, Ordering::Relaxed) + 1;
            if len > limit {
                let mut removed = 0;
                for key in trees.history.iter().keys().take(len - limit) {
                    trees.history.remove(key?)?;
                    removed += 1;
                }
                self.history_len.fetch_sub(removed, Ordering::Relaxed);
            }
            Ok(())
        })
    }

    /// Transitions matching `filter`, oldest first.
    pub(crate) fn history(&self, filter: &HistoryFilter) -> Result<Vec<Transition>, AlertingError> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        for entry in self.trees()?.history.iter().rev() {
            let (_, value) = entry?;
            let Ok(t) = serde_json::from_slice::<Transition>(&value) else {
                continue;
            };
            if t.recorded_ms < filter.since_ms {
                break;
            }
            let host_ok = filter.host.is_empty() || t.labels.get("host") == Some(&filter.host);
            let rule_ok = filter.rule.is_empty() || t.rule == filter.rule;
            let to_ok = filter.to.is_none_or(|to| t.to == to);
            if host_ok && rule_ok && to_ok {
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
        for entry in self.trees()?.notified.iter() {
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
        self.write(|t| {
            t.notified.remove(hook_key(hook, fp))?;
            Ok(())
        })
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
        let db = self.write(|t| {
            (&t.outbox, &t.notified)
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
            Ok(t.db.clone())
        })?;
        self.flush(db).await
    }

    pub(crate) fn new_id(&self) -> Result<u64, AlertingError> {
        self.write(|t| Ok(t.db.generate_id()?))
    }

    /// The oldest undelivered notification of `hook`, passing over those
    /// in `done` (delivered, but not yet removed).
    pub(crate) fn outbox_first(
        &self,
        hook: &str,
        done: &BTreeSet<u64>,
    ) -> Result<Option<OutboxEntry>, AlertingError> {
        let trees = self.trees()?;
        for entry in trees.outbox.scan_prefix(hook_prefix(hook)) {
            let (key, value) = entry?;
            if split_hook_key(&key).is_some_and(|(_, id)| done.contains(&id)) {
                continue;
            }
            match serde_json::from_slice(&value) {
                Ok(e) => return Ok(Some(e)),
                Err(e) => {
                    tracing::error!(hook, key = ?key, error = %e, "dropping undecodable outbox entry");
                    self.write(|t| {
                        t.outbox.remove(key)?;
                        Ok(())
                    })?;
                }
            }
        }
        Ok(None)
    }

    /// Entries in the outbox for `hook`.
    pub(crate) fn outbox_count(&self, hook: &str) -> Result<usize, AlertingError> {
        Ok(Self::outbox_len(&*self.trees()?, hook))
    }

    /// Entries queued for `hook`.
    fn outbox_len(trees: &Trees, hook: &str) -> usize {
        trees.outbox.scan_prefix(hook_prefix(hook)).keys().count()
    }

    /// Drops the oldest entries of `hook` beyond `max`; returns how many.
    pub(crate) fn outbox_trim(&self, hook: &str, max: usize) -> Result<u64, AlertingError> {
        self.write(|t| {
            let len = Self::outbox_len(t, hook);
            let mut dropped = 0;
            if len > max {
                for key in t
                    .outbox
                    .scan_prefix(hook_prefix(hook))
                    .keys()
                    .take(len - max)
                {
                    t.outbox.remove(key?)?;
                    dropped += 1;
                }
            }
            Ok(dropped)
        })
    }

    pub(crate) fn outbox_remove(&self, hook: &str, id: u64) -> Result<(), AlertingError> {
        self.write(|t| {
            t.outbox.remove(hook_key(hook, id))?;
            Ok(())
        })
    }

    /// Hooks with queued notifications.
    pub(crate) fn outbox_hooks(&self) -> Result<Vec<String>, AlertingError> {
        let mut hooks: Vec<String> = Vec::new();
        for key in self.trees()?.outbox.iter().keys() {
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
        self.write(|t| {
            let mut dropped = 0;
            for key in t.outbox.scan_prefix(hook_prefix(hook)).keys() {
                t.outbox.remove(key?)?;
                dropped += 1;
            }
            for key in t.notified.scan_prefix(hook_prefix(hook)).keys() {
                t.notified.remove(key?)?;
            }
            Ok(dropped)
        })
    }

    /// Every stored silence; undecodable records are skipped and logged.
    pub(crate) fn load_silences(&self) -> Result<Vec<Silence>, AlertingError> {
        load_all(&self.trees()?.silences, "silence")
    }

    pub(crate) async fn save_silence(&self, silence: &Silence) -> Result<(), AlertingError> {
        let value = serde_json::to_vec(silence).map_err(|e| corrupt("silence", e))?;
        let db = self.write(|t| {
            t.silences.insert(silence.id.as_bytes(), value)?;
            Ok(t.db.clone())
        })?;
        self.flush(db).await
    }

    pub(crate) fn remove_silence(&self, id: &str) -> Result<(), AlertingError> {
        self.write(|t| {
            t.silences.remove(id.as_bytes())?;
            Ok(())
        })
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
            .trees()?
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
        self.write(|t| {
            t.meta
                .insert(Self::dropped_key(host, source), &count.to_be_bytes())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_threads_existed_still_load() {
        let notified: Notified =
            serde_json::from_str(r#"{"status":"firing","sent_ms":1}"#).unwrap();
        assert_eq!(notified.thread, None);
        let entry = OutboxEntry {
            id: 7,
            hook: "h".to_owned(),
            key: "k".to_owned(),
            created_ms: 1,
            notification: crate::hooks::Notification {
                version: "4".to_owned(),
                group_key: "g".to_owned(),
                truncated_alerts: 0,
                status: "firing".to_owned(),
                receiver: "h".to_owned(),
                group_labels: BTreeMap::new(),
                common_labels: BTreeMap::new(),
                common_annotations: BTreeMap::new(),
                external_url: String::new(),
                alerts: Vec::new(),
            },
            thread: Some("root".to_owned()),
        };
        let mut old = serde_json::to_value(&entry).unwrap();
        old.as_object_mut().unwrap().remove("thread");
        let loaded: OutboxEntry = serde_json::from_value(old).unwrap();
        assert_eq!(loaded.thread, None);
        assert_eq!(loaded.notification, entry.notification);
    }
}
