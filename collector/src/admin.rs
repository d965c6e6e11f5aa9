//! The Admin service: silences, reloading the alert rules, and the
//! store's counters and verification.

use crate::auth::{self, Access};
use crate::convert;
use crate::shared::{Shared, reload_alerting};
use hostwatch_proto::v1::admin_server::Admin;
use hostwatch_proto::v1::{
    CreateSilenceRequest, ExpireSilenceRequest, ListSilencesRequest, ListSilencesResponse,
    ReloadRequest, ReloadResponse, Silence, StorageStatsRequest, StorageStatsResponse,
    VerifyStorageRequest, VerifyStorageResponse,
};
use tonic::{Request, Response, Status};

pub(crate) struct AdminService {
    pub(crate) shared: Shared,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_silence(
        &self,
        request: Request<CreateSilenceRequest>,
    ) -> Result<Response<Silence>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let request = request.into_inner();
        let silence = self
            .shared
            .alerting
            .create_silence(hostwatch_alerting::NewSilence {
                matchers: convert::silence_matchers(&request.matchers)?,
                starts_ms: request.starts_ms,
                ends_ms: request.ends_ms,
                created_by: peer.identity.name,
                comment: request.comment,
            })
            .await
            .map_err(convert::alerting_status)?;
        Ok(Response::new(convert::silence_out(silence)))
    }

    async fn list_silences(
        &self,
        request: Request<ListSilencesRequest>,
    ) -> Result<Response<ListSilencesResponse>, Status> {
        auth::require(&request, Access::Operate)?;
        let silences = self.shared.alerting.silences();
        Ok(Response::new(ListSilencesResponse {
            silences: silences.into_iter().map(convert::silence_out).collect(),
        }))
    }

    async fn expire_silence(
        &self,
        request: Request<ExpireSilenceRequest>,
    ) -> Result<Response<Silence>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let id = request.into_inner().id;
        convert::required(&id, "id")?;
        let silence = self
            .shared
            .alerting
            .expire_silence(&id)
            .await
            .map_err(convert::alerting_status)?;
        tracing::info!(silence.id = %id, by = %peer.identity, "silence expired through Admin");
        Ok(Response::new(convert::silence_out(silence)))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        tracing::info!(by = %peer.identity, "reload requested through Admin");
        let (rules, hooks) = reload_alerting(&self.shared)
            .await
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(ReloadResponse { rules, hooks }))
    }

    async fn storage_stats(
        &self,
        request: Request<StorageStatsRequest>,
    ) -> Result<Response<StorageStatsResponse>, Status> {
        auth::require(&request, Access::Operate)?;
        let stats = self.shared.on_store(|store| store.stats()).await?;
        Ok(Response::new(convert::storage_stats_out(
            stats,
            &self.shared.refused_messages,
            self.shared.state.failure(),
        )))
    }

    async fn verify_storage(
        &self,
        request: Request<VerifyStorageRequest>,
    ) -> Result<Response<VerifyStorageResponse>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        tracing::info!(by = %peer.identity, "storage verification requested through Admin");
        let report = self.shared.on_store(|store| store.verify()).await?;
        if !report.is_clean() {
            tracing::warn!(
                damaged = report.damaged_total,
                "storage verification found damage"
            );
        }
        Ok(Response::new(convert::verify_out(report)))
    }
}
