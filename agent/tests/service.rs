//! The agent as systemd runs it (`Type=notify`): it reports ready, pings
//! the watchdog, reloads on SIGHUP (keeping the running configuration when
//! the new one is invalid), and reports stopping on SIGTERM. The
//! notification socket here is a real one the test listens on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::{Ca, Identity, IssueOptions, Role};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

struct Agent {
    child: Child,
    socket: UnixDatagram,
    log: PathBuf,
    config: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- agent log:\n{}", self.log());
        }
    }
}

impl Agent {
    /// Starts the agent with `state_dir`, a collector that is not there,
    /// and a watchdog of 300 ms.
    fn start(dir: &Path, state_dir: &Path) -> Agent {
        Ca::generate("test CA", 1).unwrap().write(dir).unwrap();
        issue_agent(dir, "svc", "agent-svc");
        let config = dir.join("agent.toml");
        std::fs::write(&config, config_text(state_dir, "100ms")).unwrap();
        let socket_path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = dir.join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_hostwatch-agent"))
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "300000")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child,
            socket,
            log,
            config,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for a notification containing `what`; returns it.
    fn expect(&self, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains(what) {
                    return message;
                }
            }
        }
        panic!("no {what:?} notification within {WAIT:?}");
    }

    fn wait_for_log(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "{what:?} never logged");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An agent certificate for `host`, from the CA in `dir`, as `<stem>.pem/.key`.
fn issue_agent(dir: &Path, host: &str, stem: &str) {
    let ca = Ca::load(dir).unwrap();
    let identity = Identity::new(Role::Agent, host).unwrap();
    ca.issue(&identity, &IssueOptions::valid_for_days(1))
        .unwrap()
        .write(dir, stem)
        .unwrap();
}

fn config_text(state_dir: &Path, interval: &str) -> String {
    format!(
        "collector = \"127.0.0.1:9\"\ninterval = \"{interval}\"\nstate_dir = {:?}\n[tls]\nca = \"ca.pem\"\ncert = \"agent-svc.pem\"\nkey = \"agent-svc.key\"\n",
        state_dir.display().to_string()
    )
}

#[test]
fn notifies_systemd_pings_the_watchdog_reloads_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut agent = Agent::start(dir.path(), &state);
    agent.expect("READY=1");
    agent.expect("WATCHDOG=1");
    agent.expect("WATCHDOG=1");

    std::fs::write(&agent.config, config_text(&state, "200ms")).unwrap();
    agent.signal(Signal::SIGHUP);
    let reloading = agent.expect("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    agent.expect("READY=1");
    agent.wait_for_log("configuration reloaded");

    // An invalid file is refused; the agent keeps running on the old one.
    std::fs::write(&agent.config, "colour = \"blue\"\n").unwrap();
    agent.signal(Signal::SIGHUP);
    agent.expect("RELOADING=1");
    agent.expect("READY=1");
    agent.wait_for_log("configuration not reloaded");
    assert!(agent.log().contains("colour"), "{}", agent.log());
    agent.expect("WATCHDOG=1");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent stopped"
    );

    // Certificates replaced in place by ones for another host: refused.
    std::fs::write(&agent.config, config_text(&state, "200ms")).unwrap();
    issue_agent(dir.path(), "other", "agent-svc");
    agent.signal(Signal::SIGHUP);
    agent.expect("RELOADING=1");
    agent.expect("READY=1");
    agent.wait_for_log("a different host id needs a restart");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent stopped"
    );

    agent.signal(Signal::SIGTERM);
    agent.expect("STOPPING=1");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // The batches it could not send stay spooled on disk.
    let spooled = hostwatch_agent::spool::inspect(&state.join("spool")).unwrap();
    assert!(!spooled.batches.is_empty());
}

#[test]
fn an_unusable_spool_directory_is_reported_and_the_agent_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the state directory should be: unusable even for root.
    let state = dir.path().join("state");
    std::fs::write(&state, "not a directory").unwrap();
    let agent = Agent::start(dir.path(), &state);
    agent.expect("READY=1");
    agent.wait_for_log("cannot use the spool directory");
    assert!(agent.log().contains(&state.display().to_string()));
    agent.expect("WATCHDOG=1");
    assert!(
        std::fs::metadata(&state).unwrap().is_file(),
        "the file was left alone"
    );
}
