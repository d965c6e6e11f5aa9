//! `hostwatch alerts` (list, history, watch, test-hook), `hostwatch
//! silence` (add, list, expire) and `hostwatch reload`: the alert API, as
//! tables for people or JSON for scripts.

use crate::UsageError;
use crate::client::ClientConfig;
use crate::read::{parse_duration, parse_matcher, parse_moment, print_table, runtime};
use clap::{Args, Subcommand};
use hostwatch_alerting::format_rfc3339;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{
    Alert, AlertHistoryRequest, AlertState, AlertTransition, CreateSilenceRequest,
    ExpireSilenceRequest, ListAlertsRequest, ListSilencesRequest, Matcher, ReloadRequest, Silence,
    TestHookRequest, TestHookResult, WatchAlertsRequest, matcher,
};
use hostwatch_stdx::now_ms;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct AlertsArgs {
    #[command(subcommand)]
    command: Option<AlertsCommand>,
    /// Only alerts of this host.
    #[arg(long, global = true)]
    host: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Also list alerts resolved recently.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Recorded transitions (pending, firing, resolved), oldest first.
    History {
        /// How far back, e.g. 1h, or an RFC 3339 time.
        #[arg(long, default_value = "24h", value_parser = parse_moment)]
        since: i64,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Transitions as they happen, one line each, until Ctrl-C.
    Watch {
        /// Stop after this many transitions.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send a test notification through a hook now and print what its
    /// receiver answered (operator role). Exits non-zero if the receiver
    /// did not take it.
    TestHook {
        /// The hook's name, as in the collector's [[alerting.hooks]].
        name: String,
        /// Send the test alert's resolution (closing the incident a firing
        /// test opened) instead of the firing alert.
        #[arg(long)]
        resolve: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum SilenceCommand {
    /// Mute notifications of alerts matching every --match.
    Add {
        /// Label matcher NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX; repeatable.
        #[arg(long = "match", required = true, value_parser = parse_matcher)]
        matchers: Vec<Matcher>,
        /// How long, e.g. 2h.
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        /// Why (shown in `silence list`).
        #[arg(long, default_value = "")]
        comment: String,
        /// Print JSON instead of the id.
        #[arg(long)]
        json: bool,
    },
    /// Silences, including those that ended in the last day.
    List {
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        /// The silence's id (from `silence add` or `silence list`).
        id: String,
    },
}

/// When an alert entered its state: resolved alerts when they resolved,
/// firing ones when they fired, pending ones when the condition began;
/// `None` when not known (an inactive alert never fired).
fn since(a: &Alert) -> Option<i64> {
    let t = match AlertState::try_from(a.state).unwrap_or(AlertState::Unspecified) {
        AlertState::Resolved => a.resolved_ms,
        AlertState::Firing => a.fired_ms,
        AlertState::Pending => a.active_since_ms,
        AlertState::Inactive | AlertState::Unspecified => 0,
    };
    (t > 0).then_some(t)
}

fn state_word(state: i32) -> &'static str {
    match AlertState::try_from(state).unwrap_or(AlertState::Unspecified) {
        AlertState::Inactive => "inactive",
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
        AlertState::Unspecified => "?",
    }
}

#[derive(Serialize)]
struct AlertJson<'a> {
    fingerprint: &'a str,
    rule: &'a str,
    state: &'static str,
    labels: BTreeMap<&'a String, &'a String>,
    annotations: BTreeMap<&'a String, &'a String>,
    value: f64,
    active_since: Option<String>,
    fired: Option<String>,
    resolved: Option<String>,
    flaps: u32,
    silenced_by: &'a [String],
}

fn alert_json(a: &Alert) -> AlertJson<'_> {
    let time = |t: i64| (t > 0).then(|| format_rfc3339(t));
    AlertJson {
        fingerprint: &a.fingerprint,
        rule: &a.rule,
        state: state_word(a.state),
        labels: a.labels.iter().collect(),
        annotations: a.annotations.iter().collect(),
        value: a.value,
        active_since: time(a.active_since_ms),
        fired: time(a.fired_ms),
        resolved: time(a.resolved_ms),
        flaps: a.flaps,
        silenced_by: &a.silenced_by,
    }
}

#[derive(Serialize)]
struct TransitionJson<'a> {
    id: u64,
    at: String,
    recorded: String,
    rule: &'a str,
    fingerprint: &'a str,
    from: &'static str,
    to: &'static str,
    value: f64,
    flapping: bool,
    labels: BTreeMap<&'a String, &'a String>,
    annotations: BTreeMap<&'a String, &'a String>,
}

fn transition_json(t: &AlertTransition) -> TransitionJson<'_> {
    TransitionJson {
        id: t.id,
        at: format_rfc3339(t.at_ms),
        recorded: format_rfc3339(t.recorded_ms),
        rule: &t.rule,
        fingerprint: &t.fingerprint,
        from: state_word(t.from),
        to: state_word(t.to),
        value: t.value,
        flapping: t.flapping,
        labels: t.labels.iter().collect(),
        annotations: t.annotations.iter().collect(),
    }
}

/// The one line people read about an alert: its summary, else its cause.
fn summary(annotations: &std::collections::HashMap<String, String>) -> String {
    let text = annotations
        .get("summary")
        .or_else(|| annotations.get("cause"))
        .cloned()
        .unwrap_or_default();
    match annotations.get("cause") {
        Some(cause) if annotations.contains_key("summary") => format!("{text} (top: {cause})"),
        _ => text,
    }
}

fn transition_line(t: &AlertTransition) -> String {
    format!(
        "{}  {:<8} -> {:<8}  {}  {}  {}{}",
        format_rfc3339(t.at_ms),
        state_word(t.from),
        state_word(t.to),
        t.rule,
        t.labels.get("host").map(String::as_str).unwrap_or("-"),
        summary(&t.annotations),
        if t.flapping { "  (flapping)" } else { "" }
    )
}

pub(crate) fn alerts(config_path: &Path, args: AlertsArgs) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    let host = args.host.unwrap_or_default();
    match args.command {
        None => list_alerts(&config, host, args.all, args.json),
        Some(AlertsCommand::History { since, rule, limit }) => {
            let request = AlertHistoryRequest {
                since_ms: since,
                host_id: host,
                rule: rule.unwrap_or_default(),
                limit,
            };
            alert_history(&config, request, args.json)
        }
        Some(AlertsCommand::Watch { count }) => watch_alerts(&config, host, count, args.json),
        Some(AlertsCommand::TestHook { name, resolve }) => {
            test_hook(&config, name, resolve, args.json)
        }
    }
}

#[derive(Serialize)]
struct TestHookJson<'a> {
    hook: &'a str,
    result: &'static str,
    answer: &'a str,
}

/// `hostwatch alerts test-hook`: one test notification through a hook.
fn test_hook(config: &ClientConfig, hook: String, resolve: bool, json: bool) -> anyhow::Result<()> {
    let request = TestHookRequest {
        hook: hook.clone(),
        resolve,
    };
    let response = config.call(AdminClient::new, |mut admin| async move {
        admin.test_hook(request).await
    })?;
    let result = match response.result() {
        TestHookResult::Delivered => "delivered",
        TestHookResult::Retry => "not delivered (a retry might succeed)",
        TestHookResult::Failed => "refused",
        TestHookResult::Unspecified => "unknown",
    };
    let answer = &response.answer;
    if json {
        let out = TestHookJson {
            hook: &hook,
            result,
            answer,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if response.result() == TestHookResult::Delivered {
        println!("{hook}: delivered: {answer}");
    }
    if response.result() != TestHookResult::Delivered {
        anyhow::bail!("{hook}: {result}: {answer}");
    }
    Ok(())
}

/// `hostwatch alerts`: pending and firing alerts (and resolved ones with
/// `include_resolved`), as a table or JSON.
fn list_alerts(
    config: &ClientConfig,
    host_id: String,
    include_resolved: bool,
    json: bool,
) -> anyhow::Result<()> {
    let request = ListAlertsRequest {
        host_id,
        include_resolved,
    };
    let alerts = config
        .call(QueryClient::new, |mut client| async move {
            client.list_alerts(request).await
        })?
        .alerts;
    if json {
        let out: Vec<AlertJson<'_>> = alerts.iter().map(alert_json).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if alerts.is_empty() {
        eprintln!("no alerts");
        return Ok(());
    }
    let mut rows = vec![[
        "STATE".to_owned(),
        "ALERT".to_owned(),
        "HOST".to_owned(),
        "SINCE".to_owned(),
        "SILENCED".to_owned(),
        "SUMMARY".to_owned(),
    ]];
    for a in &alerts {
        rows.push([
            state_word(a.state).to_owned(),
            a.rule.clone(),
            a.labels.get("host").cloned().unwrap_or_default(),
            since(a).map_or_else(|| "-".to_owned(), format_rfc3339),
            if a.silenced_by.is_empty() {
                "-".to_owned()
            } else {
                a.silenced_by.join(",")
            },
            summary(&a.annotations),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// `hostwatch alerts history`: past transitions, one line (or JSON
/// object) each.
fn alert_history(
    config: &ClientConfig,
    request: AlertHistoryRequest,
    json: bool,
) -> anyhow::Result<()> {
    let transitions = config
        .call(QueryClient::new, |mut client| async move {
            client.alert_history(request).await
        })?
        .transitions;
    if json {
        let out: Vec<TransitionJson<'_>> = transitions.iter().map(transition_json).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for t in &transitions {
            println!("{}", transition_line(t));
        }
    }
    Ok(())
}

/// `hostwatch alerts watch`: transitions as they happen, until Ctrl-C or
/// `count` of them.
fn watch_alerts(
    config: &ClientConfig,
    host_id: String,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    if count == Some(0) {
        return Err(UsageError("--count must be at least 1".to_owned()).into());
    }
    runtime()?.block_on(async {
        let mut client = QueryClient::new(config.connect().await?);
        let mut stream = client
            .watch_alerts(WatchAlertsRequest { host_id })
            .await?
            .into_inner();
        eprintln!("watching alert transitions (Ctrl-C stops)");
        let mut seen = 0;
        loop {
            let next = tokio::select! {
                _ = tokio::signal::ctrl_c() => return anyhow::Ok(()),
                next = stream.message() => next?,
            };
            let Some(t) = next else {
                anyhow::bail!("the collector ended the watch");
            };
            if json {
                println!("{}", serde_json::to_string(&transition_json(&t))?);
            } else {
                println!("{}", transition_line(&t));
            }
            std::io::stdout().flush()?;
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
    })
}

fn matcher_text(m: &Matcher) -> String {
    let op = match matcher::Op::try_from(m.op).unwrap_or(matcher::Op::Unspecified) {
        matcher::Op::Equal => "=",
        matcher::Op::NotEqual => "!=",
        matcher::Op::Regex => "=~",
        matcher::Op::NotRegex => "!~",
        matcher::Op::Unspecified => "?",
    };
    format!("{}{op}{}", m.name, m.value)
}

#[derive(Serialize)]
struct SilenceJson<'a> {
    id: &'a str,
    matchers: Vec<String>,
    starts: String,
    ends: String,
    active: bool,
    created_by: &'a str,
    comment: &'a str,
}

fn silence_json(s: &Silence) -> SilenceJson<'_> {
    let now = now_ms();
    SilenceJson {
        id: &s.id,
        matchers: s.matchers.iter().map(matcher_text).collect(),
        starts: format_rfc3339(s.starts_ms),
        ends: format_rfc3339(s.ends_ms),
        active: s.starts_ms <= now && now < s.ends_ms,
        created_by: &s.created_by,
        comment: &s.comment,
    }
}

pub(crate) fn silence(config_path: &Path, command: SilenceCommand) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            comment,
            json,
        } => {
            let request = CreateSilenceRequest {
                matchers,
                starts_ms: 0,
                ends_ms: now_ms() + duration.as_millis() as i64,
                comment,
            };
            let silence = config.call(AdminClient::new, |mut admin| async move {
                admin.create_silence(request).await
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&silence_json(&silence))?);
            } else {
                println!("{}", silence.id);
            }
        }
        SilenceCommand::List { json } => {
            let silences = config
                .call(AdminClient::new, |mut admin| async move {
                    admin.list_silences(ListSilencesRequest {}).await
                })?
                .silences;
            let out: Vec<SilenceJson<'_>> = silences.iter().map(silence_json).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let mut rows = vec![[
                "ID".to_owned(),
                "ACTIVE".to_owned(),
                "ENDS".to_owned(),
                "BY".to_owned(),
                "MATCHERS".to_owned(),
                "COMMENT".to_owned(),
            ]];
            for s in &out {
                rows.push([
                    s.id.to_owned(),
                    if s.active { "yes" } else { "no" }.to_owned(),
                    s.ends.clone(),
                    s.created_by.to_owned(),
                    s.matchers.join(","),
                    s.comment.to_owned(),
                ]);
            }
            print_table(&rows);
        }
        SilenceCommand::Expire { id } => {
            let silence = config.call(AdminClient::new, |mut admin| async move {
                admin.expire_silence(ExpireSilenceRequest { id }).await
            })?;
            println!("expired {}", silence.id);
        }
    }
    Ok(())
}

pub(crate) fn reload(config_path: &Path) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    let response = config.call(AdminClient::new, |mut admin| async move {
        admin.reload(ReloadRequest {}).await
    })?;
    println!("rules: {}", response.rules.join(", "));
    println!(
        "hooks: {}",
        if response.hooks.is_empty() {
            "(none)".to_owned()
        } else {
            response.hooks.join(", ")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_shows_since_when_it_entered_its_state_never_the_epoch() {
        let alert = |state: AlertState, active_since_ms, fired_ms, resolved_ms| Alert {
            state: state as i32,
            active_since_ms,
            fired_ms,
            resolved_ms,
            ..Alert::default()
        };
        // A resolved alert's episode is over: active since 0.
        let resolved = alert(AlertState::Resolved, 0, 1_000, 2_000);
        assert_eq!(since(&resolved), Some(2_000));
        assert_eq!(alert_json(&resolved).active_since, None);
        assert_eq!(since(&alert(AlertState::Inactive, 0, 0, 0)), None);
        assert_eq!(
            since(&alert(AlertState::Firing, 500, 1_000, 0)),
            Some(1_000)
        );
        assert_eq!(since(&alert(AlertState::Pending, 500, 0, 0)), Some(500));
    }
}
