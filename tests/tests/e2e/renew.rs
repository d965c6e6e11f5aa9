//! Certificate renewal (issue 17, item 3) over real sockets: a renewal
//! that fails keeps the certificate, Ingest.Renew's refusals, each with its
//! status, and the page before expiry. Enrolled agents renewing again and
//! again while they stream without a gap: `deploy.rs`.

use hostwatch_pki::{Ca, CertPair, Role, TlsFiles};
use hostwatch_proto::v1::RenewRequest;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

/// An agent certificate for `host` from the issuing CA at `issuing`,
/// valid from `not_before` to `not_after`, written to `dir` as
/// agent.pem (with the issuing CA) and agent.key.
fn agent_files(
    pki: &TestPki,
    issuing: &(PathBuf, PathBuf),
    host: &str,
    dir: &Path,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> TlsFiles {
    let ca = Ca::load_files(&issuing.0, &issuing.1).unwrap();
    let (key, csr) = hostwatch_pki::enroll::agent_request(host).unwrap();
    let spki = hostwatch_pki::enroll::check_csr(&csr, host).unwrap();
    let issued = ca.issue_agent(&spki, host, not_before, not_after).unwrap();
    let (cert, key) = CertPair {
        cert_pem: format!("{}{}", issued.cert_pem, ca.cert_pem()),
        key_pem: key.serialize_pem(),
    }
    .write(dir, "agent")
    .unwrap();
    TlsFiles {
        ca: pki.ca_path(),
        cert,
        key,
    }
}

/// collector.toml for a collector process on `port`, with `enroll` (the
/// `[enroll]` section's keys, or none).
fn collector_toml(pki: &TestPki, dir: &Path, port: u16, enroll: &str) -> PathBuf {
    pki.collector_toml(
        &dir.join("collector.toml"),
        "test",
        port,
        &dir.join("data"),
        &format!("[enroll]\n{enroll}\n"),
    )
}

/// agent.toml for an agent process with `tls`, sampling every 200 ms and
/// looking at its certificate files every 200 ms.
fn agent_toml(dir: &Path, port: u16, tls: &TlsFiles) -> PathBuf {
    let text = format!(
        "collector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\ntls_check_interval = \"200ms\"\nstate_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[limits]\nmax_backoff = \"500ms\"\n",
        dir.join("state").display().to_string(),
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The last stored value of the agent's self metric `metric`.
async fn last_value(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    host: &str,
    metric: &str,
) -> Option<f64> {
    let series = host_series(pki, addr, host, metric).await?;
    series.first()?.values.last().copied()
}

#[tokio::test]
async fn without_an_issuing_ca_renewal_fails_and_the_old_certificate_stays() {
    let pki = TestPki::new();
    let issuing = pki.issuing();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = collector_toml(&pki, dir.path(), port, "");
    let collector = Process::start(
        Path::new(env!("CARGO_BIN_EXE_e2e-collector")),
        &config,
        dir.path().join("collector.log"),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Two thirds of its lifetime are over: due at once.
    let now = OffsetDateTime::now_utc();
    let tls = agent_files(
        &pki,
        &issuing,
        "web-1",
        dir.path(),
        now - time::Duration::seconds(300),
        now + time::Duration::seconds(60),
    );
    let cert = std::fs::read(&tls.cert).unwrap();
    let agent = Process::start(
        Path::new(env!("CARGO_BIN_EXE_e2e-agent")),
        &agent_toml(dir.path(), port, &tls),
        dir.path().join("agent.log"),
    );
    let metric = "hostwatch_agent_certificate_renewal_failures_total";
    eventually(WAIT, "a failed renewal, counted", || async {
        last_value(&pki, addr, "web-1", metric)
            .await
            .filter(|n| *n >= 1.0)
    })
    .await;
    let log = agent.log();
    assert!(
        log.contains("certificate renewal failed") && log.contains("no issuing CA"),
        "{log}"
    );
    assert_eq!(std::fs::read(&tls.cert).unwrap(), cert);
    // Still streaming with it.
    let before = last_value(&pki, addr, "web-1", "hostwatch_agent_batches_total")
        .await
        .unwrap();
    eventually(WAIT, "more batches", || async {
        last_value(&pki, addr, "web-1", "hostwatch_agent_batches_total")
            .await
            .filter(|n| *n > before)
    })
    .await;
    agent.terminate(WAIT).await;
    collector.terminate(WAIT).await;
}

/// Renew calls the agent would never make, and callers that may not.
#[tokio::test]
async fn bad_renewals_are_refused_with_their_status() {
    let pki = TestPki::new();
    let issuing = pki.issuing();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "[enroll]\nissuer_cert = {:?}\nissuer_key = {:?}\n",
        issuing.0.display().to_string(),
        issuing.1.display().to_string()
    );
    let collector = RunningCollector::start(collector_config_with(&pki, data.path(), &extra)).await;
    let renew = |files: TlsFiles, csr: Vec<u8>| async move {
        let channel = channel(files, collector.addr).await.unwrap();
        IngestClient::new(channel)
            .renew(RenewRequest { csr })
            .await
            .map(|r| r.into_inner())
    };
    let agent = pki.files(Role::Agent, "web-1");
    let (key, good) = hostwatch_pki::enroll::agent_request("web-1").unwrap();
    let mut tampered = good.clone();
    let at = tampered.len() - 1;
    tampered[at] ^= 0x01;
    let (_, other_host) = hostwatch_pki::enroll::agent_request("web-2").unwrap();
    let ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serialize_request(&key).unwrap().der().to_vec()
    };
    for (files, csr, code, said) in [
        (agent.clone(), tampered, Code::InvalidArgument, "signature"),
        (agent.clone(), Vec::new(), Code::InvalidArgument, "PKCS#10"),
        (
            agent.clone(),
            other_host,
            Code::PermissionDenied,
            "agent/web-2",
        ),
        (agent.clone(), ca, Code::PermissionDenied, "CA certificate"),
        (
            pki.files(Role::Operator, "web-1"),
            good.clone(),
            Code::PermissionDenied,
            "agent role",
        ),
    ] {
        let status = renew(files, csr).await.unwrap_err();
        assert_eq!(status.code(), code, "{said}: {status:?}");
        assert!(status.message().contains(said), "{said}: {status:?}");
    }
    // The host is the certificate's: web-1 renews for web-1 only.
    let renewed = renew(agent.clone(), good).await.unwrap();
    hostwatch_pki::enroll::check_issued(&renewed.certificate_chain_pem, &key, "web-1").unwrap();
    // Again at once (an agent that could not save it, say): no second
    // certificate within enroll.min_renew_interval, and the wait told.
    let (_, again) = hostwatch_pki::enroll::agent_request("web-1").unwrap();
    let status = renew(agent, again).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("enroll.min_renew_interval"),
        "{status:?}"
    );
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 600_000, "{pushback}");
    let mut admin = hostwatch_proto::v1::admin_client::AdminClient::new(
        channel(pki.files(Role::Operator, "ops"), collector.addr)
            .await
            .unwrap(),
    );
    let stats = admin
        .storage_stats(hostwatch_proto::v1::StorageStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The operator was refused before the call was one (as for Stream).
    assert_eq!((stats.renewals, stats.renewals_refused), (1, 5));
    collector.stop().await;

    // A collector without an issuing CA says so.
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let (_, csr) = hostwatch_pki::enroll::agent_request("web-1").unwrap();
    let channel = channel(pki.files(Role::Agent, "web-1"), collector.addr)
        .await
        .unwrap();
    let status = IngestClient::new(channel)
        .renew(RenewRequest { csr })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("enroll.issuer_cert"),
        "{status:?}"
    );
    collector.stop().await;
}

/// The shipped `agent_certificate_expiring` rule pages from the agent's
/// own metric, and resolves once a renewed certificate reports more left.
#[tokio::test]
async fn the_shipped_rule_pages_a_certificate_close_to_expiry() {
    use hostwatch_proto::v1::query_client::QueryClient;
    use hostwatch_proto::v1::{AlertState, Batch, ListAlertsRequest, SeriesPoints};
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let files = pki.files(Role::Agent, "web-1");
    let batch = |seq: u64, ratio: f64| Batch {
        seq,
        series: vec![SeriesPoints {
            metric: "hostwatch_agent_certificate_lifetime_left_ratio".to_owned(),
            timestamps_ms: vec![hostwatch_stdx::now_ms()],
            values: vec![ratio],
            ..Default::default()
        }],
        ..Default::default()
    };
    // The rule's alert among the active ones; a failed call fails the test.
    let state = || async {
        let channel = channel(pki.files(Role::Operator, "ops"), collector.addr)
            .await
            .unwrap();
        let alerts = QueryClient::new(channel)
            .list_alerts(ListAlertsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .alerts;
        alerts
            .into_iter()
            .find(|a| a.rule == "agent_certificate_expiring")
    };
    deliver_batch(files.clone(), collector.addr, "web-1", 1, batch(1, 0.5)).await;
    assert!(state().await.is_none());
    deliver_batch(files.clone(), collector.addr, "web-1", 1, batch(2, 0.15)).await;
    let alert = eventually(WAIT, "the page", || async {
        state()
            .await
            .filter(|a| a.state == AlertState::Firing as i32)
    })
    .await;
    assert_eq!(alert.labels["host"], "web-1");
    assert_eq!(alert.labels["severity"], "critical");
    assert!(
        alert.annotations["summary"].contains("15%"),
        "{:?}",
        alert.annotations
    );
    // Renewed: most of the new certificate's lifetime is ahead.
    deliver_batch(files, collector.addr, "web-1", 1, batch(3, 0.95)).await;
    // Resolved alerts leave the list of active ones.
    eventually(WAIT, "the page resolved", || async {
        match state().await {
            Some(a) if a.state != AlertState::Resolved as i32 => None,
            _ => Some(()),
        }
    })
    .await;
    collector.stop().await;
}
