//! The HTTP edge: the router of every dialect, shared state, and the helpers
//! every handler uses (authentication, cursors, absolute URLs).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use trailhouse_common::health::{self, Health};

use crate::access::Access;
use crate::auth::{Claims, Verifier};
use crate::cursor::{Binding, Cursor, CursorCodec, Walk};
use crate::dialect::{atomic, native, orglog, torq, zendesk};
use crate::error::ApiError;
use crate::query::{Filter, Order};
use crate::store::EventStore;

/// Shared state of the handlers.
pub struct AppState<S> {
    pub store: S,
    pub verifier: Verifier,
    pub cursors: CursorCodec,
    pub access: Access,
    pub health: Health,
    /// Base of the absolute URLs in responses (e.g. `https://audit.example.com`);
    /// taken from the request's `Host` / `X-Forwarded-*` headers when unset.
    pub public_url: Option<String>,
}

/// The OpenAPI 3.1 document of every endpoint.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route of the API, as `(path, OpenAPI path)`; the OpenAPI test holds
/// the document to this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("/v1/events", "/v1/events"),
    ("/v1/events/export", "/v1/events/export"),
    ("/v1/events/{id}", "/v1/events/{id}"),
    ("/audit-log", "/audit-log"),
    (
        "/api/v1/organizations/{org_id}/audit-logs",
        "/api/v1/organizations/{org_id}/audit-logs",
    ),
    (
        "/api/v1/organizations/{org_id}/audit-logs/{id}",
        "/api/v1/organizations/{org_id}/audit-logs/{id}",
    ),
    ("/v1alpha/audit_logs", "/v1alpha/audit_logs"),
    ("/api/v2/audit_logs", "/api/v2/audit_logs"),
    ("/api/v2/audit_logs.json", "/api/v2/audit_logs.json"),
    ("/api/v2/audit_logs/{id}", "/api/v2/audit_logs/{id}"),
    ("/openapi.json", "/openapi.json"),
];

/// The query-api router.
pub fn app<S: EventStore>(state: Arc<AppState<S>>) -> Router {
    let health = state.health.clone();
    Router::new()
        .route("/v1/events", get(native::list::<S>))
        .route("/v1/events/export", get(native::export::<S>))
        .route("/v1/events/{id}", get(native::show::<S>))
        .route("/audit-log", get(atomic::list::<S>))
        .route(
            "/api/v1/organizations/{org_id}/audit-logs",
            get(orglog::list::<S>),
        )
        .route(
            "/api/v1/organizations/{org_id}/audit-logs/{id}",
            get(orglog::show::<S>),
        )
        .route("/v1alpha/audit_logs", get(torq::list::<S>))
        .route("/api/v2/audit_logs", get(zendesk::list::<S>))
        .route("/api/v2/audit_logs.json", get(zendesk::list::<S>))
        .route("/api/v2/audit_logs/{id}", get(zendesk::show::<S>))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
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

impl<S> AppState<S> {
    /// Verifies the bearer token.
    pub fn claims(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let h = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.verifier.verify_header(h)?)
    }

    /// Decodes the cursor in parameter `param`.
    pub fn cursor(
        &self,
        binding: &Binding<'_>,
        param: &str,
        value: &str,
    ) -> Result<Cursor, ApiError> {
        self.cursors
            .decode(binding, value)
            .map_err(|e| ApiError::bad(param, e.to_string()))
    }

    /// Decodes a cursor that must walk forward (dialects with "next" only).
    pub fn next_cursor(
        &self,
        binding: &Binding<'_>,
        param: &str,
        value: &str,
    ) -> Result<Cursor, ApiError> {
        let c = self.cursor(binding, param, value)?;
        if c.walk != Walk::Next {
            return Err(ApiError::bad(param, "this cursor walks backwards"));
        }
        Ok(c)
    }

    /// The base of absolute URLs, without a trailing slash.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_string();
        }
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let proto = h("x-forwarded-proto").unwrap_or("http");
        let host = h("x-forwarded-host")
            .or_else(|| h("host"))
            .unwrap_or("localhost");
        format!("{proto}://{host}")
    }
}

/// The binding of a cursor: org, dialect, order and filter set.
pub fn binding<'a>(
    dialect: &'a str,
    filter: &'a Filter,
    order: Order,
    key: &'a str,
) -> Binding<'a> {
    Binding {
        org: &filter.org_id,
        dialect,
        direction: order.as_str(),
        filters: key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint_hs256;
    use crate::store::StaticStore;
    use axum::body::Body;
    use http::Request;
    use serde_json::Value;
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    fn doc() -> Value {
        serde_json::from_str(OPENAPI).unwrap_or(Value::Null)
    }

    /// The query parameters each route understands, from the dialect modules.
    fn params_of(path: &str) -> Vec<&'static str> {
        match path {
            "/v1/events" => native::list_params(),
            "/v1/events/export" => native::export_params(),
            "/audit-log" => atomic::PARAMS.to_vec(),
            "/api/v1/organizations/{org_id}/audit-logs" => orglog::PARAMS.to_vec(),
            "/v1alpha/audit_logs" => torq::PARAMS.to_vec(),
            "/api/v2/audit_logs" | "/api/v2/audit_logs.json" => zendesk::PARAMS.to_vec(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_parameter() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap_or("").starts_with("3.1"));
        let paths = d["paths"].as_object().cloned().unwrap_or_default();
        let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let served: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
        assert_eq!(documented, served);
        for (path, item) in &paths {
            let op = &item["get"];
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let query: BTreeSet<&str> = params
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let known: BTreeSet<&str> = params_of(path).into_iter().collect();
            assert_eq!(query, known, "{path}");
            let in_path: BTreeSet<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let templated: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(in_path, templated, "{path}");
            assert!(op["responses"]["200"].is_object(), "{path}");
            // Every $ref resolves.
            for r in op.to_string().split("\"$ref\":\"").skip(1) {
                let name = r.split('"').next().unwrap_or("");
                let name = name.trim_start_matches("#/components/schemas/");
                assert!(
                    d["components"]["schemas"][name].is_object(),
                    "{path}: {name}"
                );
            }
        }
    }

    fn state() -> Arc<AppState<StaticStore>> {
        Arc::new(AppState {
            store: StaticStore::default(),
            verifier: Verifier::hs256(b"k").expect_issuer_audience(None, None),
            cursors: CursorCodec::new("c"),
            access: Access::default(),
            health: Health::new(),
            public_url: Some("https://audit.example.com/".into()),
        })
    }

    fn token(roles: &[&str], ws: Option<&str>) -> String {
        mint_hs256(
            b"k",
            &Claims {
                sub: "u".into(),
                org_id: "org_a".into(),
                environment_id: None,
                workspace_id: ws.map(String::from),
                roles: roles.iter().map(|s| s.to_string()).collect(),
                permissions: vec![],
                exp: chrono::Utc::now().timestamp() + 600,
                iat: 0,
            },
        )
        .unwrap_or_default()
    }

    async fn get(uri: &str, tok: Option<String>) -> (StatusCode, Value) {
        let mut req = Request::get(uri);
        if let Some(t) = tok {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let Ok(req) = req.body(Body::empty()) else {
            return (StatusCode::IM_A_TEAPOT, Value::Null);
        };
        let Ok(resp) = app(state()).oneshot(req).await;
        let st = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap_or_default();
        (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn each_dialect_answers_auth_failures_in_its_own_shape() {
        let admin = || Some(token(&["admin"], None));
        let (st, b) = get("/v1alpha/audit_logs", None).await;
        assert_eq!(
            (st, b["code"].as_i64()),
            (StatusCode::UNAUTHORIZED, Some(16))
        );
        let (st, b) = get("/v1alpha/audit_logs", admin()).await;
        assert_eq!((st, b["code"].as_i64()), (StatusCode::FORBIDDEN, Some(7)));
        let (st, b) = get("/api/v2/audit_logs", Some("x".into())).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(b["error"].is_string());
        let (st, b) = get("/audit-log", admin()).await;
        assert_eq!(
            (st, b["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
        let (st, _) = get("/audit-log", Some(token(&["workbench"], None))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = get("/api/v1/organizations/org_b/audit-logs", admin()).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, _) = get("/v1/events", Some(token(&["member"], None))).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, b) = get("/nothing", admin()).await;
        assert_eq!(
            (st, b["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }

    #[tokio::test]
    async fn offset_links_use_the_public_url() {
        let (st, b) = get(
            "/api/v2/audit_logs?page=2&per_page=1",
            Some(token(&["admin"], None)),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        assert_eq!(
            b["previous_page"].as_str(),
            Some("https://audit.example.com/api/v2/audit_logs?per_page=1&page=1")
        );
    }
}
