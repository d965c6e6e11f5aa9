//! The sampler `agent.toml`'s `sampler` key chose: the `/proc` families
//! (Linux) or the portable `sysinfo` one.

#[cfg(target_os = "linux")]
use super::Sampler;
use super::sysinfo::SysinfoSampler;
use super::{Settings, Tick};
use crate::config::SamplerKind;

/// One of the two samplers, behind the calls the sampling loop makes.
pub enum HostSampler {
    #[cfg(target_os = "linux")]
    Proc(Box<Sampler>),
    Sysinfo(Box<SysinfoSampler>),
}

impl HostSampler {
    /// The sampler of `kind`. `proc` exists only on Linux; elsewhere the
    /// configuration refuses it (`AgentConfig::load`), so it never gets here.
    pub fn new(kind: SamplerKind, settings: Settings) -> Self {
        match kind {
            #[cfg(target_os = "linux")]
            SamplerKind::Proc => HostSampler::Proc(Box::new(Sampler::new(settings))),
            #[cfg(not(target_os = "linux"))]
            SamplerKind::Proc => HostSampler::Sysinfo(Box::new(SysinfoSampler::new(settings))),
            SamplerKind::Sysinfo => HostSampler::Sysinfo(Box::new(SysinfoSampler::new(settings))),
        }
    }

    /// Applies a reloaded configuration; previous readings stay.
    pub fn reconfigure(&mut self, settings: Settings) {
        match self {
            #[cfg(target_os = "linux")]
            HostSampler::Proc(s) => s.reconfigure(settings),
            HostSampler::Sysinfo(s) => s.reconfigure(settings),
        }
    }

    /// Reads the host once. `now` is monotonic time, for rates.
    pub fn sample(&mut self, now: std::time::Instant) -> Tick {
        match self {
            #[cfg(target_os = "linux")]
            HostSampler::Proc(s) => s.sample(now),
            HostSampler::Sysinfo(s) => s.sample(now),
        }
    }
}
