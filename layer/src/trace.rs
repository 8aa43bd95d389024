//! W3C trace context handed on with each event.

pub use trailhouse_schemas::trace::is_valid_traceparent;

/// The `traceparent` to hand downstream from inside `span`: with the
/// `opentelemetry` feature, the span's own context when traces are exported;
/// else `incoming` passed through when it is well formed, so the trace still
/// joins up across services.
pub fn outgoing_traceparent(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    if let Some(own) = span_traceparent(span) {
        return Some(own);
    }
    incoming
        .filter(|v| is_valid_traceparent(v))
        .map(str::to_string)
}

#[cfg(feature = "opentelemetry")]
fn span_traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    // Unsampled spans (no exporter) are not handed on as parents.
    (sc.is_valid() && sc.is_sampled()).then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(not(feature = "opentelemetry"))]
fn span_traceparent(_: &tracing::Span) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_incoming_value_passes_through_without_an_exporter() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // Without an exporter the span has no context: the valid incoming value passes.
        let span = tracing::info_span!("t");
        assert_eq!(outgoing_traceparent(&span, Some(ok)).as_deref(), Some(ok));
        assert_eq!(outgoing_traceparent(&span, Some("junk")), None);
    }
}
