//! hostwatch's wire protocol, generated from `proto/hostwatch/v1/*.proto`.
//!
//! Layout: `v1` holds the generated messages, clients and servers;
//! [`FILE_DESCRIPTOR_SET`] feeds the gRPC reflection service.

#![allow(unreachable_pub, clippy::all)]

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("hostwatch.v1");
}

/// Encoded `FileDescriptorSet` of every hostwatch proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostwatch_descriptor.bin"));
