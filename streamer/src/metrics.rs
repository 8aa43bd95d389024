//! The metric families of the streamer, declared once (see
//! [`trailhouse_common::metrics`]). Labels are bounded (the destination
//! kind); never an org or a stream: per-stream health is in the API.

use trailhouse_common::metrics::Family;

pub const DELIVERED: &str = "trailhouse_streamer_events_delivered_total";
pub const FAILED: &str = "trailhouse_streamer_deliveries_failed_total";
pub const RETRIED: &str = "trailhouse_streamer_deliveries_retried_total";
pub const AUTO_PAUSED: &str = "trailhouse_streamer_streams_auto_paused_total";
pub const STREAMS: &str = "trailhouse_streamer_streams";
pub const CATCHING_UP: &str = "trailhouse_streamer_streams_catching_up";
pub const EVENTS_READ: &str = "trailhouse_streamer_events_read_total";
pub const COPIES_SKIPPED: &str = "trailhouse_streamer_copies_skipped_total";
pub const LAG_SECONDS: &str = "trailhouse_streamer_max_lag_seconds";
pub const ASSIGNED: &str = "trailhouse_streamer_assigned_partitions";
pub const STATUS_WRITES_FAILED: &str = "trailhouse_streamer_status_writes_failed_total";

const KINDS: &[&[&str]] = &[
    &["webhook"],
    &["splunk"],
    &["datadog"],
    &["object_store"],
    &["kafka"],
];

/// Every family the streamer exports (besides the process metrics).
pub fn families() -> Vec<Family> {
    vec![
        Family::counter(
            DELIVERED,
            "Events delivered, by destination kind (a batch retried after a crash counts again).",
        )
        .labelled(&["destination"])
        .preset(KINDS),
        Family::counter(
            FAILED,
            "Delivery attempts that failed, by destination kind.",
        )
        .labelled(&["destination"])
        .preset(KINDS),
        Family::counter(
            RETRIED,
            "Failed deliveries that were retried, by destination kind.",
        )
        .labelled(&["destination"])
        .preset(KINDS),
        Family::counter(
            AUTO_PAUSED,
            "Streams that paused themselves after a run of failed deliveries.",
        ),
        Family::gauge(
            STREAMS,
            "Streams known to this streamer (paused ones included).",
        ),
        Family::gauge(
            CATCHING_UP,
            "Streams reading stored events from ClickHouse to reach the live tail.",
        ),
        Family::counter(EVENTS_READ, "Events read from Kafka."),
        Family::counter(
            COPIES_SKIPPED,
            "Events skipped as copies of one read just before (a producer's retry).",
        ),
        Family::gauge(
            LAG_SECONDS,
            "The largest lag in seconds of any stream delivering from the live tail.",
        ),
        Family::gauge(
            ASSIGNED,
            "Partitions of the events topic this streamer reads.",
        ),
        Family::counter(
            STATUS_WRITES_FAILED,
            "Stream status writes to ClickHouse that failed (retried at the next flush).",
        ),
    ]
}
