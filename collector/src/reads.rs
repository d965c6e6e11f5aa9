//! Operators' reads that the gRPC Query service and the HTTP API both
//! answer: one function per read, so both take the same limits and give
//! the same answers. Errors are gRPC statuses, the collector's one
//! mapping of domain errors (`convert`); the HTTP API maps them to its own.

use crate::convert;
use crate::shared::Shared;
use hostwatch_alerting::{Phase, Transition};
use hostwatch_proto::v1::HostStatus;
use hostwatch_stdx::now_ms;
use hostwatch_tsdb::ProcessSnapshot;
use tonic::Status;

/// Hosts in a page of hosts when the request names no size, and the most
/// it may name: with facts bounded, a full page stays well inside a gRPC
/// client's default 4 MiB receive limit.
const DEFAULT_HOSTS_PAGE: usize = 500;
pub(crate) const MAX_HOSTS_PAGE: usize = 1_000;
/// Hosts in a page of hosts without their facts (HTTP's `compact`), by
/// default and at most: a console's whole fleet in one answer, each host
/// a few dozen bytes of JSON.
pub(crate) const MAX_COMPACT_HOSTS_PAGE: usize = 100_000;

/// How large a page of hosts may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostsPage {
    /// With facts: [`DEFAULT_HOSTS_PAGE`], at most [`MAX_HOSTS_PAGE`].
    Full,
    /// Without facts: up to [`MAX_COMPACT_HOSTS_PAGE`].
    Compact,
}
/// Most transitions one history read returns.
pub(crate) const MAX_HISTORY: usize = 10_000;

/// Up to `page_size` hosts (0: the default; more than the most: the most)
/// whose ids sort after `after` (from the first when empty), by id, and
/// the id to ask the next page after (empty after the last page).
pub(crate) fn hosts_page(
    shared: &Shared,
    after: &str,
    page_size: i64,
    kind: HostsPage,
) -> Result<(Vec<HostStatus>, String), Status> {
    let (default, most) = match kind {
        HostsPage::Full => (DEFAULT_HOSTS_PAGE, MAX_HOSTS_PAGE),
        HostsPage::Compact => (MAX_COMPACT_HOSTS_PAGE, MAX_COMPACT_HOSTS_PAGE),
    };
    let page_size = match usize::try_from(page_size) {
        Ok(0) => default,
        Ok(n) => n.min(most),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "page_size must not be negative, not {page_size}"
            )));
        }
    };
    // The token is the last host id of the previous page: hosts are
    // listed in id order, so the next page starts after it even if hosts
    // came or went meanwhile.
    let (mut hosts, more) = shared.hosts.page(now_ms(), after, page_size);
    for host in &mut hosts {
        revocation(shared, host);
    }
    let next = match hosts.last() {
        Some(last) if more => last.host_id.clone(),
        _ => String::new(),
    };
    Ok((hosts, next))
}

/// The status and facts of `host`; NOT_FOUND if it never connected.
pub(crate) fn host(shared: &Shared, host: &str) -> Result<HostStatus, Status> {
    convert::required(host, "host")?;
    let mut status = shared
        .hosts
        .get(host, now_ms())
        .ok_or_else(|| Status::not_found(format!("no host {host:?} has ever connected")))?;
    revocation(shared, &mut status);
    Ok(status)
}

/// Notes in `status` whether its host is revoked (the enrollment store
/// keeps revocations, the registry liveness).
fn revocation(shared: &Shared, status: &mut HostStatus) {
    status.revoked_ms = shared
        .tokens
        .enroll
        .revoked_since(&status.host_id)
        .unwrap_or(0);
}

/// The newest process snapshot of `host` at or before `at_ms` (the
/// newest of all when `None`), read on the blocking pool.
pub(crate) async fn processes(
    shared: &Shared,
    host: String,
    at_ms: Option<i64>,
) -> Result<Option<ProcessSnapshot>, Status> {
    convert::required(&host, "host")?;
    let at_ms = at_ms.unwrap_or(i64::MAX);
    shared
        .on_store(move |store| store.process_snapshot_at(&host, at_ms))
        .await
}

/// Which alert transitions to read.
#[derive(Debug, Default)]
pub(crate) struct HistoryQuery {
    /// Recorded at or after this collector time.
    pub(crate) since_ms: i64,
    /// Alerts of this host (all when empty).
    pub(crate) host: String,
    /// Alerts of this rule (all when empty).
    pub(crate) rule: String,
    /// Only transitions into this phase.
    pub(crate) to: Option<Phase>,
    /// At most this many, the newest (0 or more than the most: the most).
    pub(crate) limit: usize,
}

/// Alert transitions, oldest first, read on the blocking pool.
pub(crate) async fn alert_history(
    shared: &Shared,
    query: HistoryQuery,
) -> Result<Vec<Transition>, Status> {
    let filter = hostwatch_alerting::HistoryFilter {
        since_ms: query.since_ms,
        host: query.host,
        rule: query.rule,
        to: query.to,
        limit: match query.limit {
            0 => MAX_HISTORY,
            n => n.min(MAX_HISTORY),
        },
    };
    let alerting = shared.alerting.clone();
    tokio::task::spawn_blocking(move || alerting.history(&filter))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(convert::alerting_status)
}
