//! File system space and inodes per mount point, from the mount table
//! (`/proc/self/mountinfo`) and `statvfs`. Mounts are filtered by type and
//! mount point (configuration `[filesystems]`).

#![cfg(target_os = "linux")]

use super::{ParseError, Samples};
use crate::config::FilesystemsConfig;
use nix::errno::Errno;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One line of mountinfo, the fields the agent uses.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mount {
    pub(super) mountpoint: String,
    pub(super) fstype: String,
    pub(super) device: String,
}

/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`:
/// the mount point is the fifth field; type and source follow the `-`.
pub(super) fn parse_line(line: &str) -> Result<Mount, ParseError> {
    let (before, after) = line
        .split_once(" - ")
        .ok_or_else(|| ParseError::new(format!("no separator in {line:?}")))?;
    let mountpoint = before
        .split(' ')
        .nth(4)
        .ok_or_else(|| ParseError::new(format!("no mount point in {line:?}")))?;
    let mut after = after.split(' ');
    let (Some(fstype), Some(device)) = (after.next(), after.next()) else {
        return Err(ParseError::new(format!("no type or source in {line:?}")));
    };
    Ok(Mount {
        mountpoint: unescape(mountpoint),
        fstype: unescape(fstype),
        device: unescape(device),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(value) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts to report: filtered, and one per mount point (the last, which
/// hides the ones mounted under it). Malformed lines are returned as problems.
pub(super) fn mounts(text: &str, settings: &FilesystemsConfig) -> (Vec<Mount>, Vec<ParseError>) {
    let mut mounts: Vec<Mount> = Vec::new();
    let mut problems = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Ok(mount) => {
                mounts.retain(|m| m.mountpoint != mount.mountpoint);
                if !settings.exclude_types.contains(&mount.fstype)
                    && !settings.exclude_mountpoints.is_match(&mount.mountpoint)
                {
                    mounts.push(mount);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    (mounts, problems)
}

/// The figures of one file system, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FsFigures {
    size: u64,
    free: u64,
    available: u64,
    inodes: u64,
    inodes_free: u64,
}

/// `statvfs` of a mount point, in bytes and inodes.
fn statvfs(mountpoint: &str) -> Result<FsFigures, Errno> {
    let stat = nix::sys::statvfs::statvfs(mountpoint)?;
    let block = stat.fragment_size();
    Ok(FsFigures {
        size: stat.blocks() * block,
        free: stat.blocks_free() * block,
        available: stat.blocks_available() * block,
        inodes: stat.files(),
        inodes_free: stat.files_free(),
    })
}

type Reply = (String, Result<FsFigures, Errno>);

/// Queries mount points on a helper thread, so that a mount that hangs
/// (its NFS server gone, say) costs one wait of `timeout`, and is then
/// skipped until it answers, instead of hanging the agent's only thread.
pub(super) struct Statfs {
    stat: fn(&str) -> Result<FsFigures, Errno>,
    timeout: Duration,
    /// Requests to the current helper; none until needed, or after it hung.
    requests: Option<mpsc::Sender<Vec<String>>>,
    replies_tx: mpsc::Sender<Reply>,
    replies: mpsc::Receiver<Reply>,
    /// Mount points a helper is stuck on; skipped until their answer comes.
    stuck: HashSet<String>,
}

impl Statfs {
    pub(super) fn new() -> Self {
        Self::with(statvfs, Duration::from_secs(1))
    }

    fn with(stat: fn(&str) -> Result<FsFigures, Errno>, timeout: Duration) -> Self {
        let (replies_tx, replies) = mpsc::channel();
        Statfs {
            stat,
            timeout,
            requests: None,
            replies_tx,
            replies,
            stuck: HashSet::new(),
        }
    }

    /// Figures of each mount point that answers in time; the problems of
    /// the others.
    fn query(&mut self, mountpoints: &[String]) -> (HashMap<String, FsFigures>, Vec<String>) {
        let mut figures = HashMap::new();
        let mut problems = Vec::new();
        // Late answers: those mounts respond again.
        while let Ok((mountpoint, _)) = self.replies.try_recv() {
            self.stuck.remove(&mountpoint);
        }
        let mut pending: Vec<String> = mountpoints
            .iter()
            .filter(|m| !self.stuck.contains(*m))
            .cloned()
            .collect();
        if pending.is_empty() {
            return (figures, problems);
        }
        let sent = match &self.requests {
            Some(requests) => requests.send(pending.clone()).is_ok(),
            None => false,
        };
        if !sent {
            match self.spawn() {
                Ok(requests) => {
                    // A new helper is alive and waiting: this cannot fail.
                    let _ = requests.send(pending.clone());
                    self.requests = Some(requests);
                }
                Err(e) => {
                    problems.push(format!("cannot start the statvfs thread: {e}"));
                    return (figures, problems);
                }
            }
        }
        let deadline = Instant::now() + self.timeout;
        while !pending.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(wait) {
                Ok((mountpoint, result)) => {
                    let Some(i) = pending.iter().position(|m| *m == mountpoint) else {
                        // A late answer from a helper that was stuck.
                        self.stuck.remove(&mountpoint);
                        continue;
                    };
                    pending.remove(i);
                    match result {
                        Ok(f) => {
                            figures.insert(mountpoint, f);
                        }
                        Err(e) => problems.push(format!("statvfs {mountpoint}: {e}")),
                    }
                }
                Err(_) => {
                    // The helper works through the list in order: it hangs
                    // on the first unanswered mount. The rest wait for the
                    // next tick and a new helper.
                    let hung = pending.remove(0);
                    problems.push(format!(
                        "statvfs {hung}: no answer within {:?}; skipped until it answers",
                        self.timeout
                    ));
                    self.stuck.insert(hung);
                    self.requests = None;
                    break;
                }
            }
        }
        (figures, problems)
    }

    fn spawn(&self) -> std::io::Result<mpsc::Sender<Vec<String>>> {
        let (requests, inbox) = mpsc::channel::<Vec<String>>();
        let replies = self.replies_tx.clone();
        let stat = self.stat;
        std::thread::Builder::new()
            .name("hostwatch-statfs".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // Ends when the sampler replaces it (its sender dropped).
                while let Ok(mountpoints) = inbox.recv() {
                    for mountpoint in mountpoints {
                        let result = stat(&mountpoint);
                        if replies.send((mountpoint, result)).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(requests)
    }
}

/// Appends space and inodes of every reported mount; returns the problems
/// (malformed lines, mounts that vanished, hang or cannot be queried).
pub(super) fn sample(
    text: &str,
    settings: &FilesystemsConfig,
    statfs: &mut Statfs,
    out: &mut Samples,
) -> Vec<String> {
    let (mounts, parse_problems) = mounts(text, settings);
    let mut problems: Vec<String> = parse_problems
        .into_iter()
        .map(|e| format!("/proc/self/mountinfo: {e}"))
        .collect();
    let points: Vec<String> = mounts.iter().map(|m| m.mountpoint.clone()).collect();
    let (mut figures, stat_problems) = statfs.query(&points);
    problems.extend(stat_problems);
    for mount in mounts {
        let Some(f) = figures.remove(&mount.mountpoint) else {
            continue;
        };
        let labels = vec![
            ("mountpoint", mount.mountpoint),
            ("device", mount.device),
            ("fstype", mount.fstype),
        ];
        let values = [
            ("host_filesystem_size_bytes", f.size),
            ("host_filesystem_free_bytes", f.free),
            ("host_filesystem_available_bytes", f.available),
            ("host_filesystem_inodes", f.inodes),
            ("host_filesystem_inodes_free", f.inodes_free),
        ];
        for (metric, value) in values {
            out.push_labeled(metric, labels.clone(), value as f64);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pattern;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
40 27 8:1 / /mnt/my\\040disk rw,relatime shared:5 master:2 - xfs /dev/sdb1 rw
41 27 8:2 / /gone rw,relatime - ext4 /dev/sdc1 rw
42 27 8:3 / /mnt/my\\040disk rw,relatime - ext4 /dev/sdd1 rw
this line is not a mount
";

    fn settings() -> FilesystemsConfig {
        FilesystemsConfig::default()
    }

    #[test]
    fn parses_filters_and_keeps_the_top_mount() {
        let (mounts, problems) = mounts(MOUNTINFO, &settings());
        assert_eq!(problems.len(), 1);
        let points: Vec<_> = mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, ["/", "/gone", "/mnt/my disk"]);
        // The later mount on the same point hides the earlier one.
        assert_eq!(mounts[2].device, "/dev/sdd1");
        assert_eq!(mounts[0].fstype, "ext4");
    }

    #[test]
    fn filters_are_configurable() {
        let mut settings = settings();
        settings.exclude_types = vec!["ext4".into()];
        settings.exclude_mountpoints = Pattern::anchored("/gone").unwrap();
        let (mounts, _) = mounts(MOUNTINFO, &settings);
        let points: Vec<_> = mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        // proc and tmpfs are now reported; ext4 is not.
        assert_eq!(points, ["/proc", "/dev/shm"]);
    }

    #[test]
    fn a_vanished_mount_is_counted_and_the_others_reported() {
        let text = "27 1 254:0 / / rw - ext4 /dev/vda rw\n41 27 8:2 / /no/such/mount/point rw - ext4 /dev/sdc1 rw\n";
        let mut out = Samples::default();
        let problems = sample(text, &settings(), &mut Statfs::new(), &mut out);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("/no/such/mount/point"));
        let root = [
            ("mountpoint", "/"),
            ("device", "/dev/vda"),
            ("fstype", "ext4"),
        ];
        let size = out.get("host_filesystem_size_bytes", &root).unwrap();
        let free = out.get("host_filesystem_free_bytes", &root).unwrap();
        let available = out.get("host_filesystem_available_bytes", &root).unwrap();
        assert!(size > 0.0 && free <= size && available <= free);
        assert!(out.get("host_filesystem_inodes", &root).is_some());
        assert_eq!(out.0.len(), 5);
    }

    /// Hangs on "/hang" while set, as statvfs on a dead NFS server does.
    static HANG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

    fn fake_stat(mountpoint: &str) -> Result<FsFigures, Errno> {
        while mountpoint == "/hang" && HANG.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        match mountpoint {
            "/gone" => Err(Errno::ENOENT),
            _ => Ok(FsFigures {
                size: 100,
                free: 50,
                available: 40,
                inodes: 10,
                inodes_free: 5,
            }),
        }
    }

    #[test]
    fn a_hanging_mount_is_skipped_until_it_answers() {
        let mut statfs = Statfs::with(fake_stat, Duration::from_millis(100));
        let points = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = points(&["/a", "/gone", "/hang", "/b"]);
        let (figures, problems) = statfs.query(&all);
        assert_eq!(figures.keys().collect::<Vec<_>>(), ["/a"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("/hang") && problems[1].contains("no answer"));
        // Next tick: the hung mount is skipped, a new helper answers the rest.
        let (figures, problems) = statfs.query(&all);
        let mut answered: Vec<_> = figures.keys().cloned().collect();
        answered.sort();
        assert_eq!(answered, ["/a", "/b"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        // Once it answers, it is queried again.
        HANG.store(false, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (figures, _) = statfs.query(&all);
            if figures.contains_key("/hang") {
                break;
            }
            assert!(Instant::now() < deadline, "the mount never came back");
        }
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }

    #[test]
    fn malformed_lines_are_problems_not_panics() {
        for line in ["", "1 2 3", "1 2 3 4 - ext4", "- - -", "1 2 3 4 5 6 - "] {
            let _ = parse_line(line);
        }
        assert!(parse_line("1 2 3 4 - ext4 dev").is_err());
        assert!(parse_line("1 2 3 4 /x opts - ext4").is_err());
    }
}
