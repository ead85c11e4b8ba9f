//! News-topic classification: article text → normalized tokens → TF-IDF features →
//! a linfa-trained linear model → topic labels with probabilities.
//!
//! The pipeline flows one way through one module per stage:
//! [`text`] → [`analyzer`] → [`tfidf`] (with a per-thread memo of words' character
//! n-gram features) → [`model`] (stored by [`model_file`]), trained
//! offline by [`train`] with a [`classifier`] from a [`corpus`] and scored with
//! [`metrics`]; [`lang`] names the language of what it reads. [`classify`] gives the
//! whole answer for a text: its label, the topics its [`segment`]s cover, and the terms
//! that [`explain`] it. [`service`] and [`server`] put it behind gRPC, and [`http`] behind
//! HTTP/JSON on the same port, with a hot-swappable model ([`reload`]), API keys
//! ([`auth`]) and metrics and traces ([`telemetry`], [`otel`]); [`bulk`] classifies JSONL
//! files and [`report`] writes evaluation reports. The `topics` binary is a thin shell over
//! all of this.

#![forbid(unsafe_code)]

pub mod analyzer;
pub mod bag;
pub mod auth;
pub mod bulk;
pub mod classifier;
pub mod classify;
pub mod corpus;
pub mod corpus_check;
pub mod evaluate;
pub mod explain;
mod gram_memo;
pub mod http;
pub mod lang;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod otel;
pub mod reload;
pub mod report;
pub mod segment;
pub mod server;
pub mod service;
pub mod synth;
pub mod telemetry;
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
