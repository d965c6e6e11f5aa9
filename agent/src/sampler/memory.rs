//! Memory and swap from `/proc/meminfo`, in bytes, and swap traffic from
//! `/proc/vmstat`, as byte counters.

#![cfg(target_os = "linux")]

use super::{FileError, ParseError, ProcFs, Samples};

/// The `/proc/meminfo` fields the agent uses, in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct MemInfo {
    total: u64,
    free: u64,
    available: u64,
    buffers: u64,
    cached: u64,
    swap_total: u64,
    swap_free: u64,
}

pub(super) fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    let mut info = MemInfo::default();
    let mut seen = 0u8;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let (slot, bit): (&mut u64, u8) = match key {
            "MemTotal" => (&mut info.total, 1),
            "MemFree" => (&mut info.free, 2),
            "MemAvailable" => (&mut info.available, 4),
            "Buffers" => (&mut info.buffers, 8),
            "Cached" => (&mut info.cached, 16),
            "SwapTotal" => (&mut info.swap_total, 32),
            "SwapFree" => (&mut info.swap_free, 64),
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let value: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ParseError::new(format!("{key}: not a number")))?;
        let scale = match parts.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => return Err(ParseError::new(format!("{key}: unknown unit {unit:?}"))),
        };
        *slot = value.saturating_mul(scale);
        seen |= bit;
    }
    // MemAvailable exists since Linux 3.14; without it there is no honest figure.
    if seen != 127 {
        return Err(ParseError::new(
            "missing one of MemTotal, MemFree, MemAvailable, Buffers, Cached, SwapTotal, SwapFree",
        ));
    }
    Ok(info)
}

/// Pages swapped in and out since boot (`pswpin`, `pswpout`).
pub(super) fn parse_vmstat(text: &str) -> Result<(u64, u64), ParseError> {
    let (mut swap_in, mut swap_out) = (None, None);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let slot = match parts.next() {
            Some("pswpin") => &mut swap_in,
            Some("pswpout") => &mut swap_out,
            _ => continue,
        };
        *slot = Some(
            parts
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ParseError::new(format!("not a number in {line:?}")))?,
        );
    }
    match (swap_in, swap_out) {
        (Some(i), Some(o)) => Ok((i, o)),
        _ => Err(ParseError::new("no pswpin or pswpout")),
    }
}

pub(super) fn sample(fs: &mut ProcFs, page_size: u64, out: &mut Samples) -> Result<(), FileError> {
    let info = fs.parse("meminfo", parse_meminfo)?;
    out.push("host_memory_total_bytes", info.total as f64);
    out.push("host_memory_available_bytes", info.available as f64);
    out.push(
        "host_memory_used_bytes",
        info.total.saturating_sub(info.available) as f64,
    );
    out.push("host_memory_free_bytes", info.free as f64);
    out.push("host_memory_buffers_bytes", info.buffers as f64);
    out.push("host_memory_cached_bytes", info.cached as f64);
    out.push("host_swap_total_bytes", info.swap_total as f64);
    out.push(
        "host_swap_used_bytes",
        info.swap_total.saturating_sub(info.swap_free) as f64,
    );
    let (swap_in, swap_out) = fs.parse("vmstat", parse_vmstat)?;
    out.push("host_swap_in_bytes_total", (swap_in * page_size) as f64);
    out.push("host_swap_out_bytes_total", (swap_out * page_size) as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "\
MemTotal:       16318740 kB
MemFree:         1034560 kB
MemAvailable:    9876543 kB
Buffers:          234567 kB
Cached:          7654321 kB
SwapCached:            0 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
HugePages_Total:       0
";

    #[test]
    fn parses_meminfo_in_bytes() {
        let info = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(info.total, 16_318_740 * 1024);
        assert_eq!(info.available, 9_876_543 * 1024);
        assert_eq!(info.swap_free, 2_000_000 * 1024);
    }

    #[test]
    fn bad_meminfo_is_an_error() {
        for text in [
            "",
            &MEMINFO.replace("MemAvailable", "MemAvail"),
            &MEMINFO.replace("9876543", "lots"),
            &MEMINFO.replace("234567 kB", "234567 MB"),
        ] {
            assert!(parse_meminfo(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn parses_vmstat_swap_pages() {
        let text = "nr_free_pages 1000\npswpin 12\npswpout 34\npgfault 5\n";
        assert_eq!(parse_vmstat(text).unwrap(), (12, 34));
        assert!(parse_vmstat("nr_free_pages 1\n").is_err());
        assert!(parse_vmstat("pswpin x\npswpout 1\n").is_err());
    }
}
