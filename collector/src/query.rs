//! The Query service: operators' reads, PromQL through the one engine
//! path (`crate::promql`).

use crate::auth::{self, Access};
use crate::convert;
use crate::reads;
use crate::shared::Shared;
use hostwatch_proto::v1::query_server::Query;
use hostwatch_proto::v1::{
    AlertHistoryRequest, AlertHistoryResponse, AlertTransition, LatestRequest, LatestResponse,
    ListAlertsRequest, ListAlertsResponse, ListHostsRequest, ListHostsResponse, ProcessesRequest,
    ProcessesResponse, PromqlRequest, PromqlResponse, RangeRequest, RangeResponse,
    WatchAlertsRequest,
};
use hostwatch_stdx::now_ms;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Transitions queued per watcher on the way out.
const WATCH_QUEUE: usize = 256;

type WatchStream = Pin<Box<dyn Stream<Item = Result<AlertTransition, Status>> + Send>>;

pub(crate) struct QueryService {
    pub(crate) shared: Shared,
}

#[tonic::async_trait]
impl Query for QueryService {
    type WatchAlertsStream = WatchStream;

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        auth::require(&request, Access::Read)?;
        let request = request.into_inner();
        let alerting = &self.shared.alerting;
        let alerts = alerting
            .alerts()
            .into_iter()
            .filter(|a| {
                request.host_id.is_empty() || a.labels.get("host") == Some(&request.host_id)
            })
            .filter(|a| {
                request.include_resolved || a.phase() != hostwatch_alerting::Phase::Resolved
            })
            .map(|a| {
                let silenced_by = alerting.silenced_by(&a.labels);
                convert::alert_out(a, silenced_by)
            })
            .collect();
        Ok(Response::new(ListAlertsResponse { alerts }))
    }

    async fn alert_history(
        &self,
        request: Request<AlertHistoryRequest>,
    ) -> Result<Response<AlertHistoryResponse>, Status> {
        auth::require(&request, Access::Read)?;
        let request = request.into_inner();
        let query = reads::HistoryQuery {
            since_ms: request.since_ms,
            host: request.host_id,
            rule: request.rule,
            to: None,
            limit: request.limit as usize,
        };
        let transitions = reads::alert_history(&self.shared, query).await?;
        Ok(Response::new(AlertHistoryResponse {
            transitions: transitions
                .into_iter()
                .map(convert::transition_out)
                .collect(),
        }))
    }

    async fn watch_alerts(
        &self,
        request: Request<WatchAlertsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        auth::require(&request, Access::Read)?;
        let host = request.into_inner().host_id;
        let mut transitions = self.shared.alerting.subscribe();
        let stop = self.shared.stop.clone();
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(async move {
            loop {
                let t = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tx.closed() => break,
                    t = transitions.recv() => t,
                };
                match t {
                    Ok(t) => {
                        if !host.is_empty() && t.labels.get("host") != Some(&host) {
                            continue;
                        }
                        if tx.send(Ok(convert::transition_out(t))).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "this watcher fell {missed} transitions behind; read AlertHistory and watch again"
                            ))))
                            .await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        auth::require(&request, Access::Read)?;
        let request = request.into_inner();
        let (hosts, next_page_token) = reads::hosts_page(
            &self.shared,
            &request.page_token,
            i64::from(request.page_size),
            reads::HostsPage::Full,
        )?;
        Ok(Response::new(ListHostsResponse {
            hosts,
            next_page_token,
        }))
    }

    async fn latest(
        &self,
        request: Request<LatestRequest>,
    ) -> Result<Response<LatestResponse>, Status> {
        auth::require(&request, Access::Read)?;
        let host = request.into_inner().host_id;
        convert::required(&host, "host_id")?;
        let latest = self
            .shared
            .on_store(move |store| store.latest(&host))
            .await?;
        Ok(Response::new(LatestResponse {
            values: latest.into_iter().map(convert::series_value).collect(),
        }))
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        auth::require(&request, Access::Read)?;
        let request = request.into_inner();
        convert::required(&request.metric, "metric")?;
        if request.start_ms >= request.end_ms {
            return Err(Status::invalid_argument(format!(
                "start_ms ({}) must be before end_ms ({})",
                request.start_ms, request.end_ms
            )));
        }
        let matchers = convert::matchers(&request.matchers)?;
        let step = match request.step_ms {
            0 if request.aggregation == 0 => hostwatch_tsdb::Step::Raw,
            0 => {
                return Err(Status::invalid_argument(
                    "aggregation needs step_ms greater than zero",
                ));
            }
            step if step < 0 => {
                return Err(Status::invalid_argument(format!(
                    "step_ms must not be negative, not {step}"
                )));
            }
            step => hostwatch_tsdb::Step::Every(step, convert::aggregation(request.aggregation)?),
        };
        let limit = self.shared.limits.max_query_points;
        let data = self
            .shared
            .on_store(move |store| {
                let (metric, start, end) = (&request.metric, request.start_ms, request.end_ms);
                store.range_within(metric, &matchers, start, end, step, limit)
            })
            .await?;
        Ok(Response::new(RangeResponse {
            series: data.into_iter().map(convert::series_data).collect(),
        }))
    }

    async fn processes(
        &self,
        request: Request<ProcessesRequest>,
    ) -> Result<Response<ProcessesResponse>, Status> {
        auth::require(&request, Access::Read)?;
        let request = request.into_inner();
        convert::required(&request.host_id, "host_id")?;
        let at_ms = (request.at_ms != 0).then_some(request.at_ms);
        let snapshot = reads::processes(&self.shared, request.host_id, at_ms).await?;
        Ok(Response::new(ProcessesResponse {
            snapshot: snapshot.map(convert::process_snapshot_out),
        }))
    }

    async fn promql(
        &self,
        request: Request<PromqlRequest>,
    ) -> Result<Response<PromqlResponse>, Status> {
        use hostwatch_proto::v1::promql_request::When;
        auth::require(&request, Access::Read)?;
        let deadline = client_deadline(request.metadata());
        let request = request.into_inner();
        convert::required(&request.expr, "expr")?;
        let promql = &self.shared.promql;
        let value = match request.when {
            None => promql.instant(request.expr, now_ms(), deadline).await,
            Some(When::TimeMs(at)) => promql.instant(request.expr, at, deadline).await,
            Some(When::Range(r)) => {
                let range = (r.start_ms, r.end_ms, r.step_ms);
                promql.range(request.expr, range, deadline).await
            }
        }
        .map_err(convert::promql_status)?;
        Ok(Response::new(convert::promql_out(value)))
    }
}

/// The client's deadline (gRPC's `grpc-timeout` header: at most eight
/// digits and a unit, H M S m u n), so that a query the client has given
/// up on gives back its place; `None` without one, or if it is malformed
/// (`query.timeout` still applies).
fn client_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{HostRegistry, MAX_FACT_BYTES};
    use crate::reads::MAX_HOSTS_PAGE;
    use hostwatch_proto::v1::HostFacts;
    use prost::Message;

    #[test]
    fn the_client_deadline_is_read_from_grpc_timeout() {
        let deadline = |value: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            client_deadline(&metadata)
        };
        assert_eq!(deadline("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(deadline("3M"), Some(Duration::from_secs(180)));
        assert_eq!(deadline("10S"), Some(Duration::from_secs(10)));
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(deadline("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            deadline("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for malformed in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S", "1 S"] {
            assert_eq!(deadline(malformed), None, "{malformed:?}");
        }
        assert_eq!(client_deadline(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn a_full_page_of_the_largest_hosts_fits_a_default_client() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let registry = HostRegistry::open(&db, 1_000).unwrap();
        let long = "x".repeat(4 * MAX_FACT_BYTES);
        let facts = HostFacts {
            hostname: long.clone(),
            os_name: long.clone(),
            os_version: long.clone(),
            kernel_version: long.clone(),
            architecture: long.clone(),
            cpu_model: long.clone(),
            agent_version: long,
            cpu_count: u32::MAX,
            memory_total_bytes: u64::MAX,
            boot_time_ms: i64::MAX,
        };
        let boot_id = "b".repeat(MAX_FACT_BYTES);
        for i in 0..=MAX_HOSTS_PAGE {
            // Host ids are at most 253 bytes (hostwatch-pki).
            let host = format!("{i:04}{}", "h".repeat(249));
            registry.connected(&host, Some(facts.clone()), &boot_id);
        }
        let (hosts, more) = registry.page(now_ms(), "", MAX_HOSTS_PAGE);
        assert!(more);
        let response = ListHostsResponse {
            next_page_token: hosts.last().unwrap().host_id.clone(),
            hosts,
        };
        // tonic's default receive limit.
        assert!(
            response.encoded_len() < 4 << 20,
            "{}",
            response.encoded_len()
        );
    }
}
