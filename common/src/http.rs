//! Response headers every Trailhouse HTTP service sets the same way.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

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

#[cfg(test)]
mod tests {
    use super::*;

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
