//! For tests: a private D-Bus daemon (`dbus-daemon`, as Debian ships it)
//! and a peer on it that serves what the agent reads of systemd and
//! systemd-timesyncd, as they serve it: the manager's `Subscribe` and
//! `ListUnitsByPatterns`, each unit at its escaped object path with the
//! `Unit` (and for services `Service`) properties, and the signals
//! systemd emits (`UnitNew`, `UnitRemoved`, `Reloading`,
//! `PropertiesChanged`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectPath, OwnedObjectPath};

/// A `dbus-daemon` on a socket of its own, killed when dropped.
pub struct PrivateBus {
    child: Child,
    socket: PathBuf,
    /// Its D-Bus address, `unix:path=...`.
    pub address: String,
}

impl PrivateBus {
    /// Starts a bus listening in `dir` (which must exist), and waits
    /// until it accepts connections.
    pub fn start(dir: &Path) -> std::io::Result<PrivateBus> {
        let socket = dir.join("bus");
        let _ = std::fs::remove_file(&socket);
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_requested_reply="true"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )?;
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("dbus-daemon (Debian package dbus-daemon): {e}"),
                )
            })?;
        let mut bus = PrivateBus {
            child,
            address: format!("unix:path={}", socket.display()),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&bus.socket).is_err() {
            if Instant::now() > deadline || bus.child.try_wait()?.is_some() {
                return Err(std::io::Error::other("dbus-daemon did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(bus)
    }

    /// Kills the daemon: every connection to it closes.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// systemd's object path of the unit `name`: every byte but ASCII
/// letters and digits escaped as `_xx` (its hex value).
pub fn object_path(name: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if name.is_empty() {
        path.push('_');
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// A unit as the fake systemd serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeUnit {
    pub name: String,
    pub active_state: String,
    pub sub_state: String,
    /// Microseconds since the epoch.
    pub state_change_timestamp: u64,
    /// Served for services.
    pub n_restarts: u32,
    /// Listed, but without an object: it "disappeared" before it was read.
    pub ghost: bool,
}

impl FakeUnit {
    pub fn new(name: &str, active_state: &str, sub_state: &str, changed_us: u64) -> Self {
        FakeUnit {
            name: name.to_owned(),
            active_state: active_state.to_owned(),
            sub_state: sub_state.to_owned(),
            state_change_timestamp: changed_us,
            n_restarts: 0,
            ghost: false,
        }
    }

    fn is_service(&self) -> bool {
        self.name.ends_with(".service")
    }
}

type Units = Arc<Mutex<Vec<FakeUnit>>>;

struct Manager {
    units: Units,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn subscribe(&self) {}

    /// Patterns: `*.suffix` globs (all the agent sends); states ignored.
    fn list_units_by_patterns(
        &self,
        _states: Vec<String>,
        patterns: Vec<String>,
    ) -> Vec<super::ListedUnit> {
        let units = self.units.lock().unwrap();
        units
            .iter()
            .filter(|u| {
                patterns.is_empty()
                    || patterns.iter().any(|p| {
                        p.strip_prefix('*')
                            .is_some_and(|suffix| u.name.ends_with(suffix))
                    })
            })
            .map(|u| {
                (
                    u.name.clone(),
                    format!("{} (fake)", u.name),
                    "loaded".to_owned(),
                    u.active_state.clone(),
                    u.sub_state.clone(),
                    String::new(),
                    OwnedObjectPath::try_from(object_path(&u.name)).unwrap(),
                    0,
                    String::new(),
                    OwnedObjectPath::try_from("/").unwrap(),
                )
            })
            .collect()
    }

    #[zbus(signal)]
    async fn unit_new(
        emitter: &SignalEmitter<'_>,
        id: &str,
        unit: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn unit_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        unit: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn reloading(emitter: &SignalEmitter<'_>, active: bool) -> zbus::Result<()>;
}

struct UnitObject {
    unit: FakeUnit,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObject {
    #[zbus(property)]
    fn id(&self) -> String {
        self.unit.name.clone()
    }

    #[zbus(property)]
    fn active_state(&self) -> String {
        self.unit.active_state.clone()
    }

    #[zbus(property)]
    fn sub_state(&self) -> String {
        self.unit.sub_state.clone()
    }

    #[zbus(property)]
    fn state_change_timestamp(&self) -> u64 {
        self.unit.state_change_timestamp
    }
}

struct ServiceObject {
    n_restarts: u32,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceObject {
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> u32 {
        self.n_restarts
    }
}

/// A peer named `org.freedesktop.systemd1` serving `units`.
pub struct FakeSystemd {
    conn: Connection,
    units: Units,
}

const MANAGER_PATH: &str = "/org/freedesktop/systemd1";

impl FakeSystemd {
    pub async fn start(address: &str, units: Vec<FakeUnit>) -> zbus::Result<FakeSystemd> {
        let conn = zbus::connection::Builder::address(address).build().await?;
        let shared: Units = Arc::new(Mutex::new(Vec::new()));
        conn.object_server()
            .at(
                MANAGER_PATH,
                Manager {
                    units: shared.clone(),
                },
            )
            .await?;
        let fake = FakeSystemd {
            conn,
            units: shared,
        };
        for unit in units {
            fake.load(unit).await?;
        }
        fake.conn.request_name("org.freedesktop.systemd1").await?;
        Ok(fake)
    }

    /// Loads a unit without a word (a listing finds it).
    pub async fn load(&self, unit: FakeUnit) -> zbus::Result<()> {
        if !unit.ghost {
            let path = object_path(&unit.name);
            let server = self.conn.object_server();
            if unit.is_service() {
                let n_restarts = unit.n_restarts;
                server
                    .at(path.as_str(), ServiceObject { n_restarts })
                    .await?;
            }
            server
                .at(path.as_str(), UnitObject { unit: unit.clone() })
                .await?;
        }
        self.units.lock().unwrap().push(unit);
        Ok(())
    }

    fn emitter(&self) -> SignalEmitter<'static> {
        SignalEmitter::new(&self.conn, MANAGER_PATH)
            .unwrap()
            .into_owned()
    }

    /// Loads a unit, as `systemctl start` of a new one does: `UnitNew`.
    pub async fn add(&self, unit: FakeUnit) -> zbus::Result<()> {
        let name = unit.name.clone();
        self.load(unit).await?;
        let path = object_path(&name);
        Manager::unit_new(&self.emitter(), &name, ObjectPath::try_from(path.as_str())?).await
    }

    /// Unloads a unit: `UnitRemoved`.
    pub async fn remove(&self, name: &str) -> zbus::Result<()> {
        self.units.lock().unwrap().retain(|u| u.name != name);
        let path = object_path(name);
        let server = self.conn.object_server();
        server.remove::<UnitObject, _>(path.as_str()).await?;
        let _ = server.remove::<ServiceObject, _>(path.as_str()).await;
        Manager::unit_removed(&self.emitter(), name, ObjectPath::try_from(path.as_str())?).await
    }

    /// Changes a unit's state, as systemd does: `PropertiesChanged` of
    /// the `Unit` interface.
    pub async fn set_state(
        &self,
        name: &str,
        active_state: &str,
        sub_state: &str,
        changed_us: u64,
    ) -> zbus::Result<()> {
        for unit in self.units.lock().unwrap().iter_mut() {
            if unit.name == name {
                active_state.clone_into(&mut unit.active_state);
                sub_state.clone_into(&mut unit.sub_state);
                unit.state_change_timestamp = changed_us;
            }
        }
        let iface = self
            .conn
            .object_server()
            .interface::<_, UnitObject>(object_path(name).as_str())
            .await?;
        {
            let mut object = iface.get_mut().await;
            active_state.clone_into(&mut object.unit.active_state);
            sub_state.clone_into(&mut object.unit.sub_state);
            object.unit.state_change_timestamp = changed_us;
        }
        let object = iface.get().await;
        let emitter = iface.signal_emitter();
        object.active_state_changed(emitter).await?;
        object.sub_state_changed(emitter).await?;
        object.state_change_timestamp_changed(emitter).await
    }

    /// Sets a service's `NRestarts`: `PropertiesChanged` of the
    /// `Service` interface.
    pub async fn set_restarts(&self, name: &str, n_restarts: u32) -> zbus::Result<()> {
        let iface = self
            .conn
            .object_server()
            .interface::<_, ServiceObject>(object_path(name).as_str())
            .await?;
        iface.get_mut().await.n_restarts = n_restarts;
        iface
            .get()
            .await
            .n_restarts_changed(iface.signal_emitter())
            .await
    }

    /// `Reloading(true)`, then `Reloading(false)`, as `daemon-reload`.
    pub async fn reload(&self) -> zbus::Result<()> {
        Manager::reloading(&self.emitter(), true).await?;
        Manager::reloading(&self.emitter(), false).await
    }
}

struct Timesync {
    server_name: String,
    /// Address family and bytes.
    server_address: (i32, Vec<u8>),
}

#[zbus::interface(name = "org.freedesktop.timesync1.Manager")]
impl Timesync {
    #[zbus(property(emits_changed_signal = "false"))]
    fn server_name(&self) -> String {
        self.server_name.clone()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn server_address(&self) -> (i32, Vec<u8>) {
        self.server_address.clone()
    }
}

/// A peer named `org.freedesktop.timesync1` using `server` at the IPv4
/// `address`.
pub struct FakeTimesync {
    _conn: Connection,
}

impl FakeTimesync {
    pub async fn start(
        bus: &str,
        server: &str,
        address: std::net::Ipv4Addr,
    ) -> zbus::Result<FakeTimesync> {
        let conn = zbus::connection::Builder::address(bus)
            .serve_at(
                "/org/freedesktop/timesync1",
                Timesync {
                    server_name: server.to_owned(),
                    server_address: (2, address.octets().to_vec()),
                },
            )
            .name("org.freedesktop.timesync1")
            .build()
            .await?;
        Ok(FakeTimesync { _conn: conn })
    }
}
