//! API tokens: bearer credentials for the HTTPS API, kept in the
//! collector's own database (tree `api_tokens`: name -> JSON record).
//!
//! A token's text is `hwt_` and the URL-safe base64 of 32 random bytes
//! from the operating system: the prefix lets secret scanners find a
//! leaked one. The collector keeps only the text's SHA-256 digest, with
//! the name, kind (today an API token with its role), creation and expiry:
//! a copy of the database gives no usable token. Guessing is hopeless
//! (256 random bits), so one unsalted digest is enough, and the digest of
//! a presented token is looked up in a map: the attacker controls no part
//! of what is compared.
//!
//! Memory is the index, looked up by every HTTP request; the tree follows
//! it, as the host registry's does (`hosts.rs`). A creation is written and
//! flushed before the token works, and refused while the database cannot
//! be written: a token handed out must survive a restart. A revocation
//! takes effect in memory at once, then is written; if that write fails,
//! the caller is told, and the revocation is written back with everything
//! else when the collector reopens its database ([`TokenStore::attach`]).
//!
//! Expired tokens stay listed (as expired) until revoked, or replaced by a
//! new token of the same name.

use crate::enroll::{EnrollEntry, EnrollStore, NewEnrollToken};
use crate::state::{Records, Writes};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hostwatch_pki::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// The beginning of every token's text.
pub(crate) const TOKEN_PREFIX: &str = "hwt_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Characters after the prefix: base64 of [`TOKEN_BYTES`], unpadded.
const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);
/// Longest token name.
pub(crate) const MAX_NAME_BYTES: usize = 64;
/// Longest lifetime: beyond it, a token is meant to never expire, and a
/// larger figure is more likely a unit mistake.
pub(crate) const MAX_TTL_MS: i64 = 3650 * 86_400_000;
/// The tree of the collector's database.
const TREE: &str = "api_tokens";

/// SHA-256 of a token's text.
pub(crate) type TokenDigest = [u8; 32];

/// What an API token may do: read through the HTTPS API, as a
/// certificate of the same role does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenRole {
    Viewer,
    Operator,
}

impl TokenRole {
    /// The certificate role with the same rights.
    pub(crate) fn role(self) -> Role {
        match self {
            TokenRole::Viewer => Role::Viewer,
            TokenRole::Operator => Role::Operator,
        }
    }
}

/// What a token is for, with what only that kind needs. Enrollment tokens
/// are kept apart, by `enroll::EnrollStore` (this store's `enroll`): they
/// never authenticate an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum TokenKind {
    /// A bearer credential of the HTTPS API.
    Api { role: TokenRole },
}

/// A token as operators see it: everything but its text and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenEntry {
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) kind: TokenKind,
    /// ms since the Unix epoch.
    pub(crate) created_ms: i64,
    /// The operator who created it.
    pub(crate) created_by: String,
    /// ms since the Unix epoch; `None`: never.
    pub(crate) expires_ms: Option<i64>,
}

impl TokenEntry {
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms >= at)
    }
}

/// A stored record: the entry (an API token's, or an enrollment
/// token's) and its token's digest (hex).
#[derive(Serialize, Deserialize)]
struct Record<E> {
    #[serde(flatten)]
    entry: E,
    sha256: String,
}

/// A token of either kind, as revoked.
#[derive(Debug, Clone)]
pub(crate) enum AnyToken {
    Api(TokenEntry),
    Enroll(EnrollEntry),
}

/// How long a new token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    Never,
    Ms(i64),
}

/// What to create.
#[derive(Debug, Clone)]
pub(crate) struct NewToken {
    pub(crate) name: String,
    pub(crate) role: TokenRole,
    pub(crate) ttl: Ttl,
    pub(crate) created_by: String,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// A bad field (named).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "a token named {0:?} exists and has not expired: revoke it first or choose another name"
    )]
    Exists(String),
    #[error("no token is named {0:?}")]
    NotFound(String),
    /// Nothing was changed: the database cannot be written.
    #[error(
        "the collector's state database cannot be written ({0}); try again once it is reopened"
    )]
    Unavailable(String),
    /// Revoked in memory, not yet on disk.
    #[error(
        "token {name:?} is revoked and refused from now on, but the revocation is not stored yet ({cause}): it is written once the collector's state database is reopened, and a collector restart before then would bring the token back"
    )]
    RevokedNotStored { name: String, cause: String },
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

/// Why a presented token does not authenticate. Worded for the client:
/// never the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the bearer token is not a hostwatch API token (hwt_...)")]
    Malformed,
    #[error("the bearer token is unknown or revoked")]
    Unknown,
    #[error("the bearer token has expired")]
    Expired,
}

/// The tokens in memory, by name and by digest.
#[derive(Default)]
struct Index {
    by_name: BTreeMap<String, (TokenDigest, TokenEntry)>,
    by_digest: HashMap<TokenDigest, String>,
}

impl Index {
    fn insert(&mut self, digest: TokenDigest, entry: TokenEntry) {
        if let Some((old, _)) = self.by_name.remove(&entry.name) {
            self.by_digest.remove(&old);
        }
        self.by_digest.insert(digest, entry.name.clone());
        self.by_name.insert(entry.name.clone(), (digest, entry));
    }

    fn remove(&mut self, name: &str) -> Option<TokenEntry> {
        let (digest, entry) = self.by_name.remove(name)?;
        self.by_digest.remove(&digest);
        Some(entry)
    }
}

/// The token store; cheap to clone.
#[derive(Clone)]
pub(crate) struct TokenStore {
    /// Locked for a whole change, before `index`: changes go one at a time,
    /// while lookups only take `index` for a moment.
    records: Records,
    index: Arc<RwLock<Index>>,
    /// Enrollment tokens and the certificates issued with them; they share
    /// the names of API tokens, and heal with them.
    pub(crate) enroll: EnrollStore,
}

impl TokenStore {
    /// Loads every token of `db`; an undecodable record is skipped and logged.
    pub(crate) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let tree = db.open_tree(TREE)?;
        let mut index = Index::default();
        for item in tree.iter() {
            let (key, value) = item?;
            match decode(&value) {
                Some((digest, entry)) => index.insert(digest, entry),
                None => tracing::warn!(key = ?key, "skipping undecodable API token record"),
            }
        }
        Ok(TokenStore {
            records: Records::new(tree),
            index: Arc::new(RwLock::new(index)),
            enroll: EnrollStore::open(db)?,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Each update leaves both maps consistent before it can panic.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a token at `now_ms`: its text (shown once) and its entry.
    /// Written and flushed before it is returned. Blocks on the disk.
    pub(crate) fn create(
        &self,
        new: NewToken,
        now_ms: i64,
    ) -> Result<(String, TokenEntry), TokenError> {
        check_name(&new.name)?;
        let expires_ms = match new.ttl {
            Ttl::Never => None,
            Ttl::Ms(ms) if ms <= 0 => {
                return Err(TokenError::Invalid(format!(
                    "ttl_ms must be more than 0 (or set never_expires), not {ms}"
                )));
            }
            Ttl::Ms(ms) if ms > MAX_TTL_MS => {
                return Err(TokenError::Invalid(format!(
                    "ttl_ms {ms} is more than ten years ({MAX_TTL_MS}); set never_expires for a token without expiry"
                )));
            }
            Ttl::Ms(ms) => Some(now_ms.saturating_add(ms)),
        };
        let mut records = self.records.lock();
        let live = self
            .read()
            .by_name
            .get(&new.name)
            .is_some_and(|(_, existing)| !existing.expired(now_ms));
        if live || self.enroll.holds_live(&new.name, now_ms) {
            return Err(TokenError::Exists(new.name));
        }
        let tree = match &*records {
            Writes::Writable(tree) => tree.clone(),
            Writes::Failed(cause) => return Err(TokenError::Unavailable(cause.clone())),
        };
        let text = new_token_text()?;
        let digest = digest_of(&text);
        let entry = TokenEntry {
            name: new.name,
            kind: TokenKind::Api { role: new.role },
            created_ms: now_ms,
            created_by: new.created_by,
            expires_ms,
        };
        let written = tree
            .insert(entry.name.as_bytes(), encode(&digest, &entry))
            .and_then(|_| tree.flush());
        if let Err(e) = written {
            let cause = format!("a write failed ({e})");
            *records = Writes::Failed(cause.clone());
            return Err(TokenError::Unavailable(cause));
        }
        self.write().insert(digest, entry.clone());
        Ok((text, entry))
    }

    /// Every token, by name.
    pub(crate) fn list(&self) -> Vec<TokenEntry> {
        self.read()
            .by_name
            .values()
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    /// Revokes the token named `name`: refused from this moment, then
    /// deleted from the disk. Blocks on the disk.
    pub(crate) fn revoke(&self, name: &str) -> Result<TokenEntry, TokenError> {
        let mut records = self.records.lock();
        let entry = self
            .write()
            .remove(name)
            .ok_or_else(|| TokenError::NotFound(name.to_owned()))?;
        let cause = match &*records {
            Writes::Failed(cause) => cause.clone(),
            Writes::Writable(tree) => {
                match tree.remove(name.as_bytes()).and_then(|_| tree.flush()) {
                    Ok(_) => return Ok(entry),
                    Err(e) => {
                        let cause = format!("a write failed ({e})");
                        *records = Writes::Failed(cause.clone());
                        cause
                    }
                }
            }
        };
        Err(TokenError::RevokedNotStored {
            name: name.to_owned(),
            cause,
        })
    }

    /// The token whose text is `text`, if it is known and has not expired at
    /// `now_ms`.
    pub(crate) fn authenticate(&self, text: &str, now_ms: i64) -> Result<TokenEntry, Refused> {
        if !well_formed(text) {
            return Err(Refused::Malformed);
        }
        self.authenticate_digest(&digest_of(text), now_ms)
    }

    /// The token whose digest is `digest`, if it is known and has not
    /// expired at `now_ms`: how a console session (which keeps its token's
    /// digest) checks at each request that its token still holds.
    pub(crate) fn authenticate_digest(
        &self,
        digest: &TokenDigest,
        now_ms: i64,
    ) -> Result<TokenEntry, Refused> {
        let index = self.read();
        let entry = index
            .by_digest
            .get(digest)
            .and_then(|name| index.by_name.get(name))
            .map(|(_, entry)| entry)
            .ok_or(Refused::Unknown)?;
        if entry.expired(now_ms) {
            return Err(Refused::Expired);
        }
        Ok(entry.clone())
    }

    /// Why token records cannot be written, if so: a write failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.records.failure().or_else(|| self.enroll.failure())
    }

    /// Creates an enrollment token; its name must not be a live API
    /// token's either. Blocks on the disk.
    pub(crate) fn create_enroll(
        &self,
        new: NewEnrollToken,
        now_ms: i64,
    ) -> Result<(String, EnrollEntry), TokenError> {
        let _changes = self.records.lock();
        self.enroll.create(new, now_ms, |name| {
            self.read()
                .by_name
                .get(name)
                .is_some_and(|(_, e)| !e.expired(now_ms))
        })
    }

    /// Revokes the API or enrollment token named `name`.
    pub(crate) fn revoke_any(&self, name: &str) -> Result<AnyToken, TokenError> {
        match self.enroll.revoke(name) {
            Ok(Some(entry)) => Ok(AnyToken::Enroll(entry)),
            Ok(None) => self.revoke(name).map(AnyToken::Api),
            Err((_, cause)) => Err(TokenError::RevokedNotStored {
                name: name.to_owned(),
                cause,
            }),
        }
    }

    /// Lets go of the tree, so that the database can be reopened; tokens
    /// are kept in memory only until [`TokenStore::attach`].
    pub(crate) fn detach(&self) {
        self.records.detach();
        self.enroll.detach();
    }

    /// Takes the tree of the reopened database `db` and makes it hold what
    /// memory holds: tokens revoked meanwhile are deleted, the others
    /// written.
    pub(crate) fn attach(&self, db: &sled::Db) -> Result<(), sled::Error> {
        let tree = db.open_tree(TREE)?;
        let mut records = self.records.lock();
        let index = self.read();
        for key in tree.iter().keys() {
            let key = key?;
            let known = std::str::from_utf8(&key).is_ok_and(|n| index.by_name.contains_key(n));
            if !known {
                tree.remove(key)?;
            }
        }
        for (name, (digest, entry)) in &index.by_name {
            tree.insert(name.as_bytes(), encode(digest, entry))?;
        }
        tree.flush()?;
        *records = Writes::Writable(tree);
        self.enroll.attach(db)
    }
}

/// A token name: 1 to [`MAX_NAME_BYTES`] of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit (so it cannot pass for a command-line option).
pub(crate) fn check_name(name: &str) -> Result<(), TokenError> {
    let problem = if name.is_empty() {
        "is required".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!(
            "has {} bytes, more than the limit of {MAX_NAME_BYTES}",
            name.len()
        )
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        format!("{name:?} may hold only A-Z a-z 0-9 . _ -")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        format!("{name:?} must start with a letter or digit")
    } else {
        return Ok(());
    };
    Err(TokenError::Invalid(format!("name {problem}")))
}

pub(crate) fn new_token_text() -> Result<String, TokenError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether `text` has a token's shape: the prefix and the base64 alphabet.
pub(crate) fn well_formed(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == TOKEN_CHARS
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// SHA-256 of `text`.
pub(crate) fn digest_of(text: &str) -> TokenDigest {
    Sha256::digest(text.as_bytes()).into()
}

/// The stored form of a token record: `entry` and the digest, as JSON.
pub(crate) fn encode<E: Serialize>(digest: &TokenDigest, entry: &E) -> Vec<u8> {
    let record = Record {
        entry,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    };
    // A struct of strings and integers always serializes.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// A record [`encode`] wrote; `None` if it is not one.
pub(crate) fn decode<E: serde::de::DeserializeOwned>(value: &[u8]) -> Option<(TokenDigest, E)> {
    let record: Record<E> = serde_json::from_slice(value).ok()?;
    let hex = record.sha256.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some((digest, record.entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, role: TokenRole, ttl: Ttl) -> NewToken {
        NewToken {
            name: name.to_owned(),
            role,
            ttl,
            created_by: "ops".to_owned(),
        }
    }

    fn open() -> (tempfile::TempDir, sled::Db, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = TokenStore::open(&db).unwrap();
        (dir, db, store)
    }

    #[test]
    fn a_token_authenticates_until_revoked_and_survives_reopen() {
        let (_dir, db, store) = open();
        let now = 1_000_000;
        let (text, entry) = store
            .create(new("grafana", TokenRole::Viewer, Ttl::Ms(60_000)), now)
            .unwrap();
        assert!(
            text.starts_with(TOKEN_PREFIX) && well_formed(&text),
            "{text}"
        );
        assert_eq!(entry.expires_ms, Some(now + 60_000));
        assert_eq!(store.authenticate(&text, now).unwrap(), entry);
        // Only the digest is stored: the text is nowhere on disk.
        let stored = db.open_tree(TREE).unwrap().get("grafana").unwrap().unwrap();
        let stored = String::from_utf8(stored.to_vec()).unwrap();
        assert!(!stored.contains(&text[TOKEN_PREFIX.len()..]), "{stored}");
        assert!(stored.contains("\"role\":\"viewer\""), "{stored}");
        drop(store);
        let store = TokenStore::open(&db).unwrap();
        assert_eq!(store.list(), vec![entry.clone()]);
        assert_eq!(store.authenticate(&text, now).unwrap(), entry);
        assert_eq!(store.revoke("grafana").unwrap(), entry);
        assert_eq!(store.authenticate(&text, now), Err(Refused::Unknown));
        assert!(matches!(
            store.revoke("grafana"),
            Err(TokenError::NotFound(_))
        ));
        drop(store);
        assert!(TokenStore::open(&db).unwrap().list().is_empty());
    }

    #[test]
    fn tokens_expire_and_an_expired_name_can_be_taken_again() {
        let (_dir, _db, store) = open();
        let now = 1_000_000;
        let (old, _) = store
            .create(new("ci", TokenRole::Operator, Ttl::Ms(1_000)), now)
            .unwrap();
        assert!(store.authenticate(&old, now + 999).is_ok());
        assert_eq!(store.authenticate(&old, now + 1_000), Err(Refused::Expired));
        assert!(store.list()[0].expired(now + 1_000));
        // Live: the name is taken; expired: replaced.
        assert!(matches!(
            store.create(new("ci", TokenRole::Viewer, Ttl::Never), now + 999),
            Err(TokenError::Exists(_))
        ));
        let (fresh, entry) = store
            .create(new("ci", TokenRole::Viewer, Ttl::Never), now + 1_000)
            .unwrap();
        assert_eq!(entry.expires_ms, None);
        assert_eq!(store.authenticate(&old, now), Err(Refused::Unknown));
        assert_eq!(store.authenticate(&fresh, i64::MAX).unwrap(), entry);
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn bad_names_and_lifetimes_are_refused_naming_the_field() {
        let (_dir, _db, store) = open();
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for (name, ttl, field) in [
            ("", Ttl::Never, "name"),
            (long.as_str(), Ttl::Never, "name"),
            ("has space", Ttl::Never, "name"),
            ("slash/", Ttl::Never, "name"),
            ("-flag", Ttl::Never, "name"),
            (".hidden", Ttl::Never, "name"),
            ("ok", Ttl::Ms(0), "ttl_ms"),
            ("ok", Ttl::Ms(-5), "ttl_ms"),
            ("ok", Ttl::Ms(MAX_TTL_MS + 1), "ttl_ms"),
        ] {
            match store.create(new(name, TokenRole::Viewer, ttl), 0) {
                Err(TokenError::Invalid(m)) => assert!(m.starts_with(field), "{name:?}: {m}"),
                other => panic!("{name:?} {ttl:?}: {other:?}"),
            }
        }
        assert!(store.list().is_empty());
        let longest = "a".repeat(MAX_NAME_BYTES);
        for name in [longest.as_str(), "grafana-1.prod_x", "0"] {
            store
                .create(new(name, TokenRole::Viewer, Ttl::Ms(MAX_TTL_MS)), 0)
                .unwrap();
        }
    }

    #[test]
    fn malformed_and_unknown_texts_are_told_apart() {
        let (_dir, _db, store) = open();
        let (text, _) = store
            .create(new("a", TokenRole::Viewer, Ttl::Never), 0)
            .unwrap();
        let mut unknown = text.clone();
        unknown.replace_range(TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + 1, "Z");
        if unknown == text {
            unknown.replace_range(TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + 1, "Y");
        }
        assert_eq!(store.authenticate(&unknown, 0), Err(Refused::Unknown));
        let body = &text[TOKEN_PREFIX.len()..];
        for bad in [
            String::new(),
            body.to_owned(),
            format!("xyz_{body}"),
            format!("{text}A"),
            text[..text.len() - 1].to_owned(),
            format!("{}+{}", &text[..10], &text[11..]),
            format!("{text} "),
        ] {
            assert_eq!(
                store.authenticate(&bad, 0),
                Err(Refused::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn attach_writes_back_what_memory_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = TokenStore::open(&db).unwrap();
        for name in ["a", "b"] {
            store
                .create(new(name, TokenRole::Viewer, Ttl::Never), 0)
                .unwrap();
        }
        store.detach();
        drop(db);
        assert!(store.failure().is_some());
        assert!(matches!(
            store.revoke("a"),
            Err(TokenError::RevokedNotStored { .. })
        ));
        assert!(matches!(
            store.create(new("c", TokenRole::Viewer, Ttl::Never), 0),
            Err(TokenError::Unavailable(_))
        ));
        let db = crate::state::reopen_dropped(dir.path());
        store.attach(&db).unwrap();
        assert_eq!(store.failure(), None);
        drop(store);
        let names: Vec<String> = TokenStore::open(&db)
            .unwrap()
            .list()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn undecodable_records_are_skipped() {
        let (_dir, db, store) = open();
        let (text, _) = store
            .create(new("good", TokenRole::Operator, Ttl::Never), 0)
            .unwrap();
        let tree = db.open_tree(TREE).unwrap();
        tree.insert("bad", b"{not json".to_vec()).unwrap();
        tree.insert("short", br#"{"name":"short","kind":"api","role":"viewer","created_ms":0,"created_by":"x","expires_ms":null,"sha256":"00"}"#.to_vec()).unwrap();
        drop(store);
        let store = TokenStore::open(&db).unwrap();
        assert_eq!(store.list().len(), 1);
        assert!(store.authenticate(&text, 0).is_ok());
    }
}
