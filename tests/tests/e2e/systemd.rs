//! The shipped systemd rules fire end to end: a private `dbus-daemon` with
//! a peer serving systemd's objects as systemd does
//! (`hostwatch_agent::sampler::systemd::fake`), the agent's sampler
//! following it over D-Bus, one service failing and another restarting
//! again and again; the samples reach a collector over mTLS as the agent
//! sends them, and `systemd_unit_failed` and `systemd_unit_flapping`, as
//! shipped but for their `for` (0 s for test time), fire with the unit.

use crate::host_families::{all_firing, fixture, shipped_rules_without_delay};
use hostwatch_agent::sampler::systemd::fake::{FakeSystemd, FakeUnit, PrivateBus};
use hostwatch_agent::sampler::{
    ChronySource, Sampler, Settings, SockDiagSource, Sources, SystemdSource, TimeSource,
};
use hostwatch_pki::Role;
use hostwatch_proto::v1::Batch;
use hostwatch_tests::*;
use std::time::{Duration, Instant};

const HOST: &str = "units";
const RULES: [&str; 2] = ["systemd_unit_failed", "systemd_unit_flapping"];

/// Samples until `done` holds of the samples (at most 10 s), then ships
/// that tick as batch `seq` stamped `t_ms`.
async fn batch_when(
    sampler: &mut Sampler,
    seq: u64,
    t_ms: i64,
    done: impl Fn(&hostwatch_agent::sampler::Samples) -> bool,
) -> Batch {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tick = sampler.sample(Instant::now());
        if done(&tick.samples) {
            return Batch {
                seq,
                series: hostwatch_agent::to_series(tick.samples, t_ms),
                ..Default::default()
            };
        }
        assert!(Instant::now() < deadline, "batch {seq}: timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn service(name: &str) -> [(&'static str, &str); 2] {
    [("unit", name), ("type", "service")]
}

#[tokio::test]
async fn a_failed_and_a_flapping_service_page_with_their_unit() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "[alerting]\nflap_window = \"0s\"\n{}",
        shipped_rules_without_delay(&RULES)
    );
    let collector = RunningCollector::start(collector_config_with(&pki, data.path(), &extra)).await;

    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start(dir.path()).unwrap();
    let now_ms = hostwatch_stdx::now_ms();
    let started_us = u64::try_from(now_ms - 3_600_000).unwrap() * 1000;
    let systemd = FakeSystemd::start(
        &bus.address,
        vec![
            FakeUnit::new("web.service", "active", "running", started_us),
            FakeUnit::new("worker.service", "active", "running", started_us),
        ],
    )
    .await
    .unwrap();
    let sources = Sources {
        proc: fixture("host-a/proc"),
        passwd: fixture("host-a/passwd"),
        sys: fixture("host-a/sys"),
        time: TimeSource::Recorded(fixture("host-a/adjtimex")),
        chrony: ChronySource::Absent,
        sock_diag: SockDiagSource::Recorded(fixture("host-a/sock_diag")),
        systemd: SystemdSource::Address(bus.address.clone()),
    };
    let mut sampler = Sampler::with_sources(Settings::default(), sources);
    let files = pki.files(Role::Agent, HOST);

    let first = batch_when(&mut sampler, 1, now_ms - 20_000, |s| {
        s.get(
            "host_systemd_unit_restarts_total",
            &service("worker.service"),
        ) == Some(0.0)
    })
    .await;
    deliver_batch(files.clone(), collector.addr, HOST, 7, first).await;
    // web.service failed 15 s ago (a whole second: pages show seconds);
    // worker.service is restarted 5 times.
    let failed_ms = (now_ms - 15_000) / 1000 * 1000;
    systemd
        .set_state(
            "web.service",
            "failed",
            "failed",
            u64::try_from(failed_ms).unwrap() * 1000,
        )
        .await
        .unwrap();
    systemd.set_restarts("worker.service", 5).await.unwrap();
    for (seq, t_ms) in [(2, now_ms - 10_000), (3, now_ms)] {
        let batch = batch_when(&mut sampler, seq, t_ms, |s| {
            s.get("host_systemd_unit_state", &service("web.service")) == Some(7.0)
                && s.get(
                    "host_systemd_unit_restarts_total",
                    &service("worker.service"),
                ) == Some(5.0)
        })
        .await;
        deliver_batch(files.clone(), collector.addr, HOST, 7, batch).await;
    }

    let firing = all_firing(&pki, collector.addr, &RULES, "both systemd rules firing").await;
    let alert = |rule: &str| firing.iter().find(|a| a.rule == rule).unwrap();

    let failed = alert("systemd_unit_failed");
    assert_eq!(failed.labels["unit"], "web.service");
    assert_eq!(failed.labels["host"], HOST);
    assert_eq!(failed.annotations["unit"], "web.service");
    let at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(failed_ms).unwrap()),
    )
    .to_string();
    let at = format!("{} UTC", at.replace('T', " ").trim_end_matches('Z'));
    assert_eq!(
        failed.annotations["summary"],
        format!("web.service on units failed at {at}")
    );
    assert_eq!(
        failed.annotations["logs"],
        format!("journalctl -u web.service --until \"{at}\" -n 50")
    );

    let flapping = alert("systemd_unit_flapping");
    assert_eq!(flapping.labels["unit"], "worker.service");
    assert_eq!(flapping.annotations["unit"], "worker.service");
    assert!(
        flapping.annotations["summary"].starts_with("worker.service on units keeps restarting"),
        "{flapping:?}"
    );
    // The healthy one of each pages for neither.
    assert!(
        !firing
            .iter()
            .any(|a| a.labels["unit"] == "worker.service" && a.rule == "systemd_unit_failed")
    );
    collector.stop().await;
}
