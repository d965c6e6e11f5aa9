//! Enrollment (issue 17) over real sockets: a collector with an issuing CA
//! and an enrollment listener, agents enrolling with `hostwatch-agent
//! enroll`'s code, and raw Enroll calls for what the agent would never send.

use hostwatch_agent::enroll::{EnrollArgs, EnrollError, enroll};
use hostwatch_pki::{CaPin, Role};
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::enroll_client::EnrollClient;
use hostwatch_proto::v1::{
    ApiToken, CreateTokenRequest, EnrollRequest, EnrollResponse, ListTokensRequest,
    RevokeTokenRequest, StorageStatsRequest,
};
use hostwatch_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

/// A collector that enrolls agents, and its PKI.
struct Site {
    pki: TestPki,
    collector: RunningCollector,
    enroll_addr: String,
    issuing: PathBuf,
    _data: tempfile::TempDir,
}

impl Site {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `extra` keys in `[enroll]`.
    async fn start_with(extra: &str) -> Self {
        let pki = TestPki::new();
        let (cert, key) = pki.issuing();
        let data = tempfile::tempdir().unwrap();
        let enroll_addr = format!("127.0.0.1:{}", free_port());
        let extra = format!(
            "enroll_listen = {enroll_addr:?}\n[enroll]\nissuer_cert = {:?}\nissuer_key = {:?}\n{extra}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let config = collector_config_with(&pki, data.path(), &extra);
        let collector = RunningCollector::start(config).await;
        let addr = enroll_addr.clone();
        eventually(WAIT, "the enrollment listener", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(drop) }
        })
        .await;
        Site {
            pki,
            collector,
            enroll_addr,
            issuing: cert,
            _data: data,
        }
    }

    async fn admin(&self) -> AdminClient<Channel> {
        let files = self.pki.files(Role::Operator, "ops");
        AdminClient::new(channel(files, self.collector.addr).await.unwrap())
    }

    /// An enrollment token's text and name.
    async fn token(&self, uses: u32, ttl_ms: i64, hosts: &str) -> (String, String) {
        let created = self
            .admin()
            .await
            .create_token(CreateTokenRequest {
                role: hostwatch_proto::v1::Role::Agent as i32,
                uses,
                ttl_ms,
                hosts: hosts.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (created.token, created.entry.unwrap().name)
    }

    async fn listed(&self, name: &str) -> ApiToken {
        let tokens = self.admin().await.list_tokens(ListTokensRequest {}).await;
        let tokens = tokens.unwrap().into_inner().tokens;
        tokens.into_iter().find(|t| t.name == name).unwrap()
    }

    /// Enrollments issued and refused, as `storage stats` reports them.
    async fn counted(&self) -> (u64, u64) {
        let mut admin = self.admin().await;
        let stats = admin.storage_stats(StorageStatsRequest {}).await;
        let stats = stats.unwrap().into_inner();
        (stats.enrollments, stats.enrollments_refused)
    }

    fn args(&self, token: &str, host: &str, dir: &Path) -> EnrollArgs {
        EnrollArgs {
            collector: self.enroll_addr.clone(),
            token: token.to_owned(),
            ca_pin: self.pki.pin(),
            host_id: Some(host.to_owned()),
            dir: dir.to_owned(),
            replace: false,
            ingest: None,
            server_name: None,
            state_dir: dir.join("state"),
            pki_dir: None,
            user: None,
        }
    }

    /// An Enroll call as the agent makes it, with any request.
    async fn raw(&self, request: EnrollRequest) -> Result<EnrollResponse, tonic::Status> {
        let channel =
            hostwatch_pki::transport::connect_pinned(&self.enroll_addr, None, self.pki.pin(), WAIT)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        EnrollClient::new(channel)
            .enroll(request)
            .await
            .map(|r| r.into_inner())
    }
}

fn refused_with(result: Result<impl std::fmt::Debug, EnrollError>, code: Code) -> String {
    match result {
        Err(EnrollError::Refused { code: got, message }) if got == code => message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// `openssl verify` of the leaf of `chain` (agent.pem) against the root,
/// with the issuing CA as the only intermediate.
fn openssl_verify(root: &Path, issuing: &Path, chain: &Path) {
    let pem = std::fs::read_to_string(chain).unwrap();
    let end = "-----END CERTIFICATE-----";
    let leaf = &pem[..pem.find(end).unwrap() + end.len()];
    assert_eq!(
        pem.matches(end).count(),
        2,
        "agent.pem is the leaf and the issuing CA"
    );
    let leaf_path = chain.with_extension("leaf.pem");
    std::fs::write(&leaf_path, format!("{leaf}\n")).unwrap();
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(issuing)
        .arg("-purpose")
        .arg("sslclient")
        .arg(&leaf_path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains(": OK"),
        "{said} {err}"
    );
}

#[tokio::test]
async fn an_enrolled_agent_streams_with_the_files_it_wrote() {
    let site = Site::start().await;
    let (token, name) = site.token(1, 3_600_000, "web-*").await;
    let dir = tempfile::tempdir().unwrap();
    // A collector on the same host keeps its CA file in the same place.
    let collectors_ca = dir.path().join("ca.pem");
    std::fs::write(&collectors_ca, "the collector's").unwrap();
    let done = enroll(&site.args(&token, "web-1", dir.path()))
        .await
        .unwrap();
    assert_eq!(done.ingest, site.collector.addr.to_string());
    assert_eq!(
        std::fs::read_to_string(&collectors_ca).unwrap(),
        "the collector's"
    );
    // The key and certificate in the state directory, which the agent
    // may write (renewal), the rest beside agent.toml.
    assert_eq!(done.pki_dir, dir.path().join("state/pki"));
    let written = hostwatch_agent::AgentConfig::load(&done.config).unwrap();
    assert_eq!(written.tls.cert, dir.path().join("state/pki/agent.pem"));
    assert_eq!(written.tls.ca, dir.path().join("agent-ca.pem"));
    use std::os::unix::fs::PermissionsExt;
    for private in ["state", "state/pki"] {
        let mode = std::fs::metadata(dir.path().join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{private}");
    }
    let mode = std::fs::metadata(dir.path().join("state/pki/agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    openssl_verify(
        &dir.path().join("agent-ca.pem"),
        &site.issuing,
        &dir.path().join("state/pki/agent.pem"),
    );
    // The issued certificate: the agent's identity, client-auth only.
    let chain = std::fs::read(dir.path().join("state/pki/agent.pem")).unwrap();
    let leaf = rustls::pki_types::pem::PemObject::pem_slice_iter(&chain)
        .next()
        .unwrap()
        .unwrap();
    let leaf: rustls::pki_types::CertificateDer<'_> = leaf;
    assert_eq!(
        hostwatch_pki::peer_identity(&leaf).unwrap().to_string(),
        "agent/web-1"
    );
    assert_eq!(site.listed(&name).await.uses_left, 0);
    assert_eq!(site.counted().await, (1, 0));

    let mut config = hostwatch_agent::AgentConfig::load(&done.config).unwrap();
    config.interval = Duration::from_millis(200);
    let agent = RunningAgent::start(config);
    eventually(WAIT, "the enrolled agent's samples", || {
        host_series(
            &site.pki,
            site.collector.addr,
            "web-1",
            "hostwatch_agent_batches_total",
        )
    })
    .await;
    agent.stop().await;

    // The token is used up: a second host is refused, and nothing written.
    let other = tempfile::tempdir().unwrap();
    let message = refused_with(
        enroll(&site.args(&token, "web-2", other.path())).await,
        Code::Unauthenticated,
    );
    assert!(
        message.contains("no uses left") && !message.contains(&token),
        "{message}"
    );
    assert!(!other.path().join("state/pki/agent.key").exists());
    site.collector.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_without_using_them() {
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (token, name) = site.token(5, 3_600_000, "web-*").await;
    // A token of the right shape the collector never made, and one of
    // the wrong shape.
    let mut unknown = token.clone();
    let last = if unknown.ends_with('A') { "B" } else { "A" };
    unknown.replace_range(unknown.len() - 1.., last);
    for bad in [unknown.as_str(), "hwt_short", ""] {
        refused_with(
            enroll(&site.args(bad, "web-1", dir.path())).await,
            Code::Unauthenticated,
        );
    }
    // Outside the pattern.
    let message = refused_with(
        enroll(&site.args(&token, "db-1", dir.path())).await,
        Code::PermissionDenied,
    );
    assert!(message.contains("web-*"), "{message}");
    // Revoked.
    let (revoked, revoked_name) = site.token(1, 3_600_000, "").await;
    site.admin()
        .await
        .revoke_token(RevokeTokenRequest { name: revoked_name })
        .await
        .unwrap();
    let message = refused_with(
        enroll(&site.args(&revoked, "web-1", dir.path())).await,
        Code::Unauthenticated,
    );
    assert!(message.contains("unknown or revoked"), "{message}");
    // Expired: a lifetime of 1 ms is over by the time it is used.
    let (expired, _) = site.token(1, 1, "").await;
    let message = refused_with(
        enroll(&site.args(&expired, "web-1", dir.path())).await,
        Code::Unauthenticated,
    );
    assert!(message.contains("expired"), "{message}");
    // An API token is no enrollment token.
    let api = site
        .admin()
        .await
        .create_token(CreateTokenRequest {
            name: "grafana".to_owned(),
            role: hostwatch_proto::v1::Role::Viewer as i32,
            ttl_ms: 3_600_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    refused_with(
        enroll(&site.args(&api, "web-1", dir.path())).await,
        Code::Unauthenticated,
    );
    assert!(!dir.path().join("state/pki/agent.key").exists());
    assert_eq!(site.listed(&name).await.uses_left, 5);
    assert_eq!(site.counted().await, (0, 7));
    site.collector.stop().await;
}

/// CSRs the agent would never send, and host ids: each refused with its
/// status, none using the token.
#[tokio::test]
async fn bad_requests_are_refused_with_their_reason() {
    let site = Site::start().await;
    let (token, name) = site.token(3, 3_600_000, "").await;
    let request = |host: &str, csr: Vec<u8>| EnrollRequest {
        token: token.clone(),
        host_id: host.to_owned(),
        csr,
        replace: false,
    };
    let (_, good) = hostwatch_pki::enroll::agent_request("web-1").unwrap();
    let mut tampered = good.clone();
    let at = tampered.len() - 1;
    tampered[at] ^= 0x01;
    let (_, other_host) = hostwatch_pki::enroll::agent_request("web-2").unwrap();
    let with = |edit: &dyn Fn(&mut rcgen::CertificateParams)| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        edit(&mut params);
        params.serialize_request(&key).unwrap().der().to_vec()
    };
    let ca = with(&|p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    let operator = with(&|p| {
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "hostwatch://operator/web-1".try_into().unwrap(),
        )]
    });
    for (request, code, said) in [
        (
            request("web-1", tampered),
            Code::InvalidArgument,
            "signature",
        ),
        (
            request("web-1", b"not a csr".to_vec()),
            Code::InvalidArgument,
            "PKCS#10",
        ),
        (
            request("web-1", Vec::new()),
            Code::InvalidArgument,
            "PKCS#10",
        ),
        (
            request("web-1", ca),
            Code::PermissionDenied,
            "CA certificate",
        ),
        (
            request("web-1", operator),
            Code::PermissionDenied,
            "operator/web-1",
        ),
        (
            request("web-1", other_host),
            Code::PermissionDenied,
            "agent/web-2",
        ),
        (
            request("a/b", good.clone()),
            Code::InvalidArgument,
            "host_id",
        ),
        (request("", good.clone()), Code::InvalidArgument, "host_id"),
    ] {
        let status = site.raw(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{said}: {status:?}");
        assert!(status.message().contains(said), "{said}: {status:?}");
        assert!(!status.message().contains(&token));
    }
    assert_eq!(site.listed(&name).await.uses_left, 3);
    assert_eq!(site.counted().await, (0, 8));
    // The same token and key, asking for nothing else: issued.
    site.raw(request("web-1", good)).await.unwrap();
    site.collector.stop().await;
}

#[tokio::test]
async fn a_live_host_is_enrolled_again_only_with_replace() {
    let site = Site::start().await;
    let (token, name) = site.token(3, 3_600_000, "").await;
    let dir = tempfile::tempdir().unwrap();
    let first = enroll(&site.args(&token, "web-1", dir.path()))
        .await
        .unwrap();
    // The same directory: the key is kept unless --replace (nothing sent).
    match enroll(&site.args(&token, "web-1", dir.path())).await {
        Err(EnrollError::Usage(m)) => assert!(m.contains("agent.key"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Another host claiming web-1 (a fresh directory): refused.
    let elsewhere = tempfile::tempdir().unwrap();
    let message = refused_with(
        enroll(&site.args(&token, "web-1", elsewhere.path())).await,
        Code::AlreadyExists,
    );
    assert!(message.contains(&first.serial), "{message}");
    assert_eq!(site.listed(&name).await.uses_left, 2);
    let key_path = dir.path().join("state/pki/agent.key");
    let key_before = std::fs::read(&key_path).unwrap();
    // A key someone made readable to all: the new one is not.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = site.args(&token, "web-1", dir.path());
    args.replace = true;
    let second = enroll(&args).await.unwrap();
    assert_ne!(second.serial, first.serial);
    assert_ne!(std::fs::read(&key_path).unwrap(), key_before);
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    openssl_verify(
        &dir.path().join("agent-ca.pem"),
        &site.issuing,
        &dir.path().join("state/pki/agent.pem"),
    );
    assert_eq!(site.listed(&name).await.uses_left, 1);
    site.collector.stop().await;
}

/// A wrong pin, or a collector of another deployment: the agent refuses
/// during the handshake, and the collector never sees an Enroll call.
#[tokio::test]
async fn a_wrong_pin_refuses_the_collector_before_sending_the_token() {
    let site = Site::start().await;
    let (token, name) = site.token(1, 3_600_000, "").await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = site.args(&token, "web-1", dir.path());
    args.ca_pin = TestPki::new().pin();
    match enroll(&args).await {
        Err(EnrollError::Connect(e)) => assert!(e.to_string().contains("pinned"), "{e}"),
        other => panic!("{other:?}"),
    }
    // The right CA, but not the name the collector's certificate carries.
    let mut args = site.args(&token, "web-1", dir.path());
    args.server_name = Some("collector.elsewhere.example".to_owned());
    assert!(matches!(enroll(&args).await, Err(EnrollError::Connect(_))));
    let bad: Result<CaPin, _> = "sha256:00".parse();
    assert!(bad.is_err());
    assert_eq!(site.counted().await, (0, 0));
    assert_eq!(site.listed(&name).await.uses_left, 1);
    assert!(!dir.path().join("state/pki/agent.key").exists());
    site.collector.stop().await;
}

/// Two hosts racing for a token's last use over real connections: one is
/// enrolled, the other told the token is used up.
#[tokio::test]
async fn concurrent_enrollments_share_a_token_s_last_use() {
    let site = Site::start().await;
    let (token, _) = site.token(1, 3_600_000, "").await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (args_a, args_b) = (
        site.args(&token, "web-a", a.path()),
        site.args(&token, "web-b", b.path()),
    );
    let (first, second) = tokio::join!(enroll(&args_a), enroll(&args_b));
    let results = [first, second];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let loser = results.into_iter().find(|r| r.is_err()).unwrap();
    refused_with(loser, Code::Unauthenticated);
    assert_eq!(site.counted().await, (1, 1));
    site.collector.stop().await;
}

/// Bad CreateToken fields for enrollment tokens name the field.
#[tokio::test]
async fn bad_enrollment_token_fields_are_refused() {
    let site = Site::start().await;
    let agent = hostwatch_proto::v1::Role::Agent as i32;
    let viewer = hostwatch_proto::v1::Role::Viewer as i32;
    let hour = 3_600_000;
    for (request, said) in [
        (
            CreateTokenRequest {
                role: agent,
                uses: 0,
                ttl_ms: hour,
                ..Default::default()
            },
            "uses",
        ),
        (
            CreateTokenRequest {
                role: agent,
                uses: 100_001,
                ttl_ms: hour,
                ..Default::default()
            },
            "uses",
        ),
        (
            CreateTokenRequest {
                role: agent,
                uses: 1,
                ttl_ms: 0,
                ..Default::default()
            },
            "ttl_ms",
        ),
        (
            CreateTokenRequest {
                role: agent,
                uses: 1,
                ttl_ms: 31 * 86_400_000,
                ..Default::default()
            },
            "ttl_ms",
        ),
        (
            CreateTokenRequest {
                role: agent,
                uses: 1,
                never_expires: true,
                ..Default::default()
            },
            "never_expires",
        ),
        (
            CreateTokenRequest {
                role: agent,
                uses: 1,
                ttl_ms: hour,
                hosts: "web/*".to_owned(),
                ..Default::default()
            },
            "hosts",
        ),
        (
            CreateTokenRequest {
                role: agent,
                uses: 1,
                ttl_ms: hour,
                name: "-x".to_owned(),
                ..Default::default()
            },
            "name",
        ),
        (
            CreateTokenRequest {
                role: viewer,
                name: "v".to_owned(),
                uses: 2,
                ttl_ms: hour,
                ..Default::default()
            },
            "uses",
        ),
        (
            CreateTokenRequest {
                role: viewer,
                name: "v".to_owned(),
                ttl_ms: hour,
                hosts: "a".to_owned(),
                ..Default::default()
            },
            "hosts",
        ),
    ] {
        let status = site.admin().await.create_token(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{said}: {status:?}");
        assert!(status.message().contains(said), "{said}: {status:?}");
    }
    // Names are shared by both kinds.
    let (_, name) = site.token(1, hour, "").await;
    let status = site
        .admin()
        .await
        .create_token(CreateTokenRequest {
            role: viewer,
            name,
            ttl_ms: hour,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    site.collector.stop().await;
}

/// Clients without certificates share `enroll.max_connections`: past
/// it, a new connection is closed; once one closes, there is room again.
#[tokio::test]
async fn anonymous_connections_are_bounded() {
    let site = Site::start_with("max_connections = 1").await;
    let (token, _) = site.token(2, 3_600_000, "").await;
    let (_, csr) = hostwatch_pki::enroll::agent_request("web-1").unwrap();
    let request = EnrollRequest {
        token: token.clone(),
        host_id: "web-1".to_owned(),
        csr,
        replace: false,
    };
    let held =
        hostwatch_pki::transport::connect_pinned(&site.enroll_addr, None, site.pki.pin(), WAIT)
            .await
            .unwrap();
    let mut held = EnrollClient::new(held);
    held.enroll(request.clone()).await.unwrap();
    // The listener closes the second connection once its handshake is over.
    assert!(site.raw(request.clone()).await.is_err());
    drop(held);
    let mut again = request;
    again.replace = true;
    eventually(WAIT, "room for a new connection", || {
        let again = again.clone();
        let site = &site;
        async move { site.raw(again).await.ok() }
    })
    .await;
    site.collector.stop().await;
}

/// A program of this crate (`e2e-hostwatch`, `e2e-agent`) run to its end.
fn run(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("HOSTWATCH_CONFIG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bad usage of the deployment's commands (`token create --enroll`,
/// `hostwatch-agent enroll`), as programs: exit status 64, the flag named,
/// the token never echoed, nothing sent. Nothing listens at the addresses
/// given: a command that tried to connect would fail otherwise (exit 1).
/// The commands used rightly run in `deploy.rs`.
#[test]
fn bad_usage_of_the_deployment_commands_exits_64() {
    let hostwatch = env!("CARGO_BIN_EXE_e2e-hostwatch");
    let agent = env!("CARGO_BIN_EXE_e2e-agent");
    let dir = tempfile::tempdir().unwrap();
    let p = |path: &Path| path.display().to_string();
    let pki = dir.path().join("pki");
    let init = run(hostwatch, &["certs", "init", "--dir", &p(&pki)]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let pin = text(&init.stdout).trim().to_owned();
    let out = run(
        hostwatch,
        &[
            "certs",
            "issue",
            "--dir",
            &p(&pki),
            "--role",
            "operator",
            "--name",
            "ops",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nowhere = format!("127.0.0.1:{}", free_port());
    let cli_toml = dir.path().join("cli.toml");
    std::fs::write(
        &cli_toml,
        format!(
            "collector = \"{nowhere}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-ops.pem\"\nkey = \"pki/operator-ops.key\"\n"
        ),
    )
    .unwrap();
    let cli = p(&cli_toml);
    for (args, named) in [
        (
            &["token", "create", "--enroll", "--ttl", "never"][..],
            "--ttl never",
        ),
        (
            &["token", "create", "--enroll", "--ttl", "soon"][..],
            "--ttl",
        ),
        (
            &[
                "token", "create", "--uses", "2", "--name", "x", "--role", "viewer",
            ][..],
            "--enroll",
        ),
        (
            &[
                "token", "create", "--hosts", "web-*", "--name", "x", "--role", "viewer",
            ][..],
            "--enroll",
        ),
        (
            &["token", "create", "--enroll", "--role", "viewer"][..],
            "--role",
        ),
        (&["token", "create", "--name", "x"][..], "--role"),
        (
            &["token", "create", "--enroll", "--uses", "many"][..],
            "--uses",
        ),
    ] {
        let mut all = vec!["--config", cli.as_str()];
        all.extend_from_slice(args);
        let out = run(hostwatch, &all);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {said}");
        assert!(said.contains(named), "{args:?}: {said}");
    }
    let token = "hwt_not-a-real-token-but-secret-all-the-same";
    let host = p(&dir.path().join("host"));
    for (args, named) in [
        (
            &[
                "--collector",
                &nowhere,
                "--ca-pin",
                "sha256:00",
                "--host-id",
                "web-1",
            ][..],
            "--ca-pin",
        ),
        (
            &[
                "--collector",
                &nowhere,
                "--ca-pin",
                &pin,
                "--host-id",
                "a/b",
            ][..],
            "--host-id",
        ),
        (
            &[
                "--collector",
                &nowhere,
                "--ca-pin",
                &pin,
                "--host-id",
                "web-1",
                "--ingest",
                "nowhere",
            ][..],
            "--ingest",
        ),
        (
            &[
                "--collector",
                "nowhere",
                "--ca-pin",
                &pin,
                "--host-id",
                "web-1",
            ][..],
            "--collector",
        ),
        (
            &[
                "--collector",
                &nowhere,
                "--ca-pin",
                &pin,
                "--host-id",
                "web-1",
                "--user",
                "hostwatch-no-such-user",
            ][..],
            "--user hostwatch-no-such-user",
        ),
    ] {
        let mut all = vec!["enroll", "--token", token, "--dir", &host];
        all.extend_from_slice(args);
        let out = run(agent, &all);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {said}");
        assert!(
            said.contains(named) && !said.contains(token),
            "{args:?}: {said}"
        );
    }
    assert!(!dir.path().join("host").exists());
}
