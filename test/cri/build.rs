//! Generates the CRI v1 client from proto/api.proto (k8s.io/cri-api
//! v0.34.0, pkg/apis/runtime/v1/api.proto) without protoc: protox parses the
//! file into descriptors, tonic-prost-build turns them into Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let descriptors = protox::compile(["proto/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
