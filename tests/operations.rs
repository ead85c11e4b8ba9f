//! What operators rely on, against the real binary: hot model reload, overload and
//! deadlines, connection age, metrics and request logs, TLS and API keys.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestServer, grpc_frame, raw_grpc_call, repo_path, seed_article};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use topics::proto::topic_classifier_client::TopicClassifierClient;
use topics::proto::{ClassifyBatchRequest, ClassifyRequest, GetModelInfoRequest, ReloadModelRequest};

fn request(text: impl Into<String>) -> ClassifyRequest {
    ClassifyRequest { text: text.into(), ..Default::default() }
}

/// Trains a small model on the seed paragraphs only, with its own version, into `dir`.
fn small_model(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("{version}.model"));
    let status = Command::new(env!("CARGO_BIN_EXE_topics"))
        .args(["train", "--folds", "0", "--min-df", "1", "--classifier", "logistic", "--alpha", "1"])
        .args(["--model-version", version, "--corpus"])
        .arg(repo_path("models/corpus/seed.jsonl"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run topics train");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    out
}

async fn version(client: &mut TopicClassifierClient<Channel>) -> String {
    client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner().version
}

#[tokio::test]
async fn models_reload_by_call_and_by_sighup_without_dropping_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let served_path = dir.path().join("served.model");
    std::fs::copy(repo_path("models/topics.model"), &served_path).unwrap();
    let small = small_model(dir.path(), "small-v2");
    let corrupt = dir.path().join("corrupt.model");
    let mut bytes = std::fs::read(&small).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();

    let server = TestServer::launch(&served_path, &[], "info");
    let mut client = server.client().await;
    let original = version(&mut client).await;

    // Classify without pause while the model is swapped back and forth.
    let mut load = server.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_load = std::sync::Arc::clone(&stop);
    let traffic = tokio::spawn(async move {
        let mut answered = std::collections::BTreeSet::new();
        while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
            let response = load.classify(request(seed_article())).await.expect("no request fails during reloads");
            answered.insert(response.into_inner().model_version);
        }
        answered
    });

    let refused = client.reload_model(ReloadModelRequest { path: corrupt.display().to_string() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("checksum"), "{}", refused.message());
    assert_eq!(version(&mut client).await, original, "a bad file leaves the old model serving");

    let info = client.reload_model(ReloadModelRequest { path: small.display().to_string() }).await.unwrap();
    assert_eq!(info.into_inner().version, "small-v2");
    let answer = client.classify(request(seed_article())).await.unwrap().into_inner();
    assert_eq!(answer.model_version, "small-v2");

    // Empty path: the path now served, i.e. the small model again.
    let info = client.reload_model(ReloadModelRequest::default()).await.unwrap().into_inner();
    assert_eq!(info.version, "small-v2");

    // SIGHUP reloads the path now served; overwrite it with the original first.
    std::fs::copy(&served_path, &small).unwrap();
    server.signal("HUP");
    server.wait_for_log("model reloaded", Duration::from_secs(20)).await;
    let waiting = std::time::Instant::now();
    while version(&mut client).await != original {
        assert!(waiting.elapsed() < Duration::from_secs(20), "SIGHUP did not swap the model:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A corrupt file behind SIGHUP is logged and refused.
    std::fs::copy(&corrupt, &small).unwrap();
    server.signal("HUP");
    server.wait_for_log("model reload refused", Duration::from_secs(20)).await;
    assert_eq!(version(&mut client).await, original);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let versions = traffic.await.unwrap();
    assert!(versions.contains(&original), "{versions:?}");
}

#[tokio::test]
async fn beyond_the_concurrency_limit_calls_are_refused_at_once() {
    let server = TestServer::start(&["--max-concurrent-requests", "1"]);
    let mut client = server.client().await;
    // An open stream holds the only slot for as long as it lasts.
    let (sender, outbound) = tokio::sync::mpsc::channel::<ClassifyRequest>(1);
    let mut stream_client = server.client().await;
    let mut answers = stream_client
        .classify_stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    sender.send(request("first")).await.unwrap();
    answers.message().await.unwrap().expect("the stream answers");

    let started = std::time::Instant::now();
    let refused = client.classify(request(seed_article())).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("limit of 1 concurrent"), "{}", refused.message());
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once, not queued");
    // Health is not a classification call: probes pass while the server is full.
    let mut health = HealthClient::new(server.channel().await);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    drop(sender);
    assert!(answers.message().await.unwrap().is_none());
    // The slot is free again once the stream is over.
    let waiting = std::time::Instant::now();
    loop {
        match client.classify(request(seed_article())).await {
            Ok(answer) => break assert_eq!(answer.into_inner().label, "security"),
            Err(status) if status.code() == Code::ResourceExhausted && waiting.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(status) => panic!("{status}"),
        }
    }
}

/// A batch that takes a debug build far longer than the deadlines below.
fn slow_batch() -> ClassifyBatchRequest {
    let text = seed_article().repeat(6);
    ClassifyBatchRequest { documents: (0..256).map(|_| request(text.clone())).collect() }
}

#[tokio::test]
async fn deadlines_stop_the_work_and_say_deadline_exceeded() {
    let server = TestServer::start_with_log(&["--request-timeout", "100ms"], "info,topics=debug");
    let mut client = server.client().await;

    // The server's own timeout, counted from the call's arrival.
    let status = client.classify_batch(slow_batch()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    server.wait_for_log("batch abandoned", Duration::from_secs(10)).await;

    // The client's deadline, shorter than the server's, sent over a bare HTTP/2 stream
    // (tonic's own client would end the call on its side first). The transport also
    // times the call until the handler answers, and says CANCELLED when it gets there
    // first; either way the batch must stop.
    let count = |needle: &str| server.log().matches(needle).count();
    let (started_before, abandoned_before) = (count("classifying batch"), count("batch abandoned"));
    let answer = raw_grpc_call(
        server.addr,
        "/topics.v1.TopicClassifier/ClassifyBatch",
        &[("grpc-timeout", "50m")],
        grpc_frame(&slow_batch()),
        true,
    )
    .await;
    assert!(matches!(answer.status.as_deref(), Some("4" | "1")), "DEADLINE_EXCEEDED or CANCELLED: {answer:?}");
    // Cut before the handler ran, nothing started; otherwise what started was abandoned.
    let waiting = std::time::Instant::now();
    while count("classifying batch") - started_before != count("batch abandoned") - abandoned_before {
        assert!(waiting.elapsed() < Duration::from_secs(10), "the batch went on after the deadline:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A stream is bounded by the client's deadline alone: after answering what it was
    // sent, it ends with DEADLINE_EXCEEDED when the deadline passes.
    let answer = raw_grpc_call(
        server.addr,
        "/topics.v1.TopicClassifier/ClassifyStream",
        &[("grpc-timeout", "300m")],
        grpc_frame(&request("The ministers met in Rabat.")),
        false,
    )
    .await;
    assert_eq!(answer.status.as_deref(), Some("4"), "DEADLINE_EXCEEDED: {answer:?}");
    assert!(answer.body.len() > 5, "the message sent before the deadline was answered: {answer:?}");

    // Short calls still fit.
    assert_eq!(client.classify(request(seed_article())).await.unwrap().into_inner().label, "security");
}

#[tokio::test]
async fn old_connections_are_closed_so_clients_rebalance() {
    let server = TestServer::start(&["--max-connection-age", "1s"]);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (_client, connection) = h2::client::handshake(tcp).await.unwrap();
    let opened = std::time::Instant::now();
    // The connection future ends when the server sends GOAWAY and closes it.
    let closed = tokio::time::timeout(Duration::from_secs(15), connection).await;
    assert!(closed.is_ok(), "the connection was still open after 15 s:\n{}", server.log());
    eprintln!("closed after {:?}: {closed:?}", opened.elapsed());

    // A real client reconnects transparently.
    let mut client = server.client().await;
    for _ in 0..2 {
        assert_eq!(client.classify(request(seed_article())).await.unwrap().into_inner().label, "security");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// The value of the sample `name{labels}` in a Prometheus text page, or 0.
fn sample(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_documents_by_label() {
    let server = TestServer::launch(
        &repo_path("models/topics.model"),
        &["--metrics-addr", "127.0.0.1:0", "--log-format", "json"],
        "info,topics=debug",
    );
    let mut client = server.client().await;
    let mut call = tonic::Request::new(request(seed_article()));
    call.metadata_mut().insert("x-request-id", "trace-me-42".parse().unwrap());
    let answer = client.classify(call).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("trace-me-42"));
    let generated = client.classify(request("Ministers met in Cairo.")).await.unwrap();
    assert!(generated.metadata().get("x-request-id").is_some(), "an id is made up when none is sent");
    assert_eq!(client.classify(request(" ")).await.unwrap_err().code(), Code::InvalidArgument);

    let page = http_get(server.metrics_addr(), "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let method = "method=\"topics.v1.TopicClassifier/Classify\"";
    assert_eq!(sample(&page, &format!("topics_grpc_requests_total{{{method},code=\"OK\"}}")), 2.0, "{page}");
    assert_eq!(sample(&page, &format!("topics_grpc_requests_total{{{method},code=\"INVALID_ARGUMENT\"}}")), 1.0);
    assert!(sample(&page, "topics_documents_total{label=\"security\"}") >= 1.0, "{page}");
    assert_eq!(sample(&page, "topics_grpc_requests_in_flight"), 0.0);
    assert!(page.contains("topics_grpc_request_duration_seconds_bucket"), "{page}");
    let info = client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(sample(&page, &format!("topics_model_info{{version=\"{}\"}}", info.version)), 1.0, "{page}");
    assert!(http_get(server.metrics_addr(), "/nothing").await.starts_with("HTTP/1.1 404"));

    // JSON log lines carry the request id of the call they belong to. The log arrives
    // through a pipe read by another thread: on a busy machine it can lag the answers.
    server.wait_for_log("trace-me-42", Duration::from_secs(10)).await;
    let log = server.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "classified" && l["span"]["request_id"] == "trace-me-42");
    assert!(line.is_some(), "no JSON log line of the call with its request id:\n{log}");
}

struct Tls {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    keys: PathBuf,
    ca: Certificate,
}

const API_KEY: &str = "test-key-a1b2c3d4e5f6";

fn tls_and_keys() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let keys = dir.path().join("api-keys");
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    std::fs::write(&keys, format!("# test keys\n{API_KEY}\nanother-key-0123456789\n")).unwrap();
    Tls { ca: Certificate::from_pem(issued.cert.pem()), _dir: dir, cert, key, keys }
}

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test]
async fn tls_and_api_keys_let_in_only_keyed_calls_but_keep_health_open() {
    let tls = tls_and_keys();
    let server = TestServer::start(&[
        "--tls-cert",
        tls.cert.to_str().unwrap(),
        "--tls-key",
        tls.key.to_str().unwrap(),
        "--api-key-file",
        tls.keys.to_str().unwrap(),
    ]);
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(tls.ca.clone()).domain_name("localhost"))
        .unwrap()
        .connect()
        .await
        .expect("TLS connection");
    let mut client = TopicClassifierClient::new(channel.clone());

    let answer = client.classify(with_key(request(seed_article()), API_KEY)).await.unwrap().into_inner();
    assert_eq!(answer.label, "security");
    let missing = client.classify(request(seed_article())).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = client.classify(with_key(request(seed_article()), "wrong-key-0123456789")).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let reload = client.reload_model(ReloadModelRequest::default()).await.unwrap_err();
    assert_eq!(reload.code(), Code::Unauthenticated, "reloading always needs a key");
    let reload = client.reload_model(with_key(ReloadModelRequest::default(), API_KEY)).await.unwrap();
    assert_eq!(reload.into_inner().version, answer.model_version);

    let mut health = HealthClient::new(channel);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status(), ServingStatus::Serving, "probes need no key");

    // Plaintext gRPC to a TLS port fails, at the handshake or at the call.
    let endpoint = Channel::from_shared(server.endpoint()).unwrap().connect_timeout(Duration::from_secs(10));
    if let Ok(plaintext) = tokio::time::timeout(Duration::from_secs(20), endpoint.connect()).await.expect("in time") {
        let mut plaintext = TopicClassifierClient::new(plaintext);
        let call = plaintext.classify(with_key(request("text"), API_KEY));
        let status = tokio::time::timeout(Duration::from_secs(20), call).await.expect("in time");
        assert!(status.is_err(), "a plaintext call went through");
    }
    // So does plaintext HTTP/1.1, the keyed route and the open probe alike.
    for request_line in ["GET /healthz HTTP/1.1", "POST /v1/classify HTTP/1.1"] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "{request_line}\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await.expect("in time");
        assert!(
            !answer.starts_with(b"HTTP/1.1"),
            "{request_line} over plaintext got {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let answer = client.classify(with_key(request("Aid reached the camp."), API_KEY)).await;
    assert!(answer.is_ok(), "TLS calls are still served after plaintext attempts: {answer:?}");

    assert!(!server.log().contains(API_KEY), "the key reached the log");
}

/// A stand-in OpenTelemetry collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(Default::default()))
    }
}

// Multi-threaded: the collector must keep answering while this test waits for the server
// to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_collector_inside_the_callers_trace() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );

    let endpoint = format!("http://{collector_addr}");
    let server = TestServer::launch(&repo_path("models/topics.model"), &["--otlp-endpoint", &endpoint], "info");
    let mut client = server.client().await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent_id = "b7ad6b7169203331";
    let mut call = tonic::Request::new(request(seed_article()));
    call.metadata_mut().insert("traceparent", format!("00-{trace_id}-{parent_id}-01").parse().unwrap());
    client.classify(call).await.unwrap();

    // Shutdown sends the last batch.
    server.signal("TERM");
    let (status, log) = server.wait_for_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = stop_collector.send(());
    serving.await.unwrap().unwrap();

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let spans = collector.0.lock().unwrap().clone();
    let joined = spans.iter().find(|s| s.name == "request" && hex(&s.trace_id) == trace_id);
    let joined = joined.unwrap_or_else(|| panic!("no request span in the caller's trace among {spans:?}\n{log}"));
    assert_eq!(hex(&joined.parent_span_id), parent_id);
}

/// Runs `topics serve` expecting it to refuse to start; returns its standard error.
fn refused_start(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_topics"))
        .args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(model)
        .args(extra)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the topics binary");
    let started = std::time::Instant::now();
    while child.try_wait().expect("poll the server").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started instead of refusing {model:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("the server's output");
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn expected_labels_and_checksums_guard_every_load() {
    let dir = tempfile::tempdir().unwrap();
    let three_labels = small_model(dir.path(), "three-labels");
    let flipped = dir.path().join("flipped.model");
    let mut bytes = std::fs::read(repo_path("models/topics.model")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    let four = "[diplomacy, humanitarian, none, security]";
    let three = "[diplomacy, humanitarian, security]";

    // At start-up, from the flag or from the environment.
    let expect = ["--expect-labels", "diplomacy,security,humanitarian,none"];
    let stderr = refused_start(&three_labels, &expect, &[]);
    assert!(stderr.contains(four) && stderr.contains(three) && stderr.contains("missing: none"), "{stderr}");
    let stderr = refused_start(&three_labels, &[], &[("TOPICS_EXPECT_LABELS", "none,diplomacy,security,humanitarian")]);
    assert!(stderr.contains(four) && stderr.contains(three), "{stderr}");
    let stderr = refused_start(&flipped, &expect, &[]);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // On reload: each refusal says why, and the old model keeps serving.
    let server = TestServer::start(&expect);
    let mut client = server.client().await;
    let original = version(&mut client).await;
    let reload = |path: &Path| ReloadModelRequest { path: path.display().to_string() };

    let refused = client.reload_model(reload(&three_labels)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let message = refused.message();
    assert!(message.contains(four) && message.contains(three) && message.contains("keeps serving"), "{message}");
    assert_eq!(version(&mut client).await, original);

    let refused = client.reload_model(reload(&flipped)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("checksum mismatch"), "{}", refused.message());
    let answer = client.classify(request(seed_article())).await.unwrap().into_inner();
    assert_eq!((answer.label.as_str(), answer.model_version), ("security", original.clone()));

    let info = client.reload_model(ReloadModelRequest::default()).await.unwrap().into_inner();
    assert_eq!(info.version, original, "the served file, with the expected labels, reloads");
}

#[tokio::test]
async fn neither_keys_nor_texts_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api-keys");
    let key = "log-secret-key-7f3a9c2e81d4";
    let wrong_key = "log-wrong-key-b6e0d5a3f912";
    std::fs::write(&keys, format!("{key}\n")).unwrap();
    let text = "Zanzibarquokka envoys met over the Qwertyvale ceasefire.";
    let arabic = "وفد زنجبارقوقا يلتقي في قويرتيفال";
    let server = TestServer::start(&["--api-key-file", keys.to_str().unwrap(), "--max-text-bytes", "200"]);
    let mut client = server.client().await;

    client.classify(with_key(request(text), key)).await.expect("a keyed call");
    let batch = ClassifyBatchRequest { documents: vec![request(text), request(arabic)] };
    client.classify_batch(with_key(batch, key)).await.expect("a keyed batch");
    let refused = client.classify(with_key(request(text), wrong_key)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let long = format!("{text} {}", arabic.repeat(10));
    let refused = client.classify(with_key(request(long), key)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let frame = grpc_frame(&request(text));
    let bearer = format!("Bearer {wrong_key}");
    let answer =
        raw_grpc_call(server.addr, "/topics.v1.TopicClassifier/Classify", &[("authorization", &bearer)], frame, true)
            .await;
    assert_eq!(answer.status.as_deref(), Some("16"), "{answer:?}");

    // The log is being captured: the start-up line is there.
    let log = server.log();
    assert!(log.contains("serving topics.v1.TopicClassifier"), "{log}");
    for secret in [key, wrong_key, "Zanzibarquokka", "Qwertyvale", "زنجبارقوقا"] {
        assert!(!log.contains(secret), "{secret:?} reached the info-level log:\n{log}");
    }
}
