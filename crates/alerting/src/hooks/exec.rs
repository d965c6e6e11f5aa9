//! The exec hook: runs a command with the notification JSON on stdin and
//! key fields in its environment. Exit status 0 means delivered, 75
//! (EX_TEMPFAIL) asks for a retry, anything else is a failure not
//! retried; a command that does not finish within the timeout is killed
//! and retried.

use super::{Notification, Outcome, excerpt};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Exit status with which a command asks to be run again later.
pub const EXIT_RETRY: i32 = 75;

pub(super) async fn run(
    command: &[String],
    notification: &Notification,
    key: &str,
    hook: &str,
    timeout: Duration,
) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::Failed("empty command".to_owned());
    };
    let body = match serde_json::to_vec(notification) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("cannot encode the notification: {e}")),
    };
    let names: Vec<&str> = unique(
        notification
            .alerts
            .iter()
            .filter_map(|a| a.labels.get("alertname")),
    );
    let hosts: Vec<&str> = unique(
        notification
            .alerts
            .iter()
            .filter_map(|a| a.labels.get("host")),
    );
    // A clean environment: the collector's own (overrides, credentials)
    // is none of the command's business.
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOSTWATCH_HOOK", hook)
        .env("HOSTWATCH_RECEIVER", &notification.receiver)
        .env("HOSTWATCH_STATUS", &notification.status)
        .env("HOSTWATCH_GROUP_KEY", &notification.group_key)
        .env("HOSTWATCH_IDEMPOTENCY_KEY", key)
        .env(
            "HOSTWATCH_ALERT_COUNT",
            notification.alerts.len().to_string(),
        )
        .env("HOSTWATCH_ALERTNAMES", names.join(","))
        .env("HOSTWATCH_HOSTS", hosts.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        // Perhaps being installed or fixed right now: try again later.
        Err(e) => return Outcome::Retry(format!("cannot run {program}: {e}")),
    };
    let stdin = child.stdin.take();
    let finished = tokio::time::timeout(timeout, async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input is its own business.
            let _ = stdin.write_all(&body).await;
            drop(stdin);
        }
        child.wait_with_output().await
    })
    .await;
    match finished {
        Err(_) => Outcome::Retry(format!(
            "{program} did not finish within {timeout:?}; killed"
        )),
        Ok(Err(e)) => Outcome::Retry(format!("{program}: {e}")),
        Ok(Ok(output)) => match output.status.code() {
            Some(0) => Outcome::Delivered,
            Some(EXIT_RETRY) => Outcome::Retry(format!(
                "{program} exited with {EXIT_RETRY} (retry): {}",
                excerpt(&output.stderr, 200)
            )),
            _ => Outcome::Failed(format!(
                "{program} failed ({}): {}",
                output.status,
                excerpt(&output.stderr, 200)
            )),
        },
    }
}

fn unique<'a>(values: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut out: Vec<&str> = values.map(String::as_str).collect();
    out.sort_unstable();
    out.dedup();
    out
}
