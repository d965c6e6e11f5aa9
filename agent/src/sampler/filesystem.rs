//! Filesystem space per mount point, in bytes; pseudo filesystems skipped.

use super::Samples;
use sysinfo::Disks;

/// Filesystems that hold no user data, or mirror another mount.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "overlay",
    "squashfs",
    "cgroup",
    "cgroup2",
    "nsfs",
    "autofs",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "fusectl",
    "configfs",
    "hugetlbfs",
    "binfmt_misc",
    "ramfs",
    "efivarfs",
    "rpc_pipefs",
];

pub(super) fn sample(disks: &Disks, out: &mut Samples) {
    for disk in disks.list() {
        let fstype = disk.file_system().to_string_lossy().into_owned();
        if PSEUDO.contains(&fstype.as_str()) {
            continue;
        }
        let labels = vec![
            (
                "mountpoint",
                disk.mount_point().to_string_lossy().into_owned(),
            ),
            ("device", disk.name().to_string_lossy().into_owned()),
            ("fstype", fstype),
        ];
        out.push_labeled(
            "host_filesystem_size_bytes",
            labels.clone(),
            disk.total_space() as f64,
        );
        out.push_labeled(
            "host_filesystem_available_bytes",
            labels,
            disk.available_space() as f64,
        );
    }
}
