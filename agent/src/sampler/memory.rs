//! Memory and swap, in bytes.

use super::Samples;
use sysinfo::System;

pub(super) fn sample(system: &System, out: &mut Samples) {
    out.push("host_memory_total_bytes", system.total_memory() as f64);
    out.push(
        "host_memory_available_bytes",
        system.available_memory() as f64,
    );
    out.push("host_memory_used_bytes", system.used_memory() as f64);
    out.push("host_memory_free_bytes", system.free_memory() as f64);
    out.push("host_swap_total_bytes", system.total_swap() as f64);
    out.push("host_swap_used_bytes", system.used_swap() as f64);
}
