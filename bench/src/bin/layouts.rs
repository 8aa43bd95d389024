//! Storage layouts side by side: the same skewed 30-day event stream loaded
//! into the fleet layout and the org-day layout at 10 to 10,000 orgs, in
//! time order and in consumer-sized batches (as the consumer writes it),
//! then the query API's own SQL timed on each. Also reports what the skip
//! indexes skip and the per-column compression.
//!
//! `layouts --clickhouse URL [--quick]`; prints Markdown tables.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use clickhouse::Client;
use trailhouse_bench::gen::{org_name, Generator, Shape};
use trailhouse_bench::{percentile, print_table};
use trailhouse_common::clickhouse::{migrate_to, ClickHouseArgs};
use trailhouse_consumer::writer::{ClickHouseWriter, RowWriter};
use trailhouse_query_api::cursor::Position;
use trailhouse_query_api::query::{
    build_count, build_page, Cond, Field, Filter, Order, Page, Sql, Start, COLLAPSE,
};
use trailhouse_query_api::store::{fetch_page, ClickHouseStore};
use trailhouse_schemas::layout::{split_by_partition, Layout, PartitionKey, Target, Topology};
use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_schemas::{EventRow, Lineage};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
    /// Small stream, few repeats: keeps the harness working.
    #[arg(long)]
    quick: bool,
    /// Events in the stream (default: 20,000 quick, 1,000,000 full).
    #[arg(long)]
    events: Option<usize>,
    /// Seconds one load may take before it stops (default 60 quick, 600 full).
    #[arg(long)]
    load_budget_secs: Option<u64>,
    /// Org counts to run (default 10,100,1000,10000).
    #[arg(long, value_delimiter = ',')]
    orgs: Option<Vec<usize>>,
}

struct Plan {
    events: usize,
    batch: usize,
    repeats: usize,
    /// A load that takes longer than this stops, and the result says so.
    load_budget: Duration,
}

/// Retention classes spread over orgs (most on the default).
fn class_of(rank: usize) -> u16 {
    match rank % 10 {
        0 => 365,
        1 | 2 => 30,
        _ => 90,
    }
}

fn stream(orgs: usize, events: usize, end: DateTime<Utc>) -> Vec<EventRow> {
    let mut g = Generator::new(Shape {
        seed: 42,
        orgs,
        days: 30,
        end,
    });
    let mut rows: Vec<EventRow> = (0..events)
        .map(|i| {
            let mut e = g.event(None);
            let rank = e.org_id.trim_start_matches("org_").parse().unwrap_or(0);
            e.retention_days = Some(class_of(rank));
            EventRow::from_event(
                &e,
                Lineage {
                    partition: 0,
                    offset: i as i64,
                },
            )
        })
        .collect();
    // The consumer sees the stream in arrival order.
    rows.sort_by_key(|r| r.created_at);
    rows
}

struct Load {
    inserts: usize,
    parts_created: usize,
    failed: usize,
    rows: usize,
    secs: f64,
    finished: bool,
}

async fn load(ch: &ClickHouseArgs, layout: Layout, rows: &[EventRow], plan: &Plan) -> Load {
    let writer =
        ClickHouseWriter::new(ch.client(), Duration::from_secs(300)).with_layout(layout, 100);
    let started = Instant::now();
    let mut out = Load {
        inserts: 0,
        parts_created: 0,
        failed: 0,
        rows: 0,
        secs: 0.0,
        finished: true,
    };
    for (i, batch) in rows.chunks(plan.batch).enumerate() {
        if started.elapsed() > plan.load_budget {
            out.finished = false;
            break;
        }
        let keys: Vec<PartitionKey> = batch.iter().map(|r| layout.partition_of(r)).collect();
        let groups =
            split_by_partition(&keys, 100).unwrap_or_else(|| vec![(0..keys.len()).collect()]);
        for g in groups {
            out.inserts += 1;
            let distinct: std::collections::BTreeSet<&PartitionKey> =
                g.iter().map(|&i| &keys[i]).collect();
            out.parts_created += distinct.len();
        }
        let encoded: EncodedRows = batch.iter().collect();
        match writer.insert(&encoded, &format!("bench:0:{i}")).await {
            Ok(()) => out.rows += batch.len(),
            Err(e) => {
                out.failed += 1;
                eprintln!("insert failed: {e}");
            }
        }
    }
    out.secs = started.elapsed().as_secs_f64();
    out
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct PartCount {
    parts: u64,
    partitions: u64,
}

async fn time_sql(client: &Client, sql: &Sql, repeats: usize) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let mut q = client.query(&sql.text);
        for (n, v) in &sql.params {
            q = q.param(n, v.as_str());
        }
        let t = Instant::now();
        let rows: Vec<EventRow> = q.fetch_all().await?;
        std::hint::black_box(rows);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((percentile(&ms, 50.0), percentile(&ms, 99.0)))
}

fn page(start: Start) -> Page {
    Page {
        order: Order::Desc,
        start,
        limit: 100,
    }
}

/// The queries of the issue, for the org of rank 0.
async fn queries(
    client: &Client,
    rows: &[EventRow],
    end: DateTime<Utc>,
) -> Vec<(&'static str, Sql)> {
    let org = org_name(0);
    let f = Filter::new(&org);
    let mut org_rows: Vec<&EventRow> = rows.iter().filter(|r| r.org_id == org).collect();
    org_rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    let deep = org_rows
        .get(100 * 100)
        .or(org_rows.last())
        .map(|r| Position {
            created_at: r.created_at,
            id: r.id,
        });
    let _ = client;
    let mut out = vec![
        ("newest page", build_page(&f, &page(Start::First))),
        (
            "7 days + action",
            build_page(
                &f.clone()
                    .and(Cond::From(end - chrono::Duration::days(14)))
                    .and(Cond::Until(end - chrono::Duration::days(7)))
                    .and(Cond::AnyOf(
                        Field::ActionType,
                        vec!["project.update".into()],
                    )),
                &page(Start::First),
            ),
        ),
        (
            "path substring",
            build_page(
                &f.clone().and(Cond::PathContains("Exports/".into())),
                &page(Start::First),
            ),
        ),
    ];
    if let Some(p) = deep {
        out.push(("cursor page 100", build_page(&f, &page(Start::After(p)))));
    }
    out
}

/// Granules after the primary key and after the skip indexes for a filter.
async fn skipped(client: &Client, sql: &Sql) -> anyhow::Result<String> {
    let mut q = client.query(&format!("EXPLAIN indexes = 1 {}", sql.text));
    for (n, v) in &sql.params {
        q = q.param(n, v.as_str());
    }
    let lines: Vec<String> = q.fetch_all().await?;
    let granules: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("Granules: ").nth(1))
        .collect();
    let skip = lines.iter().any(|l| l.trim_end().ends_with(" Skip"));
    Ok(match (granules.get(3), granules.last(), skip) {
        (Some(key), Some(last), true) => format!("{key} → {last}"),
        (Some(key), _, false) => format!("{key} (no skip index)"),
        _ => {
            eprintln!("unexpected EXPLAIN output:\n{}", lines.join("\n"));
            "?".into()
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plan = if cli.quick {
        Plan {
            events: 20_000,
            batch: 5_000,
            repeats: 5,
            load_budget: Duration::from_secs(60),
        }
    } else {
        Plan {
            events: 1_000_000,
            batch: 50_000,
            repeats: 30,
            load_budget: Duration::from_secs(600),
        }
    };
    let plan = Plan {
        events: cli.events.unwrap_or(plan.events),
        load_budget: cli
            .load_budget_secs
            .map_or(plan.load_budget, Duration::from_secs),
        ..plan
    };
    let org_counts = cli
        .orgs
        .clone()
        .unwrap_or_else(|| vec![10, 100, 1000, 10_000]);
    let end = DateTime::from_timestamp(Utc::now().timestamp(), 0).context("now")?;
    println!("## Storage layouts\n");
    println!(
        "{} events over 30 days, skewed orgs, consumer batches of {} rows in arrival order, \
         at most 100 partitions per insert; queries on the largest org, {} repeats.\n",
        plan.events, plan.batch, plan.repeats
    );
    let mut load_rows = Vec::new();
    let mut query_rows = Vec::new();
    let mut index_rows = Vec::new();
    let mut dedup_rows = Vec::new();
    for &orgs in &org_counts {
        let rows = stream(orgs, plan.events, end);
        for layout in [Layout::Fleet, Layout::OrgDay] {
            let db = format!("bench_layout_{}_{orgs}", layout.as_str().replace('-', "_"));
            let ch = ClickHouseArgs::local(cli.clickhouse.clone(), db.clone());
            ch.server_client()
                .query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute()
                .await?;
            let target = Target {
                layout,
                topology: Topology::SingleNode,
            };
            migrate_to(&ch, &target).await?;
            let l = load(&ch, layout, &rows, &plan).await;
            let client = ch.client();
            let pc: PartCount = client
                .query(
                    "SELECT count() AS parts, uniqExact(partition_id) AS partitions FROM system.parts \
                     WHERE database = currentDatabase() AND table = 'events' AND active",
                )
                .fetch_one()
                .await?;
            let batches = l.rows.div_ceil(plan.batch).max(1);
            load_rows.push(vec![
                orgs.to_string(),
                layout.to_string(),
                format!("{:.1}", l.inserts as f64 / batches as f64),
                format!("{:.1}", l.parts_created as f64 / l.inserts.max(1) as f64),
                pc.parts.to_string(),
                pc.partitions.to_string(),
                format!("{:.0}", l.rows as f64 / l.secs),
                l.failed.to_string(),
                if l.finished {
                    "yes".into()
                } else {
                    format!("no: {} of {} rows in {:.0} s", l.rows, rows.len(), l.secs)
                },
            ]);
            for (name, sql) in queries(&client, &rows, end).await {
                let (p50, p99) = time_sql(&client, &sql, plan.repeats).await?;
                query_rows.push(vec![
                    orgs.to_string(),
                    layout.to_string(),
                    name.to_string(),
                    format!("{p50:.1}"),
                    format!("{p99:.1}"),
                ]);
            }
            if layout == Layout::Fleet && orgs == 1000
                || cli.quick && layout == Layout::Fleet && orgs == org_counts[0]
            {
                index_rows.extend(index_report(&client, &rows).await?);
                compression_report(&client).await?;
                // Last: it adds copies to the table.
                dedup_rows = dedup_report(&client, plan.repeats).await?;
            }
            ch.server_client()
                .query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute()
                .await?;
        }
    }
    println!("### Loading\n");
    print_table(
        &[
            "orgs",
            "layout",
            "inserts per batch",
            "parts per insert",
            "active parts",
            "partitions",
            "rows/s",
            "failed inserts",
            "finished",
        ],
        &load_rows,
    );
    println!("\n### Queries (ms)\n");
    print_table(&["orgs", "layout", "query", "p50", "p99"], &query_rows);
    println!(
        "\n### Skip indexes (largest org; granules after the primary key → after the skip index)\n"
    );
    print_table(
        &["filter", "granules", "org granules holding the value"],
        &index_rows,
    );
    println!(
        "\n### One row per event (fleet layout, largest org; ms p50 / p99)\n\n\
         A retried publish stores copies of an event; the query API shows each event once. \
         Keyset pages skip copies as they read them (nothing extra without copies); offset \
         pages and counts collapse in SQL (`LIMIT 1 BY created_at, id`). \"plain\" is the \
         same query without the collapse (wrong once copies exist).\n"
    );
    print_table(
        &["query", "stored copies", "plain", "one per event", "ratio"],
        &dedup_rows,
    );
    Ok(())
}

async fn time_count(client: &Client, sql: &Sql, repeats: usize) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let mut q = client.query(&sql.text);
        for (n, v) in &sql.params {
            q = q.param(n, v.as_str());
        }
        let t = Instant::now();
        std::hint::black_box(q.fetch_one::<u64>().await?);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((percentile(&ms, 50.0), percentile(&ms, 99.0)))
}

async fn time_keyset(client: &Client, f: &Filter, repeats: usize) -> anyhow::Result<(f64, f64)> {
    let store = ClickHouseStore::new(client.clone());
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        std::hint::black_box(fetch_page(&store, f, &page(Start::First)).await?);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((percentile(&ms, 50.0), percentile(&ms, 99.0)))
}

/// The cost of showing each event once, without copies and with 1 % of the
/// events stored twice.
async fn dedup_report(client: &Client, repeats: usize) -> anyhow::Result<Vec<Vec<String>>> {
    let f = Filter::new(org_name(0));
    let plain = |sql: Sql| Sql {
        text: sql.text.replace(COLLAPSE, ""),
        params: sql.params,
    };
    let offset = build_page(&f, &page(Start::Offset(5_000)));
    let count = build_count(&f);
    let plain_count = Sql {
        text: "SELECT count() FROM events WHERE org_id = {org_0:String}".to_string(),
        params: count.params.clone(),
    };
    let ms = |(p50, p99): (f64, f64)| format!("{p50:.1} / {p99:.1}");
    let mut out = Vec::new();
    let mut keyset_base = None;
    for copies in ["none", "1 %"] {
        if copies != "none" {
            client
                .query("INSERT INTO events SELECT * FROM events WHERE cityHash64(id) % 100 = 0")
                .execute()
                .await?;
        }
        let a = time_sql(client, &plain(offset.clone()), repeats).await?;
        let b = time_sql(client, &offset, repeats).await?;
        out.push(vec![
            "offset page 50".into(),
            copies.into(),
            ms(a),
            ms(b),
            format!("{:.2}", b.0 / a.0),
        ]);
        let a = time_count(client, &plain_count, repeats).await?;
        let b = time_count(client, &count, repeats).await?;
        out.push(vec![
            "count".into(),
            copies.into(),
            ms(a),
            ms(b),
            format!("{:.2}", b.0 / a.0),
        ]);
        // Keyset pages have no plain form: the ratio is to the same page
        // read without copies.
        let b = time_keyset(client, &f, repeats).await?;
        let base = *keyset_base.get_or_insert(b.0);
        out.push(vec![
            "newest keyset page (query API's read)".into(),
            copies.into(),
            "—".into(),
            ms(b),
            format!("{:.2}", b.0 / base),
        ]);
    }
    Ok(out)
}

/// For every filter of the query API: what its index skips, or, for
/// columns without one, the share of the org's granules that hold the value
/// (near 100 % means no index could skip anything).
async fn index_report(client: &Client, rows: &[EventRow]) -> anyhow::Result<Vec<Vec<String>>> {
    let org = org_name(0);
    let sample = rows
        .iter()
        .rev()
        .find(|r| r.org_id == org)
        .context("org has rows")?;
    let f = Filter::new(&org);
    // The path's tail holds its ids: a selective search, as users make.
    let tail: Vec<char> = sample.request_path.chars().collect();
    let path_piece: String = tail[tail.len().saturating_sub(9)..].iter().collect();
    type Case<'a> = (String, Filter, Option<(&'a str, String)>);
    let prefix: String = sample.request_path.chars().take(16).collect();
    let status = sample.request_status.unwrap_or(200);
    let mut cases: Vec<Case> = vec![
        (
            format!("path contains {path_piece:?}"),
            f.clone().and(Cond::PathContains(path_piece.clone())),
            None,
        ),
        (
            format!("path starts with {prefix:?}"),
            f.clone().and(Cond::PathPrefix(prefix.clone())),
            None,
        ),
        (
            format!("organisation-log search {path_piece:?} (path, actor or workspace)"),
            f.clone().and(Cond::Search(path_piece.clone())),
            None,
        ),
        (
            format!("request_status = {status}"),
            f.clone().and(Cond::StatusIn(vec![status])),
            Some(("request_status", status.to_string())),
        ),
    ];
    for field in Field::ALL {
        let v = field.of(sample).to_string();
        if v.is_empty() {
            continue;
        }
        cases.push((
            format!("{} = {v:?}", field.column()),
            f.clone().and(Cond::AnyOf(field, vec![v.clone()])),
            Some((field.column(), v)),
        ));
    }
    let mut out = Vec::new();
    for (name, filter, column) in cases {
        let granules = skipped(client, &build_page(&filter, &page(Start::First))).await?;
        let share = match column {
            Some((col, v)) => {
                let (with, all): (u64, u64) = client
                    .query(&format!(
                        "SELECT uniqExactIf((_part, intDiv(_part_offset, 8192)), {col} = ?), \
                         uniqExact((_part, intDiv(_part_offset, 8192))) FROM events WHERE org_id = ?"
                    ))
                    .bind(&v)
                    .bind(&org)
                    .fetch_one()
                    .await?;
                format!("{:.0} %", 100.0 * with as f64 / all.max(1) as f64)
            }
            None => String::new(),
        };
        out.push(vec![name, granules, share]);
    }
    Ok(out)
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct ColumnSize {
    name: String,
    compressed: u64,
    uncompressed: u64,
}

async fn compression_report(client: &Client) -> anyhow::Result<()> {
    client
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await?;
    let cols: Vec<ColumnSize> = client
        .query(
            "SELECT column AS name, sum(column_data_compressed_bytes) AS compressed, \
             sum(column_data_uncompressed_bytes) AS uncompressed FROM system.parts_columns \
             WHERE database = currentDatabase() AND table = 'events' AND active \
             GROUP BY name ORDER BY compressed DESC",
        )
        .fetch_all()
        .await?;
    // Whole-table sizes come from the parts (known for compact parts too).
    let (c, u): (u64, u64) = client
        .query(
            "SELECT sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.parts \
             WHERE database = currentDatabase() AND table = 'events' AND active",
        )
        .fetch_one()
        .await?;
    println!("### Compression (1,000 orgs or the first run, after merges)\n");
    let mut rows: Vec<Vec<String>> = cols
        .iter()
        .filter(|x| x.compressed > 0)
        .take(12)
        .map(|x| {
            vec![
                x.name.clone(),
                format!("{:.1}", x.uncompressed as f64 / 1048576.0),
                format!("{:.1}", x.compressed as f64 / 1048576.0),
                format!("{:.1}", x.uncompressed as f64 / x.compressed.max(1) as f64),
            ]
        })
        .collect();
    rows.push(vec![
        "**all columns**".into(),
        format!("{:.1}", u as f64 / 1048576.0),
        format!("{:.1}", c as f64 / 1048576.0),
        format!("{:.1}", u as f64 / c.max(1) as f64),
    ]);
    print_table(&["column", "raw MiB", "stored MiB", "ratio"], &rows);
    println!();
    Ok(())
}
