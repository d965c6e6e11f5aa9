//! Revoking a host (issue 17, item 4) over real sockets: an enrolled agent
//! streaming, revoked through Admin; its open stream closed, its
//! certificate refused at the handshake (also after a restart), its
//! enrollment refused unless a newer token reinstates it; bad requests.

use hostwatch_agent::enroll::{EnrollArgs, EnrollError, enroll};
use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{
    CreateTokenRequest, ListRevokedHostsRequest, RenewRequest, RevokeHostRequest,
};
use hostwatch_tests::*;
use std::path::Path;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

async fn admin(pki: &TestPki, addr: std::net::SocketAddr) -> AdminClient<Channel> {
    AdminClient::new(
        channel(pki.files(Role::Operator, "ops"), addr)
            .await
            .unwrap(),
    )
}

async fn enroll_token(pki: &TestPki, addr: std::net::SocketAddr) -> String {
    admin(pki, addr)
        .await
        .create_token(CreateTokenRequest {
            role: hostwatch_proto::v1::Role::Agent as i32,
            uses: 5,
            ttl_ms: 3_600_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Renewals checked right after enrollment, and again: not held back by
/// `enroll.min_renew_interval` (tested in renew.rs).
const RENEW_AT_ONCE: &str = "min_renew_interval = \"1ms\"\n";

fn args(pki: &TestPki, enroll_addr: &str, token: &str, dir: &Path) -> EnrollArgs {
    EnrollArgs {
        collector: enroll_addr.to_owned(),
        token: token.to_owned(),
        ca_pin: pki.pin(),
        host_id: Some("web-1".to_owned()),
        dir: dir.to_owned(),
        replace: true,
        ingest: None,
        server_name: None,
        state_dir: dir.join("state"),
        pki_dir: None,
        user: None,
    }
}

/// Whether a peer with `files` gets a certificate renewed: admitted, and
/// not revoked.
async fn renews(files: TlsFiles, addr: std::net::SocketAddr) -> bool {
    let Ok(channel) = channel(files, addr).await else {
        return false;
    };
    let (_, csr) = hostwatch_pki::enroll::agent_request("web-1").unwrap();
    let (_, other) = hostwatch_pki::enroll::agent_request("web-2").unwrap();
    let mut client = IngestClient::new(channel);
    // Whichever host the certificate is for, one of the two is its own.
    let first = client.renew(RenewRequest { csr }).await;
    let second = client.renew(RenewRequest { csr: other }).await;
    first.is_ok() || second.is_ok()
}

#[tokio::test]
async fn a_revoked_host_is_cut_off_until_a_newer_token_enrolls_it() {
    let pki = TestPki::new();
    let (cert, key) = pki.issuing();
    let data = tempfile::tempdir().unwrap();
    let enroll_addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "enroll_listen = {enroll_addr:?}\n[enroll]\nissuer_cert = {:?}\nissuer_key = {:?}\n{RENEW_AT_ONCE}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = collector_config_with(&pki, data.path(), &extra);
    let collector = RunningCollector::start(config.clone()).await;
    let addr = collector.addr;
    let ready = enroll_addr.clone();
    eventually(WAIT, "the enrollment listener", || {
        let ready = ready.clone();
        async move { tokio::net::TcpStream::connect(ready).await.ok().map(drop) }
    })
    .await;
    let old_token = enroll_token(&pki, addr).await;
    let dir = tempfile::tempdir().unwrap();
    let enrolled = enroll(&args(&pki, &enroll_addr, &old_token, dir.path()))
        .await
        .unwrap();
    let mut agent_config = hostwatch_agent::AgentConfig::load(&enrolled.config).unwrap();
    agent_config.interval = Duration::from_millis(200);
    let files = agent_config.tls.clone();
    let agent = RunningAgent::start(agent_config);
    eventually(WAIT, "the agent's samples", || {
        host_series(&pki, addr, "web-1", "hostwatch_agent_batches_total")
    })
    .await;
    let bystander = pki.files(Role::Agent, "web-2");
    assert!(renews(files.clone(), addr).await);

    let revoked = admin(&pki, addr)
        .await
        .revoke_host(RevokeHostRequest {
            host_id: "web-1".to_owned(),
            reason: "disk stolen".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    // The agent's stream was open: closed, and its serial recorded.
    assert!(revoked.connections_closed >= 1, "{revoked:?}");
    assert!(revoked.serials.contains(&enrolled.serial), "{revoked:?}");
    assert!(!renews(files.clone(), addr).await);
    assert!(renews(bystander.clone(), addr).await);
    let listed = admin(&pki, addr)
        .await
        .list_revoked_hosts(ListRevokedHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].reason.as_str(), listed[0].revoked_by.as_str()),
        ("disk stolen", "ops")
    );
    agent.stop().await;

    // Still revoked after a restart.
    collector.stop().await;
    let collector = RunningCollector::start(config.clone()).await;
    let addr = collector.addr;
    let ready = enroll_addr.clone();
    eventually(WAIT, "the enrollment listener, restarted", || {
        let ready = ready.clone();
        async move { tokio::net::TcpStream::connect(ready).await.ok().map(drop) }
    })
    .await;
    assert!(!renews(files.clone(), addr).await);
    assert!(renews(bystander, addr).await);
    // The token from before the revocation does not enroll it again.
    match enroll(&args(&pki, &enroll_addr, &old_token, dir.path())).await {
        Err(EnrollError::Refused { code, message }) => {
            assert_eq!(code, Code::PermissionDenied, "{message}");
            assert!(message.contains("revoked"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A newer one does, and the new certificate is admitted; the old
    // one (stolen, say) stays refused.
    let old_files = TlsFiles {
        ca: files.ca.clone(),
        cert: dir.path().join("old-agent.pem"),
        key: dir.path().join("old-agent.key"),
    };
    std::fs::copy(&files.cert, &old_files.cert).unwrap();
    std::fs::copy(&files.key, &old_files.key).unwrap();
    let new_token = enroll_token(&pki, addr).await;
    enroll(&args(&pki, &enroll_addr, &new_token, dir.path()))
        .await
        .unwrap();
    let files = hostwatch_agent::AgentConfig::load(&enrolled.config)
        .unwrap()
        .tls;
    assert!(renews(files.clone(), addr).await);
    assert!(!renews(old_files.clone(), addr).await);
    let listed = admin(&pki, addr)
        .await
        .list_revoked_hosts(ListRevokedHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].reinstated_ms >= listed[0].revoked_ms,
        "{listed:?}"
    );
    // And so after a restart.
    collector.stop().await;
    let collector = RunningCollector::start(config).await;
    assert!(renews(files, collector.addr).await);
    assert!(!renews(old_files, collector.addr).await);
    collector.stop().await;
}

#[tokio::test]
async fn bad_revocations_are_refused_naming_the_field() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let mut admin = admin(&pki, collector.addr).await;
    for (host, reason, said) in [
        ("a/b", "", "host_id"),
        ("", "", "host_id"),
        ("web-1", "two\nlines", "reason"),
        ("web-1", &"x".repeat(1025), "reason"),
    ] {
        let status = admin
            .revoke_host(RevokeHostRequest {
                host_id: host.to_owned(),
                reason: reason.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{said}: {status:?}");
        assert!(status.message().contains(said), "{said}: {status:?}");
    }
    // Agents and viewers may not.
    for files in [
        pki.files(Role::Agent, "web-1"),
        pki.files(Role::Viewer, "ops"),
    ] {
        let status = AdminClient::new(channel(files, collector.addr).await.unwrap())
            .revoke_host(RevokeHostRequest {
                host_id: "web-2".to_owned(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let listed = admin
        .list_revoked_hosts(ListRevokedHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(listed.is_empty(), "{listed:?}");
    collector.stop().await;
}

#[tokio::test]
async fn a_certificate_on_the_crl_is_refused_and_a_bad_crl_names_its_file() {
    let pki = TestPki::new();
    let (cert, key) = pki.issuing();
    let listed = pki.files(Role::Agent, "web-1");
    let bystander = pki.files(Role::Agent, "web-2");
    let pem = std::fs::read(&listed.cert).unwrap();
    let der = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let serial = hostwatch_pki::certificate_serial_hex(&der).unwrap();
    let ca = hostwatch_pki::Ca::load(pki.dir.path()).unwrap();
    let crl = pki.dir.path().join("crl.pem");
    std::fs::write(&crl, ca.revocation_list_pem(&[serial], 1).unwrap()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "tls_crl = {:?}\n[enroll]\nissuer_cert = {:?}\nissuer_key = {:?}\n{RENEW_AT_ONCE}",
        crl.display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = collector_config_with(&pki, data.path(), &extra);
    let collector = RunningCollector::start(config.clone()).await;
    assert!(!renews(listed, collector.addr).await);
    assert!(renews(bystander, collector.addr).await);
    collector.stop().await;

    // A file that holds no CRL: the collector does not start, and says which.
    std::fs::write(&crl, "not a revocation list").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = hostwatch_collector::serve(config, listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("crl.pem") && err.contains("CRL"), "{err}");
}

/// A revoked host is refused on purpose, not down: `ListHosts` says it is
/// revoked, and a host-down alert it had resolves (that none is raised
/// for one is the alerting crate's test: it needs a wait).
#[tokio::test]
async fn a_revoked_host_is_listed_revoked_and_its_host_down_alert_resolves() {
    use hostwatch_proto::v1::query_client::QueryClient;
    use hostwatch_proto::v1::{AlertState, ListAlertsRequest, ListHostsRequest};
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let rules = "host_down_after = \"1s\"\n[alerting]\ndefault_rules = false\nflap_window = \"0s\"\n\
                 [[alerting.rules]]\nname = \"host_down\"\nkind = \"host_down\"\n";
    let collector = RunningCollector::start(collector_config_with(&pki, data.path(), rules)).await;
    let addr = collector.addr;
    let state = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(agent_config(&pki, "web-1", addr, state.path()));
    eventually(WAIT, "web-1's samples", || {
        host_series(&pki, addr, "web-1", "hostwatch_agent_batches_total")
    })
    .await;
    // Gone without a goodbye: a planned stop would not page.
    agent.kill().await;
    let query = || async {
        QueryClient::new(
            channel(pki.files(Role::Operator, "ops"), addr)
                .await
                .unwrap(),
        )
    };
    let host_down = || async {
        let alerts = query()
            .await
            .list_alerts(ListAlertsRequest {
                host_id: "web-1".into(),
                include_resolved: true,
            })
            .await
            .unwrap()
            .into_inner()
            .alerts;
        alerts
            .into_iter()
            .find(|a| a.rule == "host_down")
            .map(|a| a.state)
    };
    eventually(WAIT, "web-1 paged as down", || async {
        (host_down().await == Some(AlertState::Firing as i32)).then_some(())
    })
    .await;
    let listed = |hosts: Vec<hostwatch_proto::v1::HostStatus>| {
        hosts.into_iter().find(|h| h.host_id == "web-1").unwrap()
    };
    let hosts = query().await.list_hosts(ListHostsRequest::default()).await;
    assert_eq!(listed(hosts.unwrap().into_inner().hosts).revoked_ms, 0);

    admin(&pki, addr)
        .await
        .revoke_host(RevokeHostRequest {
            host_id: "web-1".into(),
            reason: "decommissioned".into(),
        })
        .await
        .unwrap();
    eventually(WAIT, "web-1's host-down alert resolved", || async {
        (host_down().await == Some(AlertState::Resolved as i32)).then_some(())
    })
    .await;
    let hosts = query().await.list_hosts(ListHostsRequest::default()).await;
    let web1 = listed(hosts.unwrap().into_inner().hosts);
    assert!(web1.revoked_ms > 0 && !web1.up, "{web1:?}");
    collector.stop().await;
}
