//! What every HTTP service records about each request: the request span
//! (continuing the caller's `traceparent`), the request metrics (RED, by
//! matched route, method and status class), one access line at INFO, the
//! `x-request-id` (the caller's when well formed, else a new one; echoed on
//! the response), and failed authentications.
//!
//! Layer order (outermost first): [`request_span`] (a `TraceLayer`), then
//! [`access`]. Both run after routing (`Router::layer`), so the matched
//! route template is known; a request no route matched is `unmatched`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Extensions, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::HttpMetrics;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";
/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// Who made a request, once its service authenticated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The org the request acts for (none for a service key, which may
    /// write any org).
    pub org: Option<String>,
    /// `org_key`, `service_key`, `jwt`.
    pub kind: &'static str,
    /// The key's or token subject's name.
    pub name: Option<String>,
    /// Why authentication failed (the request was refused with 401).
    pub auth_failure: Option<String>,
}

/// The slot [`access`] leaves in a request for [`identify`] to fill.
#[derive(Debug, Clone, Default)]
struct CallerSlot(Arc<Mutex<Option<Caller>>>);

/// Records who made the request, for its access line. Called by a
/// service's authentication; does nothing outside [`access`].
pub fn identify(extensions: &Extensions, caller: Caller) {
    if let Some(slot) = extensions.get::<CallerSlot>() {
        if let Ok(mut c) = slot.0.lock() {
            *c = Some(caller);
        }
    }
}

/// Logs (at WARN, never throttled) a failed authentication with the
/// reason, the kind of credential tried and the peer, and puts the kind and
/// reason into the request's access line. Never the credential itself.
pub fn auth_failed(extensions: &Extensions, reason: &str, kind: &'static str) {
    identify(
        extensions,
        Caller {
            kind,
            auth_failure: Some(reason.to_string()),
            ..Caller::default()
        },
    );
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    tracing::warn!(
        target: "trailhouse::auth",
        reason,
        principal_kind = kind,
        peer = peer.as_deref().unwrap_or(""),
        "authentication failed"
    );
}

/// The request span: method, matched route, request id; it continues the
/// caller's trace when the request carries a valid `traceparent`.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id = tracing::field::Empty,
    );
    if let Some(tp) = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        crate::telemetry::continue_trace(&span, tp);
    }
    span
}

/// The access middleware: metrics, the access line and the request id.
/// Lines are INFO (ERROR for a 5xx other than 503); probes and scrapes
/// (`/health/*`, `/metrics`) are counted but logged at DEBUG only.
pub async fn access(State(m): State<HttpMetrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    tracing::Span::current().record("request_id", request_id.as_str());
    let slot = CallerSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let labels = [
        ("route", route.clone()),
        ("method", method.to_string()),
        ("status", status_class(status).to_string()),
    ];
    metrics::counter!(m.requests, &labels).increment(1);
    metrics::histogram!(m.duration, &labels).record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let caller = slot
        .0
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .unwrap_or_default();
    // Microsecond precision, as a number.
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    let (org, kind, name, auth_failure) = (
        caller.org.as_deref().unwrap_or(""),
        caller.kind,
        caller.name.as_deref().unwrap_or(""),
        caller.auth_failure.as_deref().unwrap_or(""),
    );
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "trailhouse::access",
                $level,
                method,
                route = route.as_str(),
                status = status.as_u16(),
                latency_ms,
                org,
                principal_kind = kind,
                principal = name,
                auth_failure,
                request_id = request_id.as_str(),
                "request"
            )
        };
    }
    if route.starts_with("/health/") || route == "/metrics" {
        line!(tracing::Level::DEBUG);
    } else if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        // A 503 is load shedding or a dependency being down, which its own
        // metrics and lines report; other 5xx answers are faults.
        line!(tracing::Level::ERROR);
    } else {
        line!(tracing::Level::INFO);
    }
    response
}

/// `2xx` … `5xx` (`1xx` for informational answers).
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The method as a bounded label: the standard ones, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A caller's request id is kept when it is 1 to 128 characters of
/// letters, digits and `-_.:`; anything else is replaced.
pub fn is_valid_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    const TEST_HTTP: HttpMetrics = HttpMetrics {
        service: "test",
        requests: "trailhouse_test_http_requests_total",
        duration: "trailhouse_test_http_request_duration_seconds",
        buckets: &[0.1],
    };

    #[test]
    fn labels_are_bounded() {
        let cases = [
            (StatusCode::OK, "2xx"),
            (StatusCode::NO_CONTENT, "2xx"),
            (StatusCode::NOT_MODIFIED, "3xx"),
            (StatusCode::TOO_MANY_REQUESTS, "4xx"),
            (StatusCode::BAD_GATEWAY, "5xx"),
        ];
        for (s, class) in cases {
            assert_eq!(status_class(s), class, "{s}");
        }
        let odd = Method::from_bytes(b"PURGE").unwrap_or(Method::GET);
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }

    #[test]
    fn request_ids_from_callers_are_checked() {
        let cases = [
            ("abc-123", true),
            ("0af7651916cd43dd8448eb211c80319c", true),
            ("", false),
            ("has space", false),
            ("new\nline", false),
        ];
        for (v, ok) in cases {
            assert_eq!(is_valid_request_id(v), ok, "{v:?}");
        }
        assert!(!is_valid_request_id(&"a".repeat(129)));
    }

    type Fields = serde_json::Map<String, serde_json::Value>;

    /// Keeps the fields of every access line.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<(tracing::Level, Fields)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct V<'a>(&'a mut serde_json::Map<String, serde_json::Value>);
            impl tracing::field::Visit for V<'_> {
                fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
                    self.0.insert(f.name().into(), v.into());
                }
                fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                    self.0.insert(f.name().into(), v.into());
                }
                fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                    self.0.insert(f.name().into(), v.into());
                }
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.insert(f.name().into(), format!("{v:?}").into());
                }
            }
            if event.metadata().target() == "trailhouse::access" {
                let mut m = serde_json::Map::new();
                event.record(&mut V(&mut m));
                if let Ok(mut all) = self.0.lock() {
                    all.push((*event.metadata().level(), m));
                }
            }
        }
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_get_an_id() {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = Lines::default();
        let _logs =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(lines.clone()));
        let recorder = crate::metrics::builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let app = Router::new()
            .route(
                "/v1/things/{id}",
                get(|req: Request| async move {
                    identify(
                        req.extensions(),
                        Caller {
                            org: Some("acme".into()),
                            kind: "jwt",
                            ..Caller::default()
                        },
                    );
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(TEST_HTTP, access));
        let call = |uri: &str, id: Option<&str>| {
            let mut r = Request::get(uri);
            if let Some(id) = id {
                r = r.header(REQUEST_ID, id);
            }
            app.clone()
                .oneshot(r.body(Body::empty()).unwrap_or_default())
        };
        let Ok(a) = call("/v1/things/1", Some("caller-id-1")).await;
        let Ok(b) = call("/v1/things/2", Some("bad id")).await;
        let Ok(c) = call("/nowhere", None).await;
        assert_eq!(a.headers()[REQUEST_ID], "caller-id-1");
        let fresh = b.headers()[REQUEST_ID].to_str().unwrap_or("");
        assert_eq!(fresh.len(), 32, "{fresh}");
        assert_eq!(c.status(), StatusCode::NOT_FOUND);
        // One access line per request, with the route template, the
        // status, the latency as a number, the caller and the request id.
        let lines = lines.0.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let (level, first) = &lines[0];
        assert_eq!(*level, tracing::Level::INFO);
        assert_eq!(first["method"], "GET");
        assert_eq!(first["route"], "/v1/things/{id}");
        assert_eq!(first["status"], 200);
        assert!(first["latency_ms"].is_f64(), "{first:?}");
        assert_eq!(first["org"], "acme");
        assert_eq!(first["principal_kind"], "jwt");
        assert_eq!(first["request_id"], "caller-id-1");
        assert_eq!(lines[2].1["route"], "unmatched");
        assert_eq!(lines[2].1["principal_kind"], "");
        let text = handle.render();
        for want in [
            r#"trailhouse_test_http_requests_total{route="/v1/things/{id}",method="GET",status="2xx"} 2"#,
            r#"trailhouse_test_http_requests_total{route="unmatched",method="GET",status="4xx"} 1"#,
            r#"trailhouse_test_http_request_duration_seconds_bucket{route="/v1/things/{id}",method="GET",status="2xx",le="+Inf"} 2"#,
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }
}
