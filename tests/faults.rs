//! Fault-injection harness: real broker, ClickHouse server and consumer
//! processes that tests start, kill (`SIGKILL`) and restart.

use std::collections::HashSet;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_schemas::event::{Action, Actor};
use trailhouse_schemas::AuditEvent;
use uuid::Uuid;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// How many events each fault test pushes (`TRAILHOUSE_FAULT_EVENTS`, default 200,000).
pub fn fault_events() -> usize {
    std::env::var("TRAILHOUSE_FAULT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// A free local port.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A child process killed with `SIGKILL` when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Takes over `child` (killed when dropped).
    pub fn new(name: &str, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child: Some(child),
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit (graceful shutdown).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Kafka broker of the test's own (Tansu with SQLite storage).
/// The in-memory broker binary, when `TRAILHOUSE_TEST_MEMORY_BROKER` names
/// one: the tests' own brokers then keep nothing across a restart, and the
/// tests that restart a broker and read what it held before say so and
/// stop (see [`needs_durable_broker`]). For measuring that broker, not for CI.
pub fn memory_broker() -> Option<PathBuf> {
    std::env::var_os("TRAILHOUSE_TEST_MEMORY_BROKER").map(PathBuf::from)
}

/// True when the tests' brokers are durable; otherwise prints why `test`
/// does not run.
pub fn needs_durable_broker(test: &str) -> bool {
    if memory_broker().is_some() {
        println!("{test}: not run on the in-memory broker (it restarts the broker and reads what it held)");
        return false;
    }
    true
}

pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Broker {
            port: free_port(),
            dir,
            proc: None,
        };
        b.restart();
        b
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("log");
        let (program, storage) = match memory_broker() {
            Some(path) => (path, "memory://tansu/"),
            None => (PathBuf::from("tansu"), "sqlite://tansu.db"),
        };
        let child = Command::new(program)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(self.dir.path())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu (is it installed? bash dev/install.sh)");
        self.proc = Some(Proc {
            name: "broker".into(),
            child: Some(child),
        });
        assert!(
            wait_port(self.port, Duration::from_secs(30)),
            "broker did not start"
        );
    }

    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Whether the broker process is still running.
    pub fn alive(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }
}

/// A broker restarted whenever it panics or stops answering.
///
/// Tansu 0.6.0 sometimes panics in a request handler under load (its group
/// coordinator, `tansu-storage` `service.rs`, during rebalances), and
/// sometimes stops answering altogether with no CPU use and nothing logged
/// (seen in the poison test, mid-run). A production broker restarting is a
/// fault the consumer must survive anyway, so tests whose subject is
/// something else (rebalances, poison messages) run their broker under this
/// watchdog and report how often it stepped in. A test may also ask for a
/// restart, when a consumer restart alone did not get rows moving again.
/// (Most of the "stops serving one client" stalls once blamed on the broker
/// were the consumer's own lag request cutting its fetch connection; see
/// "Metrics" in docs/ARCHITECTURE.md.)
pub struct Watched {
    address: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    restarts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    requested: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A client for [`answers`].
fn probe_client(address: &str) -> Option<rdkafka::consumer::BaseConsumer> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "watchdog")
        .set("log_level", "0")
        .create()
        .ok()
}

/// Whether the broker answers a metadata request within `timeout`.
fn answers(client: Option<&rdkafka::consumer::BaseConsumer>, timeout: Duration) -> bool {
    use rdkafka::consumer::Consumer;
    client.is_some_and(|c| c.fetch_metadata(None, timeout).is_ok())
}

impl Watched {
    pub fn start() -> Watched {
        let mut broker = Broker::start();
        let address = broker.address();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let restarts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requested = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let thread = std::thread::spawn({
            let (stop, restarts, address, requested) = (
                stop.clone(),
                restarts.clone(),
                address.clone(),
                requested.clone(),
            );
            move || {
                let client = probe_client(&address);
                let mut silent = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let log = broker.log();
                    let panic = log.lines().find(|l| l.contains("panicked at"));
                    silent = if answers(client.as_ref(), Duration::from_secs(5)) {
                        0
                    } else {
                        silent + 1
                    };
                    let asked = requested.lock().ok().and_then(|mut r| r.take());
                    let reason = match (panic, asked) {
                        (Some(line), _) => line.to_string(),
                        (None, Some(why)) => why,
                        (None, None) if silent >= 3 => {
                            "no answer to metadata requests for 15 s".into()
                        }
                        (None, None) => continue,
                    };
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    eprintln!("local broker restarted by the watchdog: {reason}");
                    if let Ok(mut r) = restarts.lock() {
                        r.push(reason);
                    }
                    broker.kill9();
                    broker.restart();
                    silent = 0;
                }
            }
        });
        Watched {
            address,
            stop,
            restarts,
            requested,
            thread: Some(thread),
        }
    }

    /// Has the watchdog restart the broker within a second, for `reason`.
    pub fn restart(&self, reason: &str) {
        if let Ok(mut r) = self.requested.lock() {
            *r = Some(reason.to_string());
        }
    }

    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Why the watchdog restarted the broker, once per restart.
    pub fn restarts(&self) -> Vec<String> {
        self.restarts.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A ClickHouse HTTP server of the test's own (the dev server over chdb).
pub struct ClickHouse {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = ClickHouse {
            port: free_port(),
            dir,
            proc: None,
        };
        c.restart();
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let python = root().join(".dev-data/venv/bin/python");
        let log = std::fs::File::create(self.dir.path().join("clickhouse.log")).expect("log");
        let child = Command::new(python)
            .arg(root().join("dev/clickhouse_http.py"))
            .args(["--port", &self.port.to_string()])
            .arg("--path")
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the ClickHouse dev server (bash dev/install.sh)");
        self.proc = Some(Proc {
            name: "clickhouse".into(),
            child: Some(child),
        });
        assert!(
            wait_port(self.port, Duration::from_secs(60)),
            "clickhouse did not start"
        );
    }

    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
    }
}

/// Starts a consumer process.
pub fn consumer(
    kafka: &KafkaArgs,
    ch: &ClickHouseArgs,
    group: &str,
    extra: &[(&str, String)],
    log: &Path,
) -> Proc {
    let mut env: Vec<(&str, String)> = vec![
        ("TRAILHOUSE_KAFKA_BROKERS", kafka.brokers.clone()),
        ("TRAILHOUSE_KAFKA_TOPIC", kafka.topic.clone()),
        ("TRAILHOUSE_CLICKHOUSE_URL", ch.url.clone()),
        ("TRAILHOUSE_CLICKHOUSE_DATABASE", ch.database.clone()),
        ("TRAILHOUSE_CLICKHOUSE_COMPRESSION", "none".into()),
        ("TRAILHOUSE_CONSUMER_GROUP", group.into()),
        ("TRAILHOUSE_CONSUMER_LISTEN", "127.0.0.1:0".into()),
        ("TRAILHOUSE_CONSUMER_BATCH_ROWS", "5000".into()),
        ("TRAILHOUSE_CONSUMER_BATCH_AGE_MS", "500".into()),
        ("TRAILHOUSE_CONSUMER_SESSION_TIMEOUT_MS", "10000".into()),
        ("RUST_LOG", "warn,trailhouse_consumer=info".into()),
    ];
    env.extend(extra.iter().cloned());
    service("trailhouse-consumer", &env, log)
}

/// Starts a service binary of this workspace (built into `target/debug`)
/// with `env` (later entries win), appending its output to `log`. Traces
/// are exported only if `env` sets `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn service(bin: &str, env: &[(&str, String)], log: &Path) -> Proc {
    let path = root().join("target/debug").join(bin);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let mut cmd = Command::new(&path);
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e} (build it first)", path.display()));
    Proc {
        name: bin.into(),
        child: Some(child),
    }
}

/// A valid event with a unique id.
pub fn event(i: usize, org_count: usize) -> AuditEvent {
    let now = Utc::now();
    AuditEvent {
        id: Uuid::now_v7(),
        org_id: format!("org_{}", i % org_count),
        retention_days: None,
        environment_id: Some("prod".into()),
        workspace_id: None,
        workspace_name: None,
        created_at: now,
        received_at: now,
        actor: Actor {
            kind: Some("user".into()),
            id: Some(format!("u{}", i % 97)),
            email: None,
            name: None,
        },
        auth: Default::default(),
        source: Some("fault-test".into()),
        action: Action {
            kind: "record.update".into(),
            description: None,
        },
        resource: Default::default(),
        request: Default::default(),
        metadata: Default::default(),
    }
}

/// What a producer run sent.
#[derive(Default)]
pub struct Sent {
    pub ids: HashSet<Uuid>,
    pub poison: usize,
    /// Where each poison message was stored: `(partition, offset)` → key,
    /// from the broker's acknowledgements.
    pub poison_at: std::collections::HashMap<(i32, i64), String>,
}

impl Sent {
    /// Adds what another part of the same stream sent.
    pub fn merge(&mut self, other: Sent) {
        self.ids.extend(other.ids);
        self.poison += other.poison;
        self.poison_at.extend(other.poison_at);
    }
}

/// Sends `n` valid events (and, every `poison_every` messages, a garbage
/// payload) and waits for every acknowledgement.
pub async fn produce(kafka: &KafkaArgs, n: usize, poison_every: Option<usize>) -> Sent {
    produce_range(kafka, 0..n, poison_every).await
}

/// [`produce`] for the events numbered `range` (poison positions counted
/// from 0 as well), so a stream can be sent in parts.
pub async fn produce_range(
    kafka: &KafkaArgs,
    range: std::ops::Range<usize>,
    poison_every: Option<usize>,
) -> Sent {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "5000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");
    let mut sent = Sent::default();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut poison = Vec::new();
    for i in range {
        if poison_every.is_some_and(|k| i % k == k - 1) {
            let key = format!("poison-{i}");
            let payload: &[u8] = b"\x00\x01 this is not an avro event";
            let delivery = loop {
                match producer
                    .send_result(FutureRecord::to(&kafka.topic).key(&key).payload(payload))
                {
                    Ok(f) => break f,
                    Err(_) => {
                        let keep = pending.len() / 2;
                        drain(&mut pending, keep).await;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            };
            poison.push((key, delivery));
            sent.poison += 1;
        }
        let e = event(i, 50);
        let bytes = trailhouse_schemas::encode(&e).expect("encode");
        sent.ids.insert(e.id);
        send(&producer, &mut pending, &kafka.topic, &e.org_id, &bytes).await;
        if pending.len() >= 20_000 {
            drain(&mut pending, 10_000).await;
        }
    }
    drain(&mut pending, 0).await;
    for (key, delivery) in poison {
        match delivery.await {
            Ok(Ok(d)) => {
                sent.poison_at.insert((d.partition, d.offset), key);
            }
            Ok(Err((e, _))) => panic!("produce failed: {e}"),
            Err(_) => panic!("delivery future cancelled"),
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    sent
}

type Pending = futures::stream::FuturesUnordered<rdkafka::producer::DeliveryFuture>;

async fn send(
    producer: &FutureProducer,
    pending: &mut Pending,
    topic: &str,
    key: &str,
    payload: &[u8],
) {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(f) => {
                pending.push(f);
                return;
            }
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => {
                let keep = pending.len() / 2;
                drain(pending, keep).await;
                if pending.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err((e, _)) => panic!("produce failed: {e}"),
        }
    }
}

async fn drain(pending: &mut Pending, keep: usize) {
    use futures::StreamExt;
    while pending.len() > keep {
        match pending.next().await {
            Some(Ok(Ok(_))) => {}
            Some(Ok(Err((e, _)))) => panic!("produce failed: {e}"),
            Some(Err(_)) => panic!("delivery future cancelled"),
            None => break,
        }
    }
}

/// `count()` and `uniqExact(id)` of the events table.
pub async fn counts(ch: &ClickHouseArgs) -> Option<(u64, u64)> {
    ch.client()
        .query("SELECT count(), uniqExact(id) FROM events")
        .fetch_one::<(u64, u64)>()
        .await
        .ok()
}

/// Waits until the table holds `expected` rows (or the deadline passes) and
/// returns the final `(count, distinct ids)`.
pub async fn wait_for_rows(ch: &ClickHouseArgs, expected: u64, timeout: Duration) -> (u64, u64) {
    let deadline = Instant::now() + timeout;
    let mut last = (0, 0);
    while Instant::now() < deadline {
        if let Some(c) = counts(ch).await {
            last = c;
            if c.0 >= expected {
                // Let anything in flight land, so duplicates would show.
                tokio::time::sleep(Duration::from_secs(2)).await;
                return counts(ch).await.unwrap_or(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

/// The stored ids, to compare with what was produced.
pub async fn stored_ids(ch: &ClickHouseArgs) -> HashSet<Uuid> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct IdRow {
        #[serde(with = "clickhouse::serde::uuid")]
        id: Uuid,
    }
    ch.client()
        .query("SELECT id FROM events")
        .fetch_all::<IdRow>()
        .await
        .expect("ids")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// The exactly-once verdict of a fault test.
#[derive(Debug)]
pub struct Verdict {
    pub produced: usize,
    pub stored: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub lost: usize,
    pub unexpected: usize,
}

pub async fn verdict(ch: &ClickHouseArgs, sent: &Sent, timeout: Duration) -> Verdict {
    let (stored, distinct) = wait_for_rows(ch, sent.ids.len() as u64, timeout).await;
    let ids = stored_ids(ch).await;
    Verdict {
        produced: sent.ids.len(),
        stored,
        distinct,
        duplicates: stored - distinct,
        lost: sent.ids.difference(&ids).count(),
        unexpected: ids.difference(&sent.ids).count(),
    }
}

/// Where each Kafka partition of a fault test stands, for a stall or a
/// failed verdict: the broker's high watermark, the group's committed
/// offset, what ClickHouse holds from it, and which group member the broker
/// says owns it. Tells a consumer that stopped fetching from a partition
/// the broker assigned to nobody (or to a member that has gone).
pub async fn diagnose(kafka: &KafkaArgs, ch: &ClickHouseArgs, group: &str) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::fmt::Write;

    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Stored {
        partition: i32,
        rows: u64,
        max_offset: i64,
    }
    let stored: Vec<Stored> = ch
        .client()
        .query(
            "SELECT kafka_partition AS partition, count() AS rows, max(kafka_offset) AS max_offset \
             FROM events GROUP BY partition ORDER BY partition",
        )
        .fetch_all()
        .await
        .unwrap_or_default();
    let (kafka, group) = (kafka.clone(), group.to_string());
    let broker_side = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(5);
        let reader: BaseConsumer = match kafka
            .client_config()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("log_level", "0")
            .create()
        {
            Ok(c) => c,
            Err(e) => return format!("no diagnostic client: {e}\n"),
        };
        let mut out = String::new();
        let partitions = reader
            .fetch_metadata(Some(&kafka.topic), timeout)
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
            .unwrap_or(0);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&kafka.topic, p);
        }
        let committed = reader.committed_offsets(tpl, timeout).ok();
        let owners = group_owners(&reader, &group, &kafka.topic, timeout);
        for p in 0..partitions {
            let high = reader
                .fetch_watermarks(&kafka.topic, p, timeout)
                .map(|(_, h)| h.to_string())
                .unwrap_or_else(|e| format!("? ({e})"));
            let commit = committed
                .as_ref()
                .and_then(|c| c.find_partition(&kafka.topic, p))
                .map(|e| format!("{:?}", e.offset()))
                .unwrap_or_else(|| "?".into());
            let owner = owners
                .iter()
                .filter(|(_, ps)| ps.contains(&p))
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let owner = if owners.is_empty() {
                String::new()
            } else {
                format!(", owner [{owner}]")
            };
            let _ = writeln!(
                out,
                "  partition {p}: high watermark {high}, committed {commit}{owner}"
            );
        }
        if owners.is_empty() {
            let _ = writeln!(
                out,
                "  group members and assignments: not reported by the broker"
            );
        }
        out
    })
    .await
    .unwrap_or_else(|e| format!("diagnostic task failed: {e}\n"));
    let mut out = broker_side;
    for s in stored {
        let _ = writeln!(
            out,
            "  stored from partition {}: {} rows, up to offset {}",
            s.partition, s.rows, s.max_offset
        );
    }
    out
}

/// Each member of `group` with the partitions of `topic` the broker assigned it.
fn group_owners(
    reader: &rdkafka::consumer::BaseConsumer,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Vec<(String, Vec<i32>)> {
    use rdkafka::consumer::Consumer;
    let Ok(list) = reader.fetch_group_list(Some(group), timeout) else {
        return Vec::new();
    };
    list.groups()
        .iter()
        .flat_map(|g| g.members())
        .map(|m| {
            let name = format!("{}@{}", m.client_id(), m.id());
            (
                name,
                m.assignment()
                    .map(|a| assigned(a, topic))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// The partitions of `topic` in a consumer-protocol member assignment:
/// version (i16), then per topic a name (i16 length + bytes) and the
/// partitions (i32 count + i32 each), then user data.
fn assigned(bytes: &[u8], topic: &str) -> Vec<i32> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = b.split_first_chunk::<N>()?;
        *b = rest;
        Some(*head)
    }
    let mut b = bytes;
    let mut out = Vec::new();
    let parse = |b: &mut &[u8], out: &mut Vec<i32>| -> Option<()> {
        take::<2>(b)?;
        let topics = i32::from_be_bytes(take::<4>(b)?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take::<2>(b)?).max(0) as usize;
            let name = b.get(..len)?.to_vec();
            *b = b.get(len..)?;
            let n = i32::from_be_bytes(take::<4>(b)?);
            for _ in 0..n.max(0) {
                let p = i32::from_be_bytes(take::<4>(b)?);
                if name == topic.as_bytes() {
                    out.push(p);
                }
            }
        }
        Some(())
    };
    let _ = parse(&mut b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn member_assignments_are_read_per_topic() {
        let mut b: Vec<u8> = vec![0, 1, 0, 0, 0, 2];
        for (name, parts) in [("a", vec![0i32, 3]), ("other", vec![1])] {
            b.extend_from_slice(&(name.len() as i16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(super::assigned(&b, "a"), vec![0, 3]);
        assert_eq!(super::assigned(&b, "other"), vec![1]);
        assert!(super::assigned(&b[..9], "a").is_empty());
    }
}
