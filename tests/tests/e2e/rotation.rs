//! Certificates are rotated in place and the agent told with SIGHUP (what
//! `systemctl reload hostwatch-agent` does): it reconnects with them at
//! once, without a restart.

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

#[tokio::test]
async fn sighup_reconnects_with_certificates_rotated_in_place() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    // The agent's files at fixed paths, as operators deploy them.
    let install = |files: hostwatch_pki::TlsFiles| {
        std::fs::copy(&files.cert, dir.path().join("agent.pem")).unwrap();
        std::fs::copy(&files.key, dir.path().join("agent.key")).unwrap();
    };
    install(pki.files(Role::Agent, "rotated"));
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"{}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = \"state\"\n[tls]\nca = {:?}\ncert = \"agent.pem\"\nkey = \"agent.key\"\n",
            collector.addr,
            pki.ca_path()
        ),
    )
    .unwrap();
    let agent = Process::start(
        Path::new(env!("CARGO_BIN_EXE_e2e-agent")),
        &config,
        dir.path().join("agent.log"),
    );
    eventually(WAIT, "the agent connected", || async {
        (latest(&pki, &collector, "hostwatch_agent_connected").await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        latest(&pki, &collector, "hostwatch_agent_reconnects_total").await,
        Some(0.0)
    );

    install(pki.files(Role::Agent, "rotated"));
    agent.signal(Signal::SIGHUP);
    // A healthy stream is never re-established on its own: this is the reload.
    eventually(WAIT, "a reconnection after the reload", || async {
        (latest(&pki, &collector, "hostwatch_agent_reconnects_total").await? >= 1.0).then_some(())
    })
    .await;
    assert!(
        agent
            .log()
            .contains("reconnecting with the reloaded configuration")
    );
    drop(agent);
    collector.stop().await;
}
