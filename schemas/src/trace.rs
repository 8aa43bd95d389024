//! W3C trace context carried with each event (the `traceparent` header on
//! its Kafka message).

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
    }
}
