//! The HTTP API: `POST /v1/events`, plus health and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use trailhouse_common::health::{self, Health};
use trailhouse_common::telemetry::{continue_trace, outgoing_traceparent};
use trailhouse_schemas::event::{parse_input, validate, FieldError, Stamp, SystemStamp};
use trailhouse_schemas::retention::RetentionPolicy;
use trailhouse_schemas::AuditEvent;

use crate::auth::{KeyStore, Principal};
use crate::redact::Redactor;
use crate::sink::{Envelope, EventSink, SinkError, TRACEPARENT};

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub request_timeout: Duration,
    /// Requests to `POST /v1/events` handled at once; more are answered 503
    /// at once, so memory is bounded by this times `max_body_bytes`.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 5 * 1024 * 1024,
            max_batch_events: 1_000,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 256,
        }
    }
}

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

/// `POST /v1/events` query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostParams {
    /// Accept the valid events of a batch and list the rejected ones,
    /// instead of rejecting the whole batch.
    #[serde(default)]
    pub partial: bool,
}

/// One rejected event of a partially accepted batch.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    pub errors: Vec<EventError>,
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
    #[error("Kafka is not reachable, retry later")]
    NotReady,
    #[error("too many requests in flight, retry later")]
    Overloaded,
    #[error("the request did not complete in time; its events may or may not have been published, retry with the same ids")]
    Timeout,
    #[error("invalid query parameters: {0}")]
    BadParams(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MalformedJson(_)
            | ApiError::Empty
            | ApiError::Invalid(..)
            | ApiError::BadParams(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady | ApiError::Overloaded | ApiError::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
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
            ApiError::Unavailable(_) | ApiError::NotReady => "unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::Timeout => "timeout",
            ApiError::BadParams(_) => "invalid_parameters",
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
        .route("/v1/events", post(post_events::<S>).route_layer(shed))
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
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The request span, continuing the caller's `traceparent` when it sent one.
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri().path(),
    );
    if let Some(tp) = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        continue_trace(&span, tp);
    }
    span
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

/// The outcome of validating a request's events.
#[derive(Debug, Default)]
pub struct Validated {
    pub events: Vec<AuditEvent>,
    pub rejected: Vec<Rejected>,
}

/// Validates every value. All-or-nothing unless `partial`: then the valid
/// events go through and the rest are listed by index. Authorization is
/// checked per event; without `partial` a foreign org fails the request.
pub fn validate_all(
    values: Vec<serde_json::Value>,
    who: &Principal,
    stamp: &impl Stamp,
    partial: bool,
) -> Result<Validated, ApiError> {
    let mut out = Validated {
        events: Vec::with_capacity(values.len()),
        rejected: Vec::new(),
    };
    for (index, value) in values.into_iter().enumerate() {
        let result = parse_input(value)
            .map_err(|e| vec![e])
            .and_then(|input| validate(input, stamp));
        let errors = match result {
            Ok(e) if who.may_write(&e.org_id) => {
                out.events.push(e);
                continue;
            }
            Ok(e) if !partial => return Err(ApiError::Forbidden(e.org_id)),
            Ok(e) => vec![FieldError::new(
                "org_id",
                format!("this API key may not write events of org {:?}", e.org_id),
            )],
            Err(errs) => errs,
        };
        out.rejected.push(Rejected {
            index,
            errors: errors
                .into_iter()
                .map(|FieldError { field, reason }| EventError {
                    index,
                    field,
                    reason,
                })
                .collect(),
        });
    }
    if !out.rejected.is_empty() && (!partial || out.events.is_empty()) {
        let bad = out.rejected.len();
        let details = out.rejected.into_iter().flat_map(|r| r.errors).collect();
        return Err(ApiError::Invalid(bad, details));
    }
    Ok(out)
}

async fn post_events<S: EventSink>(
    State(state): State<Arc<AppState<S>>>,
    params: Result<Query<PostParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let who = principal(&state.keys, &headers)?;
    let Query(params) = params.map_err(|e| ApiError::BadParams(e.body_text()))?;
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
    let Validated { events, rejected } = validate_all(values, &who, &SystemStamp, params.partial)
        .inspect_err(|e| {
        if let ApiError::Invalid(n, _) = e {
            metrics::counter!(crate::metrics::EVENTS_REJECTED).increment(*n as u64);
        }
    })?;
    metrics::counter!(crate::metrics::EVENTS_REJECTED).increment(rejected.len() as u64);
    // While Kafka is known to be unreachable, refuse at once instead of
    // holding the request until the acknowledgement times out.
    if !state.broker_up.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady);
    }
    let incoming = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let traceparent: Option<Arc<str>> =
        outgoing_traceparent(&tracing::Span::current(), incoming).map(Arc::from);
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let envelopes: Vec<Envelope> = events
        .into_iter()
        .map(|mut event| {
            state.redactor.apply(&mut event);
            event.retention_days = Some(state.retention.days_for(&event.org_id));
            Envelope {
                event,
                traceparent: traceparent.clone(),
            }
        })
        .collect();
    let started = Instant::now();
    if let Err(e) = state.sink.publish(&envelopes).await {
        if e.is_retryable() {
            // The readiness probe turns these back on once the broker answers.
            state.broker_up.store(false, Ordering::Relaxed);
            state.health.set_ready(false);
        }
        return Err(ApiError::Unavailable(e));
    }
    metrics::histogram!(crate::metrics::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::EVENTS_ACCEPTED).increment(ids.len() as u64);
    let mut body = json!({"accepted": ids.len(), "ids": ids});
    if params.partial {
        body["rejected"] = json!(rejected);
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
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
        let health = Health::new();
        health.set_ready(true);
        let s = Arc::new(AppState {
            sink: sink.clone(),
            keys,
            limits,
            health,
            broker_up: Arc::new(AtomicBool::new(true)),
            redactor: Redactor::default(),
            retention: RetentionPolicy::default(),
        });
        (s, sink)
    }

    async fn post(
        s: &Arc<AppState<MemorySink>>,
        key: Option<&str>,
        ctype: &str,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
        post_to(s, "/v1/events", key, ctype, body).await
    }

    async fn post_to(
        s: &Arc<AppState<MemorySink>>,
        path: &str,
        key: Option<&str>,
        ctype: &str,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::post(path).header("content-type", ctype);
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
    async fn events_carry_their_orgs_retention_class_not_the_clients() {
        let (s, sink) = state();
        let mut st = Arc::try_unwrap(s).ok().expect("sole owner");
        st.retention = RetentionPolicy::parse(30, "acme=365").expect("policy");
        let s = Arc::new(st);
        let globex = r#"{"org_id":"globex","action":{"type":"user.login"}}"#;
        let (code, body) = post(
            &s,
            Some("gw-key"),
            "application/json",
            format!("[{EV},{globex}]"),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let days: Vec<Option<u16>> = sink.taken().iter().map(|e| e.retention_days).collect();
        assert_eq!(days, vec![Some(365), Some(30)]);
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
    async fn partial_mode_accepts_the_valid_events_and_lists_the_rest() {
        let (s, sink) = state();
        let bad = r#"{"org_id":"acme","action":{}}"#;
        let foreign = EV.replace("acme", "globex");
        let (st, body) = post_to(
            &s,
            "/v1/events?partial=true",
            Some("acme-key"),
            "application/json",
            format!("[{EV},{bad},{foreign}]"),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["accepted"], 1);
        assert_eq!(body["rejected"][0]["index"], 1);
        assert_eq!(body["rejected"][0]["errors"][0]["field"], "action.type");
        assert_eq!(body["rejected"][1]["index"], 2);
        assert_eq!(body["rejected"][1]["errors"][0]["field"], "org_id");
        assert_eq!(sink.taken().len(), 1);
        assert_eq!(body["ids"][0], sink.taken()[0].id.to_string());
        // Nothing valid: still a 400, nothing published.
        let req = |q: &str| {
            Request::post(format!("/v1/events{q}"))
                .header("content-type", "application/json")
                .header("authorization", "Bearer acme-key")
                .body(Body::from(format!("[{bad}]")))
                .expect("request")
        };
        let resp = app(s.clone())
            .oneshot(req("?partial=true"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let resp = app(s.clone())
            .oneshot(req("?partial=maybe"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let resp = app(s.clone())
            .oneshot(req("?partail=true"))
            .await
            .expect("response");
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "unknown parameters are errors"
        );
        assert_eq!(sink.taken().len(), 1);
    }

    #[tokio::test]
    async fn events_are_redacted_and_carry_the_trace_context() {
        let (s, sink) = state();
        let ev = r#"{"org_id":"acme","action":{"type":"user.login"},
            "request":{"headers":{"Authorization":"Bearer sekrit","Accept":"*/*"},
                       "query":{"api_key":"k1"},"body":"{\"password\":\"p1\"}"}}"#;
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req = Request::post("/v1/events")
            .header("content-type", "application/json")
            .header("authorization", "Bearer acme-key")
            .header("traceparent", tp)
            .body(Body::from(ev))
            .expect("request");
        let resp = app(s.clone()).oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let sent = sink.envelopes();
        assert_eq!(sent[0].traceparent.as_deref(), Some(tp));
        let text = serde_json::to_string(&sent[0].event).expect("json");
        for secret in ["sekrit", "k1", "p1"] {
            assert!(!text.contains(secret), "{secret} reached the sink: {text}");
        }
        assert_eq!(sent[0].event.request.headers["Accept"], "*/*");
    }

    #[tokio::test]
    async fn not_ready_refuses_at_once_after_validating() {
        let (s, sink) = state();
        s.broker_up.store(false, Ordering::Relaxed);
        let (st, body) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
        let (st, _) = post(&s, Some("acme-key"), "application/json", "{".into()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "bad input is still a 400");
        assert!(sink.taken().is_empty());
        // Draining (readiness off, broker up): requests in flight are served.
        s.broker_up.store(true, Ordering::Relaxed);
        s.health.set_ready(false);
        let (st, _) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
        assert_eq!(st, StatusCode::ACCEPTED);
        // A failed publish turns readiness off.
        s.broker_up.store(true, Ordering::Relaxed);
        s.health.set_ready(true);
        sink.fail_with_queue_full
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (st, _) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!s.health.is_ready());
        assert!(!s.broker_up.load(Ordering::Relaxed));
    }

    /// A sink that never acknowledges: requests pile up in flight.
    struct StuckSink;
    impl EventSink for StuckSink {
        async fn publish(&self, _: &[Envelope]) -> Result<(), SinkError> {
            futures::future::pending().await
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
