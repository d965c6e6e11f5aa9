//! Logging in to the web console with an API token, and out.
//!
//! | route | |
//! |---|---|
//! | `GET /login` | the login page (`?reason=` a notice, `?next=` where to go after) |
//! | `POST /login` | a token (form `token=`, or JSON `{"token": ...}`) for a session cookie |
//! | `POST /logout` | ends the request's session and clears its cookie (a [`Mutation`]) |
//! | `GET /api/v1/session` | who the request is, and the CSRF token of its mutations |
//!
//! A form login answers as a browser needs (303 to `next`, or the page
//! again with the reason); a JSON login answers in the API's shape.
//! Refused logins count as unauthorized requests, and each client
//! address has `http.login_attempts_per_minute` attempts ([`Limiter`]),
//! so the login cannot be used to try tokens fast.

use super::Api;
use super::caller::{Credential, Mutation, Principal, session_principal};
use super::console::{LoginNotice, login_page, with_security_headers};
use super::error::ApiError;
use super::json;
use super::session::{Sessions, clear_cookie, set_cookie};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hostwatch_pki::transport::PeerInfo;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Largest login body read: a token is 47 characters.
const MAX_LOGIN_BYTES: usize = 4096;
/// Client addresses whose attempts are counted at once; beyond it,
/// logins are refused until a minute has passed (failing closed).
const MAX_CLIENTS: usize = 10_000;
/// The window of `http.login_attempts_per_minute`.
const WINDOW: Duration = Duration::from_secs(60);

/// The console's login state: sessions and the attempts' limiter.
#[derive(Clone)]
pub(crate) struct Logins {
    pub(crate) sessions: Sessions,
    limiter: Arc<Limiter>,
}

impl Logins {
    pub(crate) fn new(config: &crate::config::Http) -> Self {
        Logins {
            sessions: Sessions::new(config),
            limiter: Arc::new(Limiter::new(config.login_attempts_per_minute)),
        }
    }
}

/// The routes above; `GET /login` is public, like `POST /login`.
pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/login", get(page).post(login))
        .route("/logout", post(logout))
        .route("/api/v1/session", get(session))
        .with_state(api)
}

/// Whether a request to `path` needs no credential: the login itself.
pub(crate) fn is_public(path: &str) -> bool {
    path == "/login"
}

/// The parameters of `GET /login` and of a login form.
fn form(bytes: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

async fn page(request: Request) -> Response {
    let params = form(request.uri().query().unwrap_or_default().as_bytes());
    let notice = match params.get("reason").map(String::as_str) {
        Some("expired") => Some(LoginNotice::Info(super::session::SessionEnded.to_string())),
        Some("logged_out") => Some(LoginNotice::Info("You are logged out.".into())),
        Some("required") => Some(LoginNotice::Info(
            "Log in with an API token, or open the console with an operator or viewer client certificate.".into(),
        )),
        _ => None,
    };
    login_page(StatusCode::OK, notice, &local_path(params.get("next")))
}

/// `next` if it is a path of this site (not `//host`, which browsers
/// read as another site), else the fleet: no open redirect.
fn local_path(next: Option<&String>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(char::is_control) =>
        {
            path.clone()
        }
        _ => "/".to_owned(),
    }
}

/// How a login arrived, and so how to answer it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Form,
    Json,
}

async fn login(State(api): State<Api>, request: Request) -> Response {
    let Some(peer) = request.extensions().get::<PeerInfo>().cloned() else {
        return ApiError::Unauthorized("no connection information".into()).into_response();
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let shape = if content_type.starts_with("application/json") {
        Shape::Json
    } else {
        Shape::Form
    };
    // A page of another site may not log the browser in (login CSRF).
    if request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v == "cross-site")
    {
        return refuse(
            shape,
            ApiError::Forbidden("a login may not come from another site".into()),
            "/",
        );
    }
    let limited = api.logins.limiter.admit(peer.addr.ip(), Instant::now());
    if let Err(retry_after_s) = limited {
        count_refusal(&api, &peer, "too many login attempts");
        let e = ApiError::TooManyRequests {
            message: format!(
                "too many login attempts from this address: at most {} a minute; try again in {retry_after_s} s",
                api.logins.limiter.per_minute
            ),
            retry_after_s,
        };
        return refuse(shape, e, "/");
    }
    let timeout = api.shared.limits.message_timeout;
    let read = axum::body::to_bytes(request.into_body(), MAX_LOGIN_BYTES);
    let body = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(body)) => body,
        _ => {
            let e = ApiError::BadData(format!(
                "cannot read the login body (at most {MAX_LOGIN_BYTES} bytes, within limits.message_timeout)"
            ));
            return refuse(shape, e, "/");
        }
    };
    let (token, next) = match parse_login(shape, &content_type, &body) {
        Ok(parsed) => parsed,
        Err(e) => return refuse(shape, e, "/"),
    };
    start_session(&api, &peer, shape, &token, &next)
}

/// Checks `token` and answers with a new session's cookie: to a form,
/// a redirect to `next`; to JSON, the session and its CSRF token.
fn start_session(api: &Api, peer: &PeerInfo, shape: Shape, token: &str, next: &str) -> Response {
    let now_ms = hostwatch_stdx::now_ms();
    let entry = match api.shared.tokens.authenticate(token, now_ms) {
        Ok(entry) => entry,
        Err(refused) => {
            count_refusal(api, peer, "login refused");
            return refuse(shape, ApiError::Unauthorized(refused.to_string()), next);
        }
    };
    let sessions = &api.logins.sessions;
    let (id, session) = match sessions.create(token, &entry, &api.shared.tokens, now_ms) {
        Ok(created) => created,
        Err(e) => return refuse(shape, ApiError::Unavailable(e), next),
    };
    tracing::info!(peer.addr = %peer.addr, token.name = %entry.name, "console login");
    // Rounded up, so a token about to expire still gets a cookie.
    let max_age_s = (session.expires_ms - now_ms + 999) / 1000;
    let mut response = match shape {
        Shape::Form => see_other(next),
        Shape::Json => {
            let digest = crate::tokens::digest_of(&id);
            let principal = session_principal(sessions, digest, session.clone());
            json::success(json!({
                "role": session.role.as_str(),
                "name": session.token_name,
                "expiresAt": session.expires_ms as f64 / 1000.0,
                "csrfToken": principal.csrf_token(),
            }))
        }
    };
    let cookie = set_cookie(&id, max_age_s);
    set_header(&mut response, header::SET_COOKIE, &cookie);
    response
}

/// The token (and, from a form, where to go next) of a login body.
fn parse_login(
    shape: Shape,
    content_type: &str,
    body: &[u8],
) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::BadData(
            "send the token as a form (token=hwt_...) or as JSON ({\"token\": \"hwt_...\"})".into(),
        )
    };
    match shape {
        Shape::Json => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Login {
                token: String,
            }
            let login: Login = serde_json::from_slice(body).map_err(|_| bad())?;
            Ok((login.token.trim().to_owned(), "/".to_owned()))
        }
        Shape::Form if content_type.starts_with("application/x-www-form-urlencoded") => {
            let params = form(body);
            let token = params.get("token").ok_or_else(bad)?.trim().to_owned();
            Ok((token, local_path(params.get("next"))))
        }
        Shape::Form => Err(bad()),
    }
}

/// A refused login, as its sender needs it: the page again with the
/// reason, or the API's error.
fn refuse(shape: Shape, e: ApiError, next: &str) -> Response {
    match shape {
        Shape::Json => e.into_response(),
        Shape::Form => {
            let status = e.status();
            let mut response = login_page(status, Some(LoginNotice::Error(e.to_string())), next);
            if let ApiError::TooManyRequests { retry_after_s, .. } = e {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_s.into());
            }
            response
        }
    }
}

fn count_refusal(api: &Api, peer: &PeerInfo, what: &str) {
    let total = api
        .shared
        .refused_messages
        .http_unauthorized
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    tracing::debug!(peer.addr = %peer.addr, total, "{what}");
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// 303 to `location` (a local path), with the console's headers.
pub(crate) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    set_header(&mut response, header::LOCATION, location);
    with_security_headers(response)
}

/// Ends the session the request came with; only a session can log out.
async fn logout(State(api): State<Api>, Mutation(principal): Mutation) -> Response {
    let Credential::Session { digest, .. } = &principal.credential else {
        return ApiError::BadData(
            "this request is not authenticated by a console session: there is nothing to log out"
                .into(),
        )
        .into_response();
    };
    api.logins.sessions.end(digest);
    tracing::info!(token.name = %principal.name(), "console logout");
    let mut response = json::success(json!({"loggedOut": true}));
    set_header(&mut response, header::SET_COOKIE, &clear_cookie());
    response
}

/// Who the request is: the console shows it, and takes the CSRF token
/// of its changes from here.
async fn session(request: Request) -> Response {
    let Some(principal) = request.extensions().get::<Principal>() else {
        return ApiError::Unauthorized("not authenticated".into()).into_response();
    };
    let (via, expires) = match &principal.credential {
        Credential::Token { .. } => ("token", None),
        Credential::Session { expires_ms, .. } => ("session", Some(*expires_ms as f64 / 1000.0)),
        Credential::Certificate { .. } => ("certificate", None),
    };
    json::success(json!({
        "via": via,
        "role": principal.role.as_str(),
        "name": principal.name(),
        "expiresAt": expires,
        "csrfToken": principal.csrf_token(),
    }))
}

/// The response to a request that is not authenticated: a console page
/// (GET or HEAD of a path outside the API's) is sent to the login page,
/// saying why; anything else gets the API's 401. A dead session cookie
/// is cleared either way.
pub(crate) fn unauthenticated(
    request: &axum::http::request::Parts,
    refusal: &super::caller::Refusal,
    had_cookie: bool,
) -> Response {
    let path = request.uri.path();
    let page = matches!(
        request.method,
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !super::console::is_api_path(path);
    let mut response = if page {
        let reason = match refusal {
            super::caller::Refusal::SessionEnded => "expired",
            super::caller::Refusal::Unauthorized(_) => "required",
        };
        let next = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("reason", reason)
            .append_pair("next", next)
            .finish();
        see_other(&format!("/login?{query}"))
    } else {
        refusal.error().into_response()
    };
    if had_cookie {
        set_header(&mut response, header::SET_COOKIE, &clear_cookie());
    }
    response
}

/// Login attempts per client address in fixed one-minute windows. IPv6
/// addresses count by their /64, which one client usually holds whole.
struct Limiter {
    per_minute: u32,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    fn new(per_minute: u32) -> Self {
        Limiter {
            per_minute,
            clients: Mutex::default(),
        }
    }

    /// Counts an attempt from `ip` at `now`: `Err` with the seconds to
    /// wait when over the limit.
    fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let key = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
            IpAddr::V6(v6) => IpAddr::V4(
                v6.to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            v4 => v4,
        };
        // A single map operation per update.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&key) {
            clients.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if clients.len() >= MAX_CLIENTS {
                return Err(WINDOW.as_secs());
            }
        }
        let (start, count) = clients.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= self.per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }
}

/// Whether `headers` carry a session cookie, live or not.
pub(crate) fn has_session_cookie(headers: &HeaderMap) -> bool {
    super::session::cookie_value(headers).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_per_address_in_minute_windows() {
        let limiter = Limiter::new(2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.admit(a, t0).is_ok());
        assert!(limiter.admit(a, t0).is_ok());
        assert_eq!(limiter.admit(a, t0 + Duration::from_secs(20)), Err(40));
        assert!(limiter.admit(b, t0).is_ok());
        assert!(limiter.admit(a, t0 + WINDOW).is_ok());
        // One /64 is one client; its IPv4-mapped form is the IPv4 address.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(limiter.admit(v6a, t0).is_ok());
        assert!(limiter.admit(v6b, t0).is_ok());
        assert!(limiter.admit(v6a, t0).is_err());
        let mapped: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        assert!(limiter.admit(mapped, t0).is_ok());
        assert!(limiter.admit(b, t0).is_err());
    }

    #[test]
    fn the_limiter_fails_closed_when_it_tracks_too_many_addresses() {
        let limiter = Limiter::new(1);
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS as u32 {
            assert!(limiter.admit(IpAddr::V4(i.into()), t0).is_ok());
        }
        let newcomer = IpAddr::V4(u32::MAX.into());
        assert!(limiter.admit(newcomer, t0).is_err());
        // Once their windows are over, they are swept out.
        assert!(limiter.admit(newcomer, t0 + WINDOW).is_ok());
    }

    #[test]
    fn next_stays_on_this_site() {
        for (next, want) in [
            (Some("/hosts/web1?range=6h"), "/hosts/web1?range=6h"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/a\nb"), "/"),
            (None, "/"),
        ] {
            let next = next.map(str::to_owned);
            assert_eq!(local_path(next.as_ref()), want, "{next:?}");
        }
    }

    #[test]
    fn login_bodies_give_a_token_or_say_what_to_send() {
        let form_type = "application/x-www-form-urlencoded";
        let (token, next) =
            parse_login(Shape::Form, form_type, b"token=+hwt_x+&next=%2Fhosts%2Fa").unwrap();
        assert_eq!((token.as_str(), next.as_str()), ("hwt_x", "/hosts/a"));
        let (token, _) =
            parse_login(Shape::Json, "application/json", br#"{"token":"hwt_y"}"#).unwrap();
        assert_eq!(token, "hwt_y");
        for (shape, content_type, body) in [
            (Shape::Form, form_type, b"tok=1".as_slice()),
            (Shape::Form, "text/plain", b"token=1".as_slice()),
            (Shape::Json, "application/json", b"{\"token\":1}".as_slice()),
            (
                Shape::Json,
                "application/json",
                b"{\"token\":\"a\",\"x\":1}".as_slice(),
            ),
            (Shape::Json, "application/json", b"not json".as_slice()),
        ] {
            let e = parse_login(shape, content_type, body).unwrap_err();
            assert!(e.to_string().contains("send the token"), "{e}");
        }
    }
}
