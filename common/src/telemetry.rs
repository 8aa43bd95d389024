//! Logs, traces and metrics: JSON logs to stdout (`RUST_LOG` filters), with
//! the trace and span ids of the current span on every line inside one;
//! spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; and
//! a Prometheus recorder whose exporter the `/metrics` endpoint renders.

mod format;
pub mod throttle;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub use format::JsonLines;

use crate::metrics::Exporter;

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
    pub metrics: Option<Exporter>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("trace exporter shutdown failed: {e}");
        }
    }
}

/// The process-wide Prometheus exporter (installed at most once; tests that
/// start several services in one process share it).
pub fn metrics_handle() -> Option<Exporter> {
    static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();
    EXPORTER
        .get_or_init(|| match Exporter::install() {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("metrics recorder not installed: {e}");
                None
            }
        })
        .clone()
}

/// Installs logging, tracing and metrics for a service binary. Spans get
/// trace ids (for the logs) even when no OTLP endpoint is set; they are
/// exported only when one is.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|e| !e.is_empty());
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    } else {
        // Spans still get ids (the logs carry them, and a caller's trace
        // id is kept), but none is sampled: nothing is recorded, and no
        // span of ours is handed on as a parent.
        provider = provider.with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff);
    }
    let provider = provider.build();
    // Without an exporter, spans exist only for their ids: nothing more is
    // tracked on them.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_tracked_inactivity(exporting)
        .with_location(exporting)
        .with_threads(exporting);
    let fmt = tracing_subscriber::fmt::layer()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(JsonLines::default());
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init()?;
    Ok(Telemetry {
        provider,
        metrics: metrics_handle(),
    })
}

/// Makes `span` continue the W3C trace context `traceparent` (e.g. from a
/// Kafka message header), so the work it covers joins the producer's trace.
/// Malformed values are ignored.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(cx) = remote_context(traceparent) {
        let _ = span.set_parent(cx);
    }
}

/// Adds a link from `span` to the span a `traceparent` names (a batch
/// links every request it carries). Malformed values are ignored.
pub fn link_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(cx) = remote_context(traceparent) {
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.add_link(sc);
        }
    }
}

fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}
