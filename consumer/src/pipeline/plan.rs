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
#[derive(Debug, Default)]
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

    /// How a batch opened at `offset` must end.
    pub fn end_for(&mut self, offset: i64) -> End {
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
                // It cannot be repeated exactly (it was inserted, or this
                // offset was never a batch start): batch freely, but still
                // end before the next recorded range.
                self.ranges.pop_front();
                self.end_for(offset)
            }
            None => End::Free,
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
        // Resuming inside a range (it cannot be repeated exactly) batches freely.
        let mut p = plan(&[(10, 19), (30, 39)]);
        assert_eq!(p.end_for(15), End::AtMost(29));
    }
}
