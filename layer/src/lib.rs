//! A [tower] layer that records every HTTP request a service handles as a
//! Trailhouse audit event.
//!
//! On the request path the layer only copies what it needs (method, URI,
//! route template, allow-listed headers, a size-capped body, the audit
//! context) into a bounded queue with `try_send`: it never waits, and when the
//! queue is full the event is dropped and counted. A background task
//! validates, redacts and publishes the events in batches through any
//! [`EventSink`] — through the ingest API ([`HttpSink`]) or straight to Kafka
//! (`KafkaSink`, with the `kafka` feature) — retrying a failed batch a bounded
//! number of times, with exponential backoff and jitter, with the same event
//! ids.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use trailhouse_layer::{AuditBody, AuditHandle, HttpSink, Recorder, RecorderConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // An org or service key of the ingest service.
//! let sink = HttpSink::new("http://127.0.0.1:9", "thk_example", Duration::from_secs(1))?;
//! let recorder = Recorder::start(
//!     RecorderConfig {
//!         source: Some("billing".into()),
//!         max_attempts: 1,
//!         ..RecorderConfig::default()
//!     },
//!     sink,
//! );
//! let service = ServiceBuilder::new()
//!     .layer(recorder.layer())
//!     .service_fn(|request: Request<AuditBody<Full<Bytes>>>| async move {
//!         // Tell the layer who the request is about.
//!         AuditHandle::from_extensions(request.extensions())
//!             .update(|c| c.org_id = Some("acme".into()));
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!     });
//! let request = Request::get("http://app.test/projects/p-1").body(Full::default())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! // Publishes what is queued (here to an address nothing listens on, so
//! // the one attempt fails and the event is counted as dropped).
//! let stats = recorder.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(stats.recorded, 1);
//! assert_eq!(stats.published + stats.dropped_publish_failed, 1);
//! # Ok(()) }
//! ```
//!
//! With axum (the `axum` feature) add the layer with `Router::layer`, so that
//! the matched route and path parameters are known, serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`, so that the client
//! address is known, and take the [`AuditHandle`] as an extractor:
//!
//! ```no_run
//! # use std::{net::SocketAddr, time::Duration};
//! # use axum::{routing::get, Router};
//! # use trailhouse_layer::{AuditHandle, HttpSink, Recorder, RecorderConfig};
//! # async fn serve(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
//! # let sink = HttpSink::new("http://ingest:8080", "thk_example", Duration::from_secs(10))?;
//! # let recorder = Recorder::start(RecorderConfig::default(), sink);
//! let app = Router::new()
//!     .route("/projects/{id}", get(|audit: AuditHandle| async move {
//!         audit.update(|c| c.org_id = Some("acme".into()));
//!         "ok"
//!     }))
//!     .layer(recorder.layer());
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! recorder.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! * `axum`: reads axum's `MatchedPath`, `RawPathParams` and
//!   `ConnectInfo<SocketAddr>`; makes [`AuditHandle`] an extractor.
//! * `kafka`: `KafkaSink`, which produces Avro single-object messages
//!   straight to Kafka (links librdkafka).
//! * `opentelemetry`: an event's `traceparent` is the current span's
//!   OpenTelemetry context when there is one (otherwise a well-formed
//!   incoming `traceparent` header is passed on).
//!
//! The [`redact`] rules are the ones the ingest service applies too.
//!
//! [tower]: https://docs.rs/tower

mod body;
mod config;
mod context;
mod event;
#[cfg(feature = "kafka")]
pub mod kafka;
mod recorder;
pub mod redact;
mod service;
pub mod sink;
pub mod trace;

pub use body::AuditBody;
pub use config::{metric, RecorderConfig};
pub use context::{AuditContext, AuditHandle};
#[cfg(feature = "kafka")]
pub use kafka::{Compression, KafkaSink, ProducerSettings, QueueDepth};
pub use recorder::{Recorder, Stats, StatsSnapshot};
pub use redact::Redactor;
pub use service::{client_ip, AuditLayer, AuditService};
pub use sink::{Envelope, EventSink, HttpSink, MemorySink, SinkError};
