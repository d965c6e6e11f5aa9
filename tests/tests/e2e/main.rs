//! End-to-end tests: collectors and agents in this process, over real
//! loopback sockets with real mutual TLS and certificates made at test time.

mod auth;
mod ingest;
