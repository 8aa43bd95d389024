//! The port to ClickHouse: insert a batch of rows with a deduplication
//! token, and look up the rows already stored in some time windows (to mark
//! copies, [`crate::copies`]).

use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use trailhouse_schemas::layout::Layout;
use trailhouse_schemas::rowbinary::{self, EncodedRows, RowKey};

use crate::copies::Window;
use trailhouse_schemas::{EVENTS_TABLE, EVENT_COLUMNS};

/// An insert that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Network trouble, timeouts, overload: the same bytes may succeed later.
    #[error("transient clickhouse error: {0}")]
    Transient(String),
    /// The data or the schema is wrong: retrying cannot help.
    #[error("permanent clickhouse error: {0}")]
    Permanent(String),
}

impl WriteError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, WriteError::Transient(_))
    }
}

/// ClickHouse error codes that no retry can fix (schema or data problems).
const PERMANENT_CODES: &[u32] = &[
    6, 16, 26, 27, 32, 33, 38, 41, 47, 53, 60, 62, 69, 70, 72, 81, 117, 130, 131,
];

/// Classifies a `clickhouse` crate error by the server's exception code.
pub fn classify(e: &clickhouse::error::Error) -> WriteError {
    use clickhouse::error::Error as E;
    let text = e.to_string();
    if matches!(e, E::SchemaMismatch(_) | E::DataFormat(_) | E::Custom(_)) {
        return WriteError::Permanent(text);
    }
    let code = text
        .split("Code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<u32>().ok());
    match code {
        Some(c) if PERMANENT_CODES.contains(&c) => WriteError::Permanent(text),
        _ => WriteError::Transient(text),
    }
}

/// Inserts batches of encoded rows.
pub trait RowWriter: Send + Sync + 'static {
    fn insert(
        &self,
        rows: &EncodedRows,
        dedup_token: &str,
    ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send;

    /// The keys of the stored rows in `windows` (copies included).
    fn stored(
        &self,
        windows: &[Window],
    ) -> impl std::future::Future<Output = Result<Vec<RowKey>, WriteError>> + Send;
}

/// Windows per lookup query (each is one condition on the primary key).
const WINDOWS_PER_QUERY: usize = 200;

#[derive(clickhouse::Row, serde::Deserialize)]
struct StoredKey {
    org_id: String,
    created_at_us: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    id: uuid::Uuid,
    kafka_partition: i32,
    kafka_offset: i64,
    is_copy: bool,
}

/// Inserts `RowBinaryWithNamesAndTypes` over HTTP with the `clickhouse`
/// crate; the server checks the header's column names and types against the
/// table before it reads a row.
///
/// Each insert touches at most `max_partitions` table partitions (ClickHouse
/// rejects blocks over `max_partitions_per_insert_block`, and every partition
/// touched is a new part): a batch over the limit is split by partition into
/// several inserts with tokens `<token>/<k>`. The split is deterministic, so
/// a retried or replayed batch repeats exactly the same inserts and
/// ClickHouse drops the ones that already succeeded.
#[derive(Clone)]
pub struct ClickHouseWriter {
    client: Client,
    timeout: Duration,
    layout: Layout,
    max_partitions: usize,
}

/// The default cap on partitions per insert (ClickHouse's own default limit).
pub const MAX_PARTITIONS_PER_INSERT: usize = 100;

impl ClickHouseWriter {
    /// A writer into the events table ([`EVENTS_TABLE`]) of the client's
    /// database.
    pub fn new(client: Client, timeout: Duration) -> Self {
        ClickHouseWriter {
            client,
            timeout,
            layout: Layout::Fleet,
            max_partitions: MAX_PARTITIONS_PER_INSERT,
        }
    }

    /// The table's layout and the most partitions one insert may touch.
    pub fn with_layout(mut self, layout: Layout, max_partitions: usize) -> Self {
        self.layout = layout;
        self.max_partitions = max_partitions.max(1);
        self
    }

    async fn try_insert(&self, rows: &[u8], token: &str) -> clickhouse::error::Result<()> {
        /// Chunks sent (and compressed) at a time.
        const CHUNK: usize = 1 << 20;
        let sql = format!(
            "INSERT INTO {EVENTS_TABLE} ({EVENT_COLUMNS}) FORMAT {}",
            rowbinary::FORMAT
        );
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_setting("insert_deduplication_token", token)
            // A block dropped as a repeat is dropped from the rollups'
            // materialized views too (and one a view missed is added).
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            // Through a Distributed table (cluster layout) the insert is
            // acknowledged only once every shard has its rows.
            .with_setting("distributed_foreground_insert", "1")
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        insert.send(Bytes::from_static(rowbinary::header())).await?;
        for chunk in rows.chunks(CHUNK) {
            insert.send(Bytes::copy_from_slice(chunk)).await?;
        }
        insert.end().await
    }
}

impl RowWriter for ClickHouseWriter {
    async fn insert(&self, rows: &EncodedRows, token: &str) -> Result<(), WriteError> {
        let inserts = rows.inserts(self.layout, self.max_partitions);
        if let [one] = inserts.as_slice() {
            return self.try_insert(one, token).await.map_err(|e| classify(&e));
        }
        for (k, chunk) in inserts.iter().enumerate() {
            self.try_insert(chunk, &format!("{token}/{k}"))
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(())
    }

    async fn stored(&self, windows: &[Window]) -> Result<Vec<RowKey>, WriteError> {
        let mut out = Vec::new();
        for chunk in windows.chunks(WINDOWS_PER_QUERY) {
            let conditions = vec![
                "(org_id = ? AND created_at BETWEEN fromUnixTimestamp64Micro(?, 'UTC') \
                 AND fromUnixTimestamp64Micro(?, 'UTC'))";
                chunk.len()
            ]
            .join(" OR ");
            let mut q = self
                .client
                .query(&format!(
                    "SELECT org_id, toUnixTimestamp64Micro(created_at) AS created_at_us, id, \
                     kafka_partition, kafka_offset, is_copy FROM {EVENTS_TABLE} WHERE {conditions}"
                ))
                .with_setting(
                    "max_execution_time",
                    self.timeout.as_secs().max(1).to_string(),
                );
            for w in chunk {
                q = q.bind(&w.org_id).bind(w.from_us).bind(w.to_us);
            }
            let rows: Vec<StoredKey> = q.fetch_all().await.map_err(|e| classify(&e))?;
            out.extend(rows.into_iter().map(|r| RowKey {
                org_id: r.org_id,
                created_at_us: r.created_at_us,
                id: r.id,
                partition: r.kafka_partition,
                offset: r.kafka_offset,
                is_copy: r.is_copy,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_decide_retryability() {
        let bad = clickhouse::error::Error::BadResponse(
            "Code: 53. DB::Exception: Type mismatch. (TYPE_MISMATCH)".into(),
        );
        assert!(!classify(&bad).is_retryable());
        let busy = clickhouse::error::Error::BadResponse(
            "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)".into(),
        );
        assert!(classify(&busy).is_retryable());
        let net = clickhouse::error::Error::Network("connection refused".into());
        assert!(classify(&net).is_retryable());
    }
}
