//! Metric names of the ingest service, defined once.

/// Events accepted and acknowledged by Kafka.
pub const EVENTS_ACCEPTED: &str = "trailhouse_ingest_events_accepted_total";
/// Events rejected by validation or authorization.
pub const EVENTS_REJECTED: &str = "trailhouse_ingest_events_rejected_total";
/// Requests answered 503 because the producer queue was full.
pub const QUEUE_FULL: &str = "trailhouse_ingest_queue_full_total";
/// Time from request to Kafka acknowledgement of every event in it.
pub const PUBLISH_SECONDS: &str = "trailhouse_ingest_publish_duration_seconds";
/// Requests refused with 401 (no key, a malformed header, an unknown key).
pub const AUTH_FAILURES: &str = "trailhouse_ingest_auth_failures_total";
/// Requests answered 429 because their org's rate limit was spent.
pub const RATE_LIMITED: &str = "trailhouse_ingest_rate_limited_total";
/// Requests answered 503 because too many were in flight.
pub const OVERLOADED: &str = "trailhouse_ingest_overloaded_total";
