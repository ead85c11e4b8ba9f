//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (protox), so a fresh
//! machine needs no system `protoc`. The encoded descriptor set is also kept for
//! gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/topics/v1/topics.proto";
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("topics_descriptor.bin"), descriptors.encode_to_vec())?;

    // Serde on the messages gives the HTTP/JSON API the proto's own shapes, so the two
    // APIs cannot drift apart. Field names follow protobuf's JSON mapping (lowerCamelCase),
    // and like protobuf's parsers we also accept the proto name of the one request field
    // where the two differ. Unknown fields are refused, so a misspelt option is an error
    // instead of being silently ignored.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .type_attribute(
            ".topics.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] \
             #[serde(rename_all = \"camelCase\", default, deny_unknown_fields)]",
        )
        .field_attribute(".topics.v1.ClassifyOptions.top_k", "#[serde(alias = \"top_k\")]")
        .compile_fds(descriptors)?;
    Ok(())
}
