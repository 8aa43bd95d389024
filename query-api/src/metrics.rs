//! Metric names of the query API, defined once.

/// Requests refused with 401, by `reason` (`missing`, `invalid`, `expired`,
/// `not_yet_valid`, `no_org`, `too_large`, `too_long`).
pub const AUTH_FAILURES: &str = "trailhouse_query_auth_failures_total";
/// Requests refused with 429 because their org's rate limit was spent.
pub const RATE_LIMITED: &str = "trailhouse_query_rate_limited_total";
/// Requests refused with 429 because their org had its most queries running.
pub const ORG_BUSY: &str = "trailhouse_query_org_busy_total";
/// Requests refused with 503 because the service had its most queries running.
pub const OVERLOADED: &str = "trailhouse_query_overloaded_total";
/// Pages cut short by the byte cap (their cursor continues after the last row).
pub const PAGES_SHORTENED: &str = "trailhouse_query_pages_shortened_total";
