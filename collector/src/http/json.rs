//! Prometheus' JSON shapes: `{"status":"success","data":...}`, query
//! results by type, samples as `[unix_seconds, "value"]`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hostwatch_promql::Value;
use hostwatch_tsdb::{Label, Point};
use serde_json::{Map, Value as Json, json};

/// `body` as a JSON response with `status`.
pub(crate) fn respond(status: StatusCode, body: &Json) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A successful answer carrying `data`.
pub(crate) fn success(data: Json) -> Response {
    respond(StatusCode::OK, &json!({"status": "success", "data": data}))
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
}
