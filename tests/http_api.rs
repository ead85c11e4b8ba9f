//! The HTTP/JSON API, the probes, the OpenAPI document, the playground page and gRPC-Web,
//! end to end: the real binary on an ephemeral port of 127.0.0.1, called over plain
//! HTTP/1.1 as curl or a browser would.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, grpc_frame, seed_article};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use serde_json::{Value, json};
use topics::proto::{ClassifyRequest, ClassifyResponse};

const API_KEY: &str = "http-test-key-0123456789";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// Asserts the error shape every refusal has, and returns its message.
    fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), "application/json");
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        body["message"].as_str().expect("a message").to_string()
    }
}

/// One request on a fresh HTTP/1.1 connection.
async fn call(addr: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("a response");
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("the body").to_bytes().to_vec();
    Answer { status: head.status, headers: head.headers, body }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, Method::GET, path, &[], Vec::new()).await
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    let body = serde_json::to_vec(body).expect("JSON");
    call(addr, Method::POST, path, &[("content-type", "application/json")], body).await
}

#[tokio::test]
async fn classify_answers_the_seed_article_with_segments_and_terms_in_proto_json() {
    let server = TestServer::start(&[]);
    let text = seed_article();
    let answer = post_json(
        server.addr,
        "/v1/classify",
        &json!({"text": text, "id": "kuna", "options": {"segments": true, "explain": 10, "top_k": 2}}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), "application/json");
    assert!(!answer.header("x-request-id").is_empty(), "the request id is echoed");
    let body = answer.json();
    assert_eq!(body["label"], "security");
    assert_eq!(body["id"], "kuna");
    assert_eq!(body["language"], "ar");
    assert_eq!(body["labels"][0], "security");
    assert_eq!(body["scores"].as_array().unwrap().len(), 2, "top_k, by its proto name, is honoured");
    assert!(body["modelVersion"].as_str().is_some_and(|v| !v.is_empty()), "camelCase names: {body}");
    assert_eq!(body["explanation"].as_array().unwrap().len(), 10);
    // Segment offsets are UTF-8 byte offsets, as over gRPC.
    let segments = body["segments"].as_array().unwrap();
    assert_eq!(segments.len(), text.lines().count());
    for (segment, paragraph) in segments.iter().zip(text.lines()) {
        let (start, end) = (segment["start"].as_u64().unwrap() as usize, segment["end"].as_u64().unwrap() as usize);
        assert_eq!(text.get(start..end), Some(paragraph));
    }
}

#[tokio::test]
async fn batch_model_probes_description_and_page_each_answer() {
    let server = TestServer::start(&[]);
    let addr = server.addr;

    let batch = json!({"documents": [
        {"text": "Aid convoys reached the displaced families in the camp.", "id": "1"},
        {"text": seed_article(), "id": "2"},
    ]});
    let answer = post_json(addr, "/v1/classify:batch", &batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let results = answer.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(), [json!("1"), json!("2")]);
    assert_eq!(results[1]["label"], "security");

    let model = get(addr, "/v1/model").await;
    assert_eq!(model.status, StatusCode::OK);
    let model = model.json();
    let labels: Vec<&str> = model["labels"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for label in ["diplomacy", "security", "humanitarian", "none"] {
        assert!(labels.contains(&label), "{labels:?}");
    }
    assert!(model["vocabularySize"].as_u64().unwrap() > 0);

    for probe in ["/healthz", "/readyz"] {
        let answer = get(addr, probe).await;
        assert_eq!(answer.status, StatusCode::OK, "{probe}");
        assert_eq!(answer.json()["status"], "SERVING");
    }

    let description = get(addr, "/openapi.json").await;
    assert_eq!(description.status, StatusCode::OK);
    let description = description.json();
    assert!(description["openapi"].as_str().unwrap().starts_with("3."), "{}", description["openapi"]);
    for path in ["/v1/classify", "/v1/classify:batch", "/v1/model", "/healthz", "/readyz"] {
        assert!(description["paths"].get(path).is_some(), "{path} is described");
    }

    let page = get(addr, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.header("content-security-policy").contains("default-src 'none'"));
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains("dir=\"auto\""));
    assert!(!html.contains("http://") && !html.contains("https://"), "the page loads nothing from elsewhere");

    let nowhere = get(addr, "/v2/nothing").await;
    nowhere.error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn invalid_requests_get_json_errors_with_the_matching_status() {
    let server = TestServer::start(&["--max-text-bytes", "1000", "--max-message-bytes", "70000", "--max-batch", "2"]);
    let addr = server.addr;

    let blank = post_json(addr, "/v1/classify", &json!({"text": " \n\t "})).await;
    assert_eq!(blank.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), "text is empty or only white space");

    let long = post_json(addr, "/v1/classify", &json!({"text": "word ".repeat(300)})).await;
    let message = long.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert!(message.contains("over the limit of 1000 bytes"), "{message}");

    // Over the body limit: refused from its declared length, before it is read.
    let huge = post_json(addr, "/v1/classify", &json!({"text": "word ".repeat(20_000)})).await;
    let message = huge.error(StatusCode::PAYLOAD_TOO_LARGE, "OUT_OF_RANGE");
    assert!(message.contains("70000"), "{message}");

    let three = json!({"documents": [{"text": "a"}, {"text": "b"}, {"text": "c"}]});
    let message =
        post_json(addr, "/v1/classify:batch", &three).await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert!(message.contains("limit of 2"), "{message}");
    let empty_batch = post_json(addr, "/v1/classify:batch", &json!({"documents": []})).await;
    empty_batch.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let bad_document = json!({"documents": [{"text": "fine"}, {"text": ""}]});
    let message =
        post_json(addr, "/v1/classify:batch", &bad_document).await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert!(message.starts_with("documents[1]:"), "{message}");

    let broken = call(addr, Method::POST, "/v1/classify", &[], b"{\"text\": ".to_vec()).await;
    broken.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let misspelt = post_json(addr, "/v1/classify", &json!({"text": "fine", "option": {"segments": true}})).await;
    let message = misspelt.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert!(message.contains("option"), "{message}");
    let language = post_json(addr, "/v1/classify", &json!({"text": "fine", "language": "ar; drop"})).await;
    language.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");

    let wrong_method = get(addr, "/v1/classify").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Splits a gRPC-Web response body into its messages and its trailer block.
fn grpc_web_frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flag = body[0];
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = body[5..5 + length].to_vec();
        body = &body[5 + length..];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8(payload).expect("text trailers"));
        } else {
            messages.push(payload);
        }
    }
    assert!(body.is_empty(), "a partial frame");
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_calls_over_http1_are_answered_and_counted_by_their_grpc_status() {
    let server = TestServer::start(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = server.addr;
    let request = ClassifyRequest { text: seed_article(), id: "web".into(), ..Default::default() };
    let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")];
    let answer = call(addr, Method::POST, "/topics.v1.TopicClassifier/Classify", &headers, grpc_frame(&request)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header("content-type").starts_with("application/grpc-web"), "{}", answer.header("content-type"));
    let (messages, trailers) = grpc_web_frames(&answer.body);
    assert_eq!(messages.len(), 1);
    let response = ClassifyResponse::decode(messages[0].as_slice()).expect("a ClassifyResponse");
    assert_eq!((response.label.as_str(), response.id.as_str()), ("security", "web"));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    let blank = ClassifyRequest { text: " ".into(), ..Default::default() };
    let refused = call(addr, Method::POST, "/topics.v1.TopicClassifier/Classify", &headers, grpc_frame(&blank)).await;
    let status = refused.header("grpc-status").to_string();
    let in_body = grpc_web_frames(&refused.body).1;
    assert!(status == "3" || in_body.contains("grpc-status:3"), "INVALID_ARGUMENT: {status:?} {in_body:?}");

    post_json(addr, "/v1/classify", &json!({"text": "Aid reached the camp."})).await;
    post_json(addr, "/v1/classify", &json!({"text": ""})).await;
    get(addr, "/healthz").await;

    let metrics = String::from_utf8(get(server.metrics_addr(), "/metrics").await.body).unwrap();
    for line in [
        r#"topics_grpc_requests_total{method="topics.v1.TopicClassifier/Classify",code="OK"} 1"#,
        r#"topics_grpc_requests_total{method="topics.v1.TopicClassifier/Classify",code="INVALID_ARGUMENT"} 1"#,
        r#"topics_grpc_requests_total{method="POST /v1/classify",code="200"} 1"#,
        r#"topics_grpc_requests_total{method="POST /v1/classify",code="400"} 1"#,
        r#"topics_grpc_requests_total{method="GET /healthz",code="200"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    assert!(!metrics.contains(r#"code="UNKNOWN""#), "{metrics}");
}

#[tokio::test]
async fn api_keys_guard_the_v1_routes_but_not_the_probes_the_page_or_the_description() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, format!("{API_KEY}\n")).unwrap();
    let server = TestServer::start(&["--api-key-file", keys.to_str().unwrap()]);
    let addr = server.addr;
    let body = serde_json::to_vec(&json!({"text": seed_article()})).unwrap();

    let missing = call(addr, Method::POST, "/v1/classify", &[], body.clone()).await;
    missing.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    let wrong =
        call(addr, Method::POST, "/v1/classify", &[("authorization", "Bearer not-the-key-0123456789")], body.clone());
    wrong.await.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    get(addr, "/v1/model").await.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    let bearer = format!("Bearer {API_KEY}");
    let keyed = call(addr, Method::POST, "/v1/classify", &[("authorization", &bearer)], body).await;
    assert_eq!(keyed.status, StatusCode::OK);
    assert_eq!(keyed.json()["label"], "security");
    let keyed = call(addr, Method::GET, "/v1/model", &[("authorization", &bearer)], Vec::new()).await;
    assert_eq!(keyed.status, StatusCode::OK);

    for open in ["/healthz", "/readyz", "/openapi.json", "/"] {
        assert_eq!(get(addr, open).await.status, StatusCode::OK, "{open} needs no key");
    }

    let request = ClassifyRequest { text: "Aid reached the camp.".into(), ..Default::default() };
    let web = call(
        addr,
        Method::POST,
        "/topics.v1.TopicClassifier/Classify",
        &[("content-type", "application/grpc-web+proto")],
        grpc_frame(&request),
    )
    .await;
    let in_body = grpc_web_frames(&web.body).1;
    assert!(web.header("grpc-status") == "16" || in_body.contains("grpc-status:16"), "gRPC-Web needs the key too");
}

#[tokio::test]
async fn readyz_turns_503_as_soon_as_shutdown_starts() {
    let server = TestServer::start(&["--drain-delay", "3s"]);
    let addr = server.addr;
    assert_eq!(get(addr, "/readyz").await.status, StatusCode::OK);
    server.signal("TERM");
    let started = Instant::now();
    loop {
        let answer = tokio::spawn(get(addr, "/readyz"))
            .await
            .unwrap_or_else(|e| panic!("no answer ({e}); the server's log:\n{}", server.log()));
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            answer.error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alive, and still answering work, while it drains.
    assert_eq!(get(addr, "/healthz").await.status, StatusCode::OK);
    let answer = post_json(addr, "/v1/classify", &json!({"text": "Aid reached the camp."})).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (status, log) = server.wait_for_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{log}");
}
