//! The protocol's cases, run in memory: no broker, no ClickHouse. Each case
//! that only a fault test covered against live engines is a table row or a
//! property here.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::testing::{assert_stored_once, MemoryDeadLetters, MemoryState, MemoryWriter, VecSource};

const TOPIC: &str = "audit";

type TestPipeline = Pipeline<MemoryWriter, MemoryState, MemoryDeadLetters>;

fn valid_payload() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let event = trailhouse_schemas::examples::all().remove(0);
            trailhouse_schemas::encode(&event).expect("example encodes")
        })
        .clone()
}

fn message(partition: i32, offset: i64, poison: bool) -> Received {
    Received {
        partition,
        offset,
        key: Some(b"org".to_vec()),
        payload: (!poison).then(valid_payload),
        traceparent: None,
    }
}

fn is_valid(m: &Received) -> bool {
    m.payload.is_some()
}

/// Logs of `sizes[p]` messages per partition; `poison(p, offset)` says which
/// have no payload.
fn logs(sizes: &[usize], poison: impl Fn(i32, i64) -> bool) -> BTreeMap<i32, Vec<Received>> {
    sizes
        .iter()
        .enumerate()
        .map(|(p, n)| {
            let p = p as i32;
            (
                p,
                (0..*n as i64)
                    .map(|o| message(p, o, poison(p, o)))
                    .collect(),
            )
        })
        .collect()
}

fn settings(max_rows: usize, max_in_flight: usize) -> PipelineSettings {
    PipelineSettings {
        topic: TOPIC.into(),
        limits: BatchLimits {
            max_rows,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(3600),
        },
        horizon: Duration::from_secs(3600),
        max_in_flight,
        poison: PoisonGuard::new(1000, 0.5, 100),
    }
}

/// The engines one consumer after another talks to, the partition logs, and
/// the group's committed offsets.
struct World {
    writer: MemoryWriter,
    state: MemoryState,
    dead_letters: MemoryDeadLetters,
    logs: BTreeMap<i32, Vec<Received>>,
    committed: BTreeMap<i32, i64>,
    /// Where the current member reads next, per partition.
    position: BTreeMap<i32, i64>,
    settings: PipelineSettings,
}

impl World {
    fn new(logs: BTreeMap<i32, Vec<Received>>, settings: PipelineSettings) -> Self {
        World {
            writer: MemoryWriter::default(),
            state: MemoryState::default(),
            dead_letters: MemoryDeadLetters::default(),
            committed: logs.keys().map(|p| (*p, 0)).collect(),
            position: logs.keys().map(|p| (*p, 0)).collect(),
            logs,
            settings,
        }
    }

    /// A consumer (re)started: it reads every partition from its committed
    /// offset.
    fn start(&mut self) -> TestPipeline {
        self.position = self.committed.clone();
        Pipeline::new(
            Arc::new(self.writer.clone()),
            Arc::new(self.state.clone()),
            Arc::new(self.dead_letters.clone()),
            self.settings.clone(),
        )
    }

    /// Feeds up to `n` next messages of `partition`.
    async fn feed(&mut self, pl: &mut TestPipeline, partition: i32, n: usize) -> Result<(), Error> {
        for _ in 0..n {
            let at = self.position[&partition];
            let Some(m) = self.logs[&partition].get(at as usize).cloned() else {
                break;
            };
            self.position.insert(partition, at + 1);
            pl.receive(m).await?;
            pl.flush(false);
        }
        Ok(())
    }

    /// Waits for the next finished batch (a blocked insert times out) and
    /// commits it when `commit`.
    async fn complete(
        &mut self,
        pl: &mut TestPipeline,
        commit: bool,
    ) -> Result<Option<CommitRequest>, Error> {
        let Ok(done) = tokio::time::timeout(Duration::from_secs(1), pl.completed()).await else {
            return Ok(None);
        };
        let r = done?;
        if let (Some(r), true) = (r, commit) {
            let c = self.committed.entry(r.partition).or_insert(0);
            *c = (*c).max(r.next_offset);
        }
        pl.flush(false);
        Ok(r)
    }

    /// The revoke callback: waits for the partition's running inserts, then
    /// the partition is taken away and given back at its committed offset.
    async fn reassign(&mut self, pl: &mut TestPipeline, partition: i32) {
        let counts = pl.in_flight_counts();
        for _ in 0..1000 {
            if counts.running(partition) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pl.revoke(partition);
        self.position.insert(partition, self.committed[&partition]);
    }

    /// Seeks a partition back to its committed offset (no revoke); never
    /// forward, which only a new assignment does.
    fn rewind(&mut self, partition: i32) {
        let back = self.committed[&partition].min(self.position[&partition]);
        self.position.insert(partition, back);
    }

    /// Runs a healthy consumer to the end of every log.
    async fn finish(&mut self) {
        self.writer.block(false);
        self.writer.fail_next.store(0, Ordering::SeqCst);
        self.state.down.store(false, Ordering::SeqCst);
        self.dead_letters.down.store(false, Ordering::SeqCst);
        let mut pl = self.start();
        let partitions: Vec<i32> = self.logs.keys().copied().collect();
        for _ in 0..100 {
            for &p in &partitions {
                let n = self.logs[&p].len();
                self.feed(&mut pl, p, n).await.expect("healthy feed");
            }
            pl.retry_deferred().await.expect("state is up");
            pl.flush(true);
            while !pl.is_idle() {
                self.complete(&mut pl, true).await.expect("healthy insert");
                pl.flush(true);
            }
            if self
                .committed
                .iter()
                .all(|(p, c)| *c == self.logs[p].len() as i64)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("never caught up: committed {:?}", self.committed);
    }

    /// Every valid message stored once, every poison one dead-lettered.
    fn check(&self) -> usize {
        let rows = assert_stored_once(TOPIC, &self.logs, is_valid, &self.writer.stored());
        let lettered: std::collections::BTreeSet<(i32, i64)> =
            self.dead_letters.offsets().into_iter().collect();
        for (p, log) in &self.logs {
            for m in log.iter().filter(|m| !is_valid(m)) {
                assert!(
                    lettered.contains(&(*p, m.offset)),
                    "poison {p}/{} not dead-lettered",
                    m.offset
                );
            }
        }
        rows
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The next `n` messages of a partition.
    Feed(i32, usize),
    /// Seal every open batch and start inserts.
    SealAll,
    /// Wait for the next finished batch and commit it.
    Commit,
    /// Wait for the next finished batch, but its commit is lost (the
    /// partition moved; the consumer died).
    LoseCommit,
    /// The process dies now: running inserts stop where they are.
    Crash,
    /// The partition moves away and back (the revoke waits for its inserts).
    Reassign(i32),
    /// The partition is re-read from its committed offset, no revoke.
    Rewind(i32),
    /// The next `n` insert attempts fail transiently.
    FailInserts(usize),
    /// Inserts wait until unblocked (a slow ClickHouse).
    Block(bool),
    /// The state store becomes unreachable, or reachable again.
    StateDown(bool),
    /// Deferred messages are tried again.
    RetryDeferred,
}

/// Runs `ops` against `world`; a run that fails (as the process would exit)
/// restarts the consumer. Then a healthy consumer reads to the end.
async fn play(world: &mut World, ops: &[Op]) -> usize {
    let mut pl = world.start();
    for op in ops {
        let step = match *op {
            Op::Feed(p, n) => world.feed(&mut pl, p, n).await,
            Op::SealAll => {
                pl.flush(true);
                Ok(())
            }
            Op::Commit => world.complete(&mut pl, true).await.map(drop),
            Op::LoseCommit => world.complete(&mut pl, false).await.map(drop),
            Op::Crash => {
                drop(pl);
                pl = world.start();
                Ok(())
            }
            Op::Reassign(p) => {
                world.reassign(&mut pl, p).await;
                Ok(())
            }
            Op::Rewind(p) => {
                world.rewind(p);
                Ok(())
            }
            Op::FailInserts(n) => {
                world.writer.fail_next.store(n, Ordering::SeqCst);
                Ok(())
            }
            Op::Block(on) => {
                world.writer.block(on);
                Ok(())
            }
            Op::StateDown(on) => {
                world.state.down.store(on, Ordering::SeqCst);
                Ok(())
            }
            Op::RetryDeferred => pl.retry_deferred().await,
        };
        if let Err(e) = step {
            // The consumer exits uncommitted; a new one takes over.
            tracing::info!(error = %e, "run failed; restarting");
            drop(pl);
            pl = world.start();
        }
    }
    drop(pl);
    world.finish().await;
    world.check()
}

use Op::*;

#[test]
fn protocol_cases_store_every_event_once() {
    // (case, partition sizes, poison every nth offset (0: none), max rows,
    //  max in flight, steps, what the case must show)
    type Check = fn(&World);
    let none: Check = |_| {};
    let cases: Vec<(&str, Vec<usize>, i64, usize, usize, Vec<Op>, Check)> = vec![
        (
            "plain run",
            vec![10, 7],
            0,
            4,
            2,
            vec![
                Feed(0, 10),
                Feed(1, 7),
                SealAll,
                Commit,
                Commit,
                Commit,
                Commit,
                Commit,
            ],
            none,
        ),
        (
            "crash after record, before insert",
            vec![8],
            0,
            4,
            2,
            vec![Block(true), Feed(0, 8), Commit, Crash],
            |w| {
                // Both ranges were recorded by the first run and replayed
                // exactly: two stored batches, the recorded ones.
                let stored = w.writer.stored();
                assert_eq!(
                    stored.keys().collect::<Vec<_>>(),
                    ["audit:0:0-3", "audit:0:4-7"]
                );
            },
        ),
        (
            "crash after insert, before commit",
            vec![12],
            0,
            4,
            1,
            vec![Feed(0, 12), LoseCommit, LoseCommit, Crash],
            |w| {
                // The replayed inserts were acknowledged again and dropped by
                // their tokens.
                assert!(w.writer.acknowledged.load(Ordering::SeqCst) > w.writer.stored().len());
            },
        ),
        (
            "revoke with inserts in flight",
            vec![9, 9],
            0,
            3,
            2,
            vec![
                Feed(0, 9),
                Feed(1, 4),
                Reassign(0),
                Feed(0, 9),
                Feed(1, 5),
                SealAll,
                Commit,
                Commit,
                Commit,
            ],
            none,
        ),
        (
            "revoke while inserts are blocked, then crash",
            vec![9],
            0,
            3,
            2,
            vec![Block(true), Feed(0, 9), Reassign(0), Crash],
            none,
        ),
        (
            "rewind inside the open batch",
            vec![10],
            0,
            4,
            2,
            vec![
                Feed(0, 2),
                Rewind(0),
                Feed(0, 10),
                SealAll,
                Commit,
                Commit,
                Commit,
            ],
            none,
        ),
        (
            "rewind behind batches in flight",
            vec![12],
            0,
            4,
            2,
            vec![
                Block(true),
                Feed(0, 8),
                Rewind(0),
                Block(false),
                Feed(0, 12),
                RetryDeferred,
                Feed(0, 12),
                SealAll,
                Commit,
                Commit,
                Commit,
            ],
            none,
        ),
        (
            "replay of several recorded ranges with a gap",
            vec![20],
            0,
            4,
            3,
            vec![
                Block(true),
                Feed(0, 12),
                Crash,
                Feed(0, 20),
                SealAll,
                Commit,
                Commit,
            ],
            |w| {
                let mut ranges: Vec<(i64, i64)> = w
                    .state
                    .ranges(0)
                    .iter()
                    .map(|r| (r.first, r.last))
                    .collect();
                ranges.sort();
                ranges.dedup();
                assert!(ranges.starts_with(&[(0, 3), (4, 7), (8, 11)]), "{ranges:?}");
            },
        ),
        (
            "transient insert failures are retried with the same token",
            vec![8],
            0,
            4,
            2,
            vec![FailInserts(5), Feed(0, 8), Commit, Commit],
            |w| assert_eq!(w.committed[&0], 8, "retried within the horizon, no restart"),
        ),
        (
            "state store down: messages are held, then accepted in order",
            vec![8],
            0,
            4,
            2,
            vec![
                StateDown(true),
                Feed(0, 8),
                RetryDeferred,
                StateDown(false),
                RetryDeferred,
                SealAll,
                Commit,
                Commit,
            ],
            |w| {
                assert_eq!(
                    w.committed[&0], 8,
                    "held messages went on once the store was back"
                )
            },
        ),
        (
            "poison is dead-lettered and its batch still commits",
            vec![10],
            3,
            4,
            2,
            vec![Feed(0, 10), SealAll, Commit, Commit, Commit],
            |w| assert_eq!(w.dead_letters.offsets().len(), 4, "offsets 0, 3, 6, 9"),
        ),
    ];
    for (name, sizes, every, max_rows, max_in_flight, ops, check) in cases {
        let poison = move |_: i32, o: i64| every > 0 && o % every == 0;
        let mut world = World::new(logs(&sizes, poison), settings(max_rows, max_in_flight));
        let rows = runtime().block_on(play(&mut world, &ops));
        let valid: usize = world
            .logs
            .values()
            .flatten()
            .filter(|m| is_valid(m))
            .count();
        assert_eq!(rows, valid, "{name}");
        check(&world);
    }
}

#[test]
fn poison_limits_stop_the_run_instead_of_dead_lettering() {
    // (case, poison offsets of 20, window, max ratio, max consecutive, trips at)
    let cases: &[(&str, &[i64], usize, f64, usize, Option<i64>)] = &[
        ("occasional poison passes", &[2, 9, 15], 10, 0.3, 3, None),
        ("a run of poison trips", &[4, 5, 6], 100, 1.0, 3, Some(6)),
        (
            "too much in the window trips",
            &[1, 3, 5, 7],
            6,
            0.4,
            10,
            Some(5),
        ),
    ];
    for &(name, bad, window, ratio, consecutive, trips) in cases {
        let log = logs(&[20], |_, o| bad.contains(&o));
        let mut s = settings(100, 2);
        s.poison = PoisonGuard::new(window, ratio, consecutive);
        let mut world = World::new(log, s);
        let r = runtime().block_on(async {
            let mut pl = world.start();
            world.feed(&mut pl, 0, 20).await
        });
        match (r, trips) {
            (Ok(()), None) => {}
            (Err(Error::Poison { offset, .. }), Some(at)) => assert_eq!(offset, at, "{name}"),
            (r, _) => panic!("{name}: {r:?}"),
        }
    }
}

#[test]
fn a_state_store_down_past_the_horizon_stops_the_run() {
    let mut s = settings(4, 2);
    s.horizon = Duration::ZERO;
    let mut world = World::new(logs(&[4], |_, _| false), s);
    world.state.down.store(true, Ordering::SeqCst);
    let r = runtime().block_on(async {
        let mut pl = world.start();
        world.feed(&mut pl, 0, 1).await?;
        std::thread::sleep(Duration::from_millis(2));
        pl.retry_deferred().await
    });
    assert!(matches!(r, Err(Error::State(_))), "{r:?}");
    assert!(world.writer.stored().is_empty());
}

#[test]
fn a_permanent_insert_error_fails_the_batch_uncommitted() {
    let mut world = World::new(logs(&[4], |_, _| false), settings(4, 2));
    world.writer.broken.store(true, Ordering::SeqCst);
    let r = runtime().block_on(async {
        let mut pl = world.start();
        world.feed(&mut pl, 0, 4).await?;
        world.complete(&mut pl, true).await
    });
    assert!(matches!(r, Err(Error::Insert { .. })), "{r:?}");
    assert_eq!(world.committed[&0], 0);
}

#[test]
fn the_driver_runs_the_pipeline_against_an_in_memory_source() {
    let logs = logs(&[300, 200, 5], |p, o| p == 1 && o % 50 == 7);
    let source = VecSource::new(logs.clone());
    let writer = MemoryWriter::default();
    let mut s = settings(64, 2);
    s.limits.max_age = Duration::from_millis(20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let shutdown = trailhouse_common::shutdown::Shutdown::new();
        let health = trailhouse_common::health::Health::new();
        let mut pipeline = Pipeline::new(
            Arc::new(writer.clone()),
            Arc::new(MemoryState::default()),
            Arc::new(MemoryDeadLetters::default()),
            s,
        );
        let driver_settings = crate::processor::DriverSettings {
            pause_after: Duration::from_millis(5),
            not_ready_after: Duration::from_secs(60),
            drain_deadline: Duration::from_secs(10),
        };
        let mut src = source.clone();
        let stop = shutdown.clone();
        let watcher = async {
            // Midway, partition 0 moves away and back; then wait for the end.
            let mut reassigned = false;
            for _ in 0..2000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let c = source.committed();
                if !reassigned && c.get(&0).is_some_and(|o| *o >= 64) {
                    source.reassign(0);
                    reassigned = true;
                }
                if logs
                    .iter()
                    .all(|(p, l)| c.get(p) == Some(&(l.len() as i64)))
                {
                    break;
                }
            }
            stop.trigger();
        };
        let (r, ()) = tokio::join!(
            crate::processor::run(&mut src, &mut pipeline, &shutdown, &health, driver_settings),
            watcher
        );
        r.expect("driver run");
    });
    let committed = source.committed();
    for (p, l) in &logs {
        assert_eq!(committed.get(p), Some(&(l.len() as i64)), "partition {p}");
    }
    assert_stored_once(TOPIC, &logs, is_valid, &writer.stored());
}

fn op(partitions: i32) -> impl Strategy<Value = Op> {
    let p = 0..partitions;
    prop_oneof![
        6 => (p.clone(), 1usize..8).prop_map(|(p, n)| Feed(p, n)),
        1 => Just(SealAll),
        4 => Just(Commit),
        1 => Just(LoseCommit),
        1 => Just(Crash),
        1 => p.clone().prop_map(Reassign),
        1 => p.prop_map(Rewind),
        1 => (1usize..4).prop_map(FailInserts),
        1 => any::<bool>().prop_map(Block),
        1 => any::<bool>().prop_map(StateDown),
        1 => Just(RetryDeferred),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any interleaving of messages, crashes, lost commits, revokes,
    /// rewinds, insert failures, slow inserts and state-store outages stores
    /// every valid message exactly once and dead-letters every poison one.
    #[test]
    fn no_interleaving_loses_or_duplicates_a_row(
        sizes in prop::collection::vec(0usize..30, 1..4),
        poison_every in prop_oneof![Just(0i64), 5i64..13],
        max_rows in 1usize..6,
        max_in_flight in 1usize..4,
        ops in prop::collection::vec(op(3), 0..60),
    ) {
        let partitions = sizes.len() as i32;
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|o| match o {
                Feed(p, _) | Reassign(p) | Rewind(p) => *p < partitions,
                _ => true,
            })
            .collect();
        let poison = move |_: i32, o: i64| poison_every > 0 && o % poison_every == 3;
        let mut world = World::new(logs(&sizes, poison), settings(max_rows, max_in_flight));
        let rows = runtime().block_on(play(&mut world, &ops));
        let valid = world.logs.values().flatten().filter(|m| is_valid(m)).count();
        prop_assert_eq!(rows, valid);
    }
}
