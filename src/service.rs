//! The `topics.v1.TopicClassifier` gRPC service: admits and validates requests, runs
//! the model within the caller's deadline, and turns library errors into gRPC
//! statuses, in this one place.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::classify::{Classification, Options};
use crate::model::{Model, Prediction};
use crate::proto::topic_classifier_server::TopicClassifier;
use crate::proto::{
    CandidateScore, ClassMetrics, ClassifyBatchRequest, ClassifyBatchResponse, ClassifyRequest, ClassifyResponse,
    ConfusionRow, GetModelInfoRequest, LabelScore, LanguageMetrics, Metrics, ModelInfo, ReloadModelRequest, Segment,
    TermContribution,
};
use crate::reload::{ReloadError, ServedModel};
use crate::telemetry::Telemetry;
use crate::{lang, text};

/// Per-request limits, so that no client can make the server do unbounded work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted text, in UTF-8 bytes.
    pub max_text_bytes: usize,
    /// Most documents in one ClassifyBatch call.
    pub max_batch: usize,
    /// Most classification calls (a stream counts as one for its whole life) running at
    /// once; more are refused at once with RESOURCE_EXHAUSTED rather than queued, so that
    /// a client or balancer retries elsewhere instead of waiting behind a backlog.
    pub max_concurrent_requests: usize,
    /// Longest a unary call may run, whatever deadline the client asked for.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_text_bytes: 1 << 20, max_batch: 256, max_concurrent_requests: 1024, request_timeout: None }
    }
}

/// Longest accepted request id, in bytes: ids are echoed and logged, so they are bounded too.
pub const MAX_ID_BYTES: usize = 256;

/// Longest accepted language hint: a BCP 47 tag such as "ar" or "zh-Hant" fits.
pub const MAX_LANGUAGE_BYTES: usize = 16;

/// Answers a stream may hold ready for a client that reads slowly; beyond them the server
/// stops reading the stream, and HTTP/2 flow control slows the sender.
const STREAM_BUFFER: usize = 16;

/// Texts above this size are classified on the blocking pool, so that one large
/// document cannot stall the async workers that serve everyone else.
const INLINE_WORK_BYTES: usize = 64 * 1024;

/// Why a request is refused. Every variant maps to INVALID_ARGUMENT: the client must change the request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("text is empty or only white space")]
    BlankText,
    #[error("text is {len} bytes, over the limit of {limit} bytes")]
    TextTooLong { len: usize, limit: usize },
    #[error("id is {len} bytes, over the limit of {MAX_ID_BYTES} bytes")]
    IdTooLong { len: usize },
    #[error("language {0:?} is not a language tag (letters, digits and '-', at most {MAX_LANGUAGE_BYTES} bytes)")]
    BadLanguage(String),
    #[error("the batch holds no documents")]
    EmptyBatch,
    #[error("the batch holds {len} documents, over the limit of {limit}")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("documents[{index}]: {error}")]
    InBatch { index: usize, error: Box<RequestError> },
    #[error("stream message {index}: {error}")]
    InStream { index: usize, error: Box<RequestError> },
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

impl From<ReloadError> for Status {
    fn from(error: ReloadError) -> Self {
        Status::failed_precondition(error.to_string())
    }
}

impl From<crate::auth::AuthError> for Status {
    fn from(error: crate::auth::AuthError) -> Self {
        Status::unauthenticated(error.to_string())
    }
}

/// Restates a refusal the gRPC transport made before our code saw the request, so that
/// its code follows the gRPC status-code guide and its message says what to change:
/// a message over the size limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE), a body
/// that is not a protobuf message of the method's type or that breaks off inside a
/// message is INVALID_ARGUMENT, and a unary call without a message is UNIMPLEMENTED (a
/// cardinality violation); tonic says INTERNAL for the last three, which reads as a bug of
/// ours on dashboards and in alerts. Everything else is left as it is: an encoding we do
/// not accept is already UNIMPLEMENTED, and a compressed flag without an encoding stays
/// INTERNAL, as the compression spec requires. `None` when there is nothing to restate.
pub fn restate_transport_status(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        tonic::Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            // tonic's message: "... found {len} bytes, the limit is: {limit} bytes".
            let number_after = |marker: &str| {
                let rest = &message[message.find(marker)? + marker.len()..];
                rest.split_whitespace().next()?.parse::<u64>().ok()
            };
            let size = number_after("found ").map(|n| format!(" of {n} bytes")).unwrap_or_default();
            let limit = number_after("limit is: ").map(|n| format!(" of {n} bytes")).unwrap_or_default();
            Some(Status::resource_exhausted(format!(
                "the request message{size} is over the server's message limit{limit}; send shorter texts or fewer documents per call"
            )))
        }
        tonic::Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            let detail = message.trim_start_matches("failed to decode Protobuf message").trim_start_matches(": ");
            Some(Status::invalid_argument(format!("the request is not a valid topics.v1 request message: {detail}")))
        }
        tonic::Code::Internal if message.starts_with("Unexpected EOF decoding stream") => {
            Some(Status::invalid_argument(
                "the request body ended inside a message: its length prefix promises more bytes than were sent",
            ))
        }
        tonic::Code::Internal if message.starts_with("Missing request message") => {
            Some(Status::unimplemented("this method takes exactly one request message, and none was sent"))
        }
        _ => None,
    }
}

fn overloaded(limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "the server is at its limit of {limit} concurrent requests; retry later or on another replica"
    ))
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the deadline passed before the classification finished; nothing more was done")
}

impl Limits {
    fn check_document(&self, document: &ClassifyRequest) -> Result<(), RequestError> {
        if document.id.len() > MAX_ID_BYTES {
            return Err(RequestError::IdTooLong { len: document.id.len() });
        }
        let language = &document.language;
        if language.len() > MAX_LANGUAGE_BYTES || !language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            let shown: String = language.chars().take(MAX_LANGUAGE_BYTES).collect();
            return Err(RequestError::BadLanguage(shown));
        }
        self.check_text(&document.text)
    }

    fn check_text(&self, text: &str) -> Result<(), RequestError> {
        if text.len() > self.max_text_bytes {
            return Err(RequestError::TextTooLong { len: text.len(), limit: self.max_text_bytes });
        }
        if text::is_blank(text) {
            return Err(RequestError::BlankText);
        }
        Ok(())
    }

    fn check_batch(&self, documents: &[ClassifyRequest]) -> Result<(), RequestError> {
        if documents.is_empty() {
            return Err(RequestError::EmptyBatch);
        }
        if documents.len() > self.max_batch {
            return Err(RequestError::BatchTooLarge { len: documents.len(), limit: self.max_batch });
        }
        for (index, document) in documents.iter().enumerate() {
            self.check_document(document).map_err(|error| RequestError::InBatch { index, error: Box::new(error) })?;
        }
        Ok(())
    }
}

/// When a call arrived, stamped by the server's outermost layer of our own, so that the
/// call's deadline is measured from the same instant as the transport's.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// Serves the current model. Holds no per-client state: any replica can answer any call.
#[derive(Debug, Clone)]
pub struct ClassifierService {
    model: Arc<ServedModel>,
    limits: Limits,
    admission: Arc<Semaphore>,
    telemetry: Telemetry,
}

impl ClassifierService {
    pub fn new(model: Arc<ServedModel>, limits: Limits, telemetry: Telemetry) -> Self {
        let admission = Arc::new(Semaphore::new(limits.max_concurrent_requests));
        Self { model, limits, admission, telemetry }
    }

    /// A slot for one call, or RESOURCE_EXHAUSTED at once when all are taken.
    fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.admission).try_acquire_owned().map_err(|_| overloaded(self.limits.max_concurrent_requests))
    }

    /// Classifies one validated document with the current model, within `deadline`.
    async fn classify_one(
        &self,
        document: ClassifyRequest,
        deadline: Option<Instant>,
    ) -> Result<ClassifyResponse, Status> {
        let model = self.model.current();
        let telemetry = self.telemetry.clone();
        run_cpu(document.text.len(), deadline, move || {
            let response = respond(&model, document);
            telemetry.count_document(&response.label);
            Ok(response)
        })
        .await
    }

    /// The call's deadline: the client's `grpc-timeout`, capped by the server's own
    /// request timeout when `bounded`, counted from the call's arrival.
    fn deadline<T>(&self, request: &Request<T>, bounded: bool) -> Option<Instant> {
        let arrival = request.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0);
        let client = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let server = self.limits.request_timeout.filter(|_| bounded);
        let budget = match (client, server) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A deadline too far away to represent is no deadline.
        budget.and_then(|b| arrival.checked_add(b))
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Lets work running off the async workers see that its call is over: the deadline
/// passed or the client went away (the call's future was dropped).
#[derive(Debug, Clone)]
struct Budget {
    deadline: Option<Instant>,
    abandoned: Arc<AtomicBool>,
}

impl Budget {
    fn new(deadline: Option<Instant>) -> (Self, AbandonOnDrop) {
        let abandoned = Arc::new(AtomicBool::new(false));
        (Self { deadline, abandoned: Arc::clone(&abandoned) }, AbandonOnDrop(abandoned))
    }

    fn is_over(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Held by a call's future: dropping the future marks its work abandoned.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` inline when small, on the blocking pool when large, and gives up with
/// DEADLINE_EXCEEDED when the deadline passes first.
async fn run_cpu<T: Send + 'static>(
    bytes: usize,
    deadline: Option<Instant>,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let running = async move {
        if bytes <= INLINE_WORK_BYTES {
            return work();
        }
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Status::internal(format!("classification task failed: {e}")))?
    };
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, running).await.map_err(|_| deadline_exceeded())?,
        None => running.await,
    }
}

fn scores(model: &Model, prediction: &Prediction, top_k: usize) -> Vec<LabelScore> {
    let keep = if top_k == 0 { usize::MAX } else { top_k };
    let labels = model.labels();
    prediction.ranked.iter().take(keep).map(|&(l, score)| LabelScore { label: labels[l].clone(), score }).collect()
}

/// Classifies one validated document with `model`.
fn respond(model: &Model, request: ClassifyRequest) -> ClassifyResponse {
    let options = request.options.unwrap_or_default();
    let top_k = options.top_k as usize;
    let explain = options.explain as usize;
    let Classification { prediction, labels, segments, explanation } =
        model.classify(&request.text, Options { segments: options.segments, explain });
    let names = model.labels();
    let language =
        if request.language.is_empty() { lang::detect(&request.text) } else { request.language.to_ascii_lowercase() };
    ClassifyResponse {
        label: names[prediction.label()].clone(),
        scores: scores(model, &prediction, top_k),
        id: request.id,
        language,
        labels: labels.iter().map(|&l| names[l].clone()).collect(),
        segments: segments
            .iter()
            .map(|s| Segment {
                // Texts are bounded far below 4 GiB, so offsets fit.
                start: s.range.start as u32,
                end: s.range.end as u32,
                label: names[s.prediction.label()].clone(),
                scores: scores(model, &s.prediction, top_k),
            })
            .collect(),
        explanation: explanation
            .into_iter()
            .map(|c| TermContribution { term: c.term, label: names[c.label].clone(), weight: c.weight })
            .collect(),
        model_version: model.meta().version.clone(),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClassifyResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TopicClassifier for ClassifierService {
    async fn classify(&self, request: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let _slot = self.admit()?;
        let deadline = self.deadline(&request, true);
        let request = request.into_inner();
        self.limits.check_document(&request)?;
        let response = self.classify_one(request, deadline).await?;
        tracing::debug!(id = %response.id, label = %response.label, "classified");
        Ok(Response::new(response))
    }

    async fn classify_batch(
        &self,
        request: Request<ClassifyBatchRequest>,
    ) -> Result<Response<ClassifyBatchResponse>, Status> {
        let _slot = self.admit()?;
        let deadline = self.deadline(&request, true);
        let documents = request.into_inner().documents;
        self.limits.check_batch(&documents)?;
        tracing::debug!(documents = documents.len(), "classifying batch");
        let model = self.model.current();
        let telemetry = self.telemetry.clone();
        let bytes = documents.iter().map(|d| d.text.len()).sum();
        let (budget, _abandon_on_drop) = Budget::new(deadline);
        let results = run_cpu(bytes, deadline, move || {
            let total = documents.len();
            let mut results = Vec::with_capacity(total);
            for document in documents {
                // A large batch checks between documents, so that a call that is over
                // stops using the CPU.
                if budget.is_over() {
                    tracing::debug!(done = results.len(), total, "deadline passed or client gone: batch abandoned");
                    return Err(deadline_exceeded());
                }
                let response = respond(&model, document);
                telemetry.count_document(&response.label);
                results.push(response);
            }
            Ok(results)
        })
        .await?;
        Ok(Response::new(ClassifyBatchResponse { results }))
    }

    type ClassifyStreamStream = ResponseStream;

    async fn classify_stream(
        &self,
        request: Request<Streaming<ClassifyRequest>>,
    ) -> Result<Response<Self::ClassifyStreamStream>, Status> {
        let slot = self.admit()?;
        // A stream may rightly last long: only the client's own deadline bounds it.
        let deadline = self.deadline(&request, false);
        let mut inbound = request.into_inner();
        let (answers, receiver) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let streaming = async {
                let mut index = 0;
                // Reading waits for room to answer: `send` below blocks while the buffer
                // is full, and nothing more is read until it returns.
                while let Some(document) = tokio::select! {
                    next = inbound.message() => next.map_err(|status| {
                        restate_transport_status(&status).unwrap_or(status)
                    })?,
                    () = answers.closed() => None,
                } {
                    service
                        .limits
                        .check_document(&document)
                        .map_err(|error| RequestError::InStream { index, error: Box::new(error) })?;
                    let response = service.classify_one(document, deadline).await?;
                    if answers.send(Ok(response)).await.is_err() {
                        break;
                    }
                    index += 1;
                }
                Ok::<(), Status>(())
            };
            let outcome = match deadline {
                Some(deadline) => {
                    tokio::time::timeout_at(deadline, streaming).await.unwrap_or_else(|_| Err(deadline_exceeded()))
                }
                None => streaming.await,
            };
            if let Err(status) = outcome {
                // The client may be gone already; then there is no one to tell.
                let _ = answers.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_model_info(&self, _request: Request<GetModelInfoRequest>) -> Result<Response<ModelInfo>, Status> {
        Ok(Response::new(model_info(&self.model.current())))
    }

    async fn reload_model(&self, request: Request<ReloadModelRequest>) -> Result<Response<ModelInfo>, Status> {
        let path = request.into_inner().path;
        let model = reload(&self.model, &self.telemetry, (!path.is_empty()).then(|| path.into())).await?;
        Ok(Response::new(model_info(&model)))
    }
}

/// Loads the model at `path` (the current one when `None`) off the async workers and
/// swaps it in, logging the outcome either way.
pub async fn reload(
    served: &Arc<ServedModel>,
    telemetry: &Telemetry,
    path: Option<std::path::PathBuf>,
) -> Result<Arc<Model>, ReloadError> {
    let started = std::time::Instant::now();
    let loading = Arc::clone(served);
    let outcome = tokio::task::spawn_blocking(move || loading.reload(path.as_deref()))
        .await
        .unwrap_or_else(|e| Err(ReloadError::Interrupted(e.to_string())));
    match &outcome {
        Ok(model) => {
            telemetry.set_model(&model.meta().version);
            tracing::info!(
                model = %served.path().display(),
                model_version = %model.meta().version,
                load_ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                "model reloaded"
            );
        }
        Err(error) => tracing::error!(%error, "model reload refused"),
    }
    outcome
}

/// Describes `model` for operators.
pub fn model_info(model: &Model) -> ModelInfo {
    let meta = model.meta();
    let metrics = &meta.metrics;
    ModelInfo {
        version: meta.version.clone(),
        labels: model.labels().to_vec(),
        format_version: crate::model_file::FORMAT_VERSION,
        vocabulary_size: model.vectorizer().vocabulary_size() as u64,
        // Model::new bounds trained_at, so it always formats.
        trained_at: crate::model::rfc3339(meta.trained_at).unwrap_or_default(),
        corpus_digest: meta.corpus_digest.clone(),
        corpus_documents: meta.corpus_documents,
        classifier: meta.classifier.clone(),
        settings: meta.settings.describe().into_iter().collect(),
        metrics: (metrics.folds > 0).then(|| Metrics {
            folds: metrics.folds,
            documents: metrics.documents,
            accuracy: metrics.accuracy,
            macro_f1: metrics.macro_f1,
            per_class: metrics
                .per_class
                .iter()
                .map(|c| ClassMetrics {
                    label: c.label.clone(),
                    precision: c.precision,
                    recall: c.recall,
                    f1: c.f1,
                    support: c.support,
                })
                .collect(),
            per_language: metrics
                .per_language
                .iter()
                .map(|l| LanguageMetrics {
                    language: l.language.clone(),
                    documents: l.documents,
                    accuracy: l.accuracy,
                    macro_f1: l.macro_f1,
                })
                .collect(),
            confusion: metrics.confusion.iter().map(|row| ConfusionRow { counts: row.clone() }).collect(),
        }),
        selection: meta
            .selection
            .iter()
            .map(|c| CandidateScore {
                classifier: c.classifier.to_string(),
                accuracy: c.metrics.accuracy,
                macro_f1: c.metrics.macro_f1,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> ClassifyRequest {
        ClassifyRequest { text: text.into(), ..Default::default() }
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", "١S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn transport_refusals_are_restated_and_ours_are_left_alone() {
        let restated = |status: Status| restate_transport_status(&status).map(|s| (s.code(), s.message().to_string()));
        let oversize = Status::out_of_range(
            "Error, decoded message length too large: found 4195339 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(
            restated(oversize),
            Some((
                tonic::Code::ResourceExhausted,
                "the request message of 4195339 bytes is over the server's message limit of 4194304 bytes; \
                 send shorter texts or fewer documents per call"
                    .to_string()
            ))
        );
        let undecodable =
            Status::internal("failed to decode Protobuf message: ClassifyRequest.text: invalid string value");
        let (code, message) = restated(undecodable).unwrap();
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(
            message,
            "the request is not a valid topics.v1 request message: ClassifyRequest.text: invalid string value"
        );
        assert_eq!(
            restated(Status::internal("Unexpected EOF decoding stream.")).unwrap().0,
            tonic::Code::InvalidArgument
        );
        assert_eq!(restated(Status::internal("Missing request message.")).unwrap().0, tonic::Code::Unimplemented);

        for left in [
            Status::internal("classification task failed: panicked"),
            Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            Status::unimplemented("Content is compressed with `snappy` which isn't supported"),
            overloaded(4),
            Status::from(RequestError::BlankText),
        ] {
            assert!(restate_transport_status(&left).is_none(), "{left:?}");
        }
    }

    #[test]
    fn language_hints_must_be_tags() {
        let limits = Limits::default();
        let hinted =
            |language: &str| ClassifyRequest { text: "text".into(), language: language.into(), ..Default::default() };
        assert_eq!(limits.check_document(&hinted("")), Ok(()));
        assert_eq!(limits.check_document(&hinted("zh-Hant")), Ok(()));
        assert!(matches!(limits.check_document(&hinted("ar; drop")), Err(RequestError::BadLanguage(_))));
        assert!(matches!(limits.check_document(&hinted(&"a".repeat(17))), Err(RequestError::BadLanguage(_))));
    }

    #[test]
    fn text_checks() {
        let limits = Limits { max_text_bytes: 10, max_batch: 2, ..Limits::default() };
        assert_eq!(limits.check_text("fine"), Ok(()));
        assert_eq!(limits.check_text(" \u{00A0}\u{200B}"), Err(RequestError::BlankText));
        assert_eq!(limits.check_text("0123456789"), Ok(()));
        assert_eq!(limits.check_text("0123456789a"), Err(RequestError::TextTooLong { len: 11, limit: 10 }));
    }

    #[test]
    fn batch_checks_name_the_limit_and_the_document() {
        let limits = Limits { max_text_bytes: 10, max_batch: 2, ..Limits::default() };
        assert_eq!(limits.check_batch(&[]), Err(RequestError::EmptyBatch));
        let three = [request("a"), request("b"), request("c")];
        let err = limits.check_batch(&three).unwrap_err();
        assert_eq!(err, RequestError::BatchTooLarge { len: 3, limit: 2 });
        assert!(err.to_string().contains("limit of 2"));
        let long_id = ClassifyRequest { text: "a".into(), id: "x".repeat(MAX_ID_BYTES + 1), ..Default::default() };
        let err = limits.check_batch(&[request("a"), long_id]).unwrap_err();
        assert_eq!(err.to_string(), "documents[1]: id is 257 bytes, over the limit of 256 bytes");
        let err = limits.check_batch(&[request("a"), request(" ")]).unwrap_err();
        assert_eq!(err.to_string(), "documents[1]: text is empty or only white space");
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
