//! Alerting end to end: a real agent samples this machine, the collector
//! evaluates its rules on ingest and delivers to a webhook receiver over
//! real mutual TLS; operators read alerts, history and a live watch. With
//! real processes: a page waiting in the outbox survives a collector SIGKILL.

use hostwatch_agent::config::{Pattern, WatchRule};
use hostwatch_pki::Role;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{
    AlertHistoryRequest, AlertState, CreateSilenceRequest, ExpireSilenceRequest, ListAlertsRequest,
    ListSilencesRequest, Matcher, ReloadRequest, WatchAlertsRequest, matcher,
};
use hostwatch_tests::*;
use std::process::{Child, Command};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A shell spinning on one core, found by the agent through the
/// `hostwatch-burner` in its command line. It stops by itself after 90 s
/// (checking the clock between counting rounds) and is killed when dropped.
struct Burner(Child);

impl Burner {
    fn start() -> Self {
        let script = r#"end=$(( $(date +%s) + 90 )); while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; done"#;
        Burner(
            Command::new("sh")
                .args(["-c", script, "hostwatch-burner"])
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rules(receiver: std::net::SocketAddr, client: &hostwatch_pki::TlsFiles) -> String {
    format!(
        r#"host_down_after = "2s"
[alerting]
default_rules = false
flap_window = "0s"
external_url = "https://hostwatch.example.com"

[[alerting.rules]]
name = "process_cpu_high"
kind = "threshold"
metric = "host_process_cpu_cores"
match = ["name=burner"]
op = ">"
raise = 0.3
clear = 0.1
cause = "cpu"
labels = {{ severity = "page" }}
annotations = {{ summary = "{{{{ labels.name }}}} on {{{{ host }}}} uses {{{{ value | percent }}}} of a core" }}

[[alerting.rules]]
name = "host_down"
kind = "host_down"
labels = {{ severity = "page" }}

[[alerting.hooks]]
name = "oncall"
kind = "webhook"
url = "https://localhost:{port}/hook"
group_wait = "0s"
group_interval = "0s"
[alerting.hooks.tls]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
"#,
        port = receiver.port(),
        ca = client.ca.display().to_string(),
        cert = client.cert.display().to_string(),
        key = client.key.display().to_string(),
    )
}

// One scenario over real processes: the host_down page needs the agent
// whose CPU page came first, and starting them again would cost seconds.
#[tokio::test]
async fn a_loaded_cpu_pages_with_the_busy_process_and_a_killed_agent_pages_host_down() {
    let pki = TestPki::new();
    let receiver = WebhookReceiver::start_mtls(&pki.files(Role::Collector, "receiver")).await;
    let data = tempfile::tempdir().unwrap();
    let hook_client = pki.files(Role::Collector, "hook-client");
    let config = collector_config_with(&pki, data.path(), &rules(receiver.addr, &hook_client));
    let collector = RunningCollector::start(config).await;
    let mut client = operator(&pki, collector.addr).await;
    let mut watch = client
        .watch_alerts(WatchAlertsRequest {
            host_id: "busy".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let state = tempfile::tempdir().unwrap();
    let mut agent_config = agent_config(&pki, "busy", collector.addr, state.path());
    agent_config.processes.watch.push(WatchRule {
        name: "burner".into(),
        pattern: Some(Pattern::search("hostwatch-burner").unwrap()),
    });
    let burner = Burner::start();
    let agent = RunningAgent::start(agent_config.clone());

    let (labels, annotations) = eventually(WAIT, "the CPU page", || async {
        receiver.find("process_cpu_high", "firing")
    })
    .await;
    assert_eq!(labels["host"], "busy");
    assert_eq!(labels["severity"], "page");
    let top = annotations["top_processes"].as_str().unwrap();
    assert!(
        top.contains(&format!("(pid {},", burner.pid())),
        "the burner (pid {}) is not named in {top}",
        burner.pid()
    );
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .starts_with("burner on busy uses ")
    );

    // The same alert through the Query API, its history and the live watch.
    let alerts = client
        .list_alerts(ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    let cpu = alerts
        .iter()
        .find(|a| a.rule == "process_cpu_high")
        .unwrap();
    assert_eq!(cpu.state, AlertState::Firing as i32);
    assert!(cpu.fired_ms > 0 && cpu.annotations.contains_key("top_processes"));
    let watched = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (watched.rule.as_str(), watched.to),
        ("process_cpu_high", AlertState::Firing as i32)
    );

    agent.kill().await;
    let (labels, _) = eventually(WAIT, "the host-down page", || async {
        receiver.find("host_down", "firing")
    })
    .await;
    assert_eq!(labels["host"], "busy");

    drop(burner);
    let agent = RunningAgent::start(agent_config);
    for name in ["host_down", "process_cpu_high"] {
        eventually(WAIT, &format!("{name} resolved"), || async {
            receiver.find(name, "resolved")
        })
        .await;
    }
    let history = client
        .alert_history(AlertHistoryRequest {
            host_id: "busy".into(),
            ..AlertHistoryRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .transitions;
    let seen: Vec<(&str, i32)> = history.iter().map(|t| (t.rule.as_str(), t.to)).collect();
    for expected in [
        ("process_cpu_high", AlertState::Firing as i32),
        ("host_down", AlertState::Firing as i32),
        ("host_down", AlertState::Resolved as i32),
        ("process_cpu_high", AlertState::Resolved as i32),
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
    }
    // Every delivery came over mutual TLS with the idempotency key.
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.headers.contains_key("idempotency-key"))
    );
    agent.stop().await;
    collector.stop().await;
}

fn equal(name: &str, value: &str) -> Matcher {
    Matcher {
        name: name.into(),
        op: matcher::Op::Equal as i32,
        value: value.into(),
    }
}

// One scenario, in the order an operator meets it: each step (a silence,
// its refusals, a reload) acts on the alerts the steps before raised.
#[tokio::test]
async fn silences_and_reloads_through_admin() {
    let pki = TestPki::new();
    let receiver = WebhookReceiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let rules = |raise: &str| {
        format!(
            "[alerting]\ndefault_rules = false\n[[alerting.rules]]\nname = \"memory_seen\"\nkind = \"threshold\"\nmetric = \"host_memory_available_bytes\"\nop = \">\"\nraise = {raise}\n[[alerting.hooks]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\ngroup_wait = \"0s\"\n",
            receiver.addr
        )
    };
    let config = collector_config_with(&pki, data.path(), &rules("1e30"));
    let path = config.path.clone().unwrap();
    let collector = RunningCollector::start(config).await;
    let channel = channel(pki.files(Role::Operator, "alice"), collector.addr)
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);

    // Silence host "quiet", then make the rule fire for every host.
    let silence = admin
        .create_silence(CreateSilenceRequest {
            matchers: vec![equal("host", "quiet")],
            ends_ms: now_ms() + 3_600_000,
            comment: "maintenance".into(),
            ..CreateSilenceRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(silence.created_by, "alice");
    // Every field refused when wrong, with the reason.
    let later = now_ms() + 60_000;
    for (request, reason) in [
        (
            CreateSilenceRequest {
                ends_ms: later,
                ..CreateSilenceRequest::default()
            },
            "at least one matcher",
        ),
        (
            CreateSilenceRequest {
                matchers: vec![Matcher {
                    op: matcher::Op::Unspecified as i32,
                    ..equal("host", "quiet")
                }],
                ends_ms: later,
                ..CreateSilenceRequest::default()
            },
            "op must be",
        ),
        (
            CreateSilenceRequest {
                matchers: vec![Matcher {
                    op: matcher::Op::Regex as i32,
                    ..equal("host", "(unclosed")
                }],
                ends_ms: later,
                ..CreateSilenceRequest::default()
            },
            "(unclosed",
        ),
        (
            CreateSilenceRequest {
                matchers: vec![equal("host", "quiet")],
                ends_ms: now_ms() - 1_000,
                ..CreateSilenceRequest::default()
            },
            "must end after it starts and in the future",
        ),
        (
            CreateSilenceRequest {
                matchers: vec![equal("host", "quiet")],
                starts_ms: later + 60_000,
                ends_ms: later,
                ..CreateSilenceRequest::default()
            },
            "must end after it starts",
        ),
    ] {
        let bad = admin.create_silence(request).await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{reason}");
        assert!(bad.message().contains(reason), "{}", bad.message());
    }
    let bad = admin
        .expire_silence(ExpireSilenceRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("id is required"),
        "{}",
        bad.message()
    );

    // An invalid file is refused, naming the key; the running rules stay.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("raise = 1e30", "raise = \"high\"")).unwrap();
    let refused = admin.reload(ReloadRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("raise"), "{}", refused.message());
    std::fs::write(&path, text.replace("raise = 1e30", "raise = 0.0")).unwrap();
    let reloaded = admin.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert_eq!(reloaded.rules, ["memory_seen"]);
    assert_eq!(reloaded.hooks, ["oncall"]);

    let state = tempfile::tempdir().unwrap();
    let quiet = RunningAgent::start(agent_config(&pki, "quiet", collector.addr, state.path()));
    let loud = RunningAgent::start(agent_config(&pki, "loud", collector.addr, state.path()));
    eventually(WAIT, "loud's page", || async {
        receiver.find("memory_seen", "firing")
    })
    .await;
    let mut client = operator(&pki, collector.addr).await;
    let alerts = eventually(WAIT, "both alerts", || {
        let mut client = client.clone();
        async move {
            let alerts = client
                .list_alerts(ListAlertsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .alerts;
            (alerts.len() == 2).then_some(alerts)
        }
    })
    .await;
    let quiet_alert = alerts.iter().find(|a| a.labels["host"] == "quiet").unwrap();
    assert_eq!(quiet_alert.silenced_by, std::slice::from_ref(&silence.id));
    assert!(
        receiver
            .alerts()
            .iter()
            .all(|(_, l, _)| l["host"] == "loud")
    );

    admin
        .expire_silence(ExpireSilenceRequest {
            id: silence.id.clone(),
        })
        .await
        .unwrap();
    eventually(WAIT, "quiet's page after the silence", || async {
        receiver
            .alerts()
            .iter()
            .any(|(_, l, _)| l["host"] == "quiet")
            .then_some(())
    })
    .await;
    let listed = admin
        .list_silences(ListSilencesRequest {})
        .await
        .unwrap()
        .into_inner()
        .silences;
    assert!(listed[0].ends_ms <= now_ms());
    let missing = admin
        .expire_silence(ExpireSilenceRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let _ = client
        .list_hosts(hostwatch_proto::v1::ListHostsRequest::default())
        .await
        .unwrap();

    quiet.stop().await;
    loud.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn agents_may_not_administer() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let channel = channel(pki.files(Role::Agent, "web1"), collector.addr)
        .await
        .unwrap();
    let denied = AdminClient::new(channel)
        .list_silences(ListSilencesRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    collector.stop().await;
}

/// The outbox with real processes: a page the receiver keeps refusing
/// (503) waits in the collector's outbox; the collector is SIGKILLed and
/// started again, and delivers that very page (same idempotency key)
/// without paging the still-firing alert a second time.
#[tokio::test]
async fn a_page_in_the_outbox_survives_a_collector_sigkill() {
    let pki = TestPki::new();
    let receiver = WebhookReceiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tls = |f: &hostwatch_pki::TlsFiles| {
        format!(
            "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            f.ca, f.cert, f.key
        )
    };
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nhost_down_after = \"2s\"\n{}\n[alerting]\ndefault_rules = false\nflap_window = \"0s\"\n[[alerting.rules]]\nname = \"memory_seen\"\nkind = \"threshold\"\nmetric = \"host_memory_available_bytes\"\nop = \">\"\nraise = 0.0\n[[alerting.rules]]\nname = \"host_down\"\nkind = \"host_down\"\n[[alerting.hooks]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\ngroup_wait = \"0s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n",
            dir.path().join("data"),
            tls(&pki.files(Role::Collector, "test")),
            receiver.addr
        ),
    )
    .unwrap();
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "collector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n{}[limits]\nmax_backoff = \"300ms\"\n",
            dir.path().join("agent-state"),
            tls(&pki.files(Role::Agent, "crashy"))
        ),
    )
    .unwrap();
    let collector_bin = std::path::Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_e2e-agent"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let agent = Process::start(agent_bin, &agent_toml, log("agent"));

    // Refused twice: the page is in the outbox, being retried.
    let refused = eventually(WAIT, "two refused attempts", || async {
        let got = receiver.received();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let key = refused[0].headers["idempotency-key"].clone();
    assert!(
        refused.iter().all(|r| r.headers["idempotency-key"] == key),
        "{refused:?}"
    );
    assert_eq!(
        refused[0].body["alerts"][0]["labels"]["alertname"],
        "memory_seen"
    );
    collector.kill();
    let before_restart = receiver.received().len();
    receiver.answer(200);
    let collector = Process::start(collector_bin, &collector_toml, log("collector"));
    let delivered = eventually(WAIT, "the page after the restart", || async {
        receiver.received().get(before_restart).cloned()
    })
    .await;
    assert_eq!(delivered.headers["idempotency-key"], key);
    assert_eq!(delivered.body["status"], "firing");

    // The agent goes silent: once its host-down page is in, a second page
    // of memory_seen (still firing, re-evaluated after the restart) would
    // have come before it.
    agent.kill();
    eventually(WAIT, "the host-down page", || async {
        receiver.find("host_down", "firing")
    })
    .await;
    let memory_pages = receiver.received()[before_restart..]
        .iter()
        .filter(|r| r.body["alerts"][0]["labels"]["alertname"] == "memory_seen")
        .count();
    assert_eq!(memory_pages, 1);
    assert_eq!(collector.terminate(WAIT).await.code(), Some(0));
}
