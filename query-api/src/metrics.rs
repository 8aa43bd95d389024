//! The metric families of the query API, declared once (see
//! [`trailhouse_common::metrics`]); [`describe`] runs when the router is built.

use trailhouse_common::metrics::{self as m, Family, QUERY_HTTP};

/// Requests refused with 401, by `reason` (`missing`, `invalid`, `expired`,
/// `not_yet_valid`, `no_org`, `too_large`, `too_long`).
pub const AUTH_FAILURES: &str = "trailhouse_query_auth_failures_total";
const AUTH_REASONS: &[&[&str]] = &[
    &["missing"],
    &["invalid"],
    &["expired"],
    &["not_yet_valid"],
    &["no_org"],
    &["too_large"],
    &["too_long"],
];
/// Requests refused with 429 because their org's rate limit was spent.
pub const RATE_LIMITED: &str = "trailhouse_query_rate_limited_total";
/// Requests refused with 429 because their org had its most queries running.
pub const ORG_BUSY: &str = "trailhouse_query_org_busy_total";
/// Requests refused with 503 because the service had its most queries running.
pub const OVERLOADED: &str = "trailhouse_query_overloaded_total";
/// Pages cut short by the byte cap (their cursor continues after the last row).
pub const PAGES_SHORTENED: &str = "trailhouse_query_pages_shortened_total";
/// Time of one ClickHouse query, by `query` (`rows`, `count`, `stats`) and `outcome`.
pub const CLICKHOUSE_SECONDS: &str = "trailhouse_query_clickhouse_duration_seconds";
/// ClickHouse queries that failed, by `kind` (a [`crate::store::StoreError`]).
pub const CLICKHOUSE_ERRORS: &str = "trailhouse_query_clickhouse_errors_total";
const ERROR_KINDS: &[&[&str]] = &[&["unavailable"], &["too_large"], &["timeout"], &["query"]];
/// Rows ClickHouse returned to the query API.
pub const ROWS_RETURNED: &str = "trailhouse_query_rows_returned_total";
/// Bytes of those rows (strings and maps, as the page cap counts them).
pub const BYTES_RETURNED: &str = "trailhouse_query_returned_bytes_total";

/// Every family the service exports (besides the process metrics).
pub fn families() -> Vec<Family> {
    let mut all = vec![
        Family::counter(AUTH_FAILURES, "Requests refused with 401, by reason.")
            .labelled(&["reason"])
            .preset(AUTH_REASONS),
        Family::counter(RATE_LIMITED, "Requests refused with 429 because their org's rate limit was spent."),
        Family::counter(ORG_BUSY, "Requests refused with 429 because their org had its most queries running."),
        Family::counter(OVERLOADED, "Requests refused with 503 because the service had its most queries running."),
        Family::counter(PAGES_SHORTENED, "Pages cut short by the byte cap."),
        Family::histogram(CLICKHOUSE_SECONDS, "Time of one ClickHouse query, by query kind and outcome.")
            .labelled(&["query", "outcome"]),
        Family::counter(CLICKHOUSE_ERRORS, "ClickHouse queries that failed, by kind.")
            .labelled(&["kind"])
            .preset(ERROR_KINDS),
        Family::counter(ROWS_RETURNED, "Rows ClickHouse returned to the query API."),
        Family::counter(BYTES_RETURNED, "Bytes of the rows ClickHouse returned (strings and maps, as the page cap counts them)."),
    ];
    all.extend(QUERY_HTTP.families());
    all
}

/// Describes every family and creates the counters at 0.
pub fn describe() {
    m::describe(QUERY_HTTP.service, &families());
    QUERY_HTTP.preset("GET", crate::api::ROUTES.iter().map(|(path, _)| *path));
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalogue_follows_the_conventions() {
        trailhouse_common::metrics::check(&super::families()).expect("catalogue");
    }
}
