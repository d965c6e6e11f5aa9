//! The collector's own state database (`data_dir`: the host registry, the
//! alert state, the notification outbox and the API tokens) and how it
//! heals after a failed write, without a restart.
//!
//! sled refuses every write after one failed (a full disk) until its
//! database is opened again. The host registry, the alert state and the
//! tokens each record their first failed write and go on in memory;
//! notifications go out from memory (new tokens are refused meanwhile). [`StateDb::check`], called every second by the state
//! watch, logs the failure once and, as soon as the free space is back
//! above the reserve (`storage.min_free_bytes`, and never under
//! the store's [`REOPEN_MIN_FREE_BYTES`]), heals: all three let go of their trees (sled
//! keeps its files locked until every handle is gone), the database is
//! reopened, they take the new trees and write back what memory holds
//! (hosts, alerts, what hooks were told, silences, notifications waiting
//! in memory, tokens and revocations), and the recovery is
//! logged once. A reopen that fails (a handle still held, a write failing
//! again) is tried again at the next check.

use crate::CollectorError;
use crate::hosts::HostRegistry;
use crate::tokens::TokenStore;
use hostwatch_alerting::Alerting;
use hostwatch_tsdb::REOPEN_MIN_FREE_BYTES;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// sled's page cache for the collector's own state: hosts, alert state,
/// the outbox and tokens are small and mostly written.
const STATE_CACHE_BYTES: u64 = 4 << 20;

/// The collector's state database, reopened after a failed write.
pub(crate) struct StateDb {
    path: PathBuf,
    /// Free space a reopen waits for.
    min_free_bytes: u64,
    /// `None` between letting go of a failed opening and a new one.
    db: Mutex<Option<sled::Db>>,
    /// The failure being healed (logged once), `None` while writable.
    failed: Mutex<Option<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is a single assignment.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a tree's records are written, shared by the stores of the
/// collector's database (hosts, API tokens) that keep their records in
/// memory and heal with it; cheap to clone.
#[derive(Clone)]
pub(crate) struct Records(Arc<Mutex<Writes>>);

/// Whether a tree can be written.
pub(crate) enum Writes {
    Writable(sled::Tree),
    /// A write failed (the cause): nothing is written until the database
    /// is reopened.
    Failed(String),
}

impl Records {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Records(Arc::new(Mutex::new(Writes::Writable(tree))))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Writes> {
        // A single assignment is the only update.
        locked(&self.0)
    }

    /// Why records cannot be written, if so: a write failed.
    pub(crate) fn failure(&self) -> Option<String> {
        match &*self.lock() {
            Writes::Writable(_) => None,
            Writes::Failed(cause) => Some(cause.clone()),
        }
    }

    /// Lets go of the tree, so that the database can be reopened; the
    /// owner keeps its records in memory until it attaches a new tree.
    pub(crate) fn detach(&self) {
        let mut writes = self.lock();
        if let Writes::Writable(_) = &*writes {
            *writes = Writes::Failed("the database is being reopened".to_owned());
        }
    }
}

impl StateDb {
    /// Opens the database in `path`; after a failure, a reopen waits for
    /// `min_free_bytes` free (the store's reserve).
    pub(crate) fn open(path: &Path, min_free_bytes: u64) -> Result<(Self, sled::Db), sled::Error> {
        let db = open_db(path)?;
        let state = StateDb {
            path: path.to_owned(),
            min_free_bytes: min_free_bytes.max(REOPEN_MIN_FREE_BYTES),
            db: Mutex::new(Some(db.clone())),
            failed: Mutex::new(None),
        };
        Ok((state, db))
    }

    /// Why the database cannot be written, while it cannot.
    pub(crate) fn failure(&self) -> Option<String> {
        locked(&self.failed).clone()
    }

    /// Looks for a failed write and heals the database if it can; returns
    /// why the state cannot be written while it cannot.
    pub(crate) fn check(
        &self,
        hosts: &HostRegistry,
        alerting: &Alerting,
        tokens: &TokenStore,
    ) -> Option<String> {
        let mut failed = locked(&self.failed);
        if failed.is_none() {
            let cause = hosts
                .failure()
                .or_else(|| alerting.state_failure())
                .or_else(|| tokens.failure())?;
            tracing::error!(error = %cause, path = %self.path.display(), "collector state database failed: hosts, alert state, notifications and token revocations kept in memory until it is reopened");
            *failed = Some(cause);
        }
        match hostwatch_tsdb::free_bytes(&self.path) {
            Ok(free) if free >= self.min_free_bytes => {}
            // Not yet: the reopen would fail again.
            Ok(_) | Err(_) => return failed.clone(),
        }
        match self.reopen(hosts, alerting, tokens) {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), "collector state database reopened: writing again");
                *failed = None;
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "collector state database not reopened yet");
                failed.clone()
            }
        }
    }

    fn reopen(
        &self,
        hosts: &HostRegistry,
        alerting: &Alerting,
        tokens: &TokenStore,
    ) -> Result<(), CollectorError> {
        let open_data = |source| CollectorError::OpenData {
            path: self.path.display().to_string(),
            source,
        };
        hosts.detach();
        alerting.detach_state();
        tokens.detach();
        let mut db = locked(&self.db);
        drop(db.take());
        // Fails while a call still holds a handle of the old opening.
        let reopened = open_db(&self.path).map_err(open_data)?;
        hosts.attach(&reopened).map_err(open_data)?;
        alerting.attach_state(&reopened)?;
        tokens.attach(&reopened).map_err(open_data)?;
        *db = Some(reopened);
        Ok(())
    }

    /// A handle of the database for a backup to copy, unless it failed
    /// (then why). Held, it keeps a reopen waiting until the copy is done.
    pub(crate) fn database(&self) -> Result<sled::Db, String> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        locked(&self.db)
            .clone()
            .ok_or_else(|| "it is being reopened".to_owned())
    }

    /// Flushes the database (at shutdown).
    pub(crate) async fn flush(&self) -> Result<(), sled::Error> {
        let db = locked(&self.db).clone();
        match db {
            Some(db) => db.flush_async().await.map(|_| ()),
            None => Ok(()),
        }
    }
}

fn open_db(path: &Path) -> Result<sled::Db, sled::Error> {
    sled::Config::new()
        .path(path)
        .cache_capacity(STATE_CACHE_BYTES)
        .open()
}

/// Opens the database at `path` again in a test that just dropped its
/// last handle: sled's threads of that opening hold the file lock a
/// moment longer (longer on a loaded machine), so a lock error is
/// retried for up to 10 s.
#[cfg(test)]
pub(crate) fn reopen_dropped(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_alerting::{AlertingConfig, Clock};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_failure_is_healed_by_reopening_and_writing_back() {
        let dir = tempfile::tempdir().unwrap();
        let (state, db) = StateDb::open(dir.path(), 0).unwrap();
        let hosts = HostRegistry::open(&db, 1_000).unwrap();
        let rules = AlertingConfig::default()
            .compile(Duration::from_secs(30))
            .unwrap();
        let alerting = Alerting::open(&db, rules, Arc::new(|_, _| None), Clock::system()).unwrap();
        let tokens = TokenStore::open(&db).unwrap();
        drop(db);
        let token = |name: &str| crate::tokens::NewToken {
            name: name.to_owned(),
            role: crate::tokens::TokenRole::Viewer,
            ttl: crate::tokens::Ttl::Never,
            created_by: "ops".to_owned(),
        };
        let now = hostwatch_stdx::now_ms();
        for name in ["kept", "revoked"] {
            tokens.create(token(name), now).unwrap();
        }
        assert_eq!(state.check(&hosts, &alerting, &tokens), None);
        // What a failed write leaves: the registry and the tokens refusing
        // to write. (Here they let go of their trees; a real failure is in
        // the e2e self_alert.)
        hosts.detach();
        hosts.connected("web1", None, "boot-a");
        tokens.detach();
        // A revocation works at once, and says it is not stored yet; no
        // token is handed out that a restart would lose.
        assert!(matches!(
            tokens.revoke("revoked"),
            Err(crate::tokens::TokenError::RevokedNotStored { .. })
        ));
        assert!(matches!(
            tokens.create(token("new"), now),
            Err(crate::tokens::TokenError::Unavailable(_))
        ));
        // Healed, as there is room: once the old database closed completely
        // (sled's threads may hold its lock a moment longer; the state watch
        // checks every second), the new one has the missed record.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state.check(&hosts, &alerting, &tokens).is_some() {
            assert!(std::time::Instant::now() < deadline, "not reopened");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(hosts.failure(), None);
        assert_eq!(alerting.state_failure(), None);
        assert_eq!(tokens.failure(), None);
        let db = locked(&state.db).clone().unwrap();
        let stored = db.open_tree("api_tokens").unwrap();
        assert!(stored.get("kept").unwrap().is_some());
        assert!(stored.get("revoked").unwrap().is_none());
        assert!(
            db.open_tree("hosts")
                .unwrap()
                .get("web1")
                .unwrap()
                .is_some()
        );
    }
}
