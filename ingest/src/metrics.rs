//! The metric families of the ingest service, declared once (see
//! [`trailhouse_common::metrics`]); [`describe`] runs when the router is built.

use trailhouse_common::metrics::{self as m, Family, INGEST_HTTP};

/// Events acknowledged by Kafka.
pub const EVENTS_ACCEPTED: &str = "trailhouse_ingest_events_accepted_total";
/// Events not accepted, by `reason` ([`REJECT_REASONS`]).
pub const EVENTS_REJECTED: &str = "trailhouse_ingest_events_rejected_total";
/// Why events are not accepted: failed validation, over the message size
/// limit, Kafka unavailable (down, queue full, not acknowledged: retryable),
/// or another publish failure that is not.
pub const REJECT_REASONS: &[&[&str]] =
    &[&["invalid"], &["too_large"], &["unavailable"], &["failed"]];
/// Requests answered 503 because the producer queue was full.
pub const QUEUE_FULL: &str = "trailhouse_ingest_queue_full_total";
/// Time from handing a request's events to the producer to Kafka's
/// acknowledgement of all of them.
pub const PUBLISH_SECONDS: &str = "trailhouse_ingest_publish_duration_seconds";
/// Messages in the producer's queue (waiting or in flight to Kafka).
pub const QUEUE_MESSAGES: &str = "trailhouse_ingest_producer_queue_messages";
/// Bytes of payload in the producer's queue.
pub const QUEUE_BYTES: &str = "trailhouse_ingest_producer_queue_bytes";
/// Whether the last broker probe succeeded (1) or not (0).
pub const BROKER_UP: &str = "trailhouse_ingest_broker_up";
/// Requests refused with 401, by `reason`.
pub const AUTH_FAILURES: &str = "trailhouse_ingest_auth_failures_total";
/// Why authentication failed.
pub const AUTH_REASONS: &[&[&str]] = &[&["missing"], &["malformed"], &["unknown_key"]];
/// Requests answered 429 because their org's rate limit was spent.
pub const RATE_LIMITED: &str = "trailhouse_ingest_rate_limited_total";
/// Requests answered 503 because too many were in flight.
pub const OVERLOADED: &str = "trailhouse_ingest_overloaded_total";

/// Every family the service exports (besides the process metrics).
pub fn families() -> Vec<Family> {
    let mut all = vec![
        Family::counter(EVENTS_ACCEPTED, "Events acknowledged by Kafka."),
        Family::counter(
            EVENTS_REJECTED,
            "Events not accepted, by reason: invalid, too_large, unavailable (Kafka; retryable), failed.",
        )
        .labelled(&["reason"])
        .preset(REJECT_REASONS),
        Family::counter(QUEUE_FULL, "Requests answered 503 because the producer queue was full."),
        Family::histogram(
            PUBLISH_SECONDS,
            "Time from handing a request's events to the producer to Kafka's acknowledgement of all of them.",
        ),
        Family::gauge(QUEUE_MESSAGES, "Messages in the producer queue, waiting or in flight to Kafka."),
        Family::gauge(QUEUE_BYTES, "Payload bytes in the producer queue."),
        Family::gauge(BROKER_UP, "1 when the last broker probe succeeded, else 0."),
        Family::counter(AUTH_FAILURES, "Requests refused with 401, by reason.")
            .labelled(&["reason"])
            .preset(AUTH_REASONS),
        Family::counter(RATE_LIMITED, "Requests answered 429 because their org's rate limit was spent."),
        Family::counter(OVERLOADED, "Requests answered 503 because too many were in flight."),
    ];
    all.extend(INGEST_HTTP.families());
    all
}

/// Describes every family and creates the counters at 0.
pub fn describe() {
    m::describe(INGEST_HTTP.service, &families());
    INGEST_HTTP.preset("POST", [crate::api::EVENTS_PATH]);
}

/// Counts `n` events not accepted for `reason` (one of [`REJECT_REASONS`]).
pub fn rejected(reason: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(EVENTS_REJECTED, "reason" => reason).increment(n);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalogue_follows_the_conventions() {
        trailhouse_common::metrics::check(&super::families()).expect("catalogue");
    }
}
