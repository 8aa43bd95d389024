//! The ports to ClickHouse: stream definitions and statuses
//! ([`StreamStore`]) and the stored events a stream catches up from
//! ([`EventHistory`]), each with its ClickHouse implementation and an
//! in-memory double for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use trailhouse_schemas::{
    EventRow, EVENTS_TABLE, EVENT_COLUMNS, STREAMS_TABLE, STREAM_STATUS_TABLE,
};
use uuid::Uuid;

use crate::spec::Stream;
use crate::status::Status;

/// A read or write that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(String),
    #[error("stored stream {id} does not parse: {reason}")]
    Corrupt { id: String, reason: String },
}

impl From<clickhouse::error::Error> for StoreError {
    fn from(e: clickhouse::error::Error) -> Self {
        StoreError::ClickHouse(e.to_string())
    }
}

/// Stream definitions and statuses.
pub trait StreamStore: Send + Sync + 'static {
    /// The live streams (of one org, or all).
    fn streams(
        &self,
        org: Option<&str>,
    ) -> impl std::future::Future<Output = Result<Vec<Stream>, StoreError>> + Send;

    /// Writes a new version of a stream.
    fn put(&self, s: &Stream) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Deletes a stream (a deleted version).
    fn delete(
        &self,
        org: &str,
        id: Uuid,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// The latest statuses (of one org, or all).
    fn statuses(
        &self,
        org: Option<&str>,
    ) -> impl std::future::Future<Output = Result<Vec<Status>, StoreError>> + Send;

    /// Records statuses.
    fn put_statuses(
        &self,
        st: &[Status],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// The stored events streams catch up from.
pub trait EventHistory: Send + Sync + 'static {
    /// Up to `limit` of `org`'s original (not copy) events in `partition`
    /// with offsets in `[from, until)`, in offset order.
    fn after(
        &self,
        org: &str,
        partition: i32,
        from: i64,
        until: i64,
        limit: u32,
    ) -> impl std::future::Future<Output = Result<Vec<EventRow>, StoreError>> + Send;

    /// Per partition, the lowest offset of `org`'s events created at or
    /// after `from` (where a replay from `from` starts).
    fn first_offsets(
        &self,
        org: &str,
        from: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<Vec<(i32, i64)>, StoreError>> + Send;
}

fn micros_now() -> u64 {
    u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0)
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct SpecRow {
    org_id: String,
    id: String,
    version: u64,
    deleted: bool,
    spec: String,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct StatusRow {
    org_id: String,
    stream_id: String,
    version: u64,
    status: String,
}

/// The latest version of a stream (aliases must not shadow the columns
/// the aggregates read).
#[derive(Debug, Row, Deserialize)]
struct LatestSpec {
    id: String,
    latest_spec: String,
}

#[derive(Debug, Row, Deserialize)]
struct LatestStatus {
    stream_id: String,
    latest_status: String,
}

#[derive(Debug, Row, Deserialize)]
struct FirstRow {
    partition: i32,
    offset: i64,
}

/// Streams and statuses in ClickHouse.
#[derive(Clone)]
pub struct ClickHouseStreams {
    client: Client,
}

impl ClickHouseStreams {
    pub fn new(client: Client) -> Self {
        ClickHouseStreams { client }
    }
}

impl ClickHouseStreams {
    /// The rows of a query whose only parameters are the org, twice (`''`: all).
    async fn latest<T>(&self, sql: &str, org: Option<&str>) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let org = org.unwrap_or("");
        Ok(self
            .client
            .query(sql)
            .bind(org)
            .bind(org)
            .fetch_all()
            .await?)
    }

    async fn write_spec(&self, row: SpecRow) -> Result<(), StoreError> {
        let mut ins = self.client.insert::<SpecRow>(STREAMS_TABLE).await?;
        ins.write(&row).await?;
        ins.end().await?;
        Ok(())
    }
}

fn parse_spec(id: &str, spec: &str) -> Result<Stream, StoreError> {
    serde_json::from_str(spec).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

impl StreamStore for ClickHouseStreams {
    async fn streams(&self, org: Option<&str>) -> Result<Vec<Stream>, StoreError> {
        let sql = format!(
            "SELECT id, argMax(spec, version) AS latest_spec FROM {STREAMS_TABLE} \
             WHERE (? = '' OR org_id = ?) GROUP BY org_id, id \
             HAVING NOT argMax(deleted, version) ORDER BY org_id, id"
        );
        let rows: Vec<LatestSpec> = self.latest(&sql, org).await?;
        rows.iter()
            .map(|r| parse_spec(&r.id, &r.latest_spec))
            .collect()
    }

    async fn put(&self, s: &Stream) -> Result<(), StoreError> {
        self.write_spec(SpecRow {
            org_id: s.org_id.clone(),
            id: s.id.to_string(),
            version: micros_now(),
            deleted: false,
            spec: serde_json::to_string(s).map_err(|e| StoreError::ClickHouse(e.to_string()))?,
        })
        .await
    }

    async fn delete(&self, org: &str, id: Uuid) -> Result<(), StoreError> {
        self.write_spec(SpecRow {
            org_id: org.to_string(),
            id: id.to_string(),
            version: micros_now(),
            deleted: true,
            spec: String::new(),
        })
        .await
    }

    async fn statuses(&self, org: Option<&str>) -> Result<Vec<Status>, StoreError> {
        let sql = format!(
            "SELECT stream_id, argMax(status, version) AS latest_status \
             FROM {STREAM_STATUS_TABLE} WHERE (? = '' OR org_id = ?) GROUP BY org_id, stream_id"
        );
        let rows: Vec<LatestStatus> = self.latest(&sql, org).await?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(&r.latest_status).map_err(|e| StoreError::Corrupt {
                    id: r.stream_id.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    async fn put_statuses(&self, st: &[Status]) -> Result<(), StoreError> {
        if st.is_empty() {
            return Ok(());
        }
        let version = micros_now();
        let mut ins = self.client.insert::<StatusRow>(STREAM_STATUS_TABLE).await?;
        for s in st {
            ins.write(&StatusRow {
                org_id: s.org_id.clone(),
                stream_id: s.stream_id.to_string(),
                version,
                status: serde_json::to_string(s)
                    .map_err(|e| StoreError::ClickHouse(e.to_string()))?,
            })
            .await?;
        }
        ins.end().await?;
        Ok(())
    }
}

impl EventHistory for ClickHouseStreams {
    async fn after(
        &self,
        org: &str,
        partition: i32,
        from: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {EVENTS_TABLE} WHERE org_id = ? AND kafka_partition = ? \
             AND kafka_offset >= ? AND kafka_offset < ? AND NOT is_copy \
             ORDER BY kafka_offset LIMIT 1 BY kafka_offset LIMIT ?"
        );
        Ok(self
            .client
            .query(&sql)
            .bind(org)
            .bind(partition)
            .bind(from)
            .bind(until)
            .bind(limit)
            .fetch_all()
            .await?)
    }

    async fn first_offsets(
        &self,
        org: &str,
        from: DateTime<Utc>,
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        let sql = format!(
            "SELECT kafka_partition AS partition, min(kafka_offset) AS offset FROM {EVENTS_TABLE} \
             WHERE org_id = ? AND created_at >= fromUnixTimestamp64Micro(?) AND NOT is_copy \
             GROUP BY kafka_partition ORDER BY kafka_partition"
        );
        let rows: Vec<FirstRow> = self
            .client
            .query(&sql)
            .bind(org)
            .bind(from.timestamp_micros())
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|r| (r.partition, r.offset)).collect())
    }
}

/// Everything in memory: streams, statuses and stored events.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    streams: BTreeMap<(String, Uuid), Stream>,
    statuses: BTreeMap<Uuid, Status>,
    events: Vec<EventRow>,
    fail: bool,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> Result<T, StoreError> {
        let mut m = self
            .inner
            .lock()
            .map_err(|_| StoreError::ClickHouse("poisoned".into()))?;
        if m.fail {
            return Err(StoreError::ClickHouse("unavailable (test)".into()));
        }
        Ok(f(&mut m))
    }

    /// Stores events as the consumer would.
    pub fn add_events(&self, rows: impl IntoIterator<Item = EventRow>) {
        if let Ok(mut m) = self.inner.lock() {
            m.events.extend(rows);
        }
    }

    /// Makes every call fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        if let Ok(mut m) = self.inner.lock() {
            m.fail = fail;
        }
    }
}

impl StreamStore for MemoryStore {
    async fn streams(&self, org: Option<&str>) -> Result<Vec<Stream>, StoreError> {
        self.with(|m| {
            m.streams
                .values()
                .filter(|s| org.is_none_or(|o| o == s.org_id))
                .cloned()
                .collect()
        })
    }

    async fn put(&self, s: &Stream) -> Result<(), StoreError> {
        self.with(|m| {
            m.streams.insert((s.org_id.clone(), s.id), s.clone());
        })
    }

    async fn delete(&self, org: &str, id: Uuid) -> Result<(), StoreError> {
        self.with(|m| {
            m.streams.remove(&(org.to_string(), id));
        })
    }

    async fn statuses(&self, org: Option<&str>) -> Result<Vec<Status>, StoreError> {
        self.with(|m| {
            m.statuses
                .values()
                .filter(|s| org.is_none_or(|o| o == s.org_id))
                .cloned()
                .collect()
        })
    }

    async fn put_statuses(&self, st: &[Status]) -> Result<(), StoreError> {
        self.with(|m| {
            for s in st {
                m.statuses.insert(s.stream_id, s.clone());
            }
        })
    }
}

impl EventHistory for MemoryStore {
    async fn after(
        &self,
        org: &str,
        partition: i32,
        from: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.with(|m| {
            let mut rows: Vec<EventRow> = m
                .events
                .iter()
                .filter(|r| {
                    r.org_id == org
                        && r.kafka_partition == partition
                        && (from..until).contains(&r.kafka_offset)
                        && !r.is_copy
                })
                .cloned()
                .collect();
            rows.sort_by_key(|r| r.kafka_offset);
            rows.dedup_by_key(|r| r.kafka_offset);
            rows.truncate(limit as usize);
            rows
        })
    }

    async fn first_offsets(
        &self,
        org: &str,
        from: DateTime<Utc>,
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        self.with(|m| {
            let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
            for r in &m.events {
                if r.org_id == org && r.created_at >= from && !r.is_copy {
                    let e = firsts.entry(r.kafka_partition).or_insert(r.kafka_offset);
                    *e = (*e).min(r.kafka_offset);
                }
            }
            firsts.into_iter().collect()
        })
    }
}
