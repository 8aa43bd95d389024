//! A tower [`Layer`](tower::Layer) that records every HTTP request an axum
//! app serves as an audit event.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::get, Router};
//! use trailhouse_ingest::layer::{AuditHandle, Recorder, RecorderConfig};
//! use trailhouse_ingest::HttpSink;
//!
//! let sink = HttpSink::new("http://ingest:8080", "thk_…", std::time::Duration::from_secs(10))?;
//! let recorder = Recorder::start(RecorderConfig::default(), sink);
//! let app: Router = Router::new()
//!     .route("/projects/{id}", get(|audit: AuditHandle| async move {
//!         audit.update(|c| c.org_id = Some("acme".into()));
//!         "ok"
//!     }))
//!     .layer(recorder.layer());
//! // … serve `app` with `into_make_service_with_connect_info::<SocketAddr>()` …
//! recorder.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! On the request path the layer only copies what it needs (method, URI,
//! route template, allow-listed headers, a size-capped body, the audit
//! context) into a bounded queue with `try_send`: it never waits, and when the
//! queue is full the event is dropped and counted. A background task
//! validates, redacts and publishes the events in batches through any
//! [`EventSink`] — straight to Kafka ([`KafkaSink`](crate::KafkaSink)) or
//! through the ingest API ([`HttpSink`](crate::HttpSink)) — retrying a failed
//! batch a bounded number of times with the same event ids.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use http::request::Parts;
use http::{header, HeaderMap, Request, Response};
use http_body_util::BodyExt;
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use trailhouse_common::telemetry::outgoing_traceparent;
use trailhouse_schemas::event::{
    limits, validate, Action, ActionInput, Actor, Auth, EventInput, Request as EventRequest,
    Resource, SystemStamp,
};

use crate::redact::Redactor;
use crate::sink::{Envelope, EventSink, TRACEPARENT};

/// Metric names of the layer.
pub mod metric {
    /// Requests captured into the queue.
    pub const RECORDED: &str = "trailhouse_audit_layer_recorded_total";
    /// Events acknowledged by the sink.
    pub const PUBLISHED: &str = "trailhouse_audit_layer_published_total";
    /// Events lost, by `reason`: `queue_full`, `publish_failed`, `invalid`, `no_org`, `closed`.
    pub const DROPPED: &str = "trailhouse_audit_layer_dropped_total";
}

/// How the layer records requests.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The event's `source` (e.g. the service name).
    pub source: Option<String>,
    /// The org of requests whose audit context does not name one. Requests
    /// with no org at all are not recorded (counted as `no_org`).
    pub default_org: Option<String>,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    /// The client IP is the right-most address not in this list; with an
    /// empty list it is the TCP peer.
    pub trusted_proxies: Vec<IpNet>,
    /// Request headers copied into the event (case-insensitive names).
    pub headers: Vec<String>,
    /// Bodies up to this many bytes (by `Content-Length`) with a JSON, form
    /// or text content type are captured; 0 captures none.
    pub max_body_bytes: usize,
    /// Paths (prefixes) that are not recorded, e.g. health checks.
    pub skip_paths: Vec<String>,
    /// Applied before events leave the process.
    pub redactor: Redactor,
    /// Events waiting to be published; beyond it they are dropped.
    pub queue_capacity: usize,
    /// Events per published batch.
    pub batch_size: usize,
    /// How often the background task collects queued events.
    pub linger: Duration,
    /// Attempts per batch before its events are dropped as `publish_failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to 5 s.
    pub retry_backoff: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            source: None,
            default_org: None,
            trusted_proxies: Vec::new(),
            headers: [
                "user-agent",
                "content-type",
                "accept",
                "x-request-id",
                "referer",
            ]
            .map(String::from)
            .to_vec(),
            max_body_bytes: 16 * 1024,
            skip_paths: vec!["/health".into(), "/metrics".into()],
            redactor: Redactor::default(),
            queue_capacity: 10_000,
            batch_size: 500,
            linger: Duration::from_millis(20),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// Who and what a request is about, filled by the app: by an auth
/// middleware outside the layer (insert it into the request's extensions) or
/// through the [`AuditHandle`] inside it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditContext {
    pub org_id: Option<String>,
    pub environment_id: Option<String>,
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub actor: Actor,
    pub auth: Auth,
    /// Replaces the default `http.<method>` action.
    pub action: Option<Action>,
    /// Replaces the default resource (the matched route).
    pub resource: Option<Resource>,
    pub metadata: BTreeMap<String, String>,
    /// Set to leave this request out of the audit log.
    pub skip: bool,
}

/// The audit context of the current request, shared between the layer and
/// the handlers. Take it as an extractor; without the layer it is a detached
/// context that nothing reads.
#[derive(Debug, Clone, Default)]
pub struct AuditHandle(Arc<Mutex<AuditContext>>);

impl AuditHandle {
    /// Changes the context.
    pub fn update(&self, f: impl FnOnce(&mut AuditContext)) {
        if let Ok(mut c) = self.0.lock() {
            f(&mut c);
        }
    }

    fn snapshot(&self) -> AuditContext {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditHandle {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<AuditHandle>()
            .cloned()
            .unwrap_or_default())
    }
}

/// What the layer has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    pub recorded: AtomicU64,
    pub published: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_publish_failed: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub skipped_no_org: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub recorded: u64,
    pub published: u64,
    pub dropped_queue_full: u64,
    pub dropped_publish_failed: u64,
    pub dropped_invalid: u64,
    pub skipped_no_org: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            recorded: get(&self.recorded),
            published: get(&self.published),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_publish_failed: get(&self.dropped_publish_failed),
            dropped_invalid: get(&self.dropped_invalid),
            skipped_no_org: get(&self.skipped_no_org),
        }
    }
}

fn dropped(stat: &AtomicU64, reason: &'static str, n: u64) {
    stat.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(metric::DROPPED, "reason" => reason).increment(n);
}

/// What the request path hands to the background task: raw copies, turned
/// into an event (validated, redacted) off the request path.
#[derive(Debug)]
struct Captured {
    at: DateTime<Utc>,
    context: AuditContext,
    method: String,
    url: String,
    path: String,
    route: Option<String>,
    status: Option<u16>,
    duration: Duration,
    ip: Option<IpAddr>,
    query: Option<String>,
    path_params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    auth_scheme: Option<String>,
    user_agent: Option<String>,
    body: Option<String>,
    traceparent: Option<String>,
}

/// Owns the queue and the publishing task; hands out layers.
pub struct Recorder {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    config: RecorderConfig,
    tx: mpsc::Sender<Captured>,
    stats: Arc<Stats>,
}

impl Recorder {
    /// Starts the publishing task on the current tokio runtime.
    pub fn start<S: EventSink>(config: RecorderConfig, sink: S) -> Recorder {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(publish_loop(
            rx,
            stop_rx,
            sink,
            config.clone(),
            stats.clone(),
        ));
        Recorder {
            shared: Arc::new(Shared { config, tx, stats }),
            stop: Mutex::new(Some(stop_tx)),
            task: Mutex::new(Some(task)),
        }
    }

    /// A layer feeding this recorder; add it with `Router::layer` so that the
    /// matched route and path parameters are known.
    pub fn layer(&self) -> AuditLayer {
        AuditLayer {
            shared: self.shared.clone(),
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Publishes what is queued, then stops, waiting at most `deadline`.
    /// Requests recorded afterwards are dropped (counted as queue-full).
    pub async fn shutdown(&self, deadline: Duration) -> StatsSnapshot {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!("audit events still queued at the shutdown deadline were dropped");
            }
        }
        self.stats()
    }
}

/// Drains the queue every `linger` (without ever registering a waker, so
/// the request path's `try_send` never has to wake this task) and publishes
/// what it finds in batches; on stop, publishes everything queued and ends.
async fn publish_loop<S: EventSink>(
    mut rx: mpsc::Receiver<Captured>,
    mut stop: oneshot::Receiver<()>,
    sink: S,
    config: RecorderConfig,
    stats: Arc<Stats>,
) {
    let mut tick = tokio::time::interval(config.linger.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => stopping = true,
            }
        }
        loop {
            let mut batch = Vec::with_capacity(config.batch_size.min(1024));
            while batch.len() < config.batch_size {
                match rx.try_recv() {
                    Ok(c) => batch.extend(to_envelope(c, &config, &stats)),
                    Err(_) => break,
                }
            }
            let full = batch.len() >= config.batch_size;
            publish_with_retries(&sink, &batch, &config, &stats).await;
            if !full {
                break;
            }
        }
        if stopping {
            rx.close();
            // Whatever raced in before the close.
            let rest: Vec<Envelope> = std::iter::from_fn(|| rx.try_recv().ok())
                .filter_map(|c| to_envelope(c, &config, &stats))
                .collect();
            for chunk in rest.chunks(config.batch_size.max(1)) {
                publish_with_retries(&sink, chunk, &config, &stats).await;
            }
            return;
        }
    }
}

async fn publish_with_retries<S: EventSink>(
    sink: &S,
    batch: &[Envelope],
    config: &RecorderConfig,
    stats: &Stats,
) {
    if batch.is_empty() {
        return;
    }
    let mut delay = config.retry_backoff;
    for attempt in 1..=config.max_attempts.max(1) {
        match sink.publish(batch).await {
            Ok(()) => {
                stats
                    .published
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                metrics::counter!(metric::PUBLISHED).increment(batch.len() as u64);
                return;
            }
            Err(e) if e.is_retryable() && attempt < config.max_attempts => {
                tracing::warn!(error = %e, attempt, "audit batch not published; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit batch dropped");
                break;
            }
        }
    }
    dropped(
        &stats.dropped_publish_failed,
        "publish_failed",
        batch.len() as u64,
    );
}

/// Cuts `s` to at most `max` characters.
fn clip(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

/// Turns a captured request into a validated, redacted event.
fn to_envelope(c: Captured, config: &RecorderConfig, stats: &Stats) -> Option<Envelope> {
    let ctx = c.context;
    let Some(org_id) = ctx.org_id.or_else(|| config.default_org.clone()) else {
        dropped(&stats.skipped_no_org, "no_org", 1);
        return None;
    };
    let method = c.method;
    let action = ctx.action.unwrap_or_else(|| Action {
        kind: format!("http.{}", method.to_ascii_lowercase()),
        description: Some(format!(
            "{method} {}",
            c.route.as_deref().unwrap_or(c.path.as_str())
        )),
    });
    let resource = ctx.resource.unwrap_or_else(|| Resource {
        kind: c.route.as_ref().map(|_| "route".to_string()),
        id: c.route.clone(),
        name: None,
    });
    let mut auth = ctx.auth;
    if auth.kind.is_none() {
        auth.kind = c.auth_scheme;
    }
    let query = c.query.map(|q| {
        let mut map = serde_json::Map::new();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = serde_json::Value::String(v.into_owned());
            match map.get_mut(k.as_ref()) {
                Some(serde_json::Value::Array(items)) => items.push(v),
                Some(first) => *first = serde_json::Value::Array(vec![first.take(), v]),
                None => {
                    map.insert(k.into_owned(), v);
                }
            }
        }
        map
    });
    let mut request = EventRequest {
        method: Some(method),
        url: Some(clip(c.url, limits::URL_LEN)),
        path: Some(clip(c.path, limits::URL_LEN)),
        status: c.status,
        duration_ms: Some(c.duration.as_secs_f64() * 1000.0),
        ip: c.ip.map(|ip| ip.to_string()),
        user_agent: c.user_agent.map(|ua| clip(ua, limits::TEXT_LEN)),
        query: query
            .filter(|q| serde_json::to_string(q).map_or(0, |s| s.len()) <= limits::QUERY_LEN),
        path_params: c
            .path_params
            .into_iter()
            .take(limits::MAP_ENTRIES)
            .map(|(k, v)| (k, clip(v, limits::MAP_VALUE_LEN)))
            .collect(),
        headers: c
            .headers
            .into_iter()
            .take(limits::MAP_ENTRIES)
            .map(|(k, v)| (k, clip(v, limits::MAP_VALUE_LEN)))
            .collect(),
        body: c.body,
    };
    config.redactor.apply_request(&mut request);
    let input = EventInput {
        org_id: Some(org_id),
        environment_id: ctx.environment_id,
        workspace_id: ctx.workspace_id,
        workspace_name: ctx.workspace_name,
        created_at: Some(trailhouse_schemas::event::format_timestamp(&c.at)),
        actor: Some(ctx.actor),
        auth: Some(auth),
        source: config.source.clone(),
        action: Some(ActionInput {
            kind: Some(action.kind),
            description: action.description,
        }),
        resource: Some(resource),
        request: Some(request),
        metadata: Some(ctx.metadata),
        ..EventInput::default()
    };
    match validate(input, &SystemStamp) {
        Ok(event) => Some(Envelope {
            event,
            traceparent: c.traceparent.map(Arc::from),
        }),
        Err(errors) => {
            let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
            tracing::warn!(errors = ?reasons, "audit event invalid; dropped");
            dropped(&stats.dropped_invalid, "invalid", 1);
            None
        }
    }
}

/// The layer; see [`Recorder::layer`].
#[derive(Clone)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

impl<S> tower::Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around each route.
#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> tower::Service<Request<Body>> for AuditService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
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
            return Box::pin(inner.call(request));
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
                    AuditHandle(Arc::new(Mutex::new(ctx)))
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

/// Copies the request's facts out of its head.
async fn capture(parts: &mut Parts, config: &RecorderConfig, at: DateTime<Utc>) -> Captured {
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
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
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
async fn capture_body(headers: &HeaderMap, body: Body, max: usize) -> (Body, Option<String>) {
    let length =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    match length {
        Some(len) if len > 0 && len <= max && textual(headers) => {}
        _ => return (body, None),
    }
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let text = std::str::from_utf8(&bytes).ok().map(str::to_string);
            (Body::from(bytes), text)
        }
        Err(e) => {
            // Hand the failure on: the handler reports it as it would have.
            let stream = futures::stream::once(async move { Err::<axum::body::Bytes, _>(e) });
            (Body::from_stream(stream), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;
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
        let e = &envelopes[0].event;
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
            envelopes[0].traceparent.as_deref(),
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
