//! Block devices from `/proc/diskstats`: bytes and operations read and
//! written, time busy as a counter and as the share of the interval
//! (utilization). Devices are filtered by name (configuration `[disks]`).

#![cfg(target_os = "linux")]

use super::{ParseError, Samples, field};
use crate::config::DisksConfig;
use std::collections::HashMap;
use std::time::Instant;

/// diskstats counts 512-byte sectors whatever the device's sector size.
const SECTOR_BYTES: u64 = 512;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct DiskStat {
    pub(super) name: String,
    reads: u64,
    read_sectors: u64,
    writes: u64,
    write_sectors: u64,
    /// Milliseconds with at least one request in flight.
    io_ms: u64,
}

/// `8 0 sda 1000 20 80000 300 500 10 40000 700 0 900 1000 ...`: major,
/// minor, name, then the counters (14 fields since Linux 2.6, more since 4.18).
pub(super) fn parse(text: &str) -> (Vec<DiskStat>, Vec<ParseError>) {
    let mut disks = Vec::new();
    let mut problems = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(name) = fields.get(2) else {
            problems.push(ParseError::new(format!("short line {line:?}")));
            continue;
        };
        let parsed = (|| {
            Ok::<_, ParseError>(DiskStat {
                name: (*name).to_owned(),
                reads: field(&fields, 3, name)?,
                read_sectors: field(&fields, 5, name)?,
                writes: field(&fields, 7, name)?,
                write_sectors: field(&fields, 9, name)?,
                io_ms: field(&fields, 12, name)?,
            })
        })();
        match parsed {
            Ok(disk) => disks.push(disk),
            Err(e) => problems.push(e),
        }
    }
    (disks, problems)
}

/// The previous busy time per device, for utilization.
#[derive(Debug, Default)]
pub(super) struct State {
    prev: HashMap<String, u64>,
    prev_time: Option<Instant>,
}

impl State {
    /// Appends every reported device; malformed lines are skipped and
    /// returned as one problem.
    pub(super) fn sample(
        &mut self,
        text: &str,
        settings: &DisksConfig,
        now: Instant,
        out: &mut Samples,
    ) -> Result<(), ParseError> {
        let (disks, problems) = parse(text);
        let elapsed_ms = self
            .prev_time
            .map(|t| now.saturating_duration_since(t).as_secs_f64() * 1000.0);
        let mut seen = HashMap::with_capacity(disks.len());
        for disk in disks {
            if settings.exclude.is_match(&disk.name) {
                continue;
            }
            let labels = vec![("device", disk.name.clone())];
            if let (Some(prev), Some(elapsed)) = (self.prev.get(&disk.name), elapsed_ms)
                && elapsed > 0.0
            {
                let busy = disk.io_ms.saturating_sub(*prev) as f64;
                out.push_labeled(
                    "host_disk_utilization_ratio",
                    labels.clone(),
                    (busy / elapsed).clamp(0.0, 1.0),
                );
            }
            let figures = [
                (
                    "host_disk_read_bytes_total",
                    disk.read_sectors * SECTOR_BYTES,
                ),
                (
                    "host_disk_written_bytes_total",
                    disk.write_sectors * SECTOR_BYTES,
                ),
                ("host_disk_reads_completed_total", disk.reads),
                ("host_disk_writes_completed_total", disk.writes),
            ];
            for (metric, value) in figures {
                out.push_labeled(metric, labels.clone(), value as f64);
            }
            out.push_labeled(
                "host_disk_io_time_seconds_total",
                labels,
                disk.io_ms as f64 / 1000.0,
            );
            seen.insert(disk.name, disk.io_ms);
        }
        // Devices that went away are forgotten with the old map.
        self.prev = seen;
        self.prev_time = Some(now);
        match problems.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T1: &str = "\
   8       0 sda 1000 20 80000 300 500 10 40000 700 0 900 1000 0 0 0 0 0 0
   8       1 sda1 900 20 70000 300 400 10 30000 700 0 800 1000 0 0 0 0 0 0
   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 259       0 nvme0n1 10 0 16 0 20 0 32 0 0 5 5
";
    const T2: &str = "\
   8       0 sda 1100 20 90000 300 600 10 50000 700 0 1400 1000 0 0 0 0 0 0
 259       0 nvme0n1 10 0 16 0 20 0 32 0 0 5 5
   8      16 sdb garbage
";

    #[test]
    fn reports_counters_and_utilization_and_skips_partitions() {
        let settings = DisksConfig::default();
        let mut state = State::default();
        let t0 = Instant::now();
        let mut out = Samples::default();
        state.sample(T1, &settings, t0, &mut out).unwrap();
        let sda = [("device", "sda")];
        assert_eq!(
            out.get("host_disk_read_bytes_total", &sda),
            Some(80000.0 * 512.0)
        );
        assert_eq!(
            out.get("host_disk_writes_completed_total", &sda),
            Some(500.0)
        );
        assert_eq!(out.get("host_disk_io_time_seconds_total", &sda), Some(0.9));
        assert!(out.get("host_disk_utilization_ratio", &sda).is_none());
        assert!(
            out.get("host_disk_reads_completed_total", &[("device", "sda1")])
                .is_none()
        );
        assert!(
            out.get("host_disk_reads_completed_total", &[("device", "loop0")])
                .is_none()
        );

        let mut out = Samples::default();
        let err = state
            .sample(T2, &settings, t0 + Duration::from_secs(1), &mut out)
            .unwrap_err();
        assert!(err.0.contains("sdb"), "{err}");
        // 500 ms busy in one second.
        let util = out.get("host_disk_utilization_ratio", &sda).unwrap();
        assert!((util - 0.5).abs() < 1e-9, "{util}");
        assert_eq!(
            out.get("host_disk_utilization_ratio", &[("device", "nvme0n1")]),
            Some(0.0)
        );
    }

    #[test]
    fn odd_lines_are_problems() {
        let (disks, problems) = parse("8 0\n8 0 sda 1 2 3\n\n8 0 sdz x 0 0 0 0 0 0 0 0 0 0\n");
        assert!(disks.is_empty());
        assert_eq!(problems.len(), 3);
    }
}
