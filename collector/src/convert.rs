//! Translation between the protocol and the store's domain types: the only
//! place where protobuf and `hostwatch-tsdb` meet.

use crate::promql::QueryError;
use crate::tokens;
use hostwatch_alerting as alerting;
use hostwatch_promql::{Sample, Series, Value};
use hostwatch_proto::v1 as pb;
use hostwatch_tsdb as tsdb;
use tonic::Status;

/// Most processes one snapshot may list.
const MAX_SNAPSHOT_PROCESSES: usize = 256;
/// Longest process name, user or command accepted, in bytes.
const MAX_PROCESS_TEXT: usize = 4096;

/// Refuses a request whose required field `name` was left empty.
pub(crate) fn required(value: &str, name: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{name} is required")));
    }
    Ok(())
}

/// A batch from the wire, for `host` (from the certificate) and the
/// stream's spool id. Series whose timestamp and value arrays differ in
/// length, and process snapshots that are too large or hold non-finite
/// figures, are malformed: left out, not guessed at, and counted in the
/// batch (the store counts them with its refusals).
pub fn batch(host: &str, source: u64, batch: pb::Batch) -> tsdb::Batch {
    let mut malformed = 0;
    let processes = batch
        .processes
        .into_iter()
        .filter_map(|s| match process_snapshot(s) {
            Some(s) => Some(s),
            None => {
                malformed += 1;
                None
            }
        })
        .collect();
    let series = batch
        .series
        .into_iter()
        .filter_map(|s| {
            if s.timestamps_ms.len() != s.values.len() {
                malformed += s.timestamps_ms.len().max(s.values.len()) as u64;
                return None;
            }
            let points = s
                .timestamps_ms
                .iter()
                .zip(&s.values)
                .map(|(&t_ms, &value)| tsdb::Point { t_ms, value })
                .collect();
            Some(tsdb::SeriesInput {
                metric: s.metric,
                labels: s.labels.into_iter().map(label).collect(),
                points,
            })
        })
        .collect();
    tsdb::Batch {
        host: host.to_owned(),
        source,
        seq: batch.seq,
        series,
        processes,
        malformed,
    }
}

fn process_snapshot(snapshot: pb::ProcessSnapshot) -> Option<tsdb::ProcessSnapshot> {
    if snapshot.processes.len() > MAX_SNAPSHOT_PROCESSES {
        return None;
    }
    let processes = snapshot
        .processes
        .into_iter()
        .map(|p| {
            let sane = p.cpu_cores.is_finite()
                && p.cpu_cores >= 0.0
                && [&p.name, &p.command, &p.user]
                    .iter()
                    .all(|t| t.len() <= MAX_PROCESS_TEXT);
            sane.then_some(tsdb::ProcessInfo {
                pid: p.pid,
                name: p.name,
                command: p.command,
                user: p.user,
                cpu_cores: p.cpu_cores,
                rss_bytes: p.rss_bytes,
                start_time_ms: p.start_time_ms,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(tsdb::ProcessSnapshot {
        t_ms: snapshot.timestamp_ms,
        processes,
    })
}

pub(crate) fn process_snapshot_out(snapshot: tsdb::ProcessSnapshot) -> pb::ProcessSnapshot {
    pb::ProcessSnapshot {
        timestamp_ms: snapshot.t_ms,
        processes: snapshot
            .processes
            .into_iter()
            .map(|p| pb::ProcessInfo {
                pid: p.pid,
                name: p.name,
                command: p.command,
                user: p.user,
                cpu_cores: p.cpu_cores,
                rss_bytes: p.rss_bytes,
                start_time_ms: p.start_time_ms,
            })
            .collect(),
    }
}

fn label(l: pb::Label) -> tsdb::Label {
    tsdb::Label::new(l.name, l.value)
}

fn labels_out(key: &tsdb::SeriesKey) -> Vec<pb::Label> {
    key.labels
        .iter()
        .map(|l| pb::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// Query matchers from the wire; an unknown operator or a bad regex is
/// INVALID_ARGUMENT naming the matcher.
pub(crate) fn matchers(matchers: &[pb::Matcher]) -> Result<Vec<tsdb::Matcher>, Status> {
    use pb::matcher::Op;
    matchers
        .iter()
        .map(|m| {
            let op = Op::try_from(m.op).unwrap_or(Op::Unspecified);
            let name = m.name.clone();
            let value = m.value.clone();
            match op {
                Op::Equal => Ok(tsdb::Matcher::Equal(name, value)),
                Op::NotEqual => Ok(tsdb::Matcher::NotEqual(name, value)),
                Op::Regex | Op::NotRegex => tsdb::Matcher::regex(&name, &value, op == Op::NotRegex)
                    .map_err(|e| Status::invalid_argument(e.to_string())),
                Op::Unspecified => Err(Status::invalid_argument(format!(
                    "matcher on {name:?}: op must be EQUAL, NOT_EQUAL, REGEX or NOT_REGEX"
                ))),
            }
        })
        .collect()
}

/// The aggregation of a stepped range query; UNSPECIFIED or an unknown
/// value is INVALID_ARGUMENT.
pub(crate) fn aggregation(value: i32) -> Result<tsdb::Aggregation, Status> {
    use pb::Aggregation as A;
    match A::try_from(value).unwrap_or(A::Unspecified) {
        A::Avg => Ok(tsdb::Aggregation::Avg),
        A::Min => Ok(tsdb::Aggregation::Min),
        A::Max => Ok(tsdb::Aggregation::Max),
        A::Sum => Ok(tsdb::Aggregation::Sum),
        A::Count => Ok(tsdb::Aggregation::Count),
        A::Last => Ok(tsdb::Aggregation::Last),
        A::Rate => Ok(tsdb::Aggregation::Rate),
        A::Unspecified => Err(Status::invalid_argument(format!(
            "aggregation {value} with step_ms: use AVG, MIN, MAX, SUM, COUNT, LAST or RATE"
        ))),
    }
}

pub(crate) fn series_data(data: tsdb::SeriesData) -> pb::SeriesPoints {
    let labels = labels_out(&data.key);
    let (timestamps_ms, values) = data.points.iter().map(|p| (p.t_ms, p.value)).unzip();
    pb::SeriesPoints {
        metric: data.key.metric,
        labels,
        timestamps_ms,
        values,
    }
}

pub(crate) fn series_value((key, point): (tsdb::SeriesKey, tsdb::Point)) -> pb::SeriesValue {
    pb::SeriesValue {
        labels: labels_out(&key),
        metric: key.metric,
        timestamp_ms: point.t_ms,
        value: point.value,
    }
}

fn alert_state(phase: alerting::Phase) -> i32 {
    use pb::AlertState;
    (match phase {
        alerting::Phase::Inactive => AlertState::Inactive,
        alerting::Phase::Pending => AlertState::Pending,
        alerting::Phase::Firing => AlertState::Firing,
        alerting::Phase::Resolved => AlertState::Resolved,
    }) as i32
}

pub(crate) fn alert_out(alert: alerting::Alert, silenced_by: Vec<String>) -> pb::Alert {
    pb::Alert {
        state: alert_state(alert.phase()),
        fingerprint: alert.fingerprint,
        rule: alert.rule,
        labels: alert.labels.into_iter().collect(),
        annotations: alert.annotations.into_iter().collect(),
        value: alert.value,
        active_since_ms: alert.machine.active_since_ms,
        fired_ms: alert.machine.fired_ms.unwrap_or(0),
        resolved_ms: alert.machine.resolved_ms.unwrap_or(0),
        evaluated_ms: alert.evaluated_ms,
        flaps: alert.machine.flaps,
        silenced_by,
    }
}

pub(crate) fn transition_out(t: alerting::Transition) -> pb::AlertTransition {
    pb::AlertTransition {
        id: t.id,
        fingerprint: t.fingerprint,
        rule: t.rule,
        labels: t.labels.into_iter().collect(),
        annotations: t.annotations.into_iter().collect(),
        from: alert_state(t.from),
        to: alert_state(t.to),
        at_ms: t.at_ms,
        recorded_ms: t.recorded_ms,
        value: t.value,
        flapping: t.flapping,
    }
}

/// Silence matchers from the wire, in the text form alerting stores.
pub(crate) fn silence_matchers(matchers: &[pb::Matcher]) -> Result<Vec<String>, Status> {
    use alerting::matcher::MatchOp;
    use pb::matcher::Op;
    matchers
        .iter()
        .map(|m| {
            let op = match Op::try_from(m.op).unwrap_or(Op::Unspecified) {
                Op::Equal => MatchOp::Equal,
                Op::NotEqual => MatchOp::NotEqual,
                Op::Regex => MatchOp::Regex,
                Op::NotRegex => MatchOp::NotRegex,
                Op::Unspecified => {
                    return Err(Status::invalid_argument(format!(
                        "matcher on {:?}: op must be EQUAL, NOT_EQUAL, REGEX or NOT_REGEX",
                        m.name
                    )));
                }
            };
            crate::silences::matcher_text(&m.name, op, &m.value)
        })
        .collect()
}

/// A matcher as alerting parses it (silences, the CLI's `--match`), on the wire.
pub fn matcher_out(m: alerting::matcher::LabelMatcher) -> pb::Matcher {
    use alerting::matcher::MatchOp;
    use pb::matcher::Op;
    pb::Matcher {
        op: match m.op {
            MatchOp::Equal => Op::Equal,
            MatchOp::NotEqual => Op::NotEqual,
            MatchOp::Regex => Op::Regex,
            MatchOp::NotRegex => Op::NotRegex,
        } as i32,
        name: m.name,
        value: m.value,
    }
}

pub(crate) fn silence_out(s: alerting::Silence) -> pb::Silence {
    let matchers = s
        .matchers
        .iter()
        .filter_map(|text| alerting::matcher::LabelMatcher::parse(text).ok())
        .map(matcher_out)
        .collect();
    pb::Silence {
        id: s.id,
        matchers,
        starts_ms: s.starts_ms,
        ends_ms: s.ends_ms,
        created_by: s.created_by,
        comment: s.comment,
        created_ms: s.created_ms,
    }
}

/// The role of a new API token: viewer or operator.
pub(crate) fn token_role_in(role: i32) -> Result<tokens::TokenRole, Status> {
    use pb::Role;
    match Role::try_from(role) {
        Ok(Role::Viewer) => Ok(tokens::TokenRole::Viewer),
        Ok(Role::Operator) => Ok(tokens::TokenRole::Operator),
        Ok(Role::Unspecified) => Err(Status::invalid_argument(
            "role is required: ROLE_VIEWER or ROLE_OPERATOR",
        )),
        Ok(other) => Err(Status::invalid_argument(format!(
            "role {} cannot hold an API token: ROLE_VIEWER or ROLE_OPERATOR (ROLE_AGENT: an enrollment token)",
            other.as_str_name()
        ))),
        Err(_) => Err(Status::invalid_argument(format!(
            "role {role} is not a role: ROLE_VIEWER or ROLE_OPERATOR"
        ))),
    }
}

/// The lifetime of a new API token; its bounds are checked by the store.
pub(crate) fn token_ttl_in(ttl_ms: i64, never_expires: bool) -> Result<tokens::Ttl, Status> {
    match (never_expires, ttl_ms) {
        (true, 0) => Ok(tokens::Ttl::Never),
        (true, _) => Err(Status::invalid_argument(format!(
            "ttl_ms must be 0 when never_expires is set, not {ttl_ms}"
        ))),
        (false, ms) => Ok(tokens::Ttl::Ms(ms)),
    }
}

/// An API token's entry as listed at `now_ms`.
pub(crate) fn token_out(entry: tokens::TokenEntry, now_ms: i64) -> pb::ApiToken {
    let expired = entry.expired(now_ms);
    let tokens::TokenKind::Api { role } = entry.kind;
    let role = match role {
        tokens::TokenRole::Viewer => pb::Role::Viewer,
        tokens::TokenRole::Operator => pb::Role::Operator,
    };
    pb::ApiToken {
        name: entry.name,
        role: role as i32,
        created_ms: entry.created_ms,
        expires_ms: entry.expires_ms.unwrap_or(0),
        expired,
        created_by: entry.created_by,
        uses: 0,
        uses_left: 0,
        hosts: String::new(),
    }
}

/// An enrollment token's entry as listed at `now_ms`.
pub(crate) fn enroll_token_out(entry: crate::enroll::EnrollEntry, now_ms: i64) -> pb::ApiToken {
    pb::ApiToken {
        expired: entry.expired(now_ms),
        name: entry.name,
        role: pb::Role::Agent as i32,
        created_ms: entry.created_ms,
        expires_ms: entry.expires_ms,
        created_by: entry.created_by,
        uses: entry.uses,
        uses_left: entry.uses_left,
        hosts: entry.hosts.unwrap_or_default(),
    }
}

/// Whether a CreateToken request is for an enrollment token (ROLE_AGENT).
pub(crate) fn is_enroll_role(role: i32) -> bool {
    pb::Role::try_from(role) == Ok(pb::Role::Agent)
}

/// An enrollment token to create from a CreateToken request.
pub(crate) fn enroll_token_in(
    request: pb::CreateTokenRequest,
    created_by: String,
) -> Result<crate::enroll::NewEnrollToken, Status> {
    if request.never_expires {
        return Err(Status::invalid_argument(
            "never_expires: an enrollment token must expire (ttl_ms, at most 30 days)",
        ));
    }
    let hosts = match request.hosts.as_str() {
        "" => None,
        text => Some(crate::enroll::HostPattern::parse(text).map_err(Status::invalid_argument)?),
    };
    Ok(crate::enroll::NewEnrollToken {
        name: (!request.name.is_empty()).then_some(request.name),
        uses: request.uses,
        ttl_ms: request.ttl_ms,
        hosts,
        created_by,
    })
}

pub(crate) fn token_status(error: tokens::TokenError) -> Status {
    use tokens::TokenError;
    match error {
        TokenError::Invalid(m) => Status::invalid_argument(m),
        e @ TokenError::Exists(_) => Status::already_exists(e.to_string()),
        e @ TokenError::NotFound(_) => Status::not_found(e.to_string()),
        // The state database's failure is logged once, by the state watch.
        e @ (TokenError::Unavailable(_) | TokenError::RevokedNotStored { .. }) => {
            Status::unavailable(e.to_string())
        }
        e @ TokenError::Random(_) => {
            tracing::error!(error = %e, "cannot create an API token");
            Status::internal(e.to_string())
        }
    }
}

pub(crate) fn storage_stats_out(
    s: tsdb::StoreStats,
    refused: &crate::shared::RefusedMessages,
    state_database_failure: Option<String>,
) -> pb::StorageStatsResponse {
    let r = s.rejected;
    let health = &s.health;
    pb::StorageStatsResponse {
        state: health.condition.to_string(),
        state_cause: health.refusal().unwrap_or_default(),
        state_since_ms: health.since_ms,
        recoveries: health.recoveries,
        free_bytes: health.free_bytes,
        min_free_bytes: health.min_free_bytes,
        oversized_messages: refused.oversized.load(std::sync::atomic::Ordering::Relaxed),
        undecodable_messages: refused
            .undecodable
            .load(std::sync::atomic::Ordering::Relaxed),
        state_database_failure: state_database_failure.unwrap_or_default(),
        unauthorized_http_requests: refused
            .http_unauthorized
            .load(std::sync::atomic::Ordering::Relaxed),
        enrollments: refused
            .enrollments
            .load(std::sync::atomic::Ordering::Relaxed),
        enrollments_refused: refused
            .enrollments_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        renewals: refused.renewals.load(std::sync::atomic::Ordering::Relaxed),
        renewals_refused: refused
            .renewals_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        hosts: s.hosts,
        series: s.series,
        head_samples: s.head_samples,
        head_bytes: s.head_bytes,
        wal_bytes: s.wal_bytes,
        disk_bytes: s.disk_bytes,
        batches: s.batches,
        duplicate_batches: s.duplicate_batches,
        samples_stored: s.samples_stored,
        snapshots_stored: s.snapshots_stored,
        rejected: Some(pb::Rejections {
            non_finite: r.non_finite,
            future: r.future,
            too_old: r.too_old,
            out_of_order: r.out_of_order,
            duplicate: r.duplicate,
            series_limit: r.series_limit,
            invalid_series: r.invalid_series,
            too_dense: r.too_dense,
            malformed: r.malformed,
        }),
        commit_groups: s.commit_groups,
        sealed_chunks: s.sealed_chunks,
        deleted_chunks: s.deleted_chunks,
        replayed_frames: s.replayed_frames,
        replayed_samples: s.replayed_samples,
        corrupt_wal_frames: s.corrupt_wal_frames,
        corrupt_blocks: s.corrupt_blocks,
        corrupt_series: s.corrupt_series,
        corrupt_sequences: s.corrupt_sequences,
        orphan_samples: s.orphan_samples,
        maintenance_errors: s.maintenance_errors,
    }
}

pub(crate) fn verify_out(r: tsdb::VerifyReport) -> pb::VerifyStorageResponse {
    pb::VerifyStorageResponse {
        series: r.series,
        sequences: r.sequences,
        wal_frames: r.wal_frames,
        chunks: r.chunks,
        chunk_samples: r.chunk_samples,
        aggregate_chunks: r.row_chunks,
        snapshot_blocks: r.snapshot_blocks,
        damaged_total: r.damaged_total,
        damaged: r.damaged,
    }
}

pub(crate) fn backup_out(r: tsdb::BackupReport) -> pb::BackupResponse {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    pb::BackupResponse {
        group: r.manifest.group,
        created_ms: r.manifest.created_ms,
        files: r.manifest.files.len() as u64,
        bytes_total: r.bytes_total,
        bytes_written: r.bytes_written,
        partitions_copied: r.partitions_copied,
        partitions_kept: r.partitions_kept,
        skipped: r.manifest.skipped,
        duration_ms: ms(r.duration),
        maintenance_paused_ms: ms(r.maintenance_paused),
    }
}

/// The one mapping of alerting errors to gRPC statuses.
pub(crate) fn alerting_status(error: alerting::AlertingError) -> Status {
    match error {
        alerting::AlertingError::Invalid(m) => Status::invalid_argument(m),
        alerting::AlertingError::NotFound(m) => Status::not_found(m),
        // The state database's failure is logged once, when it happens.
        e @ alerting::AlertingError::StateUnavailable(_) => {
            Status::unavailable(format!("alert state failure: {e}"))
        }
        e => {
            tracing::error!(error = %e, "alert state failure");
            Status::unavailable(format!("alert state failure: {e}"))
        }
    }
}

/// How long an agent refused because the store cannot store waits before
/// it tries again: the store looks at its free space and retries its
/// rebuild every second, and a fleet coming back at once is spread out by
/// the agents' jitter.
pub(crate) const STORAGE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The one mapping of store errors to gRPC statuses. Not logged here: the
/// store logs a failure once, when it happens, not once per refused call.
pub(crate) fn storage_status(error: tsdb::TsdbError) -> Status {
    match error {
        tsdb::TsdbError::Invalid(m) => Status::invalid_argument(m),
        tsdb::TsdbError::Backup(m) => Status::failed_precondition(m),
        tsdb::TsdbError::TooManyPoints { limit } => Status::resource_exhausted(format!(
            "the query selects more than limits.max_query_points ({limit}) points; narrow the range or the matchers"
        )),
        // Agents keep the batch and retry, after the delay.
        tsdb::TsdbError::ReadOnly(m) => retry_after(
            Status::resource_exhausted(format!("storage read-only: {m}")),
            STORAGE_RETRY,
        ),
        e => retry_after(
            Status::unavailable(format!("storage failure: {e}")),
            STORAGE_RETRY,
        ),
    }
}

/// The status that turns an agent away while the store does not store.
pub(crate) fn health_status(health: &tsdb::Health) -> Option<Status> {
    let why = health.refusal()?;
    Some(storage_status(match health.condition {
        tsdb::Condition::ReadOnly => tsdb::TsdbError::ReadOnly(why),
        _ => tsdb::TsdbError::Failed(why),
    }))
}

/// Tells the client when to try again, as gRPC's retry pushback does
/// (`grpc-retry-pushback-ms`, in milliseconds).
pub(crate) fn retry_after(mut status: Status, delay: std::time::Duration) -> Status {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    status
        .metadata_mut()
        .insert("grpc-retry-pushback-ms", ms.into());
    status
}

/// A PromQL query's failure as a gRPC status: Prometheus' `bad_data` is
/// INVALID_ARGUMENT, too many samples RESOURCE_EXHAUSTED, a timeout
/// (waiting for a place included) DEADLINE_EXCEEDED, any other failed
/// evaluation FAILED_PRECONDITION; the message names the problem.
pub(crate) fn promql_status(error: QueryError) -> Status {
    use hostwatch_promql::PromqlError;
    let message = error.to_string();
    match error {
        QueryError::Engine(PromqlError::BadData(_)) => Status::invalid_argument(message),
        QueryError::Engine(PromqlError::TooManySamples(_)) => {
            Status::resource_exhausted(format!("{message} (more than query.max_samples samples)"))
        }
        QueryError::Engine(PromqlError::Timeout(_)) | QueryError::NoPlace(_) => {
            Status::deadline_exceeded(message)
        }
        QueryError::Engine(PromqlError::Execution(_)) => Status::failed_precondition(message),
        QueryError::Unavailable(_) => Status::unavailable(message),
    }
}

fn promql_labels_out(labels: Vec<tsdb::Label>) -> Vec<pb::Label> {
    labels
        .into_iter()
        .map(|l| pb::Label {
            name: l.name,
            value: l.value,
        })
        .collect()
}

fn promql_labels_in(labels: &[pb::Label]) -> Vec<tsdb::Label> {
    labels
        .iter()
        .map(|l| tsdb::Label::new(&l.name, &l.value))
        .collect()
}

/// A PromQL result for the wire.
pub(crate) fn promql_out(value: Value) -> pb::PromqlResponse {
    use pb::promql_response::Result as R;
    let result = match value {
        Value::Scalar(p) => R::Scalar(pb::PromqlScalar {
            timestamp_ms: p.t_ms,
            value: p.value,
        }),
        Value::String { t_ms, value } => R::String(pb::PromqlString {
            timestamp_ms: t_ms,
            value,
        }),
        Value::Vector(samples) => R::Vector(pb::PromqlVector {
            samples: samples
                .into_iter()
                .map(|s| pb::PromqlSample {
                    labels: promql_labels_out(s.labels),
                    timestamp_ms: s.point.t_ms,
                    value: s.point.value,
                })
                .collect(),
        }),
        Value::Matrix(series) => R::Matrix(pb::PromqlMatrix {
            series: series
                .into_iter()
                .map(|s| {
                    let (timestamps_ms, values) =
                        s.points.iter().map(|p| (p.t_ms, p.value)).unzip();
                    pb::PromqlSeries {
                        labels: promql_labels_out(s.labels),
                        timestamps_ms,
                        values,
                    }
                })
                .collect(),
        }),
    };
    pb::PromqlResponse {
        result: Some(result),
    }
}

/// A PromQL result from the wire, `None` without one; a series' extra
/// timestamps or values are left out.
fn promql_in(response: &pb::PromqlResponse) -> Option<Value> {
    use pb::promql_response::Result as R;
    let point = |t_ms, value| tsdb::Point { t_ms, value };
    Some(match response.result.as_ref()? {
        R::Scalar(s) => Value::Scalar(point(s.timestamp_ms, s.value)),
        R::String(s) => Value::String {
            t_ms: s.timestamp_ms,
            value: s.value.clone(),
        },
        R::Vector(v) => Value::Vector(
            v.samples
                .iter()
                .map(|s| Sample {
                    labels: promql_labels_in(&s.labels),
                    point: point(s.timestamp_ms, s.value),
                })
                .collect(),
        ),
        R::Matrix(m) => Value::Matrix(
            m.series
                .iter()
                .map(|s| Series {
                    labels: promql_labels_in(&s.labels),
                    points: s
                        .timestamps_ms
                        .iter()
                        .zip(&s.values)
                        .map(|(t, v)| point(*t, *v))
                        .collect(),
                })
                .collect(),
        ),
    })
}

/// A `Query.Promql` answer in the shape of Prometheus' HTTP API's `data`
/// (`{"resultType": ..., "result": ...}`, values as strings), written as
/// the HTTPS API writes it; `null` without a result. Public for the CLI's
/// `--json`.
pub fn promql_json(response: &pb::PromqlResponse) -> serde_json::Value {
    promql_in(response).map_or(serde_json::Value::Null, |v| crate::http::query_data(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_errors_get_their_status() {
        use hostwatch_promql::PromqlError;
        use std::time::Duration;
        use tonic::Code;
        for (error, code) in [
            (
                QueryError::Engine(PromqlError::BadData("x".into())),
                Code::InvalidArgument,
            ),
            (
                QueryError::Engine(PromqlError::TooManySamples("x")),
                Code::ResourceExhausted,
            ),
            (
                QueryError::Engine(PromqlError::Timeout("x")),
                Code::DeadlineExceeded,
            ),
            (QueryError::NoPlace(Duration::ZERO), Code::DeadlineExceeded),
            (
                QueryError::Engine(PromqlError::Execution("x".into())),
                Code::FailedPrecondition,
            ),
            (QueryError::Unavailable("x".into()), Code::Unavailable),
        ] {
            let message = error.to_string();
            let status = promql_status(error);
            assert_eq!(status.code(), code, "{message}");
            assert!(status.message().contains(&message), "{status}");
        }
    }

    #[test]
    fn promql_results_cross_the_wire_unchanged() {
        let p = |t_ms, value| tsdb::Point { t_ms, value };
        let labels = vec![
            tsdb::Label::new("__name__", "m"),
            tsdb::Label::new("host", "a"),
        ];
        let values = [
            Value::Scalar(p(1_000, 0.5)),
            Value::String {
                t_ms: 2_000,
                value: "x".into(),
            },
            Value::Vector(vec![Sample {
                labels: labels.clone(),
                point: p(3_000, f64::INFINITY),
            }]),
            Value::Matrix(vec![Series {
                labels,
                points: vec![p(1_000, 1.0), p(2_000, -2.5)],
            }]),
        ];
        for value in values {
            assert_eq!(promql_in(&promql_out(value.clone())), Some(value));
        }
        assert_eq!(
            promql_json(&pb::PromqlResponse::default()),
            serde_json::Value::Null
        );
        let json = promql_json(&promql_out(Value::Scalar(p(1_000, 0.5))));
        assert_eq!(
            json,
            serde_json::json!({"resultType": "scalar", "result": [1, "0.5"]})
        );
    }

    #[test]
    fn mismatched_arrays_are_counted_and_dropped() {
        let wire = pb::Batch {
            seq: 3,
            series: vec![
                pb::SeriesPoints {
                    metric: "ok".into(),
                    labels: vec![],
                    timestamps_ms: vec![1, 2],
                    values: vec![1.0, 2.0],
                },
                pb::SeriesPoints {
                    metric: "bad".into(),
                    labels: vec![],
                    timestamps_ms: vec![1, 2, 3],
                    values: vec![1.0],
                },
            ],
            dropped_batches_total: 0,
            processes: vec![
                pb::ProcessSnapshot {
                    timestamp_ms: 1,
                    processes: vec![pb::ProcessInfo {
                        cpu_cores: f64::NAN,
                        ..Default::default()
                    }],
                },
                pb::ProcessSnapshot {
                    timestamp_ms: 2,
                    processes: vec![pb::ProcessInfo::default(); MAX_SNAPSHOT_PROCESSES + 1],
                },
                pb::ProcessSnapshot {
                    timestamp_ms: 3,
                    processes: vec![pb::ProcessInfo {
                        name: "x".repeat(MAX_PROCESS_TEXT + 1),
                        ..Default::default()
                    }],
                },
                pb::ProcessSnapshot {
                    timestamp_ms: 4,
                    processes: vec![pb::ProcessInfo::default()],
                },
            ],
        };
        let batch = batch("h", 9, wire);
        assert_eq!(batch.malformed, 3 + 3);
        assert_eq!(batch.processes.len(), 1);
        assert_eq!(batch.processes[0].t_ms, 4);
        assert_eq!(batch.series.len(), 1);
        assert_eq!((batch.host.as_str(), batch.source, batch.seq), ("h", 9, 3));
    }

    #[test]
    fn token_roles_and_lifetimes_are_checked_naming_the_field() {
        use crate::tokens::{TokenRole, Ttl};
        assert_eq!(
            token_role_in(pb::Role::Viewer as i32).unwrap(),
            TokenRole::Viewer
        );
        assert_eq!(
            token_role_in(pb::Role::Operator as i32).unwrap(),
            TokenRole::Operator
        );
        for role in [
            pb::Role::Unspecified as i32,
            pb::Role::Agent as i32,
            pb::Role::Collector as i32,
            42,
        ] {
            let e = token_role_in(role).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with("role"), "{}", e.message());
        }
        assert_eq!(token_ttl_in(0, true).unwrap(), Ttl::Never);
        assert_eq!(token_ttl_in(5, false).unwrap(), Ttl::Ms(5));
        let e = token_ttl_in(5, true).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("ttl_ms"), "{}", e.message());
        let codes = [
            (
                crate::tokens::TokenError::Invalid("name".into()),
                tonic::Code::InvalidArgument,
            ),
            (
                crate::tokens::TokenError::Exists("a".into()),
                tonic::Code::AlreadyExists,
            ),
            (
                crate::tokens::TokenError::NotFound("a".into()),
                tonic::Code::NotFound,
            ),
            (
                crate::tokens::TokenError::Unavailable("x".into()),
                tonic::Code::Unavailable,
            ),
        ];
        for (e, code) in codes {
            assert_eq!(token_status(e).code(), code);
        }
    }

    #[test]
    fn unknown_matcher_ops_and_bad_regexes_are_invalid_arguments() {
        let bad_op = pb::Matcher {
            name: "a".into(),
            op: 42,
            value: "x".into(),
        };
        let bad_re = pb::Matcher {
            name: "a".into(),
            op: pb::matcher::Op::Regex as i32,
            value: "(".into(),
        };
        for m in [bad_op, bad_re] {
            let status = matchers(&[m]).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn aggregations_map_and_unknown_ones_are_invalid_arguments() {
        assert_eq!(
            aggregation(pb::Aggregation::Rate as i32).unwrap(),
            tsdb::Aggregation::Rate
        );
        for bad in [0, 8, -1] {
            let status = aggregation(bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
}
