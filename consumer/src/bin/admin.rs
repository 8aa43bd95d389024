//! `trailhouse-admin`: storage operations. `retention` drops the partitions
//! whose events have all expired (run it daily, e.g. as a CronJob; TTL merges
//! alone are lazy); `delete-org` removes every row of one org; `grant-sql`
//! and `revoke-sql` give an org's analysts a read-only ClickHouse user that
//! sees that org's rows only, and take it away.

use std::time::Duration;

use clap::{Parser, Subcommand};
use sha2::Digest;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_consumer::storage::{DeleteProgress, Storage};
use trailhouse_consumer::tenant_sql::{default_user, TenantAccess, TenantLimits};

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
    /// Create (or replace) a read-only ClickHouse user that sees only ORG's
    /// rows, with resource limits; prints its name and a new password. Needs
    /// a ClickHouse user allowed to manage access (access_management = 1).
    GrantSql {
        org: String,
        #[command(flatten)]
        user: TenantUser,
        /// The tenant's max_execution_time, in seconds.
        #[arg(long, default_value_t = TenantLimits::default().max_execution_secs)]
        max_execution_secs: u32,
        /// The tenant's max_memory_usage, in bytes.
        #[arg(long, default_value_t = TenantLimits::default().max_memory_bytes)]
        max_memory_bytes: u64,
        /// The tenant's max_rows_to_read per query.
        #[arg(long, default_value_t = TenantLimits::default().max_rows_to_read)]
        max_rows_to_read: u64,
    },
    /// Remove ORG's SQL user, its row policies and its settings profile.
    RevokeSql {
        org: String,
        #[command(flatten)]
        user: TenantUser,
    },
}

#[derive(clap::Args)]
struct TenantUser {
    /// The ClickHouse user (default: tenant_<org>).
    #[arg(long)]
    user: Option<String>,
    /// Print the statements instead of running them (for a DBA to apply).
    #[arg(long)]
    print_only: bool,
}

/// The SQL access of `org` on this database.
fn tenant(
    storage: &Storage,
    ch: &ClickHouseArgs,
    org: &str,
    user: Option<&str>,
    limits: TenantLimits,
) -> anyhow::Result<TenantAccess> {
    let user = match user {
        Some(u) => u.to_string(),
        None => default_user(org)?,
    };
    Ok(TenantAccess {
        org: org.to_string(),
        user,
        database: ch.database.clone(),
        tables: storage.tenant_tables(),
        on_cluster: storage.target().on_cluster(),
        limits,
    })
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
        Command::GrantSql {
            org,
            user,
            max_execution_secs,
            max_memory_bytes,
            max_rows_to_read,
        } => {
            let limits = TenantLimits {
                max_execution_secs,
                max_memory_bytes,
                max_rows_to_read,
            };
            let access = tenant(
                &storage,
                &cli.clickhouse,
                &org,
                user.user.as_deref(),
                limits,
            )?;
            let password = hex::encode(rand::random::<[u8; 24]>());
            let hash = hex::encode(sha2::Sha256::digest(password.as_bytes()));
            let ddl = access.grant(&hash)?;
            if user.print_only {
                ddl.iter().for_each(|s| println!("{s};"));
                println!("-- the password of {} is {password}", access.user);
            } else {
                storage.run_ddl(&ddl).await?;
                println!(
                    "user {} reads org {org:?} only (database {})",
                    access.user, access.database
                );
                println!("password {password}");
                println!("limits: max_execution_time {max_execution_secs} s, max_memory_usage {max_memory_bytes} B, max_rows_to_read {max_rows_to_read}");
            }
        }
        Command::RevokeSql { org, user } => {
            let access = tenant(
                &storage,
                &cli.clickhouse,
                &org,
                user.user.as_deref(),
                TenantLimits::default(),
            )?;
            let ddl = access.revoke()?;
            if user.print_only {
                ddl.iter().for_each(|s| println!("{s};"));
            } else {
                storage.run_ddl(&ddl).await?;
                println!("user {} removed", access.user);
            }
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
