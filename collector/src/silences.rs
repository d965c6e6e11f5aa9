//! Silences as the gRPC Admin service and the HTTP API both manage them:
//! one function per change, so both take the same checks (the alerting
//! engine's: matchers, start and end, the longest silence, expiring one
//! that ended) and give the same answers. The creator is always the
//! caller's authenticated name, never something the request says.
//! Errors are gRPC statuses, the collector's one mapping of domain
//! errors (`convert`); the HTTP API maps them to its own.

use crate::convert;
use crate::shared::Shared;
use hostwatch_alerting::matcher::MatchOp;
use hostwatch_alerting::{NewSilence, Silence};
use tonic::Status;

/// A silence to create, as a request asks for it.
#[derive(Debug)]
pub(crate) struct SilenceRequest {
    /// In the text form alerting stores: `name=value`, `name=~regex` ...
    pub(crate) matchers: Vec<String>,
    /// 0 for now.
    pub(crate) starts_ms: i64,
    pub(crate) ends_ms: i64,
    pub(crate) comment: String,
}

/// A matcher from its parts in the text form alerting stores; the name
/// must be there (the engine checks the rest).
pub(crate) fn matcher_text(name: &str, op: MatchOp, value: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "matcher {:?} without a label name",
            format!("{}{value}", op.token())
        )));
    }
    Ok(format!("{name}{}{value}", op.token()))
}

/// Creates a silence on behalf of `by` (the caller's certificate or
/// token name).
pub(crate) async fn create(
    shared: &Shared,
    by: &str,
    request: SilenceRequest,
) -> Result<Silence, Status> {
    shared
        .alerting
        .create_silence(NewSilence {
            matchers: request.matchers,
            starts_ms: request.starts_ms,
            ends_ms: request.ends_ms,
            created_by: by.to_owned(),
            comment: request.comment,
        })
        .await
        .map_err(convert::alerting_status)
}

/// Silences, including those that ended in the last day, newest first.
pub(crate) fn list(shared: &Shared) -> Vec<Silence> {
    shared.alerting.silences()
}

/// Ends the silence `id` now, on behalf of `by`; NOT_FOUND for an unknown
/// id, INVALID_ARGUMENT for one that has ended already.
pub(crate) async fn expire(
    shared: &Shared,
    id: &str,
    by: &str,
    via: &str,
) -> Result<Silence, Status> {
    convert::required(id, "id")?;
    let silence = shared
        .alerting
        .expire_silence(id)
        .await
        .map_err(convert::alerting_status)?;
    tracing::info!(silence.id = %id, by = %by, via, "silence expired");
    Ok(silence)
}
