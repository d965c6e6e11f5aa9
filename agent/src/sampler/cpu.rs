//! CPU utilization, total and per core, as a ratio from 0 to 1.

use super::Samples;
use sysinfo::System;

pub(super) fn sample(system: &System, out: &mut Samples) {
    const METRIC: &str = "host_cpu_utilization_ratio";
    out.push_labeled(
        METRIC,
        vec![("cpu", "total".to_owned())],
        ratio(system.global_cpu_usage()),
    );
    for (i, cpu) in system.cpus().iter().enumerate() {
        out.push_labeled(METRIC, vec![("cpu", i.to_string())], ratio(cpu.cpu_usage()));
    }
}

/// sysinfo reports percent; clamp rounding noise into [0, 1].
fn ratio(percent: f32) -> f64 {
    (f64::from(percent) / 100.0).clamp(0.0, 1.0)
}
