//! Trailhouse streamer: each tenant's audit log delivered to its own SIEM,
//! webhook or bucket, filtered and masked per stream, replayable from any
//! point, with delivery health the tenant can read.
//!
//! Pure cores: [`spec`] (a stream's definition and its validation),
//! [`filter`] (the native API's filter language), [`mask`], [`encode`]
//! (batches, bodies, signatures, object names) and [`status`]. Ports:
//! [`store`] (stream definitions, statuses and stored events in ClickHouse)
//! and [`deliver`] (destinations), each with a test double. [`shared`] is
//! what the Kafka [`reader`] shares with each stream's [`worker`];
//! [`registry`] starts and stops workers; [`api`] is the Streams API.

pub mod api;
pub mod config;
pub mod deliver;
pub mod encode;
pub mod filter;
pub mod mask;
pub mod metrics;
pub mod reader;
pub mod registry;
pub mod shared;
pub mod spec;
pub mod status;
pub mod store;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use trailhouse_common::health::Health;
use trailhouse_common::http::{json_error_bodies, request_limits};
use trailhouse_common::serve::serve_until;
use trailhouse_common::shutdown::Shutdown;
use trailhouse_query_api::access::{Access, DetailHeaders};

pub use config::StreamerConfig;

use crate::deliver::Destinations;
use crate::registry::Registry;
use crate::shared::Positions;
use crate::store::ClickHouseStreams;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Describes every family and creates the counters at 0.
pub fn describe() {
    trailhouse_common::metrics::describe("trailhouse-streamer", &metrics::families());
}

/// Runs the streamer on `listener` until `shutdown` fires.
pub async fn run(
    config: StreamerConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    config
        .kafka
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    config
        .clickhouse
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    let verifier = config
        .jwt
        .verifier()
        .map_err(|e| Error::Config(e.to_string()))?;
    describe();
    let health = Health::new();
    let store = Arc::new(ClickHouseStreams::new(config.clickhouse.client()));
    let positions = Arc::new(Positions::default());
    let registry = Arc::new(Registry::new(
        Arc::new(Destinations::new()),
        store.clone(),
        positions.clone(),
        config.pace(),
        config.inbox_events,
        config.history_reads,
    ));
    let reader = reader::Reader::subscribe(
        &config.kafka,
        &config.group,
        config.instance_id.as_deref(),
        config.session_timeout_ms,
        positions.clone(),
    )?;
    let stored = reader::StoredWatch::new(&config.kafka, &config.consumer_group)?;
    let api_state = Arc::new(api::ApiState {
        store: store.clone(),
        verifier,
        access: Access::new(config.role_permissions.clone(), DetailHeaders::default()),
        allow: config.allow(),
    });
    let app = api::routes(api_state)
        .fallback(|| async { api::StreamApiError::NotFound })
        .merge(trailhouse_common::health::router(
            health.clone(),
            trailhouse_common::telemetry::metrics_handle(),
        ))
        .layer(axum::middleware::map_response(json_error_bodies))
        .layer(axum::middleware::from_fn(request_limits));

    // Definitions first, so the reader routes to every stream from the start.
    let mut tasks = Vec::new();
    if let Err(e) = registry.refresh().await {
        tracing::warn!(error = %e, "cannot read the streams yet; retrying");
    }
    let refresh = Duration::from_millis(config.refresh_ms.max(100));
    tasks.push(tokio::spawn({
        let (registry, health, shutdown) = (registry.clone(), health.clone(), shutdown.clone());
        async move {
            while !shutdown.is_triggered() {
                let ok = registry.refresh().await;
                if let Err(e) = &ok {
                    tracing::warn!(error = %e, "cannot read the streams");
                }
                health.set_ready(ok.is_ok());
                tokio::time::sleep(refresh).await;
            }
        }
    }));
    let topic = config.kafka.topic.clone();
    let flush = Duration::from_millis(config.flush_ms.max(50));
    let committer = reader.committer();
    let last_commit = committer.clone();
    let reader_task = tokio::spawn(reader.run(registry.clone()));
    tasks.push(tokio::spawn({
        let (registry, positions, shutdown) =
            (registry.clone(), positions.clone(), shutdown.clone());
        let stored = Arc::new(stored);
        async move {
            while !shutdown.is_triggered() {
                tokio::time::sleep(flush).await;
                let s = stored.clone();
                let p = positions.clone();
                let _ = tokio::task::spawn_blocking(move || s.poll(&p)).await;
                match registry.flush().await {
                    Ok(_) => {
                        let holds = registry.holds();
                        committer.commit(&holds, &topic);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot write stream statuses"),
                }
            }
        }
    }));
    tracing::info!(addr = %listener.local_addr()?, group = %config.group, "streamer listening");
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    serve_until(listener, app, shutdown, health, deadline).await;
    if registry.flush().await.is_ok() {
        last_commit.commit(&registry.holds(), &config.kafka.topic);
    }
    reader_task.abort();
    for t in tasks {
        t.abort();
    }
    registry.stop();
    Ok(())
}
