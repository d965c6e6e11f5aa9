//! Compact blocks of a host's process snapshots.
//!
//! Consecutive snapshots list mostly the same processes, so a block keeps
//! each distinct process (pid, start time, name, command, user) once, in
//! order of first appearance, and every snapshot lists references to it
//! with its CPU (XOR with that process' previous figure, zero bytes
//! trimmed) and RSS (difference from its previous figure).

use crate::TsdbError;
use crate::chunk::{KIND_SNAPSHOTS, open, seal};
use crate::codec::{ByteReader, put_ivarint, put_str, put_uvarint, zigzag};
use crate::model::{ProcessInfo, ProcessSnapshot};
use std::collections::HashMap;

/// Longest text field accepted when decoding.
const MAX_TEXT: usize = 64 << 10;
/// Most snapshots, or processes per snapshot, accepted when decoding.
const MAX_ITEMS: usize = 1 << 20;

type Identity<'a> = (u32, i64, &'a str, &'a str, &'a str);

/// Encodes snapshots sorted by time (distinct times).
pub(crate) fn encode(snapshots: &[ProcessSnapshot], max_lsn: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(snapshots.len() * 64);
    put_uvarint(&mut out, snapshots.len() as u64);
    // Per known process: its index and previous cpu bits and rss.
    let mut known: HashMap<Identity<'_>, (usize, u64, u64)> = HashMap::new();
    let mut prev_t = 0i64;
    for snapshot in snapshots {
        put_ivarint(&mut out, snapshot.t_ms.wrapping_sub(prev_t));
        prev_t = snapshot.t_ms;
        put_uvarint(&mut out, snapshot.processes.len() as u64);
        for p in &snapshot.processes {
            let identity = (
                p.pid,
                p.start_time_ms,
                p.name.as_str(),
                p.command.as_str(),
                p.user.as_str(),
            );
            let next = known.len();
            let entry = known.entry(identity).or_insert((next, 0, 0));
            put_uvarint(&mut out, entry.0 as u64);
            if entry.0 == next {
                put_uvarint(&mut out, u64::from(p.pid));
                put_ivarint(&mut out, p.start_time_ms);
                put_str(&mut out, &p.name);
                put_str(&mut out, &p.command);
                put_str(&mut out, &p.user);
            }
            let cpu = p.cpu_cores.to_bits();
            put_xor(&mut out, cpu ^ entry.1);
            put_uvarint(&mut out, zigzag(p.rss_bytes.wrapping_sub(entry.2) as i64));
            entry.1 = cpu;
            entry.2 = p.rss_bytes;
        }
    }
    seal(KIND_SNAPSHOTS, max_lsn, &out)
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

/// The max LSN and snapshots of a block.
pub(crate) fn decode(value: &[u8]) -> Result<(u64, Vec<ProcessSnapshot>), TsdbError> {
    let corrupt = |m: &str| TsdbError::Corrupt(m.to_owned());
    let (max_lsn, payload) = open(KIND_SNAPSHOTS, value)?;
    let mut r = ByteReader::new(payload);
    let n = r.len(MAX_ITEMS)?;
    let mut out = Vec::with_capacity(n.min(4096));
    // Known processes: identity fields, previous cpu bits and rss.
    let mut known: Vec<(ProcessInfo, u64)> = Vec::new();
    let mut t = 0i64;
    for _ in 0..n {
        t = t.wrapping_add(r.ivarint()?);
        let count = r.len(MAX_ITEMS)?;
        let mut processes = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let index = r.len(known.len())?;
            if index == known.len() {
                let pid = u32::try_from(r.uvarint()?).map_err(|_| corrupt("pid"))?;
                let start_time_ms = r.ivarint()?;
                let name = r.str(MAX_TEXT)?.to_owned();
                let command = r.str(MAX_TEXT)?.to_owned();
                let user = r.str(MAX_TEXT)?.to_owned();
                known.push((
                    ProcessInfo {
                        pid,
                        name,
                        command,
                        user,
                        cpu_cores: 0.0,
                        rss_bytes: 0,
                        start_time_ms,
                    },
                    0,
                ));
            }
            let (info, cpu_bits) = &mut known[index];
            *cpu_bits ^= read_xor(&mut r)?;
            info.cpu_cores = f64::from_bits(*cpu_bits);
            info.rss_bytes = info
                .rss_bytes
                .wrapping_add(crate::codec::unzigzag(r.uvarint()?) as u64);
            processes.push(info.clone());
        }
        out.push(ProcessSnapshot { t_ms: t, processes });
    }
    if !r.is_empty() {
        return Err(corrupt("trailing bytes in snapshots"));
    }
    Ok((max_lsn, out))
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

    #[test]
    fn blocks_round_trip_and_share_process_identities() {
        let snapshots: Vec<ProcessSnapshot> = (0..60)
            .map(|i| ProcessSnapshot {
                t_ms: 1_800_000_000_000 + i * 10_000,
                processes: (0..20)
                    .map(|p| process(p, f64::from(p) * 0.01 + i as f64 * 1e-3, 1 << 20))
                    .chain([process(1000 + i as u32, f64::NAN, 0)])
                    .collect(),
            })
            .collect();
        let block = encode(&snapshots, 9);
        let (lsn, back) = decode(&block).unwrap();
        assert_eq!(lsn, 9);
        assert_eq!(back.len(), snapshots.len());
        for (a, b) in back.iter().zip(&snapshots) {
            assert_eq!(a.t_ms, b.t_ms);
            for (x, y) in a.processes.iter().zip(&b.processes) {
                assert_eq!(x.cpu_cores.to_bits(), y.cpu_cores.to_bits());
                assert_eq!((x.pid, &x.name, x.rss_bytes), (y.pid, &y.name, y.rss_bytes));
            }
        }
        let postcard: usize = snapshots
            .iter()
            .map(|s| postcard::to_stdvec(s).unwrap().len())
            .sum();
        assert!(
            block.len() * 3 < postcard,
            "{} vs {postcard} bytes",
            block.len()
        );
    }
}
