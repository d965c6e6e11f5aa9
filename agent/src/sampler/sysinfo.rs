//! The portable sampler, on the `sysinfo` crate: the agent's sampler on
//! systems without Linux's `/proc` (macOS, FreeBSD), and on Linux with
//! `sampler = "sysinfo"`. It writes the same metric names and labels as
//! the `/proc` families where `sysinfo` has the figure: CPU utilization
//! (total and per core) and count, memory and swap, load, uptime and boot
//! time, file system space, network counters, the process count, the
//! top-N snapshot and watched processes. docs/metrics.md marks the series
//! it lacks (the CPU time split, scheduler counters, buffers and cache,
//! swap traffic, threads, free bytes and inodes, disk I/O, network drops,
//! PSI and the optional families).
//!
//! `sysinfo` reports no errors: what is counted
//! (`hostwatch_agent_sample_errors_total`) is what can be seen missing, a
//! system without CPUs or memory, a file system query that hangs.

use super::{Problems, Samples, Settings, Tick};
use crate::config::ProcessesConfig;
use ::sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, Process,
    ProcessRefreshKind, ProcessesToUpdate, System, ThreadKind, UpdateKind, Users,
};
use hostwatch_proto::v1::ProcessInfo;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often an unknown user id may cause a re-read of the user list.
const USERS_RELOAD: Duration = Duration::from_secs(60);

/// How long a tick waits for the file systems' figures.
const FILESYSTEMS_TIMEOUT: Duration = Duration::from_secs(1);

/// Holds `sysinfo`'s state between ticks (CPU and process figures are
/// differences of two readings).
pub struct SysinfoSampler {
    system: System,
    networks: Networks,
    users: Users,
    users_loaded: Option<Instant>,
    filesystems: Filesystems,
    settings: Settings,
    problems: Problems,
    /// Whether a tick came before: CPU use needs a previous reading.
    primed: bool,
}

impl SysinfoSampler {
    pub fn new(settings: Settings) -> Self {
        SysinfoSampler {
            system: System::new(),
            networks: Networks::new(),
            users: Users::new(),
            users_loaded: None,
            filesystems: Filesystems::default(),
            settings,
            problems: Problems::default(),
            primed: false,
        }
    }

    /// Applies a reloaded configuration; previous readings stay.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Reads every family `sysinfo` has once. `now` is monotonic time.
    pub fn sample(&mut self, now: Instant) -> Tick {
        let mut out = Samples::default();
        self.cpu(&mut out);
        self.memory(&mut out);
        let load = System::load_average();
        out.push("host_load1", load.one);
        out.push("host_load5", load.five);
        out.push("host_load15", load.fifteen);
        out.push("host_uptime_seconds", System::uptime() as f64);
        out.push("host_boot_time_seconds", System::boot_time() as f64);
        match self.filesystems.query() {
            Ok(list) => filesystems(list, &self.settings, &mut out),
            Err(problem) => self.problems.note("filesystem", &problem),
        }
        self.network(&mut out);
        let processes = self.processes(now, &mut out);
        self.primed = true;
        self.problems.emit(&mut out);
        Tick {
            samples: out,
            processes,
        }
    }

    fn cpu(&mut self, out: &mut Samples) {
        self.system
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        let cpus = self.system.cpus();
        if cpus.is_empty() {
            self.problems.note("cpu", &"sysinfo lists no CPU");
            return;
        }
        // The first reading has nothing to be a difference from.
        if self.primed {
            let ratio = |percent: f32| (f64::from(percent) / 100.0).clamp(0.0, 1.0);
            out.push_labeled(
                "host_cpu_utilization_ratio",
                vec![("cpu", "total".to_owned())],
                ratio(self.system.global_cpu_usage()),
            );
            for (i, cpu) in cpus.iter().enumerate() {
                // Linux's names are `cpu<N>`, N as /proc/stat numbers
                // them (with a gap for an offline CPU); elsewhere the
                // position, from 0.
                let id = cpu
                    .name()
                    .strip_prefix("cpu")
                    .and_then(|n| n.parse::<u32>().ok())
                    .map_or_else(|| i.to_string(), |n| n.to_string());
                out.push_labeled(
                    "host_cpu_utilization_ratio",
                    vec![("cpu", id)],
                    ratio(cpu.cpu_usage()),
                );
            }
        }
        out.push("host_cpu_count", cpus.len() as f64);
    }

    fn memory(&mut self, out: &mut Samples) {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        let system = &self.system;
        let total = system.total_memory();
        if total == 0 {
            self.problems
                .note("memory", &"sysinfo gives no memory total");
            return;
        }
        let available = system.available_memory();
        out.push("host_memory_total_bytes", total as f64);
        out.push("host_memory_available_bytes", available as f64);
        out.push(
            "host_memory_used_bytes",
            total.saturating_sub(available) as f64,
        );
        out.push("host_memory_free_bytes", system.free_memory() as f64);
        out.push("host_swap_total_bytes", system.total_swap() as f64);
        out.push("host_swap_used_bytes", system.used_swap() as f64);
    }

    fn network(&mut self, out: &mut Samples) {
        self.networks.refresh(true);
        let exclude = &self.settings.network.exclude;
        for (name, data) in self.networks.list() {
            if exclude.is_match(name) {
                continue;
            }
            let figures = [
                ("host_network_receive_bytes_total", data.total_received()),
                (
                    "host_network_receive_packets_total",
                    data.total_packets_received(),
                ),
                (
                    "host_network_receive_errors_total",
                    data.total_errors_on_received(),
                ),
                (
                    "host_network_transmit_bytes_total",
                    data.total_transmitted(),
                ),
                (
                    "host_network_transmit_packets_total",
                    data.total_packets_transmitted(),
                ),
                (
                    "host_network_transmit_errors_total",
                    data.total_errors_on_transmitted(),
                ),
            ];
            for (metric, value) in figures {
                out.push_labeled(metric, vec![("device", name.clone())], value as f64);
            }
        }
    }

    /// The process count and watched processes; the top-N snapshot from
    /// the second tick on (CPU use is a difference).
    fn processes(&mut self, now: Instant, out: &mut Samples) -> Option<Vec<ProcessInfo>> {
        let settings = &self.settings.processes;
        // Command lines and owners once per process; no threads (Linux
        // lists them as tasks): the count is of processes, as /proc's.
        let kind = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .with_user(UpdateKind::OnlyIfNotSet)
            .without_tasks();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let procs: Vec<&Process> = self
            .system
            .processes()
            .values()
            // Kernel threads are processes of their own, as /proc lists them.
            .filter(|p| p.thread_kind() != Some(ThreadKind::Userland))
            .collect();
        out.push("host_processes", procs.len() as f64);
        watched(&procs, settings, self.primed, out);
        if settings.top == 0 || !self.primed {
            return None;
        }
        let infos: Vec<(u32, ProcessInfo)> = top_n(&procs, settings.top)
            .into_iter()
            .map(|p| {
                let uid = p.user_id().map(|u| **u);
                let info = ProcessInfo {
                    pid: p.pid().as_u32(),
                    name: p.name().to_string_lossy().into_owned(),
                    command: command(p, settings.command_max_bytes),
                    user: String::new(),
                    cpu_cores: cores(p),
                    rss_bytes: p.memory(),
                    start_time_ms: (p.start_time() as i64).saturating_mul(1000),
                };
                (uid.unwrap_or(u32::MAX), info)
            })
            .collect();
        Some(
            infos
                .into_iter()
                .map(|(uid, mut info)| {
                    if uid != u32::MAX {
                        info.user = self.user_name(uid, now);
                    }
                    info
                })
                .collect(),
        )
    }

    /// The name of user `uid`, or its number when the system has no name for it.
    fn user_name(&mut self, uid: u32, now: Instant) -> String {
        let find = |users: &Users| {
            users
                .iter()
                .find(|u| **u.id() == uid)
                .map(|u| u.name().to_owned())
        };
        if let Some(name) = find(&self.users) {
            return name;
        }
        if self
            .users_loaded
            .is_none_or(|t| now.saturating_duration_since(t) >= USERS_RELOAD)
        {
            self.users_loaded = Some(now);
            self.users.refresh();
        }
        find(&self.users).unwrap_or_else(|| uid.to_string())
    }
}

/// Cores a process used since the previous refresh.
fn cores(p: &Process) -> f64 {
    f64::from(p.cpu_usage()).max(0.0) / 100.0
}

/// The command line, arguments joined by spaces and cut to `max` bytes at
/// a character boundary; `[name]` for kernel threads, which have none.
fn command(p: &Process, max: usize) -> String {
    let mut text = p
        .cmd()
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned();
    if text.is_empty() {
        return format!("[{}]", p.name().to_string_lossy());
    }
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The union of the top `n` by CPU and by resident memory, CPU first.
fn top_n<'a>(procs: &[&'a Process], n: usize) -> Vec<&'a Process> {
    let mut by_cpu: Vec<&Process> = procs.iter().copied().filter(|p| cores(p) > 0.0).collect();
    by_cpu.sort_unstable_by(|a, b| cores(b).total_cmp(&cores(a)));
    by_cpu.truncate(n);
    let mut by_rss: Vec<&Process> = procs.iter().copied().filter(|p| p.memory() > 0).collect();
    by_rss.sort_unstable_by_key(|p| std::cmp::Reverse(p.memory()));
    by_rss.truncate(n);
    for p in by_rss {
        if !by_cpu.iter().any(|q| q.pid() == p.pid()) {
            by_cpu.push(p);
        }
    }
    by_cpu
}

/// `host_process_running`, `_cpu_cores` (from the second tick) and
/// `_resident_bytes` of each watched process.
fn watched(procs: &[&Process], settings: &ProcessesConfig, primed: bool, out: &mut Samples) {
    for rule in &settings.watch {
        let (mut running, mut cpu, mut rss) = (0u64, 0.0, 0u64);
        for p in procs {
            let matched = match &rule.pattern {
                None => p.name().to_string_lossy() == rule.name,
                Some(pattern) => pattern.is_match(&command(p, settings.command_max_bytes)),
            };
            if matched {
                running += 1;
                cpu += cores(p);
                rss += p.memory();
            }
        }
        let labels = vec![("name", rule.name.clone())];
        out.push_labeled("host_process_running", labels.clone(), running as f64);
        if primed {
            out.push_labeled("host_process_cpu_cores", labels.clone(), cpu);
        }
        out.push_labeled("host_process_resident_bytes", labels, rss as f64);
    }
}

/// One mounted file system, as `sysinfo` lists it.
#[derive(Debug, Clone)]
struct Filesystem {
    mountpoint: String,
    device: String,
    fstype: String,
    size: u64,
    available: u64,
}

/// Space of each reported mount: filtered by type and mount point, one per
/// mount point (the last listed, which hides the ones under it).
fn filesystems(list: Vec<Filesystem>, settings: &Settings, out: &mut Samples) {
    let filters = &settings.filesystems;
    let mut shown: Vec<Filesystem> = Vec::new();
    for fs in list {
        shown.retain(|f| f.mountpoint != fs.mountpoint);
        if !filters.exclude_types.contains(&fs.fstype)
            && !filters.exclude_mountpoints.is_match(&fs.mountpoint)
        {
            shown.push(fs);
        }
    }
    for fs in shown {
        let labels = vec![
            ("mountpoint", fs.mountpoint),
            ("device", fs.device),
            ("fstype", fs.fstype),
        ];
        out.push_labeled("host_filesystem_size_bytes", labels.clone(), fs.size as f64);
        out.push_labeled(
            "host_filesystem_available_bytes",
            labels,
            fs.available as f64,
        );
    }
}

/// Lists file systems on a helper thread: `sysinfo` calls `statvfs`, which
/// hangs on a dead network mount, and the agent's one runtime thread must
/// not (ARCHITECTURE.md). A query that does not answer in time is a
/// counted problem; until it answers, no new one is made.
struct Filesystems {
    helper: Option<Helper>,
    /// A query was sent and its answer has not come.
    waiting: bool,
    /// What the helper runs per query: `sysinfo`'s listing; tests hang it.
    list: fn(&mut Disks) -> Vec<Filesystem>,
    timeout: Duration,
}

impl Default for Filesystems {
    fn default() -> Self {
        Filesystems {
            helper: None,
            waiting: false,
            list: list_disks,
            timeout: FILESYSTEMS_TIMEOUT,
        }
    }
}

struct Helper {
    requests: mpsc::Sender<()>,
    replies: mpsc::Receiver<Vec<Filesystem>>,
}

impl Filesystems {
    fn query(&mut self) -> Result<Vec<Filesystem>, String> {
        if self.helper.is_none() {
            self.helper = Some(
                spawn_helper(self.list)
                    .map_err(|e| format!("cannot start the file system thread: {e}"))?,
            );
        }
        let helper = self.helper.as_ref().ok_or("no helper")?;
        if self.waiting {
            match helper.replies.try_recv() {
                // An answer to an old query: stale, but the helper is free again.
                Ok(_) => self.waiting = false,
                Err(mpsc::TryRecvError::Empty) => {
                    return Err("the previous file system query still has no answer".to_owned());
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.helper = None;
                    self.waiting = false;
                    return Err("the file system thread ended".to_owned());
                }
            }
        }
        if helper.requests.send(()).is_err() {
            self.helper = None;
            return Err("the file system thread ended".to_owned());
        }
        match helper.replies.recv_timeout(self.timeout) {
            Ok(list) => Ok(list),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.waiting = true;
                Err(format!(
                    "file systems: no answer within {:?} (a hung mount?); \
                     skipped until it answers",
                    self.timeout
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.helper = None;
                Err("the file system thread ended".to_owned())
            }
        }
    }
}

/// The mounted file systems and their space, as `sysinfo` lists them.
fn list_disks(disks: &mut Disks) -> Vec<Filesystem> {
    disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
    disks
        .list()
        .iter()
        .map(|d| Filesystem {
            mountpoint: d.mount_point().to_string_lossy().into_owned(),
            device: d.name().to_string_lossy().into_owned(),
            fstype: d.file_system().to_string_lossy().into_owned(),
            size: d.total_space(),
            available: d.available_space(),
        })
        .collect()
}

fn spawn_helper(list: fn(&mut Disks) -> Vec<Filesystem>) -> std::io::Result<Helper> {
    let (requests, inbox) = mpsc::channel::<()>();
    let (reply, replies) = mpsc::channel();
    std::thread::Builder::new()
        .name("hostwatch-disks".into())
        .spawn(move || {
            let mut disks = Disks::new();
            // Ends when the sampler is dropped (its sender with it).
            while inbox.recv().is_ok() {
                if reply.send(list(&mut disks)).is_err() {
                    return;
                }
            }
        })?;
    Ok(Helper { requests, replies })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pattern;

    fn fs(mountpoint: &str, fstype: &str, device: &str) -> Filesystem {
        Filesystem {
            mountpoint: mountpoint.to_owned(),
            device: device.to_owned(),
            fstype: fstype.to_owned(),
            size: 100,
            available: 40,
        }
    }

    #[test]
    fn file_systems_are_filtered_and_the_top_mount_kept() {
        let mut settings = Settings::default();
        settings.filesystems.exclude_mountpoints = Pattern::anchored("/boot").unwrap();
        let list = vec![
            fs("/", "ext4", "/dev/vda1"),
            fs("/dev/shm", "tmpfs", "tmpfs"),
            fs("/boot", "ext4", "/dev/vda2"),
            fs("/data", "xfs", "/dev/sdb1"),
            fs("/data", "ext4", "/dev/sdc1"),
        ];
        let mut out = Samples::default();
        filesystems(list, &settings, &mut out);
        let root = [
            ("mountpoint", "/"),
            ("device", "/dev/vda1"),
            ("fstype", "ext4"),
        ];
        assert_eq!(out.get("host_filesystem_size_bytes", &root), Some(100.0));
        assert_eq!(
            out.get("host_filesystem_available_bytes", &root),
            Some(40.0)
        );
        let data = [
            ("mountpoint", "/data"),
            ("device", "/dev/sdc1"),
            ("fstype", "ext4"),
        ];
        assert!(out.get("host_filesystem_size_bytes", &data).is_some());
        // The root and the later /data: tmpfs, /boot and the hidden /data are not.
        assert_eq!(out.0.len(), 4, "{:?}", out.0);
    }

    /// Hangs while set, as statvfs on a dead NFS server does.
    static HANG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

    fn hanging_list(_: &mut Disks) -> Vec<Filesystem> {
        while HANG.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        vec![fs("/", "ext4", "/dev/vda1")]
    }

    #[test]
    fn a_hanging_file_system_query_is_a_problem_until_it_answers() {
        let mut filesystems = Filesystems {
            list: hanging_list,
            timeout: Duration::from_millis(100),
            ..Filesystems::default()
        };
        let e = filesystems.query().unwrap_err();
        assert!(e.contains("no answer within 100ms"), "{e}");
        // The next tick does not queue another query behind the hung one.
        let e = filesystems.query().unwrap_err();
        assert!(e.contains("still has no answer"), "{e}");
        HANG.store(false, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let list = loop {
            match filesystems.query() {
                Ok(list) => break list,
                Err(e) => assert!(Instant::now() < deadline, "never answered: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(list[0].mountpoint, "/");
    }

    #[test]
    fn this_host_second_tick_has_the_portable_families() {
        let mut settings = Settings::default();
        settings.processes.top = 100_000;
        settings.processes.watch = vec![crate::config::WatchRule {
            name: "me".into(),
            pattern: Some(Pattern::search("").unwrap()),
        }];
        let mut sampler = SysinfoSampler::new(settings);
        let first = sampler.sample(Instant::now());
        assert!(first.processes.is_none());
        assert!(
            first
                .samples
                .get("host_cpu_utilization_ratio", &[("cpu", "total")])
                .is_none()
        );
        std::thread::sleep(Duration::from_millis(250));
        let second = sampler.sample(Instant::now());
        let s = &second.samples;
        for metric in [
            "host_cpu_utilization_ratio",
            "host_cpu_count",
            "host_memory_total_bytes",
            "host_memory_available_bytes",
            "host_swap_total_bytes",
            "host_load1",
            "host_uptime_seconds",
            "host_boot_time_seconds",
            "host_filesystem_size_bytes",
            "host_processes",
            "host_process_cpu_cores",
        ] {
            assert!(s.0.iter().any(|x| x.metric == metric), "{metric} missing");
        }
        for sample in &s.0 {
            assert!(sample.value.is_finite(), "{sample:?}");
        }
        let reference = include_str!("../../../docs/metrics.md");
        for sample in &s.0 {
            assert!(
                reference.contains(&format!("`{}`", sample.metric)),
                "{} is not in docs/metrics.md",
                sample.metric
            );
        }
        for family in ["cpu", "memory", "filesystem"] {
            assert_eq!(
                s.get("hostwatch_agent_sample_errors_total", &[("family", family)]),
                Some(0.0),
                "{family}"
            );
        }
        let processes = second.processes.expect("a snapshot on the second tick");
        let me = processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this test process in the snapshot");
        assert!(me.rss_bytes > 0 && !me.command.is_empty() && !me.user.is_empty());
        assert_eq!(
            s.get("host_process_running", &[("name", "me")]),
            s.get("host_processes", &[])
        );
    }

    /// Agreement with the /proc samplers on this machine: each figure
    /// `sysinfo` gives must lie within 1% (plus `slack`) of the range two
    /// /proc readings bracket, one just before and one just after it, so
    /// the machine moving between the reads does not make it fail.
    #[cfg(target_os = "linux")]
    #[test]
    fn agrees_with_the_proc_samplers_within_one_percent() {
        use crate::sampler::{ProcFs, Sample, Sampler, cpu};
        let settings = || {
            let mut s = Settings::default();
            s.processes.top = 0;
            s
        };
        let mut compared = 0;
        let mut check = |what: &str,
                         labels: &[(&str, &str)],
                         slack: f64,
                         b: &Samples,
                         p: &Samples,
                         a: &Samples| {
            let get = |s: &Samples| s.get(what, labels);
            let (Some(x), Some(y), Some(v)) = (get(b), get(a), get(p)) else {
                panic!(
                    "{what}{labels:?}: /proc {:?} {:?}, sysinfo {:?}",
                    get(b),
                    get(a),
                    get(p)
                );
            };
            let (lo, hi) = (x.min(y), x.max(y));
            let margin = 0.01 * hi.abs() + slack;
            assert!(
                v >= lo - margin && v <= hi + margin,
                "{what}{labels:?}: sysinfo {v}, /proc {x} then {y}"
            );
            compared += 1;
        };

        // CPU use over the same second: /proc/stat, sysinfo and /proc/stat
        // again read back to back, at the start and at the end.
        let mut fs = ProcFs::new("/proc".into());
        let (mut cpu_before, mut cpu_after) = (cpu::State::default(), cpu::State::default());
        let mut cpu_portable = SysinfoSampler::new(settings());
        let mut cpu_round = || {
            let (mut b, mut p, mut a) =
                (Samples::default(), Samples::default(), Samples::default());
            cpu_before.sample(fs.parse("stat", cpu::parse_stat).unwrap(), &mut b);
            cpu_portable.cpu(&mut p);
            cpu_after.sample(fs.parse("stat", cpu::parse_stat).unwrap(), &mut a);
            cpu_portable.primed = true;
            (b, p, a)
        };
        cpu_round();
        std::thread::sleep(Duration::from_millis(1000));
        let (b, p, a) = cpu_round();
        // Ticks are a hundredth of a second per core: one percentage
        // point beyond the bracket.
        check(
            "host_cpu_utilization_ratio",
            &[("cpu", "total")],
            0.01,
            &b,
            &p,
            &a,
        );
        check("host_cpu_count", &[], 0.0, &b, &p, &a);

        // Everything else from whole samples: /proc, sysinfo, /proc.
        let (mut before, mut portable, mut after) = (
            Sampler::new(settings()),
            SysinfoSampler::new(settings()),
            Sampler::new(settings()),
        );
        let now = Instant::now();
        let (b, p, a) = (
            before.sample(now).samples,
            portable.sample(now).samples,
            after.sample(now).samples,
        );
        for metric in [
            "host_memory_total_bytes",
            "host_memory_available_bytes",
            "host_memory_used_bytes",
            "host_memory_free_bytes",
            "host_swap_total_bytes",
            "host_swap_used_bytes",
        ] {
            check(metric, &[], 0.0, &b, &p, &a);
        }
        // Load averages have two decimals; uptime is whole seconds here.
        for metric in ["host_load1", "host_load5", "host_load15"] {
            check(metric, &[], 0.01, &b, &p, &a);
        }
        check("host_uptime_seconds", &[], 1.0, &b, &p, &a);
        check("host_boot_time_seconds", &[], 1.0, &b, &p, &a);
        // A process may start and end between the reads, unbracketed.
        check("host_processes", &[], 2.0, &b, &p, &a);
        let series = |s: &Samples, metric: &str| -> Vec<Vec<(&'static str, String)>> {
            s.0.iter()
                .filter(|x: &&Sample| x.metric == metric)
                .map(|x| x.labels.clone())
                .collect()
        };
        let mut file_systems = 0;
        for labels in series(&b, "host_filesystem_size_bytes") {
            let labels = as_refs(&labels);
            // The two list mounts each in their own way (sysinfo leaves
            // out /run, for one): the ones both report are compared.
            if p.get("host_filesystem_size_bytes", &labels).is_none() {
                continue;
            }
            check("host_filesystem_size_bytes", &labels, 0.0, &b, &p, &a);
            check("host_filesystem_available_bytes", &labels, 0.0, &b, &p, &a);
            file_systems += 1;
        }
        assert!(file_systems > 0, "no file system both samplers report");
        let mut interfaces = 0;
        for labels in series(&b, "host_network_receive_bytes_total") {
            let labels = as_refs(&labels);
            for metric in [
                "host_network_receive_bytes_total",
                "host_network_receive_packets_total",
                "host_network_receive_errors_total",
                "host_network_transmit_bytes_total",
                "host_network_transmit_packets_total",
                "host_network_transmit_errors_total",
            ] {
                check(metric, &labels, 0.0, &b, &p, &a);
            }
            interfaces += 1;
        }
        // Every interface /proc reports, sysinfo reports, and no other.
        assert_eq!(
            series(&p, "host_network_receive_bytes_total").len(),
            interfaces
        );
        assert!(compared >= 15, "{compared}");
    }

    #[cfg(target_os = "linux")]
    fn as_refs<'a>(labels: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        labels.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}
