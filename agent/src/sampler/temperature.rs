//! Temperatures from the kernel's hardware monitors
//! (`/sys/class/hwmon/hwmon*/temp<N>_input`, with `temp<N>_label`,
//! `temp<N>_max`, `temp<N>_crit`, the chip's `name` and its `device`) and
//! its thermal zones (`/sys/class/thermal/thermal_zone*/temp`, `type`, and
//! the trip point of type `critical`), in degrees Celsius.
//!
//! Labels say which sensor in words a person reads: `chip` (the driver's
//! name, such as `coretemp` or `nvme`; `thermal` for a zone), `sensor` (the
//! kernel's label, such as `Package id 0`, else `temp<N>`; a zone's type)
//! and `device` (the device the chip belongs to, such as `coretemp.0` or
//! `0000:01:00.0`, else the `hwmon<N>` directory; a zone's directory).
//!
//! Many sensors answer some reads with an error (`EIO`, `ENODATA`, `EAGAIN`:
//! asleep, or a driver that cannot read now); each such read is a problem,
//! counted, and the other sensors are still read.

#![cfg(target_os = "linux")]

use super::{ProcFs, Samples};
use std::io;
use std::path::Path;

/// One sensor's reading, in degrees Celsius.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reading {
    pub(super) chip: String,
    pub(super) sensor: String,
    pub(super) device: String,
    pub(super) celsius: f64,
    pub(super) max: Option<f64>,
    pub(super) critical: Option<f64>,
}

impl Reading {
    fn push(self, out: &mut Samples) {
        let labels = vec![
            ("chip", self.chip),
            ("sensor", self.sensor),
            ("device", self.device),
        ];
        if let Some(max) = self.max {
            out.push_labeled("host_temperature_max_celsius", labels.clone(), max);
        }
        if let Some(critical) = self.critical {
            out.push_labeled(
                "host_temperature_critical_celsius",
                labels.clone(),
                critical,
            );
        }
        out.push_labeled("host_temperature_celsius", labels, self.celsius);
    }
}

/// The names in `dir` starting with `prefix`, sorted; none if there is no `dir`.
fn list(dir: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A file's trimmed text; `None` when it does not exist.
fn text(sys: &mut ProcFs, relative: &str) -> io::Result<Option<String>> {
    match sys.read_bytes(relative) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(bytes).trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A millidegree file in degrees; `None` when it does not exist.
fn millidegrees(sys: &mut ProcFs, relative: &str) -> Result<Option<f64>, String> {
    let text = text(sys, relative).map_err(|e| format!("/sys/{relative}: {e}"))?;
    text.map(|t| {
        t.parse::<i64>()
            .map(|m| m as f64 / 1000.0)
            .map_err(|_| format!("/sys/{relative}: {t:?} is not a temperature"))
    })
    .transpose()
}

/// Appends every readable sensor; returns the problems.
pub(super) fn sample(sys: &mut ProcFs, out: &mut Samples) -> Vec<String> {
    let mut problems = Vec::new();
    hwmon(sys, out, &mut problems);
    thermal(sys, out, &mut problems);
    problems
}

fn hwmon(sys: &mut ProcFs, out: &mut Samples, problems: &mut Vec<String>) {
    let chips = match list(&sys.root.join("class/hwmon"), "hwmon") {
        Ok(chips) => chips,
        Err(e) => return problems.push(format!("/sys/class/hwmon: {e}")),
    };
    for dir in chips {
        let base = format!("class/hwmon/{dir}");
        let chip = match text(sys, &format!("{base}/name")) {
            Ok(name) => name.unwrap_or_else(|| dir.clone()),
            Err(e) => {
                problems.push(format!("/sys/{base}/name: {e}"));
                dir.clone()
            }
        };
        let device = std::fs::read_link(sys.root.join(&base).join("device"))
            .ok()
            .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.clone());
        let inputs = match list(&sys.root.join(&base), "temp") {
            Ok(files) => files,
            Err(e) => {
                problems.push(format!("/sys/{base}: {e}"));
                continue;
            }
        };
        for input in inputs {
            let Some(index) = input
                .strip_prefix("temp")
                .and_then(|rest| rest.strip_suffix("_input"))
            else {
                continue;
            };
            let celsius = match millidegrees(sys, &format!("{base}/{input}")) {
                Ok(Some(celsius)) => celsius,
                // Removed since the listing.
                Ok(None) => continue,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let mut threshold = |suffix: &str| {
                millidegrees(sys, &format!("{base}/temp{index}_{suffix}")).unwrap_or_else(
                    |problem| {
                        problems.push(problem);
                        None
                    },
                )
            };
            let max = threshold("max");
            let critical = threshold("crit");
            let sensor = text(sys, &format!("{base}/temp{index}_label"))
                .ok()
                .flatten()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| format!("temp{index}"));
            Reading {
                chip: chip.clone(),
                sensor,
                device: device.clone(),
                celsius,
                max,
                critical,
            }
            .push(out);
        }
    }
}

fn thermal(sys: &mut ProcFs, out: &mut Samples, problems: &mut Vec<String>) {
    let zones = match list(&sys.root.join("class/thermal"), "thermal_zone") {
        Ok(zones) => zones,
        Err(e) => return problems.push(format!("/sys/class/thermal: {e}")),
    };
    for zone in zones {
        let base = format!("class/thermal/{zone}");
        let celsius = match millidegrees(sys, &format!("{base}/temp")) {
            Ok(Some(celsius)) => celsius,
            Ok(None) => continue,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let sensor = text(sys, &format!("{base}/type"))
            .ok()
            .flatten()
            .unwrap_or_else(|| zone.clone());
        // The first trip point of type `critical`, where the kernel shuts down.
        let mut critical = None;
        let trips = list(&sys.root.join(&base), "trip_point_").unwrap_or_default();
        for trip in trips.iter().filter_map(|t| t.strip_suffix("_type")) {
            if text(sys, &format!("{base}/{trip}_type"))
                .ok()
                .flatten()
                .as_deref()
                == Some("critical")
            {
                match millidegrees(sys, &format!("{base}/{trip}_temp")) {
                    Ok(value) => critical = value,
                    Err(problem) => problems.push(problem),
                }
                break;
            }
        }
        Reading {
            chip: "thermal".to_owned(),
            sensor,
            device: zone,
            celsius,
            max: None,
            critical,
        }
        .push(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::{copy_over, fixture};

    fn sys_copy() -> (tempfile::TempDir, ProcFs) {
        let dir = tempfile::tempdir().unwrap();
        copy_over(&fixture("host-a/sys"), dir.path());
        let sys = ProcFs::new(dir.path().to_owned());
        (dir, sys)
    }

    fn labels<'a>(chip: &'a str, sensor: &'a str, device: &'a str) -> [(&'a str, &'a str); 3] {
        [("chip", chip), ("sensor", sensor), ("device", device)]
    }

    #[test]
    fn reads_hwmon_sensors_and_thermal_zones_with_readable_labels() {
        let (_dir, mut sys) = sys_copy();
        let mut out = Samples::default();
        let problems = sample(&mut sys, &mut out);
        assert!(problems.is_empty(), "{problems:?}");
        let package = labels("coretemp", "Package id 0", "coretemp.0");
        assert_eq!(out.get("host_temperature_celsius", &package), Some(45.0));
        assert_eq!(
            out.get("host_temperature_max_celsius", &package),
            Some(80.0)
        );
        assert_eq!(
            out.get("host_temperature_critical_celsius", &package),
            Some(100.0)
        );
        let nvme = labels("nvme", "Composite", "nvme0");
        assert_eq!(out.get("host_temperature_celsius", &nvme), Some(38.85));
        // No label, no device link, no max.
        let acpi = labels("acpitz", "temp1", "hwmon2");
        assert_eq!(out.get("host_temperature_celsius", &acpi), Some(27.8));
        assert!(out.get("host_temperature_max_celsius", &acpi).is_none());
        let zone = labels("thermal", "x86_pkg_temp", "thermal_zone0");
        assert_eq!(out.get("host_temperature_celsius", &zone), Some(46.0));
        // The critical trip point, not the passive one before it.
        assert_eq!(
            out.get("host_temperature_critical_celsius", &zone),
            Some(105.0)
        );
        assert_eq!(
            out.0
                .iter()
                .filter(|s| s.metric == "host_temperature_celsius")
                .count(),
            5
        );
    }

    #[test]
    fn sensors_answering_errors_are_counted_and_skipped() {
        let (dir, mut sys) = sys_copy();
        let chip = dir.path().join("class/hwmon/hwmon0");
        // Reading /proc/self/mem at offset 0 fails with EIO, as a sleeping
        // sensor's driver does.
        std::fs::remove_file(chip.join("temp2_input")).unwrap();
        std::os::unix::fs::symlink("/proc/self/mem", chip.join("temp2_input")).unwrap();
        std::fs::write(chip.join("temp1_crit"), "N/A\n").unwrap();
        std::fs::write(dir.path().join("class/thermal/thermal_zone0/temp"), "\n").unwrap();
        let mut out = Samples::default();
        let problems = sample(&mut sys, &mut out);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("temp2_input") && p.contains("os error 5")),
            "{problems:?}"
        );
        let package = labels("coretemp", "Package id 0", "coretemp.0");
        assert_eq!(out.get("host_temperature_celsius", &package), Some(45.0));
        assert!(
            out.get("host_temperature_critical_celsius", &package)
                .is_none()
        );
        assert!(
            out.get(
                "host_temperature_celsius",
                &labels("coretemp", "Core 0", "coretemp.0")
            )
            .is_none()
        );
        assert!(
            out.get(
                "host_temperature_celsius",
                &labels("nvme", "Composite", "nvme0")
            )
            .is_some()
        );
    }

    #[test]
    fn no_sensors_is_no_series_and_no_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut sys = ProcFs::new(dir.path().to_owned());
        let mut out = Samples::default();
        assert!(sample(&mut sys, &mut out).is_empty());
        assert!(out.0.is_empty());
    }
}
