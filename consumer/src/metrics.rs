//! Metric names of the consumer, defined once.

pub const ROWS_INSERTED: &str = "trailhouse_consumer_rows_inserted_total";
pub const INSERT_SECONDS: &str = "trailhouse_consumer_insert_duration_seconds";
pub const INSERT_RETRIES: &str = "trailhouse_consumer_insert_retries_total";
pub const UNDECODABLE: &str = "trailhouse_consumer_undecodable_messages_total";
pub const BATCH_ROWS: &str = "trailhouse_consumer_batch_rows";
pub const BATCHES_DROPPED: &str = "trailhouse_consumer_batches_dropped_on_revoke_total";
