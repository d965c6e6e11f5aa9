//! Mutual-TLS transport for tonic: a listener whose connections carry the
//! peer's verified identity, and a channel connector that checks it is
//! talking to a collector.
//!
//! Layout: `listener` (accepting, handshakes, admission by role and
//! identity, idle and forced closing), `calls` (the tower layer counting a
//! connection's calls and holding their messages to the pending-bytes
//! budget), `throttle` (log lines about misbehaving peers, rate-limited);
//! here the server's reloadable TLS settings and the client's connector.

mod calls;
mod denylist;
mod listener;
mod throttle;

pub use calls::{CallLimit, CallLimitLayer};
pub use denylist::Denylist;
pub use listener::{
    CallGuard, Connections, Incoming, ListenerLimits, ListenerStats, TlsConnection, incoming,
};

use crate::{ClientAuth, Identity, PkiError, Role, TlsFiles};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Who is on the other end of a connection; set once, after the handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// From the client certificate; `None` only on a listener whose
    /// [`ServerTls`] takes client certificates as optional
    /// ([`ClientAuth::Optional`]) and a client that presented none.
    pub identity: Option<Identity>,
    /// When the client certificate expires (ms since the Unix epoch); `None`
    /// without one.
    pub certificate_expires_ms: Option<i64>,
    /// What the connection's calls share with it (see `calls`).
    connection: Arc<listener::ConnectionState>,
}

impl PeerInfo {
    /// Counts a call open on this peer's connection until the guard is
    /// dropped, so the idle timeout leaves the connection open meanwhile:
    /// for servers other than tonic's (which [`CallLimitLayer`] counts).
    pub fn call_opened(&self) -> CallGuard {
        CallGuard {
            _open: self.connection.call_opened(),
        }
    }
}

/// The digest of the TLS files and the CRL file, if any.
fn digest_of(files: &TlsFiles, crl: Option<&std::path::Path>) -> u64 {
    match crl {
        Some(crl) => hostwatch_stdx::files_digest(&[&files.ca, &files.cert, &files.key, crl]),
        None => files.digest(),
    }
}

/// The server side's TLS settings, replaceable while the server runs so
/// certificates can be reloaded without a restart.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    client_auth: ClientAuth,
    /// Certificate revocation lists (PEM) client certificates are checked
    /// against, reloaded with the files.
    crl: Option<std::path::PathBuf>,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    /// [`files_digest`](hostwatch_stdx::files_digest) of the files as last
    /// read, loaded or not: what [`ServerTls::reload_if_changed`] compares.
    digest: Arc<std::sync::atomic::AtomicU64>,
    identity: Identity,
    /// Peers refused after the handshake, shared with other listeners.
    denylist: Denylist,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("client_auth", &self.client_auth)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; fails with a message naming the bad file. Client
    /// certificates are required.
    pub fn load(files: TlsFiles) -> Result<Self, PkiError> {
        Self::load_with(files, ClientAuth::Required)
    }

    /// [`ServerTls::load`] with client certificates as `client_auth` says.
    pub fn load_with(files: TlsFiles, client_auth: ClientAuth) -> Result<Self, PkiError> {
        Self::load_with_crl(files, client_auth, None)
    }

    /// [`ServerTls::load_with`], refusing the client certificates the
    /// revocation lists of the file `crl` name (see
    /// [`crate::server_config_with_crl`]); the file is reloaded with the others.
    pub fn load_with_crl(
        files: TlsFiles,
        client_auth: ClientAuth,
        crl: Option<std::path::PathBuf>,
    ) -> Result<Self, PkiError> {
        // Before reading them: a change made meanwhile is seen at the
        // next check rather than missed.
        let digest = digest_of(&files, crl.as_deref());
        let (config, identity) =
            crate::server_config_denying(&files, client_auth, crl.as_deref(), None)?;
        Ok(ServerTls {
            files,
            client_auth,
            crl,
            current: Arc::new(RwLock::new(config)),
            digest: Arc::new(digest.into()),
            identity,
            denylist: Denylist::default(),
        })
    }

    /// These settings, refusing what `denylist` denies (see [`Denylist`]);
    /// set before the listener starts. Reads the files again, so that the
    /// handshake refuses them (with the `certificate_revoked` alert).
    pub fn with_denylist(mut self, denylist: Denylist) -> Result<Self, PkiError> {
        self.denylist = denylist;
        self.reload()?;
        Ok(self)
    }

    pub(crate) fn denylist(&self) -> &Denylist {
        &self.denylist
    }

    /// Reads the files again; on error the running configuration stays.
    /// New connections use the new certificates, open ones are unaffected.
    pub fn reload(&self) -> Result<(), PkiError> {
        self.digest.store(
            digest_of(&self.files, self.crl.as_deref()),
            Ordering::Relaxed,
        );
        let (config, _) = crate::server_config_denying(
            &self.files,
            self.client_auth,
            self.crl.as_deref(),
            Some(&self.denylist),
        )?;
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// [`ServerTls::reload`] if the files' contents changed since they
    /// were last read: `Ok(true)` when reloaded, `Ok(false)` when
    /// unchanged. Files that fail to load are not tried again until they
    /// change once more, so a broken file is reported once, not at every
    /// check.
    pub fn reload_if_changed(&self) -> Result<bool, PkiError> {
        if digest_of(&self.files, self.crl.as_deref()) == self.digest.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// This server's identity, from its certificate.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
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
    /// The server refused this client's certificate as revoked (its
    /// `certificate_revoked` alert).
    #[error(
        "{address} refused this certificate: it was revoked (hostwatch hosts revoke); \
         enroll this host again, with a new enrollment token"
    )]
    Revoked { address: String },
}

/// Whether `error`, or an error it wraps, is the server's
/// `certificate_revoked` alert: the collector refused this client's
/// certificate as revoked ([`Denylist`]).
pub fn is_certificate_revoked(error: &(dyn std::error::Error + 'static)) -> bool {
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked);
    let is_alert =
        |e: &(dyn std::error::Error + 'static)| e.downcast_ref::<rustls::Error>() == Some(&alert);
    // h2 shows the I/O error it failed on in its text but does not give it
    // as its source: the alert's own text stands for it there.
    let text = alert.to_string();
    let mut next = Some(error);
    while let Some(e) = next {
        let wrapped = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| is_alert(inner));
        if is_alert(e) || wrapped || e.to_string().contains(&text) {
            return true;
        }
        next = e.source();
    }
    false
}

impl ClientTarget {
    fn server_name(&self) -> Result<ServerName<'static>, ConnectError> {
        server_name(&self.address, self.server_name.as_deref())
    }
}

/// The name a server at `address` (`host:port`) must carry: `explicit`,
/// or the host part of `address`.
fn server_name(address: &str, explicit: Option<&str>) -> Result<ServerName<'static>, ConnectError> {
    let bad = || ConnectError::Address(address.to_owned());
    let name = match explicit {
        Some(name) => name.to_owned(),
        None => {
            let uri: Uri = format!("https://{address}").parse().map_err(|_| bad())?;
            let host = uri.host().ok_or_else(bad)?;
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        }
    };
    ServerName::try_from(name).map_err(|_| bad())
}

/// Connects to a collector's enrollment listener at `address` over TLS
/// 1.3 without a client certificate, trusting it only if its chain holds
/// the CA whose key is `pin` and its certificate carries the server name
/// (`server_name`, or the host of `address`) and the collector role
/// ([`crate::enroll::pinned_client_config`]). The handshake is over, and
/// checked, when this returns: nothing is sent to a server that failed it.
pub async fn connect_pinned(
    address: &str,
    server_name_override: Option<&str>,
    pin: crate::CaPin,
    connect_timeout: Duration,
) -> Result<Channel, ConnectError> {
    let config = crate::enroll::pinned_client_config(pin)?;
    let name = server_name(address, server_name_override)?;
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .map_err(|_| ConnectError::Address(address.to_owned()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let target = address.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let (name, target) = (name.clone(), target.clone());
        async move {
            let tcp = TcpStream::connect(&target).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            collector_only(tls.get_ref().1.peer_certificates())?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    tokio::time::timeout(connect_timeout, endpoint.connect_with_connector(connector))
        .await
        .map_err(|_| ConnectError::Connect {
            address: address.to_owned(),
            reason: format!("no TLS handshake within {connect_timeout:?}"),
        })?
        .map_err(|e| ConnectError::Connect {
            address: address.to_owned(),
            reason: hostwatch_stdx::error_chain(&e),
        })
}

/// Whether the server's certificate (the first of `certs`) is a collector's.
fn collector_only(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> io::Result<()> {
    match certs.and_then(|c| c.first()).map(crate::peer_identity) {
        Some(Ok(id)) if id.role == Role::Collector => Ok(()),
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
            collector_only(tls.get_ref().1.peer_certificates())?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            let address = target.address.clone();
            if is_certificate_revoked(&e) {
                ConnectError::Revoked { address }
            } else {
                ConnectError::Connect {
                    address,
                    reason: hostwatch_stdx::error_chain(&e),
                }
            }
        })?;
    Ok((channel, identity))
}
