//! The gRPC server: the classifier service beside the standard health and reflection
//! services, with TLS, API keys, connection limits and graceful shutdown. The same port
//! accepts HTTP/1.1 too, for the JSON API and the playground ([`crate::http`]) and for
//! gRPC-Web calls from browsers.
//!
//! Health reports SERVING for "" and for `topics.v1.TopicClassifier` only once a model
//! is loaded (the server is never started without one), and NOT_SERVING as soon as
//! shutdown begins, so load balancers stop sending work while in-flight calls finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::{ApiKeys, Authorize};
use crate::http::HttpApi;
use crate::proto::topic_classifier_server::TopicClassifierServer;
use crate::reload::ServedModel;
use crate::service::{Arrival, ClassifierService, Limits, restate_transport_status};
use crate::telemetry::Telemetry;

/// The fully-qualified name clients and probes use for our service.
pub const SERVICE_NAME: &str = "topics.v1.TopicClassifier";

/// How often an idle connection is pinged, and how long a ping may go unanswered, so that
/// connections to vanished clients (a pod killed, a NAT entry dropped) are closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Largest gRPC message accepted or sent, in bytes. Must exceed `limits.max_text_bytes`
    /// by [`MESSAGE_OVERHEAD_BYTES`], so that an over-long text reaches our own check and
    /// its clear message; larger messages get RESOURCE_EXHAUSTED from the transport.
    pub max_message_bytes: usize,
    /// How long shutdown waits for open calls (a stuck client, an endless health watch)
    /// before the server stops anyway.
    pub shutdown_grace: Duration,
    /// How long health reports NOT_SERVING before the listener closes, so that load
    /// balancers and Kubernetes readiness probes see it and stop sending new calls.
    pub drain_delay: Duration,
    /// Connections older than this are asked to close (GOAWAY) once their calls end, so that
    /// long-lived clients reconnect and spread over replicas added since.
    pub max_connection_age: Option<Duration>,
    /// PEM certificate chain and private key; plaintext when absent.
    pub tls: Option<TlsIdentity>,
    /// When set, every call but health checks needs one of these keys.
    pub api_keys: Option<Arc<ApiKeys>>,
}

#[derive(Clone)]
pub struct TlsIdentity {
    pub certificate_pem: Vec<u8>,
    pub private_key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_message_bytes: 16 << 20,
            shutdown_grace: Duration::from_secs(20),
            drain_delay: Duration::ZERO,
            max_connection_age: None,
            tls: None,
            api_keys: None,
        }
    }
}

/// Room a message needs beyond its longest text: protobuf framing, the id, the other fields.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

impl ServerConfig {
    /// Refuses limits that would reject every request, or that would let the transport
    /// refuse a valid text before our own check can explain why.
    pub fn validate(&self) -> Result<(), ServeError> {
        let limits = &self.limits;
        if limits.max_text_bytes == 0 || limits.max_batch == 0 || limits.max_concurrent_requests == 0 {
            return Err(ServeError::ZeroLimit);
        }
        if limits.request_timeout == Some(Duration::ZERO) || self.max_connection_age == Some(Duration::ZERO) {
            return Err(ServeError::ZeroDuration);
        }
        let needed = limits.max_text_bytes.saturating_add(MESSAGE_OVERHEAD_BYTES);
        if self.max_message_bytes < needed {
            return Err(ServeError::MessageLimitTooSmall { message: self.max_message_bytes, needed });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the text, batch and concurrency limits must be at least 1")]
    ZeroLimit,
    #[error("the request timeout and the connection age must be longer than zero")]
    ZeroDuration,
    #[error(
        "max message size ({message} bytes) must be at least the text limit plus {MESSAGE_OVERHEAD_BYTES} bytes ({needed})"
    )]
    MessageLimitTooSmall { message: usize, needed: usize },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Serves the model in `served` on `listener` until `shutdown` resolves, then reports
/// NOT_SERVING, waits `config.drain_delay`, stops accepting connections and returns once
/// in-flight calls have finished, or once `config.shutdown_grace` has passed.
pub async fn serve(
    listener: TcpListener,
    served: Arc<ServedModel>,
    telemetry: Telemetry,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    telemetry.set_model(&served.current().meta().version);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    health_reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;

    // grpcurl and older tools ask v1alpha, newer ones v1: serve both. Reflection shows
    // the API, so it is behind the keys too; health stays open for probes.
    let authorize = Authorize::new(config.api_keys.clone());
    let reflection_v1 = InterceptedService::new(reflection().build_v1()?, authorize.clone());
    let reflection_v1alpha = InterceptedService::new(reflection().build_v1alpha()?, authorize.clone());
    // One service value for both APIs, so they share the admission limit.
    let service = ClassifierService::new(served, config.limits, telemetry.clone());
    let classifier = InterceptedService::new(
        TopicClassifierServer::new(service.clone())
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
        authorize,
    );
    let (ready, readiness) = watch::channel(true);
    let http_api = HttpApi::new(service, config.api_keys.clone(), readiness, config.max_message_bytes);
    // The JSON routes' fallback also answers unknown gRPC methods, as tonic's own would.
    let routes = Routes::from(http_api.router())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(classifier)
        .prepare();

    let shutdown_started = Arc::new(Notify::new());
    let draining = {
        let shutdown_started = Arc::clone(&shutdown_started);
        let drain_delay = config.drain_delay;
        async move {
            shutdown.await;
            tracing::info!(
                drain_delay_s = drain_delay.as_secs_f64(),
                "shutting down: health is NOT_SERVING, finishing in-flight calls"
            );
            health_reporter.set_service_status("", ServingStatus::NotServing).await;
            health_reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
            ready.send_replace(false);
            tokio::time::sleep(drain_delay).await;
            shutdown_started.notify_one();
        }
    };

    let mut builder = Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(age) = config.max_connection_age {
        // No max_connection_age_grace: in tonic 0.14 setting one replaces the GOAWAY at
        // `age` with an abrupt close at `age + grace`, cutting calls in flight. Without it
        // the connection gets GOAWAY at `age` and closes once its calls are done.
        builder = builder.max_connection_age(age);
    }
    if let Some(tls) = &config.tls {
        let identity = Identity::from_pem(&tls.certificate_pem, &tls.private_key_pem);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let server = builder
        .layer(tower_layer::layer_fn(GrpcWebOr::new))
        .layer(tower::util::MapRequestLayer::new(stamp_arrival))
        .layer(telemetry.layer())
        .layer(tower::util::MapResponseLayer::new(restate_transport_refusal))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), draining);

    tokio::select! {
        served = server => served?,
        () = async {
            shutdown_started.notified().await;
            tokio::time::sleep(config.shutdown_grace).await;
        } => {
            tracing::warn!(grace_s = config.shutdown_grace.as_secs_f64(), "shutdown grace period over; closing the calls still open");
        }
    }
    Ok(())
}

/// Runs first, before the transport starts timing the call's deadline, so that our own
/// deadline is never later than the transport's and the client gets DEADLINE_EXCEEDED.
fn stamp_arrival<B>(mut request: http::Request<B>) -> http::Request<B> {
    request.extensions_mut().insert(Arrival(tokio::time::Instant::now()));
    request
}

/// Gives a refusal the transport made before any handler ran (a trailers-only answer,
/// its status in the headers) the code and message [`restate_transport_status`] gives it.
/// Inside the metrics layer, so that calls are counted by the code the client sees.
fn restate_transport_refusal<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let restated = tonic::Status::from_header_map(headers).and_then(|status| restate_transport_status(&status));
    if let Some(status) = restated {
        headers.remove("grpc-status-details-bin");
        if let Err(error) = status.add_header(headers) {
            tracing::warn!(%error, "cannot restate a transport refusal; it goes out as the transport made it");
        }
    }
    response
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends gRPC-Web calls through tonic-web's translation and every other request straight
/// on. Applied to the whole server, tonic-web would answer 400 to any HTTP/1.1 request
/// that is not gRPC-Web, the JSON routes included; and translating before the metrics
/// layer lets that layer read a gRPC-Web call's status from real trailers.
#[derive(Debug, Clone)]
struct GrpcWebOr<S> {
    web: tonic_web::GrpcWebService<S>,
    plain: S,
}

impl<S: Clone> GrpcWebOr<S> {
    fn new(inner: S) -> Self {
        use tower_layer::Layer as _;
        Self { web: tonic_web::GrpcWebLayer::new().layer(inner.clone()), plain: inner }
    }
}

fn is_grpc_web(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"))
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcWebOr<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + std::fmt::Display,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.plain.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        use tower::ServiceExt as _;
        let request = request.map(tonic::body::Body::new);
        // Readiness was checked on `plain`; the clone taken for the call must be checked
        // afresh, which `oneshot` does.
        if is_grpc_web(request.headers()) {
            let web = self.web.clone();
            Box::pin(async move { web.oneshot(request).await.map_err(Into::into) })
        } else {
            let plain = self.plain.clone();
            Box::pin(async move { Ok(plain.oneshot(request).await.map_err(Into::into)?.map(tonic::body::Body::new)) })
        }
    }
}
