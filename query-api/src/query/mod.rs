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
//!
//! This module is the model; `sql` writes it as SQL, `windows` splits
//! a keyset page into the time windows it is read in, and [`stats`] is the
//! model and SQL of counts over time.

pub mod rollup;
mod sql;
pub mod stats;
mod windows;

pub use sql::{build_count, build_get, build_page, ch_time, Sql, COLLAPSE};
pub use windows::time_windows;

use chrono::{DateTime, Utc};
use trailhouse_schemas::EventRow;

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
impl Page {
    /// The order rows are read in: a `Before` page is read backwards from
    /// its position and turned around afterwards.
    fn scan(&self) -> Order {
        match self.start {
            Start::Before(_) => self.order.reversed(),
            _ => self.order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_patterns_escape_like_wildcards() {
        assert_eq!(contains_pattern("Users"), "%users%");
        assert_eq!(prefix_pattern("/API/v1_"), "/api/v1\\_%");
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
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
}
