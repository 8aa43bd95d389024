//! Storage operations on the events table and its rollups: the retention
//! job (drop expired partitions) and org deletion. The decisions are pure
//! ([`trailhouse_schemas::retention`]); this module runs them against
//! ClickHouse for the layout and topology the database was migrated to.

use std::time::Duration;

use chrono::NaiveDate;
use clickhouse::Client;
use trailhouse_common::clickhouse::{installed_target, MigrateError};
use trailhouse_schemas::layout::{Layout, Target, Topology};
use trailhouse_schemas::migrations::ROLLUP_TABLES;
use trailhouse_schemas::retention::{expired, parse_partition, BadPartition};
use trailhouse_schemas::EVENTS_TABLE;

/// Storage operation failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    Migrations(#[from] MigrateError),
    #[error("the database is not migrated; run trailhouse-migrate first")]
    NotMigrated,
    #[error(transparent)]
    Partition(#[from] BadPartition),
    #[error("unexpected partition id {0:?}")]
    PartitionId(String),
    #[error("org id must not be empty")]
    EmptyOrg,
    #[error("the delete mutation failed: {0}")]
    Mutation(String),
    #[error("org {org:?} still has {rows} rows after {waited:?}; the mutation keeps running on the server")]
    Timeout {
        org: String,
        rows: u64,
        waited: Duration,
    },
}

/// One active partition of the events table.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct PartitionStat {
    pub partition_id: String,
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    pub parts: u64,
}

/// A partition the retention job drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub stat: PartitionStat,
    pub day: NaiveDate,
    pub retention_days: u16,
}

/// What [`Storage::delete_org`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteProgress {
    /// Counted before deleting.
    Found { rows: u64 },
    /// Org-day layout: one of the org's partitions dropped.
    PartitionDropped { partition: String, rows: u64 },
    /// A delete mutation was submitted.
    MutationStarted,
    /// The mutation's state.
    Waiting { rows_left: u64, parts_to_do: u64 },
}

/// The events table of one database.
pub struct Storage {
    client: Client,
    target: Target,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Retained {
    id: String,
    retention: u16,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct MutationState {
    parts_to_do: u64,
    failed: String,
}

fn check_partition_id(id: &str) -> Result<&str, StorageError> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(id)
    } else {
        Err(StorageError::PartitionId(id.to_string()))
    }
}

impl Storage {
    /// Opens the storage of `client`'s database with the layout it was migrated to.
    pub async fn open(client: Client) -> Result<Self, StorageError> {
        let target = installed_target(&client)
            .await?
            .ok_or(StorageError::NotMigrated)?;
        Ok(Storage { client, target })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The tables a tenant's SQL user reads: `events` and the rollups (in a
    /// cluster, the `Distributed` tables and the shards' tables they read
    /// through).
    pub fn tenant_tables(&self) -> Vec<String> {
        let logical = std::iter::once(EVENTS_TABLE).chain(ROLLUP_TABLES.iter().copied());
        let mut tables: Vec<String> = logical.clone().map(str::to_string).collect();
        if matches!(self.target.topology, Topology::Cluster(_)) {
            tables.extend(logical.map(|t| self.target.data_table(t)));
        }
        tables
    }

    /// The data tables that hold an org's rows, rollups first: retention
    /// and erasure remove a partition or an org from the rollups before the
    /// events, so an interrupted run leaves nothing counted that is gone
    /// (and the next run, which finds the events, removes them).
    fn org_tables(&self) -> Vec<String> {
        ROLLUP_TABLES
            .iter()
            .chain(std::iter::once(&EVENTS_TABLE))
            .map(|t| self.target.data_table(t))
            .collect()
    }

    /// Runs statements one by one, as written (DDL generated here, e.g. by
    /// [`crate::tenant_sql`]); stops at the first that fails.
    pub async fn run_ddl(&self, statements: &[String]) -> Result<(), StorageError> {
        for stmt in statements {
            // The client reads `?` as a bind placeholder; `??` is a `?`.
            self.client
                .query(&stmt.replace('?', "??"))
                .execute()
                .await?;
        }
        Ok(())
    }

    fn data_table(&self) -> String {
        self.target.data_table(EVENTS_TABLE)
    }

    /// `system.<table>` on this node, or on every replica of the cluster.
    fn system(&self, table: &str) -> String {
        match &self.target.topology {
            Topology::SingleNode => format!("system.{table}"),
            Topology::Cluster(c) => format!("clusterAllReplicas('{}', system.{table})", c.as_str()),
        }
    }

    /// The active partitions of the events table.
    pub async fn partitions(&self) -> Result<Vec<PartitionStat>, StorageError> {
        let sql = format!(
            "SELECT partition_id, any(partition) AS partition, sum(rows) AS rows, \
             sum(bytes_on_disk) AS bytes, count() AS parts FROM {} \
             WHERE database = currentDatabase() AND table = ? AND active \
             GROUP BY partition_id ORDER BY partition_id",
            self.system("parts")
        );
        Ok(self
            .client
            .query(&sql)
            .bind(self.data_table())
            .fetch_all()
            .await?)
    }

    /// The partitions whose every event is older than its retention on `today`.
    pub async fn expired_partitions(&self, today: NaiveDate) -> Result<Vec<Expired>, StorageError> {
        let mut out = Vec::new();
        let mut org_day_candidates = Vec::new();
        for stat in self.partitions().await? {
            let v = parse_partition(&stat.partition, self.target.layout)?;
            match v.retention_days {
                Some(r) if expired(v.day, r, today) => out.push(Expired {
                    stat,
                    day: v.day,
                    retention_days: r,
                }),
                Some(_) => {}
                // Org-day partitions: the retention is read from the rows,
                // only for partitions old enough to be expired by the
                // shortest class.
                None if expired(v.day, 0, today) => org_day_candidates.push((stat, v.day)),
                None => {}
            }
        }
        if !org_day_candidates.is_empty() {
            let ids: Vec<&str> = org_day_candidates
                .iter()
                .map(|(s, _)| s.partition_id.as_str())
                .collect();
            let retained: Vec<Retained> = self
                .client
                .query(&format!(
                    "SELECT _partition_id AS id, max(retention_days) AS retention \
                     FROM {EVENTS_TABLE} WHERE _partition_id IN ? GROUP BY id"
                ))
                .bind(ids)
                .fetch_all()
                .await?;
            for (stat, day) in org_day_candidates {
                let Some(r) = retained.iter().find(|r| r.id == stat.partition_id) else {
                    continue;
                };
                if expired(day, r.retention, today) {
                    out.push(Expired {
                        stat,
                        day,
                        retention_days: r.retention,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Drops one partition of the events table and the same partition of
    /// each rollup (they are partitioned alike), on every shard in a
    /// cluster. Dropping a partition a rollup does not have does nothing.
    pub async fn drop_partition(&self, partition_id: &str) -> Result<(), StorageError> {
        let id = check_partition_id(partition_id)?;
        for table in self.org_tables() {
            let sql = format!(
                "ALTER TABLE {table}{} DROP PARTITION ID '{id}'",
                self.target.on_cluster(),
            );
            self.client.query(&sql).execute().await?;
        }
        Ok(())
    }

    async fn count_org(&self, org: &str) -> Result<u64, StorageError> {
        Ok(self
            .client
            .query(&format!(
                "SELECT count() FROM {EVENTS_TABLE} WHERE org_id = ?"
            ))
            .bind(org)
            .fetch_one()
            .await?)
    }

    /// The org's rows in the rollups (rollup rows, not events).
    pub async fn count_org_rollups(&self, org: &str) -> Result<u64, StorageError> {
        let mut n = 0;
        for t in ROLLUP_TABLES {
            n += self
                .client
                .query(&format!("SELECT count() FROM {t} WHERE org_id = ?"))
                .bind(org)
                .fetch_one::<u64>()
                .await?;
        }
        Ok(n)
    }

    /// Removes every row of `org` (tenant offboarding, erasure requests) and
    /// reports progress; returns the number of rows removed. Org-day layout:
    /// drops the org's partitions. Fleet layout: a delete mutation, which
    /// rewrites the affected parts so the data is physically gone (a
    /// lightweight `DELETE` would only hide it until the next merge).
    /// Waits up to `timeout` for the mutation; past it the mutation keeps
    /// running on the server and the command can be run again.
    pub async fn delete_org(
        &self,
        org: &str,
        timeout: Duration,
        mut progress: impl FnMut(DeleteProgress),
    ) -> Result<u64, StorageError> {
        if org.is_empty() {
            return Err(StorageError::EmptyOrg);
        }
        let found = self.count_org(org).await?;
        progress(DeleteProgress::Found { rows: found });
        if found == 0 && self.count_org_rollups(org).await? == 0 {
            return Ok(0);
        }
        if self.target.layout == Layout::OrgDay {
            for stat in self.partitions().await? {
                let v = parse_partition(&stat.partition, Layout::OrgDay)?;
                if v.org_id.as_deref() == Some(org) {
                    self.drop_partition(&stat.partition_id).await?;
                    progress(DeleteProgress::PartitionDropped {
                        partition: stat.partition,
                        rows: stat.rows,
                    });
                }
            }
            if self.count_org(org).await? + self.count_org_rollups(org).await? == 0 {
                return Ok(found);
            }
        }
        for table in self.org_tables() {
            let sql = format!(
                "ALTER TABLE {table}{} DELETE WHERE org_id = ? SETTINGS mutations_sync = 0",
                self.target.on_cluster()
            );
            self.client.query(&sql).bind(org).execute().await?;
        }
        progress(DeleteProgress::MutationStarted);
        let started = std::time::Instant::now();
        let state_sql = format!(
            "SELECT toUInt64(sum(parts_to_do)) AS parts_to_do, \
             arrayStringConcat(groupUniqArray(latest_fail_reason), '; ') AS failed \
             FROM {} WHERE database = currentDatabase() AND table IN ? AND NOT is_done",
            self.system("mutations")
        );
        loop {
            let state: MutationState = self
                .client
                .query(&state_sql)
                .bind(self.org_tables())
                .fetch_one()
                .await?;
            let rows_left = self.count_org(org).await? + self.count_org_rollups(org).await?;
            progress(DeleteProgress::Waiting {
                rows_left,
                parts_to_do: state.parts_to_do,
            });
            if rows_left == 0 {
                return Ok(found);
            }
            if !state
                .failed
                .trim_matches(|c| c == ';' || c == ' ')
                .is_empty()
            {
                return Err(StorageError::Mutation(state.failed));
            }
            if started.elapsed() > timeout {
                return Err(StorageError::Timeout {
                    org: org.to_string(),
                    rows: rows_left,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_are_allow_listed() {
        assert!(check_partition_id("90-20261121").is_ok());
        assert!(check_partition_id("3f2a9c_1").is_ok());
        assert!(check_partition_id("1' OR '1").is_err());
        assert!(check_partition_id("").is_err());
    }
}
