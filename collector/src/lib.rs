//! hostwatch-collector: authenticates agents by certificate, stores their
//! samples durably, and answers operators.
//!
//! Layout:
//! - `config`: `collector.toml`;
//! - `server`: wiring of store, registry, alerting and services; [`serve`];
//!   SIGHUP reloads certificates and alert rules;
//! - `shared`: the state the services share (store, registry, alerting,
//!   limits), and reloading the alert rules;
//! - `ingest`: the agents' stream (Hello, batches, acknowledgements);
//! - `query`: the operators' reads, alerts included;
//! - `admin`: silences and reloading the alert rules;
//! - `hosts`: the host registry (facts, last seen, up/down);
//! - `state`: the collector's own database (hosts, alert state, outbox),
//!   reopened after a failed write;
//! - `auth`: role checks on the peer identity from the mTLS listener;
//! - `convert`: protobuf <-> store types, and store errors -> gRPC status.

mod admin;
mod auth;
pub mod cmd;
pub mod config;
mod convert;
mod hosts;
mod ingest;
mod query;
mod server;
mod shared;
mod state;

pub use config::CollectorConfig;
/// The conversion of an agent's batch that ingest applies before storing
/// it; public for the benchmark harness, which times ingest's CPU.
pub use convert::{batch as convert_batch, matcher_out as convert_matcher};
pub use server::{CollectorError, serve};
