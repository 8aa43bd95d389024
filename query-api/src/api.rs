//! The HTTP edge: merges the routes of every dialect and adds the layers
//! (the guard of every data route, timeout, tracing, health and metrics
//! endpoints, the JSON 404 and 405 fallbacks, the request-size limits and
//! JSON bodies for every error, and the headers every answer carries).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use trailhouse_common::access::{access, request_span};
use trailhouse_common::health;
use trailhouse_common::http::{json_error_bodies, request_limits};
use trailhouse_common::metrics::QUERY_HTTP;

use crate::dialect::{atomic, native, orglog, stats, torq, zendesk};
use crate::error::ApiError;
use crate::openapi;
pub use crate::openapi::OPENAPI;
use crate::state::{AppState, Routes};
use crate::store::EventStore;
use crate::ui;

/// Every route of the API, as `(path, OpenAPI path)`; the OpenAPI test holds
/// the document to this list.
pub const ROUTES: &[(&str, &str)] = &[
    (native::LIST_PATH, native::LIST_PATH),
    (native::EXPORT_PATH, native::EXPORT_PATH),
    (native::SHOW_PATH, native::SHOW_PATH),
    (stats::PATH, stats::PATH),
    (atomic::PATH, atomic::PATH),
    (orglog::LIST_PATH, orglog::LIST_PATH),
    (orglog::SHOW_PATH, orglog::SHOW_PATH),
    (torq::PATH, torq::PATH),
    (zendesk::PATH, zendesk::PATH),
    (zendesk::JSON_PATH, zendesk::JSON_PATH),
    (zendesk::SHOW_PATH, zendesk::SHOW_PATH),
    (openapi::PATH, openapi::PATH),
];

/// The query-api router.
pub fn app<S: EventStore>(state: Arc<AppState<S>>) -> Router {
    crate::metrics::describe();
    let health = state.health.clone();
    let origins = state.cors_origins.clone();
    let viewer = if state.viewer {
        ui::routes()
    } else {
        Routes::new()
    };
    let inner = Routes::<S>::new()
        .merge(native::routes())
        .merge(stats::routes())
        .merge(atomic::routes())
        .merge(orglog::routes())
        .merge(torq::routes())
        .merge(zendesk::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::guard::<S>,
        ))
        .merge(openapi::routes())
        .merge(viewer)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .merge(health::router(
            health,
            trailhouse_common::telemetry::metrics_handle(),
        ))
        .layer(axum::middleware::map_response(json_error_bodies))
        .layer(axum::middleware::from_fn(request_limits))
        .layer(axum::middleware::map_response(no_store));
    // Without origins there is no CORS layer: a preflight is a plain 405.
    let inner = if origins.is_empty() {
        inner
    } else {
        inner.layer(cors(&origins))
    };
    inner
        .layer(axum::middleware::from_fn_with_state(QUERY_HTTP, access))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // The access line reports every answer, failures included.
                .on_failure(()),
        )
}

/// Cross-origin reads for the pages of `origins` (an embedding admin
/// portal): GET with a bearer token, never cookies; the answers' request id
/// and file name readable. With no origins, no CORS header is ever sent.
fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([
            header::AUTHORIZATION,
            header::ACCEPT,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::CONTENT_DISPOSITION,
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Audit data is never cached by a browser or a proxy, and never sniffed
/// into another content type.
async fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{mint_hs256, Claims};
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
            native::LIST_PATH => native::list_params(),
            native::EXPORT_PATH => native::export_params(),
            atomic::PATH => atomic::PARAMS.to_vec(),
            orglog::LIST_PATH => orglog::params(),
            stats::PATH => stats::params(),
            torq::PATH => torq::PARAMS.to_vec(),
            zendesk::PATH | zendesk::JSON_PATH => zendesk::PARAMS.to_vec(),
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
        Arc::new(AppState::for_tests(
            StaticStore::default(),
            Some("https://audit.example.com/"),
        ))
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
    async fn every_listed_route_is_served() {
        for (path, _) in ROUTES {
            let uri = path
                .replace("{org_id}", "org_a")
                .replace("{id}", "00000000-0000-0000-0000-000000000001");
            let (st, b) = get(&uri, None).await;
            let expected = if *path == openapi::PATH {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(st, expected, "{path}: {b}");
        }
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

    #[tokio::test]
    async fn cors_answers_the_configured_origins_only() {
        let call = |origins: Vec<String>, method: &str, origin: &str| {
            let mut st = AppState::for_tests(StaticStore::default(), None);
            st.cors_origins = origins;
            let mut req = Request::builder()
                .method(method)
                .uri("/v1/events")
                .header("origin", origin);
            if method == "OPTIONS" {
                req = req
                    .header("access-control-request-method", "GET")
                    .header("access-control-request-headers", "authorization");
            }
            let req = req.body(Body::empty()).unwrap_or_default();
            async move {
                let Ok(resp) = app(Arc::new(st)).oneshot(req).await;
                let h = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                };
                (
                    resp.status(),
                    h("access-control-allow-origin"),
                    h("access-control-allow-headers"),
                    h("access-control-expose-headers"),
                )
            }
        };
        let portal = || vec!["https://portal.example".to_string()];
        let (st, allow, headers, _) = call(portal(), "OPTIONS", "https://portal.example").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(allow.as_deref(), Some("https://portal.example"));
        assert!(headers.unwrap_or_default().contains("authorization"));
        // A refusal is readable by the page too, so the viewer can show it.
        let (st, allow, _, expose) = call(portal(), "GET", "https://portal.example").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(allow.as_deref(), Some("https://portal.example"));
        assert!(expose.unwrap_or_default().contains("x-request-id"));
        for (origins, origin) in [
            (portal(), "https://evil.example"),
            (portal(), "http://portal.example"),
            (Vec::new(), "https://portal.example"),
        ] {
            let (_, allow, _, _) = call(origins.clone(), "GET", origin).await;
            assert_eq!(allow, None, "{origins:?} {origin}");
            let (_, allow, _, _) = call(origins, "OPTIONS", origin).await;
            assert_eq!(allow, None, "preflight {origin}");
        }
    }
}
