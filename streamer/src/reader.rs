//! The live tail: one member of the streamer's consumer group reads the
//! events topic once and offers each event to the inboxes of its org's
//! active streams (the filter is applied here, so a stream's inbox holds
//! only what it delivers). Also: where each assigned partition starts, the
//! consumer's stored-through offsets (what a stream may read back from
//! ClickHouse), and the commits, which never pass a live stream's cursor.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use trailhouse_query_api::access::Access;
use trailhouse_schemas::{AuditEvent, EventRow, Lineage};

use crate::deliver::Deliver;
use crate::registry::Registry;
use crate::shared::Positions;
use crate::store::{EventHistory, StreamStore};
use crate::worker::item_of;

/// Keys remembered per partition to skip a producer's retried copy.
pub const RECENT_KEYS: usize = 100_000;

/// Publishes assignments into [`Positions`], each starting at the group's
/// committed offset (or the low watermark).
pub struct Context {
    positions: Arc<Positions>,
    topic: String,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            for e in tpl.elements() {
                self.positions.assign(e.partition(), None);
            }
            self.publish_assigned();
        }
    }

    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let committed = base
            .committed_offsets((*tpl).clone(), Duration::from_secs(10))
            .unwrap_or_else(|_| (*tpl).clone());
        for e in committed.elements() {
            let start = match e.offset() {
                Offset::Offset(o) => o,
                _ => base
                    .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(10))
                    .map(|(low, _)| low)
                    .unwrap_or(0),
            };
            tracing::info!(partition = e.partition(), start, "partition assigned");
            self.positions.assign(e.partition(), Some(start));
        }
        self.publish_assigned();
    }
}

impl Context {
    fn publish_assigned(&self) {
        let n = self
            .positions
            .all()
            .iter()
            .filter(|(_, x)| x.owned.load(Ordering::SeqCst))
            .count();
        metrics::gauge!(crate::metrics::ASSIGNED).set(n as f64);
    }
}

/// Copies a producer's retry made: the same event again shortly after.
#[derive(Default)]
struct Recent {
    order: VecDeque<(String, uuid::Uuid, i64)>,
    set: HashSet<(String, uuid::Uuid, i64)>,
}

impl Recent {
    /// Whether the key was seen (and remembers it).
    fn seen(&mut self, key: (String, uuid::Uuid, i64)) -> bool {
        if self.set.contains(&key) {
            return true;
        }
        if self.order.len() >= RECENT_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(key.clone());
        self.order.push_back(key);
        false
    }
}

/// The member of the streamer's group.
pub struct Reader {
    consumer: Arc<StreamConsumer<Context>>,
    positions: Arc<Positions>,
    access: Access,
    recent: std::collections::HashMap<i32, Recent>,
}

impl Reader {
    /// Joins `group` and subscribes to the topic of `kafka`.
    pub fn subscribe(
        kafka: &trailhouse_common::kafka::KafkaArgs,
        group: &str,
        instance_id: Option<&str>,
        session_timeout_ms: u32,
        positions: Arc<Positions>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut kc = kafka.client_config();
        if let Some(id) = instance_id {
            kc.set("group.instance.id", id);
        }
        kc.set("group.id", group)
            .set("session.timeout.ms", session_timeout_ms.to_string())
            // An idle partition's fetch returns after this long at most (a
            // busy one at once): the latency floor of a quiet stream.
            .set("fetch.wait.max.ms", "100")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer<Context> = kc.create_with_context(Context {
            positions: positions.clone(),
            topic: kafka.topic.clone(),
        })?;
        consumer.subscribe(&[&kafka.topic])?;
        Ok(Reader {
            consumer: Arc::new(consumer),
            positions,
            access: Access::default(),
            recent: Default::default(),
        })
    }

    /// Reads and routes until the task is dropped.
    pub async fn run<D: Deliver, S: StreamStore + EventHistory>(
        mut self,
        registry: Arc<Registry<D, S>>,
    ) {
        loop {
            let m = match self.consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka read failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let (p, o) = (m.partition(), m.offset());
            metrics::counter!(crate::metrics::EVENTS_READ).increment(1);
            let event = m.payload().and_then(|b| trailhouse_schemas::decode(b).ok());
            let event = event.filter(|e| {
                let key = (e.org_id.clone(), e.id, e.created_at.timestamp_micros());
                let copy = self.recent.entry(p).or_default().seen(key);
                if copy {
                    metrics::counter!(crate::metrics::COPIES_SKIPPED).increment(1);
                }
                !copy
            });
            route(
                &registry,
                &self.positions,
                p,
                o,
                event.as_ref(),
                &self.access,
            );
        }
    }

    /// The group member, for commits from another task.
    pub fn committer(&self) -> Committer {
        Committer(self.consumer.clone())
    }
}

/// Commits for the reader's group member.
#[derive(Clone)]
pub struct Committer(Arc<StreamConsumer<Context>>);

impl Committer {
    /// Commits `offsets` (per partition, the next offset to read).
    pub fn commit(&self, offsets: &std::collections::BTreeMap<i32, i64>, topic: &str) {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if *o >= 0 {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.0.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "commit failed");
            }
        }
    }
}

/// Offers the event at offset `o` of partition `p` (`None`: nothing to
/// deliver, e.g. a poison message or a copy) to the inboxes of its org's
/// streams whose filter it matches, publishing `next` before and `done`
/// after (see [`crate::shared`]).
pub fn route<D: Deliver, S: StreamStore + EventHistory>(
    registry: &Registry<D, S>,
    positions: &Positions,
    p: i32,
    o: i64,
    event: Option<&AuditEvent>,
    access: &Access,
) {
    let part = positions.part(p);
    part.next.store(o + 1, Ordering::SeqCst);
    if let Some(event) = event {
        if let Some(routes) = registry.routes(&event.org_id) {
            let row = EventRow::from_event(
                event,
                Lineage {
                    partition: p,
                    offset: o,
                },
            );
            for r in routes.iter().filter(|r| r.filter.matches(&row)) {
                r.inbox.offer(item_of(row.clone(), access));
            }
        }
    }
    part.done.store(o + 1, Ordering::SeqCst);
}

/// Reads the consumer group's committed offsets: everything below them is
/// in ClickHouse.
pub struct StoredWatch {
    consumer: BaseConsumer,
    topic: String,
}

impl StoredWatch {
    pub fn new(
        kafka: &trailhouse_common::kafka::KafkaArgs,
        consumer_group: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut kc = kafka.client_config();
        kc.set("group.id", consumer_group)
            .set("enable.auto.commit", "false");
        Ok(StoredWatch {
            consumer: kc.create()?,
            topic: kafka.topic.clone(),
        })
    }

    /// Updates the stored-through offset of every owned partition.
    pub fn poll(&self, positions: &Positions) {
        let mut tpl = TopicPartitionList::new();
        for (p, part) in positions.all() {
            if part.owned.load(Ordering::SeqCst) {
                let _ = tpl.add_partition(&self.topic, p);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match self.consumer.committed_offsets(tpl, Duration::from_secs(5)) {
            Ok(c) => {
                tracing::debug!(?c, "consumer's committed offsets");
                for e in c.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        positions
                            .part(e.partition())
                            .stored
                            .store(o, Ordering::SeqCst);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the consumer's committed offsets"),
        }
    }
}
