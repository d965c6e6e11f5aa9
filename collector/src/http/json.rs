//! Prometheus' JSON shapes: `{"status":"success","data":...}`, query
//! results by type, samples as `[unix_seconds, "value"]`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hostwatch_promql::Value;
use hostwatch_tsdb::{Label, Point};
use serde_json::{Map, Value as Json, json};
use std::io::Write as _;

/// `body` as a JSON response with `status`.
pub(crate) fn respond(status: StatusCode, body: &Json) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A successful answer carrying `data`.
pub(crate) fn success(data: Json) -> Response {
    respond(StatusCode::OK, &json!({"status": "success", "data": data}))
}

/// A query's successful answer, `{"data":{"result":...,"resultType":...},
/// "status":"success"}`, written straight from `value` into one buffer:
/// the same bytes as `success(query_data(value))` (keys in serde_json's
/// sorted order) without building a tree of the answer first, which for a
/// large matrix costs more time and memory than the answer itself.
pub(crate) fn query_success(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        query_success_bytes(value),
    )
        .into_response()
}

fn query_success_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(answer_size_hint(value));
    out.extend_from_slice(b"{\"data\":{\"result\":");
    let kind = match value {
        Value::Scalar(p) => {
            write_sample(&mut out, p.t_ms, &value_text(p.value));
            "scalar"
        }
        Value::String { t_ms, value } => {
            write_sample(&mut out, *t_ms, value);
            "string"
        }
        Value::Vector(samples) => {
            write_list(&mut out, samples, |out, s| {
                out.extend_from_slice(b"{\"metric\":");
                write_labels(out, &s.labels);
                out.extend_from_slice(b",\"value\":");
                write_point(out, &s.point);
                out.push(b'}');
            });
            "vector"
        }
        Value::Matrix(series) => {
            write_list(&mut out, series, |out, s| {
                out.extend_from_slice(b"{\"metric\":");
                write_labels(out, &s.labels);
                out.extend_from_slice(b",\"values\":");
                write_list(out, &s.points, write_point);
                out.push(b'}');
            });
            "matrix"
        }
    };
    out.extend_from_slice(b",\"resultType\":");
    write_str(&mut out, kind);
    out.extend_from_slice(b"},\"status\":\"success\"}");
    out
}

/// Roughly the answer's length, so that its buffer rarely grows.
fn answer_size_hint(value: &Value) -> usize {
    const PER_POINT: usize = 32;
    const PER_SERIES: usize = 128;
    match value {
        Value::Scalar(_) | Value::String { .. } => 128,
        Value::Vector(samples) => 64 + samples.len() * (PER_SERIES + PER_POINT),
        Value::Matrix(series) => {
            64 + series
                .iter()
                .map(|s| PER_SERIES + s.points.len() * PER_POINT)
                .sum::<usize>()
        }
    }
}

/// `items` as a JSON array, each written by `write`.
fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// A label set as a JSON object with its names in sorted order, as a
/// `serde_json::Map` writes them (the last value of a repeated name).
fn write_labels(out: &mut Vec<u8>, labels: &[Label]) {
    let pairs = labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
    if labels.windows(2).all(|w| w[0].name < w[1].name) {
        // The engine's label sets are sorted: written as they are.
        write_pairs(out, pairs);
    } else {
        let sorted: std::collections::BTreeMap<&str, &str> = pairs.collect();
        write_pairs(out, sorted.into_iter());
    }
}

fn write_pairs<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_str(out, value);
    }
    out.push(b'}');
}

/// `[unix_seconds, "value"]` as `point` gives it, the value written in
/// place rather than through a `String` per point.
fn write_point(out: &mut Vec<u8>, p: &Point) {
    write_time(out, p.t_ms);
    out.extend_from_slice(b",\"");
    if p.value.is_finite() {
        // `value_text`'s form; a number's digits, sign and point need no
        // escaping.
        let written = write!(out, "{}", p.value);
        debug_assert!(written.is_ok());
    } else {
        out.extend_from_slice(value_text(p.value).as_bytes());
    }
    out.extend_from_slice(b"\"]");
}

/// `[unix_seconds, "value"]` as `sample` gives it.
fn write_sample(out: &mut Vec<u8>, t_ms: i64, value: &str) {
    write_time(out, t_ms);
    out.push(b',');
    write_str(out, value);
    out.push(b']');
}

/// The opening bracket and the time of a sample, as `sample` writes it.
fn write_time(out: &mut Vec<u8>, t_ms: i64) {
    out.push(b'[');
    if t_ms % 1000 == 0 {
        write_leaf(out, &(t_ms / 1000));
    } else {
        write_leaf(out, &(t_ms as f64 / 1000.0));
    }
}

/// A string with serde_json's escaping.
fn write_str(out: &mut Vec<u8>, text: &str) {
    write_leaf(out, text);
}

/// One leaf value as serde_json writes it; writing into a `Vec` cannot
/// fail, and the types written here always serialize.
fn write_leaf<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, leaf: &T) {
    let written = serde_json::to_writer(&mut *out, leaf);
    debug_assert!(written.is_ok());
}

/// A query's result as `{"resultType": ..., "result": ...}`.
pub(crate) fn query_data(value: &Value) -> Json {
    let (kind, result) = match value {
        Value::Scalar(p) => ("scalar", sample(p.t_ms, &value_text(p.value))),
        Value::String { t_ms, value } => ("string", sample(*t_ms, value)),
        Value::Vector(samples) => (
            "vector",
            samples
                .iter()
                .map(|s| json!({"metric": labels(&s.labels), "value": point(&s.point)}))
                .collect(),
        ),
        Value::Matrix(series) => (
            "matrix",
            series
                .iter()
                .map(|s| {
                    let values: Vec<Json> = s.points.iter().map(point).collect();
                    json!({"metric": labels(&s.labels), "values": values})
                })
                .collect(),
        ),
    };
    json!({"resultType": kind, "result": result})
}

/// A label set as a JSON object.
pub(crate) fn labels(labels: &[Label]) -> Json {
    let map: Map<String, Json> = labels
        .iter()
        .map(|l| (l.name.clone(), Json::String(l.value.clone())))
        .collect();
    Json::Object(map)
}

fn point(p: &Point) -> Json {
    sample(p.t_ms, &value_text(p.value))
}

/// `[unix_seconds, "value"]`: whole seconds as integers, as Prometheus
/// writes them.
fn sample(t_ms: i64, value: &str) -> Json {
    let seconds = if t_ms % 1000 == 0 {
        Json::from(t_ms / 1000)
    } else {
        Json::from(t_ms as f64 / 1000.0)
    };
    json!([seconds, value])
}

/// A sample value as Prometheus writes it (Go's `FormatFloat(v, 'f', -1,
/// 64)`: the shortest decimal that reads back the same, no exponent).
pub(crate) fn value_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's `Display` is the shortest round-trip form, never with an
        // exponent: Go's 'f', -1.
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_promql::{Sample, Series};

    #[test]
    fn values_and_times_are_written_as_prometheus_writes_them() {
        let cases = [
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1000000000000000000000"),
            (-0.0, "-0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (2.0, "2"),
        ];
        for (v, text) in cases {
            assert_eq!(value_text(v), text);
        }
        assert_eq!(sample(1_500, "1"), json!([1.5, "1"]));
        assert_eq!(sample(2_000, "1").to_string(), "[2,\"1\"]");
    }

    #[test]
    fn each_result_type_has_its_shape() {
        let at = Point {
            t_ms: 1_000,
            value: 1.0,
        };
        let l = vec![Label::new("__name__", "up"), Label::new("host", "a")];
        let scalar = query_data(&Value::Scalar(at));
        assert_eq!(scalar, json!({"resultType": "scalar", "result": [1, "1"]}));
        let vector = query_data(&Value::Vector(vec![Sample {
            labels: l.clone(),
            point: at,
        }]));
        assert_eq!(
            vector,
            json!({"resultType": "vector", "result": [{"metric": {"__name__": "up", "host": "a"}, "value": [1, "1"]}]})
        );
        let matrix = query_data(&Value::Matrix(vec![Series {
            labels: l,
            points: vec![at, at],
        }]));
        assert_eq!(matrix["result"][0]["values"], json!([[1, "1"], [1, "1"]]));
        let string = query_data(&Value::String {
            t_ms: 1_000,
            value: "x".into(),
        });
        assert_eq!(string, json!({"resultType": "string", "result": [1, "x"]}));
    }

    /// The answer as the tree would have written it.
    fn through_tree(value: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"status": "success", "data": query_data(value)})).unwrap()
    }

    #[test]
    fn written_answers_are_the_trees_bytes() {
        let odd = vec![
            Label::new("__name__", "up"),
            Label::new("path", "C:\\dir \"quoted\"\n\t\u{1}é/∞"),
            Label::new("zone", ""),
        ];
        // Out of order with a repeated name: the tree sorts them and keeps
        // the last value.
        let unsorted = vec![
            Label::new("z", "1"),
            Label::new("a", "2"),
            Label::new("z", "3"),
        ];
        let values = [
            0.1 + 0.2,
            1e21,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            2.0,
            1e-7,
            -123.456,
        ];
        let points: Vec<Point> = values
            .iter()
            .zip([
                0,
                1_500,
                -2_250,
                1_796_518_080_000,
                1,
                -1_000,
                999,
                60_000,
                7,
            ])
            .map(|(&value, t_ms)| Point { t_ms, value })
            .collect();
        let mut answers = vec![
            Value::String {
                t_ms: 1_001,
                value: "a \"b\" \\ c\u{7f}\u{1f}".into(),
            },
            Value::Vector(Vec::new()),
            Value::Matrix(Vec::new()),
            Value::Matrix(vec![
                Series {
                    labels: odd.clone(),
                    points: points.clone(),
                },
                Series {
                    labels: unsorted.clone(),
                    points: Vec::new(),
                },
                Series {
                    labels: Vec::new(),
                    points: points[..1].to_vec(),
                },
            ]),
            Value::Vector(
                points
                    .iter()
                    .zip([odd, unsorted, Vec::new()].into_iter().cycle())
                    .map(|(&point, labels)| Sample { labels, point })
                    .collect(),
            ),
        ];
        answers.extend(points.iter().map(|&p| Value::Scalar(p)));
        for value in &answers {
            let written = query_success_bytes(value);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(through_tree(value)).unwrap(),
                "{value:?}"
            );
        }
    }
}
