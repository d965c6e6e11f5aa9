//! A collector whose data directory fills up, on a real small file system
//! (a tmpfs this test mounts): the store refuses batches instead of losing
//! them, says so (storage stats, the health service), heals itself once
//! space returns, and every batch the agent took is stored exactly once.

use hostwatch_pki::Role;
use hostwatch_proto::v1::StorageStatsRequest;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "filling";
/// Said when the tmpfs cannot be mounted.
const TESTED_ELSEWHERE: &str = "the failed commit path is tested in hostwatch-tsdb's unit tests";

async fn stats(pki: &TestPki, addr: SocketAddr) -> hostwatch_proto::v1::StorageStatsResponse {
    let channel = channel(pki.files(Role::Operator, "ops"), addr)
        .await
        .unwrap();
    AdminClient::new(channel)
        .storage_stats(StorageStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn ingest_health(pki: &TestPki, addr: SocketAddr) -> ServingStatus {
    let channel = channel(pki.files(Role::Operator, "ops"), addr)
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "hostwatch.v1.Ingest".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

/// The agent's batch numbers stored for the host (one per batch, from its
/// `hostwatch_agent_batches_total`), in order; `None` while the store
/// cannot answer (the moment it rebuilds itself).
async fn batch_numbers(pki: &TestPki, addr: SocketAddr) -> Option<Vec<u64>> {
    let series = host_series(pki, addr, HOST, "hostwatch_agent_batches_total").await?;
    Some(
        series
            .iter()
            .flat_map(|s| s.values.iter().map(|v| *v as u64))
            .collect(),
    )
}

/// Every batch from the first stored one to the newest is there, once.
fn assert_no_hole(numbers: &[u64]) {
    let first = numbers[0];
    let want: Vec<u64> = (first..first + numbers.len() as u64).collect();
    assert_eq!(
        numbers, want,
        "stored batch numbers have a hole or a repeat"
    );
}

/// Runs a collector on `data_dir` with `storage` settings and an agent
/// sampling every 200 ms; fills the disk (leaving `leave` bytes), expects
/// `state`, frees the disk and expects the store to store again.
async fn fill_and_free(fs: &Tmpfs, storage: &str, leave: u64, state: &str) {
    let pki = TestPki::new();
    let spool = tempfile::tempdir().unwrap();
    let data = fs.path().join("data");
    let config = collector_config_with(&pki, &data, &format!("[storage]\n{storage}"));
    let collector = RunningCollector::start(config.clone()).await;
    let addr = collector.addr;
    let agent = RunningAgent::start(agent_config(&pki, HOST, addr, spool.path()));
    eventually(WAIT, "the first batches stored", || async {
        (batch_numbers(&pki, addr).await?.len() >= 5).then_some(())
    })
    .await;

    let filler = fs.fill(leave);
    let refused = eventually(WAIT, &format!("the store {state}"), || async {
        let s = stats(&pki, addr).await;
        (s.state == state).then_some(s)
    })
    .await;
    assert!(!refused.state_cause.is_empty(), "{refused:?}");
    eventually(WAIT, "ingest NOT_SERVING", || async {
        (ingest_health(&pki, addr).await == ServingStatus::NotServing).then_some(())
    })
    .await;
    // Refused meanwhile, and nothing lost: the agent keeps its batches.
    let before = eventually(WAIT, "the batches stored so far", || {
        batch_numbers(&pki, addr)
    })
    .await;
    assert_no_hole(&before);

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    let healed = eventually(WAIT, "the store storing again", || async {
        let s = stats(&pki, addr).await;
        (s.state == "storing").then_some(s)
    })
    .await;
    println!(
        "{state}: storing again {:?} after space returned (recoveries {})",
        freed.elapsed(),
        healed.recoveries
    );
    eventually(WAIT, "the backlog stored", || async {
        (batch_numbers(&pki, addr).await?.len() >= before.len() + 10).then_some(())
    })
    .await;
    assert_eq!(
        ingest_health(&pki, addr).await,
        ServingStatus::Serving,
        "ingest serving again"
    );
    agent.stop().await;
    collector.stop().await;

    // What was acknowledged is on disk: a restarted collector has it all.
    let collector = RunningCollector::start(config).await;
    let after = eventually(WAIT, "the batches after a restart", || {
        batch_numbers(&pki, collector.addr)
    })
    .await;
    assert_no_hole(&after);
    assert!(
        after.len() >= before.len() + 10,
        "{} then {}",
        before.len(),
        after.len()
    );
    let s = stats(&pki, collector.addr).await;
    assert_eq!(s.corrupt_wal_frames + s.corrupt_blocks, 0, "{s:?}");
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_store_which_heals_once_space_returns() {
    let Some(fs) = Tmpfs::mount(96 << 20, TESTED_ELSEWHERE) else {
        return;
    };
    // No reserve: sled meets ENOSPC itself.
    fill_and_free(&fs, "min_free_bytes = 0\n", 0, "failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_reserve_the_store_refuses_batches_before_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount(96 << 20, TESTED_ELSEWHERE) else {
        return;
    };
    fill_and_free(&fs, "min_free_bytes = 33554432\n", 16 << 20, "read-only").await;
}
