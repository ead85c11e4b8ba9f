//! `topics`: serve, train and try the news-topic classifier from the command line.
//! A thin shell over the library; the serving flags can also be set through environment variables.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::net::TcpListener;
use topics::analyzer::{AnalyzerSettings, Stemming};
use topics::auth::ApiKeys;
use topics::bulk::{BulkSettings, answer_json, classify_stream};
use topics::classifier::{ClassifierSettings, DEFAULT_MAX_ITERATIONS};
use topics::classify::Options;
use topics::corpus::Corpus;
use topics::corpus_check::{CheckSettings, check};
use topics::evaluate::evaluate;
use topics::otel;
use topics::reload::{ExpectedLabels, ServedModel};
use topics::report::Report;
use topics::server::{ServerConfig, TlsIdentity, serve};
use topics::service::{Limits, reload};
use topics::telemetry::{Telemetry, serve_metrics};
use topics::tfidf::FeatureSettings;
use topics::train::{
    DEFAULT_MAX_DENSE_BYTES, TrainLimits, TrainProgress, TrainSettings, bytes_for_people, train_with_progress,
};
use topics::{Model, model_file};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const DEFAULT_MODEL: &str = "models/topics.model";

#[derive(Parser)]
#[command(
    name = "topics",
    version,
    about = "News-topic classifier (diplomacy, security, humanitarian, none) for Arabic and English"
)]
struct Cli {
    /// Log lines as text for people or as JSON objects for log collectors.
    #[arg(long, global = true, env = "TOPICS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (with health and reflection) until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Train a model from JSONL corpus files and print its cross-validated evaluation.
    Train(TrainArgs),
    /// Classify one text locally and print the answer as JSON, or a JSONL file with --input.
    Classify(ClassifyArgs),
    /// Score a model on a labeled JSONL data set that it was not trained on.
    Evaluate(EvaluateArgs),
    /// Work with corpora.
    #[command(subcommand)]
    Corpus(CorpusCommand),
}

#[derive(Args)]
struct EvaluateArgs {
    /// Model file to evaluate.
    #[arg(long, env = "TOPICS_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Labeled JSONL files or directories, in the corpus format.
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write report.md and confusion.svg into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CorpusCommand {
    /// Check a corpus: schema, allowed labels, language against script, duplicates, balance.
    Check(CorpusCheckArgs),
    /// Write a synthetic corpus of invented words, for timing training at scale (a model
    /// trained on it says nothing about real news).
    Synth(CorpusSynthArgs),
}

#[derive(Args)]
struct CorpusSynthArgs {
    /// Number of documents.
    #[arg(long)]
    docs: usize,
    /// Mean words per document.
    #[arg(long, default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..100_000))]
    words: usize,
    /// Seed: the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// JSONL file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct CorpusCheckArgs {
    /// Corpus files, or directories of *.jsonl files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Labels a document may carry.
    #[arg(long, value_delimiter = ',', default_value = "diplomacy,security,humanitarian,none")]
    allowed_labels: Vec<String>,
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
    /// Classification calls served at once; more get RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "TOPICS_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::default().max_concurrent_requests)]
    max_concurrent_requests: usize,
    /// Longest a unary call may run (e.g. "30s", "500ms"), whatever deadline the client set.
    #[arg(long, env = "TOPICS_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Close connections older than this (e.g. "5m") once their calls end, so that clients
    /// reconnect and spread over new replicas. Unlimited when unset.
    #[arg(long, env = "TOPICS_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration)]
    max_connection_age: Option<Duration>,
    /// How long health reports NOT_SERVING before shutdown stops accepting connections.
    #[arg(long, env = "TOPICS_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics.
    #[arg(long, env = "TOPICS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain: serve over TLS (needs --tls-key).
    #[arg(long, env = "TOPICS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TOPICS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File of API keys, one per line: every call but health checks must then send
    /// `authorization: Bearer <key>`.
    #[arg(long, env = "TOPICS_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Refuse any model, at start-up or on reload, whose label set is not exactly these
    /// (comma-separated, any order), e.g. "diplomacy,security,humanitarian,none".
    #[arg(long, env = "TOPICS_EXPECT_LABELS", value_delimiter = ',')]
    expect_labels: Option<Vec<String>>,
    /// Send request spans over OTLP/gRPC to this collector (e.g. http://otel-collector:4317),
    /// joined to the caller's trace when calls carry a W3C `traceparent`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Args)]
struct TrainArgs {
    /// Corpus files, or directories of *.jsonl files.
    #[arg(long, env = "TOPICS_CORPUS", num_args = 1.., required = true)]
    corpus: Vec<PathBuf>,
    /// Labels a document may carry; any other label is refused with its file and line.
    #[arg(long, value_delimiter = ',', default_value = "diplomacy,security,humanitarian,none")]
    allowed_labels: Vec<String>,
    /// Where to write the model file.
    #[arg(long, env = "TOPICS_OUT")]
    out: PathBuf,
    /// Classifier: compare both families by cross-validation (auto), or use one.
    #[arg(long, value_enum, default_value_t = Family::Auto)]
    classifier: Family,
    /// Regularization strengths to compare (logistic: L2 weight; naive Bayes: smoothing).
    /// Default: a small grid per family.
    #[arg(long, value_delimiter = ',')]
    alpha: Vec<f64>,
    /// Maximum L-BFGS iterations of the logistic regression.
    #[arg(long, default_value_t = DEFAULT_MAX_ITERATIONS, value_parser = clap::value_parser!(u64).range(1..))]
    max_iterations: u64,
    /// Longest word n-gram used as a feature.
    #[arg(long, default_value_t = AnalyzerSettings::default().max_ngram, value_parser = clap::value_parser!(u8).range(1..=3))]
    max_ngram: u8,
    /// Character n-gram lengths inside words, as MIN-MAX, or "off".
    #[arg(long, default_value = "2-5", value_parser = parse_char_ngrams)]
    char_ngrams: (u8, u8),
    /// How words are stemmed before they become word n-grams.
    #[arg(long, value_enum, default_value_t = StemmingArg::Light)]
    stemming: StemmingArg,
    /// Keep Arabic and English stop words in word n-grams.
    #[arg(long)]
    keep_stop_words: bool,
    /// Minimum number of documents a term must occur in.
    #[arg(long, default_value_t = FeatureSettings::default().min_df)]
    min_df: u32,
    /// Keep at most this many word and this many character terms, the most frequent (0 = all).
    #[arg(long, default_value_t = FeatureSettings::default().max_features)]
    max_features: u32,
    /// Cross-validation folds for selection and the report (0 trains the first candidate unscored).
    #[arg(long, default_value_t = TrainSettings::default().folds)]
    folds: u32,
    /// Seed for the fold assignment.
    #[arg(long, default_value_t = TrainSettings::default().seed)]
    seed: u64,
    /// Largest dense documents × vocabulary matrix training may build (bytes; K, M, G, KiB,
    /// MiB, GiB suffixes allowed). Logistic regression needs one and is skipped beyond it;
    /// naive Bayes then streams the documents instead.
    #[arg(long, default_value_t = DEFAULT_MAX_DENSE_BYTES, value_parser = parse_bytes)]
    max_dense_bytes: u64,
    /// Model version to record (default: training date and a digest of corpus and settings).
    #[arg(long)]
    model_version: Option<String>,
    /// Training time to record, RFC 3339 (default: SOURCE_DATE_EPOCH if set, else now).
    #[arg(long)]
    trained_at: Option<String>,
    /// Directory for report.md and confusion.svg (default: next to --out, named after it
    /// with the extension .report, e.g. my.report/ for my.model).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write no report files.
    #[arg(long, conflicts_with = "report")]
    no_report: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Family {
    Auto,
    Logistic,
    NaiveBayes,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StemmingArg {
    None,
    Light,
    Snowball,
}

fn parse_char_ngrams(text: &str) -> Result<(u8, u8), String> {
    if text == "off" {
        return Ok((0, 0));
    }
    let (min, max) = text.split_once('-').ok_or("expected MIN-MAX, like 2-5, or off")?;
    let parse = |s: &str| s.trim().parse::<u8>().map_err(|e| format!("{s:?}: {e}"));
    Ok((parse(min)?, parse(max)?))
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; use K, M, G, KiB, MiB or GiB")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

/// The classifiers `topics train` compares.
fn candidates(args: &TrainArgs) -> Vec<ClassifierSettings> {
    let logistic_grid = if args.alpha.is_empty() { vec![0.03, 0.1, 0.3, 1.0] } else { args.alpha.clone() };
    let bayes_grid = if args.alpha.is_empty() { vec![0.01, 0.03, 0.1] } else { args.alpha.clone() };
    let logistic = logistic_grid
        .into_iter()
        .map(|alpha| ClassifierSettings::Logistic { alpha, max_iterations: args.max_iterations });
    let bayes = bayes_grid.into_iter().map(|alpha| ClassifierSettings::NaiveBayes { alpha });
    match args.classifier {
        Family::Auto => logistic.chain(bayes).collect(),
        Family::Logistic => logistic.collect(),
        Family::NaiveBayes => bayes.collect(),
    }
}

#[derive(Args)]
struct ClassifyArgs {
    /// Model file to use.
    #[arg(long, env = "TOPICS_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Read the text from this file.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Classify a JSONL file ("-": standard input) of {"id": ..., "text": ...} rows,
    /// writing one JSON answer, or error row, per line.
    #[arg(long, conflicts_with_all = ["text", "file"])]
    input: Option<PathBuf>,
    /// Where --input's answers go (default: standard output).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// With --input: exit with status 1 when any row could not be classified.
    #[arg(long, requires = "input")]
    strict: bool,
    /// With --input: longest accepted text, in bytes (the server's default limit).
    #[arg(long, env = "TOPICS_MAX_TEXT_BYTES", default_value_t = Limits::default().max_text_bytes)]
    max_text_bytes: usize,
    /// The text to classify; "-" reads standard input.
    text: Option<String>,
    /// Also classify each paragraph (or group of sentences).
    #[arg(long)]
    segments: bool,
    /// Also list the N terms that pushed the decision most.
    #[arg(long, default_value_t = 0)]
    explain: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Serve(args) = cli.command {
        // Serving sets up logging itself: OpenTelemetry export needs its runtime.
        return run_serve(args, cli.log_format);
    }
    init_tracing(cli.log_format, None);
    match cli.command {
        Command::Serve(_) => unreachable!("handled above"),
        Command::Train(args) => run_train(args),
        Command::Classify(args) => run_classify(args),
        Command::Evaluate(args) => run_evaluate(args),
        Command::Corpus(CorpusCommand::Check(args)) => run_corpus_check(args),
        Command::Corpus(CorpusCommand::Synth(args)) => run_corpus_synth(args),
    }
}

/// Logs to standard error (as text or JSON), filtered by `TOPICS_LOG`, and sends spans
/// to `otel` when given.
fn init_tracing(format: LogFormat, otel: Option<&SdkTracerProvider>) {
    let (filter, bad_filter) = match std::env::var("TOPICS_LOG") {
        Ok(spec) => match tracing_subscriber::EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(error) => (tracing_subscriber::EnvFilter::new("info"), Some(format!("{spec:?}: {error}"))),
        },
        Err(_) => (tracing_subscriber::EnvFilter::new("info"), None),
    };
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Text => output.with_ansi(std::io::stderr().is_terminal()).boxed(),
        // One object a line, with the request span's fields, for log collectors.
        LogFormat::Json => output.json().with_current_span(true).with_span_list(false).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).with(otel.map(otel::layer)).init();
    if let Some(problem) = bad_filter {
        tracing::warn!("ignoring TOPICS_LOG {problem}; logging at info");
    }
}

fn load_model(path: &Path) -> anyhow::Result<Model> {
    model_file::load(path).with_context(|| format!("cannot load model {}", path.display()))
}

fn run_serve(args: ServeArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let otel = {
        let _runtime = runtime.enter();
        args.otlp_endpoint.as_deref().map(otel::tracer_provider).transpose()?
    };
    init_tracing(log_format, otel.as_ref());
    let served = serve_until_stopped(args, &runtime);
    if let Some(provider) = otel {
        // Sends the last batch of spans.
        if let Err(error) = provider.shutdown() {
            tracing::warn!(%error, "OpenTelemetry export did not shut down cleanly");
        }
    }
    served
}

fn serve_until_stopped(args: ServeArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            certificate_pem: std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
            private_key_pem: std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
        }),
        _ => None,
    };
    let api_keys = args.api_key_file.as_deref().map(ApiKeys::load).transpose()?.map(Arc::new);
    let config = ServerConfig {
        limits: Limits {
            max_text_bytes: args.max_text_bytes,
            max_batch: args.max_batch,
            max_concurrent_requests: args.max_concurrent_requests,
            request_timeout: Some(args.request_timeout),
        },
        max_message_bytes: args.max_message_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        drain_delay: args.drain_delay,
        max_connection_age: args.max_connection_age,
        tls,
        api_keys,
    };
    config.validate()?;
    let expected_labels = match &args.expect_labels {
        Some(labels) => Some(ExpectedLabels::new(labels).context("--expect-labels names no labels")?),
        None => None,
    };
    let started = Instant::now();
    let model = Arc::new(load_model(&args.model)?);
    let served = match expected_labels {
        Some(expected) => ServedModel::expecting(Arc::clone(&model), args.model.clone(), expected)
            .with_context(|| format!("model {} refused", args.model.display()))?,
        None => ServedModel::new(Arc::clone(&model), args.model.clone()),
    };
    let load_time = started.elapsed();

    runtime.block_on(async move {
        let listener = TcpListener::bind(args.addr).await.with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        let telemetry = Telemetry::new();
        if let Some(metrics_addr) = args.metrics_addr {
            let metrics_listener = TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {metrics_addr}"))?;
            let metrics_addr = metrics_listener.local_addr()?;
            tracing::info!(metrics_addr = %metrics_addr, "serving Prometheus metrics at /metrics");
            tokio::spawn(serve_metrics(metrics_listener, telemetry.clone(), std::future::pending()));
        }
        // Before the line that says we serve: a SIGTERM sent as soon as it appears must
        // start a graceful shutdown, not meet the default action and kill the process.
        let shutdown_signal = shutdown_signal();
        tracing::info!(
            %addr,
            model = %args.model.display(),
            model_version = %model.meta().version,
            labels = ?model.labels(),
            load_ms = format_args!("{:.1}", load_time.as_secs_f64() * 1e3),
            tls = config.tls.is_some(),
            api_keys = config.api_keys.as_ref().map_or(0, |k| k.len()),
            "serving topics.v1.TopicClassifier"
        );
        let served = Arc::new(served);
        tokio::spawn(reload_on_sighup(Arc::clone(&served), telemetry.clone()));
        serve(listener, served, telemetry, config, shutdown_signal).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Reloads the model from its current path on every SIGHUP; a bad file is logged and
/// the old model keeps serving.
async fn reload_on_sighup(served: Arc<ServedModel>, telemetry: Telemetry) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reload through the ReloadModel call instead");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the model");
            // The outcome is logged by `reload`; a refused file changes nothing.
            let _ = reload(&served, &telemetry, None).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (served, telemetry);
    }
}

/// Resolves on SIGINT or SIGTERM (the signal Kubernetes sends before it kills a pod).
/// The handlers are installed when this is called, not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut one), Err(error)) | (Err(error), Ok(mut one)) => {
                    tracing::warn!(%error, "cannot listen for one of SIGINT and SIGTERM; the other still stops the server");
                    one.recv().await;
                }
                (Err(error), Err(_)) => {
                    tracing::error!(%error, "cannot listen for SIGINT or SIGTERM; only killing the process stops the server");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let trained_at = training_time(args.trained_at.as_deref())?;
    let candidates = candidates(&args);
    let settings = TrainSettings {
        features: FeatureSettings {
            analyzer: AnalyzerSettings {
                max_ngram: args.max_ngram,
                char_ngrams: args.char_ngrams,
                stemming: match args.stemming {
                    StemmingArg::None => Stemming::None,
                    StemmingArg::Light => Stemming::Light,
                    StemmingArg::Snowball => Stemming::Snowball,
                },
                stop_words: !args.keep_stop_words,
            },
            min_df: args.min_df,
            max_features: args.max_features,
            sublinear_tf: true,
        },
        classifier: candidates[0],
        folds: args.folds,
        seed: args.seed,
    };
    let corpus = Corpus::read_with_labels(&args.corpus, &args.allowed_labels)?;
    let validation = if args.folds > 1 && corpus.documents.len() > topics::train::HOLDOUT_ABOVE {
        format!("scoring {} candidate(s) on one stratified held-out fold (1/{} of the corpus)", candidates.len(), args.folds)
    } else {
        format!("cross-validating {} candidate(s) on {} folds", candidates.len(), args.folds)
    };
    eprintln!("read {} documents (digest {}); {validation}", corpus.documents.len(), &corpus.digest[..16]);

    let started = Instant::now();
    let bar = training_bar(args.folds, candidates.len());
    let on_progress = |step: TrainProgress| match step {
        TrainProgress::Started { fits } => {
            bar.set_length(fits + 1);
            bar.set_message("cross-validating");
        }
        TrainProgress::Fitted { fold, candidate } => {
            bar.inc(1);
            bar.set_message(format!("fold {} {candidate}", fold + 1));
        }
        TrainProgress::FinalFit { classifier } => bar.set_message(format!("final fit {classifier}")),
    };
    let limits = TrainLimits { max_dense_bytes: args.max_dense_bytes, ..TrainLimits::default() };
    let trained =
        train_with_progress(&corpus, &settings, &candidates, &limits, trained_at, args.model_version, &on_progress);
    bar.finish_and_clear();
    let trained = trained?;
    let elapsed = started.elapsed();
    let model = &trained.model;
    model_file::save(model, &args.out)?;
    let report_files = if args.no_report {
        Vec::new()
    } else {
        let dir = args.report.clone().unwrap_or_else(|| args.out.with_extension("report"));
        Report::training(model).write(&dir)?
    };

    let meta = model.meta();
    if !trained.candidates.is_empty() || !trained.skipped.is_empty() {
        if trained.candidates.is_empty() {
            println!("model selection (no cross-validation)");
        } else if meta.metrics.folds == 1 {
            println!(
                "model selection (one stratified held-out fold of {} documents, 1/{} of the corpus: above {} documents a holdout replaces {}-fold cross-validation; the most regularized model within one standard error of the best macro-F1 is kept)",
                meta.metrics.documents,
                args.folds,
                topics::train::HOLDOUT_ABOVE,
                args.folds
            );
        } else {
            println!(
                "model selection ({}-fold cross-validation; the most regularized model within one standard error of the best macro-F1 is kept)",
                meta.metrics.folds
            );
        }
        println!("{:34}  accuracy  macro-F1  ± s.e.", "classifier");
        for candidate in &trained.candidates {
            let mark = if candidate.classifier == meta.settings.classifier { "  <- kept" } else { "" };
            println!(
                "{:34}  {:8.4}  {:8.4}  {:6.4}{mark}",
                candidate.classifier.to_string(),
                candidate.metrics.accuracy,
                candidate.metrics.macro_f1,
                candidate.macro_f1_standard_error
            );
        }
        for skipped in &trained.skipped {
            println!("{:34}  skipped: {skipped}", skipped.classifier.to_string());
        }
        println!();
    }
    if let Some(skipped) = trained.skipped.first() {
        println!(
            "skipped {} logistic regression candidate(s): a dense {} × {} matrix would take {}, over --max-dense-bytes {}",
            trained.skipped.len(),
            skipped.documents,
            skipped.features,
            bytes_for_people(skipped.dense_bytes()),
            bytes_for_people(skipped.max_dense_bytes)
        );
    }
    if trained.streamed {
        println!("naive Bayes was fitted from per-class sums of sparse rows, streamed one document at a time");
    }
    if trained.streamed || !trained.skipped.is_empty() {
        println!();
    }
    println!("model {} -> {}", meta.version, args.out.display());
    println!(
        "labels {:?}, vocabulary {} terms, trained in {:.1} s",
        model.labels(),
        model.vectorizer().vocabulary_size(),
        elapsed.as_secs_f64()
    );
    let settings: Vec<String> = meta.settings.describe().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("settings {}", settings.join(" "));
    println!();
    if meta.metrics.folds > 0 {
        print!("{}", meta.metrics);
    }
    for file in report_files {
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

/// Counts the fits of cross-validation and the final one, on a terminal only.
fn training_bar(folds: u32, candidates: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let fits = if folds > 1 { u64::from(folds) * candidates as u64 } else { 0 };
    let bar = ProgressBar::new(fits + 1);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} fits: {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("reading features");
    // A single fit can take minutes: keep the spinner moving to show the process lives.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
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
    if let Some(input) = &args.input {
        return run_classify_bulk(&args, input);
    }
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
        _ => bail!(
            "give the text as an argument, with --file, or as - to read standard input; or a JSONL file with --input"
        ),
    };
    if topics::text::is_blank(&text) {
        bail!("the text is empty or only white space");
    }
    let model = load_model(&args.model)?;
    let answer = model.classify(&text, Options { segments: args.segments, explain: args.explain });
    let answer = serde_json::Value::Object(answer_json(&model, &text, &answer));
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// `classify --input`: streams JSONL through the model, a progress bar on a terminal,
/// a summary on standard error at the end.
fn run_classify_bulk(args: &ClassifyArgs, input: &Path) -> anyhow::Result<()> {
    let model = load_model(&args.model)?;
    let (reader, length): (Box<dyn std::io::BufRead>, Option<u64>) = if input == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
        let length = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 16, file)), length)
    };
    let writer: Box<dyn Write> = match &args.output {
        Some(path) if path != Path::new("-") => {
            Box::new(BufWriter::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?))
        }
        _ => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress_bar(length);
    let settings = BulkSettings::new(Options { segments: args.segments, explain: args.explain }, args.max_text_bytes);
    let summary = classify_stream(&model, reader, writer, &settings, |lines, bytes| {
        bar.set_position(bytes);
        bar.set_message(format!("{lines} lines"));
    });
    bar.finish_and_clear();
    let summary = summary?;
    eprintln!("{summary}");
    if args.strict && summary.errors > 0 {
        bail!("{} row(s) could not be classified (--strict)", summary.errors);
    }
    Ok(())
}

/// A bar over the input's bytes, or a byte counter when its size is unknown; hidden when
/// standard error is not a terminal, so that logs and CI output stay clean.
fn progress_bar(length: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match length {
        Some(length) => (
            ProgressBar::new(length),
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {msg} ({binary_bytes_per_sec}, eta {eta})",
        ),
        None => (ProgressBar::new_spinner(), "{spinner} [{elapsed_precise}] {bytes} {msg} ({binary_bytes_per_sec})"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn run_evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let model = load_model(&args.model)?;
    let data = Corpus::read(&args.data)?;
    let evaluation = evaluate(&model, &data.documents);
    if let Some(dir) = &args.report {
        let described: Vec<String> = args.data.iter().map(|p| p.display().to_string()).collect();
        for file in Report::evaluation(&model, &evaluation, &described.join(", ")).write(dir)? {
            eprintln!("wrote {}", file.display());
        }
    }
    if args.json {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "model_version": model.meta().version,
            "data_digest": data.digest,
            "evaluation": evaluation,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("model {} on {} ({} documents)", model.meta().version, args.data[0].display(), data.documents.len());
        println!();
        print!("{evaluation}");
    }
    Ok(())
}

fn run_corpus_check(args: CorpusCheckArgs) -> anyhow::Result<()> {
    let corpus = Corpus::read(&args.paths)?;
    let settings = CheckSettings { allowed_labels: args.allowed_labels, ..CheckSettings::default() };
    let report = check(&corpus.documents, &settings);
    print!("{report}");
    if report.errors().next().is_some() {
        bail!("the corpus has errors");
    }
    Ok(())
}

fn run_corpus_synth(args: CorpusSynthArgs) -> anyhow::Result<()> {
    let file = std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let settings = topics::synth::SynthSettings { documents: args.docs, words: args.words, seed: args.seed };
    topics::synth::write_corpus(settings, &mut std::io::BufWriter::new(file))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {} synthetic documents to {}", args.docs, args.out.display());
    Ok(())
}
