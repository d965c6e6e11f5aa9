//! The host registry: every host that ever connected, its facts, boot id,
//! last-seen time and open streams. Persisted in sled so a restarted
//! collector still lists hosts (as down until they reconnect).
//!
//! Last seen is when a batch of the host was last stored (before its
//! first, when it first connected): never a stream opening or closing, so
//! a dead connection closing late, or an agent reconnecting to a collector
//! that cannot store, does not make a silent host look alive.
//!
//! Memory is the registry; the tree follows it. A change of hello, facts,
//! boot id, goodbye or certificate expiry is written at once; last seen,
//! which moves with every stored batch, is written at most once per
//! [`SEEN_WRITE_INTERVAL_MS`] per host (with any other change, or when it
//! is older than that in the tree), and every newer one is written at a
//! clean stop and before a backup ([`HostRegistry::write_seen`]). The
//! persisted last seen is read only when the registry opens: after a
//! clean restart it is memory's; after a crash it may be up to the
//! interval older, which pages no one (a `host_down` rule watches a host
//! not heard from since the collector started from the start, plus a
//! third of its timeout) and at worst lists a host down a little earlier
//! until its first batch after the restart.
//!
//! After a failed write (sled refuses writes until its database is
//! reopened) records are kept in memory only, and written back when the
//! collector hands over the reopened database ([`HostRegistry::attach`]).

use crate::state::{Records, Writes};
use hostwatch_proto::v1::{Hello, HostFacts, HostStatus};
use hostwatch_stdx::now_ms;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How much older than memory's a host's persisted last seen may get
/// while its batches are stored. Only a crash lets the difference show
/// (a clean stop writes memory's), and then only in the host list before
/// the host's first batch after the restart: host-down rules never page
/// on the persisted value (see the module doc). A minute writes one
/// record in six at the agents' default 10 s interval.
pub(crate) const SEEN_WRITE_INTERVAL_MS: i64 = 60_000;

#[derive(Debug, Clone, Default)]
struct HostEntry {
    facts: Option<HostFacts>,
    boot_id: String,
    /// When a batch of the host was last stored (or it first connected).
    last_seen_ms: i64,
    /// The last seen of the record last written to the tree.
    written_seen_ms: i64,
    open_streams: u32,
    /// The agent said goodbye before its last stream closed.
    clean_shutdown: bool,
    /// When the certificate of its latest stream expires (ms); 0 if unknown.
    certificate_expires_ms: i64,
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub(crate) struct HostRegistry {
    /// Locked after `hosts`, where both are.
    records: Records,
    hosts: Arc<Mutex<HashMap<String, HostEntry>>>,
    down_after_ms: i64,
}

impl HostRegistry {
    pub(crate) fn open(db: &sled::Db, down_after_ms: i64) -> Result<Self, sled::Error> {
        let tree = db.open_tree("hosts")?;
        let mut hosts = HashMap::new();
        for entry in tree.iter() {
            let (key, value) = entry?;
            let Ok(status) = HostStatus::decode(&*value) else {
                tracing::warn!(key = ?key, "skipping undecodable host record");
                continue;
            };
            hosts.insert(
                status.host_id.clone(),
                HostEntry {
                    // A record stored before facts were bounded is bounded now.
                    facts: status.facts.map(|f| bounded_facts(&status.host_id, f)),
                    boot_id: status.boot_id,
                    last_seen_ms: status.last_seen_ms,
                    written_seen_ms: status.last_seen_ms,
                    open_streams: 0,
                    clean_shutdown: status.clean_shutdown,
                    certificate_expires_ms: status.certificate_expires_ms,
                },
            );
        }
        Ok(HostRegistry {
            records: Records::new(tree),
            hosts: Arc::new(Mutex::new(hosts)),
            down_after_ms,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HostEntry>> {
        // The map stays consistent even if a holder panicked: every update
        // is a plain field assignment.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An agent stream opened with a Hello; returns the boot id held before
    /// (empty if none), so a reboot can be told from a reconnect.
    pub(crate) fn connected(&self, host: &str, facts: Option<HostFacts>, boot_id: &str) -> String {
        let mut hosts = self.lock();
        // A new host's silence counts from its first connection.
        let entry = hosts.entry(host.to_owned()).or_insert_with(|| HostEntry {
            last_seen_ms: now_ms(),
            ..HostEntry::default()
        });
        let facts = facts.map(|f| bounded_facts(host, f));
        entry.facts = facts.or(entry.facts.take());
        let previous = std::mem::replace(&mut entry.boot_id, boot_id.to_owned());
        entry.open_streams += 1;
        entry.clean_shutdown = false;
        self.persist(host, entry);
        previous
    }

    /// The certificate of `host`'s newest stream expires at `expires_ms`.
    pub(crate) fn certificate(&self, host: &str, expires_ms: i64) {
        if let Some(entry) = self.lock().get_mut(host)
            && entry.certificate_expires_ms != expires_ms
        {
            entry.certificate_expires_ms = expires_ms;
            self.persist(host, entry);
        }
    }

    /// A batch of `host` was stored.
    pub(crate) fn seen(&self, host: &str) {
        self.seen_at(host, now_ms());
    }

    /// A batch of `host` was stored at `now_ms`; written to the tree only
    /// if the tree's last seen is [`SEEN_WRITE_INTERVAL_MS`] old (or ahead,
    /// after the clock stepped back).
    fn seen_at(&self, host: &str, now_ms: i64) {
        if let Some(entry) = self.lock().get_mut(host) {
            entry.last_seen_ms = now_ms;
            let written = entry.written_seen_ms;
            if now_ms < written || now_ms - written >= SEEN_WRITE_INTERVAL_MS {
                self.persist(host, entry);
            }
        }
    }

    /// Writes the record of every host whose last seen is newer in memory
    /// than in the tree: at a clean stop, so a restart loses nothing, and
    /// before a backup copies the tree.
    pub(crate) fn write_seen(&self) {
        let mut hosts = self.lock();
        for (host, entry) in hosts.iter_mut() {
            if entry.last_seen_ms != entry.written_seen_ms {
                self.persist(host, entry);
            }
        }
    }

    /// The agent announced a clean shutdown.
    pub(crate) fn goodbye(&self, host: &str) {
        if let Some(entry) = self.lock().get_mut(host) {
            entry.clean_shutdown = true;
            self.persist(host, entry);
        }
    }

    /// An agent stream closed; the host was not seen by it.
    pub(crate) fn disconnected(&self, host: &str) {
        if let Some(entry) = self.lock().get_mut(host) {
            entry.open_streams = entry.open_streams.saturating_sub(1);
        }
    }

    /// Hosts with an open stream, and the streams open.
    pub(crate) fn streams(&self) -> (u64, u64) {
        let hosts = self.lock();
        hosts
            .values()
            .filter(|e| e.open_streams > 0)
            .fold((0, 0), |(hosts, streams), e| {
                (hosts + 1, streams + u64::from(e.open_streams))
            })
    }

    /// `host_down_after`.
    pub(crate) fn down_after_ms(&self) -> u64 {
        u64::try_from(self.down_after_ms).unwrap_or(0)
    }

    /// Up to `limit` hosts whose ids sort after `after` (all hosts when
    /// empty), sorted by id, with their status at `now_ms`; and whether
    /// more hosts follow.
    pub(crate) fn page(&self, now_ms: i64, after: &str, limit: usize) -> (Vec<HostStatus>, bool) {
        let hosts = self.lock();
        let mut ids: Vec<&String> = hosts.keys().filter(|id| id.as_str() > after).collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        let page = ids
            .into_iter()
            .take(limit)
            .filter_map(|id| hosts.get(id).map(|entry| self.status(id, entry, now_ms)))
            .collect();
        (page, more)
    }

    /// The status of `host` at `now_ms`, if it ever connected.
    pub(crate) fn get(&self, host: &str, now_ms: i64) -> Option<HostStatus> {
        let hosts = self.lock();
        hosts
            .get(host)
            .map(|entry| self.status(host, entry, now_ms))
    }

    /// Every host's liveness, for host-down alerts.
    pub(crate) fn liveness(&self) -> Vec<hostwatch_alerting::HostLiveness> {
        self.lock()
            .iter()
            .map(|(id, entry)| hostwatch_alerting::HostLiveness {
                host: id.clone(),
                last_seen_ms: entry.last_seen_ms,
                clean_shutdown: entry.clean_shutdown,
                // The caller knows revocations (`Shared::liveness`).
                revoked: false,
            })
            .collect()
    }

    fn status(&self, id: &str, entry: &HostEntry, now_ms: i64) -> HostStatus {
        HostStatus {
            host_id: id.to_owned(),
            // An open stream alone does not make a host up: a hung agent
            // keeps its connection but sends nothing.
            up: now_ms - entry.last_seen_ms <= self.down_after_ms,
            last_seen_ms: entry.last_seen_ms,
            connected: entry.open_streams > 0,
            boot_id: entry.boot_id.clone(),
            facts: entry.facts.clone(),
            clean_shutdown: entry.clean_shutdown,
            certificate_expires_ms: entry.certificate_expires_ms,
            // The enrollment store knows revocations (`reads`).
            revoked_ms: 0,
        }
    }

    /// Why host records cannot be written, if so: a write failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.records.failure()
    }

    /// Lets go of the tree, so that the database can be reopened; records
    /// are kept in memory only until [`HostRegistry::attach`].
    pub(crate) fn detach(&self) {
        self.records.detach();
    }

    /// Takes the tree of the reopened database `db` and writes every host
    /// record from memory into it.
    pub(crate) fn attach(&self, db: &sled::Db) -> Result<(), sled::Error> {
        let tree = db.open_tree("hosts")?;
        let mut hosts = self.lock();
        for (host, entry) in hosts.iter() {
            tree.insert(host.as_bytes(), Self::record(host, entry).encode_to_vec())?;
        }
        tree.flush()?;
        for entry in hosts.values_mut() {
            entry.written_seen_ms = entry.last_seen_ms;
        }
        *self.records.lock() = Writes::Writable(tree);
        Ok(())
    }

    fn record(host: &str, entry: &HostEntry) -> HostStatus {
        HostStatus {
            host_id: host.to_owned(),
            last_seen_ms: entry.last_seen_ms,
            boot_id: entry.boot_id.clone(),
            facts: entry.facts.clone(),
            clean_shutdown: entry.clean_shutdown,
            certificate_expires_ms: entry.certificate_expires_ms,
            ..HostStatus::default()
        }
    }

    fn persist(&self, host: &str, entry: &mut HostEntry) {
        let mut records = self.records.lock();
        let Writes::Writable(tree) = &*records else {
            // `attach` writes every record back.
            return;
        };
        let record = Self::record(host, entry).encode_to_vec();
        // Durable with the next store flush; losing a last-seen update in a
        // crash only makes the host look down a little earlier. A failure
        // is logged once, by the collector's state watch.
        match tree.insert(host.as_bytes(), record) {
            Ok(_) => entry.written_seen_ms = entry.last_seen_ms,
            Err(e) => *records = Writes::Failed(format!("a write failed ({e})")),
        }
    }
}

/// Most bytes of each text fact and of the boot id. Facts are shown to
/// operators, never parsed: real ones (a hostname, a CPU model, a kernel
/// version) are far shorter, and the bound keeps a page of `ListHosts`
/// well inside a client's receive limit.
pub(crate) const MAX_FACT_BYTES: usize = 256;
/// Appended to a fact cut at [`MAX_FACT_BYTES`].
const TRUNCATED: &str = "…[truncated]";

/// Refuses a Hello whose boot id is too long to be one. Unlike the facts,
/// the boot id is compared (a changed one is a reboot) and goes into
/// alerts, so it is refused rather than cut.
pub(crate) fn check_hello(hello: &Hello) -> Result<(), tonic::Status> {
    if hello.boot_id.len() > MAX_FACT_BYTES {
        return Err(tonic::Status::invalid_argument(format!(
            "Hello.boot_id has {} bytes, more than the limit of {MAX_FACT_BYTES}",
            hello.boot_id.len()
        )));
    }
    Ok(())
}

/// `facts` with every text fact longer than [`MAX_FACT_BYTES`] cut to fit,
/// marked [`TRUNCATED`], and logged. Cut rather than refused: a Hello
/// refused with INVALID_ARGUMENT stops the agent for good, and an odd
/// hostname must not leave a host unmonitored.
fn bounded_facts(host: &str, mut facts: HostFacts) -> HostFacts {
    let HostFacts {
        hostname,
        os_name,
        os_version,
        kernel_version,
        architecture,
        cpu_model,
        agent_version,
        ..
    } = &mut facts;
    for (name, value) in [
        ("hostname", hostname),
        ("os_name", os_name),
        ("os_version", os_version),
        ("kernel_version", kernel_version),
        ("architecture", architecture),
        ("cpu_model", cpu_model),
        ("agent_version", agent_version),
    ] {
        if value.len() > MAX_FACT_BYTES {
            tracing::warn!(
                host.id = host,
                fact = name,
                bytes = value.len(),
                limit = MAX_FACT_BYTES,
                "host fact too long; truncated"
            );
            let mut cut = MAX_FACT_BYTES - TRUNCATED.len();
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push_str(TRUNCATED);
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_go_down_after_the_timeout_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        assert_eq!(registry.connected("web1", None, "boot-a"), "");
        registry.certificate("web1", 1_234_000);
        // Unknown hosts are not recorded by their certificate alone.
        registry.certificate("web2", 1_234_000);
        let now = now_ms();
        let listed = registry.page(now, "", 10).0;
        assert!(listed[0].up && listed[0].connected);
        assert_eq!(registry.streams(), (1, 1));
        registry.connected("web1", None, "boot-a");
        assert_eq!(registry.streams(), (1, 2));
        registry.disconnected("web1");
        registry.disconnected("web1");
        assert_eq!(registry.streams(), (0, 0));
        let later = registry.page(now + 5_000, "", 10).0;
        assert!(!later[0].up && !later[0].connected);
        drop(registry);
        let reopened = HostRegistry::open(&db, 1_000).unwrap();
        let listed = reopened.page(now, "", 10).0;
        assert_eq!(listed[0].host_id, "web1");
        assert_eq!(listed[0].boot_id, "boot-a");
        assert_eq!(listed[0].certificate_expires_ms, 1_234_000);
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].connected);
        assert_eq!(reopened.connected("web1", None, "boot-b"), "boot-a");
        assert!(reopened.page(now_ms(), "", 10).0[0].connected);
        reopened.goodbye("web1");
        let live = reopened.liveness();
        assert!(live[0].clean_shutdown);
        // A new stream is no longer a planned stop.
        reopened.connected("web1", None, "boot-b");
        assert!(!reopened.liveness()[0].clean_shutdown);
    }

    #[test]
    fn last_seen_moves_with_stored_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        let last_seen = |registry: &HostRegistry| registry.liveness()[0].last_seen_ms;
        let tick = |after: i64| {
            while now_ms() <= after {
                std::thread::yield_now();
            }
        };
        registry.connected("web1", None, "boot-a");
        let first = last_seen(&registry);
        tick(first);
        // A dead stream closing late, or a reconnection to a collector
        // that stores nothing, is no sign of life.
        registry.disconnected("web1");
        registry.connected("web1", None, "boot-a");
        registry.goodbye("web1");
        assert_eq!(last_seen(&registry), first);
        registry.seen("web1");
        let stored = last_seen(&registry);
        assert!(stored > first);
        tick(stored);
        registry.disconnected("web1");
        // The clean stop's write.
        registry.write_seen();
        drop(registry);
        let reopened = HostRegistry::open(&db, 1_000).unwrap();
        assert_eq!(last_seen(&reopened), stored);
    }

    /// The last seen of `host`'s record in the tree.
    fn written_seen(db: &sled::Db, host: &str) -> i64 {
        let value = db.open_tree("hosts").unwrap().get(host).unwrap().unwrap();
        HostStatus::decode(&*value).unwrap().last_seen_ms
    }

    #[test]
    fn last_seen_is_written_once_per_interval_and_at_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        let interval = SEEN_WRITE_INTERVAL_MS;
        registry.connected("web1", None, "boot-a");
        let t0 = registry.liveness()[0].last_seen_ms;
        assert_eq!(written_seen(&db, "web1"), t0);
        // Within the interval: memory moves, the tree does not.
        registry.seen_at("web1", t0 + 10_000);
        registry.seen_at("web1", t0 + interval - 1);
        assert_eq!(registry.liveness()[0].last_seen_ms, t0 + interval - 1);
        assert!(registry.get("web1", t0 + interval).unwrap().up);
        assert_eq!(written_seen(&db, "web1"), t0);
        // An interval after the last write, it is written.
        registry.seen_at("web1", t0 + interval);
        assert_eq!(written_seen(&db, "web1"), t0 + interval);
        registry.seen_at("web1", t0 + interval + 1_000);
        assert_eq!(written_seen(&db, "web1"), t0 + interval);
        // The clock stepped back: the tree is not left ahead of memory.
        registry.seen_at("web1", t0 + 1_000);
        assert_eq!(written_seen(&db, "web1"), t0 + 1_000);

        // The clean stop writes every newer last seen, and only those.
        registry.connected("web2", None, "boot-b");
        let web2 = written_seen(&db, "web2");
        registry.seen_at("web1", t0 + 2_000);
        registry.write_seen();
        assert_eq!(written_seen(&db, "web1"), t0 + 2_000);
        assert_eq!(written_seen(&db, "web2"), web2);
        drop(registry);
        let reopened = HostRegistry::open(&db, 1_000).unwrap();
        let seen = |host: &str| reopened.get(host, 0).unwrap().last_seen_ms;
        assert_eq!(seen("web1"), t0 + 2_000);
        // What was read at open is what the tree holds: not written again.
        reopened.seen_at("web1", t0 + 3_000);
        assert_eq!(written_seen(&db, "web1"), t0 + 2_000);
    }

    #[test]
    fn other_changes_are_written_at_once_with_the_newest_last_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        let record = |host: &str| {
            let value = db.open_tree("hosts").unwrap().get(host).unwrap().unwrap();
            HostStatus::decode(&*value).unwrap()
        };
        registry.connected("web1", None, "boot-a");
        let t0 = registry.liveness()[0].last_seen_ms;
        registry.seen_at("web1", t0 + 1_000);
        registry.goodbye("web1");
        assert!(record("web1").clean_shutdown);
        assert_eq!(record("web1").last_seen_ms, t0 + 1_000);
        registry.seen_at("web1", t0 + 2_000);
        registry.certificate("web1", 9_000);
        assert_eq!(record("web1").certificate_expires_ms, 9_000);
        assert_eq!(record("web1").last_seen_ms, t0 + 2_000);
        registry.seen_at("web1", t0 + 3_000);
        let facts = HostFacts {
            hostname: "web1.example".to_owned(),
            ..HostFacts::default()
        };
        assert_eq!(registry.connected("web1", Some(facts), "boot-b"), "boot-a");
        let written = record("web1");
        assert_eq!(written.boot_id, "boot-b");
        assert_eq!(written.facts.unwrap().hostname, "web1.example");
        assert!(!written.clean_shutdown);
        assert_eq!(written.last_seen_ms, t0 + 3_000);
        // The interval counts from that write.
        registry.seen_at("web1", t0 + 3_000 + SEEN_WRITE_INTERVAL_MS - 1);
        assert_eq!(record("web1").last_seen_ms, t0 + 3_000);
    }

    #[test]
    fn pages_follow_each_other_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        for host in ["c", "a", "e", "b", "d"] {
            registry.connected(host, None, "");
        }
        let ids = |page: Vec<HostStatus>| page.into_iter().map(|h| h.host_id).collect::<Vec<_>>();
        let (first, more) = registry.page(now_ms(), "", 2);
        assert_eq!(
            (ids(first), more),
            (vec!["a".to_owned(), "b".to_owned()], true)
        );
        let (second, more) = registry.page(now_ms(), "b", 2);
        assert_eq!(
            (ids(second), more),
            (vec!["c".to_owned(), "d".to_owned()], true)
        );
        let (last, more) = registry.page(now_ms(), "d", 2);
        assert_eq!((ids(last), more), (vec!["e".to_owned()], false));
    }

    #[test]
    fn long_facts_are_truncated_with_a_marker_and_long_boot_ids_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        let facts = HostFacts {
            hostname: "h".repeat(12 << 20),
            // A multi-byte character across the cut.
            cpu_model: "é".repeat(200),
            kernel_version: "6.1.0".to_owned(),
            ..HostFacts::default()
        };
        registry.connected("web1", Some(facts), "boot");
        let check = |registry: &HostRegistry| {
            let stored = registry.page(now_ms(), "", 1).0.remove(0).facts.unwrap();
            assert!(stored.hostname.len() <= MAX_FACT_BYTES);
            assert!(stored.hostname.starts_with("hhh") && stored.hostname.ends_with(TRUNCATED));
            assert!(stored.cpu_model.len() <= MAX_FACT_BYTES);
            assert!(stored.cpu_model.ends_with(TRUNCATED));
            assert_eq!(stored.kernel_version, "6.1.0");
        };
        check(&registry);
        drop(registry);
        check(&HostRegistry::open(&db, 1_000).unwrap());

        let mut hello = Hello {
            boot_id: "b".repeat(MAX_FACT_BYTES),
            ..Hello::default()
        };
        assert!(check_hello(&hello).is_ok());
        hello.boot_id.push('b');
        let refused = check_hello(&hello).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("boot_id") && refused.message().contains("256"));
    }

    #[test]
    fn records_missed_while_detached_are_written_back_on_attach() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        registry.connected("web1", None, "boot-a");
        registry.detach();
        drop(db);
        assert!(registry.failure().is_some());
        // Memory goes on while nothing can be written.
        registry.connected("web2", None, "boot-b");
        registry.goodbye("web1");
        let t0 = registry.get("web1", 0).unwrap().last_seen_ms;
        let seen = t0 + 2 * SEEN_WRITE_INTERVAL_MS;
        registry.seen_at("web1", seen);
        registry.write_seen();
        // Every handle was let go: the database opens again in-process.
        let db = crate::state::reopen_dropped(dir.path());
        registry.attach(&db).unwrap();
        assert_eq!(registry.failure(), None);
        assert_eq!(written_seen(&db, "web1"), seen);
        // The write-back counts as the last write.
        registry.seen_at("web1", seen + 1_000);
        assert_eq!(written_seen(&db, "web1"), seen);
        registry.seen_at("web1", seen + SEEN_WRITE_INTERVAL_MS);
        assert_eq!(written_seen(&db, "web1"), seen + SEEN_WRITE_INTERVAL_MS);
        drop(registry);
        let reopened = HostRegistry::open(&db, 1_000).unwrap();
        let listed = reopened.page(now_ms(), "", usize::MAX).0;
        assert_eq!(listed.len(), 2);
        assert!(listed[0].clean_shutdown);
        assert_eq!(listed[0].last_seen_ms, seen + SEEN_WRITE_INTERVAL_MS);
        assert_eq!(listed[1].boot_id, "boot-b");
    }
}
