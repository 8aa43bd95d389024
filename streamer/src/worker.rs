//! One stream's delivery: live events from its inbox, or stored events from
//! ClickHouse while it catches up (after a start, a pause, an overflow or a
//! replay), each batch retried with backoff until it is delivered or the
//! stream has failed `max_failures` times in a row and pauses itself.
//!
//! The worker owns the stream's [`Status`]: its cursor (per partition, the
//! first offset not yet delivered) moves only after a delivery succeeded,
//! or past offsets it has seen to hold nothing for the stream. The flusher
//! writes statuses; the reader's commits never pass a live stream's written
//! cursor, so a crash re-reads what was not yet delivered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::watch;
use trailhouse_query_api::access::Access;
use trailhouse_query_api::query::Filter;
use trailhouse_schemas::EventRow;
use uuid::Uuid;

use crate::deliver::{Deliver, DeliveryError};
use crate::encode::{Batch, Item};
use crate::mask;
use crate::shared::{Inbox, Positions};
use crate::spec::{Pause, Stream};
use crate::status::{LastError, Mode, ReplayWindow, Status, TestResult};
use crate::store::{EventHistory, StreamStore};

/// How a worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The first retry delay; it doubles up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Stored events read per ClickHouse query while catching up.
    pub history_rows: u32,
    /// How long a worker waits for more live events before it sends a
    /// batch that is not full.
    pub linger: Duration,
    /// The longest a read of stored events may take before it is retried.
    pub history_timeout: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            history_rows: 2000,
            linger: Duration::from_millis(50),
            history_timeout: Duration::from_secs(30),
        }
    }
}

/// A worker's status and what of it was last written.
#[derive(Debug, Default)]
pub struct Cell {
    pub status: Status,
    pub dirty: bool,
    /// The cursor as last written to the store (the reader's commits hold to it).
    pub written: BTreeMap<i32, i64>,
}

pub type SharedCell = Arc<Mutex<Cell>>;

fn lock(c: &SharedCell) -> std::sync::MutexGuard<'_, Cell> {
    match c.lock() {
        Ok(g) => g,
        Err(e) => e.into_inner(),
    }
}

/// The JSON delivered for a stored or live event.
pub fn item_of(mut row: EventRow, access: &Access) -> Item {
    access.strip_headers(&mut row);
    let (partition, offset) = (row.kafka_partition, row.kafka_offset);
    let created_at_us = row.created_at.timestamp_micros();
    let json = serde_json::to_value(row.into_event()).unwrap_or(Value::Null);
    Item {
        partition,
        offset,
        created_at_us,
        json,
    }
}

/// The synthetic event of a test delivery.
pub fn test_event(s: &Stream, n: u64) -> Value {
    let now = trailhouse_schemas::event::format_timestamp(&Utc::now());
    json!({
        "id": Uuid::now_v7(),
        "org_id": s.org_id,
        "created_at": now,
        "received_at": now,
        "actor": {"type": "service", "id": "trailhouse-streamer"},
        "action": {"type": "trailhouse.stream.test", "description": format!("test delivery {n} of stream {}", s.name)},
        "resource": {"type": "stream", "id": s.id, "name": s.name},
    })
}

/// Why delivery stopped for now.
#[derive(Debug)]
enum Stop {
    /// The spec changed (paused, deleted, edited): start over.
    Changed,
    /// The stream paused itself after too many failures.
    Paused,
}

/// One stream's delivery loop.
pub struct Worker<D, S> {
    pub rx: watch::Receiver<Option<Stream>>,
    pub inbox: Arc<Inbox>,
    pub cell: SharedCell,
    pub deliver: Arc<D>,
    pub store: Arc<S>,
    pub positions: Arc<Positions>,
    pub access: Arc<Access>,
    pub pace: Pace,
    /// The assignment epoch the worker last caught up in.
    pub epoch: u64,
    /// Reads of stored events in flight at once, shared by every worker of
    /// the process: a thousand streams catching up together must not send
    /// ClickHouse a thousand queries.
    pub history_slots: Arc<tokio::sync::Semaphore>,
}

/// What a catch-up step did.
#[derive(Debug, PartialEq, Eq)]
enum Caught {
    Up,
    Progress,
    Waiting,
}

impl<D: Deliver, S: StreamStore + EventHistory> Worker<D, S> {
    fn status(&self) -> std::sync::MutexGuard<'_, Cell> {
        lock(&self.cell)
    }

    fn set_mode(&self, mode: Mode) {
        let mut c = self.status();
        if c.status.mode != mode {
            c.status.mode = mode;
            c.dirty = true;
        }
    }

    /// Runs until the stream is deleted.
    pub async fn run(mut self) {
        let mut catching = true;
        let mut target: Option<BTreeMap<i32, i64>> = None;
        let mut resumed = false;
        loop {
            let now = self
                .positions
                .epoch
                .load(std::sync::atomic::Ordering::SeqCst);
            if now != self.epoch {
                self.epoch = now;
                catching = true;
                target = None;
            }
            let Some(stream) = self.rx.borrow_and_update().clone() else {
                self.inbox.refuse();
                return;
            };
            let filter = match crate::filter::parse(&stream.org_id, &stream.filter) {
                Ok(f) => f,
                Err(e) => {
                    self.record_error(&format!("stored filter does not parse: {e}"));
                    self.changed_or(Duration::from_secs(5)).await;
                    continue;
                }
            };
            self.test(&stream).await;
            if stream.paused.is_some() {
                self.inbox.refuse();
                self.set_mode(Mode::Paused);
                catching = true;
                target = None;
                self.changed_or(Duration::from_secs(5)).await;
                continue;
            }
            if !resumed {
                if let Err(e) = self.resume(&stream).await {
                    self.record_error(&e.to_string());
                    self.changed_or(self.pace.first_delay).await;
                    continue;
                }
                resumed = true;
            }
            if let Some(r) = &stream.replay {
                if r.id > self.status().status.replays_seen {
                    if let Err(e) = self.start_replay(&stream, r).await {
                        self.record_error(&e);
                        self.changed_or(self.pace.first_delay).await;
                        continue;
                    }
                    catching = true;
                    target = None;
                }
            }
            let step = if catching {
                self.set_mode(Mode::CatchingUp);
                self.catch_up(&stream, &filter, &mut target).await
            } else if self.inbox.refusing() {
                catching = true;
                target = None;
                Ok(Caught::Progress)
            } else {
                self.set_mode(Mode::Live);
                self.live(&stream).await.map(|_| Caught::Progress)
            };
            match step {
                Ok(Caught::Up) => {
                    catching = false;
                    target = None;
                }
                Ok(Caught::Progress) => {}
                Ok(Caught::Waiting) => self.changed_or(Duration::from_millis(200)).await,
                // Events taken from the inbox may not be delivered: read
                // them back from ClickHouse, from the cursor.
                Err(Stop::Changed | Stop::Paused) => {
                    catching = true;
                    target = None;
                }
            }
            self.update_lag();
        }
    }

    /// Waits for a spec change or `d`.
    async fn changed_or(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.rx.changed()).await;
    }

    fn record_error(&self, message: &str) {
        let mut c = self.status();
        c.status.last_error = Some(LastError {
            at: Utc::now(),
            message: message.to_string(),
        });
        c.dirty = true;
    }

    /// After a start: an object store continues after its last object, in
    /// each partition's directory (a replay's below its window's end, the
    /// live one past it).
    async fn resume(&self, stream: &Stream) -> Result<(), DeliveryError> {
        let (cursor, window) = {
            let c = self.status();
            (c.status.cursor.clone(), c.status.replay.clone())
        };
        for (p, at) in cursor {
            let (dir, cap) = match &window {
                Some(w) => match w.end.get(&p) {
                    Some(end) if at < *end => (format!("replay-{}", w.id), Some(*end)),
                    _ => ("live".to_string(), None),
                },
                None => ("live".to_string(), None),
            };
            if let Some(last) = self.deliver.written_through(stream, &dir, p).await? {
                let next = cap.map_or(last + 1, |c| (last + 1).min(c));
                if next > at {
                    let mut c = self.status();
                    c.status.cursor.insert(p, next);
                    c.dirty = true;
                }
            }
        }
        Ok(())
    }

    async fn test(&self, stream: &Stream) {
        let seen = self.status().status.tests_seen;
        if stream.tests <= seen {
            return;
        }
        let batch = Batch {
            stream: stream.id,
            partition: -1,
            first_offset: i64::try_from(stream.tests).unwrap_or(i64::MAX),
            last_offset: i64::try_from(stream.tests).unwrap_or(i64::MAX),
            events: vec![test_event(stream, stream.tests)],
        };
        let r = self.deliver.send(stream, "test", &batch).await;
        let mut c = self.status();
        c.status.tests_seen = stream.tests;
        c.status.last_test = Some(TestResult {
            id: stream.tests,
            at: Utc::now(),
            ok: r.is_ok(),
            error: r.err().map(|e| e.to_string()),
        });
        c.dirty = true;
    }

    async fn start_replay(&self, stream: &Stream, r: &crate::spec::Replay) -> Result<(), String> {
        let firsts = self
            .store
            .first_offsets(&stream.org_id, r.from)
            .await
            .map_err(|e| e.to_string())?;
        let mut c = self.status();
        // A replay's end is where the stream was (past a replay still in
        // progress), in the partitions this streamer reads.
        let mut end: BTreeMap<i32, i64> = c
            .status
            .cursor
            .iter()
            .filter(|(p, _)| self.positions.owns(**p))
            .map(|(p, at)| {
                let old = c.status.replay.as_ref().and_then(|w| w.end.get(p)).copied();
                (*p, old.map_or(*at, |o| o.max(*at)))
            })
            .collect();
        for (p, part) in self.positions.all() {
            let next = part.next.load(std::sync::atomic::Ordering::SeqCst);
            if part.owned.load(std::sync::atomic::Ordering::SeqCst) && next >= 0 {
                end.entry(p).or_insert(next);
            }
        }
        for (p, first) in firsts {
            if !self.positions.owns(p) {
                continue;
            }
            let e = *end.entry(p).or_insert(first);
            let cur = c.status.cursor.get(&p).copied().unwrap_or(e);
            c.status.cursor.insert(p, cur.min(first));
        }
        end.retain(|p, _| c.status.cursor.contains_key(p));
        c.status.replay = Some(ReplayWindow {
            id: r.id,
            from: r.from,
            to: r.to,
            end,
        });
        c.status.replays_seen = r.id;
        c.dirty = true;
        Ok(())
    }

    /// One step of catching up from ClickHouse towards the live tail.
    async fn catch_up(
        &mut self,
        stream: &Stream,
        filter: &Filter,
        target: &mut Option<BTreeMap<i32, i64>>,
    ) -> Result<Caught, Stop> {
        if target.is_none() || self.inbox.refusing() {
            let (goal, dropped) = self.inbox.clear(&self.positions);
            // A partition the stream has no place in yet starts at the
            // first event its inbox held (those are read back from
            // ClickHouse), else where the cleared inbox starts: the stream
            // delivers from its creation on.
            let mut c = self.status();
            for (p, at) in &goal {
                if let std::collections::btree_map::Entry::Vacant(e) = c.status.cursor.entry(*p) {
                    e.insert(dropped.get(p).map_or(*at, |d| (*d).min(*at)));
                    c.dirty = true;
                }
            }
            *target = Some(goal);
        }
        let goal = target.clone().unwrap_or_default();
        let (cursor, window) = {
            let c = self.status();
            (c.status.cursor.clone(), c.status.replay.clone())
        };
        let mut up = true;
        let mut progressed = false;
        for (p, at) in cursor {
            let Some(end) = goal.get(&p).copied() else {
                continue;
            };
            if at >= end {
                continue;
            }
            up = false;
            let mut until = end.min(self.positions.stored(p));
            if let Some(w_end) = window
                .as_ref()
                .and_then(|w| w.end.get(&p))
                .filter(|e| at < **e)
            {
                until = until.min(*w_end);
            }
            if at >= until {
                continue;
            }
            let read = async {
                let _slot = self.history_slots.acquire().await;
                tokio::time::timeout(
                    self.pace.history_timeout,
                    self.store
                        .after(&stream.org_id, p, at, until, self.pace.history_rows),
                )
                .await
            };
            let rows = match read.await {
                Ok(Ok(r)) => r,
                Err(_) => {
                    self.record_error("reading stored events: timed out");
                    return Ok(Caught::Progress);
                }
                Ok(Err(e)) => {
                    self.record_error(&format!("reading stored events: {e}"));
                    self.changed_or(self.pace.first_delay).await;
                    return Ok(Caught::Progress);
                }
            };
            let full = rows.len() >= self.pace.history_rows as usize;
            let reached = if full {
                rows.last().map(|r| r.kafka_offset + 1).unwrap_or(until)
            } else {
                until
            };
            let items: Vec<Item> = rows
                .into_iter()
                .filter(|r| filter.matches(r))
                .map(|r| item_of(r, &self.access))
                .collect();
            self.deliver_items(stream, items).await?;
            let mut c = self.status();
            let e = c.status.cursor.entry(p).or_insert(reached);
            *e = (*e).max(reached);
            c.dirty = true;
            progressed = true;
        }
        self.finish_window();
        Ok(if up {
            Caught::Up
        } else if progressed {
            Caught::Progress
        } else {
            Caught::Waiting
        })
    }

    /// Ends a replay window once every partition has passed it.
    fn finish_window(&self) {
        let mut c = self.status();
        let done = c
            .status
            .replay
            .as_ref()
            .is_some_and(|w| w.done(&c.status.cursor));
        if done {
            c.status.replay = None;
            c.dirty = true;
        }
    }

    /// One step of live delivery.
    async fn live(&mut self, stream: &Stream) -> Result<(), Stop> {
        let max = stream.destination.max_batch();
        let (mut items, done) = self.inbox.take(max, &self.positions, self.epoch);
        if items.is_empty() {
            if let Some(done) = done {
                let mut c = self.status();
                for (p, d) in done {
                    if let Some(at) = c.status.cursor.get_mut(&p) {
                        if d > *at {
                            *at = d;
                            c.dirty = true;
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.inbox.wait() => {}
                _ = self.rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            return Ok(());
        }
        if items.len() < max {
            tokio::time::sleep(self.pace.linger).await;
            let (more, _) = self
                .inbox
                .take(max - items.len(), &self.positions, self.epoch);
            items.extend(more);
        }
        let cursor = {
            let mut c = self.status();
            for i in &items {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    c.status.cursor.entry(i.partition)
                {
                    e.insert(i.offset);
                    c.dirty = true;
                }
            }
            c.status.cursor.clone()
        };
        items.retain(|i| cursor.get(&i.partition).is_none_or(|c| i.offset >= *c));
        self.deliver_items(stream, items).await
    }

    /// Delivers items (masked, in order, batched), each batch until it
    /// succeeds; the cursor moves after each.
    async fn deliver_items(&mut self, stream: &Stream, items: Vec<Item>) -> Result<(), Stop> {
        let window = self.status().status.replay.clone();
        let mut items = items;
        if let Some(w) = &window {
            items.retain(|i| w.admits(i.partition, i.offset, i.created_at_us));
        }
        for i in &mut items {
            mask::apply(&mut i.json, &stream.masks, &stream.secrets.salt);
        }
        for batch in split_at_window(stream.id, items, stream.destination.max_batch(), &window) {
            let dir = match &window {
                Some(w)
                    if w.end
                        .get(&batch.partition)
                        .is_some_and(|e| batch.first_offset < *e) =>
                {
                    format!("replay-{}", w.id)
                }
                _ => "live".to_string(),
            };
            self.send_until_done(stream, &dir, &batch).await?;
        }
        Ok(())
    }

    async fn send_until_done(
        &mut self,
        stream: &Stream,
        dir: &str,
        batch: &Batch,
    ) -> Result<(), Stop> {
        let mut delay = self.pace.first_delay;
        loop {
            match self.deliver.send(stream, dir, batch).await {
                Ok(()) => {
                    let mut c = self.status();
                    let s = &mut c.status;
                    s.delivered += batch.events.len() as u64;
                    s.consecutive_failures = 0;
                    s.last_delivered_at = Some(Utc::now());
                    if let Some(t) = batch
                        .events
                        .iter()
                        .filter_map(|e| e.get("created_at")?.as_str())
                        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .max()
                    {
                        let t = t.with_timezone(&Utc);
                        s.last_event_at = Some(s.last_event_at.map_or(t, |l| l.max(t)));
                    }
                    let e = s
                        .cursor
                        .entry(batch.partition)
                        .or_insert(batch.last_offset + 1);
                    *e = (*e).max(batch.last_offset + 1);
                    c.dirty = true;
                    metrics::counter!(crate::metrics::DELIVERED, "destination" => stream.destination.kind())
                        .increment(batch.events.len() as u64);
                    return Ok(());
                }
                Err(e) => {
                    let failures = {
                        let mut c = self.status();
                        let s = &mut c.status;
                        s.failed += 1;
                        s.consecutive_failures += 1;
                        s.last_error = Some(LastError {
                            at: Utc::now(),
                            message: e.to_string(),
                        });
                        let n = s.consecutive_failures;
                        c.dirty = true;
                        n
                    };
                    metrics::counter!(crate::metrics::FAILED, "destination" => stream.destination.kind())
                        .increment(1);
                    tracing::warn!(stream = %stream.id, error = %e, failures, "delivery failed");
                    if failures >= stream.max_failures {
                        self.pause_self(stream, &e).await;
                        return Err(Stop::Paused);
                    }
                    if tokio::time::timeout(delay, self.rx.changed()).await.is_ok() {
                        return Err(Stop::Changed);
                    }
                    delay = (delay * 2).min(self.pace.max_delay);
                    let mut c = self.status();
                    c.status.retried += 1;
                    c.dirty = true;
                    metrics::counter!(crate::metrics::RETRIED, "destination" => stream.destination.kind())
                        .increment(1);
                }
            }
        }
    }

    async fn pause_self(&mut self, stream: &Stream, e: &DeliveryError) {
        // The stored version, not this worker's copy: an edit or a secret
        // rotation made meanwhile must survive the pause.
        let stored = self
            .store
            .streams(Some(&stream.org_id))
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|s| s.id == stream.id));
        let mut paused = stored.unwrap_or_else(|| stream.clone());
        paused.paused = Some(Pause {
            reason: format!(
                "{} deliveries failed in a row; the last: {e}",
                stream.max_failures
            ),
            at: Utc::now(),
            automatic: true,
        });
        paused.updated_at = Utc::now();
        if let Err(err) = self.store.put(&paused).await {
            tracing::warn!(stream = %stream.id, error = %err, "could not record the automatic pause");
        }
        metrics::counter!(crate::metrics::AUTO_PAUSED).increment(1);
        tracing::warn!(stream = %stream.id, "stream paused after failures");
        // Local effect at once; the poller brings the stored version.
        self.inbox.refuse();
        self.set_mode(Mode::Paused);
        self.changed_or(Duration::from_secs(2)).await;
    }

    fn update_lag(&self) {
        let (n, oldest) = self.inbox.backlog();
        let mut c = self.status();
        let behind: i64 = if c.status.mode == Mode::CatchingUp {
            c.status
                .cursor
                .iter()
                .map(|(p, at)| {
                    (self
                        .positions
                        .part(*p)
                        .next
                        .load(std::sync::atomic::Ordering::SeqCst)
                        - at)
                        .max(0)
                })
                .sum()
        } else {
            0
        };
        let lag_events = n as u64 + u64::try_from(behind).unwrap_or(0);
        let lag_seconds = oldest
            .map(|t| ((Utc::now().timestamp_micros() - t).max(0) as f64) / 1e6)
            .unwrap_or(0.0);
        if c.status.lag_events != lag_events || (c.status.lag_seconds - lag_seconds).abs() > 0.5 {
            c.status.lag_events = lag_events;
            c.status.lag_seconds = lag_seconds;
            c.dirty = true;
        }
    }
}

/// Batches that never straddle a replay window's end.
fn split_at_window(
    stream: Uuid,
    items: Vec<Item>,
    max: usize,
    window: &Option<ReplayWindow>,
) -> Vec<Batch> {
    let Some(w) = window else {
        return Batch::split(stream, items, max);
    };
    let (inside, outside): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| w.end.get(&i.partition).is_some_and(|e| i.offset < *e));
    let mut out = Batch::split(stream, inside, max);
    out.extend(Batch::split(stream, outside, max));
    out
}
