//! Network interfaces from `/proc/net/dev`: bytes, packets, errors and
//! drops received and transmitted, as counters since boot. Interfaces are
//! filtered by name (configuration `[network]`).

#![cfg(target_os = "linux")]

use super::{ParseError, Samples, field};
use crate::config::NetworkConfig;

/// The columns of `/proc/net/dev` after the interface name, receive then transmit.
const COLUMNS: [(usize, &str); 8] = [
    (0, "host_network_receive_bytes_total"),
    (1, "host_network_receive_packets_total"),
    (2, "host_network_receive_errors_total"),
    (3, "host_network_receive_drops_total"),
    (8, "host_network_transmit_bytes_total"),
    (9, "host_network_transmit_packets_total"),
    (10, "host_network_transmit_errors_total"),
    (11, "host_network_transmit_drops_total"),
];

/// Appends the counters of every reported interface. A malformed line is
/// skipped; the first problem is returned after the rest was read.
pub(super) fn sample(
    text: &str,
    settings: &NetworkConfig,
    out: &mut Samples,
) -> Result<(), ParseError> {
    let mut first_problem = None;
    // Two header lines, then `  eth0: 123 4 ...` (no space after the colon
    // once the byte count is wide).
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let Some((name, counters)) = line.split_once(':') else {
            first_problem.get_or_insert_with(|| ParseError::new(format!("no colon in {line:?}")));
            continue;
        };
        let name = name.trim();
        if settings.exclude.is_match(name) {
            continue;
        }
        let fields: Vec<&str> = counters.split_ascii_whitespace().collect();
        let values: Result<Vec<u64>, ParseError> = COLUMNS
            .iter()
            .map(|(i, _)| field(&fields, *i, name))
            .collect();
        match values {
            Ok(values) => {
                for ((_, metric), value) in COLUMNS.iter().zip(values) {
                    out.push_labeled(metric, vec![("device", name.to_owned())], value as f64);
                }
            }
            Err(e) => {
                first_problem.get_or_insert(e);
            }
        }
    }
    match first_problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  548114    3271    0    0    0     0          0         0   548114    3271    0    0    0     0       0          0
  eth0:171955089   12783    3    4    0     0          0         0  1052002    8517    5    6    0     0       0          0
veth12ab: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0
  wlan0: 1 2 3
";

    #[test]
    fn parses_counters_skips_excluded_and_reports_bad_lines() {
        let mut out = Samples::default();
        let err = sample(NET_DEV, &NetworkConfig::default(), &mut out).unwrap_err();
        assert!(err.0.contains("wlan0"), "{err}");
        let eth0 = [("device", "eth0")];
        for (metric, value) in [
            ("host_network_receive_bytes_total", 171_955_089.0),
            ("host_network_receive_errors_total", 3.0),
            ("host_network_receive_drops_total", 4.0),
            ("host_network_transmit_packets_total", 8517.0),
            ("host_network_transmit_errors_total", 5.0),
            ("host_network_transmit_drops_total", 6.0),
        ] {
            assert_eq!(out.get(metric, &eth0), Some(value), "{metric}");
        }
        assert!(
            out.get("host_network_receive_bytes_total", &[("device", "lo")])
                .is_none()
        );
        assert!(
            out.get(
                "host_network_receive_bytes_total",
                &[("device", "veth12ab")]
            )
            .is_none()
        );
        assert_eq!(out.0.len(), 8);
    }
}
