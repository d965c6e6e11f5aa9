//! hostwatch's own read endpoints, under `/api/v1/hostwatch/`, beside
//! Prometheus' (which have no place for them): hosts and their facts,
//! process snapshots, and alert transitions (silences are in `silences`,
//! hooks in `hooks`).
//! They answer through the same reads as the gRPC Query service
//! (`crate::reads`), in Prometheus' envelope and error shapes, with times
//! in RFC 3339.

use super::api::{Api, answer};
use super::error::ApiError;
use super::json::value_text;
use super::params::{Params, parse_time};
use crate::reads::{self, HistoryQuery};
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::get;
use hostwatch_alerting::{Phase, Transition, format_rfc3339};
use hostwatch_proto::v1::HostStatus;
use hostwatch_tsdb::ProcessSnapshot;
use serde_json::{Value as Json, json};

/// `router` with hostwatch's endpoints added; each read answers GET and
/// form-encoded POST, as Prometheus' do; the silences' are their own.
pub(crate) fn routes(router: Router<Api>) -> Router<Api> {
    super::hooks::routes(super::silences::routes(router))
        .route("/api/v1/hostwatch/hosts", get(hosts).post(hosts))
        .route("/api/v1/hostwatch/hosts/{host}", get(host).post(host))
        .route(
            "/api/v1/hostwatch/processes",
            get(processes).post(processes),
        )
        .route(
            "/api/v1/hostwatch/alerts/history",
            get(history).post(history),
        )
}

/// A page of hosts in id order: `limit` (default 500, at most 1000)
/// after the host id `after`; `next` is the `after` of the next page,
/// empty on the last. With `compact=true`, each host's id, `up`,
/// `connected`, `lastSeen` and `cleanShutdown` only, up to 100,000 a
/// page: a whole fleet in one answer for the console's fleet page.
async fn hosts(State(api): State<Api>, request: Request) -> Response {
    answer(async move {
        let params = api.params(request).await?;
        let limit = i64::try_from(params.limit("limit")?).unwrap_or(i64::MAX);
        let after = params.get("after").unwrap_or_default();
        let compact = match params.get("compact") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::param(
                    "compact",
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        let kind = if compact {
            reads::HostsPage::Compact
        } else {
            reads::HostsPage::Full
        };
        let (hosts, next) = reads::hosts_page(&api.shared, after, limit, kind)?;
        let hosts: Vec<Json> = if compact {
            hosts.iter().map(compact_host_json).collect()
        } else {
            hosts.iter().map(host_json).collect()
        };
        Ok(json!({"hosts": hosts, "next": next}))
    })
    .await
}

async fn host(State(api): State<Api>, Path(id): Path<String>) -> Response {
    answer(async move { Ok(host_json(&reads::host(&api.shared, &id)?)) }).await
}

/// The newest process snapshot of `host` at or before `time` (the newest
/// of all without it); `null` when there is none.
async fn processes(State(api): State<Api>, request: Request) -> Response {
    answer(async move {
        let params = api.params(request).await?;
        let host = params
            .get("host")
            .ok_or_else(|| ApiError::param("host", "a host is required"))?
            .to_owned();
        let at_ms = params
            .get("time")
            .map(|text| parse_time(text).map_err(|e| ApiError::param("time", e)))
            .transpose()?;
        reads::host(&api.shared, &host)?;
        let snapshot = reads::processes(&api.shared, host, at_ms).await?;
        Ok(snapshot.map_or(Json::Null, snapshot_json))
    })
    .await
}

/// Alert transitions, oldest first: of `host`, of the rule `alertname`,
/// into `state`, recorded at or after `since`, at most `limit` (the newest).
async fn history(State(api): State<Api>, request: Request) -> Response {
    answer(async move {
        let params = api.params(request).await?;
        let query = history_query(&params)?;
        if !query.host.is_empty() {
            reads::host(&api.shared, &query.host)?;
        }
        let transitions = reads::alert_history(&api.shared, query).await?;
        let transitions: Vec<Json> = transitions.into_iter().map(transition_json).collect();
        Ok(Json::Array(transitions))
    })
    .await
}

fn history_query(params: &Params) -> Result<HistoryQuery, ApiError> {
    let to = params.get("state").map(phase).transpose()?;
    Ok(HistoryQuery {
        since_ms: params.time_or("since", 0)?,
        host: params.get("host").unwrap_or_default().to_owned(),
        rule: params.get("alertname").unwrap_or_default().to_owned(),
        to,
        limit: params.limit("limit")?,
    })
}

/// A phase by its name, as transitions are written.
fn phase(name: &str) -> Result<Phase, ApiError> {
    [
        Phase::Pending,
        Phase::Firing,
        Phase::Resolved,
        Phase::Inactive,
    ]
    .into_iter()
    .find(|p| p.to_string() == name)
    .ok_or_else(|| {
        ApiError::param(
            "state",
            format!("{name:?} is not a state: use pending, firing, resolved or inactive"),
        )
    })
}

/// A host's status and facts; facts are `null` until its agent sent them,
/// the certificate's expiry `null` until an agent stream was seen with it.
fn host_json(status: &HostStatus) -> Json {
    let facts = status.facts.as_ref().map_or(Json::Null, |f| {
        json!({
            "hostname": f.hostname,
            "osName": f.os_name,
            "osVersion": f.os_version,
            "kernelVersion": f.kernel_version,
            "architecture": f.architecture,
            "cpuModel": f.cpu_model,
            "cpuCount": f.cpu_count,
            "memoryBytes": f.memory_total_bytes,
            "agentVersion": f.agent_version,
            "bootTime": format_rfc3339(f.boot_time_ms),
        })
    });
    json!({
        "host": status.host_id,
        "up": status.up,
        "connected": status.connected,
        "lastSeen": format_rfc3339(status.last_seen_ms),
        "cleanShutdown": status.clean_shutdown,
        "bootId": status.boot_id,
        "certificateExpiry": (status.certificate_expires_ms != 0)
            .then(|| format_rfc3339(status.certificate_expires_ms)),
        "revoked": (status.revoked_ms != 0).then(|| format_rfc3339(status.revoked_ms)),
        "facts": facts,
    })
}

/// A host's status without its facts, boot id or certificate.
fn compact_host_json(status: &HostStatus) -> Json {
    json!({
        "host": status.host_id,
        "up": status.up,
        "connected": status.connected,
        "lastSeen": format_rfc3339(status.last_seen_ms),
        "revoked": (status.revoked_ms != 0).then(|| format_rfc3339(status.revoked_ms)),
        "cleanShutdown": status.clean_shutdown,
    })
}

fn snapshot_json(snapshot: ProcessSnapshot) -> Json {
    let processes: Vec<Json> = snapshot
        .processes
        .into_iter()
        .map(|p| {
            json!({
                "pid": p.pid,
                "name": p.name,
                "command": p.command,
                "user": p.user,
                "cpuCores": p.cpu_cores,
                "rssBytes": p.rss_bytes,
                "startTime": format_rfc3339(p.start_time_ms),
            })
        })
        .collect();
    json!({"time": format_rfc3339(snapshot.t_ms), "processes": processes})
}

/// A transition; its value as Prometheus writes sample values (text, so
/// that non-finite values fit).
fn transition_json(t: Transition) -> Json {
    json!({
        "id": t.id,
        "fingerprint": t.fingerprint,
        "alertname": t.rule,
        "labels": t.labels,
        "annotations": t.annotations,
        "from": t.from.to_string(),
        "to": t.to.to_string(),
        "at": format_rfc3339(t.at_ms),
        "recordedAt": format_rfc3339(t.recorded_ms),
        "value": value_text(t.value),
        "flapping": t.flapping,
    })
}
