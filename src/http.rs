//! The HTTP/JSON face of the classifier, served on the gRPC port beside the gRPC
//! services: `POST /v1/classify`, `POST /v1/classify:batch`, `GET /v1/model`, the probes
//! `GET /healthz` and `GET /readyz`, the API's description at `GET /openapi.json` and the
//! playground page at `GET /`.
//!
//! Each JSON call goes through the very [`ClassifierService`] method its gRPC twin does,
//! so validation, limits, the admission semaphore, deadlines and document metrics are
//! shared, and a refusal is the same `tonic::Status`; [`http_status`] alone decides which
//! HTTP status that becomes. Bodies are the proto messages in protobuf's JSON field naming
//! (lowerCamelCase), from serde derives generated with the gRPC code.
//!
//! With API keys configured, the `/v1/` routes need `Authorization: Bearer <key>` as gRPC
//! calls do; the probes, the page and the API description stay open, as gRPC health does.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::auth::ApiKeys;
use crate::proto::topic_classifier_server::TopicClassifier;
use crate::proto::{ClassifyBatchRequest, ClassifyRequest, GetModelInfoRequest};
use crate::service::ClassifierService;

/// Every route, as "METHOD /path": the metrics name these and fold any other request
/// into `other`. A test checks that the router answers each.
pub const ROUTES: &[&str] = &[
    "POST /v1/classify",
    "POST /v1/classify:batch",
    "GET /v1/model",
    "GET /healthz",
    "GET /readyz",
    "GET /openapi.json",
    "GET /",
];

/// The OpenAPI 3 description of the routes, kept beside this file.
pub const OPENAPI: &str = include_str!("http/openapi.json");

/// The playground: one page with its styles and script inline, so it needs nothing else.
pub const PLAYGROUND: &str = include_str!("http/playground.html");

/// The page may run its own inline script and talk to this server, and nothing more, so
/// even a text that slipped through as markup could not load or send anything.
const PLAYGROUND_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the routes share.
#[derive(Debug, Clone)]
pub struct HttpApi {
    service: ClassifierService,
    api_keys: Option<Arc<ApiKeys>>,
    /// Whether gRPC health says SERVING; false from the start of shutdown on.
    ready: watch::Receiver<bool>,
    /// Largest request body read, in bytes; larger ones are refused without reading them.
    max_body_bytes: usize,
}

impl HttpApi {
    pub fn new(
        service: ClassifierService,
        api_keys: Option<Arc<ApiKeys>>,
        ready: watch::Receiver<bool>,
        max_body_bytes: usize,
    ) -> Self {
        Self { service, api_keys, ready, max_body_bytes }
    }

    /// The routes, with a fallback that answers a gRPC call to an unknown method as gRPC
    /// does (UNIMPLEMENTED) and anything else with a JSON 404.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/classify", post(classify))
            .route("/v1/classify:batch", post(classify_batch))
            .route("/v1/model", get(model))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/openapi.json", get(openapi))
            .route("/", get(playground))
            .fallback(not_found)
            .with_state(Arc::new(self))
    }

    fn authorize(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        match &self.api_keys {
            Some(keys) => Ok(keys.check(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))?),
            None => Ok(()),
        }
    }

    /// Checks the key, reads at most `max_body_bytes` of body and parses it as `M`; the
    /// result carries the request's headers and extensions (its arrival time, a
    /// `grpc-timeout`) to the service, as a gRPC call would.
    async fn call<M: DeserializeOwned>(&self, request: Request) -> Result<tonic::Request<M>, Status> {
        self.authorize(request.headers())?;
        check_content_type(request.headers())?;
        let (parts, body) = request.into_parts();
        let limit = self.max_body_bytes;
        let too_large = || Status::out_of_range(format!("the request body is over the limit of {limit} bytes"));
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(error) => return Err(Status::cancelled(format!("the request body could not be read: {error}"))),
        };
        let message = serde_json::from_slice::<M>(&bytes)
            .map_err(|error| Status::invalid_argument(format!("the body is not a valid request: {error}")))?;
        Ok(tonic::Request::from_http(http::Request::from_parts(parts, message)))
    }
}

/// Refuses a body declared as something other than JSON, before reading it. No
/// content-type, and the form type `curl -d` sends by default, are read as JSON.
fn check_content_type(headers: &http::HeaderMap) -> Result<(), Status> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let media_type = value.to_str().ok().and_then(|v| v.split(';').next()).map(|t| t.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json" | "application/x-www-form-urlencoded") => Ok(()),
        Some(other) if other.starts_with("application/") && other.ends_with("+json") => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "the body is declared as {:?}, not JSON; send content-type: application/json",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// The HTTP status of a refusal, for every code the server gives.
///
/// A body over the size limit is OUT_OF_RANGE, as an oversize gRPC message is, and 413
/// here; a text over the text limit inside a body that fits is INVALID_ARGUMENT and 400,
/// with the same message gRPC gives. Too many calls at once is 429, so clients back off.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::OutOfRange => StatusCode::PAYLOAD_TOO_LARGE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // The client went away or its body broke off: nginx's 499 says so, and nobody reads it.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

/// `{"code": "INVALID_ARGUMENT", "message": "..."}` with the matching HTTP status.
fn refusal(status: &Status) -> Response {
    let body = ErrorBody { code: crate::telemetry::code_name(status.code()), message: status.message() };
    let mut response = json(http_status(status.code()), &body);
    if status.code() == Code::Unauthenticated {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "cannot write a JSON answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn answer<T: Serialize>(outcome: Result<tonic::Response<T>, Status>) -> Response {
    match outcome {
        Ok(response) => json(StatusCode::OK, response.get_ref()),
        Err(status) => refusal(&status),
    }
}

async fn classify(State(api): State<Arc<HttpApi>>, request: Request) -> Response {
    match api.call::<ClassifyRequest>(request).await {
        Ok(call) => answer(api.service.classify(call).await),
        Err(status) => refusal(&status),
    }
}

async fn classify_batch(State(api): State<Arc<HttpApi>>, request: Request) -> Response {
    match api.call::<ClassifyBatchRequest>(request).await {
        Ok(call) => answer(api.service.classify_batch(call).await),
        Err(status) => refusal(&status),
    }
}

async fn model(State(api): State<Arc<HttpApi>>, request: Request) -> Response {
    if let Err(status) = api.authorize(request.headers()) {
        return refusal(&status);
    }
    let (parts, _) = request.into_parts();
    let call = tonic::Request::from_http(http::Request::from_parts(parts, GetModelInfoRequest {}));
    answer(api.service.get_model_info(call).await)
}

#[derive(Serialize)]
struct Probe {
    status: &'static str,
}

/// Liveness: the process answers.
async fn healthz() -> Response {
    json(StatusCode::OK, &Probe { status: "SERVING" })
}

/// Readiness: what gRPC health says for the classifier, NOT_SERVING once shutdown starts.
async fn readyz(State(api): State<Arc<HttpApi>>) -> Response {
    if *api.ready.borrow() {
        json(StatusCode::OK, &Probe { status: "SERVING" })
    } else {
        refusal(&Status::unavailable("the server is shutting down"))
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], OPENAPI).into_response()
}

async fn playground() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PLAYGROUND_POLICY)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        PLAYGROUND,
    )
        .into_response()
}

async fn not_found(request: Request<Body>) -> Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return Status::unimplemented("").into_http();
    }
    refusal(&Status::not_found(format!("no route for {} {}", request.method(), request.uri().path())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClassifyResponse, LabelScore, Segment, TermContribution};

    #[test]
    fn every_code_has_a_client_or_server_error_status() {
        for code in 1..=16 {
            let status = http_status(Code::from(code));
            assert!(status.is_client_error() || status.is_server_error(), "{code}: {status}");
        }
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn json_uses_the_proto_json_names_and_accepts_the_proto_name_of_top_k() {
        let request: ClassifyRequest =
            serde_json::from_str(r#"{"text": "t", "options": {"top_k": 2, "segments": true}}"#).unwrap();
        assert_eq!(request.options.map(|o| (o.top_k, o.segments)), Some((2, true)));
        let request: ClassifyRequest = serde_json::from_str(r#"{"text": "t", "options": {"topK": 3}}"#).unwrap();
        assert_eq!(request.options.map(|o| o.top_k), Some(3));
        assert!(serde_json::from_str::<ClassifyRequest>(r#"{"text": "t", "option": {}}"#).is_err());
    }

    /// The document's schemas name the fields the serde derives write, so neither can
    /// change without the other.
    #[test]
    fn the_openapi_document_describes_the_json_the_server_writes() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        let paths = document["paths"].as_object().unwrap();
        for route in ROUTES {
            let (method, path) = route.split_once(' ').unwrap();
            assert!(paths.get(path).and_then(|p| p.get(method.to_ascii_lowercase())).is_some(), "{route}");
        }
        let response = ClassifyResponse {
            scores: vec![LabelScore::default()],
            segments: vec![Segment { scores: vec![LabelScore::default()], ..Default::default() }],
            explanation: vec![TermContribution::default()],
            ..Default::default()
        };
        let schemas = &document["components"]["schemas"];
        let check = |schema: &str, value: serde_json::Value| {
            let written: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            let described: Vec<String> = schemas[schema]["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{schema}"))
                .keys()
                .cloned()
                .collect();
            let mut sorted = written.clone();
            sorted.sort();
            let mut expected = described.clone();
            expected.sort();
            assert_eq!(sorted, expected, "{schema}");
        };
        let value = serde_json::to_value(&response).unwrap();
        check("ClassifyResponse", value.clone());
        check("LabelScore", value["scores"][0].clone());
        check("Segment", value["segments"][0].clone());
        check("TermContribution", value["explanation"][0].clone());
        check(
            "ClassifyRequest",
            serde_json::to_value(ClassifyRequest { options: Some(Default::default()), ..Default::default() }).unwrap(),
        );
        check("ClassifyOptions", serde_json::to_value(crate::proto::ClassifyOptions::default()).unwrap());
        let info = crate::proto::ModelInfo { metrics: Some(Default::default()), ..Default::default() };
        check("ModelInfo", serde_json::to_value(&info).unwrap());
        check("Metrics", serde_json::to_value(crate::proto::Metrics::default()).unwrap());
    }

    #[tokio::test]
    async fn the_router_answers_every_listed_route() {
        use tower::ServiceExt as _;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/topics.model");
        let model = crate::model_file::load(&path).unwrap();
        let served = Arc::new(crate::reload::ServedModel::new(Arc::new(model), path));
        let service =
            ClassifierService::new(served, crate::service::Limits::default(), crate::telemetry::Telemetry::new());
        let (_ready, ready) = watch::channel(true);
        let router = HttpApi::new(service, None, ready, 1 << 20).router();
        for route in ROUTES {
            let (method, path) = route.split_once(' ').unwrap();
            let request = http::Request::builder().method(method).uri(path).body(Body::from("{}")).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_ne!(response.status(), StatusCode::NOT_FOUND, "{route}");
            assert_ne!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{route}");
        }
        let request = http::Request::builder().uri("/nowhere").body(Body::empty()).unwrap();
        assert_eq!(router.oneshot(request).await.unwrap().status(), StatusCode::NOT_FOUND);
    }
}
