//! Per-service resources end to end: the agent, its `[cgroups] root` at
//! a copy of a recorded cgroup v2 hierarchy (`agent/fixtures/host-a/cgroup`,
//! then ten seconds later `cgroup2`), streams its services' series to a
//! collector over mTLS, and they are read back as an operator reads them:
//! each chosen service's own series, and `other` for the rest.

use hostwatch_proto::v1::SeriesPoints;
use hostwatch_tests::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const HOST: &str = "services";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/fixtures")
        .join(path)
}

/// Copies the tree `from` over `to`, files in place (as the kernel shows
/// new figures through files the agent keeps open).
fn copy_over(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_over(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The newest value of each series of `metric`, by its `unit` label
/// (and `resource`/`kind`, where it has them).
async fn latest(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    metric: &str,
) -> Option<HashMap<String, f64>> {
    let series: Vec<SeriesPoints> = host_series(pki, addr, HOST, metric).await?;
    let mut latest = HashMap::new();
    for s in series {
        let label = |name: &str| {
            s.labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.clone())
        };
        let mut key = label("unit")?;
        for extra in ["resource", "kind"] {
            if let Some(value) = label(extra) {
                key = format!("{key}/{value}");
            }
        }
        latest.insert(key, *s.values.last()?);
    }
    Some(latest)
}

#[tokio::test]
async fn the_agent_streams_its_services_and_other_to_the_collector() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let host = tempfile::tempdir().unwrap();
    let cgroup = host.path().join("cgroup");
    copy_over(&fixture("host-a/cgroup"), &cgroup);
    let state = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, HOST, collector.addr, state.path());
    config.cgroups.root = cgroup.clone();
    // Two services of their own, the two others in `other`.
    config.cgroups.limit = 2;
    let agent = RunningAgent::start(config);

    let first = eventually(WAIT, "the services' first samples", || async {
        let cpu = latest(&pki, collector.addr, "host_service_cpu_seconds_total").await?;
        (cpu.len() == 3).then_some(cpu)
    })
    .await;
    assert_eq!(first["postgresql.service"], 50.0);
    assert_eq!(first["nginx.service"], 30.0);
    assert_eq!(first["other"], 0.0);

    // Ten seconds of the host's use later.
    copy_over(&fixture("host-a/cgroup2"), &cgroup);
    let cpu = eventually(WAIT, "the services' second samples", || async {
        let cpu = latest(&pki, collector.addr, "host_service_cpu_seconds_total").await?;
        (cpu.get("nginx.service") == Some(&35.0)).then_some(cpu)
    })
    .await;
    assert_eq!(cpu.len(), 3, "{cpu:?}");
    assert_eq!(cpu["postgresql.service"], 56.0);
    // The slice used 12 s, nginx and postgresql 11 s: the getty and the
    // cryptsetup services used nothing, the rest of the slice 1 s.
    assert_eq!(cpu["other"], 1.0);

    let memory = latest(&pki, collector.addr, "host_service_memory_bytes")
        .await
        .unwrap();
    // 510 MB in the slice, less 100 and 300 MB.
    assert_eq!(memory["other"], 110e6);
    assert_eq!(memory["nginx.service"], 100e6);
    let peak = latest(&pki, collector.addr, "host_service_memory_peak_bytes")
        .await
        .unwrap();
    assert_eq!(peak["postgresql.service"], 330e6);
    assert!(!peak.contains_key("other"));
    let read = latest(&pki, collector.addr, "host_service_io_read_bytes_total")
        .await
        .unwrap();
    assert_eq!(read["nginx.service"], 1.1e6);
    let pressure = latest(
        &pki,
        collector.addr,
        "host_service_pressure_stalled_seconds_total",
    )
    .await
    .unwrap();
    assert_eq!(pressure["nginx.service/cpu/some"], 2.5);
    assert_eq!(pressure["postgresql.service/io/full"], 3.0);
    let services = latest_plain(&pki, collector.addr, "host_services").await;
    assert_eq!(services, 4.0);
    let errors = host_series(
        &pki,
        collector.addr,
        HOST,
        "hostwatch_agent_sample_errors_total",
    )
    .await
    .unwrap();
    let cgroups = errors
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "family" && l.value == "cgroups")
        })
        .unwrap();
    assert_eq!(cgroups.values.last(), Some(&0.0));

    agent.stop().await;
    collector.stop().await;
}

/// The newest value of the one series of `metric`.
async fn latest_plain(pki: &TestPki, addr: std::net::SocketAddr, metric: &str) -> f64 {
    let series = host_series(pki, addr, HOST, metric).await.unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    *series[0].values.last().unwrap()
}
