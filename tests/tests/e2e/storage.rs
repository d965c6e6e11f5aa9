//! The Admin service's view of the store: counters of what was stored and
//! refused, and verification.

use hostwatch_pki::Role;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::collector_message::Kind as Reply;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{
    AgentMessage, Batch, Hello, SeriesPoints, StorageStatsRequest, VerifyStorageRequest,
};
use hostwatch_tests::*;

/// Streams `batch` for `host` on a stream of its own and waits for its ack.
async fn deliver(pki: &TestPki, addr: std::net::SocketAddr, host: &str, batch: Batch) {
    let agent = channel(pki.files(Role::Agent, host), addr).await.unwrap();
    let seq = batch.seq;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: host.into(),
            spool_id: 9,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    tx.send(AgentMessage {
        kind: Some(Kind::Batch(batch)),
    })
    .await
    .unwrap();
    let mut replies = IngestClient::new(agent)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        replies.message().await.unwrap().unwrap().kind,
        Some(Reply::Welcome(_))
    ));
    let ack = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(ack.kind, Some(Reply::Ack(a)) if a.seq == seq),
        "{ack:?}"
    );
}

#[tokio::test]
async fn storage_stats_count_what_was_stored_and_refused_and_verify_finds_no_damage() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let now = now_ms();
    let batch = Batch {
        seq: 1,
        series: vec![
            SeriesPoints {
                metric: "host_load1".into(),
                labels: vec![],
                // A second value for a timestamp, and a NaN.
                timestamps_ms: vec![now - 3000, now - 2000, now - 2000, now - 1000],
                values: vec![0.5, 0.6, 0.7, f64::NAN],
            },
            SeriesPoints {
                metric: "host_load5".into(),
                labels: vec![],
                timestamps_ms: vec![now - 1000],
                values: vec![0.25],
            },
        ],
        ..Default::default()
    };
    // The same batch twice: a replay after a lost ack is acknowledged, not stored.
    deliver(&pki, collector.addr, "epsilon", batch.clone()).await;
    deliver(&pki, collector.addr, "epsilon", batch).await;

    let admin_channel = channel(pki.files(Role::Operator, "ops"), collector.addr)
        .await
        .unwrap();
    let mut admin = AdminClient::new(admin_channel);
    let stats = admin
        .storage_stats(StorageStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            stats.hosts,
            stats.series,
            stats.batches,
            stats.duplicate_batches
        ),
        (1, 2, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.samples_stored, 3, "{stats:?}");
    let rejected = stats.rejected.expect("rejections");
    assert_eq!(
        (rejected.duplicate, rejected.non_finite),
        (1, 1),
        "{rejected:?}"
    );
    assert!(stats.disk_bytes > 0, "{stats:?}");

    let report = admin
        .verify_storage(VerifyStorageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.series, 2, "{report:?}");
    assert_eq!(report.damaged_total, 0, "{report:?}");
    assert!(report.damaged.is_empty(), "{report:?}");

    // Agents may not look.
    let agent = channel(pki.files(Role::Agent, "epsilon"), collector.addr)
        .await
        .unwrap();
    for status in [
        AdminClient::new(agent.clone())
            .storage_stats(StorageStatsRequest {})
            .await
            .unwrap_err(),
        AdminClient::new(agent)
            .verify_storage(VerifyStorageRequest {})
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    collector.stop().await;
}
