//! Processes from `/proc/<pid>/stat`: the process count, the top-N
//! snapshot (union of the top N by CPU and by resident memory, with
//! command line and user), and watched processes as series.
//!
//! Only `stat` is read for every process; command line and user are read
//! for the processes that are shown or matched by a pattern, once per
//! process lifetime (cached by pid and start time).

#![cfg(target_os = "linux")]

use super::{Kernel, ParseError, ProcFs, Samples, read_all};
use crate::config::ProcessesConfig;
use hostwatch_proto::v1::ProcessInfo;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` the agent uses; the name borrows the
/// read buffer (a process name is only copied if it is shown).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ProcStat<'a> {
    pub(super) name: std::borrow::Cow<'a, str>,
    /// User plus system time, clock ticks.
    pub(super) ticks: u64,
    /// Start, clock ticks after boot.
    pub(super) start: u64,
    pub(super) rss_pages: u64,
}

/// `1234 (name with) spaces) S 1 ...`: the name is between the first `(`
/// and the last `)`, so it may hold anything; the numbers follow. Read
/// for every process every tick: no allocation.
pub(super) fn parse_stat(bytes: &[u8]) -> Result<ProcStat<'_>, ParseError> {
    let open = bytes.iter().position(|b| *b == b'(');
    let close = bytes.iter().rposition(|b| *b == b')');
    let (Some(open), Some(close)) = (open, close) else {
        return Err(ParseError::new("no (name)"));
    };
    if close < open {
        return Err(ParseError::new("no (name)"));
    }
    let name = String::from_utf8_lossy(&bytes[open + 1..close]);
    let rest = std::str::from_utf8(&bytes[close + 1..])
        .map_err(|_| ParseError::new("fields are not text"))?;
    // Fields are numbered as in proc(5): the first after the name is 3.
    let mut fields = rest.split_ascii_whitespace();
    let mut number = |skip: usize, n: usize| -> Result<u64, ParseError> {
        fields
            .nth(skip)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ParseError::new(format!("field {n} missing or not a number")))
    };
    let utime = number(11, 14)?;
    let stime = number(0, 15)?;
    let start = number(6, 22)?;
    let rss = fields
        .nth(1)
        .and_then(|f| f.parse::<i64>().ok())
        .ok_or_else(|| ParseError::new("field 24 missing or not a number"))?;
    Ok(ProcStat {
        name,
        ticks: utime.saturating_add(stime),
        start,
        rss_pages: rss.max(0) as u64,
    })
}

/// The effective user id from `/proc/<pid>/status` (`Uid: real effective saved fs`).
pub(super) fn parse_status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_ascii_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
}

/// `/proc/<pid>/cmdline`: arguments separated (and ended) by NUL, joined by
/// spaces and cut to `max` bytes at a character boundary; `[name]` for
/// kernel threads, which have none.
pub(super) fn command_line(bytes: &[u8], name: &str, max: usize) -> String {
    let joined: Vec<u8> = bytes
        .strip_suffix(b"\0")
        .unwrap_or(bytes)
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    let mut text = String::from_utf8_lossy(&joined).trim().to_owned();
    if text.is_empty() {
        return format!("[{name}]");
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

/// uid -> name from `/etc/passwd`. Users only a directory service knows
/// are shown by number.
struct Users {
    path: PathBuf,
    names: HashMap<u32, String>,
    loaded: Option<Instant>,
}

/// How often an unknown uid may cause a re-read of the user database.
const USERS_RELOAD: Duration = Duration::from_secs(60);

impl Users {
    fn name(&mut self, uid: u32, now: Instant) -> String {
        if !self.names.contains_key(&uid)
            && self
                .loaded
                .is_none_or(|t| now.saturating_duration_since(t) >= USERS_RELOAD)
        {
            self.loaded = Some(now);
            match std::fs::read_to_string(&self.path) {
                Ok(text) => self.names = parse_passwd(&text),
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "cannot read the user database")
                }
            }
        }
        self.names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

pub(super) fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split(':');
            let name = parts.next()?;
            let uid = parts.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (uid, name.to_owned()))
        })
        .collect()
}

/// One process at this tick.
#[derive(Debug)]
struct Proc {
    pid: u32,
    /// Its name in [`State::names`].
    name: std::ops::Range<usize>,
    start: u64,
    rss_pages: u64,
    /// Cores used since the previous tick; none at the first.
    cpu_cores: Option<f64>,
}

/// Readings of the previous tick and caches keyed by (pid, start).
pub(super) struct State {
    /// pid -> (start, ticks) at the previous tick, and being filled for
    /// this one (swapped each tick; both keep their capacity).
    prev: HashMap<u32, (u64, u64)>,
    next: HashMap<u32, (u64, u64)>,
    /// `/proc`, kept open; listed again every tick.
    proc_dir: Option<nix::dir::Dir>,
    /// `/proc/<pid>/stat` files kept open between ticks and read again
    /// with `pread`: an open, a close and a path lookup fewer per process
    /// and tick. Bounded, to leave file descriptors for everything else.
    stat_files: HashMap<u32, File>,
    max_open: usize,
    buf: Vec<u8>,
    prev_time: Option<Instant>,
    procs: Vec<Proc>,
    /// The names of this tick's processes, end to end.
    names: String,
    commands: HashMap<u32, (u64, String)>,
    owners: HashMap<u32, (u64, String)>,
    users: Users,
}

impl State {
    pub(super) fn new(passwd: PathBuf) -> Self {
        State {
            prev: HashMap::new(),
            next: HashMap::new(),
            proc_dir: None,
            stat_files: HashMap::new(),
            max_open: max_open_files(),
            buf: Vec::new(),
            prev_time: None,
            procs: Vec::new(),
            names: String::new(),
            commands: HashMap::new(),
            owners: HashMap::new(),
            users: Users {
                path: passwd,
                names: HashMap::new(),
                loaded: None,
            },
        }
    }

    /// Appends the process count and the watched processes' series;
    /// returns the top-N snapshot (none at the first tick, or with `top = 0`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sample(
        &mut self,
        fs: &mut ProcFs,
        settings: &ProcessesConfig,
        kernel: Kernel,
        boot_time: Option<u64>,
        now: Instant,
        out: &mut Samples,
        problem: &mut dyn FnMut(String),
    ) -> Option<Vec<ProcessInfo>> {
        let elapsed = self
            .prev_time
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .filter(|e| *e > 0.0);
        self.read_processes(&fs.root, kernel, elapsed, problem)?;
        std::mem::swap(&mut self.prev, &mut self.next);
        self.prev_time = Some(now);
        self.forget_gone();
        out.push("host_processes", self.procs.len() as f64);
        self.watched(fs, settings, kernel, out);
        if settings.top == 0 || elapsed.is_none() {
            return None;
        }
        Some(self.top(fs, settings, kernel, boot_time.unwrap_or(0), now))
    }

    /// Lists the processes under `root` into `procs`, with the CPU they
    /// used over the `elapsed` seconds since the previous tick, and their
    /// readings into `next`; `None` when `root` cannot be opened.
    fn read_processes(
        &mut self,
        root: &Path,
        kernel: Kernel,
        elapsed: Option<f64>,
        problem: &mut dyn FnMut(String),
    ) -> Option<()> {
        if self.proc_dir.is_none() {
            let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY;
            match nix::dir::Dir::open(root, flags, nix::sys::stat::Mode::empty()) {
                Ok(dir) => self.proc_dir = Some(dir),
                Err(e) => {
                    problem(format!("{}: {e}", root.display()));
                    return None;
                }
            }
        }
        let dir = self.proc_dir.as_mut()?;
        self.procs.clear();
        self.names.clear();
        self.next.clear();
        // The iterator rewinds the directory when dropped: the next tick
        // lists it afresh.
        for entry in dir.iter() {
            let Ok(entry) = entry else {
                continue;
            };
            let Some(pid) = parse_pid(entry.file_name().to_bytes()) else {
                continue;
            };
            let read = read_stat(
                &mut self.stat_files,
                root,
                pid,
                &mut self.buf,
                self.max_open,
            );
            let stat = match read {
                Ok(bytes) => match parse_stat(bytes) {
                    Ok(stat) => stat,
                    Err(e) => {
                        problem(format!("/proc/{pid}/stat: {e}"));
                        continue;
                    }
                },
                // Exited between listing and reading: not a problem.
                Err(e) if gone(&e) => continue,
                Err(e) => {
                    problem(format!("/proc/{pid}/stat: {e}"));
                    continue;
                }
            };
            let cpu_cores = elapsed.map(|secs| {
                let used = match self.prev.get(&pid) {
                    Some((start, ticks)) if *start == stat.start => {
                        stat.ticks.saturating_sub(*ticks)
                    }
                    // Started since the previous tick: all its time is new.
                    _ => stat.ticks,
                };
                cpu_cores(used, kernel.clock_ticks, secs)
            });
            self.next.insert(pid, (stat.start, stat.ticks));
            let at = self.names.len();
            self.names.push_str(&stat.name);
            self.procs.push(Proc {
                pid,
                name: at..self.names.len(),
                start: stat.start,
                rss_pages: stat.rss_pages,
                cpu_cores,
            });
        }
        Some(())
    }

    /// Forgets the files and details of processes that are gone (or whose
    /// pid was reused) since the previous tick.
    fn forget_gone(&mut self) {
        let prev = &self.prev;
        self.stat_files.retain(|pid, _| prev.contains_key(pid));
        let alive = |pid: &u32, (start, _): &mut (u64, String)| {
            prev.get(pid).is_some_and(|(s, _)| s == start)
        };
        self.commands.retain(alive);
        self.owners.retain(alive);
    }

    fn watched(
        &mut self,
        fs: &mut ProcFs,
        settings: &ProcessesConfig,
        kernel: Kernel,
        out: &mut Samples,
    ) {
        for rule in &settings.watch {
            let (mut running, mut cpu, mut rss) = (0u64, 0.0, 0u64);
            let mut cpu_known = true;
            for p in &self.procs {
                let name = &self.names[p.name.clone()];
                let matched = match &rule.pattern {
                    None => name == rule.name,
                    Some(pattern) => {
                        let command = cached_command(
                            &mut self.commands,
                            fs,
                            p,
                            name,
                            settings.command_max_bytes,
                        );
                        pattern.is_match(command)
                    }
                };
                if matched {
                    running += 1;
                    rss += p.rss_pages * kernel.page_size;
                    match p.cpu_cores {
                        Some(c) => cpu += c,
                        None => cpu_known = false,
                    }
                }
            }
            let labels = vec![("name", rule.name.clone())];
            out.push_labeled("host_process_running", labels.clone(), running as f64);
            if cpu_known {
                out.push_labeled("host_process_cpu_cores", labels.clone(), cpu);
            }
            out.push_labeled("host_process_resident_bytes", labels, rss as f64);
        }
    }

    fn top(
        &mut self,
        fs: &mut ProcFs,
        settings: &ProcessesConfig,
        kernel: Kernel,
        boot_time: u64,
        now: Instant,
    ) -> Vec<ProcessInfo> {
        let n = settings.top;
        let cpu = |p: &Proc| p.cpu_cores.unwrap_or(0.0);
        let mut by_cpu: Vec<usize> = (0..self.procs.len())
            .filter(|i| cpu(&self.procs[*i]) > 0.0)
            .collect();
        by_cpu.sort_unstable_by(|a, b| cpu(&self.procs[*b]).total_cmp(&cpu(&self.procs[*a])));
        by_cpu.truncate(n);
        let mut by_rss: Vec<usize> = (0..self.procs.len())
            .filter(|i| self.procs[*i].rss_pages > 0)
            .collect();
        by_rss.sort_unstable_by_key(|i| std::cmp::Reverse(self.procs[*i].rss_pages));
        by_rss.truncate(n);
        for i in by_rss {
            if !by_cpu.contains(&i) {
                by_cpu.push(i);
            }
        }
        let mut infos = Vec::with_capacity(by_cpu.len());
        for i in by_cpu {
            let p = &self.procs[i];
            let name = &self.names[p.name.clone()];
            let command =
                cached_command(&mut self.commands, fs, p, name, settings.command_max_bytes)
                    .to_owned();
            let user = match self.owners.get(&p.pid) {
                Some((start, user)) if *start == p.start => user.clone(),
                _ => {
                    let status = fs.read_bytes(format!("{}/status", p.pid));
                    let user = match status.and_then(super::as_text) {
                        Ok(text) => parse_status_uid(text)
                            .map(|uid| self.users.name(uid, now))
                            .unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    self.owners.insert(p.pid, (p.start, user.clone()));
                    user
                }
            };
            infos.push(ProcessInfo {
                pid: p.pid,
                name: name.to_owned(),
                command,
                user,
                cpu_cores: cpu(p),
                rss_bytes: p.rss_pages * kernel.page_size,
                start_time_ms: (boot_time * 1000 + p.start * 1000 / kernel.clock_ticks) as i64,
            });
        }
        infos
    }
}

/// A process directory's name: all digits.
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// At most this many `stat` files stay open: half the descriptor limit, so
/// the agent's own sockets and files always have room.
fn max_open_files() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 2).unwrap_or(usize::MAX).min(4096)
}

/// `/proc/<pid>/stat`, through the file kept open for `pid` if there is
/// one (a stale one, its pid reused, fails and is replaced).
fn read_stat<'a>(
    files: &mut HashMap<u32, File>,
    root: &Path,
    pid: u32,
    buf: &'a mut Vec<u8>,
    max_open: usize,
) -> io::Result<&'a [u8]> {
    if let Some(file) = files.get(&pid) {
        match pread_whole(file, buf) {
            Ok(()) => return Ok(buf),
            Err(_) => {
                files.remove(&pid);
            }
        }
    }
    let mut file = File::open(root.join(pid.to_string()).join("stat"))?;
    read_all(&mut file, buf)?;
    if files.len() < max_open {
        files.insert(pid, file);
    }
    Ok(buf)
}

/// Reads a kept-open stat file from its start. The kernel produces the
/// one-line record whole on a read: a read shorter than the buffer is all
/// of it, so one system call per process and tick.
fn pread_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    const CHUNK: usize = 1024;
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        let n = file.read_at(&mut buf[len..], len as u64)?;
        buf.truncate(len + n);
        if n < CHUNK {
            return Ok(());
        }
    }
}

/// The command line of `p` (named `name`), read once per process lifetime.
fn cached_command<'a>(
    commands: &'a mut HashMap<u32, (u64, String)>,
    fs: &mut ProcFs,
    p: &Proc,
    name: &str,
    max: usize,
) -> &'a str {
    let fresh = commands
        .get(&p.pid)
        .is_some_and(|(start, _)| *start == p.start);
    if !fresh {
        let command = match fs.read_bytes(format!("{}/cmdline", p.pid)) {
            Ok(bytes) => command_line(bytes, name, max),
            Err(_) => format!("[{name}]"),
        };
        commands.insert(p.pid, (p.start, command));
    }
    commands.get(&p.pid).map(|(_, c)| c.as_str()).unwrap_or("")
}

/// The process exited: its directory or files are gone (ENOENT), or the
/// kernel refuses reads of a dying task (ESRCH).
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

/// CPU in cores from `ticks` of `clock_ticks` a second used over `secs`,
/// rounded to the power of ten nearest a tenth of one tick's worth
/// (0.0001 cores for 100 ticks over 10 s): the figure is a count of ticks,
/// so the rounding, at most a sixth of a tick, loses nothing measured, and
/// a short decimal is what the store codes in a byte or two where a
/// float's full mantissa takes eight.
pub fn cpu_cores(ticks: u64, clock_ticks: u64, secs: f64) -> f64 {
    let tenth_tick = 0.1 / (clock_ticks as f64 * secs);
    let digits = (-tenth_tick.log10()).round().clamp(0.0, 9.0) as i32;
    let scale = 10f64.powi(digits);
    (ticks as f64 / clock_ticks as f64 / secs * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Pattern, WatchRule};

    const STAT: &[u8] = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 3 0 12345 100000000 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_stat_with_any_name() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.name, "my (odd) name");
        assert_eq!(stat.ticks, 200);
        assert_eq!(stat.start, 12345);
        assert_eq!(stat.rss_pages, 2560);
        let binary = b"1 (\xff\xfe) S 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 7 0\n";
        assert_eq!(parse_stat(binary).unwrap().name, "\u{fffd}\u{fffd}");
    }

    #[test]
    fn bad_stat_is_an_error() {
        for bad in [
            &b""[..],
            b"1 name S 1",
            b"1 (x) S 1 2",
            b"1 )x( S 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 7 0",
            b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 a 2 0 0 20 0 1 0 5 0 7 0",
        ] {
            assert!(
                parse_stat(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn command_lines_are_joined_and_cut_at_a_character() {
        assert_eq!(
            command_line(b"nginx: master\0-g\0daemon off;\0", "nginx", 100),
            "nginx: master -g daemon off;"
        );
        assert_eq!(command_line(b"", "kworker/0:1", 100), "[kworker/0:1]");
        assert_eq!(command_line("aé".as_bytes(), "x", 2), "a");
        assert_eq!(command_line(b"abcdef", "x", 3), "abc");
    }

    #[test]
    fn status_and_passwd() {
        assert_eq!(
            parse_status_uid("Name:\tx\nUid:\t0\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nbad line\nalice:x:1000:1000::/home/alice:/bin/sh\n:x:5:5::/:\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users[&1000], "alice");
    }

    /// A /proc tree with the given (pid, name, ticks, start, rss pages,
    /// cmdline). Files are rewritten in place, as /proc shows new figures
    /// through a file kept open.
    fn tree(dir: &std::path::Path, procs: &[(u32, &str, u64, u64, u64, &str)]) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let pid: u32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            if !procs.iter().any(|p| p.0 == pid) {
                std::fs::remove_dir_all(path).unwrap();
            }
        }
        for (pid, name, ticks, start, rss, cmdline) in procs {
            let d = dir.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} ({name}) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 {start} 0 {rss} 0\n"),
            )
            .unwrap();
            std::fs::write(d.join("cmdline"), cmdline.replace(' ', "\0")).unwrap();
            std::fs::write(d.join("status"), "Uid:\t0\t1000\t0\t0\n").unwrap();
        }
    }

    const KERNEL: Kernel = Kernel {
        clock_ticks: 100,
        page_size: 4096,
    };

    /// (pid, name, ticks, start, rss pages, cmdline), as [`tree`] writes them.
    type Proc = (u32, &'static str, u64, u64, u64, &'static str);

    const FIRST_TICK: &[Proc] = &[
        (1, "nginx", 100, 10, 100, "nginx: master"),
        (2, "nginx", 100, 11, 300, "nginx: worker"),
        (3, "java", 0, 12, 5000, "/usr/bin/java -jar api.jar"),
        (4, "busy", 0, 13, 10, "busy --loop"),
    ];

    /// Two seconds later: busy used 2 cores; pid 2 exited and its pid was
    /// reused by a new process, which started since the last tick.
    const SECOND_TICK: &[Proc] = &[
        (1, "nginx", 150, 10, 100, "nginx: master"),
        (2, "sh", 20, 99, 1, "sh -c true"),
        (3, "java", 0, 12, 5000, "/usr/bin/java -jar api.jar"),
        (4, "busy", 400, 13, 10, "busy --loop"),
    ];

    /// Top 1, and three watched processes: by name, by pattern, and one
    /// that never runs.
    fn watching() -> ProcessesConfig {
        ProcessesConfig {
            top: 1,
            command_max_bytes: 64,
            watch: vec![
                WatchRule {
                    name: "nginx".into(),
                    pattern: None,
                },
                WatchRule {
                    name: "api".into(),
                    pattern: Some(Pattern::search("java .*api\\.jar").unwrap()),
                },
                WatchRule {
                    name: "absent".into(),
                    pattern: None,
                },
            ],
        }
    }

    /// A /proc tree of its own, sampled by one [`State`] tick after tick.
    struct FakeHost {
        _dir: tempfile::TempDir,
        proc_dir: std::path::PathBuf,
        state: State,
        fs: ProcFs,
        start: Instant,
    }

    impl FakeHost {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let passwd = dir.path().join("passwd");
            std::fs::write(&passwd, "alice:x:1000:1000::/:/bin/sh\n").unwrap();
            let proc_dir = dir.path().join("proc");
            std::fs::create_dir(&proc_dir).unwrap();
            FakeHost {
                fs: ProcFs::new(proc_dir.clone()),
                _dir: dir,
                proc_dir,
                state: State::new(passwd),
                start: Instant::now(),
            }
        }

        /// Samples `procs`, `secs` seconds after the first tick; every
        /// process reads cleanly.
        fn tick(
            &mut self,
            settings: &ProcessesConfig,
            secs: u64,
            procs: &[Proc],
        ) -> (Samples, Option<Vec<ProcessInfo>>) {
            tree(&self.proc_dir, procs);
            let mut out = Samples::default();
            let mut problems = Vec::new();
            let snapshot = self.state.sample(
                &mut self.fs,
                settings,
                KERNEL,
                Some(1000),
                self.start + Duration::from_secs(secs),
                &mut out,
                &mut |e| problems.push(e),
            );
            assert!(problems.is_empty(), "{problems:?}");
            (out, snapshot)
        }
    }

    #[test]
    fn the_first_tick_counts_watched_processes_without_cpu() {
        let (out, snapshot) = FakeHost::new().tick(&watching(), 0, FIRST_TICK);
        assert!(snapshot.is_none(), "no CPU figures at the first tick");
        assert_eq!(out.get("host_processes", &[]), Some(4.0));
        assert_eq!(
            out.get("host_process_running", &[("name", "nginx")]),
            Some(2.0)
        );
        assert_eq!(
            out.get("host_process_resident_bytes", &[("name", "nginx")]),
            Some(400.0 * 4096.0)
        );
        assert!(
            out.get("host_process_cpu_cores", &[("name", "nginx")])
                .is_none()
        );
        assert_eq!(
            out.get("host_process_running", &[("name", "api")]),
            Some(1.0)
        );
        assert_eq!(
            out.get("host_process_running", &[("name", "absent")]),
            Some(0.0)
        );
    }

    #[test]
    fn the_second_tick_has_cpu_and_the_top_n_by_cpu_and_by_memory() {
        let mut host = FakeHost::new();
        host.tick(&watching(), 0, FIRST_TICK);
        let (out, snapshot) = host.tick(&watching(), 2, SECOND_TICK);
        assert_eq!(
            out.get("host_process_running", &[("name", "nginx")]),
            Some(1.0)
        );
        assert_eq!(
            out.get("host_process_cpu_cores", &[("name", "nginx")]),
            Some(0.25)
        );
        // Top 1 by CPU (busy) and top 1 by memory (java).
        let snapshot = snapshot.unwrap();
        let names: Vec<_> = snapshot.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["busy", "java"]);
        let busy = &snapshot[0];
        assert_eq!(busy.cpu_cores, 2.0);
        assert_eq!(busy.command, "busy --loop");
        assert_eq!(busy.user, "alice");
        assert_eq!(busy.rss_bytes, 10 * 4096);
        assert_eq!(busy.start_time_ms, 1_000_000 + 130);
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let mut host = FakeHost::new();
        host.tick(&watching(), 0, FIRST_TICK);
        host.tick(&watching(), 2, SECOND_TICK);
        // The reused pid's new process used all its 20 ticks since the last tick.
        let settings = ProcessesConfig {
            top: 2,
            ..watching()
        };
        let third = [
            (2, "sh", 20, 99, 1, "sh -c true"),
            (5, "new", 50, 200, 1, "new"),
        ];
        let (_, snapshot) = host.tick(&settings, 3, &third);
        let snapshot = snapshot.unwrap();
        let new = snapshot.iter().find(|p| p.pid == 5).unwrap();
        assert_eq!(new.cpu_cores, 0.5);
        let sh = snapshot.iter().find(|p| p.pid == 2).unwrap();
        assert_eq!(sh.cpu_cores, 0.0);
        assert_eq!(sh.command, "sh -c true");
    }

    #[test]
    fn an_unreadable_or_garbled_process_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("proc");
        std::fs::create_dir_all(proc_dir.join("7")).unwrap();
        std::fs::write(proc_dir.join("7/stat"), "garbage").unwrap();
        // A pid directory without a stat file: exited mid-read.
        std::fs::create_dir_all(proc_dir.join("8")).unwrap();
        let mut state = State::new(dir.path().join("no-passwd"));
        let mut fs = ProcFs::new(proc_dir);
        let mut problems = Vec::new();
        let mut out = Samples::default();
        state.sample(
            &mut fs,
            &ProcessesConfig::default(),
            KERNEL,
            None,
            Instant::now(),
            &mut out,
            &mut |e| problems.push(e),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(out.get("host_processes", &[]), Some(0.0));
    }

    #[test]
    fn cpu_is_rounded_below_a_tick_and_is_a_short_decimal() {
        for (clock_ticks, secs) in [
            (100, 0.1),
            (100, 1.0),
            (100, 10.004_321),
            (100, 30.0),
            (100, 60.0),
            (1000, 10.0),
            (100, 900.0),
        ] {
            let tick = 1.0 / (clock_ticks as f64 * secs);
            for ticks in [0u64, 1, 7, 99, 1234, 1_000_000] {
                let exact = ticks as f64 * tick;
                let rounded = cpu_cores(ticks, clock_ticks, secs);
                assert!(
                    (rounded - exact).abs() <= tick / 6.0,
                    "{ticks} ticks of {clock_ticks}/s over {secs} s: {rounded} for {exact}"
                );
                // At most as many decimals as a tenth of a tick needs.
                let text = rounded.to_string();
                let decimals = text.split('.').nth(1).map_or(0, str::len);
                assert!(
                    decimals as f64 <= (-(tick / 10.0).log10()).round(),
                    "{text} for {secs} s"
                );
            }
        }
    }
}
