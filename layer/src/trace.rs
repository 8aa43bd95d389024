//! W3C trace context handed on with each event.

/// Whether `value` is a well-formed W3C `traceparent` (version 00 layout,
/// non-zero trace and span ids).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, span, flags, ..] => {
            hex(version, 2)
                && *version != "ff"
                && (parts.len() == 4 || *version != "00")
                && hex(trace, 32)
                && trace.bytes().any(|b| b != b'0')
                && hex(span, 16)
                && span.bytes().any(|b| b != b'0')
                && hex(flags, 2)
        }
        _ => false,
    }
}

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
    sc.is_valid().then(|| {
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
    fn traceparent_syntax() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cases = [
            (ok.to_string(), true),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into(),
                false,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                false,
            ),
            (format!("{ok}-extra"), false),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra".into(),
                true,
            ),
            ("00-xyz-00f067aa0ba902b7-01".into(), false),
            (String::new(), false),
        ];
        for (value, valid) in cases {
            assert_eq!(is_valid_traceparent(&value), valid, "{value:?}");
        }
        // Without an exporter the span has no context: the valid incoming value passes.
        let span = tracing::info_span!("t");
        assert_eq!(outgoing_traceparent(&span, Some(ok)).as_deref(), Some(ok));
        assert_eq!(outgoing_traceparent(&span, Some("junk")), None);
    }
}
