//! The HTTPS API: Prometheus' HTTP query API over the store, for Grafana,
//! promtool and operators' scripts.
//!
//! Connections come through the same TLS listener as gRPC's
//! (`hostwatch_pki::transport`: handshake pool, admission, idle closing),
//! with client certificates optional at the TLS layer, since a client may
//! bring an API token instead; every request must still be authenticated,
//! by an operator or viewer certificate, a bearer token (`tokens`) or a
//! console session's cookie, or gets 401 (a console page: the login page).
//! HTTP/1.1 and HTTP/2 by ALPN, served by hyper-util's automatic builder.
//!
//! Layout: `api` (the routes and their handlers), `params` (parameters,
//! times and durations), `json` (Prometheus' shapes), `error` (errors and
//! their types), `reference` (metric metadata from docs/metrics.md, and
//! alerts), `caller` (who sent a request, and the CSRF check of
//! mutations), `session` (the console's sessions), `login` (login,
//! logout and the login limiter), `hostwatch` (hostwatch's own reads),
//! `silences` (creating, listing and expiring silences), `hooks` (listing
//! hooks and sending one a test); here the accept loop and the
//! `Authorization` header.

mod api;
mod caller;
mod console;
mod error;
mod hooks;
mod hostwatch;
mod json;
mod login;
mod params;
mod reference;
mod session;
mod silences;

pub(crate) use api::Api;
pub(crate) use json::query_data;

use axum::http::{HeaderValue, Request};
use axum::response::Response;
use base64::Engine as _;
use error::ApiError;
use hostwatch_pki::transport::{Connections, ListenerLimits, PeerInfo, ServerTls, incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tower::ServiceExt;

/// Serves the API on `listener` until `stop` is cancelled, then lets open
/// requests finish; the returned handle ends once every connection has
/// closed (the caller closes the rest after its drain timeout, through
/// the returned [`Connections`]).
pub(crate) fn spawn(
    api: Api,
    listener: TcpListener,
    tls: ServerTls,
    limits: &crate::config::Limits,
    listener_limits: ListenerLimits,
    stop: CancellationToken,
) -> (JoinHandle<()>, Connections) {
    let mut incoming = incoming(listener, tls, listener_limits, stop.cancelled_owned());
    let connections = incoming.connections();
    let router = console::router(login::router(api.clone()).merge(api::router(api.clone())));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's timers (HTTP/1 header reads, HTTP/2 keepalive) on tokio.
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        // Ends when `stop` is cancelled.
        while let Some(connection) = incoming.next().await {
            let Ok(connection) = connection else { continue };
            let peer = connection.connect_info();
            let (router, api) = (router.clone(), api.clone());
            let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
                handle(router.clone(), api.clone(), peer.clone(), request)
            });
            let served = builder
                .serve_connection(TokioIo::new(connection), TowerToHyperService::new(service))
                .into_owned();
            let served = graceful.watch(served);
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            });
        }
        graceful.shutdown().await;
    });
    (task, connections)
}

/// One request: counted open on its connection (the idle timeout spares
/// it), authenticated (its sender in its extensions, with its peer), then
/// routed. Only the login page and the assets need no credential.
async fn handle(
    router: axum::Router,
    api: Api,
    peer: PeerInfo,
    request: Request<hyper::body::Incoming>,
) -> Result<Response, Infallible> {
    let _call = peer.call_opened();
    let (mut parts, body) = request.into_parts();
    let tokens = &api.shared.tokens;
    match caller::authenticate(&peer, &parts.headers, tokens, &api.logins.sessions) {
        Ok(principal) => {
            parts.extensions.insert(principal);
        }
        Err(_) if is_public(parts.uri.path()) => {}
        Err(refusal) => {
            let total = api
                .shared
                .refused_messages
                .http_unauthorized
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let e = refusal.error();
            tracing::debug!(peer.addr = %peer.addr, error = %e, total, "HTTP request refused");
            let had_cookie = login::has_session_cookie(&parts.headers);
            return Ok(login::unauthenticated(&parts, &refusal, had_cookie));
        }
    }
    parts.extensions.insert(peer.clone());
    let path = parts.uri.path().to_owned();
    let request = Request::from_parts(parts, axum::body::Body::new(body));
    let started = std::time::Instant::now();
    let response = router.oneshot(request).await;
    if let Ok(response) = &response {
        let status = response.status().as_u16();
        api.shared
            .metrics
            .http
            .observe(&path, status, started.elapsed());
    }
    response
}

/// Whether `path` is served without a credential: the login page and the
/// console's assets (the project's own files, no data).
fn is_public(path: &str) -> bool {
    login::is_public(path) || path.starts_with("/assets/")
}

/// The token of an `Authorization` header: `Bearer <token>`, or `Basic`
/// with the token as the password (the user name is ignored), for
/// clients that can send only basic credentials, such as promtool 2.42
/// with `https://user:<token>@host` (Go sends a URL's user information
/// as basic credentials). Errors never quote the header: it may hold a
/// secret.
fn header_token(value: &HeaderValue) -> Result<String, ApiError> {
    let malformed = || {
        ApiError::Unauthorized(
            "malformed Authorization header: send \"Authorization: Bearer <token>\"".into(),
        )
    };
    let (scheme, credentials) = value
        .to_str()
        .ok()
        .and_then(|text| text.split_once(' '))
        .ok_or_else(malformed)?;
    let credentials = credentials.trim_start_matches(' ');
    if credentials.is_empty() {
        return Err(malformed());
    }
    // Schemes are case-insensitive (RFC 9110).
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(credentials.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(malformed)?;
        return match decoded.split_once(':') {
            Some((_user, password)) if !password.is_empty() => Ok(password.to_owned()),
            _ => Err(ApiError::Unauthorized(
                "basic credentials carry no password: the password must be the token".into(),
            )),
        };
    }
    Err(ApiError::Unauthorized(
        "only the Bearer and Basic schemes are accepted in the Authorization header: send \"Authorization: Bearer <token>\", or use an operator or viewer client certificate".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_headers_yield_a_token_and_errors_never_quote_them() {
        for (header, token) in [
            ("Bearer hwt_abc", "hwt_abc"),
            ("bearer hwt_abc", "hwt_abc"),
            ("BEARER   hwt_abc", "hwt_abc"),
            // promtool:hwt_abc
            ("Basic cHJvbXRvb2w6aHd0X2FiYw==", "hwt_abc"),
            // :hwt_a:bc (no user; the password holds a colon)
            ("basic Omh3dF9hOmJj", "hwt_a:bc"),
        ] {
            let value = HeaderValue::from_static(header);
            assert_eq!(header_token(&value).unwrap(), token, "{header}");
        }
        for header in [
            // "user": no colon, so no password.
            "Basic dXNlcg==",
            "Basic not*base64secret1",
            "Basic ",
            "Token secret1",
            "hwt_secret1",
            "Bearer",
            "Bearer ",
            "Bearersecret1",
        ] {
            let value = HeaderValue::from_static(header);
            let e = header_token(&value).unwrap_err().to_string();
            assert!(!e.contains("secret1"), "{header}: {e}");
        }
        let binary = HeaderValue::from_bytes(b"Bearer \xffsecret1").unwrap();
        assert!(header_token(&binary).is_err());
    }
}
