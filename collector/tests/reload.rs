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

/// The certificate the collector at `addr` presents to an operator.
fn presented(addr: &str, operator: &hostwatch_pki::TlsFiles) -> Vec<u8> {
    let (config, _) = hostwatch_pki::client_config(operator).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    tls.peer_certificates().unwrap()[0].to_vec()
}

fn first_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).unwrap();
    let first = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next();
    first.unwrap().unwrap().to_vec()
}

/// A certificate renewed in place is served to new connections without a
/// SIGHUP, once `tls_check_interval` has passed; a broken file is logged
/// and the running certificate stays.
#[test]
fn certificate_files_replaced_in_place_are_served_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("t", 1).unwrap();
    ca.write(dir.path()).unwrap();
    let issue = |role, name: &str, stem: &str| {
        let id = Identity::new(role, name).unwrap();
        let options = IssueOptions::valid_for_days(1).with_local_names(None);
        let (cert, key) = ca
            .issue(&id, &options)
            .unwrap()
            .write(dir.path(), stem)
            .unwrap();
        hostwatch_pki::TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert,
            key,
        }
    };
    let running = issue(Role::Collector, "c", "collector-c");
    let operator = issue(Role::Operator, "o", "operator-o");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_check_interval = \"100ms\"\n[tls]\nca = \"ca.pem\"\ncert = \"collector-c.pem\"\nkey = \"collector-c.key\"\n",
    )
    .unwrap();
    let collector = Collector::start(&path);
    let serving = collector.wait_for(&["collector serving"]);
    let addr = serving
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let first = first_der(&running.cert);
    assert_eq!(presented(&addr, &operator), first);

    let renewed = issue(Role::Collector, "c", "renewed");
    std::fs::copy(&renewed.key, &running.key).unwrap();
    std::fs::copy(&renewed.cert, &running.cert).unwrap();
    collector.wait_for(&["certificate files changed: reloaded"]);
    let second = first_der(&running.cert);
    assert_ne!(second, first);
    assert_eq!(presented(&addr, &operator), second);

    std::fs::write(&running.cert, "not a certificate").unwrap();
    let refused = collector.wait_for(&["do not load"]);
    assert!(refused.contains("collector-c.pem"), "{refused}");
    assert_eq!(presented(&addr, &operator), second);
}
