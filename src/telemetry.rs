//! The server's observability: Prometheus metrics, a tracing span and a request id for
//! every gRPC call, and the small HTTP endpoint a scraper reads the metrics from.
//!
//! One [`Telemetry`] is shared by three users: the tower layer from [`Telemetry::layer`]
//! (request counts by method and final gRPC status, latency, calls in flight), the
//! classifier service ([`Telemetry::count_document`], [`Telemetry::set_model`]) and
//! [`serve_metrics`].
//!
//! A gRPC call is only over when its response body ends: a unary answer carries its
//! status in the trailers after the message, an error without a message carries it in the
//! headers ("trailers-only"), and a streaming call can run for minutes. So the layer keeps
//! the call's bookkeeping inside the response body and settles it when the trailers go
//! out, or when the body is dropped; a client that hangs up before any status counts as
//! CANCELLED, and nothing (in particular the in-flight gauge) can leak.
//!
//! Label values are bounded: a method label is one of [`KNOWN_METHODS`] or `other`, so a
//! client probing random paths cannot grow the metrics without limit.
//!
//! Plain HTTP requests (the JSON API, probes, the playground) pass through the same layer.
//! They carry no gRPC status, so they are told apart by their content type: their method
//! label is their route from [`crate::http::ROUTES`] (e.g. `POST /v1/classify`) or `other`,
//! and their code is the HTTP status (`200`, `400`, …; rare ones by class, `3xx`), never a
//! gRPC code name, so a `code="OK"` query still counts gRPC calls only.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing::instrument::Instrumented;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header that carries a call's request id, read from requests and echoed on responses.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client, in bytes: ids are logged and echoed.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Every method the server exposes, as `package.Service/Method`; the metrics name these
/// and fold every other path into [`OTHER_METHOD`]. A test checks the list against the
/// services' descriptors, so a new RPC cannot be forgotten here.
pub const KNOWN_METHODS: &[&str] = &[
    "topics.v1.TopicClassifier/Classify",
    "topics.v1.TopicClassifier/ClassifyBatch",
    "topics.v1.TopicClassifier/ClassifyStream",
    "topics.v1.TopicClassifier/GetModelInfo",
    "topics.v1.TopicClassifier/ReloadModel",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The method label of any path not in [`KNOWN_METHODS`].
pub const OTHER_METHOD: &str = "other";

/// The only path [`serve_metrics`] answers.
pub const METRICS_PATH: &str = "/metrics";

/// Latency bucket bounds in seconds: 1–2.5–5 steps from 10 µs (a cached health check)
/// to 10 s (a large batch on a loaded machine); slower calls land in `+Inf`.
const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A metrics connection must send its request headers within this time, so idle or
/// trickling connections cannot pile up on the monitoring port.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most metrics connections open at once; more are closed on arrival. A scraper needs one.
const MAX_METRICS_CONNECTIONS: usize = 64;

/// How long [`serve_metrics`] waits, after shutdown, for responses still being written.
const METRICS_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DocumentLabels {
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Metrics shared by the server's layer, the service and the /metrics endpoint. Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    documents: Family<DocumentLabels, Counter>,
    model_info: Family<VersionLabels, Gauge>,
    /// The version `model_info` shows; the lock also keeps two reloads from interleaving
    /// and leaving two versions at 1.
    model_version: Mutex<Option<String>>,
    /// Distinguishes this process's generated request ids from another's (or a restart's).
    id_prefix: u64,
    next_id: AtomicU64,
}

impl Telemetry {
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        let documents = Family::<DocumentLabels, Counter>::default();
        let model_info = Family::<VersionLabels, Gauge>::default();

        // The registry appends `_total` to counters itself.
        let mut registry = Registry::default();
        registry.register(
            "topics_grpc_requests",
            "gRPC calls finished, by method and final status (HTTP requests: by route and HTTP status)",
            requests.clone(),
        );
        registry.register(
            "topics_grpc_request_duration_seconds",
            "Time from a gRPC call's arrival to the end of its response",
            durations.clone(),
        );
        registry.register(
            "topics_grpc_requests_in_flight",
            "gRPC calls arrived and not yet finished",
            in_flight.clone(),
        );
        registry.register("topics_documents", "Documents classified, by the label given", documents.clone());
        registry.register("topics_model_info", "The model being served (value always 1)", model_info.clone());

        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                durations,
                in_flight,
                documents,
                model_info,
                model_version: Mutex::new(None),
                id_prefix: random_u64(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Info metric `topics_model_info{version="..."} 1`; replaces the previous version's series (hot reload swaps models).
    pub fn set_model(&self, version: &str) {
        // Nothing is left half-done by a panic under this lock, so a poisoned one is still good.
        let mut current = self.inner.model_version.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == Some(version) {
            return;
        }
        // The new series goes up before the old one goes, so a scrape in between never
        // sees no model at all.
        self.inner.model_info.get_or_create(&VersionLabels { version: version.to_owned() }).set(1);
        if let Some(old) = current.replace(version.to_owned()) {
            self.inner.model_info.remove(&VersionLabels { version: old });
        }
    }

    /// Counter `topics_documents_total{label="..."}`: documents classified, by the label given.
    pub fn count_document(&self, label: &str) {
        self.inner.documents.get_or_create(&DocumentLabels { label: label.to_owned() }).inc();
    }

    /// A tower Layer for `tonic::transport::Server::builder().layer(...)`.
    pub fn layer(&self) -> TelemetryLayer {
        TelemetryLayer { telemetry: self.clone() }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail and our label values always encode, so an
        // error here is a bug in the metrics crate: report it rather than crash a scrape.
        if let Err(error) = prometheus_text::encode(&mut text, &self.inner.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }

    /// The client's id if it is usable, else a new one.
    fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(given) = headers.get(REQUEST_ID_HEADER)
            && is_valid_request_id(given)
        {
            return given.clone();
        }
        let serial = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{serial:x}", self.inner.id_prefix);
        // Hex digits and a dash always make a valid header value.
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unnamed"))
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").field("in_flight", &self.inner.in_flight.get()).finish_non_exhaustive()
    }
}

/// Printable ASCII (space included), 1 to [`MAX_REQUEST_ID_BYTES`] bytes: safe to log and echo.
fn is_valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_BYTES && bytes.iter().all(|b| (b' '..=b'~').contains(b))
}

/// Unpredictable enough to keep request ids of different processes apart, without a
/// dependency: std's hasher keys are random per process, and time and pid vary too.
fn random_u64() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}

/// The metrics label for a request path.
fn method_label(path: &str) -> &'static str {
    let name = path.strip_prefix('/').unwrap_or(path);
    KNOWN_METHODS.iter().copied().find(|known| *known == name).unwrap_or(OTHER_METHOD)
}

/// gRPC (and gRPC-Web, once translated) calls say so in their content type; anything else
/// is a plain HTTP request.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The method label for a plain HTTP request: its route, or `other`.
fn route_label(method: &Method, path: &str) -> &'static str {
    crate::http::ROUTES
        .iter()
        .copied()
        .find(|route| route.split_once(' ').is_some_and(|(m, p)| m == method.as_str() && p == path))
        .unwrap_or(OTHER_METHOD)
}

/// The code label for a plain HTTP response: the statuses the server gives by number,
/// any other by class, so that the label set stays small.
fn http_code(status: StatusCode) -> &'static str {
    const NAMED: &[&str] = &["200", "400", "401", "404", "405", "413", "429", "499", "500", "501", "503", "504"];
    let class = match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    NAMED.iter().copied().find(|named| *named == status.as_str()).unwrap_or(class)
}

/// The `grpc-status` in `headers`, by its canonical name.
fn grpc_status(headers: &HeaderMap) -> Option<&'static str> {
    headers.get("grpc-status").map(|value| code_name(tonic::Code::from_bytes(value.as_bytes())))
}

/// The canonical name of a gRPC status code, as the metrics and the JSON errors write it.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One call's bookkeeping, from arrival until it is dropped: dropping it is what
/// records the call, so every way a call can end (trailers sent, error, client gone,
/// server shutting down) is counted exactly once.
struct Call {
    telemetry: Telemetry,
    method: &'static str,
    started: Instant,
    /// The final status once known; a call dropped without one was cancelled.
    code: Option<&'static str>,
}

impl Call {
    fn start(telemetry: &Telemetry, method: &'static str) -> Self {
        telemetry.inner.in_flight.inc();
        Self { telemetry: telemetry.clone(), method, started: Instant::now(), code: None }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let inner = &self.telemetry.inner;
        let code = self.code.unwrap_or("CANCELLED");
        inner.requests.get_or_create(&RequestLabels { method: self.method, code }).inc();
        inner
            .durations
            .get_or_create(&MethodLabels { method: self.method })
            .observe(self.started.elapsed().as_secs_f64());
        inner.in_flight.dec();
    }
}

/// See [`Telemetry::layer`].
#[derive(Clone, Debug)]
pub struct TelemetryLayer {
    telemetry: Telemetry,
}

impl<S> tower_layer::Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TelemetryService { inner, telemetry: self.telemetry.clone() }
    }
}

/// The service [`TelemetryLayer`] wraps around the server's routes.
#[derive(Clone, Debug)]
pub struct TelemetryService<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for TelemetryService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = Response<TelemetryBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        let method =
            if grpc { method_label(request.uri().path()) } else { route_label(request.method(), request.uri().path()) };
        let call = Call::start(&self.telemetry, method);
        let request_id = self.telemetry.request_id(request.headers());
        // The span shows the real path, which a bounded metrics label cannot; tracing
        // escapes it when printing.
        let span = tracing::info_span!(
            "request",
            method = request.uri().path(),
            request_id = request_id.to_str().unwrap_or_default(),
        );
        crate::otel::join_remote_trace(&span, request.headers());
        // Handlers read the id from the request metadata for their own logs: give them
        // the one we echo, and only that one.
        request.headers_mut().insert(REQUEST_ID_HEADER, request_id.clone());
        ResponseFuture { inner: self.inner.call(request).instrument(span), call: Some(call), request_id, grpc }
    }
}

pin_project! {
    /// The response future of [`TelemetryService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        call: Option<Call>,
        request_id: HeaderValue,
        grpc: bool,
    }
}

impl<F, E, ResBody> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: Body,
{
    type Output = Result<Response<TelemetryBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let outcome = ready!(this.inner.as_mut().poll(cx));
        let mut call = this.call.take();
        match outcome {
            Ok(mut response) => {
                if let Some(call) = call.as_mut() {
                    if !*this.grpc {
                        // A plain HTTP answer is settled by its status line.
                        call.code = Some(http_code(response.status()));
                    } else if let Some(code) = grpc_status(response.headers()) {
                        // A trailers-only response: its headers hold the final status.
                        call.code = Some(code);
                    }
                }
                response.headers_mut().insert(REQUEST_ID_HEADER, this.request_id.clone());
                let span = this.inner.span().clone();
                Poll::Ready(Ok(response.map(|inner| TelemetryBody { inner, call, span })))
            }
            Err(error) => {
                let error: BoxError = error.into();
                // tonic answers a Status error with that status, and anything else
                // with UNKNOWN or a reset stream.
                if let Some(call) = call.as_mut() {
                    call.code = Some(error.downcast_ref::<tonic::Status>().map_or("UNKNOWN", |s| code_name(s.code())));
                }
                Poll::Ready(Err(error))
            }
        }
    }
}

pin_project! {
    /// A response body that settles its call's metrics when it ends or is dropped.
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
        span: tracing::Span,
    }
}

impl<B: Body> Body for TelemetryBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // A streaming handler does its work while the body is polled: keep it in the call's span.
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut call) = this.call.take()
                {
                    call.code = Some(grpc_status(trailers).unwrap_or("UNKNOWN"));
                }
            }
            // A body that fails or ends without a status leaves the client with
            // an error it cannot tell apart from an unknown one.
            Some(Err(_)) | None => {
                if let Some(mut call) = this.call.take() {
                    call.code.get_or_insert("UNKNOWN");
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for TelemetryBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBody").finish_non_exhaustive()
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").field("request_id", &self.request_id).finish_non_exhaustive()
    }
}

/// Serves `GET /metrics` (Prometheus text format, content-type `text/plain; version=0.0.4`
/// or the OpenMetrics one) on `listener` until `shutdown` resolves; other paths get 404.
///
/// Accept errors are logged and retried, so running out of file descriptors for a while
/// does not end monitoring for good. After `shutdown` no connection is accepted; idle
/// connections close at once and responses being written get a few seconds to finish.
pub async fn serve_metrics(
    listener: TcpListener,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving metrics on {METRICS_PATH}");

    let (closing, closed) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                while connections.try_join_next().is_some() {}
                if connections.len() >= MAX_METRICS_CONNECTIONS {
                    tracing::warn!(%peer, "too many metrics connections; closing a new one");
                    continue;
                }
                connections.spawn(serve_connection(stream, telemetry.clone(), closed.clone()));
            }
            Err(error) => accept_failed(error).await,
        }
    }

    drop(listener);
    // Our own receiver `closed` is still alive, so this send reaches every connection.
    let _ = closing.send(());
    let drained =
        tokio::time::timeout(METRICS_SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("metrics connections still open after the shutdown grace period; closing them");
        connections.abort_all();
    }
    Ok(())
}

async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted, WouldBlock};
    // These concern one peer that gave up during the handshake, not the listener.
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted | WouldBlock) {
        tracing::debug!(%error, "metrics connection failed before it was accepted");
        return;
    }
    // Usually no file descriptors or memory left: retrying at once would spin a core.
    tracing::warn!(%error, "cannot accept metrics connections; retrying shortly");
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn serve_connection(stream: TcpStream, telemetry: Telemetry, mut closing: watch::Receiver<()>) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(&telemetry, request.method(), request.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        // Err means serve_metrics itself is gone: close all the same.
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "metrics connection ended with an error");
    }
}

fn respond(telemetry: &Telemetry, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if path != METRICS_PATH {
        return plain(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(telemetry.encode())));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::uri::PathAndQuery;
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tonic::Code;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Endpoint, Server};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    use tower::ServiceExt as _;
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    use super::*;

    /// Every wait in these tests gives up after this long instead of hanging the suite.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// The exposition once it holds every one of `lines`. The server settles a call
    /// when it drops the response body, which can come just after the client has its
    /// answer, hence the polling.
    async fn exposition_with(telemetry: &Telemetry, lines: &[&str]) -> String {
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            let text = telemetry.encode();
            if lines.iter().all(|wanted| text.lines().any(|line| line == *wanted)) {
                return text;
            }
            assert!(Instant::now() < deadline, "expected lines {lines:#?} in:\n{text}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    struct HealthServer {
        address: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<Result<(), tonic::transport::Error>>,
        // Health watches end when the reporter goes: keep it for the server's lifetime.
        _reporter: tonic_health::server::HealthReporter,
    }

    impl HealthServer {
        /// A real tonic server on a free loopback port, with only the health service, behind our layer.
        async fn start(telemetry: &Telemetry) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
            let address = listener.local_addr().expect("bound address");
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
            let (stop, stopped) = oneshot::channel::<()>();
            let server = Server::builder().layer(telemetry.layer()).add_service(health).serve_with_incoming_shutdown(
                TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            );
            Self { address, stop, task: tokio::spawn(server), _reporter: reporter }
        }

        async fn channel(&self) -> Channel {
            let endpoint = Endpoint::from_shared(format!("http://{}", self.address)).expect("endpoint");
            tokio::time::timeout(TEST_TIMEOUT, endpoint.connect()).await.expect("connect in time").expect("connect")
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            let served = tokio::time::timeout(TEST_TIMEOUT, self.task).await.expect("server stops in time");
            served.expect("server task").expect("server ran cleanly");
        }
    }

    fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> String {
        let id = metadata.get("x-request-id").expect("an x-request-id header");
        id.to_str().expect("a printable id").to_owned()
    }

    #[tokio::test]
    async fn grpc_calls_are_counted_by_method_and_final_status() {
        let telemetry = Telemetry::new();
        let server = HealthServer::start(&telemetry).await;
        let channel = server.channel().await;
        let mut health = HealthClient::new(channel.clone());

        // OK travels in the trailers after the message.
        let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        request.metadata_mut().insert("x-request-id", "client chosen 42".parse().expect("metadata value"));
        let response = tokio::time::timeout(TEST_TIMEOUT, health.check(request)).await.expect("in time");
        let response = response.expect("health check");
        assert_eq!(request_id_of(response.metadata()), "client chosen 42");

        // NOT_FOUND travels alone in the headers (trailers-only); no id given, so one is made.
        let missing = health.check(HealthCheckRequest { service: "no.such.Service".to_owned() });
        let missing = tokio::time::timeout(TEST_TIMEOUT, missing).await.expect("in time").expect_err("unknown service");
        assert_eq!(missing.code(), Code::NotFound);
        let generated = request_id_of(missing.metadata());
        assert!(is_valid_request_id(&HeaderValue::from_str(&generated).expect("header value")), "{generated:?}");
        assert_ne!(generated, "client chosen 42");

        // A path no service serves must not become a label of its own.
        let mut grpc = tonic::client::Grpc::new(channel);
        tokio::time::timeout(TEST_TIMEOUT, grpc.ready()).await.expect("in time").expect("ready");
        let unknown = grpc.unary(
            tonic::Request::new(HealthCheckRequest::default()),
            PathAndQuery::from_static("/unknown.v1.Nowhere/Call"),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        );
        let unknown = tokio::time::timeout(TEST_TIMEOUT, unknown).await.expect("in time").expect_err("no such service");
        assert_eq!(unknown.code(), Code::Unimplemented);

        let text = exposition_with(
            &telemetry,
            &[
                r#"topics_grpc_requests_total{method="grpc.health.v1.Health/Check",code="OK"} 1"#,
                r#"topics_grpc_requests_total{method="grpc.health.v1.Health/Check",code="NOT_FOUND"} 1"#,
                r#"topics_grpc_requests_total{method="other",code="UNIMPLEMENTED"} 1"#,
                r#"topics_grpc_request_duration_seconds_count{method="grpc.health.v1.Health/Check"} 2"#,
                r#"topics_grpc_request_duration_seconds_count{method="other"} 1"#,
                r#"topics_grpc_request_duration_seconds_bucket{method="other",le="10"} 1"#,
                "topics_grpc_requests_in_flight 0",
            ],
        )
        .await;
        assert!(!text.contains("Nowhere"), "{text}");
        drop(health);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_call_the_client_abandons_counts_as_cancelled_and_leaves_the_gauge() {
        let telemetry = Telemetry::new();
        let server = HealthServer::start(&telemetry).await;
        let mut health = HealthClient::new(server.channel().await);

        let watch = health.watch(HealthCheckRequest { service: String::new() });
        let mut updates =
            tokio::time::timeout(TEST_TIMEOUT, watch).await.expect("in time").expect("watch").into_inner();
        let first = tokio::time::timeout(TEST_TIMEOUT, updates.message()).await.expect("in time");
        assert!(first.expect("an update").is_some());
        exposition_with(&telemetry, &["topics_grpc_requests_in_flight 1"]).await;

        drop(updates);
        exposition_with(
            &telemetry,
            &[
                r#"topics_grpc_requests_total{method="grpc.health.v1.Health/Watch",code="CANCELLED"} 1"#,
                r#"topics_grpc_request_duration_seconds_count{method="grpc.health.v1.Health/Watch"} 1"#,
                "topics_grpc_requests_in_flight 0",
            ],
        )
        .await;
        drop(health);
        server.stop().await;
    }

    /// Spans exist only under a subscriber; `routes` checks it runs inside the call's.
    fn record_spans() -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry())
    }

    /// A stand-in for the server's routes: the path picks how the call ends.
    async fn routes(request: Request<()>) -> Result<Response<TestBody>, BoxError> {
        assert_eq!(tracing::Span::current().metadata().map(|span| span.name()), Some("request"));
        let id = request.headers().get(REQUEST_ID_HEADER).expect("the layer passes the id on");
        assert!(is_valid_request_id(id));
        let trailers = |code: &'static str| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static(code));
            Some(Ok(trailers))
        };
        let body = |trailers| Full::new(Bytes::from_static(b"message")).with_trailers(std::future::ready(trailers));
        match request.uri().path() {
            "/topics.v1.TopicClassifier/Classify" => Ok(Response::new(body(trailers("3")))),
            "/topics.v1.TopicClassifier/ClassifyBatch" => Err(tonic::Status::unavailable("down").into()),
            "/topics.v1.TopicClassifier/GetModelInfo" => Ok(Response::new(body(None))),
            "/v1/classify" => {
                let mut response = Response::new(body(None));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                Ok(response)
            }
            "/healthz" | "/nowhere" => Ok(Response::new(body(None))),
            _ => Err("not a gRPC error".into()),
        }
    }

    type TestBody = http_body_util::combinators::WithTrailers<
        Full<Bytes>,
        std::future::Ready<Option<Result<HeaderMap, Infallible>>>,
    >;

    fn request(path: &str, id: Option<HeaderValue>) -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() = path.parse().expect("a path");
        request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        if let Some(id) = id {
            request.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
        request
    }

    #[tokio::test]
    async fn the_layer_finds_the_status_in_trailers_errors_or_nowhere() {
        let _spans = record_spans();
        let telemetry = Telemetry::new();
        let service = telemetry.layer().layer(tower::service_fn(routes));

        let response = service.clone().oneshot(request("/topics.v1.TopicClassifier/Classify", None)).await;
        let collected = response.expect("a response").into_body().collect().await.expect("the body");
        assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")), Some(&HeaderValue::from_static("3")));

        let error = service.clone().oneshot(request("/topics.v1.TopicClassifier/ClassifyBatch", None)).await;
        assert!(error.is_err());
        let error = service.clone().oneshot(request("/topics.v1.TopicClassifier/Oops", None)).await;
        assert!(error.is_err());

        let response = service.clone().oneshot(request("/topics.v1.TopicClassifier/GetModelInfo", None)).await;
        response.expect("a response").into_body().collect().await.expect("the body");

        let text = exposition_with(
            &telemetry,
            &[
                r#"topics_grpc_requests_total{method="topics.v1.TopicClassifier/Classify",code="INVALID_ARGUMENT"} 1"#,
                r#"topics_grpc_requests_total{method="topics.v1.TopicClassifier/ClassifyBatch",code="UNAVAILABLE"} 1"#,
                r#"topics_grpc_requests_total{method="other",code="UNKNOWN"} 1"#,
                r#"topics_grpc_requests_total{method="topics.v1.TopicClassifier/GetModelInfo",code="UNKNOWN"} 1"#,
                "topics_grpc_requests_in_flight 0",
            ],
        )
        .await;
        assert!(!text.contains("CANCELLED"), "{text}");
    }

    #[tokio::test]
    async fn plain_http_requests_count_by_route_and_http_status() {
        let _spans = record_spans();
        let telemetry = Telemetry::new();
        let service = telemetry.layer().layer(tower::service_fn(routes));
        let plain = |method: Method, path: &str| {
            let mut request = Request::new(());
            *request.method_mut() = method;
            *request.uri_mut() = path.parse().expect("a path");
            request
        };
        for request in
            [plain(Method::POST, "/v1/classify"), plain(Method::GET, "/healthz"), plain(Method::GET, "/nowhere")]
        {
            let response = service.clone().oneshot(request).await.expect("a response");
            response.into_body().collect().await.expect("the body");
        }
        let text = exposition_with(
            &telemetry,
            &[
                r#"topics_grpc_requests_total{method="POST /v1/classify",code="400"} 1"#,
                r#"topics_grpc_requests_total{method="GET /healthz",code="200"} 1"#,
                r#"topics_grpc_requests_total{method="other",code="200"} 1"#,
                "topics_grpc_requests_in_flight 0",
            ],
        )
        .await;
        assert!(!text.contains("UNKNOWN"), "{text}");
    }

    #[tokio::test]
    async fn responses_and_bodies_dropped_early_count_as_cancelled() {
        let _spans = record_spans();
        let telemetry = Telemetry::new();
        let service = telemetry.layer().layer(tower::service_fn(routes));

        let mut unpolled = service.clone();
        let future = unpolled.ready().await.expect("ready").call(request("/topics.v1.TopicClassifier/Classify", None));
        assert!(telemetry.encode().contains("topics_grpc_requests_in_flight 1\n"));
        drop(future);

        let response = service.clone().oneshot(request("/topics.v1.TopicClassifier/Classify", None)).await;
        drop(response.expect("a response"));

        exposition_with(
            &telemetry,
            &[
                r#"topics_grpc_requests_total{method="topics.v1.TopicClassifier/Classify",code="CANCELLED"} 2"#,
                "topics_grpc_requests_in_flight 0",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn request_ids_are_echoed_when_usable_and_made_up_otherwise() {
        let _spans = record_spans();
        let telemetry = Telemetry::new();
        let service = telemetry.layer().layer(tower::service_fn(routes));
        let echoed = |id: HeaderValue| {
            let service = service.clone();
            async move {
                let response = service.oneshot(request("/topics.v1.TopicClassifier/Classify", Some(id))).await;
                response.expect("a response").headers().get(REQUEST_ID_HEADER).expect("an echoed id").clone()
            }
        };

        let longest = HeaderValue::from_str(&"i".repeat(MAX_REQUEST_ID_BYTES)).expect("header value");
        assert_eq!(echoed(longest.clone()).await, longest);
        let spaced = HeaderValue::from_static("batch 7/item 3");
        assert_eq!(echoed(spaced.clone()).await, spaced);

        let unusable = [
            HeaderValue::from_str(&"i".repeat(MAX_REQUEST_ID_BYTES + 1)).expect("header value"),
            HeaderValue::from_bytes(b"tab\there").expect("header value"),
            HeaderValue::from_bytes("café".as_bytes()).expect("header value"),
            HeaderValue::from_static(""),
        ];
        let mut made_up = Vec::new();
        for id in unusable {
            let replaced = echoed(id.clone()).await;
            assert_ne!(replaced, id);
            assert!(is_valid_request_id(&replaced), "{replaced:?}");
            made_up.push(replaced);
        }
        made_up.sort();
        made_up.dedup();
        assert_eq!(made_up.len(), 4, "generated ids repeat: {made_up:?}");

        let other_process = Telemetry::new().request_id(&HeaderMap::new());
        let ours = telemetry.request_id(&HeaderMap::new());
        assert_ne!(other_process.as_bytes()[..16], ours.as_bytes()[..16], "prefixes should differ");
    }

    #[test]
    fn unknown_paths_fold_into_other() {
        assert_eq!(method_label("/topics.v1.TopicClassifier/Classify"), "topics.v1.TopicClassifier/Classify");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        for path in
            ["/topics.v1.TopicClassifier/Nope", "/grpc.anything/Else", "/", "", "/x/../topics.v1.TopicClassifier"]
        {
            assert_eq!(method_label(path), OTHER_METHOD, "{path}");
        }
    }

    fn methods_in(descriptor_set: &[u8]) -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(descriptor_set).expect("a descriptor set");
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        methods
    }

    #[test]
    fn known_methods_are_exactly_those_the_server_serves() {
        let mut served: Vec<String> = [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .flat_map(methods_in)
        .collect();
        served.sort();
        served.dedup();
        let mut known: Vec<String> = KNOWN_METHODS.iter().map(|method| (*method).to_owned()).collect();
        known.sort();
        assert_eq!(known, served);
    }

    #[test]
    fn model_info_shows_only_the_current_version_and_documents_count_by_label() {
        let telemetry = Telemetry::new();
        telemetry.set_model("2026-01-a");
        telemetry.set_model("2026-01-a");
        telemetry.set_model("2026-02-b");
        telemetry.count_document("security");
        telemetry.count_document("security");
        telemetry.count_document("diplomacy");
        let text = telemetry.encode();
        assert!(text.contains("\ntopics_model_info{version=\"2026-02-b\"} 1\n"), "{text}");
        assert!(!text.contains("2026-01-a"), "{text}");
        assert!(text.contains("\ntopics_documents_total{label=\"security\"} 2\n"), "{text}");
        assert!(text.contains("\ntopics_documents_total{label=\"diplomacy\"} 1\n"), "{text}");
    }

    /// One HTTP/1.1 exchange on a fresh connection, read until the server closes it.
    async fn http(address: SocketAddr, method: &str, path: &str) -> String {
        let exchange = async {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("send");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("receive");
            response
        };
        tokio::time::timeout(TEST_TIMEOUT, exchange).await.expect("an answer in time")
    }

    #[tokio::test]
    async fn the_metrics_endpoint_serves_the_exposition_and_stops_on_shutdown() {
        let telemetry = Telemetry::new();
        telemetry.set_model("m-1");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, telemetry.clone(), async {
            let _ = stopped.await;
        }));

        let metrics = http(address, "GET", "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{metrics}");
        assert!(metrics.contains("\ntopics_model_info{version=\"m-1\"} 1\n"), "{metrics}");
        assert!(metrics.contains("\ntopics_grpc_requests_in_flight 0\n"), "{metrics}");

        let head = http(address, "HEAD", "/metrics").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && !head.contains("topics_model_info"), "{head}");
        let other = http(address, "GET", "/other").await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post = http(address, "POST", "/metrics").await;
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");

        // A connection that never sends a request must not hold shutdown up.
        let idle = TcpStream::connect(address).await.expect("connect");
        let _ = stop.send(());
        let served = tokio::time::timeout(METRICS_SHUTDOWN_GRACE / 2, server).await.expect("stops without waiting");
        served.expect("server task").expect("served cleanly");
        assert!(TcpStream::connect(address).await.is_err(), "still listening after shutdown");
        drop(idle);
    }
}
