//! Trailhouse ingest: the HTTP service in front of Kafka.
//!
//! `POST /v1/events` takes one event, a JSON array or NDJSON, authenticates
//! the API key, validates every event (all or nothing), produces each as an
//! Avro single-object message keyed by `org_id`, and answers 202 only after
//! Kafka acknowledged all of them (`acks=all`, idempotent producer).

pub mod api;
pub mod auth;
pub mod config;
pub mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use trailhouse_common::health::Health;
use trailhouse_common::serve::{serve_until, spawn_probe};
use trailhouse_common::shutdown::Shutdown;

pub use api::{app, AppState, Limits};
pub use auth::KeyStore;
pub use config::IngestConfig;
/// The redaction rules, shared with the audit layer.
pub use trailhouse_layer::redact;
/// The port through which events leave the service, shared with the audit layer.
pub use trailhouse_layer::sink;
pub use trailhouse_layer::{
    Envelope, EventSink, KafkaSink, MemorySink, ProducerSettings, Redactor, SinkError,
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the service on `listener` until `shutdown` fires, then drains:
/// readiness false, stop accepting, finish in-flight requests, flush the producer.
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    config.validate()?;
    let (keys, redactor, retention) = (config.key_store(), config.redactor(), config.retention()?);
    let settings = ProducerSettings {
        compression: config.compression,
        message_timeout: Duration::from_millis(config.ack_timeout_ms),
        max_message_bytes: config.max_message_bytes,
        ..ProducerSettings::default()
    };
    let sink = KafkaSink::new(config.kafka.client_config(), &config.kafka.topic, &settings)?;
    let health = Health::new();
    let broker_up = Arc::new(AtomicBool::new(false));
    match sink.check(Duration::from_secs(10)) {
        Ok(()) => {
            health.set_ready(true);
            broker_up.store(true, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "kafka not reachable at startup; not ready until it is")
        }
    }
    let state = Arc::new(AppState {
        sink: sink.clone(),
        keys,
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_batch_events: config.max_batch_events,
            max_message_bytes: config.max_message_bytes,
            max_backfill_days: config.max_backfill_days,
            request_timeout: config.request_timeout(),
            max_in_flight: config.max_in_flight,
            rate_limit: Arc::new(trailhouse_common::ratelimit::OrgRateLimiter::new(
                config.rate_limit,
                &config.rate_limit_overrides,
            )),
        },
        health: health.clone(),
        broker_up: broker_up.clone(),
        redactor,
        retention,
    });
    // Readiness follows the broker; while the broker is down, posts are
    // refused at once, so the probe runs often enough to make that short.
    let probe = spawn_probe(health.clone(), shutdown.clone(), Duration::from_secs(1), {
        let sink = sink.clone();
        move || {
            let (s, up) = (sink.clone(), broker_up.clone());
            async move {
                let queue = s.queue();
                ::metrics::gauge!(metrics::QUEUE_MESSAGES).set(queue.messages as f64);
                ::metrics::gauge!(metrics::QUEUE_BYTES).set(queue.bytes as f64);
                let ok =
                    tokio::task::spawn_blocking(move || s.check(Duration::from_secs(2)).is_ok())
                        .await
                        .unwrap_or(false);
                up.store(ok, Ordering::Relaxed);
                ::metrics::gauge!(metrics::BROKER_UP).set(if ok { 1.0 } else { 0.0 });
                ok
            }
        }
    });
    tracing::info!(addr = %listener.local_addr()?, topic = %config.kafka.topic, "ingest listening");
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    serve_until(listener, app(state), shutdown, health, deadline).await;
    probe.abort();
    let flush_sink = sink.clone();
    match tokio::task::spawn_blocking(move || flush_sink.flush(deadline)).await {
        Ok(Ok(())) => tracing::info!("producer flushed"),
        Ok(Err(e)) => tracing::error!(error = %e, "producer flush incomplete"),
        Err(e) => tracing::error!(error = %e, "flush task failed"),
    }
    Ok(())
}
