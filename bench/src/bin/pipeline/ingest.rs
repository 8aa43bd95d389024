//! Section 1 and 5: ingest throughput and latency against a raw producer.

use super::*;

impl Bench {
    /// 1 and 5: ingest throughput and latency by batch size vs a raw
    /// producer, with the ingest process's peak memory.
    pub(super) async fn ingest(&mut self) -> anyhow::Result<()> {
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
}
