//! The gRPC server: the classifier service beside the standard health and reflection
//! services, with graceful shutdown.
//!
//! Health reports SERVING for "" and for `topics.v1.TopicClassifier` only once a model
//! is loaded (the server is never started without one), and NOT_SERVING as soon as
//! shutdown begins, so load balancers stop sending work while in-flight calls finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::model::Model;
use crate::proto::topic_classifier_server::TopicClassifierServer;
use crate::service::{ClassifierService, Limits};

/// The fully-qualified name clients and probes use for our service.
pub const SERVICE_NAME: &str = "topics.v1.TopicClassifier";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Largest gRPC message accepted or sent, in bytes. Must exceed `limits.max_text_bytes`
    /// by [`MESSAGE_OVERHEAD_BYTES`], so that an over-long text reaches our own check and
    /// its clear message; larger messages get OUT_OF_RANGE from the transport.
    pub max_message_bytes: usize,
    /// How long shutdown waits for open calls (a stuck client, an endless health watch)
    /// before the server stops anyway.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { limits: Limits::default(), max_message_bytes: 16 << 20, shutdown_grace: Duration::from_secs(20) }
    }
}

/// Room a message needs beyond its longest text: protobuf framing, the id, the other fields.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

impl ServerConfig {
    /// Refuses limits that would reject every request, or that would let the transport
    /// refuse a valid text before our own check can explain why.
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.limits.max_text_bytes == 0 || self.limits.max_batch == 0 {
            return Err(ServeError::ZeroLimit);
        }
        let needed = self.limits.max_text_bytes.saturating_add(MESSAGE_OVERHEAD_BYTES);
        if self.max_message_bytes < needed {
            return Err(ServeError::MessageLimitTooSmall { message: self.max_message_bytes, needed });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the text and batch limits must be at least 1")]
    ZeroLimit,
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

/// Serves `model` on `listener` until `shutdown` resolves, then stops accepting
/// connections and returns once in-flight calls have finished, or once
/// `config.shutdown_grace` has passed.
pub async fn serve(
    listener: TcpListener,
    model: Arc<Model>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    health_reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;

    // grpcurl and older tools ask v1alpha, newer ones v1: serve both.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let classifier = TopicClassifierServer::new(ClassifierService::new(model, config.limits))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let shutdown_started = Arc::new(Notify::new());
    let draining = {
        let shutdown_started = Arc::clone(&shutdown_started);
        async move {
            shutdown.await;
            tracing::info!("shutting down: health is NOT_SERVING, finishing in-flight calls");
            health_reporter.set_service_status("", ServingStatus::NotServing).await;
            health_reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
            shutdown_started.notify_one();
        }
    };

    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(classifier)
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
