//! [`ApiError`]: every way a request can fail, its status code, error code
//! and JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use trailhouse_common::http::{retry_after, status_headers};

use super::events::EventError;
use crate::sink::SinkError;

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
    #[error("event {index} would be a {bytes}-byte Kafka message; the limit is {limit}; nothing was accepted")]
    EventTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },
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
    #[error("the organisation's rate limit is spent; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
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
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Body(status, _) => *status,
            ApiError::TooManyEvents { .. } | ApiError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            // The broker's limit is lower than ours: still the request's size.
            ApiError::Unavailable(SinkError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
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
            ApiError::EventTooLarge { .. } | ApiError::Unavailable(SinkError::TooLarge(_)) => {
                "event_too_large"
            }
            ApiError::Invalid(..) => "invalid_events",
            ApiError::Body(StatusCode::PAYLOAD_TOO_LARGE, _) => "body_too_large",
            ApiError::Body(..) => "unreadable_body",
            ApiError::Unavailable(_) | ApiError::NotReady => "unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::RateLimited { .. } => "rate_limited",
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
        if let ApiError::EventTooLarge { index, .. } = &self {
            body["error"]["details"] =
                json!([{"index": index, "field": "", "reason": "too large"}]);
        }
        if let ApiError::Unavailable(e) = &self {
            tracing::warn!(error = %e, "publish failed");
        }
        let mut resp = (status, Json(body)).into_response();
        status_headers(status, resp.headers_mut());
        if let ApiError::RateLimited { retry_after: secs } = &self {
            retry_after(resp.headers_mut(), *secs);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::app;
    use crate::api::testing::{post, state, EV};
    use axum::body::Body;
    use axum::http::header;
    use http::Request;
    use tower::ServiceExt;

    #[test]
    fn responses_carry_the_headers_their_status_implies() {
        let cases = [
            (ApiError::Unauthenticated, None, Some("Bearer")),
            (ApiError::Overloaded, Some("1"), None),
            (ApiError::NotReady, Some("1"), None),
            (ApiError::Unavailable(SinkError::QueueFull), Some("1"), None),
            (
                ApiError::Unavailable(SinkError::Encode("x".into())),
                None,
                None,
            ),
            (ApiError::Empty, None, None),
            (ApiError::RateLimited { retry_after: 9 }, Some("9"), None),
        ];
        for (error, retry_after, authenticate) in cases {
            let name = format!("{error:?}");
            let resp = error.into_response();
            let get = |h| resp.headers().get(h).and_then(|v| v.to_str().ok());
            assert_eq!(get(header::RETRY_AFTER), retry_after, "{name}");
            assert_eq!(get(header::WWW_AUTHENTICATE), authenticate, "{name}");
        }
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
