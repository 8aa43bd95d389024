//! What a stream's tenant can see of its delivery: where it is, what it
//! delivered, failed and retried, its last error and its lag. Written by the
//! streamer that delivers the stream, read by the API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::spec::Stream;

/// How a stream is being delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// From the live Kafka tail.
    #[default]
    Live,
    /// Reading stored events from ClickHouse until it reaches the live tail
    /// (after a restart, a pause, an overflow, or a replay).
    CatchingUp,
    /// Not delivering.
    Paused,
}

/// An error, when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub at: DateTime<Utc>,
    pub message: String,
}

/// A replay in progress: offsets in `[start, end)` of each partition are
/// delivered only when created in `[from, to)`; from `end` on, everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    pub id: u64,
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub from: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    pub end: BTreeMap<i32, i64>,
}

impl ReplayWindow {
    /// Whether an event at `offset` of `partition`, created at `created_us`,
    /// is delivered under this window.
    pub fn admits(&self, partition: i32, offset: i64, created_us: i64) -> bool {
        match self.end.get(&partition) {
            Some(end) if offset < *end => {
                created_us >= self.from.timestamp_micros()
                    && self.to.is_none_or(|t| created_us < t.timestamp_micros())
            }
            _ => true,
        }
    }

    /// Whether every partition has passed its end.
    pub fn done(&self, cursor: &BTreeMap<i32, i64>) -> bool {
        self.end
            .iter()
            .all(|(p, end)| cursor.get(p).is_some_and(|c| c >= end))
    }
}

/// The outcome of the last test delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    pub id: u64,
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub at: DateTime<Utc>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A stream's delivery state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub org_id: String,
    pub stream_id: Uuid,
    /// Per Kafka partition, the first offset not yet delivered.
    #[serde(default)]
    pub cursor: BTreeMap<i32, i64>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub retried: u64,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// `created_at` of the newest event delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// Events known to the streamer and not yet delivered.
    #[serde(default)]
    pub lag_events: u64,
    /// Age of the oldest event not yet delivered (0 when none waits).
    #[serde(default)]
    pub lag_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayWindow>,
    /// The last replay request acted on.
    #[serde(default)]
    pub replays_seen: u64,
    /// The last test request acted on.
    #[serde(default)]
    pub tests_seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<TestResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Status {
    pub fn new(s: &Stream) -> Status {
        Status {
            org_id: s.org_id.clone(),
            stream_id: s.id,
            // A stream created with a replay has already had it requested.
            replays_seen: 0,
            tests_seen: s.tests,
            ..Status::default()
        }
    }

    /// The health part of the API's view of a stream.
    pub fn view(&self) -> Value {
        let t = |t: &Option<DateTime<Utc>>| {
            t.as_ref()
                .map(trailhouse_schemas::event::format_timestamp)
                .map(Value::String)
                .unwrap_or(Value::Null)
        };
        json!({
            "mode": self.mode,
            "delivered": self.delivered,
            "failed": self.failed,
            "retried": self.retried,
            "consecutive_failures": self.consecutive_failures,
            "last_event_at": t(&self.last_event_at),
            "last_delivered_at": t(&self.last_delivered_at),
            "last_error": self.last_error,
            "lag_events": self.lag_events,
            "lag_seconds": self.lag_seconds,
            "replay": self.replay.as_ref().map(|r| json!({"id": r.id, "from": r.from, "to": r.to})),
            "last_test": self.last_test,
            "updated_at": t(&self.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_window_filters_only_below_its_end() {
        let from = DateTime::from_timestamp(100, 0).unwrap_or_default();
        let to = DateTime::from_timestamp(200, 0);
        let w = ReplayWindow {
            id: 1,
            from,
            to,
            end: BTreeMap::from([(0, 50)]),
        };
        let s = 1_000_000;
        let cases = [
            (0, 10, 99 * s, false),
            (0, 10, 100 * s, true),
            (0, 49, 199 * s, true),
            (0, 49, 200 * s, false),
            (0, 50, 1, true),
            (1, 10, 1, true),
        ];
        for (p, o, c, want) in cases {
            assert_eq!(w.admits(p, o, c), want, "{p} {o} {c}");
        }
        assert!(!w.done(&BTreeMap::from([(0, 49)])));
        assert!(!w.done(&BTreeMap::new()));
        assert!(w.done(&BTreeMap::from([(0, 50), (1, 3)])));
    }
}
