//! hostwatch-collector: authenticates agents by certificate, stores their
//! samples durably, and answers operators.
//!
//! Layout:
//! - `config`: `collector.toml`;
//! - `server`: wiring of store, registry, alerting and services; [`serve`];
//!   SIGHUP reloads certificates and alert rules;
//! - `shared`: the state the services share (store, registry, alerting,
//!   limits), and reloading the alert rules and forwarding;
//! - `ingest`: the agents' stream (Hello, batches, acknowledgements);
//! - `append`: the threads that store, evaluate and acknowledge batches;
//! - `query`: the operators' reads, alerts included;
//! - `reads`: the reads `query` and `http` both answer (hosts, process
//!   snapshots, alert history), so both answer alike;
//! - `admin`: silences, reloading the alert rules, storage, API tokens;
//! - `silences`: the silence changes `admin` and `http` both make, so
//!   both check and answer alike;
//! - `hooks`: the hook tests `admin` and `http` both send;
//! - `http`: the HTTPS API (Prometheus' query API, PromQL);
//! - `promql`: the one way into the PromQL engine, for `http` and `query`:
//!   `[query]`'s limits, places and the blocking pool;
//! - `forward`: Prometheus remote_write to `[[forward]]` destinations,
//!   from the store's accept log;
//! - `metrics`: self-monitoring: the collector's own figures at
//!   `/metrics` (HTTPS, and the loopback port of `metrics_listen`);
//! - `hosts`: the host registry (facts, last seen, up/down);
//! - `state`: the collector's own database (hosts, alert state, outbox,
//!   API tokens), reopened after a failed write;
//! - `tokens`: the HTTPS API's bearer tokens (digests, roles, expiry);
//! - `enroll`: the Enroll service, its issuing CA and enrollment tokens;
//! - `auth`: role checks on the peer identity from the mTLS listener;
//! - `convert`: protobuf <-> store types, and store errors -> gRPC status;
//! - this file: [`CollectorError`], the crate's error.

mod admin;
mod append;
mod auth;
pub mod cmd;
pub mod config;
mod convert;
mod enroll;
mod forward;
mod hooks;
mod hosts;
mod http;
mod ingest;
mod metrics;
mod promql;
mod query;
mod reads;
mod server;
mod shared;
mod silences;
mod state;
mod tokens;

pub use config::CollectorConfig;
/// The conversion of an agent's batch that ingest applies before storing
/// it; public for the benchmark harness, which times ingest's CPU. The
/// matcher and PromQL JSON conversions are public for the CLI.
pub use convert::{batch as convert_batch, matcher_out as convert_matcher, promql_json};
pub use forward::{ForwardFigures, Forwarder};
pub use server::{serve, serve_with_http};

/// Errors that stop the collector, or keep its state database from being
/// reopened (tried again at the next check).
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Tls(#[from] hostwatch_pki::PkiError),
    #[error("cannot open data directory {path}: {source}")]
    OpenData { path: String, source: sled::Error },
    #[error("storage: {0}")]
    Storage(#[from] hostwatch_tsdb::TsdbError),
    #[error(transparent)]
    Config(#[from] hostwatch_runtime::config::ConfigError),
    #[error("alert state: {0}")]
    Alerting(#[from] hostwatch_alerting::AlertingError),
    #[error("gRPC server: {0}")]
    Serve(String),
    #[error("cannot listen on {address} ({key}): {source}")]
    Listen {
        key: &'static str,
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}
