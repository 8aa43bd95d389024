//! What the API tests share: a state with a memory sink, and requests.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use http::Request;
use tower::ServiceExt;
use trailhouse_common::health::Health;
use trailhouse_schemas::retention::RetentionPolicy;

use super::{app, AppState, Limits};
use crate::auth::{hash_key, KeyStore};
use crate::{MemorySink, Redactor};

pub(crate) fn state() -> (Arc<AppState<MemorySink>>, MemorySink) {
    state_with(|_| {})
}

/// [`state`] with its limits adjusted.
pub(crate) fn state_with(
    adjust: impl FnOnce(&mut Limits),
) -> (Arc<AppState<MemorySink>>, MemorySink) {
    let sink = MemorySink::default();
    let keys = KeyStore::parse(
        &format!("acme:{}", hash_key("acme-key")),
        &format!("gw:{}", hash_key("gw-key")),
    )
    .expect("keys");
    let limits = Limits {
        max_body_bytes: 4096,
        max_batch_events: 3,
        max_message_bytes: 1_000_000,
        ..Limits::default()
    };
    let mut limits = limits;
    adjust(&mut limits);
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

pub(crate) async fn post(
    s: &Arc<AppState<MemorySink>>,
    key: Option<&str>,
    ctype: &str,
    body: String,
) -> (StatusCode, serde_json::Value) {
    post_to(s, "/v1/events", key, ctype, body).await
}

pub(crate) async fn post_to(
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

pub(crate) const EV: &str = r#"{"org_id":"acme","action":{"type":"user.login"}}"#;
