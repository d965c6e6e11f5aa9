//! Write-ahead log records.
//!
//! One sled value per commit group (several values if the group is large)
//! holds frames `[length varint][crc32 LE][payload]`, one per appended
//! batch. The payload is a batch's accepted samples, already resolved to
//! series ids, plus its process snapshots and its (host, source, sequence),
//! so replay rebuilds the head and the exactly-once state from it alone.
//! A frame that fails its checksum is skipped and counted; a length that
//! runs past the value ends the value (a torn tail).

use crate::TsdbError;
use crate::codec::{ByteReader, put_ivarint, put_str, put_uvarint};
use crate::forward::SampleRun;
use crate::model::{MAX_LABEL_VALUE_LEN, Point, ProcessSnapshot};
use crate::snapshot;

/// 3: process snapshots in the snapshot codec (2: postcard).
const RECORD_VERSION: u8 = 3;

/// One appended batch as the WAL holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WalRecord {
    pub(crate) host: String,
    pub(crate) source: u64,
    pub(crate) seq: u64,
    /// Accepted points per series id, each list in the order appended.
    pub(crate) series: Vec<(u64, Vec<Point>)>,
    pub(crate) snapshots: Vec<ProcessSnapshot>,
}

/// Appends one frame to `out`: the batch (host, source, seq), its accepted
/// samples as (series id, point) with each series' points adjacent, and
/// its process snapshots (in the snapshot codec: a batch's snapshots share
/// their processes' names and commands).
pub(crate) fn encode_frame(
    host: &str,
    source: u64,
    seq: u64,
    samples: &[(u64, Point)],
    snapshots: &[&ProcessSnapshot],
    out: &mut Vec<u8>,
) {
    let mut payload = Vec::with_capacity(64 + samples.len() * 8);
    payload.push(RECORD_VERSION);
    put_str(&mut payload, host);
    put_uvarint(&mut payload, source);
    put_uvarint(&mut payload, seq);
    let base_t = samples.first().map_or(0, |(_, p)| p.t_ms);
    put_ivarint(&mut payload, base_t);
    let runs = samples.chunk_by(|a, b| a.0 == b.0);
    put_uvarint(&mut payload, runs.clone().count() as u64);
    let mut prev_id = 0u64;
    for run in runs {
        // One header byte for the common case (the next id, at the batch's
        // time, a few points): NEXT_ID | AT_BASE | points - 1 (or 63 and a varint).
        let id = run[0].0;
        let next_id = id == prev_id.wrapping_add(1);
        let at_base = run[0].1.t_ms == base_t;
        let few = run.len() < usize::from(MANY_POINTS) + 1;
        let count = if few {
            run.len() as u8 - 1
        } else {
            MANY_POINTS
        };
        payload.push(if next_id { NEXT_ID } else { 0 } | if at_base { AT_BASE } else { 0 } | count);
        if !next_id {
            put_ivarint(&mut payload, id.wrapping_sub(prev_id) as i64);
        }
        if !few {
            put_uvarint(&mut payload, run.len() as u64);
        }
        prev_id = id;
        let mut prev_t = base_t;
        let mut prev_bits = 0u64;
        for (i, (_, p)) in run.iter().enumerate() {
            if i > 0 || !at_base {
                put_ivarint(&mut payload, p.t_ms.wrapping_sub(prev_t));
            }
            prev_t = p.t_ms;
            let bits = p.value.to_bits();
            put_value(&mut payload, p.value, prev_bits);
            prev_bits = bits;
        }
    }
    let encoded = snapshot::encode_payload(snapshots.iter().copied());
    put_uvarint(&mut payload, encoded.len() as u64);
    payload.extend_from_slice(&encoded);
    put_uvarint(out, payload.len() as u64);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Run header bits: the series id is the previous one plus one; the first
/// point is at the batch's base time; the low bits count points.
const NEXT_ID: u8 = 0x80;
const AT_BASE: u8 = 0x40;
const MANY_POINTS: u8 = 0x3f;

/// Value tags: the same bits as the previous value of the run (or zero);
/// an integer, as a zigzag varint; otherwise the XOR with the previous
/// bits without its zero bytes at either end, the tag being
/// (leading zero bytes << 4 | trailing zero bytes).
const SAME: u8 = 0xff;
const INTEGER: u8 = 0xfe;

fn put_value(out: &mut Vec<u8>, v: f64, prev_bits: u64) {
    const LIMIT: f64 = (1u64 << 53) as f64;
    let x = v.to_bits() ^ prev_bits;
    if x == 0 {
        out.push(SAME);
        return;
    }
    let i = v as i64;
    if v.abs() < LIMIT && (i as f64).to_bits() == v.to_bits() {
        out.push(INTEGER);
        put_ivarint(out, i);
        return;
    }
    let lead = x.leading_zeros() / 8;
    let trail = x.trailing_zeros() / 8;
    out.push(((lead << 4) | trail) as u8);
    let bytes = x.to_be_bytes();
    out.extend_from_slice(&bytes[lead as usize..8 - trail as usize]);
}

fn read_value(r: &mut ByteReader<'_>, prev_bits: u64) -> Result<u64, TsdbError> {
    let tag = r.u8()?;
    match tag {
        SAME => return Ok(prev_bits),
        INTEGER => return Ok((r.ivarint()? as f64).to_bits()),
        _ => {}
    }
    let (lead, trail) = (usize::from(tag >> 4), usize::from(tag & 0x0f));
    if lead + trail >= 8 {
        return Err(TsdbError::Corrupt("trimmed value tag".to_owned()));
    }
    let mut bytes = [0u8; 8];
    bytes[lead..8 - trail].copy_from_slice(r.bytes(8 - lead - trail)?);
    Ok(u64::from_be_bytes(bytes) ^ prev_bits)
}

/// What decoding one WAL value found.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) records: Vec<WalRecord>,
    /// Frames skipped: bad checksum, undecodable payload or a torn tail.
    pub(crate) corrupt: u64,
}

/// Decodes every frame of one WAL value, skipping damaged ones.
pub(crate) fn decode_value(value: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    for frame in frames(value) {
        match frame.and_then(|f| f.decode()) {
            Ok(record) => out.records.push(record),
            Err(_) => out.corrupt += 1,
        }
    }
    out
}

/// One frame of a WAL value, not yet checked.
pub(crate) struct Frame<'a> {
    crc: u32,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The host of the frame's batch, read without checking the frame
    /// (replay uses it to share frames out between threads by host).
    pub(crate) fn host(&self) -> Option<&'a str> {
        let mut r = ByteReader::new(self.payload);
        r.u8().ok()?;
        r.str(MAX_LABEL_VALUE_LEN).ok()
    }

    /// Checks the checksum and decodes the payload.
    pub(crate) fn decode(&self) -> Result<WalRecord, TsdbError> {
        if crc32fast::hash(self.payload) != self.crc {
            return Err(TsdbError::Corrupt("WAL frame checksum mismatch".into()));
        }
        decode_payload(self.payload)
    }
}

/// The frames of one WAL value in order; a length running past the value
/// (a torn tail) is one error and ends it.
pub(crate) fn frames(value: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, TsdbError>> {
    let mut r = ByteReader::new(value);
    let mut torn = false;
    std::iter::from_fn(move || {
        if torn || r.is_empty() {
            return None;
        }
        let frame = r
            .len(value.len())
            .and_then(|len| Ok((r.u32_le()?, r.bytes(len)?)));
        Some(match frame {
            Ok((crc, payload)) => Ok(Frame { crc, payload }),
            Err(e) => {
                torn = true;
                Err(e)
            }
        })
    })
}

/// The accepted samples of the frames of one WAL value, added flat to
/// `runs` (per series, in the order appended: its id and its points'
/// range in `points`) and `points`, without decoding the process
/// snapshots (what forwarding reads: no allocation per series); returns
/// the number of frames skipped as damaged (nothing of them is added).
pub(crate) fn samples_of_value(
    value: &[u8],
    runs: &mut Vec<SampleRun>,
    points: &mut Vec<Point>,
) -> u64 {
    let mut corrupt = 0;
    for frame in frames(value) {
        let (kept_runs, kept_points) = (runs.len(), points.len());
        let read = frame.and_then(|f| {
            if crc32fast::hash(f.payload) != f.crc {
                return Err(TsdbError::Corrupt("WAL frame checksum mismatch".into()));
            }
            let mut r = ByteReader::new(f.payload);
            read_batch(&mut r)?;
            read_series_into(&mut r, &mut FlatSink { runs, points })
        });
        if read.is_err() {
            runs.truncate(kept_runs);
            points.truncate(kept_points);
            corrupt += 1;
        }
    }
    corrupt
}

/// The version, host, source and sequence at the head of a payload.
fn read_batch<'a>(r: &mut ByteReader<'a>) -> Result<(&'a str, u64, u64), TsdbError> {
    if r.u8()? != RECORD_VERSION {
        return Err(TsdbError::Corrupt("unknown WAL record version".to_owned()));
    }
    let host = r.str(MAX_LABEL_VALUE_LEN)?;
    Ok((host, r.uvarint()?, r.uvarint()?))
}

pub(crate) fn decode_payload(payload: &[u8]) -> Result<WalRecord, TsdbError> {
    let mut r = ByteReader::new(payload);
    let (host, source, seq) = read_batch(&mut r)?;
    let host = host.to_owned();
    let series = read_series(&mut r)?;
    let n = r.count()?;
    let snapshots = snapshot::decode_payload(r.bytes(n)?)?;
    if !r.is_empty() {
        return Err(TsdbError::Corrupt(
            "trailing bytes in WAL record".to_owned(),
        ));
    }
    Ok(WalRecord {
        host,
        source,
        seq,
        series,
        snapshots,
    })
}

/// The accepted samples of a payload, after its batch fields.
fn read_series(r: &mut ByteReader<'_>) -> Result<Vec<(u64, Vec<Point>)>, TsdbError> {
    let mut series = Vec::new();
    read_series_into(r, &mut series)?;
    Ok(series)
}

/// Where decoded samples go: a run of points per series.
trait SeriesSink {
    /// The payload holds `n` series.
    fn reserve(&mut self, _n: usize) {}
    /// A series' run of `n` points begins.
    fn series(&mut self, id: u64, n: usize);
    /// The next point of the current run.
    fn point(&mut self, point: Point);
}

/// Replay's form: a `Vec` of points per series.
impl SeriesSink for Vec<(u64, Vec<Point>)> {
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n.min(4096));
    }

    fn series(&mut self, id: u64, n: usize) {
        self.push((id, Vec::with_capacity(n.min(4096))));
    }

    fn point(&mut self, point: Point) {
        if let Some((_, points)) = self.last_mut() {
            points.push(point);
        }
    }
}

/// Forwarding's form: flat, no allocation per series.
struct FlatSink<'a> {
    runs: &'a mut Vec<SampleRun>,
    points: &'a mut Vec<Point>,
}

impl SeriesSink for FlatSink<'_> {
    fn series(&mut self, id: u64, _: usize) {
        let at = self.points.len();
        self.runs.push(SampleRun {
            id,
            start: at,
            end: at,
        });
    }

    fn point(&mut self, point: Point) {
        self.points.push(point);
        if let Some(run) = self.runs.last_mut() {
            run.end = self.points.len();
        }
    }
}

/// Decodes the accepted samples of a payload, after its batch fields,
/// into `sink`.
fn read_series_into(r: &mut ByteReader<'_>, sink: &mut impl SeriesSink) -> Result<(), TsdbError> {
    let base_t = r.ivarint()?;
    // Counts are bounded by the bytes left, not by constants: every frame
    // the encoder writes must replay, whatever size of batch was accepted.
    let n_series = r.count()?;
    sink.reserve(n_series);
    let mut prev_id = 0u64;
    for _ in 0..n_series {
        let header = r.u8()?;
        let id = if header & NEXT_ID != 0 {
            prev_id.wrapping_add(1)
        } else {
            prev_id.wrapping_add(r.ivarint()? as u64)
        };
        prev_id = id;
        let n = match header & MANY_POINTS {
            MANY_POINTS => r.count()?,
            few => usize::from(few) + 1,
        };
        sink.series(id, n);
        let mut t = base_t;
        let mut bits = 0u64;
        for i in 0..n {
            if i > 0 || header & AT_BASE == 0 {
                t = t.wrapping_add(r.ivarint()?);
            }
            bits = read_value(r, bits)?;
            sink.point(Point {
                t_ms: t,
                value: f64::from_bits(bits),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProcessInfo;

    fn record() -> WalRecord {
        WalRecord {
            host: "web-1".into(),
            source: 42,
            seq: 7,
            series: vec![
                (
                    3,
                    vec![
                        Point {
                            t_ms: 1_700_000_000_000,
                            value: 0.25,
                        },
                        Point {
                            t_ms: 1_700_000_010_000,
                            value: 1e300,
                        },
                    ],
                ),
                (
                    1,
                    vec![Point {
                        t_ms: 1_699_999_990_000,
                        value: -0.0,
                    }],
                ),
                (
                    2,
                    (0..70)
                        .map(|i| Point {
                            t_ms: 1_700_000_000_000 + i * 10_000,
                            value: [12_345.0, -7.0, 0.0, 0.1][i as usize % 4],
                        })
                        .collect(),
                ),
            ],
            snapshots: vec![ProcessSnapshot {
                t_ms: 1_700_000_000_000,
                processes: vec![ProcessInfo {
                    pid: 1,
                    name: "init".into(),
                    command: "/sbin/init".into(),
                    user: "root".into(),
                    cpu_cores: 0.01,
                    rss_bytes: 4096,
                    start_time_ms: 0,
                }],
            }],
        }
    }

    fn encode(r: &WalRecord, out: &mut Vec<u8>) {
        let samples: Vec<(u64, Point)> = r
            .series
            .iter()
            .flat_map(|(id, points)| points.iter().map(|p| (*id, *p)))
            .collect();
        let snapshots: Vec<&ProcessSnapshot> = r.snapshots.iter().collect();
        encode_frame(&r.host, r.source, r.seq, &samples, &snapshots, out);
    }

    #[test]
    fn frames_round_trip_bit_exactly() {
        let r = record();
        let mut value = Vec::new();
        encode(&r, &mut value);
        encode(&r, &mut value);
        let decoded = decode_value(&value);
        assert_eq!(decoded.corrupt, 0);
        assert_eq!(decoded.records.len(), 2);
        let back = &decoded.records[0];
        assert_eq!(back.series[1].1[0].value.to_bits(), (-0.0f64).to_bits());
        assert_eq!(back, &r);
    }

    #[test]
    fn damaged_frames_are_skipped_and_counted() {
        let r = record();
        let mut value = Vec::new();
        encode(&r, &mut value);
        let first_len = value.len();
        encode(&r, &mut value);
        // Flip a payload byte of the first frame: its checksum fails, the second survives.
        value[10] ^= 0x40;
        let decoded = decode_value(&value);
        assert_eq!((decoded.records.len(), decoded.corrupt), (1, 1));
        // A torn tail: the second frame cut short.
        let torn = &value[..first_len + 8];
        let decoded = decode_value(torn);
        assert_eq!((decoded.records.len(), decoded.corrupt), (0, 2));
        // Forwarding's samples-only read skips the same frames.
        let (mut runs, mut points) = (Vec::new(), Vec::new());
        assert_eq!(samples_of_value(&value, &mut runs, &mut points), 1);
        let flat: Vec<(u64, Vec<Point>)> = runs
            .iter()
            .map(|run| (run.id, points[run.start..run.end].to_vec()))
            .collect();
        assert_eq!(flat, r.series);
        runs.clear();
        points.clear();
        assert_eq!(samples_of_value(torn, &mut runs, &mut points), 2);
        assert!(runs.is_empty() && points.is_empty());
    }
}
