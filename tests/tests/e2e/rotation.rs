//! Certificates are rotated in place and the agent told with SIGHUP (what
//! `systemctl reload hostwatch-agent` does), or not told at all: it
//! reconnects with them without a restart.

use hostwatch_pki::Role;
use hostwatch_proto::v1::LatestRequest;
use hostwatch_tests::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The agent's latest value of `metric`, if any.
async fn latest(pki: &TestPki, collector: &RunningCollector, metric: &str) -> Option<f64> {
    let mut client = operator(pki, collector.addr).await;
    let values = client
        .latest(LatestRequest {
            host_id: "rotated".into(),
        })
        .await
        .ok()?
        .into_inner()
        .values;
    values.iter().find(|v| v.metric == metric).map(|v| v.value)
}

/// Installs an agent certificate for host "rotated" at fixed paths in
/// `dir`, as operators deploy them.
fn install(pki: &TestPki, dir: &Path) {
    let files = pki.files(Role::Agent, "rotated");
    std::fs::copy(&files.cert, dir.join("agent.pem")).unwrap();
    std::fs::copy(&files.key, dir.join("agent.key")).unwrap();
}

/// Starts an agent with the certificate at the paths `install` writes
/// and `tls_check_interval`, once it is connected.
async fn connected_agent(
    pki: &TestPki,
    collector: &RunningCollector,
    dir: &Path,
    tls_check_interval: &str,
) -> Process {
    install(pki, dir);
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"{}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = \"state\"\ntls_check_interval = \"{tls_check_interval}\"\n[tls]\nca = {:?}\ncert = \"agent.pem\"\nkey = \"agent.key\"\n",
            collector.addr,
            pki.ca_path()
        ),
    )
    .unwrap();
    let agent = Process::start(
        Path::new(env!("CARGO_BIN_EXE_e2e-agent")),
        &config,
        dir.join("agent.log"),
    );
    eventually(WAIT, "the agent connected", || async {
        (latest(pki, collector, "hostwatch_agent_connected").await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        latest(pki, collector, "hostwatch_agent_reconnects_total").await,
        Some(0.0)
    );
    agent
}

async fn reconnected(pki: &TestPki, collector: &RunningCollector) {
    eventually(WAIT, "a reconnection after the reload", || async {
        (latest(pki, collector, "hostwatch_agent_reconnects_total").await? >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sighup_reconnects_with_certificates_rotated_in_place() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    // Checks off: only the signal reloads.
    let agent = connected_agent(&pki, &collector, dir.path(), "0s").await;

    install(&pki, dir.path());
    agent.signal(Signal::SIGHUP);
    // A healthy stream is never re-established on its own: this is the reload.
    reconnected(&pki, &collector).await;
    assert!(
        agent
            .log()
            .contains("reconnecting with the reloaded configuration")
    );
    drop(agent);
    collector.stop().await;
}

/// A renewal that only rewrites the files (no signal) is picked up at the
/// next check; a broken file is logged and the running stream stays.
#[tokio::test]
async fn certificates_rotated_in_place_are_picked_up_without_a_signal() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let agent = connected_agent(&pki, &collector, dir.path(), "100ms").await;

    std::fs::write(dir.path().join("agent.pem"), "not a certificate").unwrap();
    let refused = eventually(WAIT, "the broken file reported", || async {
        let log = agent.log();
        let line = log
            .lines()
            .find(|l| l.contains("configuration not reloaded"));
        line.map(str::to_owned)
    })
    .await;
    assert!(refused.contains("agent.pem"), "{refused}");
    assert_eq!(
        latest(&pki, &collector, "hostwatch_agent_reconnects_total").await,
        Some(0.0),
        "the running stream stays"
    );

    install(&pki, dir.path());
    reconnected(&pki, &collector).await;
    assert!(agent.log().contains("certificate files changed"));
    drop(agent);
    collector.stop().await;
}
