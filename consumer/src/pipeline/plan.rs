//! Recovery plans: how the batches of a resumed partition must end so that
//! they repeat exactly the ranges an earlier owner recorded.

use std::collections::VecDeque;

use crate::state::Range;

/// How the open batch of a partition must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// By the limits.
    Free,
    /// Exactly at this offset: the batch repeats a recorded range.
    Exactly(i64),
    /// By the limits, but at this offset at the latest: a recorded range
    /// starts right after it.
    AtMost(i64),
}

/// Per-partition recovery plan: recorded ranges at or after the resume point.
#[derive(Debug)]
pub struct Plan {
    ranges: VecDeque<Range>,
}

impl Plan {
    /// A plan over recorded ranges, ordered by their first offset.
    pub fn new(ranges: Vec<Range>) -> Self {
        Plan {
            ranges: ranges.into(),
        }
    }

    /// Where a batch opened at `offset` starts and how it must end.
    ///
    /// A batch starts at `offset` unless `offset` falls inside a recorded
    /// range (the committed offset was moved there: an offset reset, or the
    /// range's start deleted by retention): then the batch adopts the
    /// range, so it repeats its token, and ClickHouse drops it if that range
    /// was stored; if it was not, exactly the messages from `offset` on go
    /// in, the ones before were skipped by whoever moved the offset.
    pub fn start_at(&mut self, offset: i64) -> (i64, End) {
        while self.ranges.front().is_some_and(|r| r.last < offset) {
            self.ranges.pop_front();
        }
        match self.ranges.front().copied() {
            Some(r) if r.first <= offset => {
                if r.first < offset {
                    tracing::warn!(
                        offset,
                        first = r.first,
                        last = r.last,
                        "resuming inside a recorded range; repeating the range"
                    );
                }
                self.ranges.pop_front();
                (r.first, End::Exactly(r.last))
            }
            Some(r) => (offset, End::AtMost(r.first - 1)),
            None => (offset, End::Free),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ranges: &[(i64, i64)]) -> Plan {
        Plan::new(
            ranges
                .iter()
                .map(|&(first, last)| Range { first, last })
                .collect(),
        )
    }

    #[test]
    fn recorded_ranges_are_replayed_exactly_and_free_batches_stop_before_them() {
        let mut p = plan(&[(10, 19), (20, 29), (40, 49)]);
        assert_eq!(p.start_at(10), (10, End::Exactly(19)));
        assert_eq!(p.start_at(20), (20, End::Exactly(29)));
        // A gap: [30, 39] was never recorded, so never inserted: batch
        // freely, but end before the next recorded range.
        assert_eq!(p.start_at(30), (30, End::AtMost(39)));
        assert_eq!(p.start_at(40), (40, End::Exactly(49)));
        assert_eq!(p.start_at(50), (50, End::Free));
        // Ranges behind the resume point are done (committed).
        let mut p = plan(&[(10, 19)]);
        assert_eq!(p.start_at(20), (20, End::Free));
        // Resuming inside a range adopts it (same token), then goes on.
        let mut p = plan(&[(10, 19), (30, 39)]);
        assert_eq!(p.start_at(15), (10, End::Exactly(19)));
        assert_eq!(p.start_at(20), (20, End::AtMost(29)));
    }
}
