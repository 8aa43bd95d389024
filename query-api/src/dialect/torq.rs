//! Torq-style `GET /v1alpha/audit_logs`: requires a token with a workspace
//! and reads within its scope ([`crate::scope`]), a time window (the last 24
//! hours by default), `page_size`, `page_token` and `order`. Errors,
//! including an unknown parameter, take Torq's gRPC-gateway shape.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Json;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use trailhouse_schemas::EventRow;

use super::{opt, or_else};
use crate::access::VIEW_AUDIT_LOG;
use crate::auth::Claims;
use crate::error::{ApiError, Failure, Shape};
use crate::keyset::{CursorParam, Keyset};
use crate::params::{after_micros, ceil_micros, Params};
use crate::query::{Filter, Order};
use crate::state::{AppState, Routes, Shared};
use crate::store::EventStore;

pub const DIALECT: &str = "torq";
pub const PATH: &str = "/v1alpha/audit_logs";
pub const PARAMS: &[&str] = &["start_time", "end_time", "page_size", "page_token", "order"];
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 500;

/// The routes of the Torq-style API.
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new().route(PATH, get(list::<S>))
}

/// The window `[from, until)` of a request at time `now`, both request
/// bounds inclusive.
pub fn window(p: &Params, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let day = Duration::hours(24);
    let (start, end) = match (p.time("start_time")?, p.time("end_time")?) {
        (None, None) => (now - day, now),
        (None, Some(e)) => (e - day, e),
        (Some(s), None) => (s, now),
        (Some(s), Some(e)) => {
            if s > e {
                return Err(ApiError::bad("start_time", "must not be after end_time"));
            }
            (s, e)
        }
    };
    Ok((ceil_micros(start), after_micros(end)))
}

/// The scope of a token ([`crate::scope::scope`]); Torq's API serves only
/// tokens of a workspace.
pub fn scope(claims: &Claims) -> Result<Filter, ApiError> {
    if claims.workspace_id.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::Forbidden(
            "the token is not scoped to a workspace".into(),
        ));
    }
    Ok(crate::scope::scope(claims))
}

/// One entry.
pub fn entry(r: &EventRow) -> Value {
    let action = or_else(&r.action_description, &r.action_type);
    json!({
        "id": r.id,
        "timestamp": r.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "email": opt(&r.actor_email),
        "actor_name": opt(&r.actor_name),
        "actor_type": opt(&r.actor_type),
        "action": action,
        "resource_id": opt(&r.resource_id),
        "resource_name": opt(&r.resource_name),
        "ip": opt(&r.request_ip),
        "user_agent": opt(&r.request_user_agent),
        "extra_data": r.metadata,
        "account_id": opt(&r.workspace_id),
        "account_name": opt(&r.workspace_name),
    })
}

async fn run<S: EventStore>(
    state: &AppState<S>,
    claims: Result<Claims, ApiError>,
    raw: Option<&str>,
) -> Result<Value, ApiError> {
    let claims = claims?;
    state.access.require(&claims, VIEW_AUDIT_LOG)?;
    let p = Params::parse(raw)?;
    p.reject_unknown(PARAMS)?;
    let f = scope(&claims)?;
    let order = p.order("order", Order::Desc)?;
    let limit = p.size("page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let win = window(&p, Utc::now())?;
    // The cursor is bound to the parameters as given; the window they
    // resolved to on the first page travels inside it, so "the last 24
    // hours" does not move while a client pages through it.
    let key = format!(
        "{}|start={}|end={}",
        f.key(),
        p.one("start_time")?.unwrap_or(""),
        p.one("end_time")?.unwrap_or("")
    );
    let page = Keyset::new(state, DIALECT, &f, order, limit)
        .bound_to(key)
        .window(win)
        .cursor(CursorParam::next("page_token"))
        .read(&p)
        .await?;
    let logs: Vec<Value> = page.rows.iter().map(entry).collect();
    Ok(json!({"audit_logs": logs, "next_page_token": page.next.unwrap_or_default()}))
}

pub async fn list<S: EventStore>(
    State(state): State<Shared<S>>,
    claims: Result<Claims, ApiError>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    run(&state, claims, raw.as_deref())
        .await
        .map(Json)
        .map_err(|e| e.shaped(Shape::Torq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        Params::parse(Some(q)).unwrap_or_default()
    }

    #[test]
    fn windows_default_to_a_day() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let day = Duration::hours(24);
        let us = Duration::microseconds(1);
        assert_eq!(window(&p(""), now).ok(), Some((now - day, now + us)));
        let e = "2023-11-01T00:00:00Z";
        let et = DateTime::from_timestamp(1_698_796_800, 0).unwrap_or_default();
        assert_eq!(
            window(&p(&format!("end_time={e}")), now).ok(),
            Some((et - day, et + us))
        );
        assert_eq!(
            window(&p(&format!("start_time={e}")), now).ok(),
            Some((et, now + us))
        );
        assert!(window(
            &p(&format!("start_time=2023-11-02T00:00:00Z&end_time={e}")),
            now
        )
        .is_err());
        assert!(window(&p("start_time=yesterday"), now).is_err());
    }
}
