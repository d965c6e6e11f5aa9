//! hostwatch's wire protocol, generated from `proto/hostwatch/v1/*.proto`.
//!
//! Layout: `v1` holds the generated messages, clients and servers;
//! `prometheus` and `prometheus_v2` the remote_write 1.0 and 2.0 messages;
//! [`FILE_DESCRIPTOR_SET`] feeds the gRPC reflection service.

#![allow(unreachable_pub, clippy::all)]

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("hostwatch.v1");
}

/// Prometheus remote_write 1.0 messages (`prometheus/*.proto`): what the
/// collector's forwarding sends.
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Prometheus remote_write 2.0 messages (`prometheus/write/v2/*.proto`):
/// what forwarding sends with `protocol = "2.0"`.
pub mod prometheus_v2 {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}

/// Encoded `FileDescriptorSet` of every hostwatch proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostwatch_descriptor.bin"));
