//! Trailhouse consumer: Kafka → ClickHouse, effectively once.
//!
//! A consumer group member reads Avro events and keeps one open
//! [`batch::Batch`] per assigned partition. A batch is sealed at its row,
//! byte or age limit; its offset range is recorded durably
//! ([`state::StateStore`]) before it is inserted into ClickHouse with a
//! deduplication token derived from that range; inserts run concurrently (up
//! to a limit) and offsets are committed in order after each insert. After a
//! crash or a rebalance, the recorded ranges make the next owner re-form
//! exactly the same batches, so a repeated insert is deduplicated by
//! ClickHouse. Poison messages go to a dead-letter topic. See
//! `docs/ARCHITECTURE.md` for the protocol.
//!
//! Modules:
//! * [`pipeline`]: the protocol itself, with no Kafka in it: messages in,
//!   [`pipeline::CommitRequest`]s out;
//! * [`processor`]: the driver that owns a [`processor::Source`] and applies
//!   what the pipeline returns (commits, hold / pause / resume, revokes);
//! * [`kafka`]: the rdkafka adapter (the source, rebalance callbacks, lag);
//! * ports with a real implementation and a test double: [`writer`]
//!   (ClickHouse inserts), [`state`] (recorded ranges), [`dlq`] (dead
//!   letters); the doubles and an in-memory source are in `testing`;
//! * [`config`], [`retry`] (the one backoff policy), [`backpressure`],
//!   [`batch`], [`storage`] (retention and org deletion), [`metrics`].

pub mod backpressure;
pub mod batch;
pub mod config;
pub mod copies;
pub mod dlq;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod processor;
pub mod retry;
pub mod state;
pub mod storage;
pub mod tenant_sql;
#[cfg(test)]
mod testing;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use trailhouse_common::health::{self, Health};
use trailhouse_common::shutdown::Shutdown;

pub use batch::{Batch, BatchLimits};
pub use config::ConsumerConfig;
pub use dlq::{DeadLetters, KafkaDeadLetters, PoisonGuard};
pub use pipeline::{CommitRequest, Pipeline, PipelineSettings};
pub use state::{ClickHouseState, Range, StateStore};
pub use writer::{ClickHouseWriter, RowWriter, WriteError};

/// Why the consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("giving up on batch {token}: {source}")]
    Insert {
        token: String,
        #[source]
        source: WriteError,
    },
    #[error("consumer state: {0}")]
    State(#[from] state::StateError),
    #[error("{0}")]
    DeadLetter(#[from] dlq::DeadLetterError),
    #[error("stopping on poison messages at partition {partition} offset {offset}: {reason}")]
    Poison {
        partition: i32,
        offset: i64,
        reason: dlq::GuardTripped,
    },
    #[error("insert task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Source(#[from] processor::SourceError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the consumer until `shutdown` fires; then seals and inserts open
/// batches, commits and leaves the group, within the drain deadline.
/// `health_listener` serves health and metrics.
pub async fn run(
    config: ConsumerConfig,
    health_listener: Option<TcpListener>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    config.validate()?;
    let health = Health::new();
    let health_server = health_listener.map(|l| {
        let router = health::router(
            health.clone(),
            trailhouse_common::telemetry::metrics_handle(),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await;
        })
    });
    // Read before joining the group, so the join never waits on this query.
    let layout = trailhouse_common::clickhouse::installed_target(&config.clickhouse.client())
        .await
        .map_err(|e| Error::Config(format!("reading the storage layout: {e}")))?
        .map(|t| t.layout)
        .unwrap_or_default();
    tracing::info!(%layout, "storage layout");
    let writer = ClickHouseWriter::new(
        config.clickhouse.client(),
        Duration::from_secs(config.insert_timeout_secs),
    )
    .with_layout(layout, config.max_partitions_per_insert.get());
    let state = ClickHouseState::new(
        config.clickhouse.client(),
        config.group.clone(),
        config.kafka.topic.clone(),
    );
    let dead_letters =
        KafkaDeadLetters::new(kafka::dead_letter_producer(&config)?, config.dlq_topic());
    let mut pipeline = Pipeline::new(
        Arc::new(writer),
        Arc::new(state),
        Arc::new(dead_letters),
        config.pipeline(),
    );
    metrics::describe();
    let gauges = metrics::PartitionGauges::registered();
    let mut source =
        kafka::KafkaSource::subscribe(&config, pipeline.in_flight_counts(), gauges.clone())?;
    health.set_ready(true);
    tracing::info!(topic = %config.kafka.topic, group = %config.group, "consumer started");
    let settings = processor::DriverSettings {
        pause_after: Duration::from_millis(config.pause_after_ms),
        not_ready_after: Duration::from_secs(config.paused_not_ready_secs),
        broker_not_ready_after: Duration::from_secs(config.broker_not_ready_secs),
        drain_deadline: Duration::from_secs(config.shutdown_timeout_secs),
        gauges,
    };
    let result = processor::run(&mut source, &mut pipeline, &shutdown, &health, settings).await;
    // Inserts still running stop with the pipeline; then the group is left.
    drop(pipeline);
    source.close();
    drop(source);
    shutdown.trigger();
    if let Some(h) = health_server {
        let _ = h.await;
    }
    tracing::info!("consumer stopped");
    result
}
