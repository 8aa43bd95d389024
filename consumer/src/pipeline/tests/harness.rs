//! The in-memory world the protocol tests play scenarios in: one consumer
//! after another over the same doubles, a scenario's steps, and the checks.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::super::*;
use crate::testing::message_id;
use crate::testing::{
    assert_copies_marked, assert_stored_once, MemoryDeadLetters, MemoryState, MemoryWriter,
};
use trailhouse_schemas::AuditEvent;

pub const TOPIC: &str = "audit";

pub type TestPipeline = Pipeline<MemoryWriter, MemoryState, MemoryDeadLetters>;

/// The example event every message carries; each message's org id names
/// its partition and offset, so the stored rows say which messages they are.
fn base_event() -> &'static AuditEvent {
    static EVENT: OnceLock<AuditEvent> = OnceLock::new();
    EVENT.get_or_init(|| trailhouse_schemas::examples::all().remove(0))
}

pub fn message(partition: i32, offset: i64, poison: bool) -> Received {
    let payload = (!poison).then(|| {
        let event = AuditEvent {
            org_id: message_id(partition, offset),
            ..base_event().clone()
        };
        trailhouse_schemas::encode(&event).expect("example encodes")
    });
    Received {
        partition,
        offset,
        key: Some(b"org".to_vec()),
        payload,
        traceparent: None,
        timestamp_ms: Some(1_700_000_000_000 + offset),
    }
}

pub fn is_valid(m: &Received) -> bool {
    m.payload.is_some()
}

/// Logs of `sizes[p]` messages per partition; `poison(p, offset)` says which
/// have no payload.
pub fn logs(sizes: &[usize], poison: impl Fn(i32, i64) -> bool) -> BTreeMap<i32, Vec<Received>> {
    logs_with_gaps(sizes, poison, |_, _| false)
}

/// [`logs`] whose offsets skip one before message `i` where `gap(p, i)`
/// (transaction markers, compaction).
pub fn logs_with_gaps(
    sizes: &[usize],
    poison: impl Fn(i32, i64) -> bool,
    gap: impl Fn(i32, usize) -> bool,
) -> BTreeMap<i32, Vec<Received>> {
    logs_with_copies(sizes, poison, gap, |_, _| None)
}

/// [`logs_with_gaps`] where message `i` repeats the event of message
/// `i - k` of its partition when `copy(p, i)` is `Some(k)` (a retried
/// publish; poison messages are not repeated).
pub fn logs_with_copies(
    sizes: &[usize],
    poison: impl Fn(i32, i64) -> bool,
    gap: impl Fn(i32, usize) -> bool,
    copy: impl Fn(i32, usize) -> Option<usize>,
) -> BTreeMap<i32, Vec<Received>> {
    let mut logs = logs_with_some_gaps(sizes, poison, gap);
    for (p, log) in logs.iter_mut() {
        for i in 0..log.len() {
            let Some(k) = copy(*p, i).filter(|k| *k > 0 && *k <= i) else {
                continue;
            };
            if log[i].payload.is_some() && log[i - k].payload.is_some() {
                log[i].payload = log[i - k].payload.clone();
            }
        }
    }
    logs
}

fn logs_with_some_gaps(
    sizes: &[usize],
    poison: impl Fn(i32, i64) -> bool,
    gap: impl Fn(i32, usize) -> bool,
) -> BTreeMap<i32, Vec<Received>> {
    sizes
        .iter()
        .enumerate()
        .map(|(p, n)| {
            let p = p as i32;
            let mut offset = 0;
            let log = (0..*n)
                .map(|i| {
                    offset += i64::from(gap(p, i));
                    let m = message(p, offset, poison(p, offset));
                    offset += 1;
                    m
                })
                .collect();
            (p, log)
        })
        .collect()
}

/// The offset after a log's last message.
pub fn log_end(log: &[Received]) -> i64 {
    log.last().map_or(0, |m| m.offset + 1)
}

pub fn settings(max_rows: usize, max_in_flight: usize) -> PipelineSettings {
    PipelineSettings {
        topic: TOPIC.into(),
        limits: BatchLimits {
            max_rows,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(3600),
        },
        horizon: Duration::from_secs(3600),
        max_in_flight: NonZeroUsize::new(max_in_flight).expect("positive"),
        poison: PoisonGuard::new(1000, 0.5, 100),
    }
}

/// The engines one consumer after another talks to, the partition logs, and
/// the group's committed offsets.
pub struct World {
    pub writer: MemoryWriter,
    pub state: MemoryState,
    pub dead_letters: MemoryDeadLetters,
    pub logs: BTreeMap<i32, Vec<Received>>,
    pub committed: BTreeMap<i32, i64>,
    /// Where the current member reads next, per partition.
    pub position: BTreeMap<i32, i64>,
    pub settings: PipelineSettings,
}

impl World {
    pub fn new(logs: BTreeMap<i32, Vec<Received>>, settings: PipelineSettings) -> Self {
        World {
            writer: MemoryWriter::default(),
            state: MemoryState::default(),
            dead_letters: MemoryDeadLetters::default(),
            committed: logs.keys().map(|p| (*p, 0)).collect(),
            position: logs.keys().map(|p| (*p, 0)).collect(),
            logs,
            settings,
        }
    }

    /// A consumer (re)started: it reads every partition from its committed
    /// offset.
    pub fn start(&mut self) -> TestPipeline {
        self.position = self.committed.clone();
        Pipeline::new(
            Arc::new(self.writer.clone()),
            Arc::new(self.state.clone()),
            Arc::new(self.dead_letters.clone()),
            self.settings.clone(),
        )
    }

    /// Feeds up to `n` next messages of `partition`.
    pub async fn feed(
        &mut self,
        pl: &mut TestPipeline,
        partition: i32,
        n: usize,
    ) -> Result<(), Error> {
        for _ in 0..n {
            let at = self.position[&partition];
            let Some(m) = self.logs[&partition]
                .iter()
                .find(|m| m.offset >= at)
                .cloned()
            else {
                break;
            };
            self.position.insert(partition, m.offset + 1);
            pl.receive(m).await?;
            pl.flush(false);
        }
        Ok(())
    }

    /// Waits for the next finished batch (a blocked insert times out) and
    /// commits it when `commit`.
    pub async fn complete(
        &mut self,
        pl: &mut TestPipeline,
        commit: bool,
    ) -> Result<Option<CommitRequest>, Error> {
        let Ok(done) = tokio::time::timeout(Duration::from_secs(1), pl.completed()).await else {
            return Ok(None);
        };
        let r = done?;
        if let (Some(r), true) = (r, commit) {
            // Kafka keeps the last commit; the protocol commits in order,
            // so a partition's commits only go forward.
            let c = self.committed.entry(r.partition).or_insert(0);
            assert!(r.next_offset > *c, "commit {r:?} after {c}: not in order");
            *c = r.next_offset;
        }
        pl.flush(false);
        Ok(r)
    }

    /// The revoke callback: waits for the partition's running inserts, then
    /// the partition is taken away and given back at its committed offset.
    pub async fn reassign(&mut self, pl: &mut TestPipeline, partition: i32) {
        let counts = pl.in_flight_counts();
        for _ in 0..1000 {
            if counts.running(partition) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pl.revoke(partition);
        self.position.insert(partition, self.committed[&partition]);
    }

    /// Seeks a partition back to its committed offset (no revoke); never
    /// forward, which only a new assignment does.
    pub fn rewind(&mut self, partition: i32) {
        let back = self.committed[&partition].min(self.position[&partition]);
        self.position.insert(partition, back);
    }

    /// Runs a healthy consumer to the end of every log.
    pub async fn finish(&mut self) {
        self.writer.block(false);
        self.writer.fail_next.store(0, Ordering::SeqCst);
        self.state.down.store(false, Ordering::SeqCst);
        self.dead_letters.down.store(false, Ordering::SeqCst);
        self.writer.fail_after_store.store(0, Ordering::SeqCst);
        let mut pl = self.start();
        let partitions: Vec<i32> = self.logs.keys().copied().collect();
        for _ in 0..100 {
            for &p in &partitions {
                let n = self.logs[&p].len();
                self.feed(&mut pl, p, n).await.expect("healthy feed");
            }
            pl.retry_deferred().await.expect("state is up");
            pl.flush(true);
            while !pl.is_idle() {
                self.complete(&mut pl, true).await.expect("healthy insert");
                pl.flush(true);
            }
            if self
                .committed
                .iter()
                .all(|(p, c)| *c == log_end(&self.logs[p]))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("never caught up: committed {:?}", self.committed);
    }

    /// Every valid message stored once, every poison one dead-lettered.
    pub fn check(&self) -> usize {
        let rows = assert_stored_once(TOPIC, &self.logs, is_valid, &self.writer.stored());
        assert_copies_marked(&self.writer);
        let lettered: std::collections::BTreeSet<(i32, i64)> =
            self.dead_letters.offsets().into_iter().collect();
        for (p, log) in &self.logs {
            for m in log.iter().filter(|m| !is_valid(m)) {
                assert!(
                    lettered.contains(&(*p, m.offset)),
                    "poison {p}/{} not dead-lettered",
                    m.offset
                );
            }
        }
        rows
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The next `n` messages of a partition.
    Feed(i32, usize),
    /// Seal every open batch and start inserts.
    SealAll,
    /// Wait for the next finished batch and commit it.
    Commit,
    /// Wait for the next finished batch, but its commit is lost (the
    /// partition moved; the consumer died).
    LoseCommit,
    /// The process dies now: running inserts stop where they are.
    Crash,
    /// The partition moves away and back (the revoke waits for its inserts).
    Reassign(i32),
    /// The partition is re-read from its committed offset, no revoke.
    Rewind(i32),
    /// The next `n` insert attempts fail transiently.
    FailInserts(usize),
    /// The next `n` insert attempts store their rows, then fail transiently
    /// (a timeout after the server committed the insert).
    FailAfterStore(usize),
    /// The dead-letter topic becomes unreachable, or reachable again.
    DeadLettersDown(bool),
    /// Inserts wait until unblocked (a slow ClickHouse).
    Block(bool),
    /// The state store becomes unreachable, or reachable again.
    StateDown(bool),
    /// Deferred messages are tried again.
    RetryDeferred,
}

/// Runs `ops` against `world`; a run that fails (as the process would exit)
/// restarts the consumer. Then a healthy consumer reads to the end.
pub async fn play(world: &mut World, ops: &[Op]) -> usize {
    let mut pl = world.start();
    for op in ops {
        let step = match *op {
            Op::Feed(p, n) => world.feed(&mut pl, p, n).await,
            Op::SealAll => {
                pl.flush(true);
                Ok(())
            }
            Op::Commit => world.complete(&mut pl, true).await.map(drop),
            Op::LoseCommit => world.complete(&mut pl, false).await.map(drop),
            Op::Crash => {
                drop(pl);
                pl = world.start();
                Ok(())
            }
            Op::Reassign(p) => {
                world.reassign(&mut pl, p).await;
                Ok(())
            }
            Op::Rewind(p) => {
                world.rewind(p);
                Ok(())
            }
            Op::FailInserts(n) => {
                world.writer.fail_next.store(n, Ordering::SeqCst);
                Ok(())
            }
            Op::FailAfterStore(n) => {
                world.writer.fail_after_store.store(n, Ordering::SeqCst);
                Ok(())
            }
            Op::DeadLettersDown(on) => {
                world.dead_letters.down.store(on, Ordering::SeqCst);
                Ok(())
            }
            Op::Block(on) => {
                world.writer.block(on);
                Ok(())
            }
            Op::StateDown(on) => {
                world.state.down.store(on, Ordering::SeqCst);
                Ok(())
            }
            Op::RetryDeferred => pl.retry_deferred().await,
        };
        if let Err(e) = step {
            // The consumer exits uncommitted; a new one takes over.
            tracing::info!(error = %e, "run failed; restarting");
            drop(pl);
            pl = world.start();
        }
    }
    drop(pl);
    world.finish().await;
    world.check()
}
