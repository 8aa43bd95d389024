//! Storage layouts and topologies: the choices made at migration time, how
//! they turn the migration templates into DDL, and which table partition a
//! row lands in (the consumer keeps every insert under ClickHouse's
//! `max_partitions_per_insert_block`). See `docs/adr/0003-storage-layout.md`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};

use crate::row::EventRow;

/// How the `events` table is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `PARTITION BY (retention_days, day)`: a handful of partitions per day
    /// whatever the number of orgs; orgs are pruned by the primary key. The default.
    #[default]
    Fleet,
    /// `PARTITION BY (org_id, day)`: per-org partition operations, for
    /// deployments with few tenants.
    OrgDay,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Fleet => "fleet",
            Layout::OrgDay => "org-day",
        }
    }

    /// The `PARTITION BY` expression.
    pub fn partition_by(self) -> &'static str {
        match self {
            Layout::Fleet => "(retention_days, toYYYYMMDD(created_at))",
            Layout::OrgDay => "(org_id, toYYYYMMDD(created_at))",
        }
    }

    /// The partition a row belongs to, as ClickHouse computes it from
    /// [`Layout::partition_by`].
    pub fn partition_of(self, row: &EventRow) -> PartitionKey {
        self.key(&row.org_id, row.created_at, row.retention_days)
    }

    /// The partition of a row with these column values.
    pub fn key(self, org_id: &str, created_at: DateTime<Utc>, retention_days: u16) -> PartitionKey {
        let d = created_at.date_naive();
        let day = d.year().unsigned_abs() * 10_000 + d.month() * 100 + d.day();
        match self {
            Layout::Fleet => PartitionKey::Fleet {
                retention_days,
                day,
            },
            Layout::OrgDay => PartitionKey::OrgDay {
                org_id: org_id.to_string(),
                day,
            },
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A layout name that is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown storage layout {0:?}; expected \"fleet\" or \"org-day\"")]
pub struct UnknownLayout(pub String);

impl FromStr for Layout {
    type Err = UnknownLayout;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fleet" => Ok(Layout::Fleet),
            "org-day" | "org_day" => Ok(Layout::OrgDay),
            other => Err(UnknownLayout(other.to_string())),
        }
    }
}

/// The partition of a row (the value of the `PARTITION BY` expression).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PartitionKey {
    Fleet { retention_days: u16, day: u32 },
    OrgDay { org_id: String, day: u32 },
}

/// Groups rows, given by their partition keys, into inserts that each touch
/// at most `max_partitions` partitions: row indices per insert, or `None`
/// when all rows fit in one insert (always, in the fleet layout).
/// Deterministic: the same keys always split the same way, so a replayed
/// batch repeats the same inserts with the same tokens.
pub fn split_by_partition<K: Ord>(keys: &[K], max_partitions: usize) -> Option<Vec<Vec<usize>>> {
    let max = max_partitions.max(1);
    // Most batches fit: count distinct keys until the limit is passed.
    let mut distinct = std::collections::BTreeSet::new();
    for k in keys {
        distinct.insert(k);
        if distinct.len() > max {
            break;
        }
    }
    if distinct.len() <= max {
        return None;
    }
    let mut groups: std::collections::BTreeMap<&K, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(k).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut current = Vec::new();
    for (n, (_, group)) in groups.into_iter().enumerate() {
        if n > 0 && n % max == 0 {
            out.push(std::mem::take(&mut current));
        }
        current.extend(group);
    }
    if !current.is_empty() {
        out.push(current);
    }
    Some(out)
}

/// Single node or a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    #[default]
    SingleNode,
    /// `ON CLUSTER` DDL, `Replicated*` engines, `Distributed` tables sharded by org.
    Cluster(ClusterName),
}

/// A cluster name as configured in the server's `remote_servers`; checked
/// because it is written into DDL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName(String);

/// A cluster name with characters a server configuration cannot have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid cluster name {0:?}: use letters, digits, '_', '-' and '.' (at most 128)")]
pub struct InvalidClusterName(pub String);

impl ClusterName {
    pub fn new(name: &str) -> Result<Self, InvalidClusterName> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(ClusterName(name.to_string()))
        } else {
            Err(InvalidClusterName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the migrations are rendered for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub layout: Layout,
    pub topology: Topology,
}

impl Target {
    /// Recorded with each applied migration, e.g. `fleet/single` or `org-day/cluster:main`.
    pub fn variant(&self) -> String {
        match &self.topology {
            Topology::SingleNode => format!("{}/single", self.layout),
            Topology::Cluster(c) => format!("{}/cluster:{}", self.layout, c.as_str()),
        }
    }

    /// Parses [`Target::variant`]'s output.
    pub fn from_variant(s: &str) -> Option<Target> {
        let (layout, topo) = s.split_once('/')?;
        let layout = layout.parse().ok()?;
        let topology = match topo {
            "single" => Topology::SingleNode,
            t => Topology::Cluster(ClusterName::new(t.strip_prefix("cluster:")?).ok()?),
        };
        Some(Target { layout, topology })
    }

    /// ` ON CLUSTER 'name'` or nothing.
    pub fn on_cluster(&self) -> String {
        match &self.topology {
            Topology::SingleNode => String::new(),
            Topology::Cluster(c) => format!(" ON CLUSTER '{}'", c.as_str()),
        }
    }

    /// Whether the logical table is a `Distributed` table over the data
    /// tables (a cluster).
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// The table that holds a logical table's data: `events` on a single
    /// node, `events_local` (one per shard) in a cluster.
    pub fn data_table(&self, logical: &str) -> String {
        match &self.topology {
            Topology::SingleNode => logical.to_string(),
            Topology::Cluster(_) => format!("{logical}_local"),
        }
    }

    /// Renders a migration template for the table `logical`:
    /// `${TABLE}`, `${ON_CLUSTER}`, `${ENGINE:Kind}`, `${PARTITION_BY}` (or
    /// `${PARTITION_BY:column}`), `${DEDUP_WINDOW}`, `${DATA:table}` (the
    /// data table of another logical table) and
    /// `${DISTRIBUTED:sharding key}` (a second statement creating the
    /// `Distributed` table, in a cluster only).
    pub fn render(&self, logical: &str, template: &str) -> String {
        self.render_on(logical, &self.data_table(logical), template)
    }

    /// [`Target::render`] with `${TABLE}` naming `table` (e.g. the
    /// `Distributed` table of a cluster instead of its shards' table).
    pub fn render_on(&self, logical: &str, table: &str, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 256);
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let (name, arg) = match after[..end].split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (&after[..end], None),
            };
            out.push_str(&self.placeholder(logical, table, name, arg));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn placeholder(&self, logical: &str, table: &str, name: &str, arg: Option<&str>) -> String {
        let cluster = match &self.topology {
            Topology::SingleNode => None,
            Topology::Cluster(c) => Some(c.as_str()),
        };
        match (name, cluster) {
            ("TABLE", _) => table.to_string(),
            ("ON_CLUSTER", _) => self.on_cluster(),
            // `${PARTITION_BY:col}`: the same partitions, by a time column
            // of another name (a rollup's `hour` or `day`).
            ("PARTITION_BY", _) => match arg {
                Some(col) => self.layout.partition_by().replace("created_at", col),
                None => self.layout.partition_by().to_string(),
            },
            ("DATA", _) => self.data_table(arg.unwrap_or(logical)),
            ("ENGINE", None) => arg.unwrap_or("MergeTree").to_string(),
            ("ENGINE", Some(_)) => format!(
                "Replicated{}('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}')",
                arg.unwrap_or("MergeTree")
            ),
            ("DEDUP_WINDOW", None) => "non_replicated_deduplication_window".to_string(),
            ("DEDUP_WINDOW", Some(_)) => "replicated_deduplication_window".to_string(),
            ("DISTRIBUTED", None) => String::new(),
            ("DISTRIBUTED", Some(c)) => format!(
                ";\nCREATE TABLE IF NOT EXISTS {logical} ON CLUSTER '{c}' AS {table}\n\
                 ENGINE = Distributed('{c}', currentDatabase(), {table}, {key})",
                key = arg.unwrap_or("rand()")
            ),
            (other, _) => format!("${{{other}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;
    use chrono::{TimeZone, Utc};

    fn cluster() -> Target {
        Target {
            layout: Layout::Fleet,
            topology: Topology::Cluster(ClusterName::new("main").expect("test value")),
        }
    }

    #[test]
    fn single_node_rendering_fills_every_placeholder() {
        let t = Target::default();
        let sql = t.render(
            "events",
            "CREATE TABLE ${TABLE}${ON_CLUSTER} (a UInt8) ENGINE = ${ENGINE:ReplacingMergeTree} \
             PARTITION BY ${PARTITION_BY} SETTINGS ${DEDUP_WINDOW} = 1\n${DISTRIBUTED:a}",
        );
        assert_eq!(
            sql,
            "CREATE TABLE events (a UInt8) ENGINE = ReplacingMergeTree PARTITION BY \
             (retention_days, toYYYYMMDD(created_at)) SETTINGS non_replicated_deduplication_window = 1\n"
        );
    }

    #[test]
    fn cluster_rendering_uses_replicated_engines_and_a_distributed_table() {
        let sql = cluster().render(
            "events",
            "CREATE TABLE ${TABLE}${ON_CLUSTER} (a UInt8) ENGINE = ${ENGINE} ORDER BY a \
             SETTINGS ${DEDUP_WINDOW} = 1\n${DISTRIBUTED:cityHash64(a)}",
        );
        assert!(sql.starts_with("CREATE TABLE events_local ON CLUSTER 'main' (a UInt8) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"), "{sql}");
        assert!(sql.contains("replicated_deduplication_window = 1"));
        assert!(sql.ends_with(
            "CREATE TABLE IF NOT EXISTS events ON CLUSTER 'main' AS events_local\n\
             ENGINE = Distributed('main', currentDatabase(), events_local, cityHash64(a))"
        ));
    }

    #[test]
    fn variants_round_trip_and_names_are_checked() {
        for t in [
            Target::default(),
            cluster(),
            Target {
                layout: Layout::OrgDay,
                topology: Topology::SingleNode,
            },
        ] {
            assert_eq!(Target::from_variant(&t.variant()), Some(t));
        }
        assert!(ClusterName::new("main'; DROP").is_err());
        assert!(ClusterName::new("").is_err());
        assert_eq!("org-day".parse::<Layout>(), Ok(Layout::OrgDay));
        assert!("daily".parse::<Layout>().is_err());
    }

    fn row(org: &str, day: u32, retention: u16) -> EventRow {
        let mut r = EventRow::from_event(&examples::all()[0], Default::default());
        r.org_id = org.into();
        r.created_at = Utc
            .with_ymd_and_hms(2026, 11, day, 12, 0, 0)
            .single()
            .expect("test value");
        r.retention_days = retention;
        r
    }

    #[test]
    fn partition_keys_follow_the_layout() {
        let r = row("acme", 3, 30);
        assert_eq!(
            Layout::Fleet.partition_of(&r),
            PartitionKey::Fleet {
                retention_days: 30,
                day: 20261103
            }
        );
        assert_eq!(
            Layout::OrgDay.partition_of(&r),
            PartitionKey::OrgDay {
                org_id: "acme".into(),
                day: 20261103
            }
        );
    }

    #[test]
    fn splitting_keeps_every_row_once_and_respects_the_limit() {
        let rows: Vec<EventRow> = (0..50)
            .map(|i| row(&format!("org{}", i % 7), 1 + i % 5, 90))
            .collect();
        let keys = |layout: Layout| -> Vec<PartitionKey> {
            rows.iter().map(|r| layout.partition_of(r)).collect()
        };
        // Fleet: 5 partitions, within the limit: one insert.
        assert_eq!(split_by_partition(&keys(Layout::Fleet), 5), None);
        // Org-day: up to 35 partitions, limit 10.
        let org_day = keys(Layout::OrgDay);
        let parts = split_by_partition(&org_day, 10).expect("split");
        assert!(parts.len() > 1);
        let mut seen: Vec<usize> = Vec::new();
        for p in &parts {
            let distinct: std::collections::BTreeSet<_> = p.iter().map(|&i| &org_day[i]).collect();
            assert!(distinct.len() <= 10, "{}", distinct.len());
            seen.extend(p);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..rows.len()).collect::<Vec<_>>());
        assert_eq!(Some(parts), split_by_partition(&org_day, 10));
    }
}
