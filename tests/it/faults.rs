//! Exactly-once through failures: each test pushes `fault_events()` events
//! (200,000 by default) through a real consumer process while breaking
//! something, then compares `count()`, `uniqExact(id)` and the set of ids
//! with what was produced.

mod streams;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_tests::faults::{
    self, consumer, fault_events, produce, produce_range, verdict, Broker, ClickHouse, Proc, Sent,
    Verdict, Watched,
};

struct Setup {
    name: String,
    kafka: KafkaArgs,
    ch: ClickHouseArgs,
    log: PathBuf,
    /// A broker of this test's own, unless the test brought one: the fault
    /// tests do not share the local broker (and its load) with other tests.
    broker: Option<Watched>,
    /// What the supervision restarted, and why.
    restarts: std::sync::Mutex<Vec<String>>,
    /// The logs of the consumers started with [`Setup::other_consumer`].
    other_logs: std::sync::Mutex<Vec<PathBuf>>,
}

impl Setup {
    async fn new(
        test: &str,
        partitions: i32,
        broker: Option<&Broker>,
        server: Option<&ClickHouse>,
    ) -> Setup {
        let name = trailhouse_tests::unique_name("f", test);
        let own = broker.is_none().then(Watched::start);
        let brokers = match (broker, own.as_ref()) {
            (Some(b), _) => b.address(),
            (None, Some(w)) => w.address(),
            (None, None) => String::new(),
        };
        let ch_url = server.map(ClickHouse::url).unwrap_or_else(|| {
            std::env::var("TRAILHOUSE_TEST_CLICKHOUSE")
                .unwrap_or_else(|_| "http://127.0.0.1:8123".into())
        });
        let kafka = KafkaArgs::local(brokers, format!("{name}.events"));
        ensure_topic(&kafka, &kafka.topic, partitions, 1)
            .await
            .expect("topic");
        ensure_topic(&kafka, &format!("{}.dlq", kafka.topic), 1, 1)
            .await
            .expect("dlq topic");
        let ch = ClickHouseArgs::local(ch_url, name.clone());
        migrate(&ch).await.expect("migrate");
        let log = std::env::temp_dir().join(format!("{name}.consumer.log"));
        Setup {
            name,
            kafka,
            ch,
            log,
            broker: own,
            restarts: std::sync::Mutex::default(),
            other_logs: std::sync::Mutex::default(),
        }
    }

    fn group(&self) -> String {
        format!("{}.group", self.name)
    }

    fn consumer(&self, extra: &[(&str, String)]) -> Proc {
        consumer(&self.kafka, &self.ch, &self.group(), extra, &self.log)
    }

    /// A second kind of consumer in the group, logging to its own file.
    fn other_consumer(&self, label: &str, extra: &[(&str, String)]) -> Proc {
        let log = self.log.with_extension(format!("{label}.log"));
        if let Ok(mut logs) = self.other_logs.lock() {
            if !logs.contains(&log) {
                logs.push(log.clone());
            }
        }
        consumer(&self.kafka, &self.ch, &self.group(), extra, &log)
    }

    /// Where each partition stands (see [`faults::diagnose`]).
    async fn diagnose(&self) -> String {
        faults::diagnose(&self.kafka, &self.ch, &self.group()).await
    }

    /// Waits until `target` rows are stored (or `timeout`), restarting the
    /// consumer whenever it exits, as a deployment's restart policy would
    /// (a consumer stops when a failure outlasts its retry horizon). When
    /// nothing moves for 45 s it prints where each partition stands and
    /// restarts the consumer with SIGTERM, so it leaves the group and the
    /// group rebalances (the local broker has left a partition without an
    /// owner; see docs/ARCHITECTURE.md); when that does not help either, it
    /// restarts the broker too (see `Watched`). Each restart is recorded for
    /// [`Setup::check`].
    async fn supervise_until(
        &self,
        target: u64,
        c: &mut Proc,
        extra: &[(&str, String)],
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        let (mut last, mut progress, mut stalls) = (0, Instant::now(), 0);
        loop {
            let now = rows(&self.ch).await;
            if now >= target || Instant::now() > deadline {
                return;
            }
            if now > last {
                (last, progress, stalls) = (now, Instant::now(), 0);
            }
            if let Some(status) = c.exited() {
                self.restarted(format!("consumer exited ({status}) at {now} rows"));
                *c = self.consumer(extra);
            }
            if progress.elapsed() > Duration::from_secs(45) {
                stalls += 1;
                let why = format!("no progress for 45 s at {now} rows");
                self.restart_stalled(c, extra, stalls, &why).await;
                progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// After a stall: prints where each partition stands, stops the
    /// consumer with SIGTERM (it leaves the group), restarts the broker too
    /// on every second stall, and starts the consumer again.
    async fn restart_stalled(
        &self,
        c: &mut Proc,
        extra: &[(&str, String)],
        stalls: u32,
        why: &str,
    ) {
        let broker = self.broker.as_ref().filter(|_| stalls.is_multiple_of(2));
        let what = if broker.is_some() {
            "the consumer and the broker"
        } else {
            "the consumer"
        };
        println!("{}: {why}\n{}", self.name, self.diagnose().await);
        self.restarted(format!("{what}: {why}"));
        tokio::task::block_in_place(|| c.terminate(Duration::from_secs(10)));
        if let Some(b) = broker {
            b.restart(why);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        *c = self.consumer(extra);
    }

    fn restarted(&self, what: String) {
        println!("{}: restarting {what}", self.name);
        if let Ok(mut r) = self.restarts.lock() {
            r.push(what);
        }
    }

    /// [`verdict`] after [`Setup::supervise_until`] every produced event.
    async fn verdict_restarting(
        &self,
        sent: &Sent,
        c: &mut Proc,
        extra: &[(&str, String)],
        timeout: Duration,
    ) -> Verdict {
        self.supervise_until(sent.ids.len() as u64, c, extra, timeout)
            .await;
        verdict(&self.ch, sent, Duration::from_secs(10)).await
    }

    /// Asserts exactly-once and prints the counts.
    async fn check(&self, test: &str, v: &Verdict) {
        let broker_restarts = self
            .broker
            .as_ref()
            .map(Watched::restarts)
            .unwrap_or_default();
        let restarts = self.restarts.lock().map(|r| r.clone()).unwrap_or_default();
        println!(
            "{test}: produced {}, stored {}, distinct {}, duplicates {}, lost {}, unexpected {}; \
             supervision restarts {} {:?}; local broker restarts by the watchdog {} {:?}",
            v.produced,
            v.stored,
            v.distinct,
            v.duplicates,
            v.lost,
            v.unexpected,
            restarts.len(),
            restarts,
            broker_restarts.len(),
            broker_restarts
        );
        let partitions = self.diagnose().await;
        println!("{test}: partitions at the verdict:\n{partitions}");
        let ok =
            v.duplicates == 0 && v.lost == 0 && v.unexpected == 0 && v.stored == v.produced as u64;
        if !ok {
            let mut logs = String::new();
            let others = self
                .other_logs
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            for path in std::iter::once(self.log.clone()).chain(others) {
                let Ok(log) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                logs.push_str(&format!(
                    "{} (last lines, newest first):\n{}\n",
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    tail.join("\n")
                ));
            }
            panic!("{test}: not exactly once: {v:?}\npartitions:\n{partitions}{logs}");
        }
        // The rollups saw every replayed insert the table dropped as a
        // repeat, and dropped it too.
        let r = trailhouse_tests::rollups::settled(&self.ch.client(), Duration::from_secs(10))
            .await
            .expect("rollup check");
        println!("{test}: rollups {r:?}");
        assert!(
            r.exact(),
            "{test}: the rollups differ from the table: {r:?}"
        );
    }
}

fn jitter(lo_ms: u64, hi_ms: u64) -> Duration {
    Duration::from_millis(rand::random_range(lo_ms..hi_ms))
}

async fn rows(ch: &ClickHouseArgs) -> u64 {
    faults::counts(ch).await.map(|c| c.0).unwrap_or(0)
}

/// Waits until at least `n` rows are stored (or `timeout`).
async fn until_rows(ch: &ClickHouseArgs, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && rows(ch).await < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments() {
    let s = Setup::new("kill9", 3, None, None).await;
    let n = fault_events();
    let kafka = s.kafka.clone();
    let producer = tokio::spawn(async move { produce(&kafka, n, None).await });
    let static_id = || vec![("TRAILHOUSE_CONSUMER_INSTANCE_ID", "fault-kill9".to_string())];
    let mut c = s.consumer(&static_id());
    for _ in 0..12 {
        tokio::time::sleep(jitter(500, 3000)).await;
        c.kill9();
        c = s.consumer(&static_id());
    }
    let sent = producer.await.expect("producer");
    // Supervised like the other long fault tests: the local broker can stop
    // completing the static member's rebalances after the kills (no
    // assignment for minutes); restarts are printed and counted, and the
    // exactly-once verdict is unchanged.
    let v = s
        .verdict_restarting(&sent, &mut c, &static_id(), Duration::from_secs(600))
        .await;
    drop(c);
    s.check("kill -9 x12", &v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_insert_and_commit() {
    let s = Setup::new("crashhook", 2, None, None).await;
    let n = fault_events();
    // The crash runs need a few batches; the rest of the stream arrives while
    // the last consumer runs (the local broker's fetch cost grows with the
    // backlog; see docs/ARCHITECTURE.md).
    let first = n.min(50_000);
    let mut sent = produce_range(&s.kafka, 0..first, None).await;
    // Each run aborts right after its k-th successful insert, before the
    // offset commit: the next run must not insert that batch again.
    // A crash run that has not fired after 45 s is supervised like the long
    // runs (the local broker has left a restarted static member without an
    // assignment): the consumer is stopped with SIGTERM and started again
    // with the same hook, and the broker is restarted too the second time.
    let mut aborted = 0;
    for k in [1u64, 2, 1, 2, 1] {
        let extra = [
            ("TRAILHOUSE_CONSUMER_TEST_CRASH_AFTER_INSERT", k.to_string()),
            ("TRAILHOUSE_CONSUMER_INSTANCE_ID", "fault-hook".to_string()),
        ];
        let mut c = s.consumer(&extra);
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut started, mut stalls) = (Instant::now(), 0);
        let status = loop {
            if let Some(st) = c.exited() {
                break Some(st);
            }
            if Instant::now() > deadline {
                break None;
            }
            if started.elapsed() > Duration::from_secs(45) {
                stalls += 1;
                let why = format!("crash run {k} did not fire in 45 s");
                s.restart_stalled(&mut c, &extra, stalls, &why).await;
                started = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let st = status.expect("the crash hook fired");
        assert!(!st.success(), "aborted, not a clean exit: {st:?}");
        aborted += 1;
    }
    assert_eq!(aborted, 5);
    let last = [("TRAILHOUSE_CONSUMER_INSTANCE_ID", "fault-hook".to_string())];
    let mut c = s.consumer(&last);
    sent.merge(produce_range(&s.kafka, first..n, None).await);
    let v = s
        .verdict_restarting(&sent, &mut c, &last, Duration::from_secs(600))
        .await;
    drop(c);
    s.check("killed between insert and commit x5", &v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_30_seconds() {
    let mut server = ClickHouse::start();
    let s = Setup::new("chdown", 3, None, Some(&server)).await;
    let n = fault_events();
    let kafka = s.kafka.clone();
    let producer = tokio::spawn(async move { produce(&kafka, n, None).await });
    let mut c = s.consumer(&[]);
    until_rows(&s.ch, n as u64 / 4, Duration::from_secs(300)).await;
    let down_at = rows(&s.ch).await;
    server.kill9();
    tokio::time::sleep(Duration::from_secs(30)).await;
    server.restart();
    let sent = producer.await.expect("producer");
    let v = s
        .verdict_restarting(&sent, &mut c, &[], Duration::from_secs(600))
        .await;
    drop(c);
    println!("clickhouse stopped for 30 s after about {down_at} rows");
    s.check("clickhouse down 30 s", &v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_run() {
    if !trailhouse_tests::faults::needs_durable_broker("broker_restarted_mid_run") {
        return;
    }
    let mut broker = Broker::start();
    let s = Setup::new("brokerrestart", 3, Some(&broker), None).await;
    let n = fault_events();
    let first = produce(&s.kafka, n / 2, None).await;
    let mut c = s.consumer(&[]);
    until_rows(&s.ch, n as u64 / 4, Duration::from_secs(300)).await;
    broker.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let second = produce(&s.kafka, n - n / 2, None).await;
    let mut sent = first;
    sent.ids.extend(second.ids);
    let v = s
        .verdict_restarting(&sent, &mut c, &[], Duration::from_secs(600))
        .await;
    drop(c);
    s.check("broker restarted", &v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_while_one_of_two_consumers_keeps_dying() {
    let s = Setup::new("rebalance", 4, None, None).await;
    let n = fault_events();
    let kafka = s.kafka.clone();
    let producer = tokio::spawn(async move { produce(&kafka, n, None).await });
    let mut stable = s.consumer(&[]);
    // The flaky member is stopped with SIGTERM and a 1 s drain deadline, so
    // it leaves the group (a rebalance) often with batches still in flight.
    // (Hard kills are the first test's; the local broker keeps the dead
    // members of a SIGKILL in the group until their session expires.)
    let flaky_env = || vec![("TRAILHOUSE_CONSUMER_SHUTDOWN_TIMEOUT_SECS", "1".to_string())];
    let mut flaky = s.other_consumer("flaky", &flaky_env());
    for _ in 0..6 {
        tokio::time::sleep(jitter(2000, 5000)).await;
        flaky.terminate(Duration::from_secs(10));
        tokio::time::sleep(jitter(200, 1500)).await;
        flaky = s.other_consumer("flaky", &flaky_env());
    }
    let sent = producer.await.expect("producer");
    // Supervised like the other long fault tests: after the rebalances the
    // local broker has left a partition unfetched for minutes (CI, twice);
    // a stall prints where each partition stands and who the broker says
    // owns it, then restarts broker and stable consumer. Restarts are
    // printed and counted; the exactly-once verdict is unchanged.
    let v = s
        .verdict_restarting(&sent, &mut stable, &[], Duration::from_secs(600))
        .await;
    drop((stable, flaky));
    s.check("rebalances x6", &v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_poison_goes_to_the_dead_letter_topic() {
    poison(fault_events()).await;
}

async fn poison(n: usize) {
    let s = Setup::new("poison", 3, None, None).await;
    // Poison mixed into a live stream: sent in parts of 10,000 while the
    // consumer runs, each part once the consumer is within 30,000 events.
    let mut c = s.consumer(&[]);
    let mut sent = Sent::default();
    let part = 10_000;
    for start in (0..n).step_by(part) {
        let behind = start.saturating_sub(30_000) as u64;
        s.supervise_until(behind, &mut c, &[], Duration::from_secs(300))
            .await;
        let end = (start + part).min(n);
        sent.merge(produce_range(&s.kafka, start..end, Some(100)).await);
    }
    let v = s
        .verdict_restarting(&sent, &mut c, &[], Duration::from_secs(600))
        .await;
    drop(c);
    s.check(&format!("1% poison in {n}"), &v).await;

    // Every poison message is in the dead-letter topic, with headers that
    // point back at the original message.
    let dlq = format!("{}.dlq", s.kafka.topic);
    let reader: BaseConsumer = s
        .kafka
        .client_config()
        .set("group.id", format!("{}.dlq-reader", s.name))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&dlq, 0, Offset::Beginning)
        .expect("tpl");
    reader.assign(&tpl).expect("assign");
    // Read the dead-letter topic and match it with the acknowledgements.
    let mut dead: Vec<(i32, i64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut distinct = std::collections::HashSet::new();
    while distinct.len() < sent.poison && Instant::now() < deadline {
        let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let h = m.headers().expect("headers");
        let header = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default()
        };
        assert_eq!(header("trailhouse.original.topic"), s.kafka.topic);
        assert!(!header("trailhouse.error").is_empty());
        let p: i32 = header("trailhouse.original.partition")
            .parse()
            .expect("partition");
        let o: i64 = header("trailhouse.original.offset")
            .parse()
            .expect("offset");
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
        assert!(key.starts_with("poison-"), "{key}");
        distinct.insert(key.clone());
        dead.push((p, o, key));
    }
    let dlq_messages = dead.len();
    // The headers point at where the broker acknowledged each poison message.
    for (p, o, key) in &dead {
        assert_eq!(
            sent.poison_at.get(&(*p, *o)),
            Some(key),
            "headers point at the original message"
        );
    }
    let keys = distinct;
    println!(
        "1% poison: {} poison produced, {} distinct in the dead-letter topic, {} dead-letter messages",
        sent.poison,
        keys.len(),
        dlq_messages
    );
    assert_eq!(
        keys.len(),
        sent.poison,
        "every poison message is dead-lettered"
    );
}
