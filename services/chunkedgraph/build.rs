//! Generates the gRPC server for `proto/chunkedgraph.proto` (see `src/grpc.rs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc, so that building needs no system protoc.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_protos(&["../../proto/chunkedgraph.proto"], &["../../proto"])?;
    Ok(())
}
