//! Metric metadata, alerts and rules for Grafana: `/api/v1/metadata` from
//! the metric reference (docs/metrics.md, read at build time, so the API
//! and the documentation cannot disagree), `/api/v1/alerts` and
//! `/api/v1/rules` from the alerting engine, in Prometheus' shapes.

use hostwatch_alerting::config::Rule;
use hostwatch_alerting::{Alert, Phase};
use serde_json::{Map, Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The metric reference: its table's rows name metrics in backquotes in
/// the first column, and describe their unit in the third.
const METRICS_MD: &str = include_str!("../../../docs/metrics.md");

/// One metric of the reference.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Metadata {
    pub(crate) name: String,
    /// `counter` (a `_total` name) or `gauge`.
    pub(crate) kind: &'static str,
    /// The reference's description of its unit.
    pub(crate) help: String,
    /// `bytes`, `seconds` or `ratio` from the name's suffix; empty otherwise.
    pub(crate) unit: &'static str,
}

/// Every metric of the reference, in its order.
pub(crate) fn metrics() -> Vec<Metadata> {
    let mut out = Vec::new();
    for line in METRICS_MD.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| names | labels | unit |" splits into 5 cells, the outer empty.
        let [_, names, _, help, _] = cells[..] else {
            continue;
        };
        for name in names.split('`').skip(1).step_by(2) {
            if !name.starts_with("host") {
                continue;
            }
            out.push(Metadata {
                name: name.to_owned(),
                kind: if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                },
                help: help.to_owned(),
                unit: unit(name),
            });
        }
    }
    out
}

/// The unit a metric's name ends with (before `_total`), in Prometheus'
/// base units.
fn unit(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    ["bytes", "seconds", "ratio"]
        .into_iter()
        .find(|u| base.ends_with(&format!("_{u}")))
        .unwrap_or("")
}

/// `/api/v1/metadata`'s data: metric name to its metadata, at most
/// `limit` metrics (0: all), only `metric` when given.
pub(crate) fn metadata_data(metric: Option<&str>, limit: usize) -> Json {
    let mut data = Map::new();
    for m in metrics() {
        if metric.is_some_and(|wanted| wanted != m.name) || (limit > 0 && data.len() >= limit) {
            continue;
        }
        let entry = json!([{"type": m.kind, "help": m.help, "unit": m.unit}]);
        data.insert(m.name, entry);
    }
    Json::Object(data)
}

/// Go's zero time, which Prometheus reports for what never happened.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// An alert and the ids of the silences muting it now.
pub(crate) struct Silenced<'a> {
    pub(crate) alert: &'a Alert,
    pub(crate) by: &'a [String],
}

/// `alerts` paired with the silences muting each (`silenced_by`, in the
/// same order, as `Alerting::silenced` gives them).
pub(crate) fn silenced<'a>(
    alerts: &'a [Alert],
    silenced_by: &'a [Vec<String>],
) -> Vec<Silenced<'a>> {
    alerts
        .iter()
        .zip(silenced_by)
        .map(|(alert, by)| Silenced { alert, by })
        .collect()
}

/// `/api/v1/alerts`' data: the pending and firing alerts.
pub(crate) fn alerts_data(alerts: &[Silenced<'_>]) -> Json {
    let alerts: Vec<Json> = alerts.iter().filter_map(alert).collect();
    json!({ "alerts": alerts })
}

/// A pending or firing alert in Prometheus' shape, and, as Alertmanager
/// names it, `silencedBy`: the ids of the silences muting it (Prometheus
/// clients ignore the field); `None` for an inactive or resolved alert.
fn alert(s: &Silenced<'_>) -> Option<Json> {
    let a = s.alert;
    let state = match a.phase() {
        Phase::Pending => "pending",
        Phase::Firing => "firing",
        Phase::Inactive | Phase::Resolved => return None,
    };
    Some(json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": state,
        "activeAt": rfc3339(a.machine.active_since_ms),
        "value": go_exponent(a.value),
        "silencedBy": s.by,
    }))
}

/// `/api/v1/rules`' data: the alert rules in force, as one group, each
/// with its pending and firing alerts; `query` is the rule on one line.
pub(crate) fn rules_data(rules: &[Rule], alerts: &[Silenced<'_>], file: &str) -> Json {
    let rules: Vec<Json> = rules
        .iter()
        .map(|rule| {
            let mine: Vec<Json> = alerts
                .iter()
                .filter(|s| s.alert.rule == rule.name)
                .filter_map(alert)
                .collect();
            let state = ["firing", "pending"]
                .into_iter()
                .find(|s| mine.iter().any(|a| a["state"] == *s))
                .unwrap_or("inactive");
            json!({
                "state": state,
                "name": rule.name,
                "query": rule.source.kind.to_string(),
                "duration": rule.timing.for_ms as f64 / 1000.0,
                "labels": rule.labels,
                "annotations": rule.source.annotations,
                "alerts": mine,
                "health": "ok",
                "evaluationTime": 0,
                "lastEvaluation": NEVER,
                "type": "alerting",
            })
        })
        .collect();
    json!({"groups": [{
        "name": "hostwatch",
        "file": file,
        "rules": rules,
        "interval": 0,
        "limit": 0,
        "evaluationTime": 0,
        "lastEvaluation": NEVER,
    }]})
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// An alert's value as Prometheus writes it (Go's `FormatFloat(v, 'e',
/// -1, 64)`: `1e+00`, `2.5e-01`).
fn go_exponent(value: f64) -> String {
    if !value.is_finite() {
        return super::json::value_text(value);
    }
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_gives_each_metric_a_kind_unit_and_help() {
        let metrics = metrics();
        let find = |name: &str| metrics.iter().find(|m| m.name == name).unwrap().clone();
        assert!(metrics.len() > 40, "{}", metrics.len());
        let cpu = find("host_cpu_utilization_ratio");
        assert_eq!((cpu.kind, cpu.unit), ("gauge", "ratio"));
        assert!(cpu.help.contains("busy"), "{cpu:?}");
        let rx = find("host_network_receive_bytes_total");
        assert_eq!((rx.kind, rx.unit), ("counter", "bytes"));
        let load = find("host_load15");
        assert_eq!((load.kind, load.unit), ("gauge", ""));
        assert_eq!(find("hostwatch_agent_cpu_seconds_total").unit, "seconds");
        // Names only, once each; labels (`cpu`, `device`) are not metrics.
        let mut names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert!(names.iter().all(|n| n.starts_with("host")));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), metrics.len());
    }

    #[test]
    fn metadata_is_filtered_and_limited() {
        let one = metadata_data(Some("host_load1"), 0);
        assert_eq!(
            one,
            json!({"host_load1": [{"type": "gauge", "help": "runnable tasks", "unit": ""}]})
        );
        assert_eq!(metadata_data(None, 2).as_object().unwrap().len(), 2);
        assert_eq!(metadata_data(Some("nope"), 0), json!({}));
    }

    /// An alert of `rule` on host web1 in `phase`, active since 1 s.
    fn an_alert(rule: &str, phase: &str) -> Alert {
        serde_json::from_value(json!({
            "fingerprint": "0000000000000001",
            "rule": rule,
            "labels": {"alertname": rule, "host": "web1"},
            "annotations": {"summary": "busy"},
            "machine": {"phase": phase, "active_since_ms": 1_000, "fired_ms": null,
                "clearing_since_ms": null, "resolved_ms": null, "flaps": 0},
            "value": 0.95,
            "evaluated_ms": 2_000,
            "changed_ms": 2_000,
            "announce_resolved_ms": null,
        }))
        .unwrap()
    }

    #[test]
    fn alerts_are_listed_pending_and_firing_in_prometheus_shape() {
        let alert = |phase: &str| an_alert("cpu", phase);
        let alerts = [alert("firing"), alert("pending"), alert("resolved")];
        let by = [vec!["5eed".to_owned()], vec![], vec![]];
        let data = alerts_data(&silenced(&alerts, &by));
        assert_eq!(
            data["alerts"][0],
            json!({
                "labels": {"alertname": "cpu", "host": "web1"},
                "annotations": {"summary": "busy"},
                "state": "firing",
                "activeAt": "1970-01-01T00:00:01Z",
                "value": "9.5e-01",
                "silencedBy": ["5eed"],
            })
        );
        assert_eq!(data["alerts"][1]["state"], "pending");
        assert_eq!(data["alerts"][1]["silencedBy"], json!([]));
        assert_eq!(data["alerts"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rules_carry_their_query_duration_and_alerts() {
        let config: crate::config::CollectorConfig = {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("collector.toml");
            std::fs::write(
                &path,
                "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
            )
            .unwrap();
            crate::config::CollectorConfig::load(&path).unwrap()
        };
        let rules = config.alert_rules().unwrap().rules;
        let firing = [an_alert("cpu_saturated", "firing")];
        let by = [vec!["5eed".to_owned()]];
        let data = rules_data(&rules, &silenced(&firing, &by), "collector.toml");
        let group = &data["groups"][0];
        assert_eq!(group["rules"].as_array().unwrap().len(), rules.len());
        let rule = |name: &str| {
            let rules = group["rules"].as_array().unwrap();
            rules.iter().find(|r| r["name"] == name).unwrap().clone()
        };
        let cpu = rule("cpu_saturated");
        assert_eq!(cpu["state"], "firing");
        assert_eq!(cpu["type"], "alerting");
        assert_eq!(cpu["alerts"][0]["labels"]["host"], "web1");
        assert_eq!(cpu["alerts"][0]["silencedBy"], json!(["5eed"]));
        let query = cpu["query"].as_str().unwrap();
        assert!(query.contains("host_cpu_utilization_ratio"), "{query}");
        assert!(cpu["duration"].as_f64().unwrap() > 0.0, "{cpu}");
        let other = rule("host_down");
        assert_eq!(other["state"], "inactive");
    }

    #[test]
    fn alert_values_are_written_as_go_writes_them() {
        assert_eq!(go_exponent(1.0), "1e+00");
        assert_eq!(go_exponent(0.25), "2.5e-01");
        assert_eq!(go_exponent(12345.0), "1.2345e+04");
        assert_eq!(go_exponent(f64::NAN), "NaN");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
