//! Which rows of a batch are stored copies of an earlier event, before the
//! batch is inserted (the rollups skip them; see migration 4).
//!
//! A producer that retries a publish can put one event (one
//! `(org_id, created_at, id)`) into the topic twice. An org's events share a
//! partition, so its copies are in one partition's order: a row is a copy
//! when a row of the same event sits at a lower offset of its partition,
//! earlier in its batch, in a batch of the partition still being inserted,
//! or stored. The answer depends only on the partition's content, so a
//! replayed batch gets the marks it had: rows a retried insert may already
//! have stored are at the same offsets, not lower ones, and do not count.
//!
//! A copy in another partition (the topic's partitions were added to, and
//! the org moved) has no order with this one: there the first stored wins,
//! and a row is a copy when a stored row of another partition holds its
//! event unmarked. Two copies inserted at the same time from two partitions
//! are then both counted (`docs/ARCHITECTURE.md`, known issue 14).
//!
//! The pure part is here: the time windows to look up and the marks. The
//! lookup is the [`crate::writer::RowWriter::stored`] port.

use std::collections::{HashMap, HashSet};

use trailhouse_schemas::rowbinary::RowKey;
use uuid::Uuid;

/// Rows of one org whose `created_at` is in `[from_us, to_us]` (micros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub org_id: String,
    pub from_us: i64,
    pub to_us: i64,
}

/// Times of one org further apart than this start another window, so an
/// old event in a batch of new ones does not make the lookup read the days
/// between them.
pub const WINDOW_GAP_US: i64 = 60_000_000;

/// The windows that hold every row of `keys`: per org, the runs of
/// `created_at` values no more than [`WINDOW_GAP_US`] apart.
pub fn windows(keys: &[RowKey]) -> Vec<Window> {
    let mut by_org: HashMap<&str, Vec<i64>> = HashMap::new();
    for k in keys {
        by_org.entry(&k.org_id).or_default().push(k.created_at_us);
    }
    let mut out = Vec::new();
    let mut orgs: Vec<_> = by_org.into_iter().collect();
    orgs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (org, mut times) in orgs {
        times.sort_unstable();
        let mut from = times[0];
        let mut to = from;
        for &t in &times[1..] {
            if t - to > WINDOW_GAP_US {
                out.push(Window {
                    org_id: org.to_string(),
                    from_us: from,
                    to_us: to,
                });
                from = t;
            }
            to = t;
        }
        out.push(Window {
            org_id: org.to_string(),
            from_us: from,
            to_us: to,
        });
    }
    out
}

/// The indexes of the rows of `batch` (one partition's) that are copies,
/// given `earlier` rows: stored ones and those of the partition's batches
/// in flight (any may also be at offsets at or after the batch's, which do
/// not count).
pub fn copies<'a>(
    batch: &'a [RowKey],
    earlier: impl IntoIterator<Item = &'a RowKey>,
) -> Vec<usize> {
    let Some(partition) = batch.first().map(|k| k.partition) else {
        return Vec::new();
    };
    // The lowest offset of each event in this partition, and the events an
    // unmarked stored row of another partition holds.
    let mut first: HashMap<(&str, i64, Uuid), i64> = HashMap::with_capacity(batch.len());
    let mut elsewhere: HashSet<(&str, i64, Uuid)> = HashSet::new();
    for k in earlier.into_iter().chain(batch) {
        if k.partition == partition {
            first
                .entry(k.event())
                .and_modify(|f| *f = (*f).min(k.offset))
                .or_insert(k.offset);
        } else if !k.is_copy {
            elsewhere.insert(k.event());
        }
    }
    batch
        .iter()
        .enumerate()
        .filter(|(_, k)| {
            elsewhere.contains(&k.event()) || first.get(&k.event()).is_some_and(|f| *f < k.offset)
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(org: &str, t: i64, id: u128, offset: i64) -> RowKey {
        RowKey {
            org_id: org.into(),
            created_at_us: t,
            id: Uuid::from_u128(id),
            partition: 0,
            offset,
            is_copy: false,
        }
    }

    fn elsewhere(k: RowKey, is_copy: bool) -> RowKey {
        RowKey {
            partition: 7,
            is_copy,
            ..k
        }
    }

    #[test]
    fn windows_split_an_org_at_gaps() {
        let m = 60_000_000;
        let keys = [
            key("b", 5, 1, 0),
            key("a", 10 * m, 2, 1),
            key("a", 10 * m + 5, 3, 2),
            key("a", 30 * m, 4, 3),
            key("a", 10 * m + 1, 5, 4),
        ];
        let w = windows(&keys);
        let spans: Vec<(&str, i64, i64)> = w
            .iter()
            .map(|w| (w.org_id.as_str(), w.from_us, w.to_us))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("a", 10 * m, 10 * m + 5),
                ("a", 30 * m, 30 * m),
                ("b", 5, 5)
            ]
        );
        assert!(windows(&[]).is_empty());
    }

    #[test]
    fn a_row_is_a_copy_when_its_event_sits_at_a_lower_offset() {
        // (case, batch, earlier, copies)
        type Case = (&'static str, Vec<RowKey>, Vec<RowKey>, Vec<usize>);
        let cases: Vec<Case> = vec![
            (
                "within the batch, the later one",
                vec![key("a", 1, 1, 10), key("a", 1, 2, 11), key("a", 1, 1, 12)],
                vec![],
                vec![2],
            ),
            (
                "stored before",
                vec![key("a", 1, 1, 10), key("a", 1, 2, 11)],
                vec![key("a", 1, 1, 3)],
                vec![0],
            ),
            (
                "the same rows stored by an earlier try are not earlier",
                vec![key("a", 1, 1, 10), key("a", 1, 2, 11)],
                vec![key("a", 1, 1, 10), key("a", 1, 2, 11)],
                vec![],
            ),
            (
                "a later copy stored first does not make the event a copy",
                vec![key("a", 1, 1, 10)],
                vec![key("a", 1, 1, 20)],
                vec![],
            ),
            (
                "stored unmarked in another partition: the first stored wins",
                vec![key("a", 1, 1, 10), key("a", 1, 2, 11)],
                vec![elsewhere(key("a", 1, 1, 50), false)],
                vec![0],
            ),
            (
                "a marked copy in another partition is not the event",
                vec![key("a", 1, 1, 10)],
                vec![elsewhere(key("a", 1, 1, 5), true)],
                vec![],
            ),
            (
                "another org, time or id is another event",
                vec![key("a", 1, 1, 10)],
                vec![key("b", 1, 1, 1), key("a", 2, 1, 1), key("a", 1, 9, 1)],
                vec![],
            ),
        ];
        for (case, batch, earlier, want) in cases {
            assert_eq!(copies(&batch, &earlier), want, "{case}");
        }
    }

    proptest! {
        /// Whatever is stored already, the rows counted (not copies) across
        /// the whole stream are exactly its distinct events, and marking a
        /// batch again gives the same marks.
        #[test]
        fn marks_count_each_event_once(
            events in prop::collection::vec((0u8..3, 0i64..4, 0u128..6), 1..60),
            cut in 0usize..60,
        ) {
            let stream: Vec<RowKey> = events
                .iter()
                .enumerate()
                .map(|(o, (org, t, id))| key(&format!("o{org}"), *t, *id, o as i64))
                .collect();
            let cut = cut.min(stream.len());
            let (before, batch) = stream.split_at(cut);
            let marked_before = copies(before, []);
            let marked = copies(batch, before);
            let counted = before.len() - marked_before.len() + batch.len() - marked.len();
            let distinct: std::collections::HashSet<_> = stream.iter().map(RowKey::event).collect();
            prop_assert_eq!(counted, distinct.len());
            // A replay sees its own earlier try stored: same marks.
            let with_itself: Vec<RowKey> = before.iter().chain(batch).cloned().collect();
            prop_assert_eq!(copies(batch, &with_itself), marked);
        }
    }
}
