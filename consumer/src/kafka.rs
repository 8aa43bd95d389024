//! The rdkafka adapter: the consumer group member as a [`Source`], its
//! rebalance callbacks (revokes wait for in-flight inserts), the lag from
//! librdkafka's statistics, and the dead-letter producer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::ConsumerConfig;
use crate::metrics::PartitionGauges;
use crate::pipeline::{CommitRequest, InFlightCounts, Received};
use crate::processor::{Rebalanced, Source, SourceError};

/// A consumer group member subscribed to the events topic.
pub struct KafkaSource {
    consumer: StreamConsumer<RebalanceContext>,
    topic: String,
    /// Test hook: abort the process at the N-th commit, before sending it.
    crash_before_commit: Option<u64>,
    commits: u64,
}

/// `max.partition.fetch.bytes` unless configured (see `ConsumerConfig`).
pub const DEFAULT_FETCH_PARTITION_BYTES: usize = 4 << 20;
/// `queued.max.messages.kbytes` unless configured.
pub const DEFAULT_PREFETCH_KBYTES: usize = 4 << 10;

/// How the consumer fetches: librdkafka settings, shared with the
/// benchmarks' bare-fetch ceiling so both read the same way.
pub fn fetch_settings(
    partition_bytes: usize,
    prefetch_kbytes: usize,
) -> [(&'static str, String); 3] {
    [
        // What is fetched ahead while inserts are behind stays bounded.
        ("queued.max.messages.kbytes", prefetch_kbytes.to_string()),
        // Once that queue is full librdkafka waits this long before the
        // partition's next fetch (default 1 s): a consumer that keeps up
        // only with the queue full would read one queue a second.
        ("fetch.queue.backoff.ms", "20".into()),
        ("max.partition.fetch.bytes", partition_bytes.to_string()),
    ]
}

impl KafkaSource {
    /// Joins the group and subscribes; revokes wait on `in_flight`.
    pub fn subscribe(
        config: &ConsumerConfig,
        in_flight: Arc<InFlightCounts>,
        gauges: PartitionGauges,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut kc = config.kafka.client_config();
        kc.set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            // The lag metric and the brokers' state come from the
            // statistics (see `stats`).
            .set("statistics.interval.ms", "5000")
            .set(
                "max.poll.interval.ms",
                (config.retry_horizon_secs * 1000 + 60_000).to_string(),
            );
        for (key, value) in fetch_settings(
            config.fetch_partition_bytes.get(),
            config.prefetch_kbytes.get(),
        ) {
            kc.set(key, value);
        }
        if let Some(id) = &config.instance_id {
            kc.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<RebalanceContext> = kc.create_with_context(
            RebalanceContext::new(in_flight, Duration::from_secs(config.shutdown_timeout_secs))
                .with_gauges(gauges),
        )?;
        consumer.subscribe(&[&config.kafka.topic])?;
        Ok(KafkaSource {
            consumer,
            topic: config.kafka.topic.clone(),
            crash_before_commit: config.test_crash_after_insert,
            commits: 0,
        })
    }

    /// Leaves the group (the revoke callback waits for in-flight inserts).
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}

impl Source for KafkaSource {
    async fn recv(&mut self) -> Result<Received, SourceError> {
        let m = self
            .consumer
            .recv()
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        self.consumer.context().broker.reached();
        let traceparent = m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == "traceparent")
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(String::from)
        });
        Ok(Received {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            traceparent,
            timestamp_ms: m.timestamp().to_millis(),
        })
    }

    fn rebalanced(&mut self) -> Rebalanced {
        let ctx = self.consumer.context();
        Rebalanced {
            revoked: ctx.take_revoked(),
            assigned: ctx.take_assigned(),
        }
    }

    fn commit(&mut self, r: CommitRequest) -> Result<(), SourceError> {
        self.commits += 1;
        if self.crash_before_commit == Some(self.commits) {
            tracing::error!(
                partition = r.partition,
                next = r.next_offset,
                "test hook: aborting between insert and commit"
            );
            std::process::abort();
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, r.partition, Offset::Offset(r.next_offset))
            .map_err(|e| SourceError(format!("building the offset commit: {e}")))?;
        let consumer = &self.consumer;
        match tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync)) {
            Ok(()) => tracing::debug!(partition = r.partition, next = r.next_offset, "committed"),
            Err(e) => tracing::warn!(partition = r.partition, error = %e, "offset commit failed"),
        }
        Ok(())
    }

    fn broker_unreachable_for(&self) -> Option<Duration> {
        self.consumer.context().broker.unreachable_for()
    }

    fn pause(&mut self) {
        if let Ok(tpl) = self.consumer.assignment() {
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, "pausing partitions failed");
            }
        }
    }

    fn resume(&mut self) {
        // librdkafka resumes each partition at the message after the last
        // one the loop took.
        if let Ok(tpl) = self.consumer.assignment() {
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, "resuming partitions failed");
            }
        }
    }
}

/// The dead-letter producer: idempotent, so that librdkafka's own retries
/// never duplicate a dead letter; a write that still fails is retried by the
/// pipeline (the topic stays at-least-once across crashes: origin headers
/// identify repeats).
pub fn dead_letter_producer(
    config: &ConsumerConfig,
) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    config
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
}

/// Records partitions revoked by a rebalance so the loop can drop their
/// batches, after waiting for their in-flight inserts (up to `revoke_wait`).
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
    assigned: AtomicBool,
    in_flight: Arc<InFlightCounts>,
    revoke_wait: Duration,
    gauges: PartitionGauges,
    broker: BrokerWatch,
}

/// Since when no broker has been reachable, as librdkafka reports it
/// (`AllBrokersDown`); cleared by a message, or statistics with a broker up.
/// `up` is the fast path of [`BrokerWatch::reached`], which every message
/// calls: once a broker is known up, it costs one atomic load.
#[derive(Debug, Default)]
pub struct BrokerWatch {
    down_since: Mutex<Option<Instant>>,
    up: AtomicBool,
}

impl BrokerWatch {
    pub fn down(&self) {
        if let Ok(mut d) = self.down_since.lock() {
            self.up.store(false, Ordering::Release);
            if d.is_none() {
                *d = Some(Instant::now());
                ::metrics::gauge!(crate::metrics::BROKER_UP).set(0.0);
            }
        }
    }

    pub fn reached(&self) {
        if self.up.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut d) = self.down_since.lock() {
            if d.take().is_some() {
                tracing::info!("kafka reachable again");
            }
            ::metrics::gauge!(crate::metrics::BROKER_UP).set(1.0);
            self.up.store(true, Ordering::Release);
        }
    }

    pub fn unreachable_for(&self) -> Option<Duration> {
        self.down_since.lock().ok()?.map(|t| t.elapsed())
    }
}

impl RebalanceContext {
    /// A context whose revokes wait on `in_flight`, at most `revoke_wait`.
    pub fn new(in_flight: Arc<InFlightCounts>, revoke_wait: Duration) -> Self {
        RebalanceContext {
            revoked: Mutex::default(),
            assigned: AtomicBool::default(),
            in_flight,
            revoke_wait,
            gauges: PartitionGauges::default(),
            broker: BrokerWatch::default(),
        }
    }

    /// Publishes the per-partition gauges into `gauges`.
    pub fn with_gauges(self, gauges: PartitionGauges) -> Self {
        RebalanceContext { gauges, ..self }
    }
}

impl ClientContext for RebalanceContext {
    /// Publishes the lag per partition from librdkafka's statistics, which
    /// come from what the fetches and commits already returned. (Asking the
    /// broker for watermarks instead puts a request with a short timeout
    /// behind the connection's fetch; when a fetch is slow, that request
    /// times out, librdkafka drops the connection with the fetch on it,
    /// and a slow broker never completes a fetch again.)
    fn stats(&self, statistics: rdkafka::Statistics) {
        let partitions = statistics.topics.values().flat_map(|t| {
            t.partitions.iter().map(|(p, s)| PartitionOffsets {
                partition: *p,
                fetching: !matches!(s.fetch_state.as_str(), "none" | "stopped" | "stopping"),
                committed: s.committed_offset,
                low: s.lo_offset,
                high: s.hi_offset,
            })
        });
        for (p, lag) in lag_by_partition(partitions) {
            self.gauges.set_lag(p, lag);
        }
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.broker.reached();
        }
    }

    /// librdkafka's global errors. With no broker reachable, the consumer
    /// turns not ready after a while (see the driver); the lines repeat
    /// and are throttled by the log format.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.broker.down();
        }
        tracing::warn!(target: "librdkafka", error = %error, reason, "kafka client error");
    }
}

/// One partition's offsets in librdkafka's statistics (negative: unknown).
#[derive(Debug, Clone, Copy)]
struct PartitionOffsets {
    partition: i32,
    fetching: bool,
    committed: i64,
    low: i64,
    high: i64,
}

/// Messages not yet committed (so not yet known to be in ClickHouse), per
/// partition this consumer fetches. A partition without a committed offset
/// starts at the low watermark (`auto.offset.reset = earliest`). The
/// internal partition (-1) and unknown watermarks are left out.
fn lag_by_partition(partitions: impl Iterator<Item = PartitionOffsets>) -> Vec<(i32, i64)> {
    partitions
        .filter(|o| o.partition >= 0 && o.fetching && o.high >= 0)
        .map(|o| {
            let from = if o.committed >= 0 {
                o.committed
            } else {
                o.low.max(0)
            };
            (o.partition, (o.high - from).max(0))
        })
        .collect()
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            for p in &partitions {
                self.gauges.revoke(*p);
            }
            // This runs inside the poll, on a runtime worker; the insert
            // tasks run on the others.
            let started = Instant::now();
            let wait = || self.in_flight.wait_idle(&partitions, self.revoke_wait);
            let idle = match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(wait)
                }
                _ => wait(),
            };
            if idle {
                tracing::info!(
                    partitions = tpl.count(),
                    waited_ms = started.elapsed().as_millis() as u64,
                    "partitions revoked"
                );
            } else {
                tracing::warn!(
                    partitions = tpl.count(),
                    "partitions revoked with inserts still in flight after the deadline"
                );
            }
            ::metrics::gauge!(crate::metrics::ASSIGNED).set(self.gauges.assigned().len() as f64);
            if let Ok(mut r) = self.revoked.lock() {
                r.extend(partitions);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused before a rebalance may come back paused;
            // start every assignment fetching and let the loop pause again
            // if inserts are still behind.
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(error = %e, "resuming assigned partitions failed");
            }
            for e in tpl.elements() {
                self.gauges.assign(e.partition());
            }
            ::metrics::gauge!(crate::metrics::ASSIGNED).set(self.gauges.assigned().len() as f64);
            self.assigned.store(true, Ordering::SeqCst);
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

impl RebalanceContext {
    /// Whether partitions were assigned since the last call.
    fn take_assigned(&self) -> bool {
        self.assigned.swap(false, Ordering::SeqCst)
    }

    fn take_revoked(&self) -> Vec<i32> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_committed_offset_of_partitions_being_fetched() {
        let o = |partition, fetching, committed, low, high| PartitionOffsets {
            partition,
            fetching,
            committed,
            low,
            high,
        };
        let lag = lag_by_partition(
            [
                o(0, true, 40, 0, 100),
                // Never committed: everything from the low watermark.
                o(1, true, -1001, 10, 25),
                // Not fetched by this consumer (revoked), or the internal
                // partition, or no watermark yet: no figure.
                o(2, false, 5, 0, 50),
                o(-1, true, 0, 0, 9),
                o(3, true, 7, 0, -1001),
                // A commit newer than the watermark the stats saw.
                o(4, true, 60, 0, 50),
            ]
            .into_iter(),
        );
        assert_eq!(lag, vec![(0, 60), (1, 15), (4, 0)]);
    }
}
