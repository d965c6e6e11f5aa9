//! One remote_write 1.0 request: the protobuf `WriteRequest`, snappy
//! block compression, the spec's headers, and what the answer means.

use super::config::Destination;
use hostwatch_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use hostwatch_tsdb::Point;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

/// The remote_write protocol version sent in its header.
const PROTOCOL_VERSION: &str = "0.1.0";
/// Longest `Retry-After` honoured; a longer one is taken as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The samples of one series for one request.
#[derive(Debug, Clone)]
pub(crate) struct SeriesSamples {
    /// `__name__` and the series' labels, sorted by name.
    pub(crate) labels: Arc<Vec<Label>>,
    pub(crate) points: Vec<Point>,
}

/// What the receiver's answer means for a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// 2xx: delivered.
    Sent,
    /// A network error, 5xx or 429: send it again, after `after` if the
    /// receiver said (`Retry-After`). The message says what happened.
    Retry {
        after: Option<Duration>,
        message: String,
    },
    /// Any other answer: sending it again would be refused again.
    Refused(String),
}

/// The request body: the encoded `WriteRequest`, snappy-compressed.
pub(crate) fn encode(series: &[SeriesSamples]) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: s.labels.as_ref().clone(),
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
    let raw = request.encode_to_vec();
    // Compressing a buffer into a large enough one cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// Posts one body to the destination.
pub(crate) async fn post(destination: &Destination, body: Vec<u8>) -> Outcome {
    let request = destination
        .client
        .post(destination.url.clone())
        .headers(destination.headers.clone())
        .header(reqwest::header::CONTENT_ENCODING, "snappy")
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", PROTOCOL_VERSION)
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
    if status.is_success() {
        return Outcome::Sent;
    }
    let after = retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let message = format!("HTTP {status}: {}", excerpt(&body));
    if status.is_server_error() || status.as_u16() == 429 {
        Outcome::Retry { after, message }
    } else {
        Outcome::Refused(message)
    }
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

    #[test]
    fn bodies_decode_back_to_the_samples() {
        let labels = Arc::new(vec![
            Label {
                name: "__name__".into(),
                value: "m".into(),
            },
            Label {
                name: "host".into(),
                value: "a".into(),
            },
        ]);
        let points = vec![
            Point {
                t_ms: 1,
                value: 0.5,
            },
            Point {
                t_ms: 2,
                value: -3.0,
            },
        ];
        let body = encode(&[SeriesSamples {
            labels: labels.clone(),
            points,
        }]);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(&raw[..]).unwrap();
        assert_eq!(request.timeseries.len(), 1);
        assert_eq!(request.timeseries[0].labels, *labels);
        let samples: Vec<(i64, f64)> = request.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        assert_eq!(samples, vec![(1, 0.5), (2, -3.0)]);
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
