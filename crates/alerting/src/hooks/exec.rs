//! The exec hook: runs a command with the notification JSON on stdin and
//! key fields in its environment. Exit status 0 means delivered, 75
//! (EX_TEMPFAIL) asks for a retry, anything else is a failure not
//! retried; a command that does not finish within the timeout is killed
//! and retried. The hook's keys as written, and their validation, are here
//! too.

use super::{Notification, Outcome, excerpt};
use crate::config::KeyError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Exit status with which a command asks to be run again later.
pub const EXIT_RETRY: i32 = 75;

/// `kind = "exec"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Program and arguments.
    pub command: Vec<String>,
}

impl ExecConfig {
    /// A program named with a `/` is taken from `base` if relative; a bare
    /// name is looked up on `PATH`.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(program) = self.command.first_mut()
            && program.contains('/')
            && Path::new(program.as_str()).is_relative()
        {
            *program = base.join(&*program).display().to_string();
        }
    }

    /// The command, its program found and executable.
    pub(super) fn compile(&self) -> Result<Vec<String>, KeyError> {
        let invalid = |message: String| KeyError::new("command", message);
        let program = self
            .command
            .first()
            .ok_or_else(|| invalid("command is required: [program, args...]".to_owned()))?;
        if program.is_empty() {
            return Err(invalid("command: the program name is empty".to_owned()));
        }
        // Found now rather than at the first page: a typo is a refused
        // configuration, not a page that never leaves.
        let path = if program.contains('/') {
            PathBuf::from(program)
        } else {
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
                .ok_or_else(|| invalid(format!("command {program}: not found on PATH")))?
        };
        let meta =
            std::fs::metadata(&path).map_err(|e| invalid(format!("command {program}: {e}")))?;
        if !meta.is_file() {
            return Err(invalid(format!("command {program} is not a file")));
        }
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 {
            return Err(invalid(format!("command {program} is not executable")));
        }
        Ok(self.command.clone())
    }
}

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
        Err(e) => return Outcome::retry(format!("cannot run {program}: {e}")),
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
        Err(_) => Outcome::retry(format!(
            "{program} did not finish within {timeout:?}; killed"
        )),
        Ok(Err(e)) => Outcome::retry(format!("{program}: {e}")),
        Ok(Ok(output)) => match output.status.code() {
            Some(0) => Outcome::Delivered(format!("{program} exited with 0")),
            Some(EXIT_RETRY) => Outcome::retry(format!(
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

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_refused, hook};

    #[test]
    fn bad_exec_hooks_name_the_hook_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("pager.txt");
        std::fs::write(&plain, "not a program").unwrap();
        let plain = plain.display().to_string();
        let cases = [
            (hook("kind = \"exec\""), "command is required"),
            (hook("kind = \"exec\"\ncommand = []"), "command is required"),
            (
                hook("kind = \"exec\"\ncommand = [\"\"]"),
                "program name is empty",
            ),
            (
                hook("kind = \"exec\"\ncommand = [\"no-such-pager-anywhere\"]"),
                "no-such-pager-anywhere: not found on PATH",
            ),
            (
                hook(&format!("kind = \"exec\"\ncommand = [{plain:?}]")),
                "is not executable",
            ),
            (
                hook("kind = \"exec\"\ncommand = [\"/\"]"),
                "/ is not a file",
            ),
            (
                hook("kind = \"exec\"\ncommand = [\"/nonexistent/page\"]"),
                "/nonexistent/page",
            ),
        ];
        assert_refused(&cases, Some("alerting.hooks[0] \"h\""));
    }
}
