//! One remote_write request: the body (1.0's `WriteRequest` or 2.0's
//! `Request` with its symbol table, snappy block compression), the
//! spec's headers, and what the answer means.
//!
//! Bodies are written straight from a shard's flat batch of points: for
//! 1.0, each series' labels are encoded once, when the shard first gets
//! the series, into one buffer of the shard's series ([`LabelTable`]),
//! and copied into every request; for 2.0, the symbol table is built per
//! request. The buffers and the snappy encoder are reused per shard.

use super::config::{Destination, Protocol};
use bytes::Bytes;
use hostwatch_tsdb::{Point, SeriesKey};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use rustc_hash::FxHashMap;
use std::time::Duration;

/// The 2.0 answer's count of samples written.
const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";

impl Protocol {
    /// The `Content-Type` of a request.
    fn content_type(self) -> &'static str {
        match self {
            Protocol::V1 => "application/x-protobuf",
            Protocol::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    /// The `X-Prometheus-Remote-Write-Version` of a request.
    fn version(self) -> &'static str {
        match self {
            Protocol::V1 => "0.1.0",
            Protocol::V2 => "2.0.0",
        }
    }
}

/// The labels of a shard's series, by their index in the shard (given
/// in the order the series are first sent to it), each learned once and
/// kept in the form its protocol writes: `__name__` and the key's
/// labels, sorted by name as remote_write wants.
pub(crate) enum LabelTable {
    /// The `labels` fields of each series' `TimeSeries`, encoded, one
    /// after the other; `ends[i]` is where series `i`'s end.
    V1 { bytes: Vec<u8>, ends: Vec<usize> },
    /// Each series' (name, value) pairs.
    V2(Vec<Vec<(String, String)>>),
}

impl LabelTable {
    pub(crate) fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::V1 => LabelTable::V1 {
                bytes: Vec::new(),
                ends: Vec::new(),
            },
            Protocol::V2 => LabelTable::V2(Vec::new()),
        }
    }

    /// Learns the next series' labels.
    pub(crate) fn push(&mut self, key: &SeriesKey) {
        match self {
            LabelTable::V1 { bytes, ends } => {
                // Written as prost writes each `Label`, without building
                // them: the table of a shard learns every series once, so
                // this is forwarding's cost per new series.
                if key.labels.is_sorted_by(|a, b| a.name <= b.name) {
                    // The key's labels come sorted: `__name__` goes
                    // before the first name after it.
                    let at = key
                        .labels
                        .partition_point(|l| l.name.as_str() <= "__name__");
                    let (before, after) = key.labels.split_at(at);
                    for l in before {
                        encode_label(&l.name, &l.value, bytes);
                    }
                    encode_label("__name__", &key.metric, bytes);
                    for l in after {
                        encode_label(&l.name, &l.value, bytes);
                    }
                } else {
                    for (name, value) in sorted_pairs(key) {
                        encode_label(name, value, bytes);
                    }
                }
                ends.push(bytes.len());
            }
            LabelTable::V2(all) => all.push(
                sorted_pairs(key)
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
            ),
        }
    }

    /// How many series it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            LabelTable::V1 { ends, .. } => ends.len(),
            LabelTable::V2(all) => all.len(),
        }
    }
}

/// The series of one request: for each, its index in the shard's
/// [`LabelTable`] and how many of `points` are its, in order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) series: Vec<(u32, u32)>,
    pub(crate) points: Vec<Point>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.series.clear();
        self.points.clear();
    }

    /// Each series' index and points.
    pub(crate) fn each(&self) -> impl Iterator<Item = (usize, &[Point])> {
        let mut rest = &self.points[..];
        self.series.iter().map(move |&(index, n)| {
            let (own, tail) = rest.split_at((n as usize).min(rest.len()));
            rest = tail;
            (index as usize, own)
        })
    }
}

/// What the receiver's answer means for a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// 2xx: delivered; with 2.0, how many samples the receiver says it
    /// wrote.
    Sent { written: Option<u64> },
    /// A network error, 5xx or 429: send it again, after `after` if the
    /// receiver said (`Retry-After`). The message says what happened.
    Retry {
        after: Option<Duration>,
        message: String,
    },
    /// Any other answer: sending it again would be refused again.
    Refused(String),
}

/// Writes request bodies, reusing its buffers.
pub(crate) struct Encoder {
    raw: Vec<u8>,
    /// 2.0: each series' label references, in order.
    refs: Vec<u32>,
    /// The compressed body, handed out by copy.
    compressed: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Encoder {
            raw: Vec::new(),
            refs: Vec::new(),
            compressed: Vec::new(),
            snappy: snap::raw::Encoder::new(),
        }
    }

    /// The request body of `batch`, whose series' labels `table` holds:
    /// the encoded request, snappy-compressed. Fails for a series the
    /// table does not hold, or a request larger than snappy takes (4 GiB).
    pub(crate) fn encode(&mut self, table: &LabelTable, batch: &Batch) -> Result<Bytes, String> {
        self.raw.clear();
        match table {
            LabelTable::V1 { bytes, ends } => encode_v1(bytes, ends, batch, &mut self.raw)?,
            LabelTable::V2(pairs) => encode_v2(pairs, batch, &mut self.refs, &mut self.raw)?,
        }
        self.compressed
            .resize(snap::raw::max_compress_len(self.raw.len()), 0);
        let n = self
            .snappy
            .compress(&self.raw, &mut self.compressed)
            .map_err(|e| format!("cannot compress a request of {} bytes: {e}", self.raw.len()))?;
        Ok(Bytes::copy_from_slice(&self.compressed[..n]))
    }
}

/// `__name__` and the key's labels, sorted by name.
fn sorted_pairs(key: &SeriesKey) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = std::iter::once(("__name__", key.metric.as_str()))
        .chain(
            key.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        )
        .collect();
    pairs.sort_unstable();
    pairs
}

/// A `WriteRequest` `TimeSeries`' `labels` field (1) holding one
/// `Label`, byte for byte what prost writes: empty strings left out.
fn encode_label(name: &str, value: &str, out: &mut Vec<u8>) {
    let field = |text: &str| {
        if text.is_empty() {
            0
        } else {
            1 + encoded_len_varint(text.len() as u64) + text.len()
        }
    };
    let len = field(name) + field(value);
    out.reserve(1 + encoded_len_varint(len as u64) + len);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    for (tag, text) in [(1, name), (2, value)] {
        if !text.is_empty() {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(text.len() as u64, out);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// A `TimeSeries`' `samples` field (2) holding one `Sample`, byte for
/// byte what prost writes (zeros left out, -0.0 being zero too), and its
/// length. 1.0's and 2.0's `Sample` have the same fields.
fn sample_len(p: &Point) -> usize {
    let len = sample_body_len(p);
    1 + encoded_len_varint(len as u64) + len
}

fn sample_body_len(p: &Point) -> usize {
    let value = if p.value != 0.0 { 9 } else { 0 };
    let timestamp = if p.t_ms != 0 {
        1 + encoded_len_varint(p.t_ms as u64)
    } else {
        0
    };
    value + timestamp
}

fn encode_sample(p: &Point, out: &mut Vec<u8>) {
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(sample_body_len(p) as u64, out);
    if p.value != 0.0 {
        encode_key(1, WireType::SixtyFourBit, out);
        out.extend_from_slice(&p.value.to_le_bytes());
    }
    if p.t_ms != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(p.t_ms as u64, out);
    }
}

fn unknown(index: usize) -> String {
    format!("series {index} of the shard has no labels")
}

/// A 1.0 `WriteRequest`, written field by field: what prost would write
/// for the same `TimeSeries`, without building them.
fn encode_v1(
    labels: &[u8],
    ends: &[usize],
    batch: &Batch,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    for (index, points) in batch.each() {
        let end = *ends.get(index).ok_or_else(|| unknown(index))?;
        let start = index.checked_sub(1).map_or(0, |i| ends[i]);
        let own = &labels[start..end];
        let samples: usize = points.iter().map(sample_len).sum();
        let len = own.len() + samples;
        out.reserve(1 + encoded_len_varint(len as u64) + len);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        out.extend_from_slice(own);
        for p in points {
            encode_sample(p, out);
        }
    }
    Ok(())
}

/// A 2.0 `Request`, written field by field: what prost would write for
/// the same `Request` (every label name and value once in the symbol
/// table, which starts with "", in the order first met; each series'
/// labels as references into it), without building it. `refs` is
/// scratch space, reused.
fn encode_v2(
    labels: &[Vec<(String, String)>],
    batch: &Batch,
    refs: &mut Vec<u32>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut symbols: Vec<&str> = vec![""];
    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    index.insert("", 0);
    refs.clear();
    for (i, _) in batch.each() {
        for (name, value) in labels.get(i).ok_or_else(|| unknown(i))? {
            for text in [name.as_str(), value.as_str()] {
                let r = *index.entry(text).or_insert_with(|| {
                    symbols.push(text);
                    (symbols.len() - 1) as u32
                });
                refs.push(r);
            }
        }
    }
    for text in &symbols {
        encode_key(4, WireType::LengthDelimited, out);
        encode_varint(text.len() as u64, out);
        out.extend_from_slice(text.as_bytes());
    }
    let mut rest = &refs[..];
    for (i, points) in batch.each() {
        let (own, tail) = rest.split_at(labels[i].len() * 2);
        rest = tail;
        let samples: usize = points.iter().map(sample_len).sum();
        let len = prost::encoding::uint32::encoded_len_packed(1, own) + samples;
        out.reserve(1 + encoded_len_varint(len as u64) + len);
        encode_key(5, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        prost::encoding::uint32::encode_packed(1, own, out);
        for p in points {
            encode_sample(p, out);
        }
    }
    Ok(())
}

/// Posts one body to the destination.
pub(crate) async fn post(destination: &Destination, body: Bytes) -> Outcome {
    let protocol = destination.protocol;
    let request = destination
        .client
        .post(destination.url.clone())
        .headers(destination.headers.clone())
        .header(reqwest::header::CONTENT_ENCODING, "snappy")
        .header(reqwest::header::CONTENT_TYPE, protocol.content_type())
        .header("X-Prometheus-Remote-Write-Version", protocol.version())
        .body(body);
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            // Without the URL: its path or query may hold a secret.
            let message = hostwatch_stdx::error_chain(&e.without_url());
            return Outcome::Retry {
                after: None,
                message,
            };
        }
    };
    let status = response.status();
    let written = samples_written(response.headers());
    if status.is_success() {
        return match (protocol, written) {
            (Protocol::V2, None) => Outcome::Retry {
                after: None,
                message: format!(
                    "HTTP {status} without {SAMPLES_WRITTEN}: a remote_write 1.0 receiver reads a 2.0 body as empty; set protocol = \"1.0\" for this destination"
                ),
            },
            (_, written) => Outcome::Sent { written },
        };
    }
    let after = retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let mut message = format!("HTTP {status}: {}", excerpt(&body));
    if let Some(n) = written {
        message.push_str(&format!(" ({n} samples written)"));
    }
    if protocol == Protocol::V2 && status == reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The whole destination speaks 1.0 only: dropping would lose
        // everything until the section is fixed; retrying keeps the
        // samples behind the cursor for the corrected section.
        message.push_str(": the receiver does not take remote_write 2.0; set protocol = \"1.0\" for this destination");
        return Outcome::Retry {
            after: None,
            message,
        };
    }
    if status.is_server_error() || status.as_u16() == 429 {
        Outcome::Retry { after, message }
    } else {
        Outcome::Refused(message)
    }
}

/// A 2.0 answer's `X-Prometheus-Remote-Write-Samples-Written`, if any.
fn samples_written(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(SAMPLES_WRITTEN)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The wait a receiver's `Retry-After` asks for (`hostwatch_stdx::retry_after`).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    hostwatch_stdx::retry_after(value, std::time::SystemTime::now())
}

/// The start of a receiver's answer, for logs: one line, at most 300 bytes.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_proto::prometheus::{Label, Sample};
    use hostwatch_proto::prometheus_v2 as v2;
    use prost::Message;

    fn points(values: &[(i64, f64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(t_ms, value)| Point { t_ms, value })
            .collect()
    }

    /// Each series' (name, value) pairs, unsorted, and points.
    type Series = Vec<(Vec<(&'static str, &'static str)>, Vec<Point>)>;

    fn series() -> Series {
        vec![
            (
                vec![("host", "a"), ("__name__", "m"), ("cpu", "0")],
                points(&[(1, 0.5), (2, -3.0), (-5, 0.0)]),
            ),
            (
                vec![("__name__", "n"), ("host", "a")],
                points(&[(i64::MAX, f64::MAX)]),
            ),
        ]
    }

    /// The series' labels learned in a table, in order, and a batch of
    /// them all.
    fn table_and_batch(protocol: Protocol, series: &Series) -> (LabelTable, Batch) {
        let mut table = LabelTable::new(protocol);
        let mut batch = Batch::default();
        for (pairs, points) in series {
            let key = SeriesKey {
                metric: pairs
                    .iter()
                    .find(|(n, _)| *n == "__name__")
                    .map_or("", |p| p.1)
                    .to_owned(),
                labels: pairs
                    .iter()
                    .filter(|(n, _)| *n != "__name__")
                    .map(|(n, v)| hostwatch_tsdb::Label::new(*n, *v))
                    .collect(),
            };
            batch.series.push((table.len() as u32, points.len() as u32));
            batch.points.extend_from_slice(points);
            table.push(&key);
        }
        (table, batch)
    }

    /// Each series' pairs sorted by name.
    fn sorted(series: &Series) -> Vec<Vec<(&'static str, &'static str)>> {
        series
            .iter()
            .map(|(pairs, _)| {
                let mut pairs = pairs.clone();
                pairs.sort();
                pairs
            })
            .collect()
    }

    /// The 2.0 `Request` built as prost structs, symbols in the order first
    /// met: what `encode_v2` must write.
    fn prost_v2(series: &Series) -> v2::Request {
        let mut symbols = vec![String::new()];
        let mut refs: std::collections::HashMap<&str, u32> =
            std::collections::HashMap::from([("", 0)]);
        let timeseries = sorted(series)
            .into_iter()
            .zip(series)
            .map(|(pairs, (_, points))| {
                let labels_refs = pairs
                    .iter()
                    .flat_map(|(name, value)| [*name, *value])
                    .map(|text| {
                        *refs.entry(text).or_insert_with(|| {
                            symbols.push(text.to_owned());
                            (symbols.len() - 1) as u32
                        })
                    })
                    .collect();
                v2::TimeSeries {
                    labels_refs,
                    samples: points
                        .iter()
                        .map(|p| v2::Sample {
                            value: p.value,
                            timestamp: p.t_ms,
                        })
                        .collect(),
                    metadata: None,
                    created_timestamp: 0,
                }
            })
            .collect();
        v2::Request {
            symbols,
            timeseries,
        }
    }

    /// The 1.0 `WriteRequest` built as prost structs.
    fn prost_v1(series: &Series) -> hostwatch_proto::prometheus::WriteRequest {
        hostwatch_proto::prometheus::WriteRequest {
            timeseries: sorted(series)
                .into_iter()
                .zip(series)
                .map(
                    |(pairs, (_, points))| hostwatch_proto::prometheus::TimeSeries {
                        labels: pairs
                            .iter()
                            .map(|(name, value)| Label {
                                name: (*name).to_owned(),
                                value: (*value).to_owned(),
                            })
                            .collect(),
                        samples: points
                            .iter()
                            .map(|p| Sample {
                                value: p.value,
                                timestamp: p.t_ms,
                            })
                            .collect(),
                    },
                )
                .collect(),
        }
    }

    fn decompress(body: &[u8]) -> Vec<u8> {
        snap::raw::Decoder::new().decompress_vec(body).unwrap()
    }

    #[test]
    fn v1_bodies_are_what_prost_writes_and_decode_back() {
        let series = series();
        let (table, batch) = table_and_batch(Protocol::V1, &series);
        let body = Encoder::new().encode(&table, &batch).unwrap();
        let raw = decompress(&body);
        let request = hostwatch_proto::prometheus::WriteRequest::decode(&raw[..]).unwrap();
        let expected = prost_v1(&series);
        assert_eq!(request, expected);
        assert_eq!(request.timeseries[0].labels[0].name, "__name__");
        assert_eq!(request.timeseries[0].labels[1].name, "cpu");
        // Byte for byte, but for the zeros prost leaves out.
        let zero_free: Series = vec![(series[0].0.clone(), points(&[(1, 0.5), (2, -3.0)]))];
        let (table, batch) = table_and_batch(Protocol::V1, &zero_free);
        let body = Encoder::new().encode(&table, &batch).unwrap();
        assert_eq!(decompress(&body), prost_v1(&zero_free).encode_to_vec());
        // Zeros (-0.0 too), which prost leaves out, negative times, names
        // sorting before `__name__`, a key's labels sorted or not: byte
        // for byte all the same.
        let odd: Series = vec![
            (
                vec![("Zone", "x"), ("__name__", "m"), ("cpu", "")],
                points(&[(0, 0.0), (0, -0.0), (-5, 1.5), (3, f64::NAN)]),
            ),
            (
                vec![("cpu", "1"), ("Zone", "y"), ("__name__", "m")],
                points(&[(i64::MIN, -0.0)]),
            ),
        ];
        let (table, batch) = table_and_batch(Protocol::V1, &odd);
        let body = Encoder::new().encode(&table, &batch).unwrap();
        assert_eq!(decompress(&body), prost_v1(&odd).encode_to_vec());
        let (table, batch) = table_and_batch(Protocol::V2, &odd);
        let body = Encoder::new().encode(&table, &batch).unwrap();
        assert_eq!(decompress(&body), prost_v2(&odd).encode_to_vec());
        // Of the table, the series batched alone, in the batch's order.
        let (table, _) = table_and_batch(Protocol::V1, &series);
        let batch = Batch {
            series: vec![(1, 1), (0, 2)],
            points: points(&[(7, 1.0), (1, 0.5), (2, -3.0)]),
        };
        let body = Encoder::new().encode(&table, &batch).unwrap();
        let request =
            hostwatch_proto::prometheus::WriteRequest::decode(&decompress(&body)[..]).unwrap();
        let swapped: Series = vec![
            (series[1].0.clone(), points(&[(7, 1.0)])),
            (series[0].0.clone(), points(&[(1, 0.5), (2, -3.0)])),
        ];
        assert_eq!(request, prost_v1(&swapped));
    }

    #[test]
    fn a_series_the_table_lacks_is_an_error() {
        for protocol in [Protocol::V1, Protocol::V2] {
            let (table, mut batch) = table_and_batch(protocol, &series());
            batch.series.push((2, 0));
            let error = Encoder::new().encode(&table, &batch).unwrap_err();
            assert!(error.contains("series 2"), "{error}");
        }
    }

    #[test]
    fn v2_bodies_carry_a_symbol_table_and_decode_back() {
        let series = series();
        let mut encoder = Encoder::new();
        // The encoder's buffers are reused: a second body is whole too.
        let (table, batch) = table_and_batch(Protocol::V2, &series[1..].to_vec());
        encoder.encode(&table, &batch).unwrap();
        let (table, batch) = table_and_batch(Protocol::V2, &series);
        let body = encoder.encode(&table, &batch).unwrap();
        let raw = decompress(&body);
        let request = v2::Request::decode(&raw[..]).unwrap();
        // Byte for byte what prost writes for the Request built the
        // straightforward way.
        assert_eq!(raw, prost_v2(&series).encode_to_vec());
        assert_eq!(request.symbols[0], "");
        let unique: std::collections::HashSet<&String> = request.symbols.iter().collect();
        assert_eq!(unique.len(), request.symbols.len(), "symbols once each");
        let labels: Vec<Vec<(&str, &str)>> = request
            .timeseries
            .iter()
            .map(|ts| {
                ts.labels_refs
                    .chunks(2)
                    .map(|p| {
                        (
                            request.symbols[p[0] as usize].as_str(),
                            request.symbols[p[1] as usize].as_str(),
                        )
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            labels,
            vec![
                vec![("__name__", "m"), ("cpu", "0"), ("host", "a")],
                vec![("__name__", "n"), ("host", "a")],
            ]
        );
        let samples: Vec<Vec<(i64, f64)>> = request
            .timeseries
            .iter()
            .map(|ts| ts.samples.iter().map(|s| (s.timestamp, s.value)).collect())
            .collect();
        assert_eq!(
            samples,
            vec![
                vec![(1, 0.5), (2, -3.0), (-5, 0.0)],
                vec![(i64::MAX, f64::MAX)]
            ]
        );
        // A 1.0 receiver reading a 2.0 body finds nothing in it.
        let as_v1 =
            hostwatch_proto::prometheus::WriteRequest::decode(&decompress(&body)[..]).unwrap();
        assert!(as_v1.timeseries.is_empty());
    }

    #[test]
    fn samples_written_is_read_when_present() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(samples_written(&h), None);
        h.insert(SAMPLES_WRITTEN, "12".parse().unwrap());
        assert_eq!(samples_written(&h), Some(12));
        h.insert(SAMPLES_WRITTEN, "many".parse().unwrap());
        assert_eq!(samples_written(&h), None);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates_and_refuses_garbage() {
        let with = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(with("999999"), Some(hostwatch_stdx::MAX_RETRY_AFTER));
        assert_eq!(with("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
    }
}
