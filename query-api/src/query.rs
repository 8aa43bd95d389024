//! The one translation core of every API dialect: a [`Filter`] and a [`Page`]
//! become parameterised ClickHouse SQL.
//!
//! Values only ever travel as server-side parameters (`{name:Type}`); the SQL
//! text is built from constant fragments, so it depends on the *shape* of a
//! request (which filters, how many values) and never on its values.
//!
//! Pagination is keyset on the table's sort key `(org_id, created_at, id)`:
//! with the org fixed, rows are read in key order and the cursor predicate is
//! written out (`created_at < t OR (created_at = t AND id < i)`) because
//! ClickHouse does not use the primary key for tuple comparisons. `OFFSET`
//! exists only for the capped offset mode of the Zendesk dialect.
//!
//! [`Filter::matches`] is the reference semantics of the same filter, evaluated
//! in memory; property tests hold the SQL to it.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use trailhouse_schemas::{EventRow, EVENT_COLUMNS};
use uuid::Uuid;

use crate::cursor::Position;

/// Sort direction of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first.
    Desc,
    /// Oldest first.
    Asc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }

    fn reversed(self) -> Order {
        match self {
            Order::Desc => Order::Asc,
            Order::Asc => Order::Desc,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Order::Desc => "DESC",
            Order::Asc => "ASC",
        }
    }
}

/// A string column that filters match exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    ActorId,
    ActorEmail,
    ActionType,
    ResourceType,
    ResourceId,
    AuthType,
    Source,
    Method,
    Ip,
    Environment,
    Workspace,
}

impl Field {
    pub const ALL: [Field; 11] = [
        Field::ActorId,
        Field::ActorEmail,
        Field::ActionType,
        Field::ResourceType,
        Field::ResourceId,
        Field::AuthType,
        Field::Source,
        Field::Method,
        Field::Ip,
        Field::Environment,
        Field::Workspace,
    ];

    /// The column, which is also the stem of its parameter names.
    pub fn column(self) -> &'static str {
        match self {
            Field::ActorId => "actor_id",
            Field::ActorEmail => "actor_email",
            Field::ActionType => "action_type",
            Field::ResourceType => "resource_type",
            Field::ResourceId => "resource_id",
            Field::AuthType => "auth_type",
            Field::Source => "source",
            Field::Method => "request_method",
            Field::Ip => "request_ip",
            Field::Environment => "environment_id",
            Field::Workspace => "workspace_id",
        }
    }

    /// The value of this column in a row.
    pub fn of(self, r: &EventRow) -> &str {
        match self {
            Field::ActorId => &r.actor_id,
            Field::ActorEmail => &r.actor_email,
            Field::ActionType => &r.action_type,
            Field::ResourceType => &r.resource_type,
            Field::ResourceId => &r.resource_id,
            Field::AuthType => &r.auth_type,
            Field::Source => &r.source,
            Field::Method => &r.request_method,
            Field::Ip => &r.request_ip,
            Field::Environment => &r.environment_id,
            Field::Workspace => &r.workspace_id,
        }
    }
}

/// One condition; a filter is the conjunction of its conditions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cond {
    /// The column equals one of the values.
    AnyOf(Field, Vec<String>),
    /// `request.status` is one of the values.
    StatusIn(Vec<u16>),
    /// `request.status` within inclusive bounds (absent status never matches).
    StatusBetween(Option<u16>, Option<u16>),
    /// `request.path` starts with the value (case-sensitive).
    PathPrefix(String),
    /// `request.path` contains the value, ignoring case.
    PathContains(String),
    /// The organisation-log search: path contains (ignoring case), or the
    /// actor id or the workspace id equals the value.
    Search(String),
    /// `created_at >= t`.
    From(DateTime<Utc>),
    /// `created_at < t`.
    Until(DateTime<Utc>),
}

/// Which events of one org a request selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Always from the token; never from request parameters.
    pub org_id: String,
    pub conds: Vec<Cond>,
}

impl Filter {
    pub fn new(org_id: impl Into<String>) -> Self {
        Filter {
            org_id: org_id.into(),
            conds: Vec::new(),
        }
    }

    /// Adds a condition (builder style).
    pub fn and(mut self, c: Cond) -> Self {
        self.push(c);
        self
    }

    /// Adds a condition; an empty value list is no condition at all.
    pub fn push(&mut self, c: Cond) {
        match &c {
            Cond::AnyOf(_, v) if v.is_empty() => {}
            Cond::StatusIn(v) if v.is_empty() => {}
            Cond::StatusBetween(None, None) => {}
            _ => self.conds.push(c),
        }
    }

    /// The canonical text of the filter, to which cursors are bound: the same
    /// set of conditions gives the same key whatever order they came in.
    pub fn key(&self) -> String {
        let mut conds = self.conds.clone();
        for c in &mut conds {
            match c {
                Cond::AnyOf(_, v) => {
                    v.sort();
                    v.dedup();
                }
                Cond::StatusIn(v) => {
                    v.sort_unstable();
                    v.dedup();
                }
                _ => {}
            }
        }
        conds.sort();
        format!("{:?}", conds)
    }

    /// The reference semantics: does `row` match? (The SQL must agree.)
    pub fn matches(&self, r: &EventRow) -> bool {
        r.org_id == self.org_id
            && self.conds.iter().all(|c| match c {
                Cond::AnyOf(f, v) => v.iter().any(|x| x == f.of(r)),
                Cond::StatusIn(v) => r.request_status.is_some_and(|s| v.contains(&s)),
                Cond::StatusBetween(lo, hi) => r
                    .request_status
                    .is_some_and(|s| lo.is_none_or(|lo| s >= lo) && hi.is_none_or(|hi| s <= hi)),
                Cond::PathPrefix(p) => r.request_path.starts_with(p.as_str()),
                Cond::PathContains(p) => contains_ci(&r.request_path, p),
                Cond::Search(q) => {
                    contains_ci(&r.request_path, q) || r.actor_id == *q || r.workspace_id == *q
                }
                Cond::From(t) => r.created_at >= *t,
                Cond::Until(t) => r.created_at < *t,
            })
    }
}

/// The `LIKE` pattern matching paths that contain `needle`, ignoring case.
/// The expression `lowerUTF8(request_path) LIKE pattern` is the one the
/// `idx_path` n-gram index serves (it does not serve
/// `positionCaseInsensitiveUTF8`); `%`, `_` and `\` in the needle are escaped.
pub fn contains_pattern(needle: &str) -> String {
    format!("%{}%", like_escaped_lowercase(needle))
}

/// The `LIKE` pattern matching lowercase paths that start with `prefix` lowercased.
pub fn prefix_pattern(prefix: &str) -> String {
    format!("{}%", like_escaped_lowercase(prefix))
}

fn like_escaped_lowercase(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first page in the sort order.
    First,
    /// The page right after a position (walking forward).
    After(Position),
    /// The page right before a position (walking back).
    Before(Position),
    /// Skip this many rows (only the capped Zendesk offset mode).
    Offset(u64),
}

/// One page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub order: Order,
    pub start: Start,
    pub limit: u32,
}

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

struct Builder {
    text: String,
    params: Vec<(String, String)>,
}

impl Builder {
    /// Adds a parameter and returns its `{name:Type}` placeholder.
    fn param(&mut self, stem: &str, ty: &str, value: String) -> String {
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
    let mut b = Builder {
        text: format!("SELECT {EVENT_COLUMNS} FROM events"),
        params: Vec::new(),
    };
    b.where_filter(f);
    let scan = match page.start {
        Start::Before(_) => page.order.reversed(),
        _ => page.order,
    };
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
    let limit = b.param("limit", "UInt64", (u64::from(page.limit) + 1).to_string());
    let _ = write!(b.text, " ORDER BY created_at {dir}, id {dir} LIMIT {limit}");
    if let Start::Offset(n) = page.start {
        let off = b.param("offset", "UInt64", n.to_string());
        let _ = write!(b.text, " OFFSET {off}");
    }
    Sql {
        text: b.text,
        params: b.params,
    }
}

/// Widths of the time windows a keyset page is read in, nearest first: the
/// page's own side of the anchor, then the next 6 days, the next 23, then
/// everything else. A large org's newest page lies in the first window, so
/// the partition key (by day) skips every other partition: on 10M events
/// over 30 days, the newest page of a 3M-event org took 450 ms as one
/// query and 40 ms in the first window.
const WINDOW_DAYS: [i64; 3] = [1, 7, 30];

/// The time windows to read a page in, in the order the page scans: extra
/// conditions, disjoint, together covering everything the page could
/// return, so the page is the concatenation of the windows' rows (the
/// caller stops once it has enough). The anchor is the cursor's time, the
/// filter's bound on the scan's start side, or `now` for a newest-first
/// first page; an oldest-first first page without a lower bound has no
/// anchor and is one window. Cut points outside the filter's own time
/// bounds are left out. `Offset` pages are always one window.
pub fn time_windows(f: &Filter, page: &Page, now: DateTime<Utc>) -> Vec<Vec<Cond>> {
    let scan = match page.start {
        Start::Before(_) => page.order.reversed(),
        _ => page.order,
    };
    let lower = f
        .conds
        .iter()
        .filter_map(|c| match c {
            Cond::From(t) => Some(*t),
            _ => None,
        })
        .max();
    let upper = f
        .conds
        .iter()
        .filter_map(|c| match c {
            Cond::Until(t) => Some(*t),
            _ => None,
        })
        .min();
    let anchor = match (page.start, scan) {
        (Start::Offset(_), _) => None,
        (Start::After(p) | Start::Before(p), _) => Some(p.created_at),
        (Start::First, Order::Desc) => Some(upper.map_or(now, |u| u.min(now))),
        (Start::First, Order::Asc) => lower,
    };
    let Some(anchor) = anchor else {
        return vec![Vec::new()];
    };
    let cuts: Vec<DateTime<Utc>> = WINDOW_DAYS
        .iter()
        .filter_map(|d| match scan {
            Order::Desc => anchor.checked_sub_signed(chrono::Duration::days(*d)),
            Order::Asc => anchor.checked_add_signed(chrono::Duration::days(*d)),
        })
        .filter(|c| lower.is_none_or(|l| *c > l) && upper.is_none_or(|u| *c < u))
        .collect();
    let mut windows = Vec::with_capacity(cuts.len() + 1);
    let mut previous: Option<DateTime<Utc>> = None;
    for cut in cuts {
        windows.push(match (scan, previous) {
            (Order::Desc, None) => vec![Cond::From(cut)],
            (Order::Desc, Some(p)) => vec![Cond::From(cut), Cond::Until(p)],
            (Order::Asc, None) => vec![Cond::Until(cut)],
            (Order::Asc, Some(p)) => vec![Cond::From(p), Cond::Until(cut)],
        });
        previous = Some(cut);
    }
    windows.push(match (scan, previous) {
        (_, None) => Vec::new(),
        (Order::Desc, Some(p)) => vec![Cond::Until(p)],
        (Order::Asc, Some(p)) => vec![Cond::From(p)],
    });
    windows
}

/// Counts the events a filter selects.
pub fn build_count(f: &Filter) -> Sql {
    let mut b = Builder {
        text: "SELECT count() FROM events".to_string(),
        params: Vec::new(),
    };
    b.where_filter(f);
    Sql {
        text: b.text,
        params: b.params,
    }
}

/// One event by id, within the filter's org and conditions (the scope).
pub fn build_get(f: &Filter, id: Uuid) -> Sql {
    let mut b = Builder {
        text: format!("SELECT {EVENT_COLUMNS} FROM events"),
        params: Vec::new(),
    };
    b.where_filter(f);
    let p = b.param("id", "UUID", id.to_string());
    let _ = write!(b.text, " AND id = {p} LIMIT 1");
    Sql {
        text: b.text,
        params: b.params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contains_patterns_escape_like_wildcards() {
        assert_eq!(contains_pattern("Users"), "%users%");
        assert_eq!(prefix_pattern("/API/v1_"), "/api/v1\\_%");
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    }

    fn holds(conds: &[Cond], t: DateTime<Utc>) -> bool {
        conds.iter().all(|c| match c {
            Cond::From(f) => t >= *f,
            Cond::Until(u) => t < *u,
            _ => true,
        })
    }

    #[test]
    fn newest_first_pages_read_the_last_day_first() {
        let now = at(1_780_000_000_000_000);
        let day = chrono::Duration::days(1);
        let p = Page {
            order: Order::Desc,
            start: Start::First,
            limit: 100,
        };
        let w = time_windows(&Filter::new("a"), &p, now);
        assert_eq!(
            w,
            vec![
                vec![Cond::From(now - day)],
                vec![Cond::From(now - day * 7), Cond::Until(now - day)],
                vec![Cond::From(now - day * 30), Cond::Until(now - day * 7)],
                vec![Cond::Until(now - day * 30)],
            ]
        );
        // Within a filter narrower than a day: one window, nothing added.
        let narrow = Filter::new("a").and(Cond::From(now - chrono::Duration::hours(2)));
        assert_eq!(time_windows(&narrow, &p, now), vec![Vec::<Cond>::new()]);
        // Oldest first without a lower bound, and offset pages: one window.
        let asc = Page {
            order: Order::Asc,
            ..p
        };
        assert_eq!(
            time_windows(&Filter::new("a"), &asc, now),
            vec![Vec::<Cond>::new()]
        );
        let off = Page {
            start: Start::Offset(200),
            ..p
        };
        assert_eq!(
            time_windows(&Filter::new("a"), &off, now),
            vec![Vec::<Cond>::new()]
        );
    }

    proptest! {
        #[test]
        fn windows_partition_time_in_scan_order(
            anchor in 0i64..4_000_000_000_000_000,
            bounds in (proptest::option::of(-50i64..50), proptest::option::of(-50i64..50)),
            start in 0usize..4,
            asc in any::<bool>(),
            times in proptest::collection::vec(-60i64..60, 1..40),
        ) {
            // Times and bounds in days around the anchor.
            let day = 86_400_000_000i64;
            let now = at(anchor);
            let mut f = Filter::new("a");
            if let Some(l) = bounds.0 { f.push(Cond::From(at(anchor + l * day))); }
            if let Some(u) = bounds.1 { f.push(Cond::Until(at(anchor + u * day))); }
            let pos = Position { created_at: now, id: Uuid::nil() };
            let start = [Start::First, Start::After(pos), Start::Before(pos), Start::Offset(5)][start];
            let order = if asc { Order::Asc } else { Order::Desc };
            let page = Page { order, start, limit: 10 };
            let windows = time_windows(&f, &page, now);
            prop_assert!(!windows.is_empty() && windows.len() <= 4);
            let scan = match start { Start::Before(_) => order.reversed(), _ => order };
            let mut seen: Vec<(usize, i64)> = Vec::new();
            for t in times {
                let t = anchor + t * day + t;
                let hits: Vec<usize> = windows.iter().enumerate()
                    .filter(|(_, w)| holds(w, at(t))).map(|(i, _)| i).collect();
                // Every time is in exactly one window.
                prop_assert_eq!(hits.len(), 1, "time {} in windows {:?}", t, hits);
                seen.push((hits[0], t));
            }
            // On the scan's side of the anchor, an earlier window never
            // holds a time the scan reaches later.
            let ahead = |t: i64| match scan { Order::Desc => t <= anchor, Order::Asc => t >= anchor };
            for (wa, ta) in seen.iter().filter(|(_, t)| ahead(*t)) {
                for (wb, tb) in seen.iter().filter(|(_, t)| ahead(*t)) {
                    if wa < wb {
                        match scan {
                            Order::Desc => prop_assert!(ta > tb),
                            Order::Asc => prop_assert!(ta < tb),
                        }
                    }
                }
            }
        }
    }

    fn tail(sql: &Sql) -> &str {
        sql.text.split(" FROM events ").nth(1).unwrap_or("")
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
        assert!(tail(&s).ends_with("LIMIT {limit_1:UInt64} OFFSET {offset_2:UInt64}"));
    }

    #[test]
    fn get_and_count_are_scoped_to_the_filter() {
        let f = Filter::new("acme").and(Cond::AnyOf(Field::Workspace, vec!["w".into()]));
        let s = build_get(&f, Uuid::from_u128(5));
        assert_eq!(
            tail(&s),
            "WHERE org_id = {org_0:String} AND workspace_id IN ({workspace_id_1:String}) AND id = {id_2:UUID} LIMIT 1"
        );
        assert!(build_count(&f)
            .text
            .starts_with("SELECT count() FROM events WHERE org_id"));
    }

    #[test]
    fn the_key_ignores_order_and_repetition() {
        let a = Filter::new("o")
            .and(Cond::AnyOf(Field::Ip, vec!["b".into(), "a".into()]))
            .and(Cond::PathPrefix("/x".into()));
        let b = Filter::new("o")
            .and(Cond::PathPrefix("/x".into()))
            .and(Cond::AnyOf(
                Field::Ip,
                vec!["a".into(), "b".into(), "a".into()],
            ));
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), Filter::new("o").key());
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
