//! The driver: owns the source (Kafka, or the in-memory one of the tests),
//! feeds the [`Pipeline`] and applies what it returns — commit requests in
//! order, hold / pause / resume for backpressure, revokes — until shutdown,
//! then drains within its deadline.

use std::time::{Duration, Instant};

use trailhouse_common::health::Health;
use trailhouse_common::shutdown::Shutdown;

use crate::backpressure::{Backpressure, Step};
use crate::dlq::DeadLetters;
use crate::metrics::PartitionGauges;
use crate::pipeline::{CommitRequest, Pipeline, Received};
use crate::state::StateStore;
use crate::writer::RowWriter;
use crate::{metrics, Error};

/// What changed in the assignment since the last look.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebalanced {
    /// Partitions taken away (their in-flight inserts were waited for).
    pub revoked: Vec<i32>,
    /// Partitions were assigned (they fetch unpaused).
    pub assigned: bool,
}

/// A receive that failed; the driver logs it and polls again.
#[derive(Debug, thiserror::Error)]
#[error("source: {0}")]
pub struct SourceError(pub String);

/// The port to the message source: a consumer group member.
pub trait Source: Send {
    /// The next message. Must be cancel-safe: the driver races it against
    /// timers and finished inserts.
    fn recv(&mut self) -> impl std::future::Future<Output = Result<Received, SourceError>> + Send;
    /// Revokes and assignments since the last call (rebalance callbacks run
    /// inside [`Source::recv`]).
    fn rebalanced(&mut self) -> Rebalanced;
    /// Commits a partition up to `next_offset`. A commit the broker refuses
    /// (the partition moved) is harmless and only logged: the next owner
    /// replays the recorded range, and ClickHouse drops the repeated insert
    /// by its token. An error means the commit could not even be formed,
    /// and stops the run.
    fn commit(&mut self, request: CommitRequest) -> Result<(), SourceError>;
    /// Stops fetching the assigned partitions (still serving rebalances).
    fn pause(&mut self);
    /// How long no broker has been reachable, if none is now.
    fn broker_unreachable_for(&self) -> Option<Duration> {
        None
    }
    /// Fetches the assigned partitions again, each from the message after
    /// the last one taken.
    fn resume(&mut self);
}

/// The driver's own settings.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// A congestion this long turns a hold into a pause.
    pub pause_after: Duration,
    /// Paused this long, the consumer reports not ready.
    pub not_ready_after: Duration,
    /// No broker reachable this long, the consumer reports not ready.
    pub broker_not_ready_after: Duration,
    /// How long the drain on shutdown may take.
    pub drain_deadline: Duration,
    /// Where the lag in seconds of each assigned partition is published.
    pub gauges: PartitionGauges,
}

/// Why the consumer is not ready, while it runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Unready {
    /// Paused for longer than `not_ready_after`.
    paused: bool,
    /// No broker for longer than `broker_not_ready_after`.
    broker: bool,
}

impl Unready {
    fn apply(self, health: &Health) {
        health.set_ready(!self.paused && !self.broker);
    }
}

/// How often the lag in seconds and the broker's reachability are looked at.
const TICK: Duration = Duration::from_millis(500);

/// Runs until `shutdown` fires (or an error that outlasted its retries),
/// then seals and inserts the open batches and commits them, within the
/// drain deadline.
pub async fn run<Src, W, S, D>(
    source: &mut Src,
    pipeline: &mut Pipeline<W, S, D>,
    shutdown: &Shutdown,
    health: &Health,
    settings: DriverSettings,
) -> Result<(), Error>
where
    Src: Source,
    W: RowWriter,
    S: StateStore,
    D: DeadLetters,
{
    let mut pressure = Backpressure::default();
    let mut unready = Unready::default();
    let mut last_tick = Instant::now();
    loop {
        let wait = pipeline.next_due_in();
        let deferred_due = pipeline.deferred_due_in();
        let holding = pressure.holding();
        let hold_wait = pressure
            .pause_due_in(settings.pause_after, Instant::now())
            .map_or(wait, |d| d.min(wait));
        tokio::select! {
            _ = shutdown.wait() => break,
            done = pipeline.completed() => {
                // A revoke that arrived meanwhile makes this commit one of
                // the earlier reading: it is not sent (see `Pipeline::revoke`).
                let revoked = apply_rebalance(source, pipeline, &mut pressure);
                if let Some(request) = done?.filter(|r| !revoked.contains(&r.partition)) {
                    source.commit(request)?;
                }
            }
            // While holding, messages stay in the source's bounded queue.
            _ = tokio::time::sleep(hold_wait), if holding => {}
            r = tokio::time::timeout(wait, source.recv()), if !holding => match r {
                Err(_) => {}
                Ok(Ok(m)) => {
                    // Rebalance callbacks ran inside this receive: forget the
                    // revoked partitions before accepting a message that may
                    // belong to a re-assignment.
                    let _ = apply_rebalance(source, pipeline, &mut pressure);
                    pipeline.receive(m).await?;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "kafka consume error"),
            },
            _ = tokio::time::sleep(deferred_due.unwrap_or(Duration::from_secs(3600))), if deferred_due.is_some() => {
                pipeline.retry_deferred().await?;
            }
        }
        let _ = apply_rebalance(source, pipeline, &mut pressure);
        pipeline.flush(false);
        backpressure(
            source,
            pipeline,
            &mut pressure,
            &mut unready,
            health,
            &settings,
        );
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            tick(source, pipeline, &mut unready, health, &settings);
        }
    }
    health.set_ready(false);
    tracing::info!("draining: inserting open batches");
    let drain = async {
        pipeline.flush(true);
        while !pipeline.is_idle() {
            if let Some(request) = pipeline.completed().await? {
                source.commit(request)?;
            }
            pipeline.flush(true);
        }
        Ok::<(), Error>(())
    };
    match tokio::time::timeout(settings.drain_deadline, drain).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                deadline_secs = settings.drain_deadline.as_secs(),
                "drain deadline passed; exiting with open batches uncommitted (they will be read again)"
            );
            Ok(())
        }
    }
}

/// Applies the revokes and assignments since the last look; returns the
/// revoked partitions.
fn apply_rebalance<Src: Source, W: RowWriter, S: StateStore, D: DeadLetters>(
    source: &mut Src,
    pipeline: &mut Pipeline<W, S, D>,
    pressure: &mut Backpressure,
) -> Vec<i32> {
    let Rebalanced { revoked, assigned } = source.rebalanced();
    for p in &revoked {
        pipeline.revoke(*p);
    }
    if assigned {
        // The new assignment fetches; re-evaluate backpressure.
        pressure.assigned();
        ::metrics::gauge!(metrics::PAUSED).set(0.0);
    }
    revoked
}

/// Publishes each assigned partition's lag in seconds, and turns the
/// consumer not ready while no broker has been reachable for too long.
fn tick<Src: Source, W: RowWriter, S: StateStore, D: DeadLetters>(
    source: &Src,
    pipeline: &Pipeline<W, S, D>,
    unready: &mut Unready,
    health: &Health,
    settings: &DriverSettings,
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let oldest = pipeline.oldest_pending_ms();
    for p in settings.gauges.assigned() {
        let age = oldest
            .get(&p)
            .map_or(0.0, |ts| (now_ms - ts) as f64 / 1000.0);
        settings.gauges.set_lag_seconds(p, age);
    }
    let down = source
        .broker_unreachable_for()
        .filter(|d| *d > settings.broker_not_ready_after);
    if down.is_some() != unready.broker {
        match down {
            Some(d) => tracing::warn!(
                unreachable_secs = d.as_secs(),
                "no kafka broker reachable: reporting not ready"
            ),
            None => tracing::info!("kafka reachable: ready again"),
        }
        unready.broker = down.is_some();
        unready.apply(health);
    }
}

/// Holds, pauses or resumes the source (see [`crate::backpressure`]).
fn backpressure<Src: Source, W: RowWriter, S: StateStore, D: DeadLetters>(
    source: &mut Src,
    pipeline: &Pipeline<W, S, D>,
    pressure: &mut Backpressure,
    unready: &mut Unready,
    health: &Health,
    settings: &DriverSettings,
) {
    let now = Instant::now();
    match pressure.observe(pipeline.congested(), settings.pause_after, now) {
        Step::Take | Step::Hold => {}
        Step::Pause => {
            tracing::info!("inserts are behind: pausing partitions");
            source.pause();
            ::metrics::gauge!(metrics::PAUSED).set(1.0);
        }
        Step::Paused => {
            if !unready.paused
                && pressure
                    .paused_for(now)
                    .is_some_and(|d| d > settings.not_ready_after)
            {
                unready.paused = true;
                unready.apply(health);
            }
        }
        Step::Resume => {
            tracing::info!("resuming partitions");
            source.resume();
            ::metrics::gauge!(metrics::PAUSED).set(0.0);
            unready.paused = false;
            unready.apply(health);
        }
    }
}
