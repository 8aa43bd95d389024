//! Filters and pages → parameterised ClickHouse SQL.
//!
//! Values only ever travel as server-side parameters (`{name:Type}`); the SQL
//! text is built from constant fragments. Pagination is keyset on the table's
//! sort key `(org_id, created_at, id)`: with the org fixed, rows are read in
//! key order and the cursor predicate is written out
//! (`created_at < t OR (created_at = t AND id < i)`) because ClickHouse does
//! not use the primary key for tuple comparisons.

use chrono::{DateTime, Utc};
use trailhouse_schemas::EVENT_COLUMNS;
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
}

/// One page request over one org's events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub org_id: String,
    /// Scope from the token, when it carries one.
    pub environment_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub order: Order,
    pub after: Option<Position>,
    pub limit: u32,
}

impl EventQuery {
    /// A canonical text of the filters, to which cursors are bound.
    pub fn filter_key(&self) -> String {
        let ts = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.timestamp_micros().to_string())
                .unwrap_or_default()
        };
        format!(
            "env={}&from={}&to={}",
            self.environment_id.as_deref().unwrap_or(""),
            ts(&self.from),
            ts(&self.to)
        )
    }
}

/// SQL text plus its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<(&'static str, String)>,
}

/// The ClickHouse text form of a `DateTime64(6)` parameter.
pub fn ch_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Builds the page query. Fetches `limit + 1` rows so the caller knows
/// whether another page exists.
pub fn build_page(q: &EventQuery) -> Sql {
    let mut text = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = {{org:String}}");
    let mut params = vec![("org", q.org_id.clone())];
    if let Some(env) = &q.environment_id {
        text.push_str(" AND environment_id = {env:String}");
        params.push(("env", env.clone()));
    }
    if let Some(from) = &q.from {
        text.push_str(" AND created_at >= {from:DateTime64(6, 'UTC')}");
        params.push(("from", ch_time(from)));
    }
    if let Some(to) = &q.to {
        text.push_str(" AND created_at < {to:DateTime64(6, 'UTC')}");
        params.push(("to", ch_time(to)));
    }
    if let Some(pos) = &q.after {
        let cmp = match q.order {
            Order::Desc => '<',
            Order::Asc => '>',
        };
        text.push_str(&format!(
            " AND (created_at {cmp} {{cur_t:DateTime64(6, 'UTC')}} OR (created_at = {{cur_t:DateTime64(6, 'UTC')}} AND id {cmp} {{cur_id:UUID}}))"
        ));
        params.push(("cur_t", ch_time(&pos.created_at)));
        params.push(("cur_id", pos.id.to_string()));
    }
    let dir = match q.order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    };
    text.push_str(&format!(
        " ORDER BY created_at {dir}, id {dir} LIMIT {{limit:UInt32}}"
    ));
    params.push(("limit", (u64::from(q.limit) + 1).to_string()));
    Sql { text, params }
}

/// One event by id, within the org (and environment) scope.
pub fn build_get(org_id: &str, environment_id: Option<&str>, id: Uuid) -> Sql {
    let mut text = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE org_id = {{org:String}} AND id = {{id:UUID}}"
    );
    let mut params = vec![("org", org_id.to_string()), ("id", id.to_string())];
    if let Some(env) = environment_id {
        text.push_str(" AND environment_id = {env:String}");
        params.push(("env", env.to_string()));
    }
    text.push_str(" LIMIT 1");
    Sql { text, params }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q() -> EventQuery {
        EventQuery {
            org_id: "acme".into(),
            environment_id: None,
            from: None,
            to: None,
            order: Order::Desc,
            after: None,
            limit: 100,
        }
    }

    fn tail(sql: &Sql) -> &str {
        sql.text.split(" FROM events ").nth(1).unwrap_or("")
    }

    #[test]
    fn plain_page() {
        let s = build_page(&q());
        assert_eq!(
            tail(&s),
            "WHERE org_id = {org:String} ORDER BY created_at DESC, id DESC LIMIT {limit:UInt32}"
        );
        assert_eq!(
            s.params,
            vec![("org", "acme".into()), ("limit", "101".into())]
        );
    }

    #[test]
    fn all_filters_and_an_expanded_cursor() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let s = build_page(&EventQuery {
            environment_id: Some("prod".into()),
            from: Some(t),
            to: Some(t),
            order: Order::Asc,
            after: Some(Position {
                created_at: t,
                id: Uuid::from_u128(1),
            }),
            ..q()
        });
        assert_eq!(
            tail(&s),
            "WHERE org_id = {org:String} AND environment_id = {env:String} \
AND created_at >= {from:DateTime64(6, 'UTC')} AND created_at < {to:DateTime64(6, 'UTC')} \
AND (created_at > {cur_t:DateTime64(6, 'UTC')} OR (created_at = {cur_t:DateTime64(6, 'UTC')} AND id > {cur_id:UUID})) \
ORDER BY created_at ASC, id ASC LIMIT {limit:UInt32}"
        );
        assert!(s
            .params
            .contains(&("from", "2023-11-14 22:13:20.123456".into())));
        assert!(s
            .params
            .contains(&("cur_id", "00000000-0000-0000-0000-000000000001".into())));
    }

    #[test]
    fn get_is_scoped_to_the_org() {
        let s = build_get("acme", Some("prod"), Uuid::from_u128(5));
        assert!(s.text.contains(
            "org_id = {org:String} AND id = {id:UUID} AND environment_id = {env:String}"
        ));
    }

    proptest! {
        #[test]
        fn values_never_reach_the_sql_text(org in ".{1,30}", env in proptest::option::of(".{1,30}")) {
            let s = build_page(&EventQuery { org_id: org.clone(), environment_id: env.clone(), ..q() });
            let fixed = build_page(&EventQuery { org_id: "x".into(), environment_id: env.as_ref().map(|_| "y".into()), ..q() });
            prop_assert_eq!(&s.text, &fixed.text);
            prop_assert_eq!(&s.params[0].1, &org);
        }
    }
}
