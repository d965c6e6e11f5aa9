//! Enrollment tokens and the agent certificates issued with them, in the
//! collector's database: tree `enroll_tokens` (name -> JSON record with
//! the token's SHA-256 digest, never its text) and tree `enrolled_hosts`
//! (host id -> the last certificate issued for it: serial, expiry) and
//! tree `revoked_hosts` (host id -> why, when, by whom it was revoked and
//! the serials denied with it).
//!
//! Tokens share the API tokens' text format and digest (`tokens.rs`) and
//! their names (a name is unique among both kinds). Memory is the index,
//! as for API tokens; one mutex guards memory and trees together, so a
//! redemption (a use taken, the host's certificate recorded) is one step
//! for every caller. On disk it is one sled transaction over both trees
//! that also checks that the token's record is still the one memory
//! holds, so the use count cannot go below zero even if memory and disk
//! disagreed. A redemption that cannot be written is refused: a
//! certificate is handed out only once its use is stored. Like the other
//! stores, this one lets go of its trees when the state database is
//! reopened after a failed write and writes memory back when it attaches.

use crate::tokens::{TokenDigest, digest_of, new_token_text};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

const TOKENS_TREE: &str = "enroll_tokens";
const HOSTS_TREE: &str = "enrolled_hosts";
const REVOKED_TREE: &str = "revoked_hosts";
/// Most enrollments one token may allow.
pub(crate) const MAX_USES: u32 = 100_000;
/// Longest lifetime of an enrollment token: it is meant for a rollout,
/// and a leaked one enrolls hosts until it expires or is revoked.
pub(crate) const MAX_TTL_MS: i64 = 30 * 86_400_000;
/// Longest host pattern: a host id's longest.
const MAX_PATTERN_BYTES: usize = 253;

/// An enrollment token as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EnrollEntry {
    pub(crate) name: String,
    /// Enrollments it allowed at creation.
    pub(crate) uses: u32,
    pub(crate) uses_left: u32,
    /// Host ids it allows (see [`HostPattern`]); `None`: any.
    pub(crate) hosts: Option<String>,
    /// ms since the Unix epoch.
    pub(crate) created_ms: i64,
    pub(crate) created_by: String,
    /// ms since the Unix epoch.
    pub(crate) expires_ms: i64,
}

impl EnrollEntry {
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// The last certificate issued for a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Issued {
    /// Serial number, lowercase hex.
    pub(crate) serial: String,
    /// ms since the Unix epoch.
    pub(crate) not_after_ms: i64,
    pub(crate) issued_ms: i64,
    /// The enrollment token's name.
    pub(crate) token: String,
}

/// A revoked host: refused at every handshake, its renewals and
/// enrollments refused, until a token created after the revocation
/// enrolls it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Revoked {
    pub(crate) host: String,
    pub(crate) reason: String,
    /// ms since the Unix epoch.
    pub(crate) revoked_ms: i64,
    /// The operator who revoked it.
    pub(crate) by: String,
    /// Serials of its certificates, lowercase hex: the last one issued
    /// here and those of the connections open when it was revoked. They
    /// stay denied after the host is reinstated: a stolen certificate
    /// must not come back with it.
    pub(crate) serials: Vec<String>,
    /// When a newer enrollment token enrolled it again (ms since the
    /// Unix epoch): the host is admitted, its old certificates are not.
    #[serde(default)]
    pub(crate) reinstated_ms: Option<i64>,
}

impl Revoked {
    /// Whether the host itself is refused (not reinstated).
    pub(crate) fn in_force(&self) -> bool {
        self.reinstated_ms.is_none()
    }
}

/// Host ids a token allows: a glob in which `*` stands for any run of
/// characters (none included) and every other character for itself,
/// matched against the whole host id. Globs rather than regular
/// expressions: host names are written as globs elsewhere (shells,
/// inventories), and a glob cannot be made to match more than it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern(String);

impl HostPattern {
    /// The pattern `text`: 1 to 253 of the host id alphabet and `*`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= MAX_PATTERN_BYTES
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
        if ok {
            Ok(HostPattern(text.to_owned()))
        } else {
            Err(format!(
                "hosts {text:?} is not a host pattern: 1 to {MAX_PATTERN_BYTES} of A-Z a-z 0-9 . - _ and * (any run of characters)"
            ))
        }
    }

    /// Whether the whole of `host` matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        let mut parts = self.0.split('*');
        // `split` yields at least one part.
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = host.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub(crate) struct NewEnrollToken {
    /// `None`: `enroll-` and 8 random hex digits.
    pub(crate) name: Option<String>,
    pub(crate) uses: u32,
    pub(crate) ttl_ms: i64,
    pub(crate) hosts: Option<HostPattern>,
    pub(crate) created_by: String,
}

/// Why an enrollment is refused. Worded for the client: never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the enrollment token is not a hostwatch token (hwt_...)")]
    Malformed,
    #[error("the enrollment token is unknown or revoked")]
    Unknown,
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token has no uses left")]
    UsedUp,
    #[error("the enrollment token does not allow host id {host:?} (it allows {pattern:?})")]
    HostNotAllowed { host: String, pattern: String },
    #[error(
        "host id {host:?} holds a certificate issued by this collector that has not expired (serial {serial}); enroll with replace to issue another"
    )]
    HostEnrolled { host: String, serial: String },
    #[error(
        "the collector's state database cannot be written ({0}); try again once it is reopened"
    )]
    Unavailable(String),
    #[error(
        "host id {host:?} is revoked (since {revoked_ms} ms after the epoch); only an enrollment token created after that enrolls it again"
    )]
    HostRevoked { host: String, revoked_ms: i64 },
}

enum Trees {
    Writable {
        tokens: sled::Tree,
        hosts: sled::Tree,
        revoked: sled::Tree,
    },
    Failed(String),
}

struct Inner {
    trees: Trees,
    tokens: BTreeMap<String, (TokenDigest, EnrollEntry)>,
    by_digest: HashMap<TokenDigest, String>,
    hosts: BTreeMap<String, Issued>,
    revoked: BTreeMap<String, Revoked>,
}

impl Inner {
    /// Refuses `host` if its revocation is in force.
    fn not_revoked(&self, host: &str) -> Result<(), Refused> {
        match self.revoked.get(host).filter(|r| r.in_force()) {
            Some(revoked) => Err(Refused::HostRevoked {
                host: host.to_owned(),
                revoked_ms: revoked.revoked_ms,
            }),
            None => Ok(()),
        }
    }

    fn insert(&mut self, digest: TokenDigest, entry: EnrollEntry) {
        if let Some((old, _)) = self.tokens.remove(&entry.name) {
            self.by_digest.remove(&old);
        }
        self.by_digest.insert(digest, entry.name.clone());
        self.tokens.insert(entry.name.clone(), (digest, entry));
    }

    /// The token whose text is `text`, usable at `now_ms`.
    fn find(&self, text: &str, now_ms: i64) -> Result<&(TokenDigest, EnrollEntry), Refused> {
        if !crate::tokens::well_formed(text) {
            return Err(Refused::Malformed);
        }
        let found = self
            .by_digest
            .get(&digest_of(text))
            .and_then(|name| self.tokens.get(name))
            .ok_or(Refused::Unknown)?;
        let entry = &found.1;
        if entry.expired(now_ms) {
            Err(Refused::Expired)
        } else if entry.uses_left == 0 {
            Err(Refused::UsedUp)
        } else {
            Ok(found)
        }
    }

    /// Whether `entry` allows `host`, and the host is free (or `replace`).
    fn allows(
        &self,
        entry: &EnrollEntry,
        host: &str,
        replace: bool,
        now_ms: i64,
    ) -> Result<(), Refused> {
        if let Some(pattern) = &entry.hosts
            && !HostPattern(pattern.clone()).matches(host)
        {
            return Err(Refused::HostNotAllowed {
                host: host.to_owned(),
                pattern: pattern.clone(),
            });
        }
        let revoked = self.revoked.get(host).filter(|r| r.in_force());
        if let Some(revoked) = revoked
            && entry.created_ms <= revoked.revoked_ms
        {
            return Err(Refused::HostRevoked {
                host: host.to_owned(),
                revoked_ms: revoked.revoked_ms,
            });
        }
        match self.hosts.get(host) {
            Some(issued) if !replace && revoked.is_none() && now_ms < issued.not_after_ms => {
                Err(Refused::HostEnrolled {
                    host: host.to_owned(),
                    serial: issued.serial.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The enrollment token store; cheap to clone.
#[derive(Clone)]
pub(crate) struct EnrollStore(Arc<Mutex<Inner>>);

impl EnrollStore {
    /// Loads the tokens and hosts of `db`; undecodable records are skipped.
    pub(crate) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let (tokens, hosts) = (db.open_tree(TOKENS_TREE)?, db.open_tree(HOSTS_TREE)?);
        let revoked = db.open_tree(REVOKED_TREE)?;
        let mut inner = Inner {
            trees: Trees::Failed(String::new()),
            tokens: BTreeMap::new(),
            by_digest: HashMap::new(),
            hosts: BTreeMap::new(),
            revoked: BTreeMap::new(),
        };
        for item in revoked.iter() {
            let (key, value) = item?;
            match serde_json::from_slice::<Revoked>(&value) {
                Ok(record) => {
                    inner.revoked.insert(record.host.clone(), record);
                }
                Err(_) => tracing::warn!(key = ?key, "skipping undecodable revoked host record"),
            }
        }
        for item in tokens.iter() {
            let (key, value) = item?;
            match crate::tokens::decode::<EnrollEntry>(&value) {
                Some((digest, entry)) => inner.insert(digest, entry),
                None => tracing::warn!(key = ?key, "skipping undecodable enrollment token record"),
            }
        }
        for item in hosts.iter() {
            let (key, value) = item?;
            match (std::str::from_utf8(&key), serde_json::from_slice(&value)) {
                (Ok(host), Ok(issued)) => {
                    inner.hosts.insert(host.to_owned(), issued);
                }
                _ => tracing::warn!(key = ?key, "skipping undecodable enrolled host record"),
            }
        }
        inner.trees = Trees::Writable {
            tokens,
            hosts,
            revoked,
        };
        Ok(EnrollStore(Arc::new(Mutex::new(inner))))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change leaves memory whole before anything can panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a token that has not expired is named `name`.
    pub(crate) fn holds_live(&self, name: &str, now_ms: i64) -> bool {
        self.lock()
            .tokens
            .get(name)
            .is_some_and(|(_, entry)| !entry.expired(now_ms))
    }

    /// Creates a token: its text (shown once) and entry. `taken` says
    /// whether another kind of token holds a name. Blocks on the disk.
    pub(crate) fn create(
        &self,
        new: NewEnrollToken,
        now_ms: i64,
        taken: impl Fn(&str) -> bool,
    ) -> Result<(String, EnrollEntry), crate::tokens::TokenError> {
        use crate::tokens::TokenError;
        if !(1..=MAX_USES).contains(&new.uses) {
            return Err(TokenError::Invalid(format!(
                "uses must be 1 to {MAX_USES}, not {}",
                new.uses
            )));
        }
        if !(1..=MAX_TTL_MS).contains(&new.ttl_ms) {
            return Err(TokenError::Invalid(format!(
                "ttl_ms of an enrollment token must be 1 to {MAX_TTL_MS} (30 days), not {}",
                new.ttl_ms
            )));
        }
        let text = new_token_text()?;
        let digest = digest_of(&text);
        let name = match new.name {
            Some(name) => {
                crate::tokens::check_name(&name)?;
                name
            }
            None => format!(
                "enroll-{}",
                digest[..4]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
        };
        let mut inner = self.lock();
        let live = inner
            .tokens
            .get(&name)
            .is_some_and(|(_, e)| !e.expired(now_ms));
        if live || taken(&name) {
            return Err(TokenError::Exists(name));
        }
        let tokens = match &inner.trees {
            Trees::Writable { tokens, .. } => tokens.clone(),
            Trees::Failed(cause) => return Err(TokenError::Unavailable(cause.clone())),
        };
        let entry = EnrollEntry {
            name,
            uses: new.uses,
            uses_left: new.uses,
            hosts: new.hosts.map(|p| p.0),
            created_ms: now_ms,
            created_by: new.created_by,
            expires_ms: now_ms.saturating_add(new.ttl_ms),
        };
        let written = tokens
            .insert(
                entry.name.as_bytes(),
                crate::tokens::encode(&digest, &entry),
            )
            .and_then(|_| tokens.flush());
        if let Err(e) = written {
            let cause = format!("a write failed ({e})");
            inner.trees = Trees::Failed(cause.clone());
            return Err(TokenError::Unavailable(cause));
        }
        inner.insert(digest, entry.clone());
        Ok((text, entry))
    }

    /// Every enrollment token, by name.
    pub(crate) fn list(&self) -> Vec<EnrollEntry> {
        self.lock()
            .tokens
            .values()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Revokes the token named `name`; `Ok(None)` if there is none.
    /// Refused from this moment; `Err` (the cause) if the deletion is not
    /// stored yet (it is when the database is reopened).
    pub(crate) fn revoke(&self, name: &str) -> Result<Option<EnrollEntry>, (EnrollEntry, String)> {
        let mut inner = self.lock();
        let Some((digest, entry)) = inner.tokens.remove(name) else {
            return Ok(None);
        };
        inner.by_digest.remove(&digest);
        let cause = match &inner.trees {
            Trees::Failed(cause) => cause.clone(),
            Trees::Writable { tokens, .. } => {
                match tokens.remove(name.as_bytes()).and_then(|_| tokens.flush()) {
                    Ok(_) => return Ok(Some(entry)),
                    Err(e) => format!("a write failed ({e})"),
                }
            }
        };
        inner.trees = Trees::Failed(cause.clone());
        Err((entry, cause))
    }

    /// Checks, without taking a use, that `text` is a usable token that
    /// allows `host`; returns its name (for logs).
    pub(crate) fn check(
        &self,
        text: &str,
        host: &str,
        replace: bool,
        now_ms: i64,
    ) -> Result<String, Refused> {
        let inner = self.lock();
        let (_, entry) = inner.find(text, now_ms)?;
        inner.allows(entry, host, replace, now_ms)?;
        Ok(entry.name.clone())
    }

    /// Takes one use of the token `text` for `host` and records `issued`
    /// as the host's certificate, in one step, after checking everything
    /// [`EnrollStore::check`] does again. Blocks on the disk.
    pub(crate) fn redeem(
        &self,
        text: &str,
        host: &str,
        replace: bool,
        issued: Issued,
        now_ms: i64,
    ) -> Result<(EnrollEntry, Option<Revoked>), Refused> {
        let mut inner = self.lock();
        let (digest, entry) = inner.find(text, now_ms)?.clone();
        inner.allows(&entry, host, replace, now_ms)?;
        // A token newer than the host's revocation reinstates it.
        let reinstated = inner
            .revoked
            .get(host)
            .filter(|r| r.in_force())
            .map(|r| Revoked {
                reinstated_ms: Some(now_ms),
                ..r.clone()
            });
        // A struct of strings and integers always serializes.
        let reinstated_record = reinstated
            .as_ref()
            .map(|r| serde_json::to_vec(r).unwrap_or_default());
        let issued = Issued {
            token: entry.name.clone(),
            ..issued
        };
        let (tokens, hosts, revoked) = match &inner.trees {
            Trees::Writable {
                tokens,
                hosts,
                revoked,
            } => (tokens.clone(), hosts.clone(), revoked.clone()),
            Trees::Failed(cause) => return Err(Refused::Unavailable(cause.clone())),
        };
        let before = crate::tokens::encode(&digest, &entry);
        let used = EnrollEntry {
            uses_left: entry.uses_left - 1,
            ..entry
        };
        let after = crate::tokens::encode(&digest, &used);
        // A struct of strings and integers always serializes.
        let host_record = serde_json::to_vec(&issued).unwrap_or_default();
        let written = (&tokens, &hosts, &revoked)
            .transaction(|(tokens, hosts, revoked)| {
                // The compare of a compare-and-swap: the record on disk is
                // the one memory checked.
                if tokens.get(used.name.as_bytes())?.as_deref() != Some(before.as_slice()) {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                tokens.insert(used.name.as_bytes(), after.as_slice())?;
                hosts.insert(host.as_bytes(), host_record.as_slice())?;
                if let Some(record) = &reinstated_record {
                    revoked.insert(host.as_bytes(), record.as_slice())?;
                }
                Ok(())
            })
            .and_then(|()| tokens.flush().map(drop).map_err(TransactionError::Storage));
        match written {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => {
                tracing::error!(token.name = %used.name, "enrollment token record on disk differs from memory; refusing it");
                return Err(Refused::Unknown);
            }
            Err(TransactionError::Storage(e)) => {
                let cause = format!("a write failed ({e})");
                inner.trees = Trees::Failed(cause.clone());
                return Err(Refused::Unavailable(cause));
            }
        }
        inner.insert(digest, used.clone());
        inner.hosts.insert(host.to_owned(), issued);
        if let Some(record) = &reinstated {
            inner.revoked.insert(host.to_owned(), record.clone());
        }
        Ok((used, reinstated))
    }

    /// Records `issued`, a renewal of `host`'s certificate, as the host's
    /// last certificate (the token it was enrolled with is kept). A
    /// renewal that cannot be written is refused: the certificate is
    /// handed out only once it is stored. Blocks on the disk.
    pub(crate) fn record_renewal(&self, host: &str, issued: Issued) -> Result<(), Refused> {
        let mut inner = self.lock();
        inner.not_revoked(host)?;
        let hosts = match &inner.trees {
            Trees::Writable { hosts, .. } => hosts.clone(),
            Trees::Failed(cause) => return Err(Refused::Unavailable(cause.clone())),
        };
        let issued = Issued {
            token: inner
                .hosts
                .get(host)
                .map(|before| before.token.clone())
                .unwrap_or_default(),
            ..issued
        };
        // A struct of strings and integers always serializes.
        let record = serde_json::to_vec(&issued).unwrap_or_default();
        let written = hosts
            .insert(host.as_bytes(), record)
            .and_then(|_| hosts.flush());
        if let Err(e) = written {
            let cause = format!("a write failed ({e})");
            inner.trees = Trees::Failed(cause.clone());
            return Err(Refused::Unavailable(cause));
        }
        inner.hosts.insert(host.to_owned(), issued);
        Ok(())
    }

    /// Revokes `host` (see [`Revoked`]), with the serials of the last
    /// certificate issued here and `seen`; a host revoked again gets the
    /// new reason and time, and keeps its serials. Blocks on the disk.
    pub(crate) fn revoke_host(
        &self,
        host: &str,
        reason: &str,
        by: &str,
        now_ms: i64,
        seen: &[String],
    ) -> Result<Revoked, Refused> {
        let mut inner = self.lock();
        let mut serials: Vec<String> = inner
            .revoked
            .get(host)
            .map(|r| r.serials.clone())
            .unwrap_or_default();
        serials.extend(inner.hosts.get(host).map(|i| i.serial.clone()));
        serials.extend(seen.iter().cloned());
        serials.sort();
        serials.dedup();
        let record = Revoked {
            host: host.to_owned(),
            reason: reason.to_owned(),
            revoked_ms: now_ms,
            by: by.to_owned(),
            serials,
            reinstated_ms: None,
        };
        let tree = match &inner.trees {
            Trees::Writable { revoked, .. } => revoked.clone(),
            Trees::Failed(cause) => return Err(Refused::Unavailable(cause.clone())),
        };
        // A struct of strings and integers always serializes.
        let value = serde_json::to_vec(&record).unwrap_or_default();
        if let Err(e) = tree
            .insert(host.as_bytes(), value)
            .and_then(|_| tree.flush())
        {
            let cause = format!("a write failed ({e})");
            inner.trees = Trees::Failed(cause.clone());
            return Err(Refused::Unavailable(cause));
        }
        inner.revoked.insert(host.to_owned(), record.clone());
        Ok(record)
    }

    /// Every revoked host, by host id.
    pub(crate) fn revoked(&self) -> Vec<Revoked> {
        self.lock().revoked.values().cloned().collect()
    }

    /// The last certificate issued for `host`, if any, unless the host is
    /// revoked: what a renewal is checked against before it is signed.
    pub(crate) fn renewable(&self, host: &str) -> Result<Option<Issued>, Refused> {
        let inner = self.lock();
        inner.not_revoked(host)?;
        Ok(inner.hosts.get(host).cloned())
    }

    /// When `host` was revoked, if its revocation is in force.
    pub(crate) fn revoked_since(&self, host: &str) -> Option<i64> {
        self.lock()
            .revoked
            .get(host)
            .filter(|r| r.in_force())
            .map(|r| r.revoked_ms)
    }

    /// The last certificate issued for `host`, if any.
    #[cfg(test)]
    pub(crate) fn issued(&self, host: &str) -> Option<Issued> {
        self.lock().hosts.get(host).cloned()
    }

    /// Why records cannot be written, if so.
    pub(crate) fn failure(&self) -> Option<String> {
        match &self.lock().trees {
            Trees::Writable { .. } => None,
            Trees::Failed(cause) => Some(cause.clone()),
        }
    }

    /// Lets go of the trees so the database can be reopened.
    pub(crate) fn detach(&self) {
        let mut inner = self.lock();
        if let Trees::Writable { .. } = inner.trees {
            inner.trees = Trees::Failed("the state database is being reopened".to_owned());
        }
    }

    /// Takes the trees of the reopened `db` and makes them hold what
    /// memory holds.
    pub(crate) fn attach(&self, db: &sled::Db) -> Result<(), sled::Error> {
        let (tokens, hosts) = (db.open_tree(TOKENS_TREE)?, db.open_tree(HOSTS_TREE)?);
        let revoked = db.open_tree(REVOKED_TREE)?;
        let mut inner = self.lock();
        tokens.clear()?;
        revoked.clear()?;
        for (host, record) in &inner.revoked {
            revoked.insert(
                host.as_bytes(),
                serde_json::to_vec(record).unwrap_or_default(),
            )?;
        }
        for (name, (digest, entry)) in &inner.tokens {
            tokens.insert(name.as_bytes(), crate::tokens::encode(digest, entry))?;
        }
        for (host, issued) in &inner.hosts {
            hosts.insert(
                host.as_bytes(),
                serde_json::to_vec(issued).unwrap_or_default(),
            )?;
        }
        tokens.flush()?;
        inner.trees = Trees::Writable {
            tokens,
            hosts,
            revoked,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, sled::Db, EnrollStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = EnrollStore::open(&db).unwrap();
        (dir, db, store)
    }

    fn new(uses: u32, ttl_ms: i64, hosts: Option<&str>) -> NewEnrollToken {
        NewEnrollToken {
            name: None,
            uses,
            ttl_ms,
            hosts: hosts.map(|h| HostPattern::parse(h).unwrap()),
            created_by: "ops".to_owned(),
        }
    }

    fn issued(serial: &str, not_after_ms: i64) -> Issued {
        Issued {
            serial: serial.to_owned(),
            not_after_ms,
            issued_ms: 0,
            token: "t".to_owned(),
        }
    }

    #[test]
    fn host_patterns_match_whole_ids() {
        let cases = [
            ("web-*", "web-1", true),
            ("web-*", "web-", true),
            ("web-*", "db-1", false),
            ("web-*", "xweb-1", false),
            ("*.prod", "a.b.prod", true),
            ("*.prod", "a.prod.x", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
            ("exact", "exact2", false),
            ("*", "anything", true),
        ];
        for (pattern, host, expected) in cases {
            let pattern = HostPattern::parse(pattern).unwrap();
            assert_eq!(pattern.matches(host), expected, "{pattern:?} {host}");
        }
        for bad in ["", "web/*", "a b", "[ab]", "web-?", &"a".repeat(254)] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_is_used_up_expires_and_is_revoked() {
        let (_dir, db, store) = open();
        let (text, entry) = store
            .create(new(2, 1_000, Some("web-*")), 0, |_| false)
            .unwrap();
        assert!(entry.name.starts_with("enroll-") && entry.uses_left == 2);
        assert_eq!(store.check(&text, "web-1", false, 0).unwrap(), entry.name);
        assert!(matches!(
            store.check(&text, "db-1", false, 0),
            Err(Refused::HostNotAllowed { .. })
        ));
        store
            .redeem(&text, "web-1", false, issued("01", 500), 0)
            .unwrap();
        assert!(matches!(
            store.check(&text, "web-1", false, 10),
            Err(Refused::HostEnrolled { .. })
        ));
        // Replace, or once the certificate has expired.
        store.check(&text, "web-1", true, 10).unwrap();
        store.check(&text, "web-1", false, 500).unwrap();
        let left = store
            .redeem(&text, "web-2", false, issued("02", 500), 10)
            .unwrap();
        assert_eq!(left.0.uses_left, 0);
        assert_eq!(store.check(&text, "web-3", false, 10), Err(Refused::UsedUp));
        // Memory and disk agree after a reopen; the text is nowhere on disk.
        drop(store);
        let store = EnrollStore::open(&db).unwrap();
        assert_eq!(store.list()[0].uses_left, 0);
        assert_eq!(store.issued("web-2").unwrap().serial, "02");
        let raw = db
            .open_tree(TOKENS_TREE)
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .unwrap()
            .1;
        assert!(!String::from_utf8_lossy(&raw).contains(&text[4..]));
        let (other, entry) = store.create(new(1, 1_000, None), 0, |_| false).unwrap();
        assert_eq!(
            store.check(&other, "x", false, 1_000),
            Err(Refused::Expired)
        );
        let name = entry.name;
        assert!(store.revoke(&name).unwrap().is_some());
        assert_eq!(store.check(&other, "x", false, 0), Err(Refused::Unknown));
        assert_eq!(store.revoke(&name).unwrap(), None);
        assert_eq!(
            store.check("hwt_short", "x", false, 0),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn a_renewal_replaces_the_hosts_certificate_and_keeps_its_token() {
        let (_dir, db, store) = open();
        let (text, entry) = store.create(new(1, 1_000, None), 0, |_| false).unwrap();
        store
            .redeem(&text, "web-1", false, issued("01", 500), 0)
            .unwrap();
        store.record_renewal("web-1", issued("02", 900)).unwrap();
        let renewed = store.issued("web-1").unwrap();
        assert_eq!((renewed.serial.as_str(), renewed.not_after_ms), ("02", 900));
        assert_eq!(renewed.token, entry.name);
        // A host not enrolled here (a certificate made by `certs issue`).
        store.record_renewal("db-1", issued("03", 900)).unwrap();
        assert_eq!(store.issued("db-1").unwrap().token, "");
        drop(store);
        let store = EnrollStore::open(&db).unwrap();
        assert_eq!(store.issued("web-1").unwrap().serial, "02");
        store.detach();
        assert!(matches!(
            store.record_renewal("web-1", issued("04", 900)),
            Err(Refused::Unavailable(_))
        ));
        assert_eq!(store.issued("web-1").unwrap().serial, "02");
    }

    #[test]
    fn a_revoked_host_is_enrolled_again_only_with_a_newer_token() {
        let (_dir, db, store) = open();
        let (old, _) = store.create(new(5, 10_000, None), 0, |_| false).unwrap();
        store
            .redeem(&old, "web-1", false, issued("0a", 5_000), 0)
            .unwrap();
        let revoked = store
            .revoke_host("web-1", "stolen", "ops", 100, &["0b".to_owned()])
            .unwrap();
        assert_eq!(revoked.serials, ["0a", "0b"]);
        let refused = Refused::HostRevoked {
            host: "web-1".to_owned(),
            revoked_ms: 100,
        };
        assert_eq!(store.check(&old, "web-1", true, 200), Err(refused.clone()));
        assert_eq!(
            store.redeem(&old, "web-1", true, issued("0c", 5_000), 200),
            Err(refused.clone())
        );
        assert_eq!(
            store.record_renewal("web-1", issued("0c", 5_000)),
            Err(refused)
        );
        // Other hosts are not affected; the record survives a reopen.
        store.check(&old, "web-2", false, 200).unwrap();
        drop(store);
        let store = EnrollStore::open(&db).unwrap();
        assert_eq!(store.revoked(), std::slice::from_ref(&revoked));
        // A token made after the revocation reinstates the host, even
        // though its last certificate has not expired.
        let (newer, _) = store.create(new(1, 10_000, None), 200, |_| false).unwrap();
        let (_, reinstated) = store
            .redeem(&newer, "web-1", false, issued("0d", 5_000), 300)
            .unwrap();
        let reinstated = reinstated.unwrap();
        assert_eq!(reinstated.reinstated_ms, Some(300));
        assert_eq!(reinstated.serials, revoked.serials);
        assert_eq!(store.revoked(), std::slice::from_ref(&reinstated));
        // Renewals and other tokens work again.
        store.record_renewal("web-1", issued("0e", 5_000)).unwrap();
        store.check(&old, "web-1", true, 400).unwrap();
        drop(store);
        let store = EnrollStore::open(&db).unwrap();
        assert_eq!(store.revoked(), [reinstated]);
    }

    #[test]
    fn two_redemptions_of_a_last_use_race_and_one_wins() {
        let (_dir, _db, store) = open();
        for round in 0..20 {
            let (text, _) = store.create(new(1, 1_000, None), 0, |_| false).unwrap();
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<Result<_, Refused>> = std::thread::scope(|s| {
                let handles: Vec<_> = ["a", "b"]
                    .iter()
                    .map(|host| {
                        let (store, text, barrier) = (&store, &text, &barrier);
                        let host = format!("{host}{round}");
                        s.spawn(move || {
                            barrier.wait();
                            store.redeem(text, &host, false, issued("01", 500), 0)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "{results:?}");
            assert!(results.contains(&Err(Refused::UsedUp)), "{results:?}");
        }
    }

    #[test]
    fn detached_it_refuses_redemptions_and_attach_writes_memory_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = EnrollStore::open(&db).unwrap();
        let (text, _) = store.create(new(2, 1_000, None), 0, |_| false).unwrap();
        store
            .redeem(&text, "a", false, issued("01", 500), 0)
            .unwrap();
        store.detach();
        drop(db);
        assert!(store.failure().is_some());
        assert!(matches!(
            store.redeem(&text, "b", false, issued("02", 500), 0),
            Err(Refused::Unavailable(_))
        ));
        assert!(matches!(
            store.create(new(1, 1_000, None), 0, |_| false),
            Err(crate::tokens::TokenError::Unavailable(_))
        ));
        let db = crate::state::reopen_dropped(dir.path());
        store.attach(&db).unwrap();
        assert_eq!(store.failure(), None);
        store
            .redeem(&text, "b", false, issued("02", 500), 0)
            .unwrap();
        drop(store);
        let reopened = EnrollStore::open(&db).unwrap();
        assert_eq!(reopened.list()[0].uses_left, 0);
        assert_eq!(reopened.issued("a").unwrap().serial, "01");
        assert_eq!(reopened.issued("b").unwrap().serial, "02");
    }

    #[test]
    fn bad_uses_lifetimes_and_names_are_refused_naming_the_field() {
        let (_dir, _db, store) = open();
        for (uses, ttl, name, field) in [
            (0, 1_000, None, "uses"),
            (MAX_USES + 1, 1_000, None, "uses"),
            (1, 0, None, "ttl_ms"),
            (1, MAX_TTL_MS + 1, None, "ttl_ms"),
            (1, 1_000, Some("-x"), "name"),
        ] {
            let mut token = new(uses, ttl, None);
            token.name = name.map(str::to_owned);
            match store.create(token, 0, |_| false) {
                Err(crate::tokens::TokenError::Invalid(m)) => assert!(m.starts_with(field), "{m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut named = new(1, 1_000, None);
        named.name = Some("taken".to_owned());
        assert!(matches!(
            store.create(named, 0, |n| n == "taken"),
            Err(crate::tokens::TokenError::Exists(_))
        ));
    }
}
