//! News-topic classification: article text → normalized tokens → TF-IDF features →
//! a linfa-trained linear model → topic labels with probabilities.
//!
//! The pipeline flows one way through one module per stage:
//! [`text`] → [`analyzer`] → [`tfidf`] → [`model`] (stored by [`model_file`]), trained
//! offline by [`train`] with a [`classifier`] from a [`corpus`] and scored with
//! [`metrics`]; [`lang`] names the language of what it reads. [`service`] and [`server`]
//! put it behind gRPC; the `topics` binary is a thin shell over all of this.

pub mod analyzer;
pub mod classifier;
pub mod corpus;
pub mod corpus_check;
pub mod evaluate;
pub mod lang;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod server;
pub mod service;
pub mod text;
pub mod tfidf;
pub mod train;

/// Code generated from `proto/topics/v1/topics.proto`.
pub mod proto {
    tonic::include_proto!("topics.v1");

    /// The encoded descriptors of our protos, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/topics_descriptor.bin"));
}

pub use model::{Model, Prediction};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
