//! One remote_write request: the body (1.0's `WriteRequest` or 2.0's
//! `Request` with its symbol table, snappy block compression), the
//! spec's headers, and what the answer means.
//!
//! Bodies are written straight from the points: for 1.0, each series'
//! labels are encoded once, when the series is first seen, and copied
//! into every request; for 2.0, the symbol table is built per request.
//! The raw buffer and the snappy encoder are reused per shard.

use super::config::{Destination, Protocol};
use bytes::Bytes;
use hostwatch_proto::prometheus::{Label, Sample};
use hostwatch_proto::prometheus_v2 as v2;
use hostwatch_tsdb::{Point, SeriesKey};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest `Retry-After` honoured; a longer one is taken as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
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

/// A series' labels, ready for either protocol.
#[derive(Debug)]
pub(crate) struct SeriesLabels {
    /// `__name__` and the key's labels, sorted by name as remote_write wants.
    pairs: Vec<(String, String)>,
    /// 1.0: the `labels` fields of the series' `TimeSeries`, encoded.
    v1: Vec<u8>,
}

impl SeriesLabels {
    pub(crate) fn new(key: &SeriesKey) -> Self {
        let mut pairs: Vec<(String, String)> =
            std::iter::once(("__name__".to_owned(), key.metric.clone()))
                .chain(key.labels.iter().map(|l| (l.name.clone(), l.value.clone())))
                .collect();
        pairs.sort();
        let mut v1 = Vec::new();
        for (name, value) in &pairs {
            let label = Label {
                name: name.clone(),
                value: value.clone(),
            };
            prost::encoding::message::encode(1, &label, &mut v1);
        }
        SeriesLabels { pairs, v1 }
    }

    #[cfg(test)]
    fn of(pairs: &[(&str, &str)]) -> Self {
        let labels = pairs
            .iter()
            .filter(|(n, _)| *n != "__name__")
            .map(|(n, v)| hostwatch_tsdb::Label {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            })
            .collect();
        let metric = pairs.iter().find(|(n, _)| *n == "__name__").map(|p| p.1);
        SeriesLabels::new(&SeriesKey {
            metric: metric.unwrap_or_default().to_owned(),
            labels,
        })
    }
}

/// The samples of one series for one request.
#[derive(Debug, Clone)]
pub(crate) struct SeriesSamples {
    pub(crate) labels: Arc<SeriesLabels>,
    pub(crate) points: Vec<Point>,
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

/// Writes request bodies for one protocol, reusing its buffers.
pub(crate) struct Encoder {
    protocol: Protocol,
    raw: Vec<u8>,
    /// 2.0: each series' label references, in order.
    refs: Vec<u32>,
    snappy: snap::raw::Encoder,
}

impl Encoder {
    pub(crate) fn new(protocol: Protocol) -> Self {
        Encoder {
            protocol,
            raw: Vec::new(),
            refs: Vec::new(),
            snappy: snap::raw::Encoder::new(),
        }
    }

    /// The request body: the encoded request, snappy-compressed. Fails
    /// only for a request larger than snappy takes (4 GiB).
    pub(crate) fn encode(&mut self, series: &[SeriesSamples]) -> Result<Bytes, String> {
        self.raw.clear();
        match self.protocol {
            Protocol::V1 => encode_v1(series, &mut self.raw),
            Protocol::V2 => encode_v2(series, &mut self.refs, &mut self.raw),
        }
        let mut out = vec![0; snap::raw::max_compress_len(self.raw.len())];
        let n = self
            .snappy
            .compress(&self.raw, &mut out)
            .map_err(|e| format!("cannot compress a request of {} bytes: {e}", self.raw.len()))?;
        out.truncate(n);
        Ok(Bytes::from(out))
    }
}

/// A 1.0 `WriteRequest`, written field by field: what prost would write
/// for the same `TimeSeries`, without building them.
fn encode_v1(series: &[SeriesSamples], out: &mut Vec<u8>) {
    let sample = |p: &Point| Sample {
        value: p.value,
        timestamp: p.t_ms,
    };
    for s in series {
        let samples: usize = s
            .points
            .iter()
            .map(|p| prost::encoding::message::encoded_len(2, &sample(p)))
            .sum();
        let len = s.labels.v1.len() + samples;
        out.reserve(1 + encoded_len_varint(len as u64) + len);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        out.extend_from_slice(&s.labels.v1);
        for p in &s.points {
            prost::encoding::message::encode(2, &sample(p), out);
        }
    }
}

/// A 2.0 `Request`, written field by field: what prost would write for
/// the same `Request` (every label name and value once in the symbol
/// table, which starts with "", in the order first met; each series'
/// labels as references into it), without building it. `refs` is
/// scratch space, reused.
fn encode_v2(series: &[SeriesSamples], refs: &mut Vec<u32>, out: &mut Vec<u8>) {
    let mut symbols: Vec<&str> = vec![""];
    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    index.insert("", 0);
    refs.clear();
    for s in series {
        for (name, value) in &s.labels.pairs {
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
    let sample = |p: &Point| v2::Sample {
        value: p.value,
        timestamp: p.t_ms,
    };
    let mut rest = &refs[..];
    for s in series {
        let (own, tail) = rest.split_at(s.labels.pairs.len() * 2);
        rest = tail;
        let samples: usize = s
            .points
            .iter()
            .map(|p| prost::encoding::message::encoded_len(2, &sample(p)))
            .sum();
        let len = prost::encoding::uint32::encoded_len_packed(1, own) + samples;
        out.reserve(1 + encoded_len_varint(len as u64) + len);
        encode_key(5, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        prost::encoding::uint32::encode_packed(1, own, out);
        for p in &s.points {
            prost::encoding::message::encode(2, &sample(p), out);
        }
    }
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

/// `Retry-After` in seconds or as an HTTP date, capped at an hour.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let after = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822)
                    .ok()?;
            let now = time::OffsetDateTime::now_utc();
            Duration::try_from(at - now).unwrap_or(Duration::ZERO)
        }
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// The start of a receiver's answer, for logs: one line, at most 300 bytes.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn points(values: &[(i64, f64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(t_ms, value)| Point { t_ms, value })
            .collect()
    }

    fn series() -> Vec<SeriesSamples> {
        let a = Arc::new(SeriesLabels::of(&[
            ("host", "a"),
            ("__name__", "m"),
            ("cpu", "0"),
        ]));
        let b = Arc::new(SeriesLabels::of(&[("__name__", "n"), ("host", "a")]));
        vec![
            SeriesSamples {
                labels: a,
                points: points(&[(1, 0.5), (2, -3.0), (-5, 0.0)]),
            },
            SeriesSamples {
                labels: b,
                points: points(&[(i64::MAX, f64::MAX)]),
            },
        ]
    }

    /// The 2.0 `Request` built as prost structs, symbols in the order first
    /// met: what `encode_v2` must write.
    fn prost_v2(series: &[SeriesSamples]) -> v2::Request {
        let mut symbols = vec![String::new()];
        let mut refs: std::collections::HashMap<&str, u32> =
            std::collections::HashMap::from([("", 0)]);
        let timeseries = series
            .iter()
            .map(|s| {
                let labels_refs = s
                    .labels
                    .pairs
                    .iter()
                    .flat_map(|(name, value)| [name.as_str(), value.as_str()])
                    .map(|text| {
                        *refs.entry(text).or_insert_with(|| {
                            symbols.push(text.to_owned());
                            (symbols.len() - 1) as u32
                        })
                    })
                    .collect();
                v2::TimeSeries {
                    labels_refs,
                    samples: s
                        .points
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

    fn decompress(body: &[u8]) -> Vec<u8> {
        snap::raw::Decoder::new().decompress_vec(body).unwrap()
    }

    #[test]
    fn v1_bodies_are_what_prost_writes_and_decode_back() {
        let series = series();
        let body = Encoder::new(Protocol::V1).encode(&series).unwrap();
        let raw = decompress(&body);
        let request = hostwatch_proto::prometheus::WriteRequest::decode(&raw[..]).unwrap();
        let expected = hostwatch_proto::prometheus::WriteRequest {
            timeseries: series
                .iter()
                .map(|s| hostwatch_proto::prometheus::TimeSeries {
                    labels: s
                        .labels
                        .pairs
                        .iter()
                        .map(|(name, value)| Label {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    samples: s
                        .points
                        .iter()
                        .map(|p| Sample {
                            value: p.value,
                            timestamp: p.t_ms,
                        })
                        .collect(),
                })
                .collect(),
        };
        assert_eq!(request, expected);
        assert_eq!(request.timeseries[0].labels[0].name, "__name__");
        assert_eq!(request.timeseries[0].labels[1].name, "cpu");
        // Byte for byte, but for the zeros prost leaves out.
        let zero_free: Vec<SeriesSamples> = series[..1]
            .iter()
            .map(|s| SeriesSamples {
                labels: s.labels.clone(),
                points: points(&[(1, 0.5), (2, -3.0)]),
            })
            .collect();
        let body = Encoder::new(Protocol::V1).encode(&zero_free).unwrap();
        let mut prost_request = expected.clone();
        prost_request.timeseries.truncate(1);
        prost_request.timeseries[0].samples.truncate(2);
        assert_eq!(decompress(&body), prost_request.encode_to_vec());
    }

    #[test]
    fn v2_bodies_carry_a_symbol_table_and_decode_back() {
        let series = series();
        let mut encoder = Encoder::new(Protocol::V2);
        // The encoder's buffers are reused: a second body is whole too.
        encoder.encode(&series[1..]).unwrap();
        let body = encoder.encode(&series).unwrap();
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
        assert_eq!(with("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(with("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
    }
}
