//! Network bytes per interface, as counters since boot.

use super::Samples;
use sysinfo::Networks;

pub(super) fn sample(networks: &Networks, out: &mut Samples) {
    for (name, data) in networks.list() {
        let labels = vec![("device", name.clone())];
        out.push_labeled(
            "host_network_receive_bytes_total",
            labels.clone(),
            data.total_received() as f64,
        );
        out.push_labeled(
            "host_network_transmit_bytes_total",
            labels,
            data.total_transmitted() as f64,
        );
    }
}
