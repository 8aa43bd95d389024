//! ClickHouse migrations, versioned and embedded. Each is a template rendered
//! for a [`Target`] (layout and topology), so the single-node and the cluster
//! DDL come from one source. Applying them is the job of the
//! `trailhouse-migrate` command; this module only lists and renders them.

use crate::layout::Target;

/// One migration: a version, a name, and one or more statements separated by `;` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// The logical table the template creates or alters (`${TABLE}`).
    pub table: &'static str,
    pub sql: &'static str,
    /// An ALTER that a cluster also applies to the `Distributed` table
    /// (column comments: analysts query that one).
    pub also_distributed: bool,
}

/// The events table, created by the first migration. Every service and the
/// admin tool name it through this constant; it is not configurable.
pub const EVENTS_TABLE: &str = "events";

/// The consumer's recorded batch ranges, created by the second migration.
pub const STATE_TABLE: &str = "consumer_state";

/// Event counts per org and hour by action, status class, auth type and
/// source (migration 5).
pub const HOURLY_TABLE: &str = "events_hourly";

/// Distinct actors per org and day (migration 6).
pub const DAILY_ACTORS_TABLE: &str = "events_daily_actors";

/// Event counts per org and day, by the hourly table's dimensions
/// (migration 7).
pub const DAILY_TABLE: &str = "events_daily";

/// The rollups: filled from the events table by materialized views,
/// partitioned like it (same partition ids), erased with it.
/// Stream definitions, one row per version (written by the streamer's API).
pub const STREAMS_TABLE: &str = "streams";

/// Each stream's delivery state (written by the streamer delivering it).
pub const STREAM_STATUS_TABLE: &str = "stream_status";

pub const ROLLUP_TABLES: &[&str] = &[HOURLY_TABLE, DAILY_TABLE, DAILY_ACTORS_TABLE];

/// All migrations, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        table: EVENTS_TABLE,
        sql: include_str!("../migrations/0001_events.sql"),
        also_distributed: false,
    },
    Migration {
        version: 2,
        name: "consumer_state",
        table: STATE_TABLE,
        sql: include_str!("../migrations/0002_consumer_state.sql"),
        also_distributed: false,
    },
    Migration {
        version: 3,
        name: "column_comments",
        table: EVENTS_TABLE,
        sql: include_str!("../migrations/0003_column_comments.sql"),
        also_distributed: true,
    },
    Migration {
        version: 4,
        name: "copy_marks",
        table: EVENTS_TABLE,
        sql: include_str!("../migrations/0004_copy_marks.sql"),
        also_distributed: true,
    },
    Migration {
        version: 5,
        name: "hourly_rollup",
        table: HOURLY_TABLE,
        sql: include_str!("../migrations/0005_hourly_rollup.sql"),
        also_distributed: false,
    },
    Migration {
        version: 6,
        name: "daily_actors",
        table: DAILY_ACTORS_TABLE,
        sql: include_str!("../migrations/0006_daily_actors.sql"),
        also_distributed: false,
    },
    Migration {
        version: 7,
        name: "daily_rollup",
        table: DAILY_TABLE,
        sql: include_str!("../migrations/0007_daily_rollup.sql"),
        also_distributed: false,
    },
    Migration {
        version: 8,
        name: "streams",
        table: STREAMS_TABLE,
        sql: include_str!("../migrations/0008_streams.sql"),
        also_distributed: false,
    },
    Migration {
        version: 9,
        name: "stream_status",
        table: STREAM_STATUS_TABLE,
        sql: include_str!("../migrations/0009_stream_status.sql"),
        also_distributed: false,
    },
    Migration {
        version: 10,
        name: "offset_index",
        table: EVENTS_TABLE,
        sql: include_str!("../migrations/0010_offset_index.sql"),
        also_distributed: false,
    },
];

impl Migration {
    /// The migration's DDL for `target`.
    pub fn render(&self, target: &Target) -> String {
        let sql = target.render(self.table, self.sql);
        if self.also_distributed && target.is_cluster() {
            let distributed = target.render_on(self.table, self.table, self.sql);
            format!(
                "{};
{distributed}",
                sql.trim_end().trim_end_matches(';')
            )
        } else {
            sql
        }
    }

    /// The statements of this migration for `target`, comments stripped.
    pub fn statements(&self, target: &Target) -> Vec<String> {
        let sql = self.render(target);
        let mut out = Vec::new();
        let mut current = String::new();
        for line in sql.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("--") || trimmed.is_empty() {
                continue;
            }
            if let Some(stmt) = trimmed.strip_suffix(';') {
                current.push_str(stmt);
                out.push(std::mem::take(&mut current));
            } else {
                current.push_str(line);
                current.push('\n');
            }
        }
        if !current.trim().is_empty() {
            out.push(current);
        }
        out
    }

    /// A stable checksum of the rendered DDL (FNV-1a 64), recorded when
    /// applied, so that an edited, already-applied migration, or one
    /// rendered for another layout, is detected.
    pub fn checksum(&self, target: &Target) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.render(target).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.first(), Some(&1));
    }

    #[test]
    fn statements_split_and_strip_comments() {
        let m = Migration {
            version: 9,
            name: "t",
            table: "t",
            sql: "-- c\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\nDROP TABLE b;\n",
            also_distributed: false,
        };
        let t = Target::default();
        assert_eq!(
            m.statements(&t),
            vec!["CREATE TABLE a (x UInt8)\nENGINE = Memory", "DROP TABLE b"]
        );
        assert_eq!(MIGRATIONS[0].statements(&t).len(), 1);
        // Guard, table, view, truncate, backfill.
        assert_eq!(MIGRATIONS[4].statements(&t).len(), 5);
        assert_ne!(m.checksum(&t), MIGRATIONS[0].checksum(&t));
    }

    #[test]
    fn every_column_has_a_comment_on_every_table_analysts_read() {
        use crate::layout::{ClusterName, Topology};
        let created = MIGRATIONS[0].sql;
        let columns: Vec<&str> = created
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert_eq!(columns.len(), 37, "{columns:?}");
        let comments = &MIGRATIONS[2];
        for col in &columns {
            assert!(
                comments.sql.contains(&format!("COMMENT COLUMN {col} '")),
                "{col}"
            );
        }
        let cluster = Target {
            topology: Topology::Cluster(ClusterName::new("main").expect("test value")),
            ..Target::default()
        };
        let statements = comments.statements(&cluster);
        assert_eq!(statements.len(), 2);
        assert!(
            statements[0].starts_with("ALTER TABLE events_local ON CLUSTER 'main'"),
            "{}",
            statements[0]
        );
        assert!(
            statements[1].starts_with("ALTER TABLE events ON CLUSTER 'main'"),
            "{}",
            statements[1]
        );
    }

    #[test]
    fn every_placeholder_is_filled_for_every_target() {
        use crate::layout::{ClusterName, Layout, Topology};
        for layout in [Layout::Fleet, Layout::OrgDay] {
            for topology in [
                Topology::SingleNode,
                Topology::Cluster(ClusterName::new("main").expect("test value")),
            ] {
                let t = Target { layout, topology };
                for m in MIGRATIONS {
                    let sql = m.render(&t);
                    assert!(!sql.contains("${"), "{}: {sql}", t.variant());
                    let single = m.statements(&Target {
                        layout,
                        topology: Topology::SingleNode,
                    });
                    // A cluster adds one statement per table it creates
                    // (its Distributed table) or alters on both.
                    let extra = if t.topology == Topology::SingleNode {
                        0
                    } else if m.also_distributed {
                        1
                    } else {
                        m.sql.matches("${DISTRIBUTED:").count()
                    };
                    assert_eq!(
                        m.statements(&t).len(),
                        single.len() + extra,
                        "{} {}",
                        m.name,
                        t.variant()
                    );
                    assert!(single.iter().all(|s| !s.trim().is_empty()), "{}", m.name);
                }
            }
        }
        let fleet = MIGRATIONS[0].checksum(&Target::default());
        let org_day = MIGRATIONS[0].checksum(&Target {
            layout: Layout::OrgDay,
            topology: Topology::SingleNode,
        });
        assert_ne!(fleet, org_day);
    }
}

#[cfg(test)]
mod rollup_tests {
    use super::*;
    use crate::layout::{ClusterName, Layout, Topology};

    #[test]
    fn rollups_are_partitioned_like_the_events_and_read_the_shards_tables() {
        let cluster = Target {
            layout: Layout::OrgDay,
            topology: Topology::Cluster(ClusterName::new("main").expect("test value")),
        };
        let hourly = MIGRATIONS[4].statements(&cluster);
        assert!(
            hourly[1].contains("PARTITION BY (org_id, toYYYYMMDD(hour))"),
            "{}",
            hourly[1]
        );
        assert!(hourly[1]
            .starts_with("CREATE TABLE IF NOT EXISTS events_hourly_local ON CLUSTER 'main'"));
        assert!(hourly[2]
            .contains("ENGINE = Distributed('main', currentDatabase(), events_hourly_local"));
        assert!(
            hourly[3].contains("TO events_hourly_local AS")
                && hourly[3].contains("FROM events_local"),
            "the view reads each shard's inserts: {}",
            hourly[3]
        );
        // The backfill reads and writes the Distributed tables.
        assert!(
            hourly[5].starts_with("INSERT INTO events_hourly\n"),
            "{}",
            hourly[5]
        );
        let single = MIGRATIONS[5].statements(&Target::default());
        assert!(single[1].contains("PARTITION BY (retention_days, toYYYYMMDD(day))"));
    }
}
