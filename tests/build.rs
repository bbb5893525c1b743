//! Generates a gRPC client for `proto/chunkedgraph.proto`, so the tests call
//! `chunkedgraph serve` through the same proto its server is generated from.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc, so that building needs no system protoc.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["../proto/chunkedgraph.proto"], &["../proto"])?;
    Ok(())
}
