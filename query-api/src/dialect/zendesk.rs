//! Zendesk-style `GET /api/v2/audit_logs` and `GET /api/v2/audit_logs/{id}`:
//! `filter[...]` parameters (repeat with `[]` for OR), cursor pagination
//! (`page[size]`, `page[after]`, `page[before]`, `sort`) by default and the
//! capped offset pagination (`page`, `per_page`) when asked for. Reads are
//! within the token's scope ([`crate::scope`]); unknown parameters are
//! refused in Zendesk's error shape.

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::Json;
use chrono::SecondsFormat;
use serde_json::{json, Value};
use trailhouse_schemas::EventRow;
use uuid::Uuid;

use super::opt;
use crate::access::VIEW_AUDIT_LOG;
use crate::auth::Claims;
use crate::cursor::Walk;
use crate::error::{ApiError, Failure, Shape};
use crate::keyset::{CursorParam, Keyset};
use crate::params::{after_micros, ceil_micros, parse_time, Params};
use crate::query::{build_count, build_get, Cond, Field, Filter, Order, Page, Start};
use crate::scope::scope;
use crate::state::{AppState, BaseUrl, Routes, Shared};
use crate::store::{fetch_page_within, EventStore};

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
pub const PATH: &str = "/api/v2/audit_logs";
/// The same list, as Zendesk also serves it.
pub const JSON_PATH: &str = "/api/v2/audit_logs.json";
pub const SHOW_PATH: &str = "/api/v2/audit_logs/{id}";

/// The cursor parameters of the cursor mode.
const AFTER: CursorParam = CursorParam::only("page[after]", Walk::Next, "this is a before_cursor");
const BEFORE: CursorParam =
    CursorParam::only("page[before]", Walk::Prev, "this is an after_cursor");

/// The routes of the Zendesk-style API.
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new()
        .route(PATH, get(list::<S>))
        .route(JSON_PATH, get(list::<S>))
        .route(SHOW_PATH, get(show::<S>))
}

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

/// The filter of a request, within `f` (the token's scope).
pub fn filter(mut f: Filter, p: &Params) -> Result<Filter, ApiError> {
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

/// A list request past authentication: the state, the filter, the
/// parameters and the base of absolute URLs.
struct List<'a, S> {
    state: &'a AppState<S>,
    f: Filter,
    p: Params,
    base: String,
}

impl<S: EventStore> List<'_, S> {
    /// The request's own URL with the pagination parameters replaced.
    fn link(&self, drop: &[&str], add: &[(&str, String)]) -> String {
        let mut pairs: Vec<(String, String)> = self
            .p
            .pairs()
            .iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .cloned()
            .collect();
        pairs.extend(add.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{}{PATH}?{qs}", self.base)
    }

    fn entries(&self, rows: &[EventRow]) -> Vec<Value> {
        rows.iter().map(|r| entry(r, &self.base)).collect()
    }

    async fn offset_page(&self) -> Result<Value, ApiError> {
        let (f, p) = (&self.f, &self.p);
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
        let read = Page {
            order,
            start,
            limit: per_page,
        };
        let fetched =
            fetch_page_within(&self.state.store, f, &read, self.state.max_page_bytes).await?;
        // An offset page cannot continue after a shortened page (the next
        // page's offset counts whole pages): a page over the byte cap is
        // refused, naming the parameter that makes it smaller.
        if fetched.shortened {
            return Err(ApiError::bad(
                "per_page",
                format!(
                    "this page is larger than {} bytes; use a smaller per_page or cursor pagination (page[size], page[after])",
                    self.state.max_page_bytes
                ),
            ));
        }
        let count = self.state.store.count(&build_count(f)).await?;
        let to = |n: u32| self.link(&["page"], &[("page", n.to_string())]);
        let next = (fetched.has_more && page < MAX_OFFSET_PAGES).then(|| to(page + 1));
        let prev = (page > 1).then(|| to(page - 1));
        Ok(json!({
            "audit_logs": self.entries(&fetched.rows),
            "next_page": next,
            "previous_page": prev,
            "count": count,
        }))
    }

    async fn cursor_page(&self) -> Result<Value, ApiError> {
        let p = &self.p;
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
        let page = Keyset::new(self.state, DIALECT, &self.f, order, limit)
            .cursor(AFTER)
            .cursor(BEFORE)
            .read(p)
            .await?;
        let drop = [AFTER.name, BEFORE.name];
        let to = |param: &str, c: &str| self.link(&drop, &[(param, c.to_string())]);
        let next = page.next.as_deref().map(|c| to(AFTER.name, c));
        let prev = page.prev.as_deref().map(|c| to(BEFORE.name, c));
        Ok(json!({
            "audit_logs": self.entries(&page.rows),
            "meta": {"has_more": page.has_more, "after_cursor": page.next, "before_cursor": page.prev},
            "links": {"next": next, "prev": prev},
        }))
    }
}

async fn run_list<S: EventStore>(
    state: &AppState<S>,
    claims: Result<Claims, ApiError>,
    base: String,
    raw: Option<&str>,
) -> Result<Value, ApiError> {
    let claims = claims?;
    state.access.require(&claims, VIEW_AUDIT_LOG)?;
    let p = Params::parse(raw)?;
    p.reject_unknown(PARAMS)?;
    let f = filter(scope(&claims), &p)?;
    let list = List { state, f, p, base };
    if list.p.has("page") || list.p.has("per_page") {
        list.offset_page().await
    } else {
        list.cursor_page().await
    }
}

pub async fn list<S: EventStore>(
    State(state): State<Shared<S>>,
    claims: Result<Claims, ApiError>,
    BaseUrl(base): BaseUrl,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    run_list(&state, claims, base, raw.as_deref())
        .await
        .map(Json)
        .map_err(|e| e.shaped(Shape::Zendesk))
}

async fn run_show<S: EventStore>(
    state: &AppState<S>,
    claims: Result<Claims, ApiError>,
    base: &str,
    id: &str,
    raw: Option<&str>,
) -> Result<Value, ApiError> {
    let claims = claims?;
    state.access.require(&claims, VIEW_AUDIT_LOG)?;
    Params::parse(raw)?.reject_unknown(&[])?;
    let id = Uuid::parse_str(id.strip_suffix(".json").unwrap_or(id))
        .map_err(|_| ApiError::bad("id", "must be a UUID"))?;
    let rows = state.store.fetch(&build_get(&scope(&claims), id)).await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(json!({"audit_log": entry(row, base)}))
}

pub async fn show<S: EventStore>(
    State(state): State<Shared<S>>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    claims: Result<Claims, ApiError>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    run_show(&state, claims, &base, &id, raw.as_deref())
        .await
        .map(Json)
        .map_err(|e| e.shaped(Shape::Zendesk))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(q: &str) -> Result<Filter, ApiError> {
        filter(
            Filter::new("o"),
            &Params::parse(Some(q)).unwrap_or_default(),
        )
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
