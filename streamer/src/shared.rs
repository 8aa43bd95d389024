//! What the Kafka reader shares with the stream workers: each stream's
//! bounded [`Inbox`], and per partition the reader's positions and the
//! consumer's stored-through offset ([`Positions`]).
//!
//! The hand-over from ClickHouse to the live tail rests on two positions the
//! reader publishes per partition: `next` (stored *before* it offers an
//! event to the inboxes) and `done` (stored *after*). A worker that clears
//! its inbox reads `next` under the inbox lock: every event at or after it
//! will be offered to the cleared inbox, every event before it is in
//! ClickHouse once the consumer has stored that far. A worker whose inbox is
//! empty reads `done` under the lock: every event before it was offered and
//! taken, so its cursor may move there.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::encode::Item;

/// Per partition: the reader's `next` and `done`, and the consumer's
/// stored-through offset (everything below it is in ClickHouse).
#[derive(Default)]
pub struct Positions {
    parts: RwLock<BTreeMap<i32, Arc<Part>>>,
    /// Counts assignments and revokes: a worker that sees it change
    /// catches up again (a newly owned partition may start behind it).
    pub epoch: std::sync::atomic::AtomicU64,
}

/// One partition's positions; `-1` is unknown.
pub struct Part {
    pub next: AtomicI64,
    pub done: AtomicI64,
    pub stored: AtomicI64,
    /// Whether this streamer reads the partition now.
    pub owned: std::sync::atomic::AtomicBool,
}

impl Default for Part {
    fn default() -> Self {
        Part {
            next: AtomicI64::new(-1),
            done: AtomicI64::new(-1),
            stored: AtomicI64::new(-1),
            owned: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Positions {
    /// The partition's positions, created on first use.
    pub fn part(&self, p: i32) -> Arc<Part> {
        if let Some(x) = self.parts.read().ok().and_then(|m| m.get(&p).cloned()) {
            return x;
        }
        let mut m = match self.parts.write() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        m.entry(p).or_default().clone()
    }

    /// Marks `p` owned from `start` (assignment) or not owned (revoke).
    pub fn assign(&self, p: i32, start: Option<i64>) {
        let part = self.part(p);
        // First: a worker that reads the new positions sees the new epoch
        // too, and does not take them for the old assignment's.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match start {
            Some(s) => {
                part.next.store(s, Ordering::SeqCst);
                part.done.store(s, Ordering::SeqCst);
                part.owned.store(true, Ordering::SeqCst);
            }
            None => part.owned.store(false, Ordering::SeqCst),
        }
        // And after: a worker that caught up between the two bumps, before
        // the partition was marked owned, catches up again.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Every known partition.
    pub fn all(&self) -> Vec<(i32, Arc<Part>)> {
        self.parts
            .read()
            .map(|m| m.iter().map(|(p, x)| (*p, x.clone())).collect())
            .unwrap_or_default()
    }

    /// The partitions this streamer reads, with `next` (where a cleared
    /// inbox starts) — call under an inbox lock.
    fn owned_next(&self) -> BTreeMap<i32, i64> {
        self.all()
            .into_iter()
            .filter(|(_, x)| x.owned.load(Ordering::SeqCst))
            .map(|(p, x)| (p, x.next.load(Ordering::SeqCst)))
            .filter(|(_, n)| *n >= 0)
            .collect()
    }

    fn owned_done(&self) -> BTreeMap<i32, i64> {
        self.all()
            .into_iter()
            .filter(|(_, x)| x.owned.load(Ordering::SeqCst))
            .map(|(p, x)| (p, x.done.load(Ordering::SeqCst)))
            .filter(|(_, n)| *n >= 0)
            .collect()
    }

    /// Whether the streamer reads `p`.
    pub fn owns(&self, p: i32) -> bool {
        self.parts
            .read()
            .ok()
            .and_then(|m| m.get(&p).map(|x| x.owned.load(Ordering::SeqCst)))
            .unwrap_or(false)
    }

    /// The consumer's stored-through offset of `p` (`-1`: unknown).
    pub fn stored(&self, p: i32) -> i64 {
        self.part(p).stored.load(Ordering::SeqCst)
    }
}

/// A stream's bounded queue of live events. When it fills, it empties and
/// refuses events until the worker clears it: the stream then catches up
/// from ClickHouse instead of holding memory.
pub struct Inbox {
    state: Mutex<InboxState>,
    notify: Notify,
    cap: usize,
}

#[derive(Default)]
struct InboxState {
    items: VecDeque<Item>,
    /// Full (or never cleared): events are refused.
    refusing: bool,
    /// Per partition, the lowest offset an overflow dropped since the last
    /// clear (a stream with no place yet in a partition starts there).
    dropped: BTreeMap<i32, i64>,
}

impl Inbox {
    /// A new inbox, refusing until its worker clears it.
    pub fn new(cap: usize) -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                refusing: true,
                ..InboxState::default()
            }),
            notify: Notify::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        }
    }

    /// Offers a live event (the reader).
    pub fn offer(&self, item: Item) {
        let mut s = self.lock();
        if s.refusing {
            return;
        }
        if s.items.len() >= self.cap {
            let lowest: Vec<(i32, i64)> = s.items.iter().map(|i| (i.partition, i.offset)).collect();
            for (p, o) in lowest.into_iter().chain([(item.partition, item.offset)]) {
                let e = s.dropped.entry(p).or_insert(o);
                *e = (*e).min(o);
            }
            s.items.clear();
            s.items.shrink_to_fit();
            s.refusing = true;
        } else {
            s.items.push_back(item);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Empties the inbox and accepts events again; returns, per owned
    /// partition, the offset from which every event will be offered, and
    /// the lowest offset of the events it dropped (a stream with no place
    /// yet in a partition starts there).
    pub fn clear(&self, positions: &Positions) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
        let mut s = self.lock();
        let mut dropped = std::mem::take(&mut s.dropped);
        for i in &s.items {
            let e = dropped.entry(i.partition).or_insert(i.offset);
            *e = (*e).min(i.offset);
        }
        s.items.clear();
        s.refusing = false;
        (positions.owned_next(), dropped)
    }

    /// Stops taking events (a paused stream) and frees them.
    pub fn refuse(&self) {
        let mut s = self.lock();
        s.items.clear();
        s.items.shrink_to_fit();
        s.refusing = true;
    }

    /// Whether the inbox overflowed (or is refusing) since it was cleared.
    pub fn refusing(&self) -> bool {
        self.lock().refusing
    }

    /// Takes up to `max` events; when none are left, also the reader's
    /// `done` of each owned partition (everything before it was offered
    /// and taken), unless the inbox refused events since it was cleared or
    /// the assignment changed since the worker's `epoch`.
    pub fn take(
        &self,
        max: usize,
        positions: &Positions,
        epoch: u64,
    ) -> (Vec<Item>, Option<BTreeMap<i32, i64>>) {
        let mut s = self.lock();
        let n = s.items.len().min(max);
        let items: Vec<Item> = s.items.drain(..n).collect();
        let done = (s.items.is_empty() && !s.refusing)
            .then(|| positions.owned_done())
            .filter(|_| positions.epoch.load(Ordering::SeqCst) == epoch);
        (items, done)
    }

    /// Events waiting, and the oldest one's `created_at` (microseconds).
    pub fn backlog(&self) -> (usize, Option<i64>) {
        let s = self.lock();
        (s.items.len(), s.items.front().map(|i| i.created_at_us))
    }

    /// The lowest waiting offset of each partition (what a commit must not pass).
    pub fn lowest(&self) -> BTreeMap<i32, i64> {
        let s = self.lock();
        let mut out = BTreeMap::new();
        for i in &s.items {
            out.entry(i.partition).or_insert(i.offset);
        }
        out
    }

    /// Waits for an offer (or a spurious wake-up).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(o: i64) -> Item {
        Item {
            partition: 0,
            offset: o,
            created_at_us: o,
            json: json!(o),
        }
    }

    #[test]
    fn an_inbox_refuses_until_cleared_and_after_it_overflows() {
        let pos = Positions::default();
        let part = pos.part(0);
        part.owned.store(true, Ordering::SeqCst);
        part.next.store(7, Ordering::SeqCst);
        let inbox = Inbox::new(2);
        inbox.offer(item(1));
        assert_eq!(inbox.backlog().0, 0, "refused before the first clear");
        assert_eq!(inbox.clear(&pos).0, BTreeMap::from([(0, 7)]));
        inbox.offer(item(7));
        inbox.offer(item(8));
        assert_eq!(inbox.lowest(), BTreeMap::from([(0, 7)]));
        inbox.offer(item(9));
        assert!(inbox.refusing());
        assert_eq!(inbox.backlog().0, 0, "an overflow frees the memory");
        inbox.clear(&pos);
        inbox.offer(item(9));
        assert_eq!(
            inbox.clear(&pos).1,
            BTreeMap::from([(0, 9)]),
            "what a clear drops"
        );
        inbox.offer(item(10));
        part.done.store(11, Ordering::SeqCst);
        let epoch = pos.epoch.load(Ordering::SeqCst);
        let (items, done) = inbox.take(5, &pos, epoch);
        assert_eq!(items, vec![item(10)]);
        assert_eq!(done, Some(BTreeMap::from([(0, 11)])));
        assert_eq!(
            inbox.take(5, &pos, epoch + 1).1,
            None,
            "not across an assignment"
        );
        inbox.offer(item(11));
        inbox.offer(item(12));
        inbox.offer(item(13));
        assert_eq!(inbox.take(5, &pos, epoch).1, None, "not after an overflow");
    }
}
