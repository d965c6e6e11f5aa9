//! Compiles `hostwatch/v1/*.proto` with protox (pure Rust, no system
//! `protoc`) and writes the descriptor set that the reflection service
//! serves; compiles the remote_write messages of `prometheus/*.proto` (1.0)
//! and `prometheus/write/v2/*.proto` (2.0) (messages only, not served).

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "hostwatch/v1/ingest.proto",
        "hostwatch/v1/query.proto",
        "hostwatch/v1/alerts.proto",
        "hostwatch/v1/admin.proto",
        "hostwatch/v1/enroll.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hostwatch_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // The CLI prints the store's figures as JSON straight from the messages.
    let mut builder = tonic_prost_build::configure();
    for message in [
        "StorageStatsResponse",
        "Rejections",
        "VerifyStorageResponse",
        "BackupResponse",
    ] {
        builder = builder.type_attribute(
            format!("hostwatch.v1.{message}"),
            "#[derive(serde::Serialize)]",
        );
    }
    builder.compile_fds(descriptors)?;
    let remote = [
        "prometheus/types.proto",
        "prometheus/remote.proto",
        "prometheus/write/v2/types.proto",
    ];
    for file in remote {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(protox::compile(remote, ["."])?)?;
    Ok(())
}
