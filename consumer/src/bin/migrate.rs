//! `trailhouse-migrate`: creates the database and applies the ClickHouse
//! migrations (idempotent), for the chosen layout and topology; `--print`
//! shows the DDL instead of applying it.

use clap::Parser;
use trailhouse_common::clickhouse::{
    migrate_to, schema_migrations_ddl, ClickHouseArgs, TargetArgs,
};
use trailhouse_schemas::migrations::MIGRATIONS;

#[derive(Parser)]
#[command(
    name = "trailhouse-migrate",
    version,
    about = "Apply Trailhouse's ClickHouse migrations"
)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// Print the DDL for the layout and topology instead of applying it.
    #[arg(long)]
    print: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = cli.target.target();
    if cli.print {
        for stmt in schema_migrations_ddl(&target) {
            println!("{};\n", stmt.trim());
        }
        for m in MIGRATIONS {
            println!("-- {:04} {} ({})", m.version, m.name, target.variant());
            for stmt in m.statements(&target) {
                println!("{};\n", stmt.trim());
            }
        }
        return Ok(());
    }
    let report = migrate_to(&cli.clickhouse, &target).await?;
    println!(
        "database {} ({}): applied {:?}, already applied {:?}",
        cli.clickhouse.database,
        target.variant(),
        report.applied,
        report.already_applied
    );
    Ok(())
}
