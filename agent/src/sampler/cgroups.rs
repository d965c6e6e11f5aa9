//! Per-service resources from cgroup v2: for each systemd service under
//! the `[cgroups]` slices (`system.slice/*.service`, and the template
//! instances in its nested slices such as `system-getty.slice`), CPU time
//! (`cpu.stat`), memory now and at its peak (`memory.current`,
//! `memory.peak`), bytes read and written summed over devices (`io.stat`)
//! and the stall totals of `cpu.pressure`, `memory.pressure` and
//! `io.pressure`.
//!
//! Series stay bounded: at most `limit` services have series of their
//! own, chosen by CPU used since the previous ranking and by memory (in
//! turns); everything else the slices used is `unit="other"`. Ranking
//! reads two small files of every service, so it happens only every
//! `rank_interval` (and never while all services fit); each tick reads
//! the chosen services' files, kept open, and three files per slice.
//!
//! `other` is derived from the slices, whose figures include their
//! children's, also those gone: its memory is the slices' less the
//! chosen services' (a gauge); its CPU and I/O are counters since the
//! agent started, adding each tick what the slices used less what the
//! chosen services used. So `other` never goes down when a service
//! enters or leaves the chosen set (a sum of the services' own counters
//! would: a reset to Prometheus, or a leap), and the rates of all series
//! add up to the slices'. `other` has no peak and no pressure: neither
//! is a sum.
//!
//! A service restarted gets a new cgroup (a new inode in the listing)
//! whose counters start at zero: a counter reset, as Prometheus' `rate`
//! expects. Files a kernel or configuration does not provide (no
//! `memory.peak` before Linux 5.19, no memory or io controller enabled,
//! PSI disabled) give no series and are not problems. A host without
//! cgroup v2 at `root` is told once; a service gone between the listing
//! and the reading, a name that cannot be a label value, an unreadable
//! or malformed file are counted (`family="cgroups"`) and skipped.

#![cfg(target_os = "linux")]

use super::{ParseError, ProcFs, Samples, pressure};
use crate::config::{CgroupsConfig, Pattern};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::os::unix::fs::DirEntryExt;
use std::path::PathBuf;
use std::time::Instant;

/// The `unit` label of the series summing what the other services used.
pub(crate) const OTHER: &str = "other";

/// How deep nested slices are searched for services.
const MAX_DEPTH: usize = 8;

/// Files kept open between ticks, at most: far below the 1024 descriptors
/// systemd gives a service by default, whatever `limit` is; beyond it,
/// files are opened for each read.
const MAX_KEPT_OPEN: usize = 512;

/// (resource, file) of the pressure files.
const PRESSURE: [(&str, &str); 3] = [
    ("cpu", "cpu.pressure"),
    ("memory", "memory.pressure"),
    ("io", "io.pressure"),
];

/// `usage_usec` of `cpu.stat`: microseconds of CPU.
pub(super) fn parse_cpu_stat(text: &str) -> Result<u64, ParseError> {
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("usage_usec ") {
            return value
                .trim()
                .parse()
                .map_err(|_| ParseError::new(format!("usage_usec {value:?} is not a number")));
        }
    }
    Err(ParseError::new("no usage_usec line"))
}

/// A file holding one number of bytes (`memory.current`, `memory.peak`).
pub(super) fn parse_bytes(text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    text.parse()
        .map_err(|_| ParseError::new(format!("{text:?} is not a number of bytes")))
}

/// Bytes read and written, summed over the devices of `io.stat`
/// (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per line; no
/// line when the group did no I/O).
pub(super) fn parse_io_stat(text: &str) -> Result<(u64, u64), ParseError> {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_ascii_whitespace();
        if !parts.next().is_some_and(|device| device.contains(':')) {
            return Err(ParseError::new(format!("no major:minor in {line:?}")));
        }
        let (mut r, mut w) = (None, None);
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((key @ ("rbytes" | "wbytes"), value)) => (key, value),
                _ => continue,
            };
            let value = value
                .parse::<u64>()
                .map_err(|_| ParseError::new(format!("{key} {value:?} is not a number")))?;
            match key {
                "rbytes" => r = Some(value),
                _ => w = Some(value),
            }
        }
        match (r, w) {
            (Some(r), Some(w)) => {
                read = read.saturating_add(r);
                written = written.saturating_add(w);
            }
            _ => return Err(ParseError::new(format!("no rbytes or wbytes in {line:?}"))),
        }
    }
    Ok((read, written))
}

/// The cgroup is gone: removed since it was listed, or a file kept open
/// belongs to a removed cgroup.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ENODEV)
}

/// Reads files under the cgroup root into one reused buffer, keeping the
/// chosen services' files open between ticks (a read at offset 0 makes
/// the kernel write them anew): on the cgroup file system an open costs
/// several reads (docs/benchmarks.md).
struct Files {
    fs: ProcFs<String>,
}

impl Files {
    fn new(root: PathBuf) -> Self {
        Files {
            fs: ProcFs::new(root),
        }
    }

    /// `relative`'s text; with `keep`, the file stays open for the next tick.
    fn read(&mut self, relative: &str, keep: bool) -> io::Result<&str> {
        self.fs.read_keeping(relative, |kept| {
            (keep && kept < MAX_KEPT_OPEN).then(|| relative.to_owned())
        })
    }

    /// Reads and parses `relative`: `Ok(None)` when it does not exist
    /// (its cgroup gone, or a file this kernel or configuration does not
    /// provide) or PSI is disabled (`EOPNOTSUPP`); `Err` says what failed.
    fn parse<T>(
        &mut self,
        relative: &str,
        keep: bool,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<Option<T>, String> {
        match self.read(relative, keep) {
            Ok(text) => match parse(text) {
                Ok(value) => Ok(Some(value)),
                Err(e) => Err(format!("{}: {e}", self.show(relative))),
            },
            Err(e) if gone(&e) || e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.show(relative))),
        }
    }

    /// Closes the files kept open in the directory `dir`.
    fn forget(&mut self, dir: &str) {
        self.fs
            .kept
            .retain(|path, _| !(path.starts_with(dir) && path[dir.len()..].starts_with('/')));
    }

    /// The path of `relative` for messages.
    fn show(&self, relative: &str) -> String {
        self.fs.root.join(relative).display().to_string()
    }
}

/// One service found in the listing.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    /// The unit's name, the `unit` label.
    name: String,
    /// Its directory, relative to the root.
    path: String,
    /// The directory's inode: a new one is a new cgroup (a restart).
    ino: u64,
}

/// The counters of one cgroup at one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    cpu_usec: Option<u64>,
    /// Bytes read and written.
    io: Option<(u64, u64)>,
}

impl Counters {
    /// What was used since `before`; `None` for a counter one side lacks.
    /// A counter gone down restarted from zero: all of it is new.
    fn since(&self, before: &Counters) -> Counters {
        let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
        Counters {
            cpu_usec: self.cpu_usec.zip(before.cpu_usec).map(|(n, t)| delta(n, t)),
            io: self
                .io
                .zip(before.io)
                .map(|(n, t)| (delta(n.0, t.0), delta(n.1, t.1))),
        }
    }
}

/// A service with series of its own.
#[derive(Debug)]
struct Member {
    path: String,
    ino: u64,
    /// Its counters at the previous tick it was read, with this inode.
    last: Option<Counters>,
    /// Files it does not have (a controller not enabled, an older kernel,
    /// PSI off): not looked for again until the next `rank_interval`, so
    /// a host without them does not pay a failed open per file and tick.
    absent: Vec<&'static str>,
}

/// A counter summed from differences: never goes down, whatever order
/// the slices' and the services' readings came in.
#[derive(Debug, Default)]
struct Accumulated {
    sum: i128,
    shown: u64,
}

impl Accumulated {
    fn add(&mut self, delta: i128) {
        self.sum += delta;
        let sum = u64::try_from(self.sum.max(0)).unwrap_or(u64::MAX);
        self.shown = self.shown.max(sum);
    }
}

/// What `other` has counted since the agent started.
#[derive(Debug, Default)]
struct Other {
    cpu_usec: Accumulated,
    read: Accumulated,
    written: Accumulated,
}

/// Whether `root` is a cgroup v2 hierarchy, once known.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hierarchy {
    Unknown,
    V2,
    /// Told once; nothing more is read.
    NotV2,
}

/// The family's state between ticks.
pub(super) struct State {
    /// The root and slices this state was built for: another configuration
    /// starts afresh.
    configured: Option<(PathBuf, Vec<String>)>,
    files: Files,
    hierarchy: Hierarchy,
    /// Slices found missing, told once each until they appear.
    missing: HashSet<String>,
    /// The services with series of their own, by name.
    members: BTreeMap<String, Member>,
    ranked_at: Option<Instant>,
    /// Every service's (inode, CPU microseconds) at the last ranking.
    ranking: HashMap<String, (u64, u64)>,
    /// Each slice's counters at the previous tick.
    slices: HashMap<String, Counters>,
    other: Other,
    unit_names: UnitNames,
}

/// Which directory names the `units` pattern takes, remembered between
/// listings: the slices are listed every tick and their names rarely
/// change, so each name is matched once while it stays (the pattern is
/// `regex_lite`'s, without `regex`'s literal shortcuts). A name missing
/// from a listing is forgotten, so this holds one listing's names.
#[derive(Debug, Default)]
struct UnitNames {
    /// The pattern's source these answers are for.
    pattern: String,
    /// Each name: whether it is a unit, and the listing it was last in.
    seen: HashMap<String, (bool, u64)>,
    listing: u64,
}

impl UnitNames {
    /// Starts a listing by `pattern`; another pattern than the last
    /// listing's (a reload) forgets every answer.
    fn start(&mut self, pattern: &Pattern) {
        if self.pattern != pattern.as_str() {
            self.seen.clear();
            pattern.as_str().clone_into(&mut self.pattern);
        }
        self.listing += 1;
    }

    /// Whether `name` is a unit, by the pattern given to `start`.
    fn is_unit(&mut self, pattern: &Pattern, name: &str) -> bool {
        let listing = self.listing;
        if let Some((unit, seen)) = self.seen.get_mut(name) {
            *seen = listing;
            return *unit;
        }
        let unit = pattern.is_match(name);
        self.seen.insert(name.to_owned(), (unit, listing));
        unit
    }

    /// Ends the listing: names it did not have are forgotten.
    fn finish(&mut self) {
        let listing = self.listing;
        self.seen.retain(|_, (_, seen)| *seen == listing);
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            configured: None,
            files: Files::new(PathBuf::new()),
            hierarchy: Hierarchy::Unknown,
            missing: HashSet::new(),
            members: BTreeMap::new(),
            ranked_at: None,
            ranking: HashMap::new(),
            slices: HashMap::new(),
            other: Other::default(),
            unit_names: UnitNames::default(),
        }
    }
}

/// A unit name usable as a label value: UTF-8 (checked by the caller),
/// no control characters (which would break lines of the text format),
/// not `other`. File names are at most 255 bytes, far within a label's
/// bound.
fn usable(name: &str) -> bool {
    !name.chars().any(char::is_control) && name != OTHER
}

impl State {
    /// Appends the services' series for one tick; returns the problems.
    pub(super) fn sample(
        &mut self,
        config: &CgroupsConfig,
        now: Instant,
        out: &mut Samples,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let configured = (config.root.clone(), config.slices.clone());
        if self.configured.as_ref() != Some(&configured) {
            *self = State {
                files: Files::new(config.root.clone()),
                configured: Some(configured),
                ..State::default()
            };
        }
        match self.hierarchy {
            Hierarchy::NotV2 => return problems,
            Hierarchy::V2 => {}
            Hierarchy::Unknown => match self.check_hierarchy() {
                Ok(Hierarchy::NotV2) => {
                    self.hierarchy = Hierarchy::NotV2;
                    problems.push(self.not_v2());
                    return problems;
                }
                Ok(found) => self.hierarchy = found,
                Err(problem) => {
                    problems.push(problem);
                    return problems;
                }
            },
        }

        let listed = self.list(config, &mut problems);
        out.push("host_services", listed.len() as f64);
        self.choose(&listed, config, now, &mut problems);

        // What the chosen services used since the last tick, where known.
        let (mut used_cpu, mut used_read, mut used_written) = (0u64, 0u64, 0u64);
        let mut unit_memory = 0u64;
        let mut vanished = Vec::new();
        let names: Vec<String> = self.members.keys().cloned().collect();
        for name in names {
            match self.read_member(&name, out, &mut problems) {
                Some((delta, member_memory)) => {
                    // Known differences leave `other`; unknown ones (a
                    // service new to the chosen set) stay in it.
                    used_cpu = used_cpu.saturating_add(delta.cpu_usec.unwrap_or(0));
                    let (read, written) = delta.io.unwrap_or_default();
                    used_read = used_read.saturating_add(read);
                    used_written = used_written.saturating_add(written);
                    unit_memory = unit_memory.saturating_add(member_memory.unwrap_or(0));
                }
                None => vanished.push(name),
            }
        }
        for name in vanished {
            if let Some(member) = self.members.remove(&name) {
                self.files.forget(&member.path);
            }
        }

        // The slices, then `other`.
        let mut slices_used = Some(Counters {
            cpu_usec: Some(0),
            io: Some((0, 0)),
        });
        let mut memory = Some(0u64);
        for slice in &config.slices {
            let (counters, slice_memory) = match self.read_slice(slice, &mut problems) {
                SliceReading::Read(counters, memory) => (counters, memory),
                // No services there either (told by the listing).
                SliceReading::Missing => {
                    self.slices.remove(slice);
                    continue;
                }
                SliceReading::Unreadable => {
                    // The next tick has no difference either: `other`
                    // misses these ticks rather than counting twice.
                    self.slices.clear();
                    slices_used = None;
                    memory = None;
                    break;
                }
            };
            memory = memory.zip(slice_memory).map(|(a, b)| a.saturating_add(b));
            let before = self.slices.insert(slice.clone(), counters);
            slices_used = slices_used.zip(before).map(|(sum, before)| {
                let delta = counters.since(&before);
                Counters {
                    cpu_usec: sum
                        .cpu_usec
                        .zip(delta.cpu_usec)
                        .map(|(a, b)| a.saturating_add(b)),
                    io: sum
                        .io
                        .zip(delta.io)
                        .map(|(a, b)| (a.0.saturating_add(b.0), a.1.saturating_add(b.1))),
                }
            });
        }
        let other = &mut self.other;
        if let Some(slices) = slices_used {
            if let Some(cpu) = slices.cpu_usec {
                other.cpu_usec.add(i128::from(cpu) - i128::from(used_cpu));
            }
            if let Some((read, written)) = slices.io {
                other.read.add(i128::from(read) - i128::from(used_read));
                other
                    .written
                    .add(i128::from(written) - i128::from(used_written));
            }
        }
        let labels = || vec![("unit", OTHER.to_owned())];
        if !self.slices.is_empty() {
            out.push_labeled(
                "host_service_cpu_seconds_total",
                labels(),
                other.cpu_usec.shown as f64 / 1e6,
            );
            if self.slices.values().all(|c| c.io.is_some()) {
                out.push_labeled(
                    "host_service_io_read_bytes_total",
                    labels(),
                    other.read.shown as f64,
                );
                out.push_labeled(
                    "host_service_io_written_bytes_total",
                    labels(),
                    other.written.shown as f64,
                );
            }
        }
        if let Some(memory) = memory.filter(|_| !self.slices.is_empty()) {
            out.push_labeled(
                "host_service_memory_bytes",
                labels(),
                memory.saturating_sub(unit_memory) as f64,
            );
        }
        problems
    }

    /// Whether the root is cgroup v2: only v2 has `cgroup.controllers`.
    fn check_hierarchy(&self) -> Result<Hierarchy, String> {
        match std::fs::metadata(self.files.fs.root.join("cgroup.controllers")) {
            Ok(_) => Ok(Hierarchy::V2),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Hierarchy::NotV2),
            Err(e) => Err(format!("{}: {e}", self.files.show("cgroup.controllers"))),
        }
    }

    fn not_v2(&self) -> String {
        let root = &self.files.fs.root;
        let hint = if root.join("unified/cgroup.controllers").exists() {
            format!(
                "; this host mounts cgroup v2 at {}: set cgroups.root to it",
                root.join("unified").display()
            )
        } else {
            String::new()
        };
        format!(
            "{}: not a cgroup v2 hierarchy (no cgroup.controllers), so no per-service \
             figures (told once){hint}",
            root.display()
        )
    }

    /// The services under the configured slices, in the order found.
    fn list(&mut self, config: &CgroupsConfig, problems: &mut Vec<String>) -> Vec<Listed> {
        let mut listed = Vec::new();
        let mut names = HashSet::new();
        self.unit_names.start(&config.units);
        for slice in &config.slices {
            match std::fs::read_dir(self.files.fs.root.join(slice)) {
                Ok(entries) => {
                    self.missing.remove(slice);
                    let listing = Listing {
                        files: &self.files,
                        config,
                        names: &mut self.unit_names,
                        listed: &mut listed,
                        problems,
                    };
                    walk(listing, slice, entries, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.missing.insert(slice.clone()) {
                        problems.push(format!(
                            "{}: no such slice (told once until it appears)",
                            self.files.show(slice)
                        ));
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", self.files.show(slice))),
            }
        }
        self.unit_names.finish();
        listed.retain(|l| {
            let first = names.insert(l.name.clone());
            if !first {
                problems.push(format!(
                    "{}: {:?} is listed twice, only its first cgroup is read",
                    self.files.show(&l.path),
                    l.name
                ));
            }
            first
        });
        listed
    }

    /// Updates the chosen set from this tick's listing: services gone
    /// leave it; with no more services than `limit` all are in it;
    /// otherwise it is ranked anew every `rank_interval`.
    fn choose(
        &mut self,
        listed: &[Listed],
        config: &CgroupsConfig,
        now: Instant,
        problems: &mut Vec<String>,
    ) {
        let by_name: HashMap<&str, &Listed> = listed.iter().map(|l| (l.name.as_str(), l)).collect();
        let files = &mut self.files;
        self.members
            .retain(|name, member| match by_name.get(name.as_str()) {
                Some(l) => {
                    if l.ino != member.ino || l.path != member.path {
                        // Restarted: a new cgroup, its counters from zero.
                        files.forget(&member.path);
                        member.ino = l.ino;
                        member.path = l.path.clone();
                        member.last = member.last.map(|_| Counters {
                            cpu_usec: Some(0),
                            io: Some((0, 0)),
                        });
                        member.absent.clear();
                    }
                    true
                }
                None => {
                    files.forget(&member.path);
                    false
                }
            });
        let due = self
            .ranked_at
            .is_none_or(|at| now.saturating_duration_since(at) >= config.rank_interval);
        if due {
            self.ranked_at = Some(now);
            for member in self.members.values_mut() {
                member.absent.clear();
            }
        }
        let chosen: Vec<&Listed> = if listed.len() <= config.limit {
            listed.iter().collect()
        } else if due || self.members.len() > config.limit {
            let names = self.rank(listed, config.limit, problems);
            let files = &mut self.files;
            self.members.retain(|name, member| {
                let keep = names.contains(name.as_str());
                if !keep {
                    files.forget(&member.path);
                }
                keep
            });
            listed
                .iter()
                .filter(|l| names.contains(l.name.as_str()))
                .collect()
        } else {
            return;
        };
        for l in chosen {
            self.members
                .entry(l.name.clone())
                .or_insert_with(|| Member {
                    path: l.path.clone(),
                    ino: l.ino,
                    last: None,
                    absent: Vec::new(),
                });
        }
    }

    /// The names of the `limit` heaviest services, taken in turns from the
    /// ranking by CPU used since the previous ranking (all of it for a
    /// service new since) and the ranking by memory now.
    fn rank(
        &mut self,
        listed: &[Listed],
        limit: usize,
        problems: &mut Vec<String>,
    ) -> HashSet<String> {
        let mut by_cpu = Vec::with_capacity(listed.len());
        let mut by_memory = Vec::with_capacity(listed.len());
        let mut ranking = HashMap::with_capacity(listed.len());
        for l in listed {
            let usage =
                match self
                    .files
                    .parse(&format!("{}/cpu.stat", l.path), false, parse_cpu_stat)
                {
                    Ok(Some(usage)) => usage,
                    Ok(None) => {
                        problems.push(vanished(&self.files, l));
                        continue;
                    }
                    Err(problem) => {
                        problems.push(problem);
                        continue;
                    }
                };
            let used = match self.ranking.get(&l.name) {
                Some((ino, before)) if *ino == l.ino && usage >= *before => usage - before,
                _ => usage,
            };
            ranking.insert(l.name.clone(), (l.ino, usage));
            by_cpu.push((used, l.name.as_str()));
            // None without a memory controller, or gone since cpu.stat.
            match self
                .files
                .parse(&format!("{}/memory.current", l.path), false, parse_bytes)
            {
                Ok(Some(bytes)) => by_memory.push((bytes, l.name.as_str())),
                Ok(None) => {}
                Err(problem) => problems.push(problem),
            }
        }
        self.ranking = ranking;
        // Heaviest first; equal ones by name, so the choice is stable.
        let order = |a: &(u64, &str), b: &(u64, &str)| b.0.cmp(&a.0).then(a.1.cmp(b.1));
        by_cpu.sort_by(order);
        by_memory.sort_by(order);
        let mut chosen = HashSet::with_capacity(limit);
        let (mut cpu, mut memory) = (by_cpu.iter(), by_memory.iter());
        while chosen.len() < limit {
            let (a, b) = (cpu.next(), memory.next());
            if a.is_none() && b.is_none() {
                break;
            }
            for (_, name) in a.into_iter().chain(b) {
                if chosen.len() < limit {
                    chosen.insert((*name).to_owned());
                }
            }
        }
        chosen
    }

    /// Reads one chosen service's files and appends its series; returns
    /// what it used since the previous tick (the parts known) and its
    /// memory, or `None` when its cgroup is gone.
    fn read_member(
        &mut self,
        name: &str,
        out: &mut Samples,
        problems: &mut Vec<String>,
    ) -> Option<(Counters, Option<u64>)> {
        let dir = self.members.get(name)?.path.clone();
        let files = &mut self.files;
        let file = |f: &str| format!("{dir}/{f}");
        // cpu.stat is in every cgroup v2 group: without it, the group is gone.
        let cpu_usec = match files.parse(&file("cpu.stat"), true, parse_cpu_stat) {
            Ok(Some(usage)) => Some(usage),
            Ok(None) => {
                problems.push(format!(
                    "{}: {name} vanished between listing and reading",
                    files.show(&dir)
                ));
                return None;
            }
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        let mut absent = std::mem::take(&mut self.members.get_mut(name)?.absent);
        let memory = optional(
            files,
            &dir,
            "memory.current",
            &mut absent,
            problems,
            parse_bytes,
        );
        let peak = optional(
            files,
            &dir,
            "memory.peak",
            &mut absent,
            problems,
            parse_bytes,
        );
        let io = optional(files, &dir, "io.stat", &mut absent, problems, parse_io_stat);
        let labels = || vec![("unit", name.to_owned())];
        if let Some(usage) = cpu_usec {
            out.push_labeled(
                "host_service_cpu_seconds_total",
                labels(),
                usage as f64 / 1e6,
            );
        }
        if let Some(bytes) = memory {
            out.push_labeled("host_service_memory_bytes", labels(), bytes as f64);
        }
        if let Some(bytes) = peak {
            out.push_labeled("host_service_memory_peak_bytes", labels(), bytes as f64);
        }
        if let Some((read, written)) = io {
            out.push_labeled("host_service_io_read_bytes_total", labels(), read as f64);
            out.push_labeled(
                "host_service_io_written_bytes_total",
                labels(),
                written as f64,
            );
        }
        for (resource, f) in PRESSURE {
            if let Some(lines) = optional(files, &dir, f, &mut absent, problems, pressure::parse) {
                for line in lines {
                    out.push_labeled(
                        "host_service_pressure_stalled_seconds_total",
                        vec![
                            ("unit", name.to_owned()),
                            ("resource", resource.to_owned()),
                            ("kind", line.kind.to_owned()),
                        ],
                        line.total_us as f64 / 1e6,
                    );
                }
            }
        }
        let now = Counters { cpu_usec, io };
        let member = self.members.get_mut(name)?;
        member.absent = absent;
        let used = match member.last {
            Some(before) => now.since(&before),
            // New to the chosen set: what it used since the last tick
            // is not in its own series, so it stays in `other`.
            None => Counters::default(),
        };
        member.last = Some(now);
        Some((used, memory))
    }

    /// One slice's counters and memory.
    fn read_slice(&mut self, slice: &str, problems: &mut Vec<String>) -> SliceReading {
        let files = &mut self.files;
        let file = |f: &str| format!("{slice}/{f}");
        let cpu_usec = match files.parse(&file("cpu.stat"), true, parse_cpu_stat) {
            Ok(Some(usage)) => usage,
            Ok(None) => return SliceReading::Missing,
            Err(problem) => {
                problems.push(problem);
                return SliceReading::Unreadable;
            }
        };
        let io = files.parse(&file("io.stat"), true, parse_io_stat);
        let memory = files.parse(&file("memory.current"), true, parse_bytes);
        match (io, memory) {
            (Ok(io), Ok(memory)) => SliceReading::Read(
                Counters {
                    cpu_usec: Some(cpu_usec),
                    io,
                },
                memory,
            ),
            (io, memory) => {
                problems.extend(io.err());
                problems.extend(memory.err());
                SliceReading::Unreadable
            }
        }
    }
}

/// Reads and parses the file `name` of the group `dir`, unless it was
/// found `absent` before (then `None`); a file that is not there is noted
/// in `absent`.
fn optional<T>(
    files: &mut Files,
    dir: &str,
    name: &'static str,
    absent: &mut Vec<&'static str>,
    problems: &mut Vec<String>,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Option<T> {
    if absent.contains(&name) {
        return None;
    }
    match files.parse(&format!("{dir}/{name}"), true, parse) {
        Ok(Some(value)) => Some(value),
        Ok(None) => {
            absent.push(name);
            None
        }
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

/// What reading a slice gave.
enum SliceReading {
    Read(Counters, Option<u64>),
    /// No such slice (yet).
    Missing,
    /// A file could not be read: the problem is told.
    Unreadable,
}

/// The message for a service gone since the listing.
fn vanished(files: &Files, listed: &Listed) -> String {
    format!(
        "{}: {} vanished between listing and reading",
        files.show(&listed.path),
        listed.name
    )
}

/// What a listing of the slices reads and fills.
struct Listing<'a> {
    files: &'a Files,
    config: &'a CgroupsConfig,
    names: &'a mut UnitNames,
    listed: &'a mut Vec<Listed>,
    problems: &'a mut Vec<String>,
}

/// Lists `entries` (of the directory `dir`, relative to the root): units
/// the pattern takes are services; other `.slice` directories are searched
/// in turn.
fn walk(listing: Listing<'_>, dir: &str, entries: std::fs::ReadDir, depth: usize) {
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                listing
                    .problems
                    .push(format!("{}: {e}", listing.files.show(dir)));
                continue;
            }
        };
        // From the directory entry's type: no stat per entry.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().filter(|n| usable(n)) else {
            let shown = file_name.to_string_lossy().replace(char::is_control, "?");
            if listing.config.units.is_match(&shown) {
                listing.problems.push(format!(
                    "{}: unit name {shown:?} cannot be a label value (not UTF-8, control \
                     characters, or \"{OTHER}\"): skipped, its use counts in \"{OTHER}\"",
                    listing.files.show(dir)
                ));
            }
            continue;
        };
        if listing.names.is_unit(&listing.config.units, name) {
            listing.listed.push(Listed {
                name: name.to_owned(),
                path: format!("{dir}/{name}"),
                ino: entry.ino(),
            });
        } else if name.ends_with(".slice") && depth < MAX_DEPTH {
            let path = format!("{dir}/{name}");
            match std::fs::read_dir(listing.files.fs.root.join(&path)) {
                Ok(entries) => {
                    let nested = Listing {
                        files: listing.files,
                        config: listing.config,
                        names: &mut *listing.names,
                        listed: &mut *listing.listed,
                        problems: &mut *listing.problems,
                    };
                    walk(nested, &path, entries, depth + 1);
                }
                // Removed since the listing.
                Err(e) if gone(&e) => {}
                Err(e) => listing
                    .problems
                    .push(format!("{}: {e}", listing.files.show(&path))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::{copy_over, fixture};
    use std::path::Path;
    use std::time::Duration;

    fn config(root: &Path) -> CgroupsConfig {
        CgroupsConfig {
            root: root.to_owned(),
            ..CgroupsConfig::default()
        }
    }

    #[test]
    fn unit_names_answer_as_the_pattern_and_hold_one_listing() {
        let services = Pattern::anchored(".+\\.service").unwrap();
        let mut names = UnitNames::default();
        names.start(&services);
        assert!(names.is_unit(&services, "a.service"));
        assert!(!names.is_unit(&services, "b.slice"));
        assert!(names.is_unit(&services, "a.service"), "remembered");
        names.finish();
        assert_eq!(names.seen.len(), 2);
        // A listing without b.slice forgets it.
        names.start(&services);
        assert!(names.is_unit(&services, "a.service"));
        names.finish();
        assert_eq!(names.seen.keys().collect::<Vec<_>>(), ["a.service"]);
        // A reloaded pattern answers anew, whatever was remembered.
        let timers = Pattern::anchored(".+\\.timer").unwrap();
        names.start(&timers);
        assert!(!names.is_unit(&timers, "a.service"));
        assert!(names.is_unit(&timers, "c.timer"));
        names.finish();
        assert_eq!(names.seen.len(), 2);
    }

    /// A copy of the recorded host's first tick.
    fn host_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        copy_over(&fixture("host-a/cgroup"), dir.path());
        dir
    }

    fn tick(state: &mut State, config: &CgroupsConfig, now: Instant) -> (Samples, Vec<String>) {
        let mut out = Samples::default();
        let problems = state.sample(config, now, &mut out);
        (out, problems)
    }

    fn unit(name: &str) -> [(&'static str, &str); 1] {
        [("unit", name)]
    }

    /// The units with series of their own.
    fn units(out: &Samples) -> Vec<String> {
        let mut units: Vec<String> = out
            .0
            .iter()
            .filter(|s| s.metric == "host_service_cpu_seconds_total")
            .filter_map(|s| s.labels.iter().find(|(k, _)| *k == "unit"))
            .map(|(_, v)| v.clone())
            .filter(|v| v != OTHER)
            .collect();
        units.sort();
        units
    }

    /// A cgroup with the files every v2 group has, and memory and io.
    fn write_group(dir: &Path, cpu_usec: u64, memory: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), format!("usage_usec {cpu_usec}\n")).unwrap();
        std::fs::write(dir.join("memory.current"), format!("{memory}\n")).unwrap();
        std::fs::write(dir.join("io.stat"), "").unwrap();
    }

    /// A hierarchy with `services` services in system.slice, `svc<i>`
    /// with i ms of CPU and (services - i) KB of memory.
    fn generated(services: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu io memory\n").unwrap();
        let slice = dir.path().join("system.slice");
        write_group(&slice, 1 << 40, 1 << 40);
        for i in 0..services {
            let service = slice.join(format!("svc{i:03}.service"));
            write_group(&service, i as u64 * 1000, (services - i) as u64 * 1000);
        }
        dir
    }

    #[test]
    fn parses_the_files() {
        assert_eq!(
            parse_cpu_stat("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            Ok(1500)
        );
        for bad in ["", "user_usec 5\n", "usage_usec many\n", "usage_usec -1\n"] {
            assert!(parse_cpu_stat(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_bytes("4096\n"), Ok(4096));
        for bad in ["", "max\n", "-1\n", "12 KB\n"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_io_stat(
                "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n\
                 253:0 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n"
            ),
            Ok((105, 207))
        );
        assert_eq!(parse_io_stat(""), Ok((0, 0)), "no I/O yet: no line");
        for bad in [
            "rbytes=1 wbytes=2\n",
            "8:0 rbytes=1\n",
            "8:0 rbytes=x wbytes=2\n",
            "8:0 rios=1 wios=2\n",
        ] {
            assert!(parse_io_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_every_service_and_other_from_a_recorded_host() {
        let dir = host_copy();
        let config = config(dir.path());
        let mut state = State::default();
        let t0 = Instant::now();
        let (first, problems) = tick(&mut state, &config, t0);
        assert!(problems.is_empty(), "{problems:?}");
        let other = unit(OTHER);
        assert_eq!(
            first.get("host_service_cpu_seconds_total", &other),
            Some(0.0)
        );
        // 500 MB in the slice, 403 MB in its services.
        assert_eq!(first.get("host_service_memory_bytes", &other), Some(97e6));

        // Ten seconds later.
        copy_over(&fixture("host-a/cgroup2"), dir.path());
        let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(10));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(out.get("host_services", &[]), Some(4.0));
        assert_eq!(
            units(&out),
            [
                "getty@tty1.service",
                "nginx.service",
                "postgresql.service",
                "systemd-cryptsetup@luks\\x2d3f2a.service",
            ],
            "services in nested slices too; mounts and other slices are not services"
        );
        let nginx = unit("nginx.service");
        assert_eq!(
            out.get("host_service_cpu_seconds_total", &nginx),
            Some(35.0)
        );
        assert_eq!(out.get("host_service_memory_bytes", &nginx), Some(100e6));
        assert_eq!(
            out.get("host_service_memory_peak_bytes", &nginx),
            Some(150e6)
        );
        // Summed over its two devices.
        assert_eq!(
            out.get("host_service_io_read_bytes_total", &nginx),
            Some(1.1e6)
        );
        assert_eq!(
            out.get("host_service_io_written_bytes_total", &nginx),
            Some(2e6)
        );
        let pressure = |resource: &str, kind: &str| {
            out.get(
                "host_service_pressure_stalled_seconds_total",
                &[
                    ("unit", "nginx.service"),
                    ("resource", resource),
                    ("kind", kind),
                ],
            )
        };
        assert_eq!(pressure("cpu", "some"), Some(2.5));
        assert_eq!(pressure("cpu", "full"), Some(0.7));
        assert_eq!(pressure("io", "full"), Some(1.0));
        assert_eq!(pressure("memory", "some"), Some(0.0));
        assert_eq!(
            out.get(
                "host_service_memory_bytes",
                &unit("systemd-cryptsetup@luks\\x2d3f2a.service")
            ),
            Some(2e6)
        );
        // The slice used 12 s, its services 11 s: the mount and what
        // stopped services left is `other`.
        assert_eq!(out.get("host_service_cpu_seconds_total", &other), Some(1.0));
        assert_eq!(out.get("host_service_memory_bytes", &other), Some(107e6));
        assert_eq!(
            out.get("host_service_io_read_bytes_total", &other),
            Some(100e3)
        );
        assert_eq!(
            out.get("host_service_io_written_bytes_total", &other),
            Some(100e3)
        );
        assert!(out.get("host_service_memory_peak_bytes", &other).is_none());
        assert!(!out.0.iter().any(
            |s| s.metric == "host_service_pressure_stalled_seconds_total"
                && s.labels.contains(&("unit", OTHER.to_owned()))
        ));
    }

    #[test]
    fn a_restarted_service_is_a_counter_reset_and_other_stays_monotonic() {
        let dir = host_copy();
        let config = config(dir.path());
        let mut state = State::default();
        let t0 = Instant::now();
        tick(&mut state, &config, t0);
        copy_over(&fixture("host-a/cgroup2"), dir.path());
        tick(&mut state, &config, t0 + Duration::from_secs(10));
        // nginx restarts: a new cgroup (made before the old one goes, so
        // its inode differs), 1 s of CPU since; the slice used 2 s more.
        let slice = dir.path().join("system.slice");
        let new = slice.join("nginx.service.new");
        write_group(&new, 1_000_000, 20e6 as u64);
        std::fs::remove_dir_all(slice.join("nginx.service")).unwrap();
        std::fs::rename(&new, slice.join("nginx.service")).unwrap();
        write_group(&slice, 114_000_000, 430e6 as u64);
        std::fs::write(
            slice.join("io.stat"),
            "8:0 rbytes=9400000 wbytes=18900000\n253:0 rbytes=1100000 wbytes=2100000\n",
        )
        .unwrap();
        let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(20));
        assert!(problems.is_empty(), "{problems:?}");
        let nginx = unit("nginx.service");
        assert_eq!(out.get("host_service_cpu_seconds_total", &nginx), Some(1.0));
        assert!(out.get("host_service_memory_peak_bytes", &nginx).is_none());
        let other = unit(OTHER);
        assert_eq!(out.get("host_service_cpu_seconds_total", &other), Some(2.0));
        assert_eq!(
            out.get("host_service_io_read_bytes_total", &other),
            Some(100e3)
        );
        // 430 MB less 20 + 300 + 1 + 2.
        assert_eq!(out.get("host_service_memory_bytes", &other), Some(107e6));
    }

    #[test]
    fn services_moving_in_and_out_of_the_limit_keep_every_counter_monotonic() {
        let dir = generated(3);
        let slice = dir.path().join("system.slice");
        let config = CgroupsConfig {
            limit: 1,
            rank_interval: Duration::ZERO,
            ..config(dir.path())
        };
        let mut state = State::default();
        let t0 = Instant::now();
        let mut cpu = [0u64, 1000, 2000];
        let mut slice_cpu = 1u64 << 40;
        let mut last: HashMap<String, f64> = HashMap::new();
        let mut expected_other = 0.0;
        // The heavy service each tick: a new one each time, then the same twice.
        let heavy = [2, 0, 1, 2, 0, 0];
        for (n, &h) in heavy.iter().enumerate() {
            cpu[h] += 10_000_000;
            // 1 s more than the services: a stopped one's last use.
            slice_cpu += 11_000_000;
            for (i, c) in cpu.iter().enumerate() {
                write_group(&slice.join(format!("svc{i:03}.service")), *c, 1000);
            }
            write_group(&slice, slice_cpu, 1 << 40);
            let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(n as u64));
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(units(&out), [format!("svc{h:03}.service")], "tick {n}");
            if n > 0 {
                // Use of a service new to the chosen set stays in `other`:
                // its own series shows no increase for this tick.
                let new = heavy[n - 1] != h;
                expected_other += if new { 11.0 } else { 1.0 };
            }
            let other = out
                .get("host_service_cpu_seconds_total", &unit(OTHER))
                .unwrap();
            assert_eq!(other, expected_other, "tick {n}");
            for s in out.0.iter().filter(|s| s.metric.ends_with("_total")) {
                let key = format!("{}{:?}", s.metric, s.labels);
                if let Some(before) = last.insert(key.clone(), s.value) {
                    assert!(s.value >= before, "{key} went from {before} to {}", s.value);
                }
            }
        }
    }

    #[test]
    fn beyond_the_limit_services_are_ranked_only_every_rank_interval() {
        let dir = generated(500);
        let config = config(dir.path());
        let mut state = State::default();
        let t0 = Instant::now();
        let (out, problems) = tick(&mut state, &config, t0);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(out.get("host_services", &[]), Some(500.0));
        let chosen = units(&out);
        assert_eq!(chosen.len(), 50);
        // In turns: the most CPU (the highest numbers), the most memory
        // (the lowest).
        assert!(chosen.contains(&"svc499.service".to_owned()));
        assert!(chosen.contains(&"svc475.service".to_owned()));
        assert!(chosen.contains(&"svc000.service".to_owned()));
        assert!(chosen.contains(&"svc024.service".to_owned()));
        assert!(!chosen.contains(&"svc300.service".to_owned()));
        let per_unit = out
            .0
            .iter()
            .filter(|s| s.labels.iter().any(|(k, v)| *k == "unit" && v != OTHER))
            .count();
        assert!(per_unit <= 50 * 11, "{per_unit}");
        assert!(state.files.fs.kept.len() <= MAX_KEPT_OPEN);

        // svc300 gets busy: not chosen before the next ranking.
        let svc300 = dir.path().join("system.slice/svc300.service");
        write_group(&svc300, 1_000_000_000, 1000);
        let (out, _) = tick(&mut state, &config, t0 + Duration::from_secs(10));
        assert!(!units(&out).contains(&"svc300.service".to_owned()));
        let (out, _) = tick(&mut state, &config, t0 + Duration::from_secs(60));
        let chosen = units(&out);
        assert!(chosen.contains(&"svc300.service".to_owned()));
        assert_eq!(chosen.len(), 50);
    }

    #[test]
    fn open_files_stay_bounded_with_the_largest_limit() {
        let dir = generated(500);
        let config = CgroupsConfig {
            limit: crate::config::MAX_CGROUPS_LIMIT,
            ..config(dir.path())
        };
        let mut state = State::default();
        let t0 = Instant::now();
        for n in 0..2 {
            let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(n));
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(units(&out).len(), 500);
        }
        assert_eq!(state.files.fs.kept.len(), MAX_KEPT_OPEN);
    }

    #[test]
    fn a_cgroup_v1_host_is_told_once_and_not_read() {
        for (root, hint) in [
            (fixture("cgroup-v1"), true),
            (fixture("no-such-root"), false),
        ] {
            let config = config(&root);
            let mut state = State::default();
            let t0 = Instant::now();
            let (out, problems) = tick(&mut state, &config, t0);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].contains("not a cgroup v2 hierarchy"),
                "{problems:?}"
            );
            assert_eq!(
                problems[0].contains("cgroup-v1/unified"),
                hint,
                "{problems:?}"
            );
            assert!(out.0.is_empty());
            for n in 1..3 {
                let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(n));
                assert!(problems.is_empty() && out.0.is_empty(), "{problems:?}");
            }
        }
    }

    #[test]
    fn a_service_gone_between_listing_and_reading_is_counted_and_skipped() {
        let dir = host_copy();
        let config = config(dir.path());
        let slice = dir.path().join("system.slice");
        // Listed, but its files already gone, as when the kernel removes
        // the cgroup between the two.
        std::fs::create_dir(slice.join("gone.service")).unwrap();
        let mut state = State::default();
        let t0 = Instant::now();
        let (out, problems) = tick(&mut state, &config, t0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("gone.service vanished between listing and reading"));
        assert_eq!(out.get("host_services", &[]), Some(5.0));
        assert!(!units(&out).contains(&"gone.service".to_owned()));
        assert!(
            out.get("host_service_cpu_seconds_total", &unit(OTHER))
                .is_some()
        );
        // A service stopped (no longer listed) is no problem; its files
        // are closed.
        std::fs::remove_dir(slice.join("gone.service")).unwrap();
        std::fs::remove_dir_all(slice.join("nginx.service")).unwrap();
        let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(10));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!units(&out).contains(&"nginx.service".to_owned()));
        assert!(!state.files.fs.kept.keys().any(|k| k.contains("nginx")));
        assert!(state.files.fs.kept.keys().any(|k| k.contains("postgresql")));
    }

    #[test]
    fn unreadable_and_malformed_files_are_counted_and_the_rest_read() {
        let dir = host_copy();
        let slice = dir.path().join("system.slice");
        let nginx = slice.join("nginx.service");
        // EACCES, even for root: a write-only file under /proc/sys.
        std::fs::remove_file(nginx.join("io.stat")).unwrap();
        std::os::unix::fs::symlink("/proc/sys/vm/compact_memory", nginx.join("io.stat")).unwrap();
        std::fs::write(nginx.join("cpu.stat"), "garbage\n").unwrap();
        std::fs::write(slice.join("postgresql.service/memory.peak"), "lots\n").unwrap();
        std::fs::write(
            slice.join("system-getty.slice/getty@tty1.service/io.pressure"),
            "some nonsense\n",
        )
        .unwrap();
        let config = config(dir.path());
        let mut state = State::default();
        let (out, problems) = tick(&mut state, &config, Instant::now());
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("nginx.service/io.stat") && p.contains("os error 13")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("nginx.service/cpu.stat: no usage_usec"))
        );
        let nginx = unit("nginx.service");
        assert!(out.get("host_service_cpu_seconds_total", &nginx).is_none());
        assert!(
            out.get("host_service_io_read_bytes_total", &nginx)
                .is_none()
        );
        assert_eq!(out.get("host_service_memory_bytes", &nginx), Some(100e6));
        let postgresql = unit("postgresql.service");
        assert!(
            out.get("host_service_memory_peak_bytes", &postgresql)
                .is_none()
        );
        assert_eq!(
            out.get("host_service_memory_bytes", &postgresql),
            Some(300e6)
        );
        let getty = |resource: &str| {
            out.get(
                "host_service_pressure_stalled_seconds_total",
                &[
                    ("unit", "getty@tty1.service"),
                    ("resource", resource),
                    ("kind", "some"),
                ],
            )
        };
        assert!(getty("io").is_none());
        assert_eq!(getty("cpu"), Some(0.0));
    }

    #[test]
    fn names_that_cannot_be_labels_are_counted_and_skipped() {
        use std::os::unix::ffi::OsStrExt;
        let dir = host_copy();
        let slice = dir.path().join("system.slice");
        write_group(&slice.join("bad\nname.service"), 1, 1);
        write_group(
            &slice.join(std::ffi::OsStr::from_bytes(b"\xff\xfe.service")),
            1,
            1,
        );
        // Escaped as systemd escapes: kept as it is.
        write_group(&slice.join("app@a:b\\x20c.service"), 1, 1);
        // Not a service: not looked at.
        write_group(&slice.join("bad\nname.mount"), 1, 1);
        let config = config(dir.path());
        let mut state = State::default();
        let (out, problems) = tick(&mut state, &config, Instant::now());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .all(|p| p.contains("cannot be a label value"))
        );
        assert_eq!(out.get("host_services", &[]), Some(5.0));
        assert!(units(&out).contains(&"app@a:b\\x20c.service".to_owned()));
    }

    #[test]
    fn files_a_kernel_or_configuration_lacks_give_no_series_and_no_problem() {
        let dir = host_copy();
        let remove = |names: &[&str]| {
            for entry in walkdir(dir.path()) {
                if names.iter().any(|n| entry.ends_with(n)) {
                    std::fs::remove_file(&entry).unwrap();
                }
            }
        };
        // Before Linux 5.19: no memory.peak.
        remove(&["memory.peak"]);
        let config = config(dir.path());
        let mut state = State::default();
        let (out, problems) = tick(&mut state, &config, Instant::now());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            !out.0
                .iter()
                .any(|s| s.metric == "host_service_memory_peak_bytes")
        );
        assert!(
            out.get("host_service_memory_bytes", &unit("nginx.service"))
                .is_some()
        );
        // No memory or io controller delegated (a hybrid host's unified
        // hierarchy): CPU and pressure only.
        remove(&["memory.current", "io.stat"]);
        let mut state = State::default();
        let (out, problems) = tick(&mut state, &config, Instant::now());
        assert!(problems.is_empty(), "{problems:?}");
        let metrics: HashSet<&str> = out.0.iter().map(|s| s.metric).collect();
        assert_eq!(
            metrics,
            HashSet::from([
                "host_services",
                "host_service_cpu_seconds_total",
                "host_service_pressure_stalled_seconds_total",
            ])
        );
        assert!(
            out.get("host_service_cpu_seconds_total", &unit(OTHER))
                .is_some()
        );
    }

    #[test]
    fn a_file_found_absent_is_looked_for_again_only_every_rank_interval() {
        let dir = host_copy();
        let peak = dir.path().join("system.slice/nginx.service/memory.peak");
        std::fs::remove_file(&peak).unwrap();
        let config = config(dir.path());
        let mut state = State::default();
        let t0 = Instant::now();
        let nginx = unit("nginx.service");
        let (out, _) = tick(&mut state, &config, t0);
        assert!(out.get("host_service_memory_peak_bytes", &nginx).is_none());
        std::fs::write(&peak, "150000000\n").unwrap();
        let (out, _) = tick(&mut state, &config, t0 + Duration::from_secs(10));
        assert!(out.get("host_service_memory_peak_bytes", &nginx).is_none());
        let (out, _) = tick(&mut state, &config, t0 + Duration::from_secs(60));
        assert_eq!(
            out.get("host_service_memory_peak_bytes", &nginx),
            Some(150e6)
        );
    }

    /// Every file under `dir`.
    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walkdir(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    #[test]
    fn a_missing_slice_is_told_once_until_it_appears() {
        let dir = host_copy();
        let config = CgroupsConfig {
            slices: vec!["system.slice".to_owned(), "machine.slice".to_owned()],
            ..config(dir.path())
        };
        let mut state = State::default();
        let t0 = Instant::now();
        let (out, problems) = tick(&mut state, &config, t0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("machine.slice: no such slice"));
        assert_eq!(units(&out).len(), 4);
        let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(10));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            out.get("host_service_cpu_seconds_total", &unit(OTHER))
                .is_some()
        );
        // It appears, with a virtual machine's service.
        write_group(&dir.path().join("machine.slice"), 5_000_000, 0);
        write_group(&dir.path().join("machine.slice/vm1.service"), 4_000_000, 0);
        let (out, problems) = tick(&mut state, &config, t0 + Duration::from_secs(20));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(units(&out).len(), 5);
    }
}
