//! When the consumer stops taking messages, and when it pauses its
//! partitions.
//!
//! Pausing a partition in librdkafka drops the messages it already fetched
//! for it (up to the prefetch queue, 4 MiB by default), and resuming fetches them again.
//! A consumer that paused whenever one sealed batch waited for an insert
//! slot, and resumed as soon as the slot freed, paid that re-fetch for
//! nearly every batch under load. So a short congestion (an insert slot
//! busy for a moment) only *holds*: the loop stops taking messages and
//! librdkafka stops fetching once its bounded queue is full. Only a
//! congestion that outlasts `pause_after` (a slow or unavailable ClickHouse,
//! an unreadable state table) pauses the partitions, which lets the loop
//! poll again, so rebalances are served while ClickHouse is down.

use std::time::{Duration, Instant};

/// What the loop does with the fetch side now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take messages.
    Take,
    /// Stop taking messages for now (librdkafka keeps what it fetched).
    Hold,
    /// Pause the assigned partitions (from now on: `Paused`).
    Pause,
    /// Stay paused; keep polling for rebalances.
    Paused,
    /// Resume the paused partitions and take messages again.
    Resume,
}

/// The backpressure state of one consumer.
#[derive(Debug, Default)]
pub struct Backpressure {
    congested_since: Option<Instant>,
    paused_since: Option<Instant>,
}

impl Backpressure {
    /// The step for the current congestion.
    pub fn observe(&mut self, congested: bool, pause_after: Duration, now: Instant) -> Step {
        match (congested, self.congested_since, self.paused_since) {
            (false, _, None) => {
                self.congested_since = None;
                Step::Take
            }
            (false, _, Some(_)) => {
                (self.congested_since, self.paused_since) = (None, None);
                Step::Resume
            }
            (true, _, Some(_)) => Step::Paused,
            (true, None, None) => {
                self.congested_since = Some(now);
                if pause_after.is_zero() {
                    self.paused_since = Some(now);
                    Step::Pause
                } else {
                    Step::Hold
                }
            }
            (true, Some(since), None) if now.duration_since(since) >= pause_after => {
                self.paused_since = Some(now);
                Step::Pause
            }
            (true, Some(_), None) => Step::Hold,
        }
    }

    /// A new assignment fetches unpaused: forget the pause (a congestion
    /// that continues pauses the new assignment at the next step).
    pub fn assigned(&mut self) {
        self.paused_since = None;
    }

    /// Whether the loop must not take messages now.
    pub fn holding(&self) -> bool {
        self.congested_since.is_some() && self.paused_since.is_none()
    }

    /// Time until a hold turns into a pause, while holding.
    pub fn pause_due_in(&self, pause_after: Duration, now: Instant) -> Option<Duration> {
        self.holding().then(|| {
            let since = self.congested_since.unwrap_or(now);
            pause_after.saturating_sub(now.duration_since(since))
        })
    }

    /// How long the partitions have been paused.
    pub fn paused_for(&self, now: Instant) -> Option<Duration> {
        self.paused_since.map(|s| now.duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_short_congestion_holds_without_pausing() {
        let (mut b, t0) = (Backpressure::default(), Instant::now());
        assert_eq!(b.observe(false, SEC, t0), Step::Take);
        assert_eq!(b.observe(true, SEC, t0), Step::Hold);
        assert!(b.holding());
        assert_eq!(b.pause_due_in(SEC, t0 + SEC / 4), Some(SEC * 3 / 4));
        assert_eq!(b.observe(true, SEC, t0 + SEC / 2), Step::Hold);
        assert_eq!(b.observe(false, SEC, t0 + SEC / 2), Step::Take);
        assert!(!b.holding());
        assert_eq!(b.pause_due_in(SEC, t0 + SEC), None);
        // A new congestion counts from its own start.
        assert_eq!(b.observe(true, SEC, t0 + SEC * 2), Step::Hold);
        assert_eq!(b.observe(true, SEC, t0 + SEC * 2 + SEC / 2), Step::Hold);
    }

    #[test]
    fn a_long_congestion_pauses_once_and_resumes_when_it_ends() {
        let (mut b, t0) = (Backpressure::default(), Instant::now());
        assert_eq!(b.observe(true, SEC, t0), Step::Hold);
        assert_eq!(b.observe(true, SEC, t0 + SEC), Step::Pause);
        assert!(!b.holding(), "paused partitions are polled for rebalances");
        assert_eq!(b.observe(true, SEC, t0 + SEC * 5), Step::Paused);
        assert_eq!(b.paused_for(t0 + SEC * 5), Some(SEC * 4));
        assert_eq!(b.observe(false, SEC, t0 + SEC * 6), Step::Resume);
        assert_eq!(b.observe(false, SEC, t0 + SEC * 6), Step::Take);
        assert_eq!(b.paused_for(t0 + SEC * 7), None);
    }

    #[test]
    fn an_assignment_during_a_pause_is_paused_again_if_still_congested() {
        let (mut b, t0) = (Backpressure::default(), Instant::now());
        b.observe(true, SEC, t0);
        assert_eq!(b.observe(true, SEC, t0 + SEC), Step::Pause);
        b.assigned();
        assert_eq!(b.observe(true, SEC, t0 + SEC * 2), Step::Pause);
        b.assigned();
        assert_eq!(b.observe(false, SEC, t0 + SEC * 3), Step::Take);
    }

    #[test]
    fn a_zero_delay_pauses_at_once() {
        let (mut b, t0) = (Backpressure::default(), Instant::now());
        assert_eq!(b.observe(true, Duration::ZERO, t0), Step::Pause);
        assert!(!b.holding());
    }
}
