//! The delivery protocol against in-memory doubles: a simulated reader
//! (the real routing step), a consumer storing events into the history
//! behind it, a sink that fails on demand. Whatever the interleaving
//! (overflows, failures, pauses, replays, restarts), a stream's
//! destination receives exactly the matching events, in offset order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use serde_json::json;
use trailhouse_query_api::access::Access;
use trailhouse_schemas::{AuditEvent, EventRow, Lineage};
use uuid::Uuid;

use crate::deliver::MemorySink;
use crate::reader::route;
use crate::registry::Registry;
use crate::shared::Positions;
use crate::spec::{Allow, Replay, Stream, StreamInput};
use crate::status::Mode;
use crate::store::{MemoryStore, StreamStore};
use crate::worker::Pace;

const T0: i64 = 1_800_000_000;

fn event(org: &str, o: i64, created_s: i64, action: &str) -> AuditEvent {
    let mut e = trailhouse_schemas::examples::all()
        .into_iter()
        .next()
        .expect("an example");
    e.org_id = org.to_string();
    e.id = Uuid::from_u128(o as u128 + 1);
    e.created_at = DateTime::from_timestamp(created_s, 0).unwrap_or_default();
    e.action.kind = action.to_string();
    e
}

/// The offset an event was given, from its id.
fn offset_of(v: &serde_json::Value) -> i64 {
    let id = v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    id.map(|u| u.as_u128() as i64 - 1).unwrap_or(-1)
}

struct Sim {
    registry: Arc<Registry<MemorySink, MemoryStore>>,
    sink: MemorySink,
    store: MemoryStore,
    positions: Arc<Positions>,
    access: Access,
    /// Published, not yet stored by the consumer.
    pending: Vec<EventRow>,
    next: i64,
}

impl Sim {
    fn new(inbox: usize) -> Sim {
        Sim::with(inbox, MemoryStore::default(), MemorySink::default(), 0)
    }

    fn with(inbox: usize, store: MemoryStore, sink: MemorySink, start: i64) -> Sim {
        let positions = Arc::new(Positions::default());
        positions.assign(0, Some(start));
        positions.part(0).stored.store(start, Ordering::SeqCst);
        let pace = Pace {
            first_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(20),
            history_rows: 7,
            linger: Duration::from_millis(1),
            history_timeout: Duration::from_secs(5),
        };
        let registry = Arc::new(Registry::new(
            Arc::new(sink.clone()),
            Arc::new(store.clone()),
            positions.clone(),
            pace,
            inbox,
            2,
        ));
        Sim {
            registry,
            sink,
            store,
            positions,
            access: Access::default(),
            pending: Vec::new(),
            next: start,
        }
    }

    fn publish(&mut self, org: &str, created_s: i64, action: &str) -> i64 {
        let o = self.next;
        self.next += 1;
        let e = event(org, o, created_s, action);
        route(
            &self.registry,
            &self.positions,
            0,
            o,
            Some(&e),
            &self.access,
        );
        self.pending.push(EventRow::from_event(
            &e,
            Lineage {
                partition: 0,
                offset: o,
            },
        ));
        o
    }

    /// The consumer stores everything before `o`.
    fn store_through(&mut self, o: i64) {
        let (now, later): (Vec<EventRow>, Vec<EventRow>) =
            self.pending.drain(..).partition(|r| r.kafka_offset < o);
        self.store.add_events(now);
        self.pending = later;
        let part = self.positions.part(0);
        part.stored.fetch_max(o, Ordering::SeqCst);
    }

    async fn add(&self, body: serde_json::Value) -> Stream {
        let input: StreamInput = serde_json::from_value(body).expect("input");
        let s = Stream::create(
            "acme",
            input,
            &Allow {
                http: true,
                private: true,
                local_files: true,
                object_prefixes: Vec::new(),
            },
            Utc::now(),
        )
        .expect("valid");
        self.store.put(&s).await.expect("put");
        self.registry.refresh().await.expect("refresh");
        s
    }

    async fn update(&self, s: &Stream) {
        self.store.put(s).await.expect("put");
        self.registry.refresh().await.expect("refresh");
    }

    fn delivered(&self, s: &Stream, dir: Option<&str>) -> Vec<i64> {
        self.sink
            .received(s.id)
            .iter()
            .filter(|(d, _)| dir.is_none_or(|x| x == d))
            .flat_map(|(_, b)| b.events.iter().map(offset_of))
            .collect()
    }

    async fn until(&self, what: &str, f: impl Fn() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let streams = self.store.streams(None).await.unwrap_or_default();
        let got: Vec<_> = streams
            .iter()
            .map(|s| (self.delivered(s, None), self.registry.status(s.id)))
            .collect();
        panic!("timed out waiting for {what}: {got:?}");
    }

    /// Waits until the stream is live with nothing waiting.
    async fn live(&self, s: &Stream) {
        self.until("live", || {
            self.registry
                .status(s.id)
                .is_some_and(|st| st.mode == Mode::Live)
        })
        .await;
    }
}

fn hook() -> serde_json::Value {
    json!({"type": "webhook", "url": "http://127.0.0.1:9/x"})
}

#[tokio::test]
async fn live_events_arrive_filtered_and_in_order() {
    let mut sim = Sim::new(1000);
    let s = sim
        .add(json!({"name": "logins", "destination": hook(), "filter": "action=user.login"}))
        .await;
    sim.live(&s).await;
    let mut want = Vec::new();
    for i in 0..40 {
        let action = if i % 3 == 0 { "user.login" } else { "x" };
        let org = if i % 5 == 0 { "other" } else { "acme" };
        let o = sim.publish(org, T0 + i, action);
        if action == "user.login" && org == "acme" {
            want.push(o);
        }
    }
    sim.until("all delivered", || sim.delivered(&s, None) == want)
        .await;
    let st = sim.registry.status(s.id).expect("status");
    assert_eq!(st.delivered, want.len() as u64);
    assert_eq!(st.failed, 0);
    sim.until("cursor at the end", || {
        sim.registry
            .status(s.id)
            .and_then(|st| st.cursor.get(&0).copied())
            == Some(40)
    })
    .await;
}

#[tokio::test]
async fn an_overflowing_stream_catches_up_from_the_history_without_gap_or_repeat() {
    let mut sim = Sim::new(3);
    let s = sim.add(json!({"name": "all", "destination": hook()})).await;
    sim.live(&s).await;
    sim.sink.set_failing(true);
    sim.publish("acme", T0, "x");
    sim.until("failures", || {
        sim.registry.status(s.id).is_some_and(|st| st.failed > 2)
    })
    .await;
    // The inbox overflows while the destination is down.
    for i in 1..50 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(30);
    sim.sink.set_failing(false);
    sim.until("30 delivered", || sim.delivered(&s, None).len() >= 30)
        .await;
    sim.store_through(50);
    for i in 50..60 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(60);
    let want: Vec<i64> = (0..60).collect();
    sim.until("all delivered", || sim.delivered(&s, None) == want)
        .await;
    let st = sim.registry.status(s.id).expect("status");
    assert!(st.retried > 0);
    assert_eq!(st.consecutive_failures, 0);
}

#[tokio::test]
async fn a_stream_pauses_itself_after_its_failures_and_resumes_where_it_stopped() {
    let mut sim = Sim::new(100);
    let s = sim
        .add(json!({"name": "flaky", "destination": hook(), "max_failures": 3}))
        .await;
    sim.live(&s).await;
    sim.sink.set_failing(true);
    sim.publish("acme", T0, "x");
    sim.until("paused", || {
        sim.registry
            .status(s.id)
            .is_some_and(|st| st.mode == Mode::Paused)
    })
    .await;
    let stored = sim.store.streams(Some("acme")).await.expect("streams");
    let pause = stored[0].paused.clone().expect("paused");
    assert!(pause.automatic);
    assert!(
        pause.reason.contains("3 deliveries failed"),
        "{}",
        pause.reason
    );
    assert_eq!(stored[0].view()["state"], "error");
    sim.registry.refresh().await.expect("refresh");
    for i in 1..5 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(5);
    sim.sink.set_failing(false);
    let mut resumed = stored[0].clone();
    resumed.paused = None;
    sim.update(&resumed).await;
    let want: Vec<i64> = (0..5).collect();
    sim.until("all delivered", || sim.delivered(&s, None) == want)
        .await;
}

#[tokio::test]
async fn a_replay_delivers_the_range_then_continues_live() {
    let mut sim = Sim::new(100);
    let mut s = sim
        .add(json!({"name": "siem", "destination": hook()}))
        .await;
    sim.live(&s).await;
    for i in 0..20 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(20);
    let first: Vec<i64> = (0..20).collect();
    sim.until("first pass", || sim.delivered(&s, Some("live")) == first)
        .await;
    s.replay = Some(Replay {
        id: 1,
        from: DateTime::from_timestamp(T0 + 5, 0).unwrap_or_default(),
        to: Some(DateTime::from_timestamp(T0 + 12, 0).unwrap_or_default()),
    });
    sim.update(&s).await;
    let replayed: Vec<i64> = (5..12).collect();
    sim.until("replayed", || {
        sim.delivered(&s, Some("replay-1")) == replayed
    })
    .await;
    for i in 20..25 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(25);
    let live: Vec<i64> = (0..25).collect();
    sim.until("live again", || sim.delivered(&s, Some("live")) == live)
        .await;
    sim.until("window closed", || {
        sim.registry
            .status(s.id)
            .is_some_and(|st| st.replay.is_none())
    })
    .await;
}

#[tokio::test]
async fn a_restart_continues_from_the_written_cursor() {
    let store = MemoryStore::default();
    let sink = MemorySink::default();
    let mut sim = Sim::with(100, store.clone(), sink.clone(), 0);
    let s = sim
        .add(json!({"name": "siem", "destination": hook()}))
        .await;
    sim.live(&s).await;
    for i in 0..10 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.until("ten", || sim.delivered(&s, None).len() == 10)
        .await;
    sim.registry.flush().await.expect("flush");
    let holds = sim.registry.holds();
    assert_eq!(holds.get(&0), Some(&10));
    sim.store_through(10);
    sim.registry.stop();
    // Events published while no streamer ran, stored by the consumer.
    for i in 10..15 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(15);
    // The new reader starts at the committed offset 10... and finds five
    // more before its own position (15): read from the history.
    let mut again = Sim::with(100, store, sink, 15);
    again.next = 15;
    again.registry.refresh().await.expect("refresh");
    for i in 15..18 {
        again.publish("acme", T0 + i, "x");
    }
    again.store_through(18);
    let want: Vec<i64> = (0..18).collect();
    again
        .until("all once", || again.delivered(&s, None) == want)
        .await;
}

#[tokio::test]
async fn any_interleaving_delivers_each_matching_event_once_in_order() {
    for seed in 0..12u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut sim = Sim::new(rng.random_range(2..12));
        let s = sim
            .add(json!({"name": "p", "destination": hook(), "filter": "action=a"}))
            .await;
        sim.live(&s).await;
        let mut want = Vec::new();
        for step in 0..120 {
            let org = if rng.random_bool(0.2) {
                "other"
            } else {
                "acme"
            };
            let action = if rng.random_bool(0.7) { "a" } else { "b" };
            let o = sim.publish(org, T0 + step, action);
            if org == "acme" && action == "a" {
                want.push(o);
            }
            if rng.random_bool(0.2) {
                let lag = rng.random_range(0..10);
                sim.store_through((sim.next - lag).max(0));
            }
            if rng.random_bool(0.05) {
                sim.sink.set_failing(rng.random_bool(0.5));
            }
            if rng.random_bool(0.3) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..3))).await;
            }
        }
        sim.sink.set_failing(false);
        sim.store_through(sim.next);
        sim.until("all delivered", || {
            sim.delivered(&s, None).len() >= want.len()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(sim.delivered(&s, None), want, "seed {seed}");
        sim.registry.stop();
    }
}

#[tokio::test]
async fn events_offered_before_an_assignment_are_not_lost_when_the_inbox_is_cleared() {
    let mut sim = Sim::new(100);
    // The partition is not this streamer's yet when the stream starts.
    sim.positions.assign(0, None);
    let s = sim
        .add(json!({"name": "early", "destination": hook()}))
        .await;
    sim.live(&s).await;
    // Offered, then the partition is assigned before the worker takes them:
    // its next step clears the inbox.
    for i in 0..10 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.positions.assign(0, Some(10));
    sim.store_through(10);
    for i in 10..15 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(15);
    let want: Vec<i64> = (0..15).collect();
    sim.until("all", || sim.delivered(&s, None) == want).await;
}

#[tokio::test]
async fn an_edit_during_a_failing_delivery_loses_nothing() {
    let mut sim = Sim::new(100);
    let mut s = sim
        .add(json!({"name": "edited", "destination": hook()}))
        .await;
    sim.live(&s).await;
    sim.sink.set_failing(true);
    for i in 0..5 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(5);
    sim.until("a failure", || {
        sim.registry.status(s.id).is_some_and(|st| st.failed >= 1)
    })
    .await;
    // The user fixes the destination while the batch is being retried.
    s.name = "edited again".into();
    sim.update(&s).await;
    sim.sink.set_failing(false);
    let want: Vec<i64> = (0..5).collect();
    sim.until("all", || sim.delivered(&s, None) == want).await;
}

#[tokio::test]
async fn a_second_replay_during_the_first_does_not_repeat_the_rest() {
    let mut sim = Sim::new(100);
    let mut s = sim.add(json!({"name": "r", "destination": hook()})).await;
    sim.live(&s).await;
    for i in 0..30 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(30);
    sim.until("first pass", || sim.delivered(&s, Some("live")).len() == 30)
        .await;
    sim.sink.set_failing(true);
    s.replay = Some(Replay {
        id: 1,
        from: DateTime::from_timestamp(T0, 0).unwrap_or_default(),
        to: Some(DateTime::from_timestamp(T0 + 10, 0).unwrap_or_default()),
    });
    sim.update(&s).await;
    sim.until("replay 1 started", || {
        sim.registry
            .status(s.id)
            .is_some_and(|st| st.replay.is_some())
    })
    .await;
    s.replay = Some(Replay {
        id: 2,
        from: DateTime::from_timestamp(T0 + 20, 0).unwrap_or_default(),
        to: None,
    });
    sim.update(&s).await;
    sim.sink.set_failing(false);
    let second: Vec<i64> = (20..30).collect();
    sim.until("replay 2", || sim.delivered(&s, Some("replay-2")) == second)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Offsets 0..30 were live already: none of them again as live.
    assert_eq!(sim.delivered(&s, Some("live")).len(), 30);
}

#[tokio::test]
async fn an_overflow_before_the_stream_has_a_place_in_a_partition_loses_nothing() {
    let mut sim = Sim::new(3);
    sim.positions.assign(0, None);
    let s = sim
        .add(json!({"name": "late", "destination": hook()}))
        .await;
    sim.live(&s).await;
    // Assigned, and the inbox overflows, before the worker runs again.
    sim.positions.assign(0, Some(0));
    for i in 0..10 {
        sim.publish("acme", T0 + i, "x");
    }
    sim.store_through(10);
    let want: Vec<i64> = (0..10).collect();
    sim.until("all", || sim.delivered(&s, None) == want).await;
}
