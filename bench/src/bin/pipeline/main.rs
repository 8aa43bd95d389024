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
use trailhouse_bench::goals::judge;
use trailhouse_bench::service::{cpu_secs, free_port, Binaries, Service};
use trailhouse_bench::{machine, percentile, print_table, produce_all, Spread};
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_query_api::cursor::Position;
use trailhouse_query_api::dialect::stats::count as stats_count;
use trailhouse_query_api::query::rollup::{plan as rollup_plan, Plan as ReadPlan};
use trailhouse_query_api::query::stats::{Dim, Interval, Stats};
use trailhouse_query_api::query::{Cond, Filter, Order, Page, Start};
use trailhouse_query_api::store::{fetch_page, ClickHouseStore};
use trailhouse_schemas::row::Lineage;
use trailhouse_schemas::{AuditEvent, EventRow};

mod consumer;
mod freshness;
mod ingest;
mod query;

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
    /// In the consumer section, ClickHouse on CPU 0 and everything else on
    /// the other CPUs, as on separate hosts (needs `--clickhouse-pid`).
    #[arg(long)]
    pin_clickhouse: bool,
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
    /// Repeats ten times deeper than `deep_page`.
    far_repeats: usize,
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
                far_repeats: 2,
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
                far_repeats: 3,
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

    /// The goals table, judged from this run's figures, placed under the
    /// results' header.
    fn goals(&mut self, header: &str) {
        let goals = judge(&Value::Object(self.report.clone()));
        let rows: Vec<Vec<String>> = goals
            .iter()
            .map(|g| {
                vec![
                    g.figure.to_string(),
                    g.goal.to_string(),
                    g.measured.clone(),
                    g.verdict.to_string(),
                ]
            })
            .collect();
        let sections = std::mem::take(&mut self.markdown);
        self.markdown = format!("{header}\n");
        let note = if self.args.quick {
            "A quick run: small volumes, so the verdicts check the harness, not the goals."
        } else {
            "Every figure is from this run; the sections below give the rows they come from."
        };
        self.table(
            "Goals",
            &["figure", "goal", "measured", "verdict"],
            &rows,
            note,
        );
        self.markdown.push_str(
            sections
                .strip_prefix(&format!("{header}\n"))
                .unwrap_or(&sections),
        );
        self.report.insert(
            "goals".into(),
            Value::Array(
                goals
                    .iter()
                    .map(|g| json!({"figure": g.figure, "goal": g.goal, "measured": g.measured, "verdict": g.verdict.to_string()}))
                    .collect(),
            ),
        );
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
                // The benchmark reads one org far faster than its 600/min
                // default: it measures the reads, not the limiter.
                ("TRAILHOUSE_QUERY_RATE_LIMIT", "off".into()),
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
            &[("TRAILHOUSE_JWT_HS256_SECRET", secret)],
        )
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
    b.goals(&header);
    std::fs::write(b.args.out.join("results.md"), &b.markdown)?;
    std::fs::write(
        b.args.out.join("results.json"),
        serde_json::to_string_pretty(&Value::Object(b.report.clone()))?,
    )?;
    println!("\nresults: {}/results.{{md,json}}", b.args.out.display());
    Ok(())
}
