//! File system space and inodes per mount point, from the mount table
//! (`/proc/self/mountinfo`) and `statvfs`. Mounts are filtered by type and
//! mount point (configuration `[filesystems]`).

use super::{ParseError, Samples};
use crate::config::FilesystemsConfig;

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

/// Appends space and inodes of every reported mount; returns the problems
/// (malformed lines, mounts that vanished or cannot be queried).
pub(super) fn sample(text: &str, settings: &FilesystemsConfig, out: &mut Samples) -> Vec<String> {
    let (mounts, parse_problems) = mounts(text, settings);
    let mut problems: Vec<String> = parse_problems
        .into_iter()
        .map(|e| format!("/proc/self/mountinfo: {e}"))
        .collect();
    for mount in mounts {
        let stat = match nix::sys::statvfs::statvfs(mount.mountpoint.as_str()) {
            Ok(stat) => stat,
            Err(e) => {
                problems.push(format!("statvfs {}: {e}", mount.mountpoint));
                continue;
            }
        };
        let block = stat.fragment_size();
        let labels = vec![
            ("mountpoint", mount.mountpoint),
            ("device", mount.device),
            ("fstype", mount.fstype),
        ];
        let figures = [
            ("host_filesystem_size_bytes", stat.blocks() * block),
            ("host_filesystem_free_bytes", stat.blocks_free() * block),
            (
                "host_filesystem_available_bytes",
                stat.blocks_available() * block,
            ),
            ("host_filesystem_inodes", stat.files()),
            ("host_filesystem_inodes_free", stat.files_free()),
        ];
        for (metric, value) in figures {
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
        let problems = sample(text, &settings(), &mut out);
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
