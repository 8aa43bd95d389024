//! In-memory doubles of the consumer's ports and an in-memory source, so
//! the whole protocol runs in a unit test with no broker and no ClickHouse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use trailhouse_schemas::rowbinary::{EncodedRows, RowKey};

use crate::copies::Window;
use crate::dlq::{DeadLetterError, DeadLetters, Poison};
use crate::pipeline::{CommitRequest, Received};
use crate::processor::{Rebalanced, Source, SourceError};
use crate::state::{Range, StateError, StateStore};
use crate::writer::{RowWriter, WriteError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The org id the protocol tests give the message at `offset` of
/// `partition`, so that a stored row says which message it is.
pub fn message_id(partition: i32, offset: i64) -> String {
    format!("p{partition}o{offset}")
}

/// Stored rows' keys and copy marks, per token.
type StoredRows = BTreeMap<String, Vec<(RowKey, bool)>>;

/// A table with a deduplication window: an insert whose token was stored
/// before is acknowledged and ignored, as ClickHouse does. It keeps each
/// row's org id (the first column, read back from the RowBinary bytes).
#[derive(Default, Clone)]
pub struct MemoryWriter {
    stored: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// The key and copy mark of every stored row, per token.
    rows: Arc<Mutex<StoredRows>>,
    /// Inserts acknowledged, deduplicated ones included.
    pub acknowledged: Arc<AtomicUsize>,
    /// The next this many attempts fail with a transient error.
    pub fail_next: Arc<AtomicUsize>,
    /// The next this many attempts store their rows, then fail with a
    /// transient error (the server committed; the answer was lost).
    pub fail_after_store: Arc<AtomicUsize>,
    /// Every attempt fails with a permanent error.
    pub broken: Arc<AtomicBool>,
    /// While set, inserts wait (a slow ClickHouse); cleared, they go on.
    pub blocked: Arc<AtomicBool>,
    unblocked: Arc<Notify>,
}

impl MemoryWriter {
    /// The org ids of the rows stored, per token.
    pub fn stored(&self) -> BTreeMap<String, Vec<String>> {
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
        if take_one(&self.fail_next) {
            return Err(WriteError::Transient("connection reset".into()));
        }
        lock(&self.stored)
            .entry(dedup_token.to_string())
            .or_insert_with(|| (0..rows.len()).map(|i| first_string(rows.row(i))).collect());
        lock(&self.rows)
            .entry(dedup_token.to_string())
            .or_insert_with(|| {
                (0..rows.len())
                    .map(|i| (rows.key(i), rows.is_copy(i)))
                    .collect()
            });
        if take_one(&self.fail_after_store) {
            return Err(WriteError::Transient("timeout after the insert".into()));
        }
        self.acknowledged.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn stored(&self, windows: &[Window]) -> Result<Vec<RowKey>, WriteError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(WriteError::Permanent("table is broken".into()));
        }
        if take_one(&self.fail_next) {
            return Err(WriteError::Transient("connection reset".into()));
        }
        Ok(lock(&self.rows)
            .values()
            .flatten()
            .map(|(k, copy)| RowKey {
                is_copy: *copy,
                ..k.clone()
            })
            .filter(|k| {
                windows.iter().any(|w| {
                    w.org_id == k.org_id && (w.from_us..=w.to_us).contains(&k.created_at_us)
                })
            })
            .collect())
    }
}

/// Takes one from a countdown; false when it is at zero.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The first column of a RowBinary row, a string: its length as a varint,
/// then its bytes.
fn first_string(row: &[u8]) -> String {
    let (mut len, mut at) = (0usize, 0);
    for (k, b) in row.iter().enumerate() {
        len |= usize::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            at = k + 1;
            break;
        }
    }
    String::from_utf8_lossy(&row[at..at + len]).into_owned()
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
    /// The last commit since the partition was last assigned.
    last_commit: BTreeMap<i32, i64>,
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
                last_commit: BTreeMap::new(),
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
        log.last_commit.remove(&partition);
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
            let m = log
                .partitions
                .get(&p)
                .and_then(|v| v.iter().find(|m| m.offset >= at))
                .cloned();
            if let Some(m) = m {
                log.position.insert(p, m.offset + 1);
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

    fn commit(&mut self, r: CommitRequest) -> Result<(), SourceError> {
        // Kafka keeps the last commit; the protocol commits in order, so a
        // partition's commits only go forward.
        // Across a reassignment a commit of the earlier reading may still
        // arrive (harmless, the new reading replays): the order is checked
        // within one assignment.
        let mut log = lock(&self.inner);
        if let Some(last) = log.last_commit.get(&r.partition) {
            assert!(
                r.next_offset > *last,
                "commit {r:?} after {last}: not in order"
            );
        }
        log.last_commit.insert(r.partition, r.next_offset);
        log.committed.insert(r.partition, r.next_offset);
        Ok(())
    }

    fn pause(&mut self) {
        lock(&self.inner).paused = true;
    }

    fn resume(&mut self) {
        lock(&self.inner).paused = false;
        self.more.notify_waiters();
    }
}

/// Checks that every valid message of `logs` is stored exactly once: the
/// stored rows are exactly the valid messages, each once; stored batches
/// never overlap, and each holds the valid messages of its range. Returns
/// the rows stored.
pub fn assert_stored_once(
    topic: &str,
    logs: &BTreeMap<i32, Vec<Received>>,
    valid: impl Fn(&Received) -> bool,
    stored: &BTreeMap<String, Vec<String>>,
) -> usize {
    let mut rows: Vec<&String> = stored.values().flatten().collect();
    rows.sort();
    let mut expected: Vec<String> = logs
        .values()
        .flatten()
        .filter(|m| valid(m))
        .map(org_of)
        .collect();
    expected.sort();
    // Equal as multisets: nothing lost, nothing stored twice (a message
    // that repeats an earlier one's event is stored as its own row).
    assert_eq!(rows, expected.iter().collect::<Vec<_>>(), "stored rows");
    type Stored<'a> = (i64, i64, &'a Vec<String>);
    let mut by_partition: BTreeMap<i32, Vec<Stored>> = BTreeMap::new();
    for (token, ids) in stored {
        let (p, first, last) = parse_token(topic, token);
        by_partition.entry(p).or_default().push((first, last, ids));
    }
    for (p, mut ranges) in by_partition {
        ranges.sort_by_key(|r| (r.0, r.1));
        for w in ranges.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "partition {p}: stored batches overlap: {:?} {:?}",
                (w[0].0, w[0].1),
                (w[1].0, w[1].1)
            );
        }
        let log = logs
            .get(&p)
            .unwrap_or_else(|| panic!("a batch of unknown partition {p}"));
        for (first, last, ids) in ranges {
            let mut want: Vec<String> = log
                .iter()
                .filter(|m| m.offset >= first && m.offset <= last && valid(m))
                .map(org_of)
                .collect();
            let mut got = ids.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "partition {p}: batch {first}-{last}");
        }
    }
    rows.len()
}

/// The org id of a message's event (the protocol tests name each event by
/// it: [`message_id`] of the message that first carried it).
fn org_of(m: &Received) -> String {
    m.payload
        .as_deref()
        .and_then(|p| trailhouse_schemas::decode(p).ok())
        .map_or_else(|| message_id(m.partition, m.offset), |e| e.org_id)
}

/// Every stored event has exactly one row not marked a copy: the row from
/// the lowest offset that carried it.
pub fn assert_copies_marked(writer: &MemoryWriter) {
    let rows = lock(&writer.rows);
    type Event = (String, i64, uuid::Uuid);
    let mut by_event: BTreeMap<Event, Vec<(i32, i64, bool)>> = BTreeMap::new();
    for (k, copy) in rows.values().flatten() {
        by_event
            .entry((k.org_id.clone(), k.created_at_us, k.id))
            .or_default()
            .push((k.partition, k.offset, *copy));
    }
    for (event, mut stored) in by_event {
        stored.sort();
        let unmarked: Vec<_> = stored.iter().filter(|r| !r.2).collect();
        assert_eq!(unmarked.len(), 1, "{event:?}: {stored:?}");
        assert_eq!(unmarked[0], &stored[0], "{event:?}: the first is the event");
    }
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
