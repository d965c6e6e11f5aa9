//! The HTTPS API: Prometheus' HTTP query API over the store, for Grafana,
//! promtool and operators' scripts.
//!
//! Connections come through the same TLS listener as gRPC's
//! (`hostwatch_pki::transport`: handshake pool, admission, idle closing),
//! with client certificates optional at the TLS layer so that other
//! credentials can be added later; every request must still be
//! authenticated, by an operator or viewer certificate, or gets 401.
//! HTTP/1.1 and HTTP/2 by ALPN, served by hyper-util's automatic builder.
//!
//! Layout: `api` (the routes and their handlers), `params` (parameters,
//! times and durations), `json` (Prometheus' shapes), `error` (errors and
//! their types), `reference` (metric metadata from docs/metrics.md, and
//! alerts); here the accept loop and authentication.

mod api;
mod console;
mod error;
mod json;
mod params;
mod reference;

pub(crate) use api::Api;

use crate::auth::{self, Access};
use axum::http::{HeaderMap, Request, header};
use axum::response::{IntoResponse, Response};
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
    let router = console::router(api::router(api.clone()));
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
/// it), authenticated, then routed.
async fn handle(
    router: axum::Router,
    api: Api,
    peer: PeerInfo,
    request: Request<hyper::body::Incoming>,
) -> Result<Response, Infallible> {
    let _call = peer.call_opened();
    if let Err(e) = authenticate(&peer, request.headers()) {
        let total = api
            .shared
            .refused_messages
            .http_unauthorized
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        tracing::debug!(peer.addr = %peer.addr, error = %e, total, "HTTP request refused");
        return Ok(e.into_response());
    }
    router.oneshot(request.map(axum::body::Body::new)).await
}

/// An operator's or viewer's certificate, and no other credential: a
/// request carrying an `Authorization` header is judged by it, and no
/// such credential is accepted yet.
fn authenticate(peer: &PeerInfo, headers: &HeaderMap) -> Result<auth::Caller, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::Unauthorized(
            "the Authorization header is not accepted: authenticate with an operator or viewer client certificate".into(),
        ));
    }
    auth::check(Some(peer), Access::Read).map_err(|e| ApiError::Unauthorized(e.to_string()))
}
