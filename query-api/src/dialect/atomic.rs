//! Atomic-style `GET /audit-log`: credential role `workbench`, within the
//! token's scope ([`crate::scope`]), newest first, `authType` filter,
//! `limit` and `cursor`; other parameters are refused.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Map, Value};
use trailhouse_schemas::EventRow;

use super::{millis, opt, or_else, query_object};
use crate::auth::Claims;
use crate::error::{ApiError, Failure};
use crate::params::Params;
use crate::query::{Cond, Field, Filter};
use crate::scope::scope;
use crate::state::{Routes, Shared};
use crate::store::EventStore;

pub const DIALECT: &str = "atomic";
pub const PATH: &str = "/audit-log";
pub const PARAMS: &[&str] = &["authType", "limit", "cursor"];
pub const ROLE: &str = "workbench";
pub const AUTH_TYPES: [&str; 4] = ["client", "clientCredentials", "signedPayload", "workbench"];
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// The routes of the Atomic-style API.
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new().route(PATH, get(list::<S>))
}

/// The filter of a request, within `f` (the token's scope).
pub fn filter(mut f: Filter, p: &Params) -> Result<Filter, ApiError> {
    if let Some(t) = p.one("authType")? {
        if !AUTH_TYPES.contains(&t) {
            return Err(ApiError::bad(
                "authType",
                format!("must be one of {}", AUTH_TYPES.join(", ")),
            ));
        }
        f.push(Cond::AnyOf(Field::AuthType, vec![t.to_string()]));
    }
    Ok(f)
}

/// One entry.
pub fn entry(r: &EventRow, cursor: String) -> Value {
    let mut auth = Map::new();
    for (k, v) in [
        ("type", &r.auth_type),
        ("clientId", &r.auth_client_id),
        ("sub", &r.auth_sub),
        ("appClientId", &r.auth_app_client_id),
        ("accountId", &r.auth_account_id),
    ] {
        if !v.is_empty() {
            auth.insert(k.into(), json!(v));
        }
    }
    let url = or_else(&r.request_url, &r.request_path);
    json!({
        "id": r.id,
        "url": opt(url),
        "status": r.request_status,
        "auth": auth,
        "ip": opt(&r.request_ip),
        "userAgent": opt(&r.request_user_agent),
        "method": opt(&r.request_method),
        "query": query_object(r),
        "payload": opt(&r.request_body),
        "source": opt(&r.source),
        "organisationId": r.org_id,
        "environmentId": opt(&r.environment_id),
        "time": r.request_duration_ms,
        "resource": {"type": opt(&r.resource_type)},
        "action": {"type": r.action_type, "description": opt(&r.action_description)},
        "created": millis(&r.created_at),
        "cursor": cursor,
    })
}

pub async fn list<S: EventStore>(
    State(state): State<Shared<S>>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    state.access.require_role(&claims, ROLE)?;
    let p = Params::parse(raw.as_deref())?;
    p.reject_unknown(PARAMS)?;
    let f = filter(scope(&claims), &p)?;
    let limit = p.size("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let body = super::data_page(&state, DIALECT, &f, &p, limit, |r, after| {
        entry(r, after(r))
    })
    .await?;
    Ok(Json(body))
}
