//! Alerting's "done when", with real processes: a quick start's files
//! (`hostwatch quickstart`), the collector and the agent run from them as
//! programs, this machine's CPU loaded by bounded busy loops, and a real
//! HTTP webhook receiver on loopback. The shipped `cpu_saturated` rule
//! (shortened to test time) pages with the busy process named; a SIGKILL
//! of the agent pages `host_down` (the shipped rule, on `host_down_after`);
//! the agent back resolves both.
//!
//! Its own test binary, so no other test loads the CPU while it measures
//! whether this machine is saturated, and then whether it is not any more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hostwatch_tests::quickstart::{edit, write_files};
use hostwatch_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// `host_down_after` of the test's collector (the quick start's is 10 s).
const HOST_DOWN_AFTER: Duration = Duration::from_secs(3);
/// Longest wait for any one page: generous, the machine may be busy.
const WAIT: Duration = Duration::from_secs(45);
/// Longest wait for the CPU alert to resolve once the busy loops ended:
/// longer, since it takes this machine at least 15% idle (over 2 s), which
/// other work on a shared machine can hold off for a while.
const IDLE_WAIT: Duration = Duration::from_secs(120);
/// Each busy loop stops by itself after this long, should the test hang.
const BURN_SECS: u64 = 90;
/// The busy loops' process name (what `/proc/<pid>/stat` shows).
const BURNER: &str = "hw-burner";

/// One shell spinning on a core, run through a link named `hw-burner` so
/// that it is what the process table calls it. Bounded: it checks the
/// clock between counting rounds and ends after `BURN_SECS`; killed when
/// dropped.
struct Burner(Child);

impl Burner {
    fn start(link: &Path) -> Self {
        let script = format!(
            r#"end=$(( $(date +%s) + {BURN_SECS} )); while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; done"#
        );
        Burner(Command::new(link).args(["-c", &script]).spawn().unwrap())
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hostwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e2e-hostwatch"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The quick start's files in `dir`, changed for test time: free ports,
/// a 250 ms agent, `host_down_after` of 3 s, `cpu_saturated` over 2 s with
/// no `for`, and a webhook to `receiver` without grouping delay. Returns
/// the host id (this machine's).
fn quick_start_files(dir: &Path, receiver: std::net::SocketAddr) -> String {
    let alerting = format!(
        r#"
[alerting]
flap_window = "1s"

# The shipped rule, over 2 s instead of 1 min, paging at once.
[[alerting.rules]]
name = "cpu_saturated"
kind = "threshold"
metric = "host_cpu_utilization_ratio"
match = ["cpu=total"]
aggregate = "avg"
window = "2s"
op = ">"
raise = 0.95
clear = 0.85
for = "0s"
labels = {{ severity = "warning" }}
annotations = {{ summary = "CPU of {{{{ host }}}} at {{{{ value | percent }}}}" }}

[[alerting.hooks]]
name = "oncall"
kind = "webhook"
url = "http://{receiver}/hook"
group_wait = "0s"
group_interval = "1s"
"#
    );
    let hostwatch = Path::new(env!("CARGO_BIN_EXE_e2e-hostwatch"));
    write_files(hostwatch, dir, "250ms", &alerting);
    edit(
        &dir.join("collector.toml"),
        "host_down_after = \"10s\"",
        &format!("host_down_after = \"{}s\"", HOST_DOWN_AFTER.as_secs()),
    );
    hostwatch::local_host_id()
}

/// Milliseconds since the epoch of an RFC 3339 time in a notification.
fn millis(rfc3339: &serde_json::Value) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The first alert the receiver got with this alertname and status.
fn alert(receiver: &WebhookReceiver, name: &str, status: &str) -> Option<serde_json::Value> {
    receiver
        .received()
        .iter()
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| a["status"] == status && a["labels"]["alertname"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_host_pages_cpu_with_its_cause_a_killed_agent_pages_host_down_and_its_return_resolves_both()
 {
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let host = quick_start_files(&qs, receiver.addr);
    let collector_bin = Path::new(env!("CARGO_BIN_EXE_e2e-collector"));
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_e2e-agent"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let collector = Process::start(collector_bin, &qs.join("collector.toml"), log("collector"));
    let agent = Process::start(agent_bin, &qs.join("agent.toml"), log("agent"));

    // Every core busy, by processes the agent will see. Two per core, so
    // that on a machine busy with other work too, some still rank among
    // the top processes the page names.
    let link: PathBuf = dir.path().join(BURNER);
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let burners: Vec<Burner> = (0..2 * cores).map(|_| Burner::start(&link)).collect();
    let pids: Vec<u32> = burners.iter().map(|b| b.0.id()).collect();

    let page = eventually(WAIT, "the cpu_saturated page", || async {
        alert(&receiver, "cpu_saturated", "firing")
    })
    .await;
    let (labels, annotations) = (&page["labels"], &page["annotations"]);
    assert_eq!(labels["host"], host.as_str());
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["cpu"], "total");
    let top = annotations["top_processes"].as_str().unwrap();
    assert!(
        pids.iter()
            .any(|pid| top.contains(&format!("{BURNER} (pid {pid},"))),
        "no busy loop ({BURNER}, pids {pids:?}) in the cause: {top}"
    );
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("CPU of {host} at ")),
        "{annotations}"
    );

    // SIGKILL: no goodbye, so the shipped host_down rule pages.
    let killed = Instant::now();
    agent.kill();
    let page = eventually(HOST_DOWN_AFTER + WAIT, "the host_down page", || async {
        alert(&receiver, "host_down", "firing")
    })
    .await;
    let after_kill = killed.elapsed();
    assert_eq!(page["labels"]["host"], host.as_str());
    assert_eq!(page["labels"]["severity"], "critical");
    // Never before the timeout: raised once the host was silent that long.
    let silent_ms = millis(&page["startsAt"]) - millis(&page["annotations"]["last_seen"]);
    assert!(
        silent_ms >= HOST_DOWN_AFTER.as_millis() as i64,
        "host_down raised after {silent_ms} ms of silence: {page}"
    );
    eprintln!(
        "host_down paged {} ms after the SIGKILL, {silent_ms} ms after the last sample",
        after_kill.as_millis()
    );

    // The operator's view: both firing.
    let cli = qs.join("cli.toml");
    let listed = text(&hostwatch(&["--config", cli.to_str().unwrap(), "alerts", "--json"]).stdout);
    for rule in ["cpu_saturated", "host_down"] {
        assert!(
            listed.contains(&format!("\"rule\": \"{rule}\"")),
            "{listed}"
        );
    }
    assert!(listed.contains(BURNER), "{listed}");

    // The load ends and the agent comes back: both resolve.
    drop(burners);
    let agent = Process::start(agent_bin, &qs.join("agent.toml"), log("agent"));
    for (name, wait) in [("host_down", WAIT), ("cpu_saturated", IDLE_WAIT)] {
        eventually(wait, &format!("{name} resolved"), || async {
            alert(&receiver, name, "resolved")
        })
        .await;
    }
    // Each firing was paged once: the restart re-paged nothing.
    for name in ["host_down", "cpu_saturated"] {
        let firing = receiver
            .alerts()
            .iter()
            .filter(|(s, l, _)| s == "firing" && l["alertname"] == name)
            .count();
        assert_eq!(firing, 1, "{name} paged {firing} times");
    }
    assert_eq!(agent.terminate(WAIT).await.code(), Some(0));
    assert_eq!(collector.terminate(WAIT).await.code(), Some(0));
}
