//! Per-event CPU of the codec stages, side by side: Avro decoding (the
//! consumer) and encoding (ingest) by the direct codec against
//! `apache_avro`'s generic `Value` path with schema resolution, and mapping
//! an event to its row.
//!
//! `cargo run --release -p trailhouse-bench --bin codec [-- --quick]`

use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use clap::Parser;
use trailhouse_bench::gen::{Generator, Shape};
use trailhouse_bench::{machine, print_table, Spread};
use trailhouse_schemas::avro::{decode_generic, encode_generic};
use trailhouse_schemas::row::Lineage;
use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_schemas::{decode, encode, EventRow};

#[derive(Parser, Debug)]
struct Args {
    /// A short run (fewer events and repeats).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Median (min–max) µs per event of `runs` timed passes of `f` over `n` events.
fn time_per_event(runs: usize, n: usize, mut f: impl FnMut()) -> Spread {
    let samples: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    Spread::of(&samples)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (n, runs) = if args.quick { (5_000, 3) } else { (50_000, 7) };
    let mut g = Generator::new(Shape {
        seed: args.seed,
        orgs: 1000,
        days: 30,
        end: Utc::now(),
    });
    let events: Vec<_> = (0..n).map(|_| g.event(None)).collect();
    let payloads = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    let bytes: usize = payloads.iter().map(Vec::len).sum();

    let decode_t = time_per_event(runs, n, || {
        for p in &payloads {
            black_box(decode(black_box(p)).ok());
        }
    });
    let decode_generic_t = time_per_event(runs, n, || {
        for p in &payloads {
            black_box(decode_generic(black_box(p)).ok());
        }
    });
    let row_t = time_per_event(runs, n, || {
        for (i, e) in events.iter().enumerate() {
            black_box(EventRow::from_event(
                black_box(e),
                Lineage {
                    partition: 0,
                    offset: i as i64,
                },
            ));
        }
    });
    let rows: Vec<EventRow> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            EventRow::from_event(
                e,
                Lineage {
                    partition: 0,
                    offset: i as i64,
                },
            )
        })
        .collect();
    let rowbinary_t = time_per_event(runs, n, || {
        let encoded: EncodedRows = rows.iter().collect();
        black_box(encoded.byte_len());
    });
    let encode_t = time_per_event(runs, n, || {
        for e in &events {
            black_box(encode(black_box(e)).ok());
        }
    });
    let encode_generic_t = time_per_event(runs, n, || {
        for e in &events {
            black_box(encode_generic(black_box(e)).ok());
        }
    });

    println!("# codec: per-event CPU of the pipeline's codec stages\n");
    println!("{}\n", machine());
    println!(
        "{n} generated events, {:.0} B Avro on average; µs per event, median (min–max) of {runs} passes\n",
        bytes as f64 / n as f64
    );
    let cell = |s: &Spread| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max);
    let row = |name: &str, direct: &Spread, generic: Option<&Spread>| {
        vec![
            name.to_string(),
            cell(direct),
            format!("{:.0}", 1e6 / direct.median),
            generic.map(cell).unwrap_or_else(|| "–".into()),
            generic
                .map(|g| format!("{:.1}×", g.median / direct.median))
                .unwrap_or_else(|| "–".into()),
        ]
    };
    print_table(
        &[
            "stage",
            "µs per event",
            "events/s on one core",
            "generic `Value` path, µs",
            "speed-up",
        ],
        &[
            row("Avro decode (consumer)", &decode_t, Some(&decode_generic_t)),
            row("Avro encode (ingest)", &encode_t, Some(&encode_generic_t)),
            row("event → row (consumer)", &row_t, None),
            row("row → RowBinary (consumer)", &rowbinary_t, None),
        ],
    );
    Ok(())
}
