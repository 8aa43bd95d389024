//! The broker on its own: how fast a bare rdkafka client reads a pre-filled
//! partition at several fetch sizes, and how long a consumer-group member
//! takes from `subscribe` to its first message. The consumer's ceilings in
//! the pipeline benchmark are only as meaningful as these figures.
//!
//! `broker --kafka HOST:PORT [--events N]`

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use trailhouse_bench::gen::{Generator, Shape};
use trailhouse_bench::{machine, print_table, produce_all, Spread};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};

#[derive(Parser)]
struct Args {
    /// Bootstrap broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka: String,
    /// Events in the pre-filled partition.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Passes per figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Read this existing topic (partition 0, at least `--events` messages)
    /// instead of filling one.
    #[arg(long)]
    topic: Option<String>,
    /// A short run that only checks the harness.
    #[arg(long)]
    quick: bool,
}

/// Generated audit events, Avro-encoded as ingest sends them (about 1.1 KB
/// each, keyed by org): the bytes the consumer reads, compressing as they do.
fn payloads(n: usize) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut g = Generator::new(Shape {
        seed: 42,
        orgs: 1000,
        days: 1,
        end: chrono::Utc::now(),
    });
    let pool = (0..n.min(20_000))
        .map(|_| {
            let e = g.event(None);
            Ok((e.org_id.clone(), trailhouse_schemas::encode(&e)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((0..n).map(|i| pool[i % pool.len()].clone()).collect())
}

async fn fill(kafka: &KafkaArgs, topic: &str, n: usize) -> anyhow::Result<f64> {
    ensure_topic(kafka, topic, 1, 1).await?;
    let (_, rate) = produce_all(kafka, topic, &payloads(n)?, None).await?;
    Ok(rate)
}

/// Reads `n` messages from `consumer`: messages/s from `from(start, first
/// message)` to the last message, and seconds until the first.
fn drain(
    consumer: &BaseConsumer,
    n: usize,
    from: impl Fn(Instant, Instant) -> Instant,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let mut first = None;
    let mut seen = 0usize;
    let deadline = started + Duration::from_secs(300);
    while seen < n {
        if Instant::now() > deadline {
            bail!("read {seen} of {n} messages in 300 s");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                seen += usize::from(m.payload().is_some());
            }
            Some(Err(e)) => bail!("fetch: {e}"),
            None => {}
        }
    }
    let first = first.context("no message read")?;
    Ok((
        n as f64 / from(started, first).elapsed().as_secs_f64().max(1e-6),
        (first - started).as_secs_f64(),
    ))
}

fn config(kafka: &KafkaArgs, partition_bytes: usize) -> ClientConfig {
    let mut c = kafka.client_config();
    c.set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "65536")
        .set("max.partition.fetch.bytes", partition_bytes.to_string())
        .set(
            "fetch.max.bytes",
            (partition_bytes.max(1 << 20) * 2).to_string(),
        );
    c
}

fn assigned(kafka: &KafkaArgs, topic: &str, bytes: usize, n: usize) -> anyhow::Result<f64> {
    let c: BaseConsumer = config(kafka, bytes)
        .set("group.id", format!("{topic}.probe"))
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    // From the assignment on: the first fetch is part of reading.
    Ok(drain(&c, n, |start, _| start)?.0)
}

fn subscribed(
    kafka: &KafkaArgs,
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut cfg = config(kafka, 1 << 20);
    cfg.set("group.id", group);
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    let c: BaseConsumer = cfg.create()?;
    c.subscribe(&[topic])?;
    // From the first message on: the group join is the separate figure.
    drain(&c, n, |_, first| first)
}

/// The same read through rdkafka's `StreamConsumer` (what the consumer
/// service uses), awaited message by message.
async fn streamed(
    kafka: &KafkaArgs,
    topic: &str,
    group: &str,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let c: StreamConsumer = config(kafka, 4 << 20).set("group.id", group).create()?;
    c.subscribe(&[topic])?;
    let started = Instant::now();
    let mut first = None;
    let mut seen = 0usize;
    while seen < n {
        let m = tokio::time::timeout(Duration::from_secs(300), c.recv())
            .await
            .context("no message in 300 s")??;
        first.get_or_insert_with(Instant::now);
        seen += usize::from(m.payload().is_some());
    }
    let first = first.context("no message read")?;
    Ok((
        n as f64 / first.elapsed().as_secs_f64().max(1e-6),
        (first - started).as_secs_f64(),
    ))
}

fn rate(s: &Spread) -> String {
    format!(
        "{:.0}k ({:.0}k–{:.0}k)",
        s.median / 1e3,
        s.min / 1e3,
        s.max / 1e3
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (n, runs) = if a.quick {
        (20_000, 1)
    } else {
        (a.events, a.runs)
    };
    let run_id = std::process::id();
    let topic = a
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench.{run_id}.broker"));
    let kafka = KafkaArgs::local(a.kafka.clone(), topic.clone());
    let produced = match a.topic {
        Some(_) => f64::NAN,
        None => fill(&kafka, &topic, n).await?,
    };
    println!("# broker: bare client reads of one pre-filled partition\n");
    println!("{}\n", machine());
    println!(
        "{n} generated events (Avro, ~1.1 KB, keyed by org), lz4, produced at {:.0}k/s; median (min–max) of {runs} passes\n",
        produced / 1e3
    );
    let mut rows = Vec::new();
    for bytes in [1usize << 20, 4 << 20, 16 << 20] {
        let samples = (0..runs)
            .map(|_| assigned(&kafka, &topic, bytes, n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.push(vec![
            format!("assigned, max.partition.fetch.bytes {} MiB", bytes >> 20),
            rate(&Spread::of(&samples)),
            "–".into(),
        ]);
    }
    let cases: [(&str, &[(&str, &str)]); 2] = [
        ("subscribed, defaults", &[]),
        (
            "subscribed, static member (group.instance.id)",
            &[("group.instance.id", "probe-0")],
        ),
    ];
    for (label, extra) in cases {
        let mut eps = Vec::new();
        let mut join = Vec::new();
        for r in 0..runs {
            let (e, j) = subscribed(&kafka, &topic, &format!("{topic}.g{r}.{label}"), extra, n)?;
            eps.push(e);
            join.push(j);
        }
        rows.push(vec![
            label.into(),
            rate(&Spread::of(&eps)),
            format!("{}", Spread::of(&join)),
        ]);
    }
    let mut eps = Vec::new();
    let mut join = Vec::new();
    for r in 0..runs {
        let (e, j) = streamed(&kafka, &topic, &format!("{topic}.s{r}"), n).await?;
        eps.push(e);
        join.push(j);
    }
    rows.push(vec![
        "subscribed, StreamConsumer, 4 MiB".into(),
        rate(&Spread::of(&eps)),
        format!("{}", Spread::of(&join)),
    ]);
    print_table(
        &["read", "messages/s", "subscribe → first message, s"],
        &rows,
    );
    Ok(())
}
