//! ClickHouse connection settings and the migration runner.

use clap::{Args, ValueEnum};
use clickhouse::{Client, Compression};
use trailhouse_schemas::layout::{ClusterName, InvalidClusterName, Layout, Target, Topology};
use trailhouse_schemas::migrations::{Migration, MIGRATIONS};

use crate::Secret;

/// How to reach ClickHouse over HTTP(S).
#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// HTTP(S) URL of the ClickHouse server (or load balancer).
    #[arg(
        long = "clickhouse-url",
        env = "TRAILHOUSE_CLICKHOUSE_URL",
        default_value = "http://localhost:8123"
    )]
    pub url: String,
    #[arg(
        long = "clickhouse-user",
        env = "TRAILHOUSE_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    #[arg(
        long = "clickhouse-password",
        env = "TRAILHOUSE_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: Secret,
    #[arg(
        long = "clickhouse-database",
        env = "TRAILHOUSE_CLICKHOUSE_DATABASE",
        default_value = "trailhouse"
    )]
    pub database: String,
    /// Response/request compression: `lz4` (production) or `none`.
    #[arg(
        long = "clickhouse-compression",
        env = "TRAILHOUSE_CLICKHOUSE_COMPRESSION",
        default_value = "lz4",
        value_enum,
        ignore_case = true
    )]
    pub compression: ClickHouseCompression,
}

/// Compression of ClickHouse HTTP requests and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClickHouseCompression {
    Lz4,
    None,
}

impl From<ClickHouseCompression> for Compression {
    fn from(c: ClickHouseCompression) -> Self {
        match c {
            ClickHouseCompression::Lz4 => Compression::Lz4,
            ClickHouseCompression::None => Compression::None,
        }
    }
}

/// ClickHouse settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseConfigError {
    #[error("invalid database name {0:?}: use letters, digits and underscores, starting with a letter or underscore")]
    Database(String),
}

/// True for names we are willing to put into DDL as identifiers.
pub fn is_safe_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

impl ClickHouseArgs {
    pub fn local(url: impl Into<String>, database: impl Into<String>) -> Self {
        ClickHouseArgs {
            url: url.into(),
            user: "default".into(),
            password: Secret::default(),
            database: database.into(),
            compression: ClickHouseCompression::None,
        }
    }

    pub fn validate(&self) -> Result<(), ClickHouseConfigError> {
        if !is_safe_identifier(&self.database) {
            return Err(ClickHouseConfigError::Database(self.database.clone()));
        }
        Ok(())
    }

    /// A client bound to the configured database.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }

    /// A client not bound to a database (for `CREATE DATABASE`).
    pub fn server_client(&self) -> Client {
        Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(self.password.expose())
            .with_compression(self.compression.into())
    }
}

/// What [`migrate`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<u32>,
    pub already_applied: Vec<u32>,
}

/// Migration failures.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Config(#[from] ClickHouseConfigError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("the database was migrated as {installed}, not {asked}; a layout or topology is chosen once (see ADR 0003 to move data between layouts)")]
    Variant { installed: String, asked: String },
    #[error("schema_migrations records an unknown variant {0:?}")]
    UnknownVariant(String),
    #[error("migration {version} was applied with checksum {applied} but the shipped file has {shipped}; migrations must never be edited once released")]
    Checksum {
        version: u32,
        applied: String,
        shipped: String,
    },
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
    checksum: String,
    variant: String,
}

/// The layout and topology to migrate to: chosen once, at the first
/// migration, and recorded with every applied migration.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// `fleet` (partitions by retention class and day; the default) or
    /// `org-day` (partitions by org and day; for few tenants). See ADR 0003.
    #[arg(long, env = "TRAILHOUSE_STORAGE_LAYOUT", default_value = "fleet")]
    pub layout: Layout,
    /// Render the cluster variant: `ON CLUSTER <name>`, `Replicated*` engines,
    /// `Distributed` tables sharded by org.
    #[arg(long, env = "TRAILHOUSE_CLICKHOUSE_CLUSTER", value_parser = parse_cluster)]
    pub cluster: Option<ClusterName>,
}

fn parse_cluster(s: &str) -> Result<ClusterName, InvalidClusterName> {
    ClusterName::new(s)
}

impl TargetArgs {
    pub fn target(&self) -> Target {
        Target {
            layout: self.layout,
            topology: match &self.cluster {
                None => Topology::SingleNode,
                Some(c) => Topology::Cluster(c.clone()),
            },
        }
    }
}

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS ${TABLE}${ON_CLUSTER} \
(version UInt32, name String, checksum String, variant String, \
applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
ENGINE = ${ENGINE:ReplacingMergeTree} ORDER BY version\n${DISTRIBUTED:version}";

/// Creates the database if needed and applies every migration not yet
/// recorded in `schema_migrations`, for the default target (fleet layout,
/// single node). Safe to run concurrently with running services and to run again.
pub async fn migrate(args: &ClickHouseArgs) -> Result<MigrationReport, MigrateError> {
    migrate_with(args, &Target::default(), MIGRATIONS).await
}

/// [`migrate`] for an explicit target.
pub async fn migrate_to(
    args: &ClickHouseArgs,
    target: &Target,
) -> Result<MigrationReport, MigrateError> {
    migrate_with(args, target, MIGRATIONS).await
}

/// The statements that create the migrations table for `target`.
pub fn schema_migrations_ddl(target: &Target) -> Vec<String> {
    target
        .render("schema_migrations", SCHEMA_MIGRATIONS)
        .split("\n;\n")
        .map(str::to_string)
        .collect()
}

/// The target the database was migrated to, if it was.
pub async fn installed_target(client: &Client) -> Result<Option<Target>, MigrateError> {
    let variants: Vec<String> = match client
        .query("SELECT DISTINCT variant FROM schema_migrations")
        .fetch_all()
        .await
    {
        Ok(v) => v,
        // Code 60: the table does not exist (nothing migrated yet).
        Err(e) if e.to_string().contains("Code: 60.") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match variants.as_slice() {
        [] => Ok(None),
        [one] => Target::from_variant(one)
            .map(Some)
            .ok_or_else(|| MigrateError::UnknownVariant(one.clone())),
        many => Err(MigrateError::UnknownVariant(many.join(", "))),
    }
}

/// [`migrate`] with an explicit target and migration list (for tests).
pub async fn migrate_with(
    args: &ClickHouseArgs,
    target: &Target,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    args.validate()?;
    args.server_client()
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`{}",
            args.database,
            target.on_cluster()
        ))
        .execute()
        .await?;
    let client = args.client();
    for stmt in schema_migrations_ddl(target) {
        client.query(&stmt).execute().await?;
    }
    let applied: Vec<Applied> = client
        .query(
            "SELECT version, any(checksum) AS checksum, any(variant) AS variant \
             FROM schema_migrations GROUP BY version",
        )
        .fetch_all()
        .await?;
    let variant = target.variant();
    if let Some(a) = applied.iter().find(|a| a.variant != variant) {
        return Err(MigrateError::Variant {
            installed: a.variant.clone(),
            asked: variant,
        });
    }
    let mut report = MigrationReport::default();
    for m in migrations {
        let checksum = m.checksum(target);
        if let Some(a) = applied.iter().find(|a| a.version == m.version) {
            if a.checksum != checksum {
                return Err(MigrateError::Checksum {
                    version: m.version,
                    applied: a.checksum.clone(),
                    shipped: checksum,
                });
            }
            report.already_applied.push(m.version);
            continue;
        }
        for stmt in m.statements(target) {
            client.query(&stmt).execute().await?;
        }
        client
            .query(
                "INSERT INTO schema_migrations (version, name, checksum, variant) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(&checksum)
            .bind(&variant)
            .with_setting("distributed_foreground_insert", "1")
            .execute()
            .await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_allow_listed() {
        assert!(is_safe_identifier("trailhouse_test_1"));
        assert!(!is_safe_identifier("1abc"));
        assert!(!is_safe_identifier("a`; DROP"));
        assert!(!is_safe_identifier(""));
        let a = ClickHouseArgs::local("http://x", "ok");
        assert!(a.validate().is_ok());
        assert!(ClickHouseArgs::local("http://x", "no-dashes")
            .validate()
            .is_err());
        assert!(!format!(
            "{:?}",
            ClickHouseArgs {
                password: Secret::new("pw"),
                ..a
            }
        )
        .contains("pw\""));
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    }

    #[test]
    fn compression_parses_into_its_type() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .map(|c| c.clickhouse.compression)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]), Ok(ClickHouseCompression::Lz4));
        assert_eq!(
            parse(&["--clickhouse-compression", "NONE"]),
            Ok(ClickHouseCompression::None)
        );
        let e = parse(&["--clickhouse-compression", "snappy"]).expect_err("unknown");
        assert!(e.contains("snappy"), "{e}");
    }
}
