//! Cost per event of each pipeline stage, from repeatable counters.
//!
//! `stages report` runs every stage twice under `valgrind --tool=callgrind`,
//! at N and 2N events over the same fixed pool of generated events, and
//! divides the difference of the two instruction totals by N: start-up,
//! generation and connection costs are the same in both runs and cancel
//! out. Stages are cumulative where one builds on another (json, then json +
//! validate, ...), so each step's own cost is the difference of two rows.
//! The same stages run once natively for CPU µs per event (user + system
//! time of the whole process, every thread, from `/proc/self/stat`), which
//! gives the cores per 100,000 events/s.
//!
//! `stages run STAGE --events N` runs one stage (what `report` measures).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Body;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tower::ServiceExt;
use trailhouse_bench::gen::{Generator, Shape};
use trailhouse_bench::service::cpu_secs;
use trailhouse_bench::{machine, print_table};
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_common::health::Health;
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_ingest::api::{split_body, validate_all};
use trailhouse_ingest::auth::{hash_key, KeyStore};
use trailhouse_ingest::{
    app, AppState, Envelope, EventSink, KafkaSink, Limits, ProducerSettings, Redactor, SinkError,
};
use trailhouse_schemas::event::SystemStamp;
use trailhouse_schemas::retention::RetentionPolicy;
use trailhouse_schemas::row::Lineage;
use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_schemas::{decode, encode, AuditEvent, EventRow};

/// Distinct events in the pool every stage cycles over.
const POOL: usize = 2_000;
/// Events per request, per produce call and per insert.
const BATCH: usize = 1_000;
const KEY: &str = "thk_stages_key";

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one stage over `events` events.
    Run {
        stage: Stage,
        #[arg(long)]
        events: usize,
        #[command(flatten)]
        engines: Engines,
    },
    /// Measures every stage and prints the table.
    Report {
        /// N of the N / 2N pair (in-process stages; the Kafka and ClickHouse
        /// stages use 2N / 4N, their per-call costs are larger).
        #[arg(long, default_value_t = 2_000)]
        events: usize,
        /// The native CPU runs are at k·N and 2k·N events, k this factor for
        /// the in-process stages and a fifth of it (at least 1) for the Kafka
        /// and ClickHouse ones.
        #[arg(long, default_value_t = 25)]
        native_factor: usize,
        #[arg(long, default_value = "valgrind")]
        valgrind: String,
        /// Where the callgrind output files go.
        #[arg(long, default_value = "bench/results/tmp/callgrind")]
        work: PathBuf,
        #[command(flatten)]
        engines: Engines,
    },
}

#[derive(clap::Args, Clone)]
struct Engines {
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka: String,
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
    /// Topic the fetch stage reads (filled by `report`).
    #[arg(long, default_value = "")]
    topic: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Debug)]
enum Stage {
    /// Ingest: the request body split into JSON values.
    Json,
    /// + parsed into events and validated.
    Validate,
    /// + redacted.
    Redact,
    /// + encoded as Avro.
    Encode,
    /// The whole `POST /v1/events` handler in process (authentication,
    /// limits, all of the above, the size check, the response), without
    /// hyper's connection handling; the sink drops what it is given.
    Http,
    /// Encode + rdkafka produce, awaiting every acknowledgement.
    Produce,
    /// rdkafka fetch of a pre-filled partition, no decoding.
    Fetch,
    /// Consumer: Avro decode.
    Decode,
    /// + the ClickHouse row.
    Row,
    /// + RowBinary for the insert.
    Rowbinary,
    /// The `clickhouse` client inserting the rows (client side only).
    Insert,
}

impl Stage {
    fn needs_engines(self) -> bool {
        matches!(self, Stage::Produce | Stage::Fetch | Stage::Insert)
    }
}

/// A sink that acknowledges and drops: the handler's cost alone.
#[derive(Clone)]
struct NullSink;

impl EventSink for NullSink {
    async fn publish(&self, events: &[Envelope]) -> Result<(), SinkError> {
        black_box(events.len());
        Ok(())
    }
    fn flush(&self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}

struct Pool {
    events: Vec<AuditEvent>,
    /// Request bodies of BATCH events each (JSON arrays).
    bodies: Vec<String>,
    payloads: Vec<Vec<u8>>,
}

impl Pool {
    fn new() -> anyhow::Result<Pool> {
        let mut g = Generator::new(Shape {
            seed: 42,
            orgs: 1000,
            days: 1,
            end: Utc::now(),
        });
        let events: Vec<AuditEvent> = (0..POOL).map(|_| g.event(None)).collect();
        let inputs = events
            .iter()
            .map(trailhouse_ingest::sink::input_json)
            .collect::<Result<Vec<_>, _>>()?;
        let bodies = inputs
            .chunks(BATCH)
            .map(|c| Value::Array(c.to_vec()).to_string())
            .collect();
        let payloads = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            events,
            bodies,
            payloads,
        })
    }

    /// The body for the `i`-th batch of a run.
    fn body(&self, i: usize) -> &str {
        &self.bodies[i % self.bodies.len()]
    }
}

fn ingest_steps(pool: &Pool, stage: Stage, n: usize) -> anyhow::Result<()> {
    let keys = KeyStore::parse("", &format!("stages:{}", hash_key(KEY)))?;
    let who = keys.verify(KEY).context("the stage key")?;
    let redactor = Redactor::default();
    for b in 0..n.div_ceil(BATCH) {
        let values = split_body("application/json", pool.body(b).as_bytes())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if stage == Stage::Json {
            black_box(values);
            continue;
        }
        let valid = validate_all(values, &who, &SystemStamp, false, |_| Ok(()))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for mut event in valid.events {
            if stage >= Stage::Redact {
                redactor.apply(&mut event);
            }
            if stage >= Stage::Encode {
                black_box(encode(&event)?);
            }
            black_box(event);
        }
    }
    Ok(())
}

async fn handler(pool: &Pool, n: usize) -> anyhow::Result<()> {
    let health = Health::new();
    health.set_ready(true);
    let state = Arc::new(AppState {
        sink: NullSink,
        keys: KeyStore::parse("", &format!("stages:{}", hash_key(KEY)))?,
        limits: Limits::default(),
        health,
        broker_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        redactor: Redactor::default(),
        retention: RetentionPolicy::default(),
    });
    let router = app(state);
    for b in 0..n.div_ceil(BATCH) {
        let request = http::Request::post("/v1/events")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::from(pool.body(b).to_string()))?;
        let response = router.clone().oneshot(request).await?;
        if response.status() != http::StatusCode::ACCEPTED {
            bail!("the handler answered {}", response.status());
        }
        black_box(axum::body::to_bytes(response.into_body(), 1 << 24).await?);
    }
    Ok(())
}

fn kafka(e: &Engines, topic: &str) -> KafkaArgs {
    KafkaArgs::local(e.kafka.clone(), topic.to_string())
}

async fn produce(pool: &Pool, e: &Engines, topic: &str, n: usize) -> anyhow::Result<()> {
    let k = kafka(e, topic);
    let sink = KafkaSink::new(k.client_config(), topic, &ProducerSettings::default())?;
    let mut sent = 0;
    while sent < n {
        let batch: Vec<Envelope> = (sent..(sent + BATCH).min(n))
            .map(|i| Envelope::new(pool.events[i % POOL].clone()))
            .collect();
        sink.publish(&batch).await?;
        sent += batch.len();
    }
    sink.flush(Duration::from_secs(30))?;
    Ok(())
}

fn fetch(e: &Engines, n: usize) -> anyhow::Result<()> {
    let c: BaseConsumer = kafka(e, &e.topic)
        .client_config()
        .set("group.id", format!("{}.stages", e.topic))
        .set("enable.auto.commit", "false")
        // A small read-ahead, so that both runs of a pair over-read alike.
        .set("queued.max.messages.kbytes", "1024")
        .set("fetch.max.bytes", "1048576")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&e.topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let mut seen = 0;
    while seen < n {
        match c.poll(Duration::from_secs(30)) {
            Some(Ok(m)) => seen += usize::from(black_box(m.payload()).is_some()),
            Some(Err(err)) => bail!("fetch: {err}"),
            None => bail!("fetch: no message in 30 s after {seen} of {n}"),
        }
    }
    Ok(())
}

fn consumer_steps(pool: &Pool, stage: Stage, n: usize) -> anyhow::Result<()> {
    let mut rows = Vec::with_capacity(BATCH);
    for i in 0..n {
        let event = decode(&pool.payloads[i % POOL])?;
        if stage >= Stage::Row {
            rows.push(EventRow::from_event(
                &event,
                Lineage {
                    partition: 0,
                    offset: i as i64,
                },
            ));
        }
        black_box(event);
        if rows.len() == BATCH || i + 1 == n {
            if stage >= Stage::Rowbinary {
                let encoded: EncodedRows = rows.iter().collect();
                black_box(encoded.byte_len());
            }
            rows.clear();
        }
    }
    Ok(())
}

async fn insert(pool: &Pool, e: &Engines, n: usize) -> anyhow::Result<()> {
    let ch = ClickHouseArgs::local(
        e.clickhouse.clone(),
        format!("stages_{}", std::process::id()),
    );
    migrate(&ch).await?;
    let client = ch.client();
    let result = async {
        let mut done = 0;
        while done < n {
            let mut ins = client.insert::<EventRow>("events").await?;
            for i in done..(done + BATCH).min(n) {
                let row = EventRow::from_event(
                    &pool.events[i % POOL],
                    Lineage {
                        partition: 0,
                        offset: i as i64,
                    },
                );
                ins.write(&row).await?;
            }
            ins.end().await?;
            done = (done + BATCH).min(n);
        }
        anyhow::Ok(())
    }
    .await;
    let drop = format!("DROP DATABASE IF EXISTS {} SYNC", ch.database);
    client.query(&drop).execute().await?;
    result
}

async fn run(stage: Stage, n: usize, e: &Engines) -> anyhow::Result<()> {
    let pool = Pool::new()?;
    match stage {
        Stage::Json | Stage::Validate | Stage::Redact | Stage::Encode => {
            ingest_steps(&pool, stage, n)
        }
        Stage::Http => handler(&pool, n).await,
        Stage::Produce => {
            let topic = format!("bench.stages.{}", std::process::id());
            ensure_topic(&kafka(e, &topic), &topic, 1, 1).await?;
            produce(&pool, e, &topic, n).await
        }
        Stage::Fetch => fetch(e, n),
        Stage::Decode | Stage::Row | Stage::Rowbinary => consumer_steps(&pool, stage, n),
        Stage::Insert => insert(&pool, e, n).await,
    }
}

/// Instructions of one callgrind run of `stage` over `n` events.
fn callgrind(
    valgrind: &str,
    work: &Path,
    stage: Stage,
    n: usize,
    e: &Engines,
) -> anyhow::Result<u64> {
    let out = work.join(format!("{stage:?}-{n}.out").to_lowercase());
    let me = std::env::current_exe()?;
    let status = Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&me)
        .args(run_args(stage, n, e))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(out.with_extension("log"))?)
        .status()
        .with_context(|| format!("run {valgrind} (is valgrind installed?)"))?;
    if !status.success() {
        bail!(
            "callgrind of {stage:?} at {n} events failed; see {}",
            out.with_extension("log").display()
        );
    }
    let text = std::fs::read_to_string(&out)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", out.display()))
}

fn run_args(stage: Stage, n: usize, e: &Engines) -> Vec<String> {
    let name = stage
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    vec![
        "run".into(),
        name,
        "--events".into(),
        n.to_string(),
        "--kafka".into(),
        e.kafka.clone(),
        "--clickhouse".into(),
        e.clickhouse.clone(),
        "--topic".into(),
        e.topic.clone(),
    ]
}

/// CPU seconds (all threads) of one native run of `stage` over `n` events,
/// as the run itself reports them on exit.
fn native_cpu(stage: Stage, n: usize, e: &Engines) -> anyhow::Result<f64> {
    let me = std::env::current_exe()?;
    let out = Command::new(&me).args(run_args(stage, n, e)).output()?;
    if !out.status.success() {
        bail!(
            "stage {stage:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("cpu_secs ")?.trim().parse().ok())
        .with_context(|| format!("stage {stage:?} reported no CPU time"))
}

async fn report(
    n: usize,
    native_factor: usize,
    valgrind: &str,
    work: &Path,
    engines: &Engines,
) -> anyhow::Result<()> {
    if n == 0 || !n.is_multiple_of(BATCH) {
        bail!("--events {n}: must be a positive multiple of {BATCH}, the batch size");
    }
    if native_factor == 0 {
        bail!("--native-factor 0: must be at least 1");
    }
    let (k_process, k_engines) = (native_factor, (native_factor / 5).max(1));
    std::fs::create_dir_all(work)?;
    // The fetch stage reads a partition filled here, natively.
    let mut e = engines.clone();
    e.topic = format!("bench.stages.fetch.{}", std::process::id());
    let pool = Pool::new()?;
    ensure_topic(&kafka(&e, &e.topic), &e.topic, 1, 1).await?;
    // Enough for the largest native run of the fetch stage (2k·2N), and
    // its read-ahead.
    produce(&pool, &e, &e.topic.clone(), (4 * k_engines + 4) * n).await?;

    let stages = [
        Stage::Json,
        Stage::Validate,
        Stage::Redact,
        Stage::Encode,
        Stage::Http,
        Stage::Produce,
        Stage::Fetch,
        Stage::Decode,
        Stage::Row,
        Stage::Rowbinary,
        Stage::Insert,
    ];
    let mut rows = Vec::new();
    let mut previous: Option<(Stage, f64)> = None;
    for stage in stages {
        let n = if stage.needs_engines() { 2 * n } else { n };
        let small = callgrind(valgrind, work, stage, n, &e)?;
        let large = callgrind(valgrind, work, stage, 2 * n, &e)?;
        let per_event = large.saturating_sub(small) as f64 / n as f64;
        // Natively at more events (the kernel counts CPU time in 10 ms
        // ticks), median of three pairs.
        let k = if stage.needs_engines() {
            k_engines
        } else {
            k_process
        };
        let mut pairs = Vec::new();
        for _ in 0..3 {
            let cpu_small = native_cpu(stage, k * n, &e)?;
            let cpu_large = native_cpu(stage, 2 * k * n, &e)?;
            pairs.push((cpu_large - cpu_small).max(0.0) * 1e6 / (k * n) as f64);
        }
        let micros = trailhouse_bench::Spread::of(&pairs).median;
        let step = match (stage, previous) {
            (Stage::Validate | Stage::Redact | Stage::Encode, Some((_, p)))
            | (Stage::Row | Stage::Rowbinary, Some((_, p))) => {
                format!("{:.0}", per_event - p)
            }
            _ => "–".into(),
        };
        rows.push(vec![
            format!("{stage:?}").to_lowercase(),
            stage_doc(stage).into(),
            format!("{per_event:.0}"),
            step,
            format!("{micros:.1}"),
            format!("{:.2}", micros * 0.1),
        ]);
        previous = Some((stage, per_event));
    }
    println!("# stages: cost per event of each pipeline stage\n");
    println!("{}\n", machine());
    println!(
        "Instructions per event: callgrind totals at 2N minus N, over N (N = {n} in process, \
         {} for the Kafka and ClickHouse stages); every thread of the process counts, \
         librdkafka's included. CPU µs per event: user + system time of native runs at 2kN \
         minus kN, over kN (k = {k_process} in process, {k_engines} for the Kafka and ClickHouse \
         stages), median of three pairs; {BATCH} events per request, produce call and insert.\n",
        2 * n
    );
    print_table(
        &[
            "stage",
            "what runs",
            "instructions / event",
            "of which this step",
            "CPU µs / event",
            "cores per 100k events/s",
        ],
        &rows,
    );
    Ok(())
}

fn stage_doc(stage: Stage) -> &'static str {
    match stage {
        Stage::Json => "ingest: body → JSON values",
        Stage::Validate => "+ parse and validate",
        Stage::Redact => "+ redact (default rules)",
        Stage::Encode => "+ Avro encode",
        Stage::Http => "ingest handler in process (auth, limits, all of it, response)",
        Stage::Produce => "Avro encode + rdkafka produce, acknowledged",
        Stage::Fetch => "rdkafka fetch, no decode",
        Stage::Decode => "consumer: Avro decode",
        Stage::Row => "+ ClickHouse row",
        Stage::Rowbinary => "+ RowBinary",
        Stage::Insert => "clickhouse client insert (client side)",
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Run {
            stage,
            events,
            engines,
        } => {
            run(stage, events, &engines).await?;
            let cpu = cpu_secs(std::process::id()).context("reading /proc/self/stat")?;
            println!("cpu_secs {cpu}");
            Ok(())
        }
        Cmd::Report {
            events,
            native_factor,
            valgrind,
            work,
            engines,
        } => report(events, native_factor, &valgrind, &work, &engines).await,
    }
}
