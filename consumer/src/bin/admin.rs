//! `trailhouse-admin`: storage operations. `retention` drops the partitions
//! whose events have all expired (run it daily, e.g. as a CronJob; TTL merges
//! alone are lazy); `delete-org` removes every row of one org.

use std::time::Duration;

use clap::{Parser, Subcommand};
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_consumer::storage::{DeleteProgress, Storage};

#[derive(Parser)]
#[command(
    name = "trailhouse-admin",
    version,
    about = "Trailhouse storage operations"
)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drop every partition whose events are all older than their retention.
    Retention {
        /// List what would be dropped without dropping it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove every event of one org from ClickHouse (offboarding, erasure).
    /// Events still in Kafka topics (including the dead-letter topic) expire
    /// with the topics' own retention.
    DeleteOrg {
        org: String,
        /// How long to wait for the delete to finish.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// List the events table's partitions.
    Partitions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.clickhouse.validate()?;
    let storage = Storage::open(cli.clickhouse.client()).await?;
    match cli.command {
        Command::Partitions => {
            println!(
                "{:<28} {:>12} {:>14} {:>6}  partition",
                "id", "rows", "bytes", "parts"
            );
            for p in storage.partitions().await? {
                println!(
                    "{:<28} {:>12} {:>14} {:>6}  {}",
                    p.partition_id, p.rows, p.bytes, p.parts, p.partition
                );
            }
        }
        Command::Retention { dry_run } => {
            let today = chrono::Utc::now().date_naive();
            let expired = storage.expired_partitions(today).await?;
            let (mut rows, mut bytes) = (0, 0);
            for e in &expired {
                if !dry_run {
                    storage.drop_partition(&e.stat.partition_id).await?;
                }
                rows += e.stat.rows;
                bytes += e.stat.bytes;
                println!(
                    "{} partition {} (day {}, {} days, {} rows)",
                    if dry_run { "would drop" } else { "dropped" },
                    e.stat.partition,
                    e.day,
                    e.retention_days,
                    e.stat.rows
                );
            }
            println!(
                "{} {} partitions, {rows} rows, {bytes} bytes ({})",
                if dry_run { "would drop" } else { "dropped" },
                expired.len(),
                storage.target().variant()
            );
        }
        Command::DeleteOrg { org, timeout_secs } => {
            let removed = storage
                .delete_org(&org, Duration::from_secs(timeout_secs), |p| match p {
                    DeleteProgress::Found { rows } => println!("org {org:?}: {rows} rows"),
                    DeleteProgress::PartitionDropped { partition, rows } => {
                        println!("dropped partition {partition} ({rows} rows)")
                    }
                    DeleteProgress::MutationStarted => println!("delete mutation submitted"),
                    DeleteProgress::Waiting {
                        rows_left,
                        parts_to_do,
                    } => println!("{rows_left} rows left, {parts_to_do} parts to rewrite"),
                })
                .await?;
            println!("org {org:?}: removed {removed} rows");
        }
    }
    Ok(())
}
