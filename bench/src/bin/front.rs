//! The local ClickHouse front against the engine behind it, side by side in
//! one run: the consumer's own insert (its writer, RowBinaryWithNamesAndTypes
//! over HTTP) against the engine inserting the same bytes from a file in a
//! process of its own (`bench/scripts/engine_insert.py`, chdb, `FROM
//! INFILE`); the cost of a trivial query, plain and with the query API's
//! settings; and reads while a long insert runs.
//!
//! `front --clickhouse URL --python PATH [--quick]`; prints a Markdown table.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use trailhouse_bench::gen::{Generator, Shape};
use trailhouse_bench::{percentile, print_table};
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};
use trailhouse_consumer::writer::{ClickHouseWriter, RowWriter};
use trailhouse_schemas::layout::Target;
use trailhouse_schemas::migrations::MIGRATIONS;
use trailhouse_schemas::rowbinary::{self, EncodedRows};
use trailhouse_schemas::{EventRow, Lineage, EVENTS_TABLE, EVENT_COLUMNS};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
    /// The Python that has chdb (the dev venv's).
    #[arg(long)]
    python: PathBuf,
    /// Fewer rows and repeats: keeps the harness working.
    #[arg(long)]
    quick: bool,
}

fn rows(n: usize) -> EncodedRows {
    let mut g = Generator::new(Shape {
        seed: 7,
        orgs: 100,
        days: 1,
        end: Utc::now(),
    });
    let mut enc = EncodedRows::new();
    for i in 0..n {
        let lineage = Lineage {
            partition: 0,
            offset: i as i64,
        };
        enc.push(&EventRow::from_event(&g.event(None), lineage));
    }
    enc
}

/// The consumer's insert of `enc` into a fresh database; rows/s.
async fn front_insert(url: &str, enc: &EncodedRows, tag: &str) -> anyhow::Result<f64> {
    let db = format!("bench_front_{tag}_{}", std::process::id());
    let ch = ClickHouseArgs::local(url.to_string(), db.clone());
    migrate(&ch).await?;
    let writer = ClickHouseWriter::new(ch.client(), Duration::from_secs(600));
    let started = Instant::now();
    writer
        .insert(enc, &format!("bench-{tag}"))
        .await
        .map_err(|e| anyhow::anyhow!("insert: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    ch.server_client()
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await?;
    Ok(enc.len() as f64 / secs)
}

/// What the engine does alone, in a process of its own.
struct Engine {
    /// Its insert of the same bytes from a file, rows/s.
    rows_per_sec: f64,
    /// Its own `SELECT 1`, p50 and p99 ms.
    select_one: (f64, f64),
}

fn engine_alone(
    python: &PathBuf,
    enc: &EncodedRows,
    repeats: usize,
    requests: usize,
) -> anyhow::Result<Engine> {
    let dir = std::env::temp_dir().join(format!("bench-front-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("rows.bin");
    let mut f = std::fs::File::create(&data)?;
    f.write_all(rowbinary::header())?;
    f.write_all(enc.as_bytes())?;
    drop(f);
    let ddl = dir.join("ddl.sql");
    std::fs::write(
        &ddl,
        // The events table's columns as the migrations leave them: created
        // (1), the copy mark added (4); comments (3) do not change an insert.
        MIGRATIONS
            .iter()
            .filter(|m| m.table == EVENTS_TABLE && m.name != "column_comments")
            .flat_map(|m| m.statements(&Target::default()))
            .collect::<Vec<_>>()
            .join(";\n"),
    )?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/engine_insert.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--ddl", &ddl.to_string_lossy()])
        .args(["--table", EVENTS_TABLE, "--columns", EVENT_COLUMNS])
        .args(["--format", rowbinary::FORMAT])
        .args(["--data", &data.to_string_lossy()])
        .args(["--repeats", &repeats.to_string()])
        .args(["--select-one", &requests.to_string()])
        .output()
        .context("run the engine insert script")?;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        out.status.success(),
        "engine insert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rows = v["rows"].as_f64().context("rows")?;
    anyhow::ensure!(rows as usize == enc.len(), "engine stored {rows} rows");
    let ms = |i: usize| v["select_one_ms"][i].as_f64().unwrap_or(0.0);
    Ok(Engine {
        rows_per_sec: rows / v["seconds"].as_f64().context("seconds")?,
        select_one: (ms(0), ms(1)),
    })
}

/// Milliseconds per `SELECT 1`, `n` times over one keep-alive connection.
async fn select_one(http: &reqwest::Client, url: &str, settings: &str, n: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ok = http
            .get(format!("{url}/?query=SELECT%201{settings}"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms
}

fn row(figure: &str, value: String, goal: &str) -> Vec<String> {
    vec![figure.to_string(), value, goal.to_string()]
}

fn p50_p99(ms: &[f64]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        percentile(ms, 50.0),
        percentile(ms, 99.0),
        ms.len()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (n, repeats, requests) = if cli.quick {
        (20_000, 1, 100)
    } else {
        (200_000, 3, 1_000)
    };
    let enc = rows(n);
    println!("## The local ClickHouse front\n");
    println!(
        "{n} rows of {:.0} bytes (RowBinaryWithNamesAndTypes, {:.1} MB), median of {repeats}.\n",
        enc.byte_len() as f64 / n as f64,
        enc.byte_len() as f64 / 1e6
    );
    let mut front = Vec::new();
    for r in 0..repeats {
        front.push(front_insert(&cli.clickhouse, &enc, &r.to_string()).await?);
    }
    let front = percentile(&front, 50.0);
    let engine = engine_alone(&cli.python, &enc, repeats, requests)?;

    let http = reqwest::Client::new();
    let plain = select_one(&http, &cli.clickhouse, "", requests).await;
    // What the query API sends with every query.
    let query_api = "&readonly=1&max_execution_time=10&max_result_rows=10000\
                     &max_result_bytes=268435456&result_overflow_mode=throw";
    let with_settings = select_one(&http, &cli.clickhouse, query_api, requests).await;

    // Reads while a long insert (5× the rows) runs.
    let long = rows(5 * n);
    let url = cli.clickhouse.clone();
    let insert = tokio::spawn(async move { front_insert(&url, &long, "long").await });
    let mut during = Vec::new();
    while !insert.is_finished() {
        during.extend(select_one(&http, &cli.clickhouse, query_api, 20).await);
    }
    insert.await??;

    print_table(
        &["figure", "measured", "goal"],
        &[
            row(
                "consumer's insert through the front",
                format!("{front:.0} rows/s"),
                "",
            ),
            row(
                "engine's own file insert, in-process",
                format!("{:.0} rows/s", engine.rows_per_sec),
                "",
            ),
            row(
                "front / engine",
                format!("{:.2}×", front / engine.rows_per_sec),
                "≥ 0.5×",
            ),
            row("SELECT 1 through the front", p50_p99(&plain), ""),
            row(
                "SELECT 1 in the engine alone",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    engine.select_one.0, engine.select_one.1
                ),
                "",
            ),
            row(
                "the front's own cost per request (p50 difference)",
                format!("{:.2} ms", percentile(&plain, 50.0) - engine.select_one.0),
                "≤ 1 ms",
            ),
            row(
                "SELECT 1 with the query API's settings",
                p50_p99(&with_settings),
                "",
            ),
            row(
                "the same, while a long insert runs",
                p50_p99(&during),
                "not serialized behind the insert",
            ),
        ],
    );
    Ok(())
}
