//! Metric names of the consumer, defined once.

pub const ROWS_INSERTED: &str = "trailhouse_consumer_rows_inserted_total";
pub const INSERT_SECONDS: &str = "trailhouse_consumer_insert_duration_seconds";
pub const INSERT_RETRIES: &str = "trailhouse_consumer_insert_retries_total";

pub const BATCH_ROWS: &str = "trailhouse_consumer_batch_rows";
pub const BATCHES_DROPPED: &str = "trailhouse_consumer_batches_dropped_on_revoke_total";
pub const BATCH_BYTES: &str = "trailhouse_consumer_batch_bytes";
pub const BATCH_AGE_SECONDS: &str = "trailhouse_consumer_batch_age_seconds";
pub const DEAD_LETTERED: &str = "trailhouse_consumer_dead_lettered_total";
pub const PAUSED: &str = "trailhouse_consumer_paused";
pub const LAG: &str = "trailhouse_consumer_lag_messages";
