//! The collector's configuration file.

pub use crate::forward::config::{BasicAuth, ForwardConfig, Protocol, QueueConfig};
use hostwatch_alerting::{AlertingConfig, RuleSet};
use hostwatch_pki::TlsFiles;
use hostwatch_pki::transport::Keepalive;
use hostwatch_runtime::config::{ConfigError, base_dir, resolve};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables with this prefix override keys of the file.
pub const ENV_PREFIX: &str = "HOSTWATCH_COLLECTOR";

/// `collector.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Address to listen on for agents and operators.
    pub listen: SocketAddr,
    /// Address of the HTTPS API (Prometheus' query API); off when empty
    /// or absent.
    #[serde(default, deserialize_with = "optional_address")]
    pub http_listen: Option<SocketAddr>,
    /// Address of the enrollment listener (TLS without client
    /// certificates, the Enroll service only); off when empty or absent.
    #[serde(default, deserialize_with = "optional_address")]
    pub enroll_listen: Option<SocketAddr>,
    /// Loopback address of a plain-HTTP port serving `/metrics` without
    /// credentials, for a Prometheus on this host; off when empty or
    /// absent. Any other address is refused.
    #[serde(
        default,
        deserialize_with = "hostwatch_runtime::metrics::optional_loopback"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// A host none of whose batches was stored for this long is down.
    #[serde(with = "humantime_serde", default = "default_host_down_after")]
    pub host_down_after: Duration,
    pub tls: TlsFiles,
    /// How often the `tls` files are read to see whether they changed
    /// (a renewed certificate, a new CA), which are then loaded for new
    /// connections; zero: only on SIGHUP and Admin.Reload.
    #[serde(with = "humantime_serde", default = "default_tls_check_interval")]
    pub tls_check_interval: Duration,
    /// Certificate revocation lists (PEM) of the CAs of `tls.ca`: client
    /// certificates they name are refused by the gRPC and HTTPS
    /// listeners; reloaded with the `tls` files.
    #[serde(default)]
    pub tls_crl: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub storage: Storage,
    /// What PromQL queries may cost (the HTTP API).
    #[serde(default)]
    pub query: Query,
    /// The web console's sessions and logins (the HTTPS listener).
    #[serde(default)]
    pub http: Http,
    /// Enrollment: the issuing CA and the certificates it issues.
    #[serde(default)]
    pub enroll: EnrollConfig,
    /// Alert rules and hooks (see `deploy/collector.toml`).
    #[serde(default)]
    pub alerting: AlertingConfig,
    /// Prometheus remote_write destinations (`[[forward]]`), any number.
    #[serde(default)]
    pub forward: Vec<ForwardConfig>,
    /// The file this was loaded from, for reloads (SIGHUP, Admin.Reload).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// Explicit bounds on what peers may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Authenticated connections open at once; more are refused.
    pub max_connections: usize,
    /// Places among `max_connections` that only operators and viewers may
    /// take.
    pub reserved_operator_connections: usize,
    /// Connections one certificate identity may hold at once.
    pub max_connections_per_identity: usize,
    /// TLS handshakes in progress at once; when full, a new peer takes the
    /// place of the one that has waited longest.
    pub max_handshakes: usize,
    /// A connection without an open call for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Bytes of messages begun and not yet complete, on one connection; at
    /// least `max_message_bytes`.
    pub max_pending_bytes_per_connection: usize,
    /// Bytes of messages begun and not yet complete, on all connections.
    pub max_pending_bytes: usize,
    /// A message begun must be complete within this.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// At shutdown, how long open calls get to finish before their
    /// connections are closed; keep it well below the unit's TimeoutStopSec.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Concurrent gRPC calls per connection.
    pub max_streams_per_connection: u32,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Most series one host may create.
    pub max_series_per_host: usize,
    /// Most points one range query may return.
    pub max_query_points: usize,
    /// Time a peer has to complete the TLS handshake and send its Hello.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this long without hearing from a
    /// peer ...
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// ... and its connection is closed when the answer takes longer.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            reserved_operator_connections: 64,
            max_connections_per_identity: 16,
            max_handshakes: 512,
            idle_timeout: Duration::from_secs(120),
            max_pending_bytes_per_connection: 32 << 20,
            max_pending_bytes: 256 << 20,
            message_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            max_streams_per_connection: 16,
            max_message_bytes: 16 << 20,
            max_series_per_host: 10_000,
            max_query_points: 5_000_000,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Keepalive::default().interval,
            keepalive_timeout: Keepalive::default().timeout,
        }
    }
}

/// Storage windows and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Samples older than this are refused, and deleted in the background.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// When set, the oldest time partitions are deleted in the background
    /// while the data directory exceeds this many bytes.
    pub retention_bytes: Option<u64>,
    /// Time span of one partition of sealed data, which retention deletes
    /// whole: a whole number of hours dividing a day, or of days.
    #[serde(with = "humantime_serde")]
    pub partition: Duration,
    /// Samples further than this in the future (agent clock ahead) are refused.
    #[serde(with = "humantime_serde")]
    pub future_tolerance: Duration,
    /// A sample older than its series' newest by at most this is still
    /// stored (an agent's replay interleaving with fresh data); at most 1h.
    #[serde(with = "humantime_serde")]
    pub out_of_order_tolerance: Duration,
    /// Memory sled may use to cache pages of the database, in bytes (the
    /// kernel's page cache holds the file too).
    pub cache_bytes: u64,
    /// Memory for decoded sealed-chunk tails that instant queries'
    /// lookbacks read again, in bytes; 0 keeps none.
    pub read_cache_bytes: u64,
    /// Batches are refused (agents keep them and retry) while the data
    /// directory's file system has less free space than this, in bytes, so
    /// the store never writes into a full disk; 0 turns the reserve off.
    pub min_free_bytes: u64,
}

/// What PromQL queries may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Query {
    /// Samples one query may touch (read, and produced while evaluating).
    pub max_samples: usize,
    /// Longest a query may run; a request's `timeout` may only shorten it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Queries evaluated at once; more wait for a place, at most `timeout`.
    pub max_concurrent: usize,
}

impl Default for Query {
    fn default() -> Self {
        let engine = hostwatch_promql::Limits::default();
        Query {
            max_samples: engine.max_samples,
            timeout: engine.timeout,
            max_concurrent: 16,
        }
    }
}

/// The web console's sessions (docs/console.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// How long a session made at login lasts; never beyond its token's
    /// own expiry.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Login attempts one client address (an IPv6 address by its /64)
    /// may make in a minute; more get 429.
    pub login_attempts_per_minute: u32,
    /// Sessions one token may hold at once; a login beyond it ends the
    /// token's oldest session.
    pub max_sessions_per_token: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            session_ttl: Duration::from_secs(12 * 3600),
            login_attempts_per_minute: 10,
            max_sessions_per_token: 32,
        }
    }
}

/// `[enroll]`: what the enrollment listener issues, and the issuing CA
/// that renews agent certificates (Ingest.Renew) even without it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollConfig {
    /// The issuing CA's certificate (signed by a CA of `tls.ca`) and key;
    /// required when `enroll_listen` is set; both or neither otherwise
    /// (without them, agents cannot renew their certificates here).
    pub issuer_cert: Option<PathBuf>,
    pub issuer_key: Option<PathBuf>,
    /// Validity of an issued agent certificate.
    #[serde(with = "humantime_serde")]
    pub cert_lifetime: Duration,
    /// The shortest time between two certificates issued to one host (an
    /// enrollment or renewal, then a renewal); at most a tenth of
    /// `cert_lifetime` applies. A renewal sooner is refused with the time
    /// left, so an agent that cannot keep its certificates does not have
    /// one issued at every retry.
    #[serde(with = "humantime_serde")]
    pub min_renew_interval: Duration,
    /// Connections open at once on the enrollment listener: its clients
    /// have no certificate, so they all count as one identity.
    pub max_connections: usize,
}

impl Default for EnrollConfig {
    fn default() -> Self {
        EnrollConfig {
            issuer_cert: None,
            issuer_key: None,
            cert_lifetime: Duration::from_secs(30 * 86_400),
            min_renew_interval: Duration::from_secs(600),
            max_connections: 64,
        }
    }
}

/// Shortest and longest `enroll.cert_lifetime`.
/// Lifetimes of seconds let tests watch agents renew again and again.
const MIN_CERT_LIFETIME: Duration = Duration::from_secs(10);
const MAX_CERT_LIFETIME: Duration = Duration::from_secs(366 * 86_400);

/// `http_listen`, `enroll_listen`: an address, or an empty string for none.
fn optional_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// Smallest sled page cache accepted.
const MIN_CACHE_BYTES: u64 = 1 << 20;

/// Longest out-of-order tolerance: the store's chunk window.
const MAX_OUT_OF_ORDER: Duration = Duration::from_secs(3600);

impl Default for Storage {
    fn default() -> Self {
        Storage {
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_bytes: None,
            partition: Duration::from_secs(24 * 3600),
            future_tolerance: Duration::from_secs(600),
            out_of_order_tolerance: Duration::from_secs(600),
            // Enough for the pages an instant query over 10,000 hosts
            // touches (`hostwatch-bench promql --cache-bytes`); sled holds
            // a multiple of it once full (docs/operations.md).
            cache_bytes: 64 << 20,
            read_cache_bytes: hostwatch_tsdb::Options::default().read_cache_bytes,
            min_free_bytes: 64 << 20,
        }
    }
}

fn default_host_down_after() -> Duration {
    Duration::from_secs(30)
}

fn default_tls_check_interval() -> Duration {
    Duration::from_secs(10)
}

impl CollectorConfig {
    /// Reads and validates `path`; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: CollectorConfig = hostwatch_runtime::config::load(path, ENV_PREFIX)?;
        let base = base_dir(path);
        config.data_dir = resolve(&base, &config.data_dir);
        config.tls = config.tls.resolve(&base);
        for path in [
            &mut config.enroll.issuer_cert,
            &mut config.enroll.issuer_key,
            &mut config.tls_crl,
        ]
        .into_iter()
        .flatten()
        .filter(|path| !path.as_os_str().is_empty())
        {
            *path = resolve(&base, path);
        }
        config.alerting.resolve_paths(&base);
        for forward in &mut config.forward {
            forward.resolve_paths(&base);
        }
        config.path = Some(path.to_owned());
        config.validate(path)?;
        config.alert_rules()?;
        config.forward_destinations()?;
        Ok(config)
    }

    /// The validated alert rules and hooks; the error names the key.
    pub fn alert_rules(&self) -> Result<RuleSet, ConfigError> {
        self.alerting.compile(self.host_down_after).map_err(|e| {
            ConfigError::new(
                self.path.as_deref().unwrap_or(Path::new("collector.toml")),
                e.to_string(),
            )
        })
    }

    /// The `[[forward]]` destinations, checked, their secrets read and
    /// clients built; the error names the section and the key.
    pub(crate) fn forward_destinations(
        &self,
    ) -> Result<Vec<crate::forward::config::Destination>, ConfigError> {
        crate::forward::config::compile_all(&self.forward).map_err(|message| {
            ConfigError::new(
                self.path.as_deref().unwrap_or(Path::new("collector.toml")),
                message,
            )
        })
    }

    /// Checks what serde cannot; the error names the key.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::new(path, message));
        let positive = [
            ("host_down_after", self.host_down_after.is_zero()),
            ("limits.max_connections", self.limits.max_connections == 0),
            (
                "limits.max_streams_per_connection",
                self.limits.max_streams_per_connection == 0,
            ),
            (
                "limits.max_message_bytes",
                self.limits.max_message_bytes < 1024,
            ),
            (
                "limits.max_series_per_host",
                self.limits.max_series_per_host == 0,
            ),
            ("limits.max_query_points", self.limits.max_query_points == 0),
            (
                "limits.max_connections_per_identity",
                self.limits.max_connections_per_identity == 0,
            ),
            ("limits.max_handshakes", self.limits.max_handshakes == 0),
            ("limits.idle_timeout", self.limits.idle_timeout.is_zero()),
            (
                "limits.message_timeout",
                self.limits.message_timeout.is_zero(),
            ),
            ("limits.drain_timeout", self.limits.drain_timeout.is_zero()),
            (
                "limits.handshake_timeout",
                self.limits.handshake_timeout.is_zero(),
            ),
            (
                "limits.keepalive_interval",
                self.limits.keepalive_interval.is_zero(),
            ),
            (
                "limits.keepalive_timeout",
                self.limits.keepalive_timeout.is_zero(),
            ),
            ("storage.retention", self.storage.retention.is_zero()),
            ("query.max_samples", self.query.max_samples == 0),
            ("query.timeout", self.query.timeout.is_zero()),
            ("query.max_concurrent", self.query.max_concurrent == 0),
            ("http.session_ttl", self.http.session_ttl.is_zero()),
            (
                "http.login_attempts_per_minute",
                self.http.login_attempts_per_minute == 0,
            ),
            (
                "http.max_sessions_per_token",
                self.http.max_sessions_per_token == 0,
            ),
        ];
        let limits = &self.limits;
        if limits.reserved_operator_connections >= limits.max_connections {
            return invalid(
                "limits.reserved_operator_connections must be below limits.max_connections"
                    .to_owned(),
            );
        }
        if limits.max_pending_bytes_per_connection < limits.max_message_bytes {
            return invalid("limits.max_pending_bytes_per_connection must be at least limits.max_message_bytes (a message of that size must fit)".to_owned());
        }
        if limits.max_pending_bytes < limits.max_pending_bytes_per_connection {
            return invalid(
                "limits.max_pending_bytes must be at least limits.max_pending_bytes_per_connection"
                    .to_owned(),
            );
        }
        let enroll = &self.enroll;
        if !(MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME).contains(&enroll.cert_lifetime) {
            return invalid("enroll.cert_lifetime must be 10s to 366d".to_owned());
        }
        if enroll.min_renew_interval.is_zero() {
            return invalid("enroll.min_renew_interval must be greater than zero".to_owned());
        }
        if enroll.max_connections == 0 {
            return invalid("enroll.max_connections must be greater than zero".to_owned());
        }
        if self.enroll_listen.is_some() {
            for (key, value) in [
                ("enroll.issuer_cert", &enroll.issuer_cert),
                ("enroll.issuer_key", &enroll.issuer_key),
            ] {
                if value.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                    return invalid(format!("{key} is required when enroll_listen is set"));
                }
            }
        }
        if self
            .tls_crl
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return invalid("tls_crl must name a file (leave it out for none)".to_owned());
        }
        match (&enroll.issuer_cert, &enroll.issuer_key) {
            (Some(_), None) => {
                return invalid("enroll.issuer_key is required with enroll.issuer_cert".to_owned());
            }
            (None, Some(_)) => {
                return invalid("enroll.issuer_cert is required with enroll.issuer_key".to_owned());
            }
            _ => {}
        }
        if self.storage.retention_bytes == Some(0) {
            return invalid("storage.retention_bytes must be greater than zero (leave it out for no size limit)".to_owned());
        }
        let partition = self.storage.partition.as_secs();
        if partition == 0
            || self.storage.partition.subsec_nanos() != 0
            || !partition.is_multiple_of(3600)
            || (!86_400u64.is_multiple_of(partition) && !partition.is_multiple_of(86_400))
        {
            return invalid(
                "storage.partition must be a whole number of hours that divides a day, or a whole number of days"
                    .to_owned(),
            );
        }
        if self.storage.cache_bytes < MIN_CACHE_BYTES {
            return invalid(format!(
                "storage.cache_bytes must be at least {MIN_CACHE_BYTES}"
            ));
        }
        if self.storage.out_of_order_tolerance > MAX_OUT_OF_ORDER {
            return invalid(format!(
                "storage.out_of_order_tolerance must be at most {}s (the chunk window)",
                MAX_OUT_OF_ORDER.as_secs()
            ));
        }
        match positive.iter().find(|(_, bad)| *bad) {
            Some((key, _)) if *key == "limits.max_message_bytes" => {
                invalid(format!("{key} must be at least 1024"))
            }
            Some((key, _)) => invalid(format!("{key} must be greater than zero")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_alerting::config::RuleKind;
    use hostwatch_alerting::hooks::{ExecConfig, HookKind};

    const MINIMAL: &str = r#"
listen = "127.0.0.1:7070"
data_dir = "data"
[tls]
ca = "ca.pem"
cert = "collector.pem"
key = "collector.key"
"#;

    fn load_text(text: &str) -> Result<CollectorConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        std::fs::write(&path, text).unwrap();
        CollectorConfig::load(&path)
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let config = load_text(MINIMAL).unwrap();
        assert_eq!(config.host_down_after, Duration::from_secs(30));
        assert_eq!(config.tls_check_interval, Duration::from_secs(10));
        assert!(config.data_dir.is_absolute());
        assert!(config.tls.ca.ends_with("ca.pem"));
        assert_eq!(config.limits.max_series_per_host, 10_000);
    }

    #[test]
    fn alert_rules_keep_case_templates_and_relative_paths() {
        let text = format!(
            "{MINIMAL}\n[alerting]\ndefault_rules = false\n[[alerting.rules]]\nname = \"cpu\"\nkind = \"threshold\"\nmetric = \"host_cpu_utilization_ratio\"\nmatch = [\"cpu=total\"]\nop = \">\"\nraise = 0.9\nfor = \"1m\"\nlabels = {{ Team = \"Ops\" }}\nannotations = {{ Summary = \"{{{{ host }}}} busy\" }}\n[[alerting.hooks]]\nname = \"run\"\nkind = \"exec\"\ncommand = [\"./page.sh\"]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("page.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = dir.path().join("collector.toml");
        std::fs::write(&path, text).unwrap();
        let config = CollectorConfig::load(&path).unwrap();
        let rule = &config.alerting.rules[0];
        let RuleKind::Threshold(threshold) = &rule.kind else {
            panic!("{rule:?}");
        };
        assert_eq!(threshold.for_, Some(Duration::from_secs(60)));
        assert_eq!(rule.labels["Team"], "Ops");
        assert_eq!(rule.annotations["Summary"], "{{ host }} busy");
        let HookKind::Exec(ExecConfig { command }) = &config.alerting.hooks[0].kind else {
            panic!("{:?}", config.alerting.hooks[0]);
        };
        assert_eq!(Path::new(&command[0]), dir.path().join("./page.sh"));
        assert_eq!(config.alert_rules().unwrap().rules.len(), 1);
    }

    /// Loads each text, which must be refused with a message naming its key.
    fn assert_refused_naming_the_key(cases: &[(String, &str)]) {
        for (text, key) in cases {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(key), "{key:?} not named in {err:?}");
        }
    }

    #[test]
    fn bad_top_level_values_name_their_key() {
        assert_refused_naming_the_key(&[
            (MINIMAL.replace("127.0.0.1:7070", "nowhere"), "listen"),
            (
                MINIMAL.replace(
                    "data_dir = \"data\"",
                    "data_dir = \"data\"\nhost_down_after = \"0s\"",
                ),
                "host_down_after",
            ),
            (MINIMAL.replace("data_dir = \"data\"", ""), "data_dir"),
            (
                format!("tls_check_interval = \"often\"\n{MINIMAL}"),
                "tls_check_interval",
            ),
            (format!("{MINIMAL}\nlisten_port = 1\n"), "listen_port"),
        ]);
    }

    #[test]
    fn bad_limits_name_their_key() {
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}\n[limits]\nmax_connections = 0\n"),
                "limits.max_connections",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_message_bytes = 10\n"),
                "max_message_bytes",
            ),
            (
                format!("{MINIMAL}\n[limits]\nhandshake_timeout = \"soon\"\n"),
                "handshake_timeout",
            ),
            (
                format!("{MINIMAL}\n[limits]\nkeepalive_interval = \"0s\"\n"),
                "limits.keepalive_interval",
            ),
            (
                format!("{MINIMAL}\n[limits]\nkeepalive_timeout = \"0s\"\n"),
                "limits.keepalive_timeout",
            ),
            (
                format!("{MINIMAL}\n[limits]\nkeepalive_timeout = 20\n"),
                "keepalive_timeout",
            ),
            (
                format!(
                    "{MINIMAL}\n[limits]\nmax_connections = 10\nreserved_operator_connections = 10\n"
                ),
                "limits.reserved_operator_connections",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_connections_per_identity = 0\n"),
                "limits.max_connections_per_identity",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_handshakes = 0\n"),
                "limits.max_handshakes",
            ),
            (
                format!("{MINIMAL}\n[limits]\nidle_timeout = \"0s\"\n"),
                "limits.idle_timeout",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_pending_bytes_per_connection = 1024\n"),
                "limits.max_pending_bytes_per_connection",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_pending_bytes = 1048576\n"),
                "limits.max_pending_bytes",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmessage_timeout = \"later\"\n"),
                "message_timeout",
            ),
            (
                format!("{MINIMAL}\n[limits]\ndrain_timeout = \"0s\"\n"),
                "limits.drain_timeout",
            ),
        ]);
    }

    #[test]
    fn bad_storage_values_name_their_key() {
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}\n[storage]\nretention = \"0s\"\n"),
                "storage.retention",
            ),
            (format!("{MINIMAL}\n[storage]\nkeep = 1\n"), "keep"),
            (
                format!("{MINIMAL}\n[storage]\nretention_bytes = 0\n"),
                "storage.retention_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\nretention_bytes = -5\n"),
                "retention_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\nretention_bytes = \"lots\"\n"),
                "retention_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\ncache_bytes = 1000\n"),
                "storage.cache_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\npartition = \"5h\"\n"),
                "storage.partition",
            ),
            (
                format!("{MINIMAL}\n[storage]\npartition = \"36h\"\n"),
                "storage.partition",
            ),
            (
                format!("{MINIMAL}\n[storage]\npartition = \"0s\"\n"),
                "storage.partition",
            ),
            (
                format!("{MINIMAL}\n[storage]\npartition = \"daily\"\n"),
                "partition",
            ),
            (
                format!("{MINIMAL}\n[storage]\nmin_free_bytes = -1\n"),
                "min_free_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\nread_cache_bytes = -1\n"),
                "read_cache_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\nread_cache_bytes = \"32MiB\"\n"),
                "read_cache_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\nmin_free_bytes = \"64MiB\"\n"),
                "min_free_bytes",
            ),
            (
                format!("{MINIMAL}\n[storage]\nout_of_order_tolerance = \"2h\"\n"),
                "storage.out_of_order_tolerance",
            ),
            (
                format!("{MINIMAL}\n[storage]\nout_of_order_tolerance = \"soon\"\n"),
                "out_of_order_tolerance",
            ),
        ]);
    }

    #[test]
    fn http_listen_is_off_when_empty_and_query_limits_have_defaults() {
        let config = load_text(MINIMAL).unwrap();
        assert_eq!(config.http_listen, None);
        assert_eq!(config.query.max_samples, 50_000_000);
        assert_eq!(config.query.timeout, Duration::from_secs(120));
        let text = MINIMAL.replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\nhttp_listen = \"\"",
        );
        assert_eq!(load_text(&text).unwrap().http_listen, None);
        let text = MINIMAL.replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\nhttp_listen = \"127.0.0.1:9090\"",
        );
        let config = load_text(&text).unwrap();
        assert_eq!(config.http_listen, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_loopback_only() {
        assert_eq!(load_text(MINIMAL).unwrap().metrics_listen, None);
        let with = |value: &str| format!("metrics_listen = \"{value}\"\n{MINIMAL}");
        assert_eq!(load_text(&with("")).unwrap().metrics_listen, None);
        assert_eq!(
            load_text(&with("127.0.0.1:9464")).unwrap().metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert!(
            load_text(&with("[::1]:9464"))
                .unwrap()
                .metrics_listen
                .is_some()
        );
        for (value, says) in [
            ("0.0.0.0:9464", "not a loopback address"),
            ("10.1.2.3:9464", "not a loopback address"),
            ("localhost:9464", "not an address"),
            ("9464", "not an address"),
        ] {
            let e = load_text(&with(value)).unwrap_err().to_string();
            assert!(
                e.contains("metrics_listen") && e.contains(says),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn enroll_is_off_by_default_and_resolves_its_files() {
        let config = load_text(MINIMAL).unwrap();
        assert_eq!(config.enroll_listen, None);
        assert_eq!(
            config.enroll.cert_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        let text = format!(
            "enroll_listen = \"127.0.0.1:7071\"\n{MINIMAL}\n[enroll]\nissuer_cert = \"issuing.pem\"\nissuer_key = \"/abs/issuing.key\"\ncert_lifetime = \"1h\"\n"
        );
        let config = load_text(&text).unwrap();
        assert_eq!(
            config.enroll_listen,
            Some("127.0.0.1:7071".parse().unwrap())
        );
        let cert = config.enroll.issuer_cert.unwrap();
        assert!(
            cert.is_absolute() && cert.ends_with("issuing.pem"),
            "{cert:?}"
        );
        assert_eq!(
            config.enroll.issuer_key,
            Some(PathBuf::from("/abs/issuing.key"))
        );
        assert_eq!(config.enroll.cert_lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn bad_enroll_values_name_their_key() {
        let on = format!("enroll_listen = \"127.0.0.1:7071\"\n{MINIMAL}");
        let files = "[enroll]\nissuer_cert = \"i.pem\"\nissuer_key = \"i.key\"\n";
        assert_refused_naming_the_key(&[
            (
                format!("enroll_listen = \"nowhere\"\n{MINIMAL}"),
                "enroll_listen",
            ),
            (on.clone(), "enroll.issuer_cert"),
            (
                format!("{on}\n[enroll]\nissuer_cert = \"i.pem\"\n"),
                "enroll.issuer_key",
            ),
            (
                format!("{on}\n[enroll]\nissuer_cert = \"\"\nissuer_key = \"k\"\n"),
                "enroll.issuer_cert",
            ),
            (
                format!("{on}\n{files}cert_lifetime = \"9s\"\n"),
                "enroll.cert_lifetime",
            ),
            (
                format!("{on}\n{files}min_renew_interval = \"0s\"\n"),
                "enroll.min_renew_interval",
            ),
            (
                format!("{on}\n{files}cert_lifetime = \"367d\"\n"),
                "enroll.cert_lifetime",
            ),
            (
                format!("{on}\n{files}cert_lifetime = \"soon\"\n"),
                "cert_lifetime",
            ),
            (
                format!("{on}\n{files}max_connections = 0\n"),
                "enroll.max_connections",
            ),
            (format!("{on}\n{files}issuer = \"x\"\n"), "issuer"),
            (format!("tls_crl = \"\"\n{MINIMAL}"), "tls_crl"),
            (format!("tls_crl = [\"a\"]\n{MINIMAL}"), "tls_crl"),
            // Without the enrollment listener, for renewals: both or neither.
            (
                format!("{MINIMAL}\n[enroll]\nissuer_cert = \"i.pem\"\n"),
                "enroll.issuer_key",
            ),
            (
                format!("{MINIMAL}\n[enroll]\nissuer_key = \"i.key\"\n"),
                "enroll.issuer_cert",
            ),
        ]);
    }

    #[test]
    fn bad_http_and_query_values_name_their_key() {
        assert_refused_naming_the_key(&[
            (
                MINIMAL.replace(
                    "data_dir = \"data\"",
                    "data_dir = \"data\"\nhttp_listen = \"nowhere\"",
                ),
                "http_listen",
            ),
            (
                format!("{MINIMAL}\n[query]\nmax_samples = 0\n"),
                "query.max_samples",
            ),
            (
                format!("{MINIMAL}\n[query]\ntimeout = \"0s\"\n"),
                "query.timeout",
            ),
            (
                format!("{MINIMAL}\n[query]\nmax_concurrent = 0\n"),
                "query.max_concurrent",
            ),
            (format!("{MINIMAL}\n[query]\nlimit = 1\n"), "limit"),
            (
                format!("{MINIMAL}\n[http]\nsession_ttl = \"0s\"\n"),
                "http.session_ttl",
            ),
            (
                format!("{MINIMAL}\n[http]\nlogin_attempts_per_minute = 0\n"),
                "http.login_attempts_per_minute",
            ),
            (
                format!("{MINIMAL}\n[http]\nmax_sessions_per_token = 0\n"),
                "http.max_sessions_per_token",
            ),
            (format!("{MINIMAL}\n[http]\nsession = 1\n"), "session"),
        ]);
    }

    #[test]
    fn bad_alerting_values_name_their_key() {
        assert_refused_naming_the_key(&[
            (
                format!("{MINIMAL}\n[alerting]\nstale_after = \"0s\"\n"),
                "alerting.stale_after",
            ),
            (format!("{MINIMAL}\n[alerting]\nbogus = 1\n"), "bogus"),
            (
                format!(
                    "{MINIMAL}\n[[alerting.rules]]\nname = \"r\"\nkind = \"threshold\"\nmetric = \"m\"\nop = \">\"\n"
                ),
                "alerting.rules[0] \"r\": raise",
            ),
            (
                format!(
                    "{MINIMAL}\n[[alerting.rules]]\nname = \"r\"\nkind = \"threshold\"\nmetric = \"m\"\nop = \">\"\nraise = 1.0\nfour = \"1m\"\n"
                ),
                "four",
            ),
            (
                format!(
                    "{MINIMAL}\n[[alerting.hooks]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"gopher://x\"\n"
                ),
                "alerting.hooks[0] \"h\": url",
            ),
        ]);
    }

    /// A `[[forward]]` section named `f` to `url`, with more keys.
    fn forward(more: &str) -> String {
        format!(
            "{MINIMAL}\n[[forward]]\nname = \"f\"\nurl = \"http://127.0.0.1:9/api/v1/write\"\n{more}\n"
        )
    }

    #[test]
    fn forward_sections_get_defaults_and_read_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        let path = dir.path().join("collector.toml");
        let text = forward(
            "bearer_token_file = \"token\"\nmatch = [\"__name__=~host_cpu.*\", \"host!=db\"]\nheaders = { X-Scope-OrgID = \"tenant-1\" }\n",
        );
        std::fs::write(&path, text).unwrap();
        let config = CollectorConfig::load(&path).unwrap();
        assert_eq!(config.forward[0].queue, QueueConfig::default());
        assert_eq!(config.forward[0].protocol, Protocol::V1);
        assert_eq!(
            config.forward[0].bearer_token_file,
            Some(dir.path().join("token"))
        );
        let destinations = config.forward_destinations().unwrap();
        let headers = &destinations[0].headers;
        assert_eq!(headers["x-scope-orgid"], "tenant-1");
        assert_eq!(headers["authorization"], "Bearer s3cret");
        assert!(headers["authorization"].is_sensitive());
        assert_eq!(destinations[0].matchers.len(), 2);
        // The secret is never shown.
        assert!(!format!("{:?}", destinations[0]).contains("s3cret"));
        std::fs::write(&path, forward("protocol = \"2.0\"")).unwrap();
        let config = CollectorConfig::load(&path).unwrap();
        assert_eq!(
            config.forward_destinations().unwrap()[0].protocol,
            Protocol::V2
        );
    }

    #[test]
    fn bad_forward_values_name_their_section_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "pw").unwrap();
        let (empty, secret) = (empty.display(), secret.display());
        assert_refused_naming_the_key(&[
            (
                forward("url = \"x\"").replacen(
                    "url = \"http://127.0.0.1:9/api/v1/write\"\n",
                    "",
                    1,
                ),
                "forward[f].url",
            ),
            (format!("{MINIMAL}\n[[forward]]\nname = \"f\"\n"), "url"),
            (
                format!("{MINIMAL}\n[[forward]]\nurl = \"http://x\"\n"),
                "name",
            ),
            (
                forward("").replace("name = \"f\"", "name = \"a b\""),
                "forward.name",
            ),
            (
                forward("").replace("http://127.0.0.1:9/api/v1/write", "ftp://x/"),
                "forward[f].url",
            ),
            (
                forward("").replace("http://127.0.0.1:9/api/v1/write", "http//x"),
                "forward[f].url",
            ),
            (
                format!(
                    "{}{}",
                    forward(""),
                    "[[forward]]\nname = \"f\"\nurl = \"http://y\"\n"
                ),
                "used by two sections",
            ),
            (forward("bogus = 1"), "bogus"),
            (forward("protocol = \"3.0\""), "protocol"),
            (forward("protocol = \"2\""), "protocol"),
            (forward("protocol = 2.0"), "protocol"),
            (forward("timeout = \"0s\""), "forward[f].timeout"),
            (forward("timeout = \"soon\""), "timeout"),
            (forward("match = [\"nooperator\"]"), "forward[f].match"),
            (forward("match = [\"a=~(\"]"), "forward[f].match"),
            (
                forward("bearer_token_file = \"/nonexistent/token\""),
                "forward[f].bearer_token_file",
            ),
            (
                forward(&format!("bearer_token_file = \"{empty}\"")),
                "forward[f].bearer_token_file",
            ),
            (
                forward(&format!(
                    "bearer_token_file = \"{secret}\"\n[forward.basic_auth]\nusername = \"u\"\npassword_file = \"{secret}\""
                )),
                "cannot be used with basic_auth",
            ),
            (
                forward(
                    "[forward.basic_auth]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"",
                ),
                "forward[f].basic_auth.password_file",
            ),
            (
                forward(&format!(
                    "[forward.basic_auth]\nusername = \"a:b\"\npassword_file = \"{secret}\""
                )),
                "forward[f].basic_auth.username",
            ),
            (
                forward("[forward.basic_auth]\nusername = \"u\""),
                "password_file",
            ),
            (
                forward("headers = { \"bad header\" = \"x\" }"),
                "forward[f].headers.bad header",
            ),
            (
                forward("headers = { X-A = \"line\\nbreak\" }"),
                "forward[f].headers.X-A",
            ),
            (
                forward("headers = { Authorization = \"Bearer x\" }"),
                "forward[f].headers.Authorization",
            ),
            (
                forward("headers = { Content-Type = \"text/plain\" }"),
                "forward[f].headers.Content-Type",
            ),
            (
                forward("[forward.tls]\nca = \"/nonexistent/ca.pem\""),
                "forward[f].tls.ca",
            ),
            (
                forward("[forward.tls]\ncert = \"/etc/hostname\""),
                "forward[f].tls.key",
            ),
            (
                forward("[forward.tls]\nmin_version = \"1.1\""),
                "forward[f].tls.min_version",
            ),
            (
                forward("[forward.queue]\nshards = 0"),
                "forward[f].queue.shards",
            ),
            (
                forward("[forward.queue]\nshards = 65"),
                "forward[f].queue.shards",
            ),
            (
                forward("[forward.queue]\nmax_samples_per_request = 0"),
                "forward[f].queue.max_samples_per_request",
            ),
            (
                forward("[forward.queue]\nmax_samples_per_request = 100001"),
                "forward[f].queue.max_samples_per_request",
            ),
            (
                forward("[forward.queue]\ncapacity = 10"),
                "forward[f].queue.capacity",
            ),
            (
                forward("[forward.queue]\nmax_age = \"0s\""),
                "forward[f].queue.max_age",
            ),
            (
                forward("[forward.queue]\nmin_backoff = \"0s\""),
                "forward[f].queue.min_backoff",
            ),
            (
                forward("[forward.queue]\nmax_backoff = \"1ms\""),
                "forward[f].queue.max_backoff",
            ),
            (forward("[forward.queue]\nspeed = 1"), "speed"),
        ]);
    }
}
