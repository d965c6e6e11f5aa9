//! PromQL over gRPC (`Query.Promql`) and the `hostwatch promql` and
//! `hostwatch query` commands, run as real processes, against a real
//! collector holding known samples: values in their units, Prometheus'
//! JSON, and each bad input refused with its status and exit code.

use hostwatch_pki::Role;
use hostwatch_proto::v1::promql_request::When;
use hostwatch_proto::v1::promql_response::Result as Answer;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{Batch, Label, PromqlRange, PromqlRequest, SeriesPoints};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use tonic::Code;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Two series of one host matched to one without `group_left`: an
/// evaluation error (execution), within the tests' sample limit.
const MANY_TO_ONE: &str = "{host=\"web1\", __name__=~\"host_(uptime_seconds|memory_available_bytes)\"} + on(host) host_uptime_seconds";

/// Stores ten minutes (every 15 s) for host `web1`, ending at the returned
/// time (ms, a whole minute): 1.5 GiB available, a CPU at 25 %, a network
/// counter growing 1.5 KiB/s, an uptime from 90 s.
async fn store_samples(pki: &TestPki, addr: SocketAddr) -> i64 {
    let end = now_ms() / 60_000 * 60_000 - 60_000;
    let times: Vec<i64> = (0..=40).map(|i| end - 600_000 + i * 15_000).collect();
    let label = |name: &str, value: &str| Label {
        name: name.into(),
        value: value.into(),
    };
    let series = |metric: &str, labels: Vec<Label>, value: &dyn Fn(f64) -> f64| SeriesPoints {
        metric: metric.into(),
        labels,
        timestamps_ms: times.clone(),
        values: (0..times.len()).map(|i| value(i as f64)).collect(),
    };
    let batch = Batch {
        seq: 1,
        series: vec![
            series("host_memory_available_bytes", vec![], &|_| 1.5 * GIB),
            series(
                "host_cpu_utilization_ratio",
                vec![label("cpu", "total")],
                &|_| 0.25,
            ),
            series(
                "host_network_receive_bytes_total",
                vec![label("device", "eth0")],
                &|i| i * 15.0 * 1536.0,
            ),
            series("host_uptime_seconds", vec![], &|i| 90.0 + i * 15.0),
        ],
        ..Default::default()
    };
    deliver_batch(pki.files(Role::Agent, "web1"), addr, "web1", 1, batch).await;
    end
}

/// A `cli.toml` in `dir` for `role`'s certificate.
fn cli_toml(pki: &TestPki, role: Role, addr: SocketAddr, dir: &Path) -> PathBuf {
    let files = pki.files(role, "tester");
    let path = dir.join(format!("cli-{role}.toml"));
    std::fs::write(
        &path,
        format!(
            "collector = \"{addr}\"\nserver_name = \"localhost\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            files.ca, files.cert, files.key
        ),
    )
    .unwrap();
    path
}

/// Runs the `hostwatch` program with `cli_toml` and `args`.
async fn hostwatch(cli_toml: &Path, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-hostwatch"));
    command.arg("--config").arg(cli_toml).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `hostwatch` and requires success; its standard output.
async fn stdout_of(cli_toml: &Path, args: &[&str]) -> String {
    let out = hostwatch(cli_toml, args).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs `hostwatch` and requires exit `code` with `needles` in stderr.
async fn refused(cli_toml: &Path, args: &[&str], code: i32, needles: &[&str]) {
    let out = hostwatch(cli_toml, args).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle} not in {args:?}: {stderr}"
        );
    }
}

/// The line of `table` starting with `series`, its cells split on runs
/// of two spaces.
fn row<'t>(table: &'t str, series: &str) -> Vec<&'t str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in {table}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339(t).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn promql_and_query_print_stored_values_in_their_units() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), "[query]\nmax_samples = 100\n");
    let collector = RunningCollector::start(config).await;
    let end = store_samples(&pki, collector.addr).await;
    let at = rfc3339(end);
    let operator = cli_toml(&pki, Role::Operator, collector.addr, data.path());

    let table = stdout_of(
        &operator,
        &["promql", "host_memory_available_bytes", "--at", &at],
    )
    .await;
    assert_eq!(row(&table, "SERIES"), ["SERIES", "VALUE"], "{table}");
    assert_eq!(
        row(&table, "host_memory_available_bytes"),
        ["host_memory_available_bytes{host=\"web1\"}", "1.5 GiB"]
    );
    let table = stdout_of(
        &operator,
        &["promql", "host_cpu_utilization_ratio", "--at", &at],
    )
    .await;
    assert_eq!(row(&table, "host_cpu")[1], "25%", "{table}");
    // No metric name in the answer: the unit comes from the expression.
    let rate = "rate(host_network_receive_bytes_total[5m])";
    let table = stdout_of(&operator, &["promql", rate, "--at", &at]).await;
    assert_eq!(
        row(&table, "{"),
        ["{device=\"eth0\",host=\"web1\"}", "1.5 KiB/s"]
    );
    let table = stdout_of(
        &operator,
        &["promql", "host_uptime_seconds + 30", "--at", &at],
    )
    .await;
    assert_eq!(row(&table, "{")[1], "720", "{table}");

    // A range: a sparkline per series, with the lowest, highest and last.
    let range = ["--at", &at, "--range", "5m", "--step", "1m"];
    let table = stdout_of(
        &operator,
        &[&["promql", "host_uptime_seconds"][..], &range].concat(),
    )
    .await;
    assert_eq!(
        row(&table, "SERIES"),
        ["SERIES", "TREND", "MIN", "MAX", "LAST"]
    );
    assert_eq!(
        row(&table, "host_uptime_seconds"),
        [
            "host_uptime_seconds{host=\"web1\"}",
            "▁▂▄▅▇█",
            "6m 30s",
            "11m 30s",
            "11m 30s"
        ]
    );
    let summed = "sum(rate(host_network_receive_bytes_total[1m]))";
    let table = stdout_of(&operator, &[&["promql", summed][..], &range].concat()).await;
    assert_eq!(
        row(&table, "{}"),
        ["{}", "▄▄▄▄▄▄", "1.5 KiB/s", "1.5 KiB/s", "1.5 KiB/s"]
    );

    // --json: Prometheus' shape, raw numbers.
    let json = stdout_of(
        &operator,
        &[
            "promql",
            "host_memory_available_bytes",
            "--at",
            &at,
            "--json",
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "host_memory_available_bytes", "host": "web1"},
             "value": [end / 1000, "1610612736"]}
        ]}})
    );
    let json = stdout_of(
        &operator,
        &[&["promql", rate, "--json"][..], &range].concat(),
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["data"]["resultType"], "matrix", "{json}");
    let values = json["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 6, "{json}");
    assert_eq!(values[5], serde_json::json!([end / 1000, "1536"]));

    // `hostwatch query` shows units too; its --json keeps raw numbers.
    let query = ["query", "--host", "web1", "--until", &at, "--since", "5m"];
    let out = stdout_of(
        &operator,
        &[&query[..], &["host_cpu_utilization_ratio"]].concat(),
    )
    .await;
    let values: Vec<&str> = out.lines().skip(1).map(|l| row(l, "")[1]).collect();
    // (until - 5m, until]: 20 samples 15 s apart.
    assert_eq!(values.len(), 20, "{out}");
    assert!(values.iter().all(|v| *v == "25%"), "{out}");
    let stepped = [
        "host_network_receive_bytes_total",
        "--step",
        "1m",
        "--agg",
        "rate",
    ];
    let out = stdout_of(&operator, &[&query[..], &stepped].concat()).await;
    assert!(out.contains("  1.5 KiB/s"), "{out}");
    let out = stdout_of(
        &operator,
        &[&query[..], &["host_uptime_seconds", "--json"]].concat(),
    )
    .await;
    assert!(out.contains("\"value\": 690.0"), "{out}");
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_promql_gets_a_clear_error_and_exit_code() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), "[query]\nmax_samples = 100\n");
    let collector = RunningCollector::start(config).await;
    let end = store_samples(&pki, collector.addr).await;
    let at = rfc3339(end);
    let operator = cli_toml(&pki, Role::Operator, collector.addr, data.path());
    let bad = Code::InvalidArgument;
    for (args, code, needles) in [
        (
            &["promql", "sum("][..],
            64,
            &["sum(: unclosed left parenthesis", "InvalidArgument"][..],
        ),
        (&["promql", "no_such_fn(up)"], 64, &["no_such_fn"]),
        (
            &["promql", "up", "--range", "1h", "--step", "0s"],
            64,
            &["greater than zero"],
        ),
        (&["promql", "up", "--step", "1m"], 64, &["--range"]),
        (&["promql", "up", "--at", "soon"], 64, &["soon"]),
        (
            &["promql", "up", "--range", "12000s", "--step", "1s"],
            64,
            &["11000 points", "InvalidArgument"],
        ),
        (
            &["promql", "max_over_time({host=\"web1\"}[10m])", "--at", &at],
            1,
            &["too many samples", "ResourceExhausted"],
        ),
        (
            &["promql", MANY_TO_ONE, "--at", &at],
            1,
            &[
                "many-to-one matching must be explicit",
                "FailedPrecondition",
            ],
        ),
    ] {
        refused(&operator, args, code, needles).await;
    }

    // What the CLI cannot send: the RPC's own checks.
    let mut client = operator_client(&pki, collector.addr).await;
    let range = |start_ms, end_ms, step_ms| {
        Some(When::Range(PromqlRange {
            start_ms,
            end_ms,
            step_ms,
        }))
    };
    for (expr, when, code, needle) in [
        ("1", range(end, end - 1, 1_000), bad, "before start"),
        ("1", range(end, end, 0), bad, "zero or negative"),
        ("1", range(end, end, -1_000), bad, "zero or negative"),
        ("1", range(0, 11_001_000, 1_000), bad, "11000 points"),
        ("", None, bad, "expr"),
    ] {
        let request = PromqlRequest {
            expr: expr.into(),
            when,
        };
        let status = client.promql(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status}");
        assert!(status.message().contains(needle), "{needle}: {status}");
    }
    // A scalar is a scalar, at the time asked.
    let request = PromqlRequest {
        expr: "1 + 1".into(),
        when: Some(When::TimeMs(1_000)),
    };
    let answer = client.promql(request).await.unwrap().into_inner();
    assert!(
        matches!(answer.result, Some(Answer::Scalar(s)) if s.value == 2.0 && s.timestamp_ms == 1_000)
    );

    // Viewers may query; agents may not.
    let viewer = cli_toml(&pki, Role::Viewer, collector.addr, data.path());
    let table = stdout_of(
        &viewer,
        &["promql", "host_cpu_utilization_ratio", "--at", &at],
    )
    .await;
    assert_eq!(row(&table, "host_cpu")[1], "25%", "{table}");
    let agent = cli_toml(&pki, Role::Agent, collector.addr, data.path());
    refused(
        &agent,
        &["promql", "host_cpu_utilization_ratio"],
        1,
        &["PermissionDenied", "operator or viewer"],
    )
    .await;
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_over_the_timeout_is_deadline_exceeded() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    // So short that no evaluation finishes within it.
    let config = collector_config_with(&pki, data.path(), "[query]\ntimeout = \"1ns\"\n");
    let collector = RunningCollector::start(config).await;
    let end = store_samples(&pki, collector.addr).await;
    let mut client = operator_client(&pki, collector.addr).await;
    let request = PromqlRequest {
        expr: "host_uptime_seconds".into(),
        when: Some(When::TimeMs(end)),
    };
    let status = client.promql(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("timed out"), "{status}");
    let operator = cli_toml(&pki, Role::Operator, collector.addr, data.path());
    refused(
        &operator,
        &["promql", "host_uptime_seconds"],
        1,
        &["timed out", "DeadlineExceeded"],
    )
    .await;
    collector.stop().await;
}

async fn operator_client(
    pki: &TestPki,
    addr: SocketAddr,
) -> QueryClient<tonic::transport::Channel> {
    QueryClient::new(
        channel(pki.files(Role::Operator, "tester"), addr)
            .await
            .unwrap(),
    )
}
