//! The Admin service's view of the store: counters of what was stored and
//! refused, and verification.

use hostwatch_pki::Role;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{Batch, SeriesPoints, StorageStatsRequest, VerifyStorageRequest};
use hostwatch_tests::*;

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
    for _ in 0..2 {
        let files = pki.files(Role::Agent, "epsilon");
        deliver_batch(files, collector.addr, "epsilon", 9, batch.clone()).await;
    }

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
