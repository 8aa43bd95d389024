//! The consumer's one retry policy: exponential backoff with jitter
//! (`backon`), bounded by a wall-clock horizon instead of an attempt count.
//! Inserts, range records and dead-letter writes retry through
//! [`within_horizon`]; holding messages while the state store cannot be read
//! waits by the same policy's delays ([`Hold`]).

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};

use crate::metrics;

/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// The first delay of a retried call.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);

/// Exponential backoff from `first`, doubling up to [`MAX_DELAY`], with
/// jitter, unbounded in attempts (a horizon ends it).
pub fn policy(first: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// What is retried (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Recording a batch's range before its insert.
    Record,
    /// Looking up the stored rows a batch's copies would repeat.
    Lookup,
    Insert,
    DeadLetter,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Record, Step::Lookup, Step::Insert, Step::DeadLetter];

    pub fn label(self) -> &'static str {
        match self {
            Step::Record => "record",
            Step::Lookup => "lookup",
            Step::Insert => "insert",
            Step::DeadLetter => "dead_letter",
        }
    }
}

/// Retries `op` while its error is `retryable` and the next attempt would
/// start before `horizon` has passed since the first; the last error is
/// returned. Each retry is counted by `step` and logged with `what`.
pub async fn within_horizon<T, E, F, Fut>(
    step: Step,
    what: &str,
    horizon: Duration,
    retryable: impl Fn(&E) -> bool,
    op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    op.retry(policy(FIRST_DELAY))
        .when(|e| retryable(e))
        // No sleep that would end past the horizon.
        .adjust(|_, delay| delay.filter(|d| started.elapsed() + *d < horizon))
        .notify(|e, delay| {
            ::metrics::counter!(metrics::RETRIES, "step" => step.label()).increment(1);
            tracing::warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "failed, retrying");
        })
        .await
}

/// A wait that is not a retried call: when to try again, by the same
/// policy, and whether the horizon has passed since the first failure.
#[derive(Debug)]
pub struct Hold {
    delays: ExponentialBackoff,
    since: Instant,
    next: Instant,
}

/// The first delay of a hold.
pub const FIRST_HOLD: Duration = Duration::from_millis(200);

impl Hold {
    /// A hold that starts now.
    pub fn start() -> Self {
        let now = Instant::now();
        Hold {
            delays: policy(FIRST_HOLD).build(),
            since: now,
            next: now,
        }
    }

    /// Schedules the next try; `None` once `horizon` has passed since the
    /// hold started (the next try is scheduled all the same).
    pub fn again(&mut self, horizon: Duration) -> Option<Duration> {
        let delay = self.delays.next().unwrap_or(MAX_DELAY);
        self.next = Instant::now() + delay;
        (self.since.elapsed() <= horizon).then_some(delay)
    }

    /// Time until the next try.
    pub fn due_in(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Failure {
        retryable: bool,
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "retryable: {}", self.retryable)
        }
    }

    /// Calls `within_horizon` on an op that fails `fails` times first.
    async fn run(fails: u32, retryable: bool, horizon: Duration) -> (Result<u32, Failure>, u32) {
        let calls = AtomicU32::new(0);
        let r = within_horizon(
            Step::Insert,
            "test",
            horizon,
            |e: &Failure| e.retryable,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= fails {
                    Err(Failure { retryable })
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        (r, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_within_the_horizon_only() {
        let hour = Duration::from_secs(3600);
        let cases = [
            // (failures first, retryable, horizon, succeeds, calls)
            (0, true, hour, true, 1),
            (5, true, hour, true, 6),
            (3, false, hour, false, 1),
            (u32::MAX, true, Duration::ZERO, false, 1),
        ];
        for (fails, retryable, horizon, ok, calls) in cases {
            let (r, n) = run(fails, retryable, horizon).await;
            assert_eq!(r.is_ok(), ok, "{fails} {retryable} {horizon:?}");
            assert_eq!(n, calls, "{fails} {retryable} {horizon:?}");
        }
    }

    #[test]
    fn hold_delays_grow_to_the_cap_and_end_at_the_horizon() {
        let mut h = Hold::start();
        let delays: Vec<Duration> = (0..12)
            .filter_map(|_| h.again(Duration::from_secs(60)))
            .collect();
        assert_eq!(delays.len(), 12);
        // Jitter adds up to the delay itself, so each delay is within
        // [base, 2 × base], with base doubling from the first hold to the cap.
        let mut base = FIRST_HOLD;
        for d in &delays {
            assert!(*d >= base && *d <= base * 2, "{d:?} for base {base:?}");
            base = (base * 2).min(MAX_DELAY);
        }
        assert!(h.due_in() <= MAX_DELAY * 2);
        let mut old = Hold {
            since: Instant::now() - Duration::from_secs(10),
            ..Hold::start()
        };
        assert_eq!(old.again(Duration::from_secs(5)), None);
    }
}
