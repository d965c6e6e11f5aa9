//! Network links from `/sys/class/net/<interface>/`: whether the link is
//! up (`operstate`), its speed, duplex and MTU. Interfaces are filtered as
//! `[network]` filters `/proc/net/dev`.
//!
//! `host_network_up` is reported only for interfaces seen up since the
//! agent started (then 1 while up, 0 otherwise): a port never cabled, or a
//! virtual link whose state the kernel does not know (`unknown`), does not
//! look like a link that went down. Virtual links have no speed or duplex
//! (the kernel answers -1 or `EINVAL`): no series, not a problem. An
//! interface removed between the listing and the reading of its files
//! (`ENOENT`, `ENODEV`) is simply gone: not a problem either.

#![cfg(target_os = "linux")]

use super::{ProcFs, Samples};
use crate::config::Pattern;
use std::collections::HashSet;
use std::io;

/// What one interface's files say.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Link {
    pub(super) up: bool,
    pub(super) mtu: Option<u64>,
    /// Megabits per second.
    pub(super) speed_mbps: Option<u64>,
    pub(super) full_duplex: Option<bool>,
}

/// Interfaces seen up since the agent started.
#[derive(Debug, Default)]
pub(super) struct State {
    seen_up: HashSet<String>,
}

/// The interface's files are gone with it, or the entry is no interface
/// (`bonding_masters`, a file, where the bonding module is loaded).
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || [nix::libc::ENODEV, nix::libc::ENOTDIR].contains(&e.raw_os_error().unwrap_or(0))
}

/// The kernel has no such figure for this kind of link.
fn not_applicable(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EINVAL) || e.raw_os_error() == Some(nix::libc::EOPNOTSUPP)
}

/// Reads `class/net/<name>/<attribute>` as trimmed text: `Ok(None)` when
/// the attribute does not apply to this link.
fn attribute(sys: &mut ProcFs, name: &str, attribute: &str) -> Result<Option<String>, io::Error> {
    match sys.read_bytes(format!("class/net/{name}/{attribute}")) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(bytes).trim().to_owned())),
        Err(e) if not_applicable(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why an interface gave no figures.
enum Problem {
    Vanished,
    Other(String),
}

fn read_link(sys: &mut ProcFs, name: &str) -> Result<Link, Problem> {
    let read = |sys: &mut ProcFs, what: &str| {
        attribute(sys, name, what).map_err(|e| {
            if vanished(&e) {
                Problem::Vanished
            } else {
                Problem::Other(format!("/sys/class/net/{name}/{what}: {e}"))
            }
        })
    };
    let number = |text: Option<String>, what: &str| -> Result<Option<i64>, Problem> {
        text.map(|t| {
            t.parse::<i64>().map_err(|_| {
                Problem::Other(format!(
                    "/sys/class/net/{name}/{what}: {t:?} is not a number"
                ))
            })
        })
        .transpose()
    };
    let up = read(sys, "operstate")?.is_some_and(|s| s == "up");
    let mtu = number(read(sys, "mtu")?, "mtu")?.and_then(|m| u64::try_from(m).ok());
    let speed_mbps = number(read(sys, "speed")?, "speed")?
        .and_then(|s| u64::try_from(s).ok().filter(|s| *s > 0));
    let full_duplex = match read(sys, "duplex")?.as_deref() {
        Some("full") => Some(true),
        Some("half") => Some(false),
        _ => None,
    };
    Ok(Link {
        up,
        mtu,
        speed_mbps,
        full_duplex,
    })
}

impl State {
    /// Appends every listed interface's figures; returns the problems.
    pub(super) fn sample(
        &mut self,
        sys: &mut ProcFs,
        exclude: &Pattern,
        out: &mut Samples,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let dir = sys.root.join("class/net");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => return vec![format!("{}: {e}", dir.display())],
        };
        let mut listed = HashSet::new();
        for entry in entries {
            let name = match entry {
                Ok(entry) => entry.file_name().to_string_lossy().into_owned(),
                Err(e) => {
                    problems.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            if exclude.is_match(&name) {
                continue;
            }
            let link = match read_link(sys, &name) {
                Ok(link) => link,
                Err(Problem::Vanished) => continue,
                Err(Problem::Other(problem)) => {
                    problems.push(problem);
                    continue;
                }
            };
            let labels = || vec![("device", name.clone())];
            if link.up {
                self.seen_up.insert(name.clone());
            }
            if self.seen_up.contains(&name) {
                out.push_labeled("host_network_up", labels(), f64::from(u8::from(link.up)));
            }
            if let Some(mtu) = link.mtu {
                out.push_labeled("host_network_mtu_bytes", labels(), mtu as f64);
            }
            if let Some(mbps) = link.speed_mbps {
                // Megabits to bytes per second.
                out.push_labeled(
                    "host_network_speed_bytes_per_second",
                    labels(),
                    mbps as f64 * 125_000.0,
                );
            }
            if let Some(full) = link.full_duplex {
                out.push_labeled(
                    "host_network_full_duplex",
                    labels(),
                    f64::from(u8::from(full)),
                );
            }
            listed.insert(name);
        }
        // Bounded by the interfaces present.
        self.seen_up.retain(|name| listed.contains(name));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::fixture;

    fn sys_copy(name: &str) -> (tempfile::TempDir, ProcFs) {
        let dir = tempfile::tempdir().unwrap();
        crate::sampler::tests::copy_over(&fixture(name), dir.path());
        let sys = ProcFs::new(dir.path().to_owned());
        (dir, sys)
    }

    fn none() -> Pattern {
        Pattern::anchored("lo").unwrap()
    }

    #[test]
    fn reads_state_speed_duplex_and_mtu() {
        let (_dir, mut sys) = sys_copy("host-a/sys");
        let mut state = State::default();
        let mut out = Samples::default();
        // bonding_masters, a file beside the interfaces, is not one.
        let problems = state.sample(&mut sys, &none(), &mut out);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!out.0.iter().any(|s| s.labels[0].1 == "bonding_masters"));
        let eth0 = [("device", "eth0")];
        assert_eq!(out.get("host_network_up", &eth0), Some(1.0));
        assert_eq!(out.get("host_network_mtu_bytes", &eth0), Some(1500.0));
        assert_eq!(
            out.get("host_network_speed_bytes_per_second", &eth0),
            Some(125_000_000.0)
        );
        assert_eq!(out.get("host_network_full_duplex", &eth0), Some(1.0));
        // A virtual link: speed -1, duplex unknown, state unknown.
        let tun = [("device", "tun0")];
        assert_eq!(out.get("host_network_mtu_bytes", &tun), Some(1420.0));
        assert!(out.get("host_network_up", &tun).is_none());
        assert!(
            out.get("host_network_speed_bytes_per_second", &tun)
                .is_none()
        );
        assert!(out.get("host_network_full_duplex", &tun).is_none());
        // Down since before the agent started: not paged as a link gone down.
        assert!(out.get("host_network_up", &[("device", "eth1")]).is_none());
        assert!(
            out.get("host_network_mtu_bytes", &[("device", "lo")])
                .is_none()
        );
    }

    #[test]
    fn a_link_seen_up_then_down_reads_zero() {
        let (dir, mut sys) = sys_copy("host-a/sys");
        let mut state = State::default();
        state.sample(&mut sys, &none(), &mut Samples::default());
        std::fs::write(dir.path().join("class/net/eth0/operstate"), "down\n").unwrap();
        let mut out = Samples::default();
        state.sample(&mut sys, &none(), &mut out);
        assert_eq!(out.get("host_network_up", &[("device", "eth0")]), Some(0.0));
    }

    #[test]
    fn an_interface_gone_between_listing_and_reading_is_skipped() {
        let (dir, mut sys) = sys_copy("host-a/sys");
        // Listed (the directory entry is there), but its files are gone.
        let gone = dir.path().join("class/net/eth0");
        std::fs::remove_dir_all(&gone).unwrap();
        std::fs::create_dir(&gone).unwrap();
        let mut state = State::default();
        let mut out = Samples::default();
        let problems = state.sample(&mut sys, &none(), &mut out);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            out.get("host_network_mtu_bytes", &[("device", "eth0")])
                .is_none()
        );
        assert!(
            out.get("host_network_mtu_bytes", &[("device", "tun0")])
                .is_some()
        );
    }

    #[test]
    fn malformed_attributes_are_problems() {
        let (dir, mut sys) = sys_copy("host-a/sys");
        std::fs::write(dir.path().join("class/net/eth0/mtu"), "lots\n").unwrap();
        let mut out = Samples::default();
        let problems = State::default().sample(&mut sys, &none(), &mut out);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("eth0/mtu"), "{problems:?}");
        assert!(out.get("host_network_up", &[("device", "eth0")]).is_none());
        let dir = tempfile::tempdir().unwrap();
        let mut sys = ProcFs::new(dir.path().to_owned());
        assert_eq!(
            State::default().sample(&mut sys, &none(), &mut out).len(),
            1
        );
    }
}
