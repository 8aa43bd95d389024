//! Per-tenant SQL access: a read-only ClickHouse user that sees one org's
//! rows only, for the people who analyse their own audit data in SQL.
//! Pure: this module only writes the DDL (`trailhouse-admin grant-sql` and
//! `revoke-sql` run it, or print it for a DBA).
//!
//! What a grant creates, all idempotent (`IF NOT EXISTS` / `OR REPLACE`),
//! in an order that never lets the user read before its policy holds:
//! - on every readable table, the permissive row policy [`OTHERS_POLICY`]
//!   `USING 1 TO ALL`, so every user keeps seeing every row (a server may
//!   hide a table's rows from users without a policy once it has one);
//! - a settings profile of the tenant's limits (`readonly = 1`,
//!   `max_execution_time`, `max_memory_usage`, `max_rows_to_read`, each
//!   `CONST` so the user cannot raise it);
//! - the user (password as SHA-256), with no grant yet;
//! - on each table, a **restrictive** row policy `org_id = '<org>'` bound to
//!   the user itself: restrictive policies are AND-ed with the permissive
//!   ones, and one bound to the user, not to a role, no `SET ROLE` sheds;
//! - last, `SELECT` on the tables.
//!
//! A revoke drops the user first, then its policies and profile; the
//! all-rows policy stays for everyone else. Tenant users are named
//! `tenant_…`, so neither can replace or drop another user (the
//! pipeline's own, say).

use std::fmt::Write as _;

/// The prefix of every tenant user's name.
pub const USER_PREFIX: &str = "tenant_";
/// The permissive row policy that gives every user every row; the tenants'
/// restrictive policies narrow it.
pub const OTHERS_POLICY: &str = "trailhouse_all_rows";

/// The limits of a tenant's queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    pub max_execution_secs: u32,
    pub max_memory_bytes: u64,
    pub max_rows_to_read: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            max_execution_secs: 30,
            max_memory_bytes: 2 << 30,
            max_rows_to_read: 1_000_000_000,
        }
    }
}

/// One tenant's SQL access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantAccess {
    pub org: String,
    /// The ClickHouse user (and the name of its profile and policies).
    pub user: String,
    pub database: String,
    /// Every table and view the tenant may read.
    pub tables: Vec<String>,
    /// ` ON CLUSTER '<name>'`, or empty.
    pub on_cluster: String,
    pub limits: TenantLimits,
}

/// A grant that cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantSqlError {
    #[error("org id must not be empty")]
    EmptyOrg,
    #[error("org {0:?} cannot name a ClickHouse user; give one with --user (letters, digits, _)")]
    NoUserName(String),
    #[error("user name {0:?} must start with tenant_ and be letters, digits and _ (at most 64)")]
    BadUser(String),
    #[error("the password hash must be 64 hex characters (SHA-256)")]
    BadPasswordHash,
    #[error("max_execution_secs must be at least 1")]
    NoTime,
}

fn is_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The default user of an org: `tenant_<org>`, when the org id makes a name.
pub fn default_user(org: &str) -> Result<String, TenantSqlError> {
    if org.is_empty() {
        return Err(TenantSqlError::EmptyOrg);
    }
    let user = format!("{USER_PREFIX}{org}");
    if is_name(&user) {
        Ok(user)
    } else {
        Err(TenantSqlError::NoUserName(org.to_string()))
    }
}

/// A string literal: `'` and `\` escaped.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An identifier in backquotes (the names here are checked, the database
/// and tables come from the configuration).
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`"))
}

impl TenantAccess {
    fn check(&self) -> Result<(), TenantSqlError> {
        if self.org.is_empty() {
            return Err(TenantSqlError::EmptyOrg);
        }
        if !is_name(&self.user) || !self.user.starts_with(USER_PREFIX) {
            return Err(TenantSqlError::BadUser(self.user.clone()));
        }
        if self.limits.max_execution_secs == 0 {
            return Err(TenantSqlError::NoTime);
        }
        Ok(())
    }

    fn table(&self, t: &str) -> String {
        format!("{}.{}", ident(&self.database), ident(t))
    }

    /// The statements that grant the access, with the password given as
    /// its SHA-256 (hex).
    pub fn grant(&self, password_sha256: &str) -> Result<Vec<String>, TenantSqlError> {
        self.check()?;
        if password_sha256.len() != 64 || !password_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TenantSqlError::BadPasswordHash);
        }
        let (user, oc, l) = (ident(&self.user), &self.on_cluster, self.limits);
        let mut out: Vec<String> = self
            .tables
            .iter()
            .map(|t| {
                format!(
                    "CREATE ROW POLICY IF NOT EXISTS {}{oc} ON {} FOR SELECT USING 1 AS permissive TO ALL",
                    ident(OTHERS_POLICY),
                    self.table(t)
                )
            })
            .collect();
        let mut profile = format!("CREATE SETTINGS PROFILE OR REPLACE {user}{oc} SETTINGS ");
        let _ = write!(
            profile,
            "readonly = 1 CONST, max_execution_time = {} CONST, max_memory_usage = {} CONST, max_rows_to_read = {} CONST",
            l.max_execution_secs, l.max_memory_bytes, l.max_rows_to_read
        );
        out.push(profile);
        out.push(format!(
            "CREATE USER OR REPLACE {user}{oc} IDENTIFIED WITH sha256_hash BY {} DEFAULT DATABASE {} SETTINGS PROFILE {}",
            literal(password_sha256),
            ident(&self.database),
            literal(&self.user)
        ));
        for t in &self.tables {
            out.push(format!(
                "CREATE ROW POLICY OR REPLACE {user}{oc} ON {} FOR SELECT USING org_id = {} AS restrictive TO {user}",
                self.table(t),
                literal(&self.org)
            ));
        }
        for t in &self.tables {
            out.push(format!("GRANT{oc} SELECT ON {} TO {user}", self.table(t)));
        }
        Ok(out)
    }

    /// The statements that take the access away again.
    pub fn revoke(&self) -> Result<Vec<String>, TenantSqlError> {
        self.check()?;
        let (user, oc) = (ident(&self.user), &self.on_cluster);
        let mut out = vec![format!("DROP USER IF EXISTS {user}{oc}")];
        out.extend(
            self.tables
                .iter()
                .map(|t| format!("DROP ROW POLICY IF EXISTS {user} ON {}{oc}", self.table(t))),
        );
        out.push(format!("DROP SETTINGS PROFILE IF EXISTS {user}{oc}"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(org: &str) -> TenantAccess {
        TenantAccess {
            org: org.into(),
            user: default_user(org).unwrap_or_else(|_| "tenant_x".into()),
            database: "audit".into(),
            tables: vec!["events".into()],
            on_cluster: String::new(),
            limits: TenantLimits::default(),
        }
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_grant_reads_nothing_before_its_policy_holds() {
        let sql = access("org_acme").grant(HASH).expect("grant");
        let want = [
            "CREATE ROW POLICY IF NOT EXISTS `trailhouse_all_rows` ON `audit`.`events` FOR SELECT USING 1 AS permissive TO ALL",
            "CREATE SETTINGS PROFILE OR REPLACE `tenant_org_acme` SETTINGS readonly = 1 CONST, max_execution_time = 30 CONST, max_memory_usage = 2147483648 CONST, max_rows_to_read = 1000000000 CONST",
            "CREATE USER OR REPLACE `tenant_org_acme` IDENTIFIED WITH sha256_hash BY '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08' DEFAULT DATABASE `audit` SETTINGS PROFILE 'tenant_org_acme'",
            "CREATE ROW POLICY OR REPLACE `tenant_org_acme` ON `audit`.`events` FOR SELECT USING org_id = 'org_acme' AS restrictive TO `tenant_org_acme`",
            "GRANT SELECT ON `audit`.`events` TO `tenant_org_acme`",
        ];
        assert_eq!(sql, want);
        let revoke = access("org_acme").revoke().expect("revoke");
        assert_eq!(
            revoke,
            [
                "DROP USER IF EXISTS `tenant_org_acme`",
                "DROP ROW POLICY IF EXISTS `tenant_org_acme` ON `audit`.`events`",
                "DROP SETTINGS PROFILE IF EXISTS `tenant_org_acme`",
            ]
        );
    }

    #[test]
    fn a_cluster_grant_runs_on_the_cluster() {
        let mut a = access("org_acme");
        a.on_cluster = " ON CLUSTER 'main'".into();
        a.tables = vec!["events".into(), "events_local".into()];
        let sql = a.grant(HASH).expect("grant");
        assert!(
            sql.iter().all(|s| s.contains(" ON CLUSTER 'main'")),
            "{sql:#?}"
        );
        assert_eq!(sql.iter().filter(|s| s.contains("USING org_id")).count(), 2);
    }

    #[test]
    fn bad_input_is_refused_by_name() {
        let with_user = |user: &str| TenantAccess {
            user: user.into(),
            ..access("a")
        };
        let cases: Vec<(TenantAccess, &str, TenantSqlError)> = vec![
            (
                TenantAccess {
                    org: String::new(),
                    ..access("a")
                },
                HASH,
                TenantSqlError::EmptyOrg,
            ),
            (
                with_user("tenant_x; DROP"),
                HASH,
                TenantSqlError::BadUser("tenant_x; DROP".into()),
            ),
            (
                with_user("trailhouse"),
                HASH,
                TenantSqlError::BadUser("trailhouse".into()),
            ),
            (access("a"), "abc", TenantSqlError::BadPasswordHash),
            (
                TenantAccess {
                    limits: TenantLimits {
                        max_execution_secs: 0,
                        ..TenantLimits::default()
                    },
                    ..access("a")
                },
                HASH,
                TenantSqlError::NoTime,
            ),
        ];
        for (a, hash, want) in cases {
            assert_eq!(a.grant(hash).expect_err("refused"), want);
        }
        assert_eq!(
            with_user("default").revoke().expect_err("not a tenant"),
            TenantSqlError::BadUser("default".into())
        );
        assert_eq!(
            default_user("acme-eu"),
            Err(TenantSqlError::NoUserName("acme-eu".into()))
        );
        assert_eq!(default_user(""), Err(TenantSqlError::EmptyOrg));
    }

    #[test]
    fn an_org_id_cannot_break_out_of_its_literal() {
        let mut a = access("x");
        a.org = "x' OR 1 = 1 OR org_id = '\\".into();
        let sql = a.grant(HASH).expect("grant");
        let policy = sql
            .iter()
            .find(|s| s.contains("USING org_id"))
            .cloned()
            .unwrap_or_default();
        assert!(
            policy.contains(r"USING org_id = 'x\' OR 1 = 1 OR org_id = \'\\' AS restrictive"),
            "{policy}"
        );
    }
}
