//! The API dialects. Each is a thin adapter over the one core: request
//! parameters → [`crate::query::Filter`] and [`crate::query::Page`] →
//! parameterised SQL → rows → the dialect's JSON. Each module exports its
//! own `routes()` and lists the parameters it understands (`PARAMS`, or
//! `params()` where they derive from another dialect's), which the OpenAPI test
//! checks. Every cursor mode reads its pages through
//! [`crate::keyset::Keyset`].

pub mod atomic;
pub mod native;
pub mod orglog;
pub mod stats;
pub mod torq;
pub mod zendesk;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use trailhouse_schemas::EventRow;

use crate::error::ApiError;
use crate::keyset::{CursorParam, Keyset};
use crate::params::Params;
use crate::query::{Filter, Order};
use crate::state::AppState;
use crate::store::EventStore;

/// A newest-first page of the `{"data": [...], "cursor": "..."}` APIs (the
/// Atomic-style API and the organisation log): the `cursor` parameter walks
/// forward and the response carries the next cursor only when more exist.
/// `entry` renders a row; it may ask for the cursor positioned after it.
pub async fn data_page<S: EventStore>(
    state: &AppState<S>,
    dialect: &str,
    f: &Filter,
    p: &Params,
    limit: u32,
    entry: impl Fn(&EventRow, &dyn Fn(&EventRow) -> String) -> Value,
) -> Result<Value, ApiError> {
    let keyset =
        Keyset::new(state, dialect, f, Order::Desc, limit).cursor(CursorParam::next("cursor"));
    let page = keyset.read(p).await?;
    let after = |r: &EventRow| keyset.cursor_after(r);
    let data: Vec<Value> = page.rows.iter().map(|r| entry(r, &after)).collect();
    let mut body = json!({ "data": data });
    if let Some(c) = page.next {
        body["cursor"] = json!(c);
    }
    Ok(body)
}

/// UTC with milliseconds and `Z`.
pub fn millis(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `s`, or `fallback` when `s` is empty.
pub fn or_else<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() {
        fallback
    } else {
        s
    }
}

/// A non-empty string as JSON, else `null`.
pub fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// The stored query string parameters as a JSON object (`{}` when none).
pub fn query_object(r: &EventRow) -> Value {
    match serde_json::from_str::<Value>(&r.request_query) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => Value::Object(Map::new()),
    }
}
