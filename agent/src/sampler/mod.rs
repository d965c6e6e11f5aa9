//! Sampling of this host, one file per metric family. Each family parses
//! its `/proc` file from a `&str` (so tests feed it recorded fixtures) and
//! appends [`Sample`]s for one tick; names follow docs/design.md, "Data model"
//! (Prometheus conventions, unit suffixes). A file that cannot be read or
//! has an unexpected format is counted per family
//! (`hostwatch_agent_sample_errors_total`) and skipped, never fatal.
//!
//! Layout: `cpu` (/proc/stat: utilization, time split, scheduler
//! counters), `pressure` (/proc/pressure), `memory` (/proc/meminfo,
//! /proc/vmstat), `load` (/proc/loadavg), `host` (uptime, boot time),
//! `filesystem` (mountinfo + statvfs), `disk` (/proc/diskstats), `network`
//! (/proc/net/dev), `process` (/proc/<pid>: counts, top-N snapshot,
//! watched processes); and the families `[families]` can turn off: `tcp`
//! (/proc/net/snmp, netstat, snmp6), `sockets` (TCP connections by state
//! over netlink sock_diag), `time` (adjtimex, and chronyd's source from
//! its command port in `chrony`), `fd` (/proc/sys/fs/file-nr),
//! `conntrack` (/proc/sys/net/netfilter), `link` (/sys/class/net) and
//! `temperature` (/sys/class/hwmon, /sys/class/thermal); `cgroups`
//! (per-service resources from cgroup v2, under `[cgroups] root`); and
//! `systemd` (units and systemd-timesyncd's server over D-Bus, followed
//! by a task of its own between ticks). Sources other than files
//! (netlink, adjtimex, chronyd, the bus) can be replaced by recorded replies or a
//! private bus ([`Sources`]), so tests and fixtures never depend on this
//! machine.
//!
//! The families above are Linux's (each file is `cfg(target_os =
//! "linux")`). `sysinfo` is the portable sampler: the one on other systems,
//! and on Linux with `sampler = "sysinfo"` (so its tests run here); it
//! writes the same metric names where it has the figure. `select` holds
//! the choice ([`HostSampler`]).
//!
//! Why /proc on Linux rather than sysinfo: most figures need /proc anyway
//! (the CPU time split, PSI, disk and network error counters, swap
//! traffic, inodes), and sysinfo would read the same files again and keep
//! a full record per process; reading each file once per tick, and only
//! `stat` per process, is what keeps a sample cheaper than a node_exporter
//! scrape (`hostwatch-bench agent` compares the three; docs/benchmarks.md
//! has the figures).

mod cgroups;
mod chrony;
mod conntrack;
mod cpu;
mod disk;
mod fd;
mod filesystem;
mod host;
mod link;
mod load;
mod memory;
mod network;
mod pressure;
mod process;
mod sockets;
#[cfg(target_os = "linux")]
pub mod systemd;
mod tcp;
mod temperature;
mod time;

// The portable sampler, and the choice between it and the families above.
mod select;
mod sysinfo;

pub use self::sysinfo::SysinfoSampler;
pub use select::HostSampler;

#[cfg(target_os = "linux")]
pub use process::cpu_cores;

#[cfg(target_os = "linux")]
pub use chrony::{ChronySource, DEFAULT_ADDRESS as CHRONYD_ADDRESS};
#[cfg(target_os = "linux")]
pub use sockets::SockDiagSource;
#[cfg(target_os = "linux")]
pub use systemd::SystemdSource;
#[cfg(target_os = "linux")]
pub use time::TimeSource;

use crate::config::AgentConfig;
use hostwatch_proto::v1::ProcessInfo;
use std::fmt;
#[cfg(target_os = "linux")]
use {
    crate::config::Family,
    std::collections::HashMap,
    std::fs::File,
    std::io::{self, Read},
    std::os::unix::fs::FileExt,
    std::path::{Path, PathBuf},
};

/// One value of one series at the tick's time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The samples of one tick.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    pub fn push(&mut self, metric: &'static str, value: f64) {
        self.0.push(Sample {
            metric,
            labels: Vec::new(),
            value,
        });
    }

    pub fn push_labeled(
        &mut self,
        metric: &'static str,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        self.0.push(Sample {
            metric,
            labels,
            value,
        });
    }

    /// The value of `metric` with exactly `labels`, for tests and checks.
    pub fn get(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k == k2 && v == v2))
            })
            .map(|s| s.value)
    }
}

/// What one tick produced.
#[derive(Debug, Default)]
pub struct Tick {
    pub samples: Samples,
    /// The top processes by CPU and memory; `None` on the first tick (CPU
    /// use is a difference of two readings) or when snapshots are off.
    pub processes: Option<Vec<ProcessInfo>>,
}

/// A file whose content is not what the kernel documents.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

#[cfg(target_os = "linux")]
/// Why a file under /proc gave no figures; the message starts with the file.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("/proc/{file}: {source}")]
    Read {
        file: &'static str,
        source: io::Error,
    },
    #[error("/proc/{file}: {source}")]
    Parse {
        file: &'static str,
        source: ParseError,
    },
}

#[cfg(target_os = "linux")]
impl ParseError {
    fn new(what: impl Into<String>) -> Self {
        ParseError(what.into())
    }
}

#[cfg(target_os = "linux")]
/// Parses the whitespace-separated field `index` of `fields` as a number.
fn field<T: std::str::FromStr>(fields: &[&str], index: usize, what: &str) -> Result<T, ParseError> {
    fields
        .get(index)
        .ok_or_else(|| ParseError::new(format!("{what}: missing field {index}")))?
        .parse()
        .map_err(|_| ParseError::new(format!("{what}: field {index} is not a number")))
}

/// The metric families, as the `family` label of the error counter.
pub const FAMILIES: [&str; 18] = [
    "cpu",
    "pressure",
    "memory",
    "load",
    "host",
    "filesystem",
    "disk",
    "network",
    "process",
    "tcp",
    "sockets",
    "time",
    "file_descriptors",
    "conntrack",
    "links",
    "temperature",
    "cgroups",
    "systemd",
];

/// Problems met while sampling, per family, since start.
#[derive(Debug, Default)]
struct Problems {
    counts: [u64; FAMILIES.len()],
}

impl Problems {
    fn note(&mut self, family: &'static str, what: &dyn fmt::Display) {
        let Some(i) = FAMILIES.iter().position(|f| *f == family) else {
            return;
        };
        self.counts[i] += 1;
        let n = self.counts[i];
        // Logarithmic: a file that is always broken does not flood the journal.
        if n.is_power_of_two() {
            tracing::warn!(family, count = n, problem = %what, "sampling problem: counted and skipped");
        }
    }

    fn emit(&self, out: &mut Samples) {
        for (family, count) in FAMILIES.iter().zip(self.counts) {
            out.push_labeled(
                "hostwatch_agent_sample_errors_total",
                vec![("family", (*family).to_owned())],
                count as f64,
            );
        }
    }
}

#[cfg(target_os = "linux")]
/// Reads files under a root (normally `/proc`) into one reused buffer.
struct ProcFs<K = &'static str> {
    root: PathBuf,
    path: PathBuf,
    buf: Vec<u8>,
    /// The files read every tick, kept open and read again from offset 0
    /// (the kernel regenerates their text): no path lookup, open or close
    /// per tick.
    kept: HashMap<K, File>,
}

#[cfg(target_os = "linux")]
impl<K: std::hash::Hash + Eq + std::borrow::Borrow<str>> ProcFs<K> {
    fn new(root: PathBuf) -> Self {
        ProcFs {
            root,
            path: PathBuf::new(),
            buf: Vec::new(),
            kept: HashMap::new(),
        }
    }

    /// `relative`'s text. A file not kept open yet is opened, and kept
    /// under the key `keep` gives it (told how many are kept), if any.
    fn read_keeping(
        &mut self,
        relative: &str,
        keep: impl FnOnce(usize) -> Option<K>,
    ) -> io::Result<&str> {
        if let Some(file) = self.kept.get(relative) {
            if pread_all(file, &mut self.buf).is_ok() {
                return as_text(&self.buf);
            }
            // Gone meanwhile (a removed cgroup answers ENODEV): reopened below.
            self.kept.remove(relative);
        }
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(relative);
        let mut file = File::open(&self.path)?;
        read_all(&mut file, &mut self.buf)?;
        if let Some(key) = keep(self.kept.len()) {
            self.kept.insert(key, file);
        }
        as_text(&self.buf)
    }

    /// A file read once in a while (a process's command line or owner),
    /// opened each time.
    fn read_bytes(&mut self, relative: impl AsRef<Path>) -> io::Result<&[u8]> {
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(relative);
        let mut file = File::open(&self.path)?;
        read_all(&mut file, &mut self.buf)?;
        Ok(&self.buf)
    }
}

#[cfg(target_os = "linux")]
impl ProcFs {
    /// A file read every tick, as text, kept open.
    fn read(&mut self, relative: &'static str) -> io::Result<&str> {
        self.read_keeping(relative, |_| Some(relative))
    }

    /// A file read every tick, handed to `parse`.
    fn parse<T>(
        &mut self,
        file: &'static str,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<T, FileError> {
        let text = self
            .read(file)
            .map_err(|source| FileError::Read { file, source })?;
        parse(text).map_err(|source| FileError::Parse { file, source })
    }
}

#[cfg(target_os = "linux")]
fn as_text(bytes: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(target_os = "linux")]
/// Reads a kept-open file from its start to its end into `buf`.
fn pread_all(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    fill(buf, |buf, offset| file.read_at(buf, offset))
}

#[cfg(target_os = "linux")]
/// Reads `file` to its end into `buf`. Unlike `read_to_end`, no `fstat`
/// and `lseek` to size the buffer first: /proc files have no size, and
/// those two calls were a third of the agent's system calls.
fn read_all(file: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    fill(buf, |buf, _| file.read(buf))
}

#[cfg(target_os = "linux")]
/// Replaces `buf` with what `read` returns until it returns 0; `read`
/// gets the room to fill and how many bytes came before it.
fn fill(
    buf: &mut Vec<u8>,
    mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<()> {
    const CHUNK: usize = 4096;
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        match read(&mut buf[len..], len as u64) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(());
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
}

#[cfg(target_os = "linux")]
/// Where the sampler reads from; tests point it at recorded fixtures.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The proc file system, normally `/proc`.
    pub proc: PathBuf,
    /// The user database for process owners, normally `/etc/passwd`.
    pub passwd: PathBuf,
    /// The sys file system (links, temperatures), normally `/sys`.
    pub sys: PathBuf,
    /// The clock discipline, normally the kernel's `adjtimex`.
    pub time: TimeSource,
    /// chronyd's command port, normally 127.0.0.1:323.
    pub chrony: ChronySource,
    /// TCP connections by state, normally the kernel's netlink sock_diag.
    pub sock_diag: SockDiagSource,
    /// systemd's units, normally on the system bus.
    pub systemd: SystemdSource,
}

#[cfg(target_os = "linux")]
impl Default for Sources {
    fn default() -> Self {
        Sources {
            proc: PathBuf::from("/proc"),
            passwd: PathBuf::from("/etc/passwd"),
            sys: PathBuf::from("/sys"),
            time: TimeSource::Kernel,
            chrony: ChronySource::default(),
            sock_diag: SockDiagSource::Kernel,
            systemd: SystemdSource::SystemBus,
        }
    }
}

/// What the sampler reports, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub processes: crate::config::ProcessesConfig,
    pub filesystems: crate::config::FilesystemsConfig,
    pub disks: crate::config::DisksConfig,
    pub network: crate::config::NetworkConfig,
    pub families: crate::config::FamiliesConfig,
    pub cgroups: crate::config::CgroupsConfig,
    pub systemd: crate::config::SystemdConfig,
}

impl Settings {
    pub fn from_config(config: &AgentConfig) -> Self {
        Settings {
            processes: config.processes.clone(),
            filesystems: config.filesystems.clone(),
            disks: config.disks.clone(),
            network: config.network.clone(),
            families: config.families.clone(),
            cgroups: config.cgroups.clone(),
            systemd: config.systemd.clone(),
        }
    }
}

#[cfg(target_os = "linux")]
/// Kernel constants the parsers need.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    /// Clock ticks per second (`USER_HZ`) of /proc/stat and /proc/<pid>/stat.
    clock_ticks: u64,
    page_size: u64,
}

#[cfg(target_os = "linux")]
impl Kernel {
    fn this() -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let get = |var, default: u64| {
            sysconf(var)
                .ok()
                .flatten()
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Kernel {
            clock_ticks: get(SysconfVar::CLK_TCK, 100),
            page_size: get(SysconfVar::PAGE_SIZE, 4096),
        }
    }
}

#[cfg(target_os = "linux")]
/// Holds the state between ticks: counters whose rates need the previous reading.
pub struct Sampler {
    fs: ProcFs,
    /// The same reader, rooted at /sys.
    sys: ProcFs,
    time: TimeSource,
    chrony: chrony::State,
    sockets: sockets::State,
    link: link::State,
    systemd: systemd::State,
    settings: Settings,
    kernel: Kernel,
    problems: Problems,
    cpu: cpu::State,
    statfs: filesystem::Statfs,
    disk: disk::State,
    process: process::State,
    cgroups: cgroups::State,
    /// Samples of the last tick: the next one's vector is made that large
    /// at once rather than grown (and copied) a dozen times.
    last_len: usize,
}

#[cfg(target_os = "linux")]
impl Sampler {
    pub fn new(settings: Settings) -> Self {
        Self::with_sources(settings, Sources::default())
    }

    pub fn with_sources(settings: Settings, sources: Sources) -> Self {
        let kernel = Kernel::this();
        Sampler {
            fs: ProcFs::new(sources.proc),
            sys: ProcFs::new(sources.sys),
            time: sources.time,
            chrony: chrony::State::new(sources.chrony),
            sockets: sockets::State::new(sources.sock_diag),
            link: link::State::default(),
            systemd: systemd::State::new(sources.systemd),
            settings,
            kernel,
            problems: Problems::default(),
            cpu: cpu::State::default(),
            statfs: filesystem::Statfs::new(),
            disk: disk::State::default(),
            process: process::State::new(sources.passwd),
            cgroups: cgroups::State::default(),
            last_len: 0,
        }
    }

    /// Applies a reloaded configuration; counters' previous readings stay.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Reads every metric family once. `now` is monotonic time, for rates.
    pub fn sample(&mut self, now: std::time::Instant) -> Tick {
        // Room for the agent's own series too (`health`), pushed after.
        let mut out = Samples(Vec::with_capacity(self.last_len + 64));
        let fs = &mut self.fs;
        let problems = &mut self.problems;

        let boot_time = match fs.parse("stat", cpu::parse_stat) {
            Ok(stat) => {
                let boot_time = stat.boot_time;
                self.cpu.sample(stat, &mut out);
                Some(boot_time)
            }
            Err(e) => {
                problems.note("cpu", &e);
                None
            }
        };
        for (resource, problem) in pressure::sample(fs, &mut out) {
            problems.note(
                "pressure",
                &format_args!("/proc/pressure/{resource}: {problem}"),
            );
        }
        if let Err(e) = memory::sample(fs, self.kernel.page_size, &mut out) {
            problems.note("memory", &e);
        }
        if let Err(e) = fs.parse("loadavg", |t| load::sample(t, &mut out)) {
            problems.note("load", &e);
        }
        if let Err(e) = fs.parse("uptime", |t| host::sample(t, boot_time, &mut out)) {
            problems.note("host", &e);
        }
        match fs.read("self/mountinfo") {
            Ok(text) => {
                let filesystems = &self.settings.filesystems;
                for problem in filesystem::sample(text, filesystems, &mut self.statfs, &mut out) {
                    problems.note("filesystem", &problem);
                }
            }
            Err(e) => problems.note("filesystem", &format_args!("/proc/self/mountinfo: {e}")),
        }
        let disks = &self.settings.disks;
        if let Err(e) = fs.parse("diskstats", |t| self.disk.sample(t, disks, now, &mut out)) {
            problems.note("disk", &e);
        }
        let network = &self.settings.network;
        if let Err(e) = fs.parse("net/dev", |t| network::sample(t, network, &mut out)) {
            problems.note("network", &e);
        }
        self.sample_optional(now, &mut out);
        let problems = &mut self.problems;
        let fs = &mut self.fs;
        let processes = self.process.sample(
            fs,
            &self.settings.processes,
            self.kernel,
            boot_time,
            now,
            &mut out,
            &mut |e| problems.note("process", &e),
        );
        problems.emit(&mut out);
        self.last_len = out.0.len();
        Tick {
            samples: out,
            processes,
        }
    }

    /// The families `[families]` can turn off.
    fn sample_optional(&mut self, now: std::time::Instant, out: &mut Samples) {
        let families = &self.settings.families;
        let fs = &mut self.fs;
        let problems = &mut self.problems;
        if families.enabled(Family::Tcp) {
            for problem in tcp::sample(fs, out) {
                problems.note("tcp", &problem);
            }
        }
        if families.enabled(Family::Sockets)
            && let Err(e) = self.sockets.sample(out)
        {
            problems.note("sockets", &e);
        }
        if families.enabled(Family::Time) {
            if let Err(e) = time::sample(&self.time, out) {
                problems.note("time", &e);
            }
            if let Err(e) = self.chrony.sample(out) {
                problems.note("time", &e);
            }
        }
        if families.enabled(Family::FileDescriptors)
            && let Err(e) = fs.parse("sys/fs/file-nr", |t| fd::sample(t, out))
        {
            problems.note("file_descriptors", &e);
        }
        if families.enabled(Family::Conntrack)
            && let Err(e) = conntrack::sample(fs, out)
        {
            problems.note("conntrack", &e);
        }
        if families.enabled(Family::Links) {
            let exclude = &self.settings.network.exclude;
            for problem in self.link.sample(&mut self.sys, exclude, out) {
                problems.note("links", &problem);
            }
        }
        if families.enabled(Family::Temperature) {
            for problem in temperature::sample(&mut self.sys, out) {
                problems.note("temperature", &problem);
            }
        }
        if families.enabled(Family::Cgroups) {
            for problem in self.cgroups.sample(&self.settings.cgroups, now, out) {
                problems.note("cgroups", &problem);
            }
        }
        if families.enabled(Family::Systemd) {
            let mut note = |problem: &dyn fmt::Display| problems.note("systemd", problem);
            self.systemd.sample(&self.settings.systemd, out, &mut note);
        } else {
            self.systemd.stop();
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The recorded fixture tree `fixtures/<name>` of this crate.
    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name)
    }

    /// The sources of the recorded host `fixtures/<name>`, with its /proc at `proc`.
    pub(crate) fn fixture_sources(name: &str, proc: PathBuf) -> Sources {
        let root = fixture(name);
        Sources {
            proc,
            passwd: root.join("passwd"),
            sys: root.join("sys"),
            time: TimeSource::Recorded(root.join("adjtimex")),
            chrony: ChronySource::Absent,
            sock_diag: SockDiagSource::Recorded(root.join("sock_diag")),
            systemd: SystemdSource::Absent,
        }
    }

    /// The settings for the recorded host `fixtures/<name>`: its cgroup
    /// hierarchy at `cgroup` (copied into `cgroup`, when given).
    pub(crate) fn fixture_settings(name: &str, cgroup: Option<&Path>) -> Settings {
        let mut settings = Settings::default();
        settings.cgroups.root = match cgroup {
            Some(copy) => {
                std::fs::create_dir_all(copy).unwrap();
                copy_over(&fixture(name).join("cgroup"), copy);
                copy.to_owned()
            }
            None => fixture(name).join("cgroup"),
        };
        settings
    }

    fn fixture_sampler(name: &str) -> Sampler {
        let sources = fixture_sources(name, fixture(name).join("proc"));
        Sampler::with_sources(fixture_settings(name, None), sources)
    }

    #[test]
    fn this_host_second_tick_has_every_family_and_finite_values() {
        let mut settings = Settings::default();
        // Every process, so that this one is listed however busy the
        // machine running the test is.
        settings.processes.top = 100_000;
        let mut sampler = Sampler::new(settings);
        let start = Instant::now();
        let first = sampler.sample(start);
        assert!(
            first
                .samples
                .get("host_cpu_utilization_ratio", &[("cpu", "total")])
                .is_none()
        );
        assert!(first.processes.is_none());
        std::thread::sleep(Duration::from_millis(20));
        let second = sampler.sample(Instant::now());
        for metric in [
            "host_cpu_utilization_ratio",
            "host_cpu_time_ratio",
            "host_memory_available_bytes",
            "host_load1",
            "host_uptime_seconds",
            "host_boot_time_seconds",
            "host_filesystem_free_bytes",
            "host_processes",
            "host_context_switches_total",
        ] {
            assert!(
                second.samples.0.iter().any(|s| s.metric == metric),
                "{metric} missing"
            );
        }
        for sample in &second.samples.0 {
            assert!(sample.value.is_finite(), "{sample:?}");
        }
        // Files every supported kernel has; mounts, disks and processes
        // of an unusual test machine may legitimately be counted.
        for family in [
            "cpu",
            "memory",
            "load",
            "host",
            "tcp",
            "time",
            "file_descriptors",
        ] {
            let errors = second
                .samples
                .get("hostwatch_agent_sample_errors_total", &[("family", family)]);
            assert_eq!(
                errors,
                Some(0.0),
                "sampling {family} on this host had problems"
            );
        }
        let processes = second.processes.expect("a snapshot on the second tick");
        assert!(!processes.is_empty());
        assert!(processes.iter().any(|p| p.pid == std::process::id()));
    }

    /// Copies the files of `from` over those of `to`, in place (as /proc
    /// shows new figures through files kept open).
    pub(crate) fn copy_over(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_symlink() {
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(std::fs::read_link(&path).unwrap(), &target).unwrap();
            } else if path.is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                copy_over(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }

    #[test]
    fn a_recorded_host_reads_completely() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        copy_over(&fixture("host-a").join("proc"), &proc);
        let cgroup = dir.path().join("cgroup");
        let settings = fixture_settings("host-a", Some(&cgroup));
        let mut sampler = Sampler::with_sources(settings, fixture_sources("host-a", proc.clone()));
        let t0 = Instant::now();
        let first = sampler.sample(t0);
        // Ten seconds later.
        copy_over(&fixture("host-a").join("proc2"), &proc);
        copy_over(&fixture("host-a").join("cgroup2"), &cgroup);
        let second = sampler.sample(t0 + Duration::from_secs(10));
        let s = &second.samples;
        assert_eq!(
            s.get("host_memory_total_bytes", &[]),
            Some(24_684_084.0 * 1024.0)
        );
        assert_eq!(s.get("host_load1", &[]), Some(0.01));
        assert_eq!(s.get("host_threads", &[]), Some(83.0));
        assert_eq!(s.get("host_boot_time_seconds", &[]), Some(1_795_433_582.0));
        assert_eq!(s.get("host_uptime_seconds", &[]), Some(2612.63));
        // 1000 busy ticks of 2000 on two CPUs.
        assert_eq!(
            s.get("host_cpu_utilization_ratio", &[("cpu", "total")]),
            Some(0.5)
        );
        assert_eq!(
            s.get("host_cpu_time_ratio", &[("mode", "iowait")]),
            Some(0.05)
        );
        assert_eq!(s.get("host_cpu_count", &[]), Some(2.0));
        assert_eq!(
            s.get(
                "host_pressure_avg10_ratio",
                &[("resource", "cpu"), ("kind", "some")]
            ),
            Some(0.0)
        );
        assert!(
            s.get("host_network_receive_bytes_total", &[("device", "eth0")])
                .is_some()
        );
        assert!(
            s.get("host_network_receive_bytes_total", &[("device", "lo")])
                .is_none()
        );
        let vda = [("device", "vda")];
        assert!(s.get("host_disk_read_bytes_total", &vda).is_some());
        assert_eq!(s.get("host_disk_utilization_ratio", &vda), Some(0.25));
        assert!(
            s.get("host_disk_read_bytes_total", &[("device", "loop0")])
                .is_none()
        );
        let root = [
            ("mountpoint", "/"),
            ("device", "/dev/vda"),
            ("fstype", "ext4"),
        ];
        assert!(s.get("host_filesystem_free_bytes", &root).is_some());
        assert_eq!(s.get("host_processes", &[]), Some(4.0));
        // The optional families, each from its recorded source.
        assert_eq!(
            s.get("host_tcp_retransmitted_segments_total", &[]),
            Some(43.0)
        );
        assert_eq!(s.get("host_tcp_listen_overflows_total", &[]), Some(7.0));
        assert_eq!(
            s.get("host_tcp_connections", &[("state", "listen")]),
            Some(5.0)
        );
        assert_eq!(s.get("host_time_synchronized", &[]), Some(1.0));
        assert_eq!(s.get("host_file_descriptors_allocated", &[]), Some(3179.0));
        assert_eq!(s.get("host_conntrack_limit", &[]), Some(262_144.0));
        assert_eq!(s.get("host_network_up", &[("device", "eth0")]), Some(1.0));
        let package = [
            ("chip", "coretemp"),
            ("sensor", "Package id 0"),
            ("device", "coretemp.0"),
        ];
        assert_eq!(s.get("host_temperature_celsius", &package), Some(45.0));
        assert_eq!(
            s.get(
                "host_service_cpu_seconds_total",
                &[("unit", "nginx.service")]
            ),
            Some(35.0)
        );
        assert_eq!(
            s.get("host_service_cpu_seconds_total", &[("unit", "other")]),
            Some(1.0)
        );
        for family in FAMILIES {
            assert_eq!(
                s.get("hostwatch_agent_sample_errors_total", &[("family", family)]),
                Some(0.0),
                "{family}"
            );
        }
        assert!(first.processes.is_none());
        let snapshot = second.processes.unwrap();
        assert_eq!(snapshot[0].name, "busy");
        assert_eq!(snapshot[0].user, "alice");
        assert_eq!(snapshot[0].cpu_cores, 1.0);
        assert_eq!(snapshot[0].command, "/usr/local/bin/busy --threads 1");
        let kthread = snapshot.iter().find(|p| p.pid == 2);
        assert!(kthread.is_none(), "no CPU, no memory: not a top process");
    }

    #[test]
    fn every_series_of_a_recorded_host_is_in_the_metric_reference() {
        let reference = include_str!("../../../docs/metrics.md");
        let mut sampler = fixture_sampler("host-a");
        let t0 = Instant::now();
        sampler.sample(t0);
        let tick = sampler.sample(t0 + Duration::from_secs(1));
        for sample in &tick.samples.0 {
            assert!(
                reference.contains(&format!("`{}`", sample.metric)),
                "{} is not in docs/metrics.md",
                sample.metric
            );
        }
    }

    #[test]
    fn unexpected_formats_are_counted_and_skipped() {
        let mut sampler = fixture_sampler("garbled");
        let t0 = Instant::now();
        sampler.sample(t0);
        let tick = sampler.sample(t0 + Duration::from_secs(1));
        let errors = |family: &str| {
            tick.samples
                .get("hostwatch_agent_sample_errors_total", &[("family", family)])
                .unwrap()
        };
        for family in [
            "cpu",
            "memory",
            "load",
            "host",
            "disk",
            "network",
            "time",
            "sockets",
            "file_descriptors",
            "conntrack",
            "links",
        ] {
            assert_eq!(errors(family), 2.0, "{family}");
        }
        // snmp and netstat, each tick.
        assert_eq!(errors("tcp"), 4.0);
        // No sensors at all is not a problem.
        assert_eq!(errors("temperature"), 0.0);
        // No pressure directory is not a problem: old kernels have none.
        assert_eq!(errors("pressure"), 0.0);
        // No cgroup v2 hierarchy: told once, not every tick.
        assert_eq!(errors("cgroups"), 1.0);
        assert!(tick.samples.get("host_load1", &[]).is_none());
    }

    #[test]
    fn families_turned_off_are_not_read() {
        let mut settings = Settings::default();
        settings.families.disabled = vec![
            Family::Tcp,
            Family::Sockets,
            Family::Time,
            Family::FileDescriptors,
            Family::Conntrack,
            Family::Links,
            Family::Temperature,
            Family::Cgroups,
            Family::Systemd,
        ];
        settings.cgroups.root = fixture("garbled").join("cgroup");
        let sources = fixture_sources("garbled", fixture("garbled").join("proc"));
        let mut sampler = Sampler::with_sources(settings, sources);
        let tick = sampler.sample(Instant::now());
        for family in &FAMILIES[9..] {
            assert_eq!(
                tick.samples
                    .get("hostwatch_agent_sample_errors_total", &[("family", family)]),
                Some(0.0),
                "{family}"
            );
        }
        let mut sampler = fixture_sampler("host-a");
        let all = sampler.sample(Instant::now()).samples.0.len();
        assert!(all > tick.samples.0.len() + 30, "{all}");
    }
}
