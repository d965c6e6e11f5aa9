//! The PagerDuty, Opsgenie and Slack hooks against local HTTPS stand-ins
//! that check every request against the provider's documented schema and
//! answer as the provider does (`hostwatch_tests::providers`). The
//! alerting engine runs on a real sled database, in real time, with
//! alerts driven by hand-made batches; the collector restart between a
//! trigger and its resolve is in `e2e/providers.rs`, with real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_alerting::{Alerting, AlertingConfig, BatchContext, Clock, RuleSet};
use hostwatch_pki::Role;
use hostwatch_stdx::now_ms;
use hostwatch_tests::providers::{Incident, Provider, ProviderReceiver, ProviderRequest};
use hostwatch_tests::{TestPki, eventually};
use hostwatch_tsdb::{Batch, Point, ProcessInfo, ProcessSnapshot, SeriesInput};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Everything this test program logs, from every test (tracing's
/// subscriber is process-wide); each test greps it for its own secrets.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .init();
        log
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned()
}

/// No line this program logged holds any of `secrets`.
fn assert_not_logged(secrets: &[&str]) {
    let text = log_text();
    for line in text.lines() {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret is logged: {line}");
        }
    }
}

struct Engine {
    alerting: Alerting,
    stop: CancellationToken,
    task: JoinHandle<()>,
    seq: u64,
}

impl Engine {
    fn start(db: &sled::Db, text: &str) -> Self {
        log();
        #[derive(serde::Deserialize)]
        struct File {
            alerting: AlertingConfig,
        }
        let file: File = toml::from_str(text).unwrap();
        let rules: RuleSet = file.alerting.compile(Duration::from_secs(30)).unwrap();
        let alerting = Alerting::open(db, rules, Arc::new(|_, _| None), Clock::system()).unwrap();
        let stop = CancellationToken::new();
        let task = {
            let alerting = alerting.clone();
            let stop = stop.clone();
            tokio::spawn(async move { alerting.run(stop.cancelled_owned()).await })
        };
        Engine {
            alerting,
            stop,
            task,
            seq: 0,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    /// A CPU sample of `host`, with "burner" the busiest process.
    fn cpu(&mut self, host: &str, t_ms: i64, value: f64) {
        self.seq += 1;
        let process = |pid: u32, name: &str, cpu_cores: f64| ProcessInfo {
            pid,
            name: name.to_owned(),
            command: format!("/usr/bin/{name}"),
            user: "ops".to_owned(),
            cpu_cores,
            rss_bytes: 64 << 20,
            start_time_ms: t_ms - 60_000,
        };
        let batch = Batch {
            host: host.to_owned(),
            source: 1,
            seq: self.seq,
            series: vec![SeriesInput {
                metric: "host_cpu_utilization_ratio".to_owned(),
                labels: vec![],
                points: vec![Point { t_ms, value }],
            }],
            processes: vec![ProcessSnapshot {
                t_ms,
                processes: vec![process(4242, "burner", 0.93), process(17, "sshd", 0.01)],
            }],
            malformed: 0,
        };
        self.alerting.observe(
            &batch,
            BatchContext {
                received_ms: now_ms(),
                dropped_batches_total: 0,
                future_tolerance_ms: 600_000,
            },
        );
    }
}

fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (dir, db)
}

/// A rule paging on a busy CPU, its summary `summary`.
fn rule(summary: &str) -> String {
    format!(
        r#"
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
cause = "cpu"
labels = {{ severity = "page" }}
annotations = {{ summary = "{summary}" }}
"#
    )
}

const SUMMARY: &str = "CPU of {{ host }} at {{ value | percent }}";

/// A hook of `kind` named `name`, delivering at once and retrying fast.
fn hook(name: &str, kind: &str, keys: &str, ca: &Path) -> String {
    format!(
        "[[alerting.hooks]]\nname = \"{name}\"\nkind = \"{kind}\"\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\nmin_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n{keys}\n[alerting.hooks.tls]\nca = {:?}\n",
        ca.display().to_string()
    )
}

/// Secrets and the files holding them.
struct Secrets {
    dir: tempfile::TempDir,
    routing_key: String,
    api_key: String,
    slack_path: String,
}

impl Secrets {
    /// Distinct per test (`tag`), so a test's grep finds only its own.
    fn new(tag: &str) -> Self {
        let routing_key = format!("R{tag:0>7}routingkey0123456789abcd");
        assert_eq!(routing_key.len(), 32);
        Secrets {
            dir: tempfile::tempdir().unwrap(),
            routing_key,
            api_key: format!("eb2435{tag}-faa2-4ba2-a551-1afdf565c889"),
            slack_path: format!("/services/T0001/B0001/{tag}XoXoSeCrEtPaTh"),
        }
    }

    /// Writes `value` to a file named `name`; its path as TOML.
    fn file(&self, name: &str, value: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        format!("{:?}", path.display().to_string())
    }

    fn all(&self) -> [&str; 3] {
        [&self.routing_key, &self.api_key, &self.slack_path]
    }
}

struct Providers {
    _pki: TestPki,
    ca: std::path::PathBuf,
    pd: ProviderReceiver,
    og: ProviderReceiver,
    slack: ProviderReceiver,
}

impl Providers {
    async fn start(secrets: &Secrets) -> Self {
        let pki = TestPki::new();
        let files = pki.files(Role::Collector, "provider");
        Providers {
            ca: pki.ca_path(),
            pd: ProviderReceiver::start(Provider::PagerDuty, &files, &secrets.routing_key).await,
            og: ProviderReceiver::start(Provider::Opsgenie, &files, &secrets.api_key).await,
            slack: ProviderReceiver::start(Provider::Slack, &files, &secrets.slack_path).await,
            _pki: pki,
        }
    }

    /// Hooks "pd", "og" and "slack" to the three, with `extra` keys each.
    fn hooks(&self, secrets: &Secrets, extra: &str) -> String {
        let pd = hook(
            "pd",
            "pagerduty",
            &format!(
                "routing_key_file = {}\nurl = {:?}\n{extra}",
                secrets.file("routing_key", &secrets.routing_key),
                self.pd.url()
            ),
            &self.ca,
        );
        let og = hook(
            "og",
            "opsgenie",
            &format!(
                "api_key_file = {}\nurl = {:?}\n{extra}",
                secrets.file("api_key", &secrets.api_key),
                self.og.url()
            ),
            &self.ca,
        );
        let slack = hook(
            "slack",
            "slack",
            &format!(
                "webhook_url_file = {}\n{extra}",
                secrets.file("slack_url", &self.slack.url())
            ),
            &self.ca,
        );
        format!("{pd}{og}{slack}")
    }

    fn assert_valid(&self) {
        for receiver in [&self.pd, &self.og, &self.slack] {
            assert_eq!(receiver.violations(), Vec::<String>::new());
        }
    }
}

async fn wait_accepted(
    receiver: &ProviderReceiver,
    what: &str,
    count: usize,
) -> Vec<ProviderRequest> {
    eventually(WAIT, what, || async {
        let accepted = receiver.accepted();
        (accepted.len() >= count).then_some(accepted)
    })
    .await
}

#[tokio::test]
async fn firing_then_resolved_triggers_then_resolves_with_one_key_after_a_429() {
    let secrets = Secrets::new("ftr");
    let providers = Providers::start(&secrets).await;
    // Each provider first asks for time.
    for receiver in [&providers.pd, &providers.og, &providers.slack] {
        receiver.script(&[429]);
    }
    let (_db_dir, db) = temp_db();
    let mut engine = Engine::start(
        &db,
        &format!("{}{}", rule(SUMMARY), providers.hooks(&secrets, "")),
    );
    let t = now_ms();
    engine.cpu("web1", t, 0.97);

    // PagerDuty: refused once with 429, then the same event accepted.
    let pd = wait_accepted(&providers.pd, "the PagerDuty trigger", 1).await;
    let requests = providers.pd.requests();
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests[0].body, pd[0].body);
    let event = &pd[0].body;
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["routing_key"], secrets.routing_key.as_str());
    let key = event["dedup_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hostwatch:pd:"), "{key}");
    let payload = &event["payload"];
    assert_eq!(
        payload["summary"],
        "CPU of web1 at 97% (cause: burner (pid 4242, user ops, cpu 93%, rss 64.0 MiB))"
    );
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["source"], "web1");
    assert_eq!(payload["class"], "cpu_busy");
    assert_eq!(payload["timestamp"], hostwatch_alerting::format_rfc3339(t));
    let details = &payload["custom_details"];
    assert_eq!(details["labels"]["host"], "web1");
    assert_eq!(details["labels"]["severity"], "page");
    assert_eq!(details["annotations"]["summary"], "CPU of web1 at 97%");
    assert!(
        details["top_processes"][0]
            .as_str()
            .unwrap()
            .starts_with("burner (pid 4242"),
        "{details}"
    );
    assert_eq!(details["top_processes"].as_array().unwrap().len(), 2);
    assert_eq!(details["body"], "cpu_busy on web1: 1 alert(s) firing");
    let fingerprint = details["labels"].clone();
    assert!(fingerprint.is_object());
    let href = event["links"][0]["href"].as_str().unwrap();
    assert!(
        href.starts_with("https://hostwatch.example.com/alerts/"),
        "{href}"
    );
    assert_eq!(event["client_url"], "https://hostwatch.example.com");

    // Opsgenie: a create with the group's alias and the mapped priority.
    let og = wait_accepted(&providers.og, "the Opsgenie create", 1).await;
    assert_eq!(providers.og.requests()[0].status, 429);
    assert_eq!(og[0].path, "/v2/alerts");
    assert_eq!(
        og[0].headers["authorization"],
        format!("GenieKey {}", secrets.api_key).as_str()
    );
    let alert = &og[0].body;
    assert_eq!(alert["message"], "CPU of web1 at 97%");
    assert_eq!(alert["priority"], "P1");
    assert_eq!(alert["entity"], "web1");
    assert_eq!(alert["source"], "hostwatch");
    assert_eq!(alert["details"]["host"], "web1");
    assert!(
        alert["description"]
            .as_str()
            .unwrap()
            .contains("Cause: burner (pid 4242"),
        "{alert}"
    );
    let alias = alert["alias"].as_str().unwrap().to_owned();
    assert!(alias.starts_with("hostwatch:og:"), "{alias}");

    // Slack: one red message with the status, host, cause and a link.
    let slack = wait_accepted(&providers.slack, "the Slack message", 1).await;
    assert_eq!(providers.slack.requests()[0].status, 429);
    let message = &slack[0].body;
    assert_eq!(message["attachments"][0]["color"], "#E01E5A");
    let blocks = message["attachments"][0]["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["text"]["text"], "🔥 [FIRING] CPU of web1 at 97%");
    let text = message.to_string();
    for needle in [
        "*Host*\\nweb1",
        "*Cause*\\nburner (pid 4242",
        "1 firing, 0 resolved",
        "https://hostwatch.example.com/alerts/",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }

    // Resolved: PagerDuty resolves the same key, Opsgenie closes the alias.
    engine.cpu("web1", t + 1_000, 0.5);
    let pd = wait_accepted(&providers.pd, "the PagerDuty resolve", 2).await;
    assert_eq!(pd[1].body["event_action"], "resolve");
    assert_eq!(pd[1].body["dedup_key"], key.as_str());
    let og = wait_accepted(&providers.og, "the Opsgenie close", 2).await;
    assert_eq!(og[1].path, format!("/v2/alerts/{alias}/close"));
    assert_eq!(og[1].query, "identifierType=alias");
    let slack = wait_accepted(&providers.slack, "the resolved Slack message", 2).await;
    assert_eq!(slack[1].body["attachments"][0]["color"], "#2EB67D");
    assert!(
        slack[1].body.to_string().contains("[RESOLVED]"),
        "{}",
        slack[1].body
    );
    let closed = Incident {
        opened: 1,
        events: 1,
        closed: 1,
        open: false,
    };
    assert_eq!(providers.pd.incidents(), [(key, closed.clone())].into());
    assert_eq!(providers.og.incidents(), [(alias, closed)].into());
    engine.stop().await;
    providers.assert_valid();
    assert_not_logged(&secrets.all());
}

#[tokio::test]
async fn repeats_add_to_the_open_incident_and_long_texts_fit_the_limits() {
    let secrets = Secrets::new("rep");
    let providers = Providers::start(&secrets).await;
    let (_db_dir, db) = temp_db();
    // A summary far beyond PagerDuty's 1,024 characters and Opsgenie's 130.
    let long = format!("{} {}", "saturated ".repeat(150), SUMMARY);
    let config = format!(
        "{}{}",
        rule(&long),
        providers.hooks(&secrets, "repeat_interval = \"300ms\"")
    );
    let mut engine = Engine::start(&db, &config);
    engine.cpu("web1", now_ms(), 0.97);
    let pd = wait_accepted(&providers.pd, "three PagerDuty triggers", 3).await;
    let og = wait_accepted(&providers.og, "three Opsgenie creates", 3).await;
    let slack = wait_accepted(&providers.slack, "three Slack messages", 3).await;
    engine.stop().await;
    providers.assert_valid();
    let summary = pd[0].body["payload"]["summary"].as_str().unwrap();
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.ends_with('…'));
    assert_eq!(og[0].body["message"].as_str().unwrap().chars().count(), 130);
    assert!(
        slack[0].body["attachments"][0]["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 150
    );
    // Every repeat carries the key of the first: one incident, one alert.
    let incidents = providers.pd.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = incidents.values().next().unwrap();
    assert_eq!(incident.opened, 1);
    assert!(incident.events >= 3 && incident.open, "{incident:?}");
    let alerts = providers.og.incidents();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts.values().next().unwrap().opened, 1);
    assert_not_logged(&secrets.all());
}

#[tokio::test]
async fn refusals_are_logged_with_the_providers_message_not_retried_and_without_secrets() {
    let secrets = Secrets::new("bad");
    let providers = Providers::start(&secrets).await;
    for receiver in [&providers.pd, &providers.og, &providers.slack] {
        receiver.script(&[400]);
    }
    let (_db_dir, db) = temp_db();
    let mut engine = Engine::start(
        &db,
        &format!("{}{}", rule(SUMMARY), providers.hooks(&secrets, "")),
    );
    engine.cpu("web1", now_ms(), 0.97);
    eventually(WAIT, "three refused notifications", || async {
        let stats = engine.alerting.delivery_stats();
        ["pd", "og", "slack"]
            .iter()
            .all(|h| stats.get(*h).is_some_and(|s| s.failed == 1))
            .then_some(())
    })
    .await;
    let stats = engine.alerting.delivery_stats();
    engine.stop().await;
    for (hook, receiver) in [
        ("pd", &providers.pd),
        ("og", &providers.og),
        ("slack", &providers.slack),
    ] {
        // One attempt, given up: a 400 is not retried.
        assert_eq!(receiver.requests().len(), 1, "{hook}");
        assert_eq!(
            (stats[hook].retried, stats[hook].delivered),
            (0, 0),
            "{hook}"
        );
    }
    let text = log_text();
    let refused = |hook: &str| {
        text.lines()
            .find(|l| l.contains("not retried") && l.contains(&format!("hook={hook} ")))
            .unwrap_or_else(|| panic!("no refusal of {hook} in:\n{text}"))
            .to_owned()
    };
    let pd = refused("pd");
    assert!(
        pd.contains("HTTP 400 Bad Request: Event object is invalid: Length of 'summary'"),
        "{pd}"
    );
    let og = refused("og");
    assert!(og.contains("Request body is not processable"), "{og}");
    let slack = refused("slack");
    assert!(
        slack.contains("HTTP 400 Bad Request: invalid_blocks"),
        "{slack}"
    );
    assert_not_logged(&secrets.all());
}

#[tokio::test]
async fn slack_gets_one_message_per_group_with_the_number_of_alerts() {
    let secrets = Secrets::new("grp");
    let providers = Providers::start(&secrets).await;
    let (_db_dir, db) = temp_db();
    let hooks = providers
        .hooks(&secrets, "group_by = [\"alertname\"]")
        .replace("group_wait = \"0s\"", "group_wait = \"500ms\"");
    let mut engine = Engine::start(&db, &format!("{}{hooks}", rule(SUMMARY)));
    let t = now_ms();
    engine.cpu("web1", t, 0.97);
    engine.cpu("web2", t, 0.95);
    let slack = wait_accepted(&providers.slack, "the grouped message", 1).await;
    let text = slack[0].body.to_string();
    assert!(text.contains("2 firing, 0 resolved"), "{text}");
    assert_eq!(slack[0].body["attachments"][0]["color"], "#E01E5A");
    // PagerDuty: one incident for the group, both alerts in its details.
    let pd = wait_accepted(&providers.pd, "the grouped trigger", 1).await;
    let alerts = pd[0].body["payload"]["custom_details"]["alerts"]
        .as_array()
        .unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(pd[0].body["payload"]["custom_details"]["firing"], 2);
    // One resolves: the group still fires (no resolve event yet).
    engine.cpu("web1", t + 1_000, 0.5);
    let slack = wait_accepted(&providers.slack, "the partly resolved message", 2).await;
    assert!(
        slack[1].body.to_string().contains("1 firing, 1 resolved"),
        "{}",
        slack[1].body
    );
    let pd = wait_accepted(&providers.pd, "the second trigger", 2).await;
    assert_eq!(pd[1].body["event_action"], "trigger");
    // Both resolved: the group's incident closes.
    engine.cpu("web2", t + 2_000, 0.5);
    let pd = wait_accepted(&providers.pd, "the resolve", 3).await;
    assert_eq!(pd[2].body["event_action"], "resolve");
    assert_eq!(pd[2].body["dedup_key"], pd[0].body["dedup_key"]);
    engine.stop().await;
    providers.assert_valid();
    let incidents = providers.pd.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents.values().next().unwrap(),
        &Incident {
            opened: 1,
            events: 2,
            closed: 1,
            open: false
        }
    );
    assert_not_logged(&secrets.all());
}
