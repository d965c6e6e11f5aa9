//! The collector binary refuses bad input with a clear message and the
//! right exit status: 64 for configuration, 1 for failures at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::{Ca, Identity, IssueOptions, Role, cert_stem};
use std::path::Path;
use std::process::{Command, Output};

fn run(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostwatch-collector"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory with a CA, a collector certificate and a config listening on `listen`.
fn setup(dir: &Path, listen: &str) -> std::path::PathBuf {
    let ca = Ca::generate("t", 1).unwrap();
    ca.write(dir).unwrap();
    let id = Identity::new(Role::Collector, "c").unwrap();
    ca.issue(&id, &IssueOptions::valid_for_days(1))
        .unwrap()
        .write(dir, &cert_stem(&id))
        .unwrap();
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"data\"\n[tls]\nca = \"ca.pem\"\ncert = \"collector-c.pem\"\nkey = \"collector-c.key\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn invalid_configuration_exits_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run(&dir.path().join("absent.toml"));
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        stderr(&missing).contains("absent.toml"),
        "{}",
        stderr(&missing)
    );

    let path = setup(dir.path(), "127.0.0.1:0");
    let text = std::fs::read_to_string(&path).unwrap();
    for (bad, key) in [
        (
            format!("{text}\n[limits]\nmax_connections = 0\n"),
            "max_connections",
        ),
        (text.replace("listen = ", "lissen = "), "lissen"),
        (text.replace("\"127.0.0.1:0\"", "\"localhost\""), "listen"),
        (
            format!(
                "{text}\n[alerting]\n[[alerting.rules]]\nname = \"r\"\nkind = \"threshold\"\nmetric = \"m\"\nop = \">\"\n"
            ),
            "alerting.rules[0] \"r\": raise",
        ),
        (
            format!(
                "{text}\n[alerting]\n[[alerting.hooks]]\nname = \"h\"\nkind = \"exec\"\ncommand = [\"/nonexistent/pager\"]\n"
            ),
            "alerting.hooks[0] \"h\": command /nonexistent/pager",
        ),
    ] {
        std::fs::write(&path, bad).unwrap();
        let out = run(&path);
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains(key), "{key}: {}", stderr(&out));
    }
}

#[test]
fn unreadable_certificates_exit_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path(), "127.0.0.1:0");
    std::fs::write(dir.path().join("collector-c.pem"), "garbage").unwrap();
    let out = run(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("collector-c.pem"), "{}", stderr(&out));
    std::fs::remove_file(dir.path().join("collector-c.key")).unwrap();
    std::fs::remove_file(dir.path().join("collector-c.pem")).unwrap();
    let out = run(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("collector-c.pem"), "{}", stderr(&out));
}

#[test]
fn a_port_in_use_exits_1_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = setup(dir.path(), &addr);
    let out = run(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&addr) && err.contains("cannot listen"),
        "{err}"
    );
}

#[test]
fn a_data_directory_in_use_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path(), "127.0.0.1:0");
    let _held = sled::open(dir.path().join("data")).unwrap();
    let out = run(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("data directory"), "{}", stderr(&out));
}
