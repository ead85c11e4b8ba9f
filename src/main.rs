//! `topics`: serve, train and try the news-topic classifier from the command line.
//! A thin shell over the library; every flag can also be set through its environment variable.

use std::io::IsTerminal;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use topics::corpus::Corpus;
use topics::server::{ServerConfig, serve};
use topics::service::Limits;
use topics::tfidf::FeatureSettings;
use topics::train::{TrainSettings, train};
use topics::{Model, model_file};

const DEFAULT_MODEL: &str = "models/topics.model";

#[derive(Parser)]
#[command(
    name = "topics",
    version,
    about = "News-topic classifier (diplomacy, security, humanitarian) for Arabic and English"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (with health and reflection) until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Train a model from JSONL corpus files and print its cross-validated evaluation.
    Train(TrainArgs),
    /// Classify one text locally and print the answer as JSON.
    Classify(ClassifyArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Model file to serve.
    #[arg(long, env = "TOPICS_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Address to listen on; port 0 picks a free port (the start-up log line says which).
    #[arg(long, env = "TOPICS_ADDR", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Longest accepted text, in bytes.
    #[arg(long, env = "TOPICS_MAX_TEXT_BYTES", default_value_t = Limits::default().max_text_bytes)]
    max_text_bytes: usize,
    /// Most documents in one ClassifyBatch call.
    #[arg(long, env = "TOPICS_MAX_BATCH", default_value_t = Limits::default().max_batch)]
    max_batch: usize,
    /// Largest gRPC message, in bytes; must exceed --max-text-bytes.
    #[arg(long, env = "TOPICS_MAX_MESSAGE_BYTES", default_value_t = ServerConfig::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Seconds shutdown waits for open calls before stopping anyway.
    #[arg(long, env = "TOPICS_SHUTDOWN_GRACE", default_value_t = ServerConfig::default().shutdown_grace.as_secs())]
    shutdown_grace: u64,
}

#[derive(Args)]
struct TrainArgs {
    /// Corpus files, or directories of *.jsonl files.
    #[arg(long, env = "TOPICS_CORPUS", num_args = 1.., required = true)]
    corpus: Vec<PathBuf>,
    /// Where to write the model file.
    #[arg(long, env = "TOPICS_OUT")]
    out: PathBuf,
    /// Longest word n-gram used as a feature.
    #[arg(long, default_value_t = FeatureSettings::default().max_ngram, value_parser = clap::value_parser!(u8).range(1..=3))]
    max_ngram: u8,
    /// Minimum number of documents a term must occur in.
    #[arg(long, default_value_t = FeatureSettings::default().min_df)]
    min_df: u32,
    /// L2 regularization strength (larger = simpler model).
    #[arg(long, default_value_t = TrainSettings::default().alpha)]
    alpha: f64,
    /// Maximum L-BFGS iterations.
    #[arg(long, default_value_t = TrainSettings::default().max_iterations)]
    max_iterations: u64,
    /// Cross-validation folds for the report (0 skips it).
    #[arg(long, default_value_t = TrainSettings::default().folds)]
    folds: u32,
    /// Seed for the fold assignment.
    #[arg(long, default_value_t = TrainSettings::default().seed)]
    seed: u64,
    /// Model version to record (default: training date and a digest of corpus and settings).
    #[arg(long)]
    model_version: Option<String>,
    /// Training time to record, RFC 3339 (default: SOURCE_DATE_EPOCH if set, else now).
    #[arg(long)]
    trained_at: Option<String>,
}

#[derive(Args)]
struct ClassifyArgs {
    /// Model file to use.
    #[arg(long, env = "TOPICS_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Read the text from this file.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// The text to classify; "-" reads standard input.
    text: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Train(args) => run_train(args),
        Command::Classify(args) => run_classify(args),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOPICS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn load_model(path: &Path) -> anyhow::Result<Model> {
    model_file::load(path).with_context(|| format!("cannot load model {}", path.display()))
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = load_model(&args.model)?;
    let load_time = started.elapsed();
    let config = ServerConfig {
        limits: Limits { max_text_bytes: args.max_text_bytes, max_batch: args.max_batch },
        max_message_bytes: args.max_message_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.addr).await.with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            model = %args.model.display(),
            model_version = %model.meta().version,
            labels = ?model.labels(),
            load_ms = format_args!("{:.1}", load_time.as_secs_f64() * 1e3),
            "serving topics.v1.TopicClassifier"
        );
        serve(listener, Arc::new(model), config, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM (the signal Kubernetes sends before it kills a pod).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let trained_at = training_time(args.trained_at.as_deref())?;
    let settings = TrainSettings {
        features: FeatureSettings { max_ngram: args.max_ngram, min_df: args.min_df, sublinear_tf: true },
        alpha: args.alpha,
        max_iterations: args.max_iterations,
        folds: args.folds,
        seed: args.seed,
    };
    let corpus = Corpus::read(&args.corpus)?;
    eprintln!("read {} documents (digest {})", corpus.documents.len(), &corpus.digest[..16]);

    let started = Instant::now();
    let model = train(&corpus, &settings, trained_at, args.model_version)?;
    let elapsed = started.elapsed();
    model_file::save(&model, &args.out)?;

    let meta = model.meta();
    println!("model {} -> {}", meta.version, args.out.display());
    println!(
        "labels {:?}, vocabulary {} terms, trained in {:.1} s",
        model.labels(),
        model.vectorizer().vocabulary_size(),
        elapsed.as_secs_f64()
    );
    println!("settings {:?}", meta.settings);
    println!();
    if meta.metrics.folds > 0 {
        print!("{}", meta.metrics);
    }
    Ok(())
}

fn training_time(flag: Option<&str>) -> anyhow::Result<u64> {
    if let Some(text) = flag {
        let time = humantime::parse_rfc3339_weak(text)
            .with_context(|| format!("--trained-at {text:?} is not an RFC 3339 time"))?;
        return Ok(time.duration_since(UNIX_EPOCH).context("--trained-at is before 1970")?.as_secs());
    }
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return epoch.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH {epoch:?} is not a number of seconds"));
    }
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

fn run_classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let text = match (&args.file, args.text.as_deref()) {
        (Some(path), None) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, Some("-")) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
            text
        }
        (None, Some(text)) => text.to_string(),
        _ => bail!("give the text as an argument, with --file, or as - to read standard input"),
    };
    if topics::text::is_blank(&text) {
        bail!("the text is empty or only white space");
    }
    let model = load_model(&args.model)?;
    let prediction = model.predict(&text);
    let labels = model.labels();
    let answer = serde_json::json!({
        "label": labels[prediction.top()],
        "scores": prediction.ranked.iter().map(|&(l, score)| serde_json::json!({"label": labels[l], "score": rounded(score)})).collect::<Vec<_>>(),
        "model_version": model.meta().version,
    });
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// Six decimals: f32 carries no more, and the f64 JSON number would print noise digits.
fn rounded(score: f32) -> f64 {
    (f64::from(score) * 1e6).round() / 1e6
}
