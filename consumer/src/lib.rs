//! Trailhouse consumer: Kafka → ClickHouse.
//!
//! A consumer group member reads Avro events, keeps one [`batch::Batch`] per
//! assigned partition, and flushes a batch when it reaches its row, byte or
//! age limit: insert into ClickHouse with a deduplication token derived from
//! the partition's offset range, retry transient failures with the same
//! token, and only then commit the offset after the batch. See
//! `docs/ARCHITECTURE.md` for the delivery guarantees.

pub mod batch;
pub mod metrics;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::net::TcpListener;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::health::{self, Health};
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_common::shutdown::Shutdown;
use trailhouse_schemas::{EventRow, Lineage};

pub use batch::{Batch, BatchLimits};
pub use writer::{ClickHouseWriter, RowWriter, WriteError};

/// Configuration of the consumer.
#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_GROUP",
        default_value = "trailhouse-consumer"
    )]
    pub group: String,
    /// Static membership id for rolling deploys (e.g. the pod name).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Address of the health and metrics endpoints.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: std::net::SocketAddr,
    #[arg(long, env = "TRAILHOUSE_CONSUMER_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,
    #[arg(long, env = "TRAILHOUSE_CONSUMER_BATCH_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub batch_bytes: usize,
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_BATCH_AGE_MS",
        default_value_t = 1_000
    )]
    pub batch_age_ms: u64,
    /// Per-attempt insert timeout.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_INSERT_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub insert_timeout_secs: u64,
    /// How long a batch is retried before the consumer gives up and exits
    /// (uncommitted, so nothing is lost). Keep it well inside the table's
    /// deduplication window.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_RETRY_HORIZON_SECS",
        default_value_t = 300
    )]
    pub retry_horizon_secs: u64,
    #[arg(long, env = "TRAILHOUSE_CONSUMER_TABLE", default_value = "events")]
    pub table: String,
    /// How long the drain on shutdown (flush open batches, commit) may take.
    /// Past it the consumer exits without committing what is still open;
    /// those messages are read again by the next owner of the partitions.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub shutdown_timeout_secs: u64,
}

impl ConsumerConfig {
    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_rows: self.batch_rows,
            max_bytes: self.batch_bytes,
            max_age: Duration::from_millis(self.batch_age_ms),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.kafka
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        self.clickhouse
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if self.batch_rows == 0 || self.batch_bytes == 0 {
            return Err(Error::Config("batch limits must be positive".into()));
        }
        if !trailhouse_common::clickhouse::is_safe_identifier(&self.table) {
            return Err(Error::Config(format!(
                "invalid table name {:?}",
                self.table
            )));
        }
        Ok(())
    }
}

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
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Records partitions revoked by a rebalance so the loop can drop their batches.
#[derive(Default)]
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Ok(mut r) = self.revoked.lock() {
                r.extend(tpl.elements().iter().map(|e| e.partition()));
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }
}

impl RebalanceContext {
    fn take_revoked(&self) -> Vec<i32> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Inserts a batch, retrying transient failures with exponential backoff and
/// jitter and the same deduplication token, until `horizon` has passed.
pub async fn insert_with_retry<W: RowWriter>(
    writer: &W,
    batch: &Batch,
    token: &str,
    horizon: Duration,
) -> Result<(), WriteError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match writer.insert(&batch.rows, token).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && started.elapsed() + delay < horizon => {
                ::metrics::counter!(metrics::INSERT_RETRIES).increment(1);
                tracing::warn!(error = %e, token, retry_in_ms = delay.as_millis() as u64, "insert failed, retrying");
                let jitter = rand::random_range(0..=delay.as_millis() as u64 / 2);
                tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

struct Loop<W> {
    consumer: StreamConsumer<RebalanceContext>,
    writer: W,
    topic: String,
    limits: BatchLimits,
    horizon: Duration,
    batches: BTreeMap<i32, Batch>,
}

impl<W: RowWriter> Loop<W> {
    fn accept(&mut self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        let now = Instant::now();
        // A batch must cover a contiguous, increasing offset range; a message
        // at or before its end means the partition was re-seeked, so the old
        // batch is stale (it was never committed and will be re-read).
        if let Some(b) = self.batches.get(&partition) {
            if b.len_offsets() > 0 && offset <= b.last_offset {
                tracing::warn!(
                    partition,
                    offset,
                    last = b.last_offset,
                    "partition rewound, dropping unsent batch"
                );
                self.batches.remove(&partition);
            }
        }
        let batch = self
            .batches
            .entry(partition)
            .or_insert_with(|| Batch::new(partition, offset, now));
        let bytes = payload.map_or(0, <[u8]>::len);
        let row = match payload.map(trailhouse_schemas::decode) {
            Some(Ok(event)) => Some(EventRow::from_event(&event, Lineage { partition, offset })),
            Some(Err(e)) => {
                ::metrics::counter!(metrics::UNDECODABLE).increment(1);
                tracing::error!(partition, offset, error = %e, "undecodable message skipped");
                None
            }
            None => {
                ::metrics::counter!(metrics::UNDECODABLE).increment(1);
                tracing::error!(partition, offset, "message without payload skipped");
                None
            }
        };
        batch.push(offset, row, bytes);
    }

    fn drop_revoked(&mut self, revoked: Vec<i32>) {
        for p in revoked {
            if let Some(b) = self.batches.remove(&p) {
                ::metrics::counter!(metrics::BATCHES_DROPPED).increment(1);
                tracing::info!(
                    partition = p,
                    first = b.first_offset,
                    last = b.last_offset,
                    "dropped unsent batch of revoked partition"
                );
            }
        }
    }

    /// Flushes the batches that are full or due (all of them when `all`).
    async fn flush(&mut self, all: bool) -> Result<(), Error> {
        let now = Instant::now();
        let ready: Vec<i32> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                b.len_offsets() > 0
                    && (all || b.is_full(&self.limits) || b.is_due(&self.limits, now))
            })
            .map(|(p, _)| *p)
            .collect();
        for p in ready {
            let Some(batch) = self.batches.remove(&p) else {
                continue;
            };
            self.flush_one(batch).await?;
        }
        Ok(())
    }

    async fn flush_one(&mut self, batch: Batch) -> Result<(), Error> {
        let token = batch.dedup_token(&self.topic);
        let span = tracing::info_span!("batch", topic = %self.topic, partition = batch.partition,
            first_offset = batch.first_offset, last_offset = batch.last_offset, rows = batch.rows.len());
        let _enter = span.enter();
        if !batch.rows.is_empty() {
            let started = Instant::now();
            insert_with_retry(&self.writer, &batch, &token, self.horizon)
                .await
                .map_err(|source| Error::Insert {
                    token: token.clone(),
                    source,
                })?;
            ::metrics::histogram!(metrics::INSERT_SECONDS).record(started.elapsed().as_secs_f64());
            ::metrics::histogram!(metrics::BATCH_ROWS).record(batch.rows.len() as f64);
            ::metrics::counter!(metrics::ROWS_INSERTED).increment(batch.rows.len() as u64);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            batch.partition,
            Offset::Offset(batch.last_offset + 1),
        )?;
        // A failed commit (e.g. the partition moved in a rebalance) leaves the
        // rows in ClickHouse; the next owner re-reads them (see Known issues).
        if let Err(e) = tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync))
        {
            tracing::warn!(error = %e, "offset commit failed");
        } else {
            tracing::debug!("batch committed");
        }
        Ok(())
    }

    fn next_due_in(&self) -> Duration {
        let now = Instant::now();
        self.batches
            .values()
            .filter(|b| b.len_offsets() > 0)
            .map(|b| {
                self.limits
                    .max_age
                    .saturating_sub(now.duration_since(b.started))
            })
            .min()
            .unwrap_or(self.limits.max_age)
            .max(Duration::from_millis(5))
    }
}

/// Runs the consumer until `shutdown` fires; then flushes open batches,
/// commits and leaves the group. `health_listener` serves health and metrics.
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
    let mut kc = config.kafka.client_config();
    kc.set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set(
            "max.poll.interval.ms",
            (config.retry_horizon_secs * 1000 + 60_000).to_string(),
        );
    if let Some(id) = &config.instance_id {
        kc.set("group.instance.id", id);
    }
    let consumer: StreamConsumer<RebalanceContext> =
        kc.create_with_context(RebalanceContext::default())?;
    consumer.subscribe(&[&config.kafka.topic])?;
    let writer = ClickHouseWriter::new(
        config.clickhouse.client(),
        config.table.clone(),
        Duration::from_secs(config.insert_timeout_secs),
    );
    health.set_ready(true);
    tracing::info!(topic = %config.kafka.topic, group = %config.group, "consumer started");
    let mut lp = Loop {
        consumer,
        writer,
        topic: config.kafka.topic.clone(),
        limits: config.limits(),
        horizon: Duration::from_secs(config.retry_horizon_secs),
        batches: BTreeMap::new(),
    };
    let result = async {
        loop {
            let wait = lp.next_due_in();
            tokio::select! {
                _ = shutdown.wait() => break,
                r = tokio::time::timeout(wait, lp.consumer.recv()) => match r {
                    Err(_) => {}
                    Ok(Ok(m)) => {
                        let (p, o) = (m.partition(), m.offset());
                        let payload = m.payload().map(<[u8]>::to_vec);
                        drop(m);
                        // Rebalance callbacks ran inside this poll: drop the
                        // batches of revoked partitions before accepting a
                        // message that may belong to a re-assignment.
                        let revoked = lp.consumer.context().take_revoked();
                        lp.drop_revoked(revoked);
                        lp.accept(p, o, payload.as_deref());
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "kafka consume error"),
                },
            }
            let revoked = lp.consumer.context().take_revoked();
            lp.drop_revoked(revoked);
            lp.flush(false).await?;
        }
        health.set_ready(false);
        tracing::info!("draining: flushing open batches");
        let deadline = Duration::from_secs(config.shutdown_timeout_secs);
        match tokio::time::timeout(deadline, lp.flush(true)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    deadline_secs = config.shutdown_timeout_secs,
                    "drain deadline passed; exiting with open batches uncommitted (they will be read again)"
                );
                Ok(())
            }
        }
    }
    .await;
    lp.consumer.unsubscribe();
    drop(lp);
    shutdown.trigger();
    if let Some(h) = health_server {
        let _ = h.await;
    }
    tracing::info!("consumer stopped");
    result
}
