//! `verify`: a walk over everything stored, decoding each record.

use crate::TsdbError;
use crate::chunk;
use crate::keys;
use crate::model::SeriesKey;
use crate::partition::PartRead;
use crate::snapshot;
use crate::store::{Store, poisoned};
use crate::supervise::Condition;
use crate::wal;
use std::collections::{BTreeMap, HashSet};

/// Most damaged records described one by one; the rest are only counted.
const MAX_DESCRIBED: usize = 1000;

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub series: u64,
    pub sequences: u64,
    pub wal_values: u64,
    pub wal_frames: u64,
    /// Raw chunks, and the samples in them.
    pub chunks: u64,
    pub chunk_samples: u64,
    /// Chunks of 1 h aggregates.
    pub row_chunks: u64,
    pub snapshot_blocks: u64,
    /// Time partitions walked (damaged or missing ones included).
    pub partitions: u64,
    /// Bytes (keys and values, before sled's own overhead) of raw chunks,
    /// of aggregate chunks, of snapshot blocks, of the WAL, and of the rest
    /// (series definitions, sequences, metadata).
    pub raw_bytes: u64,
    pub row_bytes: u64,
    pub snapshot_bytes: u64,
    pub wal_bytes: u64,
    pub other_bytes: u64,
    /// Where the raw chunks' bytes (`raw_bytes`) go: their keys, their
    /// envelopes and sample counts, their times and their values columns.
    pub raw_parts: RawBytes,
    /// The raw chunks' samples and values-column bytes per metric.
    pub raw_by_metric: BTreeMap<String, MetricBytes>,
    /// Damaged records found (described in `damaged`, up to a limit).
    pub damaged_total: u64,
    pub damaged: Vec<String>,
}

/// The parts of the raw chunks' bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawBytes {
    pub keys: u64,
    /// Kind, max LSN, CRC and sample count of each chunk.
    pub headers: u64,
    pub times: u64,
    pub values: u64,
}

/// A metric's raw chunks: their samples and their values columns' bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricBytes {
    pub chunks: u64,
    pub samples: u64,
    pub value_bytes: u64,
}

impl VerifyReport {
    /// Whether nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged_total == 0
    }

    fn damage(&mut self, what: String) {
        self.damaged_total += 1;
        if self.damaged.len() < MAX_DESCRIBED {
            self.damaged.push(what);
        }
    }
}

impl Store {
    /// Reads and decodes every series definition, sequence, WAL frame (of
    /// every WAL generation, sealed groups too), chunk and snapshot block
    /// (of every time partition), reporting each damaged one, and each
    /// damaged or missing partition. Reads only; damaged records stay where
    /// they are (queries and replay skip them).
    pub fn verify(&self) -> Result<VerifyReport, TsdbError> {
        // A failed state's memory and sled instances are not what the disk
        // holds: verify the state rebuilt from it instead.
        if let Condition::Failed { cause } = self.health()?.condition {
            return Err(TsdbError::Failed(format!(
                "cannot verify while the store is failed ({cause}); it rebuilds itself from disk once writes can succeed"
            )));
        }
        let inner = self.inner()?;
        let mut report = VerifyReport::default();
        // A series definition lives in the WAL generation of the group that
        // created it and, once maintenance persisted it, in the tree too:
        // each copy is checked, each series counted once.
        let mut series_seen = HashSet::new();
        inner.commit.with_generations(|generations| {
            for g in generations {
                for entry in g.db()?.iter() {
                    let (key, value) = entry?;
                    self.verify_entry(&key, &value, &mut report, &mut series_seen)?;
                }
            }
            Ok(())
        })?;
        for entry in inner.tree.iter() {
            let (key, value) = entry?;
            if matches!(key.first(), Some(&keys::CHUNK | &keys::SNAPSHOTS)) {
                report.damage(format!(
                    "block in the main database instead of a partition: {}",
                    hex(&key)
                ));
                continue;
            }
            self.verify_entry(&key, &value, &mut report, &mut series_seen)?;
        }
        let partitions = &inner.partitions;
        for p in partitions.all()? {
            report.partitions += 1;
            let part = match p.read()? {
                Some(part) => part,
                None => {
                    let why = p.damage()?.unwrap_or_default();
                    report.damage(format!("partition {}: {why}", p.path.display()));
                    continue;
                }
            };
            let mut check = |key: &[u8], value: &[u8]| -> Result<(), TsdbError> {
                let home = match (keys::parse_chunk(key), keys::parse_snapshots(key)) {
                    (Some((keys::TIER_HOUR, _, day)), _) => Some(partitions.of_day(day)),
                    (Some((_, _, start)), _) | (None, Some((_, start))) => {
                        Some(partitions.of(start))
                    }
                    (None, None) => None,
                };
                match home {
                    Some(home) if home == p.start => {
                        self.verify_entry(key, value, &mut report, &mut series_seen)?
                    }
                    Some(_) => report.damage(format!(
                        "block outside its partition {}: {}",
                        p.path.display(),
                        hex(key)
                    )),
                    None => report.damage(format!(
                        "unknown record in partition {}: {}",
                        p.path.display(),
                        hex(key)
                    )),
                }
                Ok(())
            };
            match &part {
                PartRead::Sled(_) => {
                    for entry in part.iter() {
                        let (key, value) = entry?;
                        check(&key, &value)?;
                    }
                }
                // Every block of the file checked, each damaged one named.
                PartRead::File(file) => {
                    for problem in file.check(&mut check)? {
                        report.damage(format!(
                            "partition {}: its file {} {problem}",
                            p.path.display(),
                            file.path().display()
                        ));
                    }
                }
            }
        }
        Ok(report)
    }

    fn verify_entry(
        &self,
        key: &[u8],
        value: &[u8],
        report: &mut VerifyReport,
        series_seen: &mut HashSet<sled::IVec>,
    ) -> Result<(), TsdbError> {
        let size = (key.len() + value.len()) as u64;
        match (key.first(), key.get(1)) {
            (Some(&keys::CHUNK), Some(&keys::TIER_RAW)) => report.raw_bytes += size,
            (Some(&keys::CHUNK), _) => report.row_bytes += size,
            (Some(&keys::SNAPSHOTS), _) => report.snapshot_bytes += size,
            (Some(&keys::WAL), _) => report.wal_bytes += size,
            _ => report.other_bytes += size,
        }
        match key.first() {
            Some(&keys::SERIES) => {
                if series_seen.insert(sled::IVec::from(key)) {
                    report.series += 1;
                }
                if key.len() != 9 || SeriesKey::decode(value).is_err() {
                    report.damage(format!("series definition {}", hex(key)));
                }
            }
            Some(&keys::SEQUENCE) => {
                report.sequences += 1;
                if keys::parse_sequence(key).is_none() || value.len() != 8 {
                    report.damage(format!("batch sequence {}", hex(key)));
                }
            }
            Some(&keys::WAL) => {
                report.wal_values += 1;
                let decoded = wal::decode_value(value);
                report.wal_frames += decoded.records.len() as u64;
                if keys::parse_wal(key).is_none() || decoded.corrupt > 0 {
                    report.damage(format!(
                        "WAL value {}: {} damaged frame(s)",
                        hex(key),
                        decoded.corrupt
                    ));
                }
            }
            Some(&keys::CHUNK) => self.verify_chunk(key, value, report)?,
            Some(&keys::SNAPSHOTS) => {
                report.snapshot_blocks += 1;
                let place = keys::parse_snapshots(key)
                    .map(|(host, start)| format!("host {host} window {start}"));
                match (place, snapshot::decode(value)) {
                    (Some(_), Ok(_)) => {}
                    (place, result) => report.damage(format!(
                        "snapshot block {}: {}",
                        place.unwrap_or_else(|| hex(key)),
                        result.err().map_or("bad key".to_owned(), |e| e.to_string())
                    )),
                }
            }
            Some(&keys::LAST) => {
                if key.len() != 9 || keys::decode_last(value).is_none() {
                    report.damage(format!("newest sample record {}", hex(key)));
                }
            }
            Some(&keys::META) => {}
            Some(&keys::ACCEPTED) => {
                if key.len() != 9 || crate::forward::decode_entry(value).is_err() {
                    report.damage(format!("accept log entry {}", hex(key)));
                }
            }
            Some(&keys::CURSOR) => {
                if value.len() != 8 {
                    report.damage(format!("forwarding cursor {}", hex(key)));
                }
            }
            _ => report.damage(format!("unknown record {}", hex(key))),
        }
        Ok(())
    }

    fn verify_chunk(
        &self,
        key: &[u8],
        value: &[u8],
        report: &mut VerifyReport,
    ) -> Result<(), TsdbError> {
        let Some((tier, id, start)) = keys::parse_chunk(key) else {
            report.damage(format!("chunk key {}", hex(key)));
            return Ok(());
        };
        let metric = self
            .inner()?
            .index
            .read()
            .map_err(|_| poisoned())?
            .keys
            .get(&id)
            .map(|k| k.metric().to_owned());
        let place = format!("series {id} tier {tier} start {start}");
        if metric.is_none() {
            report.damage(format!("chunk of an unknown series: {place}"));
        }
        let result = match tier {
            keys::TIER_RAW => {
                report.chunks += 1;
                chunk::decode_raw(value).and_then(|(_, points)| {
                    report.chunk_samples += points.len() as u64;
                    let parts = chunk::raw_parts(value)?;
                    let raw = &mut report.raw_parts;
                    raw.keys += key.len() as u64;
                    raw.headers += parts.header;
                    raw.times += parts.times;
                    raw.values += parts.values;
                    if let Some(metric) = metric {
                        let m = report.raw_by_metric.entry(metric).or_default();
                        m.chunks += 1;
                        m.samples += parts.samples;
                        m.value_bytes += parts.values;
                    }
                    Ok(())
                })
            }
            keys::TIER_HOUR => {
                report.row_chunks += 1;
                chunk::decode_rows(value).map(|_| ())
            }
            _ => Err(TsdbError::Corrupt("unknown tier".to_owned())),
        };
        if let Err(e) = result {
            report.damage(format!("chunk {place}: {e}"));
        }
        Ok(())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
