//! TCP and UDP counters of the kernel's SNMP MIBs: `/proc/net/snmp` (`Tcp:`
//! and `Udp:`, a header line of names then a line of values),
//! `/proc/net/netstat` (`TcpExt:`, same shape) and `/proc/net/snmp6`
//! (`Udp6InErrors 0`, one counter per line; absent when IPv6 is off, which
//! is not a problem). The TCP MIB counts IPv4 and IPv6 together; UDP has one
//! per IP version, hence the `ip` label.

#![cfg(target_os = "linux")]

use super::{ParseError, ProcFs, Samples};
use std::io;

/// (line prefix, counter name, metric) of `/proc/net/snmp` and `/proc/net/netstat`.
const PAIRED: [(&str, &str, &str); 10] = [
    ("Tcp", "ActiveOpens", "host_tcp_active_opens_total"),
    ("Tcp", "PassiveOpens", "host_tcp_passive_opens_total"),
    (
        "Tcp",
        "RetransSegs",
        "host_tcp_retransmitted_segments_total",
    ),
    ("Tcp", "EstabResets", "host_tcp_established_resets_total"),
    ("Tcp", "OutRsts", "host_tcp_resets_sent_total"),
    ("Tcp", "InErrs", "host_tcp_receive_errors_total"),
    (
        "TcpExt",
        "ListenOverflows",
        "host_tcp_listen_overflows_total",
    ),
    ("TcpExt", "ListenDrops", "host_tcp_listen_drops_total"),
    ("Udp", "InErrors", "host_udp_receive_errors_total"),
    (
        "Udp",
        "RcvbufErrors",
        "host_udp_receive_buffer_errors_total",
    ),
];

/// (counter name, metric) of `/proc/net/snmp6`.
const SNMP6: [(&str, &str); 2] = [
    ("Udp6InErrors", "host_udp_receive_errors_total"),
    ("Udp6RcvbufErrors", "host_udp_receive_buffer_errors_total"),
];

/// Appends the counters of a file of header and value line pairs
/// (`/proc/net/snmp`, `/proc/net/netstat`). A malformed pair is skipped;
/// the first problem is returned after the rest was read.
pub(super) fn sample_paired(text: &str, out: &mut Samples) -> Result<(), ParseError> {
    let mut first_problem = None;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let Some(values) = lines.next() else {
            first_problem
                .get_or_insert_with(|| ParseError::new(format!("no values after {header:?}")));
            break;
        };
        if let Err(e) = sample_pair(header, values, out) {
            first_problem.get_or_insert(e);
        }
    }
    match first_problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn sample_pair(header: &str, values: &str, out: &mut Samples) -> Result<(), ParseError> {
    let (Some((prefix, names)), Some((value_prefix, numbers))) =
        (header.split_once(':'), values.split_once(':'))
    else {
        return Err(ParseError::new(format!("no prefix in {header:?}")));
    };
    if prefix != value_prefix {
        return Err(ParseError::new(format!(
            "{prefix:?} names followed by {value_prefix:?} values"
        )));
    }
    let names: Vec<&str> = names.split_ascii_whitespace().collect();
    let numbers: Vec<&str> = numbers.split_ascii_whitespace().collect();
    if names.len() != numbers.len() {
        return Err(ParseError::new(format!(
            "{prefix}: {} names, {} values",
            names.len(),
            numbers.len()
        )));
    }
    for (_, name, metric) in PAIRED.iter().filter(|(p, _, _)| *p == prefix) {
        let Some(i) = names.iter().position(|n| n == name) else {
            // Older kernels lack some counters: no series, no problem.
            continue;
        };
        let value: u64 = numbers[i].parse().map_err(|_| {
            ParseError::new(format!(
                "{prefix} {name}: {:?} is not a counter",
                numbers[i]
            ))
        })?;
        match prefix {
            "Udp" => out.push_labeled(metric, vec![("ip", "4".to_owned())], value as f64),
            _ => out.push(metric, value as f64),
        }
    }
    Ok(())
}

/// Appends the IPv6 UDP counters of `/proc/net/snmp6`.
pub(super) fn sample_snmp6(text: &str, out: &mut Samples) -> Result<(), ParseError> {
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some((_, metric)) = SNMP6.iter().find(|(n, _)| *n == name) {
            let value: u64 = value
                .parse()
                .map_err(|_| ParseError::new(format!("{name}: {value:?} is not a counter")))?;
            out.push_labeled(metric, vec![("ip", "6".to_owned())], value as f64);
        }
    }
    Ok(())
}

/// Reads the three files; returns the problems, each naming its file.
pub(super) fn sample(fs: &mut ProcFs, out: &mut Samples) -> Vec<String> {
    let mut problems = Vec::new();
    for file in ["net/snmp", "net/netstat"] {
        if let Err(e) = fs.parse(file, |t| sample_paired(t, out)) {
            problems.push(e.to_string());
        }
    }
    match fs.read("net/snmp6") {
        Ok(text) => {
            if let Err(e) = sample_snmp6(text, out) {
                problems.push(format!("/proc/net/snmp6: {e}"));
            }
        }
        // IPv6 disabled.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("/proc/net/snmp6: {e}")),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::fixture;

    fn read(path: &str) -> String {
        std::fs::read_to_string(fixture(path)).unwrap()
    }

    #[test]
    fn reads_the_recorded_counters() {
        let mut out = Samples::default();
        sample_paired(&read("host-a/proc/net/snmp"), &mut out).unwrap();
        sample_paired(&read("host-a/proc/net/netstat"), &mut out).unwrap();
        sample_snmp6(&read("host-a/proc/net/snmp6"), &mut out).unwrap();
        for (metric, value) in [
            ("host_tcp_active_opens_total", 142.0),
            ("host_tcp_passive_opens_total", 114.0),
            ("host_tcp_retransmitted_segments_total", 43.0),
            ("host_tcp_established_resets_total", 22.0),
            ("host_tcp_resets_sent_total", 35.0),
            ("host_tcp_receive_errors_total", 0.0),
            ("host_tcp_listen_overflows_total", 7.0),
            ("host_tcp_listen_drops_total", 9.0),
        ] {
            assert_eq!(out.get(metric, &[]), Some(value), "{metric}");
        }
        let v4 = [("ip", "4")];
        let v6 = [("ip", "6")];
        assert_eq!(out.get("host_udp_receive_errors_total", &v4), Some(3.0));
        assert_eq!(
            out.get("host_udp_receive_buffer_errors_total", &v4),
            Some(2.0)
        );
        assert_eq!(out.get("host_udp_receive_errors_total", &v6), Some(5.0));
        assert_eq!(
            out.get("host_udp_receive_buffer_errors_total", &v6),
            Some(4.0)
        );
        assert_eq!(out.0.len(), 12);
    }

    #[test]
    fn malformed_lines_are_reported_and_the_rest_read() {
        let text = "\
Ip: Forwarding DefaultTTL
Ip: 2 64
Tcp: ActiveOpens PassiveOpens RetransSegs
Tcp: 1 2
Udp: InErrors RcvbufErrors
Udp: x 7
TcpExt: ListenOverflows ListenDrops
Tcp: 1 2
Udp: InErrors RcvbufErrors
";
        let mut out = Samples::default();
        let err = sample_paired(text, &mut out).unwrap_err();
        assert!(err.0.contains("2 values"), "{err}");
        // Only the well-formed pairs before and after.
        assert!(out.get("host_tcp_active_opens_total", &[]).is_none());
        assert!(out.get("host_tcp_listen_overflows_total", &[]).is_none());
        assert!(out.0.is_empty(), "{:?}", out.0);

        let mut out = Samples::default();
        let err = sample_paired("Udp: InErrors RcvbufErrors\nUdp: x 7\n", &mut out).unwrap_err();
        assert!(err.0.contains("not a counter"), "{err}");
        let err = sample_paired("Tcp: ActiveOpens\n", &mut out).unwrap_err();
        assert!(err.0.contains("no values"), "{err}");
        let err = sample_paired("garbage\nmore garbage\n", &mut out).unwrap_err();
        assert!(err.0.contains("no prefix"), "{err}");
        assert!(sample_snmp6("Udp6InErrors -1\n", &mut out).is_err());
    }

    #[test]
    fn no_snmp6_is_not_a_problem_but_no_snmp_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::write(
            dir.path().join("net/netstat"),
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 2\n",
        )
        .unwrap();
        let mut fs = ProcFs::new(dir.path().to_owned());
        let mut out = Samples::default();
        let problems = sample(&mut fs, &mut out);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("/proc/net/snmp:"), "{problems:?}");
        assert_eq!(out.get("host_tcp_listen_drops_total", &[]), Some(2.0));
    }
}
