//! The port to the consumer's durable state: the offset range of every batch,
//! written before the batch is inserted (see `consumer_state` in the
//! migrations).

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use trailhouse_schemas::STATE_TABLE;

/// A batch's offset range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: i64,
    pub last: i64,
}

/// A state read or write that failed (transient: the caller retries or stops).
#[derive(Debug, thiserror::Error)]
#[error("consumer state: {0}")]
pub struct StateError(pub String);

/// Where pending ranges live.
pub trait StateStore: Send + Sync + 'static {
    /// The recorded ranges of a partition that end at or after `from`,
    /// ordered by their first offset.
    fn load(
        &self,
        partition: i32,
        from: i64,
    ) -> impl std::future::Future<Output = Result<Vec<Range>, StateError>> + Send;

    /// Records a range before its batch is inserted.
    fn record(
        &self,
        partition: i32,
        range: Range,
    ) -> impl std::future::Future<Output = Result<(), StateError>> + Send;
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct StateRow {
    consumer_group: String,
    topic: String,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Row, Deserialize)]
struct RangeRow {
    first_offset: i64,
    last_offset: i64,
}

/// Pending ranges in the ClickHouse table `consumer_state`.
#[derive(Clone)]
pub struct ClickHouseState {
    client: Client,
    group: String,
    topic: String,
}

impl ClickHouseState {
    pub fn new(client: Client, group: impl Into<String>, topic: impl Into<String>) -> Self {
        ClickHouseState {
            client,
            group: group.into(),
            topic: topic.into(),
        }
    }
}

impl StateStore for ClickHouseState {
    async fn load(&self, partition: i32, from: i64) -> Result<Vec<Range>, StateError> {
        let rows = self
            .client
            .query(&format!(
                "SELECT DISTINCT first_offset, last_offset FROM {STATE_TABLE} \
                 WHERE consumer_group = {{g:String}} AND topic = {{t:String}} \
                 AND partition = {{p:Int32}} AND last_offset >= {{from:Int64}} \
                 ORDER BY first_offset, last_offset"
            ))
            .param("g", &self.group)
            .param("t", &self.topic)
            .param("p", partition)
            .param("from", from)
            .fetch_all::<RangeRow>()
            .await
            .map_err(|e| StateError(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| Range {
                first: r.first_offset,
                last: r.last_offset,
            })
            .collect())
    }

    async fn record(&self, partition: i32, range: Range) -> Result<(), StateError> {
        let err = |e: clickhouse::error::Error| StateError(e.to_string());
        let mut insert = self
            .client
            .insert::<StateRow>(STATE_TABLE)
            .await
            .map_err(err)?;
        insert
            .write(&StateRow {
                consumer_group: self.group.clone(),
                topic: self.topic.clone(),
                partition,
                first_offset: range.first,
                last_offset: range.last,
            })
            .await
            .map_err(err)?;
        insert.end().await.map_err(err)
    }
}
