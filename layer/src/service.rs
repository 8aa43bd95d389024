//! The request path: [`AuditLayer`] and [`AuditService`] copy what an event
//! needs out of each request and hand it to the recorder's queue.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::{header, HeaderMap, Request, Response};
use http_body_util::BodyExt;
use ipnet::IpNet;
use tokio::sync::mpsc;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::AuditBody;
use crate::config::{metric, RecorderConfig};
use crate::context::{AuditContext, AuditHandle};
use crate::event::Captured;
use crate::recorder::{dropped, Shared};
use crate::sink::TRACEPARENT;
use crate::trace::outgoing_traceparent;

/// The layer; see [`Recorder::layer`](crate::Recorder::layer).
#[derive(Clone)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

impl AuditLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> AuditLayer {
        AuditLayer { shared }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around another. It takes requests with any
/// body and passes them on with an [`AuditBody`] around it.
#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, ResBody> Service<Request<B>> for AuditService<S>
where
    S: Service<Request<AuditBody<B>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let path = request.uri().path();
        if shared
            .config
            .skip_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return Box::pin(inner.call(request.map(AuditBody::streaming)));
        }
        Box::pin(async move {
            let started = Instant::now();
            let at = Utc::now();
            let (mut parts, body) = request.into_parts();
            let handle = parts
                .extensions
                .get::<AuditHandle>()
                .cloned()
                .unwrap_or_else(|| {
                    let ctx = parts
                        .extensions
                        .get::<AuditContext>()
                        .cloned()
                        .unwrap_or_default();
                    AuditHandle::new(ctx)
                });
            parts.extensions.insert(handle.clone());
            let mut captured = capture(&mut parts, &shared.config, at).await;
            let (body, text) =
                capture_body(&parts.headers, body, shared.config.max_body_bytes).await;
            captured.body = text;
            let result = inner.call(Request::from_parts(parts, body)).await;
            captured.duration = started.elapsed();
            captured.status = result.as_ref().ok().map(|r| r.status().as_u16());
            captured.context = handle.snapshot();
            if !captured.context.skip {
                enqueue(&shared, captured);
            }
            result
        })
    }
}

fn enqueue(shared: &Shared, captured: Captured) {
    match shared.tx.try_send(captured) {
        Ok(()) => {
            shared.stats.recorded.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(metric::RECORDED).increment(1);
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped(&shared.stats.dropped_queue_full, "queue_full", 1)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            dropped(&shared.stats.dropped_queue_full, "closed", 1)
        }
    }
}

/// What the router knows about the request: the matched route template,
/// the path parameters and the TCP peer (axum's `MatchedPath`,
/// `RawPathParams` and `ConnectInfo<SocketAddr>`).
#[cfg(feature = "axum")]
async fn routing(parts: &mut Parts) -> (Option<String>, Vec<(String, String)>, Option<IpAddr>) {
    use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams};
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let path_params = match RawPathParams::from_request_parts(parts, &()).await {
        Ok(params) => params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    (route, path_params, peer)
}

/// Without axum nothing names the route, its parameters or the peer.
#[cfg(not(feature = "axum"))]
async fn routing(_: &mut Parts) -> (Option<String>, Vec<(String, String)>, Option<IpAddr>) {
    (None, Vec::new(), None)
}

/// Copies the request's facts out of its head.
async fn capture(parts: &mut Parts, config: &RecorderConfig, at: DateTime<Utc>) -> Captured {
    let (route, path_params, peer) = routing(parts).await;
    let trusted_peer = peer.is_some_and(|p| trusted(&config.trusted_proxies, p));
    let ip = client_ip(peer, &parts.headers, &config.trusted_proxies);
    let scheme = parts
        .uri
        .scheme_str()
        .map(str::to_string)
        .or_else(|| {
            trusted_peer
                .then(|| header_str(&parts.headers, "x-forwarded-proto"))
                .flatten()
                .map(|p| p.split(',').next().unwrap_or("").trim().to_string())
                .filter(|p| p == "http" || p == "https")
        })
        .unwrap_or_else(|| "http".to_string());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let url = match parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header_str(&parts.headers, "host"))
    {
        Some(host) => format!("{scheme}://{host}{path_and_query}"),
        None => path_and_query,
    };
    let headers = config
        .headers
        .iter()
        .filter_map(|name| {
            header_str(&parts.headers, name).map(|v| (name.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let auth_scheme = header_str(&parts.headers, "authorization")
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .filter(|s| s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .or_else(|| {
            parts
                .headers
                .contains_key("x-api-key")
                .then(|| "api_key".into())
        });
    let traceparent = outgoing_traceparent(
        &tracing::Span::current(),
        header_str(&parts.headers, TRACEPARENT),
    );
    Captured {
        at,
        context: AuditContext::default(),
        method: parts.method.as_str().to_string(),
        url,
        path: parts.uri.path().to_string(),
        route,
        status: None,
        duration: Duration::ZERO,
        ip,
        query: parts.uri.query().map(str::to_string),
        path_params,
        headers,
        auth_scheme,
        user_agent: header_str(&parts.headers, "user-agent").map(str::to_string),
        body: None,
        traceparent,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client address: the TCP peer, unless the peer is a trusted proxy;
/// then the right-most `X-Forwarded-For` entry that is not a trusted proxy
/// (entries left of it could be forged by the client).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted(proxies, peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|s| s.parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let mut client = peer;
    for ip in forwarded.into_iter().rev() {
        client = ip;
        if !trusted(proxies, ip) {
            break;
        }
    }
    Some(client)
}

/// Whether a body of this content type is worth recording as text.
fn textual(headers: &HeaderMap) -> bool {
    let ct = header_str(headers, "content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    ct.starts_with("application/json")
        || ct.starts_with("application/x-www-form-urlencoded")
        || ct.starts_with("text/")
        || (ct.starts_with("application/") && ct.contains("+json"))
}

/// Reads a small textual body so it can be both recorded and passed on.
/// Anything else (too large, unknown length, binary) streams through untouched.
async fn capture_body<B>(headers: &HeaderMap, body: B, max: usize) -> (AuditBody<B>, Option<String>)
where
    B: http_body::Body<Data = Bytes>,
{
    let length =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    match length {
        Some(len) if len > 0 && len <= max && textual(headers) => {}
        _ => return (AuditBody::streaming(body), None),
    }
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let text = std::str::from_utf8(&bytes).ok().map(str::to_string);
            (AuditBody::buffered(bytes), text)
        }
        // Hand the failure on: the service reports it as it would have.
        Err(e) => (AuditBody::failed(e), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;
    use crate::{Recorder, RecorderConfig};
    use axum::body::Body;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().expect("net")).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("header"));
        h
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().expect("ip");
        let proxies = nets(&["10.0.0.0/8"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        // Untrusted peer: its header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff("1.1.1.1"), &proxies),
            ip("203.0.113.9")
        );
        // Trusted peer: right-most untrusted entry, forged left entries ignored.
        assert_eq!(
            client_ip(
                Some(peer),
                &xff("6.6.6.6, 198.51.100.7, 10.1.2.3"),
                &proxies
            ),
            ip("198.51.100.7")
        );
        // Everything trusted: the left-most entry.
        assert_eq!(
            client_ip(Some(peer), &xff("10.9.9.9"), &proxies),
            ip("10.9.9.9")
        );
        // Garbage header: the peer.
        assert_eq!(
            client_ip(Some(peer), &xff("nonsense"), &proxies),
            Some(peer)
        );
        assert_eq!(client_ip(Some(peer), &HeaderMap::new(), &[]), Some(peer));
        assert_eq!(client_ip(None, &xff("1.1.1.1"), &proxies), None);
    }

    async fn handler(audit: AuditHandle, body: String) -> (http::StatusCode, String) {
        audit.update(|c| {
            c.org_id = Some("acme".into());
            c.actor.id = Some("u-1".into());
            c.auth.account_id = Some("acct-9".into());
        });
        (http::StatusCode::CREATED, format!("echo:{body}"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_a_request_with_route_params_body_and_context() {
        let sink = MemorySink::default();
        let recorder = Recorder::start(
            RecorderConfig {
                source: Some("billing".into()),
                headers: vec!["content-type".into()],
                ..RecorderConfig::default()
            },
            sink.clone(),
        );
        let app = Router::new()
            .route("/projects/{project}/members/{member}", post(handler))
            .route("/health/live", get(|| async { "ok" }))
            .layer(recorder.layer());
        let body = r#"{"name":"x","password":"hunter2"}"#;
        let request = Request::post("/projects/p-1/members/m-2?tab=a&tab=b&token=zzz")
            .header("host", "app.test")
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string())
            .header("authorization", "Bearer abc.def")
            .header("user-agent", "curl/8")
            .header("cookie", "sid=1")
            .header(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(Body::from(body))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), http::StatusCode::CREATED);
        let text = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            &text[..],
            format!("echo:{body}").as_bytes(),
            "body passed on intact"
        );
        let health = Request::get("/health/live")
            .body(Body::empty())
            .expect("req");
        app.oneshot(health).await.expect("health");
        let stats = recorder.shutdown(Duration::from_secs(5)).await;
        assert_eq!(stats.published, 1, "{stats:?}");
        let envelopes = sink.envelopes();
        let e = envelopes[0].event();
        assert_eq!(e.org_id, "acme");
        assert_eq!(e.source.as_deref(), Some("billing"));
        assert_eq!(e.action.kind, "http.post");
        assert_eq!(
            e.action.description.as_deref(),
            Some("POST /projects/{project}/members/{member}")
        );
        assert_eq!(
            e.resource.id.as_deref(),
            Some("/projects/{project}/members/{member}")
        );
        assert_eq!(e.actor.id.as_deref(), Some("u-1"));
        assert_eq!(e.auth.kind.as_deref(), Some("bearer"));
        assert_eq!(e.auth.account_id.as_deref(), Some("acct-9"));
        assert_eq!(e.request.status, Some(201));
        assert_eq!(e.request.path.as_deref(), Some("/projects/p-1/members/m-2"));
        assert_eq!(
            e.request.url.as_deref(),
            Some("http://app.test/projects/p-1/members/m-2?tab=a&tab=b&token=%5BREDACTED%5D")
        );
        assert_eq!(e.request.path_params["project"], "p-1");
        assert_eq!(e.request.path_params["member"], "m-2");
        let query = e.request.query.clone().unwrap_or_default();
        assert_eq!(query["tab"], serde_json::json!(["a", "b"]));
        assert_eq!(query["token"], serde_json::json!(crate::redact::MASK));
        assert_eq!(e.request.user_agent.as_deref(), Some("curl/8"));
        assert!(
            !e.request.headers.contains_key("cookie"),
            "not allow-listed"
        );
        assert!(!e.request.headers.contains_key("authorization"));
        let recorded: serde_json::Value =
            serde_json::from_str(e.request.body.as_deref().unwrap_or("")).expect("json body");
        assert_eq!(recorded["password"], crate::redact::MASK);
        assert_eq!(recorded["name"], "x");
        assert!(e.request.duration_ms.is_some());
        assert_eq!(
            envelopes[0].traceparent(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let sink = MemorySink::default();
        sink.fail_with_queue_full.store(true, Ordering::Relaxed);
        let recorder = Recorder::start(
            RecorderConfig {
                default_org: Some("acme".into()),
                queue_capacity: 2,
                batch_size: 1,
                max_attempts: 2,
                retry_backoff: Duration::from_millis(300),
                ..RecorderConfig::default()
            },
            sink.clone(),
        );
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(recorder.layer());
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let r = app
                .clone()
                .oneshot(Request::get("/x").body(Body::empty()).expect("req"))
                .await
                .expect("response");
            statuses.push(r.status());
        }
        assert!(
            statuses.iter().all(|s| *s == http::StatusCode::OK),
            "requests never fail"
        );
        let stats = recorder.shutdown(Duration::from_secs(10)).await;
        assert!(stats.dropped_queue_full > 0, "{stats:?}");
        assert_eq!(stats.recorded + stats.dropped_queue_full, 20, "{stats:?}");
        assert_eq!(stats.dropped_publish_failed, stats.recorded, "{stats:?}");
        assert_eq!(stats.published, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_without_an_org_or_marked_skip_are_not_published() {
        let sink = MemorySink::default();
        let recorder = Recorder::start(RecorderConfig::default(), sink.clone());
        let app = Router::new()
            .route("/anon", get(|| async { "ok" }))
            .route(
                "/quiet",
                get(|a: AuditHandle| async move {
                    a.update(|c| {
                        c.org_id = Some("acme".into());
                        c.skip = true;
                    });
                    "ok"
                }),
            )
            .layer(recorder.layer());
        for path in ["/anon", "/quiet"] {
            app.clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("req"))
                .await
                .expect("response");
        }
        let stats = recorder.shutdown(Duration::from_secs(5)).await;
        assert_eq!(stats.skipped_no_org, 1, "{stats:?}");
        assert_eq!(stats.recorded, 1, "{stats:?}");
        assert!(sink.taken().is_empty());
    }
}
