//! The storage bench's data: hosts with the agent's series, each series
//! a `Shape` evolving tick by tick from a seed of its host's, and each
//! host's processes for its top-process snapshots. Deterministic: the same
//! host index gives the same batches.

use super::INTERVAL_MS;
use hostwatch_tsdb::{Batch, Label, Point, ProcessInfo, ProcessSnapshot, SeriesInput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Uniform in [-1, 1): the generated data's noise.
fn noise(rng: &mut SmallRng) -> f64 {
    rng.random_range(-1.0..1.0)
}

/// How one series' values evolve, tick by tick.
enum Shape {
    Constant(f64),
    /// Busy ticks over total ticks of an interval (the agent's ratios):
    /// a noisy fraction around a slowly moving level.
    Ticks {
        level: f64,
        total: u64,
    },
    /// A counter growing by about `rate` per interval, in multiples of `unit`.
    Counter {
        value: u64,
        rate: f64,
        unit: u64,
    },
    /// A counter in seconds counted in `per_second` units (pressure stalls
    /// in microseconds, disk busy time in milliseconds).
    Seconds {
        value: u64,
        rate: f64,
        per_second: f64,
    },
    /// A gauge in whole pages (memory, filesystems), drifting.
    Pages {
        pages: i64,
        step: i64,
        min: i64,
    },
    /// A non-negative integer gauge taking small steps.
    Walk {
        value: i64,
        step: i64,
        max: i64,
    },
    /// A gauge of `value / scale` (load averages in hundredths, pressure
    /// in hundredths of a percent), mean-reverting towards `center`.
    Decimal {
        value: i64,
        step: i64,
        center: i64,
        scale: f64,
    },
    /// Seconds since boot with two decimals, 10 s more each tick.
    Uptime {
        centis: i64,
    },
}

impl Shape {
    fn next(&mut self, rng: &mut SmallRng) -> f64 {
        match self {
            Shape::Constant(v) => *v,
            Shape::Ticks { level, total } => {
                *level = (*level + noise(rng) * 0.01).clamp(0.0, 0.95);
                let total_now = *total + rng.random_range(0..5);
                let busy = ((*level + noise(rng) * 0.02).max(0.0) * total_now as f64) as u64;
                busy.min(total_now) as f64 / total_now as f64
            }
            Shape::Counter { value, rate, unit } => {
                let step = (*rate * (1.0 + noise(rng) * 0.5)).max(0.0) as u64;
                *value += step / *unit * *unit;
                *value as f64
            }
            Shape::Seconds {
                value,
                rate,
                per_second,
            } => {
                *value += (*rate * (1.0 + noise(rng))).max(0.0) as u64;
                *value as f64 / *per_second
            }
            Shape::Pages { pages, step, min } => {
                if rng.random_range(0..3) > 0 {
                    *pages = (*pages + (noise(rng) * *step as f64) as i64).max(*min);
                }
                (*pages * 4096) as f64
            }
            Shape::Walk { value, step, max } => {
                *value = (*value + (noise(rng) * *step as f64).round() as i64).clamp(0, *max);
                *value as f64
            }
            Shape::Decimal {
                value,
                step,
                center,
                scale,
            } => {
                let pull = if *value > *center { -1 } else { 1 };
                *value = (*value + (noise(rng) * *step as f64) as i64 + pull).max(0);
                *value as f64 / *scale
            }
            Shape::Uptime { centis } => {
                *centis += 1000 + rng.random_range(0..3) as i64 - 1;
                *centis as f64 / 100.0
            }
        }
    }
}

pub(crate) struct SeriesGen {
    pub(crate) metric: String,
    pub(crate) labels: Vec<Label>,
    shape: Shape,
}

/// One simulated host: the agent's series with a typical machine's shape
/// (4 cores, 2 mounts, 2 disks, 2 network devices, 2 watched processes).
pub(crate) struct HostGen {
    pub(crate) name: String,
    pub(crate) series: Vec<SeriesGen>,
    rng: SmallRng,
    /// The host's processes, when batches carry snapshots.
    processes: Option<ProcessGen>,
}

impl HostGen {
    pub(crate) fn new(index: u32, snapshots: bool) -> Self {
        let mut rng = SmallRng::seed_from_u64(u64::from(index));
        let mut series = HostSeries::default();
        let level = 0.05 + (rng.random_range(0..30) as f64) / 100.0;
        cpu_series(&mut series, level);
        memory_series(&mut series);
        system_series(&mut series, index);
        filesystem_series(&mut series);
        disk_series(&mut series);
        network_series(&mut series);
        pressure_series(&mut series);
        process_series(&mut series);
        HostGen {
            name: format!("host-{index}"),
            series: series.0,
            rng,
            processes: snapshots.then(|| ProcessGen::new(index)),
        }
    }

    /// The same host with the agent's own health series too (spool,
    /// connection, reconnects, its CPU and memory: agent/src/health.rs),
    /// which the console's host page charts; the storage and PromQL
    /// benches' hosts leave them out, so their figures stay comparable.
    pub(crate) fn with_agent_health(mut self) -> Self {
        let mut series = HostSeries(std::mem::take(&mut self.series));
        agent_series(&mut series);
        self.series = series.0;
        self
    }

    pub(crate) fn next_values(&mut self) -> Vec<f64> {
        let rng = &mut self.rng;
        self.series.iter_mut().map(|s| s.shape.next(rng)).collect()
    }

    /// An empty batch with this host's series.
    pub(crate) fn batch(&self) -> Batch {
        Batch {
            host: self.name.clone(),
            source: 1,
            seq: 0,
            series: self
                .series
                .iter()
                .map(|s| SeriesInput {
                    metric: s.metric.clone(),
                    labels: s.labels.clone(),
                    points: Vec::new(),
                })
                .collect(),
            processes: Vec::new(),
            malformed: 0,
        }
    }

    /// Refills `batch` with `n` ticks from `t_ms`, as batch `seq`.
    pub(crate) fn fill(&mut self, batch: &mut Batch, seq: u64, t_ms: i64, n: i64) {
        batch.seq = seq;
        for input in &mut batch.series {
            input.points.clear();
        }
        // Snapshots are refilled in place: the generator's allocations
        // would otherwise count as the store's CPU.
        let snapshots = if self.processes.is_some() {
            n as usize
        } else {
            0
        };
        batch.processes.resize_with(snapshots, || ProcessSnapshot {
            t_ms: 0,
            processes: Vec::new(),
        });
        for k in 0..n {
            let t_ms = t_ms + k * INTERVAL_MS;
            for (s, input) in self.series.iter_mut().zip(&mut batch.series) {
                let value = s.shape.next(&mut self.rng);
                input.points.push(Point { t_ms, value });
            }
            if let Some(processes) = &mut self.processes {
                processes.snapshot(t_ms, &mut batch.processes[k as usize]);
            }
        }
    }
}

/// A host's series in the order its batches carry them.
#[derive(Default)]
struct HostSeries(Vec<SeriesGen>);

impl HostSeries {
    /// Counters `(metric, start value, rate, unit)`, each rate times `scale`.
    fn counters(
        &mut self,
        labels: &[(&str, &str)],
        scale: f64,
        counters: &[(&str, u64, f64, u64)],
    ) {
        for &(metric, value, rate, unit) in counters {
            let rate = rate * scale;
            self.add(metric, labels, Shape::Counter { value, rate, unit });
        }
    }

    fn add(&mut self, metric: &str, labels: &[(&str, &str)], shape: Shape) {
        self.0.push(SeriesGen {
            metric: metric.to_owned(),
            labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            shape,
        });
    }
}

/// A host's series of the processors, context switches, forks and run queue.
fn cpu_series(s: &mut HostSeries, level: f64) {
    let cores = 4u64;
    s.add(
        "host_cpu_utilization_ratio",
        &[("cpu", "total")],
        Shape::Ticks {
            level,
            total: 1000 * cores,
        },
    );
    for cpu in ["0", "1", "2", "3"] {
        s.add(
            "host_cpu_utilization_ratio",
            &[("cpu", cpu)],
            Shape::Ticks { level, total: 1000 },
        );
    }
    for (mode, share) in [
        ("user", 0.6),
        ("system", 0.3),
        ("iowait", 0.05),
        ("softirq", 0.02),
    ] {
        s.add(
            "host_cpu_time_ratio",
            &[("mode", mode)],
            Shape::Ticks {
                level: level * share,
                total: 1000 * cores,
            },
        );
    }
    s.add(
        "host_cpu_time_ratio",
        &[("mode", "idle")],
        Shape::Ticks {
            level: 1.0 - level,
            total: 1000 * cores,
        },
    );
    for mode in ["nice", "irq", "steal"] {
        s.add(
            "host_cpu_time_ratio",
            &[("mode", mode)],
            Shape::Constant(0.0),
        );
    }
    s.add("host_cpu_count", &[], Shape::Constant(cores as f64));
    s.add(
        "host_context_switches_total",
        &[],
        Shape::Counter {
            value: 1 << 30,
            rate: 30_000.0,
            unit: 1,
        },
    );
    s.add(
        "host_forks_total",
        &[],
        Shape::Counter {
            value: 1 << 20,
            rate: 20.0,
            unit: 1,
        },
    );
    s.add(
        "host_procs_running",
        &[],
        Shape::Walk {
            value: 2,
            step: 2,
            max: 8,
        },
    );
    s.add(
        "host_procs_blocked",
        &[],
        Shape::Walk {
            value: 0,
            step: 1,
            max: 2,
        },
    );
}

/// A host's series of memory and swap.
fn memory_series(s: &mut HostSeries) {
    let mem_pages = 4 << 20; // 16 GiB
    s.add(
        "host_memory_total_bytes",
        &[],
        Shape::Constant((mem_pages * 4096) as f64),
    );
    for (metric, pages) in [
        ("host_memory_available_bytes", mem_pages / 2),
        ("host_memory_used_bytes", mem_pages / 3),
        ("host_memory_free_bytes", mem_pages / 8),
        ("host_memory_buffers_bytes", mem_pages / 64),
        ("host_memory_cached_bytes", mem_pages / 4),
    ] {
        s.add(
            metric,
            &[],
            Shape::Pages {
                pages,
                step: 64,
                min: 0,
            },
        );
    }
    s.add(
        "host_swap_total_bytes",
        &[],
        Shape::Constant((2u64 << 30) as f64),
    );
    s.add(
        "host_swap_used_bytes",
        &[],
        Shape::Constant((12u64 << 20) as f64),
    );
    s.add(
        "host_swap_in_bytes_total",
        &[],
        Shape::Constant((40u64 << 20) as f64),
    );
    s.add(
        "host_swap_out_bytes_total",
        &[],
        Shape::Constant((52u64 << 20) as f64),
    );
}

/// A host's series of load, threads, processes, uptime and boot time.
fn system_series(s: &mut HostSeries, index: u32) {
    let load = |step| Shape::Decimal {
        value: 80,
        step,
        center: 80,
        scale: 100.0,
    };
    s.add("host_load1", &[], load(20));
    s.add("host_load5", &[], load(5));
    s.add("host_load15", &[], load(2));
    s.add(
        "host_threads",
        &[],
        Shape::Walk {
            value: 600,
            step: 4,
            max: 5000,
        },
    );
    s.add(
        "host_processes",
        &[],
        Shape::Walk {
            value: 250,
            step: 2,
            max: 5000,
        },
    );
    s.add(
        "host_uptime_seconds",
        &[],
        Shape::Uptime {
            centis: 12 * 86_400 * 100,
        },
    );
    s.add(
        "host_boot_time_seconds",
        &[],
        Shape::Constant(1_790_000_000.0 + f64::from(index)),
    );
}

/// A host's series of two mounted filesystems.
fn filesystem_series(s: &mut HostSeries) {
    for (mount, device) in [("/", "/dev/sda1"), ("/var", "/dev/sdb1")] {
        let labels = [
            ("mountpoint", mount),
            ("device", device),
            ("fstype", "ext4"),
        ];
        let size_pages: i64 = 50 << 20;
        s.add(
            "host_filesystem_size_bytes",
            &labels,
            Shape::Constant((size_pages * 4096) as f64),
        );
        s.add(
            "host_filesystem_available_bytes",
            &labels,
            Shape::Pages {
                pages: size_pages / 3,
                step: 8,
                min: 0,
            },
        );
        s.add(
            "host_filesystem_free_bytes",
            &labels,
            Shape::Pages {
                pages: size_pages / 3 + 100_000,
                step: 8,
                min: 0,
            },
        );
        s.add(
            "host_filesystem_inodes",
            &labels,
            Shape::Constant(6_553_600.0),
        );
        s.add(
            "host_filesystem_inodes_free",
            &labels,
            Shape::Walk {
                value: 6_000_000,
                step: 3,
                max: 6_553_600,
            },
        );
    }
}

/// A host's series of two disks.
fn disk_series(s: &mut HostSeries) {
    for (device, scale) in [("sda", 1.0), ("sdb", 0.2)] {
        let l = [("device", device)];
        s.counters(
            &l,
            scale,
            &[
                ("host_disk_read_bytes_total", 1 << 34, 200_000.0, 512),
                ("host_disk_written_bytes_total", 1 << 35, 1_000_000.0, 512),
                ("host_disk_reads_completed_total", 1 << 22, 50.0, 1),
                ("host_disk_writes_completed_total", 1 << 24, 200.0, 1),
            ],
        );
        s.add(
            "host_disk_io_time_seconds_total",
            &l,
            Shape::Seconds {
                value: 1 << 32,
                rate: 800.0 * scale,
                per_second: 1e3,
            },
        );
        s.add(
            "host_disk_utilization_ratio",
            &l,
            Shape::Ticks {
                level: 0.08 * scale,
                total: 10_000,
            },
        );
    }
}

/// A host's series of two network devices.
fn network_series(s: &mut HostSeries) {
    for (device, scale) in [("lo", 0.05), ("eth0", 1.0)] {
        let l = [("device", device)];
        s.counters(
            &l,
            scale,
            &[
                ("host_network_receive_bytes_total", 1 << 36, 500_000.0, 1),
                ("host_network_transmit_bytes_total", 1 << 35, 300_000.0, 1),
                ("host_network_receive_packets_total", 1 << 28, 800.0, 1),
                ("host_network_transmit_packets_total", 1 << 28, 600.0, 1),
            ],
        );
        for metric in [
            "host_network_receive_errors_total",
            "host_network_transmit_errors_total",
            "host_network_receive_drops_total",
            "host_network_transmit_drops_total",
        ] {
            s.add(metric, &l, Shape::Constant(0.0));
        }
    }
}

/// A host's series of pressure stall information.
fn pressure_series(s: &mut HostSeries) {
    for (resource, kind) in [
        ("cpu", "some"),
        ("memory", "some"),
        ("memory", "full"),
        ("io", "some"),
        ("io", "full"),
    ] {
        let l = [("resource", resource), ("kind", kind)];
        let avg10 = Shape::Decimal {
            value: 10,
            step: 3,
            center: 10,
            scale: 10_000.0,
        };
        s.add("host_pressure_avg10_ratio", &l, avg10);
        s.add(
            "host_pressure_stalled_seconds_total",
            &l,
            Shape::Seconds {
                value: 1 << 30,
                rate: 20_000.0,
                per_second: 1e6,
            },
        );
    }
}

/// The agent's own series, as agent/src/health.rs samples them: a
/// connected agent whose spool holds a batch or two now and then, that
/// has not reconnected, dropped or renewed anything.
fn agent_series(s: &mut HostSeries) {
    s.add(
        "hostwatch_agent_cpu_seconds_total",
        &[],
        Shape::Seconds {
            value: 0,
            rate: 20.0,
            per_second: 1e3,
        },
    );
    s.add(
        "hostwatch_agent_resident_bytes",
        &[],
        Shape::Pages {
            pages: 4096,
            step: 16,
            min: 2048,
        },
    );
    s.add(
        "hostwatch_agent_batches_total",
        &[],
        Shape::Counter {
            value: 0,
            rate: 1.0,
            unit: 1,
        },
    );
    s.add(
        "hostwatch_agent_spool_bytes",
        &[],
        Shape::Walk {
            value: 0,
            step: 2_000,
            max: 12_000,
        },
    );
    s.add(
        "hostwatch_agent_spool_batches",
        &[],
        Shape::Walk {
            value: 0,
            step: 1,
            max: 3,
        },
    );
    for metric in [
        "hostwatch_agent_reconnects_total",
        "hostwatch_agent_spool_dropped_batches_total",
        "hostwatch_agent_spool_corrupt_records_total",
        "hostwatch_agent_spool_write_errors_total",
        "hostwatch_agent_certificate_renewals_total",
        "hostwatch_agent_certificate_renewal_failures_total",
    ] {
        s.add(metric, &[], Shape::Constant(0.0));
    }
    s.add("hostwatch_agent_spool_durable", &[], Shape::Constant(1.0));
    s.add("hostwatch_agent_connected", &[], Shape::Constant(1.0));
}

/// A host's series of two watched processes.
fn process_series(s: &mut HostSeries) {
    for name in ["nginx", "postgres"] {
        let l = [("name", name)];
        s.add("host_process_running", &l, Shape::Constant(1.0));
        s.add(
            "host_process_cpu_cores",
            &l,
            Shape::Ticks {
                level: 0.1,
                total: 1000,
            },
        );
        s.add(
            "host_process_resident_bytes",
            &l,
            Shape::Pages {
                pages: 50_000,
                step: 16,
                min: 1000,
            },
        );
    }
}

/// Processes in an agent's snapshot: the top N by CPU and the top N by
/// resident memory (`processes.top`, default 10), as the agent's sampler
/// picks them.
const TOP_PROCESSES: usize = 10;

/// A process of a simulated host.
struct SimProcess {
    pid: u32,
    name: String,
    command: String,
    user: &'static str,
    start_time_ms: i64,
    /// Typical CPU, in cores.
    cpu_level: f64,
    rss_pages: i64,
    /// Largest change of `rss_pages` in one tick.
    rss_step: i64,
    /// Ticks left for a short-lived job; `None` for a service.
    ticks_left: Option<u32>,
}

/// The processes of a simulated host: about 40 long-running services (a
/// web server, a database, an application server, the system's daemons,
/// kernel threads) and short jobs (cron, backups) coming and going, so an
/// hour of snapshots lists a few dozen distinct processes.
struct ProcessGen {
    processes: Vec<SimProcess>,
    next_pid: u32,
    rng: SmallRng,
}

/// A simulated host's processes as they are started after boot, each a
/// pid a random gap after the previous one.
struct ProcessTable {
    host: ProcessGen,
    boot_ms: i64,
}

impl ProcessTable {
    /// Starts a long-running process.
    fn start(
        &mut self,
        name: &str,
        command: String,
        user: &'static str,
        cpu_level: f64,
        rss_mib: i64,
    ) {
        let host = &mut self.host;
        let pid = host.next_pid;
        host.next_pid += 1 + host.rng.random_range(0..40) as u32;
        host.processes.push(SimProcess {
            pid,
            name: name.to_owned(),
            command,
            user,
            start_time_ms: self.boot_ms + i64::from(pid) * 137,
            cpu_level,
            rss_pages: rss_mib * 256,
            rss_step: (rss_mib * 256 / 500).max(1),
            ticks_left: None,
        });
    }
}

/// Starts the init system, the system's daemons and the agent.
fn system_processes(table: &mut ProcessTable) {
    table.start("systemd", "/sbin/init splash".into(), "root", 0.001, 12);
    for (name, command, mib) in [
        ("systemd-journal", "/lib/systemd/systemd-journald", 48),
        ("systemd-udevd", "/lib/systemd/systemd-udevd", 8),
        ("systemd-logind", "/lib/systemd/systemd-logind", 7),
        (
            "dbus-daemon",
            "/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only",
            5,
        ),
        ("rsyslogd", "/usr/sbin/rsyslogd -n -iNONE", 6),
        ("cron", "/usr/sbin/cron -f -P", 3),
        (
            "sshd",
            "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            9,
        ),
        ("containerd", "/usr/bin/containerd", 45),
        (
            "dockerd",
            "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock",
            80,
        ),
    ] {
        table.start(name, command.into(), "root", 0.002, mib);
    }
    table.start(
        "hostwatch-agent",
        "/usr/bin/hostwatch-agent --config /etc/hostwatch/agent.toml".into(),
        "hostwatch",
        0.003,
        9,
    );
}

/// Starts a web server and a database with its workers and connections.
fn server_processes(table: &mut ProcessTable) {
    table.start(
        "nginx",
        "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;".into(),
        "root",
        0.0,
        10,
    );
    for _ in 0..4 {
        table.start(
            "nginx",
            "nginx: worker process".into(),
            "www-data",
            0.05,
            24,
        );
    }
    table.start(
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf".into(),
            "postgres",
            0.002,
            220,
        );
    for role in [
        "checkpointer",
        "background writer",
        "walwriter",
        "autovacuum launcher",
        "logical replication launcher",
    ] {
        table.start(
            "postgres",
            format!("postgres: 15/main: {role}"),
            "postgres",
            0.001,
            40,
        );
    }
    for i in 0..8 {
        table.start(
            "postgres",
            format!(
                "postgres: 15/main: app appdb 10.0.3.{}({}) idle",
                10 + i,
                40_000 + i * 113
            ),
            "postgres",
            0.04,
            150,
        );
    }
}

/// Starts the applications: a JVM, a Python web server, node and redis.
fn app_processes(table: &mut ProcessTable) {
    table.start(
            "java",
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java -Xms2g -Xmx2g -XX:+UseG1GC -Dspring.profiles.active=prod -jar /opt/app/app.jar".into(),
            "app",
            0.35,
            2300,
        );
    for _ in 0..4 {
        table.start(
                "gunicorn",
                "/opt/web/venv/bin/python3 /opt/web/venv/bin/gunicorn -w 4 -b 127.0.0.1:8000 web.wsgi:application".into(),
                "app",
                0.08,
                180,
            );
    }
    table.start(
        "node",
        "node /srv/frontend/server.js --port 3000".into(),
        "app",
        0.06,
        160,
    );
    table.start(
        "redis-server",
        "/usr/bin/redis-server 127.0.0.1:6379".into(),
        "redis",
        0.01,
        64,
    );
}

/// Starts kernel threads, one of each kind per core.
fn kernel_threads(table: &mut ProcessTable) {
    for cpu in 0..4 {
        table.start(
            &format!("kworker/{cpu}:1-events"),
            format!("[kworker/{cpu}:1-events]"),
            "root",
            0.002,
            0,
        );
        table.start(
            &format!("ksoftirqd/{cpu}"),
            format!("[ksoftirqd/{cpu}]"),
            "root",
            0.001,
            0,
        );
    }
}

impl ProcessGen {
    fn new(index: u32) -> Self {
        let mut table = ProcessTable {
            host: ProcessGen {
                processes: Vec::new(),
                next_pid: 1,
                // Seeds of their own, apart from the hosts' series.
                rng: SmallRng::seed_from_u64(!u64::from(index)),
            },
            boot_ms: 1_790_000_000_000 + i64::from(index) * 1000,
        };
        system_processes(&mut table);
        server_processes(&mut table);
        app_processes(&mut table);
        kernel_threads(&mut table);
        table.host
    }

    /// The snapshot of one tick at `t_ms`, into `out`: every process moves
    /// on, short jobs end and start, and the top N by CPU and by memory are
    /// listed.
    fn snapshot(&mut self, t_ms: i64, out: &mut ProcessSnapshot) {
        let rng = &mut self.rng;
        self.processes.retain(|p| p.ticks_left != Some(0));
        let mut cpus = Vec::with_capacity(self.processes.len());
        for p in &mut self.processes {
            if let Some(left) = &mut p.ticks_left {
                *left -= 1;
            }
            if rng.random_range(0..4) == 0 {
                p.rss_pages = (p.rss_pages + (noise(rng) * p.rss_step as f64) as i64).max(0);
            }
            // CPU as the agent computes it: ticks of 1/100 s over the
            // time since its previous tick, 10 s and the few milliseconds
            // its timer runs late.
            let ticks = (p.cpu_level * (1.0 + 0.8 * noise(rng)) * 1000.0)
                .round()
                .max(0.0);
            let secs = 10.0 + rng.random_range(0..5_000_000) as f64 * 1e-9;
            cpus.push(hostwatch_agent::sampler::cpu_cores(ticks as u64, 100, secs));
        }
        // A short job now and then: cron, a backup, log rotation.
        if rng.random_range(0..10) == 0 {
            const JOBS: [(&str, &str, &str); 4] = [
                (
                    "sh",
                    "/bin/sh -c /usr/local/bin/backup.sh --incremental /var/lib/app",
                    "root",
                ),
                (
                    "python3",
                    "python3 /opt/scripts/report.py --daily --output /var/reports",
                    "app",
                ),
                ("gzip", "gzip -9 /var/log/app/app.log.1", "root"),
                ("run-parts", "run-parts --report /etc/cron.hourly", "root"),
            ];
            let (name, command, user) = JOBS[rng.random_range(0..JOBS.len())];
            self.next_pid += 1 + rng.random_range(0..200) as u32;
            self.processes.push(SimProcess {
                pid: self.next_pid,
                name: name.to_owned(),
                command: command.to_owned(),
                user,
                start_time_ms: t_ms - rng.random_range(0..10_000) as i64,
                cpu_level: 0.3 + noise(rng).abs() * 0.7,
                rss_pages: 2000 + rng.random_range(0..20_000) as i64,
                rss_step: 200,
                ticks_left: Some(1 + rng.random_range(0..6) as u32),
            });
            cpus.push(0.5);
        }
        let mut by_cpu: Vec<usize> = (0..cpus.len()).filter(|&i| cpus[i] > 0.0).collect();
        by_cpu.sort_unstable_by(|&a, &b| cpus[b].total_cmp(&cpus[a]));
        by_cpu.truncate(TOP_PROCESSES);
        let mut by_rss: Vec<usize> = (0..self.processes.len())
            .filter(|&i| self.processes[i].rss_pages > 0)
            .collect();
        by_rss.sort_unstable_by_key(|&i| std::cmp::Reverse(self.processes[i].rss_pages));
        by_rss.truncate(TOP_PROCESSES);
        for i in by_rss {
            if !by_cpu.contains(&i) {
                by_cpu.push(i);
            }
        }
        out.t_ms = t_ms;
        out.processes.resize_with(by_cpu.len(), || ProcessInfo {
            pid: 0,
            name: String::new(),
            command: String::new(),
            user: String::new(),
            cpu_cores: 0.0,
            rss_bytes: 0,
            start_time_ms: 0,
        });
        for (info, i) in out.processes.iter_mut().zip(by_cpu) {
            let p = &self.processes[i];
            info.pid = p.pid;
            info.name.clone_from(&p.name);
            info.command.clone_from(&p.command);
            info.user.clear();
            info.user.push_str(p.user);
            info.cpu_cores = cpus[i];
            info.rss_bytes = p.rss_pages as u64 * 4096;
            info.start_time_ms = p.start_time_ms;
        }
    }
}
