//! What every Trailhouse HTTP service does the same way at its edge: the
//! headers a status implies, the limits on a request's target and headers
//! (answered 414 / 431 with a JSON body), and a JSON body for any error
//! response that would otherwise be empty.
//!
//! The HTTP server itself (hyper) still closes with an empty 414 when a
//! request target exceeds 64 KiB, and an empty 431 when the headers exceed
//! its read buffer (about 400 KiB) or number more than 100: such a request
//! never reaches a service. Below those limits, [`request_limits`] answers
//! in JSON.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body::Body as _;
use serde_json::json;

/// Seconds a client is asked to wait before retrying a 503 or 429.
pub const RETRY_AFTER_SECS: &str = "1";

/// Adds the headers a status implies: `Retry-After` on 503 and 429 (the
/// condition is expected to clear), `WWW-Authenticate: Bearer` on 401
/// (RFC 6750 §3). Every service's error response calls this once.
pub fn status_headers(status: StatusCode, headers: &mut HeaderMap) {
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
}

/// Sets `Retry-After` to `secs` (for answers that know how long to wait).
pub fn retry_after(headers: &mut HeaderMap, secs: u64) {
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
}

/// The longest request target (path and query) a service reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a service reads; a bearer
/// token is at most 8 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The error body every service shares: `{"error": {"code", "message"}}`.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    status_headers(status, resp.headers_mut());
    resp
}

/// Refuses a request whose target is longer than [`MAX_URI_BYTES`] (414)
/// or whose headers are larger than [`MAX_HEADER_BYTES`] (431), with a
/// JSON body, before anything else reads it.
pub async fn request_limits(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return error_body(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            &format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        );
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return error_body(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        );
    }
    next.run(request).await
}

/// Gives an error response that is not JSON (an empty body from the
/// router, a timeout or a limit layer; a text rejection of an extractor) a
/// JSON body naming its status, with the text (at most 4 KiB) as the
/// message, so every error a client sees is machine-readable.
pub async fn json_error_bodies(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let empty = resp.body().size_hint().exact() == Some(0);
    if !(status.is_client_error() || status.is_server_error()) || (json && !empty) {
        return resp;
    }
    let reason = status.canonical_reason().unwrap_or("error");
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let code = match status {
        StatusCode::REQUEST_TIMEOUT => "timeout".to_string(),
        StatusCode::SERVICE_UNAVAILABLE => "unavailable".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large".to_string(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large".to_string(),
        _ => reason.to_ascii_lowercase().replace([' ', '-'], "_"),
    };
    let message = text.as_deref().unwrap_or(reason);
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    status_headers(status, &mut parts.headers);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn call(router: Router, req: Request) -> (StatusCode, serde_json::Value) {
        let Ok(resp) = router.oneshot(req).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    fn router() -> Router {
        Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/empty", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/text",
                get(|| async { (StatusCode::BAD_REQUEST, "Invalid URL: bad `id`") }),
            )
            .layer(axum::middleware::map_response(json_error_bodies))
            .layer(axum::middleware::from_fn(request_limits))
    }

    #[tokio::test]
    async fn oversized_targets_and_headers_and_empty_errors_get_json() {
        let req = |uri: String, header: usize| {
            Request::get(uri)
                .header("x-pad", "p".repeat(header))
                .body(Body::empty())
                .unwrap_or_default()
        };
        // (target, header bytes, status, code)
        let cases = [
            ("/".to_string(), 10, StatusCode::OK, None),
            (
                format!("/?q={}", "a".repeat(MAX_URI_BYTES)),
                10,
                StatusCode::URI_TOO_LONG,
                Some("uri_too_long"),
            ),
            (
                "/".to_string(),
                MAX_HEADER_BYTES,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Some("headers_too_large"),
            ),
            (
                "/empty".to_string(),
                10,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("unavailable"),
            ),
            (
                "/nothing".to_string(),
                10,
                StatusCode::NOT_FOUND,
                Some("not_found"),
            ),
            (
                "/text".to_string(),
                10,
                StatusCode::BAD_REQUEST,
                Some("bad_request"),
            ),
        ];
        for (uri, header, status, code) in cases {
            let (st, body) = call(router(), req(uri.clone(), header)).await;
            assert_eq!(st, status, "{uri}");
            assert_eq!(body["error"]["code"].as_str(), code, "{uri}");
        }
    }

    #[test]
    fn headers_follow_the_status() {
        let cases = [
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"), None),
            (StatusCode::TOO_MANY_REQUESTS, Some("1"), None),
            (StatusCode::UNAUTHORIZED, None, Some("Bearer")),
            (StatusCode::BAD_REQUEST, None, None),
            (StatusCode::OK, None, None),
        ];
        for (status, retry, auth) in cases {
            let mut h = HeaderMap::new();
            status_headers(status, &mut h);
            let get = |n| h.get(n).and_then(|v: &HeaderValue| v.to_str().ok());
            assert_eq!(get(header::RETRY_AFTER), retry, "{status}");
            assert_eq!(get(header::WWW_AUTHENTICATE), auth, "{status}");
        }
    }
}
