//! The [`Recorder`]: owns the queue between the request path and the
//! background task that turns captured requests into events and publishes
//! them in batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{mpsc, oneshot};

use crate::config::{metric, RecorderConfig};
use crate::event::{to_envelope, Captured};
use crate::service::AuditLayer;
use crate::sink::{Envelope, EventSink};

/// The longest pause between two attempts to publish a batch (before jitter).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// What the layer has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    pub recorded: AtomicU64,
    pub published: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_publish_failed: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub skipped_no_org: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub recorded: u64,
    pub published: u64,
    pub dropped_queue_full: u64,
    pub dropped_publish_failed: u64,
    pub dropped_invalid: u64,
    pub skipped_no_org: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            recorded: get(&self.recorded),
            published: get(&self.published),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_publish_failed: get(&self.dropped_publish_failed),
            dropped_invalid: get(&self.dropped_invalid),
            skipped_no_org: get(&self.skipped_no_org),
        }
    }
}

/// Counts `n` events lost for `reason`.
pub(crate) fn dropped(stat: &AtomicU64, reason: &'static str, n: u64) {
    stat.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(metric::DROPPED, "reason" => reason).increment(n);
}

/// Owns the queue and the publishing task; hands out layers.
pub struct Recorder {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What every layer of one recorder shares.
pub(crate) struct Shared {
    pub(crate) config: RecorderConfig,
    pub(crate) tx: mpsc::Sender<Captured>,
    pub(crate) stats: Arc<Stats>,
}

impl Recorder {
    /// Starts the publishing task on the current tokio runtime.
    pub fn start<S: EventSink>(config: RecorderConfig, sink: S) -> Recorder {
        metric::describe();
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(publish_loop(
            rx,
            stop_rx,
            sink,
            config.clone(),
            stats.clone(),
        ));
        Recorder {
            shared: Arc::new(Shared { config, tx, stats }),
            stop: Mutex::new(Some(stop_tx)),
            task: Mutex::new(Some(task)),
        }
    }

    /// A layer feeding this recorder. With axum, add it with `Router::layer`
    /// so that the matched route and path parameters are known.
    pub fn layer(&self) -> AuditLayer {
        AuditLayer::new(self.shared.clone())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Publishes what is queued, then stops, waiting at most `deadline`.
    /// Requests recorded afterwards are dropped (counted as `closed`).
    pub async fn shutdown(&self, deadline: Duration) -> StatsSnapshot {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!("audit events still queued at the shutdown deadline were dropped");
            }
        }
        self.stats()
    }
}

/// Drains the queue every `linger` (without ever registering a waker, so
/// the request path's `try_send` never has to wake this task) and publishes
/// what it finds in batches; on stop, publishes everything queued and ends.
async fn publish_loop<S: EventSink>(
    mut rx: mpsc::Receiver<Captured>,
    mut stop: oneshot::Receiver<()>,
    sink: S,
    config: RecorderConfig,
    stats: Arc<Stats>,
) {
    let mut tick = tokio::time::interval(config.linger.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => stopping = true,
            }
        }
        loop {
            let mut batch = Vec::with_capacity(config.batch_size.min(1024));
            while batch.len() < config.batch_size {
                match rx.try_recv() {
                    Ok(c) => batch.extend(to_envelope(c, &config, &stats)),
                    Err(_) => break,
                }
            }
            let full = batch.len() >= config.batch_size;
            publish_with_retries(&sink, &batch, &config, &stats).await;
            if !full {
                break;
            }
        }
        if stopping {
            rx.close();
            // Whatever raced in before the close.
            let rest: Vec<Envelope> = std::iter::from_fn(|| rx.try_recv().ok())
                .filter_map(|c| to_envelope(c, &config, &stats))
                .collect();
            for chunk in rest.chunks(config.batch_size.max(1)) {
                publish_with_retries(&sink, chunk, &config, &stats).await;
            }
            return;
        }
    }
}

/// The retry policy of a batch: `max_attempts` attempts in all, the first
/// pause `retry_backoff`, doubling up to [`MAX_RETRY_DELAY`], with jitter.
pub(crate) fn retry_policy(config: &RecorderConfig) -> ExponentialBuilder {
    let retries = config.max_attempts.max(1) - 1;
    ExponentialBuilder::default()
        .with_min_delay(config.retry_backoff)
        .with_max_delay(MAX_RETRY_DELAY)
        .with_factor(2.0)
        .with_max_times(usize::try_from(retries).unwrap_or(usize::MAX))
        .with_jitter()
}

/// Publishes `batch`, retrying retryable failures with the same events (so
/// the same ids) under [`retry_policy`]; counts the outcome.
async fn publish_with_retries<S: EventSink>(
    sink: &S,
    batch: &[Envelope],
    config: &RecorderConfig,
    stats: &Stats,
) {
    if batch.is_empty() {
        return;
    }
    let mut attempt = 1u32;
    let result = (|| sink.publish(batch))
        .retry(retry_policy(config))
        .when(|e| e.is_retryable())
        .notify(|e, delay| {
            tracing::warn!(error = %e, attempt, ?delay, "audit batch not published; retrying");
            attempt += 1;
        })
        .await;
    match result {
        Ok(()) => {
            stats
                .published
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            metrics::counter!(metric::PUBLISHED).increment(batch.len() as u64);
        }
        Err(e) => {
            tracing::error!(error = %e, events = batch.len(), "audit batch dropped");
            dropped(
                &stats.dropped_publish_failed,
                "publish_failed",
                batch.len() as u64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkError;
    use backon::BackoffBuilder;
    use std::sync::atomic::AtomicU32;
    use trailhouse_schemas::event::{validate, ActionInput, EventInput, SystemStamp};

    #[test]
    fn the_policy_keeps_the_attempts_and_the_base_delay() {
        let cases = [(0, 0), (1, 0), (2, 1), (5, 4)];
        for (max_attempts, retries) in cases {
            let config = RecorderConfig {
                max_attempts,
                retry_backoff: Duration::from_millis(200),
                ..RecorderConfig::default()
            };
            let delays: Vec<Duration> = retry_policy(&config).build().collect();
            assert_eq!(delays.len(), retries, "{max_attempts} attempts");
            // Jitter adds up to as much again to each doubling step.
            let mut base = Duration::from_millis(200);
            for d in delays {
                assert!(d >= base && d <= base * 2, "{d:?} vs {base:?}");
                base = (base * 2).min(MAX_RETRY_DELAY);
            }
        }
    }

    /// Fails retryably `failures` times, then records what it was given.
    #[derive(Default)]
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
        seen: Mutex<Vec<Vec<String>>>,
        fatal: bool,
    }

    impl EventSink for Flaky {
        async fn publish(&self, events: &[Envelope]) -> Result<(), SinkError> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(events.iter().map(|e| e.event().id.to_string()).collect());
            }
            match (call < self.failures, self.fatal) {
                (false, _) => Ok(()),
                (true, false) => Err(SinkError::Unavailable("down".into())),
                (true, true) => Err(SinkError::Rejected("no".into())),
            }
        }
        fn flush(&self, _: Duration) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn batch() -> Vec<Envelope> {
        let input = EventInput {
            org_id: Some("acme".into()),
            action: Some(ActionInput {
                kind: Some("x.y".into()),
                description: None,
            }),
            ..EventInput::default()
        };
        let event = validate(input, &SystemStamp).expect("valid");
        vec![Envelope::new(event)]
    }

    #[tokio::test]
    async fn retries_keep_the_ids_and_stop_at_max_attempts() {
        let cases = [
            // (failures, fatal, max_attempts, calls, published)
            (0, false, 5, 1, 1),
            (2, false, 5, 3, 1),
            (9, false, 3, 3, 0),
            (9, true, 5, 1, 0),
            (9, false, 0, 1, 0),
        ];
        for (failures, fatal, max_attempts, calls, published) in cases {
            let sink = Flaky {
                failures,
                fatal,
                ..Flaky::default()
            };
            let config = RecorderConfig {
                max_attempts,
                retry_backoff: Duration::from_millis(1),
                ..RecorderConfig::default()
            };
            let stats = Stats::default();
            let events = batch();
            publish_with_retries(&sink, &events, &config, &stats).await;
            let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
            let case = format!("{failures} failures, fatal {fatal}, {max_attempts} attempts");
            assert_eq!(seen.len(), calls, "{case}");
            assert!(seen.iter().all(|ids| ids == &seen[0]), "same ids: {case}");
            let s = stats.snapshot();
            assert_eq!(s.published, published, "{case}");
            assert_eq!(s.dropped_publish_failed, 1 - published, "{case}");
        }
    }
}
