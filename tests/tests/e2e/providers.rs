//! The PagerDuty, Opsgenie and Slack hooks with real processes: a host
//! goes down (its agent killed), the collector triggers, is restarted,
//! and resolves with the same key once the agent is back; repeats on
//! either side of the restart add to the one incident; no secret is in
//! the collector's log. The protocol details are in `tests/providers.rs`.

use hostwatch_pki::Role;
use hostwatch_tests::providers::{Incident, Provider, ProviderReceiver, ProviderRequest};
use hostwatch_tests::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

const ROUTING_KEY: &str = "E2eRoutingKey0123456789abcdefABC";
const API_KEY: &str = "e2e4a9d2-0b1c-4d5e-8f90-a1b2c3d4e5f6";
const SLACK_PATH: &str = "/services/TE2E0001/BE2E0001/e2eSlackSecretPathXyZ";

async fn accepted(receiver: &ProviderReceiver, what: &str, count: usize) -> Vec<ProviderRequest> {
    eventually(WAIT, what, || async {
        let accepted = receiver.accepted();
        (accepted.len() >= count).then_some(accepted)
    })
    .await
}

#[tokio::test]
async fn a_host_down_incident_opened_before_a_collector_restart_is_resolved_after_it() {
    let pki = TestPki::new();
    let provider_tls = pki.files(Role::Collector, "providers");
    let pd = ProviderReceiver::start(Provider::PagerDuty, &provider_tls, ROUTING_KEY).await;
    let og = ProviderReceiver::start(Provider::Opsgenie, &provider_tls, API_KEY).await;
    let slack = ProviderReceiver::start(Provider::Slack, &provider_tls, SLACK_PATH).await;
    // PagerDuty first asks for time: the retry is logged, without the key.
    pd.script(&[429]);
    // Tells when the agent's data are in.
    let seen = WebhookReceiver::start().await;
    assert_eq!(ROUTING_KEY.len(), 32);

    let dir = tempfile::tempdir().unwrap();
    let api_key_file = dir.path().join("opsgenie.key");
    std::fs::write(&api_key_file, format!("{API_KEY}\n")).unwrap();
    let port = free_port();
    let tls = |f: &hostwatch_pki::TlsFiles| {
        format!(
            "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            f.ca, f.cert, f.key
        )
    };
    let hook = |name: &str, kind: &str, keys: String| {
        format!(
            "[[alerting.hooks]]\nname = \"{name}\"\nkind = \"{kind}\"\nmatch = [\"alertname=host_down\"]\ngroup_wait = \"0s\"\nrepeat_interval = \"1s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n{keys}\n[alerting.hooks.tls]\nca = {:?}\n",
            pki.ca_path()
        )
    };
    let hooks = [
        hook(
            "pd",
            "pagerduty",
            format!(
                "routing_key_env = \"HOSTWATCH_E2E_PD_KEY\"\nurl = {:?}",
                pd.url()
            ),
        ),
        hook(
            "og",
            "opsgenie",
            format!("api_key_file = {api_key_file:?}\nurl = {:?}", og.url()),
        ),
        hook(
            "slack",
            "slack",
            "webhook_url_env = \"HOSTWATCH_E2E_SLACK_URL\"".to_owned(),
        ),
    ]
    .concat();
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nhost_down_after = \"2s\"\n{}\n[alerting]\ndefault_rules = false\nflap_window = \"0s\"\nexternal_url = \"https://hostwatch.example.com\"\n[[alerting.rules]]\nname = \"memory_seen\"\nkind = \"threshold\"\nmetric = \"host_memory_available_bytes\"\nop = \">\"\nraise = 0.0\n[[alerting.rules]]\nname = \"host_down\"\nkind = \"host_down\"\nlabels = {{ severity = \"critical\" }}\nannotations = {{ summary = \"{{{{ host }}}} is down\" }}\n[[alerting.hooks]]\nname = \"seen\"\nkind = \"webhook\"\nmatch = [\"alertname=memory_seen\"]\nurl = \"http://{}/hook\"\ngroup_wait = \"0s\"\n{hooks}",
            dir.path().join("data"),
            tls(&pki.files(Role::Collector, "test")),
            seen.addr,
        ),
    )
    .unwrap();
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "collector = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\ninterval = \"200ms\"\nstate_dir = {:?}\n{}[limits]\nmax_backoff = \"300ms\"\n",
            dir.path().join("agent-state"),
            tls(&pki.files(Role::Agent, "downhost"))
        ),
    )
    .unwrap();
    let collector_bin = std::path::Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_e2e-agent"));
    let collector_log = dir.path().join("collector.log");
    let slack_url = slack.url();
    let env = [
        ("HOSTWATCH_E2E_PD_KEY", ROUTING_KEY),
        ("HOSTWATCH_E2E_SLACK_URL", slack_url.as_str()),
        ("RUST_LOG", "info,hostwatch_alerting=debug"),
    ];
    let start_collector =
        || Process::start_with_env(collector_bin, &collector_toml, collector_log.clone(), &env);
    let collector = start_collector();
    let agent = Process::start(agent_bin, &agent_toml, dir.path().join("agent.log"));
    eventually(WAIT, "the agent's data", || async {
        seen.find("memory_seen", "firing").map(|_| ())
    })
    .await;

    // The host goes down: PagerDuty (after its 429), Opsgenie and Slack
    // hear of it, and repeats follow.
    agent.kill();
    let triggers = accepted(&pd, "a PagerDuty trigger and a repeat", 2).await;
    assert_eq!(pd.requests()[0].status, 429);
    assert!(triggers.iter().all(|t| t.body["event_action"] == "trigger"));
    let key = triggers[0].body["dedup_key"].as_str().unwrap().to_owned();
    assert_eq!(triggers[0].body["payload"]["summary"], "downhost is down");
    assert_eq!(triggers[0].body["payload"]["severity"], "critical");
    assert_eq!(triggers[0].body["payload"]["source"], "downhost");
    let creates = accepted(&og, "an Opsgenie create", 1).await;
    let alias = creates[0].body["alias"].as_str().unwrap().to_owned();
    assert_eq!(creates[0].body["priority"], "P1");
    accepted(&slack, "a Slack message", 1).await;

    // A restart while the incident is open.
    assert_eq!(collector.terminate(WAIT).await.code(), Some(0));
    let before = pd.accepted().len();
    let collector = start_collector();
    // A repeat from the restarted collector: same key, same incident.
    let repeats = accepted(&pd, "a PagerDuty repeat after the restart", before + 1).await;
    assert_eq!(repeats[before].body["event_action"], "trigger");
    assert_eq!(repeats[before].body["dedup_key"], key.as_str());

    // The host is back: the incident opened before the restart resolves.
    let agent = Process::start(agent_bin, &agent_toml, dir.path().join("agent.log"));
    let resolve = eventually(WAIT, "the PagerDuty resolve", || async {
        pd.accepted()
            .into_iter()
            .find(|r| r.body["event_action"] == "resolve")
    })
    .await;
    assert_eq!(resolve.body["dedup_key"], key.as_str());
    let close = eventually(WAIT, "the Opsgenie close", || async {
        og.accepted()
            .into_iter()
            .find(|r| r.path.ends_with("/close"))
    })
    .await;
    assert_eq!(close.path, format!("/v2/alerts/{alias}/close"));
    eventually(WAIT, "the resolved Slack message", || async {
        slack
            .accepted()
            .into_iter()
            .find(|r| r.body.to_string().contains("[RESOLVED]"))
    })
    .await;
    assert_eq!(collector.terminate(WAIT).await.code(), Some(0));
    drop(agent);

    for receiver in [&pd, &og, &slack] {
        assert_eq!(receiver.violations(), Vec::<String>::new());
    }
    for (receiver, key) in [(&pd, &key), (&og, &alias)] {
        let incidents = receiver.incidents();
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        let Incident {
            opened,
            closed,
            open,
            events,
        } = incidents[key.as_str()].clone();
        assert_eq!((opened, closed, open), (1, 1, false), "{events} events");
        assert!(events >= 2, "{events}");
    }
    let log = std::fs::read_to_string(&collector_log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("will retry") && l.contains("hook=pd")),
        "{log}"
    );
    for line in log.lines() {
        for secret in [ROUTING_KEY, API_KEY, SLACK_PATH, slack_url.as_str()] {
            assert!(!line.contains(secret), "a secret is logged: {line}");
        }
    }
}
