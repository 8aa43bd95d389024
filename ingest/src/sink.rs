//! The port through which accepted events leave the process, and its Kafka
//! implementation. [`MemorySink`] is the test double.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_schemas::AuditEvent;

/// Why events could not be published. Every variant means "not acknowledged":
/// the client must retry (with the same ids to stay idempotent).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("kafka did not acknowledge: {0}")]
    Unavailable(String),
    #[error("event could not be encoded: {0}")]
    Encode(String),
}

impl SinkError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SinkError::Encode(_))
    }
}

/// Publishes events and resolves only once every one is durably acknowledged.
pub trait EventSink: Send + Sync + 'static {
    fn publish(
        &self,
        events: &[AuditEvent],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send;

    /// Waits until everything queued is delivered, up to `deadline`.
    fn flush(&self, deadline: Duration) -> Result<(), SinkError>;
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long a message may wait for acknowledgement before it fails.
    pub message_timeout: Duration,
    pub linger_ms: u32,
    /// Upper bound on messages queued in the producer (backpressure beyond it).
    pub queue_max_messages: u32,
    pub queue_max_kbytes: u32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            compression: "lz4".into(),
            message_timeout: Duration::from_secs(10),
            linger_ms: 5,
            queue_max_messages: 100_000,
            queue_max_kbytes: 256 * 1024,
        }
    }
}

/// Produces events as Avro single-object messages, keyed by `org_id`, with an
/// idempotent producer and `acks=all`.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topic: Arc<str>,
}

impl KafkaSink {
    pub fn new(kafka: &KafkaArgs, settings: &ProducerSettings) -> Result<Self, KafkaError> {
        let producer: FutureProducer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &settings.compression)
            .set(
                "message.timeout.ms",
                settings.message_timeout.as_millis().to_string(),
            )
            .set("linger.ms", settings.linger_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                settings.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                settings.queue_max_kbytes.to_string(),
            )
            .create()?;
        Ok(KafkaSink {
            producer,
            topic: Arc::from(kafka.topic.as_str()),
        })
    }

    /// Checks that the broker answers and the topic exists.
    pub fn check(&self, timeout: Duration) -> Result<(), SinkError> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), Timeout::After(timeout))
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            _ => Err(SinkError::Unavailable(format!(
                "topic {} does not exist",
                self.topic
            ))),
        }
    }
}

impl EventSink for KafkaSink {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), SinkError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let payload =
                trailhouse_schemas::encode(event).map_err(|e| SinkError::Encode(e.to_string()))?;
            let record = FutureRecord::to(&self.topic)
                .key(event.org_id.as_bytes())
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    metrics::counter!(crate::metrics::QUEUE_FULL).increment(1);
                    return Err(SinkError::QueueFull);
                }
                Err((e, _)) => return Err(SinkError::Unavailable(e.to_string())),
            }
        }
        for result in join_all(deliveries).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(SinkError::Unavailable(e.to_string())),
                Err(_) => return Err(SinkError::Unavailable("delivery cancelled".into())),
            }
        }
        Ok(())
    }

    fn flush(&self, deadline: Duration) -> Result<(), SinkError> {
        self.producer
            .flush(Timeout::After(deadline))
            .map_err(|e| SinkError::Unavailable(e.to_string()))
    }
}

/// An in-memory sink for tests: records what it was given, or fails on demand.
#[derive(Clone, Default)]
pub struct MemorySink {
    pub events: Arc<Mutex<Vec<AuditEvent>>>,
    pub fail_with_queue_full: Arc<std::sync::atomic::AtomicBool>,
}

impl MemorySink {
    pub fn taken(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl EventSink for MemorySink {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), SinkError> {
        if self
            .fail_with_queue_full
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(SinkError::QueueFull);
        }
        if let Ok(mut v) = self.events.lock() {
            v.extend_from_slice(events);
        }
        Ok(())
    }

    fn flush(&self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}
