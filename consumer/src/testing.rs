//! In-memory doubles of the consumer's ports and an in-memory source, so
//! the whole protocol runs in a unit test with no broker and no ClickHouse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use trailhouse_schemas::rowbinary::EncodedRows;

use crate::dlq::{DeadLetterError, DeadLetters, Poison};
use crate::pipeline::{CommitRequest, Received};
use crate::processor::{Rebalanced, Source, SourceError};
use crate::state::{Range, StateError, StateStore};
use crate::writer::{RowWriter, WriteError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A table with a deduplication window: an insert whose token was stored
/// before is acknowledged and ignored, as ClickHouse does.
#[derive(Default, Clone)]
pub struct MemoryWriter {
    stored: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Inserts acknowledged, deduplicated ones included.
    pub acknowledged: Arc<AtomicUsize>,
    /// The next this many attempts fail with a transient error.
    pub fail_next: Arc<AtomicUsize>,
    /// Every attempt fails with a permanent error.
    pub broken: Arc<AtomicBool>,
    /// While set, inserts wait (a slow ClickHouse); cleared, they go on.
    pub blocked: Arc<AtomicBool>,
    unblocked: Arc<Notify>,
}

impl MemoryWriter {
    /// Rows stored per token.
    pub fn stored(&self) -> BTreeMap<String, usize> {
        lock(&self.stored).clone()
    }

    pub fn block(&self, on: bool) {
        self.blocked.store(on, Ordering::SeqCst);
        if !on {
            self.unblocked.notify_waiters();
        }
    }
}

impl RowWriter for MemoryWriter {
    async fn insert(&self, rows: &EncodedRows, dedup_token: &str) -> Result<(), WriteError> {
        while self.blocked.load(Ordering::SeqCst) {
            let woken = self.unblocked.notified();
            if !self.blocked.load(Ordering::SeqCst) {
                break;
            }
            woken.await;
        }
        if self.broken.load(Ordering::SeqCst) {
            return Err(WriteError::Permanent("table is broken".into()));
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(WriteError::Transient("connection reset".into()));
        }
        lock(&self.stored)
            .entry(dedup_token.to_string())
            .or_insert(rows.len());
        self.acknowledged.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Recorded ranges in memory; `down` makes every call fail.
#[derive(Default, Clone)]
pub struct MemoryState {
    ranges: Arc<Mutex<Vec<(i32, Range)>>>,
    pub down: Arc<AtomicBool>,
}

impl MemoryState {
    pub fn ranges(&self, partition: i32) -> Vec<Range> {
        lock(&self.ranges)
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, r)| *r)
            .collect()
    }

    fn check(&self) -> Result<(), StateError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StateError("state table unreachable".into()))
        } else {
            Ok(())
        }
    }
}

impl StateStore for MemoryState {
    async fn load(&self, partition: i32, from: i64) -> Result<Vec<Range>, StateError> {
        self.check()?;
        let mut v: Vec<Range> = self
            .ranges(partition)
            .into_iter()
            .filter(|r| r.last >= from)
            .collect();
        v.sort_by_key(|r| (r.first, r.last));
        v.dedup();
        Ok(v)
    }

    async fn record(&self, partition: i32, range: Range) -> Result<(), StateError> {
        self.check()?;
        lock(&self.ranges).push((partition, range));
        Ok(())
    }
}

/// A dead-letter topic in memory; `down` makes every write fail.
#[derive(Default, Clone)]
pub struct MemoryDeadLetters {
    sent: Arc<Mutex<Vec<Poison>>>,
    pub down: Arc<AtomicBool>,
}

impl MemoryDeadLetters {
    /// Offsets written, per partition (repeats included).
    pub fn offsets(&self) -> Vec<(i32, i64)> {
        lock(&self.sent)
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect()
    }
}

impl DeadLetters for MemoryDeadLetters {
    fn send(
        &self,
        poison: Poison,
    ) -> impl std::future::Future<Output = Result<(), DeadLetterError>> + Send + 'static {
        let (sent, down) = (self.sent.clone(), self.down.clone());
        async move {
            if down.load(Ordering::SeqCst) {
                return Err(DeadLetterError("dead-letter topic unreachable".into()));
            }
            lock(&sent).push(poison);
            Ok(())
        }
    }
}

/// Partition logs and a group of one member: messages are taken round
/// robin from the assigned, unpaused partitions; commits are kept per
/// partition; a rebalance can be scripted.
#[derive(Clone)]
pub struct VecSource {
    inner: Arc<Mutex<Log>>,
    more: Arc<Notify>,
}

struct Log {
    partitions: BTreeMap<i32, Vec<Received>>,
    position: BTreeMap<i32, i64>,
    committed: BTreeMap<i32, i64>,
    assigned: BTreeSet<i32>,
    paused: bool,
    rebalanced: Rebalanced,
    turn: usize,
}

impl VecSource {
    /// A source over these logs, every partition assigned.
    pub fn new(partitions: BTreeMap<i32, Vec<Received>>) -> Self {
        let assigned = partitions.keys().copied().collect();
        VecSource {
            inner: Arc::new(Mutex::new(Log {
                position: partitions.keys().map(|p| (*p, 0)).collect(),
                committed: BTreeMap::new(),
                partitions,
                assigned,
                paused: false,
                rebalanced: Rebalanced::default(),
                turn: 0,
            })),
            more: Arc::new(Notify::new()),
        }
    }

    pub fn committed(&self) -> BTreeMap<i32, i64> {
        lock(&self.inner).committed.clone()
    }

    /// Takes `partition` away and gives it back at its committed offset, as
    /// a rebalance onto the same member does.
    pub fn reassign(&self, partition: i32) {
        let mut log = lock(&self.inner);
        let at = log.committed.get(&partition).copied().unwrap_or(0);
        log.position.insert(partition, at);
        log.rebalanced.revoked.push(partition);
        log.rebalanced.assigned = true;
        drop(log);
        self.more.notify_waiters();
    }

    fn next(&self) -> Option<Received> {
        let mut log = lock(&self.inner);
        if log.paused {
            return None;
        }
        let ps: Vec<i32> = log.assigned.iter().copied().collect();
        for k in 0..ps.len() {
            let p = ps[(log.turn + k) % ps.len()];
            let at = log.position.get(&p).copied().unwrap_or(0);
            let m = usize::try_from(at)
                .ok()
                .and_then(|i| log.partitions.get(&p).and_then(|v| v.get(i)))
                .cloned();
            if let Some(m) = m {
                log.position.insert(p, at + 1);
                log.turn = (log.turn + k + 1) % ps.len();
                return Some(m);
            }
        }
        None
    }
}

impl Source for VecSource {
    async fn recv(&mut self) -> Result<Received, SourceError> {
        loop {
            let woken = self.more.notified();
            if let Some(m) = self.next() {
                return Ok(m);
            }
            woken.await;
        }
    }

    fn rebalanced(&mut self) -> Rebalanced {
        std::mem::take(&mut lock(&self.inner).rebalanced)
    }

    fn commit(&mut self, r: CommitRequest) {
        let mut log = lock(&self.inner);
        // A repeated batch (replayed after a rewind) commits the same
        // offset again; Kafka takes any offset, the log keeps the furthest.
        let c = log.committed.entry(r.partition).or_insert(0);
        *c = (*c).max(r.next_offset);
    }

    fn pause(&mut self) {
        lock(&self.inner).paused = true;
    }

    fn resume(&mut self) {
        lock(&self.inner).paused = false;
        self.more.notify_waiters();
    }
}

/// Checks that every valid message of `logs` is stored exactly once:
/// stored batches never overlap, and each stored batch holds exactly the
/// valid messages of its range. Returns the rows stored.
pub fn assert_stored_once(
    topic: &str,
    logs: &BTreeMap<i32, Vec<Received>>,
    valid: impl Fn(&Received) -> bool,
    stored: &BTreeMap<String, usize>,
) -> usize {
    let mut by_partition: BTreeMap<i32, Vec<(i64, i64, usize)>> = BTreeMap::new();
    for (token, rows) in stored {
        let (p, first, last) = parse_token(topic, token);
        by_partition
            .entry(p)
            .or_default()
            .push((first, last, *rows));
    }
    let mut total = 0;
    for (p, log) in logs {
        let mut ranges = by_partition.remove(p).unwrap_or_default();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "partition {p}: stored batches overlap: {w:?}"
            );
        }
        let in_range = |first: i64, last: i64| {
            log.iter()
                .filter(|m| m.offset >= first && m.offset <= last && valid(m))
                .count()
        };
        for &(first, last, rows) in &ranges {
            assert_eq!(
                rows,
                in_range(first, last),
                "partition {p}: batch {first}-{last}"
            );
        }
        let stored: usize = ranges.iter().map(|r| r.2).sum();
        assert_eq!(
            stored,
            log.iter().filter(|m| valid(m)).count(),
            "partition {p}: rows stored"
        );
        total += stored;
    }
    assert!(
        by_partition.is_empty(),
        "batches of unknown partitions: {by_partition:?}"
    );
    total
}

/// `<topic>:<partition>:<first>-<last>` back into its numbers.
fn parse_token(topic: &str, token: &str) -> (i32, i64, i64) {
    let parse = || {
        let rest = token.strip_prefix(topic)?.strip_prefix(':')?;
        let (p, range) = rest.split_once(':')?;
        let (first, last) = range.split_once('-')?;
        Some((p.parse().ok()?, first.parse().ok()?, last.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("not a batch token: {token}"))
}
