//! Compact encoding of a host's process snapshots: sealed blocks, the
//! head's open windows and WAL frames share it.
//!
//! Consecutive snapshots list mostly the same processes, so an encoding
//! keeps each distinct process (pid, start time, name, command, user) once,
//! in order of first appearance, and every snapshot lists references to it
//! with its CPU (XOR with that process' previous figure, zero bytes
//! trimmed) and RSS (difference from its previous figure).
//!
//! Layout of a payload: `[count varint]` then per snapshot `[time delta
//! ivarint][processes varint]` and per process `[index varint]` (a new
//! index is followed by pid, start time, name, command and user) `[cpu
//! xor][rss delta zigzag]`. A sealed block wraps a payload in the chunk
//! envelope (`chunk::seal`). A sealed block is written in columns
//! (`columns`), a fifth of the rows' size; blocks sealed as rows before
//! that are still read. The head keeps an open window's snapshots
//! ([`OpenBlock`]) as rows, appending each snapshot as it arrives, and
//! rewrites every complete run of [`RUN_SNAPSHOTS`] of them in columns
//! (merging runs of the same length), so an hour of a host's snapshots
//! costs not much more than its sealed block.

mod columns;

use crate::TsdbError;
use crate::chunk::{KIND_SNAPSHOT_COLUMNS, KIND_SNAPSHOTS, open, seal};
use crate::codec::{ByteReader, put_ivarint, put_str, put_uvarint, unzigzag, zigzag};
use crate::head::IdMap;
use crate::model::{ProcessInfo, ProcessSnapshot};

/// A process met earlier in an encoding: where its identity starts in the
/// body, and its figures as the decoder will have them.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Offset of its pid in `body`.
    at: u32,
    cpu_bits: u64,
    rss: u64,
}

/// Snapshots of an open window held in the head, in time order: the older
/// ones in runs, each a payload in columns, the newest (fewer than
/// [`RUN_SNAPSHOTS`]) as rows, encoded as they arrive. Each complete run
/// of rows becomes a run in columns, and two runs of the same length
/// merge into one, as a binary counter carries: a window holds a few runs
/// (mostly powers of two times [`RUN_SNAPSHOTS`]) and so a few tables of
/// strings, and each snapshot is rewritten a few times over its window's
/// life. An hour of a host's snapshots so costs not much more than its
/// sealed block, not the rows' five times that.
#[derive(Debug, Default)]
pub(crate) struct OpenBlock {
    runs: Vec<Run>,
    rows: Rows,
}

/// Snapshots of an open block, once a run of them is complete: a payload
/// in columns.
#[derive(Debug)]
struct Run {
    count: u64,
    first_t: i64,
    last_t: i64,
    payload: Box<[u8]>,
}

/// Snapshots an open block keeps as rows before it writes them in
/// columns: a run long enough for columns to pay (its strings are written
/// once), short enough that the rows stay a small part of the window.
pub(crate) const RUN_SNAPSHOTS: u64 = 32;

impl OpenBlock {
    /// A block holding `snapshots` (any order; the result is sorted and
    /// keeps the first of equal times).
    pub(crate) fn from_snapshots(mut snapshots: Vec<ProcessSnapshot>) -> Self {
        snapshots.sort_by_key(|s| s.t_ms);
        snapshots.dedup_by_key(|s| s.t_ms);
        let mut block = OpenBlock::default();
        for s in &snapshots {
            block.push(s);
        }
        block
    }

    /// Time of the newest snapshot.
    pub(crate) fn last_t(&self) -> Option<i64> {
        self.rows
            .last_t
            .or_else(|| self.runs.last().map(|run| run.last_t))
    }

    /// Snapshots held.
    pub(crate) fn len(&self) -> usize {
        self.runs
            .iter()
            .map(|run| run.count as usize)
            .sum::<usize>()
            + self.rows.count as usize
    }

    /// Appends a snapshot newer than every one held (the caller checks).
    pub(crate) fn push(&mut self, snapshot: &ProcessSnapshot) {
        self.rows.push(snapshot);
        if self.rows.count >= RUN_SNAPSHOTS {
            self.close_run();
        }
    }

    /// Rewrites the newest snapshots, held as rows, in columns: for a
    /// window that newer snapshots have passed (a late one is still
    /// taken, as rows again).
    pub(crate) fn close_rows(&mut self) {
        if self.rows.count > 0 {
            self.close_run();
        }
    }

    /// Rewrites the rows as a run in columns.
    fn close_run(&mut self) {
        let (Some(first_t), Some(last_t)) = (self.rows.first_t, self.rows.last_t) else {
            return;
        };
        let mut builder = columns::Builder::default();
        // The rows are this block's own encoding, so they decode; were
        // they not to, they stay rows (sealed as rows, never lost).
        if builder.add_rows(self.rows.count, &self.rows.body).is_err() {
            return;
        }
        let mut payload = Vec::with_capacity(self.rows.body.len() / 3);
        builder.finish(&mut payload);
        self.runs.push(Run {
            count: self.rows.count,
            first_t,
            last_t,
            payload: payload.into_boxed_slice(),
        });
        self.rows = Rows::default();
        while let [.., older, newer] = &self.runs[..]
            && older.count == newer.count
        {
            let Ok(merged) = merge(older, newer) else {
                // Runs this block wrote decode; were they not to, they
                // stay apart rather than be lost.
                return;
            };
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(merged);
        }
    }

    /// The block in columns, sealed in the chunk envelope.
    pub(crate) fn seal(&self, max_lsn: u64) -> Result<Vec<u8>, TsdbError> {
        if self.runs.is_empty() {
            return Ok(self.rows.seal(max_lsn));
        }
        let mut builder = columns::Builder::default();
        for run in &self.runs {
            builder.add_columns(&run.payload)?;
        }
        builder.add_rows(self.rows.count, &self.rows.body)?;
        let mut payload = Vec::new();
        builder.finish(&mut payload);
        Ok(seal(KIND_SNAPSHOT_COLUMNS, max_lsn, &payload))
    }

    /// Every snapshot, oldest first.
    pub(crate) fn snapshots(&self) -> Result<Vec<ProcessSnapshot>, TsdbError> {
        let mut out = Vec::with_capacity(self.len());
        for run in &self.runs {
            out.extend(columns::decode(&run.payload)?);
        }
        out.extend(self.rows.snapshots()?);
        Ok(out)
    }

    /// The newest snapshot at or before `at_ms`.
    pub(crate) fn at(&self, at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
        if self.rows.first_t.is_some_and(|t| t <= at_ms) {
            return self.rows.at(at_ms);
        }
        match self.runs.iter().rev().find(|run| run.first_t <= at_ms) {
            Some(run) => columns::decode_at(&run.payload, at_ms),
            None => Ok(None),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
            + self.runs.iter().map(|run| run.payload.len()).sum::<usize>()
            + self.rows.heap_bytes()
    }
}

/// One run of two consecutive ones.
fn merge(older: &Run, newer: &Run) -> Result<Run, TsdbError> {
    let mut builder = columns::Builder::default();
    builder.add_columns(&older.payload)?;
    builder.add_columns(&newer.payload)?;
    let mut payload = Vec::with_capacity(older.payload.len() + newer.payload.len());
    builder.finish(&mut payload);
    Ok(Run {
        count: older.count + newer.count,
        first_t: older.first_t,
        last_t: newer.last_t,
        payload: payload.into_boxed_slice(),
    })
}

/// Snapshots encoded as rows as they are pushed (in any order): a payload
/// without its leading count.
#[derive(Debug, Default)]
struct Rows {
    body: Vec<u8>,
    count: u64,
    /// Time of the first snapshot pushed.
    first_t: Option<i64>,
    /// Time of the snapshot pushed last (the base of the next delta).
    last_t: Option<i64>,
    known: Vec<Known>,
    /// Index in `known` of the latest process with a given (pid, start
    /// time) hash; a hit is checked against the identity in `body`.
    by_pid: IdMap<u32>,
}

impl Rows {
    /// Appends a snapshot.
    fn push(&mut self, snapshot: &ProcessSnapshot) {
        let prev_t = self.last_t.unwrap_or(0);
        self.first_t.get_or_insert(snapshot.t_ms);
        put_ivarint(&mut self.body, snapshot.t_ms.wrapping_sub(prev_t));
        self.last_t = Some(snapshot.t_ms);
        self.count += 1;
        put_uvarint(&mut self.body, snapshot.processes.len() as u64);
        for p in &snapshot.processes {
            let (index, new) = self.index_of(p);
            put_uvarint(&mut self.body, index as u64);
            if new {
                // Bodies stay far below 4 GiB: a window holds one host's hour.
                self.known[index].at = self.body.len() as u32;
                put_uvarint(&mut self.body, u64::from(p.pid));
                put_ivarint(&mut self.body, p.start_time_ms);
                put_str(&mut self.body, &p.name);
                put_str(&mut self.body, &p.command);
                put_str(&mut self.body, &p.user);
            }
            let known = &mut self.known[index];
            let cpu = p.cpu_cores.to_bits();
            put_xor(&mut self.body, cpu ^ known.cpu_bits);
            put_uvarint(
                &mut self.body,
                zigzag(p.rss_bytes.wrapping_sub(known.rss) as i64),
            );
            known.cpu_bits = cpu;
            known.rss = p.rss_bytes;
        }
    }

    /// The index of `p`'s identity, and whether it is new (then the caller
    /// writes the identity after the index).
    fn index_of(&mut self, p: &ProcessInfo) -> (usize, bool) {
        let key = pid_key(p.pid, p.start_time_ms);
        if let Some(&i) = self.by_pid.get(&key) {
            let known = self.known[i as usize];
            if identity_at(&self.body, known.at as usize).is_some_and(|id| id.matches(p)) {
                return (i as usize, false);
            }
        }
        // A new process, or one that replaced its name or command (exec)
        // under the same pid: either way a new identity.
        let index = self.known.len();
        self.by_pid.insert(key, index as u32);
        self.known.push(Known {
            at: 0,
            cpu_bits: 0,
            rss: 0,
        });
        (index, true)
    }

    /// The rows in columns, sealed in the chunk envelope.
    fn seal(&self, max_lsn: u64) -> Vec<u8> {
        let mut builder = columns::Builder::default();
        match builder.add_rows(self.count, &self.body) {
            Ok(()) => {
                let mut payload = Vec::with_capacity(self.body.len() / 4);
                builder.finish(&mut payload);
                seal(KIND_SNAPSHOT_COLUMNS, max_lsn, &payload)
            }
            // The body is this block's own encoding, so it decodes; were
            // it not to, its rows are sealed as they are rather than lost.
            Err(_) => seal(KIND_SNAPSHOTS, max_lsn, &self.payload()),
        }
    }

    /// The payload: count, then the body.
    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 10);
        put_uvarint(&mut out, self.count);
        out.extend_from_slice(&self.body);
        out
    }

    /// Every snapshot, in the order pushed.
    fn snapshots(&self) -> Result<Vec<ProcessSnapshot>, TsdbError> {
        decode_body(self.count, &self.body)
    }

    /// The newest snapshot at or before `at_ms`.
    fn at(&self, at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
        body_at(self.count, &self.body, at_ms)
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.body.capacity()
            + self.known.capacity() * std::mem::size_of::<Known>()
            + self.by_pid.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}

/// The map key of a (pid, start time): a hit is checked, so collisions
/// only cost a comparison.
fn pid_key(pid: u32, start_time_ms: i64) -> u64 {
    (start_time_ms as u64).rotate_left(20) ^ u64::from(pid)
}

/// A process identity as encoded, borrowed from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Identity<'a> {
    pid: u32,
    start_time_ms: i64,
    name: &'a str,
    command: &'a str,
    user: &'a str,
}

impl Identity<'_> {
    fn matches(&self, p: &ProcessInfo) -> bool {
        self.pid == p.pid
            && self.start_time_ms == p.start_time_ms
            && self.name == p.name
            && self.command == p.command
            && self.user == p.user
    }
}

fn read_identity<'a>(r: &mut ByteReader<'a>) -> Result<Identity<'a>, TsdbError> {
    let pid = u32::try_from(r.uvarint()?).map_err(|_| TsdbError::Corrupt("pid".into()))?;
    Ok(Identity {
        pid,
        start_time_ms: r.ivarint()?,
        name: r.text()?,
        command: r.text()?,
        user: r.text()?,
    })
}

fn identity_at(body: &[u8], at: usize) -> Option<Identity<'_>> {
    read_identity(&mut ByteReader::new(body.get(at..)?)).ok()
}

/// Encodes snapshots in the given order as a payload (a WAL frame's).
pub(crate) fn encode_payload<'a>(
    snapshots: impl IntoIterator<Item = &'a ProcessSnapshot>,
) -> Vec<u8> {
    let mut rows = Rows::default();
    for s in snapshots {
        rows.push(s);
    }
    rows.payload()
}

/// Eight bytes without their trailing zero bytes: a count byte, then the rest.
fn put_xor(out: &mut Vec<u8>, x: u64) {
    let bytes = x.to_be_bytes();
    let keep = 8 - (x.trailing_zeros() / 8) as usize;
    let keep = if x == 0 { 0 } else { keep };
    out.push(keep as u8);
    out.extend_from_slice(&bytes[..keep]);
}

fn read_xor(r: &mut ByteReader<'_>) -> Result<u64, TsdbError> {
    let keep = usize::from(r.u8()?);
    if keep > 8 {
        return Err(TsdbError::Corrupt("snapshot cpu length".to_owned()));
    }
    let mut bytes = [0u8; 8];
    bytes[..keep].copy_from_slice(r.bytes(keep)?);
    Ok(u64::from_be_bytes(bytes))
}

/// The max LSN and snapshots of a sealed block (in columns or rows).
pub(crate) fn decode(value: &[u8]) -> Result<(u64, Vec<ProcessSnapshot>), TsdbError> {
    if value.first() == Some(&KIND_SNAPSHOT_COLUMNS) {
        let (max_lsn, payload) = open(KIND_SNAPSHOT_COLUMNS, value)?;
        return Ok((max_lsn, columns::decode(payload)?));
    }
    let (max_lsn, payload) = open(KIND_SNAPSHOTS, value)?;
    Ok((max_lsn, decode_payload(payload)?))
}

/// The newest snapshot at or before `at_ms` of a sealed block.
pub(crate) fn decode_at(value: &[u8], at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
    if value.first() == Some(&KIND_SNAPSHOT_COLUMNS) {
        let (_, payload) = open(KIND_SNAPSHOT_COLUMNS, value)?;
        return columns::decode_at(payload, at_ms);
    }
    let (_, payload) = open(KIND_SNAPSHOTS, value)?;
    let mut r = ByteReader::new(payload);
    let n = r.count()?;
    body_at(n as u64, r.rest(), at_ms)
}

/// Decodes a sealed block's payload in columns (past the envelope's
/// checksum, which a fuzzer seldom gets right).
pub(crate) fn decode_columns(payload: &[u8]) -> Result<Vec<ProcessSnapshot>, TsdbError> {
    columns::decode(payload)
}

/// The snapshots of a payload, in their encoded order.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Vec<ProcessSnapshot>, TsdbError> {
    let mut r = ByteReader::new(payload);
    let n = r.count()?;
    decode_body(n as u64, r.rest())
}

fn decode_body(count: u64, body: &[u8]) -> Result<Vec<ProcessSnapshot>, TsdbError> {
    let mut out = Vec::with_capacity((count as usize).min(4096));
    walk(count, body, |t_ms, processes, known| {
        out.push(ProcessSnapshot {
            t_ms,
            processes: materialize(processes, known),
        });
    })?;
    Ok(out)
}

/// The newest snapshot at or before `at_ms` (the first of equal times).
fn body_at(count: u64, body: &[u8], at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
    let mut best: Option<ProcessSnapshot> = None;
    walk(count, body, |t_ms, processes, known| {
        if t_ms <= at_ms && best.as_ref().is_none_or(|b| t_ms > b.t_ms) {
            best = Some(ProcessSnapshot {
                t_ms,
                processes: materialize(processes, known),
            });
        }
    })?;
    Ok(best)
}

/// A decoded process of the snapshot being read: its index in `known`,
/// cpu bits and rss.
type Listed = (usize, u64, u64);

fn materialize(processes: &[Listed], known: &[Identity<'_>]) -> Vec<ProcessInfo> {
    processes
        .iter()
        .map(|&(i, cpu_bits, rss_bytes)| {
            let id = known[i];
            ProcessInfo {
                pid: id.pid,
                name: id.name.to_owned(),
                command: id.command.to_owned(),
                user: id.user.to_owned(),
                cpu_cores: f64::from_bits(cpu_bits),
                rss_bytes,
                start_time_ms: id.start_time_ms,
            }
        })
        .collect()
}

/// Decodes `count` snapshots of `body`, calling `each` with every
/// snapshot's time and processes (identities borrowed from the body);
/// returns the identities. The whole body must decode.
fn walk<'a>(
    count: u64,
    body: &'a [u8],
    mut each: impl FnMut(i64, &[Listed], &[Identity<'a>]),
) -> Result<Vec<Identity<'a>>, TsdbError> {
    let mut r = ByteReader::new(body);
    let mut identities: Vec<Identity<'a>> = Vec::new();
    // Per known process: its cpu bits and rss so far.
    let mut figures: Vec<(u64, u64)> = Vec::new();
    let mut listed: Vec<Listed> = Vec::new();
    let mut t = 0i64;
    for _ in 0..count {
        t = t.wrapping_add(r.ivarint()?);
        let n = r.count()?;
        listed.clear();
        for _ in 0..n {
            let index = r.len(identities.len())?;
            if index == identities.len() {
                identities.push(read_identity(&mut r)?);
                figures.push((0, 0));
            }
            let (cpu, rss) = &mut figures[index];
            *cpu ^= read_xor(&mut r)?;
            *rss = rss.wrapping_add(unzigzag(r.uvarint()?) as u64);
            listed.push((index, *cpu, *rss));
        }
        each(t, &listed, &identities);
    }
    if !r.is_empty() {
        return Err(TsdbError::Corrupt("trailing bytes in snapshots".into()));
    }
    Ok(identities)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, cpu: f64, rss: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            name: format!("p{pid}"),
            command: format!("/usr/bin/p{pid} --flag"),
            user: "www-data".into(),
            cpu_cores: cpu,
            rss_bytes: rss,
            start_time_ms: 1_700_000_000_000 + i64::from(pid),
        }
    }

    fn hour() -> Vec<ProcessSnapshot> {
        (0..60)
            .map(|i| ProcessSnapshot {
                t_ms: 1_800_000_000_000 + i * 10_000,
                processes: (0..20)
                    .map(|p| {
                        process(
                            p,
                            f64::from(p) * 0.01 + i as f64 * 1e-3,
                            (1 << 20) - i as u64,
                        )
                    })
                    .chain([process(1000 + i as u32, f64::NAN, 0)])
                    .collect(),
            })
            .collect()
    }

    fn assert_same(a: &[ProcessSnapshot], b: &[ProcessSnapshot]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.t_ms, y.t_ms);
            assert_eq!(x.processes.len(), y.processes.len());
            for (p, q) in x.processes.iter().zip(&y.processes) {
                assert_eq!(p.cpu_cores.to_bits(), q.cpu_cores.to_bits());
                let rest = |p: &ProcessInfo| {
                    (
                        p.pid,
                        p.name.clone(),
                        p.command.clone(),
                        p.user.clone(),
                        p.rss_bytes,
                        p.start_time_ms,
                    )
                };
                assert_eq!(rest(p), rest(q));
            }
        }
    }

    #[test]
    fn blocks_round_trip_and_share_process_identities() {
        let snapshots = hour();
        let block = OpenBlock::from_snapshots(snapshots.clone());
        assert_same(&block.snapshots().unwrap(), &snapshots);
        let sealed = block.seal(9).unwrap();
        let (lsn, back) = decode(&sealed).unwrap();
        assert_eq!(lsn, 9);
        assert_same(&back, &snapshots);
        let postcard: usize = snapshots
            .iter()
            .map(|s| postcard::to_stdvec(s).unwrap().len())
            .sum();
        assert!(
            sealed.len() * 3 < postcard,
            "{} vs {postcard} bytes",
            sealed.len()
        );
        // Held encoded, a run's worth costs about its rows (the buffer
        // grows by doubling).
        let rows = encode_payload(&snapshots).len();
        assert!(
            block.heap_bytes() < rows * 3,
            "{} vs {rows}",
            block.heap_bytes()
        );
    }

    #[test]
    fn columns_take_a_fraction_of_the_rows_and_rows_are_still_read() {
        // Processes that stay, with CPU in ticks over an interval and RSS
        // in pages, as the agent reports them.
        let snapshots: Vec<ProcessSnapshot> = (0..360)
            .map(|i| ProcessSnapshot {
                t_ms: 1_800_000_000_000 + i * 10_000,
                processes: (0..20)
                    .map(|p| {
                        let ticks = (i * 7 + i64::from(p) * 13) % 50;
                        process(p, ticks as f64 / 1000.0, (1 << 28) + (i as u64 % 5) * 4096)
                    })
                    .collect(),
            })
            .collect();
        let block = OpenBlock::from_snapshots(snapshots.clone());
        let columns = block.seal(4).unwrap();
        let rows = seal(KIND_SNAPSHOTS, 4, &encode_payload(&snapshots));
        assert!(
            columns.len() * 4 < rows.len(),
            "{} vs {} bytes",
            columns.len(),
            rows.len()
        );
        for sealed in [&columns, &rows] {
            let (lsn, back) = decode(sealed).unwrap();
            assert_eq!(lsn, 4);
            assert_same(&back, &snapshots);
            let at = decode_at(sealed, snapshots[100].t_ms + 1).unwrap();
            assert_same(&at.into_iter().collect::<Vec<_>>(), &snapshots[100..101]);
        }
    }

    #[test]
    fn a_block_of_several_runs_reads_and_seals_as_one() {
        // Three runs and a few rows, processes coming and going across
        // them, one exec under a pid that the next run lists again.
        let n = RUN_SNAPSHOTS as i64 * 3 + 5;
        let snapshots: Vec<ProcessSnapshot> = (0..n)
            .map(|i| {
                let mut processes: Vec<ProcessInfo> = (0..10)
                    .map(|p| process(p, f64::from(p) * 0.25 + i as f64 * 1e-3, 4096 * i as u64))
                    .collect();
                processes.push(process(100 + (i / 50) as u32, 0.5, 4096));
                if i % 70 == 3 {
                    processes[0].name = "exec".into();
                }
                ProcessSnapshot {
                    t_ms: 1_800_000_000_000 + i * 10_000,
                    processes,
                }
            })
            .collect();
        let mut block = OpenBlock::default();
        for s in &snapshots {
            block.push(s);
        }
        // Runs of 128 and 64 snapshots: the first two merged.
        let counts: Vec<u64> = block.runs.iter().map(|run| run.count).collect();
        assert_eq!(counts, [2 * RUN_SNAPSHOTS, RUN_SNAPSHOTS]);
        assert_eq!(block.len(), n as usize);
        assert_eq!(block.last_t(), Some(snapshots[n as usize - 1].t_ms));
        assert_same(&block.snapshots().unwrap(), &snapshots);
        let sealed = block.seal(7).unwrap();
        let (lsn, back) = decode(&sealed).unwrap();
        assert_eq!(lsn, 7);
        assert_same(&back, &snapshots);
        // Identities met in several runs are written once when sealed:
        // the same block as from the rows of the whole window.
        let mut rows = Rows::default();
        for s in &snapshots {
            rows.push(s);
        }
        assert_eq!(sealed, rows.seal(7));
        // Held as runs in columns, it costs a fraction of its rows.
        assert!(
            block.heap_bytes() * 2 < rows.payload().len(),
            "{} vs {} bytes",
            block.heap_bytes(),
            rows.payload().len()
        );
        let (_, none) = decode(&OpenBlock::default().seal(7).unwrap()).unwrap();
        assert!(none.is_empty());
        for (i, s) in snapshots.iter().enumerate() {
            for at in [s.t_ms, s.t_ms + 9_999] {
                let got = block.at(at).unwrap();
                assert_same(&got.into_iter().collect::<Vec<_>>(), &snapshots[i..=i]);
            }
        }
        assert!(block.at(snapshots[0].t_ms - 1).unwrap().is_none());
        // A window passed by newer snapshots keeps its rows in columns
        // too, and still takes a late one.
        block.close_rows();
        let counts: Vec<u64> = block.runs.iter().map(|run| run.count).collect();
        assert_eq!(counts, [2 * RUN_SNAPSHOTS, RUN_SNAPSHOTS, 5]);
        assert_eq!(block.rows.count, 0);
        assert_same(&block.snapshots().unwrap(), &snapshots);
        assert_eq!(block.seal(7).unwrap(), sealed);
        let mut later = snapshots[0].clone();
        later.t_ms = snapshots[n as usize - 1].t_ms + 1;
        block.push(&later);
        assert_eq!(block.last_t(), Some(later.t_ms));
        let got = block.at(i64::MAX).unwrap().into_iter().collect::<Vec<_>>();
        assert_same(&got, std::slice::from_ref(&later));
        assert_eq!(block.snapshots().unwrap().len(), n as usize + 1);
    }

    #[test]
    fn the_snapshot_at_a_time_is_the_newest_not_after_it() {
        let snapshots = hour();
        let block = OpenBlock::from_snapshots(snapshots.clone());
        let sealed = block.seal(1).unwrap();
        let t0 = snapshots[0].t_ms;
        for (at, want) in [
            (t0 - 1, None),
            (t0, Some(0)),
            (t0 + 15_000, Some(1)),
            (i64::MAX, Some(59)),
        ] {
            let from_head = block.at(at).unwrap();
            let from_block = decode_at(&sealed, at).unwrap();
            let want: Vec<ProcessSnapshot> =
                want.map(|i| snapshots[i].clone()).into_iter().collect();
            assert_same(&from_head.into_iter().collect::<Vec<_>>(), &want);
            assert_same(&from_block.into_iter().collect::<Vec<_>>(), &want);
        }
    }

    #[test]
    fn a_process_that_execs_under_its_pid_keeps_its_new_identity() {
        let mut shell = process(7, 0.5, 100);
        let first = ProcessSnapshot {
            t_ms: 10,
            processes: vec![shell.clone()],
        };
        shell.name = "backup".into();
        shell.command = "backup --all".into();
        let second = ProcessSnapshot {
            t_ms: 20,
            processes: vec![shell.clone(), process(8, 0.0, 5)],
        };
        let third = ProcessSnapshot {
            t_ms: 30,
            processes: vec![shell],
        };
        let all = vec![first, second, third];
        let block = OpenBlock::from_snapshots(all.clone());
        assert_same(&block.snapshots().unwrap(), &all);
        // The WAL's payloads keep the given order, unsorted too.
        let reversed: Vec<ProcessSnapshot> = all.iter().rev().cloned().collect();
        assert_same(
            &decode_payload(&encode_payload(&reversed)).unwrap(),
            &reversed,
        );
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let block = OpenBlock::from_snapshots(hour());
        let sealed = block.seal(3).unwrap();
        // Any flipped byte fails the checksum.
        for i in [0, 1, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(decode(&bad), Err(TsdbError::Corrupt(_))),
                "byte {i}"
            );
            assert!(decode_at(&bad, i64::MAX).is_err());
        }
        // Payloads (checked by the WAL frame's checksum, not here) cut
        // short, with a reference to an unknown process, or with trailing
        // bytes.
        let payload = encode_payload(&hour());
        for cut in [1, 2, 5, payload.len() / 3, payload.len() - 1] {
            assert!(decode_payload(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = Vec::new();
        put_uvarint(&mut unknown, 1);
        put_ivarint(&mut unknown, 5);
        put_uvarint(&mut unknown, 1);
        put_uvarint(&mut unknown, 3);
        assert!(decode_payload(&unknown).is_err());
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(decode_payload(&trailing).is_err());
        let mut long_cpu = Vec::new();
        put_uvarint(&mut long_cpu, 1);
        put_ivarint(&mut long_cpu, 5);
        put_uvarint(&mut long_cpu, 1);
        put_uvarint(&mut long_cpu, 0);
        put_uvarint(&mut long_cpu, 1);
        put_ivarint(&mut long_cpu, 0);
        for _ in 0..3 {
            put_str(&mut long_cpu, "x");
        }
        long_cpu.push(9);
        assert!(decode_payload(&long_cpu).is_err());
        // Columns cut short, or with trailing bytes.
        let sealed = block.seal(3).unwrap();
        let (_, columns) = open(KIND_SNAPSHOT_COLUMNS, &sealed).unwrap();
        assert!(decode_columns(columns).is_ok());
        for cut in 0..columns.len() {
            assert!(decode_columns(&columns[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = columns.to_vec();
        trailing.push(0);
        assert!(decode_columns(&trailing).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_columns_are_refused_not_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode_columns(&bytes);
        }
    }
}
