//! The metric families of the consumer, declared once (see
//! [`trailhouse_common::metrics`]), and its per-partition gauges, which
//! exist from a partition's assignment until its revoke.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use trailhouse_common::metrics::{self as m, DynamicGauge, Family};

use crate::retry::Step;

pub const ROWS_INSERTED: &str = "trailhouse_consumer_rows_inserted_total";
pub const BYTES_INSERTED: &str = "trailhouse_consumer_inserted_bytes_total";
pub const INSERT_SECONDS: &str = "trailhouse_consumer_insert_duration_seconds";
pub const RETRIES: &str = "trailhouse_consumer_retries_total";
pub const LAST_INSERT: &str = "trailhouse_consumer_last_insert_timestamp_seconds";
pub const BATCH_ROWS: &str = "trailhouse_consumer_batch_rows";
pub const BATCHES_DROPPED: &str = "trailhouse_consumer_batches_dropped_on_revoke_total";
pub const BATCH_BYTES: &str = "trailhouse_consumer_batch_bytes";
pub const BATCH_AGE_SECONDS: &str = "trailhouse_consumer_batch_age_seconds";
pub const COPIES_MARKED: &str = "trailhouse_consumer_copies_marked_total";
pub const DEAD_LETTERED: &str = "trailhouse_consumer_dead_lettered_total";
pub const PAUSED: &str = "trailhouse_consumer_paused";
pub const BROKER_UP: &str = "trailhouse_consumer_broker_up";
pub const ASSIGNED: &str = "trailhouse_consumer_assigned_partitions";
pub const LAG: &str = "trailhouse_consumer_lag_messages";
pub const LAG_SECONDS: &str = "trailhouse_consumer_lag_seconds";

const STEPS: &[&[&str]] = &[&["record"], &["lookup"], &["insert"], &["dead_letter"]];

const LAG_FAMILY: Family = Family::gauge(
    LAG,
    "Messages after the committed offset (not yet known to be in ClickHouse), per assigned partition.",
)
.labelled(&["partition"]);
const LAG_SECONDS_FAMILY: Family = Family::gauge(
    LAG_SECONDS,
    "Age of the oldest message taken but not yet committed (0 when none waits), per assigned partition.",
)
.labelled(&["partition"]);

/// Every family the consumer exports (besides the process metrics).
pub fn families() -> Vec<Family> {
    debug_assert_eq!(STEPS.len(), Step::ALL.len());
    vec![
        Family::counter(ROWS_INSERTED, "Rows inserted into ClickHouse (a replayed batch ClickHouse deduplicated counts again)."),
        Family::counter(BYTES_INSERTED, "Bytes of the rows inserted, as encoded for the insert."),
        Family::histogram(INSERT_SECONDS, "Time to insert one batch, retries included."),
        Family::counter(RETRIES, "Failed attempts that were retried, by step (record, lookup, insert, dead_letter).")
            .labelled(&["step"])
            .preset(STEPS),
        Family::gauge(LAST_INSERT, "Unix time of the last successful insert (0 before the first)."),
        Family::histogram(BATCH_ROWS, "Rows per batch inserted."),
        Family::histogram(BATCH_BYTES, "Bytes per batch inserted."),
        Family::histogram(BATCH_AGE_SECONDS, "Time from a batch's first message to its insert starting."),
        Family::counter(BATCHES_DROPPED, "Open batches dropped because their partition was revoked (read again by the next owner)."),
        Family::counter(COPIES_MARKED, "Rows marked as stored copies of an event a producer retried (the rollups skip them)."),
        Family::counter(DEAD_LETTERED, "Poison messages sent to the dead-letter topic."),
        Family::gauge(PAUSED, "1 while the partitions are paused because inserts are behind."),
        Family::gauge(BROKER_UP, "1 while a Kafka broker is reachable, 0 while none is."),
        Family::gauge(ASSIGNED, "Partitions assigned to this consumer."),
        LAG_FAMILY,
        LAG_SECONDS_FAMILY,
    ]
}

/// The gauges per assigned partition: lag in messages (from librdkafka's
/// statistics) and lag in seconds (from the pipeline).
#[derive(Debug, Clone)]
pub struct PartitionGauges {
    lag: Arc<DynamicGauge>,
    lag_seconds: Arc<DynamicGauge>,
    /// The partitions with series, so the tick reads them without parsing
    /// label values.
    partitions: Arc<Mutex<BTreeSet<i32>>>,
}

impl Default for PartitionGauges {
    fn default() -> Self {
        PartitionGauges {
            lag: DynamicGauge::new(LAG_FAMILY),
            lag_seconds: DynamicGauge::new(LAG_SECONDS_FAMILY),
            partitions: Arc::default(),
        }
    }
}

impl PartitionGauges {
    /// Gauges rendered by the process's exporter.
    pub fn registered() -> Self {
        let g = PartitionGauges::default();
        if let Some(e) = trailhouse_common::telemetry::metrics_handle() {
            e.register(&g.lag);
            e.register(&g.lag_seconds);
        }
        g
    }

    /// A partition was assigned: its lag in seconds exists at once (0
    /// until a message waits); its lag in messages from the next statistics.
    pub fn assign(&self, partition: i32) {
        let p = partition.to_string();
        if !self.lag_seconds.contains(&[&p]) {
            self.lag_seconds.set(&[&p], 0.0);
        }
        if let Ok(mut set) = self.partitions.lock() {
            set.insert(partition);
        }
    }

    /// A partition was revoked: its series go.
    pub fn revoke(&self, partition: i32) {
        let p = partition.to_string();
        self.lag.remove(&[&p]);
        self.lag_seconds.remove(&[&p]);
        if let Ok(mut set) = self.partitions.lock() {
            set.remove(&partition);
        }
    }

    /// The lag of an assigned partition, in messages. Ignored for a
    /// partition not assigned (statistics can lag a revoke).
    pub fn set_lag(&self, partition: i32, messages: i64) {
        let p = partition.to_string();
        if self.lag_seconds.contains(&[&p]) {
            self.lag.set(&[&p], messages as f64);
        }
    }

    /// The lag of an assigned partition, in seconds.
    pub fn set_lag_seconds(&self, partition: i32, seconds: f64) {
        let p = partition.to_string();
        if self.lag_seconds.contains(&[&p]) {
            self.lag_seconds.set(&[&p], seconds.max(0.0));
        }
    }

    /// The partitions assigned (with series).
    pub fn assigned(&self) -> Vec<i32> {
        self.partitions
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `partition` is assigned (has series).
    pub fn is_assigned(&self, partition: i32) -> bool {
        self.lag_seconds.contains(&[&partition.to_string()])
    }
}

/// Describes every family (the per-partition gauges describe themselves)
/// and creates the counters at 0.
pub fn describe() {
    let recorded: Vec<Family> = families()
        .into_iter()
        .filter(|f| f.name != LAG && f.name != LAG_SECONDS)
        .collect();
    m::describe("trailhouse-consumer", &recorded);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_follows_the_conventions() {
        m::check(&families()).expect("catalogue");
    }

    #[test]
    fn partition_series_live_from_assignment_to_revoke() {
        let g = PartitionGauges::default();
        g.set_lag(3, 10);
        assert!(!g.is_assigned(3), "not assigned: statistics are ignored");
        g.assign(3);
        g.set_lag(3, 10);
        g.set_lag_seconds(3, 2.5);
        assert!(g.lag.contains(&["3"]) && g.is_assigned(3));
        g.revoke(3);
        assert!(!g.lag.contains(&["3"]) && !g.is_assigned(3));
    }
}
