//! The mTLS listener over real loopback sockets with certificates made at
//! test time, serving tonic's health service behind `CallLimitLayer`: who
//! gets in under floods, idle connections, and incomplete messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::transport::{
    CallLimitLayer, ClientTarget, Connections, ListenerLimits, ListenerStats, ServerTls, connect,
    incoming,
};
use hostwatch_pki::{Ca, Identity, IssueOptions, Role, TlsFiles, cert_stem};
use http_body_util::StreamBody;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Bytes;
use tonic::codegen::http;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(20);

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", 1).unwrap();
        ca.write(dir.path()).unwrap();
        Pki { dir, ca }
    }

    fn files(&self, role: Role, name: &str) -> TlsFiles {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let identity = Identity::new(role, name).unwrap();
        let mut options = IssueOptions::valid_for_days(1);
        if role == Role::Collector {
            options = options.with_local_names(None);
        }
        let stem = format!(
            "{}-{}",
            cert_stem(&identity),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (cert, key) = self
            .ca
            .issue(&identity, &options)
            .unwrap()
            .write(self.dir.path(), &stem)
            .unwrap();
        TlsFiles {
            ca: self.dir.path().join("ca.pem"),
            cert,
            key,
        }
    }
}

/// Limits no test reaches unless it lowers them.
fn roomy() -> ListenerLimits {
    ListenerLimits {
        max_connections: 64,
        reserved_operator_connections: 4,
        max_connections_per_identity: 8,
        max_handshakes: 64,
        handshake_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        max_pending_bytes_per_connection: 1 << 20,
        max_pending_bytes: 1536 << 10,
        message_timeout: Duration::from_secs(3600),
    }
}

struct Server {
    addr: SocketAddr,
    connections: Connections,
    health: tonic_health::server::HealthReporter,
}

impl Server {
    async fn start(pki: &Pki, limits: ListenerLimits) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ServerTls::load(pki.files(Role::Collector, "test")).unwrap();
        let incoming = incoming(listener, tls, limits, std::future::pending());
        let connections = incoming.connections();
        let (health, service) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(CallLimitLayer)
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        Server {
            addr,
            connections,
            health,
        }
    }

    fn stats(&self) -> ListenerStats {
        self.connections.stats()
    }

    async fn until(&self, what: &str, check: impl Fn(&ListenerStats) -> bool) {
        eventually(what, || async { check(&self.stats()).then_some(()) }).await;
    }
}

async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn channel(pki: &Pki, addr: SocketAddr, role: Role, name: &str) -> Channel {
    let target = ClientTarget {
        address: addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls: pki.files(role, name),
        connect_timeout: Duration::from_secs(5),
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    };
    connect(&target).await.unwrap().0
}

/// A health check as an operator, on a connection of its own.
async fn operator_check(pki: &Pki, addr: SocketAddr) {
    reader_check(pki, addr, Role::Operator).await;
}

/// A call by a reader (`Role::Operator` or `Role::Viewer`) succeeds.
async fn reader_check(pki: &Pki, addr: SocketAddr, role: Role) {
    let mut client = HealthClient::new(channel(pki, addr, role, "alice").await);
    client
        .check(HealthCheckRequest::default())
        .await
        .expect("the operator's call");
}

/// A TLS connection as `role`/`name`, handshake done, without HTTP/2.
async fn hold(
    pki: &Pki,
    addr: SocketAddr,
    role: Role,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    hold_with(&pki.files(role, name), addr).await.unwrap()
}

async fn hold_with(
    files: &TlsFiles,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let (config, _) = hostwatch_pki::client_config(files).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Waits until the server closes `conn`.
async fn closed(mut conn: impl tokio::io::AsyncRead + Unpin) {
    let mut buf = [0; 256];
    loop {
        match tokio::time::timeout(WAIT, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection"),
        }
    }
}

/// A peer that sends its ClientHello and nothing more.
async fn half_handshake(pki: &Pki, addr: SocketAddr) -> TcpStream {
    let (config, _) = hostwatch_pki::client_config(&pki.files(Role::Agent, "slow")).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    tcp
}

#[tokio::test]
async fn an_operator_gets_in_while_agents_hold_their_limits() {
    let pki = Pki::new();
    let server = Server::start(
        &pki,
        ListenerLimits {
            max_connections: 8,
            reserved_operator_connections: 2,
            max_connections_per_identity: 3,
            ..roomy()
        },
    )
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(hold(&pki, addr, Role::Agent, "web1").await);
    }
    server.until("3 connections", |s| s.connections == 3).await;
    // One identity, one connection too many.
    closed(hold(&pki, addr, Role::Agent, "web1").await).await;
    assert_eq!(server.stats().connections_refused, 1);
    operator_check(&pki, addr).await;

    // Agents fill every place but the operators'.
    for name in ["web2", "web3", "web4"] {
        held.push(hold(&pki, addr, Role::Agent, name).await);
    }
    server.until("6 connections", |s| s.connections == 6).await;
    closed(hold(&pki, addr, Role::Agent, "web5").await).await;
    assert_eq!(server.stats().connections_refused, 2);
    operator_check(&pki, addr).await;
    operator_check(&pki, addr).await;
    // Viewers read as operators do: the reserve is theirs too.
    reader_check(&pki, addr, Role::Viewer).await;
}

#[tokio::test]
async fn an_operator_gets_in_through_a_flood_of_unfinished_handshakes() {
    let pki = Pki::new();
    let server = Server::start(
        &pki,
        ListenerLimits {
            max_handshakes: 8,
            ..roomy()
        },
    )
    .await;
    let addr = server.addr;
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(TcpStream::connect(addr).await.unwrap());
        flood.push(half_handshake(&pki, addr).await);
    }
    server
        .until("the handshake pool full", |s| {
            s.handshakes == 8 && s.handshakes_evicted == 32
        })
        .await;
    // The flood goes on: it holds every place in the pool, and the
    // handshake timeout is an hour.
    operator_check(&pki, addr).await;
    let stats = server.stats();
    assert!(stats.handshakes_evicted > 32, "{stats:?}");
    assert_eq!(stats.handshakes_refused, 0, "{stats:?}");

    // A certificate from another CA is counted (and logged at most once
    // in a while).
    let other = Pki::new();
    let mut intruder = other.files(Role::Agent, "intruder");
    intruder.ca = pki.dir.path().join("ca.pem");
    for _ in 0..3 {
        if let Ok(conn) = hold_with(&intruder, addr).await {
            closed(conn).await;
        }
    }
    server
        .until("3 refused handshakes", |s| s.handshakes_refused == 3)
        .await;
}

#[tokio::test]
async fn connections_without_calls_are_closed_after_the_idle_timeout() {
    let pki = Pki::new();
    let server = Server::start(
        &pki,
        ListenerLimits {
            idle_timeout: Duration::from_secs(1),
            ..roomy()
        },
    )
    .await;
    let addr = server.addr;
    server
        .health
        .set_service_status("x", tonic_health::ServingStatus::Serving)
        .await;
    let mut watcher = HealthClient::new(channel(&pki, addr, Role::Operator, "alice").await);
    let mut watch = watcher
        .watch(HealthCheckRequest {
            service: "x".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Opened after the watch: by the time it is closed, the watch's
    // connection has been open longer than the timeout too.
    closed(hold(&pki, addr, Role::Agent, "idle").await).await;
    server
        .until("the idle connection gone, the watching one kept", |s| {
            s.connections_closed_idle == 1 && s.connections == 1
        })
        .await;
    // The watch still gets news.
    watch.message().await.unwrap().unwrap();
    server
        .health
        .set_service_status("x", tonic_health::ServingStatus::NotServing)
        .await;
    watch.message().await.unwrap().unwrap();
    // Its call over, that connection goes too.
    drop(watch);
    server
        .until("the watch's connection closed", |s| {
            s.connections_closed_idle == 2 && s.connections == 0
        })
        .await;
}

/// A health check whose request is `prefix` and `bytes` bytes of a message
/// declared `declared` bytes long, never finished; returns the sender,
/// which keeps the request open, and the response's status when it comes.
async fn partial_call(
    channel: &Channel,
    declared: u32,
    bytes: usize,
) -> (
    mpsc::Sender<Result<http_body::Frame<Bytes>, tonic::Status>>,
    tokio::task::JoinHandle<tonic::Status>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut data = vec![0u8];
    data.extend(declared.to_be_bytes());
    data.resize(data.len() + bytes, 7);
    tx.send(Ok(http_body::Frame::data(Bytes::from(data))))
        .await
        .unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri("/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(StreamBody::new(
            ReceiverStream::new(rx),
        )))
        .unwrap();
    let channel = channel.clone();
    let response = tokio::spawn(async move {
        use tower::ServiceExt;
        let response = channel.oneshot(request).await.unwrap();
        tonic::Status::from_header_map(response.headers()).expect("a trailers-only answer")
    });
    (tx, response)
}

#[tokio::test]
async fn incomplete_messages_are_refused_over_their_budget() {
    let pki = Pki::new();
    let server = Server::start(&pki, roomy()).await;
    let first = channel(&pki, server.addr, Role::Agent, "big").await;
    let (_open, pending) = partial_call(&first, 900 << 10, 1000).await;
    server
        .until("900 KiB pending", |s| s.pending_message_bytes == 900 << 10)
        .await;

    let (_tx, refused) = partial_call(&first, 200 << 10, 10).await;
    let status = refused.await.unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("on this connection"),
        "{status:?}"
    );

    let second = channel(&pki, server.addr, Role::Agent, "other").await;
    let (_tx, refused) = partial_call(&second, 700 << 10, 10).await;
    let status = refused.await.unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("on all connections"),
        "{status:?}"
    );
    let stats = server.stats();
    assert_eq!(stats.messages_refused, 2, "{stats:?}");
    assert_eq!(stats.pending_message_bytes, 900 << 10, "{stats:?}");

    // The peer gives up: its budget is free again.
    pending.abort();
    drop(_open);
    server
        .until("nothing pending", |s| s.pending_message_bytes == 0)
        .await;
}

#[tokio::test]
async fn incomplete_messages_are_refused_after_the_message_timeout() {
    let pki = Pki::new();
    let server = Server::start(
        &pki,
        ListenerLimits {
            message_timeout: Duration::from_millis(200),
            ..roomy()
        },
    )
    .await;
    let client = channel(&pki, server.addr, Role::Agent, "slow").await;
    let (_open, response) = partial_call(&client, 1000, 10).await;
    let status = response.await.unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("not complete within"),
        "{status:?}"
    );
    let stats = server.stats();
    assert_eq!(stats.messages_refused, 1, "{stats:?}");
    assert_eq!(stats.pending_message_bytes, 0, "{stats:?}");
    // Whole messages pass.
    HealthClient::new(client)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
}

/// A TLS connection without a client certificate, trusting `pki`'s CA.
async fn anonymous(pki: &Pki, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.dir.path().join("ca.pem")).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// With client certificates optional (the HTTPS API's listener), a client
/// without one is admitted without an identity, a client with one by its
/// identity; clients without one share one identity's limit.
#[tokio::test]
async fn optional_client_certificates_admit_anonymous_peers_as_one_identity() {
    use hostwatch_pki::ClientAuth;
    use tokio_stream::StreamExt;
    use tonic::transport::server::Connected;
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = pki.files(Role::Collector, "test");
    let tls = ServerTls::load_with(files, ClientAuth::Optional).unwrap();
    let limits = ListenerLimits {
        max_connections_per_identity: 2,
        ..roomy()
    };
    let mut incoming = incoming(listener, tls, limits, std::future::pending());
    let connections = incoming.connections();
    let mut next = async || {
        let next = tokio::time::timeout(WAIT, incoming.next()).await;
        next.expect("an admitted connection").unwrap().unwrap()
    };
    let (mut clients, mut admitted) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        clients.push(anonymous(&pki, addr).await);
        let conn = next().await;
        assert_eq!(conn.connect_info().identity, None);
        admitted.push(conn);
    }
    let _viewer = hold(&pki, addr, Role::Viewer, "grafana").await;
    let conn = next().await;
    let identity = conn.connect_info().identity.unwrap();
    assert_eq!(
        (identity.role, identity.name.as_str()),
        (Role::Viewer, "grafana")
    );
    // A third client without a certificate is over the shared limit.
    closed(anonymous(&pki, addr).await).await;
    assert_eq!(connections.stats().connections_refused, 1);
    assert_eq!(connections.stats().connections_revoked, 0);
    assert_eq!(connections.stats().connections, 3);
}

/// The certificate a handshake with `addr` presents, as DER.
async fn presented(pki: &Pki, addr: SocketAddr) -> Vec<u8> {
    let stream = anonymous(pki, addr).await;
    let (_, session) = stream.get_ref();
    session.peer_certificates().unwrap()[0].to_vec()
}

fn der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).unwrap();
    let first = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next();
    first.unwrap().unwrap().to_vec()
}

/// Certificates replaced in place (as renewal or an operator's copy does)
/// are served to new connections once `reload_if_changed` sees them; a
/// broken replacement is reported once and the running ones stay.
#[tokio::test]
async fn reload_if_changed_serves_replaced_files_and_keeps_them_when_broken() {
    use hostwatch_pki::ClientAuth;
    use tokio_stream::StreamExt;
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = pki.files(Role::Collector, "test");
    let tls = ServerTls::load_with(files.clone(), ClientAuth::Optional).unwrap();
    let mut incoming = incoming(listener, tls.clone(), roomy(), std::future::pending());
    tokio::spawn(async move { while incoming.next().await.is_some() {} });
    let first = der(&files.cert);
    assert_eq!(presented(&pki, addr).await, first);
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");

    let renewed = pki.files(Role::Collector, "test");
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    std::fs::copy(&renewed.key, &files.key).unwrap();
    assert!(tls.reload_if_changed().unwrap());
    let second = der(&files.cert);
    assert_ne!(second, first);
    assert_eq!(presented(&pki, addr).await, second);
    assert!(
        !tls.reload_if_changed().unwrap(),
        "reloaded once per change"
    );

    // A torn write: the error names the file, once; the running
    // certificate stays until a good file comes.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
    let e = tls.reload_if_changed().unwrap_err().to_string();
    assert!(e.contains(&files.cert.display().to_string()), "{e}");
    assert!(
        !tls.reload_if_changed().unwrap(),
        "a broken file is reported once"
    );
    assert_eq!(presented(&pki, addr).await, second);
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    assert!(tls.reload_if_changed().unwrap());
    assert_eq!(presented(&pki, addr).await, second);
}

/// A client certificate signed by the issuing CA (an intermediate) gets in
/// as an agent only: an operator's is refused at the handshake, though it
/// chains to the root as the agent's does.
#[tokio::test]
async fn the_issuing_ca_signs_agents_only() {
    let pki = Pki::new();
    let issuing = pki.ca.generate_issuing(1).unwrap();
    let server = Server::start(&pki, roomy()).await;
    let connect_as = |role: Role| {
        let now = time::OffsetDateTime::now_utc();
        let key = rcgen::KeyPair::generate().unwrap();
        let identity = Identity::new(role, "issued").unwrap();
        let issued = issuing
            .issue_client(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                &identity,
                now - time::Duration::hours(1),
                now + time::Duration::days(1),
            )
            .unwrap();
        let dir = pki.dir.path();
        let cert = dir.join(format!("{role}-by-issuing.pem"));
        let keyfile = dir.join(format!("{role}-by-issuing.key"));
        std::fs::write(&cert, format!("{}{}", issued.cert_pem, issuing.cert_pem())).unwrap();
        std::fs::write(&keyfile, key.serialize_pem()).unwrap();
        let target = ClientTarget {
            address: server.addr.to_string(),
            server_name: Some("localhost".to_owned()),
            tls: TlsFiles {
                ca: dir.join("ca.pem"),
                cert,
                key: keyfile,
            },
            connect_timeout: Duration::from_secs(5),
            keepalive: hostwatch_pki::transport::Keepalive::default(),
        };
        async move {
            let channel = connect(&target).await?.0;
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .map_err(|e| hostwatch_pki::transport::ConnectError::Connect {
                    address: String::new(),
                    reason: e.to_string(),
                })
        }
    };
    connect_as(Role::Agent).await.expect("the agent's call");
    assert_eq!(server.stats().handshakes_refused, 0);
    for role in [Role::Operator, Role::Viewer, Role::Collector] {
        assert!(connect_as(role).await.is_err(), "{role} admitted");
    }
    server
        .until("three refused handshakes", |s| s.handshakes_refused == 3)
        .await;
}

/// The enrollment listener asks for no client certificate and presents the
/// CA after its own chain; a client holding the CA's pin verifies it, a
/// client with another pin refuses it during the handshake.
#[tokio::test]
async fn an_anonymous_listener_presents_the_ca_its_pin_verifies() {
    use hostwatch_pki::{CaPin, ClientAuth};
    use tokio_stream::StreamExt;
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls =
        ServerTls::load_with(pki.files(Role::Collector, "test"), ClientAuth::Anonymous).unwrap();
    let mut incoming = incoming(listener, tls, roomy(), std::future::pending());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(conn) = incoming.next().await {
            held.push(conn);
        }
    });
    let handshake = |pin: CaPin, name: &'static str| async move {
        let config = hostwatch_pki::enroll::pinned_client_config(pin).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(name).unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    let pin = CaPin::of(&pki.ca.cert_der().unwrap()).unwrap();
    let stream = handshake(pin, "localhost").await.unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap().len(), 2);
    let other = Ca::generate("other", 1).unwrap();
    let wrong = CaPin::of(&other.cert_der().unwrap()).unwrap();
    let err = handshake(wrong, "localhost").await.unwrap_err().to_string();
    assert!(err.contains("pinned"), "{err}");
    // The right CA, the wrong server name.
    let err = handshake(pin, "elsewhere.example")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not valid for name") || err.contains("NotValidForName"),
        "{err}"
    );
}

/// A denied agent is refused in the handshake with the
/// `certificate_revoked` alert, which its client recognises, and counted
/// as a refused connection; other peers get in.
#[tokio::test]
async fn a_revoked_agent_is_told_it_was_revoked() {
    use hostwatch_pki::transport::{ConnectError, Denylist, is_certificate_revoked};
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let denylist = Denylist::default();
    denylist.deny("web-1", &[]);
    let tls = ServerTls::load(pki.files(Role::Collector, "test"))
        .unwrap()
        .with_denylist(denylist)
        .unwrap();
    let incoming = incoming(listener, tls, roomy(), std::future::pending());
    let connections = incoming.connections();
    let (_health, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let target = |name: &str| ClientTarget {
        address: addr.to_string(),
        server_name: Some("localhost".to_owned()),
        tls: pki.files(Role::Agent, name),
        connect_timeout: Duration::from_secs(5),
        keepalive: hostwatch_pki::transport::Keepalive::default(),
    };
    // The alert comes after the client's side of the handshake: on the
    // connection, or with the first call.
    let refusal: Box<dyn std::error::Error> = match connect(&target("web-1")).await {
        Err(e) => {
            assert!(matches!(e, ConnectError::Revoked { .. }), "{e}");
            assert!(e.to_string().contains("revoked"), "{e}");
            Box::new(e)
        }
        Ok((channel, _)) => {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .unwrap_err();
            assert!(is_certificate_revoked(&status), "{status:?}");
            Box::new(status)
        }
    };
    assert!(!refusal.to_string().is_empty());
    let (channel, _) = connect(&target("web-2")).await.unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await;
    assert!(status.is_ok(), "{status:?}");
    eventually("the refusal counted, as a revocation", || async {
        let stats = connections.stats();
        (stats.connections_refused >= 1 && stats.connections_revoked == stats.connections_refused)
            .then_some(())
    })
    .await;
    // Other failures are not taken for a revocation.
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(!is_certificate_revoked(&reset));
}
