//! The port to ClickHouse for reads.

use trailhouse_schemas::EventRow;

use crate::query::Sql;

/// A read that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse unavailable: {0}")]
    Unavailable(String),
    #[error("clickhouse query failed: {0}")]
    Query(String),
}

/// Runs read queries.
pub trait EventStore: Send + Sync + 'static {
    fn fetch(
        &self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<Vec<EventRow>, StoreError>> + Send;
}

/// Reads with the `clickhouse` crate.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: clickhouse::Client,
}

impl ClickHouseStore {
    pub fn new(client: clickhouse::Client) -> Self {
        ClickHouseStore { client }
    }
}

impl EventStore for ClickHouseStore {
    async fn fetch(&self, sql: &Sql) -> Result<Vec<EventRow>, StoreError> {
        let mut q = self.client.query(&sql.text);
        for (name, value) in &sql.params {
            q = q.param(name, value.as_str());
        }
        q.fetch_all::<EventRow>().await.map_err(|e| match e {
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Query(other.to_string()),
        })
    }
}

/// A store that returns fixed rows and records the SQL it was given (tests).
#[derive(Clone, Default)]
pub struct StaticStore {
    pub rows: Vec<EventRow>,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Sql>>>,
}

impl EventStore for StaticStore {
    async fn fetch(&self, sql: &Sql) -> Result<Vec<EventRow>, StoreError> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(sql.clone());
        }
        Ok(self.rows.clone())
    }
}
