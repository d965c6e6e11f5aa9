//! Sampling of this host, one file per metric family. Each family appends
//! [`Sample`]s for one tick; names follow DESIGN.md section 4 (Prometheus
//! conventions, unit suffixes).

mod cpu;
mod filesystem;
mod host;
mod load;
mod memory;
mod network;

use sysinfo::{Disks, Networks, System};

/// One value of one series at the tick's time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The samples of one tick.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    fn push(&mut self, metric: &'static str, value: f64) {
        self.0.push(Sample {
            metric,
            labels: Vec::new(),
            value,
        });
    }

    fn push_labeled(
        &mut self,
        metric: &'static str,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        self.0.push(Sample {
            metric,
            labels,
            value,
        });
    }
}

/// Holds sysinfo's state between ticks; rates and CPU usage need the previous reading.
pub struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    /// CPU usage is a difference between two readings; the first tick has none.
    cpu_primed: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Sampler {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            cpu_primed: false,
        }
    }

    /// Reads every metric family once.
    pub fn sample(&mut self) -> Samples {
        let mut out = Samples::default();
        self.system.refresh_cpu_usage();
        if self.cpu_primed {
            cpu::sample(&self.system, &mut out);
        }
        self.cpu_primed = true;
        self.system.refresh_memory();
        memory::sample(&self.system, &mut out);
        load::sample(&mut out);
        host::sample(&mut out);
        // Refreshing the list picks up mounts and interfaces that appeared
        // and drops those that went away.
        self.disks.refresh(true);
        filesystem::sample(&self.disks, &mut out);
        self.networks.refresh(true);
        network::sample(&self.networks, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_tick_has_every_family() {
        let mut sampler = Sampler::new();
        let first = sampler.sample();
        assert!(
            !first
                .0
                .iter()
                .any(|s| s.metric == "host_cpu_utilization_ratio")
        );
        let second = sampler.sample();
        for metric in [
            "host_cpu_utilization_ratio",
            "host_memory_available_bytes",
            "host_load1",
            "host_uptime_seconds",
            "host_boot_time_seconds",
        ] {
            assert!(
                second.0.iter().any(|s| s.metric == metric),
                "{metric} missing"
            );
        }
        for sample in &second.0 {
            assert!(sample.value.is_finite(), "{sample:?}");
        }
    }
}
