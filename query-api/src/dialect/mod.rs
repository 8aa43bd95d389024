//! The API dialects. Each is a thin adapter over the one core: request
//! parameters → [`crate::query::Filter`] and [`crate::query::Page`] →
//! parameterised SQL → rows → the dialect's JSON. Each module lists the
//! parameters it understands (`PARAMS`), which the OpenAPI test checks.

pub mod atomic;
pub mod native;
pub mod orglog;
pub mod torq;
pub mod zendesk;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use trailhouse_schemas::EventRow;

/// UTC with milliseconds and `Z`.
pub fn millis(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
