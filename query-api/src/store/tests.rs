//! `fetch_page` over a store that answers page SQL as ClickHouse would.

use super::*;
use crate::query::Order;
use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

/// Answers page SQL over sorted rows as ClickHouse would: the time and
/// cursor bounds, the order and the limit (the only conditions these
/// tests use).
struct SortedStore(Vec<EventRow>);

fn param<'a>(sql: &'a Sql, stem: &str) -> Option<&'a str> {
    sql.params
        .iter()
        .find(|(n, _)| n.rsplit_once('_').is_some_and(|(s, _)| s == stem))
        .map(|(_, v)| v.as_str())
}

fn time(v: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.6f")
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

impl EventStore for SortedStore {
    async fn fetch(&self, sql: &Sql) -> Result<Vec<EventRow>, StoreError> {
        let desc = sql.text.contains("created_at DESC");
        let from = param(sql, "from").map(time);
        let until = param(sql, "until").map(time);
        let cursor = param(sql, "cur_t")
            .map(time)
            .zip(param(sql, "cur_id").and_then(|v| Uuid::parse_str(v).ok()));
        let limit: usize = param(sql, "limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut rows: Vec<EventRow> = self
            .0
            .iter()
            .filter(|r| from.is_none_or(|t| r.created_at >= t))
            .filter(|r| until.is_none_or(|t| r.created_at < t))
            .filter(|r| {
                cursor.is_none_or(|c| {
                    let k = (r.created_at, r.id);
                    if desc {
                        k < c
                    } else {
                        k > c
                    }
                })
            })
            .cloned()
            .collect();
        rows.sort_by_key(|r| (r.created_at, r.id));
        if desc {
            rows.reverse();
        }
        rows.truncate(limit);
        Ok(rows)
    }

    async fn count(&self, _: &Sql) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn counts(&self, _: &Sql) -> Result<Vec<crate::query::stats::CountRow>, StoreError> {
        // This double serves the keyset walk; counts are tested against
        // ClickHouse (tests/it/query/stats.rs).
        Ok(Vec::new())
    }
}

fn row(n: u64) -> EventRow {
    let e = &trailhouse_schemas::examples::all()[0];
    let mut r = EventRow::from_event(e, Default::default());
    r.id = Uuid::from_u128(u128::from(n));
    // Whole microseconds, as stored; within the newest time window.
    let now = Utc::now().timestamp_micros();
    let secs = i64::try_from(n).unwrap_or(0);
    r.created_at = DateTime::from_timestamp_micros(now - now % 1_000_000 - secs * 1_000_000)
        .unwrap_or_default();
    r
}

#[tokio::test]
async fn every_event_appears_once_whatever_the_page_size_and_direction() {
    // Events 0..20; event 3 stored 5 times, 9 twice, 10 three times,
    // 19 (the oldest) twice.
    let copies = |n: u64| match n {
        3 => 5,
        10 => 3,
        9 | 19 => 2,
        _ => 1,
    };
    let stored: Vec<EventRow> = (0..20)
        .flat_map(|n| std::iter::repeat_n(row(n), copies(n)))
        .collect();
    let store = SortedStore(stored);
    let want: Vec<Uuid> = (0..20).map(Uuid::from_u128).collect();
    let f = Filter::new("o");
    for limit in [1, 2, 3, 4, 7, 19, 20, 50] {
        for order in [Order::Desc, Order::Asc] {
            // Forward through every page.
            let mut seen = Vec::new();
            let mut start = Start::First;
            let mut pages = Vec::new();
            loop {
                let page = Page {
                    order,
                    start,
                    limit,
                };
                let got = fetch_page(&store, &f, &page).await.expect("page");
                seen.extend(got.rows.iter().map(|r| r.id));
                pages.push(got.clone());
                match got.next {
                    Some(p) => start = Start::After(p),
                    None => break,
                }
            }
            let mut expect = want.clone();
            if order == Order::Asc {
                expect.reverse();
            }
            assert_eq!(seen, expect, "limit {limit} {order:?}");
            // And back from the last page, through the same pages.
            let mut back = Vec::new();
            let mut prev = pages.last().and_then(|p| p.prev);
            while let Some(p) = prev {
                let page = Page {
                    order,
                    start: Start::Before(p),
                    limit,
                };
                let got = fetch_page(&store, &f, &page).await.expect("page");
                back.splice(0..0, got.rows.iter().map(|r| r.id));
                prev = got.prev;
            }
            let tail = pages.last().map_or(0, |p| p.rows.len());
            assert_eq!(
                back,
                expect[..expect.len() - tail],
                "back: limit {limit} {order:?}"
            );
        }
    }
}
