//! The server side's listener: TLS handshakes in a pool of their own, the
//! admission of authenticated peers by role and identity, and connections
//! the listener can close (idle, or all at once at shutdown).
//!
//! Unauthenticated peers never take the places of authenticated ones:
//! handshakes in progress have their own bounded pool, and when it is full
//! a new peer takes the place of the one that has waited longest, so a
//! flood of sockets that never finish a handshake cannot keep an operator
//! out, and `accept` never stops (an operator never queues in the kernel's
//! backlog behind a flood). Once authenticated, a peer is admitted only
//! within its identity's limit, and agents only outside the places kept
//! for operators.

use super::throttle::Throttle;
use super::{Denylist, PeerInfo, ServerTls};
use crate::{ClientAuth, Identity, Role};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// Limits of the listener and of the connections it yields.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Authenticated connections open at once.
    pub max_connections: usize,
    /// Places among `max_connections` that only operators and viewers may
    /// take, so agents (or anything else) filling the rest cannot lock them out.
    pub reserved_operator_connections: usize,
    /// Connections one identity (one certificate's URI SAN) may hold.
    pub max_connections_per_identity: usize,
    /// TLS handshakes in progress at once; when full, a new peer takes the
    /// place of the one that has waited longest.
    pub max_handshakes: usize,
    /// A peer that has not finished the TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// A connection without an open call for this long is closed.
    pub idle_timeout: Duration,
    /// Bytes of gRPC messages begun and not yet complete, on one connection.
    pub max_pending_bytes_per_connection: usize,
    /// Bytes of gRPC messages begun and not yet complete, on all connections.
    pub max_pending_bytes: usize,
    /// A gRPC message begun must be complete within this.
    pub message_timeout: Duration,
}

/// Counters and gauges of a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Authenticated connections open now.
    pub connections: usize,
    /// TLS handshakes in progress now.
    pub handshakes: usize,
    /// Bytes of incomplete gRPC messages now (see [`ListenerLimits`]).
    pub pending_message_bytes: usize,
    /// Handshakes that failed: no or a bad certificate, timeout, garbage.
    pub handshakes_refused: u64,
    /// Handshakes dropped to make room for a newer peer.
    pub handshakes_evicted: u64,
    /// Authenticated peers refused: over their identity's or role's
    /// limit, or revoked.
    pub connections_refused: u64,
    /// Of `connections_refused`, those refused as revoked (the deny list).
    pub connections_revoked: u64,
    /// Connections closed after `idle_timeout` without a call.
    pub connections_closed_idle: u64,
    /// Calls ended because a message exceeded the pending-bytes budget or
    /// took longer than `message_timeout`.
    pub messages_refused: u64,
}

/// State shared by the accept loop, handshakes, connections and their calls.
pub(crate) struct ListenerShared {
    pub(crate) limits: ListenerLimits,
    /// Handshakes in progress by arrival; cancelling one drops its peer.
    handshakes: Mutex<BTreeMap<u64, CancellationToken>>,
    admitted: Mutex<Admitted>,
    /// Bytes of incomplete messages on every connection.
    pub(crate) pending_bytes: AtomicUsize,
    /// Parent of every connection's close token.
    close_all: CancellationToken,
    counters: Counters,
    handshake_log: Mutex<Throttle>,
    refusal_log: Mutex<Throttle>,
    pub(crate) message_log: Mutex<Throttle>,
    /// Admitted connections by id: the peer, its certificate's serial and
    /// the token that closes it, for closing those a deny list refuses.
    open: Mutex<HashMap<u64, OpenConnection>>,
}

struct OpenConnection {
    identity: Option<Identity>,
    serial: Option<String>,
    close: CancellationToken,
}

#[derive(Default)]
struct Counters {
    handshakes_refused: AtomicU64,
    handshakes_evicted: AtomicU64,
    connections_refused: AtomicU64,
    connections_revoked: AtomicU64,
    connections_closed_idle: AtomicU64,
    messages_refused: AtomicU64,
}

/// Authenticated connections open, in total and per identity; clients
/// without a certificate (on a listener that allows them) count as one
/// identity, `None`.
#[derive(Default)]
struct Admitted {
    total: usize,
    per_identity: HashMap<Option<Identity>, usize>,
}

/// Why an authenticated peer was not admitted.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Identity,
    Role,
}

impl ListenerShared {
    fn new(limits: ListenerLimits) -> Self {
        ListenerShared {
            limits,
            handshakes: Mutex::default(),
            admitted: Mutex::default(),
            pending_bytes: AtomicUsize::new(0),
            close_all: CancellationToken::new(),
            counters: Counters::default(),
            handshake_log: Mutex::new(Throttle::new()),
            refusal_log: Mutex::new(Throttle::new()),
            message_log: Mutex::new(Throttle::new()),
            open: Mutex::default(),
        }
    }

    /// Closes the open connections whose peer and serial `denied` says;
    /// returns their serials.
    pub(crate) fn close_matching(
        &self,
        denied: impl Fn(&Option<Identity>, Option<&str>) -> bool,
    ) -> Vec<String> {
        let open = lock(&self.open);
        let mut closed = Vec::new();
        for connection in open.values() {
            if denied(&connection.identity, connection.serial.as_deref()) {
                tracing::warn!(peer.id = %Who(&connection.identity), serial = connection.serial.as_deref().unwrap_or(""), "closing the connection of a revoked peer");
                connection.close.cancel();
                closed.extend(connection.serial.clone());
            }
        }
        closed
    }

    /// Takes a place for `identity`, or says why there is none.
    fn admit(self: &Arc<Self>, identity: &Option<Identity>) -> Result<Admission, Refusal> {
        let limits = &self.limits;
        let mut admitted = lock(&self.admitted);
        // Viewers read as operators do, and the reserve keeps them a way
        // in while agents fill the rest.
        let room = match identity.as_ref().map(|id| id.role) {
            Some(Role::Operator | Role::Viewer) => limits.max_connections,
            Some(Role::Agent | Role::Collector) | None => limits
                .max_connections
                .saturating_sub(limits.reserved_operator_connections),
        };
        if admitted.total >= room {
            return Err(Refusal::Role);
        }
        let held = admitted.per_identity.entry(identity.clone()).or_default();
        if *held >= limits.max_connections_per_identity {
            return Err(Refusal::Identity);
        }
        *held += 1;
        admitted.total += 1;
        Ok(Admission {
            listener: self.clone(),
            identity: identity.clone(),
            id: None,
        })
    }

    pub(crate) fn message_refused(&self) {
        self.counters
            .messages_refused
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// A place taken by an authenticated connection; given back on drop.
struct Admission {
    listener: Arc<ListenerShared>,
    identity: Option<Identity>,
    /// The connection's id among the listener's open ones, once listed.
    id: Option<u64>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.listener.open).remove(&id);
        }
        let mut admitted = lock(&self.listener.admitted);
        admitted.total -= 1;
        if let Some(held) = admitted.per_identity.get_mut(&self.identity) {
            *held -= 1;
            if *held == 0 {
                admitted.per_identity.remove(&self.identity);
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the
/// counts it guards are updated in single steps, so they are still whole.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What one connection's calls share with it.
pub(crate) struct ConnectionState {
    pub(crate) listener: Arc<ListenerShared>,
    /// Calls open on the connection; it is idle while this is 0.
    calls: watch::Sender<usize>,
    /// Bytes of incomplete messages on this connection.
    pub(crate) pending_bytes: AtomicUsize,
}

impl std::fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionState")
            .field("calls", &*self.calls.borrow())
            .field("pending_bytes", &self.pending_bytes)
            .finish_non_exhaustive()
    }
}

impl ConnectionState {
    /// Counts a call as open until the returned guard is dropped.
    pub(crate) fn call_opened(self: &Arc<Self>) -> OpenCall {
        self.calls.send_modify(|n| *n += 1);
        OpenCall(self.clone())
    }
}

/// A call counted open on its connection.
pub(crate) struct OpenCall(Arc<ConnectionState>);

/// A call counted open on its connection until dropped; see
/// [`PeerInfo::call_opened`].
pub struct CallGuard {
    pub(crate) _open: OpenCall,
}

impl std::fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGuard").finish_non_exhaustive()
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.calls.send_modify(|n| *n -= 1);
    }
}

/// A TLS connection whose peer presented a valid certificate with a
/// hostwatch identity and was admitted.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Cancelled when the listener closes this connection (idle, or all
    /// connections at shutdown); from then on reads and writes fail, which
    /// ends the HTTP/2 connection whatever state its streams are in.
    close: CancellationToken,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Ends the connection's idle watch when the connection goes.
    _stop_watch: DropGuard,
    _admission: Admission,
}

impl TlsConnection {
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.close.is_cancelled() || self.closed.as_mut().poll(cx).is_ready() {
            Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server",
            ))
        } else {
            Poll::Pending
        }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The verified connections of a listener, for `serve_with_incoming_shutdown`;
/// ends when the listener's shutdown future completes.
pub struct Incoming {
    connections: ReceiverStream<io::Result<TlsConnection>>,
    control: Connections,
}

impl Incoming {
    /// A handle on the listener's connections, usable after this stream
    /// has been handed to the server.
    pub fn connections(&self) -> Connections {
        self.control.clone()
    }
}

impl Stream for Incoming {
    type Item = io::Result<TlsConnection>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.connections).poll_next(cx)
    }
}

/// A handle on a listener's connections: its counters, and closing them all.
#[derive(Clone)]
pub struct Connections(Arc<ListenerShared>);

impl Connections {
    /// Closes every open connection now, whatever its calls are doing:
    /// the end of a graceful shutdown that took too long.
    pub fn close_all(&self) {
        self.0.close_all.cancel();
    }

    /// The listener's counters and gauges now.
    pub fn stats(&self) -> ListenerStats {
        let shared = &self.0;
        let counters = &shared.counters;
        ListenerStats {
            connections: lock(&shared.admitted).total,
            handshakes: lock(&shared.handshakes).len(),
            pending_message_bytes: shared.pending_bytes.load(Ordering::Relaxed),
            handshakes_refused: counters.handshakes_refused.load(Ordering::Relaxed),
            handshakes_evicted: counters.handshakes_evicted.load(Ordering::Relaxed),
            connections_refused: counters.connections_refused.load(Ordering::Relaxed),
            connections_revoked: counters.connections_revoked.load(Ordering::Relaxed),
            connections_closed_idle: counters.connections_closed_idle.load(Ordering::Relaxed),
            messages_refused: counters.messages_refused.load(Ordering::Relaxed),
        }
    }
}

/// Accepts TCP connections on `listener` and completes TLS handshakes in
/// their own tasks, so one slow peer does not hold up the others. The
/// returned stream, for `serve_with_incoming_shutdown`, yields only
/// verified, admitted connections and ends when `shutdown` completes.
///
/// Serve it with [`super::CallLimitLayer`]: the idle timeout and the
/// pending-bytes budget see a connection's calls through that layer.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Incoming {
    let shared = Arc::new(ListenerShared::new(limits));
    tls.denylist().register(&shared);
    let (tx, rx) = mpsc::channel(16);
    let accepting = shared.clone();
    tokio::spawn(async move {
        let shared = accepting;
        tokio::pin!(shutdown);
        let mut next_id: u64 = 0;
        loop {
            let (tcp, addr) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            next_id += 1;
            let cancel = CancellationToken::new();
            {
                let mut handshakes = lock(&shared.handshakes);
                if handshakes.len() >= shared.limits.max_handshakes.max(1)
                    && let Some((_, oldest)) = handshakes.pop_first()
                {
                    oldest.cancel();
                    shared
                        .counters
                        .handshakes_evicted
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = lock(&shared.handshake_log).admit() {
                        tracing::warn!(peer.addr = %addr, suppressed, max_handshakes = shared.limits.max_handshakes, "TLS handshakes at their limit: dropping the longest waiting");
                    }
                }
                handshakes.insert(next_id, cancel.clone());
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            tokio::spawn(establish(
                shared.clone(),
                next_id,
                cancel,
                (acceptor, tls.client_auth(), tls.denylist().clone()),
                tcp,
                addr,
                tx.clone(),
            ));
        }
        // Peers still in their handshake would never be served.
        for (_, pending) in std::mem::take(&mut *lock(&shared.handshakes)) {
            pending.cancel();
        }
    });
    Incoming {
        connections: ReceiverStream::new(rx),
        control: Connections(shared),
    }
}

/// One peer: its handshake, admission, and handing the connection over.
async fn establish(
    shared: Arc<ListenerShared>,
    id: u64,
    cancel: CancellationToken,
    (acceptor, client_auth, denylist): (tokio_rustls::TlsAcceptor, ClientAuth, Denylist),
    tcp: TcpStream,
    addr: SocketAddr,
    tx: mpsc::Sender<io::Result<TlsConnection>>,
) {
    let _ = tcp.set_nodelay(true);
    let timeout = shared.limits.handshake_timeout;
    let (result, revoked) = tokio::select! {
        _ = cancel.cancelled() => return,
        result = super::denylist::refused_in(handshake(acceptor, client_auth, tcp, addr, timeout)) => result,
    };
    // Whoever takes the entry out owns the peer: here, or an eviction that
    // came first.
    if lock(&shared.handshakes).remove(&id).is_none() {
        return;
    }
    let (stream, (identity, certificate_expires_ms, serial)) = match (result, revoked) {
        (Err(_), Some((identity, serial))) => {
            refused_revoked(&shared, addr, &identity, serial.as_deref());
            return;
        }
        (Ok(established), _) => established,
        (Err(e), None) => {
            shared
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = lock(&shared.handshake_log).admit() {
                tracing::info!(peer.addr = %addr, error = %e, suppressed, "TLS handshake refused");
            }
            return;
        }
    };
    // Denied since the handshake's check.
    if denylist.denies(&identity, serial.as_deref()) {
        refused_revoked(&shared, addr, &identity, serial.as_deref());
        return;
    }
    let mut admission = match shared.admit(&identity) {
        Ok(admission) => admission,
        Err(refusal) => {
            shared
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = lock(&shared.refusal_log).admit() {
                let limits = &shared.limits;
                match refusal {
                    Refusal::Identity => {
                        tracing::warn!(peer.addr = %addr, peer.id = %Who(&identity), suppressed, max_connections_per_identity = limits.max_connections_per_identity, "connection refused: its identity holds its limit of connections")
                    }
                    Refusal::Role => {
                        tracing::warn!(peer.addr = %addr, peer.id = %Who(&identity), suppressed, max_connections = limits.max_connections, reserved_operator_connections = limits.reserved_operator_connections, "connection refused: no place left for its role")
                    }
                }
            }
            return;
        }
    };
    let connection = Arc::new(ConnectionState {
        listener: shared.clone(),
        calls: watch::Sender::new(0),
        pending_bytes: AtomicUsize::new(0),
    });
    let close = shared.close_all.child_token();
    lock(&shared.open).insert(
        id,
        OpenConnection {
            identity: identity.clone(),
            serial,
            close: close.clone(),
        },
    );
    admission.id = Some(id);
    // Denied between the check above and the listing: closed all the same.
    if denylist.denies(&identity, None) {
        close.cancel();
    }
    tokio::spawn(close_when_idle(
        connection.clone(),
        close.clone(),
        shared.limits.idle_timeout,
    ));
    tracing::debug!(peer.addr = %addr, peer.id = %Who(&identity), "connection accepted");
    let conn = TlsConnection {
        stream,
        peer: PeerInfo {
            addr,
            identity,
            certificate_expires_ms,
            connection,
        },
        closed: Box::pin(close.clone().cancelled_owned()),
        _stop_watch: close.clone().drop_guard(),
        close,
        _admission: admission,
    };
    let _ = tx.send(Ok(conn)).await;
}

/// Counts and logs (rate-limited) a peer refused as revoked.
fn refused_revoked(
    shared: &ListenerShared,
    addr: SocketAddr,
    identity: &Option<Identity>,
    serial: Option<&str>,
) {
    shared
        .counters
        .connections_refused
        .fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .connections_revoked
        .fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = lock(&shared.refusal_log).admit() {
        tracing::warn!(peer.addr = %addr, peer.id = %Who(identity), serial = serial.unwrap_or(""), suppressed, "connection refused: revoked");
    }
}

/// Closes the connection once it has had no open call for `idle_timeout`
/// (counted from its start, or from the end of its last call); returns
/// when the connection closes.
async fn close_when_idle(
    connection: Arc<ConnectionState>,
    close: CancellationToken,
    idle_timeout: Duration,
) {
    let mut calls = connection.calls.subscribe();
    loop {
        let idle = *calls.borrow_and_update() == 0;
        tokio::select! {
            _ = close.cancelled() => return,
            _ = tokio::time::sleep(idle_timeout), if idle => {
                connection
                    .listener
                    .counters
                    .connections_closed_idle
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?idle_timeout, "closing a connection without calls");
                close.cancel();
                return;
            }
            // A call opened or closed: look again.
            changed = calls.changed() => if changed.is_err() { return },
        }
    }
}

/// Why a peer's TLS handshake did not give a connection; logged and
/// counted as a refused handshake, whatever the kind.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("no handshake from {addr} within {timeout:?}")]
    TimedOut { addr: SocketAddr, timeout: Duration },
    #[error(transparent)]
    Tls(io::Error),
    #[error("no client certificate")]
    NoClientCertificate,
    #[error(transparent)]
    Identity(crate::PkiError),
}

/// The TLS handshake and the peer's identity: `None` for a client without
/// a certificate, which only [`ClientAuth::Optional`] lets through.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    client_auth: ClientAuth,
    tcp: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, PeerCertificate), HandshakeError> {
    let stream = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| HandshakeError::TimedOut { addr, timeout })?
        .map_err(HandshakeError::Tls)?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first());
    let identity = match (cert, client_auth) {
        (Some(cert), _) => Some(crate::peer_identity(cert).map_err(HandshakeError::Identity)?),
        (None, ClientAuth::Optional | ClientAuth::Anonymous) => None,
        (None, ClientAuth::Required) => return Err(HandshakeError::NoClientCertificate),
    };
    let expires_ms = cert.and_then(crate::certificate_expiry_ms);
    let serial = cert.and_then(crate::certificate_serial_hex);
    Ok((stream, (identity, expires_ms, serial)))
}

/// What a handshake learnt of the client certificate: its identity, when
/// it expires (ms) and its serial (hex), all `None` without one.
type PeerCertificate = (Option<Identity>, Option<i64>, Option<String>);

/// A peer's identity in log lines; "anonymous" without a certificate.
pub(crate) struct Who<'a>(pub(crate) &'a Option<Identity>);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(identity) => identity.fmt(f),
            None => f.write_str("anonymous"),
        }
    }
}
