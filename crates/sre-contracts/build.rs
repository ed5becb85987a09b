//! Compiles the protos with protox (pure Rust): no system `protoc` is needed to build or
//! publish this crate.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "sre/domain/v1/meta.proto",
    "sre/domain/v1/intents.proto",
    "sre/domain/v1/facts.proto",
    "sre/knowledge/v1/knowledge_index.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{proto}");
    }
    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sre_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    let mut config = prost_build::Config::new();
    // BTreeMap for map fields: encoding order is deterministic (same message, same bytes).
    config.enable_type_names().type_name_domain(["."], "type.googleapis.com").btree_map(["."]);
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds_with_config(fds, config)?;
    Ok(())
}
