//! Notifications end to end inside the crate: the engine on a real sled
//! database, delivering to real HTTP receivers on loopback (axum) and to
//! real commands, in real time with short group waits and backoffs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use hostwatch_alerting::{NewSilence, Phase};
use hostwatch_stdx::now_ms;
use serde_json::Value;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Status codes to answer with, in order, each with a `Retry-After`
    /// header if given; 200 once empty.
    responses: Mutex<VecDeque<(u16, Option<String>)>>,
}

/// An HTTP receiver on loopback recording every POST.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start_on(listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        async fn handle(
            State(state): State<Arc<ReceiverState>>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            let (code, retry_after) = state
                .responses
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((200, None));
            state.received.lock().unwrap().push(Received {
                headers,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                raw: body.to_vec(),
            });
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            if let Some(value) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", value.parse().unwrap());
            }
            response
        }
        let app = axum::Router::new()
            .route("/hook", post(handle))
            .route("/api/v2/alerts", post(handle))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, state, task }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn respond(&self, codes: &[u16]) {
        let answers = codes.iter().map(|&code| (code, None));
        self.state.responses.lock().unwrap().extend(answers);
    }

    /// The next answer: `code` with `Retry-After: value`.
    fn respond_retry_after(&self, code: u16, value: &str) {
        let answer = (code, Some(value.to_owned()));
        self.state.responses.lock().unwrap().push_back(answer);
    }

    /// Notifications that mention `host`, with their alerts' statuses.
    fn for_host(&self, host: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| {
                r.raw
                    .windows(host.len() + 2)
                    .any(|w| w == format!("\"{host}\"").as_bytes())
            })
            .collect()
    }

    async fn wait_for(&self, what: &str, count: usize) -> Vec<Received> {
        eventually(what, || async {
            (self.received().len() >= count).then(|| self.received())
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const RULE: &str = r#"
[alerting]
default_rules = false
flap_window = "0s"
external_url = "https://hostwatch.example.com"
[[alerting.rules]]
name = "cpu_busy"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
op = ">"
raise = 0.9
labels = { severity = "page" }
annotations = { summary = "CPU of {{ host }} at {{ value | percent }}" }
"#;

fn webhook(addr: SocketAddr, extra: &str) -> String {
    format!(
        "{RULE}\n[[alerting.hooks]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\ngroup_by = [\"alertname\", \"host\"]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\nmin_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n{extra}\n"
    )
}

fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (dir, db)
}

#[tokio::test]
async fn webhook_gets_a_signed_alertmanager_v4_body_for_firing_and_resolved() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let (_db_dir, db) = temp_db();
    let mut engine = Engine::start(
        &db,
        &webhook(
            receiver.addr,
            &format!("hmac_secret_file = {:?}", secret.display().to_string()),
        ),
    );
    let t = now_ms();
    engine.cpu("web1", t, 0.97);
    let got = receiver.wait_for("the firing notification", 1).await;
    let body = &got[0].body;
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "oncall");
    assert_eq!(
        body["groupLabels"],
        serde_json::json!({"alertname": "cpu_busy", "host": "web1"})
    );
    assert_eq!(body["commonLabels"]["severity"], "page");
    assert_eq!(body["commonAnnotations"]["summary"], "CPU of web1 at 97%");
    assert_eq!(body["externalURL"], "https://hostwatch.example.com");
    assert_eq!(body["truncatedAlerts"], 0);
    assert!(
        body["groupKey"]
            .as_str()
            .unwrap()
            .contains("alertname=\"cpu_busy\"")
    );
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["host"], "web1");
    assert_eq!(alert["startsAt"], hostwatch_alerting::format_rfc3339(t));
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    let fingerprint = alert["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);
    assert_eq!(
        alert["generatorURL"],
        format!("https://hostwatch.example.com/alerts/{fingerprint}")
    );
    // The signature is HMAC-SHA256 over the exact body, with the trimmed key.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&got[0].raw);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        got[0].headers["x-hostwatch-signature"],
        format!("sha256={expected}")
    );
    assert!(!got[0].headers["idempotency-key"].is_empty());

    engine.cpu("web1", t + 1_000, 0.5);
    let got = receiver.wait_for("the resolved notification", 2).await;
    let body = &got[1].body;
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["alerts"][0]["status"], "resolved");
    assert_eq!(
        body["alerts"][0]["endsAt"],
        hostwatch_alerting::format_rfc3339(t + 1_000)
    );
    assert_ne!(
        got[0].headers["idempotency-key"],
        got[1].headers["idempotency-key"]
    );
    engine.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    receiver.respond(&[500, 429, 503, 200]);
    engine.cpu("web1", now_ms(), 0.99);
    let got = receiver.wait_for("four attempts", 4).await;
    let keys: Vec<_> = got
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    eventually("delivered once", || async {
        let stats = engine.alerting.delivery_stats();
        (stats
            .get("oncall")
            .is_some_and(|s| s.delivered == 1 && s.retried == 3))
        .then_some(())
    })
    .await;

    receiver.respond(&[400]);
    engine.cpu("web2", now_ms(), 0.99);
    receiver.wait_for("the refused notification", 5).await;
    // A later notification gets through; the refused one was not retried.
    engine.cpu("web3", now_ms(), 0.99);
    receiver.wait_for("the next notification", 6).await;
    assert_eq!(receiver.for_host("web2").len(), 1);
    // The receiver answers before the worker records the outcome: wait for it.
    eventually("two delivered, one refused, three retries", || async {
        let stats = engine.alerting.delivery_stats();
        stats
            .get("oncall")
            .is_some_and(|s| (s.delivered, s.failed, s.retried) == (2, 1, 3))
            .then_some(())
    })
    .await;
    engine.stop().await;
}

/// When the hook `oncall` attempts next, once `retries` attempts were
/// answered with a retry.
async fn next_attempt(engine: &Engine, retries: u64) -> i64 {
    eventually("a retried attempt", || async {
        let stats = engine.alerting.delivery_stats();
        let stats = stats.get("oncall")?;
        (stats.retried == retries)
            .then_some(stats.next_attempt_ms)
            .flatten()
    })
    .await
}

#[tokio::test]
async fn a_retry_after_answer_schedules_the_next_attempt_no_earlier_than_asked() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    // Backoff of 20 to 100 ms: only Retry-After can push an attempt further.
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    receiver.respond_retry_after(429, "120");
    let before = now_ms();
    engine.cpu("web1", now_ms(), 0.99);
    let next = next_attempt(&engine, 1).await;
    assert!(
        next >= before + 120_000,
        "next attempt {next}, asked for {}",
        before + 120_000
    );
    // Capped: a receiver cannot hold a hook back beyond MAX_RETRY_AFTER.
    let cap = hostwatch_stdx::MAX_RETRY_AFTER.as_millis() as i64;
    assert!(next <= now_ms() + cap, "{next}");
    assert_eq!(receiver.received().len(), 1);
    engine.stop().await;

    // An HTTP-date, a date beyond the cap, and an unparseable value (the
    // hook's own backoff, at most 100 ms) on a 503.
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    let in_5_min = std::time::SystemTime::now() + Duration::from_secs(300);
    receiver.respond_retry_after(503, &httpdate::fmt_http_date(in_5_min));
    let before = now_ms();
    engine.cpu("web1", now_ms(), 0.99);
    let next = next_attempt(&engine, 1).await;
    // The date has whole seconds: up to one less than asked.
    assert!(
        next >= before + 299_000,
        "next attempt {next}, asked for {}",
        before + 300_000
    );
    engine.stop().await;

    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    receiver.respond_retry_after(429, "86400");
    let before = now_ms();
    engine.cpu("web1", now_ms(), 0.99);
    let next = next_attempt(&engine, 1).await;
    assert!(
        next <= now_ms() + cap,
        "a day asked, {next} scheduled beyond the cap"
    );
    assert!(next >= before + cap, "{next}");
    engine.stop().await;

    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    receiver.respond_retry_after(429, "soon");
    engine.cpu("web1", now_ms(), 0.99);
    // Retried after the backoff, so delivered, and nothing left to attempt.
    receiver.wait_for("the retried attempt", 2).await;
    eventually("delivered after the backoff", || async {
        let stats = engine.alerting.delivery_stats();
        stats
            .get("oncall")
            .is_some_and(|s| s.delivered == 1 && s.retried == 1 && s.next_attempt_ms.is_none())
            .then_some(())
    })
    .await;
    engine.stop().await;
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_the_notification_when_back() {
    // A socket bound but not listening holds the port (no other test can
    // be handed it) and refuses connections; it listens once "back".
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(addr, ""));
    engine.cpu("web1", now_ms(), 0.99);
    eventually("a few refused connections", || async {
        engine
            .alerting
            .delivery_stats()
            .get("oncall")
            .is_some_and(|s| s.retried >= 3)
            .then_some(())
    })
    .await;
    assert_eq!(
        engine.alerting.outbox_depth(),
        std::collections::BTreeMap::from([("oncall".to_owned(), 1)])
    );
    // The collector stops while the receiver is still down: the
    // notification waits in the outbox for the next start.
    engine.stop().await;
    let receiver = Receiver::start_on(socket.listen(64).unwrap());
    let engine = Engine::start(&db, &webhook(addr, ""));
    let got = receiver.wait_for("the delayed notification", 1).await;
    assert_eq!(got[0].body["status"], "firing");
    eventually("delivered", || async {
        engine
            .alerting
            .delivery_stats()
            .get("oncall")
            .is_some_and(|s| s.delivered == 1)
            .then_some(())
    })
    .await;
    eventually("the outbox emptied", || async {
        (engine.alerting.outbox_depth().get("oncall") == Some(&0)).then_some(())
    })
    .await;
    assert_eq!(receiver.received().len(), 1);
    engine.stop().await;
}

/// A log writer into memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_delivery_logs_the_hook_url_without_its_path_or_query() {
    // A receiver that takes each connection and drops it without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failing = tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    });
    // The process-wide subscriber: one scoped to this thread misses events
    // while other tests run (tracing caches per-callsite interest).
    // Other tests' lines land here too; none carries these secrets.
    let log = LogBuffer::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let config = webhook(addr, "").replace(
        &format!("http://{addr}/hook"),
        &format!("http://user:pw@{addr}/services/T0/B0/SECRETPATH?token=SECRETTOKEN"),
    );
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &config);
    engine.cpu("web1", now_ms(), 0.99);
    let text = || String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    let port = format!(":{}", addr.port());
    eventually("a failed delivery in the log", || async {
        text().contains(&port).then_some(())
    })
    .await;
    engine.stop().await;
    failing.abort();
    let text = text();
    for secret in ["SECRETPATH", "SECRETTOKEN", "user:pw"] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
    assert!(text.contains(&format!("http://{addr}/")), "{text}");
}

#[tokio::test]
async fn a_restart_in_the_middle_of_an_alert_does_not_page_again() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let text = webhook(receiver.addr, "repeat_interval = \"1h\"");
    let mut engine = Engine::start(&db, &text);
    engine.cpu("web1", now_ms(), 0.99);
    receiver.wait_for("the page", 1).await;
    engine.stop().await;
    let mut engine = Engine::start(&db, &text);
    engine.seq = 100;
    engine.cpu("web1", now_ms(), 0.99);
    // web2 firing now is the barrier: once its page arrived, anything
    // about web1 would have too.
    engine.cpu("web2", now_ms(), 0.99);
    receiver.wait_for("web2's page", 2).await;
    assert_eq!(receiver.for_host("web1").len(), 1);
    engine.stop().await;
}

#[tokio::test]
async fn a_replayed_backlog_does_not_page_stale_alerts_but_pages_ongoing_ones() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    let hour_ago = now_ms() - 3_600_000;
    // web1: a spike an hour ago that ended; web2: high then, and still now.
    for (i, (a, b)) in [(0.99, 0.99), (0.99, 0.99), (0.2, 0.99)].iter().enumerate() {
        let t = hour_ago + i as i64 * 10_000;
        engine.cpu("web1", t, *a);
        engine.cpu("web2", t, *b);
    }
    let history = engine.alerting.history(&Default::default()).unwrap();
    assert_eq!(history.iter().filter(|t| t.to == Phase::Firing).count(), 2);
    // The backlog catches up: web2's fresh sample is still high.
    engine.cpu("web2", now_ms(), 0.99);
    engine.cpu("web1", now_ms(), 0.2);
    let got = receiver.wait_for("web2's page", 1).await;
    assert_eq!(got[0].body["alerts"][0]["labels"]["host"], "web2");
    // Started when it really started, an hour ago.
    assert_eq!(
        got[0].body["alerts"][0]["startsAt"],
        hostwatch_alerting::format_rfc3339(hour_ago)
    );
    engine.cpu("web3", now_ms(), 0.99);
    receiver.wait_for("web3's page", 2).await;
    assert!(receiver.for_host("web1").is_empty());
    engine.stop().await;
}

#[tokio::test]
async fn an_alert_firing_again_within_the_flap_window_is_not_paged_again() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let text = webhook(receiver.addr, "").replace("flap_window = \"0s\"", "flap_window = \"1s\"");
    let mut engine = Engine::start(&db, &text);
    let t = now_ms();
    engine.cpu("web1", t, 0.99);
    receiver.wait_for("the page", 1).await;
    engine.cpu("web1", t + 1, 0.2);
    engine.cpu("web1", t + 2, 0.99);
    // web2 is the barrier: once its page is in, web1's would have been too.
    engine.cpu("web2", now_ms(), 0.99);
    receiver.wait_for("web2's page", 2).await;
    assert_eq!(receiver.for_host("web1").len(), 1);
    let flapped = engine
        .alerting
        .alerts()
        .into_iter()
        .find(|a| a.labels["host"] == "web1")
        .unwrap();
    assert_eq!((flapped.phase(), flapped.machine.flaps), (Phase::Firing, 1));
    // Resolved for good: announced once the flap window has passed.
    engine.cpu("web1", t + 3, 0.2);
    let got = receiver.wait_for("web1's resolution", 3).await;
    assert_eq!(got[2].body["status"], "resolved");
    assert_eq!(receiver.for_host("web1").len(), 2);
    engine.stop().await;
}

#[tokio::test]
async fn alerts_are_grouped_and_repeated() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let text = webhook(receiver.addr, "")
        .replace(
            "group_by = [\"alertname\", \"host\"]",
            "group_by = [\"alertname\"]",
        )
        .replace("group_wait = \"0s\"", "group_wait = \"300ms\"")
        + "repeat_interval = \"1s\"\n";
    let mut engine = Engine::start(&db, &text);
    engine.cpu("web1", now_ms(), 0.99);
    engine.cpu("web2", now_ms(), 0.99);
    let got = receiver.wait_for("the grouped page", 1).await;
    assert_eq!(got[0].body["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(
        got[0].body["groupLabels"],
        serde_json::json!({"alertname": "cpu_busy"})
    );
    assert!(got[0].body["commonLabels"].get("host").is_none());
    let got = receiver.wait_for("the repeat", 2).await;
    assert_eq!(got[1].body["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(got[0].body["groupKey"], got[1].body["groupKey"]);
    engine.stop().await;
}

#[tokio::test]
async fn silenced_alerts_are_notified_once_the_silence_ends() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &webhook(receiver.addr, ""));
    let bad = engine
        .alerting
        .create_silence(NewSilence {
            matchers: vec!["host=~(".into()],
            starts_ms: 0,
            ends_ms: now_ms() + 60_000,
            created_by: "tester".into(),
            comment: String::new(),
        })
        .await;
    assert!(bad.unwrap_err().to_string().contains("host=~("));
    let too_long = engine
        .alerting
        .create_silence(NewSilence {
            matchers: vec!["host=web1".into()],
            starts_ms: 0,
            ends_ms: now_ms() + hostwatch_alerting::MAX_SILENCE_MS + 60_000,
            created_by: "tester".into(),
            comment: String::new(),
        })
        .await;
    let e = too_long.unwrap_err().to_string();
    assert!(e.contains("at most 365 days"), "{e}");
    let silence = engine
        .alerting
        .create_silence(NewSilence {
            matchers: vec!["host=web1".into()],
            starts_ms: 0,
            ends_ms: now_ms() + 3_600_000,
            created_by: "tester".into(),
            comment: "maintenance".into(),
        })
        .await
        .unwrap();
    engine.cpu("web1", now_ms(), 0.99);
    engine.cpu("web2", now_ms(), 0.99);
    receiver.wait_for("web2's page", 1).await;
    assert!(receiver.for_host("web1").is_empty());
    let web1 = engine
        .alerting
        .alerts()
        .into_iter()
        .find(|a| a.labels["host"] == "web1")
        .unwrap();
    assert_eq!(
        engine.alerting.silenced_by(&web1.labels),
        std::slice::from_ref(&silence.id)
    );
    engine.alerting.expire_silence(&silence.id).await.unwrap();
    let again = engine.alerting.expire_silence(&silence.id).await;
    let e = again.unwrap_err().to_string();
    assert!(e.contains("has already ended"), "{e}");
    receiver.wait_for("web1's page after the silence", 2).await;
    assert_eq!(receiver.for_host("web1").len(), 1);
    assert!(engine.alerting.expire_silence("nope").await.is_err());
    assert_eq!(engine.alerting.silences()[0].comment, "maintenance");
    engine.stop().await;
}

#[tokio::test]
async fn alertmanager_hook_posts_api_v2_alerts() {
    let receiver = Receiver::start().await;
    let (_dir, db) = temp_db();
    let text = format!(
        "{RULE}\n[[alerting.hooks]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://{}\"\n",
        receiver.addr
    );
    let mut engine = Engine::start(&db, &text);
    let t = now_ms();
    engine.cpu("web1", t, 0.99);
    let got = receiver.wait_for("the push", 1).await;
    let alerts = got[0].body.as_array().expect("an array of alerts");
    assert_eq!(alerts[0]["labels"]["alertname"], "cpu_busy");
    assert_eq!(alerts[0]["labels"]["host"], "web1");
    assert_eq!(alerts[0]["startsAt"], hostwatch_alerting::format_rfc3339(t));
    // Firing: ends in the future, beyond the next re-push.
    let ends = alerts[0]["endsAt"].as_str().unwrap().to_owned();
    assert!(
        ends > hostwatch_alerting::format_rfc3339(now_ms() + 60_000),
        "{ends}"
    );
    engine.cpu("web1", t + 1, 0.1);
    let got = receiver.wait_for("the resolution", 2).await;
    assert_eq!(
        got[1].body[0]["endsAt"],
        hostwatch_alerting::format_rfc3339(t + 1)
    );
    engine.stop().await;
}

#[tokio::test]
async fn exec_hooks_get_the_json_and_their_exit_status_decides_retries() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path.display().to_string()
    };
    let ok = script(
        "ok",
        &format!(
            "cat > {0}.json\nenv | grep ^HOSTWATCH_ | sort > {0}.env",
            out.display()
        ),
    );
    let fails = script("fails", "echo 'no pager configured' >&2\nexit 1");
    let later = script("later", "exit 75");
    let slow = script("slow", "exec sleep 30");
    let hook = |name: &str, path: &str| {
        format!(
            "[[alerting.hooks]]\nname = \"{name}\"\nkind = \"exec\"\ncommand = [{path:?}]\ngroup_wait = \"0s\"\nmin_backoff = \"20ms\"\nmax_backoff = \"50ms\"\ntimeout = \"5s\"\n"
        )
    };
    let text = format!(
        "{RULE}\n{}\n{}\n{}\n{}",
        hook("ok", &ok),
        hook("fails", &fails),
        hook("later", &later),
        hook("slow", &slow).replace("timeout = \"5s\"", "timeout = \"100ms\"")
    );
    let (_db_dir, db) = temp_db();
    let mut engine = Engine::start(&db, &text);
    engine.cpu("web1", now_ms(), 0.99);
    eventually("the outcomes", || async {
        let stats = engine.alerting.delivery_stats();
        let done = stats.get("ok").is_some_and(|s| s.delivered == 1)
            && stats.get("fails").is_some_and(|s| s.failed == 1)
            && stats.get("later").is_some_and(|s| s.retried >= 2)
            && stats.get("slow").is_some_and(|s| s.retried >= 1);
        done.then_some(())
    })
    .await;
    let stats = engine.alerting.delivery_stats();
    assert_eq!((stats["fails"].retried, stats["later"].delivered), (0, 0));
    let json: Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", out.display())).unwrap()).unwrap();
    assert_eq!(json["version"], "4");
    assert_eq!(json["alerts"][0]["labels"]["host"], "web1");
    let env = std::fs::read_to_string(format!("{}.env", out.display())).unwrap();
    for expected in [
        "HOSTWATCH_STATUS=firing",
        "HOSTWATCH_ALERTNAMES=cpu_busy",
        "HOSTWATCH_HOSTS=web1",
        "HOSTWATCH_ALERT_COUNT=1",
        "HOSTWATCH_HOOK=ok",
    ] {
        assert!(env.contains(expected), "{expected} not in {env}");
    }
    engine.stop().await;
}

#[tokio::test]
async fn without_a_writable_outbox_notifications_go_out_from_memory_and_state_is_written_back() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = webhook(receiver.addr, "repeat_interval = \"1h\"");
    let db = sled::open(dir.path()).unwrap();
    let mut engine = Engine::start(&db, &text);
    // What the collector does to reopen its failed database: until the
    // trees are attached again, nothing can be written.
    engine.alerting.detach_state();
    drop(db);
    assert!(engine.alerting.state_failure().is_some());
    receiver.respond(&[503]);
    engine.cpu("web1", now_ms(), 0.99);
    // Delivered from memory, with the hook's retries.
    let got = receiver.wait_for("the page, from memory", 2).await;
    assert_eq!(got[1].body["status"], "firing");
    assert_eq!(
        got[0].headers["idempotency-key"],
        got[1].headers["idempotency-key"]
    );
    // Every handle was let go: the database opens again in this process
    // (sled holds a lock on its files until the last handle is gone).
    let db = sled::open(dir.path()).unwrap();
    engine.alerting.attach_state(&db).unwrap();
    assert_eq!(engine.alerting.state_failure(), None);
    engine.stop().await;

    // The alert and what the hook was told were written back: a restart
    // neither forgets web1's alert nor pages it again.
    let mut engine = Engine::start(&db, &text);
    engine.seq = 100;
    assert_eq!(engine.alerting.alerts()[0].labels["host"], "web1");
    engine.cpu("web1", now_ms(), 0.99);
    // web2 paging (through the outbox again) is the barrier.
    engine.cpu("web2", now_ms(), 0.99);
    receiver.wait_for("web2's page", 3).await;
    // The page delivered from memory may be sent once more from the
    // outbox, with the same key (attach_state requeues what a worker may
    // be delivering); paging web1 again would be a new notification.
    let web1 = receiver.for_host("web1");
    assert!(web1.len() >= 2, "{} requests for web1", web1.len());
    for request in &web1 {
        assert_eq!(
            request.headers["idempotency-key"], got[0].headers["idempotency-key"],
            "web1 paged again"
        );
    }
    engine.stop().await;
}

#[tokio::test]
async fn notifications_waiting_in_memory_go_into_the_outbox_once_it_can_be_written() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = webhook(receiver.addr, "repeat_interval = \"1h\"");
    let db = sled::open(dir.path()).unwrap();
    let mut engine = Engine::start(&db, &text);
    engine.alerting.detach_state();
    drop(db);
    // The receiver is down: the page waits in memory, being retried.
    receiver.respond(&[503; 10_000]);
    engine.cpu("web1", now_ms(), 0.99);
    let refused = receiver.wait_for("a refused attempt", 1).await;
    let key = refused[0].headers["idempotency-key"].clone();
    let db = sled::open(dir.path()).unwrap();
    engine.alerting.attach_state(&db).unwrap();
    // A restart now loses nothing: the page is in the outbox.
    engine.stop().await;
    receiver.state.responses.lock().unwrap().clear();
    let before = receiver.received().len();
    let engine = Engine::start(&db, &text);
    let delivered = eventually("the page after the restart", || async {
        receiver.received().get(before).cloned()
    })
    .await;
    assert_eq!(delivered.headers["idempotency-key"], key);
    assert_eq!(delivered.body["status"], "firing");
    engine.stop().await;
}
