//! Compiles the Open Inference Protocol (.proto files in `proto/`) into Rust types, a tonic service, and a
//! descriptor set that the repository uses to read config.pbtxt as protobuf text format.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages; a user's PROTOC still wins.
    if env::var_os("PROTOC").is_none() {
        env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Tensor payloads stay `Bytes` so they can be handed on without copying.
        .bytes(".inference")
        // Malformed messages are INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::protocol::grpc_codec::ProtoCodec")
        .file_descriptor_set_path(out.join("inference_descriptor.bin"))
        .compile_protos(&["proto/grpc_service.proto", "proto/model_config.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
