//! ClickHouse migrations, versioned and embedded. Applying them is the job of
//! the `trailhouse-migrate` command; this module only lists them.

/// One migration: a version, a name, and one or more statements separated by `;` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// All migrations, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "consumer_state",
        sql: include_str!("../migrations/0002_consumer_state.sql"),
    },
];

impl Migration {
    /// The statements of this migration, comments stripped.
    pub fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in self.sql.lines() {
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

    /// A stable checksum of the migration text (FNV-1a 64), recorded when
    /// applied, so that an edited, already-applied migration is detected.
    pub fn checksum(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.sql.bytes() {
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
            sql: "-- c\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\nDROP TABLE b;\n",
        };
        assert_eq!(
            m.statements(),
            vec!["CREATE TABLE a (x UInt8)\nENGINE = Memory", "DROP TABLE b"]
        );
        assert_eq!(MIGRATIONS[0].statements().len(), 1);
        assert_ne!(m.checksum(), MIGRATIONS[0].checksum());
    }
}
