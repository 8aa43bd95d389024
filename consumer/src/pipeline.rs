//! The batch protocol, with no Kafka in it: messages in, commit requests
//! out.
//!
//! A [`Pipeline`] keeps one open batch per partition, seals it at its
//! limits or at the end of a recorded range being replayed, records its
//! range, inserts it and dead-letters its poison messages (through the
//! [`RowWriter`], [`StateStore`] and [`DeadLetters`] ports), and hands back a
//! [`CommitRequest`] per batch, in the order the batches were sealed. It
//! never commits, pauses or seeks: the driver ([`crate::processor`]) owns
//! the source and applies what the pipeline returns. See
//! `docs/ARCHITECTURE.md` for why each step is safe.

mod inflight;
mod plan;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use trailhouse_schemas::rowbinary::RowKey;
use trailhouse_schemas::{EventRow, Lineage};

pub use inflight::InFlightCounts;
use plan::{End, Plan};
use store::{store, Sealed};

use crate::batch::{Batch, BatchLimits};
use crate::dlq::{self, DeadLetters, PoisonGuard};
use crate::retry::{self, Hold};
use crate::state::{Range, StateError, StateStore};
use crate::writer::RowWriter;
use crate::{metrics, Error};

/// What the pipeline needs to know.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// The topic read (it names the deduplication tokens).
    pub topic: String,
    pub limits: BatchLimits,
    /// How long a failing insert, record or dead-letter write is retried.
    pub horizon: Duration,
    /// Inserts running at once.
    pub max_in_flight: NonZeroUsize,
    pub poison: PoisonGuard,
}

/// A message taken off the source, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub traceparent: Option<String>,
    /// The message's Kafka timestamp (ms since the epoch), when it has one.
    pub timestamp_ms: Option<i64>,
}

/// A batch is in ClickHouse (and its poison in the dead-letter topic): the
/// partition may be committed up to `next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRequest {
    pub partition: i32,
    /// The first offset not yet stored: the offset to commit.
    pub next_offset: i64,
}

/// A batch being filled, with the dead-letter writes of its poison messages.
struct Open {
    batch: Batch,
    end: End,
    dead_letters: Vec<JoinHandle<Result<(), dlq::DeadLetterError>>>,
    /// The trace contexts of the requests the batch carries (the first is
    /// its parent; all are linked), at most [`MAX_LINKS`].
    traceparents: Vec<String>,
    /// The Kafka timestamp of its oldest message.
    oldest_ms: Option<i64>,
}

/// The most requests one batch span links.
pub const MAX_LINKS: usize = 128;

impl Open {
    fn reached_end(&self) -> bool {
        match self.end {
            End::Free => false,
            End::Exactly(e) | End::AtMost(e) => self.batch.last_offset >= e,
        }
    }
}

/// Why a message cannot be accepted yet.
enum NotReady {
    /// The state store cannot be read.
    State(StateError),
    /// The partition's plan must wait for its running inserts.
    InFlight(i32),
}

/// A sealed batch whose insert is running.
struct InFlight {
    partition: i32,
    range: Range,
    /// Its rows' keys: a later batch of the partition looks for copies in
    /// them (they may not be stored yet).
    keys: Arc<Vec<RowKey>>,
    task: JoinHandle<Result<usize, Error>>,
    oldest_ms: Option<i64>,
    /// Sent before its partition was revoked or rewound: it finishes, but
    /// its offset is not committed. The partition is read again from its
    /// committed offset and its batches planned from the recorded ranges; a
    /// commit from the earlier reading could land inside a batch of the new
    /// one, and the next owner would resume in the middle of a range.
    stale: bool,
}

/// The protocol state of one consumer: open and sealed batches, recovery
/// plans, running inserts in seal order, deferred messages.
pub struct Pipeline<W, S, D> {
    writer: Arc<W>,
    state: Arc<S>,
    dead_letters: Arc<D>,
    settings: PipelineSettings,
    open: BTreeMap<i32, Open>,
    sealed: VecDeque<Open>,
    /// Recovery plans of the partitions read since they were (re)assigned.
    plans: BTreeMap<i32, Plan>,
    /// The offset each partition's next message must have; a lower one
    /// means the partition was rewound.
    next: BTreeMap<i32, i64>,
    /// The furthest offset asked to be committed per partition since it
    /// was assigned: a batch replayed after a rewind does not commit again
    /// (or backwards).
    committed: BTreeMap<i32, i64>,
    in_flight: VecDeque<InFlight>,
    counts: Arc<InFlightCounts>,
    guard: PoisonGuard,
    /// Messages received while the state store could not be read, or while
    /// a rewound or reassigned partition waits for its running inserts;
    /// accepted in order once they can be (the driver holds, then pauses,
    /// meanwhile).
    deferred: VecDeque<Received>,
    /// Backoff while the state store cannot be read.
    hold: Option<Hold>,
    /// When to look again at a partition waiting for its running inserts.
    inflight_poll: Option<Instant>,
}

impl<W: RowWriter, S: StateStore, D: DeadLetters> Pipeline<W, S, D> {
    pub fn new(
        writer: Arc<W>,
        state: Arc<S>,
        dead_letters: Arc<D>,
        settings: PipelineSettings,
    ) -> Self {
        Pipeline {
            writer,
            state,
            dead_letters,
            guard: settings.poison.clone(),
            settings,
            open: BTreeMap::new(),
            sealed: VecDeque::new(),
            plans: BTreeMap::new(),
            next: BTreeMap::new(),
            committed: BTreeMap::new(),
            in_flight: VecDeque::new(),
            counts: Arc::default(),
            deferred: VecDeque::new(),
            hold: None,
            inflight_poll: None,
        }
    }

    /// The running-task counts a revoke waits on.
    pub fn in_flight_counts(&self) -> Arc<InFlightCounts> {
        self.counts.clone()
    }

    /// Accepts a message, or defers it (and everything after it) while the
    /// state store cannot be read or its partition waits for running
    /// inserts. Never sleeps: the driver calls [`Pipeline::retry_deferred`]
    /// after [`Pipeline::deferred_due_in`].
    pub async fn receive(&mut self, m: Received) -> Result<(), Error> {
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
    pub async fn retry_deferred(&mut self) -> Result<(), Error> {
        while let Some((p, o)) = self.deferred.front().map(|m| (m.partition, m.offset)) {
            if let Err(e) = self.prepare(p, o).await {
                return self.hold(e);
            }
            if let Some(m) = self.deferred.pop_front() {
                self.accept(m)?;
            }
        }
        self.hold = None;
        self.inflight_poll = None;
        Ok(())
    }

    /// Time until the deferred messages are tried again, if any wait.
    pub fn deferred_due_in(&self) -> Option<Duration> {
        let poll = self
            .inflight_poll
            .map(|at| at.saturating_duration_since(Instant::now()));
        match (self.hold.as_ref().map(Hold::due_in), poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The partition was revoked: drops what was not sent (open and sealed
    /// batches, deferred messages) and forgets its plan. Batches in flight
    /// finish (the caller waited for them, see [`InFlightCounts`]) but are
    /// not committed.
    pub fn revoke(&mut self, partition: i32) {
        self.forget(partition);
        self.committed.remove(&partition);
        self.deferred.retain(|m| m.partition != partition);
        if self.deferred.is_empty() {
            self.hold = None;
            self.inflight_poll = None;
        }
    }

    /// Drops the unsent batches of a partition and forgets its plan.
    fn forget(&mut self, partition: i32) {
        let dropped = usize::from(self.open.remove(&partition).is_some())
            + self
                .sealed
                .iter()
                .filter(|o| o.batch.partition == partition)
                .count();
        self.sealed.retain(|o| o.batch.partition != partition);
        for f in self
            .in_flight
            .iter_mut()
            .filter(|f| f.partition == partition)
        {
            f.stale = true;
        }
        self.plans.remove(&partition);
        self.next.remove(&partition);
        if dropped > 0 {
            ::metrics::counter!(metrics::BATCHES_DROPPED).increment(dropped as u64);
            tracing::info!(partition, dropped, "dropped unsent batches");
        }
    }

    /// Seals batches whose age is up, or every open batch when `all`
    /// (draining), and starts inserts while there is room. A batch that
    /// repeats a recorded range is sealed only at its end, even when
    /// draining: sealed early it would get another token and store its rows
    /// a second time (left open, it is replayed by the next owner).
    pub fn flush(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<i32> = self
            .open
            .iter()
            .filter(|(_, o)| {
                o.batch.len_offsets() > 0
                    && !matches!(o.end, End::Exactly(_))
                    && (all || o.batch.is_due(&self.settings.limits, now))
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.seal(p);
        }
        self.dispatch();
    }

    /// The next batch in seal order, once its insert and dead-letter writes
    /// finished: what to commit, or `None` when there is nothing to commit
    /// (a batch sent before its partition was revoked or rewound, or a
    /// replayed one whose end was committed already). Pending while none
    /// runs. Cancel-safe: the batch stays at the head until returned.
    pub async fn completed(&mut self) -> Result<Option<CommitRequest>, Error> {
        let Some(head) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let rows = match (&mut head.task).await {
            Ok(r) => r?,
            Err(e) => return Err(Error::Task(e.to_string())),
        };
        let (partition, next_offset, stale) = (head.partition, head.range.last + 1, head.stale);
        self.in_flight.pop_front();
        ::metrics::counter!(metrics::ROWS_INSERTED).increment(rows as u64);
        if stale
            || self
                .committed
                .get(&partition)
                .is_some_and(|c| *c >= next_offset)
        {
            return Ok(None);
        }
        self.committed.insert(partition, next_offset);
        Ok(Some(CommitRequest {
            partition,
            next_offset,
        }))
    }

    /// Per partition, the Kafka timestamp of the oldest message taken but
    /// not yet committed (open, sealed, inserting or deferred).
    pub fn oldest_pending_ms(&self) -> BTreeMap<i32, i64> {
        let mut oldest = BTreeMap::new();
        let mut note = |p: i32, ts: Option<i64>| {
            if let Some(ts) = ts {
                oldest
                    .entry(p)
                    .and_modify(|o: &mut i64| *o = (*o).min(ts))
                    .or_insert(ts);
            }
        };
        for f in self.in_flight.iter().filter(|f| !f.stale) {
            note(f.partition, f.oldest_ms);
        }
        for o in self.sealed.iter().chain(self.open.values()) {
            note(o.batch.partition, o.oldest_ms);
        }
        for m in &self.deferred {
            note(m.partition, m.timestamp_ms);
        }
        oldest
    }

    /// Whether sealed batches wait for an insert slot, or messages wait
    /// (for the state store, or for a partition's running inserts): the
    /// driver stops taking messages.
    pub fn congested(&self) -> bool {
        (!self.sealed.is_empty() && self.in_flight.len() >= self.settings.max_in_flight.get())
            || !self.deferred.is_empty()
    }

    /// Whether nothing is sealed or running (the drain is done; a partial
    /// replay batch may still be open, see [`Pipeline::flush`]).
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.sealed.is_empty()
    }

    /// Time until the oldest free batch is due.
    pub fn next_due_in(&self) -> Duration {
        let now = Instant::now();
        let max_age = self.settings.limits.max_age;
        self.open
            .values()
            .filter(|o| o.batch.len_offsets() > 0 && !matches!(o.end, End::Exactly(_)))
            .map(|o| max_age.saturating_sub(now.duration_since(o.batch.started)))
            .min()
            .unwrap_or(max_age)
            .max(Duration::from_millis(5))
    }

    /// Readies a partition for the message at `offset`: drops what was not
    /// sent after a rewind and reads the recovery plan when it is not
    /// loaded. The only step that touches the state store; idempotent.
    async fn prepare(&mut self, partition: i32, offset: i64) -> Result<(), NotReady> {
        // A partition is read in increasing offsets; a lower one means it
        // was re-seeked. What was not sent is stale and the recovery plan
        // is read again.
        if let Some(&next) = self.next.get(&partition) {
            if offset < next {
                tracing::warn!(
                    partition,
                    offset,
                    next,
                    "partition rewound, dropping unsent batches"
                );
                self.forget(partition);
            }
        }
        if !self.plans.contains_key(&partition) {
            // A batch of this partition still being recorded may not be in
            // the state store yet: a plan read now could miss its range.
            if self.counts.running(partition) > 0 {
                return Err(NotReady::InFlight(partition));
            }
            let ranges = self
                .state
                .load(partition, offset)
                .await
                .map_err(NotReady::State)?;
            if !ranges.is_empty() {
                tracing::info!(
                    partition,
                    offset,
                    ranges = ranges.len(),
                    "replaying recorded batch ranges"
                );
            }
            self.plans.insert(partition, Plan::new(ranges));
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
            timestamp_ms,
        } = m;
        // Offsets may skip (transaction markers, compaction): a message past
        // the end a batch must keep seals that batch first, so that no
        // batch crosses into a recorded range. A replayed batch keeps its
        // recorded range, and so its token.
        if let Some(o) = self.open.get_mut(&partition) {
            if let End::Exactly(e) | End::AtMost(e) = o.end {
                if offset > e {
                    if matches!(o.end, End::Exactly(_)) {
                        o.batch.last_offset = e;
                    }
                    self.seal(partition);
                }
            }
        }
        let plans = &mut self.plans;
        let open = self.open.entry(partition).or_insert_with(|| {
            let (first, end) = plans
                .get_mut(&partition)
                .map_or((offset, End::Free), |p| p.start_at(offset));
            Open {
                batch: Batch::new(partition, first, Instant::now()),
                end,
                dead_letters: Vec::new(),
                traceparents: Vec::new(),
                oldest_ms: None,
            }
        });
        if let Some(tp) = traceparent {
            // A request's events are consecutive: one entry per request.
            if open.traceparents.len() < MAX_LINKS && open.traceparents.last() != Some(&tp) {
                open.traceparents.push(tp);
            }
        }
        open.oldest_ms = match (open.oldest_ms, timestamp_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.next.insert(partition, offset + 1);
        let decoded = match payload.as_deref() {
            Some(bytes) => trailhouse_schemas::decode(bytes).map_err(|e| e.to_string()),
            None => Err("message has no payload".to_string()),
        };
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
                    topic: self.settings.topic.clone(),
                    partition,
                    offset,
                    key,
                    payload,
                    error,
                };
                let (dead_letters, horizon) = (self.dead_letters.clone(), self.settings.horizon);
                // A failed dead-letter write is retried like an insert; the
                // offset never moves past the message until one succeeded.
                open.dead_letters.push(tokio::spawn(async move {
                    retry::within_horizon(
                        retry::Step::DeadLetter,
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
        if open.reached_end() || open.batch.is_full(&self.settings.limits) {
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

    /// Starts inserts of sealed batches while there is room.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.settings.max_in_flight.get() {
            let Some(o) = self.sealed.pop_front() else {
                break;
            };
            let batch = o.batch;
            let range = Range {
                first: batch.first_offset,
                last: batch.last_offset,
            };
            let token = batch.dedup_token(&self.settings.topic);
            ::metrics::histogram!(metrics::BATCH_ROWS).record(batch.rows.len() as f64);
            ::metrics::histogram!(metrics::BATCH_BYTES).record(batch.bytes() as f64);
            ::metrics::histogram!(metrics::BATCH_AGE_SECONDS)
                .record(batch.started.elapsed().as_secs_f64());
            let span = tracing::info_span!("batch", topic = %self.settings.topic, partition = batch.partition,
                first_offset = range.first, last_offset = range.last, rows = batch.rows.len(),
                requests = o.traceparents.len());
            // The batch joins the trace of the first request it carries and
            // links every one of them.
            if let Some(tp) = o.traceparents.first() {
                trailhouse_common::telemetry::continue_trace(&span, tp);
            }
            for tp in &o.traceparents {
                trailhouse_common::telemetry::link_trace(&span, tp);
            }
            let partition = batch.partition;
            let counted = self.counts.start(partition);
            let keys = Arc::new(batch.rows.keys());
            let earlier: Vec<Arc<Vec<RowKey>>> = self
                .in_flight
                .iter()
                .filter(|f| f.partition == partition)
                .map(|f| f.keys.clone())
                .collect();
            let work = store(
                self.writer.clone(),
                self.state.clone(),
                self.settings.horizon,
                Sealed {
                    batch,
                    token,
                    keys: keys.clone(),
                    earlier,
                },
                o.dead_letters,
            );
            let task = tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let _counted = counted;
                    work.await
                },
                span,
            ));
            self.in_flight.push_back(InFlight {
                partition,
                range,
                keys,
                task,
                oldest_ms: o.oldest_ms,
                stale: false,
            });
        }
    }

    /// Schedules the next try of the deferred messages, or gives up on a
    /// state store that stayed unreadable past the horizon. A wait for
    /// running inserts has no horizon of its own (each insert has one) and
    /// does not count against the state store's: it looks again shortly.
    fn hold(&mut self, why: NotReady) -> Result<(), Error> {
        match why {
            NotReady::State(e) => {
                let hold = self.hold.get_or_insert_with(Hold::start);
                match hold.again(self.settings.horizon) {
                    Some(delay) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "consumer state unavailable; holding messages");
                        Ok(())
                    }
                    None => Err(Error::State(e)),
                }
            }
            NotReady::InFlight(partition) => {
                if self.inflight_poll.is_none() {
                    tracing::info!(
                        partition,
                        "waiting for the partition's running inserts before reading its plan"
                    );
                }
                self.inflight_poll = Some(Instant::now() + INFLIGHT_POLL);
                Ok(())
            }
        }
    }
}

/// How often a partition waiting for its running inserts is looked at.
const INFLIGHT_POLL: Duration = Duration::from_millis(20);

impl<W, S, D> Drop for Pipeline<W, S, D> {
    /// A dropped pipeline is a stopped consumer: its inserts stop too
    /// (whatever they stored is replayed by the next owner).
    fn drop(&mut self) {
        for f in self.in_flight.drain(..) {
            f.task.abort();
        }
    }
}
