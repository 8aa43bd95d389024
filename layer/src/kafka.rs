//! [`KafkaSink`]: publishes events straight to Kafka as Avro single-object
//! messages (the `kafka` feature).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;

use crate::sink::{Envelope, EventSink, SinkError, TRACEPARENT};

/// The producer's `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    /// Every value, in the order the docs list them.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The name librdkafka and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name that is not one of [`Compression::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression {0:?} is not one of none, gzip, snappy, lz4, zstd")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// A name of [`Compression::ALL`], in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownCompression(s.to_string()))
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub compression: Compression,
    /// How long a message may wait for acknowledgement before it fails.
    pub message_timeout: Duration,
    pub linger_ms: u32,
    /// Upper bound on messages queued in the producer (backpressure beyond it).
    pub queue_max_messages: u32,
    pub queue_max_kbytes: u32,
    /// The largest message the producer sends (`message.max.bytes`); keep
    /// it at or under the topic's `max.message.bytes`.
    pub max_message_bytes: usize,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            compression: Compression::Lz4,
            message_timeout: Duration::from_secs(10),
            linger_ms: 5,
            queue_max_messages: 100_000,
            queue_max_kbytes: 256 * 1024,
            max_message_bytes: 1_000_000,
        }
    }
}

/// Produces events as Avro single-object messages, keyed by `org_id`, with an
/// idempotent producer and `acks=all`.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer<QueueStats>,
    topic: Arc<str>,
    queued_bytes: Arc<AtomicU64>,
}

/// What is in the producer's queue: waiting to be sent, or sent and not
/// yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub messages: u64,
    /// Payload bytes, from librdkafka's statistics (every second).
    pub bytes: u64,
}

/// The producer's context: keeps the queue's size from librdkafka's
/// statistics; logs go to `tracing` as with the default context.
#[derive(Debug, Default)]
pub struct QueueStats {
    bytes: Arc<AtomicU64>,
}

impl ClientContext for QueueStats {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.bytes.store(statistics.msg_size, Ordering::Relaxed);
    }
}

impl KafkaSink {
    /// A producer for `topic` from `client` (brokers, security settings),
    /// with the delivery settings of this crate and `settings` added.
    pub fn new(
        mut client: ClientConfig,
        topic: &str,
        settings: &ProducerSettings,
    ) -> Result<Self, KafkaError> {
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let producer: FutureProducer<QueueStats> = client
            .set("enable.idempotence", "true")
            .set("statistics.interval.ms", "1000")
            .set("acks", "all")
            .set("compression.type", settings.compression.as_str())
            .set(
                "message.timeout.ms",
                settings.message_timeout.as_millis().to_string(),
            )
            .set("linger.ms", settings.linger_ms.to_string())
            // Reconnect within a second of the broker's return (default: up to 10 s).
            .set("reconnect.backoff.max.ms", "1000")
            .set(
                "queue.buffering.max.messages",
                settings.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                settings.queue_max_kbytes.to_string(),
            )
            .set("message.max.bytes", settings.max_message_bytes.to_string())
            .create_with_context(QueueStats {
                bytes: queued_bytes.clone(),
            })?;
        Ok(KafkaSink {
            producer,
            topic: Arc::from(topic),
            queued_bytes,
        })
    }

    /// The producer's queue now (messages) and at the last statistics (bytes).
    pub fn queue(&self) -> QueueDepth {
        QueueDepth {
            messages: u64::try_from(self.producer.in_flight_count()).unwrap_or(0),
            bytes: self.queued_bytes.load(Ordering::Relaxed),
        }
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

/// A produce error as a sink error: a size over a limit can never succeed;
/// everything else is the broker being unavailable.
fn classify(e: KafkaError) -> SinkError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            SinkError::TooLarge(e.to_string())
        }
        _ => SinkError::Unavailable(e.to_string()),
    }
}

impl EventSink for KafkaSink {
    async fn publish(&self, events: &[Envelope]) -> Result<(), SinkError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for envelope in events {
            let (event, payload) = (envelope.event(), envelope.payload()?);
            let mut record = FutureRecord::to(&self.topic)
                .key(event.org_id.as_bytes())
                .payload(payload.as_ref());
            if let Some(tp) = envelope.traceparent() {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: TRACEPARENT,
                    value: Some(tp.as_bytes()),
                }));
            }
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(SinkError::QueueFull);
                }
                Err((e, _)) => return Err(classify(e)),
            }
        }
        // Every delivery is awaited; the first failure (in event order) is
        // the answer.
        let mut outcome = Ok(());
        for delivery in deliveries {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => classify(e),
                Err(_) => SinkError::Unavailable("delivery cancelled".into()),
            };
            if outcome.is_ok() {
                outcome = Err(failure);
            }
        }
        outcome
    }

    fn flush(&self, deadline: Duration) -> Result<(), SinkError> {
        self.producer
            .flush(Timeout::After(deadline))
            .map_err(|e| SinkError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_errors_are_permanent_and_the_rest_retryable() {
        use rdkafka::error::KafkaError;
        let cases = [
            (RDKafkaErrorCode::MessageSizeTooLarge, false),
            (RDKafkaErrorCode::InvalidMessageSize, false),
            (RDKafkaErrorCode::MessageTimedOut, true),
            (RDKafkaErrorCode::BrokerTransportFailure, true),
        ];
        for (code, retryable) in cases {
            let e = super::classify(KafkaError::MessageProduction(code));
            assert_eq!(e.is_retryable(), retryable, "{code:?}: {e}");
        }
    }

    use super::*;

    #[test]
    fn compression_names_parse() {
        let cases = [
            ("none", Some(Compression::None)),
            ("gzip", Some(Compression::Gzip)),
            ("snappy", Some(Compression::Snappy)),
            ("lz4", Some(Compression::Lz4)),
            ("ZSTD", Some(Compression::Zstd)),
            (" lz4 ", Some(Compression::Lz4)),
            ("brotli", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Compression>().ok(), want, "{input:?}");
        }
        assert_eq!(
            "brotli".parse::<Compression>().map_err(|e| e.to_string()),
            Err("compression \"brotli\" is not one of none, gzip, snappy, lz4, zstd".into())
        );
        for c in Compression::ALL {
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        }
    }
}
