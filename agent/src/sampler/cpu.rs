//! CPU from `/proc/stat`: utilization total and per core, the time split
//! (user, nice, system, iowait, irq, softirq, steal, idle) as ratios of the
//! interval, the number of online CPUs, and the scheduler's counters
//! (context switches, forks, runnable and blocked tasks).

#![cfg(target_os = "linux")]

use super::{ParseError, Samples, field};

/// Clock ticks spent in each mode since boot. `user` and `nice` include
/// guest time, as the kernel accounts it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct CpuTimes {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl CpuTimes {
    fn parse(fields: &[&str], what: &str) -> Result<Self, ParseError> {
        // Fields after the label; kernels before 2.6.11 had fewer, and
        // `steal` is the newest we use. Missing ones count as zero.
        if fields.len() < 4 {
            return Err(ParseError::new(format!(
                "{what}: {} fields, expected at least 4",
                fields.len()
            )));
        }
        let get = |i: usize| -> Result<u64, ParseError> {
            if i < fields.len() {
                field(fields, i, what)
            } else {
                Ok(0)
            }
        };
        Ok(CpuTimes {
            user: get(0)?,
            nice: get(1)?,
            system: get(2)?,
            idle: get(3)?,
            iowait: get(4)?,
            irq: get(5)?,
            softirq: get(6)?,
            steal: get(7)?,
        })
    }

    /// Ticks between `prev` and `self`, per mode. A counter that went back
    /// (iowait may, see proc(5); a CPU that went offline and came back may
    /// restart) contributes zero instead of a huge wrapped value.
    fn since(&self, prev: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(prev.user),
            nice: self.nice.saturating_sub(prev.nice),
            system: self.system.saturating_sub(prev.system),
            idle: self.idle.saturating_sub(prev.idle),
            iowait: self.iowait.saturating_sub(prev.iowait),
            irq: self.irq.saturating_sub(prev.irq),
            softirq: self.softirq.saturating_sub(prev.softirq),
            steal: self.steal.saturating_sub(prev.steal),
        }
    }

    fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }

    fn modes(&self) -> [(&'static str, u64); 8] {
        [
            ("user", self.user),
            ("nice", self.nice),
            ("system", self.system),
            ("iowait", self.iowait),
            ("irq", self.irq),
            ("softirq", self.softirq),
            ("steal", self.steal),
            ("idle", self.idle),
        ]
    }
}

/// The parts of `/proc/stat` the agent uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Stat {
    total: CpuTimes,
    /// Online CPUs by number; an offline CPU has no line.
    cpus: Vec<(u32, CpuTimes)>,
    context_switches: u64,
    forks: u64,
    procs_running: u64,
    procs_blocked: u64,
    /// Boot time, seconds since the Unix epoch.
    pub(super) boot_time: u64,
}

pub(super) fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    let mut stat = Stat::default();
    let (mut total, mut ctxt, mut btime) = (false, false, false);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let Some(key) = parts.next() else { continue };
        let fields: Vec<&str> = parts.collect();
        match key {
            "cpu" => {
                stat.total = CpuTimes::parse(&fields, "cpu")?;
                total = true;
            }
            k if k.starts_with("cpu") => {
                let id: u32 = k[3..]
                    .parse()
                    .map_err(|_| ParseError::new(format!("unexpected line {k:?}")))?;
                stat.cpus.push((id, CpuTimes::parse(&fields, k)?));
            }
            "ctxt" => {
                stat.context_switches = field(&fields, 0, "ctxt")?;
                ctxt = true;
            }
            "btime" => {
                stat.boot_time = field(&fields, 0, "btime")?;
                btime = true;
            }
            "processes" => stat.forks = field(&fields, 0, "processes")?,
            "procs_running" => stat.procs_running = field(&fields, 0, "procs_running")?,
            "procs_blocked" => stat.procs_blocked = field(&fields, 0, "procs_blocked")?,
            _ => {}
        }
    }
    if !(total && ctxt && btime) {
        return Err(ParseError::new("no cpu, ctxt or btime line"));
    }
    Ok(stat)
}

/// The previous reading, for rates.
#[derive(Debug, Default)]
pub(super) struct State {
    prev: Option<Stat>,
}

impl State {
    pub(super) fn sample(&mut self, stat: Stat, out: &mut Samples) {
        if let Some(prev) = &self.prev {
            let delta = stat.total.since(&prev.total);
            if let Some(busy) = ratio(delta.busy(), delta.total()) {
                out.push_labeled(
                    "host_cpu_utilization_ratio",
                    vec![("cpu", "total".to_owned())],
                    busy,
                );
                for (mode, ticks) in delta.modes() {
                    if let Some(share) = ratio(ticks, delta.total()) {
                        out.push_labeled(
                            "host_cpu_time_ratio",
                            vec![("mode", mode.to_owned())],
                            share,
                        );
                    }
                }
            }
            for (id, times) in &stat.cpus {
                // A CPU that was offline at the previous reading has no
                // difference yet; it reappears from the next tick.
                let Some((_, before)) = prev.cpus.iter().find(|(i, _)| i == id) else {
                    continue;
                };
                let delta = times.since(before);
                if let Some(busy) = ratio(delta.busy(), delta.total()) {
                    out.push_labeled(
                        "host_cpu_utilization_ratio",
                        vec![("cpu", id.to_string())],
                        busy,
                    );
                }
            }
        }
        out.push("host_cpu_count", stat.cpus.len() as f64);
        out.push("host_context_switches_total", stat.context_switches as f64);
        out.push("host_forks_total", stat.forks as f64);
        out.push("host_procs_running", stat.procs_running as f64);
        out.push("host_procs_blocked", stat.procs_blocked as f64);
        self.prev = Some(stat);
    }
}

/// `part / whole` in [0, 1]; none when no time passed.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_1: &str = "\
cpu  100 10 50 800 20 5 5 10 0 0
cpu0 50 5 25 400 10 3 2 5 0 0
cpu1 50 5 25 400 10 2 3 5 0 0
intr 12345 0 0
ctxt 1000
btime 1700000000
processes 500
procs_running 2
procs_blocked 1
softirq 1 2 3
";

    // cpu1 went offline; cpu0 worked 60 of 100 ticks (5 of them iowait).
    const STAT_2: &str = "\
cpu  160 10 70 835 25 5 5 10 0 0
cpu0 110 5 45 435 15 3 2 5 0 0
intr 12399 0 0
ctxt 1500
btime 1700000000
processes 510
procs_running 1
procs_blocked 0
";

    // cpu1 came back.
    const STAT_3: &str = "\
cpu  260 10 70 935 25 5 5 10 0 0
cpu0 160 5 45 485 15 3 2 5 0 0
cpu1 100 5 25 450 10 2 3 5 0 0
ctxt 2000
btime 1700000000
processes 520
procs_running 1
procs_blocked 0
";

    #[test]
    fn parses_counters_and_cpus() {
        let stat = parse_stat(STAT_1).unwrap();
        assert_eq!(stat.cpus.len(), 2);
        assert_eq!(stat.total.steal, 10);
        assert_eq!(stat.context_switches, 1000);
        assert_eq!(stat.forks, 500);
        assert_eq!(stat.boot_time, 1_700_000_000);
        assert_eq!((stat.procs_running, stat.procs_blocked), (2, 1));
    }

    #[test]
    fn a_cpu_going_offline_and_back_is_skipped_then_resumed() {
        let mut state = State::default();
        let mut out = Samples::default();
        state.sample(parse_stat(STAT_1).unwrap(), &mut out);
        assert!(
            out.get("host_cpu_utilization_ratio", &[("cpu", "total")])
                .is_none()
        );
        assert_eq!(out.get("host_cpu_count", &[]), Some(2.0));

        let mut out = Samples::default();
        state.sample(parse_stat(STAT_2).unwrap(), &mut out);
        // Total: busy 60+20 = 80 of 80+35+5 = 120 ticks.
        let total = out
            .get("host_cpu_utilization_ratio", &[("cpu", "total")])
            .unwrap();
        assert!((total - 80.0 / 120.0).abs() < 1e-9, "{total}");
        let iowait = out
            .get("host_cpu_time_ratio", &[("mode", "iowait")])
            .unwrap();
        assert!((iowait - 5.0 / 120.0).abs() < 1e-9);
        let cpu0 = out
            .get("host_cpu_utilization_ratio", &[("cpu", "0")])
            .unwrap();
        assert!((cpu0 - 80.0 / 120.0).abs() < 1e-9);
        assert!(
            out.get("host_cpu_utilization_ratio", &[("cpu", "1")])
                .is_none()
        );
        assert_eq!(out.get("host_cpu_count", &[]), Some(1.0));
        assert_eq!(out.get("host_context_switches_total", &[]), Some(1500.0));

        let mut out = Samples::default();
        state.sample(parse_stat(STAT_3).unwrap(), &mut out);
        assert!(
            out.get("host_cpu_utilization_ratio", &[("cpu", "0")])
                .is_some()
        );
        // No previous reading of cpu1 yet: it resumes at the next tick.
        assert!(
            out.get("host_cpu_utilization_ratio", &[("cpu", "1")])
                .is_none()
        );
        let mut out = Samples::default();
        state.sample(parse_stat(STAT_3).unwrap(), &mut out);
        // No time passed: no ratio rather than a division by zero.
        assert!(
            out.get("host_cpu_utilization_ratio", &[("cpu", "total")])
                .is_none()
        );
    }

    #[test]
    fn counters_going_back_do_not_wrap() {
        let mut state = State::default();
        state.sample(parse_stat(STAT_2).unwrap(), &mut Samples::default());
        let back = STAT_2.replace("cpu  160 10 70 835 25", "cpu  170 10 70 845 20");
        let mut out = Samples::default();
        state.sample(parse_stat(&back).unwrap(), &mut out);
        let total = out
            .get("host_cpu_utilization_ratio", &[("cpu", "total")])
            .unwrap();
        assert!((total - 0.5).abs() < 1e-9, "{total}");
        for s in &out.0 {
            assert!((0.0..=1.0).contains(&s.value) || !s.metric.ends_with("_ratio"));
        }
    }

    #[test]
    fn unexpected_formats_are_errors_not_panics() {
        for text in [
            "",
            "cpu 1 2\nctxt 1\nbtime 1\n",
            "cpu 1 2 x 4\nctxt 1\nbtime 1\n",
            "cpu 1 2 3 4\ncpuX 1 2 3 4\nctxt 1\nbtime 1\n",
            "cpu 1 2 3 4\nctxt\nbtime 1\n",
            "cpu 1 2 3 4\nctxt 1\n",
            "\u{0}\u{1}garbage",
        ] {
            assert!(parse_stat(text).is_err(), "{text:?}");
        }
        // Old kernels: four fields are enough.
        assert!(parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\nctxt 1\nbtime 1\n").is_ok());
    }
}
