use super::fake::{FakeSystemd, FakeTimesync, FakeUnit, PrivateBus, object_path};
use super::*;
use crate::config::SystemdConfig;
use crate::sampler::{Sampler, Settings, Sources, Tick};
use std::time::{Duration, Instant};

#[test]
fn unit_names_and_types() {
    for name in [
        "nginx.service",
        "systemd-fsck@dev-disk-by\\x2duuid-0a1b.service",
        "a:b_c.mount",
        "getty@tty1.service",
    ] {
        assert_eq!(invalid_name(name), None, "{name}");
    }
    for name in [
        "",
        "bad name.service",
        "new\nline.service",
        "ünïcode.service",
        "noSuffix",
        ".service",
        "trailing.",
    ] {
        assert!(invalid_name(name).is_some(), "{name:?}");
    }
    assert!(invalid_name(&format!("{}.service", "a".repeat(250))).is_some());
    assert_eq!(Kind::of("nginx.service"), Some(Kind::Service));
    assert_eq!(Kind::of("logrotate.timer"), Some(Kind::Timer));
    assert_eq!(Kind::of("-.mount"), Some(Kind::Mount));
    assert_eq!(Kind::of("dbus.socket"), Some(Kind::Socket));
    assert_eq!(Kind::of("multi-user.target"), None);
    assert_eq!(ActiveState::parse("failed"), Some(ActiveState::Failed));
    assert_eq!(ActiveState::parse("Failed"), None);
    // As systemd escapes them (`busctl tree org.freedesktop.systemd1`).
    assert_eq!(
        object_path("dbus.service"),
        "/org/freedesktop/systemd1/unit/dbus_2eservice"
    );
    assert_eq!(
        object_path("-.mount"),
        "/org/freedesktop/systemd1/unit/_2d_2emount"
    );
    assert_eq!(
        object_path("getty@tty1.service"),
        "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"
    );
}

fn unit(name: &str, active: ActiveState, changed_us: u64, restarts: Option<u32>) -> Unit {
    Unit {
        name: name.to_owned(),
        kind: Kind::of(name).unwrap(),
        active,
        sub: "running".to_owned(),
        changed_us,
        restarts,
    }
}

#[test]
fn the_table_is_written_out_and_removed_units_go_inactive_for_a_while() {
    let mut table = Table::default();
    table.insert(
        "/a".to_owned(),
        unit(
            "a.service",
            ActiveState::Failed,
            1_700_000_000_500_000,
            Some(3),
        ),
    );
    table.insert(
        "/b".to_owned(),
        unit("b.socket", ActiveState::Active, 0, None),
    );
    let mut out = Samples::default();
    table.emit(1_800_000_000.0, &mut out);
    let a = [("unit", "a.service"), ("type", "service")];
    assert_eq!(out.get("host_systemd_unit_state", &a), Some(7.0));
    assert_eq!(
        out.get("host_systemd_unit_failed_time_seconds", &a),
        Some(1_700_000_000.5)
    );
    assert_eq!(
        out.get("host_systemd_unit_state_change_time_seconds", &a),
        Some(1_700_000_000.5)
    );
    assert_eq!(out.get("host_systemd_unit_restarts_total", &a), Some(3.0));
    let sub = [
        ("unit", "a.service"),
        ("type", "service"),
        ("sub_state", "running"),
    ];
    assert_eq!(out.get("host_systemd_unit_sub_state", &sub), Some(1.0));
    let b = [("unit", "b.socket"), ("type", "socket")];
    assert_eq!(out.get("host_systemd_unit_state", &b), Some(1.0));
    assert_eq!(
        out.get("host_systemd_unit_failed_time_seconds", &b),
        Some(0.0)
    );
    assert_eq!(out.get("host_systemd_unit_restarts_total", &b), None);

    table.remove("/a");
    for _ in 0..GONE_TICKS {
        let mut out = Samples::default();
        table.emit(0.0, &mut out);
        assert_eq!(out.get("host_systemd_unit_state", &a), Some(0.0));
        assert_eq!(
            out.get("host_systemd_unit_failed_time_seconds", &a),
            Some(0.0)
        );
    }
    let mut out = Samples::default();
    table.emit(0.0, &mut out);
    assert_eq!(out.get("host_systemd_unit_state", &a), None);
    assert!(out.get("host_systemd_unit_state", &b).is_some());

    // A failed unit without a timestamp: the tick's time.
    table.insert(
        "/c".to_owned(),
        unit("c.service", ActiveState::Failed, 0, None),
    );
    let mut out = Samples::default();
    table.emit(123.0, &mut out);
    let c = [("unit", "c.service"), ("type", "service")];
    assert_eq!(
        out.get("host_systemd_unit_failed_time_seconds", &c),
        Some(123.0)
    );
}

#[test]
fn problems_beyond_the_kept_ones_are_still_counted() {
    let table = Mutex::new(Table::default());
    for i in 0..MAX_PROBLEMS + 10 {
        lock(&table).problem(format!("problem {i}"));
    }
    let mut notes = Vec::new();
    write_out(
        &table,
        &mut Samples::default(),
        &mut |p: &dyn fmt::Display| notes.push(p.to_string()),
    );
    assert_eq!(notes.len(), MAX_PROBLEMS + 10);
    assert_eq!(notes[0], "problem 0");
    assert_eq!(notes[MAX_PROBLEMS], "more problems than logged");
    notes.clear();
    write_out(
        &table,
        &mut Samples::default(),
        &mut |p: &dyn fmt::Display| notes.push(p.to_string()),
    );
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn absent_is_silent_and_no_runtime_is_a_problem() {
    let mut notes = Vec::new();
    let mut state = State::new(SystemdSource::Absent);
    let mut out = Samples::default();
    state.sample(
        &SystemdConfig::default(),
        &mut out,
        &mut |p: &dyn fmt::Display| notes.push(p.to_string()),
    );
    assert!(notes.is_empty() && out.0.is_empty());
    // Outside a runtime the watcher cannot start: that is a problem.
    let mut state = State::new(SystemdSource::Address("unix:path=/nonexistent".into()));
    state.sample(
        &SystemdConfig::default(),
        &mut out,
        &mut |p: &dyn fmt::Display| notes.push(p.to_string()),
    );
    assert_eq!(notes, ["no async runtime to watch the bus from"]);
}

const MINUTE_US: u64 = 60_000_000;
const T0_US: u64 = 1_790_000_000_000_000;

fn sampler_on(address: &str, config: SystemdConfig) -> Sampler {
    let settings = Settings {
        systemd: config,
        ..Settings::default()
    };
    let sources = Sources {
        systemd: SystemdSource::Address(address.to_owned()),
        ..crate::sampler::tests::fixture_sources(
            "host-a",
            crate::sampler::tests::fixture("host-a").join("proc"),
        )
    };
    Sampler::with_sources(settings, sources)
}

/// Samples every 20 ms until `done` holds of a tick (at most 10 s), and
/// returns that tick.
async fn tick_until(sampler: &mut Sampler, what: &str, done: impl Fn(&Tick) -> bool) -> Tick {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tick = sampler.sample(Instant::now());
        if done(&tick) {
            return tick;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn errors(tick: &Tick) -> f64 {
    tick.samples
        .get(
            "hostwatch_agent_sample_errors_total",
            &[("family", "systemd")],
        )
        .unwrap()
}

fn state(tick: &Tick, name: &str) -> Option<f64> {
    let kind = Kind::of(name).unwrap().label();
    tick.samples
        .get("host_systemd_unit_state", &[("unit", name), ("type", kind)])
}

fn service(name: &str) -> [(&'static str, &str); 2] {
    [("unit", name), ("type", "service")]
}

#[tokio::test]
async fn units_follow_systemd_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start(dir.path()).unwrap();
    let mut restarting = FakeUnit::new("api.service", "active", "running", T0_US);
    restarting.n_restarts = 2;
    let mut ghost = FakeUnit::new("ghost.service", "active", "running", T0_US);
    ghost.ghost = true;
    let unusual = "systemd-fsck@dev-disk-by\\x2duuid-0a1b.service";
    let systemd = FakeSystemd::start(
        &bus.address,
        vec![
            FakeUnit::new("nginx.service", "active", "running", T0_US),
            restarting,
            FakeUnit::new(unusual, "inactive", "dead", T0_US),
            FakeUnit::new("logrotate.timer", "active", "waiting", T0_US),
            FakeUnit::new("bad name.service", "active", "running", T0_US),
            ghost,
        ],
    )
    .await
    .unwrap();
    let _timesync = FakeTimesync::start(&bus.address, "ntp.example.org", [192, 0, 2, 7].into())
        .await
        .unwrap();
    let mut sampler = sampler_on(&bus.address, SystemdConfig::default());
    // The time server is read after the units: both there.
    let tick = tick_until(&mut sampler, "the units and the time server", |t| {
        state(t, "nginx.service").is_some()
            && t.samples
                .0
                .iter()
                .any(|s| s.metric == "host_time_source_info")
    })
    .await;
    let s = &tick.samples;
    assert_eq!(state(&tick, "nginx.service"), Some(1.0));
    assert_eq!(
        s.get(
            "host_systemd_unit_state_change_time_seconds",
            &service("nginx.service")
        ),
        Some(T0_US as f64 / 1e6)
    );
    assert_eq!(
        s.get("host_systemd_unit_restarts_total", &service("api.service")),
        Some(2.0)
    );
    // An escaped object path, read back to its name.
    assert_eq!(state(&tick, unusual), Some(0.0));
    assert_eq!(
        s.get(
            "host_systemd_unit_sub_state",
            &[
                ("unit", unusual),
                ("type", "service"),
                ("sub_state", "dead")
            ]
        ),
        Some(1.0)
    );
    // Timers are not in the default filter.
    assert_eq!(state(&tick, "logrotate.timer"), None);
    // The name systemd would refuse and the unit gone before it was read:
    // counted and skipped.
    assert_eq!(state(&tick, "bad name.service"), None);
    assert_eq!(state(&tick, "ghost.service"), None);
    assert_eq!(errors(&tick), 2.0);
    assert_eq!(
        s.get(
            "host_time_source_info",
            &[
                ("daemon", "systemd-timesyncd"),
                ("server", "ntp.example.org"),
                ("address", "192.0.2.7"),
            ]
        ),
        Some(1.0)
    );

    let reference = include_str!("../../../../docs/metrics.md");
    for sample in &tick.samples.0 {
        assert!(
            reference.contains(&format!("`{}`", sample.metric)),
            "{} is not in docs/metrics.md",
            sample.metric
        );
    }

    // Signals: a failure, restarts, a new unit, a removed one.
    let failed_at = T0_US + MINUTE_US;
    systemd
        .set_state("nginx.service", "failed", "failed", failed_at)
        .await
        .unwrap();
    systemd.set_restarts("api.service", 5).await.unwrap();
    systemd
        .add(FakeUnit::new("new.service", "activating", "start", T0_US))
        .await
        .unwrap();
    let tick = tick_until(&mut sampler, "the signals' changes", |t| {
        state(t, "nginx.service") == Some(7.0)
            && state(t, "new.service") == Some(2.0)
            && t.samples
                .get("host_systemd_unit_restarts_total", &service("api.service"))
                == Some(5.0)
    })
    .await;
    assert_eq!(
        tick.samples.get(
            "host_systemd_unit_failed_time_seconds",
            &service("nginx.service")
        ),
        Some(failed_at as f64 / 1e6)
    );
    assert_eq!(errors(&tick), 2.0);
    systemd.remove("nginx.service").await.unwrap();
    let tick = tick_until(&mut sampler, "the removal", |t| {
        state(t, "nginx.service") == Some(0.0)
    })
    .await;
    assert_eq!(
        tick.samples.get(
            "host_systemd_unit_failed_time_seconds",
            &service("nginx.service")
        ),
        Some(0.0)
    );
    tick_until(&mut sampler, "the removed unit to go", |t| {
        state(t, "nginx.service").is_none()
    })
    .await;

    // A reload lists everything again (a unit that came without UnitNew).
    systemd
        .load(FakeUnit::new("quiet.service", "active", "running", T0_US))
        .await
        .unwrap();
    for _ in 0..5 {
        let tick = sampler.sample(Instant::now());
        assert_eq!(state(&tick, "quiet.service"), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    systemd.reload().await.unwrap();
    let tick = tick_until(&mut sampler, "the reload", |t| {
        state(t, "quiet.service").is_some()
    })
    .await;
    assert_eq!(state(&tick, "api.service"), Some(1.0));
}

#[tokio::test]
async fn another_peer_cannot_fake_a_units_state() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start(dir.path()).unwrap();
    let systemd = FakeSystemd::start(
        &bus.address,
        vec![FakeUnit::new("nginx.service", "active", "running", T0_US)],
    )
    .await
    .unwrap();
    let mut sampler = sampler_on(&bus.address, SystemdConfig::default());
    tick_until(&mut sampler, "the units", |t| {
        state(t, "nginx.service").is_some()
    })
    .await;
    let impostor = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let changed: std::collections::HashMap<&str, zbus::Variant<'_>> =
        [("ActiveState", zbus::Variant::from("failed"))].into();
    impostor
        .emit_signal(
            None::<&str>,
            object_path("nginx.service").as_str(),
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &(
                "org.freedesktop.systemd1.Unit",
                changed,
                Vec::<String>::new(),
            ),
        )
        .await
        .unwrap();
    // The real one's next change arrives after the impostor's.
    systemd.set_restarts("nginx.service", 1).await.unwrap();
    let tick = tick_until(&mut sampler, "the real change", |t| {
        t.samples.get(
            "host_systemd_unit_restarts_total",
            &service("nginx.service"),
        ) == Some(1.0)
    })
    .await;
    assert_eq!(state(&tick, "nginx.service"), Some(1.0));
}

#[tokio::test]
async fn no_bus_or_no_systemd_is_not_an_error_and_the_bus_coming_back_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    // No socket at all.
    let nowhere = format!("unix:path={}", dir.path().join("none").display());
    let mut sampler = sampler_on(&nowhere, SystemdConfig::default());
    for _ in 0..10 {
        let tick = sampler.sample(Instant::now());
        assert_eq!(errors(&tick), 0.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A bus without systemd on it (a container).
    let mut bus = PrivateBus::start(dir.path()).unwrap();
    let mut sampler = sampler_on(&bus.address, SystemdConfig::default());
    for _ in 0..10 {
        let tick = sampler.sample(Instant::now());
        assert_eq!(errors(&tick), 0.0);
        assert!(
            !tick
                .samples
                .0
                .iter()
                .any(|s| s.metric.starts_with("host_systemd"))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // systemd comes, the bus goes, both come back: listed again each time.
    let units = || {
        vec![FakeUnit::new(
            "timer-target.timer",
            "active",
            "waiting",
            T0_US,
        )]
    };
    let timers = SystemdConfig {
        include: crate::config::Pattern::anchored(".+\\.timer").unwrap(),
        ..SystemdConfig::default()
    };
    sampler.reconfigure(Settings {
        systemd: timers,
        ..Settings::default()
    });
    let systemd = FakeSystemd::start(&bus.address, units()).await.unwrap();
    tick_until(&mut sampler, "systemd on the bus", |t| {
        state(t, "timer-target.timer").is_some()
    })
    .await;
    drop(systemd);
    bus.kill();
    tick_until(&mut sampler, "the units to go with the bus", |t| {
        state(t, "timer-target.timer").is_none()
    })
    .await;
    let bus = PrivateBus::start(dir.path()).unwrap();
    let _systemd = FakeSystemd::start(&bus.address, units()).await.unwrap();
    let tick = tick_until(&mut sampler, "the units back", |t| {
        state(t, "timer-target.timer").is_some()
    })
    .await;
    // The bus closing the connection under the agent is a problem; its
    // absence, and systemd's, are not.
    assert!(errors(&tick) <= 1.0, "{}", errors(&tick));
}
