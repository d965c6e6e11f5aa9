//! Hook tests as the gRPC Admin service (`hostwatch alerts test-hook`)
//! and the HTTP API (the console's "Test a hook") both send them: one
//! function, so both go through the alerting engine's `test_hook` (the
//! same test notification, outside the outbox) and answer alike. Errors
//! are gRPC statuses, the collector's one mapping of domain errors
//! (`convert`); the HTTP API maps them to its own.

use crate::convert;
use crate::shared::Shared;
use hostwatch_alerting::hooks::Outcome;
use tonic::Status;

/// Sends a test notification through the hook `hook` now, firing or with
/// `resolve` its resolution, on behalf of `by` (the caller's certificate
/// or token name) through `via` ("Admin", "HTTP"): what the receiver
/// answered. NOT_FOUND names a hook that does not exist.
pub(crate) async fn test(
    shared: &Shared,
    by: &str,
    via: &str,
    hook: &str,
    resolve: bool,
) -> Result<Outcome, Status> {
    tracing::info!(by, via, %hook, resolve, "hook test requested");
    shared
        .alerting
        .test_hook(hook, resolve)
        .await
        .map_err(convert::alerting_status)
}
