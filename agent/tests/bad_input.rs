//! The agent binary refuses bad input with a clear message and the right
//! exit status: 64 for configuration, 1 for failures at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn run(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostwatch-agent"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const CONFIG: &str = "collector = \"127.0.0.1:9\"\nstate_dir = \"state\"\n[tls]\nca = \"ca.pem\"\ncert = \"agent.pem\"\nkey = \"agent.key\"\n";

#[test]
fn invalid_configuration_exits_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let missing = run(&path);
    assert_eq!(missing.status.code(), Some(64));
    assert!(stderr(&missing).contains("agent.toml"));
    for (text, key) in [
        (format!("interval = \"0s\"\n{CONFIG}"), "interval"),
        (format!("interval = \"-1s\"\n{CONFIG}"), "interval"),
        (format!("colour = \"blue\"\n{CONFIG}"), "colour"),
        (
            CONFIG.replace("collector = \"127.0.0.1:9\"\n", ""),
            "collector",
        ),
        (
            CONFIG.replace("collector = \"127.0.0.1:9\"", "collectors = []"),
            "collectors must list at least one",
        ),
        (
            format!("collectors = [\"127.0.0.1:10\"]\n{CONFIG}"),
            "collector and collectors are both set",
        ),
        (
            CONFIG.replace(
                "collector = \"127.0.0.1:9\"",
                "collectors = [\"a:1\", \"b\"]",
            ),
            "collectors[1]",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = run(&path);
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains(key), "{key}: {}", stderr(&out));
    }
}

#[test]
fn unreadable_certificates_exit_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let out = run(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ca.pem"), "{}", stderr(&out));
}

#[test]
fn a_certificate_that_is_not_an_agents_exits_1_naming_it() {
    use hostwatch_pki::{Ca, Identity, IssueOptions, Role, cert_stem};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA", 1).unwrap();
    ca.write(dir.path()).unwrap();
    let identity = Identity::new(Role::Operator, "alice").unwrap();
    ca.issue(&identity, &IssueOptions::valid_for_days(1))
        .unwrap()
        .write(dir.path(), &cert_stem(&identity))
        .unwrap();
    let path = dir.path().join("agent.toml");
    let config = CONFIG
        .replace("agent.pem", "operator-alice.pem")
        .replace("agent.key", "operator-alice.key");
    std::fs::write(&path, config).unwrap();
    let out = run(&path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("operator-alice.pem"), "{err}");
    assert!(err.contains("agent certificate"), "{err}");
}
