//! The sled layout, appends and queries.
//!
//! Trees:
//! - `series`: encoded [`SeriesKey`] -> series id (u64 BE);
//! - `series_by_id`: series id -> encoded key;
//! - `host_series`: host, NUL, series id -> empty (a host's series);
//! - `data`: `P` + series id + time -> value; `S` + host + NUL + time ->
//!   process snapshot (postcard); `Q` + host + NUL + source -> highest
//!   sequence stored. A batch's samples, snapshots and sequence are written
//!   in one atomic sled batch, so a batch is either wholly stored and
//!   recognized as such on replay, or not at all.

use crate::TsdbError;
use crate::model::{AppendOutcome, Batch, Matcher, Point, ProcessSnapshot, SeriesData, SeriesKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const SAMPLE: u8 = b'P';
const SEQUENCE: u8 = b'Q';
const SNAPSHOT: u8 = b'S';

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Limits and windows of the store.
#[derive(Clone)]
pub struct Options {
    /// Samples older than this (ms) are rejected and, later, deleted.
    pub retention_ms: i64,
    /// Samples further than this (ms) in the future are rejected.
    pub future_tolerance_ms: i64,
    /// Most series one host may have.
    pub max_series_per_host: usize,
    /// Current time; injectable for tests.
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention_ms: 30 * 24 * 3600 * 1000,
            future_tolerance_ms: 10 * 60 * 1000,
            max_series_per_host: 10_000,
            clock: Arc::new(system_now_ms),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("retention_ms", &self.retention_ms)
            .field("future_tolerance_ms", &self.future_tolerance_ms)
            .field("max_series_per_host", &self.max_series_per_host)
            .finish_non_exhaustive()
    }
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time-series store.
pub struct Store {
    db: sled::Db,
    series: sled::Tree,
    series_by_id: sled::Tree,
    host_series: sled::Tree,
    data: sled::Tree,
    options: Options,
    /// Serializes appends: the duplicate check and the write of a batch's
    /// sequence must not interleave with another append of the same source.
    append_lock: Mutex<Index>,
}

/// In-memory copy of the series index, loaded at open.
#[derive(Default)]
struct Index {
    ids: HashMap<SeriesKey, u64>,
    series_per_host: HashMap<String, usize>,
}

impl Store {
    /// Opens the store in `db`, which the caller may share with other trees.
    pub fn open(db: sled::Db, options: Options) -> Result<Self, TsdbError> {
        let series = db.open_tree("series")?;
        let mut index = Index::default();
        for entry in series.iter() {
            let (key, id) = entry?;
            let key = SeriesKey::decode(&key)?;
            *index
                .series_per_host
                .entry(key.host().to_owned())
                .or_default() += 1;
            index.ids.insert(key, decode_u64(&id)?);
        }
        Ok(Store {
            series,
            series_by_id: db.open_tree("series_by_id")?,
            host_series: db.open_tree("host_series")?,
            data: db.open_tree("data")?,
            db,
            options,
            append_lock: Mutex::new(index),
        })
    }

    /// Stores a batch durably, unless (host, source, seq) was stored before.
    /// Invalid samples are counted in the outcome, not stored; the rest of
    /// the batch is.
    pub fn append(&self, batch: &Batch) -> Result<AppendOutcome, TsdbError> {
        let mut index = self
            .append_lock
            .lock()
            .map_err(|_| TsdbError::Invalid("store poisoned by an earlier panic".into()))?;
        let mut outcome = AppendOutcome::default();
        let seq_key = sequence_key(&batch.host, batch.source);
        if let Some(stored) = self.data.get(&seq_key)?
            && decode_u64(&stored)? >= batch.seq
        {
            outcome.duplicate = true;
            return Ok(outcome);
        }
        let now = (self.options.clock)();
        let oldest = now - self.options.retention_ms;
        let newest = now + self.options.future_tolerance_ms;
        let mut writes = sled::Batch::default();
        for input in &batch.series {
            let key = match SeriesKey::for_host(&batch.host, &input.metric, &input.labels) {
                Ok(key) => key,
                Err(e) => {
                    outcome.rejected.invalid_series += input.points.len() as u64;
                    outcome.first_error.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            let Some(id) = self.series_id(&mut index, &key)? else {
                outcome.rejected.series_limit += input.points.len() as u64;
                outcome.first_error.get_or_insert_with(|| {
                    format!(
                        "host {} reached its limit of {} series; {key} not created",
                        batch.host, self.options.max_series_per_host
                    )
                });
                continue;
            };
            for point in &input.points {
                let rejected = &mut outcome.rejected;
                if !point.value.is_finite() {
                    rejected.non_finite += 1;
                } else if point.t_ms > newest {
                    rejected.future += 1;
                } else if point.t_ms < oldest {
                    rejected.too_old += 1;
                } else {
                    writes.insert(
                        &sample_key(id, point.t_ms)[..],
                        &point.value.to_be_bytes()[..],
                    );
                    outcome.stored += 1;
                    continue;
                }
                outcome
                    .first_error
                    .get_or_insert_with(|| format!("{key}: sample {point:?} rejected"));
            }
        }
        for snapshot in &batch.processes {
            if snapshot.t_ms > newest {
                outcome.rejected.future += 1;
            } else if snapshot.t_ms < oldest {
                outcome.rejected.too_old += 1;
            } else {
                let encoded = postcard::to_stdvec(snapshot)
                    .map_err(|e| TsdbError::Invalid(format!("process snapshot: {e}")))?;
                writes.insert(snapshot_key(&batch.host, snapshot.t_ms), encoded);
            }
        }
        writes.insert(seq_key, &batch.seq.to_be_bytes()[..]);
        self.data.apply_batch(writes)?;
        self.db.flush()?;
        Ok(outcome)
    }

    /// The id of `key`, creating the series if the host is under its limit.
    fn series_id(&self, index: &mut Index, key: &SeriesKey) -> Result<Option<u64>, TsdbError> {
        if let Some(id) = index.ids.get(key) {
            return Ok(Some(*id));
        }
        let count = index
            .series_per_host
            .entry(key.host().to_owned())
            .or_default();
        if *count >= self.options.max_series_per_host {
            return Ok(None);
        }
        let id = self.db.generate_id()?;
        let encoded = key.encode();
        // Index entries are idempotent; written before the samples that use them.
        self.series_by_id
            .insert(id.to_be_bytes(), encoded.as_slice())?;
        self.host_series
            .insert(host_series_key(key.host(), id), &[][..])?;
        self.series.insert(encoded, &id.to_be_bytes()[..])?;
        *count += 1;
        index.ids.insert(key.clone(), id);
        Ok(Some(id))
    }

    /// Highest sequence stored for (host, source), 0 if none.
    pub fn last_seq(&self, host: &str, source: u64) -> Result<u64, TsdbError> {
        match self.data.get(sequence_key(host, source))? {
            Some(v) => decode_u64(&v),
            None => Ok(0),
        }
    }

    /// Series of `metric` matching every matcher.
    pub fn select(
        &self,
        metric: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesKey, u64)>, TsdbError> {
        let mut prefix = metric.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.series.scan_prefix(prefix) {
            let (key, id) = entry?;
            let key = SeriesKey::decode(&key)?;
            if matchers.iter().all(|m| m.matches(&key)) {
                out.push((key, decode_u64(&id)?));
            }
        }
        Ok(out)
    }

    /// Points in `[start_ms, end_ms)` of every series of `metric` matching
    /// every matcher; series without points in the range are left out.
    pub fn range(
        &self,
        metric: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, TsdbError> {
        let mut out = Vec::new();
        for (key, id) in self.select(metric, matchers)? {
            let points = self.points(id, start_ms, end_ms)?;
            if !points.is_empty() {
                out.push(SeriesData { key, points });
            }
        }
        Ok(out)
    }

    fn points(&self, id: u64, start_ms: i64, end_ms: i64) -> Result<Vec<Point>, TsdbError> {
        if start_ms >= end_ms {
            return Ok(Vec::new());
        }
        self.data
            .range(sample_key(id, start_ms)..sample_key(id, end_ms))
            .map(|entry| decode_sample(&entry?))
            .collect()
    }

    /// The newest point of every series of `host`.
    pub fn latest(&self, host: &str) -> Result<Vec<(SeriesKey, Point)>, TsdbError> {
        let mut prefix = host.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.host_series.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let id = decode_u64(&key[prefix.len()..])?;
            let series = self
                .series_by_id
                .get(id.to_be_bytes())?
                .ok_or_else(|| TsdbError::Corrupt(format!("series {id} has no key")))?;
            let mut sample_prefix = vec![SAMPLE];
            sample_prefix.extend_from_slice(&id.to_be_bytes());
            if let Some(entry) = self.data.scan_prefix(sample_prefix).next_back() {
                out.push((SeriesKey::decode(&series)?, decode_sample(&entry?)?));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl Store {
    /// The newest process snapshot of `host` at or before `at_ms`.
    pub fn process_snapshot_at(
        &self,
        host: &str,
        at_ms: i64,
    ) -> Result<Option<ProcessSnapshot>, TsdbError> {
        let Some(entry) = self
            .data
            .range(snapshot_key(host, i64::MIN)..=snapshot_key(host, at_ms))
            .next_back()
        else {
            return Ok(None);
        };
        let (_, value) = entry?;
        postcard::from_bytes(&value)
            .map(Some)
            .map_err(|e| TsdbError::Corrupt(format!("process snapshot of {host}: {e}")))
    }
}

fn snapshot_key(host: &str, t_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 10);
    key.push(SNAPSHOT);
    key.extend_from_slice(host.as_bytes());
    key.push(0);
    key.extend_from_slice(&order_preserving(t_ms).to_be_bytes());
    key
}

fn sample_key(id: u64, t_ms: i64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = SAMPLE;
    key[1..9].copy_from_slice(&id.to_be_bytes());
    key[9..].copy_from_slice(&order_preserving(t_ms).to_be_bytes());
    key
}

/// Maps i64 to u64 so that big-endian bytes sort like the signed numbers.
fn order_preserving(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn decode_sample((key, value): &(sled::IVec, sled::IVec)) -> Result<Point, TsdbError> {
    if key.len() != 17 || value.len() != 8 {
        return Err(TsdbError::Corrupt("sample record".to_owned()));
    }
    let t = decode_u64(&key[9..])? ^ (1 << 63);
    Ok(Point {
        t_ms: t as i64,
        value: f64::from_bits(decode_u64(value)?),
    })
}

fn sequence_key(host: &str, source: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 10);
    key.push(SEQUENCE);
    key.extend_from_slice(host.as_bytes());
    key.push(0);
    key.extend_from_slice(&source.to_be_bytes());
    key
}

fn host_series_key(host: &str, id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 9);
    key.extend_from_slice(host.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn decode_u64(bytes: &[u8]) -> Result<u64, TsdbError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| TsdbError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Label, SeriesInput};

    const NOW: i64 = 1_800_000_000_000;

    fn options() -> Options {
        Options {
            clock: Arc::new(|| NOW),
            max_series_per_host: 3,
            ..Options::default()
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(sled::open(dir).unwrap(), options()).unwrap()
    }

    fn batch(host: &str, seq: u64, points: &[(i64, f64)]) -> Batch {
        Batch {
            host: host.to_owned(),
            source: 7,
            seq,
            series: vec![SeriesInput {
                metric: "host_load1".to_owned(),
                labels: vec![],
                points: points
                    .iter()
                    .map(|&(t_ms, value)| Point { t_ms, value })
                    .collect(),
            }],
            processes: vec![],
        }
    }

    #[test]
    fn append_then_query_and_replays_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let out = store
            .append(&batch("a", 1, &[(NOW - 20, 1.0), (NOW - 10, 2.0)]))
            .unwrap();
        assert_eq!(out.stored, 2);
        let out = store.append(&batch("a", 1, &[(NOW - 5, 9.0)])).unwrap();
        assert!(out.duplicate);
        store.append(&batch("b", 1, &[(NOW - 5, 3.0)])).unwrap();
        let a = Matcher::Equal("host".into(), "a".into());
        let data = store.range("host_load1", &[a], NOW - 100, NOW).unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].points.len(), 2);
        assert_eq!(
            store
                .range("host_load1", &[], NOW - 100, NOW)
                .unwrap()
                .len(),
            2
        );
        let latest = store.latest("a").unwrap();
        assert_eq!(
            latest[0].1,
            Point {
                t_ms: NOW - 10,
                value: 2.0
            }
        );
        assert_eq!(store.last_seq("a", 7).unwrap(), 1);
        assert_eq!(store.last_seq("a", 8).unwrap(), 0);
    }

    #[test]
    fn data_and_sequences_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.append(&batch("a", 5, &[(NOW - 20, 1.0)])).unwrap();
        }
        let store = open(dir.path());
        assert!(
            store
                .append(&batch("a", 5, &[(NOW, 1.0)]))
                .unwrap()
                .duplicate
        );
        assert_eq!(
            store.range("host_load1", &[], 0, NOW + 1).unwrap()[0]
                .points
                .len(),
            1
        );
    }

    #[test]
    fn bad_samples_are_counted_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let out = store
            .append(&batch(
                "a",
                1,
                &[
                    (NOW, f64::NAN),
                    (NOW, f64::INFINITY),
                    (NOW + 3_600_000, 1.0),
                    (NOW - 365 * 24 * 3_600_000, 1.0),
                    (NOW, 1.0),
                ],
            ))
            .unwrap();
        assert_eq!(out.stored, 1);
        assert_eq!(out.rejected.non_finite, 2);
        assert_eq!(out.rejected.future, 1);
        assert_eq!(out.rejected.too_old, 1);
        assert!(out.first_error.is_some());
    }

    #[test]
    fn series_limit_per_host_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let series = (0..5)
            .map(|i| SeriesInput {
                metric: "m".to_owned(),
                labels: vec![Label::new("i", i.to_string())],
                points: vec![Point {
                    t_ms: NOW,
                    value: 1.0,
                }],
            })
            .collect();
        let out = store
            .append(&Batch {
                host: "a".into(),
                source: 1,
                seq: 1,
                series,
                processes: vec![],
            })
            .unwrap();
        assert_eq!(out.stored, 3);
        assert_eq!(out.rejected.series_limit, 2);
        assert!(out.first_error.unwrap().contains("limit of 3 series"));
    }

    #[test]
    fn process_snapshots_are_found_at_or_before_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let snapshot = |t_ms, pid| ProcessSnapshot {
            t_ms,
            processes: vec![crate::ProcessInfo {
                pid,
                name: "nginx".into(),
                command: "nginx -g daemon off;".into(),
                user: "www-data".into(),
                cpu_cores: 1.5,
                rss_bytes: 1 << 20,
                start_time_ms: NOW - 1000,
            }],
        };
        let mut b = batch("a", 1, &[]);
        b.processes = vec![snapshot(NOW - 20, 1), snapshot(NOW - 10, 2)];
        store.append(&b).unwrap();
        let mut other = batch("ab", 1, &[]);
        other.processes = vec![snapshot(NOW - 15, 3)];
        store.append(&other).unwrap();
        assert_eq!(
            store
                .process_snapshot_at("a", NOW)
                .unwrap()
                .unwrap()
                .processes[0]
                .pid,
            2
        );
        assert_eq!(
            store
                .process_snapshot_at("a", NOW - 11)
                .unwrap()
                .unwrap()
                .processes[0]
                .pid,
            1
        );
        assert!(store.process_snapshot_at("a", NOW - 21).unwrap().is_none());
        assert!(store.process_snapshot_at("b", NOW).unwrap().is_none());
    }

    #[test]
    fn negative_timestamps_sort_before_positive() {
        assert!(sample_key(1, -5) < sample_key(1, 0));
        assert!(sample_key(1, 0) < sample_key(1, 5));
        assert!(sample_key(1, i64::MAX) < sample_key(2, i64::MIN));
    }
}
