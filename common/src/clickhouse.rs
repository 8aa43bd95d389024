//! ClickHouse connection settings and the migration runner.

use clap::Args;
use clickhouse::{Client, Compression};
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
        default_value = "lz4"
    )]
    pub compression: String,
}

/// ClickHouse settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseConfigError {
    #[error("invalid database name {0:?}: use letters, digits and underscores, starting with a letter or underscore")]
    Database(String),
    #[error("unknown clickhouse compression {0:?}; use lz4 or none")]
    Compression(String),
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
            compression: "none".into(),
        }
    }

    pub fn validate(&self) -> Result<(), ClickHouseConfigError> {
        if !is_safe_identifier(&self.database) {
            return Err(ClickHouseConfigError::Database(self.database.clone()));
        }
        self.compression()?;
        Ok(())
    }

    fn compression(&self) -> Result<Compression, ClickHouseConfigError> {
        match self.compression.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            _ => Err(ClickHouseConfigError::Compression(self.compression.clone())),
        }
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
            .with_compression(self.compression().unwrap_or(Compression::None))
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
}

/// Creates the database if needed and applies every migration not yet
/// recorded in `schema_migrations`. Safe to run concurrently with running
/// services and to run again.
pub async fn migrate(args: &ClickHouseArgs) -> Result<MigrationReport, MigrateError> {
    migrate_with(args, MIGRATIONS).await
}

/// [`migrate`] with an explicit migration list (for tests).
pub async fn migrate_with(
    args: &ClickHouseArgs,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    args.validate()?;
    args.server_client()
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            args.database
        ))
        .execute()
        .await?;
    let client = args.client();
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, \
             checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
             ENGINE = ReplacingMergeTree ORDER BY version",
        )
        .execute()
        .await?;
    let applied: Vec<Applied> = client
        .query("SELECT version, any(checksum) AS checksum FROM schema_migrations GROUP BY version")
        .fetch_all()
        .await?;
    let mut report = MigrationReport::default();
    for m in migrations {
        if let Some(a) = applied.iter().find(|a| a.version == m.version) {
            if a.checksum != m.checksum() {
                return Err(MigrateError::Checksum {
                    version: m.version,
                    applied: a.checksum.clone(),
                    shipped: m.checksum(),
                });
            }
            report.already_applied.push(m.version);
            continue;
        }
        for stmt in m.statements() {
            client.query(&stmt).execute().await?;
        }
        client
            .query("INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)")
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
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
        let mut a = ClickHouseArgs::local("http://x", "ok");
        assert!(a.validate().is_ok());
        a.compression = "snappy".into();
        assert!(a.validate().is_err());
        assert!(!format!(
            "{:?}",
            ClickHouseArgs {
                password: Secret::new("pw"),
                ..a
            }
        )
        .contains("pw\""));
    }
}
