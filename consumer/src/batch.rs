//! Pure batching: rows of one Kafka partition accumulate, encoded as they
//! arrive, until a row, byte (of encoded RowBinary) or age limit is reached.
//! A batch covers a contiguous offset range, which also names its ClickHouse
//! deduplication token.

use std::time::{Duration, Instant};

use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_schemas::EventRow;

/// When a batch is flushed.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_rows: 50_000,
            max_bytes: 32 * 1024 * 1024,
            max_age: Duration::from_secs(1),
        }
    }
}

/// Rows of one partition waiting to be inserted.
#[derive(Debug)]
pub struct Batch {
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The rows, encoded; what a batch holds in memory.
    pub rows: EncodedRows,
    pub started: Instant,
}

impl Batch {
    pub fn new(partition: i32, offset: i64, now: Instant) -> Self {
        Batch {
            partition,
            first_offset: offset,
            last_offset: offset - 1,
            rows: EncodedRows::new(),
            started: now,
        }
    }

    /// Records that `offset` was consumed, with its row (encoded now) if it
    /// had a valid one.
    pub fn push(&mut self, offset: i64, row: Option<&EventRow>) {
        self.last_offset = offset;
        if let Some(r) = row {
            self.rows.push(r);
        }
    }

    /// Encoded RowBinary bytes of the rows.
    pub fn bytes(&self) -> usize {
        self.rows.byte_len()
    }

    /// Offsets consumed into this batch.
    pub fn len_offsets(&self) -> i64 {
        self.last_offset - self.first_offset + 1
    }

    pub fn is_full(&self, limits: &BatchLimits) -> bool {
        self.rows.len() >= limits.max_rows || self.rows.byte_len() >= limits.max_bytes
    }

    pub fn is_due(&self, limits: &BatchLimits, now: Instant) -> bool {
        self.len_offsets() > 0 && now.duration_since(self.started) >= limits.max_age
    }

    /// The insert deduplication token: topic, partition and offset range.
    /// Retrying the same batch always sends the same token.
    pub fn dedup_token(&self, topic: &str) -> String {
        format!(
            "{topic}:{}:{}-{}",
            self.partition, self.first_offset, self.last_offset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailhouse_schemas::{examples, Lineage};

    fn row() -> EventRow {
        EventRow::from_event(&examples::all()[0], Lineage::default())
    }

    #[test]
    fn limits_trigger_flushes() {
        let t0 = Instant::now();
        let limits = BatchLimits {
            max_rows: 2,
            max_bytes: 10_000,
            max_age: Duration::from_millis(10),
        };
        let mut b = Batch::new(3, 10, t0);
        assert!(
            !b.is_due(&limits, t0 + Duration::from_secs(1)),
            "empty batches are never due"
        );
        b.push(10, Some(&row()));
        assert!(!b.is_full(&limits));
        assert!(b.is_due(&limits, t0 + Duration::from_millis(10)));
        b.push(11, None);
        assert!(!b.is_full(&limits), "skipped offsets are not rows");
        b.push(12, Some(&row()));
        assert!(b.is_full(&limits));
        assert_eq!(b.len_offsets(), 3);
        assert_eq!(b.dedup_token("events"), "events:3:10-12");
        // The byte limit counts encoded bytes.
        let mut one = Batch::new(0, 0, t0);
        one.push(0, Some(&row()));
        let size = one.bytes();
        assert!(size > 0);
        let tight = BatchLimits {
            max_bytes: size,
            ..limits
        };
        assert!(one.is_full(&tight));
        let roomy = BatchLimits {
            max_bytes: size + 1,
            ..limits
        };
        assert!(!one.is_full(&roomy));
    }
}
