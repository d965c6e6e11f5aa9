//! Measurement of another process from /proc, of this process and thread
//! from the kernel's clocks, and statistics.

use std::path::PathBuf;

/// A running process observed from outside.
pub(crate) struct Probe {
    pid: u32,
}

impl Probe {
    pub(crate) fn new(pid: u32) -> Self {
        Probe { pid }
    }

    /// The process' id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.pid))
    }

    /// CPU time of all its threads so far, in nanoseconds (the first field
    /// of each thread's schedstat: time on CPU, at nanosecond resolution).
    /// A thread that exits takes its time out of the sum, so measure
    /// processes whose threads outlive the measurement.
    pub(crate) fn cpu_ns(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(self.dir().join("task"))? {
            let path = task?.path().join("schedstat");
            // A thread may exit between listing and reading.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let ns: u64 = text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{}: unexpected {text:?}", path.display()))?;
            total += ns;
        }
        Ok(total)
    }

    /// CPU time (user and system) of the whole process so far, in
    /// nanoseconds, from /proc/<pid>/stat: threads that already ended
    /// included (a tokio blocking pool's come and go), at the kernel's
    /// clock-tick resolution.
    pub(crate) fn stat_cpu_ns(&self) -> anyhow::Result<u64> {
        let path = self.dir().join("stat");
        let text = std::fs::read_to_string(&path)?;
        parse_stat_cpu_ticks(&text)
            .map(|ticks| ticks * 1_000_000_000 / clock_ticks_per_second())
            .ok_or_else(|| anyhow::anyhow!("{}: unexpected {text:?}", path.display()))
    }

    /// (resident, peak resident) bytes, from VmRSS and VmHWM.
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let [rss, peak] = self.status_bytes(["VmRSS:", "VmHWM:"])?;
        Ok((rss, peak))
    }

    /// (anonymous, file-backed) resident bytes: heap and stacks, and
    /// mapped code and libraries.
    pub(crate) fn rss_split(&self) -> anyhow::Result<(u64, u64)> {
        let [anon, file] = self.status_bytes(["RssAnon:", "RssFile:"])?;
        Ok((anon, file))
    }

    /// Fields of one reading of /proc/<pid>/status, in bytes: read apart,
    /// they could come from different moments of a running process.
    fn status_bytes<const N: usize>(&self, names: [&str; N]) -> anyhow::Result<[u64; N]> {
        let status = std::fs::read_to_string(self.dir().join("status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{}/status", self.pid))
        };
        let mut out = [0; N];
        for (slot, name) in out.iter_mut().zip(names) {
            *slot = field(name)?;
        }
        Ok(out)
    }
}

/// utime + stime, in clock ticks, of a /proc/<pid>/stat line: the 14th
/// and 15th fields, counted after the command's closing parenthesis (the
/// command may hold spaces and parentheses).
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's USER_HZ, in which /proc reports CPU times (100 on Linux
/// whatever the scheduler's tick, but asked rather than assumed).
fn clock_ticks_per_second() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    }
}

/// The load average over the last minute, from /proc/loadavg.
pub(crate) fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("/proc/loadavg: unexpected {text:?}"))
}

/// CPU time (user and system) of this process so far, in nanoseconds,
/// threads that already ended included.
pub(crate) fn process_cpu_ns() -> anyhow::Result<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let ns =
        |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1_000;
    Ok(ns(usage.user_time()) + ns(usage.system_time()))
}

/// CPU time of the calling thread so far, in nanoseconds (one system
/// call, cheap enough to bracket small pieces of work).
pub(crate) fn thread_cpu_ns() -> anyhow::Result<u64> {
    use nix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// The median of `values` (mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// The `p`th percentile of `values` (nearest rank), `p` in 0..=100.
pub(crate) fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn measures_this_process_and_thread() {
        let (before, thread_before) = (process_cpu_ns().unwrap(), thread_cpu_ns().unwrap());
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns().unwrap() > thread_before);
        // A thread that ended still counts for the process.
        std::thread::spawn(|| {
            let mut y = 0u64;
            for i in 0..2_000_000u64 {
                y = y.wrapping_add(i * i);
            }
            std::hint::black_box(y);
        })
        .join()
        .unwrap();
        assert!(process_cpu_ns().unwrap() > before);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
        let probe = Probe::new(std::process::id());
        let before = probe.stat_cpu_ns().unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(probe.stat_cpu_ns().unwrap() > before);
        assert!(load_average().unwrap() >= 0.0);
    }

    #[test]
    fn probes_this_process() {
        let probe = Probe::new(std::process::id());
        // Another test's thread that exits between two readings takes its
        // time out of the sum, so a reading may go down once in a while:
        // spinning must make it go up within a few tries.
        let went_up = (0..10).any(|_| {
            let before = probe.cpu_ns().unwrap();
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_add(i * i);
            }
            std::hint::black_box(x);
            probe.cpu_ns().unwrap() > before
        });
        assert!(went_up, "CPU time did not grow while this thread spun");
        let (rss, peak) = probe.rss_bytes().unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(probe.rss_split().is_ok());
        // One reading: other tests' threads change the resident size
        // between two.
        let [rss, anon, file] = probe
            .status_bytes(["VmRSS:", "RssAnon:", "RssFile:"])
            .unwrap();
        assert!(anon > 0 && file > 0 && anon + file <= rss + 4096 * 16);
    }
}
