//! Filling a topic as the ingest service's producer would.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use trailhouse_common::kafka::KafkaArgs;

/// Sends `payloads` (Avro, keyed by org) with the ingest service's producer
/// settings and waits for every acknowledgement; returns events/s.
pub async fn produce_all(
    kafka: &KafkaArgs,
    topic: &str,
    payloads: &[(String, Vec<u8>)],
    seconds: Option<f64>,
) -> anyhow::Result<(usize, f64)> {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "262144")
        .create()?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0usize;
    let mut failed = 0usize;
    'outer: loop {
        for (key, payload) in payloads {
            if seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s) {
                break 'outer;
            }
            let p = producer.clone();
            let (key, payload) = (key.clone(), payload.clone());
            let topic = topic.to_string();
            pending.push(async move {
                p.send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .is_ok()
            });
            sent += 1;
            while pending.len() >= 20_000 {
                if let Some(false) = pending.next().await {
                    failed += 1;
                }
            }
        }
        if seconds.is_none() {
            break;
        }
    }
    while let Some(ok) = pending.next().await {
        failed += usize::from(!ok);
    }
    producer.flush(Duration::from_secs(30))?;
    if failed > 0 {
        bail!("{failed} of {sent} raw sends failed");
    }
    Ok((sent, sent as f64 / started.elapsed().as_secs_f64()))
}
