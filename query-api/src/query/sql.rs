//! The SQL writer of the core: a [`Filter`] and a [`Page`] become
//! parameterised ClickHouse SQL. Values travel only as server-side parameters
//! (`{name:Type}`); the text is built from constant fragments.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use trailhouse_schemas::{EVENTS_TABLE, EVENT_COLUMNS};
use uuid::Uuid;

use super::{contains_pattern, prefix_pattern, Cond, Filter, Order, Page, Start};

/// SQL text plus its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<(String, String)>,
}

/// The ClickHouse text form of a `DateTime64(6)` parameter.
pub fn ch_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

const TIME: &str = "DateTime64(6, 'UTC')";

pub(super) struct Builder {
    pub(super) text: String,
    params: Vec<(String, String)>,
}

impl Builder {
    /// An empty statement, written by the caller.
    pub(super) fn new() -> Builder {
        Builder {
            text: String::new(),
            params: Vec::new(),
        }
    }

    /// Appends `SELECT {select} FROM` the events table `WHERE` the filter
    /// holds (a part of a larger statement).
    pub(super) fn push_select(&mut self, select: &str, f: &Filter) {
        let _ = write!(self.text, "SELECT {select} FROM {EVENTS_TABLE}");
        self.where_filter(f);
    }

    /// `SELECT {select} FROM` the events table `WHERE` the filter holds.
    pub(super) fn select(select: &str, f: &Filter) -> Builder {
        let mut b = Builder {
            text: format!("SELECT {select} FROM {EVENTS_TABLE}"),
            params: Vec::new(),
        };
        b.where_filter(f);
        b
    }

    pub(super) fn finish(self) -> Sql {
        Sql {
            text: self.text,
            params: self.params,
        }
    }

    /// The groups `(d0, d1)` as a list of parameter tuples, for `IN`.
    pub(super) fn group_tuples(&mut self, groups: &[(String, String)]) -> String {
        let tuples: Vec<String> = groups
            .iter()
            .map(|(a, c)| {
                let a = self.param("g", "String", a.clone());
                let c = self.param("g", "String", c.clone());
                format!("({a}, {c})")
            })
            .collect();
        tuples.join(", ")
    }

    /// Adds a parameter and returns its `{name:Type}` placeholder.
    pub(super) fn param(&mut self, stem: &str, ty: &str, value: String) -> String {
        let name = format!("{stem}_{}", self.params.len());
        let placeholder = format!("{{{name}:{ty}}}");
        self.params.push((name, value));
        placeholder
    }

    fn where_filter(&mut self, f: &Filter) {
        let org = self.param("org", "String", f.org_id.clone());
        let _ = write!(self.text, " WHERE org_id = {org}");
        for c in &f.conds {
            let sql = match c {
                Cond::AnyOf(field, values) => {
                    let list: Vec<String> = values
                        .iter()
                        .map(|v| self.param(field.column(), "String", v.clone()))
                        .collect();
                    format!("{} IN ({})", field.column(), list.join(", "))
                }
                Cond::StatusIn(values) => {
                    let list: Vec<String> = values
                        .iter()
                        .map(|v| self.param("status", "UInt16", v.to_string()))
                        .collect();
                    format!("request_status IN ({})", list.join(", "))
                }
                Cond::StatusBetween(lo, hi) => {
                    let mut parts = Vec::new();
                    if let Some(lo) = lo {
                        let p = self.param("status_min", "UInt16", lo.to_string());
                        parts.push(format!("request_status >= {p}"));
                    }
                    if let Some(hi) = hi {
                        let p = self.param("status_max", "UInt16", hi.to_string());
                        parts.push(format!("request_status <= {p}"));
                    }
                    parts.join(" AND ")
                }
                Cond::PathPrefix(p) => {
                    // The LIKE on the lowercase path lets the `idx_path`
                    // n-gram index skip granules; `startsWith` keeps the
                    // match exact (case-sensitive).
                    let lp = self.param("path_prefix_lower", "String", prefix_pattern(p));
                    let p = self.param("path_prefix", "String", p.clone());
                    format!("(lowerUTF8(request_path) LIKE {lp} AND startsWith(request_path, {p}))")
                }
                Cond::PathContains(p) => {
                    let p = self.param("path", "String", contains_pattern(p));
                    format!("lowerUTF8(request_path) LIKE {p}")
                }
                Cond::Search(q) => {
                    let pat = self.param("search_path", "String", contains_pattern(q));
                    let p = self.param("search", "String", q.clone());
                    format!(
                        "(lowerUTF8(request_path) LIKE {pat} OR actor_id = {p} OR workspace_id = {p})"
                    )
                }
                Cond::From(t) => {
                    let p = self.param("from", TIME, ch_time(t));
                    format!("created_at >= {p}")
                }
                Cond::Until(t) => {
                    let p = self.param("until", TIME, ch_time(t));
                    format!("created_at < {p}")
                }
            };
            let _ = write!(self.text, " AND {sql}");
        }
    }
}

/// Builds the page query. Fetches `limit + 1` rows so the caller knows
/// whether another page exists. A `Before` page is read in the reverse order
/// (see [`crate::store::fetch_page`], which turns it back).
pub fn build_page(f: &Filter, page: &Page) -> Sql {
    let mut b = Builder::select(EVENT_COLUMNS, f);
    let scan = page.scan();
    if let Start::After(pos) | Start::Before(pos) = page.start {
        let cmp = match scan {
            Order::Desc => '<',
            Order::Asc => '>',
        };
        let t = b.param("cur_t", TIME, ch_time(&pos.created_at));
        let id = b.param("cur_id", "UUID", pos.id.to_string());
        let _ = write!(
            b.text,
            " AND (created_at {cmp} {t} OR (created_at = {t} AND id {cmp} {id}))"
        );
    }
    let dir = scan.sql();
    let _ = write!(b.text, " ORDER BY created_at {dir}, id {dir}");
    // An offset counts events, not stored copies (see `COLLAPSE`); keyset
    // pages skip copies as they read them (`store::fetch_page`).
    if let Start::Offset(_) = page.start {
        b.text.push_str(COLLAPSE);
    }
    let limit = b.param("limit", "UInt64", (u64::from(page.limit) + 1).to_string());
    let _ = write!(b.text, " LIMIT {limit}");
    if let Start::Offset(n) = page.start {
        let off = b.param("offset", "UInt64", n.to_string());
        let _ = write!(b.text, " OFFSET {off}");
    }
    b.finish()
}

/// Keeps one row of each event: an event is `(org_id, id)`, a retry of it
/// has the same `created_at`, and every query is within one org, so the
/// copies a retried publish stored share `(created_at, id)`.
pub const COLLAPSE: &str = " LIMIT 1 BY created_at, id";

/// Counts the events a filter selects (each once, however many copies a
/// retry stored).
pub fn build_count(f: &Filter) -> Sql {
    let inner = Builder::select("created_at, id", f).finish();
    Sql {
        text: format!("SELECT count() FROM ({}{COLLAPSE})", inner.text),
        params: inner.params,
    }
}

/// One event by id, within the filter's org and conditions (the scope).
pub fn build_get(f: &Filter, id: Uuid) -> Sql {
    let mut b = Builder::select(EVENT_COLUMNS, f);
    let p = b.param("id", "UUID", id.to_string());
    let _ = write!(b.text, " AND id = {p} LIMIT 1");
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Position;
    use crate::query::Field;
    use proptest::prelude::*;

    fn tail(sql: &Sql) -> &str {
        let from = format!(" FROM {EVENTS_TABLE} ");
        sql.text.split(from.as_str()).nth(1).unwrap_or("")
    }

    fn page(start: Start) -> Page {
        Page {
            order: Order::Desc,
            start,
            limit: 100,
        }
    }

    #[test]
    fn plain_page() {
        let s = build_page(&Filter::new("acme"), &page(Start::First));
        assert_eq!(
            tail(&s),
            "WHERE org_id = {org_0:String} ORDER BY created_at DESC, id DESC LIMIT {limit_1:UInt64}"
        );
        assert_eq!(
            s.params,
            vec![
                ("org_0".to_string(), "acme".to_string()),
                ("limit_1".to_string(), "101".to_string())
            ]
        );
    }

    #[test]
    fn filters_and_an_expanded_cursor() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let f = Filter::new("acme")
            .and(Cond::AnyOf(Field::Environment, vec!["prod".into()]))
            .and(Cond::AnyOf(Field::ActionType, vec!["a".into(), "b".into()]))
            .and(Cond::StatusBetween(Some(400), None))
            .and(Cond::From(t));
        let s = build_page(
            &f,
            &Page {
                order: Order::Asc,
                start: Start::After(Position {
                    created_at: t,
                    id: Uuid::from_u128(1),
                }),
                limit: 10,
            },
        );
        assert_eq!(
            tail(&s),
            "WHERE org_id = {org_0:String} AND environment_id IN ({environment_id_1:String}) \
AND action_type IN ({action_type_2:String}, {action_type_3:String}) \
AND request_status >= {status_min_4:UInt16} \
AND created_at >= {from_5:DateTime64(6, 'UTC')} \
AND (created_at > {cur_t_6:DateTime64(6, 'UTC')} OR (created_at = {cur_t_6:DateTime64(6, 'UTC')} AND id > {cur_id_7:UUID})) \
ORDER BY created_at ASC, id ASC LIMIT {limit_8:UInt64}"
        );
        assert!(s
            .params
            .contains(&("from_5".into(), "2023-11-14 22:13:20.123456".into())));
    }

    #[test]
    fn before_pages_scan_backwards_and_offsets_are_explicit() {
        let pos = Position {
            created_at: DateTime::from_timestamp_micros(5).unwrap_or_default(),
            id: Uuid::from_u128(2),
        };
        let s = build_page(&Filter::new("a"), &page(Start::Before(pos)));
        assert!(tail(&s).contains("created_at > {cur_t_1"), "{}", s.text);
        assert!(tail(&s).ends_with("ORDER BY created_at ASC, id ASC LIMIT {limit_3:UInt64}"));
        let s = build_page(&Filter::new("a"), &page(Start::Offset(300)));
        assert!(tail(&s).ends_with(
            "ORDER BY created_at DESC, id DESC LIMIT 1 BY created_at, id LIMIT {limit_1:UInt64} OFFSET {offset_2:UInt64}"
        ));
    }

    #[test]
    fn get_and_count_are_scoped_to_the_filter() {
        let f = Filter::new("acme").and(Cond::AnyOf(Field::Workspace, vec!["w".into()]));
        let s = build_get(&f, Uuid::from_u128(5));
        assert_eq!(
            tail(&s),
            "WHERE org_id = {org_0:String} AND workspace_id IN ({workspace_id_1:String}) AND id = {id_2:UUID} LIMIT 1"
        );
        let count = build_count(&f);
        assert_eq!(
            count.text,
            format!(
                "SELECT count() FROM (SELECT created_at, id FROM {EVENTS_TABLE} WHERE org_id = {{org_0:String}} \
AND workspace_id IN ({{workspace_id_1:String}}) LIMIT 1 BY created_at, id)"
            )
        );
    }

    proptest! {
        #[test]
        fn values_never_reach_the_sql_text(org in ".{1,30}", v in ".{1,30}", path in ".{0,30}") {
            let f = Filter::new(org.clone())
                .and(Cond::AnyOf(Field::ActorId, vec![v.clone()]))
                .and(Cond::Search(path.clone()));
            let fixed = Filter::new("x")
                .and(Cond::AnyOf(Field::ActorId, vec!["y".into()]))
                .and(Cond::Search("z".into()));
            let s = build_page(&f, &page(Start::First));
            prop_assert_eq!(&s.text, &build_page(&fixed, &page(Start::First)).text);
            prop_assert_eq!(&s.params[0].1, &org);
            prop_assert_eq!(&s.params[1].1, &v);
        }
    }
}
