//! The HTTP API: `POST /v1/events`, plus health and metrics.

mod error;
mod events;
#[cfg(test)]
mod fuzz;
mod limit;
#[cfg(test)]
mod testing;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use trailhouse_common::access::{access, request_span};
use trailhouse_common::health::{self, Health};
use trailhouse_common::http::{json_error_bodies, request_limits};
use trailhouse_common::metrics::INGEST_HTTP;
use trailhouse_common::ratelimit::OrgRateLimiter;
use trailhouse_schemas::retention::RetentionPolicy;

pub use error::ApiError;
pub use events::{split_body, validate_all, EventError, PostParams, Rejected, Validated};

use crate::auth::KeyStore;
use crate::redact::Redactor;
use crate::sink::EventSink;

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    /// The largest Kafka message an event may become (payload, key and
    /// headers); see [`MESSAGE_OVERHEAD`].
    pub max_message_bytes: usize,
    /// Events older than this many days are refused (on top of the org's
    /// retention); `None`: only the retention.
    pub max_backfill_days: Option<u32>,
    pub request_timeout: Duration,
    /// Requests to `POST /v1/events` handled at once; more are answered 503
    /// at once, so memory is bounded by this times `max_body_bytes`.
    pub max_in_flight: usize,
    /// Requests per org (429 beyond it); service keys are not limited.
    pub rate_limit: Arc<OrgRateLimiter>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 5 * 1024 * 1024,
            max_batch_events: 1_000,
            max_message_bytes: 1_000_000,
            max_backfill_days: None,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            rate_limit: Arc::new(OrgRateLimiter::unlimited()),
        }
    }
}

/// Bytes a Kafka message takes beyond its payload, key and headers (record
/// and batch framing), reserved when an event's size is checked.
pub const MESSAGE_OVERHEAD: usize = 512;

/// Shared state of the ingest handlers.
pub struct AppState<S> {
    pub sink: S,
    pub keys: KeyStore,
    pub limits: Limits,
    pub health: Health,
    /// Whether the broker answered the last probe and publish. Separate from
    /// readiness, which also turns false while draining: requests already
    /// in flight then are still served.
    pub broker_up: Arc<AtomicBool>,
    pub redactor: Redactor,
    /// Each org's retention class, stamped on its events.
    pub retention: RetentionPolicy,
}

/// The one data route.
pub const EVENTS_PATH: &str = "/v1/events";

/// The ingest router.
pub fn app<S: EventSink>(state: Arc<AppState<S>>) -> Router {
    crate::metrics::describe();
    let limits = state.limits.clone();
    let health = state.health.clone();
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
            if e.is::<tower::timeout::error::Elapsed>() {
                ApiError::Timeout
            } else {
                metrics::counter!(crate::metrics::OVERLOADED).increment(1);
                ApiError::Overloaded
            }
        }))
        .load_shed()
        .concurrency_limit(limits.max_in_flight.max(1))
        .timeout(limits.request_timeout);
    Router::new()
        .route(
            EVENTS_PATH,
            post(events::post_events::<S>)
                .route_layer(shed)
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    limit::rate_limit::<S>,
                ))
                // Outermost: authentication comes before the rate limit,
                // the in-flight limit and before the body is read.
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    events::authenticate::<S>,
                )),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "no such endpoint"}})),
            )
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .merge(health::router(
            health,
            trailhouse_common::telemetry::metrics_handle(),
        ))
        .layer(axum::middleware::map_response(json_error_bodies))
        .layer(axum::middleware::from_fn(request_limits))
        .layer(axum::middleware::from_fn_with_state(INGEST_HTTP, access))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // The access line reports every answer, failures included.
                .on_failure(()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::EV;
    use crate::auth::hash_key;
    use crate::sink::{Envelope, SinkError};
    use axum::body::Body;
    use axum::http::header;
    use http::Request;
    use tower::ServiceExt;

    /// A sink that never acknowledges: requests pile up in flight.
    struct StuckSink;
    impl EventSink for StuckSink {
        async fn publish(&self, _: &[Envelope]) -> Result<(), SinkError> {
            std::future::pending().await
        }
        fn flush(&self, _: Duration) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_limit_are_shed_with_503() {
        let health = Health::new();
        health.set_ready(true);
        let s = Arc::new(AppState {
            sink: StuckSink,
            keys: KeyStore::parse(&format!("acme:{}", hash_key("acme-key")), "").expect("keys"),
            limits: Limits {
                max_in_flight: 2,
                ..Limits::default()
            },
            health,
            broker_up: Arc::new(AtomicBool::new(true)),
            redactor: Redactor::default(),
            retention: RetentionPolicy::default(),
        });
        let router = app(s);
        let req = || {
            Request::post("/v1/events")
                .header("content-type", "application/json")
                .header("authorization", "Bearer acme-key")
                .body(Body::from(EV))
                .expect("request")
        };
        let stuck: Vec<_> = (0..2)
            .map(|_| tokio::spawn(router.clone().oneshot(req())))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = router.clone().oneshot(req()).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["error"]["code"], "overloaded");
        stuck.iter().for_each(|t| t.abort());
    }
}
