//! Zendesk-style `GET /api/v2/audit_logs` and `GET /api/v2/audit_logs/{id}`:
//! `filter[...]` parameters (repeat with `[]` for OR), cursor pagination
//! (`page[size]`, `page[after]`, `page[before]`, `sort`) by default and the
//! capped offset pagination (`page`, `per_page`) when asked for.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::SecondsFormat;
use serde_json::{json, Value};
use trailhouse_schemas::EventRow;
use uuid::Uuid;

use super::opt;
use crate::access::VIEW_AUDIT_LOG;
use crate::api::{binding, AppState};
use crate::cursor::{Cursor, Walk};
use crate::error::{ApiError, Failure, Shape};
use crate::params::{after_micros, ceil_micros, parse_time, Params};
use crate::query::{build_count, build_get, Cond, Field, Filter, Order, Page, Start};
use crate::store::{fetch_page, EventStore};

pub const DIALECT: &str = "zendesk";
pub const PARAMS: &[&str] = &[
    "filter[source_type]",
    "filter[source_type][]",
    "filter[source_id]",
    "filter[source_id][]",
    "filter[actor_id]",
    "filter[actor_id][]",
    "filter[ip_address]",
    "filter[ip_address][]",
    "filter[action]",
    "filter[action][]",
    "filter[created_at]",
    "filter[created_at][]",
    "page[size]",
    "page[after]",
    "page[before]",
    "sort",
    "page",
    "per_page",
    "sort_by",
    "sort_order",
];
pub const MAX_PAGE_SIZE: u32 = 100;
/// Offset pagination stops here, as Zendesk's does.
pub const MAX_OFFSET_PAGES: u32 = 100;
const PATH: &str = "/api/v2/audit_logs";

const FILTERS: [(&str, Field); 5] = [
    ("source_type", Field::ResourceType),
    ("source_id", Field::ResourceId),
    ("actor_id", Field::ActorId),
    ("ip_address", Field::Ip),
    ("action", Field::ActionType),
];

fn values(p: &Params, name: &str) -> Vec<String> {
    p.all(&[&format!("filter[{name}]"), &format!("filter[{name}][]")])
}

/// The filter of a request.
pub fn filter(org: &str, p: &Params) -> Result<Filter, ApiError> {
    let mut f = Filter::new(org);
    for (name, field) in FILTERS {
        f.push(Cond::AnyOf(field, values(p, name)));
    }
    if !values(p, "source_id").is_empty() && values(p, "source_type").is_empty() {
        return Err(ApiError::bad(
            "filter[source_id]",
            "requires filter[source_type]",
        ));
    }
    let created = values(p, "created_at");
    match created.as_slice() {
        [] => {}
        [start, end] => {
            let start = parse_time("filter[created_at]", start)?;
            let end = parse_time("filter[created_at]", end)?;
            if start > end {
                return Err(ApiError::bad(
                    "filter[created_at]",
                    "the start (first value) must not be after the end (second value)",
                ));
            }
            f.push(Cond::From(ceil_micros(start)));
            f.push(Cond::Until(after_micros(end)));
        }
        _ => {
            return Err(ApiError::bad(
                "filter[created_at]",
                "must be given exactly twice: the start, then the end",
            ))
        }
    }
    Ok(f)
}

/// One entry; `base` is the absolute URL base for the entry's own `url`.
pub fn entry(r: &EventRow, base: &str) -> Value {
    json!({
        "id": r.id,
        "url": format!("{base}{PATH}/{}.json", r.id),
        "action": r.action_type,
        "actor_id": opt(&r.actor_id),
        "actor_name": opt(&r.actor_name),
        "change_description": opt(&r.action_description),
        "created_at": r.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "ip_address": opt(&r.request_ip),
        "source_id": opt(&r.resource_id),
        "source_label": opt(&r.resource_name),
        "source_type": opt(&r.resource_type),
    })
}

/// The request's own URL with the pagination parameters replaced.
fn link(base: &str, p: &Params, drop: &[&str], add: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> = p
        .pairs()
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .cloned()
        .collect();
    pairs.extend(add.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("{base}{PATH}?{qs}")
}

async fn offset_page<S: EventStore>(
    state: &AppState<S>,
    f: &Filter,
    p: &Params,
    base: &str,
) -> Result<Value, ApiError> {
    let per_page = p.size("per_page", MAX_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let page: u32 = p.parsed("page", "a positive integer")?.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::bad("page", "must be a positive integer"));
    }
    if page > MAX_OFFSET_PAGES {
        return Err(ApiError::bad(
            "page",
            format!(
                "offset pagination is limited to {MAX_OFFSET_PAGES} pages; use cursor pagination (page[size], page[after]) to read further"
            ),
        ));
    }
    if let Some(s) = p.one("sort_by")? {
        if s != "created_at" {
            return Err(ApiError::bad("sort_by", "must be `created_at`"));
        }
    }
    let order = p.order("sort_order", Order::Desc)?;
    let start = Start::Offset(u64::from(page - 1) * u64::from(per_page));
    let fetched = fetch_page(
        &state.store,
        f,
        &Page {
            order,
            start,
            limit: per_page,
        },
    )
    .await?;
    let count = state.store.count(&build_count(f)).await?;
    let to = |n: u32| link(base, p, &["page"], &[("page", n.to_string())]);
    let next = (fetched.has_more && page < MAX_OFFSET_PAGES).then(|| to(page + 1));
    let prev = (page > 1).then(|| to(page - 1));
    let logs: Vec<Value> = fetched.rows.iter().map(|r| entry(r, base)).collect();
    Ok(json!({
        "audit_logs": logs,
        "next_page": next,
        "previous_page": prev,
        "count": count,
    }))
}

async fn cursor_page<S: EventStore>(
    state: &AppState<S>,
    f: &Filter,
    p: &Params,
    base: &str,
) -> Result<Value, ApiError> {
    let limit = p.size("page[size]", MAX_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let order = match p.one("sort")? {
        None | Some("-created_at") => Order::Desc,
        Some("created_at") => Order::Asc,
        Some(_) => {
            return Err(ApiError::bad(
                "sort",
                "must be `created_at` or `-created_at`",
            ))
        }
    };
    let key = f.key();
    let b = binding(DIALECT, f, order, &key);
    let start = match (p.one("page[after]")?, p.one("page[before]")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "page[before]",
                "give either page[after] or page[before], not both",
            ))
        }
        (Some(c), None) => match state.cursor(&b, "page[after]", c)? {
            Cursor {
                walk: Walk::Next,
                pos,
                ..
            } => Start::After(pos),
            _ => return Err(ApiError::bad("page[after]", "this is a before_cursor")),
        },
        (None, Some(c)) => match state.cursor(&b, "page[before]", c)? {
            Cursor {
                walk: Walk::Prev,
                pos,
                ..
            } => Start::Before(pos),
            _ => return Err(ApiError::bad("page[before]", "this is an after_cursor")),
        },
        (None, None) => Start::First,
    };
    let fetched = fetch_page(
        &state.store,
        f,
        &Page {
            order,
            start,
            limit,
        },
    )
    .await?;
    let after = fetched
        .next
        .map(|pos| state.cursors.encode(&b, Cursor::next(pos)));
    let before = fetched
        .prev
        .map(|pos| state.cursors.encode(&b, Cursor::prev(pos)));
    let drop = ["page[after]", "page[before]"];
    let next = after
        .as_ref()
        .map(|c| link(base, p, &drop, &[("page[after]", c.clone())]));
    let prev = before
        .as_ref()
        .map(|c| link(base, p, &drop, &[("page[before]", c.clone())]));
    let logs: Vec<Value> = fetched.rows.iter().map(|r| entry(r, base)).collect();
    Ok(json!({
        "audit_logs": logs,
        "meta": {"has_more": fetched.has_more, "after_cursor": after, "before_cursor": before},
        "links": {"next": next, "prev": prev},
    }))
}

async fn run_list<S: EventStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<Value, ApiError> {
    let claims = state.claims(headers)?;
    state.access.require(&claims, VIEW_AUDIT_LOG)?;
    let p = Params::parse(raw)?;
    let f = filter(&claims.org_id, &p)?;
    let base = state.base_url(headers);
    if p.has("page") || p.has("per_page") {
        offset_page(state, &f, &p, &base).await
    } else {
        cursor_page(state, &f, &p, &base).await
    }
}

pub async fn list<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    run_list(&state, &headers, raw.as_deref())
        .await
        .map(Json)
        .map_err(|e| e.shaped(Shape::Zendesk))
}

async fn run_show<S: EventStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    id: &str,
) -> Result<Value, ApiError> {
    let claims = state.claims(headers)?;
    state.access.require(&claims, VIEW_AUDIT_LOG)?;
    let id = Uuid::parse_str(id.strip_suffix(".json").unwrap_or(id))
        .map_err(|_| ApiError::bad("id", "must be a UUID"))?;
    let rows = state
        .store
        .fetch(&build_get(&Filter::new(&claims.org_id), id))
        .await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(json!({"audit_log": entry(row, &state.base_url(headers))}))
}

pub async fn show<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Failure> {
    run_show(&state, &headers, &id)
        .await
        .map(Json)
        .map_err(|e| e.shaped(Shape::Zendesk))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(q: &str) -> Result<Filter, ApiError> {
        filter("o", &Params::parse(Some(q)).unwrap_or_default())
    }

    #[test]
    fn filters_or_within_and_across() {
        let x = f("filter[action][]=create&filter[action][]=delete&filter[actor_id]=7")
            .unwrap_or_else(|_| Filter::new("x"));
        assert_eq!(
            x.conds,
            vec![
                Cond::AnyOf(Field::ActorId, vec!["7".into()]),
                Cond::AnyOf(Field::ActionType, vec!["create".into(), "delete".into()]),
            ]
        );
    }

    #[test]
    fn bad_filters_are_named() {
        for (q, param) in [
            ("filter[source_id]=1", "filter[source_id]"),
            ("filter[created_at]=2024-01-01T00:00:00Z", "filter[created_at]"),
            (
                "filter[created_at][]=2024-01-02T00:00:00Z&filter[created_at][]=2024-01-01T00:00:00Z",
                "filter[created_at]",
            ),
            (
                "filter[created_at]=2024-01-01T00:00:00Z&filter[created_at]=2024-01-02T00:00:00Z&filter[created_at]=2024-01-03T00:00:00Z",
                "filter[created_at]",
            ),
        ] {
            match f(q) {
                Err(ApiError::BadParam { param: p, .. }) => assert_eq!(p, param, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(f("filter[source_type]=ticket&filter[source_id]=1").is_ok());
        assert!(f(
            "filter[created_at]=2024-01-01T00:00:00Z&filter[created_at]=2024-01-01T00:00:00Z"
        )
        .is_ok());
    }
}
