//! Organisation audit log: `GET /api/v1/organizations/{org_id}/audit-logs`
//! (search by path, account or workspace) and `…/audit-logs/{id}` (the
//! request details). Permission `viewAuditLog`; `{org_id}` must be the
//! token's org; both read within the token's scope ([`crate::scope`]);
//! unknown parameters are refused. Besides its own `search`, the list takes
//! the native API's filter parameters (an extension of ours: the viewer's
//! qualifiers), through the same [`native::filter`], so the viewer's table
//! and its export of the native API always hold the same rows.

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Map, Value};
use trailhouse_schemas::EventRow;
use uuid::Uuid;

use super::{millis, native, opt, query_object};
use crate::access::{Access, VIEW_AUDIT_LOG};
use crate::auth::Claims;
use crate::error::{ApiError, Failure};
use crate::params::Params;
use crate::query::build_get;
use crate::scope::scope;
use crate::state::{Routes, Shared};
use crate::store::EventStore;

pub const DIALECT: &str = "orglog";
pub const LIST_PATH: &str = "/api/v1/organizations/{org_id}/audit-logs";
pub const SHOW_PATH: &str = "/api/v1/organizations/{org_id}/audit-logs/{id}";
/// `limit`, `cursor` and the native API's filter parameters (`search`
/// among them).
pub fn params() -> Vec<&'static str> {
    let mut v = native::filter_params();
    v.extend(["limit", "cursor"]);
    v
}
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Auth types that mean "an API key made this request".
const API_KEY_AUTH: [&str; 4] = ["apiKey", "api_key", "apikey", "api-key"];

/// The routes of the organisation audit log.
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new()
        .route(LIST_PATH, get(list::<S>))
        .route(SHOW_PATH, get(show::<S>))
}

fn authorize(access: &Access, claims: &Claims, org_id: &str) -> Result<(), ApiError> {
    access.require(claims, VIEW_AUDIT_LOG)?;
    if org_id != claims.org_id {
        return Err(ApiError::Forbidden(
            "the token belongs to another organisation".into(),
        ));
    }
    Ok(())
}

fn has_details(r: &EventRow) -> bool {
    !r.request_body.is_empty()
        || !matches!(r.request_query.as_str(), "" | "{}")
        || !r.request_path_params.is_empty()
        || !r.request_headers.is_empty()
}

/// One list entry.
pub fn entry(r: &EventRow) -> Value {
    let api_key = API_KEY_AUTH.contains(&r.auth_type.as_str());
    let mut e = json!({
        "id": r.id,
        "account": if api_key { Value::Null } else { opt(&r.actor_email) },
        "authType": if api_key { "apiKey" } else { "jwt" },
        "resource": opt(&r.resource_type),
        "method": opt(&r.request_method),
        "path": opt(&r.request_path),
        "statusCode": r.request_status,
        "created": millis(&r.created_at),
        "hasDetails": has_details(r),
    });
    if !r.workspace_id.is_empty() {
        e["workspace"] = json!({"id": r.workspace_id, "name": opt(&r.workspace_name)});
    }
    e
}

/// The details view: the entry plus the full request data, headers limited
/// to the allow-list.
pub fn details(mut r: EventRow, access: &Access) -> Value {
    access.strip_headers(&mut r);
    let r = &r;
    let mut e = entry(r);
    let headers: Map<String, Value> = r
        .request_headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    e["body"] = opt(&r.request_body);
    e["query"] = query_object(r);
    e["pathParams"] = json!(r.request_path_params);
    e["headers"] = Value::Object(headers);
    e
}

pub async fn list<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(org_id): Path<String>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    authorize(&state.access, &claims, &org_id)?;
    let p = Params::parse(raw.as_deref())?;
    p.reject_unknown(&params())?;
    let f = native::filter(scope(&claims), &p)?;
    let limit = p.size("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let body = super::data_page(&state, DIALECT, &f, &p, limit, |r, _| entry(r)).await?;
    Ok(Json(body))
}

pub async fn show<S: EventStore>(
    State(state): State<Shared<S>>,
    Path((org_id, id)): Path<(String, String)>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    authorize(&state.access, &claims, &org_id)?;
    Params::parse(raw.as_deref())?.reject_unknown(&[])?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::bad("id", "must be a UUID"))?;
    let rows = state
        .store
        .fetch(&build_get(&scope(&claims), id))
        .await
        .map_err(ApiError::from)?;
    let row = rows.into_iter().next().ok_or(ApiError::NotFound)?;
    Ok(Json(details(row, &state.access)))
}
