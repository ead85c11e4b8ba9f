//! The `topics.v1.TopicClassifier` gRPC service: validates requests, runs the model,
//! and turns library errors into gRPC statuses, in this one place.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::model::Model;
use crate::proto::topic_classifier_server::TopicClassifier;
use crate::proto::{
    CandidateScore, ClassMetrics, ClassifyBatchRequest, ClassifyBatchResponse, ClassifyRequest, ClassifyResponse,
    ConfusionRow, GetModelInfoRequest, LabelScore, LanguageMetrics, Metrics, ModelInfo,
};
use crate::{lang, text};

/// Per-request limits, so that no client can make the server do unbounded work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted text, in UTF-8 bytes.
    pub max_text_bytes: usize,
    /// Most documents in one ClassifyBatch call.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_text_bytes: 1 << 20, max_batch: 256 }
    }
}

/// Longest accepted request id, in bytes: ids are echoed and logged, so they are bounded too.
pub const MAX_ID_BYTES: usize = 256;

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
    #[error("the batch holds no documents")]
    EmptyBatch,
    #[error("the batch holds {len} documents, over the limit of {limit}")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("documents[{index}]: {error}")]
    InBatch { index: usize, error: Box<RequestError> },
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

impl Limits {
    fn check_document(&self, document: &ClassifyRequest) -> Result<(), RequestError> {
        if document.id.len() > MAX_ID_BYTES {
            return Err(RequestError::IdTooLong { len: document.id.len() });
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

/// Serves one loaded model. Holds no per-client state: any replica can answer any call.
#[derive(Debug, Clone)]
pub struct ClassifierService {
    model: Arc<Model>,
    limits: Limits,
}

impl ClassifierService {
    pub fn new(model: Arc<Model>, limits: Limits) -> Self {
        Self { model, limits }
    }
}

fn respond(model: &Model, request: ClassifyRequest) -> ClassifyResponse {
    let prediction = model.predict(&request.text);
    let labels = model.labels();
    ClassifyResponse {
        label: labels[prediction.top()].clone(),
        scores: prediction.ranked.iter().map(|&(l, score)| LabelScore { label: labels[l].clone(), score }).collect(),
        id: request.id,
        language: lang::detect(&request.text),
    }
}

/// Runs `work` inline when small, on the blocking pool when large.
async fn run_cpu<T: Send + 'static>(bytes: usize, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    if bytes <= INLINE_WORK_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| Status::internal(format!("classification task failed: {e}")))
}

#[tonic::async_trait]
impl TopicClassifier for ClassifierService {
    async fn classify(&self, request: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let request = request.into_inner();
        self.limits.check_document(&request)?;
        let model = Arc::clone(&self.model);
        let response = run_cpu(request.text.len(), move || respond(&model, request)).await?;
        tracing::debug!(id = %response.id, label = %response.label, "classified");
        Ok(Response::new(response))
    }

    async fn classify_batch(
        &self,
        request: Request<ClassifyBatchRequest>,
    ) -> Result<Response<ClassifyBatchResponse>, Status> {
        let documents = request.into_inner().documents;
        self.limits.check_batch(&documents)?;
        tracing::debug!(documents = documents.len(), "classifying batch");
        let model = Arc::clone(&self.model);
        let bytes = documents.iter().map(|d| d.text.len()).sum();
        let results = run_cpu(bytes, move || documents.into_iter().map(|d| respond(&model, d)).collect()).await?;
        Ok(Response::new(ClassifyBatchResponse { results }))
    }

    async fn get_model_info(&self, _request: Request<GetModelInfoRequest>) -> Result<Response<ModelInfo>, Status> {
        Ok(Response::new(model_info(&self.model)))
    }
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
        ClassifyRequest { text: text.into(), id: String::new() }
    }

    #[test]
    fn text_checks() {
        let limits = Limits { max_text_bytes: 10, max_batch: 2 };
        assert_eq!(limits.check_text("fine"), Ok(()));
        assert_eq!(limits.check_text(" \u{00A0}\u{200B}"), Err(RequestError::BlankText));
        assert_eq!(limits.check_text("0123456789"), Ok(()));
        assert_eq!(limits.check_text("0123456789a"), Err(RequestError::TextTooLong { len: 11, limit: 10 }));
    }

    #[test]
    fn batch_checks_name_the_limit_and_the_document() {
        let limits = Limits { max_text_bytes: 10, max_batch: 2 };
        assert_eq!(limits.check_batch(&[]), Err(RequestError::EmptyBatch));
        let three = [request("a"), request("b"), request("c")];
        let err = limits.check_batch(&three).unwrap_err();
        assert_eq!(err, RequestError::BatchTooLarge { len: 3, limit: 2 });
        assert!(err.to_string().contains("limit of 2"));
        let long_id = ClassifyRequest { text: "a".into(), id: "x".repeat(MAX_ID_BYTES + 1) };
        let err = limits.check_batch(&[request("a"), long_id]).unwrap_err();
        assert_eq!(err.to_string(), "documents[1]: id is 257 bytes, over the limit of 256 bytes");
        let err = limits.check_batch(&[request("a"), request(" ")]).unwrap_err();
        assert_eq!(err.to_string(), "documents[1]: text is empty or only white space");
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
