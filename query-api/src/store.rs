//! The port to ClickHouse for reads.

use trailhouse_schemas::EventRow;

use crate::cursor::{Position, Walk};
use crate::query::{build_page, time_windows, Filter, Page, Sql, Start};

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

    /// Runs a `SELECT count()` query.
    fn count(&self, sql: &Sql)
        -> impl std::future::Future<Output = Result<u64, StoreError>> + Send;
}

/// One page of rows in the requested order, and where the walk can go next:
/// positions as read, or the signed cursors of them (`Fetched<String>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched<P = Position> {
    pub rows: Vec<EventRow>,
    /// More rows exist beyond this page in the direction of the walk.
    pub has_more: bool,
    /// Where to continue forward from (the last row), when rows follow.
    pub next: Option<P>,
    /// Where to walk back from (the first row), when rows precede.
    pub prev: Option<P>,
}

impl<P> Fetched<P> {
    /// The same page with `f(walk, p)` in place of each neighbour `p`.
    pub fn map<Q>(self, f: impl Fn(Walk, P) -> Q) -> Fetched<Q> {
        Fetched {
            rows: self.rows,
            has_more: self.has_more,
            next: self.next.map(|p| f(Walk::Next, p)),
            prev: self.prev.map(|p| f(Walk::Prev, p)),
        }
    }
}

/// The keyset position of a row.
pub fn position(r: &EventRow) -> Position {
    Position {
        created_at: r.created_at,
        id: r.id,
    }
}

/// Runs one page: fetches `limit + 1` rows to learn whether more exist (in
/// the page's time windows, nearest first, until it has them), puts a
/// backward page back into the requested order, and works out the
/// neighbouring positions.
pub async fn fetch_page<S: EventStore>(
    store: &S,
    filter: &Filter,
    page: &Page,
) -> Result<Fetched, StoreError> {
    let limit = page.limit as usize;
    let mut rows = Vec::new();
    for window in time_windows(filter, page, chrono::Utc::now()) {
        let mut f = filter.clone();
        for c in window {
            f.push(c);
        }
        let missing = (limit + 1).saturating_sub(rows.len());
        // `build_page` reads one row more than the page's limit.
        let part = Page {
            limit: u32::try_from(missing.saturating_sub(1)).unwrap_or(u32::MAX),
            ..*page
        };
        rows.extend(store.fetch(&build_page(&f, &part)).await?);
        if rows.len() > limit {
            break;
        }
    }
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let (first, last) = match page.start {
        Start::Before(_) => {
            rows.reverse();
            (rows.first(), rows.last())
        }
        _ => (rows.first(), rows.last()),
    };
    let (next, prev) = match page.start {
        Start::First | Start::Offset(_) => (last.filter(|_| has_more), None),
        Start::After(_) => (last.filter(|_| has_more), first),
        Start::Before(_) => (last, first.filter(|_| has_more)),
    };
    let (next, prev) = (next.map(position), prev.map(position));
    Ok(Fetched {
        rows,
        has_more,
        next,
        prev,
    })
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
        q.fetch_all::<EventRow>().await.map_err(classify)
    }

    async fn count(&self, sql: &Sql) -> Result<u64, StoreError> {
        let mut q = self.client.query(&sql.text);
        for (name, value) in &sql.params {
            q = q.param(name, value.as_str());
        }
        q.fetch_one::<u64>().await.map_err(classify)
    }
}

fn classify(e: clickhouse::error::Error) -> StoreError {
    match e {
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Query(other.to_string()),
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

    async fn count(&self, sql: &Sql) -> Result<u64, StoreError> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(sql.clone());
        }
        Ok(self.rows.len() as u64)
    }
}
