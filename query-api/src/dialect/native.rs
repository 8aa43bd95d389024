//! Our own API: `GET /v1/events` (every filter, both orders, cursors both
//! ways), `GET /v1/events/{id}` and `GET /v1/events/export` (every matching
//! event as NDJSON or CSV, streamed in constant memory), all within the
//! token's scope ([`crate::scope`]) and returning only allow-listed request
//! headers. Unknown parameters are rejected, so a typo never silently
//! widens a query.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use trailhouse_schemas::event::format_timestamp;
use trailhouse_schemas::EventRow;
use uuid::Uuid;

use crate::access::VIEW_AUDIT_LOG;
use crate::auth::Claims;
use crate::error::{ApiError, Failure};
use crate::keyset::{CursorParam, Keyset};
use crate::params::{ceil_micros, Params};
use crate::query::{build_get, Cond, Field, Filter, Order, Page, Start};
use crate::scope::scope;
use crate::state::{Routes, Shared};
use crate::store::{fetch_page_within, EventStore};

pub const DIALECT: &str = "native";
pub const LIST_PATH: &str = "/v1/events";
pub const EXPORT_PATH: &str = "/v1/events/export";
pub const SHOW_PATH: &str = "/v1/events/{id}";
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Rows per ClickHouse read while exporting.
pub const EXPORT_CHUNK: u32 = 2000;

/// Filter parameters and the column each one matches (many values: OR).
pub const FIELD_PARAMS: [(&str, Field); 11] = [
    ("actor_id", Field::ActorId),
    ("actor_email", Field::ActorEmail),
    ("action", Field::ActionType),
    ("resource_type", Field::ResourceType),
    ("resource_id", Field::ResourceId),
    ("auth_type", Field::AuthType),
    ("source", Field::Source),
    ("method", Field::Method),
    ("ip", Field::Ip),
    ("environment_id", Field::Environment),
    ("workspace_id", Field::Workspace),
];

/// The other filter parameters.
pub const OTHER_FILTER_PARAMS: [&str; 8] = [
    "search",
    "status",
    "status_min",
    "status_max",
    "path_prefix",
    "path_contains",
    "from",
    "to",
];

pub const PAGE_PARAMS: [&str; 3] = ["order", "limit", "cursor"];
pub const EXPORT_PARAMS: [&str; 2] = ["order", "format"];

/// The names of every filter parameter.
pub fn filter_params() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FIELD_PARAMS.iter().map(|(n, _)| *n).collect();
    v.extend(OTHER_FILTER_PARAMS);
    v
}

fn known(extra: &[&str]) -> Vec<&'static str> {
    let mut v = filter_params();
    v.extend(extra.iter().filter_map(|e| {
        PAGE_PARAMS
            .iter()
            .chain(EXPORT_PARAMS.iter())
            .find(|k| *k == e)
            .copied()
    }));
    v
}

/// The parameters of `GET /v1/events`.
pub fn list_params() -> Vec<&'static str> {
    known(&PAGE_PARAMS)
}

/// The parameters of `GET /v1/events/export`.
pub fn export_params() -> Vec<&'static str> {
    known(&EXPORT_PARAMS)
}

/// The routes of the native API.
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new()
        .route(LIST_PATH, get(list::<S>))
        .route(EXPORT_PATH, get(export::<S>))
        .route(SHOW_PATH, get(show::<S>))
}

/// The filter of a request, within `scope`.
pub fn filter(mut f: Filter, p: &Params) -> Result<Filter, ApiError> {
    for (name, field) in FIELD_PARAMS {
        f.push(Cond::AnyOf(field, p.all(&[name])));
    }
    let statuses = p
        .all(&["status"])
        .iter()
        .map(|s| {
            s.parse::<u16>()
                .map_err(|_| ApiError::bad("status", "must be an HTTP status code"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    f.push(Cond::StatusIn(statuses));
    let lo: Option<u16> = p.parsed("status_min", "an HTTP status code")?;
    let hi: Option<u16> = p.parsed("status_max", "an HTTP status code")?;
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo > hi {
            return Err(ApiError::bad("status_min", "must not exceed status_max"));
        }
    }
    f.push(Cond::StatusBetween(lo, hi));
    if let Some(v) = p.one("path_prefix")? {
        f.push(Cond::PathPrefix(v.to_string()));
    }
    if let Some(v) = p.one("path_contains")? {
        f.push(Cond::PathContains(v.to_string()));
    }
    // The organisation audit log's search (path, account id or workspace
    // id), so the viewer's export has exactly the rows its table shows.
    if let Some(v) = p.one("search")? {
        f.push(Cond::Search(v.to_string()));
    }
    let (from, to) = (p.time("from")?, p.time("to")?);
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(ApiError::bad("from", "must not be after `to`"));
        }
    }
    if let Some(t) = from {
        f.push(Cond::From(ceil_micros(t)));
    }
    if let Some(t) = to {
        f.push(Cond::Until(ceil_micros(t)));
    }
    Ok(f)
}

/// The start of every filtered native read: the permission, the
/// parameters (none unknown to `known`) and the filter within the token's
/// scope.
pub fn filtered(
    access: &crate::access::Access,
    claims: &Claims,
    raw: Option<&str>,
    known: &[&str],
) -> Result<(Params, Filter), ApiError> {
    access.require(claims, VIEW_AUDIT_LOG)?;
    let p = Params::parse(raw)?;
    p.reject_unknown(known)?;
    let f = filter(scope(claims), &p)?;
    Ok((p, f))
}

pub async fn list<S: EventStore>(
    State(state): State<Shared<S>>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    let (p, f) = filtered(&state.access, &claims, raw.as_deref(), &list_params())?;
    let order = p.order("order", Order::Desc)?;
    let limit = p.size("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = Keyset::new(&state, DIALECT, &f, order, limit)
        .cursor(CursorParam::either("cursor"))
        .read(&p)
        .await?;
    let data: Vec<_> = page
        .rows
        .into_iter()
        .map(|mut r| {
            state.access.strip_headers(&mut r);
            r.into_event()
        })
        .collect();
    Ok(Json(
        json!({"data": data, "next_cursor": page.next, "prev_cursor": page.prev}),
    ))
}

pub async fn show<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    state.access.require(&claims, VIEW_AUDIT_LOG)?;
    Params::parse(raw.as_deref())?.reject_unknown(&[])?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::bad("id", "must be a UUID"))?;
    let rows = state
        .store
        .fetch(&build_get(&scope(&claims), id))
        .await
        .map_err(ApiError::from)?;
    let mut row = rows.into_iter().next().ok_or(ApiError::NotFound)?;
    state.access.strip_headers(&mut row);
    Ok(Json(json!(row.into_event())))
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// The CSV columns of an export.
pub const CSV_COLUMNS: [&str; 24] = [
    "id",
    "created_at",
    "org_id",
    "environment_id",
    "workspace_id",
    "workspace_name",
    "actor_type",
    "actor_id",
    "actor_email",
    "actor_name",
    "auth_type",
    "source",
    "action_type",
    "action_description",
    "resource_type",
    "resource_id",
    "resource_name",
    "request_method",
    "request_path",
    "request_status",
    "request_duration_ms",
    "request_ip",
    "request_user_agent",
    "metadata",
];

/// One CSV field, quoted when it must be (RFC 4180). A value a spreadsheet
/// would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return) gets a leading `'` and quotes, as OWASP's CSV injection
/// guidance asks, so it opens as text.
fn csv_field(out: &mut String, v: &str) {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// One CSV record of a row, with its line ending.
pub fn csv_record(r: &EventRow) -> String {
    let opt_num = |v: Option<String>| v.unwrap_or_default();
    let fields = [
        r.id.to_string(),
        format_timestamp(&r.created_at),
        r.org_id.clone(),
        r.environment_id.clone(),
        r.workspace_id.clone(),
        r.workspace_name.clone(),
        r.actor_type.clone(),
        r.actor_id.clone(),
        r.actor_email.clone(),
        r.actor_name.clone(),
        r.auth_type.clone(),
        r.source.clone(),
        r.action_type.clone(),
        r.action_description.clone(),
        r.resource_type.clone(),
        r.resource_id.clone(),
        r.resource_name.clone(),
        r.request_method.clone(),
        r.request_path.clone(),
        opt_num(r.request_status.map(|s| s.to_string())),
        opt_num(r.request_duration_ms.map(|d| d.to_string())),
        r.request_ip.clone(),
        r.request_user_agent.clone(),
        if r.metadata.is_empty() {
            String::new()
        } else {
            json!(r.metadata).to_string()
        },
    ];
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push_str("\r\n");
    line
}

struct Export<S> {
    state: Shared<S>,
    filter: Filter,
    order: Order,
    format: Format,
    next: Option<Start>,
}

/// Reads the next chunk: one keyset page, encoded.
async fn next_chunk<S: EventStore>(
    mut ex: Export<S>,
) -> Option<(Result<Bytes, std::io::Error>, Export<S>)> {
    let start = ex.next.take()?;
    let page = Page {
        order: ex.order,
        start,
        limit: EXPORT_CHUNK,
    };
    let max_bytes = ex.state.max_page_bytes;
    match fetch_page_within(&ex.state.store, &ex.filter, &page, max_bytes).await {
        Err(e) => {
            tracing::error!(error = %e, "export aborted");
            Some((Err(std::io::Error::other(e.to_string())), ex))
        }
        Ok(fetched) => {
            ex.next = fetched.next.map(Start::After);
            let mut out = String::new();
            for mut r in fetched.rows {
                ex.state.access.strip_headers(&mut r);
                match ex.format {
                    Format::Csv => out.push_str(&csv_record(&r)),
                    Format::Ndjson => {
                        out.push_str(&json!(r.into_event()).to_string());
                        out.push('\n');
                    }
                }
            }
            Some((Ok(Bytes::from(out)), ex))
        }
    }
}

pub async fn export<S: EventStore>(
    State(state): State<Shared<S>>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    let (p, filter) = filtered(&state.access, &claims, raw.as_deref(), &export_params())?;
    let order = p.order("order", Order::Desc)?;
    let format = match p.one("format")? {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(_) => return Err(ApiError::bad("format", "must be `ndjson` or `csv`").into()),
    };
    let (content_type, disposition, head) = match format {
        Format::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"audit-log.ndjson\"",
            String::new(),
        ),
        Format::Csv => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"audit-log.csv\"",
            format!("{}\r\n", CSV_COLUMNS.join(",")),
        ),
    };
    let ex = Export {
        state: state.clone(),
        filter,
        order,
        format,
        next: Some(Start::First),
    };
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    let body = futures::StreamExt::chain(head, futures::stream::unfold(ex, next_chunk));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push('|');
        csv_field(&mut s, "a,b \"q\"\nline");
        assert_eq!(s, "plain|\"a,b \"\"q\"\"\nline\"");
    }

    #[test]
    fn csv_fields_that_a_spreadsheet_would_run_open_as_text() {
        let cases = [
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("=cmd|' /C calc'!A0", "\"'=cmd|' /C calc'!A0\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("+1", "\"'+1\""),
            ("-1", "\"'-1\""),
            ("\tx", "\"'\tx\""),
            ("\rx", "\"'\rx\""),
            ("a=b", "a=b"),
            ("", ""),
        ];
        for (value, want) in cases {
            let mut s = String::new();
            csv_field(&mut s, value);
            assert_eq!(s, want, "{value:?}");
        }
    }

    #[test]
    fn filters_parse_and_reject() {
        let p = |q: &str| Params::parse(Some(q)).unwrap_or_default();
        let f = filter(
            Filter::new("o"),
            &p("action=a&action=b&status=500&status_min=400&path_prefix=/v1"),
        )
        .unwrap_or_else(|_| Filter::new("x"));
        assert_eq!(f.conds.len(), 4);
        assert!(filter(Filter::new("o"), &p("status=abc")).is_err());
        assert!(filter(Filter::new("o"), &p("status_min=500&status_max=400")).is_err());
        assert!(p("acton=x").reject_unknown(&list_params()).is_err());
        assert!(p("format=csv").reject_unknown(&list_params()).is_err());
        assert!(p("format=csv").reject_unknown(&export_params()).is_ok());
    }
}
