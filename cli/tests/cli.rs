//! The `hostwatch` binary: certificates, the quick start scenario of the
//! README, and clear errors with exit status 64 (usage, configuration) or 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn hostwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostwatch"))
        .args(args)
        .env_remove("HOSTWATCH_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `hostwatch` with `args` and checks it refused them as bad usage
/// (exit 64) with a message naming `named`.
fn assert_refused(args: &[&str], named: &str) {
    let out = hostwatch(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(stderr.contains(named), "{named} not in {args:?}: {stderr}");
}

/// Waits until no process or thread holds `file`'s lock (sled's lock of
/// its database), at most 10 s.
fn wait_unlocked(file: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let handle = std::fs::File::open(file).unwrap();
        match handle.try_lock() {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{} still locked: {e}", file.display())
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

#[test]
fn certs_init_and_issue_write_files_and_refuse_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    let out = hostwatch(&[
        "certs", "issue", "--role", "agent", "--name", "web1", "--dir", d,
    ]);
    assert_eq!(out.status.code(), Some(1), "issuing without a CA");
    assert!(
        text(&out.stderr).contains("ca.pem"),
        "{}",
        text(&out.stderr)
    );

    let init = hostwatch(&["certs", "init", "--dir", d]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    for file in ["ca.pem", "ca.key", "issuing.pem", "issuing.key"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    // The pin on stdout, the same as `certs pin` prints; openssl agrees
    // that the issuing CA is the root's.
    let pin = text(&init.stdout).trim().to_owned();
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    let ca = dir.path().join("ca.pem");
    let again = hostwatch(&["certs", "pin", "--ca", path(&ca)]);
    assert_eq!(text(&again.stdout).trim(), pin);
    let verified = Command::new("openssl")
        .args(["verify", "-CAfile", path(&ca)])
        .arg(dir.path().join("issuing.pem"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified.stdout));
    let missing = hostwatch(&["certs", "pin", "--ca", &format!("{d}/none.pem")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("none.pem"));
    let again = hostwatch(&["certs", "init", "--dir", d]);
    assert_eq!(again.status.code(), Some(64));
    assert!(
        text(&again.stderr).contains("refusing"),
        "{}",
        text(&again.stderr)
    );

    let out = hostwatch(&[
        "certs", "issue", "--role", "agent", "--name", "web1", "--dir", d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        dir.path().join("agent-web1.pem").exists() && dir.path().join("agent-web1.key").exists()
    );
    let out = hostwatch(&[
        "certs",
        "issue",
        "--role",
        "collector",
        "--name",
        "main",
        "--dir",
        d,
        "--dns",
        "collector.example.com",
        "--ip",
        "10.0.0.1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = hostwatch(&[
        "certs", "issue", "--role", "viewer", "--name", "grafana", "--dir", d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("hostwatch://viewer/grafana"),
        "{}",
        text(&out.stdout)
    );
    assert!(dir.path().join("viewer-grafana.pem").exists());

    for (args, needle) in [
        (
            vec![
                "certs", "issue", "--role", "root", "--name", "x", "--dir", d,
            ],
            "role",
        ),
        (
            vec![
                "certs", "issue", "--role", "agent", "--name", "a/b", "--dir", d,
            ],
            "a/b",
        ),
        (
            vec![
                "certs", "issue", "--role", "agent", "--name", "x", "--dir", d, "--days", "0",
            ],
            "--days",
        ),
        (
            vec![
                "certs", "issue", "--role", "agent", "--name", "x", "--dir", d, "--ip", "nope",
            ],
            "nope",
        ),
    ] {
        assert_refused(&args, needle);
    }
}

#[test]
fn reading_commands_need_a_usable_client_configuration() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(&["hosts"], "--config");

    let missing = dir.path().join("cli.toml");
    assert_refused(&["--config", path(&missing), "hosts"], "cli.toml");

    std::fs::write(
        &missing,
        "collector = \"127.0.0.1:1\"\ntimeout = 3\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
    )
    .unwrap();
    assert_refused(&["--config", path(&missing), "hosts"], "timeout");
    let query = ["--config", path(&missing), "query", "m", "--host", "h"];
    assert_refused(&[&query[..], &["--since", "soon"]].concat(), "soon");

    // An unknown aggregation, and an aggregation without a step.
    for (args, named) in [
        (&["--step", "1m", "--agg", "median"][..], "median"),
        (&["--agg", "max"][..], "--step"),
    ] {
        assert_refused(&[&query[..], args].concat(), named);
    }

    let out = hostwatch(&["quickstart", "--dir", path(dir.path()), "--duration", "0"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn alert_silence_and_storage_arguments_are_checked_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("cli.toml");
    let c = path(&cli);
    for (args, named) in [
        (
            &["alerts", "history", "--since", "yesterday"][..],
            "yesterday",
        ),
        (&["alerts", "history", "--limit", "many"][..], "many"),
        (&["alerts", "history", "--limit", "-1"][..], "-1"),
        (&["alerts", "watch", "--count", "none"][..], "none"),
        (&["alerts", "--colour"][..], "--colour"),
        (&["silence", "add", "--duration", "1h"][..], "--match"),
        (
            &["silence", "add", "--match", "host=a", "--duration", "never"][..],
            "never",
        ),
        (
            &["silence", "add", "--match", "host=a", "--duration", "0s"][..],
            "greater than zero",
        ),
        (&["silence", "add", "--match", "host=a"][..], "--duration"),
        (
            &["silence", "add", "--match", "=a", "--duration", "1h"][..],
            "=a",
        ),
        (&["silence", "expire"][..], "<ID>"),
        (&["silence", "mute"][..], "mute"),
        (&["storage", "check"][..], "check"),
        (&["storage", "verify", "--repair"][..], "--repair"),
        (&["storage", "backup"][..], "--to"),
        (
            &["storage", "backup", "--to", "relative/dir"][..],
            "absolute",
        ),
        (
            &["storage", "restore", "--from", "/tmp/b"][..],
            "--data-dir",
        ),
        (&["hosts", "revoke"][..], "<HOST>"),
        (&["hosts", "revoke", "web-1", "--reason"][..], "--reason"),
        (&["hosts", "revoked", "--all"][..], "--all"),
        (&["hosts", "forget", "web-1"][..], "forget"),
        (&["hosts", "--expiring", "soon"][..], "soon"),
        (&["hosts", "--expiring"][..], "--expiring"),
        (&["hosts", "--version-below", "one"][..], "one"),
        (&["hosts", "--version-below", "1.2"][..], "1.2"),
    ] {
        let mut all = vec!["--config", c];
        all.extend_from_slice(args);
        assert_refused(&all, named);
    }
    // Well-formed, but no configuration to reach the collector with.
    let out = hostwatch(&["--config", c, "alerts"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("cli.toml"),
        "{}",
        text(&out.stderr)
    );
}

/// Backups on this host need no collector: what is not a backup, or an
/// occupied data directory, is refused (exit 1) with the reason.
#[test]
fn storage_restore_and_verify_backup_refuse_what_they_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = hostwatch(&["storage", "verify", "--backup", path(&empty)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("MANIFEST is missing"),
        "{}",
        text(&out.stderr)
    );
    let data = dir.path().join("data");
    let out = hostwatch(&[
        "storage",
        "restore",
        "--from",
        path(&empty),
        "--data-dir",
        path(&data),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no complete backup"),
        "{}",
        text(&out.stderr)
    );
    assert!(!data.exists(), "nothing written");
}

// One scenario, as an operator runs it: each step reads what the steps
// before left (the quick start's folder, a collector with the agent's
// data), and running the programs again for each would cost seconds.
#[test]
fn quick_start_then_collector_serves_hosts_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("qs");
    let out = hostwatch(&["quickstart", "--dir", path(&d), "--duration", "6"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let host = hostwatch::local_host_id();
    assert!(stdout.contains(&format!("{host} up")), "{stdout}");
    // The HTTPS API is on, at the port its configuration names.
    let config = std::fs::read_to_string(d.join("collector.toml")).unwrap();
    let http: std::net::SocketAddr = config
        .lines()
        .find_map(|l| l.strip_prefix("http_listen = "))
        .map(|v| v.trim_matches('"').parse().unwrap())
        .expect("http_listen in collector.toml");
    assert!(http.ip().is_loopback(), "{http}");
    assert!(
        stdout.contains(&format!("https://localhost:{}/", http.port())),
        "{stdout}"
    );
    // Everything it wrote is private: the spool holds command lines.
    let mut pending = vec![d.clone()];
    let mut seen = 0;
    while let Some(p) = pending.pop() {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        seen += 1;
        if p.is_dir() {
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(d.join("collector-data").is_dir() && d.join("agent-state").is_dir());
    assert!(seen > 10, "{seen} files");
    assert!(
        stdout.contains("memory") && stdout.contains("available"),
        "{stdout}"
    );

    // The collector alone, on the quick start's files, serves what was stored.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = hostwatch_collector::CollectorConfig::load(&d.join("collector.toml")).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .unwrap();
    let collector = runtime.spawn(hostwatch_collector::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    let cli = d.join("cli.toml");
    let hosts = hostwatch(&["--config", path(&cli), "hosts", "--json"]);
    assert!(hosts.status.success(), "{}", text(&hosts.stderr));
    assert!(
        text(&hosts.stdout).contains(&format!("\"host_id\": \"{host}\"")),
        "{}",
        text(&hosts.stdout)
    );
    // The agent certificate's expiry, recorded at ingest and kept: the
    // quick start issues certificates for 825 days.
    let listed: serde_json::Value = serde_json::from_slice(&hosts.stdout).unwrap();
    let expires_ms = listed[0]["certificate_expires_ms"].as_i64().unwrap();
    let day = 86_400_000;
    let now = hostwatch_stdx::now_ms();
    assert!(
        (expires_ms - (now + 825 * day)).abs() < day,
        "{expires_ms}: {listed}"
    );
    let expires = listed[0]["certificate_expires"].as_str().unwrap();
    assert!(expires.ends_with('Z'), "{expires}");
    let table = hostwatch(&["--config", path(&cli), "hosts"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    let days = (expires_ms - hostwatch_stdx::now_ms()) / day;
    let date = &expires[..10];
    assert!(
        table.lines().next().unwrap().contains("CERT EXPIRES")
            && (table.contains(&format!("{date} (in {days} d)"))
                || table.contains(&format!("{date} (in {} d)", days + 1))),
        "{table}"
    );
    // Filters: certificates expiring within a time, agents below a version.
    let listed = |args: &[&str]| -> usize {
        let mut all = vec!["--config", path(&cli), "hosts", "--json"];
        all.extend_from_slice(args);
        let out = hostwatch(&all);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        hosts.as_array().unwrap().len()
    };
    assert_eq!(listed(&["--expiring", "900d"]), 1);
    assert_eq!(listed(&["--expiring", "7d"]), 0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(listed(&["--version-below", version]), 0);
    assert_eq!(listed(&["--version-below", "999.0.0"]), 1);
    assert_eq!(
        listed(&["--version-below", "999.0.0", "--expiring", "7d"]),
        0
    );
    let query = hostwatch(&[
        "--config",
        path(&cli),
        "query",
        "host_memory_available_bytes",
        "--host",
        &host,
        "--json",
    ]);
    assert!(query.status.success(), "{}", text(&query.stderr));
    let json = text(&query.stdout);
    assert!(
        json.contains("\"metric\": \"host_memory_available_bytes\"") && json.contains("\"value\""),
        "{json}"
    );
    let stepped = hostwatch(&[
        "--config",
        path(&cli),
        "query",
        "host_memory_available_bytes",
        "--host",
        &host,
        "--step",
        "1m",
        "--agg",
        "max",
        "--json",
    ]);
    assert!(stepped.status.success(), "{}", text(&stepped.stderr));
    let json = text(&stepped.stdout);
    assert!(json.contains("\"value\""), "{json}");
    // The store's health: what the collector replayed at start, and a clean walk.
    let stats = hostwatch(&["--config", path(&cli), "storage", "stats", "--json"]);
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["hosts"], 1, "{stats}");
    assert!(stats["series"].as_u64().unwrap() > 10, "{stats}");
    assert_eq!(stats["corrupt_wal_frames"], 0, "{stats}");
    let verify = hostwatch(&["--config", path(&cli), "storage", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let listing = text(&verify.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("damaged_total") && l.ends_with(" 0")),
        "{listing}"
    );
    // Revoking a host (one that is not this machine's: the quick start
    // below runs its agent again) and listing it.
    let revoke = ["--config", path(&cli), "hosts", "revoke", "retired-1"];
    let out = hostwatch(&[&revoke[..], &["--reason", "decommissioned"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("revoked retired-1"),
        "{}",
        text(&out.stdout)
    );
    let out = hostwatch(&["--config", path(&cli), "hosts", "revoked", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revoked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked[0]["host"], "retired-1", "{revoked}");
    assert_eq!(revoked[0]["reason"], "decommissioned", "{revoked}");
    let out = hostwatch(&["--config", path(&cli), "hosts", "revoke", "a/b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("host_id"),
        "{}",
        text(&out.stderr)
    );
    stop.cancel();
    runtime.block_on(collector).unwrap().unwrap();
    // Its tasks (alerting's) hold the database until the runtime ends, and
    // sled's threads its lock a moment after.
    drop(runtime);
    wait_unlocked(&d.join("collector-data/db"));

    // Run again on the same directory: reuses the PKI and keeps the data.
    let ca_before = std::fs::read(d.join("certs/ca.pem")).unwrap();
    let out = hostwatch(&["quickstart", "--dir", path(&d), "--duration", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(d.join("certs/ca.pem")).unwrap(), ca_before);

    // With the collector gone, reading fails with a message, exit 1.
    let out = hostwatch(&["--config", path(&cli), "hosts"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn quick_start_reports_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    for (addresses, key) in [
        (format!("listen = \"{addr}\"\n"), "listen in"),
        (
            format!("listen = \"127.0.0.1:0\"\nhttp_listen = \"{addr}\"\n"),
            "http_listen in",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("certs")).unwrap();
        std::fs::write(
            d.join("collector.toml"),
            format!("{addresses}data_dir = \"data\"\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/collector-quickstart.pem\"\nkey = \"certs/collector-quickstart.key\"\n"),
        )
        .unwrap();
        let out = hostwatch(&["quickstart", "--dir", path(d), "--duration", "2"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&addr.to_string()) && stderr.contains(key),
            "{stderr}"
        );
    }
}

/// Runs `hostwatch` until `check` accepts its output, or panics after 30 s.
fn eventually_output(args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = hostwatch(args);
        let stdout = text(&out.stdout);
        if out.status.success() && check(&stdout) {
            return stdout;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stdout}\n{}",
            text(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

// One scenario against one running collector, for the reason above.
#[test]
fn alerts_silences_and_reload_against_a_running_collector() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("qs");
    let out = hostwatch(&["quickstart", "--dir", path(&d), "--duration", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host = hostwatch::local_host_id();
    // The quick start's agent stopped cleanly; this rule pages that too.
    let collector_toml = d.join("collector.toml");
    let original = std::fs::read_to_string(&collector_toml).unwrap();
    let alerting = "\n[alerting]\ndefault_rules = false\n[[alerting.rules]]\nname = \"gone\"\nkind = \"host_down\"\ntimeout = \"1s\"\npage_on_clean_shutdown = true\nannotations = { summary = \"{{ host }} is gone\" }\n";
    std::fs::write(&collector_toml, format!("{original}{alerting}")).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = hostwatch_collector::CollectorConfig::load(&collector_toml).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .unwrap();
    let collector = runtime.spawn(hostwatch_collector::serve(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    let cli = d.join("cli.toml");
    let c = path(&cli);
    let listed = eventually_output(&["--config", c, "alerts", "--json"], "the alert", |s| {
        s.contains("\"rule\": \"gone\"") && s.contains("\"state\": \"firing\"")
    });
    assert!(listed.contains(&format!("{host} is gone")), "{listed}");
    let history = hostwatch(&["--config", c, "alerts", "history", "--json"]);
    assert!(text(&history.stdout).contains("\"to\": \"firing\""));

    let out = hostwatch(&[
        "--config",
        c,
        "silence",
        "add",
        "--match",
        &format!("host={host}"),
        "--duration",
        "1h",
        "--comment",
        "moving racks",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let table = text(&hostwatch(&["--config", c, "alerts"]).stdout);
    assert!(table.contains("firing") && table.contains(&id), "{table}");
    let silences = text(&hostwatch(&["--config", c, "silence", "list", "--json"]).stdout);
    assert!(
        silences.contains(&id) && silences.contains("\"active\": true"),
        "{silences}"
    );
    let bad = hostwatch(&[
        "--config",
        c,
        "silence",
        "add",
        "--match",
        "nohost",
        "--duration",
        "1h",
    ]);
    assert_eq!(bad.status.code(), Some(64));

    // An invalid file: refused with the key named, nothing changes.
    std::fs::write(
        &collector_toml,
        format!("{original}{}", alerting.replace("1s", "never")),
    )
    .unwrap();
    let refused = hostwatch(&["--config", c, "reload"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("timeout"),
        "{}",
        text(&refused.stderr)
    );

    // A watcher sees the alert resolve when a reload removes its rule.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_hostwatch"))
        .args(["--config", c, "alerts", "watch", "--count", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = watch.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    assert!(line.contains("watching"), "{line}");
    std::fs::write(
        &collector_toml,
        format!("{original}\n[alerting]\ndefault_rules = false\n"),
    )
    .unwrap();
    let reloaded = hostwatch(&["--config", c, "reload"]);
    assert!(reloaded.status.success(), "{}", text(&reloaded.stderr));
    assert!(text(&reloaded.stdout).contains("hooks: (none)"));
    let watched = watch.wait_with_output().unwrap();
    assert!(watched.status.success());
    let transition = text(&watched.stdout);
    assert!(
        transition.contains("\"to\":\"resolved\"") && transition.contains("\"rule\":\"gone\""),
        "{transition}"
    );

    let out = hostwatch(&["--config", c, "silence", "expire", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = hostwatch(&["--config", c, "silence", "expire", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no silence"),
        "{}",
        text(&out.stderr)
    );
    stop.cancel();
    runtime.block_on(collector).unwrap().unwrap();
}
