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

pub mod backpressure;
pub mod batch;
pub mod dlq;
pub mod metrics;
pub mod state;
pub mod storage;
pub mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backpressure::{Backpressure, Step};

use clap::Args;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::health::{self, Health};
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_common::shutdown::Shutdown;
use trailhouse_schemas::{EventRow, Lineage};

pub use batch::{Batch, BatchLimits};
pub use dlq::{DeadLetters, KafkaDeadLetters, PoisonGuard};
pub use state::{ClickHouseState, Range, StateStore};
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
    /// A batch is sealed at this many rows.
    #[arg(long, env = "TRAILHOUSE_CONSUMER_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,
    /// A batch is sealed at this many bytes of encoded rows (RowBinary).
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
    /// Most table partitions one insert may touch; a batch over it is split
    /// by partition (keep it at or under the server's
    /// `max_partitions_per_insert_block`). Matters for the org-day layout,
    /// which the consumer reads from the migrations table at startup.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_MAX_PARTITIONS_PER_INSERT",
        default_value_t = writer::MAX_PARTITIONS_PER_INSERT
    )]
    pub max_partitions_per_insert: usize,
    /// How long the drain on shutdown (flush open batches, commit) may take.
    /// Past it the consumer exits without committing what is still open;
    /// those messages are read again by the next owner of the partitions.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub shutdown_timeout_secs: u64,
    /// Inserts in flight at once (across partitions, in offset order per partition).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_MAX_IN_FLIGHT", default_value_t = 2)]
    pub max_in_flight: usize,
    /// Dead-letter topic (default: `<topic>.dlq`).
    #[arg(long, env = "TRAILHOUSE_CONSUMER_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Messages over which the poison ratio is measured.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_POISON_WINDOW",
        default_value_t = 1000
    )]
    pub poison_window: usize,
    /// Stop (instead of dead-lettering) when more than this share of the
    /// window is poison.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_POISON_MAX_RATIO",
        default_value_t = 0.1
    )]
    pub poison_max_ratio: f64,
    /// Stop when this many poison messages come in a row.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_POISON_MAX_CONSECUTIVE",
        default_value_t = 100
    )]
    pub poison_max_consecutive: usize,
    /// While inserts are behind, the consumer first stops taking messages
    /// (librdkafka keeps what it fetched, up to 16 MiB, then stops
    /// fetching); past this delay it pauses its partitions, which drops
    /// the prefetched messages but keeps rebalances served. See
    /// `backpressure`.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_PAUSE_AFTER_MS",
        default_value_t = 1000
    )]
    pub pause_after_ms: u64,
    /// Report not-ready after being paused (backpressure) this long.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_PAUSED_NOT_READY_SECS",
        default_value_t = 60
    )]
    pub paused_not_ready_secs: u64,
    /// Group session timeout: how long a silent member keeps its partitions.
    #[arg(
        long,
        env = "TRAILHOUSE_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u64,
    /// Test hook: abort the process right after the N-th successful insert,
    /// before its offset commit.
    #[arg(long, env = "TRAILHOUSE_CONSUMER_TEST_CRASH_AFTER_INSERT", hide = true)]
    pub test_crash_after_insert: Option<u64>,
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
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "max in-flight inserts must be positive".into(),
            ));
        }
        if self.max_partitions_per_insert == 0 {
            return Err(Error::Config(
                "max partitions per insert must be positive".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.poison_max_ratio) {
            return Err(Error::Config("the poison ratio must be within 0..1".into()));
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
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// How many insert tasks each partition has running, so that a revoke can
/// wait for them: a partition must not move to another member while one of
/// its batches is still being recorded or inserted here, or the new owner
/// could plan its batches without seeing that range.
#[derive(Default)]
pub struct InFlightCounts {
    counts: Mutex<BTreeMap<i32, usize>>,
    changed: std::sync::Condvar,
}

impl InFlightCounts {
    /// Counts a task of `partition` until the returned guard is dropped
    /// (when the task ends, or is aborted).
    fn start(self: &Arc<Self>, partition: i32) -> InFlightGuard {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(partition).or_default() += 1;
        }
        InFlightGuard {
            counts: self.clone(),
            partition,
        }
    }

    /// Waits until no task of `partitions` runs, at most `deadline`;
    /// returns whether they all finished.
    pub fn wait_idle(&self, partitions: &[i32], deadline: Duration) -> bool {
        let busy = |c: &BTreeMap<i32, usize>| {
            partitions
                .iter()
                .any(|p| c.get(p).copied().unwrap_or(0) > 0)
        };
        let Ok(guard) = self.counts.lock() else {
            return false;
        };
        match self
            .changed
            .wait_timeout_while(guard, deadline, |c| busy(c))
        {
            Ok((c, _)) => !busy(&c),
            Err(_) => false,
        }
    }
}

struct InFlightGuard {
    counts: Arc<InFlightCounts>,
    partition: i32,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.counts.lock() {
            if let Some(n) = c.get_mut(&self.partition) {
                *n = n.saturating_sub(1);
            }
        }
        self.counts.changed.notify_all();
    }
}

/// Records partitions revoked by a rebalance so the loop can drop their
/// batches, after waiting for their in-flight inserts (up to `revoke_wait`).
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
    assigned: std::sync::atomic::AtomicBool,
    in_flight: Arc<InFlightCounts>,
    revoke_wait: Duration,
}

impl RebalanceContext {
    pub fn new(revoke_wait: Duration) -> Self {
        RebalanceContext {
            revoked: Mutex::default(),
            assigned: std::sync::atomic::AtomicBool::default(),
            in_flight: Arc::default(),
            revoke_wait,
        }
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
            ::metrics::gauge!(metrics::LAG, "partition" => p.to_string()).set(lag as f64);
        }
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
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
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
            if let Ok(mut r) = self.revoked.lock() {
                r.extend(partitions);
            }
        }
    }

    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused before a rebalance may come back paused;
            // start every assignment fetching and let the loop pause again
            // if inserts are still behind.
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(error = %e, "resuming assigned partitions failed");
            }
            self.assigned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

impl RebalanceContext {
    /// Whether partitions were assigned since the last call.
    fn take_assigned(&self) -> bool {
        self.assigned
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    fn take_revoked(&self) -> Vec<i32> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Retries `op` on transient failures with exponential backoff and jitter
/// until `horizon` has passed.
async fn retry<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    horizon: Duration,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && started.elapsed() + delay < horizon => {
                ::metrics::counter!(metrics::INSERT_RETRIES).increment(1);
                tracing::warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "failed, retrying");
                let jitter = rand::random_range(0..=delay.as_millis() as u64 / 2);
                tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Inserts a batch, retrying transient failures with the same deduplication
/// token until `horizon` has passed.
pub async fn insert_with_retry<W: RowWriter>(
    writer: &W,
    batch: &Batch,
    token: &str,
    horizon: Duration,
) -> Result<(), WriteError> {
    retry(token, horizon, WriteError::is_retryable, || {
        writer.insert(&batch.rows, token)
    })
    .await
}

/// How the open batch of a partition must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// By the limits.
    Free,
    /// Exactly at this offset: the batch repeats a recorded range.
    Exactly(i64),
    /// By the limits, but at this offset at the latest: a recorded range
    /// starts right after it.
    AtMost(i64),
}

/// A batch being filled, with the dead-letter writes of its poison messages.
struct Open {
    batch: Batch,
    end: End,
    dead_letters: Vec<JoinHandle<Result<(), dlq::DeadLetterError>>>,
    traceparent: Option<String>,
}

impl Open {
    fn reached_end(&self) -> bool {
        match self.end {
            End::Free => false,
            End::Exactly(e) | End::AtMost(e) => self.batch.last_offset >= e,
        }
    }
}

/// A sealed batch whose insert is running.
struct InFlight {
    partition: i32,
    range: Range,
    task: JoinHandle<Result<usize, Error>>,
}

/// Per-partition recovery plan: recorded ranges at or after the resume point.
#[derive(Debug, Default)]
struct Plan {
    loaded: bool,
    ranges: VecDeque<Range>,
}

impl Plan {
    /// How a batch opened at `offset` must end.
    fn end_for(&mut self, offset: i64) -> End {
        while self.ranges.front().is_some_and(|r| r.last < offset) {
            self.ranges.pop_front();
        }
        match self.ranges.front().copied() {
            Some(r) if r.first == offset => {
                self.ranges.pop_front();
                End::Exactly(r.last)
            }
            Some(r) if r.first > offset => End::AtMost(r.first - 1),
            Some(r) => {
                tracing::warn!(
                    offset,
                    first = r.first,
                    last = r.last,
                    "resuming inside a recorded range"
                );
                self.ranges.pop_front();
                End::Free
            }
            None => End::Free,
        }
    }
}

struct Loop<W, S, D> {
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    writer: Arc<W>,
    state: Arc<S>,
    dead_letters: Arc<D>,
    topic: String,
    limits: BatchLimits,
    horizon: Duration,
    max_in_flight: usize,
    open: BTreeMap<i32, Open>,
    sealed: VecDeque<Open>,
    plans: BTreeMap<i32, Plan>,
    in_flight: VecDeque<InFlight>,
    guard: PoisonGuard,
    pressure: Backpressure,
    pause_after: Duration,
    crash_after_insert: Option<u64>,
    committed_batches: u64,
    /// Messages received while the state store could not be read; accepted
    /// in order once it can (the loop holds, then pauses, meanwhile).
    deferred: VecDeque<Received>,
    /// When to try the deferred messages again, and since when they wait.
    deferred_retry: Option<(Instant, Duration, Instant)>,
}

/// A message taken off the consumer, owned.
struct Received {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    traceparent: Option<String>,
}

impl<W: RowWriter, S: StateStore, D: DeadLetters> Loop<W, S, D> {
    /// Readies a partition for the message at `offset`: drops a stale open
    /// batch after a rewind and reads the recovery plan when it is not
    /// loaded. The only step that touches the state store; idempotent.
    async fn prepare(&mut self, partition: i32, offset: i64) -> Result<(), state::StateError> {
        // A batch covers a contiguous, increasing offset range; a message at
        // or before its end means the partition was re-seeked: the open batch
        // is stale (never sent) and the recovery plan is read again.
        if let Some(o) = self.open.get(&partition) {
            if o.batch.len_offsets() > 0 && offset <= o.batch.last_offset {
                tracing::warn!(
                    partition,
                    offset,
                    last = o.batch.last_offset,
                    "partition rewound, dropping unsent batch"
                );
                self.forget(partition);
            }
        }
        if !self.plans.get(&partition).is_some_and(|p| p.loaded) {
            let ranges = self.state.load(partition, offset).await?;
            if !ranges.is_empty() {
                tracing::info!(
                    partition,
                    offset,
                    ranges = ranges.len(),
                    "replaying recorded batch ranges"
                );
            }
            self.plans.insert(
                partition,
                Plan {
                    loaded: true,
                    ranges: ranges.into(),
                },
            );
        }
        Ok(())
    }

    /// Adds a prepared message to its partition's open batch.
    fn accept(&mut self, m: Received) -> Result<(), Error> {
        let Received {
            partition,
            offset,
            key,
            payload,
            traceparent,
        } = m;
        let now = Instant::now();
        if !self.open.contains_key(&partition) {
            let end = self
                .plans
                .get_mut(&partition)
                .map_or(End::Free, |p| p.end_for(offset));
            self.open.insert(
                partition,
                Open {
                    batch: Batch::new(partition, offset, now),
                    end,
                    dead_letters: Vec::new(),
                    traceparent: None,
                },
            );
        }
        let decoded = match payload.as_deref() {
            Some(bytes) => trailhouse_schemas::decode(bytes).map_err(|e| e.to_string()),
            None => Err("message has no payload".to_string()),
        };
        let Some(open) = self.open.get_mut(&partition) else {
            return Ok(());
        };
        if open.traceparent.is_none() {
            open.traceparent = traceparent;
        }
        match decoded {
            Ok(event) => {
                let _ = self.guard.observe(false);
                let row = EventRow::from_event(&event, Lineage { partition, offset });
                open.batch.push(offset, Some(&row));
            }
            Err(error) => {
                self.guard.observe(true).map_err(|reason| Error::Poison {
                    partition,
                    offset,
                    reason,
                })?;
                ::metrics::counter!(metrics::DEAD_LETTERED).increment(1);
                tracing::warn!(partition, offset, %error, "poison message to the dead-letter topic");
                let poison = dlq::Poison {
                    topic: self.topic.clone(),
                    partition,
                    offset,
                    key,
                    payload,
                    error,
                };
                let (dead_letters, horizon) = (self.dead_letters.clone(), self.horizon);
                // A failed dead-letter write is retried like an insert; the
                // offset never moves past the message until one succeeded.
                open.dead_letters.push(tokio::spawn(async move {
                    retry(
                        "dead-letter write",
                        horizon,
                        |_| true,
                        || dead_letters.send(poison.clone()),
                    )
                    .await
                }));
                open.batch.push(offset, None);
            }
        }
        if open.reached_end() || open.batch.is_full(&self.limits) {
            self.seal(partition);
        }
        Ok(())
    }

    fn seal(&mut self, partition: i32) {
        if let Some(o) = self.open.remove(&partition) {
            if o.batch.len_offsets() > 0 {
                self.sealed.push_back(o);
            }
        }
    }

    /// Drops what was not sent for a partition and forgets its plan.
    fn forget(&mut self, partition: i32) {
        let dropped = usize::from(self.open.remove(&partition).is_some())
            + self
                .sealed
                .iter()
                .filter(|o| o.batch.partition == partition)
                .count();
        self.sealed.retain(|o| o.batch.partition != partition);
        self.plans.remove(&partition);
        if dropped > 0 {
            ::metrics::counter!(metrics::BATCHES_DROPPED).increment(dropped as u64);
            tracing::info!(partition, dropped, "dropped unsent batches");
        }
    }

    /// Seals batches whose age is up (replayed batches wait for their end).
    fn seal_due(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<i32> = self
            .open
            .iter()
            .filter(|(_, o)| {
                o.batch.len_offsets() > 0
                    && (all
                        || (!matches!(o.end, End::Exactly(_)) && o.batch.is_due(&self.limits, now)))
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.seal(p);
        }
    }

    /// Starts inserts of sealed batches while there is room.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.max_in_flight {
            let Some(o) = self.sealed.pop_front() else {
                break;
            };
            let batch = o.batch;
            let range = Range {
                first: batch.first_offset,
                last: batch.last_offset,
            };
            let token = batch.dedup_token(&self.topic);
            let age = batch.started.elapsed();
            ::metrics::histogram!(metrics::BATCH_ROWS).record(batch.rows.len() as f64);
            ::metrics::histogram!(metrics::BATCH_BYTES).record(batch.bytes() as f64);
            ::metrics::histogram!(metrics::BATCH_AGE_SECONDS).record(age.as_secs_f64());
            let span = tracing::info_span!("batch", topic = %self.topic, partition = batch.partition,
                first_offset = range.first, last_offset = range.last, rows = batch.rows.len(),
                traceparent = o.traceparent.as_deref().unwrap_or(""));
            if let Some(tp) = &o.traceparent {
                trailhouse_common::telemetry::continue_trace(&span, tp);
            }
            let (writer, state, horizon) = (self.writer.clone(), self.state.clone(), self.horizon);
            let dead_letters = o.dead_letters;
            let partition = batch.partition;
            let counted = self.consumer.context().in_flight.start(partition);
            let task = tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let _counted = counted;
                    if !batch.rows.is_empty() {
                        retry(
                            "record pending range",
                            horizon,
                            |_| true,
                            || state.record(partition, range),
                        )
                        .await?;
                        let started = Instant::now();
                        insert_with_retry(&*writer, &batch, &token, horizon)
                            .await
                            .map_err(|source| Error::Insert {
                                token: token.clone(),
                                source,
                            })?;
                        ::metrics::histogram!(metrics::INSERT_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                    }
                    for d in dead_letters {
                        d.await.map_err(|e| Error::Task(e.to_string()))??;
                    }
                    Ok(batch.rows.len())
                },
                span,
            ));
            self.in_flight.push_back(InFlight {
                partition,
                range,
                task,
            });
        }
    }

    /// Commits the finished head of the in-flight queue.
    fn commit(&mut self, partition: i32, range: Range, rows: usize) -> Result<(), Error> {
        ::metrics::counter!(metrics::ROWS_INSERTED).increment(rows as u64);
        self.committed_batches += 1;
        if self.crash_after_insert == Some(self.committed_batches) {
            tracing::error!(
                partition,
                first = range.first,
                last = range.last,
                "test hook: aborting between insert and commit"
            );
            std::process::abort();
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(range.last + 1))?;
        // A failed commit (the partition moved in a rebalance) is harmless:
        // the next owner replays the recorded range and ClickHouse drops the
        // repeated insert by its token.
        let consumer = self.consumer.clone();
        match tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync)) {
            Ok(()) => tracing::debug!(partition, next = range.last + 1, "committed"),
            Err(e) => tracing::warn!(partition, error = %e, "offset commit failed"),
        }
        Ok(())
    }

    /// Pauses fetching while sealed batches wait for room; resumes after.
    /// Accepts a message, or defers it (and everything after it) while the
    /// state store cannot be read. Never sleeps: a timer retries.
    async fn receive(&mut self, m: Received) -> Result<(), Error> {
        if !self.deferred.is_empty() {
            self.deferred.push_back(m);
            return Ok(());
        }
        match self.prepare(m.partition, m.offset).await {
            Ok(()) => self.accept(m),
            Err(e) => {
                self.deferred.push_back(m);
                self.hold(e)
            }
        }
    }

    /// Accepts deferred messages in order until one fails on the state store.
    async fn retry_deferred(&mut self) -> Result<(), Error> {
        while let Some((p, o)) = self.deferred.front().map(|m| (m.partition, m.offset)) {
            if let Err(e) = self.prepare(p, o).await {
                return self.hold(e);
            }
            if let Some(m) = self.deferred.pop_front() {
                self.accept(m)?;
            }
        }
        self.deferred_retry = None;
        Ok(())
    }

    /// Schedules the next try of the deferred messages, or gives up after the horizon.
    fn hold(&mut self, e: state::StateError) -> Result<(), Error> {
        let now = Instant::now();
        let (delay, since) = match self.deferred_retry {
            Some((_, d, since)) => ((d * 2).min(Duration::from_secs(10)), since),
            None => (Duration::from_millis(200), now),
        };
        if since.elapsed() > self.horizon {
            return Err(Error::State(e));
        }
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "consumer state unavailable; holding messages");
        self.deferred_retry = Some((now + delay, delay, since));
        Ok(())
    }

    /// Time until the deferred messages are tried again.
    fn deferred_due_in(&self) -> Option<Duration> {
        self.deferred_retry
            .map(|(at, _, _)| at.saturating_duration_since(Instant::now()))
    }

    /// Holds, pauses or resumes the fetch side (see [`backpressure`]).
    fn backpressure(&mut self, health: &Health, not_ready_after: Duration) {
        let congested = (!self.sealed.is_empty() && self.in_flight.len() >= self.max_in_flight)
            || !self.deferred.is_empty();
        let now = Instant::now();
        match self.pressure.observe(congested, self.pause_after, now) {
            Step::Take | Step::Hold => {}
            Step::Pause => {
                if let Ok(tpl) = self.consumer.assignment() {
                    match self.consumer.pause(&tpl) {
                        Ok(()) => tracing::info!("inserts are behind: pausing partitions"),
                        Err(e) => tracing::warn!(error = %e, "pausing partitions failed"),
                    }
                }
                ::metrics::gauge!(metrics::PAUSED).set(1.0);
            }
            Step::Paused => {
                if self
                    .pressure
                    .paused_for(now)
                    .is_some_and(|d| d > not_ready_after)
                {
                    health.set_ready(false);
                }
            }
            Step::Resume => {
                // librdkafka resumes each partition at the message after the
                // last one this loop took.
                if let Ok(tpl) = self.consumer.assignment() {
                    if let Err(e) = self.consumer.resume(&tpl) {
                        tracing::warn!(error = %e, "resuming partitions failed");
                    }
                }
                tracing::info!("resuming partitions");
                ::metrics::gauge!(metrics::PAUSED).set(0.0);
                health.set_ready(true);
            }
        }
    }

    fn next_due_in(&self) -> Duration {
        let now = Instant::now();
        self.open
            .values()
            .filter(|o| o.batch.len_offsets() > 0 && !matches!(o.end, End::Exactly(_)))
            .map(|o| {
                self.limits
                    .max_age
                    .saturating_sub(now.duration_since(o.batch.started))
            })
            .min()
            .unwrap_or(self.limits.max_age)
            .max(Duration::from_millis(5))
    }
}

/// Awaits the head of the in-flight queue (pending forever when empty).
async fn head_done(in_flight: &mut VecDeque<InFlight>) -> Result<usize, Error> {
    match in_flight.front_mut() {
        Some(f) => match (&mut f.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Task(e.to_string())),
        },
        None => std::future::pending().await,
    }
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
    let mut kc = config.kafka.client_config();
    kc.set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        // What is fetched ahead while inserts are behind stays bounded.
        .set("queued.max.messages.kbytes", "16384")
        // The lag metric comes from the statistics (see `stats`).
        .set("statistics.interval.ms", "10000")
        .set(
            "max.poll.interval.ms",
            (config.retry_horizon_secs * 1000 + 60_000).to_string(),
        );
    if let Some(id) = &config.instance_id {
        kc.set("group.instance.id", id);
    }
    let consumer: StreamConsumer<RebalanceContext> = kc.create_with_context(
        RebalanceContext::new(Duration::from_secs(config.shutdown_timeout_secs)),
    )?;
    consumer.subscribe(&[&config.kafka.topic])?;
    // Idempotent, so that librdkafka's own retries never duplicate a dead
    // letter; a write that still fails is retried by the loop above (the
    // topic stays at-least-once across crashes: origin headers identify
    // repeats).
    let producer: FutureProducer = config
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let dlq_topic = config
        .dlq_topic
        .clone()
        .unwrap_or_else(|| format!("{}.dlq", config.kafka.topic));
    let mut lp = Loop {
        consumer: Arc::new(consumer),
        writer: Arc::new(
            ClickHouseWriter::new(
                config.clickhouse.client(),
                config.table.clone(),
                Duration::from_secs(config.insert_timeout_secs),
            )
            .with_layout(layout, config.max_partitions_per_insert),
        ),
        state: Arc::new(ClickHouseState::new(
            config.clickhouse.client(),
            config.group.clone(),
            config.kafka.topic.clone(),
        )),
        dead_letters: Arc::new(KafkaDeadLetters::new(producer, dlq_topic)),
        topic: config.kafka.topic.clone(),
        limits: config.limits(),
        horizon: Duration::from_secs(config.retry_horizon_secs),
        max_in_flight: config.max_in_flight,
        open: BTreeMap::new(),
        sealed: VecDeque::new(),
        plans: BTreeMap::new(),
        in_flight: VecDeque::new(),
        guard: PoisonGuard::new(
            config.poison_window,
            config.poison_max_ratio,
            config.poison_max_consecutive,
        ),
        pressure: Backpressure::default(),
        pause_after: Duration::from_millis(config.pause_after_ms),
        crash_after_insert: config.test_crash_after_insert,
        committed_batches: 0,
        deferred: VecDeque::new(),
        deferred_retry: None,
    };
    health.set_ready(true);
    tracing::info!(topic = %config.kafka.topic, group = %config.group, "consumer started");
    let not_ready_after = Duration::from_secs(config.paused_not_ready_secs);
    let result = async {
        loop {
            let wait = lp.next_due_in();
            let deferred_due = lp.deferred_due_in();
            let holding = lp.pressure.holding();
            let hold_wait = lp
                .pressure
                .pause_due_in(lp.pause_after, Instant::now())
                .map_or(wait, |d| d.min(wait));
            tokio::select! {
                _ = shutdown.wait() => break,
                done = head_done(&mut lp.in_flight) => {
                    let rows = done?;
                    if let Some(f) = lp.in_flight.pop_front() {
                        lp.commit(f.partition, f.range, rows)?;
                    }
                }
                // While holding, messages stay in librdkafka's bounded queue.
                _ = tokio::time::sleep(hold_wait), if holding => {}
                r = tokio::time::timeout(wait, lp.consumer.recv()), if !holding => match r {
                    Err(_) => {}
                    Ok(Ok(m)) => {
                        let (p, o) = (m.partition(), m.offset());
                        let payload = m.payload().map(<[u8]>::to_vec);
                        let key = m.key().map(<[u8]>::to_vec);
                        let traceparent = m.headers().and_then(|h| {
                            h.iter()
                                .find(|x| x.key == "traceparent")
                                .and_then(|x| x.value)
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .map(String::from)
                        });
                        drop(m);
                        // Rebalance callbacks ran inside this poll: forget the
                        // revoked partitions before accepting a message that
                        // may belong to a re-assignment.
                        for rp in lp.consumer.context().take_revoked() {
                            lp.forget(rp);
                        }
                        lp.receive(Received { partition: p, offset: o, key, payload, traceparent }).await?;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "kafka consume error"),
                },
                _ = tokio::time::sleep(deferred_due.unwrap_or(Duration::from_secs(3600))), if deferred_due.is_some() => {
                    lp.retry_deferred().await?;
                }
            }
            for rp in lp.consumer.context().take_revoked() {
                lp.forget(rp);
            }
            if lp.consumer.context().take_assigned() {
                // The new assignment fetches; re-evaluate backpressure.
                lp.pressure.assigned();
                ::metrics::gauge!(metrics::PAUSED).set(0.0);
            }
            lp.seal_due(false);
            lp.dispatch();
            lp.backpressure(&health, not_ready_after);
        }
        health.set_ready(false);
        tracing::info!("draining: inserting open batches");
        let drain = async {
            lp.seal_due(true);
            loop {
                lp.dispatch();
                if lp.in_flight.is_empty() {
                    break Ok::<(), Error>(());
                }
                let rows = head_done(&mut lp.in_flight).await?;
                if let Some(f) = lp.in_flight.pop_front() {
                    lp.commit(f.partition, f.range, rows)?;
                }
            }
        };
        let deadline = Duration::from_secs(config.shutdown_timeout_secs);
        match tokio::time::timeout(deadline, drain).await {
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
    for f in lp.in_flight.drain(..) {
        f.task.abort();
    }
    lp.consumer.unsubscribe();
    drop(lp);
    shutdown.trigger();
    if let Some(h) = health_server {
        let _ = h.await;
    }
    tracing::info!("consumer stopped");
    result
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

    #[test]
    fn revokes_wait_for_the_partitions_in_flight_tasks_only() {
        let counts = Arc::new(InFlightCounts::default());
        let a = counts.start(1);
        let b = counts.start(1);
        let other = counts.start(2);
        assert!(!counts.wait_idle(&[1], Duration::from_millis(20)));
        assert!(counts.wait_idle(&[3], Duration::from_millis(20)));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(a);
            std::thread::sleep(Duration::from_millis(30));
            drop(b);
        });
        assert!(counts.wait_idle(&[1], Duration::from_secs(5)));
        assert!(!counts.wait_idle(&[1, 2], Duration::from_millis(20)));
        drop(other);
        assert!(counts.wait_idle(&[1, 2], Duration::from_millis(20)));
        t.join().expect("thread");
    }

    fn plan(ranges: &[(i64, i64)]) -> Plan {
        Plan {
            loaded: true,
            ranges: ranges
                .iter()
                .map(|&(first, last)| Range { first, last })
                .collect(),
        }
    }

    #[test]
    fn recorded_ranges_are_replayed_exactly_and_free_batches_stop_before_them() {
        let mut p = plan(&[(10, 19), (20, 29), (40, 49)]);
        assert_eq!(p.end_for(10), End::Exactly(19));
        assert_eq!(p.end_for(20), End::Exactly(29));
        // A gap: [30, 39] was never recorded, so never inserted: batch
        // freely, but end before the next recorded range.
        assert_eq!(p.end_for(30), End::AtMost(39));
        assert_eq!(p.end_for(40), End::Exactly(49));
        assert_eq!(p.end_for(50), End::Free);
        // Ranges behind the resume point are done (committed).
        let mut p = plan(&[(10, 19)]);
        assert_eq!(p.end_for(20), End::Free);
    }
}
