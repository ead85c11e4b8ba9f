//! The gRPC API end to end: the real binary on an ephemeral port, called with the
//! generated client exactly as a user's program would.

mod common;

use std::time::Duration;

use common::{TestServer, repo_path, seed_article};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use topics::proto::{ClassifyBatchRequest, ClassifyOptions, ClassifyRequest, ClassifyResponse, GetModelInfoRequest};

fn request(text: impl Into<String>, id: &str) -> ClassifyRequest {
    ClassifyRequest { text: text.into(), id: id.into(), ..Default::default() }
}

fn assert_distribution(response: &ClassifyResponse) {
    let labels: Vec<&str> = response.scores.iter().map(|s| s.label.as_str()).collect();
    let mut sorted = labels.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["diplomacy", "humanitarian", "none", "security"], "every label is scored once");
    assert!(response.scores.iter().all(|s| s.score.is_finite() && (0.0..=1.0).contains(&s.score)));
    assert!(response.scores.windows(2).all(|w| w[0].score >= w[1].score), "highest first");
    let sum: f32 = response.scores.iter().map(|s| s.score).sum();
    assert!((sum - 1.0).abs() < 1e-4, "scores sum to {sum}");
    assert_eq!(response.label, response.scores[0].label);
}

#[tokio::test]
async fn the_seed_article_is_security() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let response = client.classify(request(seed_article(), "kuna-seed")).await.unwrap().into_inner();
    assert_eq!(response.label, "security");
    assert_eq!(response.id, "kuna-seed");
    assert_eq!(response.language, "ar");
    assert_distribution(&response);
}

#[tokio::test]
async fn the_seed_article_is_broken_down_by_paragraph_and_explained() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let text = seed_article();
    let options = ClassifyOptions { top_k: 2, segments: true, explain: 12 };
    let response = client
        .classify(ClassifyRequest { options: Some(options), ..request(text.clone(), "seed") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.label, "security");
    assert_eq!(response.labels[0], "security", "dominant first: {:?}", response.labels);
    for topic in ["diplomacy", "humanitarian"] {
        assert!(response.labels.iter().any(|l| l == topic), "{topic} is covered too: {:?}", response.labels);
    }
    assert_eq!(response.scores.len(), 2, "top_k keeps the two best");
    assert_eq!(response.scores[0].label, "security");

    // One segment per paragraph, in order, with byte offsets that slice the text.
    let paragraphs: Vec<&str> = text.lines().collect();
    assert_eq!(response.segments.len(), paragraphs.len());
    let mut previous_end = 0;
    for (segment, paragraph) in response.segments.iter().zip(&paragraphs) {
        let (start, end) = (segment.start as usize, segment.end as usize);
        assert!(previous_end <= start && start < end && end <= text.len());
        assert_eq!(text.get(start..end), Some(*paragraph), "offsets are UTF-8 byte offsets");
        assert_eq!(segment.scores.len(), 2);
        assert_eq!(segment.label, segment.scores[0].label);
        previous_end = end;
    }
    let seeds = std::fs::read_to_string(repo_path("models/corpus/seed.jsonl")).unwrap();
    for (segment, line) in response.segments.iter().zip(seeds.lines()) {
        let document: topics::corpus::Document = serde_json::from_str(line).unwrap();
        assert_eq!(segment.label, document.primary_label(), "{}", document.id);
    }

    // The explaining terms are words of the text, strongest first.
    assert_eq!(response.explanation.len(), 12);
    assert!(response.explanation.windows(2).all(|w| w[0].weight >= w[1].weight));
    for term in &response.explanation {
        assert!(text.contains(&term.term), "{:?} is written in the text", term.term);
        assert!(term.weight > 0.0 && term.weight.is_finite());
        assert!(["diplomacy", "humanitarian", "none", "security"].contains(&term.label.as_str()));
    }
    assert_eq!(response.explanation[0].label, "security");
    assert!(response.explanation.iter().any(|t| t.term == "داعش"), "{:?}", response.explanation);

    let info = client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(response.model_version, info.version);
}

#[tokio::test]
async fn options_default_to_the_plain_answer_and_a_language_hint_wins() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let plain = client.classify(request(seed_article(), "")).await.unwrap().into_inner();
    assert_eq!(plain.scores.len(), 4);
    assert!(plain.segments.is_empty() && plain.explanation.is_empty());
    assert!(!plain.labels.is_empty() && !plain.model_version.is_empty());

    let hinted = ClassifyRequest { language: "EN".into(), ..request(seed_article(), "") };
    assert_eq!(client.classify(hinted).await.unwrap().into_inner().language, "en");
    let bad = ClassifyRequest { language: "ar\n".into(), ..request(seed_article(), "") };
    let status = client.classify(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("language"), "{}", status.message());

    // Asking for a huge explanation gets the server's cap, not an error.
    let many = ClassifyOptions { explain: u32::MAX, top_k: 100, segments: false };
    let capped = ClassifyRequest { options: Some(many), ..request(seed_article(), "") };
    let response = client.classify(capped).await.unwrap().into_inner();
    assert_eq!(response.explanation.len(), topics::explain::MAX_TERMS);
    assert_eq!(response.scores.len(), 4);
}

#[tokio::test]
async fn each_seed_paragraph_gets_its_own_label() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let seeds = std::fs::read_to_string(repo_path("models/corpus/seed.jsonl")).unwrap();
    for line in seeds.lines() {
        let document: topics::corpus::Document = serde_json::from_str(line).unwrap();
        let response = client.classify(request(document.text.clone(), &document.id)).await.unwrap().into_inner();
        assert_eq!(response.label, document.primary_label(), "{}: {:?}", document.id, response.scores);
        assert_distribution(&response);
    }
}

#[tokio::test]
async fn english_articles_are_classified_too() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let cases = [
        (
            "Gunmen ambushed an army convoy near the border overnight, killing four soldiers before air support drove them off.",
            "security",
        ),
        (
            "The two foreign ministers signed a memorandum on political consultations and agreed to reopen their embassies.",
            "diplomacy",
        ),
        (
            "Thousands of families displaced by the floods are sheltering in schools as agencies truck in food and clean water.",
            "humanitarian",
        ),
    ];
    for (text, label) in cases {
        let response = client.classify(request(text, "")).await.unwrap().into_inner();
        assert_eq!(response.label, label, "{text}: {:?}", response.scores);
        assert_eq!(response.language, "en");
        assert_distribution(&response);
    }
}

#[tokio::test]
async fn out_of_scope_news_is_none() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let cases = [
        "The central bank kept its benchmark rate unchanged on Thursday, citing easing inflation and steady growth in retail lending.",
        "أحرز فريق الترجي لقب البطولة للمرة الثالثة على التوالي بعد فوزه على النادي الصفاقسي بهدفين دون رد في المباراة النهائية",
    ];
    for text in cases {
        let response = client.classify(request(text, "")).await.unwrap().into_inner();
        assert_eq!(response.label, "none", "{text}: {:?}", response.scores);
        assert_distribution(&response);
    }
}

#[tokio::test]
async fn batch_answers_in_order_and_echoes_ids() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let texts = [
        ("b-0", "وصلت قافلة مساعدات غذائية وطبية الى مخيم النازحين وسط نقص حاد في المياه والخيام"),
        ("b-1", "استقبل وزير الخارجية سفير اليابان الذي قدم نسخة من اوراق اعتماده وبحثا العلاقات الثنائية"),
        ("b-2", "قتل ثلاثة جنود في هجوم بعبوة ناسفة استهدف دورية للجيش قرب الحدود"),
        ("", "Troops shelled the militants' positions after an attack on a checkpoint."),
    ];
    let documents = texts.iter().map(|(id, text)| request(*text, id)).collect();
    let results = client.classify_batch(ClassifyBatchRequest { documents }).await.unwrap().into_inner().results;
    assert_eq!(results.len(), texts.len());
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b-0", "b-1", "b-2", ""]);
    let labels: Vec<&str> = results.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["humanitarian", "diplomacy", "security", "security"]);
    let languages: Vec<&str> = results.iter().map(|r| r.language.as_str()).collect();
    assert_eq!(languages, ["ar", "ar", "ar", "en"]);
    for (result, (_, text)) in results.iter().zip(texts) {
        let single = client.classify(request(text, "")).await.unwrap().into_inner();
        assert_eq!(result.scores, single.scores, "a batch answers exactly like single calls");
    }
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_and_the_server_keeps_serving() {
    let server = TestServer::start(&["--max-text-bytes", "1000", "--max-batch", "4", "--max-message-bytes", "66536"]);
    let mut client = server.client().await;

    let blank_texts = ["", "   \n\t", "\u{00A0}\u{3000}", "\u{200B}\u{200F}\u{FEFF}"];
    for text in blank_texts {
        let status = client.classify(request(text, "")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{text:?}");
        assert!(status.message().contains("empty"), "{}", status.message());
    }

    let status = client.classify(request("x".repeat(1001), "")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("limit of 1000 bytes"), "{}", status.message());
    client.classify(request("x".repeat(1000), "")).await.expect("exactly the limit is accepted");

    let status = client.classify(request("troops", &"i".repeat(257))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("id is 257 bytes"), "{}", status.message());

    // A message over the transport limit (here 1000 + 64 KiB) is refused before decoding.
    let status = client.classify(request("x".repeat(200_000), "")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("message limit of 66536 bytes"), "{}", status.message());

    let status = client.classify_batch(ClassifyBatchRequest { documents: vec![] }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("no documents"), "{}", status.message());

    let five = (0..5).map(|i| request("troops", &i.to_string())).collect();
    let status = client.classify_batch(ClassifyBatchRequest { documents: five }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("limit of 4"), "{}", status.message());

    let with_blank = vec![request("troops", "a"), request(" ", "b")];
    let status = client.classify_batch(ClassifyBatchRequest { documents: with_blank }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("documents[1]"), "{}", status.message());

    // Text with no word the model knows is not an error: it gets finite scores.
    for text in ["zzzz qqqq", "😀🔥", "١٢٣ 456", "日本語のテキスト", "\u{0000}\u{0001}"] {
        let response = client.classify(request(text, "")).await.unwrap().into_inner();
        assert_distribution(&response);
    }

    let response = client.classify(request(seed_article().chars().take(300).collect::<String>(), "")).await;
    assert!(response.is_ok(), "still serving after bad input");
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_service() {
    let server = TestServer::start(&[]);
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "topics.v1.TopicClassifier"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_describes_the_api_without_a_proto_file() {
    let server = TestServer::start(&[]);
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("topics.v1.TopicClassifier".into())),
        },
    ];
    let mut answers = reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();

    let listed = answers.message().await.unwrap().expect("list answer").message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = listed else { panic!("unexpected answer {listed:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["topics.v1.TopicClassifier", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    let file = answers.message().await.unwrap().expect("file answer").message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = file else { panic!("unexpected answer {file:?}") };
    use prost::Message as _;
    let descriptor = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(descriptor.package(), "topics.v1");
    let methods: Vec<&str> = descriptor.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["Classify", "ClassifyBatch", "ClassifyStream", "GetModelInfo", "ReloadModel"]);
}

#[tokio::test]
async fn model_info_tells_an_operator_what_is_served() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let info = client.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    let model = topics::model_file::load(&repo_path("models/topics.model")).unwrap();
    assert_eq!(info.version, model.meta().version);
    assert_eq!(info.labels, ["diplomacy", "humanitarian", "none", "security"]);
    assert_eq!(info.format_version, topics::model_file::FORMAT_VERSION);
    assert_eq!(info.vocabulary_size, model.vectorizer().vocabulary_size() as u64);
    assert_eq!(info.corpus_digest.len(), 64);
    assert!(info.corpus_documents > 200);
    assert!(info.trained_at.ends_with('Z'), "{}", info.trained_at);
    assert_eq!(info.classifier, model.meta().settings.classifier.family());
    assert_eq!(info.settings.get("word_ngrams").map(String::as_str), Some("1-2"));
    let metrics = info.metrics.expect("cross-validated metrics");
    assert_eq!(metrics.folds, 5);
    assert!(metrics.macro_f1 > 0.8, "{metrics:?}");
    assert_eq!(metrics.per_class.len(), 4);
    assert_eq!(metrics.confusion.len(), 4);
    assert!(metrics.confusion.iter().all(|row| row.counts.len() == 4));
    let classified: u64 = metrics.confusion.iter().flat_map(|row| &row.counts).sum();
    assert_eq!(classified, metrics.documents);
    assert!(info.selection.len() >= 2, "the trainer compared classifiers: {:?}", info.selection);
    assert!(info.selection.iter().any(|c| c.classifier.starts_with("multinomial_nb")));
    assert!(metrics.per_language.iter().any(|l| l.language == "ar"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let server = TestServer::start_with_log(&["--max-message-bytes", "67108864"], "info,topics=debug");
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let mut watches = Vec::new();
    for service in ["", "topics.v1.TopicClassifier"] {
        let mut watch = health.watch(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
        watches.push(watch);
    }

    // A batch large enough to still be running when the signal arrives.
    let long_text = seed_article().repeat(12);
    let documents: Vec<ClassifyRequest> = (0..256).map(|i| request(long_text.clone(), &i.to_string())).collect();
    let mut client = topics::proto::topic_classifier_client::TopicClassifierClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let in_flight = tokio::spawn(async move { client.classify_batch(ClassifyBatchRequest { documents }).await });
    // The server logs when it starts the batch: only then is the call truly in flight.
    let waiting = std::time::Instant::now();
    while !server.log().contains("classifying batch") {
        assert!(waiting.elapsed() < Duration::from_secs(20), "the batch never started:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    server.signal("TERM");
    for watch in &mut watches {
        let update =
            tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("health update in time");
        assert_eq!(update.unwrap().unwrap().status(), ServingStatus::NotServing);
    }
    drop(watches);

    let results = in_flight.await.unwrap().expect("the in-flight batch completes").into_inner().results;
    assert_eq!(results.len(), 256);
    assert!(results.iter().all(|r| r.label == "security"));

    let (status, log) = server.wait_for_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test]
async fn a_stream_is_answered_in_order() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let texts = [seed_article(), "Talks between the two foreign ministers resumed in Geneva.".to_string()];
    let outbound = tokio_stream::iter((0..40).map(move |i| request(texts[i % 2].clone(), &format!("doc-{i}"))));
    let mut answers = client.classify_stream(outbound).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        assert_distribution(&answer);
        assert!(!answer.model_version.is_empty());
        ids.push(answer.id);
    }
    let expected: Vec<String> = (0..40).map(|i| format!("doc-{i}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_bad_message_ends_the_stream_with_its_position() {
    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    let outbound = tokio_stream::iter(vec![request("first", "a"), request("second", "b"), request(" \u{3000} ", "c")]);
    let mut answers = client.classify_stream(outbound).await.unwrap().into_inner();
    assert_eq!(answers.message().await.unwrap().unwrap().id, "a");
    assert_eq!(answers.message().await.unwrap().unwrap().id, "b");
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "stream message 2: text is empty or only white space");
    // The server goes on serving.
    assert_eq!(client.classify(request(seed_article(), "")).await.unwrap().into_inner().label, "security");
}

#[tokio::test]
async fn a_slow_reader_stops_the_server_reading_its_stream() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let server = TestServer::start(&[]);
    let mut client = server.client().await;
    const MESSAGES: usize = 5_000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let text = seed_article();
    // Big answers (every segment and a long explanation) fill the client's receive window quickly.
    let options = ClassifyOptions { top_k: 0, segments: true, explain: 64 };
    let outbound = tokio_stream::StreamExt::map(tokio_stream::iter(0..MESSAGES), move |i| {
        counter.fetch_add(1, Ordering::Relaxed);
        ClassifyRequest { options: Some(options), ..request(text.clone(), &i.to_string()) }
    });
    let mut answers = client.classify_stream(outbound).await.unwrap().into_inner();

    // Read nothing until the client has stopped being able to send.
    let mut last = usize::MAX;
    let waiting = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = pulled.load(Ordering::Relaxed);
        if now == last || waiting.elapsed() > Duration::from_secs(60) {
            break;
        }
        last = now;
    }
    let stalled_at = pulled.load(Ordering::Relaxed);
    assert!(stalled_at < MESSAGES / 2, "the client could send {stalled_at} of {MESSAGES} messages unread");

    // Reading again lets the whole stream through, in order.
    let mut received = 0;
    while let Some(answer) = answers.message().await.unwrap() {
        assert_eq!(answer.id, received.to_string());
        received += 1;
    }
    assert_eq!(received, MESSAGES);
}
