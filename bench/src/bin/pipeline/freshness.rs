//! Section 3: from ingest's 202 to visible through the query API, at steady rates.

use super::*;

impl Bench {
    /// 3: from ingest's 202 to visible through the query API, at a steady rate.
    /// 3: freshness at each configured rate.
    pub(super) async fn freshness(&mut self) -> anyhow::Result<()> {
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

    pub(super) async fn freshness_at(&self, rate: usize) -> anyhow::Result<(Vec<String>, Value)> {
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
}
