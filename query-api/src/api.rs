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
pub fn binding<'a>(dialect: &'a str, filter: &'a Filter, order: Order, key: &'a str) -> Binding<'a> {
    Binding {
        org: &filter.org_id,
        dialect,
        direction: order.as_str(),
        filters: key,
    }
}
