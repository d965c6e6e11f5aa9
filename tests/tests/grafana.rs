//! Grafana's way in, with real processes: a quick start's collector (its
//! HTTPS API on) and agent, run as programs, and clients that send what
//! Grafana's Prometheus data source (v9 and v10) sends.
//!
//! - Every panel query and every variable query of the dashboards in
//!   `deploy/grafana/dashboards/`, with Grafana's variables substituted as
//!   Grafana does, must answer `success` with data. A panel whose series
//!   this machine cannot produce is named, with the reason, and must then
//!   be empty (never skipped silently).
//! - Grafana's request sequence (the data source's health check, its
//!   build-info probe, the metric and label browsers, a variable's values,
//!   a panel's `query_range` as a form POST) over TLS 1.3, HTTP/1.1 and
//!   HTTP/2, each answer in the shape Grafana parses.
//!
//! Grafana's definitions (its Go backend, `pkg/promlib` and the plugin
//! SDK's `gtime`, and its front end's `rangeutil`) are in [`grafana`].
//!
//! The dashboards are read with a viewer certificate (the data source's
//! mTLS variant), the request sequence with the quick start's viewer token
//! (the bearer variant) over both HTTP versions, then with the certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_pki::TlsFiles;
use hostwatch_tests::quickstart::{Programs, QuickStart};
use hostwatch_tests::{client_without_certificate, now_ms};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wait for the agent's first samples.
const WAIT: Duration = Duration::from_secs(60);
/// The agent samples this often in these tests (the quick start: 2 s).
const AGENT_INTERVAL: &str = "1s";
/// Samples of each series before the queries run. Grafana aligns a range
/// query's end down to a multiple of its step (10 s for the dashboards'
/// hour), so a new host shows only once its samples are older than that;
/// rates then need two samples within `$__rate_interval` before that end.
const SAMPLES: usize = 16;

/// An alert rule that fires for every host with data, so that the alert
/// list panel has an alert to show.
const FIRING_RULE: &str = r#"
[[alerting.rules]]
name = "grafana_test_has_uptime"
kind = "threshold"
metric = "host_uptime_seconds"
aggregate = "last"
window = "1s"
op = ">"
raise = 0
for = "0s"
labels = { severity = "info" }
"#;

fn programs() -> Programs<'static> {
    Programs {
        hostwatch: Path::new(env!("CARGO_BIN_EXE_e2e-hostwatch")),
        collector: Path::new(env!("CARGO_BIN_EXE_e2e-collector")),
        agent: Path::new(env!("CARGO_BIN_EXE_e2e-agent")),
    }
}

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

/// The provisioned data source's `jsonData` value of `key` (the mTLS
/// entry: the file's first occurrence).
fn datasource_setting(key: &str) -> String {
    let path = grafana_dir().join("provisioning/datasources/hostwatch.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the data source file"))
        .trim()
        .to_owned()
}

/// The scrape interval Grafana is told (`timeInterval`), in milliseconds.
fn scrape_interval_ms() -> i64 {
    let text = datasource_setting("timeInterval");
    let seconds: i64 = text.strip_suffix('s').unwrap().parse().unwrap();
    seconds * 1000
}

/// How Grafana's HTTP client speaks: HTTP/2 when the server offers it
/// (Go's transport), or HTTP/1.1.
#[derive(Clone, Copy, Debug)]
enum Version {
    Http1,
    Http2,
}

/// How the data source authenticates: its two variants.
enum Credential<'a> {
    /// `tlsAuth`: a client certificate.
    Certificate(&'a TlsFiles),
    /// `httpHeaderName1: Authorization`: a bearer token, over TLS that
    /// trusts the CA (`tlsAuthWithCACert`) and presents no certificate.
    Token { ca: &'a Path, token: &'a str },
}

/// A client of the collector's API sending what Grafana's backend sends.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(credential: Credential<'_>, http: SocketAddr, version: Version) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("Grafana/10.4.1"));
        // Go's transport asks for gzip by itself; the answer may be plain.
        headers.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let mut tls = match credential {
            Credential::Certificate(files) => hostwatch_pki::client_config(files)
                .unwrap()
                .0
                .as_ref()
                .clone(),
            Credential::Token { ca, token } => {
                let bearer = format!("Bearer {}", token.trim());
                headers.insert("authorization", bearer.parse().unwrap());
                client_without_certificate(ca)
            }
        };
        tls.alpn_protocols = vec![match version {
            Version::Http1 => b"http/1.1".to_vec(),
            Version::Http2 => b"h2".to_vec(),
        }];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .resolve("localhost", http)
            .default_headers(headers)
            .build()
            .unwrap();
        Api {
            client,
            base: format!("https://localhost:{}", http.port()),
        }
    }

    /// A form-encoded POST, as Grafana sends queries with `httpMethod: POST`.
    async fn post(&self, path: &str, params: &[(&str, &str)]) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(params));
        Answer::of(path, request).await
    }

    /// A GET with the parameters in the query string, as Grafana sends the
    /// endpoints that only take GET (label values, metadata, buildinfo).
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Answer {
        let url = format!("{}{path}?{}", self.base, form(params));
        Answer::of(path, self.client.get(url)).await
    }
}

/// A response: its status, HTTP version and JSON body.
struct Answer {
    status: u16,
    version: reqwest::Version,
    body: Value,
}

impl Answer {
    async fn of(path: &str, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let (status, version) = (response.status().as_u16(), response.version());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
        Answer {
            status,
            version,
            body,
        }
    }

    /// `data` of a successful answer; panics naming `what` otherwise.
    fn data(&self, what: &str) -> &Value {
        assert_eq!(self.status, 200, "{what}: {}", self.body);
        assert_eq!(self.body["status"], "success", "{what}: {}", self.body);
        assert!(self.body.get("error").is_none(), "{what}: {}", self.body);
        &self.body["data"]
    }
}

/// `params` form-encoded (`application/x-www-form-urlencoded`).
fn form(params: &[(&str, &str)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Grafana's interval and time arithmetic.
mod grafana {
    /// `gtime.RoundInterval`: a raw interval (ns) to a round one (ms).
    pub(super) fn round_interval_ms(raw_ns: i64) -> i64 {
        // (upper bound of the raw interval in ms, rounded interval in ms)
        const TABLE: [(i64, i64); 30] = [
            (10, 1),
            (15, 10),
            (35, 20),
            (75, 50),
            (150, 100),
            (350, 200),
            (750, 500),
            (1_500, 1_000),
            (3_500, 2_000),
            (7_500, 5_000),
            (12_500, 10_000),
            (17_500, 15_000),
            (25_000, 20_000),
            (45_000, 30_000),
            (90_000, 60_000),
            (210_000, 120_000),
            (450_000, 300_000),
            (750_000, 600_000),
            (1_050_000, 900_000),
            (1_500_000, 1_200_000),
            (2_700_000, 1_800_000),
            (5_400_000, 3_600_000),
            (9_000_000, 7_200_000),
            (16_200_000, 10_800_000),
            (32_400_000, 21_600_000),
            (86_400_000, 43_200_000),
            (172_800_000, 86_400_000),
            (604_800_000, 86_400_000),
            (1_814_400_000, 604_800_000),
            (3_628_800_000, 2_592_000_000),
        ];
        TABLE
            .iter()
            .find(|(bound, _)| raw_ns <= bound * 1_000_000)
            .map_or(31_536_000_000, |(_, rounded)| *rounded)
    }

    /// `gtime.FormatInterval`: `10s`, `1m`, `2h` (whole units, truncated).
    pub(super) fn format_interval(ms: i64) -> String {
        const UNITS: [(i64, &str); 6] = [
            (365 * 86_400_000, "y"),
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
            (1, "ms"),
        ];
        UNITS
            .iter()
            .find(|(unit, _)| ms >= *unit)
            .map_or("1ms".to_owned(), |(unit, name)| {
                format!("{}{name}", ms / unit)
            })
    }

    /// Go's `time.Duration.String()` for whole milliseconds: `40s`, `1m0s`,
    /// `1h0m0s`, `1.5s`, `500ms`.
    pub(super) fn go_duration(ms: i64) -> String {
        if ms == 0 {
            return "0s".to_owned();
        }
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let (hours, minutes, rest_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
        let seconds = seconds_text(rest_ms);
        match (hours, minutes) {
            (0, 0) => format!("{seconds}s"),
            (0, m) => format!("{m}m{seconds}s"),
            (h, m) => format!("{h}h{m}m{seconds}s"),
        }
    }

    /// Milliseconds as Go's `strconv.FormatFloat(seconds, 'f', -1, 64)`
    /// writes the seconds: `1733443200`, `1733443200.5`.
    pub(super) fn seconds_text(ms: i64) -> String {
        let (s, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
        if frac == 0 {
            return s.to_string();
        }
        let digits = format!("{frac:03}");
        format!("{s}.{}", digits.trim_end_matches('0'))
    }

    /// What one panel query is sent with (ms): the front end's interval
    /// (`rangeutil.calculateInterval`, at least the data source's
    /// `timeInterval`), the backend's step (`calculatePrometheusInterval`:
    /// that interval or range / max data points rounded, at least range /
    /// 11,000 rounded), and `$__rate_interval` (`calculateRateInterval`:
    /// the larger of interval + scrape interval and 4 scrape intervals).
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Timing {
        pub(super) from_ms: i64,
        pub(super) to_ms: i64,
        pub(super) interval_ms: i64,
        pub(super) step_ms: i64,
        pub(super) rate_interval_ms: i64,
    }

    impl Timing {
        pub(super) fn new(from_ms: i64, to_ms: i64, max_data_points: i64, scrape_ms: i64) -> Self {
            let range_ns = (to_ms - from_ms) * 1_000_000;
            let per_point_ns = range_ns / max_data_points;
            let interval_ms = round_interval_ms(per_point_ns).max(scrape_ms);
            let calculated = if per_point_ns < interval_ms * 1_000_000 {
                interval_ms
            } else {
                round_interval_ms(per_point_ns)
            };
            let safe = round_interval_ms(range_ns / 11_000);
            Timing {
                from_ms,
                to_ms,
                interval_ms,
                step_ms: calculated.max(safe),
                rate_interval_ms: (interval_ms + scrape_ms).max(4 * scrape_ms),
            }
        }

        /// `AlignTimeRange`: a time rounded down to a multiple of the step
        /// (UTC, no offset).
        pub(super) fn align(&self, t_ms: i64) -> i64 {
            t_ms.div_euclid(self.step_ms) * self.step_ms
        }

        /// `expr` with Grafana's built-in variables replaced as its backend
        /// does (`interpolateVariables`), in its order.
        pub(super) fn interpolate(&self, expr: &str) -> String {
            let range_ms = self.to_ms - self.from_ms;
            let range_s = (range_ms as f64 / 1000.0).round() as i64;
            let step = self.step_ms;
            let rate = self.rate_interval_ms;
            let mut out = expr.to_owned();
            for (name, value) in [
                ("__interval_ms", step.to_string()),
                ("__interval", format_interval(step)),
                ("__range_ms", range_ms.to_string()),
                ("__range_s", range_s.to_string()),
                ("__range", format!("{range_s}s")),
                ("__rate_interval_ms", rate.to_string()),
                ("__rate_interval", go_duration(rate)),
            ] {
                out = out.replace(&format!("${name}"), &value);
                out = out.replace(&format!("${{{name}}}"), &value);
            }
            out
        }
    }

    /// A template variable's value in an expression, as the front end's
    /// `prometheusRegularEscape` writes a single value.
    pub(super) fn regular_escape(value: &str) -> String {
        value.replace('\\', "\\\\").replace('\'', "\\\\'")
    }

    /// `getPrometheusTime`: whole seconds, rounded up; the times of the
    /// metadata calls (label names and values, series) without the data
    /// source's client-side cache, which would snap them to minutes.
    pub(super) fn prometheus_time(ms: i64) -> String {
        (ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0)).to_string()
    }
}

#[test]
fn grafana_arithmetic_matches_its_definitions() {
    use grafana::*;
    assert_eq!(round_interval_ms(4_500_000_000), 5_000);
    assert_eq!(round_interval_ms(327_000_000), 200);
    assert_eq!(round_interval_ms(60_000_000_000), 60_000);
    assert_eq!(format_interval(10_000), "10s");
    assert_eq!(format_interval(90_000), "1m");
    assert_eq!(go_duration(40_000), "40s");
    assert_eq!(go_duration(60_000), "1m0s");
    assert_eq!(go_duration(3_690_500), "1h1m30.5s");
    assert_eq!(seconds_text(1_733_443_200_050), "1733443200.05");
    assert_eq!(prometheus_time(1_733_443_200_001), "1733443201");
    // A 1 h dashboard in a 960-pixel panel, scrape interval 10 s: the
    // interval is 3.75 s rounded to 5 s, raised to 10 s; $__rate_interval
    // is 4 scrape intervals.
    let t = Timing::new(0, 3_600_000, 960, 10_000);
    assert_eq!(
        (t.interval_ms, t.step_ms, t.rate_interval_ms),
        (10_000, 10_000, 40_000)
    );
    assert_eq!(
        t.interpolate(
            "rate(x[$__rate_interval]) + y[$__interval] + z[${__range}] + $__interval_ms"
        ),
        "rate(x[40s]) + y[10s] + z[3600s] + 10000"
    );
    // A day at 500 points: 172.8 s rounded to 2 m; $__rate_interval 2m10s.
    let t = Timing::new(0, 86_400_000, 500, 10_000);
    assert_eq!((t.step_ms, t.rate_interval_ms), (120_000, 130_000));
    assert_eq!(go_duration(t.rate_interval_ms), "2m10s");
    assert_eq!(t.align(1_234_567), 1_200_000);
}

/// One dashboard as Grafana loads it.
struct Dashboard {
    file: &'static str,
    json: Value,
}

impl Dashboard {
    fn load(file: &'static str) -> Self {
        let path = grafana_dir().join("dashboards").join(file);
        let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Dashboard { file, json }
    }

    /// Every panel, rows' own panels included, rows left out.
    fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for panel in self.json["panels"].as_array().unwrap() {
            if panel["type"] == "row" {
                out.extend(panel["panels"].as_array().into_iter().flatten());
            } else {
                out.push(panel);
            }
        }
        out
    }

    /// The dashboard's time range, `now-1h` to `now` as shipped, in ms.
    fn range_ms(&self, now_ms: i64) -> (i64, i64) {
        let time = &self.json["time"];
        assert_eq!(time["to"], "now", "{}", self.file);
        let hours: i64 = time["from"]
            .as_str()
            .and_then(|f| f.strip_prefix("now-")?.strip_suffix('h')?.parse().ok())
            .unwrap_or_else(|| panic!("{}: time.from is not now-<N>h", self.file));
        (now_ms - hours * 3_600_000, now_ms)
    }
}

/// Why a panel query cannot have data on this machine, if it cannot.
fn unavailable_here(expr: &str) -> Option<&'static str> {
    (expr.contains("host_pressure_") && !Path::new("/proc/pressure").exists())
        .then_some("this kernel has no pressure stall information (no /proc/pressure)")
}

/// A panel's width in data points, as Grafana's front end sends
/// `maxDataPoints`: the panel's width in pixels, here on a 1920-pixel
/// dashboard (24 grid columns).
fn max_data_points(panel: &Value) -> i64 {
    panel["maxDataPoints"]
        .as_i64()
        .unwrap_or_else(|| panel["gridPos"]["w"].as_i64().unwrap() * 1920 / 24)
}

/// Runs every target of `panel` as Grafana does and checks each answer;
/// returns how many queries it ran.
async fn check_panel(api: &Api, dashboard: &Dashboard, panel: &Value, host: &str) -> usize {
    let title = format!("{}: {}", dashboard.file, panel["title"]);
    assert_eq!(panel["datasource"]["uid"], "hostwatch", "{title}");
    if panel["type"] == "alertlist" {
        check_alert_list(api, &title, host).await;
        return 1;
    }
    let unit = &panel["fieldConfig"]["defaults"]["unit"];
    assert!(
        unit.as_str().is_some_and(|u| !u.is_empty()),
        "{title}: no unit"
    );
    let targets = panel["targets"].as_array().unwrap();
    assert!(!targets.is_empty(), "{title}: no query");
    let (from_ms, to_ms) = dashboard.range_ms(now_ms());
    let timing = grafana::Timing::new(from_ms, to_ms, max_data_points(panel), scrape_interval_ms());
    for target in targets {
        let raw = target["expr"].as_str().unwrap();
        // The front end substitutes dashboard variables, the backend its
        // built-in ones.
        let expr = timing.interpolate(&raw.replace("$host", &grafana::regular_escape(host)));
        let what = format!("{title} {}: {expr}", target["refId"]);
        let answer = if target["instant"] == true {
            let time = grafana::seconds_text(to_ms);
            api.post("/api/v1/query", &[("query", &expr), ("time", &time)])
                .await
        } else {
            let start = grafana::seconds_text(timing.align(from_ms));
            let end = grafana::seconds_text(timing.align(to_ms));
            let step = grafana::seconds_text(timing.step_ms);
            let params = [
                ("query", expr.as_str()),
                ("start", &start),
                ("end", &end),
                ("step", &step),
            ];
            api.post("/api/v1/query_range", &params).await
        };
        let data = answer.data(&what);
        let kind = if target["instant"] == true {
            "vector"
        } else {
            "matrix"
        };
        assert_eq!(data["resultType"], kind, "{what}: {data}");
        let result = data["result"].as_array().unwrap();
        match unavailable_here(raw) {
            None => assert!(!result.is_empty(), "{what}: no data"),
            Some(reason) => {
                println!("NOT PRODUCIBLE HERE: {what}: {reason}");
                assert!(result.is_empty(), "{what}: data although {reason}");
            }
        }
    }
    targets.len()
}

/// The alert list panel: Grafana reads the data source's rules (GET
/// `/api/v1/rules`) and shows their alerts; the test's rule fires for
/// `host`.
async fn check_alert_list(api: &Api, title: &str, host: &str) {
    let answer = api.get("/api/v1/rules", &[]).await;
    let groups = answer.data(title)["groups"].as_array().unwrap();
    let firing = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .flat_map(|r| r["alerts"].as_array().into_iter().flatten())
        .any(|a| a["state"] == "firing" && a["labels"]["host"] == host);
    assert!(firing, "{title}: no firing alert for {host}: {groups:?}");
}

/// A variable's values as Grafana 10 asks for them: `label_values(METRIC,
/// LABEL)` is `GET /api/v1/label/LABEL/values` with `match[]` and the
/// dashboard's range (Prometheus 2.24 and later; Grafana 9 asks
/// `/api/v1/series`, checked in the request sequence test).
async fn variable_values(api: &Api, dashboard: &Dashboard, variable: &Value) -> Vec<String> {
    let query = variable["query"]["query"]
        .as_str()
        .or(variable["query"].as_str())
        .unwrap();
    assert_eq!(variable["definition"], query);
    let (metric, label) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .and_then(|q| q.split_once(','))
        .unwrap_or_else(|| {
            panic!(
                "{}: {query}: not label_values(metric, label)",
                dashboard.file
            )
        });
    let (from_ms, to_ms) = dashboard.range_ms(now_ms());
    let start = grafana::prometheus_time(from_ms);
    let end = grafana::prometheus_time(to_ms);
    let path = format!("/api/v1/label/{}/values", label.trim());
    let params = [("match[]", metric.trim()), ("start", &start), ("end", &end)];
    let answer = api.get(&path, &params).await;
    let data = answer.data(&format!("{}: variable {query}", dashboard.file));
    data.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_and_variable_answers_with_data() {
    let programs = programs();
    let qs = QuickStart::start(&programs, AGENT_INTERVAL, FIRING_RULE);
    let viewer = qs.viewer(&programs, "grafana");
    qs.wait_for_samples("host_uptime_seconds", SAMPLES, WAIT)
        .await;
    let api = Api::new(Credential::Certificate(&viewer), qs.http, Version::Http2);

    let (mut queries, mut panels) = (0, 0);
    for file in ["fleet.json", "host.json"] {
        let dashboard = Dashboard::load(file);
        let mut host = qs.host.clone();
        for variable in dashboard.json["templating"]["list"].as_array().unwrap() {
            assert_eq!(variable["name"], "host", "{file}: an unknown variable");
            let values = variable_values(&api, &dashboard, variable).await;
            queries += 1;
            assert_eq!(values, [qs.host.as_str()], "{file}: $host's values");
            host = values[0].clone();
        }
        for panel in dashboard.panels() {
            queries += check_panel(&api, &dashboard, panel, &host).await;
            panels += 1;
        }
    }
    println!("dashboards: {panels} panels, {queries} queries answered");
    assert!(panels >= 20, "{panels} panels");
}

/// What Grafana's Prometheus data source sends, in the order it sends it,
/// and the shape of each answer it parses.
async fn request_sequence(api: &Api, host: &str, version: Version) {
    let expected = match version {
        Version::Http1 => reqwest::Version::HTTP_11,
        Version::Http2 => reqwest::Version::HTTP_2,
    };
    // "Save & test": the backend's health check, an instant `1+1` at the
    // end of the range 1 s .. 4 s, which must be a scalar.
    let answer = api
        .post("/api/v1/query", &[("query", "1+1"), ("time", "4")])
        .await;
    assert_eq!(answer.version, expected, "{version:?}");
    let data = answer.data("health check");
    assert_eq!(
        data,
        &serde_json::json!({"resultType": "scalar", "result": [4, "2"]})
    );
    // Its heuristics: buildinfo without `features` is Prometheus (not
    // Mimir), and the version is a release Grafana compares against.
    let answer = api.get("/api/v1/status/buildinfo", &[]).await;
    let data = answer.data("buildinfo");
    assert!(data.get("features").is_none(), "{data}");
    let version_text = data["version"].as_str().unwrap();
    let parts: Vec<u32> = version_text
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        parts.len() == 3 && parts[..2] >= [2, 24][..],
        "{version_text}"
    );

    let (from_ms, to_ms) = (now_ms() - 3_600_000, now_ms());
    editor_calls(api, host, from_ms, to_ms).await;
    panel_calls(api, host, from_ms, to_ms).await;
}

/// The query editor's calls: metric names, metadata, label names (with
/// the data source's method, POST), a metric's labels; and a variable's
/// values.
async fn editor_calls(api: &Api, host: &str, from_ms: i64, to_ms: i64) {
    let start = grafana::prometheus_time(from_ms);
    let end = grafana::prometheus_time(to_ms);
    let range = [("start", start.as_str()), ("end", end.as_str())];
    let answer = api.get("/api/v1/label/__name__/values", &range).await;
    let names = strings(answer.data("metric names"));
    for metric in [
        "host_uptime_seconds",
        "host_cpu_time_ratio",
        "hostwatch_agent_connected",
    ] {
        assert!(
            names.iter().any(|n| n == metric),
            "{metric} not in {names:?}"
        );
    }
    let answer = api.get("/api/v1/metadata", &[]).await;
    let data = answer.data("metadata");
    assert_eq!(data["host_uptime_seconds"][0]["type"], "gauge", "{data}");
    assert_eq!(data["host_forks_total"][0]["type"], "counter", "{data}");
    let answer = api.post("/api/v1/labels", &range).await;
    let labels = strings(answer.data("label names"));
    for label in ["__name__", "host", "mode", "mountpoint"] {
        assert!(
            labels.iter().any(|l| l == label),
            "{label} not in {labels:?}"
        );
    }
    let matched = [("match[]", "host_uptime_seconds"), range[0], range[1]];
    let answer = api.post("/api/v1/labels", &matched).await;
    assert_eq!(
        strings(answer.data("a metric's labels")),
        ["__name__", "host"]
    );

    // A variable `label_values(host_uptime_seconds, host)`: Grafana 10
    // asks the label's values, Grafana 9 the series.
    let answer = api.get("/api/v1/label/host/values", &matched).await;
    assert_eq!(strings(answer.data("label values")), [host]);
    let answer = api.post("/api/v1/series", &matched).await;
    assert_eq!(
        answer.data("series"),
        &serde_json::json!([{"__name__": "host_uptime_seconds", "host": host}])
    );
}

/// A panel's calls: query_range as a form POST, start and end aligned to
/// the step, an instant query at the range's end, and a query that fails.
async fn panel_calls(api: &Api, host: &str, from_ms: i64, to_ms: i64) {
    let timing = grafana::Timing::new(from_ms, to_ms, 960, scrape_interval_ms());
    let expr = timing.interpolate(&format!(
        "rate(host_context_switches_total{{host=\"{host}\"}}[$__rate_interval])"
    ));
    let (start_ms, end_ms) = (timing.align(from_ms), timing.align(to_ms));
    let params = [
        ("query", expr.as_str()),
        ("start", &grafana::seconds_text(start_ms)),
        ("end", &grafana::seconds_text(end_ms)),
        ("step", &grafana::seconds_text(timing.step_ms)),
    ];
    let answer = api.post("/api/v1/query_range", &params).await;
    let data = answer.data(&expr);
    assert_eq!(data["resultType"], "matrix");
    let series = data["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{data}");
    assert_eq!(series[0]["metric"], serde_json::json!({"host": host}));
    let points = series[0]["values"].as_array().unwrap();
    assert!(!points.is_empty(), "{data}");
    let mut previous = i64::MIN;
    for point in points {
        // Grafana reads [seconds, "value"]: a number, then a string
        // strconv.ParseFloat reads.
        let t_ms = (point[0].as_f64().unwrap() * 1000.0).round() as i64;
        let value: f64 = point[1].as_str().unwrap().parse().unwrap();
        assert!(value >= 0.0, "{point}");
        assert!(
            (start_ms..=end_ms).contains(&t_ms) && t_ms > previous,
            "{point}"
        );
        assert_eq!(
            (t_ms - start_ms) % timing.step_ms,
            0,
            "{point}: off the step"
        );
        previous = t_ms;
    }
    let time = grafana::seconds_text(to_ms);
    let expr = format!("host_uptime_seconds{{host=\"{host}\"}}");
    let answer = api
        .post("/api/v1/query", &[("query", &expr), ("time", &time)])
        .await;
    let data = answer.data(&expr);
    assert_eq!(data["resultType"], "vector");
    let sample = &data["result"][0];
    assert_eq!(
        sample["metric"]["__name__"], "host_uptime_seconds",
        "{data}"
    );
    assert_eq!(
        sample["value"][0].as_f64().unwrap(),
        time.parse::<f64>().unwrap()
    );
    assert!(sample["value"][1].as_str().unwrap().parse::<f64>().unwrap() > 0.0);

    // A query Grafana shows the error of: its type and message.
    let answer = api
        .post(
            "/api/v1/query_range",
            &[("query", "rate("), params[1], params[2], params[3]],
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["status"], "error");
    assert_eq!(answer.body["errorType"], "bad_data");
    assert!(answer.body["error"].as_str().is_some_and(|e| !e.is_empty()));
}

/// A JSON array of strings.
fn strings(data: &Value) -> Vec<String> {
    data.as_array()
        .unwrap_or_else(|| panic!("not an array: {data}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafanas_request_sequence_gets_the_answers_it_parses() {
    let programs = programs();
    let qs = QuickStart::start(&programs, AGENT_INTERVAL, "");
    let viewer = qs.viewer(&programs, "grafana");
    // The quick start's viewer token, as docs/grafana.md has Grafana use.
    let token = std::fs::read_to_string(qs.dir.join("grafana.token")).unwrap();
    let ca = qs.operator().ca;
    qs.wait_for_samples("host_uptime_seconds", SAMPLES, WAIT)
        .await;
    for version in [Version::Http1, Version::Http2] {
        let with_token = Credential::Token {
            ca: &ca,
            token: &token,
        };
        request_sequence(&Api::new(with_token, qs.http, version), &qs.host, version).await;
    }
    let with_certificate = Credential::Certificate(&viewer);
    let version = Version::Http2;
    request_sequence(
        &Api::new(with_certificate, qs.http, version),
        &qs.host,
        version,
    )
    .await;
}

/// The data source file's two variants (the second commented out with
/// `#~ `, as in deploy/collector.toml) agree on what the dashboards and
/// the collector need, and differ only in the credential.
#[test]
fn the_data_source_file_has_both_credentials_and_the_dashboards_link_up() {
    let path = grafana_dir().join("provisioning/datasources/hostwatch.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let (mtls, token): (Vec<&str>, Vec<&str>) = {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("# "))
            .collect();
        let token = lines.iter().filter_map(|l| l.strip_prefix("#~ ")).collect();
        let mtls = lines.into_iter().filter(|l| !l.starts_with('#')).collect();
        (mtls, token)
    };
    let setting = |entry: &[&str], key: &str| -> Option<String> {
        entry
            .iter()
            .find_map(|l| {
                l.trim()
                    .trim_start_matches("- ")
                    .strip_prefix(&format!("{key}:"))
            })
            .map(|v| v.trim().to_owned())
    };
    for entry in [&mtls, &token] {
        for (key, value) in [
            ("uid", "hostwatch"),
            ("type", "prometheus"),
            ("httpMethod", "POST"),
            ("prometheusType", "Prometheus"),
            ("prometheusVersion", "2.42.0"),
            ("tlsAuthWithCACert", "true"),
            ("url", "https://${HOSTWATCH_COLLECTOR}:9443"),
        ] {
            assert_eq!(
                setting(entry, key).as_deref(),
                Some(value),
                "{key} in {entry:?}"
            );
        }
        assert!(setting(entry, "tlsCACert").is_some_and(|v| v.contains("ca.pem")));
    }
    assert_eq!(setting(&mtls, "tlsAuth").as_deref(), Some("true"));
    assert!(setting(&mtls, "tlsClientCert").is_some() && setting(&mtls, "tlsClientKey").is_some());
    assert_eq!(setting(&token, "tlsAuth").as_deref(), Some("false"));
    assert_eq!(
        setting(&token, "httpHeaderName1").as_deref(),
        Some("Authorization")
    );
    assert_eq!(
        setting(&token, "httpHeaderValue1").as_deref(),
        Some("Bearer $HOSTWATCH_TOKEN")
    );
    assert_eq!(
        setting(&mtls, "timeInterval"),
        setting(&token, "timeInterval")
    );

    // Links between dashboards name a shipped dashboard's uid.
    let uids: Vec<String> = ["fleet.json", "host.json"]
        .iter()
        .map(|f| Dashboard::load(f).json["uid"].as_str().unwrap().to_owned())
        .collect();
    let fleet = std::fs::read_to_string(grafana_dir().join("dashboards/fleet.json")).unwrap();
    let links: Vec<&str> = fleet.split("\"/d/").skip(1).collect();
    assert!(!links.is_empty());
    for link in links {
        let uid = link.split('/').next().unwrap();
        assert!(
            uids.iter().any(|u| u == uid),
            "a link to {uid}, not one of {uids:?}"
        );
    }
}
