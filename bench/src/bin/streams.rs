//! Streams: events/s delivered by one streamer process with 1, 100 and
//! 1,000 streams (one per org, events spread over those orgs), side by
//! side with the consumer's own rate on the same backlog in the same run,
//! and the delivery latency from ingest's 202 to the webhook's receipt.
//!
//! Each case gets its own topic and database; the consumer and the
//! streamer read the same pre-produced backlog at once. The webhook
//! receiver runs in this process (NDJSON, not gzipped: the receiver's own
//! gunzip would share the CPUs with what is measured).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::routing::post;
use chrono::Utc;
use clap::Parser;
use serde_json::{json, Value};
use trailhouse_bench::produce_all;
use trailhouse_bench::service::{free_port, Binaries, Service};
use trailhouse_bench::{percentile, print_table};
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_common::kafka::{ensure_topic, KafkaArgs};
use trailhouse_schemas::event::{Action, Actor};
use trailhouse_schemas::AuditEvent;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    bin_dir: PathBuf,
    #[arg(long)]
    kafka: String,
    #[arg(long)]
    clickhouse: String,
    /// Stream counts, comma separated.
    #[arg(long, default_value = "1,100,1000")]
    streams: String,
    /// Events in each case's backlog.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events posted through ingest for the latency.
    #[arg(long, default_value_t = 1000)]
    latency_events: usize,
    /// A few thousand events and fewer streams: keeps the harness working.
    #[arg(long)]
    quick: bool,
    /// Where the logs go.
    #[arg(long, default_value = "bench/results/tmp/streams")]
    logs: PathBuf,
}

const SECRET: &str = "bench-streams-jwt-secret-0123456789";

/// What the webhook receiver saw.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    /// While set, the ids of received events are parsed and timed.
    timing: AtomicBool,
    received: Mutex<HashMap<String, Instant>>,
}

async fn receiver(seen: Arc<Seen>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let n = body.iter().filter(|b| **b == b'\n').count() as u64;
                seen.events.fetch_add(n, Ordering::Relaxed);
                if seen.timing.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let mut got = seen.received.lock().unwrap_or_else(|e| e.into_inner());
                    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        if let Ok(v) = serde_json::from_slice::<Value>(line) {
                            if let Some(id) = v["id"].as_str() {
                                got.entry(id.to_string()).or_insert(now);
                            }
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(url)
}

fn event(org: &str, i: usize) -> AuditEvent {
    let now = Utc::now();
    AuditEvent {
        id: Uuid::now_v7(),
        org_id: org.to_string(),
        retention_days: None,
        environment_id: Some("prod".into()),
        workspace_id: None,
        workspace_name: None,
        created_at: now,
        received_at: now,
        actor: Actor {
            kind: Some("user".into()),
            id: Some(format!("u{}", i % 97)),
            email: Some(format!("u{}@example.com", i % 97)),
            name: None,
        },
        auth: Default::default(),
        source: Some("bench".into()),
        action: Action {
            kind: "record.update".into(),
            description: None,
        },
        resource: Default::default(),
        request: Default::default(),
        metadata: Default::default(),
    }
}

fn org(i: usize) -> String {
    format!("org_{i:04}")
}

struct Case {
    streams: usize,
    events: usize,
    consumer_eps: f64,
    streamer_eps: f64,
    p50_ms: f64,
    p99_ms: f64,
    streamer_mib: f64,
    streamer_cpu_s: f64,
}

async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn stored(ch: &ClickHouseArgs) -> u64 {
    ch.client()
        .query("SELECT count() FROM events")
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

async fn run_case(
    args: &Args,
    bins: &Binaries,
    streams: usize,
    events: usize,
) -> anyhow::Result<Case> {
    let nanos = Utc::now().timestamp_subsec_nanos();
    let name = format!("bench_streams_{streams}_{}_{nanos}", std::process::id());
    let kafka = KafkaArgs::local(args.kafka.clone(), format!("{name}.events"));
    ensure_topic(&kafka, &kafka.topic, 4, 1).await?;
    let ch = ClickHouseArgs::local(args.clickhouse.clone(), name.clone());
    migrate(&ch).await?;
    std::fs::create_dir_all(&args.logs)?;
    let log = |s: &str| args.logs.join(format!("{name}.{s}.log"));
    let common: Vec<(&str, String)> = vec![
        ("TRAILHOUSE_KAFKA_BROKERS", kafka.brokers.clone()),
        ("TRAILHOUSE_KAFKA_TOPIC", kafka.topic.clone()),
        ("TRAILHOUSE_CLICKHOUSE_URL", ch.url.clone()),
        ("TRAILHOUSE_CLICKHOUSE_DATABASE", ch.database.clone()),
        ("TRAILHOUSE_CLICKHOUSE_COMPRESSION", "none".into()),
    ];
    let consumer_port = free_port()?;
    let mut env = common.clone();
    env.push(("TRAILHOUSE_CONSUMER_GROUP", format!("{name}.consumer")));
    env.push((
        "TRAILHOUSE_CONSUMER_LISTEN",
        format!("127.0.0.1:{consumer_port}"),
    ));
    let consumer = Service::start(
        "consumer",
        &bins.path("trailhouse-consumer"),
        &env,
        consumer_port,
        &log("consumer"),
        Duration::from_secs(60),
    )
    .await?;
    let port = free_port()?;
    let mut env = common.clone();
    env.extend([
        ("TRAILHOUSE_STREAMER_LISTEN", format!("127.0.0.1:{port}")),
        ("TRAILHOUSE_STREAMER_GROUP", format!("{name}.streamer")),
        (
            "TRAILHOUSE_STREAMER_CONSUMER_GROUP",
            format!("{name}.consumer"),
        ),
        ("TRAILHOUSE_JWT_HS256_SECRET", SECRET.into()),
        ("TRAILHOUSE_STREAMER_ALLOW_HTTP", "true".into()),
        ("TRAILHOUSE_STREAMER_ALLOW_PRIVATE", "true".into()),
    ]);
    let streamer = Service::start(
        "streamer",
        &bins.path("trailhouse-streamer"),
        &env,
        port,
        &log("streamer"),
        Duration::from_secs(60),
    )
    .await?;
    let seen = Arc::new(Seen::default());
    let base = receiver(seen.clone()).await?;
    let http = reqwest::Client::new();
    // One stream per org, created through the API, eight at a time.
    let now = Utc::now().timestamp();
    let creates = (0..streams).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        let token = trailhouse_query_api::auth::mint_hs256(
            SECRET.as_bytes(),
            &trailhouse_query_api::auth::Claims {
                sub: "bench".into(),
                org_id: org(i),
                environment_id: None,
                workspace_id: None,
                roles: vec!["owner".into()],
                permissions: vec![],
                exp: now + 3600,
                iat: now,
            },
        );
        async move {
            let token = token.map_err(|e| anyhow::anyhow!("{e}"))?;
            let r = http
                .post(format!("http://127.0.0.1:{port}/v1/streams"))
                .bearer_auth(token)
                .json(&json!({"name": "siem", "destination": {"type": "webhook", "url": format!("{base}/s/{i}"), "gzip": false}}))
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 201, "create: {}", r.text().await.unwrap_or_default());
            anyhow::Ok(())
        }
    });
    let started = Instant::now();
    futures::stream::iter(creates)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let created_in = started.elapsed();
    // Every stream known and live, and the streamer a member of its group
    // with the topic's four partitions, before the backlog is produced.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let known = metric(&http, port, "trailhouse_streamer_streams")
            .await
            .unwrap_or(0.0);
        let catching = metric(&http, port, "trailhouse_streamer_streams_catching_up")
            .await
            .unwrap_or(1.0);
        let assigned = metric(&http, port, "trailhouse_streamer_assigned_partitions")
            .await
            .unwrap_or(0.0);
        if known as usize >= streams && catching == 0.0 && assigned >= 4.0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "streams not live: {known} known, {catching} catching up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "  {streams} streams created in {:.1} s",
        created_in.as_secs_f64()
    );
    let payloads: Vec<(String, Vec<u8>)> = (0..events)
        .map(|i| {
            let o = org(i % streams);
            let bytes = trailhouse_schemas::encode(&event(&o, i)).unwrap_or_default();
            (o, bytes)
        })
        .collect();
    let cpu0 = streamer.cpu_secs();
    let t0 = Instant::now();
    produce_all(&kafka, &kafka.topic, &payloads, None).await?;
    let (mut consumer_done, mut streamer_done) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(900);
    while consumer_done.is_none() || streamer_done.is_none() {
        if consumer_done.is_none() && stored(&ch).await >= events as u64 {
            consumer_done = Some(t0.elapsed());
        }
        if streamer_done.is_none() && seen.events.load(Ordering::Relaxed) >= events as u64 {
            streamer_done = Some(t0.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "backlog not drained in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let streamer_cpu_s = streamer.cpu_secs() - cpu0;
    // Latency: events posted through ingest, a few at a time, timed from
    // each 202 to the receipt of the event.
    let key = format!("thk_bench_{}", Uuid::new_v4().simple());
    let hash = bins.output("trailhouse-ingest", &["hash-key", &key], &[])?;
    let ingest_port = free_port()?;
    let mut env = common.clone();
    env.push((
        "TRAILHOUSE_INGEST_LISTEN",
        format!("127.0.0.1:{ingest_port}"),
    ));
    env.push((
        "TRAILHOUSE_INGEST_SERVICE_KEYS",
        format!("bench:{}", hash.trim()),
    ));
    let ingest = Service::start(
        "ingest",
        &bins.path("trailhouse-ingest"),
        &env,
        ingest_port,
        &log("ingest"),
        Duration::from_secs(60),
    )
    .await?;
    seen.timing.store(true, Ordering::Relaxed);
    let mut accepted: HashMap<String, Instant> = HashMap::new();
    let per_post = 5;
    for chunk in 0..args.latency_events.div_ceil(per_post) {
        let batch: Vec<Value> = (0..per_post)
            .map(|j| {
                let id = Uuid::now_v7().to_string();
                json!({"id": id, "org_id": org((chunk * per_post + j) % streams), "actor": {"type": "user", "id": "u1"}, "action": {"type": "user.login"}})
            })
            .collect();
        let r = http
            .post(format!("http://127.0.0.1:{ingest_port}/v1/events"))
            .bearer_auth(&key)
            .json(&batch)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "ingest: {}", r.status());
        let at = Instant::now();
        for e in &batch {
            accepted.insert(e["id"].as_str().unwrap_or_default().to_string(), at);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: HashSet<String> = accepted.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let latencies: Vec<f64> = loop {
        let got = seen
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if ids.iter().all(|i| got.contains_key(i)) {
            break ids
                .iter()
                .filter_map(|i| {
                    Some(
                        got.get(i)?
                            .saturating_duration_since(*accepted.get(i)?)
                            .as_secs_f64()
                            * 1000.0,
                    )
                })
                .collect();
        }
        anyhow::ensure!(Instant::now() < deadline, "latency events not all received");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let streamer_mib = streamer.peak_mib();
    drop(ingest);
    drop(streamer);
    drop(consumer);
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    Ok(Case {
        streams,
        events,
        consumer_eps: events as f64 / secs(consumer_done),
        streamer_eps: events as f64 / secs(streamer_done),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        streamer_mib,
        streamer_cpu_s,
    })
}

use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = Binaries(args.bin_dir.clone());
    let counts: Vec<usize> = if args.quick {
        vec![1, 10]
    } else {
        args.streams
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .with_context(|| format!("--streams: {s:?} is not a count"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let events = if args.quick { 3000 } else { args.events };
    println!("## Streams: delivery rate and latency\n");
    println!("{}\n", trailhouse_bench::machine());
    let mut rows = Vec::new();
    for s in counts {
        eprintln!("streams: {s} streams, {events} events");
        let c = run_case(&args, &bins, s, events).await?;
        rows.push(vec![
            c.streams.to_string(),
            c.events.to_string(),
            format!("{:.0}", c.consumer_eps),
            format!("{:.0}", c.streamer_eps),
            format!("{:.2}", c.streamer_eps / c.consumer_eps),
            format!("{:.0}", c.p50_ms),
            format!("{:.0}", c.p99_ms),
            format!("{:.1}", c.streamer_cpu_s),
            format!("{:.0}", c.streamer_mib),
        ]);
    }
    print_table(
        &[
            "streams",
            "events",
            "consumer events/s",
            "streamer events/s",
            "streamer / consumer",
            "latency p50 ms",
            "latency p99 ms",
            "streamer CPU s",
            "streamer peak MiB",
        ],
        &rows,
    );
    println!(
        "\nOne stream per org, events spread evenly over those orgs; the consumer and the streamer \
         drain the same backlog at once (rates: backlog / time to the last event stored, or \
         received). Latency: events posted through ingest 5 at a time every 20 ms, from the 202 \
         to the webhook's receipt."
    );
    Ok(())
}
