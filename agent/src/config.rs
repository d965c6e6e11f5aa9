//! The agent's configuration file.

use hostwatch_pki::TlsFiles;
use hostwatch_pki::config::{ConfigError, base_dir, resolve};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables with this prefix override keys of the file.
pub const ENV_PREFIX: &str = "HOSTWATCH_AGENT";

/// `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `host:port` of the collector.
    pub collector: String,
    /// Name the collector's certificate must carry; default: the host part of `collector`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Time between samples.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Directory for the agent's state.
    pub state_dir: PathBuf,
    pub tls: TlsFiles,
    #[serde(default)]
    pub limits: Limits,
}

/// Explicit bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Unacknowledged batches kept, in encoded bytes; the oldest go first.
    pub queue_bytes: usize,
    /// Batches sent but not yet acknowledged.
    pub max_in_flight: usize,
    /// Longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_bytes: 64 << 20,
            max_in_flight: 32,
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

impl AgentConfig {
    /// Reads and validates `path`; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: AgentConfig = hostwatch_pki::config::load(path, ENV_PREFIX)?;
        let base = base_dir(path);
        config.state_dir = resolve(&base, &config.state_dir);
        config.tls = config.tls.resolve(&base);
        config.validate().map_err(|m| ConfigError::new(path, m))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err(format!(
                "interval must be at least 100ms, not {:?}",
                self.interval
            ));
        }
        if !self.collector.contains(':') {
            return Err(format!("collector {:?} must be host:port", self.collector));
        }
        if self.limits.queue_bytes < 64 * 1024 {
            return Err("limits.queue_bytes must be at least 65536".to_owned());
        }
        if self.limits.max_in_flight == 0 {
            return Err("limits.max_in_flight must be greater than zero".to_owned());
        }
        if self.limits.max_backoff < Duration::from_millis(100) {
            return Err("limits.max_backoff must be at least 100ms".to_owned());
        }
        if self.limits.connect_timeout.is_zero() {
            return Err("limits.connect_timeout must be greater than zero".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
collector = "127.0.0.1:7070"
state_dir = "state"
[tls]
ca = "ca.pem"
cert = "agent.pem"
key = "agent.key"
"#;

    fn load_text(text: &str) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentConfig::load(&path)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = load_text(MINIMAL).unwrap();
        assert_eq!(config.interval, Duration::from_secs(10));
        assert!(config.state_dir.is_absolute());
        assert!(config.tls.key.is_absolute());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (format!("interval = \"0s\"\n{MINIMAL}"), "interval"),
            (format!("interval = \"-5s\"\n{MINIMAL}"), "interval"),
            (format!("interval = 10\n{MINIMAL}"), "interval"),
            (MINIMAL.replace("127.0.0.1:7070", "nohost"), "collector"),
            (
                format!("{MINIMAL}[limits]\nqueue_bytes = 1\n"),
                "limits.queue_bytes",
            ),
            (
                format!("{MINIMAL}[limits]\nmax_in_flight = 0\n"),
                "limits.max_in_flight",
            ),
            (format!("{MINIMAL}[limits]\nbogus = 0\n"), "bogus"),
            (format!("intervall = \"5s\"\n{MINIMAL}"), "intervall"),
            (MINIMAL.replace("state_dir = \"state\"", ""), "state_dir"),
        ];
        for (text, key) in cases {
            let err = load_text(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key:?} not named in {err:?}");
        }
    }
}
