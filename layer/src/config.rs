//! How the layer records requests, and the metric names it emits.

use std::time::Duration;

use ipnet::IpNet;

use crate::redact::Redactor;

/// Metric names of the layer.
pub mod metric {
    /// Requests captured into the queue.
    pub const RECORDED: &str = "trailhouse_audit_layer_recorded_total";
    /// Events acknowledged by the sink.
    pub const PUBLISHED: &str = "trailhouse_audit_layer_published_total";
    /// Events lost, by `reason`: `queue_full`, `publish_failed`, `invalid`, `no_org`, `closed`.
    pub const DROPPED: &str = "trailhouse_audit_layer_dropped_total";
    /// Why events are lost.
    pub const DROP_REASONS: [&str; 5] = [
        "queue_full",
        "publish_failed",
        "invalid",
        "no_org",
        "closed",
    ];

    /// Gives every family its HELP line and creates its series at 0, so an
    /// alert on `increase(dropped[5m])` has them from the start. Called when
    /// a recorder starts (with whatever `metrics` recorder the app installed).
    pub fn describe() {
        metrics::describe_counter!(RECORDED, "Requests captured into the audit layer's queue.");
        metrics::describe_counter!(PUBLISHED, "Audit events acknowledged by the sink.");
        metrics::describe_counter!(DROPPED, "Audit events lost, by reason.");
        metrics::counter!(RECORDED).increment(0);
        metrics::counter!(PUBLISHED).increment(0);
        for reason in DROP_REASONS {
            metrics::counter!(DROPPED, "reason" => reason).increment(0);
        }
    }
}

/// How the layer records requests.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The event's `source` (e.g. the service name).
    pub source: Option<String>,
    /// The org of requests whose audit context does not name one. Requests
    /// with no org at all are not recorded (counted as `no_org`).
    pub default_org: Option<String>,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    /// The client IP is the right-most address not in this list; with an
    /// empty list it is the TCP peer.
    pub trusted_proxies: Vec<IpNet>,
    /// Request headers copied into the event (case-insensitive names).
    pub headers: Vec<String>,
    /// Bodies up to this many bytes (by `Content-Length`) with a JSON, form
    /// or text content type are captured; 0 captures none.
    pub max_body_bytes: usize,
    /// Paths (prefixes) that are not recorded, e.g. health checks.
    pub skip_paths: Vec<String>,
    /// Applied to each event's request and metadata before it leaves the
    /// process; [`Redactor::default`] applies the default rules
    /// ([`DEFAULT_RULES`](crate::redact::DEFAULT_RULES)).
    pub redactor: Redactor,
    /// Events waiting to be published; beyond it they are dropped.
    pub queue_capacity: usize,
    /// Events per published batch.
    pub batch_size: usize,
    /// How often the background task collects queued events.
    pub linger: Duration,
    /// Attempts per batch before its events are dropped as `publish_failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to 5 s, and each delay gets
    /// a random jitter of up to as much again.
    pub retry_backoff: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            source: None,
            default_org: None,
            trusted_proxies: Vec::new(),
            headers: [
                "user-agent",
                "content-type",
                "accept",
                "x-request-id",
                "referer",
            ]
            .map(String::from)
            .to_vec(),
            max_body_bytes: 16 * 1024,
            skip_paths: vec!["/health".into(), "/metrics".into()],
            redactor: Redactor::default(),
            queue_capacity: 10_000,
            batch_size: 500,
            linger: Duration::from_millis(20),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(200),
        }
    }
}
