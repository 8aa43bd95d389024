//! Liveness, readiness and Prometheus metrics endpoints, mounted by every service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::Exporter;

/// Readiness of a service: false until startup checks pass, false again while
/// shutting down or while a dependency is unavailable.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets readiness, and the `trailhouse_ready` gauge (an alert counts
    /// its changes: readiness that flaps).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::READY).set(if ready { 1.0 } else { 0.0 });
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct HealthState {
    health: Health,
    metrics: Option<Exporter>,
}

/// `/health/live`, `/health/ready` and `/metrics`.
pub fn router(health: Health, metrics: Option<Exporter>) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(serde_json::json!({"status": "live"})) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(HealthState { health, metrics })
}

async fn ready(State(s): State<HealthState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not_ready"})),
        )
    }
}

async fn render_metrics(State(s): State<HealthState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.map(|m| m.render()).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_flips() {
        let h = Health::new();
        assert!(!h.is_ready());
        h.clone().set_ready(true);
        assert!(h.is_ready());
    }
}
