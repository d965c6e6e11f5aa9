//! hostwatch's own HTTP endpoints (`/api/v1/hostwatch/...`): a real
//! collector with `http_listen` and a real agent on this machine; its
//! facts checked against /proc, its process snapshots against the
//! running processes, alert transitions from an always-firing rule, and
//! the same answers as the gRPC Query service.

use hostwatch_pki::{IssueOptions, Role, TlsFiles};
use hostwatch_proto::v1::{AlertHistoryRequest, ListHostsRequest};
use hostwatch_tests::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HOST: &str = "web1";
const WAIT: Duration = Duration::from_secs(30);
/// The first fires as soon as the host has sent its uptime; the second
/// stays pending.
const RULES: &str = r#"
[[alerting.rules]]
name = "api_test_has_uptime"
kind = "threshold"
metric = "host_uptime_seconds"
aggregate = "last"
window = "1s"
op = ">"
raise = 0
for = "0s"
labels = { severity = "info" }

[[alerting.rules]]
name = "api_test_pending"
kind = "threshold"
metric = "host_uptime_seconds"
aggregate = "last"
window = "1s"
op = ">"
raise = 0
for = "1h"
"#;

/// A viewer's client over TLS 1.3, trusting the test CA.
fn client(files: &TlsFiles, http: SocketAddr) -> reqwest::Client {
    let config = hostwatch_pki::client_config(files)
        .unwrap()
        .0
        .as_ref()
        .clone();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", http)
        .build()
        .unwrap()
}

/// `GET path?query`: the status and the JSON answer.
async fn get(client: &reqwest::Client, http: SocketAddr, path: &str, query: &str) -> (u16, Value) {
    let url = format!("https://localhost:{}{path}?{query}", http.port());
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, body)
}

/// Milliseconds of an RFC 3339 time.
fn ms(text: &Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {text}"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// This machine's CPUs as /proc/stat counts them (`cpuN` lines).
fn cpu_count() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64
}

fn mem_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn hosts_processes_and_history_from_a_real_agent() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), RULES);
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let stop = CancellationToken::new();
    let collector = tokio::spawn(hostwatch_collector::serve_with_http(
        config,
        grpc,
        Some(http),
        stop.clone().cancelled_owned(),
    ));
    let state = tempfile::tempdir().unwrap();
    let mut agent_config = agent_config(&pki, HOST, grpc_addr, state.path());
    // Every process of a machine with few enough, this test's included.
    agent_config.processes.top = 128;
    // A certificate expiring at a known second, which the host reports.
    let expires_s = now_ms() / 1000 + 86_400 - 7;
    let mut options = IssueOptions::valid_for_days(1);
    options.not_after = time::OffsetDateTime::from_unix_timestamp(expires_s).unwrap();
    agent_config.tls = pki.files_with(Role::Agent, HOST, &options);
    let agent = RunningAgent::start(agent_config);
    let viewer = client(&pki.files(Role::Viewer, "console"), http_addr);
    let c = (&viewer, http_addr);

    // The host, once its agent has said hello, with this machine's facts.
    let host = eventually(WAIT, "the host with its facts", || async {
        let (status, body) = get(c.0, c.1, &format!("/api/v1/hostwatch/hosts/{HOST}"), "").await;
        (status == 200 && body["data"]["facts"].is_object()).then(|| body["data"].clone())
    })
    .await;
    let facts = &host["facts"];
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(facts["kernelVersion"], kernel.trim(), "{host}");
    assert_eq!(facts["cpuCount"], cpu_count(), "{host}");
    assert_eq!(facts["memoryBytes"], mem_total_bytes(), "{host}");
    assert_eq!(facts["agentVersion"], env!("CARGO_PKG_VERSION"), "{host}");
    assert!(!facts["cpuModel"].as_str().unwrap().is_empty(), "{host}");
    let boot = ms(&facts["bootTime"]);
    assert!(boot > 0 && boot < now_ms(), "{host}");
    assert_eq!(
        (host["connected"].clone(), host["cleanShutdown"].clone()),
        (true.into(), false.into())
    );
    assert!(now_ms() - ms(&host["lastSeen"]) < 60_000, "{host}");
    assert_eq!(ms(&host["certificateExpiry"]), expires_s * 1000, "{host}");

    // Listed alike by the gRPC Query service and the HTTP page.
    let (status, body) = get(c.0, c.1, "/api/v1/hostwatch/hosts", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["next"], "");
    let listed = body["data"]["hosts"].as_array().unwrap();
    let mut query = operator(&pki, grpc_addr).await;
    let grpc_hosts = query
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(listed.len(), grpc_hosts.len());
    assert_eq!(listed[0]["host"], grpc_hosts[0].host_id);
    let grpc_facts = grpc_hosts[0].facts.clone().unwrap();
    assert_eq!(listed[0]["facts"]["osName"], grpc_facts.os_name);
    assert_eq!(listed[0]["facts"]["cpuModel"], grpc_facts.cpu_model);
    assert_eq!(grpc_hosts[0].certificate_expires_ms, expires_s * 1000);
    // Compact: the same hosts with their status only, no facts.
    let (status, body) = get(c.0, c.1, "/api/v1/hostwatch/hosts", "compact=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["next"], "");
    let compact = body["data"]["hosts"].as_array().unwrap();
    assert_eq!(compact.len(), listed.len());
    let mut keys: Vec<&str> = compact[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cleanShutdown",
            "connected",
            "host",
            "lastSeen",
            "revoked",
            "up"
        ],
        "{body}"
    );
    assert!(compact[0]["revoked"].is_null(), "{body}");
    assert!(listed[0]["revoked"].is_null(), "{body}");
    assert_eq!(compact[0]["host"], listed[0]["host"]);
    assert_eq!(compact[0]["up"], listed[0]["up"]);
    assert_eq!(compact[0]["cleanShutdown"], listed[0]["cleanShutdown"]);
    assert!(now_ms() - ms(&compact[0]["lastSeen"]) < 60_000, "{body}");

    // The newest snapshot: real processes of this machine.
    let snapshot = eventually(WAIT, "a process snapshot", || async {
        let (_, body) = get(
            c.0,
            c.1,
            "/api/v1/hostwatch/processes",
            &format!("host={HOST}"),
        )
        .await;
        body["data"].is_object().then(|| body["data"].clone())
    })
    .await;
    let processes = snapshot["processes"].as_array().unwrap();
    assert!(!processes.is_empty(), "{snapshot}");
    for p in processes {
        let pid = p["pid"].as_u64().unwrap();
        // A process may have ended since; one still running has its name.
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            assert_eq!(p["name"], comm.trim(), "{p}");
        }
        assert!(
            p["cpuCores"].as_f64().unwrap() >= 0.0 && p["rssBytes"].is_u64(),
            "{p}"
        );
    }
    let ours = u64::from(std::process::id());
    let machine = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u32>()
                .is_ok()
        })
        .count();
    assert!(
        processes.iter().any(|p| p["pid"] == ours) || machine > 128,
        "this test's process {ours} is not in {snapshot}"
    );
    // At a time: the snapshot at or before it; before any, none.
    let at = ms(&snapshot["time"]);
    let (_, body) = get(
        c.0,
        c.1,
        "/api/v1/hostwatch/processes",
        &format!("host={HOST}&time={}", at as f64 / 1000.0),
    )
    .await;
    assert_eq!(ms(&body["data"]["time"]), at, "{body}");
    let (status, body) = get(
        c.0,
        c.1,
        "/api/v1/hostwatch/processes",
        &format!("host={HOST}&time=1000"),
    )
    .await;
    assert_eq!((status, body["data"].clone()), (200, Value::Null));

    // The always-firing rule's transitions: filtered by host, alert
    // name, state, and limited; the same as the gRPC Query service's.
    let rule = "api_test_has_uptime";
    let pending_rule = "api_test_pending";
    let history = eventually(WAIT, "the rules' transitions", || async {
        let (_, body) = get(c.0, c.1, "/api/v1/hostwatch/alerts/history", "").await;
        let t = body["data"].as_array()?;
        let has = |rule: &str, to: &str| t.iter().any(|t| t["alertname"] == rule && t["to"] == to);
        (has(rule, "firing") && has(pending_rule, "pending")).then(|| t.clone())
    })
    .await;
    // Each filter keeps only what it names; other rules (a busy machine's
    // CPU alert) may pass the others.
    for (query, want_rule, want_to) in [
        (
            format!("host={HOST}&alertname={rule}&state=firing"),
            Some(rule),
            Some("firing"),
        ),
        ("state=pending".to_owned(), None, Some("pending")),
        (
            format!("alertname={pending_rule}"),
            Some(pending_rule),
            None,
        ),
    ] {
        let (_, body) = get(c.0, c.1, "/api/v1/hostwatch/alerts/history", &query).await;
        let found = body["data"].as_array().unwrap();
        assert!(!found.is_empty(), "{query}: {body}");
        for t in found {
            if let Some(want) = want_rule {
                assert_eq!(t["alertname"], want, "{query}: {t}");
            }
            if let Some(want) = want_to {
                assert_eq!(t["to"], want, "{query}: {t}");
            }
            assert_eq!(t["labels"]["host"], HOST, "{t}");
            assert!(ms(&t["at"]) <= now_ms(), "{t}");
        }
    }
    let (_, body) = get(c.0, c.1, "/api/v1/hostwatch/alerts/history", "").await;
    let all = body["data"].as_array().unwrap().clone();
    assert!(all.len() >= history.len(), "{body}");
    let grpc_history = query
        .alert_history(AlertHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .transitions;
    let ids = |ts: &[Value]| {
        ts.iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let grpc_ids: Vec<u64> = grpc_history.iter().map(|t| t.id).collect();
    // Transitions may follow between the two reads, never come before.
    assert_eq!(ids(&all)[..], grpc_ids[..all.len()]);
    let (_, body) = get(c.0, c.1, "/api/v1/hostwatch/alerts/history", "limit=1").await;
    let newest = body["data"].as_array().unwrap();
    assert_eq!(newest.len(), 1, "{body}");
    assert!(newest[0]["id"].as_u64() >= all.last().unwrap()["id"].as_u64());
    let (_, body) = get(
        c.0,
        c.1,
        "/api/v1/hostwatch/alerts/history",
        "alertname=no_such_rule",
    )
    .await;
    assert_eq!(body["data"], Value::Array(vec![]));

    // The pending and firing alerts, filtered by label matchers (as the
    // console's host page asks for its host's): every filter must match.
    let alerts = |query: &'static str| async move {
        let (status, body) = get(c.0, c.1, "/api/v1/alerts", query).await;
        assert_eq!(status, 200, "{query}: {body}");
        let mut found: Vec<(String, String)> = body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap()
                    .starts_with("api_test_")
            })
            .map(|a| {
                assert_eq!(a["labels"]["host"], HOST, "{query}: {a}");
                let name = a["labels"]["alertname"].as_str().unwrap().to_owned();
                (name, a["state"].as_str().unwrap().to_owned())
            })
            .collect();
        found.sort();
        found
    };
    let both = vec![
        (rule.to_owned(), "firing".to_owned()),
        (pending_rule.to_owned(), "pending".to_owned()),
    ];
    assert_eq!(alerts("").await, both);
    assert_eq!(alerts("filter=host%3D%22web1%22").await, both);
    assert_eq!(alerts("filter=host%3Dweb1").await, both);
    assert_eq!(alerts("filter=host%3D%22web2%22").await, vec![]);
    assert_eq!(
        alerts("filter=host%3D%22web1%22&filter=alertname%3D%22api_test_pending%22").await,
        both[1..]
    );
    assert_eq!(
        alerts("filter=alertname%3D~%22api_test_.%2A%22&filter=host!%3D%22web1%22").await,
        vec![]
    );
    for bad in ["filter=host", "filter=alertname%3D~(", "filter=%3Dweb1"] {
        let (status, body) = get(c.0, c.1, "/api/v1/alerts", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errorType"], "bad_data", "{bad}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("invalid parameter \"filter\""),
            "{bad}: {error}"
        );
    }

    agent.stop().await;
    stop.cancel();
    collector.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_input_gets_bad_data_and_unknown_hosts_not_found() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), "");
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let stop = CancellationToken::new();
    let collector = tokio::spawn(hostwatch_collector::serve_with_http(
        config,
        grpc,
        Some(http),
        stop.clone().cancelled_owned(),
    ));
    let viewer = client(&pki.files(Role::Viewer, "console"), http_addr);
    let cases = [
        (
            "/api/v1/hostwatch/hosts",
            "limit=many",
            400,
            "bad_data",
            "\"limit\"",
        ),
        (
            "/api/v1/hostwatch/hosts",
            "compact=yes",
            400,
            "bad_data",
            "\"compact\"",
        ),
        (
            "/api/v1/hostwatch/hosts/nope",
            "",
            404,
            "not_found",
            "\"nope\"",
        ),
        (
            "/api/v1/hostwatch/processes",
            "",
            400,
            "bad_data",
            "\"host\"",
        ),
        (
            "/api/v1/hostwatch/processes",
            "host=nope&time=soon",
            400,
            "bad_data",
            "\"time\"",
        ),
        (
            "/api/v1/hostwatch/processes",
            "host=nope",
            404,
            "not_found",
            "\"nope\"",
        ),
        (
            "/api/v1/hostwatch/alerts/history",
            "state=open",
            400,
            "bad_data",
            "\"state\"",
        ),
        (
            "/api/v1/hostwatch/alerts/history",
            "limit=-1",
            400,
            "bad_data",
            "\"limit\"",
        ),
        (
            "/api/v1/hostwatch/alerts/history",
            "since=soon",
            400,
            "bad_data",
            "\"since\"",
        ),
        (
            "/api/v1/hostwatch/alerts/history",
            "host=nope",
            404,
            "not_found",
            "\"nope\"",
        ),
        (
            "/api/v1/hostwatch/nothing",
            "",
            404,
            "not_found",
            "no such endpoint",
        ),
    ];
    for (path, query, status, error_type, names) in cases {
        let (got, body) = get(&viewer, http_addr, path, query).await;
        assert_eq!(got, status, "{path}?{query}: {body}");
        assert_eq!(body["status"], "error", "{path}?{query}: {body}");
        assert_eq!(body["errorType"], error_type, "{path}?{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(names), "{path}?{query}: {error}");
    }
    // Without a reader's certificate or a token: 401, as the API.
    let stranger = reqwest::Client::builder()
        .tls_backend_preconfigured(client_without_certificate(&pki.ca_path()))
        .resolve("localhost", http_addr)
        .build()
        .unwrap();
    let (status, body) = get(&stranger, http_addr, "/api/v1/hostwatch/hosts", "").await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (401, Some("unauthorized"))
    );
    stop.cancel();
    collector.await.unwrap().unwrap();
}
