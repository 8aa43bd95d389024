//! Section 2: the consumer against a raw RowBinary insert and a bare fetch, by partition count.

use trailhouse_consumer::kafka::{
    fetch_settings, DEFAULT_FETCH_PARTITION_BYTES, DEFAULT_PREFETCH_KBYTES,
};

use trailhouse_consumer::{BatchLimits, ClickHouseWriter, RowWriter};
use trailhouse_schemas::rowbinary::EncodedRows;

use super::*;

impl Bench {
    /// Fills a topic with `n` events from the generator.
    pub(super) async fn prefill(
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

    pub(super) async fn count(ch: &ClickHouseArgs) -> u64 {
        ch.client()
            .query("SELECT count() FROM events")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0)
    }

    /// Waits until `events` holds `n` rows (at most 10 minutes after
    /// `started`); returns when the first row appeared and when the last did.
    pub(super) async fn wait_rows(
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
            // Every poll costs the server a request: slower until the first
            // row (the group join), then fine enough to time the rate.
            let pause = if first.is_some() { 50 } else { 250 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// Events/s of the consumer(s) from first row to last, seconds to the
    /// first row, peak RSS, and CPU µs per event of the consumers (all of
    /// them, start-up included), the broker and ClickHouse.
    pub(super) async fn consume_once(
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
    pub(super) async fn raw_fetch(
        &self,
        partitions: usize,
        n: usize,
        tag: &str,
    ) -> anyhow::Result<f64> {
        let topic = format!("bench.{}.fetch.{tag}", self.run_id);
        self.prefill(&topic, partitions as i32, n, partitions as u64)
            .await?;
        let mut readers = Vec::new();
        for _ in 0..partitions {
            let mut config = self.kafka(&topic).client_config();
            config
                .set("group.id", format!("{topic}.group"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest");
            for (key, value) in
                fetch_settings(DEFAULT_FETCH_PARTITION_BYTES, DEFAULT_PREFETCH_KBYTES)
            {
                config.set(key, value);
            }
            let c: StreamConsumer = config.create()?;
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

    /// The ceiling: the same rows, already in the consumer's batches and
    /// encoded, inserted by the consumer's own writer (RowBinary, two
    /// inserts in flight): everything the consumer adds is what it costs
    /// over this.
    /// Events/s, and ClickHouse CPU µs per event.
    pub(super) async fn raw_insert(&self, n: usize, tag: &str) -> anyhow::Result<(f64, f64)> {
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
        // Batches as the consumer seals them (its default byte limit), encoded
        // before the clock starts: what is timed is the consumer's own
        // writer, two inserts in flight, as in the consumer.
        let limits = BatchLimits::default();
        let mut batches = vec![EncodedRows::new()];
        for r in &rows {
            let last = batches.last_mut().context("a batch")?;
            last.push(r);
            if last.byte_len() >= limits.max_bytes || last.len() >= limits.max_rows {
                batches.push(EncodedRows::new());
            }
        }
        batches.retain(|b| !b.is_empty());
        drop(rows);
        let writer = Arc::new(ClickHouseWriter::new(ch.client(), Duration::from_secs(300)));
        let ch0 = cpu_of(self.args.clickhouse_pid);
        let started = Instant::now();
        let mut pending = FuturesUnordered::new();
        for (k, b) in batches.iter().enumerate() {
            let (writer, token) = (writer.clone(), format!("{db}/{k}"));
            pending.push(async move { writer.insert(b, &token).await });
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
    pub(super) async fn kafka_engine_once(&self, n: usize, tag: &str) -> anyhow::Result<f64> {
        let db = format!("bench_{}_{}", self.run_id, tag.replace('.', "_"));
        let result = self.kafka_engine_run(n, tag, &db).await;
        // Also when the engine refused the Kafka table: a server may keep a
        // half-created one, and fail to start with it later.
        self.drop_database(&db).await;
        result
    }

    /// Drops a database this run created (best effort: a leftover only costs disk).
    pub(super) async fn drop_database(&self, db: &str) {
        let sql = format!("DROP DATABASE IF EXISTS {db} SYNC");
        if let Err(e) = self.ch("default").client().query(&sql).execute().await {
            eprintln!("dropping {db}: {e}");
        }
    }

    pub(super) async fn kafka_engine_run(
        &self,
        n: usize,
        tag: &str,
        db: &str,
    ) -> anyhow::Result<f64> {
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
    pub(super) async fn consumer(&mut self) -> anyhow::Result<()> {
        let _pinned = if self.args.pin_clickhouse {
            Some(Pinned::split(
                self.args.clickhouse_pid,
                self.args.broker_pid,
            )?)
        } else {
            None
        };
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
                 the same run; ClickHouse here is the local front and its engine. {}",
                2 * n,
                if self.args.pin_clickhouse {
                    "CPUs: ClickHouse alone on CPU 0; the consumers, the raw inserter and the \
                     broker on the others, as on separate hosts."
                } else {
                    "CPUs: all processes share all CPUs, so the consumers' own work competes \
                     with ClickHouse (the raw inserter's is lighter)."
                }
            ),
        );
        self.report.insert(
            "consumer".into(),
            json!({"events": n, "raw_insert_events_per_sec": spread_json(&raw),
                   "kafka_engine_events_per_sec": engine.as_ref().map(spread_json),
                   "kafka_engine_error": engine_error, "scaling": scaling,
                   "raw_insert_clickhouse_cpu_us_per_event": raw_ch,
                   "peak_rss_mib_at_double_volume": rss_double,
                   "clickhouse_pinned": self.args.pin_clickhouse}),
        );
        Ok(())
    }
}

/// ClickHouse on CPU 0, this process (and so the consumers it starts), and
/// the broker on the others, as they would be on separate hosts: the
/// consumer's own work then competes with the raw inserter's, not with the
/// server. Every process gets all CPUs back when dropped.
struct Pinned {
    pids: Vec<u32>,
    all: String,
}

impl Pinned {
    fn split(clickhouse: Option<u32>, broker: Option<u32>) -> anyhow::Result<Pinned> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            bail!("--pin-clickhouse needs at least 2 CPUs, this machine has {cpus}");
        }
        let clickhouse = clickhouse.context("--pin-clickhouse needs --clickhouse-pid")?;
        let all = format!("0-{}", cpus - 1);
        let rest = format!("1-{}", cpus - 1);
        let mut pinned = Pinned {
            pids: Vec::new(),
            all,
        };
        pin(clickhouse, "0")?;
        pinned.pids.push(clickhouse);
        for pid in broker.into_iter().chain([std::process::id()]) {
            pin(pid, &rest)?;
            pinned.pids.push(pid);
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in &self.pids {
            if let Err(e) = pin(*pid, &self.all) {
                eprintln!("could not unpin process {pid}: {e:#}");
            }
        }
    }
}

/// Sets the CPU affinity of every thread of `pid` (util-linux `taskset`).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!(
            "taskset -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
