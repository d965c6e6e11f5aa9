//! The kernel's clock discipline, as `adjtimex(2)` reports it (only
//! reading: `modes` = 0): whether an NTP daemon (chrony, ntpd,
//! systemd-timesyncd) keeps the clock synchronised, the current offset,
//! and the kernel's estimated and maximum errors.
//!
//! Which time source the daemon uses, the kernel does not know: chronyd's
//! is asked on its command port (`chrony`), systemd-timesyncd's over
//! D-Bus (`systemd`).
//!
//! Tests and fixtures read a recorded status instead: the text that
//! `adjtimex --print` (Debian's `adjtimex` package) writes, whose lines
//! `offset:`, `maxerror:`, `esterror:`, `status:` and `return value =` are
//! the fields of `struct timex` and the call's result.

#![cfg(target_os = "linux")]

use super::{ParseError, Samples};
use std::path::PathBuf;

/// `STA_UNSYNC`: the clock is not synchronised.
const STA_UNSYNC: i64 = 0x0040;
/// `STA_NANO`: `offset` is in nanoseconds rather than microseconds.
const STA_NANO: i64 = 0x2000;
/// `TIME_ERROR`: the call's result when the clock is not synchronised.
const TIME_ERROR: i64 = 5;

/// Where the status comes from.
#[derive(Debug, Clone, Default)]
pub enum TimeSource {
    /// The kernel, through `adjtimex(2)`.
    #[default]
    Kernel,
    /// A recorded `adjtimex --print` output, read again every tick.
    Recorded(PathBuf),
}

/// What `adjtimex(2)` says, in its own units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Status {
    /// The call's result: `TIME_OK` (0) ... `TIME_ERROR` (5).
    pub(super) state: i64,
    /// `STA_*` flags.
    pub(super) status: i64,
    /// Microseconds, or nanoseconds with `STA_NANO`.
    pub(super) offset: i64,
    /// Microseconds.
    pub(super) maxerror: i64,
    /// Microseconds.
    pub(super) esterror: i64,
}

impl Status {
    pub(super) fn synchronized(&self) -> bool {
        self.status & STA_UNSYNC == 0 && self.state != TIME_ERROR
    }

    pub(super) fn push(&self, out: &mut Samples) {
        let per_second = if self.status & STA_NANO != 0 {
            1e9
        } else {
            1e6
        };
        out.push(
            "host_time_synchronized",
            f64::from(u8::from(self.synchronized())),
        );
        out.push("host_time_offset_seconds", self.offset as f64 / per_second);
        out.push(
            "host_time_estimated_error_seconds",
            self.esterror as f64 / 1e6,
        );
        out.push("host_time_max_error_seconds", self.maxerror as f64 / 1e6);
    }
}

/// Parses `adjtimex --print` output.
pub(super) fn parse_print(text: &str) -> Result<Status, ParseError> {
    let (mut state, mut status, mut offset, mut maxerror, mut esterror) =
        (None, None, None, None, None);
    for line in text.lines() {
        let (key, value) = if let Some(value) = line.trim().strip_prefix("return value =") {
            ("return value", value)
        } else if let Some((key, value)) = line.split_once(':') {
            (key.trim(), value)
        } else {
            continue;
        };
        let slot = match key {
            "return value" => &mut state,
            "status" => &mut status,
            "offset" => &mut offset,
            "maxerror" => &mut maxerror,
            "esterror" => &mut esterror,
            _ => continue,
        };
        let value = value.trim();
        *slot = Some(
            value
                .parse::<i64>()
                .map_err(|_| ParseError::new(format!("{key}: {value:?} is not a number")))?,
        );
    }
    let need = |value: Option<i64>, key: &str| {
        value.ok_or_else(|| ParseError::new(format!("no {key} line")))
    };
    Ok(Status {
        state: need(state, "return value")?,
        status: need(status, "status")?,
        offset: need(offset, "offset")?,
        maxerror: need(maxerror, "maxerror")?,
        esterror: need(esterror, "esterror")?,
    })
}

/// Asks the kernel, changing nothing (`modes` = 0).
#[allow(unsafe_code)]
pub(super) fn kernel() -> std::io::Result<Status> {
    // SAFETY: `timex` is plain data, for which all zeroes is a valid value
    // (and `modes` = 0 asks only to read); `adjtimex` writes into the
    // struct we own and keeps no pointer to it after returning.
    let mut timex: nix::libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: as above: a valid, exclusively borrowed `timex`.
    let state = unsafe { nix::libc::adjtimex(&mut timex) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Status {
        state: i64::from(state),
        status: i64::from(timex.status),
        offset: timex.offset as i64,
        maxerror: timex.maxerror as i64,
        esterror: timex.esterror as i64,
    })
}

/// Appends the status from `source`; the error names the source.
pub(super) fn sample(source: &TimeSource, out: &mut Samples) -> Result<(), String> {
    let status = match source {
        TimeSource::Kernel => kernel().map_err(|e| format!("adjtimex: {e}"))?,
        TimeSource::Recorded(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            parse_print(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    status.push(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::fixture;

    #[test]
    fn a_synchronised_clock_in_nanoseconds() {
        let mut out = Samples::default();
        sample(&TimeSource::Recorded(fixture("host-a/adjtimex")), &mut out).unwrap();
        assert_eq!(out.get("host_time_synchronized", &[]), Some(1.0));
        // STA_NANO: -21357 ns.
        assert_eq!(
            out.get("host_time_offset_seconds", &[]),
            Some(-21357.0 / 1e9)
        );
        assert_eq!(
            out.get("host_time_estimated_error_seconds", &[]),
            Some(0.000_115)
        );
        assert_eq!(out.get("host_time_max_error_seconds", &[]), Some(0.0625));
    }

    #[test]
    fn an_unsynchronised_clock() {
        let mut out = Samples::default();
        sample(
            &TimeSource::Recorded(fixture("alerting/adjtimex")),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.get("host_time_synchronized", &[]), Some(0.0));
        assert_eq!(out.get("host_time_max_error_seconds", &[]), Some(16.0));
        assert_eq!(out.get("host_time_offset_seconds", &[]), Some(0.0));
    }

    #[test]
    fn unsync_flag_or_time_error_each_mean_unsynchronised() {
        let ok = Status {
            state: 0,
            status: 0x2001,
            offset: 0,
            maxerror: 0,
            esterror: 0,
        };
        assert!(ok.synchronized());
        assert!(
            !Status {
                status: ok.status | STA_UNSYNC,
                ..ok
            }
            .synchronized()
        );
        assert!(
            !Status {
                state: TIME_ERROR,
                ..ok
            }
            .synchronized()
        );
    }

    #[test]
    fn malformed_or_missing_status_is_an_error() {
        let good = std::fs::read_to_string(fixture("host-a/adjtimex")).unwrap();
        for (text, what) in [
            (good.replace("status: 8193", "status: lots"), "status"),
            (good.replace("return value = 0", ""), "return value"),
            (String::new(), "return value"),
        ] {
            let err = parse_print(&text).unwrap_err();
            assert!(err.0.contains(what), "{err}");
        }
        let mut out = Samples::default();
        let err = sample(
            &TimeSource::Recorded(PathBuf::from("/nonexistent/adjtimex")),
            &mut out,
        )
        .unwrap_err();
        assert!(err.starts_with("/nonexistent/adjtimex:"), "{err}");
        assert!(out.0.is_empty());
    }

    #[test]
    fn the_kernel_answers() {
        // Whatever this machine's clock state: a valid answer.
        let status = kernel().unwrap();
        assert!((0..=5).contains(&status.state), "{status:?}");
        let mut out = Samples::default();
        status.push(&mut out);
        assert!(out.0.iter().all(|s| s.value.is_finite()));
    }
}
