//! HTTP handlers of the native API: `GET /v1/events` and `GET /v1/events/{id}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use trailhouse_common::health::{self, Health};
use trailhouse_schemas::event::parse_timestamp;
use uuid::Uuid;

use crate::auth::{AuthError, Claims, Verifier};
use crate::cursor::{Binding, CursorCodec, CursorError, Position};
use crate::query::{build_get, build_page, EventQuery, Order};
use crate::store::{EventStore, StoreError};

/// Default and maximum page sizes of the native API.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// Shared state of the handlers.
pub struct AppState<S> {
    pub store: S,
    pub verifier: Verifier,
    pub cursors: CursorCodec,
    pub health: Health,
}

/// Every way a request can fail; the one status table of this service.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("parameter {param}: {reason}")]
    BadParam { param: &'static str, reason: String },
    #[error("not found")]
    NotFound,
    #[error("storage temporarily unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    fn bad(param: &'static str, reason: impl Into<String>) -> Self {
        ApiError::BadParam {
            param,
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, param) = match &self {
            ApiError::Unauthenticated(_) => ("unauthenticated", None),
            ApiError::Forbidden(_) => ("forbidden", None),
            ApiError::BadParam { param, .. } => ("invalid_parameter", Some(*param)),
            ApiError::NotFound => ("not_found", None),
            ApiError::Unavailable(e) | ApiError::Internal(e) => {
                tracing::error!(error = %e, "query failed");
                (
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        "unavailable"
                    } else {
                        "internal"
                    },
                    None,
                )
            }
        };
        let mut err = json!({"code": code, "message": self.to_string()});
        if let Some(p) = param {
            err["parameter"] = json!(p);
        }
        let mut resp = (status, Json(json!({"error": err}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable(e),
            StoreError::Query(_) => ApiError::Internal(e),
        }
    }
}

/// The query-api router.
pub fn app<S: EventStore>(state: Arc<AppState<S>>) -> Router {
    let health = state.health.clone();
    Router::new()
        .route("/v1/events", get(list_events::<S>))
        .route("/v1/events/{id}", get(get_event::<S>))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .merge(health::router(
            health,
            trailhouse_common::telemetry::metrics_handle(),
        ))
        .layer(TraceLayer::new_for_http())
}

fn claims<S>(state: &AppState<S>, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(state.verifier.verify_header(h)?)
}

/// Parses the native list parameters into a query (cursor not yet applied).
pub fn parse_list(claims: &Claims, p: &HashMap<String, String>) -> Result<EventQuery, ApiError> {
    let time = |name: &'static str| -> Result<_, ApiError> {
        p.get(name)
            .map(|s| parse_timestamp(s).map_err(|r| ApiError::bad(name, r)))
            .transpose()
    };
    let from = time("from")?;
    let to = time("to")?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad("from", "must not be after `to`"));
        }
    }
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    let order = match p.get("order").map(String::as_str) {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(_) => return Err(ApiError::bad("order", "must be `asc` or `desc`")),
    };
    Ok(EventQuery {
        org_id: claims.org_id.clone(),
        environment_id: claims.environment_id.clone(),
        from,
        to,
        order,
        after: None,
        limit,
    })
}

async fn list_events<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = claims(&state, &headers)?;
    let Query(params) = params.map_err(|r| ApiError::bad("query", r.body_text()))?;
    let mut q = parse_list(&claims, &params)?;
    let filters = q.filter_key();
    let binding = Binding {
        org: &claims.org_id,
        dialect: "native",
        direction: q.order.as_str(),
        filters: &filters,
    };
    if let Some(c) = params.get("cursor") {
        q.after = Some(
            state
                .cursors
                .decode(&binding, c)
                .map_err(|e: CursorError| ApiError::bad("cursor", e.to_string()))?,
        );
    }
    let mut rows = state.store.fetch(&build_page(&q)).await?;
    let more = rows.len() > q.limit as usize;
    rows.truncate(q.limit as usize);
    let next = match (more, rows.last()) {
        (true, Some(last)) => Some(state.cursors.encode(
            &binding,
            Position {
                created_at: last.created_at,
                id: last.id,
            },
        )),
        _ => None,
    };
    let data: Vec<_> = rows.into_iter().map(|r| r.into_event()).collect();
    Ok(Json(json!({"data": data, "next_cursor": next})))
}

async fn get_event<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = claims(&state, &headers)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::bad("id", "not a UUID"))?;
    let rows = state
        .store
        .fetch(&build_get(
            &claims.org_id,
            claims.environment_id.as_deref(),
            id,
        ))
        .await?;
    let row = rows.into_iter().next().ok_or(ApiError::NotFound)?;
    Ok(Json(json!(row.into_event())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint_hs256;
    use crate::store::StaticStore;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;
    use trailhouse_schemas::{examples, EventRow, Lineage};

    fn state(rows: usize) -> Arc<AppState<StaticStore>> {
        let ev = examples::all()[0].clone();
        let rows = (0..rows)
            .map(|i| {
                let mut e = ev.clone();
                e.id = Uuid::from_u128(i as u128 + 1);
                EventRow::from_event(&e, Lineage::default())
            })
            .collect();
        Arc::new(AppState {
            store: StaticStore {
                rows,
                ..Default::default()
            },
            verifier: Verifier::hs256(b"k").expect_issuer_audience(None, None),
            cursors: CursorCodec::new("c"),
            health: Health::new(),
        })
    }

    fn token(org: &str) -> String {
        mint_hs256(
            b"k",
            &Claims {
                sub: "u".into(),
                org_id: org.into(),
                environment_id: None,
                workspace_id: None,
                roles: vec![],
                permissions: vec![],
                exp: chrono::Utc::now().timestamp() + 600,
                iat: 0,
            },
        )
        .unwrap_or_default()
    }

    async fn get(
        s: &Arc<AppState<StaticStore>>,
        uri: &str,
        tok: Option<String>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::get(uri);
        if let Some(t) = tok {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app(s.clone())
            .oneshot(req.body(Body::empty()).expect("req"))
            .await
            .expect("resp");
        let st = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .expect("body");
        (
            st,
            serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn pages_carry_a_cursor_only_when_more_exist() {
        let s = state(3);
        let (st, body) = get(&s, "/v1/events?limit=2", Some(token("org_acme"))).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
        let cursor = body["next_cursor"].as_str().expect("cursor").to_string();
        let (st, body) = get(
            &s,
            &format!("/v1/events?limit=2&cursor={cursor}"),
            Some(token("org_acme")),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let (st, body) = get(&s, "/v1/events?limit=5", Some(token("org_acme"))).await;
        assert_eq!(st, StatusCode::OK);
        assert!(body["next_cursor"].is_null());
        // The cursor is bound to the org and the filters.
        let (st, body) = get(
            &s,
            &format!("/v1/events?limit=2&cursor={cursor}"),
            Some(token("org_other")),
        )
        .await;
        assert_eq!(
            (st, body["error"]["parameter"].as_str()),
            (StatusCode::BAD_REQUEST, Some("cursor"))
        );
        let (st, _) = get(
            &s,
            &format!("/v1/events?limit=2&from=2020-01-01T00:00:00Z&cursor={cursor}"),
            Some(token("org_acme")),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn the_org_comes_from_the_token() {
        let s = state(1);
        let (st, _) = get(&s, "/v1/events?org_id=evil", Some(token("org_acme"))).await;
        assert_eq!(st, StatusCode::OK);
        let seen = s.store.seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen[0].params[0], ("org", "org_acme".to_string()));
    }

    #[tokio::test]
    async fn bad_requests_name_the_parameter() {
        let s = state(1);
        for (uri, param) in [
            ("/v1/events?limit=0", "limit"),
            ("/v1/events?limit=1001", "limit"),
            ("/v1/events?limit=x", "limit"),
            ("/v1/events?from=yesterday", "from"),
            (
                "/v1/events?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
                "from",
            ),
            ("/v1/events?order=up", "order"),
            ("/v1/events?cursor=abc", "cursor"),
            ("/v1/events/not-a-uuid", "id"),
        ] {
            let (st, body) = get(&s, uri, Some(token("a"))).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(body["error"]["parameter"], param, "{uri}");
        }
        let (st, body) = get(&s, "/v1/events", None).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
        );
        let (st, _) = get(&s, "/v1/events", Some("garbage".into())).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, body) = get(&s, "/v1/nothing-here", Some(token("a"))).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }

    #[tokio::test]
    async fn get_by_id() {
        let (st, body) = get(
            &state(1),
            &format!("/v1/events/{}", Uuid::from_u128(1)),
            Some(token("a")),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body["id"], Uuid::from_u128(1).to_string());
        let (st, body) = get(
            &state(0),
            &format!("/v1/events/{}", Uuid::from_u128(1)),
            Some(token("a")),
        )
        .await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }
}
