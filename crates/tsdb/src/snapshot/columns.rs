//! Sealed snapshot blocks in columns.
//!
//! The open block's rows (see the parent module) are written as snapshots
//! arrive, so each process' CPU is an XOR with its previous figure and its
//! RSS a byte difference: about eleven bytes a listed process. At sealing
//! the whole window is known, so the block is rewritten as columns the
//! chunk codec compresses as it does samples: each process' CPU figures
//! are a value column (ticks over an interval: scaled integers or ratios),
//! its RSS an integer column (page multiples: the common divisor goes),
//! the listed processes one integer column of dictionary indices, and
//! names, commands and users a table of distinct strings.
//!
//! Layout of a payload: `[count varint][times][sizes]` (processes per
//! snapshot), `[strings varint][str]*`, `[identities varint][pids][start
//! times][names][commands][users]` (string indices), `[members]` (every
//! snapshot's identity indices in listed order), then per identity
//! `[cpu values][rss ints]` over the snapshots listing it; columns in the
//! chunk codec's formats (docs/format/snapshots.md).

use super::{Identity, Listed, materialize, walk};
use crate::TsdbError;
use crate::codec::{
    ByteReader, MAX_BLOCK_POINTS, decode_ints, decode_times, decode_values, encode_ints,
    encode_times, encode_values, put_str, put_uvarint,
};
use crate::model::ProcessSnapshot;
use std::collections::HashMap;

/// Snapshots gathered for one payload in columns, from one or more
/// sources (an open block's rows, payloads in columns) whose identity
/// indices are their own: an identity met in several sources is kept once.
#[derive(Debug, Default)]
pub(super) struct Builder<'a> {
    times: Vec<i64>,
    sizes: Vec<i64>,
    members: Vec<i64>,
    identities: Vec<Identity<'a>>,
    /// Per identity: its CPU figures and RSS over the snapshots listing it.
    cpu: Vec<Vec<f64>>,
    rss: Vec<Vec<i64>>,
    /// The index in `identities` of each identity.
    ids: HashMap<Identity<'a>, usize>,
    /// Per identity index of the current source: its index in
    /// `identities`, `usize::MAX` until it is listed.
    local: Vec<usize>,
}

impl<'a> Builder<'a> {
    /// Adds the snapshots of `count` rows of an open block's `body` (a
    /// source of its own), after those added before.
    pub(super) fn add_rows(&mut self, count: u64, body: &'a [u8]) -> Result<(), TsdbError> {
        self.local.clear();
        walk(count, body, |t_ms, listed, known| {
            self.add(t_ms, listed, known)
        })?;
        Ok(())
    }

    /// Adds the snapshots of a payload in columns (a source of its own),
    /// after those added before.
    pub(super) fn add_columns(&mut self, payload: &'a [u8]) -> Result<(), TsdbError> {
        let columns = decode_columns(payload)?;
        self.local.clear();
        let mut listed: Vec<Listed> = Vec::new();
        for i in 0..columns.times.len() {
            columns.listed(i, &mut listed);
            self.add(columns.times[i], &listed, &columns.identities);
        }
        Ok(())
    }

    fn add(&mut self, t_ms: i64, listed: &[Listed], known: &[Identity<'a>]) {
        self.times.push(t_ms);
        self.sizes.push(listed.len() as i64);
        for &(index, cpu_bits, rss_bytes) in listed {
            if self.local.len() < known.len() {
                self.local.resize(known.len(), usize::MAX);
            }
            let mut global = self.local[index];
            if global == usize::MAX {
                let identities = &mut self.identities;
                let (cpu, rss) = (&mut self.cpu, &mut self.rss);
                global = *self.ids.entry(known[index]).or_insert_with(|| {
                    identities.push(known[index]);
                    cpu.push(Vec::new());
                    rss.push(Vec::new());
                    identities.len() - 1
                });
                self.local[index] = global;
            }
            self.members.push(global as i64);
            self.cpu[global].push(f64::from_bits(cpu_bits));
            self.rss[global].push(rss_bytes as i64);
        }
    }

    /// Writes the payload.
    pub(super) fn finish(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.times.len() as u64);
        encode_times(&self.times, out);
        encode_ints(&self.sizes, out);

        let identities = &self.identities;
        let mut strings: Vec<&str> = Vec::new();
        let mut string_index: HashMap<&str, i64> = HashMap::new();
        let mut index_of = |s| {
            *string_index.entry(s).or_insert_with(|| {
                strings.push(s);
                strings.len() as i64 - 1
            })
        };
        let names: Vec<i64> = identities.iter().map(|id| index_of(id.name)).collect();
        let commands: Vec<i64> = identities.iter().map(|id| index_of(id.command)).collect();
        let users: Vec<i64> = identities.iter().map(|id| index_of(id.user)).collect();
        put_uvarint(out, strings.len() as u64);
        for s in &strings {
            put_str(out, s);
        }
        put_uvarint(out, identities.len() as u64);
        let pids: Vec<i64> = identities.iter().map(|id| i64::from(id.pid)).collect();
        let starts: Vec<i64> = identities.iter().map(|id| id.start_time_ms).collect();
        for column in [&pids, &starts, &names, &commands, &users] {
            encode_ints(column, out);
        }
        encode_ints(&self.members, out);
        for (cpu, rss) in self.cpu.iter().zip(&self.rss) {
            encode_values(cpu, out);
            encode_ints(rss, out);
        }
    }
}

/// A decoded payload: everything but the snapshots' assembly.
struct Columns<'a> {
    times: Vec<i64>,
    /// Where each snapshot's processes start in `members`, and the end.
    bounds: Vec<usize>,
    identities: Vec<Identity<'a>>,
    members: Vec<usize>,
    /// Per listed process (in `members` order): its CPU bits and RSS.
    figures: Vec<(u64, u64)>,
}

impl Columns<'_> {
    /// The processes of snapshot `i`, into `out`.
    fn listed(&self, i: usize, out: &mut Vec<Listed>) {
        out.clear();
        out.extend(
            (self.bounds[i]..self.bounds[i + 1])
                .map(|m| (self.members[m], self.figures[m].0, self.figures[m].1)),
        );
    }

    /// Snapshot `i`.
    fn snapshot(&self, i: usize) -> ProcessSnapshot {
        let mut listed = Vec::new();
        self.listed(i, &mut listed);
        ProcessSnapshot {
            t_ms: self.times[i],
            processes: materialize(&listed, &self.identities),
        }
    }
}

fn corrupt(what: &str) -> TsdbError {
    TsdbError::Corrupt(format!("snapshot columns: {what}"))
}

/// A non-negative integer below `limit`.
fn index(x: i64, limit: usize, what: &str) -> Result<usize, TsdbError> {
    usize::try_from(x)
        .ok()
        .filter(|&i| i < limit)
        .ok_or_else(|| corrupt(what))
}

fn decode_columns(payload: &[u8]) -> Result<Columns<'_>, TsdbError> {
    let mut r = ByteReader::new(payload);
    let count = r.len(MAX_BLOCK_POINTS)?;
    let mut times = Vec::with_capacity(count);
    decode_times(&mut r, count, &mut times)?;
    let mut bounds = Vec::with_capacity(count + 1);
    bounds.push(0);
    for size in decode_ints(&mut r, count)? {
        let end = bounds[bounds.len() - 1] + index(size, MAX_BLOCK_POINTS + 1, "size")?;
        if end > MAX_BLOCK_POINTS {
            return Err(corrupt("too many processes"));
        }
        bounds.push(end);
    }
    let total = bounds[count];

    let n_strings = r.count()?;
    let strings = (0..n_strings)
        .map(|_| r.text())
        .collect::<Result<Vec<&str>, _>>()?;
    let n_identities = r.count()?;
    let pids = decode_ints(&mut r, n_identities)?;
    let starts = decode_ints(&mut r, n_identities)?;
    let mut text = |what| -> Result<Vec<&str>, TsdbError> {
        decode_ints(&mut r, n_identities)?
            .into_iter()
            .map(|x| Ok(strings[index(x, n_strings, what)?]))
            .collect()
    };
    let (names, commands, users) = (text("name")?, text("command")?, text("user")?);
    let identities = (0..n_identities)
        .map(|i| {
            Ok(Identity {
                pid: u32::try_from(pids[i]).map_err(|_| corrupt("pid"))?,
                start_time_ms: starts[i],
                name: names[i],
                command: commands[i],
                user: users[i],
            })
        })
        .collect::<Result<Vec<_>, TsdbError>>()?;

    let members = decode_ints(&mut r, total)?
        .into_iter()
        .map(|x| index(x, n_identities, "member"))
        .collect::<Result<Vec<usize>, _>>()?;
    let mut listings = vec![0usize; n_identities];
    for &m in &members {
        listings[m] += 1;
    }
    // Each identity's figures in the order it is listed, then spread back
    // over `members`.
    let mut per_identity = Vec::with_capacity(n_identities);
    for &n in &listings {
        let mut cpu = Vec::with_capacity(n);
        decode_values(&mut r, n, &mut cpu)?;
        let rss = decode_ints(&mut r, n)?;
        per_identity.push((cpu, rss, 0usize));
    }
    if !r.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    let figures = members
        .iter()
        .map(|&m| {
            let (cpu, rss, next) = &mut per_identity[m];
            let figure = (cpu[*next].to_bits(), rss[*next] as u64);
            *next += 1;
            figure
        })
        .collect();
    Ok(Columns {
        times,
        bounds,
        identities,
        members,
        figures,
    })
}

/// Every snapshot of a payload, oldest first.
pub(super) fn decode(payload: &[u8]) -> Result<Vec<ProcessSnapshot>, TsdbError> {
    let columns = decode_columns(payload)?;
    Ok((0..columns.times.len())
        .map(|i| columns.snapshot(i))
        .collect())
}

/// The newest snapshot of a payload at or before `at_ms` (the first of
/// equal times).
pub(super) fn decode_at(payload: &[u8], at_ms: i64) -> Result<Option<ProcessSnapshot>, TsdbError> {
    let columns = decode_columns(payload)?;
    let mut best: Option<usize> = None;
    for (i, &t) in columns.times.iter().enumerate() {
        if t <= at_ms && best.is_none_or(|b| t > columns.times[b]) {
            best = Some(i);
        }
    }
    Ok(best.map(|i| columns.snapshot(i)))
}
