//! Trailhouse ingest: the HTTP service in front of Kafka.
//!
//! `POST /v1/events` takes one event, a JSON array or NDJSON, authenticates
//! the API key, validates every event (all or nothing), produces each as an
//! Avro single-object message keyed by `org_id`, and answers 202 only after
//! Kafka acknowledged all of them (`acks=all`, idempotent producer).

pub mod api;
pub mod auth;
pub mod layer;
pub mod metrics;
pub mod redact;
pub mod sink;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use trailhouse_common::health::Health;
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_common::serve::{serve_until, spawn_probe};
use trailhouse_common::shutdown::Shutdown;
use trailhouse_schemas::retention::RetentionPolicy;

pub use api::{app, AppState, Limits};
pub use auth::KeyStore;
pub use redact::Redactor;
pub use sink::{Envelope, EventSink, HttpSink, KafkaSink, MemorySink, ProducerSettings};

/// Configuration of the ingest service.
#[derive(Debug, Clone, Args)]
pub struct IngestConfig {
    /// Address to listen on.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Per-org API keys as `org:sha256hex,...` (see `trailhouse-ingest new-key`).
    #[arg(long, env = "TRAILHOUSE_INGEST_KEYS", default_value = "")]
    pub keys: String,
    /// Service keys allowed to write any org, as `name:sha256hex,...`.
    #[arg(long, env = "TRAILHOUSE_INGEST_SERVICE_KEYS", default_value = "")]
    pub service_keys: String,
    #[arg(long, env = "TRAILHOUSE_INGEST_MAX_BODY_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_MAX_BATCH_EVENTS",
        default_value_t = 1000
    )]
    pub max_batch_events: usize,
    /// Kafka compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, env = "TRAILHOUSE_INGEST_COMPRESSION", default_value = "lz4")]
    pub compression: String,
    /// How long an event may wait for Kafka's acknowledgement.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_ACK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub ack_timeout_ms: u64,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "TRAILHOUSE_INGEST_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Redaction rules, e.g. `defaults, mask body:ssn, drop headers:x-debug`
    /// (see the ingest README).
    #[arg(long, env = "TRAILHOUSE_INGEST_REDACT", default_value = "defaults")]
    pub redact: String,
    /// What to do with a `request.body` that is neither JSON nor form data:
    /// `mask` (replace it) or `keep`.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_REDACT_OPAQUE_BODY",
        default_value = "mask"
    )]
    pub redact_opaque_body: String,
    /// Deadline for draining requests and flushing the producer on shutdown.
    /// Retention class (days) of orgs not listed in `retention_orgs`; one of
    /// 7, 30, 90, 180, 365, 730, 1095, 2555.
    #[arg(long, env = "TRAILHOUSE_RETENTION_DEFAULT_DAYS", default_value_t = trailhouse_schemas::retention::DEFAULT_RETENTION_DAYS)]
    pub retention_default_days: u16,
    /// Per-org retention classes: `acme=365,globex=30`.
    #[arg(long, env = "TRAILHOUSE_RETENTION_ORGS", default_value = "")]
    pub retention_orgs: String,
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub shutdown_timeout_secs: u64,
}

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

impl IngestConfig {
    pub fn validate(&self) -> Result<(KeyStore, Redactor, RetentionPolicy), Error> {
        self.kafka
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let keys = KeyStore::parse(&self.keys, &self.service_keys)
            .map_err(|e| Error::Config(e.to_string()))?;
        if keys.is_empty() {
            return Err(Error::Config(
                "no ingest keys configured (TRAILHOUSE_INGEST_KEYS or TRAILHOUSE_INGEST_SERVICE_KEYS)"
                    .into(),
            ));
        }
        if self.request_timeout() <= Duration::from_millis(self.ack_timeout_ms) {
            return Err(Error::Config(
                "request timeout must exceed the ack timeout".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "TRAILHOUSE_INGEST_MAX_IN_FLIGHT must be at least 1".into(),
            ));
        }
        let redactor = Redactor::parse(&self.redact, &self.redact_opaque_body)
            .map_err(|e| Error::Config(e.to_string()))?;
        let retention = RetentionPolicy::parse(self.retention_default_days, &self.retention_orgs)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok((keys, redactor, retention))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms) + Duration::from_secs(5)
    }
}

/// Runs the service on `listener` until `shutdown` fires, then drains:
/// readiness false, stop accepting, finish in-flight requests, flush the producer.
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let (keys, redactor, retention) = config.validate()?;
    let settings = ProducerSettings {
        compression: config.compression.clone(),
        message_timeout: Duration::from_millis(config.ack_timeout_ms),
        ..ProducerSettings::default()
    };
    let sink = KafkaSink::new(&config.kafka, &settings)?;
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
            request_timeout: config.request_timeout(),
            max_in_flight: config.max_in_flight,
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
                let ok =
                    tokio::task::spawn_blocking(move || s.check(Duration::from_secs(2)).is_ok())
                        .await
                        .unwrap_or(false);
                up.store(ok, Ordering::Relaxed);
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
