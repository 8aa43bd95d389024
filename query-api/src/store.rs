//! The port to ClickHouse for reads, the byte cap of a page, and the one
//! place the ClickHouse-side limits of every query are set
//! ([`read_client`]).

use trailhouse_schemas::EventRow;

mod clickhouse;

pub use clickhouse::{read_client, ClickHouseLimits, ClickHouseStore};

use crate::cursor::{Position, Walk};
use crate::query::stats::CountRow;
use crate::query::{build_page, time_windows, Filter, Page, Sql, Start};

/// A read that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse unavailable: {0}")]
    Unavailable(String),
    #[error("clickhouse refused a result over its limits: {0}")]
    TooLarge(String),
    #[error("clickhouse stopped a query at its time limit: {0}")]
    Timeout(String),
    #[error("clickhouse query failed: {0}")]
    Query(String),
}

impl StoreError {
    /// The error's kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::TooLarge(_) => "too_large",
            StoreError::Timeout(_) => "timeout",
            StoreError::Query(_) => "query",
        }
    }

    /// The server's error code (`Code: N.`), when it gave one.
    pub fn code(&self) -> Option<u32> {
        let (StoreError::Unavailable(t)
        | StoreError::TooLarge(t)
        | StoreError::Timeout(t)
        | StoreError::Query(t)) = self;
        server_code(t)
    }
}

/// The `Code: N.` of a ClickHouse error text.
pub(crate) fn server_code(text: &str) -> Option<u32> {
    text.split("Code: ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok())
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

    /// Runs a counting query of [`crate::query::stats`].
    fn counts(
        &self,
        sql: &Sql,
    ) -> impl std::future::Future<Output = Result<Vec<CountRow>, StoreError>> + Send;

    /// Reads rows in order while their stored size stays within `max_bytes`
    /// (the first row always comes), and says whether it stopped early. A
    /// real store stops reading there; this default reads all, then cuts.
    fn fetch_capped(
        &self,
        sql: &Sql,
        max_bytes: usize,
    ) -> impl std::future::Future<Output = Result<Capped, StoreError>> + Send {
        async move {
            let mut rows = self.fetch(sql).await?;
            let cut = cap(&mut rows, max_bytes);
            Ok(Capped { rows, cut })
        }
    }
}

/// Rows read up to a byte cap.
#[derive(Debug, Clone, PartialEq)]
pub struct Capped {
    pub rows: Vec<EventRow>,
    /// More rows followed, beyond the cap.
    pub cut: bool,
}

/// The bytes a row takes, as the page cap counts them: its strings and
/// maps, plus a fixed overhead for the other columns.
pub fn row_bytes(r: &EventRow) -> usize {
    let maps = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
    };
    let strings = [
        &r.org_id,
        &r.environment_id,
        &r.workspace_id,
        &r.workspace_name,
        &r.actor_type,
        &r.actor_id,
        &r.actor_email,
        &r.actor_name,
        &r.auth_type,
        &r.auth_client_id,
        &r.auth_sub,
        &r.auth_app_client_id,
        &r.auth_account_id,
        &r.source,
        &r.action_type,
        &r.action_description,
        &r.resource_type,
        &r.resource_id,
        &r.resource_name,
        &r.request_method,
        &r.request_url,
        &r.request_path,
        &r.request_ip,
        &r.request_user_agent,
        &r.request_query,
        &r.request_body,
    ];
    128 + strings.iter().map(|s| s.len()).sum::<usize>()
        + maps(&r.request_path_params)
        + maps(&r.request_headers)
        + maps(&r.metadata)
}

/// Truncates `rows` to the longest prefix within `max_bytes` (at least one
/// row); true when it removed any.
pub fn cap(rows: &mut Vec<EventRow>, max_bytes: usize) -> bool {
    let mut used = 0usize;
    let keep = rows
        .iter()
        .position(|r| {
            used = used.saturating_add(row_bytes(r));
            used > max_bytes
        })
        .map_or(rows.len(), |i| i.max(1));
    let cut = keep < rows.len();
    rows.truncate(keep);
    cut
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
    /// The byte cap ended the page before its limit.
    pub shortened: bool,
}

impl<P> Fetched<P> {
    /// The same page with `f(walk, p)` in place of each neighbour `p`.
    pub fn map<Q>(self, f: impl Fn(Walk, P) -> Q) -> Fetched<Q> {
        Fetched {
            rows: self.rows,
            has_more: self.has_more,
            next: self.next.map(|p| f(Walk::Next, p)),
            prev: self.prev.map(|p| f(Walk::Prev, p)),
            shortened: self.shortened,
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
///
/// Each event is returned once. An event is identified by `(org_id, id)`
/// and ingest gives a retried event the same `created_at`, so the copies a
/// retry stored sit next to each other in key order: a copy of the row
/// before it is skipped, and when that leaves a window's read short the
/// window is read on from the last row seen. A cursor continues strictly
/// after its row, so no copy reappears on the next page. `Offset` pages
/// (one window) are collapsed in SQL instead, where the offset is counted.
pub async fn fetch_page<S: EventStore>(
    store: &S,
    filter: &Filter,
    page: &Page,
) -> Result<Fetched, StoreError> {
    fetch_page_within(store, filter, page, usize::MAX).await
}

/// [`fetch_page`] with the rows kept within `max_bytes` (at least one row):
/// a page the cap shortens ends early, and its cursor continues after its
/// last row.
pub async fn fetch_page_within<S: EventStore>(
    store: &S,
    filter: &Filter,
    page: &Page,
    max_bytes: usize,
) -> Result<Fetched, StoreError> {
    let limit = page.limit as usize;
    let mut rows: Vec<EventRow> = Vec::new();
    let mut cut = false;
    'windows: for window in time_windows(filter, page, chrono::Utc::now()) {
        let mut f = filter.clone();
        for c in window {
            f.push(c);
        }
        let mut start = page.start;
        loop {
            let missing = (limit + 1).saturating_sub(rows.len());
            // `build_page` reads one row more than the page's limit.
            let part = Page {
                limit: u32::try_from(missing.saturating_sub(1)).unwrap_or(u32::MAX),
                start,
                ..*page
            };
            let used: usize = rows.iter().map(row_bytes).sum();
            let got = store
                .fetch_capped(&build_page(&f, &part), max_bytes.saturating_sub(used))
                .await?;
            let read = got.rows;
            let short = read.len() < missing && !got.cut;
            let Some(last) = read.last().map(position) else {
                break;
            };
            // A read on starts strictly after the last one; a store that
            // answered the same rows again would loop.
            if start == Start::After(last) || start == Start::Before(last) {
                break;
            }
            for r in read {
                if rows.last().map(position) != Some(position(&r)) {
                    rows.push(r);
                }
            }
            if got.cut | cap(&mut rows, max_bytes) {
                cut = true;
                break 'windows;
            }
            if rows.len() > limit {
                break 'windows;
            }
            if short {
                break;
            }
            // Copies were skipped: read on in this window, after `last`.
            start = match start {
                Start::Before(_) => Start::Before(last),
                Start::Offset(_) => break,
                Start::First | Start::After(_) => Start::After(last),
            };
        }
    }
    // Cut with fewer rows than the limit: the cap shortened the page.
    let shortened = cut && rows.len() < limit;
    if shortened {
        metrics::counter!(crate::metrics::PAGES_SHORTENED).increment(1);
    }
    let has_more = cut || rows.len() > limit;
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
        shortened,
    })
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

    async fn counts(&self, sql: &Sql) -> Result<Vec<CountRow>, StoreError> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(sql.clone());
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cap_tests;
