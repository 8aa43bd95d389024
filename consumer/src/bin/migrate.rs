//! `trailhouse-migrate`: creates the database and applies the ClickHouse migrations (idempotent).

use clap::Parser;
use trailhouse_common::clickhouse::{migrate, ClickHouseArgs};

#[derive(Parser)]
#[command(
    name = "trailhouse-migrate",
    version,
    about = "Apply Trailhouse's ClickHouse migrations"
)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = migrate(&cli.clickhouse).await?;
    println!(
        "database {}: applied {:?}, already applied {:?}",
        cli.clickhouse.database, report.applied, report.already_applied
    );
    Ok(())
}
