//! Sealed chunks: raw samples of one window, and downsampled rows.
//!
//! Every stored block shares one envelope: `[kind][max LSN varint]
//! [payload][crc32 LE of everything before]`. The max LSN is the newest
//! commit group whose samples the block holds; replay skips WAL samples of
//! groups a sealed block already holds, which makes replay idempotent.

use crate::TsdbError;
use crate::codec::{
    ByteReader, MAX_BLOCK_POINTS, decode_times, decode_values, encode_points, encode_times,
    encode_values, put_uvarint,
};
use crate::model::Point;

/// Kinds of blocks.
pub(crate) const KIND_RAW: u8 = 1;
pub(crate) const KIND_ROWS: u8 = 2;
/// Process snapshots as rows (sealed before columns; the WAL's encoding).
pub(crate) const KIND_SNAPSHOTS: u8 = 3;
/// Process snapshots in columns.
pub(crate) const KIND_SNAPSHOT_COLUMNS: u8 = 4;

/// Wraps `payload` in the envelope.
pub(crate) fn seal(kind: u8, max_lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.push(kind);
    put_uvarint(&mut out, max_lsn);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the envelope; returns the max LSN and the payload.
pub(crate) fn open(kind: u8, value: &[u8]) -> Result<(u64, &[u8]), TsdbError> {
    let corrupt = |m: &str| TsdbError::Corrupt(m.to_owned());
    if value.len() < 6 {
        return Err(corrupt("block too short"));
    }
    let (body, crc) = value.split_at(value.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt("block checksum mismatch"));
    }
    let mut r = ByteReader::new(body);
    if r.u8()? != kind {
        return Err(corrupt("unexpected block kind"));
    }
    let max_lsn = r.uvarint()?;
    Ok((max_lsn, r.rest()))
}

/// A raw chunk of `points` (sorted, distinct times).
pub(crate) fn encode_raw(points: &[Point], max_lsn: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(points.len() + 32);
    encode_points(points, &mut payload);
    seal(KIND_RAW, max_lsn, &payload)
}

/// The max LSN and points of a raw chunk.
pub(crate) fn decode_raw(value: &[u8]) -> Result<(u64, Vec<Point>), TsdbError> {
    let (max_lsn, payload) = open(KIND_RAW, value)?;
    let mut r = ByteReader::new(payload);
    let points = crate::codec::decode_points(&mut r)?;
    if !r.is_empty() {
        return Err(TsdbError::Corrupt("trailing bytes in chunk".to_owned()));
    }
    Ok((max_lsn, points))
}

/// Where a raw chunk's bytes go: its envelope and sample count, its
/// times column and its values column (see `docs/format/chunks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawParts {
    pub(crate) samples: u64,
    /// Kind, max LSN, CRC and the sample count.
    pub(crate) header: u64,
    pub(crate) times: u64,
    pub(crate) values: u64,
}

/// The sizes of a raw chunk's parts (its values are not decoded).
pub(crate) fn raw_parts(value: &[u8]) -> Result<RawParts, TsdbError> {
    let (_, payload) = open(KIND_RAW, value)?;
    let mut r = ByteReader::new(payload);
    let n = r.len(MAX_BLOCK_POINTS)?;
    let before_times = r.remaining();
    let mut times = Vec::with_capacity(n);
    decode_times(&mut r, n, &mut times)?;
    let values = r.remaining() as u64;
    let times = (before_times - r.remaining()) as u64;
    Ok(RawParts {
        samples: n as u64,
        header: value.len() as u64 - times - values,
        times,
        values,
    })
}

/// Appends the points of a raw chunk with times in `[start, end)` to
/// `out` (decoding no value past `end`); returns the chunk's max LSN. On
/// an error `out` is as it was.
pub(crate) fn decode_raw_within(
    value: &[u8],
    start: i64,
    end: i64,
    out: &mut Vec<Point>,
) -> Result<u64, TsdbError> {
    let (max_lsn, payload) = open(KIND_RAW, value)?;
    if start >= end {
        return Ok(max_lsn);
    }
    let before = out.len();
    let mut r = ByteReader::new(payload);
    let decoded = crate::codec::decode_points_through(&mut r, start, end - 1, out);
    let result = match decoded {
        Ok(()) if !r.is_empty() => Err(TsdbError::Corrupt("trailing bytes in chunk".to_owned())),
        Ok(()) => Ok(max_lsn),
        Err(e) => Err(e),
    };
    if result.is_err() {
        out.truncate(before);
    }
    result
}

/// Aggregates of the samples of one bucket (a minute or an hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Row {
    /// Start of the bucket.
    pub(crate) t_ms: i64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) sum: f64,
    pub(crate) count: u64,
    /// The newest sample of the bucket.
    pub(crate) last: f64,
}

impl Row {
    fn new(t_ms: i64, v: f64) -> Self {
        Row {
            t_ms,
            min: v,
            max: v,
            sum: v,
            count: 1,
            last: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
        self.last = v;
    }

    /// Folds a later row of the same bucket into this one.
    pub(crate) fn merge(&mut self, later: &Row) {
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.sum += later.sum;
        self.count += later.count;
        self.last = later.last;
    }
}

/// Rows of `resolution` ms buckets of sorted `points`.
pub(crate) fn rows(points: &[Point], resolution: i64) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for p in points {
        let bucket = crate::options::align(p.t_ms, resolution);
        match out.last_mut() {
            Some(row) if row.t_ms == bucket => row.add(p.value),
            _ => out.push(Row::new(bucket, p.value)),
        }
    }
    out
}

/// Encodes rows with distinct, increasing bucket starts.
pub(crate) fn encode_rows(rows: &[Row], max_lsn: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(rows.len() * 8 + 32);
    put_uvarint(&mut payload, rows.len() as u64);
    let times: Vec<i64> = rows.iter().map(|r| r.t_ms).collect();
    encode_times(&times, &mut payload);
    let counts: Vec<f64> = rows.iter().map(|r| r.count as f64).collect();
    encode_values(&counts, &mut payload);
    // min, max, sum, last; a column equal to an earlier one (max and last
    // of a counter) is written as a reference to it: byte 1 + its index.
    let columns: [Vec<u64>; 4] = [
        rows.iter().map(|r| r.min.to_bits()).collect(),
        rows.iter().map(|r| r.max.to_bits()).collect(),
        rows.iter().map(|r| r.sum.to_bits()).collect(),
        rows.iter().map(|r| r.last.to_bits()).collect(),
    ];
    for (i, column) in columns.iter().enumerate() {
        match columns[..i].iter().position(|earlier| earlier == column) {
            Some(j) => payload.push(1 + j as u8),
            None => {
                payload.push(0);
                let values: Vec<f64> = column.iter().map(|b| f64::from_bits(*b)).collect();
                encode_values(&values, &mut payload);
            }
        }
    }
    seal(KIND_ROWS, max_lsn, &payload)
}

pub(crate) fn decode_rows(value: &[u8]) -> Result<(u64, Vec<Row>), TsdbError> {
    let corrupt = |m: &str| TsdbError::Corrupt(m.to_owned());
    let (max_lsn, payload) = open(KIND_ROWS, value)?;
    let mut r = ByteReader::new(payload);
    let n = r.len(MAX_BLOCK_POINTS)?;
    let mut times = Vec::with_capacity(n);
    decode_times(&mut r, n, &mut times)?;
    if times.windows(2).any(|w| w[1] <= w[0]) {
        return Err(corrupt("row times do not increase"));
    }
    let mut counts = Vec::with_capacity(n);
    decode_values(&mut r, n, &mut counts)?;
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(4);
    for i in 0..4 {
        let column = match usize::from(r.u8()?) {
            0 => {
                let mut values = Vec::with_capacity(n);
                decode_values(&mut r, n, &mut values)?;
                values
            }
            j if j <= i => columns[j - 1].clone(),
            _ => return Err(corrupt("row column reference")),
        };
        columns.push(column);
    }
    if !r.is_empty() {
        return Err(corrupt("trailing bytes in rows"));
    }
    let [min, max, sum, last]: [Vec<f64>; 4] =
        columns.try_into().map_err(|_| corrupt("row columns"))?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let count = counts[i];
        if !(count >= 1.0 && count.fract() == 0.0) {
            return Err(corrupt("row count"));
        }
        out.push(Row {
            t_ms: times[i],
            min: min[i],
            max: max[i],
            sum: sum[i],
            count: count as u64,
            last: last[i],
        });
    }
    Ok((max_lsn, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_rows_round_trip_and_detect_damage() {
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                t_ms: 1_000 + i * 10_000,
                value: (i % 7) as f64 * 0.5,
            })
            .collect();
        let value = encode_raw(&points, 77);
        assert_eq!(decode_raw(&value).unwrap(), (77, points.clone()));
        let parts = raw_parts(&value).unwrap();
        assert_eq!(parts.samples, 100);
        assert_eq!(
            parts.header + parts.times + parts.values,
            value.len() as u64
        );
        // Kind, LSN 77, count 100 (one byte each) and the CRC; regular
        // times are the first time, the mode byte and the delta.
        assert_eq!(parts.header, 1 + 1 + 1 + 4);
        assert_eq!(parts.times, 2 + 1 + 3);
        assert!(raw_parts(&value[..value.len() - 1]).is_err());
        let mut bad = value.clone();
        bad[3] ^= 1;
        assert!(decode_raw(&bad).is_err());
        let minute_rows = rows(&points, 60_000);
        assert_eq!(minute_rows.iter().map(|r| r.count).sum::<u64>(), 100);
        let encoded = encode_rows(&minute_rows, 5);
        assert_eq!(decode_rows(&encoded).unwrap(), (5, minute_rows));
        assert!(decode_rows(&value).is_err(), "kind is checked");
    }
}
