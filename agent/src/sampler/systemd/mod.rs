//! systemd units (services, timers, mounts, sockets) and the time source
//! of systemd-timesyncd, read over D-Bus.
//!
//! Unlike the other families, nothing is read at the tick: a watcher task
//! on the agent's runtime (`bus`) keeps a table of the units up to date
//! from systemd's signals (`Subscribe`, then `PropertiesChanged`,
//! `UnitNew`, `UnitRemoved`, `Reloading`), listing every unit only when it
//! connects (at the first tick, and again after the bus or systemd came
//! back), and each tick writes the table out. So a tick costs no D-Bus
//! call, whatever the number of units, and a state that changes between
//! two ticks is seen at the next one.
//!
//! A host without a system bus, or whose bus has no systemd on it (a
//! container), reports no units and counts no error: the watcher tries
//! again now and then. What goes wrong on a bus that is there (refused
//! calls, a unit gone between listing and reading, malformed replies, a
//! unit name systemd would not accept) is counted under `systemd` and
//! skipped.
//!
//! Layout: this file holds the table and writes it out; `bus` is the
//! watcher; `fake` (feature `test-util`) a peer serving systemd's and
//! timesyncd's objects on a private bus, for tests.

mod bus;
#[cfg(feature = "test-util")]
pub mod fake;

use super::Samples;
use crate::config::SystemdConfig;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// One unit of the manager's `ListUnitsByPatterns` reply, as systemd
/// sends it: name, description, load, active and sub state, the unit it
/// follows, its object path, a queued job's id, type and path.
type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    zbus::OwnedObjectPath,
    u32,
    String,
    zbus::OwnedObjectPath,
);

/// Where the units are read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum SystemdSource {
    /// The system bus: `DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `/var/run/dbus/system_bus_socket`.
    #[default]
    SystemBus,
    /// A bus at this D-Bus address (`unix:path=...`), for tests.
    Address(String),
    /// No bus at all: no units, no errors (recorded hosts).
    Absent,
}

/// The unit types reported; units of other types (targets, devices,
/// slices, scopes ...) never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Service,
    Timer,
    Mount,
    Socket,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Service, Kind::Timer, Kind::Mount, Kind::Socket];

    /// The type of the unit `name`, from its suffix.
    pub(crate) fn of(name: &str) -> Option<Kind> {
        let (_, suffix) = name.rsplit_once('.')?;
        Kind::ALL.into_iter().find(|k| k.label() == suffix)
    }

    /// The `type` label, also the unit name's suffix.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Timer => "timer",
            Kind::Mount => "mount",
            Kind::Socket => "socket",
        }
    }
}

/// A unit's `ActiveState`, with the number `host_systemd_unit_state`
/// reports (docs/metrics.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActiveState {
    Inactive = 0,
    Active = 1,
    Activating = 2,
    Deactivating = 3,
    Reloading = 4,
    Refreshing = 5,
    Maintenance = 6,
    Failed = 7,
}

impl ActiveState {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "inactive" => ActiveState::Inactive,
            "active" => ActiveState::Active,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            "reloading" => ActiveState::Reloading,
            "refreshing" => ActiveState::Refreshing,
            "maintenance" => ActiveState::Maintenance,
            "failed" => ActiveState::Failed,
            _ => return None,
        })
    }
}

/// Longest unit name systemd accepts (`UNIT_NAME_MAX` less its NUL).
const MAX_UNIT_NAME: usize = 255;

/// Why a unit name is refused, if it is: systemd's own rule (at most 255
/// bytes of ASCII letters, digits and `:-_.\@`, a type suffix); anything
/// else did not come from systemd, and would make a label nobody can type.
pub(crate) fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_UNIT_NAME {
        return Some("has no or too many characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    {
        return Some("has characters systemd does not allow in a unit name");
    }
    match name.rsplit_once('.') {
        Some((prefix, suffix)) if !prefix.is_empty() && !suffix.is_empty() => None,
        _ => Some("has no type suffix"),
    }
}

/// What the table knows of one unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) active: ActiveState,
    pub(crate) sub: String,
    /// `StateChangeTimestamp`: microseconds since the epoch, 0 if never.
    pub(crate) changed_us: u64,
    /// `NRestarts`, services only.
    pub(crate) restarts: Option<u32>,
}

/// The time source systemd-timesyncd uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TimeSync {
    pub(crate) server: String,
    pub(crate) address: String,
}

/// Problems the watcher met since the last tick, at most this many kept
/// with their message (the rest are counted with the last one's).
const MAX_PROBLEMS: usize = 64;

/// Ticks a removed unit is still reported (as inactive), so that alerts
/// on it resolve rather than wait forever for a series that stopped.
const GONE_TICKS: u32 = 6;

/// What the watcher knows, shared with the sampler.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// By object path, as signals name them.
    pub(crate) units: HashMap<String, Unit>,
    /// Units systemd unloaded, and the ticks left to report them.
    gone: Vec<(Unit, u32)>,
    pub(crate) timesync: Option<TimeSync>,
    problems: Vec<String>,
    /// Problems beyond `MAX_PROBLEMS` since the last tick.
    more_problems: u64,
}

impl Table {
    pub(crate) fn problem(&mut self, what: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(what);
        } else {
            self.more_problems += 1;
        }
    }

    /// A unit systemd unloaded: reported inactive for a few more ticks.
    pub(crate) fn remove(&mut self, path: &str) {
        if let Some(mut unit) = self.units.remove(path) {
            unit.active = ActiveState::Inactive;
            "dead".clone_into(&mut unit.sub);
            self.gone.retain(|(u, _)| u.name != unit.name);
            self.gone.push((unit, GONE_TICKS));
        }
    }

    /// A unit (back) in the table is no longer reported as gone.
    pub(crate) fn insert(&mut self, path: String, unit: Unit) {
        self.gone.retain(|(u, _)| u.name != unit.name);
        self.units.insert(path, unit);
    }

    /// Writes the table out as this tick's samples; `now_s` stands for a
    /// failed unit's time when systemd gave none.
    fn emit(&mut self, now_s: f64, out: &mut Samples) {
        for unit in self.units.values() {
            push_unit(unit, now_s, out);
        }
        for (unit, left) in &mut self.gone {
            push_unit(unit, now_s, out);
            *left -= 1;
        }
        self.gone.retain(|(_, left)| *left > 0);
        if let Some(sync) = &self.timesync {
            out.push_labeled(
                "host_time_source_info",
                vec![
                    ("daemon", "systemd-timesyncd".to_owned()),
                    ("server", sync.server.clone()),
                    ("address", sync.address.clone()),
                ],
                1.0,
            );
        }
    }
}

fn push_unit(unit: &Unit, now_s: f64, out: &mut Samples) {
    let labels = || {
        vec![
            ("unit", unit.name.clone()),
            ("type", unit.kind.label().to_owned()),
        ]
    };
    out.push_labeled(
        "host_systemd_unit_state",
        labels(),
        f64::from(unit.active as u8),
    );
    let mut with_sub = labels();
    with_sub.push(("sub_state", unit.sub.clone()));
    out.push_labeled("host_systemd_unit_sub_state", with_sub, 1.0);
    let changed_s = unit.changed_us as f64 / 1e6;
    out.push_labeled(
        "host_systemd_unit_state_change_time_seconds",
        labels(),
        changed_s,
    );
    let failed_s = match unit.active {
        ActiveState::Failed if unit.changed_us > 0 => changed_s,
        ActiveState::Failed => now_s,
        _ => 0.0,
    };
    out.push_labeled("host_systemd_unit_failed_time_seconds", labels(), failed_s);
    if let Some(restarts) = unit.restarts {
        out.push_labeled(
            "host_systemd_unit_restarts_total",
            labels(),
            f64::from(restarts),
        );
    }
}

pub(crate) fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic while holding the lock leaves plain data behind, still
    // consistent enough to report: keep going with it.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts the problems the watcher met since the last tick, and writes
/// out the units it knows.
fn write_out(table: &Mutex<Table>, out: &mut Samples, note: &mut dyn FnMut(&dyn fmt::Display)) {
    let now_s = hostwatch_stdx::now_ms() as f64 / 1e3;
    let mut table = lock(table);
    for problem in table.problems.drain(..) {
        note(&problem);
    }
    for _ in 0..std::mem::take(&mut table.more_problems) {
        note(&"more problems than logged");
    }
    table.emit(now_s, out);
}

/// The family's state in the sampler: the watcher task and its table.
pub(super) struct State {
    source: SystemdSource,
    table: Arc<Mutex<Table>>,
    /// The running watcher and the filters it was started with.
    watcher: Option<(tokio::task::JoinHandle<()>, SystemdConfig)>,
}

impl State {
    pub(super) fn new(source: SystemdSource) -> Self {
        State {
            source,
            table: Arc::default(),
            watcher: None,
        }
    }

    /// Starts the watcher if it is not running with `config` (at the
    /// first tick, or after a reload changed the filters: a full refresh),
    /// then writes out what it knows; `note` counts each problem.
    pub(super) fn sample(
        &mut self,
        config: &SystemdConfig,
        out: &mut Samples,
        note: &mut dyn FnMut(&dyn fmt::Display),
    ) {
        if self.source == SystemdSource::Absent {
            return;
        }
        if self.watcher.as_ref().is_none_or(|(_, c)| c != config) {
            self.stop();
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                note(&"no async runtime to watch the bus from");
                return;
            };
            let task = runtime.spawn(bus::watch(
                self.source.clone(),
                config.clone(),
                self.table.clone(),
            ));
            self.watcher = Some((task, config.clone()));
        }
        write_out(&self.table, out, note);
    }

    /// Stops the watcher (the family was turned off): its connection
    /// closes, and nothing is reported until it starts again.
    pub(super) fn stop(&mut self) {
        if let Some((task, _)) = self.watcher.take() {
            task.abort();
        }
        // A table of its own for the next watcher: an aborted task may
        // still be in a poll on another thread of a test's runtime.
        self.table = Arc::default();
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if let Some((task, _)) = self.watcher.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
