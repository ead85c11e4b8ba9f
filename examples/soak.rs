//! The load driver of `bench/soak.sh`: holds a steady rate of good `Classify` calls
//! against a running `topics serve` while it swaps the model for good and corrupt files,
//! mixes in invalid requests, samples the server's resident memory, and finally sends
//! SIGTERM during calls in flight to check that they drain. Prints a summary and exits
//! with 1 when a check fails.
//!
//! ```sh
//! cargo run --release --example soak -- --addr 127.0.0.1:PORT --metrics-addr 127.0.0.1:PORT \
//!     --pid PID --model-dir DIR --seconds 300
//! ```
//!
//! `DIR/topics.model` must be the model the server was started with; the driver writes
//! its corrupt variants and a good copy next to it. `--pid` must be the server's process,
//! which the caller started: the driver reads its memory from `/proc` and sends it SIGTERM
//! at the end, and signals nothing else. It talks only to the addresses it is given.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use topics::proto::topic_classifier_client::TopicClassifierClient;
use topics::proto::{ClassifyBatchRequest, ClassifyOptions, ClassifyRequest, ClassifyResponse, ReloadModelRequest};

#[derive(Parser)]
#[command(about = "Soak a running topics server with load, model swaps and bad input")]
struct Args {
    /// The server's gRPC address (127.0.0.1:PORT).
    #[arg(long)]
    addr: SocketAddr,
    /// The server's metrics address.
    #[arg(long)]
    metrics_addr: SocketAddr,
    /// The server's process id: memory is read from /proc/PID/status, SIGTERM goes to it at the end.
    #[arg(long)]
    pid: u32,
    /// Folder holding topics.model, the file the server was started with.
    #[arg(long)]
    model_dir: PathBuf,
    /// The seed article (its first 600 bytes are the main load).
    #[arg(long, default_value = "models/corpus/seed.jsonl")]
    seed: PathBuf,
    /// How long to hold the load, in seconds.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Good calls per second to hold; 0 measures the peak first and holds half of it.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long the peak is measured, in seconds.
    #[arg(long, default_value_t = 5)]
    probe_seconds: u64,
    /// Concurrent callers while measuring the peak, and the most calls in flight while holding the rate.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds between model reloads, alternately good and corrupt.
    #[arg(long, default_value_t = 5)]
    reload_every: u64,
    /// The server's --max-text-bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_text_bytes: usize,
    /// The server's --max-batch.
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// The server's --max-message-bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_bytes: usize,
    /// Allowed growth of resident memory from the start of the soak (after warm-up) to its end, in MiB.
    #[arg(long, default_value_t = 16)]
    rss_tolerance_mib: u64,
}

/// Deadline of every call: far beyond any honest answer, so that only a stuck call fails by it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Short English texts of our own, beside the Arabic seed article.
const ENGLISH: &[&str] = &[
    "The foreign minister met the envoy in Geneva to discuss a ceasefire and the next round of talks.",
    "Aid trucks reached the displaced families in the camp after the floods cut the main road.",
    "Two soldiers were killed when militants attacked a checkpoint near the border overnight.",
    "The home side won the cup final with a late goal in front of a full stadium.",
    "The summit ended with a joint statement on trade, energy and regional security cooperation.",
    "Doctors warned of cholera in the shelters as thousands fled the fighting.",
];

fn client(channel: Channel) -> TopicClassifierClient<Channel> {
    TopicClassifierClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TopicClassifierClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(client(channel))
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn seed_article(path: &Path) -> anyhow::Result<String> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut paragraphs = Vec::new();
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).context("the seed file is not JSONL")?;
        paragraphs.push(row["text"].as_str().context("a seed row has no text")?.to_string());
    }
    Ok(paragraphs.join("\n"))
}

/// One kind of good call, and the answer the served model gave it before the soak began.
#[derive(Clone)]
struct GoodCall {
    request: ClassifyRequest,
    label: String,
    labels: Vec<String>,
}

fn good_requests(seed: &str) -> Vec<ClassifyRequest> {
    let seed600 = prefix(seed, 600).to_string();
    let mut requests = vec![
        ClassifyRequest { text: seed600.clone(), id: "seed-600".into(), ..Default::default() },
        ClassifyRequest {
            text: seed600,
            id: "seed-600-explained".into(),
            options: Some(ClassifyOptions { top_k: 0, segments: true, explain: 8 }),
            ..Default::default()
        },
    ];
    for (i, text) in ENGLISH.iter().enumerate() {
        let options = (i % 2 == 1).then_some(ClassifyOptions { top_k: 2, ..Default::default() });
        requests.push(ClassifyRequest { text: (*text).into(), id: format!("en-{i}"), options, ..Default::default() });
    }
    requests
}

/// Checks an answer against the one recorded at the start: same model, same decision.
fn check_answer(call: &GoodCall, version: &str, answer: &ClassifyResponse) -> Result<(), String> {
    if answer.model_version != version {
        return Err(format!("{}: model_version {:?}, expected {version:?}", call.request.id, answer.model_version));
    }
    if answer.label != call.label || answer.labels != call.labels {
        return Err(format!(
            "{}: label {:?} {:?}, expected {:?} {:?}",
            call.request.id, answer.label, answer.labels, call.label, call.labels
        ));
    }
    if answer.scores.is_empty() || answer.scores.iter().any(|s| !s.score.is_finite()) {
        return Err(format!("{}: scores {:?}", call.request.id, answer.scores));
    }
    Ok(())
}

/// Counters shared by the callers; `failures` keeps the first messages for the summary.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u32>>,
}

impl Tally {
    fn fail(&self, started: Instant, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() < 20 {
            failures.push(format!("t={:.1}s {message}", started.elapsed().as_secs_f64()));
        }
    }
}

async fn one_good_call(
    client: &mut TopicClassifierClient<Channel>,
    call: &GoodCall,
    version: &str,
    tally: &Tally,
    started: Instant,
    latencies: &mut Vec<u32>,
) {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let sent = Instant::now();
    let outcome = client.classify(request(call.request.clone())).await;
    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    match outcome {
        Ok(answer) => match check_answer(call, version, answer.get_ref()) {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(message) => tally.fail(started, message),
        },
        Err(status) => tally.fail(started, format!("{}: {:?} {}", call.request.id, status.code(), status.message())),
    }
}

/// Closed-loop calls from `concurrency` callers for `duration`: the most the server (and
/// this driver, on the same machine) can do. Returns calls per second.
async fn measure_peak(
    client: &TopicClassifierClient<Channel>,
    calls: &[GoodCall],
    version: &str,
    concurrency: usize,
    duration: Duration,
    tally: &Arc<Tally>,
    started: Instant,
) -> f64 {
    let begin = Instant::now();
    let end = begin + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (mut client, calls, version, tally) =
            (client.clone(), calls.to_vec(), version.to_string(), Arc::clone(tally));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while Instant::now() < end {
                one_good_call(&mut client, &calls[i % calls.len()], &version, &tally, started, &mut latencies).await;
                i += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    tally.ok.load(Ordering::Relaxed) as f64 / begin.elapsed().as_secs_f64()
}

/// Holds `rate` good calls per second until `stop`, spread over `workers` paced callers.
/// A caller whose call outlasts its turn skips the turns it missed, so a slow server
/// lowers the achieved rate instead of piling up calls.
#[allow(clippy::too_many_arguments)]
async fn hold_rate(
    client: &TopicClassifierClient<Channel>,
    calls: &[GoodCall],
    version: &str,
    rate: f64,
    workers: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
    started: Instant,
) {
    let period = Duration::from_secs_f64(workers as f64 / rate);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (mut client, calls, version, tally, stop) =
            (client.clone(), calls.to_vec(), version.to_string(), Arc::clone(tally), Arc::clone(stop));
        let offset = period.mul_f64(worker as f64 / workers as f64);
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut latencies = Vec::new();
            let mut i = worker;
            loop {
                ticks.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                one_good_call(&mut client, &calls[i % calls.len()], &version, &tally, started, &mut latencies).await;
                i += 1;
            }
            tally.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).extend(latencies);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// The files the reloads use, made from the good model's bytes.
struct ModelFiles {
    good: PathBuf,
    good_copy: PathBuf,
    corrupt: Vec<(&'static str, PathBuf)>,
    good_bytes: Vec<u8>,
}

/// A small xorshift generator: random-looking bytes without a dependency.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn write_model_files(dir: &Path) -> anyhow::Result<ModelFiles> {
    let good = dir.join("topics.model");
    let good_bytes = std::fs::read(&good).with_context(|| format!("cannot read {}", good.display()))?;
    if good_bytes.len() < 1024 {
        bail!("{} is too small to be the model", good.display());
    }
    let good_copy = dir.join("topics-copy.model");
    std::fs::write(&good_copy, &good_bytes)?;

    let mut flipped_payload = good_bytes.clone();
    let middle = flipped_payload.len() / 2;
    flipped_payload[middle] ^= 0x01;
    let mut flipped_header = good_bytes.clone();
    flipped_header[0] ^= 0xff;
    let mut flipped_last = good_bytes.clone();
    if let Some(last) = flipped_last.last_mut() {
        *last ^= 0x80;
    }
    // A header that checks out over a payload cut short: the checksum passes, decoding must not.
    let half_body = good_bytes[52..52 + (good_bytes.len() - 52) / 2].to_vec();
    let mut rechecked = good_bytes[..12].to_vec();
    rechecked.extend_from_slice(&(half_body.len() as u64).to_le_bytes());
    rechecked.extend_from_slice(&Sha256::digest(&half_body));
    rechecked.extend_from_slice(&half_body);
    let mut longer = good_bytes.clone();
    longer.extend_from_slice(b"trailing bytes");
    let variants: Vec<(&'static str, Vec<u8>)> = vec![
        ("flipped byte in the payload", flipped_payload),
        ("truncated to half", good_bytes[..good_bytes.len() / 2].to_vec()),
        ("random bytes", noise(good_bytes.len(), 0x9e37_79b9_7f4a_7c15)),
        ("flipped byte in the magic", flipped_header),
        ("empty file", Vec::new()),
        ("flipped last byte", flipped_last),
        ("trailing bytes appended", longer),
        ("first 64 bytes only", good_bytes[..64].to_vec()),
        ("half a payload under a valid header", rechecked),
    ];
    let mut corrupt = Vec::new();
    for (i, (name, bytes)) in variants.into_iter().enumerate() {
        let path = dir.join(format!("corrupt-{i}.model"));
        std::fs::write(&path, bytes)?;
        corrupt.push((name, path));
    }
    corrupt.push(("a missing file", dir.join("no-such.model")));
    corrupt.push(("a directory", dir.to_path_buf()));
    // Last: a bad file written over the path being served, reloaded by the empty path.
    corrupt.push(("served file overwritten, reload in place", PathBuf::new()));
    Ok(ModelFiles { good, good_copy, corrupt, good_bytes })
}

/// Replaces `path` atomically, as a trainer or deployment would.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[derive(Default)]
struct ReloadTally {
    good_ok: u64,
    good_failed: u64,
    corrupt_refused: u64,
    corrupt_accepted: u64,
    /// Refused, but not with FAILED_PRECONDITION.
    corrupt_wrong_code: u64,
    /// Classify calls right after a refused reload that did not get the old model's answer.
    served_after_refusal_failed: u64,
    problems: Vec<String>,
}

/// Every `every`, until `stop`: a good reload, then a corrupt one, and so on. After each
/// refusal, one call checks that the old model still answers.
async fn reload_loop(
    mut client: TopicClassifierClient<Channel>,
    files: ModelFiles,
    check: GoodCall,
    version: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> ReloadTally {
    let mut tally = ReloadTally::default();
    let goods = [(files.good.clone(), "by path"), (PathBuf::new(), "in place"), (files.good_copy.clone(), "a copy")];
    let mut served = files.good.clone();
    // Half a period in, so that a soak of two periods already sees one of each kind.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every / 2, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0usize;
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let at = started.elapsed().as_secs_f64();
        if round.is_multiple_of(2) {
            let (path, how) = &goods[(round / 2) % goods.len()];
            let outcome = client.reload_model(request(ReloadModelRequest { path: path.display().to_string() })).await;
            match outcome {
                Ok(info) if info.get_ref().version == version => {
                    tally.good_ok += 1;
                    if !path.as_os_str().is_empty() {
                        served = path.clone();
                    }
                }
                Ok(info) => {
                    tally.good_failed += 1;
                    tally
                        .problems
                        .push(format!("t={at:.1}s good reload ({how}) gave version {:?}", info.get_ref().version));
                }
                Err(status) => {
                    tally.good_failed += 1;
                    tally.problems.push(format!(
                        "t={at:.1}s good reload ({how}) failed: {:?} {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        } else {
            let (name, path) = &files.corrupt[(round / 2) % files.corrupt.len()];
            let in_place = path.as_os_str().is_empty();
            if in_place && let Err(error) = replace(&served, &files.good_bytes[..files.good_bytes.len() / 3]) {
                tally.problems.push(format!("t={at:.1}s cannot overwrite {}: {error}", served.display()));
            }
            let outcome = client.reload_model(request(ReloadModelRequest { path: path.display().to_string() })).await;
            if in_place && let Err(error) = replace(&served, &files.good_bytes) {
                tally.problems.push(format!("t={at:.1}s cannot restore {}: {error}", served.display()));
            }
            match outcome {
                Err(status) if status.code() == Code::FailedPrecondition => tally.corrupt_refused += 1,
                Err(status) => {
                    tally.corrupt_wrong_code += 1;
                    tally.problems.push(format!(
                        "t={at:.1}s corrupt reload ({name}) refused with {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
                Ok(info) => {
                    tally.corrupt_accepted += 1;
                    tally.problems.push(format!(
                        "t={at:.1}s corrupt reload ({name}) was ACCEPTED as version {:?}",
                        info.get_ref().version
                    ));
                }
            }
            let answer = client.classify(request(check.request.clone())).await;
            let checked = match answer {
                Ok(answer) => check_answer(&check, &version, answer.get_ref()),
                Err(status) => Err(format!("{:?} {}", status.code(), status.message())),
            };
            if let Err(message) = checked {
                tally.served_after_refusal_failed += 1;
                tally.problems.push(format!("t={at:.1}s after the refused reload ({name}): {message}"));
            }
        }
        round += 1;
    }
    tally
}

/// One kind of invalid call and the status code it must get.
struct BadInput {
    name: &'static str,
    expected: Code,
    /// A fragment the status message must contain.
    message: &'static str,
}

/// How often each invalid call got each code.
#[derive(Default)]
struct BadTally {
    by_kind: BTreeMap<&'static str, (Code, BTreeMap<String, u64>)>,
    unexpected: Vec<String>,
}

impl BadTally {
    fn record(&mut self, input: &BadInput, outcome: Result<(), tonic::Status>, at: f64) {
        let (code, message) = match &outcome {
            Ok(()) => ("OK".to_string(), String::new()),
            Err(status) => (format!("{:?}", status.code()), status.message().to_string()),
        };
        let entry = self.by_kind.entry(input.name).or_insert_with(|| (input.expected, BTreeMap::new()));
        *entry.1.entry(code.clone()).or_default() += 1;
        let good = matches!(&outcome, Err(s) if s.code() == input.expected) && message.contains(input.message);
        if !good && self.unexpected.len() < 20 {
            self.unexpected.push(format!(
                "t={at:.1}s {}: got {code} {message:?}, expected {:?} containing {:?}",
                input.name, input.expected, input.message
            ));
        }
    }

    fn mismatches(&self) -> u64 {
        self.by_kind
            .values()
            .map(|(expected, codes)| {
                codes.iter().filter(|(code, _)| **code != format!("{expected:?}")).map(|(_, n)| n).sum::<u64>()
            })
            .sum()
    }
}

fn bad_inputs() -> Vec<BadInput> {
    let invalid = |name, message| BadInput { name, expected: Code::InvalidArgument, message };
    vec![
        invalid("empty text", "text is empty"),
        invalid("white space only", "text is empty"),
        invalid("text over --max-text-bytes", "over the limit"),
        invalid("id over 256 bytes", "id is"),
        invalid("language not a tag", "not a language tag"),
        invalid("empty batch", "no documents"),
        invalid("batch over --max-batch", "over the limit"),
        invalid("batch with a blank document", "documents[1]"),
        invalid("stream with a blank third message", "stream message 2"),
        BadInput { name: "message over --max-message-bytes", expected: Code::OutOfRange, message: "" },
    ]
}

/// Sends the invalid calls in turn, one every `every`, until `stop`; the costly message
/// over the transport's limit only once a minute.
async fn bad_input_loop(
    mut client: TopicClassifierClient<Channel>,
    limits: (usize, usize, usize),
    every: Duration,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> BadTally {
    let (max_text_bytes, max_batch, max_message_bytes) = limits;
    let inputs = bad_inputs();
    let mut tally = BadTally::default();
    let doc = |text: &str| ClassifyRequest { text: text.into(), ..Default::default() };
    let mut ticks = tokio::time::interval(every);
    let mut last_huge: Option<Instant> = None;
    let mut round = 0usize;
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut index = round % (inputs.len() - 1);
        if last_huge.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) && round > 0 {
            index = inputs.len() - 1;
            last_huge = Some(Instant::now());
        }
        let input = &inputs[index];
        let at = started.elapsed().as_secs_f64();
        let outcome = match index {
            0 => client.classify(request(doc(""))).await.map(drop),
            1 => client.classify(request(doc(" \n\t\u{200b} "))).await.map(drop),
            2 => client.classify(request(doc(&"a".repeat(max_text_bytes + 1)))).await.map(drop),
            3 => client
                .classify(request(ClassifyRequest {
                    text: ENGLISH[0].into(),
                    id: "i".repeat(257),
                    ..Default::default()
                }))
                .await
                .map(drop),
            4 => client
                .classify(request(ClassifyRequest {
                    text: ENGLISH[0].into(),
                    language: "en_US!".into(),
                    ..Default::default()
                }))
                .await
                .map(drop),
            5 => client.classify_batch(request(ClassifyBatchRequest { documents: Vec::new() })).await.map(drop),
            6 => client
                .classify_batch(request(ClassifyBatchRequest { documents: vec![doc(ENGLISH[1]); max_batch + 1] }))
                .await
                .map(drop),
            7 => client
                .classify_batch(request(ClassifyBatchRequest { documents: vec![doc(ENGLISH[1]), doc("  ")] }))
                .await
                .map(drop),
            8 => bad_stream(&mut client).await,
            _ => client.classify(request(doc(&"b".repeat(max_message_bytes + 1)))).await.map(drop),
        };
        tally.record(input, outcome, at);
        round += 1;
    }
    tally
}

/// Two good messages then a blank one: both answers must arrive before the error.
async fn bad_stream(client: &mut TopicClassifierClient<Channel>) -> Result<(), tonic::Status> {
    let messages = [ENGLISH[0], ENGLISH[2], ""].map(|text| ClassifyRequest { text: text.into(), ..Default::default() });
    let mut answers = client.classify_stream(request(tokio_stream::iter(messages))).await?.into_inner();
    let mut received = 0;
    loop {
        match answers.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => return Ok(()),
            Err(status) if received == 2 => return Err(status),
            Err(status) => {
                return Err(tonic::Status::new(
                    Code::Unknown,
                    format!("{received} answers before the error, expected 2: {}", status.message()),
                ));
            }
        }
    }
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A GET of `/metrics`, over plain HTTP/1.0.
fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(page)
}

/// The value of the sample whose name and labels are exactly `series`.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Checks that `pid` is a `topics serve` process before signalling it.
fn is_topics_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        words.first().is_some_and(|w| w.ends_with(b"topics")) && words.get(1) == Some(&&b"serve"[..])
    })
}

struct DrainOutcome {
    calls: usize,
    in_flight_seen: f64,
    ok: usize,
    finished_after_sigterm: usize,
    problems: Vec<String>,
}

/// Starts `calls` large batches, waits until the server counts them in flight, sends it
/// SIGTERM, and checks that every one still gets its full answer.
async fn drain(args: &Args, seed: &str, calls: usize) -> anyhow::Result<DrainOutcome> {
    let client = connect(args.addr).await?;
    let documents: Vec<ClassifyRequest> = (0..args.max_batch)
        .map(|i| ClassifyRequest { text: seed.to_string(), id: format!("drain-{i}"), ..Default::default() })
        .collect();
    let sigterm_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let (mut client, documents, sigterm_at) = (client.clone(), documents.clone(), Arc::clone(&sigterm_at));
        tasks.push(tokio::spawn(async move {
            let mut call = tonic::Request::new(ClassifyBatchRequest { documents });
            call.set_timeout(Duration::from_secs(60));
            let outcome = client.classify_batch(call).await;
            let after = sigterm_at.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            (outcome.map(|r| r.into_inner().results.len()), after)
        }));
    }
    // The gauge counts every call the server is running, so wait until all ours are in.
    let waited = Instant::now();
    let mut in_flight_seen = 0.0;
    while waited.elapsed() < Duration::from_secs(10) {
        let page = tokio::task::spawn_blocking({
            let addr = args.metrics_addr;
            move || scrape(addr)
        })
        .await??;
        in_flight_seen = metric(&page, "topics_grpc_requests_in_flight").unwrap_or(0.0);
        if in_flight_seen >= calls as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !is_topics_server(args.pid) {
        bail!("process {} is not a topics server; not signalling it", args.pid);
    }
    *sigterm_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let status = std::process::Command::new("kill").arg("-TERM").arg(args.pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", args.pid);
    }
    let mut outcome = DrainOutcome { calls, in_flight_seen, ok: 0, finished_after_sigterm: 0, problems: Vec::new() };
    for task in tasks {
        let (result, after) = task.await?;
        match result {
            Ok(n) if n == args.max_batch => outcome.ok += 1,
            Ok(n) => outcome.problems.push(format!("a draining batch got {n} results of {}", args.max_batch)),
            Err(status) => {
                outcome.problems.push(format!("a draining batch failed: {:?} {}", status.code(), status.message()))
            }
        }
        if after {
            outcome.finished_after_sigterm += 1;
        }
    }
    Ok(outcome)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.seconds == 0 || args.reload_every == 0 || args.concurrency == 0 {
        bail!("--seconds, --reload-every and --concurrency must be at least 1");
    }
    let started = Instant::now();
    let seed = seed_article(&args.seed)?;
    let files = write_model_files(&args.model_dir)?;
    let mut client = connect(args.addr).await?;
    let version = client.get_model_info(request(topics::proto::GetModelInfoRequest {})).await?.into_inner().version;

    // What the served model answers now is what it must answer all along: the good
    // reloads load the same file, and the corrupt ones must change nothing.
    let mut calls = Vec::new();
    for good in good_requests(&seed) {
        let answer = client.classify(request(good.clone())).await.context("a good call failed before the soak")?;
        let answer = answer.into_inner();
        calls.push(GoodCall { request: good, label: answer.label, labels: answer.labels });
    }
    println!("model {version}; {} kinds of good call, seed article 600 B -> {}", calls.len(), calls[0].label);

    let probe = Arc::new(Tally::default());
    let peak = if args.rate > 0.0 {
        None
    } else {
        let peak = measure_peak(
            &client,
            &calls,
            &version,
            args.concurrency,
            Duration::from_secs(args.probe_seconds),
            &probe,
            started,
        )
        .await;
        println!(
            "peak: {peak:.0} req/s with {} callers over {} s ({} failed)",
            args.concurrency,
            args.probe_seconds,
            probe.failed.load(Ordering::Relaxed)
        );
        Some(peak)
    };
    let rate = peak.map_or(args.rate, |p| (p / 2.0).max(1.0));

    // Memory is sampled every second from here on.
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
    let sampler = {
        let (stop, samples, pid) = (Arc::clone(&stop), Arc::clone(&samples), args.pid);
        tokio::spawn(async move {
            let begin = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                if let Some((rss, hwm)) = memory(pid) {
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push((begin.elapsed().as_secs_f64(), rss, hwm));
                }
            }
        })
    };

    println!(
        "holding {rate:.0} req/s for {} s, a reload every {} s, bad input every 250 ms",
        args.seconds, args.reload_every
    );
    let soak_started = Instant::now();
    let tally = Arc::new(Tally::default());
    let reloads = tokio::spawn(reload_loop(
        connect(args.addr).await?,
        files,
        calls[0].clone(),
        version.clone(),
        Duration::from_secs(args.reload_every),
        Arc::clone(&stop),
        started,
    ));
    let bad = tokio::spawn(bad_input_loop(
        connect(args.addr).await?,
        (args.max_text_bytes, args.max_batch, args.max_message_bytes),
        Duration::from_millis(250),
        Arc::clone(&stop),
        started,
    ));
    let stopper = {
        let stop = Arc::clone(&stop);
        let seconds = args.seconds;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    // Enough paced callers that one slow answer does not hold the rate back.
    let workers = args.concurrency.max((rate / 50.0).ceil() as usize).min(256);
    hold_rate(&client, &calls, &version, rate, workers, &stop, &tally, started).await;
    let soak_time = soak_started.elapsed().as_secs_f64();
    let _ = stopper.await;
    let reloads = reloads.await?;
    let bad = bad.await?;
    let _ = sampler.await;
    let end_memory = memory(args.pid);
    let page = scrape(args.metrics_addr).unwrap_or_default();

    let drain = drain(&args, &seed, 8).await?;

    // Summary.
    let sent = tally.sent.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed) + probe.failed.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *tally.latencies_us.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    println!();
    println!("== soak summary ({soak_time:.0} s of load) ==");
    println!(
        "good requests: sent {sent}, ok {ok}, failed {failed} (incl. {} in the peak probe); {:.0} req/s achieved of {rate:.0} targeted{}",
        probe.failed.load(Ordering::Relaxed),
        ok as f64 / soak_time,
        peak.map_or(String::new(), |p| format!(" (peak {p:.0})")),
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    for failure in tally.failures.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  failed: {failure}");
    }
    println!(
        "reloads: good {} ok / {} failed; corrupt {} refused (FAILED_PRECONDITION) / {} accepted / {} other code; \
         old model answered after every refusal: {}",
        reloads.good_ok,
        reloads.good_failed,
        reloads.corrupt_refused,
        reloads.corrupt_accepted,
        reloads.corrupt_wrong_code,
        if reloads.served_after_refusal_failed == 0 {
            "yes".to_string()
        } else {
            format!("NO ({})", reloads.served_after_refusal_failed)
        }
    );
    for problem in &reloads.problems {
        println!("  reload problem: {problem}");
    }
    println!("bad inputs (expected code: codes received):");
    for (name, (expected, codes)) in &bad.by_kind {
        let received: Vec<String> = codes.iter().map(|(code, n)| format!("{code} x{n}")).collect();
        println!("  {name:<38} {expected:?}: {}", received.join(", "));
    }
    for problem in &bad.unexpected {
        println!("  bad input problem: {problem}");
    }

    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Warm-up: the first quarter of the soak, at most 15 s, covers the first swaps.
    let warm_up = (args.seconds as f64 / 4.0).min(15.0);
    let start_rss = samples.iter().find(|s| s.0 >= warm_up).or(samples.first()).map(|s| s.1);
    let end_rss = end_memory.map(|m| m.0).or(samples.last().map(|s| s.1));
    let max_rss = samples.iter().map(|s| s.1).max();
    let hwm = end_memory.map(|m| m.1);
    let timeline: Vec<String> = samples
        .iter()
        .step_by(((samples.len() / 20).max(1)).max(1))
        .map(|s| format!("{:.0}s:{:.1}", s.0, mib(s.1)))
        .collect();
    let rss_flat = match (start_rss, end_rss) {
        (Some(start), Some(end)) => end <= start + args.rss_tolerance_mib * 1024,
        _ => false,
    };
    println!(
        "server RSS: start {:.1} MiB (after {warm_up:.0} s), end {:.1} MiB, max {:.1} MiB, VmHWM {:.1} MiB; flat = end <= start + {} MiB: {}",
        start_rss.map_or(f64::NAN, mib),
        end_rss.map_or(f64::NAN, mib),
        max_rss.map_or(f64::NAN, mib),
        hwm.map_or(f64::NAN, mib),
        args.rss_tolerance_mib,
        if rss_flat { "yes" } else { "NO" }
    );
    println!("RSS timeline (s:MiB): {}", timeline.join(" "));

    let reload_series = |code: &str| {
        metric(
            &page,
            &format!("topics_grpc_requests_total{{method=\"topics.v1.TopicClassifier/ReloadModel\",code=\"{code}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let internal: f64 = page
        .lines()
        .filter(|l| {
            l.starts_with("topics_grpc_requests_total")
                && (l.contains("code=\"INTERNAL\"") || l.contains("code=\"UNKNOWN\"") || l.contains("code=\"500\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, n| sum + n);
    let metrics_agree = reload_series("OK") == reloads.good_ok as f64
        && reload_series("FAILED_PRECONDITION") == reloads.corrupt_refused as f64
        && internal == 0.0;
    println!(
        "server metrics: ReloadModel OK {}, FAILED_PRECONDITION {}, INTERNAL/UNKNOWN calls {internal}: {}",
        reload_series("OK"),
        reload_series("FAILED_PRECONDITION"),
        if metrics_agree { "agree" } else { "DISAGREE" }
    );
    println!(
        "drain: {} large batches in flight (server counted {}), SIGTERM sent, {} answered in full, {} of them after the signal",
        drain.calls, drain.in_flight_seen, drain.ok, drain.finished_after_sigterm
    );
    for problem in &drain.problems {
        println!("  drain problem: {problem}");
    }

    let checks = [
        ("zero failed good requests", failed == 0 && ok > 0),
        ("every good reload ok", reloads.good_failed == 0 && reloads.good_ok > 0),
        (
            "every corrupt reload refused with FAILED_PRECONDITION, old model serving",
            reloads.corrupt_accepted == 0
                && reloads.corrupt_wrong_code == 0
                && reloads.served_after_refusal_failed == 0
                && reloads.corrupt_refused > 0
                && reloads.problems.is_empty(),
        ),
        ("every bad input got its code", bad.mismatches() == 0 && bad.unexpected.is_empty() && !bad.by_kind.is_empty()),
        ("RSS flat", rss_flat),
        ("server metrics agree, no INTERNAL", metrics_agree),
        (
            "in-flight calls drained on SIGTERM",
            drain.ok == drain.calls && drain.finished_after_sigterm > 0 && drain.problems.is_empty(),
        ),
    ];
    let mut passed = true;
    for (name, ok) in checks {
        println!("check: {name}: {}", if ok { "pass" } else { "FAIL" });
        passed &= ok;
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
