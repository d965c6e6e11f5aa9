//! The watcher: one connection to the system bus, made at the family's
//! first tick. It subscribes to systemd's signals before listing the units
//! (so no change falls between the two), lists them once, reads what the
//! listing lacks (`StateChangeTimestamp`, `NRestarts`) per unit, then
//! follows the signals; only a new connection (the bus or systemd came
//! back) or systemd's `Reloading` lists everything again. Signals are
//! taken only from the bus names' current owners, so another peer on the
//! bus cannot fake a unit's state.

use super::{
    ActiveState, Kind, ListedUnit, SystemdSource, Table, TimeSync, Unit, invalid_name, lock,
};
use crate::config::SystemdConfig;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::StreamExt;
use zbus::{Connection, Message, MessageStream, OwnedObjectPath, OwnedVariant};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const TIMESYNC: &str = "org.freedesktop.timesync1";
const TIMESYNC_PATH: &str = "/org/freedesktop/timesync1";
const TIMESYNC_MANAGER: &str = "org.freedesktop.timesync1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const DBUS: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";

/// What the agent takes from a unit's `PropertiesChanged`, per interface.
const UNIT_PROPERTIES: [&str; 3] = ["ActiveState", "SubState", "StateChangeTimestamp"];
const SERVICE_PROPERTIES: [&str; 1] = ["NRestarts"];

/// Longest wait for one answer on the bus.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Signals queued per subscription while the watcher is busy (a refresh
/// after a reload): systemd sends a few per unit that changes. zbus
/// reserves the whole queue up front (72 bytes a signal), and a full one
/// stops it reading the bus, method replies included.
const QUEUE: usize = 4096;
/// The same for the subscriptions that see a signal now and then (a bus
/// name's owner changing, timesyncd's NTP replies): 4,096 places each
/// would be 288 KiB of the agent's memory for nothing.
const QUIET_QUEUE: usize = 64;
/// Waits between attempts to connect, jittered and doubling.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest sub-state or time server name taken as a label value.
const MAX_LABEL: usize = 255;

/// How a session with the bus ended.
enum End {
    /// No bus, or no systemd on it: not a problem, tried again later.
    Absent(String),
    /// A problem: counted, then tried again.
    Failed(String),
    /// systemd left the bus or was re-executed: connect again.
    Restarted,
}

fn failed(what: &'static str) -> impl FnOnce(zbus::Error) -> End {
    move |e| End::Failed(format!("{what}: {e}"))
}

/// Follows systemd on `source` into `table` until aborted, connecting
/// again (jittered backoff) whenever a session ends.
pub(super) async fn watch(source: SystemdSource, config: SystemdConfig, table: Arc<Mutex<Table>>) {
    let mut attempt: u32 = 0;
    let mut told_absent = false;
    loop {
        let mut listed = false;
        let end = match session(&source, &config, &table, &mut listed).await {
            Ok(never) => match never {},
            Err(end) => end,
        };
        {
            let mut t = lock(&table);
            t.units.clear();
            t.timesync = None;
        }
        if listed {
            attempt = 0;
        }
        match end {
            End::Absent(why) => {
                if !told_absent {
                    tracing::info!(reason = %why, "systemd units are not reported (tried again now and then)");
                    told_absent = true;
                }
            }
            End::Failed(problem) => lock(&table).problem(problem),
            End::Restarted => {}
        }
        tokio::time::sleep(hostwatch_stdx::backoff(attempt, RETRY_MIN, RETRY_MAX)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// One connection's life; returns only how it ended.
async fn session(
    source: &SystemdSource,
    config: &SystemdConfig,
    table: &Mutex<Table>,
    listed: &mut bool,
) -> Result<Infallible, End> {
    let address = match source {
        SystemdSource::SystemBus => zbus::Address::system(),
        SystemdSource::Address(address) => address.parse(),
        SystemdSource::Absent => return Err(End::Absent("no bus configured".to_owned())),
    }
    .map_err(failed("the system bus's address"))?;
    let conn = match zbus::connection::Builder::address(address)
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
    {
        Ok(conn) => conn,
        Err(zbus::Error::Connection(e, _) | zbus::Error::InputOutput(e))
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(End::Absent(format!("no system bus: {e}")));
        }
        Err(e) => return Err(failed("connecting to the system bus")(e)),
    };
    // Subscriptions first: a change while listing is queued, not lost.
    let subscribe = |rule: String, queue: usize| {
        let conn = &conn;
        async move {
            MessageStream::for_match_rule(rule.as_str(), conn, NonZeroUsize::new(queue))
                .await
                .map_err(failed("subscribing to signals"))
        }
    };
    let changed = |path: &str| {
        format!("type='signal',interface='{PROPERTIES}',member='PropertiesChanged',{path}")
    };
    let mut unit_changes = subscribe(
        changed(&format!("path_namespace='{MANAGER_PATH}/unit'")),
        QUEUE,
    )
    .await?;
    let mut manager = subscribe(
        format!("type='signal',interface='{MANAGER}',path='{MANAGER_PATH}'"),
        QUEUE,
    )
    .await?;
    let owner_changes = |name: &str| {
        format!(
            "type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{name}'"
        )
    };
    let mut systemd_owners = subscribe(owner_changes(SYSTEMD), QUIET_QUEUE).await?;
    let mut timesync_owners = subscribe(owner_changes(TIMESYNC), QUIET_QUEUE).await?;
    let mut timesync_changes =
        subscribe(changed(&format!("path='{TIMESYNC_PATH}'")), QUIET_QUEUE).await?;

    let Some(systemd) = name_owner(&conn, SYSTEMD)
        .await
        .map_err(failed("asking for systemd's bus name"))?
    else {
        return Err(End::Absent(format!("no {SYSTEMD} on the system bus")));
    };
    conn.call_method(
        Some(systemd.as_str()),
        MANAGER_PATH,
        Some(MANAGER),
        "Subscribe",
        &(),
    )
    .await
    .map_err(failed("Subscribe"))?;
    refresh(&conn, &systemd, config, table).await?;
    *listed = true;
    let mut timesync = name_owner(&conn, TIMESYNC)
        .await
        .map_err(failed("asking for systemd-timesyncd's bus name"))?;
    read_timesync(&conn, timesync.as_deref(), table).await;

    let from = |msg: &Message, owner: &str| {
        msg.header()
            .sender()
            .is_some_and(|sender| sender.as_str() == owner)
    };
    loop {
        tokio::select! {
            () = conn.closed() => return Err(End::Failed("the system bus closed the connection".to_owned())),
            msg = unit_changes.next() => {
                if let Some(msg) = next(msg, table)? && from(&msg, &systemd) {
                    on_unit_changed(&conn, &systemd, &msg, table).await;
                }
            }
            msg = manager.next() => {
                if let Some(msg) = next(msg, table)? && from(&msg, &systemd) {
                    on_manager_signal(&conn, &systemd, config, &msg, table).await?;
                }
            }
            msg = systemd_owners.next() => {
                if next(msg, table)?.is_some() {
                    return Err(End::Restarted);
                }
            }
            msg = timesync_owners.next() => {
                if let Some(msg) = next(msg, table)? {
                    match msg.body().deserialize::<(String, String, String)>() {
                        Ok((_, _, new)) => {
                            timesync = (!new.is_empty()).then_some(new);
                            read_timesync(&conn, timesync.as_deref(), table).await;
                        }
                        Err(e) => lock(table).problem(format!("NameOwnerChanged: {e}")),
                    }
                }
            }
            msg = timesync_changes.next() => {
                // ServerName and ServerAddress announce no change of their
                // own; timesyncd announces each NTP reply (NTPMessage).
                if let Some(msg) = next(msg, table)?
                    && let Some(owner) = timesync.as_deref()
                    && from(&msg, owner)
                {
                    read_timesync(&conn, Some(owner), table).await;
                }
            }
        }
    }
}

/// A stream's next message; a malformed one is counted and skipped, the
/// end of the stream or of the connection ends the session.
fn next(item: Option<zbus::Result<Message>>, table: &Mutex<Table>) -> Result<Option<Message>, End> {
    match item {
        None => Err(End::Failed("the system bus connection closed".to_owned())),
        // The connection is gone: every stream says so, once is enough.
        Some(Err(zbus::Error::InputOutput(e))) => {
            Err(End::Failed(format!("reading from the system bus: {e}")))
        }
        Some(Err(e)) => {
            lock(table).problem(format!("a message from the bus: {e}"));
            Ok(None)
        }
        Some(Ok(msg)) => Ok(Some(msg)),
    }
}

/// The unique name owning `name`, if any (asking never starts a service).
async fn name_owner(conn: &Connection, name: &str) -> zbus::Result<Option<String>> {
    match conn
        .call_method(Some(DBUS), DBUS_PATH, Some(DBUS), "GetNameOwner", &(name,))
        .await
    {
        Ok(reply) => Ok(Some(reply.body().deserialize::<String>()?)),
        Err(zbus::Error::FDO(e)) if matches!(*e, zbus::fdo::Error::NameHasNoOwner(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One property of the object at `path` of `destination`.
async fn get(
    conn: &Connection,
    destination: &str,
    path: &str,
    interface: &str,
    property: &str,
) -> Result<OwnedVariant, String> {
    let reply = conn
        .call_method(
            Some(destination),
            path,
            Some(PROPERTIES),
            "Get",
            &(interface, property),
        )
        .await
        .map_err(|e| format!("{property}: {e}"))?;
    reply
        .body()
        .deserialize::<OwnedVariant>()
        .map_err(|e| format!("{property}: {e}"))
}

/// The type of the unit `name` if it is reported; a name systemd would
/// refuse is counted.
fn wanted(config: &SystemdConfig, name: &str, table: &Mutex<Table>) -> Option<Kind> {
    if let Some(why) = invalid_name(name) {
        lock(table).problem(format!("unit name {name:?} {why}: skipped"));
        return None;
    }
    let kind = Kind::of(name)?;
    (config.include.is_match(name) && !config.exclude.is_match(name)).then_some(kind)
}

/// A sub-state as a label value: what systemd sends (a short word), or
/// an error.
fn sub_state(text: String) -> Result<String, String> {
    if text.is_empty()
        || text.len() > MAX_LABEL
        || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("sub-state {text:?} is not a systemd sub-state"));
    }
    Ok(text)
}

fn active_state(text: &str) -> Result<ActiveState, String> {
    ActiveState::parse(text).ok_or_else(|| format!("unknown active state {text:?}"))
}

/// Lists every unit and replaces the table's with them.
async fn refresh(
    conn: &Connection,
    systemd: &str,
    config: &SystemdConfig,
    table: &Mutex<Table>,
) -> Result<(), End> {
    let patterns: Vec<String> = Kind::ALL
        .iter()
        .map(|k| format!("*.{}", k.label()))
        .collect();
    let reply = conn
        .call_method(
            Some(systemd),
            MANAGER_PATH,
            Some(MANAGER),
            "ListUnitsByPatterns",
            &(Vec::<String>::new(), patterns),
        )
        .await
        .map_err(failed("ListUnitsByPatterns"))?;
    let listed: Vec<ListedUnit> = reply
        .body()
        .deserialize()
        .map_err(failed("ListUnitsByPatterns"))?;
    let mut units = HashMap::new();
    for (name, _, _, active, sub, _, path, ..) in listed {
        let Some(kind) = wanted(config, &name, table) else {
            continue;
        };
        let states = active_state(&active).and_then(|active| Ok((active, sub_state(sub)?)));
        let read = match states {
            Ok((active, sub)) => read_details(conn, systemd, path.as_str(), kind).await.map(
                |(changed_us, restarts)| Unit {
                    name: name.clone(),
                    kind,
                    active,
                    sub,
                    changed_us,
                    restarts,
                },
            ),
            Err(e) => Err(e),
        };
        match read {
            Ok(unit) => {
                units.insert(path.to_string(), unit);
            }
            // Gone between the listing and the reading, most likely.
            Err(e) => lock(table).problem(format!("unit {name}: {e}: skipped")),
        }
    }
    let mut t = lock(table);
    // Units unloaded meanwhile (a reload) go as `UnitRemoved` would.
    let unloaded: Vec<String> = t
        .units
        .keys()
        .filter(|path| !units.contains_key(*path))
        .cloned()
        .collect();
    for path in unloaded {
        t.remove(&path);
    }
    for (path, unit) in units {
        t.insert(path, unit);
    }
    Ok(())
}

/// What the listing does not tell: `StateChangeTimestamp`, and
/// `NRestarts` for a service.
async fn read_details(
    conn: &Connection,
    systemd: &str,
    path: &str,
    kind: Kind,
) -> Result<(u64, Option<u32>), String> {
    let changed = get(conn, systemd, path, UNIT, "StateChangeTimestamp").await?;
    let changed_us = u64::try_from(changed).map_err(|e| format!("StateChangeTimestamp: {e}"))?;
    let restarts = match kind {
        Kind::Service => {
            let n = get(conn, systemd, path, SERVICE, "NRestarts").await?;
            Some(u32::try_from(n).map_err(|e| format!("NRestarts: {e}"))?)
        }
        _ => None,
    };
    Ok((changed_us, restarts))
}

/// Everything of a unit that `UnitNew` announced.
async fn read_unit(
    conn: &Connection,
    systemd: &str,
    path: &str,
    name: &str,
    kind: Kind,
) -> Result<Unit, String> {
    let string =
        |v: OwnedVariant, what: &str| String::try_from(v).map_err(|e| format!("{what}: {e}"));
    let active = string(
        get(conn, systemd, path, UNIT, "ActiveState").await?,
        "ActiveState",
    )?;
    let sub = string(
        get(conn, systemd, path, UNIT, "SubState").await?,
        "SubState",
    )?;
    let (changed_us, restarts) = read_details(conn, systemd, path, kind).await?;
    Ok(Unit {
        name: name.to_owned(),
        kind,
        active: active_state(&active)?,
        sub: sub_state(sub)?,
        changed_us,
        restarts,
    })
}

/// `PropertiesChanged` of a unit: the properties reported are taken from
/// the signal, or read again when it only says they changed.
async fn on_unit_changed(conn: &Connection, systemd: &str, msg: &Message, table: &Mutex<Table>) {
    let header = msg.header();
    let Some(path) = header.path() else {
        return;
    };
    let path = path.as_str();
    let (interface, changed, invalidated) =
        match msg
            .body()
            .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
        {
            Ok(body) => body,
            Err(e) => {
                lock(table).problem(format!("PropertiesChanged of {path}: {e}"));
                return;
            }
        };
    let taken: &[&str] = match interface.as_str() {
        UNIT => &UNIT_PROPERTIES,
        SERVICE => &SERVICE_PROPERTIES,
        _ => return,
    };
    if !lock(table).units.contains_key(path) {
        return;
    }
    let mut values: Vec<(String, OwnedVariant)> = changed
        .into_iter()
        .filter(|(name, _)| taken.contains(&name.as_str()))
        .collect();
    for name in invalidated {
        if taken.contains(&name.as_str()) {
            match get(conn, systemd, path, &interface, &name).await {
                Ok(value) => values.push((name, value)),
                Err(e) => lock(table).problem(format!("{path}: {e}")),
            }
        }
    }
    let mut t = lock(table);
    let Some(unit) = t.units.get_mut(path) else {
        return;
    };
    let mut problems = Vec::new();
    for (name, value) in values {
        if let Err(e) = apply(unit, &name, value) {
            problems.push(format!("unit {}: {e}", unit.name));
        }
    }
    for problem in problems {
        t.problem(problem);
    }
}

/// Sets one property of `unit`; a value of the wrong type or meaning is
/// an error and leaves the unit as it was.
fn apply(unit: &mut Unit, name: &str, value: OwnedVariant) -> Result<(), String> {
    let wrong = |e: zbus::Error| format!("{name}: {e}");
    match name {
        "ActiveState" => unit.active = active_state(&String::try_from(value).map_err(wrong)?)?,
        "SubState" => unit.sub = sub_state(String::try_from(value).map_err(wrong)?)?,
        "StateChangeTimestamp" => unit.changed_us = u64::try_from(value).map_err(wrong)?,
        "NRestarts" => unit.restarts = Some(u32::try_from(value).map_err(wrong)?),
        _ => {}
    }
    Ok(())
}

/// `UnitNew`, `UnitRemoved` and `Reloading` from systemd's manager.
async fn on_manager_signal(
    conn: &Connection,
    systemd: &str,
    config: &SystemdConfig,
    msg: &Message,
    table: &Mutex<Table>,
) -> Result<(), End> {
    let header = msg.header();
    let Some(member) = header.member() else {
        return Ok(());
    };
    match member.as_str() {
        "UnitNew" => {
            let (name, path) = match msg.body().deserialize::<(String, OwnedObjectPath)>() {
                Ok(body) => body,
                Err(e) => {
                    lock(table).problem(format!("UnitNew: {e}"));
                    return Ok(());
                }
            };
            if lock(table).units.contains_key(path.as_str()) {
                return Ok(());
            }
            let Some(kind) = wanted(config, &name, table) else {
                return Ok(());
            };
            match read_unit(conn, systemd, path.as_str(), &name, kind).await {
                Ok(unit) => lock(table).insert(path.to_string(), unit),
                Err(e) => lock(table).problem(format!("unit {name}: {e}: skipped")),
            }
        }
        "UnitRemoved" => match msg.body().deserialize::<(String, OwnedObjectPath)>() {
            Ok((_, path)) => lock(table).remove(path.as_str()),
            Err(e) => lock(table).problem(format!("UnitRemoved: {e}")),
        },
        "Reloading" => match msg.body().deserialize::<bool>() {
            // Units may have come and gone with the reload.
            Ok(false) => refresh(conn, systemd, config, table).await?,
            Ok(true) => {}
            Err(e) => lock(table).problem(format!("Reloading: {e}")),
        },
        _ => {}
    }
    Ok(())
}

/// Reads the server systemd-timesyncd uses, if it runs (`owner`).
async fn read_timesync(conn: &Connection, owner: Option<&str>, table: &Mutex<Table>) {
    let sync = match owner {
        None => Ok(None),
        Some(owner) => timesync(conn, owner).await,
    };
    let mut t = lock(table);
    match sync {
        Ok(sync) => t.timesync = sync,
        Err(e) => {
            t.timesync = None;
            t.problem(format!("systemd-timesyncd: {e}"));
        }
    }
}

async fn timesync(conn: &Connection, owner: &str) -> Result<Option<TimeSync>, String> {
    let property = |name: &'static str| get(conn, owner, TIMESYNC_PATH, TIMESYNC_MANAGER, name);
    let server =
        String::try_from(property("ServerName").await?).map_err(|e| format!("ServerName: {e}"))?;
    if server.is_empty() {
        return Ok(None);
    }
    if server.len() > MAX_LABEL || server.chars().any(char::is_control) {
        return Err(format!("ServerName {server:?} is not a host name"));
    }
    let address = property("ServerAddress").await?;
    let (family, bytes) = zbus::Structure::try_from(address)
        .and_then(<(i32, Vec<u8>)>::try_from)
        .map_err(|e| format!("ServerAddress: {e}"))?;
    let address = match (family, bytes.len()) {
        (_, 0) => String::new(),
        (AF_INET, 4) => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        (AF_INET6, 16) => {
            let mut octets = [0; 16];
            octets.copy_from_slice(&bytes);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => {
            return Err(format!(
                "ServerAddress: family {family} with {} bytes",
                bytes.len()
            ));
        }
    };
    Ok(Some(TimeSync { server, address }))
}

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
