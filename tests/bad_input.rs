//! Bad input against the real server: every malformed, empty, odd or oversized request
//! gets a defined gRPC status with a message that says what is wrong (or a normal answer
//! when the text can honestly be classified), while good calls keep being answered beside
//! it and the server never panics. Each call is bounded in time.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{RawAnswer, TestServer, grpc_frame, raw_grpc_call};
use prost::Message as _;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Status};
use topics::proto::topic_classifier_client::TopicClassifierClient;
use topics::proto::{ClassifyBatchRequest, ClassifyOptions, ClassifyRequest, ClassifyResponse};

/// The text limit the server runs with here: the default, 1 MiB.
const TEXT_LIMIT: usize = 1 << 20;
/// The message limit: room for a 2 MiB text to reach our own check, small enough that an
/// oversized message is cheap to send.
const MESSAGE_LIMIT: usize = 4 << 20;

const CLASSIFY: &str = "/topics.v1.TopicClassifier/Classify";

fn request(text: impl Into<String>) -> ClassifyRequest {
    ClassifyRequest { text: text.into(), ..Default::default() }
}

/// Every call here ends within this, or the test fails instead of hanging.
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), call).await.unwrap_or_else(|_| panic!("{what}: no answer in time"))
}

fn assert_scores(what: &str, scores: &[topics::proto::LabelScore], complete: bool) {
    assert!(!scores.is_empty(), "{what}: no scores");
    for s in scores {
        assert!(s.score.is_finite() && (0.0..=1.0).contains(&s.score), "{what}: {} scored {}", s.label, s.score);
    }
    if complete {
        let sum: f32 = scores.iter().map(|s| s.score).sum();
        assert!((sum - 1.0).abs() < 1e-3, "{what}: scores sum to {sum}");
    }
}

/// Every score in the answer, segments included, is a probability, and they add up.
fn assert_sane(what: &str, response: &ClassifyResponse) {
    assert_scores(what, &response.scores, true);
    assert_eq!(response.scores.len(), 4, "{what}: every label scored");
    assert_eq!(response.label, response.scores[0].label, "{what}");
    for segment in &response.segments {
        assert_scores(what, &segment.scores, true);
        assert!(segment.start <= segment.end, "{what}: {segment:?}");
    }
    assert!(response.explanation.iter().all(|t| t.weight.is_finite()), "{what}: {:?}", response.explanation);
}

fn with_everything(text: impl Into<String>) -> ClassifyRequest {
    ClassifyRequest {
        text: text.into(),
        options: Some(ClassifyOptions { segments: true, explain: 5, top_k: 0 }),
        ..Default::default()
    }
}

/// Asserts `outcome` is a refusal with `code` whose message contains `needle`.
fn assert_refused<T: std::fmt::Debug>(what: &str, outcome: Result<T, Status>, code: Code, needle: &str) {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(status.message().contains(needle), "{what}: {:?} lacks {needle:?}", status.message());
}

/// A good call, right after a bad one: the server still answers properly.
async fn still_serving(client: &mut TopicClassifierClient<Channel>, after: &str) {
    let answer = bounded(after, client.classify(request("Aid convoys reached the displaced families in the camp.")))
        .await
        .unwrap_or_else(|status| panic!("after {after}: {status:?}"))
        .into_inner();
    assert_eq!(answer.label, "humanitarian", "after {after}");
    assert_sane(after, &answer);
}

/// Good calls on their own connection for as long as the test runs; every one must succeed.
struct Background {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    async fn start(server: &TestServer) -> Self {
        let mut client = server.client().await;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&answered));
        let task = tokio::spawn(async move {
            while !stop_flag.load(Ordering::Relaxed) {
                let answer = bounded("background call", client.classify(request("Troops shelled the town overnight.")))
                    .await
                    .expect("a good call beside bad ones");
                assert_eq!(answer.into_inner().label, "security");
                count.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { stop, answered, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        bounded("background calls", self.task).await.expect("background calls all succeeded");
        assert!(self.answered.load(Ordering::Relaxed) > 0, "no background call was answered");
    }
}

fn server() -> TestServer {
    TestServer::start(&["--max-message-bytes", &MESSAGE_LIMIT.to_string()])
}

#[tokio::test]
async fn texts_that_show_nothing_are_refused_and_odd_texts_are_classified() {
    let server = server();
    let background = Background::start(&server).await;
    let mut client = server.client().await;

    let blank = [
        ("empty", String::new()),
        ("ASCII white space", " \t\r\n ".to_string()),
        ("no-break and ideographic spaces", "\u{00A0}\u{3000}\u{2003} \u{00A0}".to_string()),
        ("zero-width characters", "\u{200B}\u{200C}\u{200D}\u{FEFF}".to_string()),
        ("bidi controls", "\u{202E}\u{2066}\u{2067}\u{2068}\u{2069}\u{200F}".to_string()),
        ("spaces and controls", " \u{200B}\u{00A0}\u{202E}\n\u{FEFF}".repeat(1000)),
    ];
    for (what, text) in blank {
        let outcome = bounded(what, client.classify(request(text.clone()))).await;
        assert_refused(what, outcome, Code::InvalidArgument, "text is empty or only white space");
        still_serving(&mut client, what).await;
    }

    // Texts a reader can see get an answer, even when no word in them is known.
    let classifiable = [
        ("one character", "a"),
        ("one Arabic letter", "ب"),
        ("only emoji", "😀🔥🇸🇾👍🏽"),
        ("only Latin digits", "0123456789 42"),
        ("only Arabic-Indic digits", "٠١٢٣٤٥٦٧٨٩ ۱۲۳"),
        ("only harakat", "\u{064E}\u{064F}\u{0650}\u{0651}\u{0652}\u{064B}"),
        ("only NUL bytes", "\0\0\0"),
        ("NUL bytes inside words", "troops\0shelled\0the\0town"),
        ("bidi controls around words", "\u{202E}قصف\u{202C} \u{2066}the town\u{2069}\u{200F}"),
        (
            "Arabic, Latin, Hebrew and CJK with joiners",
            "وصلت\u{200D}قافلة aid\u{200C}convoy שלום\u{200D}עולם 难民\u{200B}营 👩\u{200D}👩\u{200D}👧",
        ),
        ("a lone combining mark", "\u{0301}"),
        ("private use and noncharacters", "\u{E000}\u{FFFF}\u{10FFFF}"),
    ];
    for (what, text) in classifiable {
        let answer = bounded(what, client.classify(with_everything(text))).await;
        let answer = answer.unwrap_or_else(|status| panic!("{what}: {status:?}")).into_inner();
        assert_sane(what, &answer);
        still_serving(&mut client, what).await;
    }

    background.finish().await;
}

#[tokio::test]
async fn sizes_at_and_past_the_limits_get_the_limit_in_the_message() {
    let server = server();
    let background = Background::start(&server).await;
    let mut client = server.client().await;

    // Exactly the limit, made of multi-byte letters and a filler: accepted.
    let mut at_limit = "قافلة مساعدات وصلت ".repeat(TEXT_LIMIT / 40);
    at_limit.push_str(&"x".repeat(TEXT_LIMIT - at_limit.len()));
    assert_eq!(at_limit.len(), TEXT_LIMIT);
    let answer = bounded("at the limit", client.classify(with_everything(at_limit.clone()))).await;
    assert_sane("at the limit", &answer.expect("exactly the limit is accepted").into_inner());

    let over = format!("{at_limit}y");
    let outcome = bounded("one byte over", client.classify(request(over))).await;
    assert_refused(
        "one byte over",
        outcome,
        Code::InvalidArgument,
        &format!("text is {} bytes, over the limit of {TEXT_LIMIT} bytes", TEXT_LIMIT + 1),
    );
    still_serving(&mut client, "one byte over").await;

    let two_mib = "word ".repeat((2 << 20) / 5);
    let outcome = bounded("2 MiB text", client.classify(request(two_mib))).await;
    assert_refused("2 MiB text", outcome, Code::InvalidArgument, &format!("over the limit of {TEXT_LIMIT} bytes"));
    still_serving(&mut client, "2 MiB text").await;

    // Past the transport's message limit: refused from the length prefix, before decoding.
    let huge = "word ".repeat((MESSAGE_LIMIT + 1024) / 5);
    let outcome = bounded("message over the transport limit", client.classify(request(huge))).await;
    assert_refused(
        "message over the transport limit",
        outcome,
        Code::ResourceExhausted,
        &format!("limit of {MESSAGE_LIMIT} bytes"),
    );
    still_serving(&mut client, "message over the transport limit").await;

    let documents: Vec<ClassifyRequest> = (0..10_000).map(|i| request(format!("document {i}"))).collect();
    let outcome = bounded("10,000 documents", client.classify_batch(ClassifyBatchRequest { documents })).await;
    assert_refused("10,000 documents", outcome, Code::InvalidArgument, "10000 documents, over the limit of 256");
    still_serving(&mut client, "10,000 documents").await;

    // A batch at its limit of odd texts is answered in full, every score finite.
    let odd = ["a", "😀", "٠١٢", "\u{064E}\u{0650}", "\0", "שלום 难民 aid"];
    let documents: Vec<ClassifyRequest> = (0..256).map(|i| with_everything(odd[i % odd.len()])).collect();
    let answer = bounded("a full batch", client.classify_batch(ClassifyBatchRequest { documents })).await;
    let results = answer.expect("a batch at the limit").into_inner().results;
    assert_eq!(results.len(), 256);
    for (i, result) in results.iter().enumerate() {
        assert_sane(&format!("batch document {i}"), result);
    }

    background.finish().await;
}

/// A hand-made ClassifyRequest body whose `text` (field 1) holds `bytes` as they are.
fn raw_text_field(bytes: &[u8]) -> Vec<u8> {
    let mut message = vec![0x0A, bytes.len() as u8];
    message.extend_from_slice(bytes);
    message
}

/// What a hand-made call is, its body and extra headers, and the status and message part it must get.
type RawCase<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, Code, &'a str);

/// What a JSON call is, its content-type and body, and the HTTP status, code and message part it must get.
type JsonCase<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str, String);

fn frame(flag: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A `grpc-message` header's text: the spec percent-encodes it.
fn percent_decoded(header: &str) -> String {
    let bytes = header.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_raw(what: &str, answer: &RawAnswer, code: Code, needle: &str) {
    let status = answer.status.as_deref().unwrap_or_else(|| panic!("{what}: no grpc-status: {answer:?}"));
    assert_eq!(Code::from_bytes(status.as_bytes()), code, "{what}: {answer:?}");
    let message = percent_decoded(answer.message.as_deref().unwrap_or_default());
    assert!(message.contains(needle), "{what}: {message:?} lacks {needle:?}");
}

#[tokio::test]
async fn malformed_frames_get_defined_statuses() {
    let server = server();
    let background = Background::start(&server).await;
    let mut client = server.client().await;
    let addr = server.addr;

    // The frame helper itself is sound: a well-formed hand-made call is answered.
    let good =
        bounded("well-formed raw call", raw_grpc_call(addr, CLASSIFY, &[], grpc_frame(&request("aid")), true)).await;
    assert_eq!(good.status.as_deref(), Some("0"), "{good:?}");
    assert!(ClassifyResponse::decode(&good.body[5..]).is_ok());

    let over_limit = format!("limit of {MESSAGE_LIMIT} bytes");
    let invalid_utf8 = raw_text_field(&[b'a', 0xC3, 0x28, 0xFF, b'z']);
    let cases: Vec<RawCase> = vec![
        (
            "invalid UTF-8 in the text field",
            frame(0, invalid_utf8.len() as u32, &invalid_utf8),
            vec![],
            Code::InvalidArgument,
            "not a valid topics.v1 request",
        ),
        (
            "bytes that are not protobuf",
            frame(0, 6, &[0xFF; 6]),
            vec![],
            Code::InvalidArgument,
            "not a valid topics.v1 request",
        ),
        (
            "a length prefix past the end of the body",
            frame(0, 1000, &raw_text_field(b"short")),
            vec![],
            Code::InvalidArgument,
            "ended inside a message",
        ),
        (
            "a length prefix far past every limit",
            frame(0, u32::MAX, &raw_text_field(b"short")),
            vec![],
            Code::ResourceExhausted,
            &over_limit,
        ),
        (
            "a compressed message in an encoding we do not accept",
            frame(1, 5, b"\x1f\x8b\x08\x00\x00"),
            vec![("grpc-encoding", "snappy")],
            Code::Unimplemented,
            "snappy",
        ),
        (
            "the compressed flag without an encoding",
            frame(1, 7, &raw_text_field(b"aid\0\0")),
            vec![],
            Code::Internal,
            "compressed-flag but no grpc-encoding",
        ),
        ("a body shorter than a frame header", vec![0, 0, 0], vec![], Code::InvalidArgument, "ended inside a message"),
        ("no message at all", vec![], vec![], Code::Unimplemented, "exactly one request message"),
    ];
    for (what, body, headers, code, needle) in cases {
        let answer = bounded(what, raw_grpc_call(addr, CLASSIFY, &headers, body, true)).await;
        assert_raw(what, &answer, code, needle);
        still_serving(&mut client, what).await;
    }

    // On a stream, a broken frame after a good one ends the stream with the same status,
    // after the good one's answer.
    let mut body = grpc_frame(&request("Aid reached the camp."));
    body.extend_from_slice(&frame(0, 1000, &raw_text_field(b"short")));
    let what = "a broken frame on a stream";
    let answer = bounded(what, raw_grpc_call(addr, "/topics.v1.TopicClassifier/ClassifyStream", &[], body, true)).await;
    assert_raw(what, &answer, Code::InvalidArgument, "ended inside a message");
    let first = ClassifyResponse::decode(answer.body.get(5..).unwrap_or_default()).expect("the first answer");
    assert_sane(what, &first);
    still_serving(&mut client, what).await;

    assert!(!server.log().contains("panicked"), "{}", server.log());
    background.finish().await;
}

/// One HTTP/1.1 POST of `body` to `path` on a fresh connection: the status and JSON answer.
async fn post(addr: std::net::SocketAddr, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    use http_body_util::{BodyExt as _, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::post(path).header("host", addr.to_string());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = sender.send_request(request.body(Full::new(bytes::Bytes::from(body))).expect("request"));
    let response = bounded(path, response).await.expect("an HTTP answer");
    let status = response.status().as_u16();
    let body = bounded(path, response.into_body().collect()).await.expect("the body").to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

#[tokio::test]
async fn the_json_api_maps_bad_input_to_the_same_refusals() {
    // Small limits: a body far over the limit is refused from its length before it is
    // read, and the connection closed; a client still writing a large body would see a
    // broken pipe instead of the answer.
    let (text_limit, body_limit) = (1000, 70_000);
    let server = TestServer::start(&[
        "--max-text-bytes",
        &text_limit.to_string(),
        "--max-message-bytes",
        &body_limit.to_string(),
    ]);
    let background = Background::start(&server).await;
    let addr = server.addr;
    let json = Some("application/json");
    let body = |text: &str| serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();

    let cases: Vec<JsonCase> = vec![
        ("empty text", json, body(""), 400, "INVALID_ARGUMENT", "text is empty or only white space".into()),
        ("invisible text", json, body("\u{00A0}\u{200B}\u{202E}"), 400, "INVALID_ARGUMENT", "empty".into()),
        (
            "text over the limit",
            json,
            body(&"x".repeat(text_limit + 1)),
            400,
            "INVALID_ARGUMENT",
            format!("over the limit of {text_limit} bytes"),
        ),
        (
            "body over the message limit",
            json,
            body(&"x".repeat(body_limit + 10_000)),
            413,
            "OUT_OF_RANGE",
            format!("limit of {body_limit} bytes"),
        ),
        ("invalid JSON", json, b"{\"text\": ".to_vec(), 400, "INVALID_ARGUMENT", "not a valid request".into()),
        (
            "not UTF-8",
            json,
            b"{\"text\": \"\xC3\x28\"}".to_vec(),
            400,
            "INVALID_ARGUMENT",
            "not a valid request".into(),
        ),
        ("wrong content type", Some("text/xml"), body("aid"), 400, "INVALID_ARGUMENT", "not JSON".into()),
        ("multipart", Some("multipart/form-data; boundary=x"), body("aid"), 400, "INVALID_ARGUMENT", "not JSON".into()),
    ];
    for (what, content_type, request, status, code, needle) in cases {
        let (got, answer) = post(addr, "/v1/classify", content_type, request).await;
        assert_eq!((got, answer["code"].as_str()), (status, Some(code)), "{what}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(&needle), "{what}: {message:?} lacks {needle:?}");
        let (got, answer) = post(addr, "/v1/classify", json, body("Troops shelled the town.")).await;
        assert_eq!((got, answer["label"].as_str()), (200, Some("security")), "after {what}: {answer}");
    }

    // JSON under another declared type that says JSON, or none at all (as `curl -d` sends), is read.
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("application/merge-patch+json"),
        Some("Application/JSON; charset=utf-8"),
    ] {
        let (got, answer) = post(addr, "/v1/classify", content_type, body("\u{202E}قصف\0 😀")).await;
        assert_eq!(got, 200, "{content_type:?}: {answer}");
        let sum: f64 = answer["scores"].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-3, "{answer}");
    }

    background.finish().await;
}
