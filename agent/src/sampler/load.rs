//! Load averages over 1, 5 and 15 minutes.

use super::Samples;
use sysinfo::System;

pub(super) fn sample(out: &mut Samples) {
    let load = System::load_average();
    out.push("host_load1", load.one);
    out.push("host_load5", load.five);
    out.push("host_load15", load.fifteen);
}
