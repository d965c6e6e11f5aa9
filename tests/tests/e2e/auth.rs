//! Refusals: every connection needs a valid client certificate from the
//! deployment's CA, and each role may only do its own work.

use hostwatch_pki::{IssueOptions, Role, TlsFiles};
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{AgentMessage, Batch, Hello, ListHostsRequest};
use hostwatch_tests::*;

async fn list_hosts_with(files: TlsFiles, addr: std::net::SocketAddr) -> Result<(), String> {
    let channel = channel(files, addr).await?;
    QueryClient::new(channel)
        .list_hosts(ListHostsRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

#[tokio::test]
async fn connections_without_a_valid_certificate_are_refused() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;

    // Sanity: a valid operator certificate works.
    list_hosts_with(pki.files(Role::Operator, "ok"), collector.addr)
        .await
        .unwrap();

    // No client certificate at all.
    let no_cert = client_without_certificate(&pki.ca_path());
    let refused = match raw_channel(no_cert, collector.addr).await {
        Err(_) => true,
        Ok(channel) => QueryClient::new(channel)
            .list_hosts(ListHostsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a client without certificate was served");

    // A certificate from another CA (that CA's own files trust our collector's CA).
    let other = TestPki::new();
    let mut foreign = other.files(Role::Operator, "mallory");
    foreign.ca = pki.ca_path();
    assert!(list_hosts_with(foreign, collector.addr).await.is_err());

    // An expired certificate.
    let mut expired = IssueOptions::valid_for_days(1);
    expired.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    expired.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let files = pki.files_with(Role::Operator, "late", &expired);
    assert!(list_hosts_with(files, collector.addr).await.is_err());

    collector.stop().await;
}

#[tokio::test]
async fn agents_may_not_query() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let channel = channel(pki.files(Role::Agent, "web1"), collector.addr)
        .await
        .unwrap();
    let status = QueryClient::new(channel)
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    collector.stop().await;
}

/// A viewer reads through Query like an operator, and is refused Admin.
#[tokio::test]
async fn viewers_may_query_but_not_administer() {
    use hostwatch_proto::v1::StorageStatsRequest;
    use hostwatch_proto::v1::admin_client::AdminClient;
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let viewer = pki.files(Role::Viewer, "grafana");
    list_hosts_with(viewer.clone(), collector.addr)
        .await
        .unwrap();
    let channel = channel(viewer, collector.addr).await.unwrap();
    let status = AdminClient::new(channel)
        .storage_stats(StorageStatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("viewer/grafana"), "{status:?}");
    collector.stop().await;
}

#[tokio::test]
async fn operators_may_not_ingest_and_agents_only_for_their_own_host() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;

    let hello = |host: &str| AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: host.into(),
            spool_id: 1,
            boot_id: "b".into(),
            facts: None,
        })),
    };
    let batch = AgentMessage {
        kind: Some(Kind::Batch(Batch {
            seq: 1,
            ..Default::default()
        })),
    };

    // An agent claiming another host.
    let agent = channel(pki.files(Role::Agent, "web1"), collector.addr)
        .await
        .unwrap();
    let messages = tokio_stream::iter(vec![hello("db1"), batch.clone()]);
    let status = IngestClient::new(agent).stream(messages).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("db1"), "{status:?}");

    // An operator on the agents' service.
    let ops = channel(pki.files(Role::Operator, "ops"), collector.addr)
        .await
        .unwrap();
    let messages = tokio_stream::iter(vec![hello("ops"), batch.clone()]);
    let status = IngestClient::new(ops).stream(messages).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // A stream that does not start with Hello.
    let agent = channel(pki.files(Role::Agent, "web1"), collector.addr)
        .await
        .unwrap();
    let messages = tokio_stream::iter(vec![batch]);
    let status = IngestClient::new(agent).stream(messages).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Nothing of the refused streams was stored.
    let mut client = operator(&pki, collector.addr).await;
    let hosts = client
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(hosts.is_empty(), "{hosts:?}");
    collector.stop().await;
}

#[tokio::test]
async fn clients_refuse_a_server_that_is_not_a_collector() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = collector_config(&pki, data.path());
    // The server presents an operator certificate (with loopback names).
    let options = IssueOptions::valid_for_days(1).with_local_names(None);
    config.tls = pki.files_with(Role::Operator, "impostor", &options);
    let collector = RunningCollector::start(config).await;
    let err = channel(pki.files(Role::Operator, "ops"), collector.addr)
        .await
        .unwrap_err();
    assert!(err.contains("not a collector"), "{err}");
    collector.stop().await;
}
