//! Pressure stall information (`/proc/pressure/{cpu,memory,io}`): the share
//! of the last 10 seconds in which some (or all) tasks were stalled on a
//! resource, and the total stall time. Kernels without PSI (before 4.20, or
//! booted with `psi=0`) have no such files: that is not a problem.

#![cfg(target_os = "linux")]

use super::{ParseError, ProcFs, Samples};
use std::io;

/// (resource, file under /proc).
const RESOURCES: [(&str, &str); 3] = [
    ("cpu", "pressure/cpu"),
    ("memory", "pressure/memory"),
    ("io", "pressure/io"),
];

/// One line: `some avg10=0.12 avg60=0.05 avg300=0.01 total=123456`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Line {
    pub(super) kind: &'static str,
    /// Percent of the last 10 seconds.
    pub(super) avg10: f64,
    /// Microseconds stalled since boot.
    pub(super) total_us: u64,
}

pub(super) fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut lines = Vec::with_capacity(2);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_ascii_whitespace();
        let kind = match parts.next() {
            Some("some") => "some",
            Some("full") => "full",
            _ => return Err(ParseError::new(format!("unexpected line {line:?}"))),
        };
        let (mut avg10, mut total_us) = (None, None);
        for part in parts {
            match part.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse::<f64>().ok().filter(|v| v.is_finite()),
                Some(("total", v)) => total_us = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        match (avg10, total_us) {
            (Some(avg10), Some(total_us)) => lines.push(Line {
                kind,
                avg10,
                total_us,
            }),
            _ => return Err(ParseError::new(format!("no avg10 or total in {line:?}"))),
        }
    }
    if lines.is_empty() {
        return Err(ParseError::new("empty"));
    }
    Ok(lines)
}

/// Appends the pressure of every resource the kernel reports; returns the
/// problems (resource, what), for counting.
pub(super) fn sample(fs: &mut ProcFs, out: &mut Samples) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    for (resource, path) in RESOURCES {
        let text = match fs.read(path) {
            Ok(text) => text,
            // No PSI in this kernel, or disabled at boot (EOPNOTSUPP).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) =>
            {
                continue;
            }
            Err(e) => {
                problems.push((resource, e.to_string()));
                continue;
            }
        };
        match parse(text) {
            Ok(lines) => {
                for line in lines {
                    let labels = vec![
                        ("resource", resource.to_owned()),
                        ("kind", line.kind.to_owned()),
                    ];
                    out.push_labeled(
                        "host_pressure_avg10_ratio",
                        labels.clone(),
                        (line.avg10 / 100.0).clamp(0.0, 1.0),
                    );
                    out.push_labeled(
                        "host_pressure_stalled_seconds_total",
                        labels,
                        line.total_us as f64 / 1e6,
                    );
                }
            }
            Err(e) => problems.push((resource, e.to_string())),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let lines = parse(
            "some avg10=12.50 avg60=0.05 avg300=0.01 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].kind, "some");
        assert_eq!(lines[0].avg10, 12.5);
        assert_eq!(lines[0].total_us, 1_500_000);
        assert_eq!(lines[1].kind, "full");
    }

    #[test]
    fn bad_lines_are_errors() {
        for text in [
            "",
            "most avg10=1 total=2",
            "some avg10=x total=2",
            "some avg10=1",
            "some avg10=NaN total=3",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn missing_files_are_not_problems() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = ProcFs::new(dir.path().to_owned());
        let mut out = Samples::default();
        assert!(sample(&mut fs, &mut out).is_empty());
        assert!(out.0.is_empty());
        std::fs::create_dir(dir.path().join("pressure")).unwrap();
        std::fs::write(
            dir.path().join("pressure/io"),
            "some avg10=50.00 avg60=0 avg300=0 total=2000000\nfull avg10=25.00 avg60=0 avg300=0 total=1000000\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("pressure/memory"), "garbage\n").unwrap();
        let problems = sample(&mut fs, &mut out);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "memory");
        assert_eq!(
            out.get(
                "host_pressure_avg10_ratio",
                &[("resource", "io"), ("kind", "full")]
            ),
            Some(0.25)
        );
        assert_eq!(
            out.get(
                "host_pressure_stalled_seconds_total",
                &[("resource", "io"), ("kind", "some")]
            ),
            Some(2.0)
        );
    }
}
