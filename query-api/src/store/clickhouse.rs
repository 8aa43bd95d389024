//! The ClickHouse implementation of the read port, and the one place the
//! ClickHouse-side limits of every query are set ([`read_client`]).

use trailhouse_schemas::EventRow;

use super::{row_bytes, Capped, EventStore, StoreError};
use crate::metrics;
use crate::query::stats::CountRow;
use crate::query::Sql;

/// The limits ClickHouse enforces on every query of the query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseLimits {
    pub max_execution_secs: u64,
    pub max_result_rows: u64,
    pub max_result_bytes: u64,
    /// `readonly = 1`: ClickHouse refuses anything but reads.
    pub readonly: bool,
}

impl ClickHouseLimits {
    /// The settings sent with every query.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("max_execution_time", self.max_execution_secs.to_string()),
            ("max_result_rows", self.max_result_rows.to_string()),
            ("max_result_bytes", self.max_result_bytes.to_string()),
            // Over a limit, the query fails (and is answered 422), rather
            // than returning a silently truncated result.
            ("result_overflow_mode", "throw".to_string()),
        ];
        if self.readonly {
            s.push(("readonly", "1".to_string()));
        }
        s
    }
}

/// The client of every query the query API sends: `client` with the
/// ClickHouse-side limits set once, here.
pub fn read_client(client: clickhouse::Client, limits: &ClickHouseLimits) -> clickhouse::Client {
    limits
        .settings()
        .into_iter()
        .fold(client, |c, (name, value)| c.with_setting(name, value))
}

/// Reads with the `clickhouse` crate.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: clickhouse::Client,
}

impl ClickHouseStore {
    /// A store over `client` (see [`read_client`]).
    pub fn new(client: clickhouse::Client) -> Self {
        ClickHouseStore { client }
    }
}

impl ClickHouseStore {
    fn query(&self, sql: &Sql) -> clickhouse::query::Query {
        let mut q = self.client.query(&sql.text);
        for (name, value) in &sql.params {
            q = q.param(name, value.as_str());
        }
        q
    }

    async fn read_capped(&self, sql: &Sql, max_bytes: usize) -> Result<Capped, StoreError> {
        let mut cursor = self.query(sql).fetch::<EventRow>().map_err(classify)?;
        let (mut rows, mut used) = (Vec::new(), 0usize);
        // Stops reading at the cap: dropping the cursor ends the response,
        // so neither side holds more than the cap and one row.
        while let Some(r) = cursor.next().await.map_err(classify)? {
            used = used.saturating_add(row_bytes(&r));
            if !rows.is_empty() && used > max_bytes {
                return Ok(Capped { rows, cut: true });
            }
            rows.push(r);
        }
        Ok(Capped { rows, cut: false })
    }
}

/// Records a query's time, outcome and (for reads) rows and bytes.
fn observe<T>(
    query: &'static str,
    started: std::time::Instant,
    result: &Result<T, StoreError>,
    rows: impl FnOnce(&T) -> (u64, u64),
) {
    let outcome = match result {
        Ok(r) => {
            let (n, bytes) = rows(r);
            ::metrics::counter!(metrics::ROWS_RETURNED).increment(n);
            ::metrics::counter!(metrics::BYTES_RETURNED).increment(bytes);
            "ok"
        }
        Err(e) => {
            ::metrics::counter!(metrics::CLICKHOUSE_ERRORS, "kind" => e.kind()).increment(1);
            "error"
        }
    };
    ::metrics::histogram!(metrics::CLICKHOUSE_SECONDS, "query" => query, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

fn sizes(rows: &[EventRow]) -> (u64, u64) {
    let bytes: usize = rows.iter().map(row_bytes).sum();
    (rows.len() as u64, bytes as u64)
}

impl EventStore for ClickHouseStore {
    async fn fetch_capped(&self, sql: &Sql, max_bytes: usize) -> Result<Capped, StoreError> {
        let started = std::time::Instant::now();
        let r = self.read_capped(sql, max_bytes).await;
        observe("rows", started, &r, |c| sizes(&c.rows));
        r
    }

    async fn fetch(&self, sql: &Sql) -> Result<Vec<EventRow>, StoreError> {
        let started = std::time::Instant::now();
        let r = self
            .query(sql)
            .fetch_all::<EventRow>()
            .await
            .map_err(classify);
        observe("rows", started, &r, |rows| sizes(rows));
        r
    }

    async fn count(&self, sql: &Sql) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        let r = self.query(sql).fetch_one::<u64>().await.map_err(classify);
        observe("count", started, &r, |_| (0, 0));
        r
    }

    async fn counts(&self, sql: &Sql) -> Result<Vec<CountRow>, StoreError> {
        let started = std::time::Instant::now();
        let r = self
            .query(sql)
            .fetch_all::<CountRow>()
            .await
            .map_err(classify);
        observe("stats", started, &r, |rows| (rows.len() as u64, 0));
        r
    }
}

/// ClickHouse's error codes of the limits set in [`ClickHouseLimits`].
const TOO_LARGE_CODES: [u32; 3] = [158, 307, 396];
const TIMEOUT_EXCEEDED: u32 = 159;

fn classify(e: clickhouse::error::Error) -> StoreError {
    match e {
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
            StoreError::Unavailable(e.to_string())
        }
        other => classify_text(other.to_string()),
    }
}

/// Sorts a server error by its `Code: N.`.
pub(super) fn classify_text(text: String) -> StoreError {
    match super::server_code(&text) {
        Some(c) if TOO_LARGE_CODES.contains(&c) => StoreError::TooLarge(text),
        Some(TIMEOUT_EXCEEDED) => StoreError::Timeout(text),
        _ => StoreError::Query(text),
    }
}
