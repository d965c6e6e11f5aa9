//! Mutual-TLS transport for tonic: a listener whose connections carry the
//! peer's verified identity, and a channel connector that checks it is
//! talking to a collector.

use crate::{Identity, PkiError, Role, TlsFiles};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// Who is on the other end of a connection; set once, after the handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub identity: Identity,
}

/// The server side's TLS settings, replaceable while the server runs so
/// certificates can be reloaded without a restart.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    identity: Identity,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; fails with a message naming the bad file.
    pub fn load(files: TlsFiles) -> Result<Self, PkiError> {
        let (config, identity) = crate::server_config(&files)?;
        Ok(ServerTls {
            files,
            current: Arc::new(RwLock::new(config)),
            identity,
        })
    }

    /// Reads the files again; on error the running configuration stays.
    /// New connections use the new certificates, open ones are unaffected.
    pub fn reload(&self) -> Result<(), PkiError> {
        let (config, _) = crate::server_config(&self.files)?;
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// This server's identity, from its certificate.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections open at once, handshakes included; further ones wait in
    /// the kernel's backlog.
    pub max_connections: usize,
    /// A peer that has not finished the TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
}

/// A TLS connection whose peer presented a valid certificate with a
/// hostwatch identity.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
    // Returned to the listener's semaphore when the connection is dropped.
    _permit: OwnedSemaphorePermit,
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener` and completes TLS handshakes in
/// their own tasks, so one slow peer does not hold up the others. The
/// returned stream, for `serve_with_incoming_shutdown`, yields only
/// verified connections and ends when `shutdown` completes.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    limits: ListenerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
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
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match handshake(acceptor, tcp, addr, limits.handshake_timeout).await {
                    Ok((stream, identity)) => {
                        let peer = PeerInfo { addr, identity };
                        tracing::debug!(peer.addr = %addr, peer.id = %peer.identity, "connection accepted");
                        let conn = TlsConnection {
                            stream,
                            peer,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => {
                        tracing::info!(peer.addr = %addr, error = %e, "TLS handshake refused")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Identity), String> {
    let stream = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| format!("no handshake from {addr} within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no client certificate")?;
    let identity = crate::peer_identity(cert).map_err(|e| e.to_string())?;
    Ok((stream, identity))
}

/// Where and how a client reaches the collector.
#[derive(Debug, Clone)]
pub struct ClientTarget {
    /// `host:port` of the collector.
    pub address: String,
    /// Name the collector's certificate must carry; default: the host of `address`.
    pub server_name: Option<String>,
    pub tls: TlsFiles,
    pub connect_timeout: Duration,
    pub keepalive: Keepalive,
}

/// HTTP/2 keepalive: after `interval` without reading anything from the
/// peer, a ping; no answer within `timeout` closes the connection, so a
/// silently dead peer (a partition, a black-holing firewall) is noticed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Errors of [`connect`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("invalid collector address {0:?}: expected host:port")]
    Address(String),
    /// `reason` holds the whole error chain: tonic's own message is only
    /// "transport error".
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

impl ClientTarget {
    fn server_name(&self) -> Result<ServerName<'static>, ConnectError> {
        let bad = || ConnectError::Address(self.address.clone());
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let uri: Uri = format!("https://{}", self.address)
                    .parse()
                    .map_err(|_| bad())?;
                let host = uri.host().ok_or_else(bad)?;
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }
        };
        ServerName::try_from(name).map_err(|_| bad())
    }
}

/// Connects to the collector over mutual TLS. The peer must present a
/// collector certificate for the expected server name; anything else fails
/// the connection. Returns the channel and the client's own identity.
pub async fn connect(target: &ClientTarget) -> Result<(Channel, Identity), ConnectError> {
    let (config, identity) = crate::client_config(&target.tls)?;
    let server_name = target.server_name()?;
    let endpoint = Endpoint::from_shared(format!("https://{}", target.address))
        .map_err(|_| ConnectError::Address(target.address.clone()))?
        .connect_timeout(target.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(target.keepalive.interval)
        .keep_alive_timeout(target.keepalive.timeout);
    let address = target.address.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let server_name = server_name.clone();
        let address = address.clone();
        async move {
            let tcp = TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(crate::peer_identity);
            match peer {
                Some(Ok(id)) if id.role == Role::Collector => Ok(TokioIo::new(tls)),
                Some(Ok(id)) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("server is {id}, not a collector"),
                )),
                _ => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "server certificate has no hostwatch identity",
                )),
            }
        }
    });
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| ConnectError::Connect {
            address: target.address.clone(),
            reason: error_chain(&e),
        })?;
    Ok((channel, identity))
}

/// An error and its sources, joined by ": ".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
