//! Classifies one article with a running `topics` server, through the client this crate
//! generates from `proto/`, and prints its label and scores.
//!
//! ```sh
//! cargo run --example classify -- --addr 127.0.0.1:50051 --text "Aid trucks reached the camp."
//! cargo run --example classify -- --addr 127.0.0.1:50051 --file article.txt
//! ```
//!
//! A failed call prints the gRPC status and exits with 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use topics::proto::ClassifyRequest;
use topics::proto::topic_classifier_client::TopicClassifierClient;

#[derive(Parser)]
#[command(about = "Classify a news article with a topics server")]
#[command(group = clap::ArgGroup::new("source").required(true))]
struct Args {
    /// Server address, HOST:PORT (or a full http:// URI).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Read the article from this file (UTF-8).
    #[arg(long, group = "source")]
    file: Option<PathBuf>,
    /// The article text.
    #[arg(long, group = "source")]
    text: Option<String>,
    /// Sent as `authorization: Bearer KEY`, for servers run with --api-key-file.
    #[arg(long)]
    api_key: Option<String>,
    /// Deadline of the call, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let text = match (&args.file, args.text) {
        (Some(path), _) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        (None, Some(text)) => text,
        (None, None) => unreachable!("clap requires --file or --text"),
    };
    let uri = if args.addr.contains("://") { args.addr.clone() } else { format!("http://{}", args.addr) };
    let timeout =
        Duration::try_from_secs_f64(args.timeout).context("--timeout must be a positive number of seconds")?;

    // The deadline covers connecting too, so that a server that is not there fails as fast
    // as one that does not answer.
    let channel = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("{uri:?} is not a server address"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {uri}"))?;
    let mut client = TopicClassifierClient::new(channel);

    let mut request = tonic::Request::new(ClassifyRequest { text, ..Default::default() });
    request.set_timeout(timeout);
    if let Some(key) = &args.api_key {
        let value: MetadataValue<_> =
            format!("Bearer {key}").parse().context("the API key is not a valid header value")?;
        request.metadata_mut().insert("authorization", value);
    }

    let answer = match client.classify(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            eprintln!("error: {:?}: {}", status.code(), status.message());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("label: {}", answer.label);
    println!("labels: {}", answer.labels.join(", "));
    println!("language: {}", answer.language);
    println!("model_version: {}", answer.model_version);
    println!("scores:");
    for score in &answer.scores {
        println!("  {:<14} {:.6}", score.label, score.score);
    }
    Ok(ExitCode::SUCCESS)
}
