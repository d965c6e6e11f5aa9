//! API tokens of the HTTPS API: created through Admin (the RPC and the
//! `hostwatch token` program), used as `Authorization: Bearer` by a real
//! TLS client, revoked and expired without a restart, kept across one,
//! and managed by operators only.

use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{
    Batch, CreateTokenRequest, CreateTokenResponse, ListTokensRequest, RevokeTokenRequest,
    SeriesPoints, StorageStatsRequest,
};
use hostwatch_tests::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A collector with its HTTPS API, on a data directory it does not own
/// (so that another can open it after a restart).
pub(crate) struct Collector {
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), hostwatch_collector::CollectorError>>,
}

impl Collector {
    pub(crate) async fn start(pki: &TestPki, data: &Path) -> Self {
        Self::start_with(pki, data, "").await
    }

    /// With `extra` TOML in its configuration (see `collector_config_with`).
    pub(crate) async fn start_with(pki: &TestPki, data: &Path, extra: &str) -> Self {
        let config = collector_config_with(pki, data, extra);
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(hostwatch_collector::serve_with_http(
            config,
            grpc,
            Some(http),
            stop.clone().cancelled_owned(),
        ));
        Collector {
            grpc: grpc_addr,
            http: http_addr,
            stop,
            task,
        }
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    pub(crate) async fn admin(&self, files: TlsFiles) -> AdminClient<Channel> {
        AdminClient::new(channel(files, self.grpc).await.unwrap())
    }

    pub(crate) async fn unauthorized_total(&self, pki: &TestPki) -> u64 {
        self.admin(pki.files(Role::Operator, "ops"))
            .await
            .storage_stats(StorageStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .unauthorized_http_requests
    }
}

/// A TLS 1.3 client trusting the test CA, presenting `files`' certificate
/// (none when `None`).
fn https(pki: &TestPki, files: Option<&TlsFiles>, http: SocketAddr) -> reqwest::Client {
    let mut config = match files {
        Some(files) => hostwatch_pki::client_config(files)
            .unwrap()
            .0
            .as_ref()
            .clone(),
        None => client_without_certificate(&pki.ca_path()),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", http)
        .build()
        .unwrap()
}

/// `GET /api/v1/query?query=host_load1` with `authorization` as the
/// header (none when `None`): the status and the JSON answer.
async fn query(
    client: &reqwest::Client,
    http: SocketAddr,
    authorization: Option<&str>,
) -> (u16, Value) {
    let url = format!(
        "https://localhost:{}/api/v1/query?query=host_load1",
        http.port()
    );
    let mut request = client.get(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Basic credentials with `token` as the password, as Go sends
/// `https://promtool:<token>@host`.
fn basic(token: &str) -> String {
    use base64::Engine as _;
    let credentials = format!("promtool:{token}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// A 401 in Prometheus' error shape whose message says `why`.
#[track_caller]
fn assert_unauthorized((status, body): (u16, Value), why: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["errorType"], "unauthorized", "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(why), "{why:?} not in {body}");
}

/// Stores one sample of `host_load1` for host `web1`.
pub(crate) async fn store_load(pki: &TestPki, grpc: SocketAddr) {
    let batch = Batch {
        seq: 1,
        series: vec![SeriesPoints {
            metric: "host_load1".into(),
            labels: vec![],
            timestamps_ms: vec![now_ms() - 1_000],
            values: vec![2.5],
        }],
        ..Default::default()
    };
    deliver_batch(pki.files(Role::Agent, "web1"), grpc, "web1", 1, batch).await;
}

/// The answer to `host_load1` with the sample of [`store_load`].
pub(crate) fn assert_load((status, body): (u16, Value)) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["result"][0]["metric"],
        json!({"__name__": "host_load1", "host": "web1"}),
        "{body}"
    );
    assert_eq!(body["data"]["result"][0]["value"][1], "2.5", "{body}");
}

pub(crate) async fn create(
    admin: &mut AdminClient<Channel>,
    name: &str,
    role: hostwatch_proto::v1::Role,
    ttl_ms: i64,
) -> Result<CreateTokenResponse, tonic::Status> {
    admin
        .create_token(CreateTokenRequest {
            name: name.into(),
            role: role as i32,
            ttl_ms,
            never_expires: ttl_ms == 0,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_reads_until_revoked_or_expired_and_refusals_are_counted() {
    use hostwatch_proto::v1::Role as Wire;
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    store_load(&pki, collector.grpc).await;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let anonymous = https(&pki, None, collector.http);

    let viewer = create(&mut admin, "grafana", Wire::Viewer, 3_600_000)
        .await
        .unwrap();
    assert!(viewer.token.starts_with("hwt_"), "{}", viewer.token);
    let entry = viewer.entry.unwrap();
    assert_eq!(
        (entry.name.as_str(), entry.role, entry.expired),
        ("grafana", Wire::Viewer as i32, false)
    );
    assert_eq!(entry.created_by, "ops");
    assert!(entry.expires_ms > entry.created_ms);
    let operator = create(&mut admin, "scripts", Wire::Operator, 0)
        .await
        .unwrap();
    assert_eq!(operator.entry.unwrap().expires_ms, 0);
    // Listed without their text.
    let listed = admin
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["grafana", "scripts"]);
    assert!(!format!("{listed:?}").contains(&viewer.token[4..]));

    let before = collector.unauthorized_total(&pki).await;
    // Both roles read, with no certificate; with an agent's certificate
    // too, since the header is what is judged.
    assert_load(query(&anonymous, collector.http, Some(&bearer(&viewer.token))).await);
    assert_load(query(&anonymous, collector.http, Some(&basic(&viewer.token))).await);
    assert_load(query(&anonymous, collector.http, Some(&bearer(&operator.token))).await);
    let agent = https(&pki, Some(&pki.files(Role::Agent, "web1")), collector.http);
    assert_load(query(&agent, collector.http, Some(&bearer(&viewer.token))).await);
    assert_unauthorized(
        query(&agent, collector.http, None).await,
        "requires the operator or viewer role",
    );

    // Refused, counted, and never quoted back.
    let unknown = format!("hwt_{}", "A".repeat(43));
    let refusals = [
        (bearer(&unknown), "unknown or revoked"),
        (bearer("not-a-token"), "not a hostwatch API token"),
        (
            format!("Bearer {}x", viewer.token),
            "not a hostwatch API token",
        ),
        // user:secret, a password that is no token.
        (
            "Basic dXNlcjpzZWNyZXQ=".to_owned(),
            "not a hostwatch API token",
        ),
        (
            format!("Token {}", viewer.token),
            "only the Bearer and Basic schemes",
        ),
        (viewer.token.clone(), "malformed Authorization header"),
        ("Bearer ".to_owned(), "malformed Authorization header"),
    ];
    for (header, why) in &refusals {
        let (status, body) = query(&anonymous, collector.http, Some(header)).await;
        assert!(!body.to_string().contains(&viewer.token[4..]), "{body}");
        assert_unauthorized((status, body), why);
    }
    // An operator's certificate does not save a bad token.
    let ops = https(&pki, Some(&pki.files(Role::Operator, "o")), collector.http);
    assert_unauthorized(
        query(&ops, collector.http, Some(&bearer(&unknown))).await,
        "unknown or revoked",
    );

    // Revoked: refused at the next request, without a restart.
    let revoked = admin
        .revoke_token(RevokeTokenRequest {
            name: "grafana".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.name, "grafana");
    assert_unauthorized(
        query(&anonymous, collector.http, Some(&bearer(&viewer.token))).await,
        "unknown or revoked",
    );
    assert_load(query(&anonymous, collector.http, Some(&bearer(&operator.token))).await);

    // Expired: a one-second token is refused once the second is over.
    let short = create(&mut admin, "short", Wire::Viewer, 1_000)
        .await
        .unwrap();
    let expires_ms = short.entry.unwrap().expires_ms;
    let refused_short = AtomicU64::new(0);
    eventually(Duration::from_secs(10), "the short token to expire", || {
        let (anonymous, token, refused_short) = (&anonymous, &short.token, &refused_short);
        async move {
            let sent_ms = now_ms();
            let (status, body) = query(anonymous, collector.http, Some(&bearer(token))).await;
            if status == 200 {
                assert!(sent_ms < expires_ms, "served after expiry: {body}");
                return None;
            }
            refused_short.fetch_add(1, Ordering::Relaxed);
            assert_unauthorized((status, body), "expired");
            Some(())
        }
    })
    .await;
    let listed = admin
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(listed.iter().any(|t| t.name == "short" && t.expired));

    // The refusals above, the bad token on an operator's certificate, the
    // agent's certificate alone, the revoked token, the expired one.
    let refused = refusals.len() as u64 + 3 + refused_short.load(Ordering::Relaxed);
    assert_eq!(collector.unauthorized_total(&pki).await, before + refused);
    collector.stop().await;
}

/// Runs the `hostwatch` program as an operator of the collector at `grpc`.
pub(crate) async fn hostwatch(
    pki: &TestPki,
    grpc: SocketAddr,
    dir: &Path,
    args: &[&str],
) -> std::process::Output {
    hostwatch_as(pki, Role::Operator, grpc, dir, args).await
}

/// Runs the `hostwatch` program with a certificate of `role`.
pub(crate) async fn hostwatch_as(
    pki: &TestPki,
    role: Role,
    grpc: SocketAddr,
    dir: &Path,
    args: &[&str],
) -> std::process::Output {
    let files = pki.files(role, "cli");
    let cli_toml = dir.join(format!("cli-{role:?}-{}.toml", grpc.port()));
    std::fs::write(
        &cli_toml,
        format!(
            "collector = \"{grpc}\"\nserver_name = \"localhost\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            files.ca, files.cert, files.key
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-hostwatch"));
    command.arg("--config").arg(&cli_toml).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_made_by_the_cli_survive_a_restart_and_its_revocation_is_immediate() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    store_load(&pki, collector.grpc).await;
    let out = hostwatch(
        &pki,
        collector.grpc,
        work.path(),
        &["token", "create", "--name", "grafana", "--role", "viewer"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The token alone on stdout, how to use it on stderr.
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("hwt_") && !token.contains(' '), "{token}");
    assert!(text(&out.stderr).contains("Authorization: Bearer"));
    let anonymous = https(&pki, None, collector.http);
    assert_load(query(&anonymous, collector.http, Some(&bearer(&token))).await);
    collector.stop().await;

    let collector = Collector::start(&pki, data.path()).await;
    let anonymous = https(&pki, None, collector.http);
    assert_load(query(&anonymous, collector.http, Some(&bearer(&token))).await);
    let list = hostwatch(&pki, collector.grpc, work.path(), &["token", "list"]).await;
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    let line = listed
        .lines()
        .find(|l| l.starts_with("grafana "))
        .unwrap_or_else(|| panic!("{listed}"));
    // Default lifetime: 90 days, so the expiry is a date, not "never".
    assert!(
        line.contains(" viewer ") && !line.contains("never") && !line.contains("expired"),
        "{line}"
    );
    assert!(!listed.contains(&token[4..]), "{listed}");

    let revoke = hostwatch(
        &pki,
        collector.grpc,
        work.path(),
        &["token", "revoke", "grafana"],
    )
    .await;
    assert!(revoke.status.success(), "{}", text(&revoke.stderr));
    assert_unauthorized(
        query(&anonymous, collector.http, Some(&bearer(&token))).await,
        "unknown or revoked",
    );
    let again = hostwatch(
        &pki,
        collector.grpc,
        work.path(),
        &["token", "revoke", "grafana"],
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("no token is named"),
        "{}",
        text(&again.stderr)
    );
    collector.stop().await;

    // And the revocation was stored.
    let collector = Collector::start(&pki, data.path()).await;
    let anonymous = https(&pki, None, collector.http);
    assert_unauthorized(
        query(&anonymous, collector.http, Some(&bearer(&token))).await,
        "unknown or revoked",
    );
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_refuses_a_bad_ttl_or_role_with_a_usage_error() {
    let pki = TestPki::new();
    let work = tempfile::tempdir().unwrap();
    // Nothing listens there: the arguments are refused before any call.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (args, names) in [
        (&["--ttl", "soon", "--role", "viewer"][..], "--ttl"),
        (&["--ttl", "0s", "--role", "viewer"][..], "--ttl"),
        (&["--ttl", "20y", "--role", "viewer"][..], "--ttl"),
        (&["--role", "agent"][..], "--role"),
        (&["--role", ""][..], "--role"),
    ] {
        let mut all = vec!["token", "create", "--name", "x"];
        all.extend_from_slice(args);
        let out = hostwatch(&pki, nowhere, work.path(), &all).await;
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(names),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_operator_certificates_manage_tokens_and_bad_requests_name_the_field() {
    use hostwatch_proto::v1::Role as Wire;
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let operator_token = create(&mut admin, "ops-token", Wire::Operator, 0)
        .await
        .unwrap()
        .token;

    // A viewer's or agent's certificate may not, and a token does not
    // lift a gRPC caller's role: gRPC identity is the certificate's.
    for role in [Role::Viewer, Role::Agent] {
        let mut other = collector.admin(pki.files(role, "v")).await;
        let mut request = tonic::Request::new(CreateTokenRequest {
            name: "mine".into(),
            role: Wire::Operator as i32,
            ttl_ms: 60_000,
            never_expires: false,
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", bearer(&operator_token).parse().unwrap());
        let status = other.create_token(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{role}: {status:?}"
        );
        let status = other.list_tokens(ListTokensRequest {}).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{role}: {status:?}"
        );
        let status = other
            .revoke_token(RevokeTokenRequest {
                name: "ops-token".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{role}: {status:?}"
        );
    }

    let bad = |name: &str, role: Wire, ttl_ms: i64, never_expires: bool| CreateTokenRequest {
        name: name.into(),
        role: role as i32,
        ttl_ms,
        never_expires,
        ..Default::default()
    };
    let ten_years_ms = 3650 * 86_400_000;
    for (request, field) in [
        (bad("", Wire::Viewer, 1_000, false), "name"),
        (bad("has space", Wire::Viewer, 1_000, false), "name"),
        (bad(&"n".repeat(65), Wire::Viewer, 1_000, false), "name"),
        (bad("-x", Wire::Viewer, 1_000, false), "name"),
        (bad("a", Wire::Unspecified, 1_000, false), "role"),
        // ROLE_AGENT asks for an enrollment token, which needs uses.
        (bad("a", Wire::Agent, 1_000, false), "uses"),
        (bad("a", Wire::Collector, 1_000, false), "role"),
        (bad("a", Wire::Viewer, -1, false), "ttl_ms"),
        (bad("a", Wire::Viewer, 0, false), "ttl_ms"),
        (bad("a", Wire::Viewer, ten_years_ms + 1, false), "ttl_ms"),
        (bad("a", Wire::Viewer, 1_000, true), "ttl_ms"),
    ] {
        let status = admin.create_token(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(field),
            "{request:?}: {}",
            status.message()
        );
    }
    let mut unknown_role = bad("a", Wire::Viewer, 1_000, false);
    unknown_role.role = 42;
    let status = admin.create_token(unknown_role).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("role"), "{}", status.message());

    let status = admin
        .create_token(bad("ops-token", Wire::Viewer, 1_000, false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    for (name, code) in [
        ("nobody", tonic::Code::NotFound),
        ("", tonic::Code::InvalidArgument),
    ] {
        let status = admin
            .revoke_token(RevokeTokenRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{name:?}: {status:?}");
    }
    // Nothing refused was created.
    let listed = admin
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(listed.len(), 1, "{listed:?}");
    collector.stop().await;
}

/// Replaces the value of `key = "..."` in the TOML file at `path` by `value`.
fn set_key(path: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("{key} = ");
    let edited: Vec<String> = text
        .lines()
        .map(|line| match line.strip_prefix(&prefix) {
            Some(_) => format!("{prefix}\"{value}\""),
            None => line.to_owned(),
        })
        .collect();
    assert_ne!(edited.join("\n"), text.trim_end(), "{key} not in {text}");
    std::fs::write(path, edited.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_leaves_a_private_viewer_token_that_reads_its_collector() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let run = |qs: std::path::PathBuf| async move {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-hostwatch"));
        command
            .args(["quickstart", "--duration", "1", "--dir"])
            .arg(&qs);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    };
    let out = run(qs.clone()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = qs.join("grafana.token");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.starts_with("hwt_"), "{token}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Its path and a way to use it are printed; the token is not.
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(printed.contains(&file.display().to_string()), "{printed}");
    assert!(
        printed.contains("Authorization: Bearer $(cat "),
        "{printed}"
    );
    assert!(!printed.contains(&token[4..]), "{printed}");
    // And an operator token for the web console, the same way.
    let console_file = qs.join("console.token");
    let console_token = std::fs::read_to_string(&console_file).unwrap();
    assert!(console_token.starts_with("hwt_"), "{console_token}");
    let mode = std::fs::metadata(&console_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        printed.contains("web console at https://localhost:"),
        "{printed}"
    );
    assert!(
        printed.contains(&console_file.display().to_string()),
        "{printed}"
    );
    assert!(!printed.contains(&console_token[4..]), "{printed}");
    // A second start keeps a token that still works.
    let again = run(qs.clone()).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token);

    // The quick start's collector as a program (on ports free now: other
    // quick starts may hold the ones it chose), read with the token alone.
    let collector_toml = qs.join("collector.toml");
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    set_key(
        &collector_toml,
        "listen",
        &format!("127.0.0.1:{}", free_port()),
    );
    set_key(&collector_toml, "http_listen", &http.to_string());
    let collector = Process::start(
        Path::new(env!("CARGO_BIN_EXE_e2e-collector")),
        &collector_toml,
        dir.path().join("collector.log"),
    );
    let client = {
        let mut config = client_without_certificate(&qs.join("certs").join("ca.pem"));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .resolve("localhost", http)
            .build()
            .unwrap()
    };
    let (status, body) = eventually(Duration::from_secs(30), "the collector's HTTPS API", || {
        let client = &client;
        let token = &token;
        async move {
            let url = format!("https://localhost:{}/api/v1/query?query=1", http.port());
            let response = client.get(url).bearer_auth(token).send().await.ok()?;
            let status = response.status().as_u16();
            let body: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
            Some((status, body))
        }
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "scalar", "{body}");
    // The console's token logs in as an operator.
    let login = client
        .post(format!("https://localhost:{}/login", http.port()))
        .header("content-type", "application/json")
        .body(json!({ "token": console_token }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&login.text().await.unwrap()).unwrap();
    assert_eq!(body["data"]["role"], "operator", "{body}");
    assert!(!collector.log().contains(&token[4..]));
    assert!(!collector.log().contains(&console_token[4..]));
    assert_eq!(
        collector.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}
