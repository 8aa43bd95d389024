//! Section 4: query latency on a skewed table, keyset against OFFSET.

use super::*;

impl Bench {
    pub(super) async fn query_table(&self) -> anyhow::Result<(String, ClickHouseArgs)> {
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
    pub(super) async fn query(&mut self) -> anyhow::Result<()> {
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
        let base = format!("http://127.0.0.1:{}", api.port);
        let client = reqwest::Client::new();
        // `q` is a path with its query, e.g. `/v1/events?limit=100`.
        let get = |q: String| {
            let (client, token, url) = (client.clone(), token.clone(), format!("{base}{q}"));
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
        let month_ago = (self.end - chrono::Duration::days(30))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let cases: Vec<(&str, String)> = vec![
            (
                "newest page (100) of the largest org",
                "/v1/events?limit=100".into(),
            ),
            (
                "7-day window + action filter",
                format!("/v1/events?from={week_ago}&to={end}&action=project.update&limit=100"),
            ),
            ("actor filter", "/v1/events?actor_id=usr_7&limit=100".into()),
            (
                "path substring search",
                "/v1/events?path_contains=members%2Fm_12&limit=100".into(),
            ),
            // Counts (GET /v1/stats: whole hours from the hourly rollup,
            // the partial hour at the end from the events table); "rows" is
            // the number of events counted.
            (
                "stats: 30 days of daily counts",
                format!("/v1/stats?interval=day&from={month_ago}&to={end}"),
            ),
            (
                "stats: 7 days hourly by action, top 10",
                format!("/v1/stats?interval=hour&group_by=action&from={week_ago}&to={end}"),
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
                hits = match v["total"].as_u64() {
                    Some(counted) => counted as usize,
                    None => v["data"].as_array().map_or(0, Vec::len),
                };
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
        let stats = self.stats_paths(&ch, &org, repeats).await?;
        rows.extend(stats.0);
        out.extend(stats.1.iter().cloned());
        // Walk to the deep page once, then time page 1, the deep page by
        // cursor, and the same depth by OFFSET (SQL a naive API would run).
        let depth = self.plan.deep_page;
        let mut cursor: Option<String> = None;
        let mut last_before: Option<(String, String)> = None;
        for _ in 1..depth {
            let q = match &cursor {
                Some(c) => format!("/v1/events?limit=100&cursor={c}"),
                None => "/v1/events?limit=100".into(),
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
        let (at, id) = last_before.context("deep page")?;
        let pos = Position {
            created_at: DateTime::parse_from_rfc3339(&at)
                .context("deep page position time")?
                .with_timezone(&Utc),
            id: uuid::Uuid::parse_str(&id).context("deep page position id")?,
        };
        let store = ClickHouseStore::new(ch.client());
        let filter = Filter::new(org.clone());
        // The cursor walk and the position read from the table must agree.
        if position_at(&ch, &org, depth).await? != pos {
            bail!("page {depth}: the API's cursor and the table's position disagree");
        }
        let mut first = Vec::new();
        let mut deep = Vec::new();
        for _ in 0..repeats {
            first.push(get("/v1/events?limit=100".into()).await?.0);
            deep.push(
                get(format!("/v1/events?limit=100&cursor={cursor}"))
                    .await?
                    .0,
            );
        }
        for (name, lat) in [
            ("API: keyset page 1".to_string(), &first),
            (format!("API: keyset page {depth}"), &deep),
        ] {
            push_latency(&mut rows, &mut out, name, lat);
        }
        // The query API's own page reads, straight to ClickHouse: keyset
        // from the position (in its time windows) against the same depth by
        // OFFSET, same filter, same columns; at the deep page and ten times
        // deeper (fewer repeats: OFFSET there takes seconds).
        let mut naive = Vec::new();
        for (page, n) in [(depth, repeats), (10 * depth, self.plan.far_repeats)] {
            let pos = position_at(&ch, &org, page).await?;
            let (keyset, offset) = keyset_and_offset(&store, &filter, pos, page, n).await?;
            let ratio = percentile(&offset, 50.0) / percentile(&keyset, 50.0);
            naive.push(json!({"page": page, "repeats": n, "ratio": ratio,
                              "keyset_p50_ms": percentile(&keyset, 50.0), "offset_p50_ms": percentile(&offset, 50.0)}));
            push_latency(
                &mut rows,
                &mut out,
                format!("store: keyset page {page}"),
                &keyset,
            );
            push_latency(
                &mut rows,
                &mut out,
                format!("store: OFFSET page {page}"),
                &offset,
            );
        }
        let flat = percentile(&deep, 50.0) / percentile(&first, 50.0);
        let ratios = naive
            .iter()
            .map(|r| {
                format!(
                    "{:.1}× at page {}",
                    r["ratio"].as_f64().unwrap_or(f64::NAN),
                    r["page"]
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.table(
            &format!(
                "Query latency ({} events, 1,000 orgs, 30 days)",
                self.plan.query_events
            ),
            &["query", "rows", "p50 ms", "p99 ms"],
            &rows,
            &format!(
                "Largest org: {org_events} events. {repeats} repeats each ({} at page {}). Keyset \
                 page {depth} / page 1: {flat:.2}×; OFFSET / keyset: {ratios}. The API rows go \
                 through `GET /v1/events` (authentication, SQL, full rows, JSON); the store rows \
                 run the query API's page reads straight against ClickHouse, keyset from the \
                 page's position and the same page by `OFFSET` (what a naive API runs), and check \
                 that both return the same rows.",
                self.plan.far_repeats,
                10 * depth
            ),
        );
        self.report.insert(
            "query".into(),
            json!({"events": self.plan.query_events, "largest_org_events": org_events, "repeats": repeats,
                   "results": out, "deep_page": depth, "keyset_deep_over_first": flat,
                   "offset_vs_keyset": naive}),
        );
        drop(api);
        Ok(())
    }
}

impl Bench {
    /// The stats reads of `GET /v1/stats` straight against ClickHouse (the
    /// reads of one answer), from the hourly rollup and from the events
    /// table, same filter and range: table rows and results.
    async fn stats_paths(
        &self,
        ch: &ClickHouseArgs,
        org: &str,
        repeats: usize,
    ) -> anyhow::Result<(Vec<Vec<String>>, Vec<Value>)> {
        let store = ClickHouseStore::new(ch.client());
        let end = self.end;
        let cases = [
            ("30 days of daily counts", Interval::Day, vec![], 30),
            (
                "7 days hourly by action, top 10",
                Interval::Hour,
                vec![Dim::Action],
                7,
            ),
        ];
        let (mut rows, mut out) = (Vec::new(), Vec::new());
        for (name, interval, dims, days) in cases {
            let s = Stats {
                interval,
                dims,
                top: 10,
                from: end - chrono::Duration::days(days),
                to: end,
            };
            let f = Filter::new(org)
                .and(Cond::From(s.from))
                .and(Cond::Until(s.to));
            let rollup = rollup_plan(&f, &s);
            anyhow::ensure!(
                rollup != ReadPlan::Events,
                "{name}: the rollup does not serve it"
            );
            let mut lat: HashMap<&str, Vec<f64>> = HashMap::new();
            let mut totals: HashMap<&str, u64> = HashMap::new();
            for _ in 0..repeats {
                for (path, plan) in [("rollup", &rollup), ("events", &ReadPlan::Events)] {
                    let t = Instant::now();
                    let total = stats_count(&store, &f, &s, plan).await?.total;
                    lat.entry(path)
                        .or_default()
                        .push(t.elapsed().as_secs_f64() * 1000.0);
                    totals.insert(path, total);
                }
            }
            // The two paths count the same events.
            anyhow::ensure!(
                totals.get("rollup") == totals.get("events"),
                "{name}: rollup {:?} and events {:?} disagree",
                totals.get("rollup"),
                totals.get("events")
            );
            let total = totals.get("events").copied().unwrap_or(0);
            let p50 = |p: &str| percentile(lat.get(p).map_or(&[][..], Vec::as_slice), 50.0);
            for path in ["rollup", "events"] {
                let l = lat.get(path).map_or(&[][..], Vec::as_slice);
                rows.push(vec![
                    format!("store: stats, {name}, from the {path} table"),
                    total.to_string(),
                    format!("{:.1}", percentile(l, 50.0)),
                    format!("{:.1}", percentile(l, 99.0)),
                ]);
            }
            out.push(json!({"query": format!("stats paths: {name}"), "rows": total,
                            "rollup_p50_ms": p50("rollup"), "rollup_p99_ms": percentile(lat.get("rollup").map_or(&[][..], Vec::as_slice), 99.0),
                            "events_p50_ms": p50("events"), "events_p99_ms": percentile(lat.get("events").map_or(&[][..], Vec::as_slice), 99.0),
                            "events_over_rollup": p50("events") / p50("rollup")}));
        }
        Ok((rows, out))
    }
}

/// The position of the last row before page `page` (1-based, 100 rows a
/// page) of `org`, newest first, read from the table's sort key.
async fn position_at(ch: &ClickHouseArgs, org: &str, page: usize) -> anyhow::Result<Position> {
    let skip = ((page - 1) * 100)
        .checked_sub(1)
        .context("page 1 has no position before it")?;
    let (micros, id) = ch
        .client()
        .query(
            "SELECT toUnixTimestamp64Micro(created_at), toString(id) FROM events WHERE org_id = ? \
             ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?",
        )
        .bind(org)
        .bind(skip as u64)
        .fetch_one::<(i64, String)>()
        .await
        .with_context(|| format!("position before page {page}"))?;
    Ok(Position {
        created_at: DateTime::from_timestamp_micros(micros).context("position time")?,
        id: uuid::Uuid::parse_str(&id).context("position id")?,
    })
}

/// Latencies (ms) of `repeats` reads of page `page` by keyset from `pos`
/// and by OFFSET; fails if the two ever return different rows.
async fn keyset_and_offset(
    store: &ClickHouseStore,
    filter: &Filter,
    pos: Position,
    page: usize,
    repeats: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let keyset = Page {
        order: Order::Desc,
        start: Start::After(pos),
        limit: 100,
    };
    let by_offset = Page {
        start: Start::Offset(((page - 1) * 100) as u64),
        ..keyset
    };
    let (mut k_ms, mut o_ms) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        let o = fetch_page(store, filter, &by_offset).await?;
        o_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let k = fetch_page(store, filter, &keyset).await?;
        k_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if o.rows != k.rows {
            bail!(
                "page {page}: OFFSET and keyset disagree ({} and {} rows)",
                o.rows.len(),
                k.rows.len()
            );
        }
    }
    Ok((k_ms, o_ms))
}

fn push_latency(rows: &mut Vec<Vec<String>>, out: &mut Vec<Value>, name: String, lat: &[f64]) {
    let (p50, p99) = (percentile(lat, 50.0), percentile(lat, 99.0));
    rows.push(vec![
        name.clone(),
        "100".into(),
        format!("{p50:.1}"),
        format!("{p99:.1}"),
    ]);
    out.push(json!({"query": name, "rows": 100, "p50_ms": p50, "p99_ms": p99}));
}
