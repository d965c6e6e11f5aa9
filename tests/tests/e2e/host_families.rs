//! The shipped rules for the host families (temperatures, clock, TCP, file
//! handles, conntrack, links) fire end to end: the agent's sampler reads a
//! recorded host (`agent/fixtures/alerting`: a sensor at 98.5 °C of its
//! 100 °C critical point, an unsynchronised `adjtimex` status, a listen
//! queue overflowing, file handles and conntrack over 90%, an interface
//! that goes down between two ticks), its samples reach a collector over
//! mTLS as the agent sends them, and each rule, as shipped but for its
//! `for` (shortened to 0 s for test time), fires with its cause.

use hostwatch_agent::sampler::{
    ChronySource, Sampler, Settings, SockDiagSource, Sources, SystemdSource, TimeSource,
};
use hostwatch_pki::Role;
use hostwatch_proto::v1::{AlertState, Batch, ListAlertsRequest};
use hostwatch_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const HOST: &str = "hot";
const RULES: [&str; 6] = [
    "temperature_high",
    "clock_unsynchronized",
    "tcp_listen_overflows",
    "file_descriptors_almost_exhausted",
    "conntrack_almost_full",
    "network_link_down",
];

/// The shipped rules named in `rules`, as `[[alerting.rules]]` entries
/// with `for = "0s"`.
pub(crate) fn shipped_rules_without_delay(rules: &[&str]) -> String {
    let shipped = include_str!("../../../crates/alerting/src/default_rules.toml");
    let mut out = String::new();
    for block in shipped.split("[[rules]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap()
            .trim_matches('"');
        if !rules.contains(&name) {
            continue;
        }
        out.push_str("[[alerting.rules]]\n");
        for line in block.lines().filter(|l| !l.starts_with('#')) {
            if line.starts_with("for = ") {
                out.push_str("for = \"0s\"\n");
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
/// The alerts of `rules`, once every one of them fires on the collector at
/// `addr` (within `WAIT`); `what` names the wait in its failure.
pub(crate) async fn all_firing(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    rules: &[&str],
    what: &str,
) -> Vec<hostwatch_proto::v1::Alert> {
    let client = operator(pki, addr).await;
    eventually(WAIT, what, || {
        let mut client = client.clone();
        async move {
            let alerts = client
                .list_alerts(ListAlertsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .alerts;
            let firing: Vec<_> = alerts
                .into_iter()
                .filter(|a| {
                    a.state == AlertState::Firing as i32 && rules.contains(&a.rule.as_str())
                })
                .collect();
            (firing.len() == rules.len()).then_some(firing)
        }
    })
    .await
}

pub(crate) fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/fixtures")
        .join(path)
}

/// Copies the tree `from` over `to`, symbolic links as links.
fn copy_over(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_symlink() {
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(std::fs::read_link(&path).unwrap(), &target).unwrap();
        } else if path.is_dir() {
            copy_over(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// One tick of the sampler as the agent ships it.
fn batch(seq: u64, sampler: &mut Sampler, now: Instant, t_ms: i64) -> Batch {
    let series = hostwatch_agent::to_series(sampler.sample(now).samples, t_ms);
    Batch {
        seq,
        series,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_host_family_rules_fire_with_their_cause_from_recorded_readings() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "[alerting]\nflap_window = \"0s\"\n{}",
        shipped_rules_without_delay(&RULES)
    );
    let collector = RunningCollector::start(collector_config_with(&pki, data.path(), &extra)).await;

    let host = tempfile::tempdir().unwrap();
    let (proc, sys) = (host.path().join("proc"), host.path().join("sys"));
    copy_over(&fixture("alerting/proc"), &proc);
    copy_over(&fixture("alerting/sys"), &sys);
    let sources = Sources {
        proc: proc.clone(),
        passwd: fixture("host-a/passwd"),
        sys: sys.clone(),
        time: TimeSource::Recorded(fixture("alerting/adjtimex")),
        chrony: ChronySource::Absent,
        sock_diag: SockDiagSource::Recorded(fixture("host-a/sock_diag")),
        systemd: SystemdSource::Absent,
    };
    let mut sampler = Sampler::with_sources(Settings::default(), sources);
    let now_ms = hostwatch_stdx::now_ms();
    let t0 = Instant::now();
    let files = pki.files(Role::Agent, HOST);
    let first = batch(1, &mut sampler, t0, now_ms - 10_000);
    deliver_batch(files.clone(), collector.addr, HOST, 7, first).await;
    // Ten seconds later: 1000 more listen overflows, eth0 down.
    copy_over(&fixture("alerting/proc2"), &proc);
    copy_over(&fixture("alerting/sys2"), &sys);
    let second = batch(2, &mut sampler, t0 + Duration::from_secs(10), now_ms);
    deliver_batch(files, collector.addr, HOST, 7, second).await;

    let firing = all_firing(
        &pki,
        collector.addr,
        &RULES,
        "every host family rule firing",
    )
    .await;
    let alert = |rule: &str| firing.iter().find(|a| a.rule == rule).unwrap();
    for a in &firing {
        assert_eq!(
            a.labels.get("host").map(String::as_str),
            Some(HOST),
            "{a:?}"
        );
    }

    let hot = alert("temperature_high");
    assert_eq!(hot.labels["chip"], "k10temp");
    assert_eq!(hot.labels["sensor"], "Tctl");
    assert_eq!(hot.labels["device"], "0000:00:18.3");
    assert_eq!(hot.labels["severity"], "critical");
    assert_eq!(hot.annotations["sensor"], "k10temp 0000:00:18.3: Tctl");
    assert!(
        hot.annotations["summary"].contains("Tctl (k10temp 0000:00:18.3) on hot is at 98"),
        "{hot:?}"
    );
    let down = alert("network_link_down");
    assert_eq!(down.labels["device"], "eth0");
    assert_eq!(down.annotations["interface"], "eth0");
    assert!(
        alert("clock_unsynchronized").annotations["summary"].contains("not synchronised"),
        "{firing:?}"
    );
    // 1000 overflows in 10 s.
    let overflows = &alert("tcp_listen_overflows").annotations["summary"];
    assert!(
        overflows.starts_with("hot drops 100 connections per second"),
        "{overflows}"
    );
    let fds = &alert("file_descriptors_almost_exhausted").annotations["summary"];
    assert!(fds.contains("93"), "{fds}");
    let conntrack = &alert("conntrack_almost_full").annotations["summary"];
    assert!(conntrack.contains("95"), "{conntrack}");
    collector.stop().await;
}
