//! A deterministic writer for crash testing: the content of every batch
//! follows from (writer, sequence), so after a crash a checker knows
//! exactly what each acknowledged batch stored.
//!
//! [`crash_round`] runs writers in a child process (the caller's own
//! executable, re-executed with arguments that lead to [`child_main`]),
//! kills it with SIGKILL after a given delay, reopens the store and checks
//! that every acknowledged batch is present exactly once, that batches not
//! acknowledged are present either whole or not at all, and that replays
//! of stored batches are recognized. The crash test runs a few rounds; the
//! benchmark runs many.

use crate::TsdbError;
use crate::model::{
    AppendOutcome, Batch, Label, Matcher, Point, ProcessInfo, ProcessSnapshot, SeriesInput,
};
use crate::options::{Clock, DAY_MS, Options};
use crate::store::Store;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sample interval of the workload's series.
const STEP_MS: i64 = 10_000;
/// How far before its batch's time the late series' sample lies (within
/// the out-of-order tolerance).
const LATE_MS: i64 = 5 * 60_000;
/// The child's retention, on the workload's clock: two partitions of an
/// hour, so that rounds keep deleting the oldest.
const RETENTION_MS: i64 = 2 * crate::options::HOUR_MS;

/// Why a crash round, the child's writers or a check failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Store(#[from] TsdbError),
    /// Reopening the store after the kill failed.
    #[error("reopen: {0}")]
    Reopen(TsdbError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot start the child: {0}")]
    Spawn(std::io::Error),
    #[error("child has no stdout")]
    NoStdout,
    #[error("stdout poisoned")]
    StdoutPoisoned,
    #[error("writer panicked")]
    WriterPanicked,
    /// The store did not store a fresh batch whole.
    #[error("writer {writer} seq {seq}: {outcome:?}")]
    NotStored {
        writer: u32,
        seq: u64,
        outcome: AppendOutcome,
    },
    #[error("the child acknowledged nothing within 60 s (exit: {0})")]
    NothingAcknowledged(std::process::ExitStatus),
    /// The reopened store breaks the exactly-once contract; the message
    /// names the host, the sequence and what was found.
    #[error("{0}")]
    Violation(String),
    #[error("verify found damage: {0:?}")]
    Damaged(Vec<String>),
}

/// Per timestamp of one series: how many copies were found, and the value.
type Copies = HashMap<i64, (u64, f64)>;

/// Shape of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub writers: u32,
    /// Series per batch (plus one late series).
    pub series: u32,
    /// Time of sequence 0; sequence `s` is at `base_ms + s * 10 s`.
    pub base_ms: i64,
}

impl Workload {
    /// A workload whose times start 29 days before `now_ms` (the child's
    /// clock is the workload's own time, see [`child_main`]), leaving room
    /// for 250,000 batches per writer;
    /// 2 minutes (12 batches) before an hour, so that the first rounds
    /// cross a window and partition boundary and seal into a new partition
    /// (see [`Workload::options`]).
    pub fn new(writers: u32, series: u32, now_ms: i64) -> Self {
        let hour = crate::options::HOUR_MS;
        let start = crate::options::align(now_ms - 29 * DAY_MS, hour);
        Workload {
            writers,
            series,
            base_ms: start + hour - 2 * 60_000,
        }
    }

    /// Store options of the child: maintenance every few milliseconds and
    /// small WAL generations, so kills land during sealing and while WAL
    /// generations are started and deleted too; partitions of an hour, so
    /// kills land while partitions are created and written; partitions
    /// closed as soon as a pass leaves them unused, so kills land while
    /// they are closed and reopened; a retention of [`RETENTION_MS`] on
    /// `clock` (the workload's time, see [`child_main`]), so kills land
    /// while retention deletes whole partitions; the accept log on, so
    /// that what forwarding reads is checked across kills as well.
    pub fn options(&self, clock: Clock) -> Options {
        Options {
            maintenance_interval: Some(Duration::from_millis(5)),
            wal_generation_bytes: 16 << 10,
            partition_ms: crate::options::HOUR_MS,
            partition_idle_close: Duration::ZERO,
            retention_ms: RETENTION_MS,
            accept_log: true,
            clock,
            ..Options::default()
        }
    }

    /// Samples before this may have been deleted by retention in a store
    /// whose clock reached at most `now` (see [`Workload::options`]).
    fn expired_before(now: i64) -> i64 {
        crate::options::align(
            now.saturating_sub(RETENTION_MS),
            Options::default().chunk_window_ms,
        )
    }

    /// Every stored sample must be in a span of the accept log that lists
    /// its series: forwarding, which reads the log, would miss it otherwise.
    fn check_accept_log(&self, store: &Store) -> Result<(), WorkloadError> {
        let mut spans: HashMap<u64, Vec<(i64, i64)>> = HashMap::new();
        for group in store.accepted_after(0, usize::MAX)? {
            for span in group.spans {
                for id in span.series {
                    spans
                        .entry(id)
                        .or_default()
                        .push((span.start_ms, span.end_ms));
                }
            }
        }
        for metric in ["crash_value", "crash_late"] {
            for (key, id) in store.select(metric, &[])? {
                let listed = spans.get(&id).map_or(&[][..], Vec::as_slice);
                for p in store.series_points(&key, id, i64::MIN, i64::MAX)? {
                    if !listed
                        .iter()
                        .any(|(start, end)| (*start..*end).contains(&p.t_ms))
                    {
                        return Err(WorkloadError::Violation(format!(
                            "{key} at {} is stored but in no accept log span",
                            p.t_ms
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn host(&self, writer: u32) -> String {
        format!("crash-{writer}")
    }

    fn value(writer: u32, seq: u64, series: u32) -> f64 {
        // Distinct per sample, with a mix of shapes (integers and fractions).
        if series.is_multiple_of(2) {
            (seq * 1000 + u64::from(series) + u64::from(writer)) as f64
        } else {
            seq as f64 / 7.0 + f64::from(series) + f64::from(writer) * 1e-3
        }
    }

    fn t(&self, seq: u64) -> i64 {
        self.base_ms + seq as i64 * STEP_MS
    }

    /// The batch `seq` of `writer`.
    pub fn batch(&self, writer: u32, seq: u64) -> Batch {
        let t = self.t(seq);
        let mut series: Vec<SeriesInput> = (0..self.series)
            .map(|s| SeriesInput {
                metric: "crash_value".into(),
                labels: vec![Label::new("s", s.to_string())],
                points: vec![Point {
                    t_ms: t,
                    value: Self::value(writer, seq, s),
                }],
            })
            .collect();
        series.push(SeriesInput {
            metric: "crash_late".into(),
            labels: vec![],
            points: vec![Point {
                t_ms: t - LATE_MS,
                value: seq as f64,
            }],
        });
        Batch {
            host: self.host(writer),
            source: 1,
            seq,
            series,
            processes: vec![ProcessSnapshot {
                t_ms: t,
                processes: vec![ProcessInfo {
                    pid: (seq % 30_000) as u32,
                    name: "crash".into(),
                    command: "crash --child".into(),
                    user: "root".into(),
                    cpu_cores: seq as f64 / 3.0,
                    rss_bytes: seq,
                    start_time_ms: self.base_ms,
                }],
            }],
            malformed: 0,
        }
    }

    /// Expected (series metric, label s, point) of batch `seq` of `writer`.
    fn expected(&self, writer: u32, seq: u64) -> Vec<(&'static str, Option<u32>, Point)> {
        let t = self.t(seq);
        let mut out: Vec<_> = (0..self.series)
            .map(|s| {
                (
                    "crash_value",
                    Some(s),
                    Point {
                        t_ms: t,
                        value: Self::value(writer, seq, s),
                    },
                )
            })
            .collect();
        out.push((
            "crash_late",
            None,
            Point {
                t_ms: t - LATE_MS,
                value: seq as f64,
            },
        ));
        out
    }

    /// Checks the store after a crash against the highest acknowledged
    /// sequence per writer; returns the batches found per writer.
    /// Samples retention may have deleted (before
    /// [`Workload::expired_before`] the newest batch stored: the child's
    /// clock never passed it) may be absent; present, each must be there
    /// once with its value.
    pub fn check(
        &self,
        store: &Store,
        acked: &HashMap<u32, u64>,
    ) -> Result<CheckReport, WorkloadError> {
        let mut report = CheckReport::default();
        let mut stored = HashMap::new();
        for writer in 0..self.writers {
            let acked = acked.get(&writer).copied().unwrap_or(0);
            stored.insert(writer, store.last_seq(&self.host(writer), 1)?.max(acked));
        }
        let newest = stored.values().copied().max().unwrap_or(0);
        let expired = Self::expired_before(self.t(newest));
        for writer in 0..self.writers {
            let host = self.host(writer);
            let acked = acked.get(&writer).copied().unwrap_or(0);
            let stored_seq = store.last_seq(&host, 1)?;
            if stored_seq < acked {
                return Err(WorkloadError::Violation(format!(
                    "{host}: acknowledged up to {acked}, store remembers {stored_seq}"
                )));
            }
            // Every point of this host, per (metric, s).
            let matchers = [Matcher::Equal("host".into(), host.clone())];
            let mut found: HashMap<(&str, Option<u32>), Copies> = HashMap::new();
            for metric in ["crash_value", "crash_late"] {
                let data = store.range(metric, &matchers, i64::MIN, i64::MAX)?;
                for series in data {
                    let s = series.key.label("s").and_then(|s| s.parse().ok());
                    let points = found.entry((metric, s)).or_default();
                    for p in series.points {
                        let entry = points.entry(p.t_ms).or_insert((0, p.value));
                        entry.0 += 1;
                    }
                }
            }
            for seq in 1..=stored_seq.max(acked) + 2 {
                let expected = self.expected(writer, seq);
                // Of the samples retention cannot have deleted: how many,
                // and how many are present.
                let (mut live, mut present_live, mut present) = (0, 0, 0);
                let mut missing = Vec::new();
                for (metric, s, p) in &expected {
                    let is_live = p.t_ms >= expired;
                    live += usize::from(is_live);
                    match found.get(&(*metric, *s)).and_then(|m| m.get(&p.t_ms)) {
                        None => missing.push(format!("{metric}{{s={s:?}}} at {}", p.t_ms)),
                        Some((1, v)) if v.to_bits() == p.value.to_bits() => {
                            present += 1;
                            present_live += usize::from(is_live);
                        }
                        Some((n, v)) => {
                            return Err(WorkloadError::Violation(format!(
                                "{host} seq {seq} {metric}{{s={s:?}}} at {}: {n} copies, value {v} (expected one, {})",
                                p.t_ms, p.value
                            )));
                        }
                    }
                }
                if seq <= acked && present_live != live {
                    return Err(WorkloadError::Violation(format!(
                        "{host} seq {seq} was acknowledged but {present_live} of its {live} samples within the retention (from {expired}) are present; missing: {}",
                        missing.join(", ")
                    )));
                }
                if present_live != 0 && present_live != live {
                    return Err(WorkloadError::Violation(format!(
                        "{host} seq {seq} is half visible: {present_live} of {live} samples within the retention (from {expired}); missing: {}",
                        missing.join(", ")
                    )));
                }
                if present > 0 && seq > stored_seq {
                    return Err(WorkloadError::Violation(format!(
                        "{host} seq {seq} is stored but the store remembers only {stored_seq}"
                    )));
                }
                if seq <= stored_seq && live > 0 && present_live == 0 {
                    return Err(WorkloadError::Violation(format!(
                        "{host} seq {seq} is remembered as stored but absent"
                    )));
                }
                if present > 0 && self.t(seq) >= expired {
                    let snapshot = store.process_snapshot_at(&host, self.t(seq))?;
                    if snapshot.map(|s| s.t_ms) != Some(self.t(seq)) {
                        return Err(WorkloadError::Violation(format!(
                            "{host} seq {seq}: process snapshot missing"
                        )));
                    }
                }
                if present > 0 {
                    report.batches += 1;
                }
                if live < expected.len() && present < expected.len() {
                    report.expired_batches += 1;
                }
            }
            // Replays of stored batches are recognized, across the restart.
            if stored_seq > 0 {
                let replay = store.append(&self.batch(writer, stored_seq))?;
                if !replay.duplicate {
                    return Err(WorkloadError::Violation(format!(
                        "{host}: replay of seq {stored_seq} was stored again"
                    )));
                }
            }
        }
        self.check_accept_log(store)?;
        let stats = store.stats()?;
        report.replayed_frames = stats.replayed_frames;
        Ok(report)
    }
}

/// What [`Workload::check`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Batches present, over all writers.
    pub batches: u64,
    /// WAL frames the reopen replayed.
    pub replayed_frames: u64,
    /// Batches some of whose samples retention had deleted.
    pub expired_batches: u64,
    /// Time partitions the store holds.
    pub partitions: u64,
}

/// Runs the writers against the store in `dir` until killed, printing
/// `ack <writer> <seq>` on stdout once each append returns. The store's
/// clock is the workload's time: that of the newest batch stored (at
/// start, of the newest any earlier child stored), so its retention
/// deletes partitions as the writers move on.
pub fn child_main(dir: &Path, workload: Workload) -> Result<(), WorkloadError> {
    let now = Arc::new(AtomicI64::new(workload.base_ms));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::Acquire))
    };
    let store = Arc::new(Store::open(dir, workload.options(clock))?);
    // Each writer's sequence: a writer more than MAX_SKEW batches ahead of
    // the slowest waits, as agents sending in real time keep together.
    // Left to drift over many rounds, a writer fell hours behind the
    // others, whose time is the store's clock, and its late samples were
    // refused as older than the retention.
    let mut progress = Vec::new();
    for writer in 0..workload.writers {
        let seq = store.last_seq(&workload.host(writer), 1)?;
        now.fetch_max(workload.t(seq), Ordering::AcqRel);
        progress.push(AtomicU64::new(seq));
    }
    let progress = Arc::new(progress);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..workload.writers)
        .map(|writer| {
            let (store, out, now) = (store.clone(), out.clone(), now.clone());
            let progress = progress.clone();
            std::thread::spawn(move || {
                let written = write(&store, workload, writer, &progress, &now, &out);
                if let Err(e) = written {
                    // The others would wait for this writer for ever.
                    eprintln!("crash child: writer {writer}: {e}");
                    std::process::exit(1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| WorkloadError::WriterPanicked)?;
    }
    Ok(())
}

/// Most batches a child's writer runs ahead of the slowest.
const MAX_SKEW: u64 = 30;

/// One writer of [`child_main`]: appends its batches for ever, printing
/// each acknowledgement.
fn write(
    store: &Store,
    workload: Workload,
    writer: u32,
    progress: &[AtomicU64],
    now: &AtomicI64,
    out: &std::sync::Mutex<std::io::Stdout>,
) -> Result<(), WorkloadError> {
    let host = workload.host(writer);
    let mut seq = store.last_seq(&host, 1)?;
    loop {
        seq += 1;
        progress[writer as usize].store(seq, Ordering::Release);
        let slowest = || progress.iter().map(|p| p.load(Ordering::Acquire)).min();
        while slowest().is_some_and(|s| seq > s + MAX_SKEW) {
            std::thread::sleep(Duration::from_micros(200));
        }
        let outcome = store.append(&workload.batch(writer, seq))?;
        if outcome.rejected.total() > 0 || outcome.duplicate {
            return Err(WorkloadError::NotStored {
                writer,
                seq,
                outcome,
            });
        }
        // Durable now: a checker finds it stored, so the clock never runs
        // past the newest batch it sees.
        now.fetch_max(workload.t(seq), Ordering::AcqRel);
        let mut out = out.lock().map_err(|_| WorkloadError::StdoutPoisoned)?;
        writeln!(out, "ack {writer} {seq}")?;
        out.flush()?;
    }
}

/// When a crash round kills its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// This long after the first acknowledgement.
    After(Duration),
    /// As soon as a partition directory appears (a partition is being
    /// created), or after `fallback` past the first acknowledgement.
    PartitionCreated { fallback: Duration },
    /// As soon as a partition directory is renamed for deletion
    /// (retention is deleting it), or after `fallback`.
    PartitionDeleted { fallback: Duration },
    /// As soon as a closed partition is being rewritten into its file
    /// (`chunks.tmp` there, or a `chunks` it did not have), or after
    /// `fallback`.
    PartitionRewritten { fallback: Duration },
}

/// How a round's kill came: at its moment, or on the lifecycle step it
/// waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KilledOn {
    #[default]
    Moment,
    PartitionCreated,
    PartitionDeleted,
    PartitionRewritten,
}

/// The names under `<dir>/partitions`.
fn partition_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("partitions"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The partition directories holding a file named `name`.
fn partitions_with(dir: &Path, name: &str) -> Vec<String> {
    partition_entries(dir)
        .into_iter()
        .filter(|e| dir.join("partitions").join(e).join(name).exists())
        .collect()
}

/// The partition directories, and those rewritten, when a round started.
struct Before {
    entries: Vec<String>,
    rewritten: Vec<String>,
}

/// Whether the child is at the lifecycle step `kill` waits for, given
/// the partition directories there were when it started.
fn at_step(kill: KillAt, dir: &Path, before: &Before) -> Option<KilledOn> {
    let before_rewritten = &before.rewritten;
    let before = &before.entries;
    match kill {
        KillAt::After(_) => None,
        KillAt::PartitionRewritten { .. } => (!partitions_with(dir, "chunks.tmp").is_empty()
            || partitions_with(dir, "chunks")
                .iter()
                .any(|e| !before_rewritten.contains(e)))
        .then_some(KilledOn::PartitionRewritten),
        KillAt::PartitionCreated { .. } => partition_entries(dir)
            .iter()
            .any(|e| !e.ends_with(".deleted") && !before.contains(e))
            .then_some(KilledOn::PartitionCreated),
        KillAt::PartitionDeleted { .. } => partition_entries(dir)
            .iter()
            .any(|e| e.ends_with(".deleted"))
            .then_some(KilledOn::PartitionDeleted)
            .or_else(|| {
                // Removed between two looks: just after the deletion.
                let now = partition_entries(dir);
                before
                    .iter()
                    .any(|e| !now.contains(e))
                    .then_some(KilledOn::PartitionDeleted)
            }),
    }
}

/// One crash round's findings.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundReport {
    /// Acknowledgements the child printed before it died.
    pub acked: u64,
    /// What the kill came on.
    pub killed_on: KilledOn,
    pub check: CheckReport,
}

/// How often a round waiting for a lifecycle step looks at the
/// partition directories.
const STEP_POLL: Duration = Duration::from_millis(1);

/// Starts `command` (which must end up in [`child_main`] on `dir`), kills
/// it with SIGKILL as `kill` says, reopens the store and checks it.
pub fn crash_round(
    mut command: Command,
    dir: &Path,
    workload: Workload,
    kill: KillAt,
) -> Result<RoundReport, WorkloadError> {
    let before = Before {
        entries: partition_entries(dir),
        rewritten: partitions_with(dir, "chunks"),
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(WorkloadError::Spawn)?;
    let stdout = child.stdout.take().ok_or(WorkloadError::NoStdout)?;
    let (tx, rx) = std::sync::mpsc::channel::<(u32, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ack") {
                continue;
            }
            let writer = parts.next().and_then(|w| w.parse().ok());
            let seq = parts.next().and_then(|s| s.parse().ok());
            if let (Some(w), Some(s)) = (writer, seq)
                && tx.send((w, s)).is_err()
            {
                break;
            }
        }
    });
    let kill_after = match kill {
        KillAt::After(d)
        | KillAt::PartitionCreated { fallback: d }
        | KillAt::PartitionDeleted { fallback: d }
        | KillAt::PartitionRewritten { fallback: d } => d,
    };
    let mut acked: HashMap<u32, u64> = HashMap::new();
    let mut count = 0u64;
    let mut killed_on = KilledOn::Moment;
    // Wait (bounded) for the first acknowledgement, then for the kill
    // moment or the lifecycle step.
    let started = Instant::now();
    let first_deadline = started + Duration::from_secs(60);
    let mut kill_at = None;
    loop {
        let deadline = kill_at.unwrap_or(first_deadline);
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if kill_at.is_some()
            && let Some(step) = at_step(kill, dir, &before)
        {
            killed_on = step;
            break;
        }
        let wait = match kill {
            KillAt::After(_) => deadline - now,
            _ => (deadline - now).min(STEP_POLL),
        };
        match rx.recv_timeout(wait) {
            Ok((w, s)) => {
                let a = acked.entry(w).or_default();
                *a = (*a).max(s);
                count += 1;
                kill_at.get_or_insert_with(|| Instant::now() + kill_after);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // SIGKILL on Unix.
    let _ = child.kill();
    let status = child.wait()?;
    // Acknowledgements already in the pipe were printed before the kill.
    let _ = reader.join();
    while let Ok((w, s)) = rx.try_recv() {
        let a = acked.entry(w).or_default();
        *a = (*a).max(s);
        count += 1;
    }
    if kill_at.is_none() {
        return Err(WorkloadError::NothingAcknowledged(status));
    }
    // The store's clock at reopen: the newest acknowledged batch (the
    // child's was there or a few batches later); retention past it is
    // what the check allows for.
    let newest = acked.values().copied().max().unwrap_or(0);
    let reopened_at = workload.t(newest);
    let options = Options {
        maintenance_interval: None,
        ..workload.options(Arc::new(move || reopened_at))
    };
    let store = Store::open(dir, options).map_err(WorkloadError::Reopen)?;
    let mut check = workload.check(&store, &acked)?;
    let verify = store.verify()?;
    if !verify.is_clean() {
        return Err(WorkloadError::Damaged(verify.damaged));
    }
    check.partitions = verify.partitions;
    Ok(RoundReport {
        acked: count,
        killed_on,
        check,
    })
}
