//! SIGHUP reloads the alert rules of the running collector binary; an
//! invalid file is refused with the key named, and the running rules stay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::{Ca, Identity, IssueOptions, Role, cert_stem};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

struct Collector {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Collector {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hostwatch-collector"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Collector { child, lines }
    }

    /// The first stderr line containing every needle, within WAIT.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line with {needles:?} in:\n{}", seen.join("\n"));
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rule(name: &str, raise: &str) -> String {
    format!(
        "[[alerting.rules]]\nname = \"{name}\"\nkind = \"threshold\"\nmetric = \"host_load1\"\nop = \">\"\nraise = {raise}\n"
    )
}

#[test]
fn sighup_reloads_alert_rules_and_keeps_them_when_the_file_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("t", 1).unwrap();
    ca.write(dir.path()).unwrap();
    let id = Identity::new(Role::Collector, "c").unwrap();
    ca.issue(&id, &IssueOptions::valid_for_days(1))
        .unwrap()
        .write(dir.path(), &cert_stem(&id))
        .unwrap();
    let path = dir.path().join("collector.toml");
    let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\nca = \"ca.pem\"\ncert = \"collector-c.pem\"\nkey = \"collector-c.key\"\n[alerting]\ndefault_rules = false\n";
    std::fs::write(&path, format!("{base}{}", rule("first", "4.0"))).unwrap();
    let collector = Collector::start(&path);
    collector.wait_for(&["collector serving"]);

    std::fs::write(&path, format!("{base}{}", rule("first", "\"high\""))).unwrap();
    collector.signal("HUP");
    let refused = collector.wait_for(&["alert rules not reloaded"]);
    assert!(
        refused.contains("alerting.rules[0]") || refused.contains("raise"),
        "{refused}"
    );

    std::fs::write(
        &path,
        format!("{base}{}{}", rule("first", "4.0"), rule("second", "8.0")),
    )
    .unwrap();
    collector.signal("HUP");
    collector.wait_for(&["alert rules reloaded", "rules=2"]);

    collector.signal("TERM");
    collector.wait_for(&["collector stopped"]);
}
