//! What the agent tells the collector about this host in its Hello.

use hostwatch_proto::v1::HostFacts;
use sysinfo::System;

/// Path of the kernel's per-boot random id.
#[cfg(target_os = "linux")]
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Host facts, read once at start (they change only with a reboot or upgrade).
pub fn host_facts() -> HostFacts {
    let mut system = System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    system.refresh_memory();
    HostFacts {
        hostname: System::host_name().unwrap_or_default(),
        os_name: System::name().unwrap_or_default(),
        os_version: System::os_version().unwrap_or_default(),
        kernel_version: System::kernel_version().unwrap_or_default(),
        architecture: System::cpu_arch(),
        cpu_model: system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .unwrap_or_default(),
        cpu_count: system.cpus().len() as u32,
        memory_total_bytes: system.total_memory(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_time_ms: System::boot_time() as i64 * 1000,
    }
}

/// The kernel's boot id; empty where the kernel has none.
#[cfg(target_os = "linux")]
pub fn boot_id() -> String {
    match std::fs::read_to_string(BOOT_ID_PATH) {
        Ok(id) => id.trim().to_owned(),
        Err(e) => {
            tracing::warn!(path = BOOT_ID_PATH, error = %e, "no boot id");
            String::new()
        }
    }
}

/// What tells one boot from the next where the kernel has no boot id (the
/// collector's reboot alert compares it): the boot time, which changes
/// with each boot and only then.
#[cfg(not(target_os = "linux"))]
pub fn boot_id() -> String {
    format!("boot-time-{}", System::boot_time())
}
