//! `POST /v1/events`: authenticate, split the body into events, validate
//! them, redact and stamp them, publish them.

use std::collections::hash_map::{Entry, HashMap};
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
use trailhouse_common::access::{self, Caller};
use trailhouse_layer::trace::outgoing_traceparent;
use trailhouse_schemas::event::{parse_input_json, validate, FieldError, Stamp, SystemStamp};
use trailhouse_schemas::AuditEvent;
use uuid::Uuid;

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

/// Why a request was not authenticated (one of
/// [`crate::metrics::AUTH_REASONS`]; logged and counted, never the key).
fn principal(keys: &KeyStore, headers: &HeaderMap) -> Result<Principal, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("missing")?
        .to_str()
        .map_err(|_| "malformed")?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("malformed")?;
    keys.verify(key.trim()).ok_or("unknown_key")
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
            let caller = match &who {
                Principal::Org(org) => Caller {
                    org: Some(org.clone()),
                    kind: "org_key",
                    ..Caller::default()
                },
                Principal::Service(name) => Caller {
                    kind: "service_key",
                    name: Some(name.clone()),
                    ..Caller::default()
                },
            };
            access::identify(request.extensions(), caller);
            request.extensions_mut().insert(who);
            Ok(next.run(request).await)
        }
        Err(reason) => {
            metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => reason).increment(1);
            access::auth_failed(request.extensions(), reason, "api_key");
            Err(ApiError::Unauthenticated)
        }
    }
}

/// One event's JSON text, checked for syntax but not parsed into a tree.
pub type RawEvent = Box<serde_json::value::RawValue>;

/// Splits a body into the JSON texts of its events: an object, an array, or
/// NDJSON lines. Only the syntax is checked here; each event is parsed
/// straight into its input type by [`validate_all`].
pub fn split_body(content_type: &str, body: &[u8]) -> Result<Vec<RawEvent>, ApiError> {
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
            let malformed = |e: serde_json::Error| ApiError::MalformedJson(e.to_string());
            if body.trim_ascii_start().first() == Some(&b'[') {
                serde_json::from_slice(body).map_err(malformed)
            } else {
                serde_json::from_slice(body)
                    .map(|one| vec![one])
                    .map_err(malformed)
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
    values: Vec<RawEvent>,
    who: &Principal,
    stamp: &impl Stamp,
    partial: bool,
    admit: impl Fn(&AuditEvent) -> Result<(), FieldError>,
) -> Result<Validated, ApiError> {
    let mut out = Validated {
        events: Vec::with_capacity(values.len()),
        rejected: Vec::new(),
    };
    // An event is identified by `(org_id, id)`: a second event with the
    // same identity in one request is refused, not stored twice.
    let mut seen: HashMap<(String, Uuid), usize> = HashMap::new();
    for (index, value) in values.into_iter().enumerate() {
        let result = parse_input_json(value.get())
            .map_err(|e| vec![e])
            .and_then(|input| validate(input, stamp))
            .and_then(|e| admit(&e).map(|()| e).map_err(|err| vec![err]));
        let errors = match result {
            Ok(e) if who.may_write(&e.org_id) => match seen.entry((e.org_id.clone(), e.id)) {
                Entry::Vacant(v) => {
                    v.insert(index);
                    out.events.push(e);
                    continue;
                }
                Entry::Occupied(first) => vec![FieldError::new(
                    "id",
                    format!(
                        "repeats the id of event {} of this request; an event is identified by (org_id, id)",
                        first.get()
                    ),
                )],
            },
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

/// Encodes every event once, for the producer, and refuses the request when
/// one of them, as it would go to Kafka (redacted, encoded, with its key and
/// trace header), is over the message size limit: all or nothing, before
/// anything is published. The index is the event's position in the request.
fn encode_checked(
    envelopes: &mut [Envelope],
    rejected: &[Rejected],
    limit: usize,
) -> Result<(), ApiError> {
    let count = envelopes.len() as u64;
    let positions = (0..).filter(|i| !rejected.iter().any(|r| r.index == *i));
    for (e, index) in envelopes.iter_mut().zip(positions) {
        let key = e.event().org_id.len();
        let header = e.traceparent().map_or(0, |t| TRACEPARENT.len() + t.len());
        let payload = e.encode().map_err(ApiError::Unavailable)?.len();
        let bytes = payload + key + header + super::MESSAGE_OVERHEAD;
        if bytes > limit {
            crate::metrics::rejected("too_large", count);
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
                crate::metrics::rejected("invalid", *n as u64);
            }
        })?;
    crate::metrics::rejected("invalid", rejected.len() as u64);
    // While Kafka is known to be unreachable, refuse at once instead of
    // holding the request until the acknowledgement times out.
    if !state.broker_up.load(Ordering::Relaxed) {
        crate::metrics::rejected("unavailable", events.len() as u64);
        return Err(ApiError::NotReady);
    }
    let incoming = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let traceparent: Option<Arc<str>> =
        outgoing_traceparent(&tracing::Span::current(), incoming).map(Arc::from);
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let mut envelopes: Vec<Envelope> = events
        .into_iter()
        .map(|mut event| {
            state.redactor.apply(&mut event);
            event.retention_days = Some(state.retention.days_for(&event.org_id));
            Envelope::new(event).with_traceparent(traceparent.clone())
        })
        .collect();
    encode_checked(&mut envelopes, &rejected, state.limits.max_message_bytes)?;
    let started = Instant::now();
    if let Err(e) = state.sink.publish(&envelopes).await {
        let reason = match &e {
            SinkError::TooLarge(_) => "too_large",
            e if e.is_retryable() => "unavailable",
            _ => "failed",
        };
        crate::metrics::rejected(reason, envelopes.len() as u64);
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
mod tests;
