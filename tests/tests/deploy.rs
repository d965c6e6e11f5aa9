//! Everything under `deploy/` is usable as shipped: the example
//! configurations load through the real loaders, and the systemd units are
//! hardened (measured with `systemd-analyze security --offline=true`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn example_configurations_load() {
    let collector =
        hostwatch_collector::CollectorConfig::load(&deploy().join("collector.toml")).unwrap();
    assert_eq!(collector.listen.port(), 7070);
    // Enrollment is off, its defaults spelled out.
    assert_eq!(collector.enroll_listen, None);
    let enroll = hostwatch_collector::config::EnrollConfig::default();
    assert_eq!(collector.enroll.cert_lifetime, enroll.cert_lifetime);
    assert_eq!(collector.enroll.max_connections, enroll.max_connections);
    assert_eq!(
        collector.enroll.min_renew_interval,
        enroll.min_renew_interval
    );
    assert!(
        collector
            .enroll
            .issuer_cert
            .unwrap()
            .ends_with("deploy/issuing.pem")
    );
    assert!(collector.tls.key.ends_with("deploy/collector.key"));
    let agent = hostwatch_agent::AgentConfig::load(&deploy().join("agent.toml")).unwrap();
    assert_eq!(agent.interval, std::time::Duration::from_secs(10));
    // Where enroll puts them: renewable under the unit.
    assert_eq!(
        agent.tls.key,
        Path::new("/var/lib/hostwatch-agent/pki/agent.key")
    );
    assert!(agent.tls.ca.ends_with("deploy/agent-ca.pem"));
    // The example spells out the defaults, not other values.
    use hostwatch_agent::config as c;
    assert_eq!(agent.limits, c::Limits::default());
    assert_eq!(agent.processes.top, c::ProcessesConfig::default().top);
    assert_eq!(
        agent.filesystems.exclude_types,
        c::FilesystemsConfig::default().exclude_types
    );
    assert_eq!(
        agent.filesystems.exclude_mountpoints,
        c::FilesystemsConfig::default().exclude_mountpoints
    );
    assert_eq!(agent.disks.exclude, c::DisksConfig::default().exclude);
    assert_eq!(agent.network.exclude, c::NetworkConfig::default().exclude);
    assert_eq!(agent.systemd, c::SystemdConfig::default());
    let cli = hostwatch::ClientConfig::load(&deploy().join("cli.toml")).unwrap();
    assert_eq!(cli.collector, "collector.example.com:7070");
}

#[test]
fn example_alerting_section_and_its_commented_hooks_and_forwarding_load() {
    let collector =
        hostwatch_collector::CollectorConfig::load(&deploy().join("collector.toml")).unwrap();
    let rules = collector.alert_rules().unwrap();
    assert!(rules.rules.iter().any(|r| r.name == "data_disk_filling"));
    assert!(rules.rules.iter().any(|r| r.name == "host_down"));
    assert!(rules.hooks.is_empty());
    // The hooks, uncommented, with the files they name made up.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(deploy().join("collector.toml")).unwrap();
    let mut text = text.replace("\n#~ ", "\n");
    for (shipped, name, content) in [
        ("/etc/hostwatch/webhook.secret", "webhook.secret", "key"),
        ("/etc/hostwatch/forward.token", "forward.token", "token"),
        ("/usr/local/bin/hostwatch-page", "page", "#!/bin/sh\n"),
        (
            "/etc/hostwatch/pagerduty.key",
            "pagerduty.key",
            "0123456789abcdef0123456789abcdef\n",
        ),
        ("/etc/hostwatch/opsgenie.key", "opsgenie.key", "key\n"),
        (
            "/etc/hostwatch/slack.url",
            "slack.url",
            "https://hooks.slack.com/services/T0/B0/x\n",
        ),
        (
            "/etc/hostwatch/smtp.password",
            "smtp.password",
            "password\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        // The exec hook's program must be executable; the secret need not be.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        text = text.replace(shipped, &path.display().to_string());
    }
    let pki = hostwatch_pki::Ca::generate("t", 1).unwrap();
    pki.write(dir.path()).unwrap();
    let client = hostwatch_pki::Identity::new(hostwatch_pki::Role::Collector, "hook").unwrap();
    let (cert, key) = pki
        .issue(&client, &hostwatch_pki::IssueOptions::valid_for_days(1))
        .unwrap()
        .write(dir.path(), "hook-client")
        .unwrap();
    for (shipped, path) in [
        ("/etc/hostwatch/hooks-ca.pem", dir.path().join("ca.pem")),
        ("/etc/hostwatch/hook-client.pem", cert),
        ("/etc/hostwatch/hook-client.key", key),
    ] {
        text = text.replace(shipped, &path.display().to_string());
    }
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, text).unwrap();
    let collector = hostwatch_collector::CollectorConfig::load(&path).unwrap();
    let hooks = collector.alert_rules().unwrap().hooks;
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "oncall",
            "alertmanager",
            "pager-script",
            "pagerduty",
            "opsgenie",
            "slack",
            "email"
        ]
    );
    // The quiet window holds on weekdays in working hours, Berlin time:
    // Monday 2026-12-07 08:00 UTC is 09:00 there.
    let windows: Vec<_> = collector
        .alerting
        .time_intervals
        .iter()
        .map(|i| i.compile().unwrap())
        .collect();
    assert_eq!(windows.len(), 1);
    assert!(windows[0].contains(1_796_630_400_000));
    assert!(!windows[0].contains(1_796_630_400_000 - 1));
    let forward: Vec<&str> = collector.forward.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(forward, ["mimir"]);
}

#[test]
fn example_configurations_set_every_documented_default() {
    // The examples spell out every key, so an operator sees all knobs: a
    // key missing from an example would load as a default and go unseen.
    let collector = std::fs::read_to_string(deploy().join("collector.toml")).unwrap();
    for key in [
        "listen",
        "http_listen",
        "data_dir",
        "host_down_after",
        "max_connections",
        "max_streams_per_connection",
        "max_message_bytes",
        "max_series_per_host",
        "max_query_points",
        "handshake_timeout",
        "keepalive_interval",
        "keepalive_timeout",
        "reserved_operator_connections",
        "max_connections_per_identity",
        "max_handshakes",
        "idle_timeout",
        "max_pending_bytes_per_connection",
        "max_pending_bytes",
        "message_timeout",
        "drain_timeout",
        "retention",
        "future_tolerance",
        "max_samples",
        "timeout",
        "max_concurrent",
        "session_ttl",
        "login_attempts_per_minute",
        "max_sessions_per_token",
        "default_rules",
        "disabled_rules",
        "external_url",
        "stale_after",
        "flap_window",
        "history_limit",
        "max_alerts",
        "enroll_listen",
        "issuer_cert",
        "issuer_key",
        "cert_lifetime",
        "min_renew_interval",
    ] {
        assert!(
            collector.contains(&format!("\n{key} = ")),
            "collector.toml lacks {key}"
        );
    }
    let agent = std::fs::read_to_string(deploy().join("agent.toml")).unwrap();
    for key in [
        "collector",
        "interval",
        "sampler",
        "state_dir",
        "spool_bytes",
        "max_in_flight",
        "replay_batch_bytes",
        "max_backoff",
        "connect_timeout",
        "keepalive_interval",
        "keepalive_timeout",
        "ack_timeout",
        "failover_after",
        "probe_interval",
        "top",
        "command_max_bytes",
        "watch",
        "exclude_types",
        "exclude_mountpoints",
        "exclude",
        "root",
        "slices",
        "units",
        "limit",
        "rank_interval",
        "include",
    ] {
        assert!(
            agent.contains(&format!("\n{key} = ")),
            "agent.toml lacks {key}"
        );
    }
}

#[test]
fn systemd_units_are_hardened() {
    for unit in ["hostwatch-agent.service", "hostwatch-collector.service"] {
        let path = deploy().join("systemd").join(unit);
        let text = std::fs::read_to_string(&path).unwrap();
        for required in [
            "User=hostwatch",
            "StateDirectory=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
            "PrivateMounts=yes",
            "DevicePolicy=closed\nDeviceAllow=\n",
        ] {
            assert!(text.contains(required), "{unit} lacks {required}");
        }
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (package systemd) is needed to check the units");
        let report = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {report}"));
        // 0 is fully locked down, 10 fully exposed; systemd calls below 2.0 "OK".
        assert!(exposure <= 2.0, "{unit}: exposure {exposure}");
        // No device at all (ProtectClock=yes would let the real-time
        // clock be read), no mounts of its own, no clock changes.
        for setting in [
            "DeviceAllow=",
            "PrivateMounts=",
            "SystemCallFilter=~@clock",
            "CapabilityBoundingSet=~CAP_SYS_TIME",
        ] {
            let line = report
                .lines()
                .find(|l| l.contains(&format!(" {setting} ")))
                .unwrap_or_else(|| panic!("{unit}: no {setting} in: {report}"));
            assert!(line.starts_with('✓'), "{unit}: {line}");
        }
    }
}
