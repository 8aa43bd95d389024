//! The byte cap of a page.

use super::clickhouse::classify_text;
use super::*;

fn row(body: usize) -> EventRow {
    let e = &trailhouse_schemas::examples::all()[0];
    let mut r = EventRow::from_event(e, Default::default());
    r.request_body = "b".repeat(body);
    r
}

#[test]
fn the_cap_keeps_a_prefix_and_at_least_one_row() {
    let size = row_bytes(&row(1000));
    // (row count, cap, rows kept, cut)
    let cases = [
        (5, usize::MAX, 5, false),
        (5, size * 5, 5, false),
        (5, size * 5 - 1, 4, true),
        (5, size * 2 + 1, 2, true),
        (5, 1, 1, true),
        (1, 1, 1, false),
        (0, 1, 0, false),
    ];
    for (n, max, kept, cut) in cases {
        let mut rows: Vec<EventRow> = (0..n).map(|_| row(1000)).collect();
        assert_eq!(cap(&mut rows, max), cut, "{n} rows, cap {max}");
        assert_eq!(rows.len(), kept, "{n} rows, cap {max}");
    }
}

#[test]
fn limit_errors_are_told_apart() {
    // (server text, kind)
    let cases = [
        (
            "Code: 396. DB::Exception: Limit for result exceeded",
            "large",
        ),
        ("Code: 158. DB::Exception: Limit for rows", "large"),
        ("Code: 307. DB::Exception: Limit for bytes", "large"),
        ("Code: 159. DB::Exception: Timeout exceeded", "timeout"),
        ("Code: 164. DB::Exception: readonly", "query"),
        ("no code at all", "query"),
    ];
    for (text, kind) in cases {
        let got = match classify_text(text.to_string()) {
            StoreError::TooLarge(_) => "large",
            StoreError::Timeout(_) => "timeout",
            _ => "query",
        };
        assert_eq!(got, kind, "{text}");
    }
}

#[test]
fn every_query_carries_the_limits() {
    let l = ClickHouseLimits {
        max_execution_secs: 10,
        max_result_rows: 100,
        max_result_bytes: 1000,
        readonly: true,
    };
    let s = l.settings();
    for (name, value) in [
        ("max_execution_time", "10"),
        ("max_result_rows", "100"),
        ("max_result_bytes", "1000"),
        ("result_overflow_mode", "throw"),
        ("readonly", "1"),
    ] {
        assert!(s.contains(&(name, value.to_string())), "{name}");
    }
}
