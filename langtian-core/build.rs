//! Generates the Rust types of `proto/` at build time with prost, using protox (a pure-Rust
//! protobuf compiler) so that no `protoc` binary is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Tests and examples of this crate link the official libduckdb.so from DUCKDB_LIB_DIR
    // (scripts/setup.sh); record its directory as rpath so they run without LD_LIBRARY_PATH.
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        "langtian/envelope/v1/envelope.proto",
        "langtian/battery/v1/battery.proto",
        "langtian/md/v1/md.proto",
        "langtian/gateway/v1/gateway.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(f).display());
    }
    let fds = protox::compile(files, [&proto_root])?;
    // The descriptor set is kept for run-time decoding by message type (flow StructuredBatch).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("langtian_descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
