//! `cli.toml` and the connection to the collector.

use crate::UsageError;
use hostwatch_pki::TlsFiles;
use hostwatch_pki::transport::{ClientTarget, connect};
use hostwatch_runtime::config::{ConfigError, base_dir};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// Environment variables with this prefix override keys of the file.
const ENV_PREFIX: &str = "HOSTWATCH_CLI";

/// `cli.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `host:port` of the collector.
    pub collector: String,
    /// Name the collector's certificate must carry; default: the host of `collector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub tls: TlsFiles,
}

impl ClientConfig {
    /// Reads `path`; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: ClientConfig = hostwatch_runtime::config::load(path, ENV_PREFIX)?;
        config.tls = config.tls.resolve(&base_dir(path));
        if !config.collector.contains(':') {
            return Err(ConfigError::new(
                path,
                format!("collector {:?} must be host:port", config.collector),
            ));
        }
        Ok(config)
    }

    /// An operator's channel to the collector.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let target = ClientTarget {
            address: self.collector.clone(),
            server_name: self.server_name.clone(),
            tls: self.tls.clone(),
            connect_timeout: Duration::from_secs(10),
            keepalive: hostwatch_pki::transport::Keepalive::default(),
        };
        let (channel, _) = connect(&target).await?;
        Ok(channel)
    }

    /// Connects, builds a client with `new` (`QueryClient::new`,
    /// `AdminClient::new`) and makes one call with it, on a runtime of its
    /// own: what every one-shot command does.
    pub(crate) fn call<C, T, Fut>(
        &self,
        new: impl FnOnce(Channel) -> C,
        call: impl FnOnce(C) -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        crate::read::runtime()?.block_on(async {
            let client = new(self.connect().await?);
            Ok(call(client).await?.into_inner())
        })
    }
}

/// The `--config` path, which the reading commands require.
pub(crate) fn config_path(path: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    path.ok_or_else(|| {
        UsageError(
            "no client configuration: pass --config FILE (for example hostwatch-quickstart/cli.toml) or set HOSTWATCH_CONFIG".to_owned(),
        )
    })
}
