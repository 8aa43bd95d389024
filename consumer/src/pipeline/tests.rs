//! The protocol's cases, run in memory: no broker, no ClickHouse. Each case
//! that only a fault test covered against live engines is a table row or a
//! property here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

mod harness;

use super::*;
use crate::testing::{assert_stored_once, MemoryDeadLetters, MemoryState, MemoryWriter, VecSource};
use harness::*;

use Op::*;

#[test]
fn protocol_cases_store_every_event_once() {
    // (case, partition sizes, poison every nth offset (0: none), max rows,
    //  max in flight, steps, what the case must show)
    type Check = fn(&World);
    let none: Check = |_| {};
    type Case = (&'static str, Vec<usize>, i64, usize, usize, Vec<Op>, Check);
    let cases: Vec<Case> = vec![
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
            "an insert stored but answered with an error is retried and dropped by its token",
            vec![8],
            0,
            4,
            2,
            vec![FailAfterStore(2), Feed(0, 8), Commit, Commit],
            |w| assert_eq!(w.committed[&0], 8, "the retries were acknowledged"),
        ),
        (
            "the dead-letter topic down holds the batch until it is back",
            vec![8],
            3,
            4,
            2,
            vec![
                DeadLettersDown(true),
                Feed(0, 8),
                SealAll,
                Commit,
                DeadLettersDown(false),
                Commit,
                Commit,
            ],
            |w| {
                // At least once: a replay after the outage may write one again.
                let mut lettered = w.dead_letters.offsets();
                lettered.sort();
                lettered.dedup();
                assert_eq!(lettered, [(0, 0), (0, 3), (0, 6)]);
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
    type Case = (&'static str, &'static [i64], usize, f64, usize, Option<i64>);
    let cases: &[Case] = &[
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
    s.horizon = Duration::from_millis(200);
    let mut world = World::new(logs(&[4], |_, _| false), s);
    world.state.down.store(true, Ordering::SeqCst);
    let (first, second) = runtime().block_on(async {
        let mut pl = world.start();
        let first = world.feed(&mut pl, 0, 1).await;
        std::thread::sleep(Duration::from_millis(300));
        (first, pl.retry_deferred().await)
    });
    // The first failure holds the message; the next one, past the horizon,
    // stops the run.
    assert!(first.is_ok(), "{first:?}");
    assert!(matches!(second, Err(Error::State(_))), "{second:?}");
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
    let logs = logs_with_gaps(
        &[300, 200, 5],
        |p, o| p == 1 && o % 50 == 7,
        |p, i| p == 0 && i % 40 == 3,
    );
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
            broker_not_ready_after: Duration::from_secs(30),
            drain_deadline: Duration::from_secs(10),
            gauges: crate::metrics::PartitionGauges::default(),
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
                if logs.iter().all(|(p, l)| c.get(p) == Some(&log_end(l))) {
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
        assert_eq!(committed.get(p), Some(&log_end(l)), "partition {p}");
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
        1 => (1usize..3).prop_map(FailAfterStore),
        1 => any::<bool>().prop_map(DeadLettersDown),
        1 => any::<bool>().prop_map(Block),
        1 => any::<bool>().prop_map(StateDown),
        1 => Just(RetryDeferred),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any interleaving of messages (with offset gaps), crashes, lost
    /// commits, revokes, rewinds, insert failures (before and after the
    /// rows are stored), slow inserts, state-store and dead-letter outages
    /// stores every valid message exactly once, commits in order, and
    /// dead-letters every poison one; of the rows that repeat an event,
    /// all but the first are marked copies.
    #[test]
    fn no_interleaving_loses_or_duplicates_a_row(
        sizes in prop::collection::vec(0usize..30, 1..4),
        poison_every in prop_oneof![Just(0i64), 5i64..13],
        max_rows in 1usize..6,
        max_in_flight in 1usize..4,
        gap_every in prop_oneof![Just(0usize), 3usize..9],
        copy_every in prop_oneof![Just(0usize), 2usize..7],
        copy_back in 1usize..12,
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
        let gap = move |_: i32, i: usize| gap_every > 0 && i % gap_every == 2;
        // Some messages repeat an earlier one's event (a retried publish),
        // in the same batch or another: each event is counted once.
        let copy = move |_: i32, i: usize| (copy_every > 0 && i % copy_every == 1).then_some(copy_back);
        let logs = logs_with_copies(&sizes, poison, gap, copy);
        let mut world = World::new(logs, settings(max_rows, max_in_flight));
        let rows = runtime().block_on(play(&mut world, &ops));
        let valid = world.logs.values().flatten().filter(|m| is_valid(m)).count();
        prop_assert_eq!(rows, valid);
    }
}

#[test]
fn the_oldest_message_not_committed_is_known_per_partition() {
    runtime().block_on(async {
        let mut pl = Pipeline::new(
            Arc::new(MemoryWriter::default()),
            Arc::new(MemoryState::default()),
            Arc::new(MemoryDeadLetters::default()),
            settings(64, 2),
        );
        assert!(pl.oldest_pending_ms().is_empty());
        // The harness stamps offset n of any partition at BASE + n.
        const BASE: i64 = 1_700_000_000_000;
        for offset in 2..5 {
            pl.receive(message(0, offset, false))
                .await
                .expect("receive");
        }
        pl.receive(message(1, 7, false)).await.expect("receive");
        let want = BTreeMap::from([(0, BASE + 2), (1, BASE + 7)]);
        assert_eq!(pl.oldest_pending_ms(), want, "open batches");
        pl.flush(true);
        assert!(!pl.is_idle());
        assert_eq!(pl.oldest_pending_ms(), want, "inserting");
        while !pl.is_idle() {
            pl.completed().await.expect("insert");
        }
        assert!(pl.oldest_pending_ms().is_empty(), "all committed");
    });
}
