//! Retention: the classes an org can be in, the per-org policy the ingest
//! service applies, and which table partitions have expired. Pure; the
//! retention job (`trailhouse-admin retention`) runs these decisions against
//! ClickHouse.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::layout::Layout;

/// The retention classes, in days. Few on purpose: the fleet layout
/// partitions by (class, day), so each class multiplies the partition count.
pub const RETENTION_CLASSES: &[u16] = &[7, 30, 90, 180, 365, 730, 1095, 2555];

/// The class of events that carry none.
pub const DEFAULT_RETENTION_DAYS: u16 = 90;

/// A retention configuration that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionConfigError {
    #[error("retention {0} days is not a retention class; use one of {RETENTION_CLASSES:?}")]
    NotAClass(u16),
    #[error("bad org retention entry {0:?}: expected org=days")]
    BadEntry(String),
    #[error("org {0:?} is listed twice in the retention configuration")]
    Duplicate(String),
}

/// Which class each org is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    default_days: u16,
    orgs: BTreeMap<String, u16>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            default_days: DEFAULT_RETENTION_DAYS,
            orgs: BTreeMap::new(),
        }
    }
}

fn class(days: u16) -> Result<u16, RetentionConfigError> {
    if RETENTION_CLASSES.contains(&days) {
        Ok(days)
    } else {
        Err(RetentionConfigError::NotAClass(days))
    }
}

impl RetentionPolicy {
    /// `default_days` for every org not listed in `orgs` (`acme=365,globex=30`).
    pub fn parse(default_days: u16, orgs: &str) -> Result<Self, RetentionConfigError> {
        let mut map = BTreeMap::new();
        for entry in orgs.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (org, days) = entry
                .split_once('=')
                .map(|(o, d)| (o.trim(), d.trim()))
                .filter(|(o, _)| !o.is_empty())
                .ok_or_else(|| RetentionConfigError::BadEntry(entry.to_string()))?;
            let days: u16 = days
                .parse()
                .map_err(|_| RetentionConfigError::BadEntry(entry.to_string()))?;
            if map.insert(org.to_string(), class(days)?).is_some() {
                return Err(RetentionConfigError::Duplicate(org.to_string()));
            }
        }
        Ok(RetentionPolicy {
            default_days: class(default_days)?,
            orgs: map,
        })
    }

    /// The retention class of `org`.
    pub fn days_for(&self, org: &str) -> u16 {
        self.orgs.get(org).copied().unwrap_or(self.default_days)
    }
}

/// An active partition of the events table, as `system.parts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// `partition_id`, the handle of `DROP PARTITION ID`.
    pub id: String,
    /// The partition value as text: `(90,20261121)` or `('acme',20261121)`.
    pub value: String,
}

/// A partition's value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionValue {
    /// The retention class (fleet layout only; org-day partitions mix classes
    /// only if an org changed class, so their retention is read from the rows).
    pub retention_days: Option<u16>,
    pub org_id: Option<String>,
    pub day: NaiveDate,
}

/// A partition value this code does not understand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected partition value {0:?} for layout {1}")]
pub struct BadPartition(pub String, pub Layout);

fn day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y%m%d").ok()
}

/// Parses a partition value of `layout`.
pub fn parse_partition(value: &str, layout: Layout) -> Result<PartitionValue, BadPartition> {
    let bad = || BadPartition(value.to_string(), layout);
    let inner = value
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(bad)?;
    // The day is always last and never contains a comma; an org id may.
    let (first, last) = inner.rsplit_once(',').ok_or_else(bad)?;
    let day = day(last).ok_or_else(bad)?;
    match layout {
        Layout::Fleet => Ok(PartitionValue {
            retention_days: Some(first.trim().parse().map_err(|_| bad())?),
            org_id: None,
            day,
        }),
        Layout::OrgDay => {
            let quoted = first
                .trim()
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .ok_or_else(bad)?;
            Ok(PartitionValue {
                retention_days: None,
                org_id: Some(unescape(quoted)),
                day,
            })
        }
    }
}

/// Undoes ClickHouse's quoting of a string literal (`\'` and `\\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether every event of a partition of day `day` kept `retention_days`
/// days has expired by `today`: the newest possible event (`day` 23:59:59)
/// must be older than the retention, so the partition goes on day
/// `day + retention + 1`.
pub fn expired(day: NaiveDate, retention_days: u16, today: NaiveDate) -> bool {
    day + chrono::Days::new(u64::from(retention_days)) < today
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> NaiveDate {
        day(s).expect("test value")
    }

    #[test]
    fn policy_maps_orgs_to_classes_and_rejects_other_values() {
        let p = RetentionPolicy::parse(90, "acme=365, globex=30").expect("test value");
        assert_eq!(p.days_for("acme"), 365);
        assert_eq!(p.days_for("globex"), 30);
        assert_eq!(p.days_for("initech"), 90);
        assert_eq!(
            RetentionPolicy::parse(90, "acme=100"),
            Err(RetentionConfigError::NotAClass(100))
        );
        assert_eq!(
            RetentionPolicy::parse(91, ""),
            Err(RetentionConfigError::NotAClass(91))
        );
        assert!(matches!(
            RetentionPolicy::parse(90, "acme"),
            Err(RetentionConfigError::BadEntry(_))
        ));
        assert!(matches!(
            RetentionPolicy::parse(90, "acme=30,acme=90"),
            Err(RetentionConfigError::Duplicate(_))
        ));
    }

    #[test]
    fn partitions_parse_for_both_layouts() {
        assert_eq!(
            parse_partition("(90,20261121)", Layout::Fleet),
            Ok(PartitionValue {
                retention_days: Some(90),
                org_id: None,
                day: d("20261121")
            })
        );
        assert_eq!(
            parse_partition("('o\\'k,1',20261121)", Layout::OrgDay),
            Ok(PartitionValue {
                retention_days: None,
                org_id: Some("o'k,1".into()),
                day: d("20261121")
            })
        );
        assert!(parse_partition("20261121", Layout::Fleet).is_err());
        assert!(parse_partition("(acme,20261121)", Layout::OrgDay).is_err());
        assert!(parse_partition("(90,2026)", Layout::Fleet).is_err());
    }

    #[test]
    fn expiry_waits_until_the_newest_event_is_older_than_the_retention() {
        let day = d("20261101");
        assert!(!expired(day, 7, d("20261108")));
        assert!(expired(day, 7, d("20261109")));
    }

    proptest! {
        #[test]
        fn org_ids_survive_quoting(org in "[a-z0-9,'\\\\ ()-]{1,20}", y in 2000u32..2100, m in 1u32..13, dd in 1u32..29) {
            let ymd = y * 10_000 + m * 100 + dd;
            let quoted = org.replace('\\', "\\\\").replace('\'', "\\'");
            let v = parse_partition(&format!("('{quoted}',{ymd})"), Layout::OrgDay).expect("test value");
            prop_assert_eq!(v.org_id, Some(org));
        }
    }
}
