//! The web console's sessions: an API token traded at login (`login`)
//! for a random session id, which the browser keeps in an `HttpOnly`,
//! `Secure`, `SameSite=Strict` cookie and sends with every request.
//!
//! Sessions live in memory only: a collector restart ends them all (the
//! console then asks to log in again). Like tokens, a session is kept by
//! the SHA-256 digest of its id, never the id itself, and holds its
//! token's digest: at each request the token is looked up again, so a
//! revoked or expired token ends its sessions at once, with nothing to
//! sweep. A session lasts `http.session_ttl`, never beyond its token's
//! own expiry. Memory stays bounded: a token holds at most
//! `http.max_sessions_per_token` sessions (a new login ends its oldest),
//! and every login sweeps out sessions that ended.
//!
//! Also here: the key of the CSRF tokens ([`CsrfKey`]), which lives and
//! dies with the sessions.

use crate::config::Http;
use crate::tokens::{TokenDigest, TokenEntry, TokenStore, digest_of};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use hostwatch_pki::Role;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The session cookie's name. The `__Host-` prefix makes browsers accept
/// it only with `Secure`, `Path=/` and no `Domain`, so no other host or
/// path can set one in its place.
pub(crate) const COOKIE: &str = "__Host-hostwatch_session";
/// The beginning of a session id, so that a leaked one is recognized.
const SESSION_PREFIX: &str = "hws_";
/// Random bytes in a session id.
const SESSION_BYTES: usize = 32;

/// SHA-256 of a session id.
pub(crate) type SessionDigest = [u8; 32];

/// A live session, as memory keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The digest of the token it was made from.
    token: TokenDigest,
    /// The token's name and role at login.
    pub(crate) token_name: String,
    pub(crate) role: Role,
    /// ms since the Unix epoch.
    pub(crate) created_ms: i64,
    pub(crate) expires_ms: i64,
}

/// Why a session cookie does not authenticate. One message for all, so
/// the answer tells nothing about which sessions exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the console session has expired or ended (logout, revoked token or collector restart): log in again"
)]
pub(crate) struct SessionEnded;

/// The console's sessions; cheap to clone.
#[derive(Clone)]
pub(crate) struct Sessions {
    live: Arc<Mutex<HashMap<SessionDigest, Session>>>,
    ttl_ms: i64,
    max_per_token: usize,
    csrf: Arc<CsrfKey>,
}

impl Sessions {
    pub(crate) fn new(config: &Http) -> Self {
        Sessions {
            live: Arc::default(),
            ttl_ms: i64::try_from(config.session_ttl.as_millis()).unwrap_or(i64::MAX),
            max_per_token: config.max_sessions_per_token,
            csrf: Arc::new(CsrfKey::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<SessionDigest, Session>> {
        // Every update is a single map operation.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of the CSRF tokens.
    pub(crate) fn csrf(&self) -> &Arc<CsrfKey> {
        &self.csrf
    }

    /// Starts a session at `now_ms` for the token `text` (already
    /// authenticated as `entry`): its id (for the cookie, shown only
    /// here) and the session. Sweeps out sessions that ended, and the
    /// token's oldest beyond `max_sessions_per_token`.
    pub(crate) fn create(
        &self,
        text: &str,
        entry: &TokenEntry,
        tokens: &TokenStore,
        now_ms: i64,
    ) -> Result<(String, Session), String> {
        let id = new_session_id()?;
        let crate::tokens::TokenKind::Api { role } = entry.kind;
        let expires_ms = now_ms
            .saturating_add(self.ttl_ms)
            .min(entry.expires_ms.unwrap_or(i64::MAX));
        let session = Session {
            token: digest_of(text),
            token_name: entry.name.clone(),
            role: role.role(),
            created_ms: now_ms,
            expires_ms,
        };
        let mut live = self.live();
        live.retain(|_, s| {
            s.expires_ms > now_ms && tokens.authenticate_digest(&s.token, now_ms).is_ok()
        });
        let mut own: Vec<(i64, SessionDigest)> = live
            .iter()
            .filter(|(_, s)| s.token == session.token)
            .map(|(digest, s)| (s.created_ms, *digest))
            .collect();
        own.sort_unstable();
        let excess = (own.len() + 1).saturating_sub(self.max_per_token);
        for (_, digest) in own.into_iter().take(excess) {
            live.remove(&digest);
        }
        live.insert(digest_of(&id), session.clone());
        Ok((id, session))
    }

    /// The session whose id is `id`, at `now_ms`: live, and its token
    /// still valid. A session found ended is removed.
    pub(crate) fn resolve(
        &self,
        id: &str,
        tokens: &TokenStore,
        now_ms: i64,
    ) -> Result<(SessionDigest, Session), SessionEnded> {
        if !well_formed(id) {
            return Err(SessionEnded);
        }
        let digest = digest_of(id);
        let mut live = self.live();
        let session = live.get(&digest).ok_or(SessionEnded)?;
        let token_holds = tokens.authenticate_digest(&session.token, now_ms).is_ok();
        if session.expires_ms <= now_ms || !token_holds {
            live.remove(&digest);
            return Err(SessionEnded);
        }
        Ok((digest, session.clone()))
    }

    /// Ends the session `digest` (logout); whether it was live.
    pub(crate) fn end(&self, digest: &SessionDigest) -> bool {
        self.live().remove(digest).is_some()
    }

    /// Sessions in memory, ended ones not yet swept included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live().len()
    }
}

fn new_session_id() -> Result<String, String> {
    use rand::TryRngCore;
    let mut bytes = [0u8; SESSION_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("no random bytes from the operating system: {e}"))?;
    Ok(format!("{SESSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether `id` has a session id's shape.
fn well_formed(id: &str) -> bool {
    id.strip_prefix(SESSION_PREFIX).is_some_and(|rest| {
        rest.len() == (SESSION_BYTES * 4).div_ceil(3)
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The `Set-Cookie` value that gives the browser session `id`, for
/// `max_age_s` seconds.
pub(crate) fn set_cookie(id: &str, max_age_s: i64) -> String {
    format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}")
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session cookie's value among a request's `Cookie` headers, if any.
pub(crate) fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// The secret behind CSRF tokens: random, made at start, never stored,
/// so tokens from before a restart no longer pass.
pub(crate) struct CsrfKey([u8; 32]);

impl CsrfKey {
    fn new() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        // The thread's generator is a CSPRNG seeded from the operating
        // system, which the TLS listener relies on already.
        rand::rng().fill_bytes(&mut key);
        CsrfKey(key)
    }

    fn mac(&self, binding: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        // HMAC takes a key of any length.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(binding);
        mac
    }

    /// The CSRF token of `binding` (what the credential is: a session's
    /// digest, a certificate's identity): HMAC-SHA-256 under the key, so
    /// nothing needs storing and only this collector can make one.
    pub(crate) fn token(&self, binding: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(binding).finalize().into_bytes())
    }

    /// Whether `presented` is `binding`'s token, compared in constant time.
    pub(crate) fn verify(&self, binding: &[u8], presented: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(presented)
            .is_ok_and(|bytes| self.mac(binding).verify_slice(&bytes).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{NewToken, TokenRole, Ttl};
    use std::time::Duration;

    fn setup(ttl: Ttl, max_per_token: usize) -> (tempfile::TempDir, TokenStore, Sessions, String) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tokens = TokenStore::open(&db).unwrap();
        let new = NewToken {
            name: "console".into(),
            role: TokenRole::Operator,
            ttl,
            created_by: "ops".into(),
        };
        let (text, _) = tokens.create(new, 0).unwrap();
        let sessions = Sessions::new(&Http {
            session_ttl: Duration::from_secs(60),
            login_attempts_per_minute: 10,
            max_sessions_per_token: max_per_token,
        });
        (dir, tokens, sessions, text)
    }

    fn login(tokens: &TokenStore, sessions: &Sessions, text: &str, now: i64) -> String {
        let entry = tokens.authenticate(text, now).unwrap();
        sessions.create(text, &entry, tokens, now).unwrap().0
    }

    #[test]
    fn a_session_lasts_its_ttl_and_ends_at_logout() {
        let (_dir, tokens, sessions, text) = setup(Ttl::Never, 4);
        let id = login(&tokens, &sessions, &text, 1_000);
        assert!(well_formed(&id), "{id}");
        let (digest, session) = sessions.resolve(&id, &tokens, 1_000).unwrap();
        assert_eq!(
            (session.role, session.token_name.as_str()),
            (Role::Operator, "console")
        );
        assert_eq!(session.expires_ms, 61_000);
        // Only digests are kept: the id is nowhere in memory.
        assert!(!format!("{:?}", sessions.live()).contains(&id[4..]));
        assert!(sessions.resolve(&id, &tokens, 60_999).is_ok());
        assert_eq!(sessions.resolve(&id, &tokens, 61_000), Err(SessionEnded));
        // Found ended, it was removed.
        assert_eq!(sessions.len(), 0);
        let id = login(&tokens, &sessions, &text, 2_000);
        let (digest2, _) = sessions.resolve(&id, &tokens, 2_000).unwrap();
        assert_ne!(digest, digest2);
        assert!(sessions.end(&digest2));
        assert!(!sessions.end(&digest2));
        assert_eq!(sessions.resolve(&id, &tokens, 2_000), Err(SessionEnded));
    }

    #[test]
    fn a_session_ends_with_its_token() {
        let (_dir, tokens, sessions, text) = setup(Ttl::Ms(30_000), 4);
        let id = login(&tokens, &sessions, &text, 0);
        // Never beyond the token's expiry.
        assert_eq!(
            sessions.resolve(&id, &tokens, 0).unwrap().1.expires_ms,
            30_000
        );
        tokens.revoke("console").unwrap();
        assert_eq!(sessions.resolve(&id, &tokens, 1), Err(SessionEnded));
    }

    #[test]
    fn a_token_holds_at_most_its_limit_and_logins_sweep() {
        let (_dir, tokens, sessions, text) = setup(Ttl::Never, 2);
        let first = login(&tokens, &sessions, &text, 0);
        let second = login(&tokens, &sessions, &text, 1);
        let third = login(&tokens, &sessions, &text, 2);
        assert_eq!(sessions.resolve(&first, &tokens, 3), Err(SessionEnded));
        assert!(sessions.resolve(&second, &tokens, 3).is_ok());
        assert!(sessions.resolve(&third, &tokens, 3).is_ok());
        assert_eq!(sessions.len(), 2);
        // Both expired: the next login sweeps them.
        login(&tokens, &sessions, &text, 70_000);
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn malformed_ids_and_cookies() {
        let (_dir, tokens, sessions, _) = setup(Ttl::Never, 2);
        let unknown = format!("{SESSION_PREFIX}{}", "A".repeat(43));
        for id in ["", "hws_", "hwt_x", &unknown, &format!("{unknown}A")] {
            assert_eq!(sessions.resolve(id, &tokens, 0), Err(SessionEnded), "{id}");
        }
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(cookie_value(&headers), None);
        headers.append("cookie", "a=b; theme=dark".parse().unwrap());
        headers.append("cookie", format!("x=1;{COOKIE}=hws_abc").parse().unwrap());
        assert_eq!(cookie_value(&headers), Some("hws_abc"));
        let set = set_cookie("hws_abc", 60);
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_credential() {
        let key = CsrfKey::new();
        let token = key.token(b"session:1");
        assert!(key.verify(b"session:1", &token));
        assert!(!key.verify(b"session:2", &token));
        assert!(!key.verify(b"session:1", ""));
        assert!(!key.verify(b"session:1", "not base64!"));
        assert!(!key.verify(b"session:1", &token[1..]));
        // Another key (a restarted collector) makes other tokens.
        assert!(!CsrfKey::new().verify(b"session:1", &token));
    }
}
