//! End-to-end tests: collectors and agents in this process, over real
//! loopback sockets with real mutual TLS and certificates made at test time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod auth;
mod backoff;
mod backup;
mod connections;
mod deploy;
mod disk_full;
mod durability;
mod enroll;
mod failover;
mod forward;
mod host_families;
mod hostwatch_api;
mod http;
mod ingest;
mod outage;
mod partition;
mod peer_input;
mod promql;
mod providers;
mod renew;
mod revoke;
mod rotation;
mod self_alert;
mod self_metrics;
mod services;
mod sessions;
mod silences;
mod silent;
mod storage;
mod systemd;
mod test_hook;
mod tokens;
