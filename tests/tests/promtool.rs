//! promtool as a client of the collector's HTTPS API: Debian's promtool
//! (2.42, installed by `tests/compat/run.sh`, which runs this test) asks a
//! quick start's collector, run as a process with its agent, `query
//! instant`, `range`, `series` and `labels`, and must print what the API
//! answers.
//!
//! promtool 2.42 has no TLS client settings for its queries (no client
//! certificate; `--http.config.file` came with later releases), but Go
//! trusts the CA named by `SSL_CERT_FILE` and sends a URL's user
//! information as basic credentials, which the API reads with the token
//! as the password: promtool asks `https://promtool:<token>@host:port`
//! with the quick start's viewer token, as docs/grafana.md tells.
//! Without the token, promtool gets the API's 401, which it reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_tests::now_ms;
use hostwatch_tests::quickstart::{Programs, QuickStart};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Samples of the agent's series before promtool asks.
const SAMPLES: usize = 5;
const WAIT: Duration = Duration::from_secs(60);

/// Runs `promtool query ARGS...` (on the blocking pool, off the test's
/// runtime) and returns its output; fails the test if promtool is
/// missing.
async fn promtool(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("promtool")
            .arg("query")
            .args(&args)
            .envs(env)
            .output()
            .expect("promtool (tests/compat/run.sh installs Debian's prometheus package)")
    })
    .await
    .unwrap()
}

/// promtool's `-o json` output, which must have succeeded.
fn json(what: &str, out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promtool query {what}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

/// promtool's text output (one item a line), which must have succeeded.
fn lines(what: &str, out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "promtool query {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A time in Unix seconds with milliseconds, as promtool's flags take it.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `[[t, "v"], ...]` as (ms, value) pairs.
fn points(values: &Value) -> Vec<(i64, f64)> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            (t, p[1].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's promtool 2.42: tests/compat/run.sh"]
async fn promtool_queries_the_collector() {
    let programs = Programs {
        hostwatch: Path::new(env!("CARGO_BIN_EXE_e2e-hostwatch")),
        collector: Path::new(env!("CARGO_BIN_EXE_e2e-collector")),
        agent: Path::new(env!("CARGO_BIN_EXE_e2e-agent")),
    };
    let qs = QuickStart::start(&programs, "1s", "");
    qs.wait_for_samples("host_uptime_seconds", SAMPLES, WAIT)
        .await;
    let token = std::fs::read_to_string(qs.dir.join("grafana.token")).unwrap();
    let direct = format!("https://localhost:{}", qs.http.port());
    let url = format!(
        "https://promtool:{}@localhost:{}",
        token.trim(),
        qs.http.port()
    );
    let ca = qs.dir.join("certs/ca.pem").display().to_string();
    let trust = || vec![("SSL_CERT_FILE", ca.clone())];
    let host = qs.host.clone();
    let at = now_ms();
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // instant: the newest uptime at `at`, for this host.
    let expr = format!("host_uptime_seconds{{host=\"{host}\"}}");
    let out = promtool(
        args(&["-o", "json", "instant", "--time", &seconds(at), &url, &expr]),
        trust(),
    )
    .await;
    let vector = json("instant", &out);
    assert_eq!(vector.as_array().unwrap().len(), 1, "{vector}");
    let sample = &vector[0];
    assert_eq!(
        sample["metric"],
        serde_json::json!({"__name__": "host_uptime_seconds", "host": host})
    );
    assert_eq!(
        points(&Value::Array(vec![sample["value"].clone()]))[0].0,
        at
    );
    let uptime: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
    assert!(uptime > 0.0, "{sample}");

    // range: the last minute at a 1 s step: a point every second from the
    // agent's first sample to `at` (the 5-minute lookback fills the steps
    // between samples).
    let (start, end) = (seconds(at - 60_000), seconds(at));
    let expr = format!("host_load1{{host=\"{host}\"}}");
    let out = promtool(
        args(&[
            "-o", "json", "range", "--start", &start, "--end", &end, "--step", "1s", &url, &expr,
        ]),
        trust(),
    )
    .await;
    let matrix = json("range", &out);
    assert_eq!(matrix.as_array().unwrap().len(), 1, "{matrix}");
    assert_eq!(matrix[0]["metric"]["host"], host.as_str());
    let got = points(&matrix[0]["values"]);
    // The spool's first batch is the quick start's own, sampled just before
    // the agent started (its log: "next_seq=2 batches=1"), so SAMPLES
    // samples may span less than SAMPLES - 1 seconds.
    assert!(got.len() >= SAMPLES - 1, "{matrix}");
    assert_eq!(got.last().unwrap().0, at, "{matrix}");
    assert!(got.windows(2).all(|w| w[1].0 - w[0].0 == 1000), "{matrix}");
    assert!(got.iter().all(|(_, load)| *load >= 0.0), "{matrix}");

    // series and labels: this host's uptime series; the host label's values;
    // the metric names of one selector.
    let out = promtool(
        args(&["series", "--match", "host_uptime_seconds", &url]),
        trust(),
    )
    .await;
    assert_eq!(
        lines("series", &out),
        [format!(
            "{{__name__=\"host_uptime_seconds\", host=\"{host}\"}}"
        )]
    );
    let out = promtool(args(&["labels", &url, "host"]), trust()).await;
    assert_eq!(lines("labels host", &out), [host.as_str()]);
    let out = promtool(
        args(&[
            "labels",
            "--match",
            "{__name__=~\"host_load.*\"}",
            &url,
            "__name__",
        ]),
        trust(),
    )
    .await;
    assert_eq!(
        lines("labels __name__", &out),
        ["host_load1", "host_load15", "host_load5"]
    );

    // Without the token: the API's 401, reported.
    let out = promtool(args(&["instant", &direct, "1"]), trust()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("401") || stderr.contains("unauthorized"),
        "{stderr}"
    );
}

/// Runs `promtool check metrics` on `text` (on the blocking pool): its
/// output; fails the test, saying why, if promtool is missing.
async fn promtool_check_metrics(text: String) -> Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is missing: tests/compat/run.sh installs Debian's prometheus package, which has it");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// `promtool check metrics` (its 0.0.4 parser and its lint: help texts,
/// `_total` counters, base units) accepts the collector's and the agent's
/// `/metrics`, with every kind of family present: an agent streaming, a
/// hook, a forwarding destination, HTTP and gRPC requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's promtool 2.42: tests/compat/run.sh"]
async fn promtool_accepts_the_collectors_and_the_agents_metrics() {
    use hostwatch_tests::*;
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector_port: std::net::SocketAddr =
        format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent_port: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Nothing listens on the discard port: forwarding and the hook retry.
    let extra = format!(
        "metrics_listen = \"{collector_port}\"\n\
         [[forward]]\nname = \"nowhere\"\nurl = \"http://127.0.0.1:9/api/v1/push\"\n\
         [alerting]\n[[alerting.hooks]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n"
    );
    let collector = RunningCollector::start(collector_config_with(&pki, data.path(), &extra)).await;
    let state = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, "web1", collector.addr, state.path());
    config.metrics_listen = Some(agent_port);
    let agent = RunningAgent::start(config);
    let collector_text = eventually(WAIT, "batches ingested and forwarding tried", || async {
        let (_, text) = scrape(collector_port).await.ok()?;
        let ingested = metric_value(&text, "hostwatch_collector_batches_ingested_total", "")?;
        let failed = metric_value(
            &text,
            "hostwatch_collector_forward_samples_failed_total",
            "destination=\"nowhere\"",
        )?;
        (ingested >= 3.0 && failed > 0.0).then_some(text)
    })
    .await;
    for family in [
        "hostwatch_collector_hook_outbox_notifications{hook=\"oncall\"}",
        "hostwatch_collector_grpc_call_duration_seconds_bucket",
        "hostwatch_collector_store_maintenance_duration_seconds_bucket",
        "hostwatch_collector_connections_open{listener=\"grpc\"}",
        "process_start_time_seconds ",
    ] {
        assert!(
            collector_text.contains(family),
            "{family}:\n{collector_text}"
        );
    }
    let agent_text = eventually(WAIT, "the agent's figures", || async {
        let (_, text) = scrape(agent_port).await.ok()?;
        text.contains("hostwatch_agent_send_latency_seconds ")
            .then_some(text)
    })
    .await;
    for (what, text) in [("collector", collector_text), ("agent", agent_text)] {
        let out = promtool_check_metrics(text.clone()).await;
        assert!(
            out.status.success(),
            "promtool check metrics refuses the {what}'s /metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    agent.stop().await;
    collector.stop().await;
}
