//! The pipeline against its ceilings, side by side in one run: ingest vs a
//! raw rdkafka producer, the consumer vs a raw RowBinary insert, freshness
//! under steady load, query latency (keyset vs OFFSET), peak memory, and
//! consumer scaling. Results as Markdown and JSON.
//!
//! Run through `bench/run.sh [--quick]`, which starts the local engines and
//! builds the services first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};
use trailhouse_bench::gen::{org_name, Generator, Shape};
use trailhouse_bench::service::{cpu_secs, free_port, Binaries, Service};
use trailhouse_bench::{machine, percentile, print_table, produce_all, Spread};
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_query_api::cursor::Position;
use trailhouse_query_api::query::{Filter, Order, Page, Start};
use trailhouse_query_api::store::{fetch_page, ClickHouseStore};
use trailhouse_schemas::row::Lineage;
use trailhouse_schemas::{AuditEvent, EventRow};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// A short run that keeps the harness working (minutes, small volumes).
    #[arg(long)]
    quick: bool,
    /// Where the service binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where results (results.md, results.json) and logs go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    #[arg(long, env = "TRAILHOUSE_BENCH_KAFKA", default_value = "127.0.0.1:9092")]
    kafka: String,
    /// Process id of the throughput broker, for its CPU time per event.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Process id of the ClickHouse server (here: the front and its engine).
    #[arg(long)]
    clickhouse_pid: Option<u32>,
    /// The broker of the freshness runs (default: `--kafka`).
    #[arg(long)]
    fresh_kafka: Option<String>,
    /// What the freshness broker is, for the table's note.
    #[arg(long, default_value = "the throughput broker")]
    fresh_broker: String,
    #[arg(
        long,
        env = "TRAILHOUSE_BENCH_CLICKHOUSE",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse: String,
    /// Events in the query benchmark's table (default: 10M, quick: 200k).
    #[arg(long)]
    query_events: Option<usize>,
    /// Events pre-filled for each consumer run (default: 1M, quick: 20k).
    /// `bench/run.sh` runs on the in-memory broker, whose fetch cost is flat
    /// with the backlog; on the durable local broker (its cost grows with
    /// the backlog, see docs/benchmarks.md) use e.g. 50,000.
    #[arg(long)]
    consume_events: Option<usize>,
    /// Only these sections (ingest, consumer, freshness, query); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Sizes of one run.
struct Plan {
    runs: usize,
    ingest_secs: f64,
    consume_events: usize,
    /// Steady ingest rates of the freshness runs, events/s.
    fresh_rates: Vec<usize>,
    fresh_secs: u64,
    query_events: usize,
    query_repeats: usize,
    deep_page: usize,
}

impl Plan {
    fn of(a: &Args) -> Plan {
        if a.quick {
            Plan {
                runs: 1,
                ingest_secs: 2.0,
                consume_events: a.consume_events.unwrap_or(20_000),
                fresh_rates: vec![500],
                fresh_secs: 10,
                query_events: a.query_events.unwrap_or(200_000),
                query_repeats: 5,
                deep_page: 20,
            }
        } else {
            Plan {
                runs: 3,
                ingest_secs: 10.0,
                consume_events: a.consume_events.unwrap_or(1_000_000),
                fresh_rates: vec![1_000, 5_000],
                fresh_secs: 60,
                query_events: a.query_events.unwrap_or(10_000_000),
                query_repeats: 30,
                deep_page: 1_000,
            }
        }
    }
}

/// Per run of one batch size: events/s, MB/s, p50 ms, p99 ms; peak RSS MiB;
/// CPU µs per accepted event of ingest and of the broker.
type HttpSamples = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, f64, Vec<Cpu>);

/// Per partition count: events/s, seconds to the first row, peak RSS MiB,
/// CPU per event.
type ConsumerSamples = (Vec<f64>, Vec<f64>, f64, Vec<Cpu>);

/// CPU µs per event of the processes of one measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    service: f64,
    broker: f64,
    clickhouse: f64,
}

/// CPU seconds of an optional process (NaN when not known).
fn cpu_of(pid: Option<u32>) -> f64 {
    pid.and_then(cpu_secs).unwrap_or(f64::NAN)
}

fn median_of(cpu: &[Cpu], f: impl Fn(&Cpu) -> f64) -> f64 {
    Spread::of(&cpu.iter().map(f).collect::<Vec<_>>()).median
}

/// µs per event as a table cell ("–" when the process was not known).
fn micros_cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "–".into()
    }
}

struct Bench {
    args: Args,
    plan: Plan,
    bins: Binaries,
    run_id: String,
    end: DateTime<Utc>,
    report: serde_json::Map<String, Value>,
    markdown: String,
}

fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn spread_json(s: &Spread) -> Value {
    json!({"median": s.median, "min": s.min, "max": s.max})
}

/// A row as the JSONEachRow object a Kafka-engine table of the same columns reads.
fn json_row(r: &EventRow) -> Value {
    let t = |d: &DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    json!({
        "org_id": r.org_id, "created_at": t(&r.created_at), "id": r.id.to_string(),
        "environment_id": r.environment_id, "workspace_id": r.workspace_id,
        "workspace_name": r.workspace_name, "actor_type": r.actor_type, "actor_id": r.actor_id,
        "actor_email": r.actor_email, "actor_name": r.actor_name, "auth_type": r.auth_type,
        "auth_client_id": r.auth_client_id, "auth_sub": r.auth_sub,
        "auth_app_client_id": r.auth_app_client_id, "auth_account_id": r.auth_account_id,
        "source": r.source, "action_type": r.action_type,
        "action_description": r.action_description, "resource_type": r.resource_type,
        "resource_id": r.resource_id, "resource_name": r.resource_name,
        "request_method": r.request_method, "request_url": r.request_url,
        "request_path": r.request_path, "request_status": r.request_status,
        "request_duration_ms": r.request_duration_ms, "request_ip": r.request_ip,
        "request_user_agent": r.request_user_agent, "request_query": r.request_query,
        "request_path_params": r.request_path_params, "request_headers": r.request_headers,
        "request_body": r.request_body, "metadata": r.metadata,
        "received_at": t(&r.received_at), "kafka_partition": r.kafka_partition,
        "kafka_offset": r.kafka_offset, "retention_days": r.retention_days,
    })
}

impl Bench {
    fn kafka(&self, topic: &str) -> KafkaArgs {
        KafkaArgs::local(self.args.kafka.clone(), topic.to_string())
    }

    fn ch(&self, db: &str) -> ClickHouseArgs {
        ClickHouseArgs::local(self.args.clickhouse.clone(), db.to_string())
    }

    fn log(&self, name: &str) -> PathBuf {
        self.args.out.join("logs").join(format!("{name}.log"))
    }

    fn generator(&self, orgs: usize, days: u32, salt: u64) -> Generator {
        Generator::new(Shape {
            seed: self.args.seed ^ salt,
            orgs,
            days,
            end: self.end,
        })
    }

    fn table(&mut self, title: &str, header: &[&str], rows: &[Vec<String>], note: &str) {
        println!("\n### {title}\n");
        print_table(header, rows);
        if !note.is_empty() {
            println!("\n{note}");
        }
        self.markdown.push_str(&format!(
            "\n### {title}\n\n| {} |\n|{}|\n",
            header.join(" | "),
            header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        ));
        for r in rows {
            self.markdown.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        if !note.is_empty() {
            self.markdown.push_str(&format!("\n{note}\n"));
        }
    }

    async fn start_ingest(
        &self,
        topic: &str,
        key_hash: &str,
        name: &str,
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        Service::start(
            "ingest",
            &self.bins.path("trailhouse-ingest"),
            &[
                ("TRAILHOUSE_KAFKA_BROKERS", self.args.kafka.clone()),
                ("TRAILHOUSE_KAFKA_TOPIC", topic.to_string()),
                ("TRAILHOUSE_INGEST_LISTEN", format!("127.0.0.1:{port}")),
                (
                    "TRAILHOUSE_INGEST_SERVICE_KEYS",
                    format!("bench:{key_hash}"),
                ),
            ],
            port,
            &self.log(name),
            Duration::from_secs(60),
        )
        .await
    }

    async fn start_consumers(
        &self,
        topic: &str,
        db: &str,
        count: usize,
        name: &str,
    ) -> anyhow::Result<Vec<Service>> {
        // All at once, so that the group forms in one rebalance rather than
        // one per member joining.
        let bin = self.bins.path("trailhouse-consumer");
        let mut starts = Vec::new();
        for i in 0..count {
            let port = free_port()?;
            let env = vec![
                ("TRAILHOUSE_KAFKA_BROKERS", self.args.kafka.clone()),
                ("TRAILHOUSE_KAFKA_TOPIC", topic.to_string()),
                ("TRAILHOUSE_CLICKHOUSE_URL", self.args.clickhouse.clone()),
                ("TRAILHOUSE_CLICKHOUSE_DATABASE", db.to_string()),
                ("TRAILHOUSE_CLICKHOUSE_COMPRESSION", "none".into()),
                ("TRAILHOUSE_CONSUMER_GROUP", format!("{db}.group")),
                ("TRAILHOUSE_CONSUMER_LISTEN", format!("127.0.0.1:{port}")),
            ];
            let (bin, log) = (bin.clone(), self.log(&format!("{name}-{i}")));
            starts.push(async move {
                Service::start("consumer", &bin, &env, port, &log, Duration::from_secs(60)).await
            });
        }
        futures::future::try_join_all(starts).await
    }

    fn service_key(&self) -> anyhow::Result<(String, String)> {
        let key = format!("thk_bench_{}", uuid::Uuid::new_v4().simple());
        let hash = self
            .bins
            .output("trailhouse-ingest", &["hash-key", &key], &[])?;
        Ok((key, hash))
    }

    /// 1 and 5: ingest throughput and latency by batch size vs a raw
    /// producer, with the ingest process's peak memory.
    async fn ingest(&mut self) -> anyhow::Result<()> {
        let (key, hash) = self.service_key()?;
        let mut g = self.generator(1000, 1, 1);
        let pool: Vec<AuditEvent> = (0..20_000).map(|_| g.event(Some(self.end))).collect();
        let payloads: Vec<(String, Vec<u8>)> = pool
            .iter()
            .map(|e| Ok((e.org_id.clone(), trailhouse_schemas::avro::encode(e)?)))
            .collect::<anyhow::Result<_>>()?;
        let avro_bytes =
            payloads.iter().map(|p| p.1.len()).sum::<usize>() as f64 / pool.len() as f64;
        let inputs: Vec<Value> = pool
            .iter()
            .map(|e| trailhouse_ingest::sink::input_json(e).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let mut rows = Vec::new();
        let mut results = Vec::new();
        let mut raw_rates = Vec::new();
        let mut raw_broker = Vec::new();
        let mut measured: HashMap<usize, HttpSamples> = HashMap::new();
        for run in 0..self.plan.runs {
            let topic = format!("bench.{}.ingest.{run}", self.run_id);
            let kafka = self.kafka(&topic);
            ensure_topic(&kafka, &topic, 2, 1).await?;
            let raw_topic = format!("bench.{}.raw.{run}", self.run_id);
            ensure_topic(&kafka, &raw_topic, 2, 1).await?;
            let broker0 = cpu_of(self.args.broker_pid);
            let (sent, raw) =
                produce_all(&kafka, &raw_topic, &payloads, Some(self.plan.ingest_secs)).await?;
            raw_rates.push(raw);
            raw_broker.push((cpu_of(self.args.broker_pid) - broker0) * 1e6 / sent.max(1) as f64);
            let ingest = self
                .start_ingest(&topic, &hash, &format!("ingest-{run}"))
                .await?;
            let url = format!("http://127.0.0.1:{}/v1/events", ingest.port);
            for (batch, concurrency) in [(1usize, 32usize), (100, 8), (1000, 2)] {
                let bodies: Arc<Vec<String>> = Arc::new(
                    inputs
                        .chunks(batch)
                        .map(|c| {
                            if batch == 1 {
                                c[0].to_string()
                            } else {
                                Value::Array(c.to_vec()).to_string()
                            }
                        })
                        .collect(),
                );
                let (cpu0, broker0) = (ingest.cpu_secs(), cpu_of(self.args.broker_pid));
                let started = Instant::now();
                let deadline = started + Duration::from_secs_f64(self.plan.ingest_secs);
                let mut tasks = Vec::new();
                for w in 0..concurrency {
                    let (client, url, key, bodies) =
                        (client.clone(), url.clone(), key.clone(), bodies.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut lat = Vec::new();
                        let (mut events, mut bytes, mut errors) = (0usize, 0usize, 0usize);
                        let mut i = w;
                        while Instant::now() < deadline {
                            let body = &bodies[i % bodies.len()];
                            i += concurrency;
                            let t = Instant::now();
                            let r = client
                                .post(&url)
                                .bearer_auth(&key)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .await;
                            match r {
                                Ok(r) if r.status().as_u16() == 202 => {
                                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                                    events += batch;
                                    bytes += body.len();
                                }
                                _ => errors += 1,
                            }
                        }
                        (lat, events, bytes, errors)
                    }));
                }
                let mut lat = Vec::new();
                let (mut events, mut bytes, mut errors) = (0, 0, 0);
                for t in tasks {
                    let (l, e, b, x) = t.await?;
                    lat.extend(l);
                    events += e;
                    bytes += b;
                    errors += x;
                }
                if errors > 0 {
                    bail!("ingest batch {batch}: {errors} requests were not accepted");
                }
                let secs = started.elapsed().as_secs_f64();
                let m = measured.entry(batch).or_default();
                m.0.push(events as f64 / secs);
                m.1.push(bytes as f64 / secs / 1e6);
                m.2.push(percentile(&lat, 50.0));
                m.3.push(percentile(&lat, 99.0));
                m.4 = m.4.max(ingest.peak_mib());
                let per = |d: f64| d * 1e6 / events.max(1) as f64;
                m.5.push(Cpu {
                    service: per(ingest.cpu_secs() - cpu0),
                    broker: per(cpu_of(self.args.broker_pid) - broker0),
                    clickhouse: f64::NAN,
                });
            }
            drop(ingest);
        }
        let raw = Spread::of(&raw_rates);
        let raw_broker_cpu = Spread::of(&raw_broker).median;
        for batch in [1usize, 100, 1000] {
            let Some((eps, mbs, p50, p99, rss, cpu)) = measured.get(&batch) else {
                continue;
            };
            let (cpu_ingest, cpu_broker) =
                (median_of(cpu, |c| c.service), median_of(cpu, |c| c.broker));
            let (eps, mbs, p50, p99) = (
                Spread::of(eps),
                Spread::of(mbs),
                Spread::of(p50),
                Spread::of(p99),
            );
            rows.push(vec![
                format!("POST /v1/events, batch {batch}"),
                format!(
                    "{} ({}–{})",
                    fmt_rate(eps.median),
                    fmt_rate(eps.min),
                    fmt_rate(eps.max)
                ),
                format!("{:.1}", mbs.median),
                format!("{:.2} / {:.2}", p50.median, p99.median),
                format!("{:.0}", rss),
                micros_cell(cpu_ingest),
                micros_cell(cpu_broker),
                format!("{:.2}×", eps.median / raw.median),
            ]);
            results.push(json!({"batch": batch, "events_per_sec": spread_json(&eps),
                "json_mb_per_sec": spread_json(&mbs), "p50_ms": spread_json(&p50),
                "p99_ms": spread_json(&p99), "peak_rss_mib": rss,
                "ingest_cpu_us_per_event": cpu_ingest, "broker_cpu_us_per_event": cpu_broker,
                "ratio_to_raw": eps.median / raw.median}));
        }
        rows.push(vec![
            "raw rdkafka producer, same Avro bytes (ceiling)".into(),
            format!(
                "{} ({}–{})",
                fmt_rate(raw.median),
                fmt_rate(raw.min),
                fmt_rate(raw.max)
            ),
            format!("{:.1}", raw.median * avro_bytes / 1e6),
            "–".into(),
            "–".into(),
            "–".into(),
            micros_cell(raw_broker_cpu),
            "1.00×".into(),
        ]);
        self.table(
            "Ingest throughput",
            &[
                "path",
                "events/s median (min–max)",
                "MB/s",
                "p50 / p99 ms",
                "peak RSS MiB",
                "ingest CPU µs / event",
                "broker CPU µs / event",
                "vs raw",
            ],
            &rows,
            &format!(
                "HTTP MB/s counts JSON request bodies; the raw row counts Avro bytes \
                 ({avro_bytes:.0} B per event on average). Concurrency: 32 clients at batch 1, \
                 8 at 100, 2 at 1000; {:.0} s per figure. CPU µs per event: user + system time of the \
                 process over the figure's run, per accepted event (the broker's over the same \
                 window, so it includes the ingest service's produce requests only).",
                self.plan.ingest_secs
            ),
        );
        self.report.insert(
            "ingest".into(),
            json!({"http": results, "raw_events_per_sec": spread_json(&raw), "avro_bytes_per_event": avro_bytes,
                   "raw_broker_cpu_us_per_event": raw_broker_cpu}),
        );
        Ok(())
    }

    /// Fills a topic with `n` events from the generator.
    async fn prefill(
        &self,
        topic: &str,
        partitions: i32,
        n: usize,
        salt: u64,
    ) -> anyhow::Result<Vec<AuditEvent>> {
        let kafka = self.kafka(topic);
        ensure_topic(&kafka, topic, partitions, 1).await?;
        ensure_topic(&kafka, &format!("{topic}.dlq"), 1, 1).await?;
        let mut g = self.generator(1000, 1, salt);
        let events: Vec<AuditEvent> = (0..n).map(|_| g.event(None)).collect();
        let payloads = events
            .iter()
            .map(|e| Ok((e.org_id.clone(), trailhouse_schemas::avro::encode(e)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        produce_all(&kafka, topic, &payloads, None).await?;
        Ok(events)
    }

    async fn count(ch: &ClickHouseArgs) -> u64 {
        ch.client()
            .query("SELECT count() FROM events")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0)
    }

    /// Waits until `events` holds `n` rows (at most 10 minutes after
    /// `started`); returns when the first row appeared and when the last did.
    async fn wait_rows(
        ch: &ClickHouseArgs,
        n: usize,
        started: Instant,
        what: &str,
    ) -> anyhow::Result<(Option<Instant>, Instant)> {
        let mut first = None;
        let deadline = started + Duration::from_secs(600);
        loop {
            let c = Self::count(ch).await;
            if c > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if c >= n as u64 {
                return Ok((first, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!("{what}: only {c} of {n} rows after 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Events/s of the consumer(s) from first row to last, seconds to the
    /// first row, peak RSS, and CPU µs per event of the consumers (all of
    /// them, start-up included), the broker and ClickHouse.
    async fn consume_once(
        &self,
        partitions: usize,
        n: usize,
        tag: &str,
    ) -> anyhow::Result<(f64, f64, f64, Cpu)> {
        let topic = format!("bench.{}.consume.{tag}", self.run_id);
        self.prefill(&topic, partitions as i32, n, partitions as u64)
            .await?;
        let db = format!("bench_{}_{}", self.run_id, tag.replace('.', "_"));
        let ch = self.ch(&db);
        migrate(&ch).await?;
        let started = Instant::now();
        let (broker0, ch0) = (
            cpu_of(self.args.broker_pid),
            cpu_of(self.args.clickhouse_pid),
        );
        let consumers = self
            .start_consumers(&topic, &db, partitions, &format!("consumer-{tag}"))
            .await?;
        let (first, done) = Self::wait_rows(&ch, n, started, &format!("consumer {tag}")).await?;
        let per = |d: f64| d * 1e6 / n as f64;
        let cpu = Cpu {
            service: per(consumers.iter().map(Service::cpu_secs).sum()),
            broker: per(cpu_of(self.args.broker_pid) - broker0),
            clickhouse: per(cpu_of(self.args.clickhouse_pid) - ch0),
        };
        let rss = consumers.iter().map(Service::peak_mib).fold(0.0, f64::max);
        drop(consumers);
        self.drop_database(&db).await;
        let join = first.map_or(0.0, |f| (f - started).as_secs_f64());
        let steady = first.map_or(0.0, |f| n as f64 / (done - f).as_secs_f64().max(1e-3));
        Ok((steady, join, rss, cpu))
    }

    /// The Kafka ceiling: bare rdkafka consumers (one per partition, in one
    /// group, with the consumer's fetch settings) reading the same kind of
    /// pre-filled topic, no decoding, no ClickHouse. Events/s from the first
    /// message to the last.
    async fn raw_fetch(&self, partitions: usize, n: usize, tag: &str) -> anyhow::Result<f64> {
        let topic = format!("bench.{}.fetch.{tag}", self.run_id);
        self.prefill(&topic, partitions as i32, n, partitions as u64)
            .await?;
        let mut readers = Vec::new();
        for _ in 0..partitions {
            let c: StreamConsumer = self
                .kafka(&topic)
                .client_config()
                .set("group.id", format!("{topic}.group"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("queued.max.messages.kbytes", "16384")
                .set("max.partition.fetch.bytes", (4 << 20).to_string())
                .set("fetch.queue.backoff.ms", "20")
                .create()?;
            c.subscribe(&[&topic])?;
            readers.push(c);
        }
        let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for c in readers {
            let (first, total) = (first.clone(), total.clone());
            tasks.push(tokio::spawn(async move {
                let mut bytes = 0usize;
                while total.load(std::sync::atomic::Ordering::SeqCst) < n {
                    let Ok(m) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await
                    else {
                        continue;
                    };
                    let m = m?;
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    if let Ok(mut f) = first.lock() {
                        f.get_or_insert_with(Instant::now);
                    }
                    total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok::<usize, anyhow::Error>(bytes)
            }));
        }
        let all = futures::future::join_all(tasks);
        tokio::time::timeout(Duration::from_secs(600), all)
            .await
            .context("fetch ceiling: not every event read within 10 minutes")?
            .into_iter()
            .try_for_each(|r| r.map_err(anyhow::Error::from).and_then(|r| r.map(|_| ())))?;
        let started = first
            .lock()
            .ok()
            .and_then(|f| *f)
            .context("fetch ceiling: no message read")?;
        Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-3))
    }

    /// The ceiling: the same rows inserted with the `clickhouse` crate
    /// (RowBinary, two inserts in flight, batches of the consumer's size).
    /// Events/s, and ClickHouse CPU µs per event.
    async fn raw_insert(&self, n: usize, tag: &str) -> anyhow::Result<(f64, f64)> {
        let db = format!("bench_{}_{}", self.run_id, tag);
        let ch = self.ch(&db);
        migrate(&ch).await?;
        let mut g = self.generator(1000, 1, 1);
        let rows: Vec<EventRow> = (0..n)
            .map(|i| {
                EventRow::from_event(
                    &g.event(None),
                    Lineage {
                        partition: 0,
                        offset: i as i64,
                    },
                )
            })
            .collect();
        let rows = Arc::new(rows);
        let ch0 = cpu_of(self.args.clickhouse_pid);
        let started = Instant::now();
        let batch = 50_000.min(n.div_ceil(4).max(1));
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(batch)
            .map(|s| (s, (s + batch).min(n)))
            .collect();
        let mut pending = FuturesUnordered::new();
        for (s, e) in chunks {
            let (client, rows) = (ch.client(), rows.clone());
            pending.push(async move {
                let mut insert = client.insert::<EventRow>("events").await?;
                for r in &rows[s..e] {
                    insert.write(r).await?;
                }
                insert.end().await
            });
            if pending.len() >= 2 {
                if let Some(r) = pending.next().await {
                    r?;
                }
            }
        }
        while let Some(r) = pending.next().await {
            r?;
        }
        let eps = n as f64 / started.elapsed().as_secs_f64();
        let ch_cpu = (cpu_of(self.args.clickhouse_pid) - ch0) * 1e6 / n as f64;
        self.drop_database(&db).await;
        Ok((eps, ch_cpu))
    }

    /// What a ClickHouse user would run instead of our consumer: the Kafka
    /// table engine reading the same events as JSONEachRow from a topic of
    /// their own, and a materialized view into the same `events` table.
    /// Events/s from the first stored row to the last, like the consumer's.
    async fn kafka_engine_once(&self, n: usize, tag: &str) -> anyhow::Result<f64> {
        let db = format!("bench_{}_{}", self.run_id, tag.replace('.', "_"));
        let result = self.kafka_engine_run(n, tag, &db).await;
        // Also when the engine refused the Kafka table: a server may keep a
        // half-created one, and fail to start with it later.
        self.drop_database(&db).await;
        result
    }

    /// Drops a database this run created (best effort: a leftover only costs disk).
    async fn drop_database(&self, db: &str) {
        let sql = format!("DROP DATABASE IF EXISTS {db} SYNC");
        if let Err(e) = self.ch("default").client().query(&sql).execute().await {
            eprintln!("dropping {db}: {e}");
        }
    }

    async fn kafka_engine_run(&self, n: usize, tag: &str, db: &str) -> anyhow::Result<f64> {
        let topic = format!("bench.{}.kengine.{tag}", self.run_id);
        let kafka = self.kafka(&topic);
        ensure_topic(&kafka, &topic, 1, 1).await?;
        let mut g = self.generator(1000, 1, 1);
        let payloads: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                let row = EventRow::from_event(
                    &g.event(None),
                    Lineage {
                        partition: 0,
                        offset: i as i64,
                    },
                );
                Ok((row.org_id.clone(), serde_json::to_vec(&json_row(&row))?))
            })
            .collect::<anyhow::Result<_>>()?;
        produce_all(&kafka, &topic, &payloads, None).await?;
        let ch = self.ch(db);
        migrate(&ch).await?;
        let client = ch.client();
        let columns: Vec<(String, String)> = client
            .query(
                "SELECT name, type FROM system.columns \
                 WHERE database = currentDatabase() AND table = 'events' ORDER BY position",
            )
            .fetch_all()
            .await?;
        let list: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        client
            .query(&format!(
                "CREATE TABLE events_queue ({}) ENGINE = Kafka SETTINGS \
                 kafka_broker_list = ?, kafka_topic_list = ?, kafka_group_name = ?, \
                 kafka_format = 'JSONEachRow', kafka_num_consumers = 1, \
                 kafka_max_block_size = 50000",
                list.join(", ")
            ))
            .bind(&self.args.kafka)
            .bind(&topic)
            .bind(format!("{topic}.group"))
            .execute()
            .await?;
        let started = Instant::now();
        client
            .query("CREATE MATERIALIZED VIEW events_mv TO events AS SELECT * FROM events_queue")
            .execute()
            .await?;
        let (first, done) =
            Self::wait_rows(&ch, n, started, &format!("kafka engine {tag}")).await?;
        // Stop consuming before the database goes away.
        client.query("DROP TABLE events_mv").execute().await?;
        client.query("DROP TABLE events_queue").execute().await?;
        Ok(first.map_or(0.0, |f| n as f64 / (done - f).as_secs_f64().max(1e-3)))
    }

    /// 2, 5 and 6: consumer throughput vs the raw insert, by partitions and
    /// consumers, with peak RSS at two volumes.
    async fn consumer(&mut self) -> anyhow::Result<()> {
        let n = self.plan.consume_events;
        let mut raw = Vec::new();
        let mut raw_ch = Vec::new();
        let mut engine = Vec::new();
        let mut engine_error: Option<String> = None;
        let mut by_p: HashMap<usize, ConsumerSamples> = HashMap::new();
        let mut fetch: HashMap<usize, Vec<f64>> = HashMap::new();
        for run in 0..self.plan.runs {
            let (eps, ch_cpu) = self.raw_insert(n, &format!("raw{run}")).await?;
            raw.push(eps);
            raw_ch.push(ch_cpu);
            if engine_error.is_none() {
                match self.kafka_engine_once(n, &format!("kengine{run}")).await {
                    Ok(eps) => engine.push(eps),
                    // An engine without a working Kafka table engine: the
                    // comparison is reported as not measured, with why.
                    Err(e) => engine_error = Some(format!("{e:#}")),
                }
            }
            for p in [1usize, 2, 4] {
                let f = self.raw_fetch(p, n, &format!("p{p}.r{run}")).await?;
                fetch.entry(p).or_default().push(f);
                let (eps, join, rss, cpu) =
                    self.consume_once(p, n, &format!("p{p}.r{run}")).await?;
                let m = by_p.entry(p).or_default();
                m.0.push(eps);
                m.1.push(join);
                m.2 = m.2.max(rss);
                m.3.push(cpu);
            }
        }
        // Memory at twice the volume: bounded by batch limits, not by load.
        let (_, _, rss_double, _) = self.consume_once(1, 2 * n, "double").await?;
        let raw = Spread::of(&raw);
        let raw_ch = Spread::of(&raw_ch).median;
        let mut rows = vec![vec![
            "raw RowBinary insert, no Kafka (ceiling)".into(),
            format!(
                "{} ({}–{})",
                fmt_rate(raw.median),
                fmt_rate(raw.min),
                fmt_rate(raw.max)
            ),
            "–".into(),
            "–".into(),
            "–".into(),
            "–".into(),
            micros_cell(raw_ch),
            "1.00×".into(),
            "–".into(),
        ]];
        let engine = (engine_error.is_none() && !engine.is_empty()).then(|| Spread::of(&engine));
        rows.push(vec![
            "ClickHouse Kafka engine + materialized view, JSONEachRow (alternative)".into(),
            match (&engine, &engine_error) {
                (Some(e), _) => format!(
                    "{} ({}–{})",
                    fmt_rate(e.median),
                    fmt_rate(e.min),
                    fmt_rate(e.max)
                ),
                (None, Some(err)) => format!("not measured: {}", err.replace('\n', " ")),
                (None, None) => "not measured".into(),
            },
            "–".into(),
            "(in the server)".into(),
            "–".into(),
            "–".into(),
            "–".into(),
            engine.map_or("–".into(), |e| format!("{:.2}×", e.median / raw.median)),
            "–".into(),
        ]);
        let mut scaling = Vec::new();
        for p in [1usize, 2, 4] {
            let Some((eps, join, rss, cpu)) = by_p.get(&p) else {
                continue;
            };
            let (cpu_consumer, cpu_broker, cpu_ch) = (
                median_of(cpu, |c| c.service),
                median_of(cpu, |c| c.broker),
                median_of(cpu, |c| c.clickhouse),
            );
            let (eps, join) = (Spread::of(eps), Spread::of(join));
            let ceiling = Spread::of(fetch.get(&p).map_or(&[][..], Vec::as_slice));
            rows.push(vec![
                format!("raw rdkafka fetch only, {p} partition(s) (Kafka ceiling)"),
                format!(
                    "{} ({}–{})",
                    fmt_rate(ceiling.median),
                    fmt_rate(ceiling.min),
                    fmt_rate(ceiling.max)
                ),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                format!("{:.2}×", ceiling.median / raw.median),
                "1.00×".into(),
            ]);
            rows.push(vec![
                format!("consumer: {p} partition(s), {p} process(es)"),
                format!(
                    "{} ({}–{})",
                    fmt_rate(eps.median),
                    fmt_rate(eps.min),
                    fmt_rate(eps.max)
                ),
                format!("{:.1}", join.median),
                format!("{rss:.0}"),
                micros_cell(cpu_consumer),
                micros_cell(cpu_broker),
                micros_cell(cpu_ch),
                format!("{:.2}×", eps.median / raw.median),
                format!("{:.2}×", eps.median / ceiling.median),
            ]);
            scaling.push(
                json!({"partitions": p, "consumers": p, "events_per_sec": spread_json(&eps),
                "kafka_fetch_ceiling_events_per_sec": spread_json(&ceiling),
                "ratio_to_kafka_fetch": eps.median / ceiling.median,
                "first_row_after_secs": spread_json(&join), "peak_rss_mib_per_process": rss,
                "ratio_to_raw_insert": eps.median / raw.median,
                "cpu_us_per_event": {"consumers": cpu_consumer, "broker": cpu_broker,
                                     "clickhouse": cpu_ch},
                "ratio_to_kafka_engine": engine.map(|e| eps.median / e.median)}),
            );
        }
        self.table(
            "Consumer throughput (pre-filled topic → ClickHouse)",
            &[
                "path",
                "events/s median (min–max)",
                "first row after s",
                "peak RSS MiB / process",
                "consumer CPU µs / event",
                "broker CPU µs / event",
                "ClickHouse CPU µs / event",
                "vs raw insert",
                "vs Kafka fetch",
            ],
            &rows,
            &format!(
                "{n} events per figure. Consumer events/s count from the first stored row to the \
                 last (group join and start-up are the separate column). Peak RSS of one \
                 consumer at {} events: {rss_double:.0} MiB (vs the {n}-event run above). CPU \
                 µs per event: user + system time per stored event, of the consumer processes \
                 (all of their life, start-up included), and of the broker and ClickHouse over \
                 the same run; ClickHouse here is the local front and its engine.",
                2 * n
            ),
        );
        self.report.insert(
            "consumer".into(),
            json!({"events": n, "raw_insert_events_per_sec": spread_json(&raw),
                   "kafka_engine_events_per_sec": engine.as_ref().map(spread_json),
                   "kafka_engine_error": engine_error, "scaling": scaling,
                   "raw_insert_clickhouse_cpu_us_per_event": raw_ch,
                   "peak_rss_mib_at_double_volume": rss_double}),
        );
        Ok(())
    }

    async fn start_query_api(&self, db: &str, secret: &str, name: &str) -> anyhow::Result<Service> {
        let port = free_port()?;
        Service::start(
            "query-api",
            &self.bins.path("trailhouse-query-api"),
            &[
                ("TRAILHOUSE_CLICKHOUSE_URL", self.args.clickhouse.clone()),
                ("TRAILHOUSE_CLICKHOUSE_DATABASE", db.to_string()),
                ("TRAILHOUSE_CLICKHOUSE_COMPRESSION", "none".into()),
                ("TRAILHOUSE_QUERY_LISTEN", format!("127.0.0.1:{port}")),
                ("TRAILHOUSE_JWT_HS256_SECRET", secret.to_string()),
                ("TRAILHOUSE_CURSOR_SECRET", format!("{secret}-cursor")),
            ],
            port,
            &self.log(name),
            Duration::from_secs(60),
        )
        .await
    }

    fn token(&self, secret: &str, org: &str) -> anyhow::Result<String> {
        self.bins.output(
            "trailhouse-query-api",
            &["mint-token", "--org", org, "--permissions", "viewAuditLog"],
            &[
                ("TRAILHOUSE_JWT_HS256_SECRET", secret),
                ("TRAILHOUSE_CURSOR_SECRET", "unused-by-mint-token"),
            ],
        )
    }

    /// 3: from ingest's 202 to visible through the query API, at a steady rate.
    /// 3: freshness at each configured rate.
    async fn freshness(&mut self) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        let mut runs = Vec::new();
        // Freshness is a latency, not a throughput: it may run on the broker
        // the tests trust (`--fresh-kafka`), the others run on `--kafka`.
        let throughput_broker = self.args.kafka.clone();
        if let Some(b) = self.args.fresh_kafka.clone() {
            self.args.kafka = b;
        }
        let result = async {
            for rate in self.plan.fresh_rates.clone() {
                let (row, run) = self.freshness_at(rate).await?;
                rows.push(row);
                runs.push(run);
            }
            anyhow::Ok(())
        }
        .await;
        self.args.kafka = throughput_broker;
        result?;
        self.table(
            "Freshness (ingest 202 → visible in the query API)",
            &[
                "target rate ev/s",
                "accepted ev/s",
                "markers seen / acknowledged",
                "p50 ms",
                "p99 ms",
                "rejected requests",
                "peak RSS MiB ingest / consumer",
                "warm-up visible after s",
            ],
            &rows,
            &format!(
                "Broker: {}. Each run starts fresh services and waits for one warm-up event to be \
                 visible (the group join and first insert: last column) before the load starts. \
                 {} s of steady load per rate, in requests of 100 events plus a marker event every \
                 200 ms; latency is from a marker's 202 to its first appearance in `GET /v1/events`, \
                 polled every 20 ms (so figures include up to 20 ms of polling delay). Markers not \
                 visible 30 s after the load stopped are not in the percentiles (seen < \
                 acknowledged). Rejected requests were answered 503 (ingest backpressure). \
                 Consumer batch age limit: its default.",
                self.args.fresh_broker, self.plan.fresh_secs
            ),
        );
        self.report
            .insert("freshness".into(), json!({ "runs": runs }));
        Ok(())
    }

    async fn freshness_at(&self, rate: usize) -> anyhow::Result<(Vec<String>, Value)> {
        let (key, hash) = self.service_key()?;
        let secret = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let topic = format!("bench.{}.fresh{rate}", self.run_id);
        let kafka = self.kafka(&topic);
        ensure_topic(&kafka, &topic, 2, 1).await?;
        ensure_topic(&kafka, &format!("{topic}.dlq"), 1, 1).await?;
        let db = format!("bench_{}_fresh{rate}", self.run_id);
        migrate(&self.ch(&db)).await?;
        let ingest = self
            .start_ingest(&topic, &hash, &format!("fresh{rate}-ingest"))
            .await?;
        let consumers = self
            .start_consumers(&topic, &db, 1, &format!("fresh{rate}-consumer"))
            .await?;
        let query = self
            .start_query_api(&db, &secret, &format!("fresh{rate}-query"))
            .await?;
        let marker_org = "org_fresh";
        let token = self.token(&secret, marker_org)?;
        let client = reqwest::Client::new();
        let ingest_url = format!("http://127.0.0.1:{}/v1/events", ingest.port);
        // 40 s of markers per page: a marker is counted when it first appears.
        let query_url = format!("http://127.0.0.1:{}/v1/events?limit=200", query.port);
        let acked: Arc<tokio::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
        let seen: Arc<tokio::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = tokio::spawn({
            let (client, seen, stop, token) =
                (client.clone(), seen.clone(), stop.clone(), token.clone());
            async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(r) = client.get(&query_url).bearer_auth(&token).send().await {
                        let now = Instant::now();
                        if let Ok(v) = r.json::<Value>().await {
                            let mut s = seen.lock().await;
                            for e in v["data"].as_array().into_iter().flatten() {
                                if let Some(id) = e["id"].as_str() {
                                    s.entry(id.to_string()).or_insert(now);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        // Warm-up: one marker, and the load starts once it is visible, so
        // that the group join is its own figure and not in the percentiles.
        let mut g = self.generator(1000, 1, 3);
        let warm_started = Instant::now();
        let mut warm = g.event(Some(Utc::now()));
        warm.org_id = marker_org.into();
        let warm_id = warm.id.to_string();
        let r = client
            .post(&ingest_url)
            .bearer_auth(&key)
            .json(&trailhouse_ingest::sink::input_json(&warm)?)
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            bail!("freshness: the warm-up event was answered {}", r.status());
        }
        while !seen.lock().await.contains_key(&warm_id) {
            if warm_started.elapsed() > Duration::from_secs(120) {
                bail!("freshness: the warm-up event was not visible after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let warm_secs = warm_started.elapsed().as_secs_f64();
        // Background load in batches of 100, paced to the rate; a marker
        // event of its own org every 200 ms.
        let batch = 100usize;
        let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
        let started = Instant::now();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut load = FuturesUnordered::new();
        let mut next_marker = Instant::now();
        let mut sent = 0usize;
        let mut failures = 0usize;
        let mut taken = 0usize;
        while started.elapsed() < Duration::from_secs(self.plan.fresh_secs) {
            ticker.tick().await;
            let body: Vec<Value> = (0..batch)
                .map(|_| trailhouse_ingest::sink::input_json(&g.event(Some(Utc::now()))))
                .collect::<Result<_, _>>()?;
            let req = client
                .post(&ingest_url)
                .bearer_auth(&key)
                .json(&body)
                .send();
            load.push(
                async move {
                    if req.await.is_ok_and(|r| r.status().as_u16() == 202) {
                        batch
                    } else {
                        0
                    }
                }
                .boxed(),
            );
            sent += batch;
            if Instant::now() >= next_marker {
                next_marker += Duration::from_millis(200);
                let mut m = g.event(Some(Utc::now()));
                m.org_id = marker_org.into();
                let id = m.id.to_string();
                let (client, url, key, acked) = (
                    client.clone(),
                    ingest_url.clone(),
                    key.clone(),
                    acked.clone(),
                );
                let body = trailhouse_ingest::sink::input_json(&m)?;
                load.push(
                    async move {
                        let r = client.post(&url).bearer_auth(&key).json(&body).send().await;
                        if r.is_ok_and(|r| r.status().as_u16() == 202) {
                            acked.lock().await.insert(id, Instant::now());
                            1
                        } else {
                            0
                        }
                    }
                    .boxed(),
                );
            }
            while let Some(Some(accepted)) = load.next().now_or_never() {
                failures += usize::from(accepted == 0);
                taken += accepted;
            }
        }
        while let Some(accepted) = load.next().await {
            failures += usize::from(accepted == 0);
            taken += accepted;
        }
        let achieved = taken as f64 / started.elapsed().as_secs_f64();
        // Let the last markers arrive.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && seen.lock().await.len() < acked.lock().await.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.await?;
        let (acked, mut seen) = (acked.lock().await.clone(), seen.lock().await.clone());
        seen.remove(&warm_id);
        let lat: Vec<f64> = acked
            .iter()
            .filter_map(|(id, a)| {
                seen.get(id)
                    .map(|s| s.saturating_duration_since(*a).as_secs_f64() * 1000.0)
            })
            .collect();
        if lat.is_empty() {
            bail!("freshness: no marker became visible");
        }
        let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
        let ingest_rss = ingest.peak_mib();
        let consumer_rss = consumers.iter().map(Service::peak_mib).fold(0.0, f64::max);
        drop((ingest, consumers, query));
        self.drop_database(&db).await;
        let row = vec![
            rate.to_string(),
            format!("{achieved:.0}"),
            format!("{} / {}", lat.len(), acked.len()),
            format!("{p50:.0}"),
            format!("{p99:.0}"),
            failures.to_string(),
            format!("{ingest_rss:.0} / {consumer_rss:.0}"),
            format!("{warm_secs:.1}"),
        ];
        let run = json!({"target_rate": rate, "accepted_rate": achieved, "events_sent": sent,
               "markers_acknowledged": acked.len(), "markers_seen": lat.len(), "p50_ms": p50,
               "p99_ms": p99, "rejected_requests": failures, "ingest_peak_rss_mib": ingest_rss,
               "consumer_peak_rss_mib": consumer_rss, "warm_up_visible_after_secs": warm_secs});
        Ok((row, run))
    }

    async fn query_table(&self) -> anyhow::Result<(String, ClickHouseArgs)> {
        let n = self.plan.query_events;
        let db = format!("bench_query_{n}_{}", self.args.seed);
        let ch = self.ch(&db);
        migrate(&ch).await?;
        let have = Self::count(&ch).await;
        if have == n as u64 {
            println!("query table {db}: {n} events already loaded");
            return Ok((db, ch));
        }
        ch.client().query("TRUNCATE TABLE events").execute().await?;
        println!("loading {n} events into {db} …");
        let mut g = self.generator(1000, 30, 4);
        let started = Instant::now();
        let chunk = 200_000;
        let mut done = 0;
        while done < n {
            let m = chunk.min(n - done);
            let mut insert = ch.client().insert::<EventRow>("events").await?;
            for i in 0..m {
                let row = EventRow::from_event(
                    &g.event(None),
                    Lineage {
                        partition: 0,
                        offset: (done + i) as i64,
                    },
                );
                insert.write(&row).await?;
            }
            insert.end().await?;
            done += m;
        }
        println!("loaded in {:.0} s", started.elapsed().as_secs_f64());
        Ok((db, ch))
    }

    /// 4: query latency through the HTTP API on a skewed table.
    async fn query(&mut self) -> anyhow::Result<()> {
        let (db, ch) = self.query_table().await?;
        let secret = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let api = self.start_query_api(&db, &secret, "query-api").await?;
        let org = org_name(0);
        let org_events = ch
            .client()
            .query("SELECT count() FROM events WHERE org_id = ?")
            .bind(&org)
            .fetch_one::<u64>()
            .await?;
        let token = self.token(&secret, &org)?;
        let base = format!("http://127.0.0.1:{}/v1/events", api.port);
        let client = reqwest::Client::new();
        let get = |q: String| {
            let (client, token, url) = (client.clone(), token.clone(), format!("{base}?{q}"));
            async move {
                let t = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await?;
                let status = r.status();
                let v: Value = r.json().await?;
                if !status.is_success() {
                    bail!("{url}: {status} {v}");
                }
                anyhow::Ok((t.elapsed().as_secs_f64() * 1000.0, v))
            }
        };
        let week_ago = (self.end - chrono::Duration::days(7))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let end = self.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let cases: Vec<(&str, String)> = vec![
            ("newest page (100) of the largest org", "limit=100".into()),
            (
                "7-day window + action filter",
                format!("from={week_ago}&to={end}&action=project.update&limit=100"),
            ),
            ("actor filter", "actor_id=usr_7&limit=100".into()),
            (
                "path substring search",
                "path_contains=members%2Fm_12&limit=100".into(),
            ),
        ];
        let mut rows = Vec::new();
        let mut out = Vec::new();
        let repeats = self.plan.query_repeats;
        for (name, q) in &cases {
            let mut lat = Vec::new();
            let mut hits = 0;
            for _ in 0..repeats {
                let (ms, v) = get(q.clone()).await?;
                hits = v["data"].as_array().map_or(0, Vec::len);
                lat.push(ms);
            }
            rows.push(vec![
                name.to_string(),
                hits.to_string(),
                format!("{:.1}", percentile(&lat, 50.0)),
                format!("{:.1}", percentile(&lat, 99.0)),
            ]);
            out.push(json!({"query": name, "rows": hits, "p50_ms": percentile(&lat, 50.0), "p99_ms": percentile(&lat, 99.0)}));
        }
        // Walk to the deep page once, then time page 1, the deep page by
        // cursor, and the same depth by OFFSET (SQL a naive API would run).
        let depth = self.plan.deep_page;
        let mut cursor: Option<String> = None;
        let mut last_before: Option<(String, String)> = None;
        for _ in 1..depth {
            let q = match &cursor {
                Some(c) => format!("limit=100&cursor={c}"),
                None => "limit=100".into(),
            };
            let (_, v) = get(q).await?;
            let data = v["data"].as_array().context("data")?;
            let last = data
                .last()
                .context("the org has fewer pages than the deep page")?;
            last_before = Some((
                last["created_at"].as_str().unwrap_or_default().to_string(),
                last["id"].as_str().unwrap_or_default().to_string(),
            ));
            cursor = v["next_cursor"].as_str().map(String::from);
        }
        let cursor = cursor.context("no cursor to the deep page")?;
        let mut first = Vec::new();
        let mut deep = Vec::new();
        let mut offset = Vec::new();
        let mut keyset_sql = Vec::new();
        let (at, id) = last_before.context("deep page")?;
        let pos = Position {
            created_at: DateTime::parse_from_rfc3339(&at)
                .context("deep page position time")?
                .with_timezone(&Utc),
            id: uuid::Uuid::parse_str(&id).context("deep page position id")?,
        };
        // The query API's own page reads, straight to ClickHouse: keyset
        // from the position (in its time windows) against the same depth
        // by OFFSET, same filter, same columns.
        let store = ClickHouseStore::new(ch.client());
        let filter = Filter::new(org.clone());
        let keyset = Page {
            order: Order::Desc,
            start: Start::After(pos),
            limit: 100,
        };
        let by_offset = Page {
            start: Start::Offset(((depth - 1) * 100) as u64),
            ..keyset
        };
        for _ in 0..repeats {
            first.push(get("limit=100".into()).await?.0);
            deep.push(get(format!("limit=100&cursor={cursor}")).await?.0);
            let t = Instant::now();
            let o = fetch_page(&store, &filter, &by_offset).await?;
            offset.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let k = fetch_page(&store, &filter, &keyset).await?;
            keyset_sql.push(t.elapsed().as_secs_f64() * 1000.0);
            if o.rows != k.rows {
                bail!(
                    "deep page: OFFSET and keyset disagree ({} and {} rows)",
                    o.rows.len(),
                    k.rows.len()
                );
            }
        }
        for (name, lat) in [
            ("API: keyset page 1".to_string(), &first),
            (format!("API: keyset page {depth}"), &deep),
            (format!("store: keyset page {depth}"), &keyset_sql),
            (format!("store: OFFSET page {depth}"), &offset),
        ] {
            rows.push(vec![
                name.clone(),
                "100".into(),
                format!("{:.1}", percentile(lat, 50.0)),
                format!("{:.1}", percentile(lat, 99.0)),
            ]);
            out.push(json!({"query": name, "rows": 100, "p50_ms": percentile(lat, 50.0), "p99_ms": percentile(lat, 99.0)}));
        }
        let flat = percentile(&deep, 50.0) / percentile(&first, 50.0);
        let naive = percentile(&offset, 50.0) / percentile(&keyset_sql, 50.0);
        self.table(
            &format!("Query latency ({} events, 1,000 orgs, 30 days)", self.plan.query_events),
            &["query", "rows", "p50 ms", "p99 ms"],
            &rows,
            &format!(
                "Largest org: {org_events} events. {repeats} repeats each. Keyset page {depth} / page 1: \
                 {flat:.2}×; OFFSET / keyset at page {depth}: {naive:.2}×. The API rows go through \
                 `GET /v1/events` (authentication, SQL, full rows, JSON); the store rows run the \
                 query API's page reads straight against ClickHouse, keyset from the page-{depth} \
                 position and the same page by `OFFSET` (what a naive API runs), and check that \
                 both return the same rows."
            ),
        );
        self.report.insert(
            "query".into(),
            json!({"events": self.plan.query_events, "largest_org_events": org_events, "repeats": repeats,
                   "results": out, "deep_page": depth, "keyset_deep_over_first": flat, "offset_over_keyset": naive}),
        );
        drop(api);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.out.join("logs"))?;
    let plan = Plan::of(&args);
    let run_id = format!("{}", Utc::now().format("%m%d%H%M%S"));
    let mut b = Bench {
        bins: Binaries(args.bin_dir.clone()),
        end: DateTime::from_timestamp(Utc::now().timestamp() / 86_400 * 86_400, 0)
            .unwrap_or_default(),
        plan,
        run_id,
        report: serde_json::Map::new(),
        markdown: String::new(),
        args,
    };
    let header = format!(
        "Machine: {}. Mode: {}. Binaries: {}. Date: {}. Seed: {}.",
        machine(),
        if b.args.quick { "quick" } else { "full" },
        // Relative to the checkout (run.sh runs from it): no machine paths
        // in the published results.
        std::env::current_dir()
            .ok()
            .and_then(|d| b.args.bin_dir.strip_prefix(d).ok())
            .unwrap_or(&b.args.bin_dir)
            .display(),
        Utc::now().format("%Y-%m-%d"),
        b.args.seed
    );
    println!("{header}");
    b.markdown.push_str(&format!("{header}\n"));
    let wants = |s: &str| b.args.only.is_empty() || b.args.only.iter().any(|o| o == s);
    let (i, c, f, q) = (
        wants("ingest"),
        wants("consumer"),
        wants("freshness"),
        wants("query"),
    );
    if i {
        b.ingest().await.context("ingest benchmark")?;
    }
    if c {
        b.consumer().await.context("consumer benchmark")?;
    }
    if f {
        b.freshness().await.context("freshness benchmark")?;
    }
    if q {
        b.query().await.context("query benchmark")?;
    }
    b.report.insert("machine".into(), json!(machine()));
    b.report.insert(
        "mode".into(),
        json!(if b.args.quick { "quick" } else { "full" }),
    );
    b.report
        .insert("date".into(), json!(Utc::now().to_rfc3339()));
    b.report.insert("seed".into(), json!(b.args.seed));
    std::fs::write(b.args.out.join("results.md"), &b.markdown)?;
    std::fs::write(
        b.args.out.join("results.json"),
        serde_json::to_string_pretty(&Value::Object(b.report.clone()))?,
    )?;
    println!("\nresults: {}/results.{{md,json}}", b.args.out.display());
    Ok(())
}
