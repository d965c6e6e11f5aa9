//! The Admin service: silences, reloading the alert rules, testing a
//! hook, the store's
//! counters and verification, and the HTTPS API's tokens.

use crate::auth::{self, Access};
use crate::convert;
use crate::shared::{Shared, reload_config};
use crate::silences;
use crate::tokens::{AnyToken, NewToken, TokenStore};
use hostwatch_alerting::hooks::Outcome;
use hostwatch_proto::v1::admin_server::Admin;
use hostwatch_proto::v1::{
    ApiToken, BackupRequest, BackupResponse, CreateSilenceRequest, CreateTokenRequest,
    CreateTokenResponse, ExpireSilenceRequest, ListRevokedHostsRequest, ListRevokedHostsResponse,
    ListSilencesRequest, ListSilencesResponse, ListTokensRequest, ListTokensResponse,
    ReloadRequest, ReloadResponse, RevokeHostRequest, RevokeTokenRequest, RevokedHost, Silence,
    StorageStatsRequest, StorageStatsResponse, TestHookRequest, TestHookResponse, TestHookResult,
    VerifyStorageRequest, VerifyStorageResponse,
};
use hostwatch_stdx::now_ms;
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
        let request = silences::SilenceRequest {
            matchers: convert::silence_matchers(&request.matchers)?,
            starts_ms: request.starts_ms,
            ends_ms: request.ends_ms,
            comment: request.comment,
        };
        let silence = silences::create(&self.shared, &peer.identity.name, request).await?;
        Ok(Response::new(convert::silence_out(silence)))
    }

    async fn list_silences(
        &self,
        request: Request<ListSilencesRequest>,
    ) -> Result<Response<ListSilencesResponse>, Status> {
        auth::require(&request, Access::Operate)?;
        let silences = silences::list(&self.shared);
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
        let by = peer.identity.to_string();
        let silence = silences::expire(&self.shared, &id, &by, "Admin").await?;
        Ok(Response::new(convert::silence_out(silence)))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        tracing::info!(by = %peer.identity, "reload requested through Admin");
        let (rules, hooks) = reload_config(&self.shared)
            .await
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(ReloadResponse { rules, hooks }))
    }

    async fn test_hook(
        &self,
        request: Request<TestHookRequest>,
    ) -> Result<Response<TestHookResponse>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let TestHookRequest { hook, resolve } = request.into_inner();
        let by = peer.identity.to_string();
        let outcome = crate::hooks::test(&self.shared, &by, "Admin", &hook, resolve).await?;
        let (result, answer) = match outcome {
            Outcome::Delivered(a) => (TestHookResult::Delivered, a),
            Outcome::Retry { answer, .. } => (TestHookResult::Retry, answer),
            Outcome::Failed(a) => (TestHookResult::Failed, a),
        };
        Ok(Response::new(TestHookResponse {
            result: result.into(),
            answer,
        }))
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

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<BackupResponse>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let BackupRequest { to, incremental } = request.into_inner();
        let to = std::path::PathBuf::from(to);
        if !to.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "to must be an absolute path on the collector's host, not {:?}",
                to.display().to_string()
            )));
        }
        tracing::info!(by = %peer.identity, to = %to.display(), incremental, "backup requested through Admin");
        let databases = self.shared.state.database().map_err(|why| {
            Status::unavailable(format!(
                "the collector's own database cannot be read now ({why}); try again"
            ))
        })?;
        let options = hostwatch_tsdb::BackupOptions {
            incremental,
            databases: vec![(String::new(), databases)],
        };
        let hosts = self.shared.hosts.clone();
        let report = self
            .shared
            .on_store(move |store| {
                // The copy holds memory's last seen, as after a clean stop.
                hosts.write_seen();
                store.backup(&to, options)
            })
            .await
            .inspect_err(|status| tracing::warn!(error = %status.message(), "backup failed"))?;
        Ok(Response::new(convert::backup_out(report)))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let request = request.into_inner();
        if convert::is_enroll_role(request.role) {
            let new = convert::enroll_token_in(request, peer.identity.name.clone())?;
            let (text, entry) = self
                .on_tokens(move |tokens| tokens.create_enroll(new, now_ms()))
                .await?;
            // Never the token's text.
            tracing::info!(token.name = %entry.name, token.uses = entry.uses, token.hosts = ?entry.hosts, token.expires_ms = entry.expires_ms, by = %peer.identity, "enrollment token created through Admin");
            return Ok(Response::new(CreateTokenResponse {
                token: text,
                entry: Some(convert::enroll_token_out(entry, now_ms())),
            }));
        }
        if request.uses != 0 || !request.hosts.is_empty() {
            return Err(Status::invalid_argument(
                "uses and hosts are for enrollment tokens (ROLE_AGENT) only",
            ));
        }
        let new = NewToken {
            role: convert::token_role_in(request.role)?,
            ttl: convert::token_ttl_in(request.ttl_ms, request.never_expires)?,
            name: request.name,
            created_by: peer.identity.name.clone(),
        };
        let (text, entry) = self
            .on_tokens(move |tokens| tokens.create(new, now_ms()))
            .await?;
        // Never the token's text.
        tracing::info!(token.name = %entry.name, token.kind = ?entry.kind, token.expires_ms = ?entry.expires_ms, by = %peer.identity, "API token created through Admin");
        Ok(Response::new(CreateTokenResponse {
            token: text,
            entry: Some(convert::token_out(entry, now_ms())),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        auth::require(&request, Access::Operate)?;
        let now = now_ms();
        let api = self.shared.tokens.list().into_iter();
        let enroll = self.shared.tokens.enroll.list().into_iter();
        let mut tokens: Vec<ApiToken> = api
            .map(|entry| convert::token_out(entry, now))
            .chain(enroll.map(|entry| convert::enroll_token_out(entry, now)))
            .collect();
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<ApiToken>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let name = request.into_inner().name;
        convert::required(&name, "name")?;
        let logged = name.clone();
        let revoked = self.on_tokens(move |tokens| tokens.revoke_any(&name)).await;
        match revoked {
            Ok(AnyToken::Api(entry)) => {
                tracing::info!(token.name = %logged, by = %peer.identity, "API token revoked through Admin");
                Ok(Response::new(convert::token_out(entry, now_ms())))
            }
            Ok(AnyToken::Enroll(entry)) => {
                tracing::info!(token.name = %logged, by = %peer.identity, "enrollment token revoked through Admin");
                Ok(Response::new(convert::enroll_token_out(entry, now_ms())))
            }
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    tracing::warn!(token.name = %logged, by = %peer.identity, "API token revoked through Admin, not stored yet");
                }
                Err(status)
            }
        }
    }

    async fn revoke_host(
        &self,
        request: Request<RevokeHostRequest>,
    ) -> Result<Response<RevokedHost>, Status> {
        let peer = auth::require(&request, Access::Operate)?;
        let RevokeHostRequest { host_id, reason } = request.into_inner();
        hostwatch_pki::Identity::new(hostwatch_pki::Role::Agent, &host_id)
            .map_err(|e| Status::invalid_argument(format!("host_id: {e}")))?;
        if reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "reason must be at most {MAX_REASON_BYTES} bytes without control characters"
            )));
        }
        // Denied first, so its connections close now and tell their serials.
        let denylist = self.shared.denylist.clone();
        let closed = denylist.deny(&host_id, &[]);
        // By name, as tokens and silences record their creator.
        let (store, by) = (
            self.shared.tokens.enroll.clone(),
            peer.identity.name.clone(),
        );
        let (host, seen) = (host_id.clone(), closed.clone());
        let stored = tokio::task::spawn_blocking(move || {
            store.revoke_host(&host, &reason, &by, now_ms(), &seen)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        match stored {
            Ok(revoked) => {
                denylist.deny(&host_id, &revoked.serials);
                tracing::warn!(host.id = %host_id, by = %peer.identity, reason = %revoked.reason, serials = ?revoked.serials, connections_closed = closed.len(), "host revoked through Admin");
                let mut out = revoked_out(revoked);
                out.connections_closed = u32::try_from(closed.len()).unwrap_or(u32::MAX);
                Ok(Response::new(out))
            }
            Err(e) => {
                // Not stored: a restart would forget it, so it is not in force.
                let in_force = self.shared.tokens.enroll.revoked();
                if !in_force.iter().any(|r| r.host == host_id && r.in_force()) {
                    denylist.allow(&host_id);
                }
                tracing::error!(host.id = %host_id, by = %peer.identity, error = %e, "host not revoked");
                Err(Status::unavailable(e.to_string()))
            }
        }
    }

    async fn list_revoked_hosts(
        &self,
        request: Request<ListRevokedHostsRequest>,
    ) -> Result<Response<ListRevokedHostsResponse>, Status> {
        auth::require(&request, Access::Operate)?;
        let hosts = self.shared.tokens.enroll.revoked();
        Ok(Response::new(ListRevokedHostsResponse {
            hosts: hosts.into_iter().map(revoked_out).collect(),
        }))
    }
}

/// Longest reason of a revocation.
const MAX_REASON_BYTES: usize = 1024;

fn revoked_out(revoked: crate::enroll::Revoked) -> RevokedHost {
    RevokedHost {
        host_id: revoked.host,
        reason: revoked.reason,
        revoked_ms: revoked.revoked_ms,
        revoked_by: revoked.by,
        serials: revoked.serials,
        connections_closed: 0,
        reinstated_ms: revoked.reinstated_ms.unwrap_or_default(),
    }
}

impl AdminService {
    /// Runs a token store change on the blocking pool (it writes and
    /// flushes the database).
    async fn on_tokens<T: Send + 'static>(
        &self,
        call: impl FnOnce(&TokenStore) -> Result<T, crate::tokens::TokenError> + Send + 'static,
    ) -> Result<T, Status> {
        let tokens = self.shared.tokens.clone();
        tokio::task::spawn_blocking(move || call(&tokens))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(convert::token_status)
    }
}
