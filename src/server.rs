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
    /// Largest gRPC message accepted or sent, in bytes. Must exceed `limits.max_text_bytes`,
    /// so that an over-long text reaches our own check and its clear message.
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

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("max message size ({message} bytes) must be larger than the text limit ({text} bytes)")]
    MessageLimitTooSmall { message: usize, text: usize },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
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
    if config.max_message_bytes <= config.limits.max_text_bytes {
        return Err(ServeError::MessageLimitTooSmall {
            message: config.max_message_bytes,
            text: config.limits.max_text_bytes,
        });
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    health_reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

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
