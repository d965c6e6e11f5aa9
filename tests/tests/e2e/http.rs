//! The HTTPS API: a real collector with `http_listen`, real TLS clients
//! (reqwest over rustls, with and without client certificates), HTTP/1.1
//! and HTTP/2, Prometheus' shapes and errors on stored data.

use super::tokens;
use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{Batch, Label, SeriesPoints, StorageStatsRequest};
use hostwatch_tests::*;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// A collector with its HTTPS API on a port of its own
/// ([`tokens::Collector`]), over a data directory of its own.
struct Collector {
    served: tokens::Collector,
    _data: tempfile::TempDir,
}

impl std::ops::Deref for Collector {
    type Target = tokens::Collector;
    fn deref(&self) -> &tokens::Collector {
        &self.served
    }
}

impl Collector {
    async fn start(pki: &TestPki, extra: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let served = tokens::Collector::start_with(pki, data.path(), extra).await;
        Collector {
            served,
            _data: data,
        }
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

/// How a client speaks.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Version {
    Http1,
    Http2,
}

/// A reqwest client over TLS 1.3 presenting `files`' certificate (none
/// when `None`), trusting the test CA, speaking `version` by ALPN.
fn client(
    pki: &TestPki,
    files: Option<&TlsFiles>,
    version: Version,
    http: SocketAddr,
) -> reqwest::Client {
    let mut config = match files {
        Some(files) => hostwatch_pki::client_config(files)
            .unwrap()
            .0
            .as_ref()
            .clone(),
        None => client_without_certificate(&pki.ca_path()),
    };
    config.alpn_protocols = vec![match version {
        Version::Http1 => b"http/1.1".to_vec(),
        Version::Http2 => b"h2".to_vec(),
    }];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", http)
        .build()
        .unwrap()
}

/// `GET path?query` or `POST path` with `query` as a form body: the
/// status and the JSON answer.
async fn call(
    client: &reqwest::Client,
    http: SocketAddr,
    path: &str,
    query: &str,
    post: bool,
) -> (u16, Value, reqwest::Version) {
    let url = format!("https://localhost:{}{path}", http.port());
    let request = if post {
        client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(query.to_owned())
    } else {
        client.get(format!("{url}?{query}"))
    };
    let response = request.send().await.unwrap();
    let (status, version) = (response.status().as_u16(), response.version());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, version)
}

/// Percent-encodes a query parameter's value.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Stores ten minutes of a gauge and a counter for host `web1`, ending at
/// the returned time (ms, a whole minute).
async fn store_samples(pki: &TestPki, grpc: SocketAddr) -> i64 {
    let end = hostwatch_stdx::now_ms() / 60_000 * 60_000 - 60_000;
    let times: Vec<i64> = (0..=40).map(|i| end - 600_000 + i * 15_000).collect();
    let series = |metric: &str, labels: Vec<Label>, value: fn(usize) -> f64| SeriesPoints {
        metric: metric.into(),
        labels,
        timestamps_ms: times.clone(),
        values: (0..times.len()).map(value).collect(),
    };
    let batch = Batch {
        seq: 1,
        series: vec![
            series("host_load1", vec![], |i| i as f64 / 4.0),
            series(
                "host_cpu_seconds_total",
                vec![Label {
                    name: "cpu".into(),
                    value: "0".into(),
                }],
                |i| i as f64 * 15.0,
            ),
        ],
        ..Default::default()
    };
    deliver_batch(pki.files(Role::Agent, "web1"), grpc, "web1", 1, batch).await;
    end
}

#[tokio::test]
async fn endpoints_answer_in_prometheus_shapes_over_http1_and_http2() {
    let pki = TestPki::new();
    let collector = Collector::start(&pki, "").await;
    let end = store_samples(&pki, collector.grpc).await;
    let (start_s, end_s) = ((end - 600_000) / 1000, end / 1000);
    let operator = pki.files(Role::Operator, "ops");
    let viewer = pki.files(Role::Viewer, "grafana");
    for (files, version, post) in [
        (&operator, Version::Http1, false),
        (&viewer, Version::Http2, true),
    ] {
        let c = client(&pki, Some(files), version, collector.http);
        let (status, body, got) = call(
            &c,
            collector.http,
            "/api/v1/query",
            &format!("query=host_load1&time={end_s}"),
            post,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let expected_version = match version {
            Version::Http1 => reqwest::Version::HTTP_11,
            Version::Http2 => reqwest::Version::HTTP_2,
        };
        assert_eq!(got, expected_version);
        assert_eq!(
            body,
            json!({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"__name__": "host_load1", "host": "web1"}, "value": [end_s, "10"]}
            ]}})
        );
        // Grafana's health check: a scalar.
        let (_, body, _) = call(
            &c,
            collector.http,
            "/api/v1/query",
            &format!("query={}&time=2015-07-01T20:10:51.781Z", enc("1+1")),
            post,
        )
        .await;
        assert_eq!(
            body["data"],
            json!({"resultType": "scalar", "result": [1435781451.781, "2"]})
        );

        let q = format!(
            "query={}&start={start_s}&end={end_s}&step=5m",
            enc("rate(host_cpu_seconds_total[5m])")
        );
        let (status, body, _) = call(&c, collector.http, "/api/v1/query_range", &q, post).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["resultType"], "matrix");
        let series = &body["data"]["result"][0];
        assert_eq!(series["metric"], json!({"cpu": "0", "host": "web1"}));
        assert_eq!(series["values"], json!([[end_s - 300, "1"], [end_s, "1"]]));

        let q = format!(
            "match[]={}&start={start_s}&end={end_s}",
            enc("{host=\"web1\"}")
        );
        let (_, body, _) = call(&c, collector.http, "/api/v1/series", &q, post).await;
        assert_eq!(
            body["data"],
            json!([
                {"__name__": "host_cpu_seconds_total", "cpu": "0", "host": "web1"},
                {"__name__": "host_load1", "host": "web1"},
            ])
        );
        let (_, body, _) = call(
            &c,
            collector.http,
            "/api/v1/series",
            &format!("{q}&limit=1"),
            post,
        )
        .await;
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        let (_, body, _) = call(&c, collector.http, "/api/v1/labels", "", post).await;
        assert_eq!(body["data"], json!(["__name__", "cpu", "host"]));
        let (_, body, _) = call(
            &c,
            collector.http,
            "/api/v1/label/__name__/values",
            "",
            post,
        )
        .await;
        assert_eq!(
            body["data"],
            json!(["host_cpu_seconds_total", "host_load1"])
        );
        let q = format!("match[]=host_load1&start={start_s}&end={end_s}");
        let (_, body, _) = call(&c, collector.http, "/api/v1/label/host/values", &q, post).await;
        assert_eq!(body, json!({"status": "success", "data": ["web1"]}));
        // Before any sample: nothing.
        let q = format!("match[]=host_load1&start=0&end={}", start_s - 3600);
        let (_, body, _) = call(&c, collector.http, "/api/v1/label/host/values", &q, post).await;
        assert_eq!(body["data"], json!([]));

        let (_, body, _) = call(
            &c,
            collector.http,
            "/api/v1/metadata",
            "metric=host_load1",
            post,
        )
        .await;
        assert_eq!(
            body["data"],
            json!({"host_load1": [{"type": "gauge", "help": "runnable tasks", "unit": ""}]})
        );
        let (status, body, _) = call(&c, collector.http, "/api/v1/alerts", "", post).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["alerts"].is_array(), "{body}");
        let (status, body, _) = call(&c, collector.http, "/api/v1/rules", "", post).await;
        assert_eq!(status, 200, "{body}");
        let rules = &body["data"]["groups"][0]["rules"];
        assert!(
            rules
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == "cpu_saturated")),
            "{body}"
        );
        let (status, body, _) =
            call(&c, collector.http, "/api/v1/status/buildinfo", "", post).await;
        assert_eq!(status, 200);
        assert!(body["data"]["version"].is_string(), "{body}");
        assert!(body["data"].get("features").is_none(), "{body}");
        for path in ["/-/healthy", "/-/ready"] {
            let (status, body, _) = call(&c, collector.http, path, "", post).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
    collector.stop().await;
}

#[tokio::test]
async fn requests_without_a_reader_certificate_get_401_and_are_counted() {
    let pki = TestPki::new();
    let collector = Collector::start(&pki, "").await;
    let agent = pki.files(Role::Agent, "web1");
    let operator = pki.files(Role::Operator, "ops");
    let cases = [
        (client(&pki, None, Version::Http1, collector.http), false),
        (client(&pki, None, Version::Http2, collector.http), false),
        (
            client(&pki, Some(&agent), Version::Http2, collector.http),
            false,
        ),
        (
            client(&pki, Some(&operator), Version::Http1, collector.http),
            true,
        ),
    ];
    for (c, bearer) in &cases {
        let url = format!(
            "https://localhost:{}/api/v1/query?query=1",
            collector.http.port()
        );
        let mut request = c.get(url);
        if *bearer {
            request = request.bearer_auth("made-up");
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["errorType"], "unauthorized", "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let channel = channel(operator, collector.grpc).await.unwrap();
    let stats = AdminClient::new(channel)
        .storage_stats(StorageStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.unauthorized_http_requests, cases.len() as u64);
    collector.stop().await;
}

#[tokio::test]
async fn bad_input_gets_its_status_and_error_type() {
    let pki = TestPki::new();
    let collector = Collector::start(&pki, "[query]\nmax_samples = 30\n").await;
    let end = store_samples(&pki, collector.grpc).await / 1000;
    let c = client(
        &pki,
        Some(&pki.files(Role::Viewer, "v")),
        Version::Http2,
        collector.http,
    );
    let range = |q: &str, start: &str, end: &str, step: &str| {
        format!("query={}&start={start}&end={end}&step={step}", enc(q))
    };
    let (e, e1) = (end.to_string(), (end - 1).to_string());
    let cases = [
        (
            "/api/v1/query",
            format!("query={}", enc("sum(")),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query",
            format!("query={}", enc("no_such_fn(up)")),
            400,
            "bad_data",
        ),
        ("/api/v1/query", String::new(), 400, "bad_data"),
        (
            "/api/v1/query",
            "query=1&time=soon".to_owned(),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query",
            format!("query={}", enc("up{a=~\"(\"}")),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query",
            format!("query=host_cpu_seconds_total&time={e}&timeout=later"),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            range("1", &e1, &e, "0"),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            range("1", &e1, &e, "-15s"),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            range("1", "0", "11001", "1"),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            range("1", &e, &e1, "1"),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            range("1", "yesterday", &e, "1"),
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            format!("query=1&start={e1}&end={e}"),
            400,
            "bad_data",
        ),
        ("/api/v1/series", String::new(), 400, "bad_data"),
        (
            "/api/v1/series",
            "match[]=sum(up)".to_owned(),
            400,
            "bad_data",
        ),
        ("/api/v1/label/9bad/values", String::new(), 400, "bad_data"),
        (
            "/api/v1/query",
            format!("query={}&time={e}", enc("max_over_time(host_load1[10m])")),
            422,
            "execution",
        ),
        (
            "/api/v1/query",
            format!("query=host_load1&time={e}&timeout=0"),
            503,
            "timeout",
        ),
    ];
    for (path, query, status, error_type) in &cases {
        for post in [false, true] {
            let (got, body, _) = call(&c, collector.http, path, query, post).await;
            assert_eq!(got, *status, "{path}?{query}: {body}");
            assert_eq!(body["status"], "error", "{path}?{query}: {body}");
            assert_eq!(body["errorType"], *error_type, "{path}?{query}: {body}");
        }
    }
    // Within the limit (the lookback's samples, not the 10 minutes'), the
    // same collector answers.
    let (status, body, _) = call(
        &c,
        collector.http,
        "/api/v1/query",
        &format!("query=host_load1&time={e}"),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    collector.stop().await;
}

/// Series, labels and label values take the query limits: each series
/// they look at counts as a sample against `query.max_samples` (422
/// `execution`), and `query.timeout` holds (503 `timeout`).
#[tokio::test]
async fn series_endpoints_keep_the_query_limits() {
    let pki = TestPki::new();
    let viewer = pki.files(Role::Viewer, "v");
    for (extra, status, error_type) in [
        ("[query]\nmax_samples = 1\n", 422, "execution"),
        ("[query]\ntimeout = \"1ns\"\n", 503, "timeout"),
    ] {
        let collector = Collector::start(&pki, extra).await;
        // Two series of web1.
        store_samples(&pki, collector.grpc).await;
        let c = client(&pki, Some(&viewer), Version::Http1, collector.http);
        let web1 = format!("match[]={}", enc("{host=\"web1\"}"));
        for (path, query) in [
            ("/api/v1/series", web1.as_str()),
            ("/api/v1/labels", ""),
            ("/api/v1/label/host/values", web1.as_str()),
        ] {
            let (got, body, _) = call(&c, collector.http, path, query, false).await;
            assert_eq!(got, status, "{extra} {path}: {body}");
            assert_eq!(body["errorType"], error_type, "{extra} {path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("series selection")),
                "{body}"
            );
        }
        // Within the limit, the same endpoint answers.
        if status == 422 {
            let q = "match[]=host_load1";
            let (got, body, _) = call(&c, collector.http, "/api/v1/series", q, false).await;
            assert_eq!(got, 200, "{body}");
        }
        collector.stop().await;
    }
}
