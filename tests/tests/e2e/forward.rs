//! Forwarding (remote_write) against a small local receiver that answers
//! as told: 5xx is retried, 429 waits for its `Retry-After`, other 4xx
//! is dropped and not sent again, and a destination that is down does not
//! hold the others back. The real receivers (Prometheus, VictoriaMetrics)
//! are in `tests/remote_write.rs`.

use hostwatch_pki::Role;
use hostwatch_proto::prometheus::WriteRequest;
use hostwatch_proto::prometheus_v2;
use hostwatch_proto::v1::{Batch, Label, SeriesPoints};
use hostwatch_tests::*;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "fw";
/// A scripted answer that never comes in time.
const HANG: u16 = 299;
/// A scripted body: a 2xx to a 2.0 request without the samples-written
/// header, as a 1.0 receiver that ignores the Content-Type answers.
const NO_WRITTEN: &str = "(no samples-written header)";
const V2_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// A scripted answer: status, `Retry-After`, body.
type Answer = (u16, Option<&'static str>, &'static str);

/// One request the receiver got, and how it answered.
#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    status: u16,
    headers: axum::http::HeaderMap,
    /// (metric, labels as `name=value` sorted, time, value) of every sample.
    samples: Vec<(String, Vec<String>, i64, f64)>,
}

/// A remote_write receiver on 127.0.0.1 that answers each request with
/// the next scripted answer (status, Retry-After, body), 204 once none
/// is left.
struct FakeReceiver {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl FakeReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<_>>> = Arc::default();
        let (r, s) = (requests.clone(), script.clone());
        let app = axum::Router::new().route(
            "/api/v1/write",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (requests, script) = (r.clone(), s.clone());
                    async move {
                        let (status, retry_after, text) = script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((204, None, ""));
                        let v2 = headers
                            .get("content-type")
                            .is_some_and(|v| v == V2_CONTENT_TYPE);
                        let samples = decode(&headers, &body);
                        let written = samples.len();
                        requests.lock().unwrap().push(Request {
                            at: Instant::now(),
                            status,
                            headers,
                            samples,
                        });
                        if status == HANG {
                            // Longer than the destination's timeout.
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        let mut response = axum::response::Response::builder().status(status);
                        if let Some(after) = retry_after {
                            response = response.header("Retry-After", after);
                        }
                        if v2 && (200..300).contains(&status) && text != NO_WRITTEN {
                            response = response
                                .header("X-Prometheus-Remote-Write-Samples-Written", written);
                        }
                        response.body(axum::body::Body::from(text)).unwrap()
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeReceiver {
            addr,
            requests,
            script,
        }
    }

    fn then_answer(&self, status: u16, retry_after: Option<&'static str>, body: &'static str) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, retry_after, body));
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests holding a sample of `metric` at `t`.
    fn with_sample(&self, metric: &str, t: i64) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.samples.iter().any(|s| s.0 == metric && s.2 == t))
            .collect()
    }
}

/// The samples of a snappy-compressed `WriteRequest`, or of a 2.0
/// `Request` by its Content-Type.
fn decode(headers: &axum::http::HeaderMap, body: &[u8]) -> Vec<(String, Vec<String>, i64, f64)> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    if headers
        .get("content-type")
        .is_some_and(|v| v == V2_CONTENT_TYPE)
    {
        return decode_v2(&raw);
    }
    let request = WriteRequest::decode(&raw[..]).unwrap();
    let mut out = Vec::new();
    for series in request.timeseries {
        let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
        assert!(names.is_sorted(), "labels not sorted by name: {names:?}");
        let metric = series
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.clone())
            .unwrap_or_default();
        let labels: Vec<String> = series
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        for s in series.samples {
            out.push((metric.clone(), labels.clone(), s.timestamp, s.value));
        }
    }
    out
}

/// The samples of a 2.0 `Request`, checking its symbol table: "" first,
/// each string once, every reference inside it, label pairs sorted by name.
fn decode_v2(raw: &[u8]) -> Vec<(String, Vec<String>, i64, f64)> {
    let request = prometheus_v2::Request::decode(raw).unwrap();
    let symbols = &request.symbols;
    assert_eq!(symbols.first().map(String::as_str), Some(""), "{symbols:?}");
    let unique: std::collections::HashSet<&String> = symbols.iter().collect();
    assert_eq!(unique.len(), symbols.len(), "a symbol twice: {symbols:?}");
    let mut out = Vec::new();
    for series in request.timeseries {
        assert_eq!(series.labels_refs.len() % 2, 0, "{:?}", series.labels_refs);
        let pairs: Vec<(&str, &str)> = series
            .labels_refs
            .chunks(2)
            .map(|p| {
                let at = |r: u32| symbols.get(r as usize).unwrap().as_str();
                (at(p[0]), at(p[1]))
            })
            .collect();
        let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
        assert!(names.is_sorted(), "labels not sorted by name: {names:?}");
        let metric = pairs
            .iter()
            .find(|p| p.0 == "__name__")
            .map(|p| p.1.to_owned())
            .unwrap_or_default();
        let labels: Vec<String> = pairs
            .iter()
            .filter(|p| p.0 != "__name__")
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        for s in series.samples {
            out.push((metric.clone(), labels.clone(), s.timestamp, s.value));
        }
    }
    out
}

fn batch(seq: u64, t: i64) -> Batch {
    let series = |metric: &str| SeriesPoints {
        metric: metric.into(),
        labels: vec![Label {
            name: "cpu".into(),
            value: "0".into(),
        }],
        timestamps_ms: vec![t],
        values: vec![seq as f64 + 0.5],
    };
    Batch {
        seq,
        series: vec![series("fw_metric"), series("fw_ignored")],
        ..Default::default()
    }
}

// One scenario: each answer is checked on the batch sent after the
// previous one was answered, over one collector and one receiver.
#[tokio::test]
async fn answers_decide_between_retry_wait_and_drop() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let receiver = FakeReceiver::start().await;
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let dead = free_port();
    let extra = format!(
        "[[forward]]\nname = \"fake\"\nurl = \"http://{}/api/v1/write\"\nbearer_token_file = {token:?}\ntimeout = \"500ms\"\nmatch = [\"__name__!=fw_ignored\"]\nheaders = {{ X-Scope-OrgID = \"tenant-1\" }}\n[forward.queue]\nshards = 1\nmax_age = \"20ms\"\nmin_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n\
         [[forward]]\nname = \"down\"\nurl = \"http://127.0.0.1:{dead}/api/v1/write\"\n[forward.queue]\nmin_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n",
        receiver.addr
    );
    let collector = RunningCollector::start(collector_config_with(
        &pki,
        &dir.path().join("data"),
        &extra,
    ))
    .await;
    let files = || pki.files(Role::Agent, HOST);
    let t0 = hostwatch_stdx::now_ms() - 10_000;

    // 500 twice: the same request again until it is taken.
    receiver.then_answer(500, None, "try later");
    receiver.then_answer(503, None, "try later");
    deliver_batch(files(), collector.addr, HOST, 1, batch(1, t0)).await;
    eventually(WAIT, "the first batch taken after two 5xx", || async {
        let seen = receiver.with_sample("fw_metric", t0);
        seen.iter().any(|r| r.status == 204).then_some(())
    })
    .await;
    let seen = receiver.with_sample("fw_metric", t0);
    let statuses: Vec<u16> = seen.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 204]);
    let first = &seen[0];
    assert_eq!(
        first.samples,
        vec![(
            "fw_metric".to_owned(),
            vec!["cpu=0".to_owned(), format!("host={HOST}")],
            t0,
            1.5
        )]
    );
    let header = |name: &str| first.headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-encoding"), "snappy");
    assert_eq!(header("content-type"), "application/x-protobuf");
    assert_eq!(header("x-prometheus-remote-write-version"), "0.1.0");
    assert!(header("user-agent").starts_with("hostwatch/"));
    assert_eq!(header("authorization"), "Bearer t0ken");
    assert_eq!(header("x-scope-orgid"), "tenant-1");

    // 429 with Retry-After: 1 s; the backoff alone would retry within 20 ms.
    receiver.then_answer(429, Some("1"), "slow down");
    deliver_batch(files(), collector.addr, HOST, 2, batch(2, t0 + 1)).await;
    eventually(WAIT, "the second batch taken after a 429", || async {
        let seen = receiver.with_sample("fw_metric", t0 + 1);
        seen.iter().any(|r| r.status == 204).then_some(())
    })
    .await;
    let seen = receiver.with_sample("fw_metric", t0 + 1);
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 204]
    );
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );

    // 400: dropped, never sent again; what follows still goes.
    receiver.then_answer(400, None, "out of bounds");
    deliver_batch(files(), collector.addr, HOST, 3, batch(3, t0 + 2)).await;
    eventually(WAIT, "the third batch refused", || async {
        (!receiver.with_sample("fw_metric", t0 + 2).is_empty()).then_some(())
    })
    .await;
    deliver_batch(files(), collector.addr, HOST, 4, batch(4, t0 + 3)).await;
    eventually(WAIT, "the fourth batch taken", || async {
        let seen = receiver.with_sample("fw_metric", t0 + 3);
        seen.iter().any(|r| r.status == 204).then_some(())
    })
    .await;
    let refused = receiver.with_sample("fw_metric", t0 + 2);
    assert_eq!(refused.len(), 1, "a refused request was sent again");
    assert_eq!(refused[0].status, 400);

    // A token refused (401) is dropped too; a receiver that does not
    // answer within the timeout is asked again.
    receiver.then_answer(401, None, "bad token");
    deliver_batch(files(), collector.addr, HOST, 5, batch(5, t0 + 4)).await;
    eventually(WAIT, "the fifth batch refused", || async {
        (!receiver.with_sample("fw_metric", t0 + 4).is_empty()).then_some(())
    })
    .await;
    receiver.then_answer(HANG, None, "");
    deliver_batch(files(), collector.addr, HOST, 6, batch(6, t0 + 5)).await;
    eventually(WAIT, "the sixth batch taken after a timeout", || async {
        let seen = receiver.with_sample("fw_metric", t0 + 5);
        seen.iter().any(|r| r.status == 204).then_some(())
    })
    .await;
    let statuses = |t| {
        let seen = receiver.with_sample("fw_metric", t);
        seen.iter().map(|r| r.status).collect::<Vec<_>>()
    };
    assert_eq!(statuses(t0 + 4), vec![401]);
    assert_eq!(statuses(t0 + 5), vec![HANG, 204]);

    // The matcher kept the other metric back, from every request.
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.samples.iter().all(|s| s.0 == "fw_metric")),
        "a series the matchers exclude was sent"
    );
    collector.stop().await;
}

#[tokio::test]
async fn a_destination_removed_from_the_configuration_loses_its_cursor() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let receiver = FakeReceiver::start().await;
    let section = |name: &str| {
        format!(
            "[[forward]]\nname = \"{name}\"\nurl = \"http://{}/api/v1/write\"\n[forward.queue]\nmax_age = \"20ms\"\n",
            receiver.addr
        )
    };
    let data = dir.path().join("data");
    let both = format!("{}{}", section("keep"), section("gone"));
    let collector = RunningCollector::start(collector_config_with(&pki, &data, &both)).await;
    let t = hostwatch_stdx::now_ms() - 1_000;
    deliver_batch(
        pki.files(Role::Agent, HOST),
        collector.addr,
        HOST,
        1,
        batch(1, t),
    )
    .await;
    eventually(WAIT, "the batch at both destinations", || async {
        let taken = receiver.with_sample("fw_metric", t);
        (taken.iter().filter(|r| r.status == 204).count() == 2).then_some(())
    })
    .await;
    collector.stop().await;
    let store = hostwatch_tsdb::Store::open(&data.join("store"), Default::default()).unwrap();
    let mut names: Vec<String> = store
        .forward_cursors()
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    names.sort();
    assert_eq!(names, ["gone", "keep"]);
    drop(store);

    let collector =
        RunningCollector::start(collector_config_with(&pki, &data, &section("keep"))).await;
    collector.stop().await;
    let store = hostwatch_tsdb::Store::open(&data.join("store"), Default::default()).unwrap();
    let cursors = store.forward_cursors().unwrap();
    assert_eq!(cursors.len(), 1, "{cursors:?}");
    assert_eq!(cursors[0].0, "keep");
    assert!(cursors[0].1 > 0, "{cursors:?}");
}

#[tokio::test]
async fn requests_keep_to_their_size_and_each_series_in_order() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let receiver = FakeReceiver::start().await;
    let extra = format!(
        "[[forward]]\nname = \"small\"\nurl = \"http://{}/api/v1/write\"\n[forward.queue]\nshards = 2\nmax_samples_per_request = 3\ncapacity = 3\nmax_age = \"20ms\"\n",
        receiver.addr
    );
    let collector = RunningCollector::start(collector_config_with(
        &pki,
        &dir.path().join("data"),
        &extra,
    ))
    .await;
    let t0 = hostwatch_stdx::now_ms() - 10_000;
    let times: Vec<i64> = (0..5).map(|i| t0 + i * 100).collect();
    let series = (0..4)
        .map(|s| SeriesPoints {
            metric: "fw_sized".into(),
            labels: vec![Label {
                name: "s".into(),
                value: s.to_string(),
            }],
            timestamps_ms: times.clone(),
            values: times.iter().map(|t| (t - t0 + s) as f64).collect(),
        })
        .collect();
    let batch = Batch {
        seq: 1,
        series,
        ..Default::default()
    };
    deliver_batch(pki.files(Role::Agent, HOST), collector.addr, HOST, 1, batch).await;
    eventually(WAIT, "all 20 samples taken", || async {
        let n: usize = receiver.requests().iter().map(|r| r.samples.len()).sum();
        (n >= 20).then_some(())
    })
    .await;
    let requests = receiver.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.status == 204 && r.samples.len() <= 3)
    );
    for s in 0..4i64 {
        let label = format!("s={s}");
        let got: Vec<(i64, f64)> = requests
            .iter()
            .flat_map(|r| &r.samples)
            .filter(|x| x.1.contains(&label))
            .map(|x| (x.2, x.3))
            .collect();
        let want: Vec<(i64, f64)> = times.iter().map(|t| (*t, (t - t0 + s) as f64)).collect();
        assert_eq!(got, want, "series {label}");
    }
    collector.stop().await;
}

#[tokio::test]
async fn a_reload_stops_removed_destinations_and_starts_added_ones() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let receiver = FakeReceiver::start().await;
    let section = |name: &str| {
        format!(
            "[[forward]]\nname = \"{name}\"\nurl = \"http://{}/api/v1/write\"\nheaders = {{ X-Dest = \"{name}\" }}\n[forward.queue]\nmax_age = \"20ms\"\n",
            receiver.addr
        )
    };
    let data = dir.path().join("data");
    let config = collector_config_with(
        &pki,
        &data,
        &format!("{}{}", section("keep"), section("gone")),
    );
    let path = config.path.clone().unwrap();
    let collector = RunningCollector::start(config).await;
    let files = || pki.files(Role::Agent, HOST);
    let taken_by = |t: i64| {
        let mut names: Vec<String> = receiver
            .with_sample("fw_metric", t)
            .iter()
            .filter(|r| r.status == 204)
            .map(|r| r.headers["x-dest"].to_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let t = hostwatch_stdx::now_ms() - 1_000;
    deliver_batch(files(), collector.addr, HOST, 1, batch(1, t)).await;
    eventually(WAIT, "the first batch at both destinations", || async {
        (taken_by(t) == ["gone", "keep"]).then_some(())
    })
    .await;

    // An invalid section is refused, naming it; forwarding goes on.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut admin = hostwatch_proto::v1::admin_client::AdminClient::new(
        channel(pki.files(Role::Operator, "tester"), collector.addr)
            .await
            .unwrap(),
    );
    std::fs::write(
        &path,
        text.replace("name = \"gone\"", "name = \"bad name\""),
    )
    .unwrap();
    let refused = admin
        .reload(hostwatch_proto::v1::ReloadRequest {})
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("forward.name"),
        "{}",
        refused.message()
    );

    std::fs::write(&path, text.replace("\"gone\"", "\"new\"")).unwrap();
    admin
        .reload(hostwatch_proto::v1::ReloadRequest {})
        .await
        .unwrap();
    deliver_batch(files(), collector.addr, HOST, 2, batch(2, t + 1)).await;
    eventually(
        WAIT,
        "the second batch at the kept and the new destination",
        || async { (taken_by(t + 1) == ["keep", "new"]).then_some(()) },
    )
    .await;
    collector.stop().await;
    let store = hostwatch_tsdb::Store::open(&data.join("store"), Default::default()).unwrap();
    let mut names: Vec<String> = store
        .forward_cursors()
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    names.sort();
    assert_eq!(names, ["keep", "new"]);
}

#[tokio::test]
async fn a_2_0_destination_sends_its_symbol_table_and_headers() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let receiver = FakeReceiver::start().await;
    let extra = format!(
        "[[forward]]\nname = \"v2\"\nurl = \"http://{}/api/v1/write\"\nprotocol = \"2.0\"\n[forward.queue]\nshards = 1\nmax_age = \"20ms\"\nmin_backoff = \"20ms\"\nmax_backoff = \"50ms\"\n",
        receiver.addr
    );
    let collector = RunningCollector::start(collector_config_with(
        &pki,
        &dir.path().join("data"),
        &extra,
    ))
    .await;
    let t = hostwatch_stdx::now_ms() - 5_000;
    let files = pki.files(Role::Agent, HOST);
    // A 1.0-only receiver answers 415, then one reading the body as 1.0
    // answers 204 without the samples-written header: both retried,
    // neither dropped; then it is taken.
    receiver.then_answer(415, None, "unsupported media type");
    receiver.then_answer(204, None, NO_WRITTEN);
    deliver_batch(files.clone(), collector.addr, HOST, 1, batch(1, t)).await;
    eventually(WAIT, "the batch taken after two refusals", || async {
        (receiver.with_sample("fw_metric", t).len() >= 3).then_some(())
    })
    .await;
    let requests = receiver.with_sample("fw_metric", t);
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [415, 204, 204], "{statuses:?}");
    for r in &requests {
        assert_eq!(r.headers["content-type"], V2_CONTENT_TYPE);
        assert_eq!(r.headers["content-encoding"], "snappy");
        assert_eq!(r.headers["x-prometheus-remote-write-version"], "2.0.0");
    }
    let mut got: Vec<(String, Vec<String>, i64, f64)> = requests[2].samples.clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let labels = vec!["cpu=0".to_owned(), format!("host={HOST}")];
    assert_eq!(
        got,
        vec![
            ("fw_ignored".to_owned(), labels.clone(), t, 1.5),
            ("fw_metric".to_owned(), labels, t, 1.5),
        ]
    );
    // Answered with its count: nothing more is sent for it.
    deliver_batch(files, collector.addr, HOST, 2, batch(2, t + 1_000)).await;
    eventually(WAIT, "the next batch taken", || async {
        (!receiver.with_sample("fw_metric", t + 1_000).is_empty()).then_some(())
    })
    .await;
    assert_eq!(receiver.with_sample("fw_metric", t).len(), 3);
    collector.stop().await;
}
