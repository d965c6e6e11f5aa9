//! Uptime (`/proc/uptime`) and boot time (`btime` of `/proc/stat`), in seconds.

#![cfg(target_os = "linux")]

use super::{ParseError, Samples};

pub(super) fn sample(
    uptime: &str,
    boot_time: Option<u64>,
    out: &mut Samples,
) -> Result<(), ParseError> {
    let seconds: f64 = uptime
        .split_ascii_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| ParseError::new("no uptime in seconds"))?;
    out.push("host_uptime_seconds", seconds);
    // The kernel's own figure, as node_exporter reports it; /proc/stat's
    // problems, if any, are counted by the cpu family.
    if let Some(boot_time) = boot_time {
        out.push("host_boot_time_seconds", boot_time as f64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uptime() {
        let mut out = Samples::default();
        sample("12345.67 23456.78\n", Some(1_700_000_000), &mut out).unwrap();
        assert_eq!(out.get("host_uptime_seconds", &[]), Some(12345.67));
        assert_eq!(out.get("host_boot_time_seconds", &[]), Some(1.7e9));
        for bad in ["", "x 1", "-5 1", "NaN 2"] {
            assert!(
                sample(bad, None, &mut Samples::default()).is_err(),
                "{bad:?}"
            );
        }
    }
}
