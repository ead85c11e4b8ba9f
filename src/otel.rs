//! Optional OpenTelemetry export: request spans sent over OTLP/gRPC to a collector, each
//! joined to the caller's trace when the call carries a W3C `traceparent`.
//!
//! Off unless an endpoint is given; without an exporter installed, linking a span to a
//! remote parent does nothing, so the request path costs the same either way.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The service name spans are reported under.
pub const SERVICE_NAME: &str = "topics";

#[derive(Debug, thiserror::Error)]
#[error("cannot set up OpenTelemetry export to {endpoint}: {source}")]
pub struct OtelError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Exports spans in batches to the OTLP/gRPC collector at `endpoint` (e.g.
/// `http://otel-collector:4317`). Must be called inside a Tokio runtime. Shut the provider
/// down before exiting so that the last batch is sent.
pub fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, OtelError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| OtelError { endpoint: endpoint.to_owned(), source })?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(SERVICE_NAME).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// A tracing layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME))
}

/// Makes `span` a child of the trace named by the request's W3C `traceparent` header
/// (and `tracestate`), when there is one.
pub fn join_remote_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
