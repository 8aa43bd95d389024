//! Poison messages: the dead-letter port and the guard that stops the
//! consumer instead of dead-lettering everything.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Headers of a dead-lettered message.
pub const HEADER_TOPIC: &str = "trailhouse.original.topic";
pub const HEADER_PARTITION: &str = "trailhouse.original.partition";
pub const HEADER_OFFSET: &str = "trailhouse.original.offset";
pub const HEADER_ERROR: &str = "trailhouse.error";

/// A message that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
}

/// A dead-letter write that failed.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter write failed: {0}")]
pub struct DeadLetterError(pub String);

/// Where poison messages go.
pub trait DeadLetters: Send + Sync + 'static {
    /// Resolves once the dead-letter topic acknowledged the message.
    fn send(
        &self,
        poison: Poison,
    ) -> impl std::future::Future<Output = Result<(), DeadLetterError>> + Send + 'static;
}

/// A Kafka dead-letter topic (idempotent producer, `acks=all`).
#[derive(Clone)]
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl KafkaDeadLetters {
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> Self {
        KafkaDeadLetters {
            producer,
            topic: topic.into(),
        }
    }
}

impl DeadLetters for KafkaDeadLetters {
    fn send(
        &self,
        p: Poison,
    ) -> impl std::future::Future<Output = Result<(), DeadLetterError>> + Send + 'static {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        async move {
            let partition = p.partition.to_string();
            let offset = p.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_TOPIC,
                    value: Some(p.topic.as_str()),
                })
                .insert(Header {
                    key: HEADER_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: HEADER_OFFSET,
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: HEADER_ERROR,
                    value: Some(p.error.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).headers(headers);
            if let Some(k) = &p.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &p.payload {
                record = record.payload(v.as_slice());
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| DeadLetterError(e.to_string()))
        }
    }
}

/// Stops the consumer when poison is no longer an exception: more than
/// `max_ratio` of the last `window` messages, or `max_consecutive` in a row.
#[derive(Debug, Clone)]
pub struct PoisonGuard {
    window: usize,
    max_ratio: f64,
    max_consecutive: usize,
    recent: VecDeque<bool>,
    bad_in_window: usize,
    consecutive: usize,
}

/// Why the guard tripped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuardTripped {
    #[error("{bad} of the last {window} messages were poison (limit {max_ratio})")]
    Ratio {
        bad: usize,
        window: usize,
        max_ratio: f64,
    },
    #[error("{0} poison messages in a row")]
    Consecutive(usize),
}

impl PoisonGuard {
    pub fn new(window: usize, max_ratio: f64, max_consecutive: usize) -> Self {
        PoisonGuard {
            window: window.max(1),
            max_ratio,
            max_consecutive: max_consecutive.max(1),
            recent: VecDeque::new(),
            bad_in_window: 0,
            consecutive: 0,
        }
    }

    /// Records one message; an error means: stop, do not dead-letter it.
    pub fn observe(&mut self, poison: bool) -> Result<(), GuardTripped> {
        self.recent.push_back(poison);
        if poison {
            self.bad_in_window += 1;
            self.consecutive += 1;
        } else {
            self.consecutive = 0;
        }
        if self.recent.len() > self.window && self.recent.pop_front() == Some(true) {
            self.bad_in_window -= 1;
        }
        if self.consecutive >= self.max_consecutive {
            return Err(GuardTripped::Consecutive(self.consecutive));
        }
        // The ratio only means something over a full window.
        if self.recent.len() == self.window
            && self.bad_in_window as f64 > self.max_ratio * self.window as f64
        {
            return Err(GuardTripped::Ratio {
                bad: self.bad_in_window,
                window: self.window,
                max_ratio: self.max_ratio,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occasional_poison_passes_and_floods_trip() {
        let mut g = PoisonGuard::new(100, 0.05, 10);
        for i in 0..10_000 {
            assert!(g.observe(i % 100 == 0).is_ok(), "1% poison is fine");
        }
        let mut g = PoisonGuard::new(100, 0.05, 10);
        let tripped = (0..200)
            .map(|i| g.observe(i % 10 == 0))
            .find(Result::is_err);
        assert!(matches!(tripped, Some(Err(GuardTripped::Ratio { .. }))));
        let mut g = PoisonGuard::new(1000, 0.5, 5);
        let results: Vec<_> = (0..5).map(|_| g.observe(true)).collect();
        assert_eq!(results[4], Err(GuardTripped::Consecutive(5)));
        assert!(results[..4].iter().all(Result::is_ok));
    }
}
