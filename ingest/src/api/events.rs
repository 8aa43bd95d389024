//! `POST /v1/events`: authenticate, split the body into events, validate
//! them, redact and stamp them, publish them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use trailhouse_layer::trace::outgoing_traceparent;
use trailhouse_schemas::event::{parse_input, validate, FieldError, Stamp, SystemStamp};
use trailhouse_schemas::AuditEvent;

use super::{ApiError, AppState};
use crate::auth::{KeyStore, Principal};
use crate::sink::{Envelope, EventSink, SinkError, TRACEPARENT};

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

/// Why a request was not authenticated (logged and counted; never the key).
fn principal(keys: &KeyStore, headers: &HeaderMap) -> Result<Principal, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no authorization header")?
        .to_str()
        .map_err(|_| "authorization header is not text")?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("not a bearer key")?;
    keys.verify(key.trim()).ok_or("unknown key")
}

/// Authenticates from the headers alone, before the request takes an
/// in-flight slot or any body byte is read: an unauthenticated client, fast
/// or slow, never holds what authenticated clients need. The principal
/// travels to the handler as a request extension.
pub(super) async fn authenticate<S: EventSink>(
    State(state): State<Arc<AppState<S>>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match principal(&state.keys, request.headers()) {
        Ok(who) => {
            request.extensions_mut().insert(who);
            Ok(next.run(request).await)
        }
        Err(reason) => {
            metrics::counter!(crate::metrics::AUTH_FAILURES).increment(1);
            tracing::warn!(reason, "authentication failed");
            Err(ApiError::Unauthenticated)
        }
    }
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
/// `admit` is the service's own rule for a valid event (e.g. its age).
pub fn validate_all(
    values: Vec<serde_json::Value>,
    who: &Principal,
    stamp: &impl Stamp,
    partial: bool,
    admit: impl Fn(&AuditEvent) -> Result<(), FieldError>,
) -> Result<Validated, ApiError> {
    let mut out = Validated {
        events: Vec::with_capacity(values.len()),
        rejected: Vec::new(),
    };
    for (index, value) in values.into_iter().enumerate() {
        let result = parse_input(value)
            .map_err(|e| vec![e])
            .and_then(|input| validate(input, stamp))
            .and_then(|e| admit(&e).map(|()| e).map_err(|err| vec![err]));
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

/// An event is admitted only if it will be stored: not older than its org's
/// retention (the table would drop it at insert), nor than the backfill
/// horizon when one is set.
pub fn retained(
    event: &AuditEvent,
    retention_days: u16,
    max_backfill_days: Option<u32>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), FieldError> {
    let age = now.signed_duration_since(event.created_at);
    let retention = chrono::Duration::days(i64::from(retention_days));
    if age > retention {
        return Err(FieldError::new(
            "created_at",
            format!(
                "older than the org's retention of {retention_days} days; it would not be stored"
            ),
        ));
    }
    if let Some(days) = max_backfill_days {
        if age > chrono::Duration::days(i64::from(days)) {
            return Err(FieldError::new(
                "created_at",
                format!("older than the backfill horizon of {days} days"),
            ));
        }
    }
    Ok(())
}

/// Refuses the request when one of its events, as it would go to Kafka
/// (redacted, encoded, with its key and trace header), is over the message
/// size limit: all or nothing, before anything is published. The index is
/// the event's position in the request.
fn check_sizes(
    envelopes: &[Envelope],
    rejected: &[Rejected],
    limit: usize,
) -> Result<(), ApiError> {
    let positions = (0..).filter(|i| !rejected.iter().any(|r| r.index == *i));
    for (e, index) in envelopes.iter().zip(positions) {
        let payload = trailhouse_schemas::encode(&e.event)
            .map_err(|err| ApiError::Unavailable(SinkError::Encode(err.to_string())))?;
        let bytes = payload.len()
            + e.event.org_id.len()
            + e.traceparent
                .as_deref()
                .map_or(0, |t| TRACEPARENT.len() + t.len())
            + super::MESSAGE_OVERHEAD;
        if bytes > limit {
            metrics::counter!(crate::metrics::EVENTS_REJECTED).increment(envelopes.len() as u64);
            return Err(ApiError::EventTooLarge {
                index,
                bytes,
                limit,
            });
        }
    }
    Ok(())
}

pub(super) async fn post_events<S: EventSink>(
    State(state): State<Arc<AppState<S>>>,
    Extension(who): Extension<Principal>,
    params: Result<Query<PostParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
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
    let now = SystemStamp.now();
    let admit = |e: &AuditEvent| {
        retained(
            e,
            state.retention.days_for(&e.org_id),
            state.limits.max_backfill_days,
            now,
        )
    };
    let Validated { events, rejected } =
        validate_all(values, &who, &SystemStamp, params.partial, admit).inspect_err(|e| {
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
    check_sizes(&envelopes, &rejected, state.limits.max_message_bytes)?;
    let started = Instant::now();
    if let Err(e) = state.sink.publish(&envelopes).await {
        if matches!(e, SinkError::QueueFull) {
            metrics::counter!(crate::metrics::QUEUE_FULL).increment(1);
        }
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
    use crate::api::app;
    use crate::api::testing::{post, post_to, state, EV};
    use axum::body::Body;
    use http::Request;
    use std::sync::atomic::Ordering;
    use tower::ServiceExt;
    use trailhouse_schemas::retention::RetentionPolicy;

    #[test]
    fn only_events_that_will_be_stored_are_admitted() {
        let now = chrono::Utc::now();
        let at = |days: i64| AuditEvent {
            created_at: now - chrono::Duration::days(days),
            ..trailhouse_schemas::examples::all().remove(0)
        };
        // (age in days, retention, backfill horizon, admitted)
        let cases = [
            (0, 90, None, true),
            (89, 90, None, true),
            (91, 90, None, false),
            (400, 365, None, false),
            (20_000, 2555, None, false),
            (40, 90, Some(30), false),
            (20, 90, Some(30), true),
            (100, 365, Some(400), true),
        ];
        for (age, retention, backfill, ok) in cases {
            let r = retained(&at(age), retention, backfill, now);
            assert_eq!(
                r.is_ok(),
                ok,
                "{age} days, {retention}, {backfill:?}: {r:?}"
            );
            if let Err(e) = r {
                assert_eq!(e.field, "created_at");
            }
        }
    }

    #[tokio::test]
    async fn an_event_over_the_message_limit_is_refused_whole_with_its_index() {
        let (s, sink) = crate::api::testing::state_with(|l| l.max_message_bytes = 1024);
        let big = format!(
            r#"{{"org_id":"acme","action":{{"type":"user.login"}},"metadata":{{"note":"{}"}}}}"#,
            "x".repeat(1500)
        );
        let body = format!("[{EV},{big},{EV}]");
        let (st, resp) = post(&s, Some("acme-key"), "application/json", body).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
        assert_eq!(resp["error"]["code"], "event_too_large");
        assert_eq!(resp["error"]["details"][0]["index"], 1);
        assert!(sink.taken().is_empty(), "nothing is published");
        assert!(
            s.health.is_ready(),
            "a request's own size never flips readiness"
        );
        // Under the limit, the same shape goes through.
        let body = format!("[{EV},{EV}]");
        let (st, resp) = post(&s, Some("acme-key"), "application/json", body).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{resp}");
    }

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
}
