//! Who sent a request ([`Principal`]), found once per request by
//! [`authenticate`] and attached to it, and the CSRF rule for the
//! requests that change something ([`Mutation`]).
//!
//! Credentials, in this order: an `Authorization` header (an API token),
//! judged alone when present; a console session's cookie, when it is
//! live; an operator's or viewer's client certificate. A dead session
//! cookie does not hide a valid certificate, but without one the answer
//! says the session ended, so the console asks to log in again.
//!
//! CSRF: browsers attach cookies (within `SameSite=Strict`'s bounds)
//! and client certificates to requests on their own, even those a page
//! of another site makes; they never attach an `Authorization` header.
//! So every mutation without that header must carry `X-CSRF-Token`, the
//! token of its credential (`GET /api/v1/session`, or the login's
//! answer): an HMAC of the session's digest or of the certificate's
//! identity under a key only this collector holds. Another site cannot
//! read it (no CORS), nor send a custom header without a preflight,
//! which is refused.

use super::error::ApiError;
use super::header_token;
use super::session::{Session, SessionDigest, SessionEnded, Sessions, cookie_value};
use crate::auth::{self, Access};
use crate::tokens::{TokenKind, TokenStore};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use hostwatch_pki::Role;
use hostwatch_pki::transport::PeerInfo;
use std::sync::Arc;

/// The header a mutation without an `Authorization` header must carry.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// How a request proved who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// An API token in an `Authorization` header (the token's name).
    Token { name: String },
    /// A console session (its token's name).
    Session {
        digest: SessionDigest,
        token_name: String,
        expires_ms: i64,
    },
    /// An operator's or viewer's client certificate (its name).
    Certificate { name: String },
}

/// An authenticated request's sender, in the request's extensions.
#[derive(Clone)]
pub(crate) struct Principal {
    pub(crate) role: Role,
    pub(crate) credential: Credential,
    csrf: Arc<super::session::CsrfKey>,
}

impl Principal {
    /// What the credential's CSRF token is bound to; `None` for a token
    /// header, which needs none.
    fn csrf_binding(&self) -> Option<Vec<u8>> {
        match &self.credential {
            Credential::Token { .. } => None,
            Credential::Session { digest, .. } => Some([b"session:".as_slice(), digest].concat()),
            Credential::Certificate { name } => {
                Some(format!("certificate:{}/{name}", self.role).into_bytes())
            }
        }
    }

    /// The CSRF token this sender's mutations must carry, if any.
    pub(crate) fn csrf_token(&self) -> Option<String> {
        self.csrf_binding().map(|b| self.csrf.token(&b))
    }

    /// Checks a mutation's `X-CSRF-Token` header against the credential.
    fn check_csrf(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(binding) = self.csrf_binding() else {
            return Ok(());
        };
        let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        match presented {
            None => Err(ApiError::Forbidden(
                "missing X-CSRF-Token header: a change made with a session cookie or a client certificate must carry the token GET /api/v1/session answers".into(),
            )),
            Some(token) if self.csrf.verify(&binding, token) => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "the X-CSRF-Token header does not match this session or certificate (the collector may have restarted): reload the page".into(),
            )),
        }
    }

    /// Refuses (403) unless the sender has the operator role.
    pub(crate) fn require_operator(&self) -> Result<(), ApiError> {
        if self.role == Role::Operator {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this needs the operator role; the request was made with the {} role",
            self.role
        )))
    }

    /// The name of the token or certificate.
    pub(crate) fn name(&self) -> &str {
        match &self.credential {
            Credential::Token { name } | Credential::Certificate { name } => name,
            Credential::Session { token_name, .. } => token_name,
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A session cookie that no longer holds, and no certificate.
    SessionEnded,
    /// Anything else, with a reason for the client.
    Unauthorized(String),
}

impl Refusal {
    pub(crate) fn error(&self) -> ApiError {
        match self {
            Refusal::SessionEnded => ApiError::Unauthorized(SessionEnded.to_string()),
            Refusal::Unauthorized(why) => ApiError::Unauthorized(why.clone()),
        }
    }
}

/// Who sent a request with `headers` on `peer`'s connection (see the
/// module's notes for the order of credentials).
pub(crate) fn authenticate(
    peer: &PeerInfo,
    headers: &HeaderMap,
    tokens: &TokenStore,
    sessions: &Sessions,
) -> Result<Principal, Refusal> {
    let now_ms = hostwatch_stdx::now_ms();
    let principal = |role, credential| Principal {
        role,
        credential,
        csrf: sessions.csrf().clone(),
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = header_token(value).map_err(|e| Refusal::Unauthorized(e.to_string()))?;
        let entry = tokens
            .authenticate(&text, now_ms)
            .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
        let TokenKind::Api { role } = entry.kind;
        return Ok(principal(
            role.role(),
            Credential::Token { name: entry.name },
        ));
    }
    let mut session_ended = false;
    if let Some(id) = cookie_value(headers) {
        match sessions.resolve(id, tokens, now_ms) {
            Ok((digest, session)) => return Ok(session_principal(sessions, digest, session)),
            Err(SessionEnded) => session_ended = true,
        }
    }
    match auth::check(Some(peer), Access::Read) {
        Ok(caller) => Ok(principal(
            caller.identity.role,
            Credential::Certificate {
                name: caller.identity.name,
            },
        )),
        Err(_) if session_ended => Err(Refusal::SessionEnded),
        Err(e) => Err(Refusal::Unauthorized(e.to_string())),
    }
}

/// The sender of requests made with the session `digest`.
pub(crate) fn session_principal(
    sessions: &Sessions,
    digest: SessionDigest,
    session: Session,
) -> Principal {
    Principal {
        role: session.role,
        credential: Credential::Session {
            digest,
            token_name: session.token_name,
            expires_ms: session.expires_ms,
        },
        csrf: sessions.csrf().clone(),
    }
}

/// A request that changes something: its sender, whose CSRF token was
/// checked when it came from a browser (no `Authorization` header).
/// Mutating handlers take it as an extractor; it answers 401 for a
/// request with no sender and 403 for a missing or wrong CSRF token.
pub(crate) struct Mutation(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Mutation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "log in, or use an API token or an operator or viewer client certificate"
                        .into(),
                )
            })?;
        principal.check_csrf(&parts.headers)?;
        Ok(Mutation(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One key for all, as in a running collector.
    static SESSIONS: std::sync::LazyLock<Sessions> =
        std::sync::LazyLock::new(|| Sessions::new(&crate::config::Http::default()));

    fn principal(role: Role, credential: Credential) -> Principal {
        let sessions = &*SESSIONS;
        Principal {
            role,
            credential,
            csrf: sessions.csrf().clone(),
        }
    }

    fn with_csrf(token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(CSRF_HEADER, token.parse().unwrap());
        }
        headers
    }

    #[test]
    fn browser_credentials_need_their_own_csrf_token() {
        let session = principal(
            Role::Viewer,
            Credential::Session {
                digest: [1; 32],
                token_name: "console".into(),
                expires_ms: 0,
            },
        );
        let certificate = principal(
            Role::Operator,
            Credential::Certificate {
                name: "alice".into(),
            },
        );
        for p in [&session, &certificate] {
            let token = p.csrf_token().unwrap();
            assert!(p.check_csrf(&with_csrf(Some(&token))).is_ok());
            let missing = p.check_csrf(&with_csrf(None)).unwrap_err().to_string();
            assert!(missing.contains("missing X-CSRF-Token"), "{missing}");
            let wrong = p.check_csrf(&with_csrf(Some("x"))).unwrap_err().to_string();
            assert!(wrong.contains("does not match"), "{wrong}");
        }
        // One credential's token does not pass for another's.
        let other = session.csrf_token().unwrap();
        assert!(certificate.check_csrf(&with_csrf(Some(&other))).is_err());
        // A token header needs none.
        let token = principal(Role::Viewer, Credential::Token { name: "g".into() });
        assert_eq!(token.csrf_token(), None);
        assert!(token.check_csrf(&with_csrf(None)).is_ok());
        assert!(token.require_operator().is_err());
        assert!(certificate.require_operator().is_ok());
    }
}
