//! The agent's configuration file.

use hostwatch_pki::TlsFiles;
use hostwatch_pki::transport::Keepalive;
use hostwatch_runtime::config::{ConfigError, base_dir, resolve};
use regex_lite::Regex;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables with this prefix override keys of the file.
pub const ENV_PREFIX: &str = "HOSTWATCH_AGENT";

/// The kernel truncates process names (`comm`) to this many bytes.
pub const MAX_PROCESS_NAME: usize = 15;

/// `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `host:port` of the one collector: the same as `collectors` with one
    /// entry. Read into [`AgentConfig::collectors`].
    #[serde(default)]
    collector: Option<String>,
    /// The collectors, in order of preference: the agent streams to the
    /// first that answers. Each entry is `"host:port"` or
    /// `{ address = "host:port", server_name = "..." }`.
    #[serde(default, rename = "collectors")]
    collector_list: Option<Vec<CollectorEntry>>,
    /// Name every collector's certificate must carry, unless its entry
    /// names its own; default: the host part of each entry's address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The collectors to stream to, in order of preference, with the name
    /// each one's certificate must carry; never empty once loaded.
    #[serde(skip)]
    pub collectors: Vec<CollectorEntry>,
    /// Time between samples.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// What reads the host: `/proc` (Linux only, the default there) or
    /// the portable `sysinfo` crate (the default, and only choice, elsewhere).
    #[serde(default)]
    pub sampler: SamplerKind,
    /// Directory for the agent's state: the spool lives in `spool/` under it.
    pub state_dir: PathBuf,
    pub tls: TlsFiles,
    /// How often the `tls` files are read to see whether they changed (a
    /// renewed certificate, a new CA); a change reconnects the stream with
    /// them, as SIGHUP does. Zero: only on SIGHUP.
    #[serde(with = "humantime_serde", default = "default_tls_check_interval")]
    pub tls_check_interval: Duration,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub processes: ProcessesConfig,
    #[serde(default)]
    pub filesystems: FilesystemsConfig,
    #[serde(default)]
    pub disks: DisksConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    /// Loopback address of a plain-HTTP port serving the agent's own
    /// figures at `/metrics`, for a Prometheus on this host; off when
    /// empty or absent. Any other address is refused.
    #[serde(
        default,
        deserialize_with = "hostwatch_runtime::metrics::optional_loopback"
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub families: FamiliesConfig,
    #[serde(default)]
    pub cgroups: CgroupsConfig,
    #[serde(default)]
    pub systemd: SystemdConfig,
}

/// `sampler`: which code reads the host's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// The `/proc` and `/sys` readers of `sampler/` (Linux only).
    Proc,
    /// The `sysinfo` crate: the same metric names where it has the figure.
    Sysinfo,
}

impl Default for SamplerKind {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            SamplerKind::Proc
        } else {
            SamplerKind::Sysinfo
        }
    }
}

impl SamplerKind {
    /// Whether this system can run it: `proc` needs Linux's `/proc`.
    fn check(self, linux: bool) -> Result<(), String> {
        match self {
            SamplerKind::Proc if !linux => Err(format!(
                "sampler = \"proc\" reads Linux's /proc, which this system ({}) does not \
                 have: use sampler = \"sysinfo\"",
                std::env::consts::OS
            )),
            _ => Ok(()),
        }
    }
}

/// One collector the agent may stream to.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorEntry {
    /// `host:port`.
    pub address: String,
    /// Name its certificate must carry; default: the host part of `address`.
    pub server_name: Option<String>,
}

impl<'de> Deserialize<'de> for CollectorEntry {
    /// `"host:port"`, or a table with `address` and `server_name`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            address: String,
            #[serde(default)]
            server_name: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Address(String),
            Table(Table),
        }
        match Either::deserialize(d) {
            Ok(Either::Address(address)) => Ok(CollectorEntry {
                address,
                server_name: None,
            }),
            Ok(Either::Table(t)) => Ok(CollectorEntry {
                address: t.address,
                server_name: t.server_name,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "each entry of collectors must be \"host:port\" or \
                 { address = \"host:port\", server_name = \"name\" }",
            )),
        }
    }
}

/// Explicit bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes the spool may take on disk; beyond it the oldest batches are
    /// dropped and counted.
    pub spool_bytes: u64,
    /// Batches sent but not yet acknowledged.
    pub max_in_flight: usize,
    /// Largest message when replaying a backlog: spooled batches are
    /// coalesced up to this size, so a backlog drains in few round trips;
    /// also about the most bytes sent and not yet acknowledged.
    pub replay_batch_bytes: usize,
    /// Longest wait between reconnection attempts; the agent keeps it
    /// below a third of the collector's `host_down_after` (told in its
    /// Welcome), so a collector back from an outage hears from its agents
    /// before it pages them as down.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Longest wait for the connection (TCP and TLS), and then for the
    /// collector's Welcome on the stream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this long without hearing from the
    /// collector ...
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// ... and the connection is given up when its answer takes longer.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// With batches in flight, the connection is given up (and made
    /// again) when no acknowledgement came for this long: a collector
    /// that answers pings but stores nothing is not waited for forever.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// With several `collectors`: failed attempts in a row on one
    /// collector, without an acknowledged batch, after which the agent
    /// moves on to the next.
    pub failover_after: u32,
    /// With several `collectors`, while streaming to one that is not the
    /// first: how often a more preferred one is tried again. Kept below a
    /// third of that collector's `host_down_after` (from its Welcome), so a
    /// preferred collector back from an outage hears from its hosts before
    /// it would page them as down.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let keepalive = Keepalive::default();
        Limits {
            spool_bytes: 64 << 20,
            max_in_flight: 32,
            replay_batch_bytes: 64 << 10,
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: keepalive.interval,
            keepalive_timeout: keepalive.timeout,
            ack_timeout: Duration::from_secs(15),
            failover_after: 3,
            probe_interval: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The keepalive settings of the connection to the collector.
    pub fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: self.keepalive_interval,
            timeout: self.keepalive_timeout,
        }
    }
}

/// `[processes]`: the top-N snapshot and watched processes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessesConfig {
    /// Processes per snapshot: the union of the top N by CPU and by memory.
    /// 0 sends no snapshots.
    pub top: usize,
    /// Command lines longer than this are cut (at a character boundary).
    pub command_max_bytes: usize,
    /// Processes reported as series, so that "nginx is not running" can alert.
    pub watch: Vec<WatchRule>,
}

impl Default for ProcessesConfig {
    fn default() -> Self {
        ProcessesConfig {
            top: 10,
            command_max_bytes: 256,
            watch: Vec::new(),
        }
    }
}

/// One watched process: by exact process name, or by a pattern over the
/// command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRule {
    /// The `name` label of the series; without `pattern`, also the process
    /// name to match exactly (as in `ps -o comm`).
    pub name: String,
    /// A regular expression searched in the command line (arguments joined
    /// by spaces) instead of matching the name.
    #[serde(default, deserialize_with = "optional_regex")]
    pub pattern: Option<Pattern>,
}

/// `[filesystems]`: which mounts are reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemsConfig {
    /// File system types left out (pseudo and in-memory file systems).
    pub exclude_types: Vec<String>,
    /// Mount points left out: a regular expression over the whole path.
    #[serde(deserialize_with = "anchored_regex")]
    pub exclude_mountpoints: Pattern,
}

impl Default for FilesystemsConfig {
    fn default() -> Self {
        FilesystemsConfig {
            exclude_types: DEFAULT_EXCLUDED_FS_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            exclude_mountpoints: Pattern::anchored(DEFAULT_EXCLUDED_MOUNTPOINTS)
                .unwrap_or_else(|_| unreachable!("the default pattern is valid")),
        }
    }
}

/// File systems that hold no user data, or mirror another mount.
pub const DEFAULT_EXCLUDED_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "fuse.lxcfs",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Kernel and container-runtime mounts (as node_exporter's default).
pub const DEFAULT_EXCLUDED_MOUNTPOINTS: &str =
    "/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)(/.*)?";

/// `[disks]`: which block devices are reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisksConfig {
    /// Devices left out: a regular expression over the whole name.
    #[serde(deserialize_with = "anchored_regex")]
    pub exclude: Pattern,
}

/// Partitions (their disk is reported), RAM disks and loop devices.
pub const DEFAULT_EXCLUDED_DISKS: &str =
    "(z?ram|loop|fd|(h|s|v|xv)d[a-z]+|nvme\\d+n\\d+p|mmcblk\\d+p)\\d+";

impl Default for DisksConfig {
    fn default() -> Self {
        DisksConfig {
            exclude: Pattern::anchored(DEFAULT_EXCLUDED_DISKS)
                .unwrap_or_else(|_| unreachable!("the default pattern is valid")),
        }
    }
}

/// `[network]`: which interfaces are reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Interfaces left out: a regular expression over the whole name.
    #[serde(deserialize_with = "anchored_regex")]
    pub exclude: Pattern,
}

/// Loopback and the per-container or per-VM virtual interfaces that come
/// and go with their workloads.
pub const DEFAULT_EXCLUDED_INTERFACES: &str = "lo|veth.*|cali.*|tap.*|vnet\\d+|ifb\\d+";

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            exclude: Pattern::anchored(DEFAULT_EXCLUDED_INTERFACES)
                .unwrap_or_else(|_| unreachable!("the default pattern is valid")),
        }
    }
}

/// `[families]`: the metric families that can be turned off (all are on
/// by default).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FamiliesConfig {
    /// Families not sampled.
    pub disabled: Vec<Family>,
}

impl FamiliesConfig {
    pub fn enabled(&self, family: Family) -> bool {
        !self.disabled.contains(&family)
    }
}

/// A metric family `[families]` can turn off, by its name there (also its
/// `family` label on `hostwatch_agent_sample_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// /proc/net/snmp, /proc/net/netstat, /proc/net/snmp6.
    Tcp,
    /// Connections by state, over netlink sock_diag.
    Sockets,
    /// The kernel's clock synchronisation (adjtimex), and chronyd's
    /// source (its command port).
    Time,
    /// /proc/sys/fs/file-nr.
    FileDescriptors,
    /// /proc/sys/net/netfilter/nf_conntrack_{count,max}.
    Conntrack,
    /// /sys/class/net: state, speed, duplex, MTU.
    Links,
    /// /sys/class/hwmon and /sys/class/thermal.
    Temperature,
    /// Per-service resources from cgroup v2 (`[cgroups]`).
    Cgroups,
    /// systemd's units and systemd-timesyncd's server, over D-Bus.
    Systemd,
}

/// `[cgroups]`: per-service resources from cgroup v2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupsConfig {
    /// The cgroup v2 hierarchy (relative: to the configuration file).
    pub root: PathBuf,
    /// Directories under `root` whose services are reported, nested
    /// `.slice` directories included.
    pub slices: Vec<String>,
    /// Which units are services: a regular expression over the whole
    /// directory name.
    #[serde(deserialize_with = "anchored_regex")]
    pub units: Pattern,
    /// Services with series of their own, at most; the rest are summed
    /// as `unit="other"`.
    pub limit: usize,
    /// With more services than `limit`, how often they are ranked again.
    #[serde(with = "humantime_serde")]
    pub rank_interval: Duration,
}

/// The most `cgroups.limit` may be: each service has up to 11 series.
pub const MAX_CGROUPS_LIMIT: usize = 500;

impl Default for CgroupsConfig {
    fn default() -> Self {
        CgroupsConfig {
            root: PathBuf::from("/sys/fs/cgroup"),
            slices: vec!["system.slice".to_owned()],
            units: Pattern::anchored(".+\\.service")
                .unwrap_or_else(|_| unreachable!("the default pattern is valid")),
            limit: 50,
            rank_interval: Duration::from_secs(60),
        }
    }
}

impl CgroupsConfig {
    /// Checks what serde cannot; the message names the key.
    fn validate(&self) -> Result<(), String> {
        if self.root.as_os_str().is_empty() {
            return Err("cgroups.root must not be empty".to_owned());
        }
        if !(1..=MAX_CGROUPS_LIMIT).contains(&self.limit) {
            return Err(format!(
                "cgroups.limit must be between 1 and {MAX_CGROUPS_LIMIT}, not {}",
                self.limit
            ));
        }
        if self.rank_interval > Duration::from_secs(3600) {
            return Err("cgroups.rank_interval must be at most 1h".to_owned());
        }
        if self.slices.is_empty() {
            return Err(
                "cgroups.slices must list at least one slice (to turn the family off: \
                 [families] disabled = [\"cgroups\"])"
                    .to_owned(),
            );
        }
        for (i, slice) in self.slices.iter().enumerate() {
            let parts: Vec<&str> = slice.split('/').collect();
            if parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
            {
                return Err(format!(
                    "cgroups.slices[{i}] {slice:?} must be a path under cgroups.root, \
                     such as \"system.slice\" (no leading or trailing /, no . or ..)"
                ));
            }
            for (j, other) in self.slices.iter().enumerate().take(i) {
                let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
                if nested(slice, other) || nested(other, slice) {
                    return Err(format!(
                        "cgroups.slices[{i}] {slice:?} overlaps cgroups.slices[{j}] {other:?}: \
                         its services would be counted twice"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[systemd]`: which units the `systemd` family reports (services,
/// timers, mounts and sockets only, whatever the patterns say).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemdConfig {
    /// Units reported: a regular expression over the whole unit name.
    #[serde(deserialize_with = "anchored_regex")]
    pub include: Pattern,
    /// Units left out of those: a regular expression over the whole name.
    #[serde(deserialize_with = "anchored_regex")]
    pub exclude: Pattern,
}

/// Every service.
pub const DEFAULT_SYSTEMD_INCLUDE: &str = ".+\\.service";

impl Default for SystemdConfig {
    fn default() -> Self {
        let pattern = |source| {
            Pattern::anchored(source).unwrap_or_else(|_| unreachable!("the default is valid"))
        };
        SystemdConfig {
            include: pattern(DEFAULT_SYSTEMD_INCLUDE),
            // Anchored, the empty pattern matches no unit name.
            exclude: pattern(""),
        }
    }
}

/// A compiled regular expression that remembers its source text.
///
/// `regex_lite`'s: Rust's `regex` syntax without Unicode classes (`\p{..}`
/// is refused; `\d`, `\w`, `\s` and case folding are ASCII), enough for
/// paths, device, interface and unit names, in a small part of `regex`'s
/// code, which the agent's resident memory counts in full.
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// Matches `text` anywhere.
    pub fn search(source: &str) -> Result<Self, regex_lite::Error> {
        Regex::new(source).map(Pattern)
    }

    /// Matches only the whole text.
    pub fn anchored(source: &str) -> Result<Self, regex_lite::Error> {
        Regex::new(&format!("^(?:{source})$")).map(Pattern)
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// `host:port` with a host and a port from 1 to 65535 (`[::1]:7070` for IPv6).
fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn anchored_regex<'de, D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
    let source = String::deserialize(d)?;
    Pattern::anchored(&source)
        .map_err(|e| serde::de::Error::custom(format!("invalid regular expression: {e}")))
}

fn optional_regex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pattern>, D::Error> {
    let source = String::deserialize(d)?;
    Pattern::search(&source)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid regular expression: {e}")))
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_tls_check_interval() -> Duration {
    Duration::from_secs(10)
}

impl AgentConfig {
    /// Reads and validates `path`; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: AgentConfig = hostwatch_runtime::config::load(path, ENV_PREFIX)?;
        let base = base_dir(path);
        config.state_dir = resolve(&base, &config.state_dir);
        if !config.cgroups.root.as_os_str().is_empty() {
            config.cgroups.root = resolve(&base, &config.cgroups.root);
        }
        config.tls = config.tls.resolve(&base);
        config.collectors = config.collector_entries(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// The collectors of `collector` or `collectors` (exactly one of the
    /// two), each checked, with the top-level `server_name` for entries
    /// that name none of their own.
    fn collector_entries(&self, path: &Path) -> Result<Vec<CollectorEntry>, ConfigError> {
        let invalid = |message: String| Err(ConfigError::new(path, message));
        let (key, entries) = match (&self.collector, &self.collector_list) {
            (Some(_), Some(_)) => {
                return invalid(
                    "collector and collectors are both set: use collectors = [\"a:7070\", \
                     \"b:7070\"] alone"
                        .to_owned(),
                );
            }
            (None, None) => {
                return invalid(
                    "collectors (or collector) must be set: the collectors' host:port".to_owned(),
                );
            }
            (Some(one), None) => (
                "collector",
                vec![CollectorEntry {
                    address: one.clone(),
                    server_name: None,
                }],
            ),
            (None, Some(list)) if list.is_empty() => {
                return invalid("collectors must list at least one host:port".to_owned());
            }
            (None, Some(list)) => ("collectors", list.clone()),
        };
        if self.server_name.as_deref() == Some("") {
            return invalid("server_name must not be empty".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        let mut resolved = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let name = match key {
                "collector" => key.to_owned(),
                _ => format!("{key}[{i}]"),
            };
            if !is_host_port(&entry.address) {
                return invalid(format!(
                    "{name} {:?} must be host:port (a port from 1 to 65535)",
                    entry.address
                ));
            }
            if entry.server_name.as_deref() == Some("") {
                return invalid(format!("{name}: server_name must not be empty"));
            }
            if !seen.insert(entry.address.clone()) {
                return invalid(format!("{name}: {:?} appears twice", entry.address));
            }
            resolved.push(CollectorEntry {
                server_name: entry.server_name.or_else(|| self.server_name.clone()),
                address: entry.address,
            });
        }
        Ok(resolved)
    }

    /// Where the spool keeps its files.
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }

    /// Checks what serde cannot; the error names the key.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::new(path, message));
        if self.interval < Duration::from_millis(100) {
            return invalid(format!(
                "interval must be at least 100ms, not {:?}",
                self.interval
            ));
        }
        if let Err(message) = self.sampler.check(cfg!(target_os = "linux")) {
            return invalid(message);
        }
        let limits = &self.limits;
        if limits.spool_bytes < 64 * 1024 {
            return invalid("limits.spool_bytes must be at least 65536".to_owned());
        }
        if limits.max_in_flight == 0 {
            return invalid("limits.max_in_flight must be greater than zero".to_owned());
        }
        if !(16 * 1024..=crate::MAX_MESSAGE_BYTES).contains(&limits.replay_batch_bytes) {
            return invalid(format!(
                "limits.replay_batch_bytes must be between 16384 and {}",
                crate::MAX_MESSAGE_BYTES
            ));
        }
        if limits.max_backoff < Duration::from_millis(100) {
            return invalid("limits.max_backoff must be at least 100ms".to_owned());
        }
        if limits.failover_after == 0 {
            return invalid("limits.failover_after must be greater than zero".to_owned());
        }
        if limits.probe_interval < Duration::from_millis(100) {
            return invalid("limits.probe_interval must be at least 100ms".to_owned());
        }
        for (key, value) in [
            ("connect_timeout", limits.connect_timeout),
            ("keepalive_interval", limits.keepalive_interval),
            ("keepalive_timeout", limits.keepalive_timeout),
            ("ack_timeout", limits.ack_timeout),
        ] {
            if value.is_zero() {
                return invalid(format!("limits.{key} must be greater than zero"));
            }
        }
        if let Err(message) = self.cgroups.validate() {
            return invalid(message);
        }
        let processes = &self.processes;
        if processes.top > 128 {
            return invalid("processes.top must be at most 128".to_owned());
        }
        if !(16..=4096).contains(&processes.command_max_bytes) {
            return invalid("processes.command_max_bytes must be between 16 and 4096".to_owned());
        }
        let mut names = std::collections::HashSet::new();
        for rule in &processes.watch {
            if rule.name.is_empty() {
                return invalid("processes.watch: name must not be empty".to_owned());
            }
            if !names.insert(rule.name.as_str()) {
                return invalid(format!(
                    "processes.watch: name {:?} appears twice",
                    rule.name
                ));
            }
            if rule.pattern.is_none() && rule.name.len() > MAX_PROCESS_NAME {
                return invalid(format!(
                    "processes.watch: name {:?} is longer than {MAX_PROCESS_NAME} bytes, the most \
                     the kernel keeps of a process name; match it with pattern instead",
                    rule.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
collector = "127.0.0.1:7070"
state_dir = "state"
[tls]
ca = "ca.pem"
cert = "agent.pem"
key = "agent.key"
"#;

    fn load_text(text: &str) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentConfig::load(&path)
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_loopback_only() {
        assert_eq!(load_text(MINIMAL).unwrap().metrics_listen, None);
        let with = |value: &str| format!("metrics_listen = \"{value}\"\n{MINIMAL}");
        assert_eq!(
            load_text(&with("127.0.0.1:9465")).unwrap().metrics_listen,
            Some("127.0.0.1:9465".parse().unwrap())
        );
        assert!(
            load_text(&with("[::1]:9465"))
                .unwrap()
                .metrics_listen
                .is_some()
        );
        assert_eq!(load_text(&with("")).unwrap().metrics_listen, None);
        for (value, says) in [
            ("0.0.0.0:9465", "not a loopback address"),
            ("[::]:9465", "not a loopback address"),
            ("192.168.0.2:9465", "not a loopback address"),
            ("127.0.0.1", "not an address"),
            ("here:9465", "not an address"),
        ] {
            let e = load_text(&with(value)).unwrap_err().to_string();
            assert!(
                e.contains("metrics_listen") && e.contains(says),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = load_text(MINIMAL).unwrap();
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.tls_check_interval, Duration::from_secs(10));
        assert!(config.state_dir.is_absolute());
        assert!(config.spool_dir().ends_with("state/spool"));
        assert!(config.tls.key.is_absolute());
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.processes.top, 10);
        assert!(config.network.exclude.is_match("lo"));
        assert!(!config.network.exclude.is_match("eth0"));
        assert!(!config.network.exclude.is_match("xlo"), "anchored");
        assert!(config.disks.exclude.is_match("sda1"));
        assert!(config.disks.exclude.is_match("nvme0n1p2"));
        assert!(!config.disks.exclude.is_match("sda"));
        assert!(!config.disks.exclude.is_match("nvme0n1"));
        assert!(config.filesystems.exclude_mountpoints.is_match("/proc"));
        assert!(
            config
                .filesystems
                .exclude_mountpoints
                .is_match("/sys/fs/cgroup")
        );
        assert!(!config.filesystems.exclude_mountpoints.is_match("/"));
        assert!(
            !config
                .filesystems
                .exclude_mountpoints
                .is_match("/srv/devices")
        );
        assert!(
            config
                .filesystems
                .exclude_types
                .iter()
                .any(|t| t == "tmpfs")
        );
    }

    #[test]
    fn sections_are_read() {
        let text = format!(
            "{MINIMAL}[processes]\ntop = 3\nwatch = [{{ name = \"nginx\" }}, {{ name = \"api\", pattern = \"java .*api\\\\.jar\" }}]\n\
             [filesystems]\nexclude_types = [\"proc\"]\nexclude_mountpoints = \"/boot\"\n\
             [network]\nexclude = \"\"\n[disks]\nexclude = \"loop.*\"\n"
        );
        let config = load_text(&text).unwrap();
        assert_eq!(config.processes.top, 3);
        let watch = &config.processes.watch;
        assert_eq!(watch.len(), 2);
        assert!(watch[0].pattern.is_none());
        assert!(
            watch[1]
                .pattern
                .as_ref()
                .unwrap()
                .is_match("/usr/bin/java -jar api.jar")
        );
        assert_eq!(config.filesystems.exclude_types, ["proc"]);
        assert!(config.filesystems.exclude_mountpoints.is_match("/boot"));
        assert!(!config.filesystems.exclude_mountpoints.is_match("/boot/efi"));
        assert!(!config.network.exclude.is_match("lo"));
        assert!(config.disks.exclude.is_match("loop0"));
    }

    /// Loads each text, which must be refused with a message naming its key.
    fn assert_refused_naming_the_key(cases: &[(String, &str)]) {
        for (text, key) in cases {
            let err = match load_text(text) {
                Ok(_) => panic!("{key:?}: accepted {text}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(key), "{key:?} not named in {err:?}");
        }
    }

    #[test]
    fn bad_top_level_values_name_their_key() {
        assert_refused_naming_the_key(&[
            (format!("interval = \"0s\"\n{MINIMAL}"), "interval"),
            (format!("interval = \"-5s\"\n{MINIMAL}"), "interval"),
            (format!("interval = 10\n{MINIMAL}"), "interval"),
            (
                format!("tls_check_interval = \"often\"\n{MINIMAL}"),
                "tls_check_interval",
            ),
            (MINIMAL.replace("127.0.0.1:7070", "nohost"), "collector"),
            (format!("intervall = \"5s\"\n{MINIMAL}"), "intervall"),
            (MINIMAL.replace("state_dir = \"state\"", ""), "state_dir"),
        ]);
    }

    #[test]
    fn one_collector_or_a_list_by_preference() {
        let one = load_text(MINIMAL).unwrap();
        assert_eq!(
            one.collectors,
            [CollectorEntry {
                address: "127.0.0.1:7070".to_owned(),
                server_name: None,
            }]
        );
        let named = load_text(&format!("server_name = \"localhost\"\n{MINIMAL}")).unwrap();
        assert_eq!(
            named.collectors[0].server_name.as_deref(),
            Some("localhost")
        );
        let list = MINIMAL.replace(
            "collector = \"127.0.0.1:7070\"",
            "server_name = \"hostwatch\"\ncollectors = [\"10.0.0.1:7070\", \
             { address = \"10.0.0.2:7070\", server_name = \"b.example\" }, \"[::1]:7071\"]",
        );
        let config = load_text(&list).unwrap();
        let entries: Vec<(&str, Option<&str>)> = config
            .collectors
            .iter()
            .map(|c| (c.address.as_str(), c.server_name.as_deref()))
            .collect();
        assert_eq!(
            entries,
            [
                ("10.0.0.1:7070", Some("hostwatch")),
                ("10.0.0.2:7070", Some("b.example")),
                ("[::1]:7071", Some("hostwatch")),
            ]
        );
        assert_eq!(config.limits.failover_after, 3);
        assert_eq!(config.limits.probe_interval, Duration::from_secs(10));
    }

    #[test]
    fn bad_collectors_name_their_key() {
        let with = |collectors: &str| MINIMAL.replace("collector = \"127.0.0.1:7070\"", collectors);
        assert_refused_naming_the_key(&[
            (
                format!("collectors = [\"127.0.0.1:7071\"]\n{MINIMAL}"),
                "collector and collectors are both set",
            ),
            (with(""), "collectors (or collector) must be set"),
            (with("collectors = []"), "collectors must list at least one"),
            (
                with("collectors = [\"a:7070\", \"nohost\"]"),
                "collectors[1]",
            ),
            (with("collectors = [\"a:0\"]"), "collectors[0]"),
            (with("collectors = [\"a:http\"]"), "collectors[0]"),
            (with("collectors = [\":7070\"]"), "collectors[0]"),
            (
                with("collectors = [\"a:7070\", \"a:7070\"]"),
                "appears twice",
            ),
            (with("collectors = [7070]"), "each entry of collectors"),
            (
                with("collectors = [{ address = \"a:7070\", colour = \"red\" }]"),
                "each entry of collectors",
            ),
            (
                with("collectors = [{ address = \"a:7070\", server_name = \"\" }]"),
                "collectors[0]: server_name",
            ),
            (with("collectors = \"a:7070\""), "collectors"),
            (with("collector = \"a:99999\""), "collector"),
            (format!("server_name = \"\"\n{MINIMAL}"), "server_name"),
        ]);
    }

    #[test]
    fn bad_limits_name_their_key() {
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}[limits]\nspool_bytes = 1\n"),
                "limits.spool_bytes",
            ),
            (
                format!("{MINIMAL}[limits]\nspool_bytes = -1\n"),
                "spool_bytes",
            ),
            (
                format!("{MINIMAL}[limits]\nmax_in_flight = 0\n"),
                "limits.max_in_flight",
            ),
            (
                format!("{MINIMAL}[limits]\nreplay_batch_bytes = 10\n"),
                "limits.replay_batch_bytes",
            ),
            (
                format!("{MINIMAL}[limits]\nkeepalive_interval = \"0s\"\n"),
                "limits.keepalive_interval",
            ),
            (
                format!("{MINIMAL}[limits]\nkeepalive_timeout = \"0s\"\n"),
                "limits.keepalive_timeout",
            ),
            (
                format!("{MINIMAL}[limits]\nkeepalive_timeout = 5\n"),
                "keepalive_timeout",
            ),
            (
                format!("{MINIMAL}[limits]\nack_timeout = \"0s\"\n"),
                "limits.ack_timeout",
            ),
            (
                format!("{MINIMAL}[limits]\nack_timeout = \"soon\"\n"),
                "ack_timeout",
            ),
            (
                format!("{MINIMAL}[limits]\nfailover_after = 0\n"),
                "limits.failover_after",
            ),
            (
                format!("{MINIMAL}[limits]\nfailover_after = -2\n"),
                "failover_after",
            ),
            (
                format!("{MINIMAL}[limits]\nprobe_interval = \"10ms\"\n"),
                "limits.probe_interval",
            ),
            (format!("{MINIMAL}[limits]\nbogus = 0\n"), "bogus"),
            (
                format!("{MINIMAL}[limits]\nqueue_bytes = 70000\n"),
                "queue_bytes",
            ),
        ]);
    }

    #[test]
    fn bad_processes_values_name_their_key() {
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}[processes]\ntop = 1000\n"),
                "processes.top",
            ),
            (format!("{MINIMAL}[processes]\ntop = -1\n"), "top"),
            (
                format!("{MINIMAL}[processes]\ncommand_max_bytes = 0\n"),
                "processes.command_max_bytes",
            ),
            (
                format!(
                    "{MINIMAL}[processes]\nwatch = [{{ name = \"a-very-long-process-name\" }}]\n"
                ),
                "a-very-long-process-name",
            ),
            (
                format!("{MINIMAL}[processes]\nwatch = [{{ name = \"x\" }}, {{ name = \"x\" }}]\n"),
                "appears twice",
            ),
            (
                format!("{MINIMAL}[processes]\nwatch = [{{ name = \"\" }}]\n"),
                "name must not be empty",
            ),
            (
                format!("{MINIMAL}[processes]\nwatch = [{{ name = \"x\", pattern = \"(\" }}]\n"),
                "regular expression",
            ),
            (
                format!("{MINIMAL}[processes]\nwatch = [{{ name = \"x\", colour = \"red\" }}]\n"),
                "colour",
            ),
        ]);
    }

    #[test]
    fn families_are_turned_off_by_name() {
        let config = load_text(&format!(
            "{MINIMAL}[families]\ndisabled = [\"temperature\", \"sockets\"]\n"
        ))
        .unwrap();
        assert!(!config.families.enabled(Family::Temperature));
        assert!(!config.families.enabled(Family::Sockets));
        assert!(config.families.enabled(Family::Tcp));
        assert!(load_text(MINIMAL).unwrap().families.enabled(Family::Time));
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}[families]\ndisabled = [\"temperatures\"]\n"),
                "temperatures",
            ),
            (
                format!("{MINIMAL}[families]\ndisabled = \"time\"\n"),
                "disabled",
            ),
            (format!("{MINIMAL}[families]\nenabled = []\n"), "enabled"),
        ]);
    }

    #[test]
    fn the_sampler_is_proc_or_sysinfo() {
        let default = load_text(MINIMAL).unwrap().sampler;
        assert_eq!(default == SamplerKind::Proc, cfg!(target_os = "linux"));
        let with = |value: &str| format!("sampler = \"{value}\"\n{MINIMAL}");
        assert_eq!(
            load_text(&with("sysinfo")).unwrap().sampler,
            SamplerKind::Sysinfo
        );
        #[cfg(target_os = "linux")]
        assert_eq!(load_text(&with("proc")).unwrap().sampler, SamplerKind::Proc);
        assert_refused_naming_the_key(&[
            (with("wmi"), "sampler"),
            (with("Proc"), "sampler"),
            (format!("sampler = 1\n{MINIMAL}"), "sampler"),
        ]);
        // Elsewhere `proc` is refused with the reason and the way out.
        let e = SamplerKind::Proc.check(false).unwrap_err();
        assert!(
            e.contains("sampler = \"proc\"") && e.contains("sampler = \"sysinfo\""),
            "{e}"
        );
        assert!(SamplerKind::Sysinfo.check(false).is_ok());
        assert!(SamplerKind::Proc.check(true).is_ok());
    }

    #[test]
    fn systemd_units_are_services_by_default_and_filtered_by_pattern() {
        let config = load_text(MINIMAL).unwrap();
        assert!(config.families.enabled(Family::Systemd));
        let systemd = &config.systemd;
        assert!(systemd.include.is_match("nginx.service"));
        assert!(!systemd.include.is_match("logrotate.timer"));
        assert!(!systemd.include.is_match("nginx.service.d"), "anchored");
        assert!(!systemd.exclude.is_match("nginx.service"));
        let config = load_text(&format!(
            "{MINIMAL}[systemd]\ninclude = \".+\\\\.(service|timer)\"\nexclude = \"user@.*\"\n"
        ))
        .unwrap();
        assert!(config.systemd.include.is_match("logrotate.timer"));
        assert!(config.systemd.exclude.is_match("user@1000.service"));
        assert!(!config.systemd.exclude.is_match("nginx.service"));
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}[systemd]\ninclude = \"(\"\n"),
                "regular expression",
            ),
            (
                format!("{MINIMAL}[systemd]\nexclude = [\"a\"]\n"),
                "exclude",
            ),
            (
                format!("{MINIMAL}[systemd]\nunits = [\"a.service\"]\n"),
                "units",
            ),
            (
                format!("{MINIMAL}[families]\ndisabled = [\"systemd-units\"]\n"),
                "systemd-units",
            ),
        ]);
    }

    #[test]
    fn default_filters_match_what_they_name() {
        let config = load_text(MINIMAL).unwrap();
        let disks = &config.disks.exclude;
        for name in [
            "sda1",
            "vdb12",
            "nvme0n1p2",
            "mmcblk0p1",
            "loop7",
            "zram0",
            "ram3",
        ] {
            assert!(disks.is_match(name), "{name}");
        }
        for name in ["sda", "nvme0n1", "mmcblk0", "dm-0", "md127"] {
            assert!(!disks.is_match(name), "{name}");
        }
        let interfaces = &config.network.exclude;
        for name in ["lo", "veth1a2b", "cali0", "tap3", "vnet12", "ifb0"] {
            assert!(interfaces.is_match(name), "{name}");
        }
        for name in ["eth0", "enp3s0", "wlan0", "lo0", "vnetx"] {
            assert!(!interfaces.is_match(name), "{name}");
        }
        let mounts = &config.filesystems.exclude_mountpoints;
        for path in [
            "/proc",
            "/sys/fs/cgroup",
            "/dev/shm",
            "/run/credentials/a.service",
        ] {
            assert!(mounts.is_match(path), "{path}");
        }
        for path in ["/", "/home", "/run", "/devices", "/var/lib/docker"] {
            assert!(!mounts.is_match(path), "{path}");
        }
        assert!(config.cgroups.units.is_match("nginx.service"));
        assert!(!config.cgroups.units.is_match("user.slice"));
    }

    #[test]
    fn bad_filters_name_their_key() {
        assert_refused_naming_the_key(&[
            // Unicode classes are not in the patterns' syntax: said, not
            // matched as something else.
            (
                format!("{MINIMAL}[network]\nexclude = \"\\\\p{{L}}+\"\n"),
                "Unicode character classes are not supported for key `network.exclude`",
            ),
            (
                format!("{MINIMAL}[network]\nexclude = \"[\"\n"),
                "regular expression",
            ),
            (format!("{MINIMAL}[disks]\nexclude = [\"a\"]\n"), "exclude"),
            (
                format!("{MINIMAL}[filesystems]\nexclude_types = \"tmpfs\"\n"),
                "exclude_types",
            ),
        ]);
    }

    #[test]
    fn cgroups_defaults_and_values() {
        let config = load_text(MINIMAL).unwrap();
        let cgroups = &config.cgroups;
        assert_eq!(cgroups.root, Path::new("/sys/fs/cgroup"));
        assert_eq!(cgroups.slices, ["system.slice"]);
        assert_eq!(cgroups.limit, 50);
        assert_eq!(cgroups.rank_interval, Duration::from_secs(60));
        assert!(cgroups.units.is_match("nginx.service"));
        assert!(cgroups.units.is_match("getty@tty1.service"));
        assert!(!cgroups.units.is_match("dev-hugepages.mount"));
        assert!(!cgroups.units.is_match("nginx.service.d"), "anchored");
        assert!(config.families.enabled(Family::Cgroups));
        let config = load_text(&format!(
            "{MINIMAL}[cgroups]\nroot = \"cgroup\"\nslices = [\"system.slice\", \"machine.slice\"]\n\
             units = \"(nginx|postgresql)\\\\.service\"\nlimit = 10\nrank_interval = \"5m\"\n\
             [families]\ndisabled = [\"cgroups\"]\n"
        ))
        .unwrap();
        let cgroups = &config.cgroups;
        assert!(cgroups.root.is_absolute() && cgroups.root.ends_with("cgroup"));
        assert_eq!(cgroups.slices.len(), 2);
        assert!(cgroups.units.is_match("nginx.service"));
        assert!(!cgroups.units.is_match("cron.service"));
        assert_eq!(cgroups.limit, 10);
        assert_eq!(cgroups.rank_interval, Duration::from_secs(300));
        assert!(!config.families.enabled(Family::Cgroups));
    }

    #[test]
    fn bad_cgroups_values_name_their_key() {
        let with = |body: &str| format!("{MINIMAL}[cgroups]\n{body}\n");
        assert_refused_naming_the_key(&[
            (with("root = \"\""), "cgroups.root must not be empty"),
            (with("root = [\"/sys\"]"), "root"),
            (with("limit = 0"), "cgroups.limit"),
            (with("limit = 501"), "cgroups.limit"),
            (with("limit = -1"), "limit"),
            (with("limit = \"many\""), "limit"),
            (with("rank_interval = \"2h\""), "cgroups.rank_interval"),
            (with("rank_interval = \"soon\""), "rank_interval"),
            (with("slices = []"), "cgroups.slices must list"),
            (with("slices = \"system.slice\""), "slices"),
            (with("slices = [\"/system.slice\"]"), "cgroups.slices[0]"),
            (with("slices = [\"system.slice/\"]"), "cgroups.slices[0]"),
            (
                with("slices = [\"a.slice/../b.slice\"]"),
                "cgroups.slices[0]",
            ),
            (with("slices = [\"\"]"), "cgroups.slices[0]"),
            (
                with("slices = [\"system.slice\", \"system.slice/system-getty.slice\"]"),
                "cgroups.slices[1]",
            ),
            (
                with("slices = [\"system.slice\", \"system.slice\"]"),
                "overlaps",
            ),
            (with("units = \"(\""), "regular expression"),
            (with("units = [\"a\"]"), "units"),
            (with("top = 5"), "top"),
        ]);
    }
}
