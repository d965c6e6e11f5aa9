//! The Query service: operators' reads.

use crate::auth;
use crate::convert;
use crate::hosts::now_ms;
use crate::server::Shared;
use hostwatch_pki::Role;
use hostwatch_proto::v1::query_server::Query;
use hostwatch_proto::v1::{
    LatestRequest, LatestResponse, ListHostsRequest, ListHostsResponse, ProcessesRequest,
    ProcessesResponse, RangeRequest, RangeResponse,
};
use tonic::{Request, Response, Status};

pub(crate) struct QueryService {
    pub(crate) shared: Shared,
}

impl QueryService {
    /// Runs a store read on the blocking pool: sled calls may hit the disk.
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&hostwatch_tsdb::Store) -> Result<T, hostwatch_tsdb::TsdbError>
        + Send
        + 'static,
    ) -> Result<T, Status> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(convert::storage_status)
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        auth::require(&request, Role::Operator)?;
        let hosts = self.shared.hosts.list(now_ms());
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn latest(
        &self,
        request: Request<LatestRequest>,
    ) -> Result<Response<LatestResponse>, Status> {
        auth::require(&request, Role::Operator)?;
        let host = request.into_inner().host_id;
        if host.is_empty() {
            return Err(Status::invalid_argument("host_id is required"));
        }
        let latest = self.blocking(move |store| store.latest(&host)).await?;
        Ok(Response::new(LatestResponse {
            values: latest.into_iter().map(convert::series_value).collect(),
        }))
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        auth::require(&request, Role::Operator)?;
        let request = request.into_inner();
        if request.metric.is_empty() {
            return Err(Status::invalid_argument("metric is required"));
        }
        if request.start_ms >= request.end_ms {
            return Err(Status::invalid_argument(format!(
                "start_ms ({}) must be before end_ms ({})",
                request.start_ms, request.end_ms
            )));
        }
        let matchers = convert::matchers(&request.matchers)?;
        let aggregation = match request.step_ms {
            0 if request.aggregation == 0 => None,
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
            _ => Some(convert::aggregation(request.aggregation)?),
        };
        let limit = self.shared.limits.max_query_points;
        let data = self
            .blocking(move |store| {
                let (metric, start, end) = (&request.metric, request.start_ms, request.end_ms);
                match aggregation {
                    None => store.range(metric, &matchers, start, end),
                    Some(agg) => {
                        store.range_step(metric, &matchers, start, end, request.step_ms, agg)
                    }
                }
            })
            .await?;
        let points: usize = data.iter().map(|s| s.points.len()).sum();
        if points > limit {
            return Err(Status::resource_exhausted(format!(
                "query selects {points} points, more than limits.max_query_points ({limit}); narrow the range or the matchers"
            )));
        }
        Ok(Response::new(RangeResponse {
            series: data.into_iter().map(convert::series_data).collect(),
        }))
    }

    async fn processes(
        &self,
        request: Request<ProcessesRequest>,
    ) -> Result<Response<ProcessesResponse>, Status> {
        auth::require(&request, Role::Operator)?;
        let request = request.into_inner();
        if request.host_id.is_empty() {
            return Err(Status::invalid_argument("host_id is required"));
        }
        let at_ms = if request.at_ms == 0 {
            i64::MAX
        } else {
            request.at_ms
        };
        let snapshot = self
            .blocking(move |store| store.process_snapshot_at(&request.host_id, at_ms))
            .await?;
        Ok(Response::new(ProcessesResponse {
            snapshot: snapshot.map(convert::process_snapshot_out),
        }))
    }
}
