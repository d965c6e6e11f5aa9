//! Uptime and boot time, in seconds.

use super::Samples;
use sysinfo::System;

pub(super) fn sample(out: &mut Samples) {
    out.push("host_uptime_seconds", System::uptime() as f64);
    out.push("host_boot_time_seconds", System::boot_time() as f64);
}
