//! The HTTP API: `POST /v1/events`, plus health and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use trailhouse_common::health::{self, Health};
use trailhouse_schemas::event::{parse_input, validate, FieldError, Stamp, SystemStamp};
use trailhouse_schemas::AuditEvent;

use crate::auth::{KeyStore, Principal};
use crate::sink::{EventSink, SinkError};

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 5 * 1024 * 1024,
            max_batch_events: 1_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Shared state of the ingest handlers.
pub struct AppState<S> {
    pub sink: S,
    pub keys: KeyStore,
    pub limits: Limits,
    pub health: Health,
}

/// One event's validation errors, by position in the request.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EventError {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// Every way a request can fail, and its status code: the one table.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("this API key may not write events of org {0:?}")]
    Forbidden(String),
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported content type {0:?}; use application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    #[error("the request contains no events")]
    Empty,
    #[error("{count} events in one request; the limit is {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("{0} of the events are invalid; nothing was accepted")]
    Invalid(usize, Vec<EventError>),
    #[error("{1}")]
    Body(StatusCode, String),
    #[error("events could not be published, retry later")]
    Unavailable(#[source] SinkError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MalformedJson(_) | ApiError::Empty | ApiError::Invalid(..) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Body(status, _) => *status,
            ApiError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Empty => "empty_request",
            ApiError::TooManyEvents { .. } => "too_many_events",
            ApiError::Invalid(..) => "invalid_events",
            ApiError::Body(StatusCode::PAYLOAD_TOO_LARGE, _) => "body_too_large",
            ApiError::Body(..) => "unreadable_body",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let ApiError::Invalid(_, details) = &self {
            body["error"]["details"] = json!(details);
        }
        if let ApiError::Unavailable(e) = &self {
            tracing::warn!(error = %e, "publish failed");
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// The ingest router.
pub fn app<S: EventSink>(state: Arc<AppState<S>>) -> Router {
    let limits = state.limits.clone();
    let health = state.health.clone();
    Router::new()
        .route("/v1/events", post(post_events::<S>))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "no such endpoint"}})),
            )
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .merge(health::router(
            health,
            trailhouse_common::telemetry::metrics_handle(),
        ))
        .layer(TraceLayer::new_for_http())
}

fn principal(keys: &KeyStore, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthenticated)?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(ApiError::Unauthenticated)?;
    keys.verify(key.trim()).ok_or(ApiError::Unauthenticated)
}

/// Splits a body into JSON values: an object, an array, or NDJSON lines.
pub fn split_body(content_type: &str, body: &[u8]) -> Result<Vec<serde_json::Value>, ApiError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(i, line)| {
                serde_json::from_slice(line)
                    .map_err(|e| ApiError::MalformedJson(format!("line {}: {e}", i + 1)))
            })
            .collect(),
        "application/json" | "" => {
            match serde_json::from_slice(body)
                .map_err(|e| ApiError::MalformedJson(e.to_string()))?
            {
                serde_json::Value::Array(items) => Ok(items),
                other => Ok(vec![other]),
            }
        }
        other => Err(ApiError::UnsupportedMediaType(other.to_string())),
    }
}

/// Validates every value; all-or-nothing. Authorization is checked per event.
pub fn validate_all(
    values: Vec<serde_json::Value>,
    who: &Principal,
    stamp: &impl Stamp,
) -> Result<Vec<AuditEvent>, ApiError> {
    let mut events = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    let mut bad = 0;
    for (index, value) in values.into_iter().enumerate() {
        let result = parse_input(value)
            .map_err(|e| vec![e])
            .and_then(|input| validate(input, stamp));
        match result {
            Ok(e) if !who.may_write(&e.org_id) => return Err(ApiError::Forbidden(e.org_id)),
            Ok(e) => events.push(e),
            Err(errs) => {
                bad += 1;
                errors.extend(
                    errs.into_iter()
                        .map(|FieldError { field, reason }| EventError {
                            index,
                            field,
                            reason,
                        }),
                );
            }
        }
    }
    if bad > 0 {
        return Err(ApiError::Invalid(bad, errors));
    }
    Ok(events)
}

async fn post_events<S: EventSink>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let who = principal(&state.keys, &headers)?;
    let body = body.map_err(|r| ApiError::Body(r.status(), r.body_text()))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let values = split_body(content_type, &body)?;
    if values.is_empty() {
        return Err(ApiError::Empty);
    }
    if values.len() > state.limits.max_batch_events {
        return Err(ApiError::TooManyEvents {
            count: values.len(),
            limit: state.limits.max_batch_events,
        });
    }
    let events = validate_all(values, &who, &SystemStamp).inspect_err(|e| {
        if let ApiError::Invalid(n, _) = e {
            metrics::counter!(crate::metrics::EVENTS_REJECTED).increment(*n as u64);
        }
    })?;
    let started = Instant::now();
    state
        .sink
        .publish(&events)
        .await
        .map_err(ApiError::Unavailable)?;
    metrics::histogram!(crate::metrics::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::EVENTS_ACCEPTED).increment(events.len() as u64);
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": ids.len(), "ids": ids})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_key;
    use crate::sink::MemorySink;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    fn state() -> (Arc<AppState<MemorySink>>, MemorySink) {
        let sink = MemorySink::default();
        let keys = KeyStore::parse(
            &format!("acme:{}", hash_key("acme-key")),
            &format!("gw:{}", hash_key("gw-key")),
        )
        .expect("keys");
        let limits = Limits {
            max_body_bytes: 4096,
            max_batch_events: 3,
            ..Limits::default()
        };
        let s = Arc::new(AppState {
            sink: sink.clone(),
            keys,
            limits,
            health: Health::new(),
        });
        (s, sink)
    }

    async fn post(
        s: &Arc<AppState<MemorySink>>,
        key: Option<&str>,
        ctype: &str,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::post("/v1/events").header("content-type", ctype);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let resp = app(s.clone())
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    const EV: &str = r#"{"org_id":"acme","action":{"type":"user.login"}}"#;

    #[tokio::test]
    async fn accepts_one_event_array_and_ndjson() {
        let (s, sink) = state();
        let (st, body) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["accepted"], 1);
        let (st, _) = post(
            &s,
            Some("acme-key"),
            "application/json",
            format!("[{EV},{EV}]"),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED);
        let (st, body) = post(
            &s,
            Some("acme-key"),
            "application/x-ndjson",
            format!("{EV}\n\n{EV}\n"),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED);
        assert_eq!(body["ids"].as_array().map(Vec::len), Some(2));
        assert_eq!(sink.taken().len(), 5);
    }

    #[tokio::test]
    async fn invalid_batches_are_rejected_whole_with_indexes() {
        let (s, sink) = state();
        let bad = r#"{"org_id":"acme","action":{}}"#;
        let (st, body) = post(
            &s,
            Some("acme-key"),
            "application/json",
            format!("[{EV},{bad}]"),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_events");
        assert_eq!(
            body["error"]["details"],
            json!([{"index": 1, "field": "action.type", "reason": "is required"}])
        );
        assert!(sink.taken().is_empty());
    }

    #[tokio::test]
    async fn errors_have_statuses_and_json_bodies() {
        let (s, sink) = state();
        let cases = [
            (
                None,
                "application/json",
                EV.to_string(),
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                Some("wrong"),
                "application/json",
                EV.to_string(),
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                Some("acme-key"),
                "application/json",
                EV.replace("acme", "globex"),
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                Some("acme-key"),
                "application/json",
                "{not json".into(),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                Some("acme-key"),
                "text/plain",
                EV.to_string(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                Some("acme-key"),
                "application/json",
                "[]".into(),
                StatusCode::BAD_REQUEST,
                "empty_request",
            ),
            (
                Some("acme-key"),
                "application/json",
                format!("[{EV},{EV},{EV},{EV}]"),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
            ),
        ];
        for (key, ctype, body, status, code) in cases {
            let (st, b) = post(&s, key, ctype, body.clone()).await;
            assert_eq!(st, status, "{body}");
            assert_eq!(b["error"]["code"], code, "{body}");
        }
        let (st, b) = post(&s, Some("acme-key"), "application/json", "x".repeat(5000)).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b["error"]["code"], "body_too_large");
        assert!(sink.taken().is_empty());
    }

    #[tokio::test]
    async fn service_keys_write_any_org() {
        let (s, sink) = state();
        let (st, _) = post(
            &s,
            Some("gw-key"),
            "application/json",
            EV.replace("acme", "globex"),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED);
        assert_eq!(sink.taken()[0].org_id, "globex");
    }

    #[tokio::test]
    async fn a_full_queue_answers_503_with_retry_after() {
        let (s, sink) = state();
        sink.fail_with_queue_full
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let req = Request::post("/v1/events")
            .header("content-type", "application/json")
            .header("authorization", "Bearer acme-key")
            .body(Body::from(EV))
            .expect("request");
        let resp = app(s.clone()).oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
