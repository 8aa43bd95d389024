//! Counts over time: the model of `GET /v1/stats`, its SQL and the
//! assembly of the answer. The SQL reads the events table, or the hourly
//! rollup where [`rollup::plan`] allows. Counts are of events, not stored copies: a
//! retried event stored twice has the same `(created_at, id)`, so it falls
//! into one bucket and one group, where `count(DISTINCT id)` counts it once.
//!
//! Up to three reads of the same filter: the top groups by total, the
//! series of those groups, and the total per bucket (the rest is `other`;
//! [`crate::dialect::stats::count`] skips the reads an answer does not need). Buckets
//! come back dense, zeros included, from the bucket of `from` to `to` (the
//! first bucket starts at or before `from`; only `from`'s part of it is
//! counted). The reads are separate queries: while events are still
//! arriving in the range, a count can see one the previous read did not
//! (`other` is then clamped at zero).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, DurationRound, Utc};

use super::rollup::{self, Plan};
use super::sql::Builder;
use super::{Filter, Sql};

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub const NAMES: [&'static str; 3] = ["minute", "hour", "day"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "minute" => Some(Interval::Minute),
            "hour" => Some(Interval::Hour),
            "day" => Some(Interval::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    pub fn step(self) -> Duration {
        match self {
            Interval::Minute => Duration::minutes(1),
            Interval::Hour => Duration::hours(1),
            Interval::Day => Duration::days(1),
        }
    }

    /// The range asked for when `from` is not given: an hour of minutes, a
    /// day of hours, 30 days of days.
    pub fn default_span(self) -> Duration {
        match self {
            Interval::Minute => Duration::hours(1),
            Interval::Hour => Duration::days(1),
            Interval::Day => Duration::days(30),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Interval::Minute => "toStartOfMinute(created_at)",
            Interval::Hour => "toStartOfHour(created_at)",
            Interval::Day => "toStartOfDay(created_at)",
        }
    }

    /// The start of `t`'s bucket (UTC).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.duration_trunc(self.step()).unwrap_or(t)
    }
}

/// What counts can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    Action,
    Actor,
    ResourceType,
    StatusClass,
    AuthType,
    Source,
    Workspace,
}

impl Dim {
    pub const ALL: [Dim; 7] = [
        Dim::Action,
        Dim::Actor,
        Dim::ResourceType,
        Dim::StatusClass,
        Dim::AuthType,
        Dim::Source,
        Dim::Workspace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dim::Action => "action",
            Dim::Actor => "actor",
            Dim::ResourceType => "resource_type",
            Dim::StatusClass => "status_class",
            Dim::AuthType => "auth_type",
            Dim::Source => "source",
            Dim::Workspace => "workspace",
        }
    }

    pub fn parse(s: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The value of a row, as SQL (a `String`).
    pub(super) fn sql(self) -> &'static str {
        match self {
            Dim::Action => "toString(action_type)",
            Dim::Actor => "actor_id",
            Dim::ResourceType => "toString(resource_type)",
            Dim::StatusClass => {
                "if(isNull(request_status), '', concat(toString(intDiv(assumeNotNull(request_status), 100)), 'xx'))"
            }
            Dim::AuthType => "toString(auth_type)",
            Dim::Source => "toString(source)",
            Dim::Workspace => "workspace_id",
        }
    }
}

/// The most groups one answer has, and the most buckets.
pub const MAX_TOP: u32 = 100;
pub const MAX_BUCKETS: i64 = 1000;

/// One request for counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub interval: Interval,
    /// At most two.
    pub dims: Vec<Dim>,
    pub top: u32,
    /// The first bucket's start and the range's end (exclusive); the
    /// filter holds the same range.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Stats {
    /// The start of every bucket of the range.
    pub fn buckets(&self) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = self.interval.floor(self.from);
        while t < self.to {
            out.push(t);
            t += self.interval.step();
        }
        out
    }

    /// The number of buckets of the range.
    pub fn bucket_count(&self) -> i64 {
        let first = self.interval.floor(self.from);
        let step = self.interval.step().num_seconds();
        ((self.to - first).num_seconds() + step - 1) / step
    }

    fn keys(&self) -> String {
        (0..2)
            .map(|i| match self.dims.get(i) {
                Some(d) => format!("{} AS d{i}", d.sql()),
                None => format!("'' AS d{i}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One counted row: a bucket (Unix seconds; 0 in totals) and up to two
/// group values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, clickhouse::Row)]
pub struct CountRow {
    pub bucket: u32,
    pub d0: String,
    pub d1: String,
    pub n: u64,
}

/// The top groups by total (one row more than asked: is there an `other`?).
pub fn build_top(f: &Filter, s: &Stats, plan: &Plan) -> Sql {
    if let Plan::Rollup { .. } = plan {
        return rollup::top(f, s, plan);
    }
    let mut b = Builder::select(
        &format!(
            "toUInt32(0) AS bucket, {}, count(DISTINCT id) AS n",
            s.keys()
        ),
        f,
    );
    let limit = b.param("top", "UInt64", (u64::from(s.top) + 1).to_string());
    let _ = write!(
        b.text,
        " GROUP BY d0, d1 ORDER BY n DESC, d0, d1 LIMIT {limit}"
    );
    b.finish()
}

/// The series of the given groups.
pub fn build_series(f: &Filter, s: &Stats, plan: &Plan, groups: &[(String, String)]) -> Sql {
    if let Plan::Rollup { .. } = plan {
        return rollup::series(f, s, plan, groups);
    }
    let select = format!(
        "toUInt32({}) AS bucket, {}, count(DISTINCT id) AS n",
        s.interval.sql(),
        s.keys()
    );
    let mut b = Builder::select(&select, f);
    if !s.dims.is_empty() {
        let tuples = b.group_tuples(groups);
        let _ = write!(b.text, " AND ({}) IN ({tuples})", tuple_of(s));
    }
    b.text.push_str(" GROUP BY bucket, d0, d1");
    b.finish()
}

fn tuple_of(s: &Stats) -> String {
    (0..2)
        .map(|i| s.dims.get(i).map_or("''", |d| d.sql()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The count of every bucket, all groups together.
pub fn build_bucket_totals(f: &Filter, s: &Stats, plan: &Plan) -> Sql {
    if let Plan::Rollup { .. } = plan {
        return rollup::bucket_totals(f, s, plan);
    }
    let select = format!(
        "toUInt32({}) AS bucket, '' AS d0, '' AS d1, count(DISTINCT id) AS n",
        s.interval.sql()
    );
    let mut b = Builder::select(&select, f);
    b.text.push_str(" GROUP BY bucket");
    b.finish()
}

/// A series: its group values (by dimension name), total and buckets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Series {
    pub key: BTreeMap<&'static str, String>,
    pub total: u64,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bucket {
    pub start: String,
    pub count: u64,
}

/// The answer, before it is JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub total: u64,
    pub groups: Vec<Series>,
    /// The groups beyond the top, together; none when there are none.
    pub other: Option<Series>,
}

/// Puts the three reads together: `top` (from [`build_top`], up to
/// `s.top + 1` rows), `series` of the first `s.top` of them, and the
/// `totals` per bucket.
pub fn assemble(s: &Stats, top: &[CountRow], series: &[CountRow], totals: &[CountRow]) -> Answer {
    let starts = s.buckets();
    let index: BTreeMap<i64, usize> = starts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.timestamp(), i))
        .collect();
    let dense = |rows: &mut dyn Iterator<Item = &CountRow>| -> Vec<u64> {
        let mut v = vec![0u64; starts.len()];
        for r in rows {
            if let Some(i) = index.get(&i64::from(r.bucket)) {
                v[*i] += r.n;
            }
        }
        v
    };
    let shape = |counts: Vec<u64>| -> Vec<Bucket> {
        starts
            .iter()
            .zip(counts)
            .map(|(t, count)| Bucket {
                start: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                count,
            })
            .collect()
    };
    let key = |r: &CountRow| -> BTreeMap<&'static str, String> {
        s.dims
            .iter()
            .zip([&r.d0, &r.d1])
            .map(|(d, v)| (d.name(), v.clone()))
            .collect()
    };
    let bucket_totals = dense(&mut totals.iter());
    let total: u64 = bucket_totals.iter().sum();
    let shown = top.len().min(s.top as usize);
    let mut groups = Vec::with_capacity(shown.max(1));
    if s.dims.is_empty() && top.is_empty() {
        // Ungrouped, there is always the one series, zeros and all.
        groups.push(Series {
            key: BTreeMap::new(),
            total: 0,
            buckets: shape(vec![0; starts.len()]),
        });
    }
    let mut in_top = vec![0u64; starts.len()];
    for g in &top[..shown] {
        let counts = dense(&mut series.iter().filter(|r| r.d0 == g.d0 && r.d1 == g.d1));
        for (sum, c) in in_top.iter_mut().zip(&counts) {
            *sum += c;
        }
        groups.push(Series {
            key: key(g),
            total: counts.iter().sum(),
            buckets: shape(counts),
        });
    }
    let other = (top.len() > shown).then(|| {
        let counts: Vec<u64> = bucket_totals
            .iter()
            .zip(&in_top)
            .map(|(t, s)| t.saturating_sub(*s))
            .collect();
        Series {
            key: BTreeMap::new(),
            total: counts.iter().sum(),
            buckets: shape(counts),
        }
    });
    Answer {
        total,
        groups,
        other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    fn stats(dims: Vec<Dim>, top: u32) -> Stats {
        Stats {
            interval: Interval::Hour,
            dims,
            top,
            from: t(10, 30),
            to: t(13, 0),
        }
    }

    fn row(h: u32, d0: &str, n: u64) -> CountRow {
        CountRow {
            bucket: t(h, 0).timestamp() as u32,
            d0: d0.into(),
            d1: String::new(),
            n,
        }
    }

    #[test]
    fn buckets_start_on_the_interval_and_cover_the_range() {
        let s = stats(vec![], 10);
        assert_eq!(s.buckets(), vec![t(10, 0), t(11, 0), t(12, 0)]);
        assert_eq!(s.bucket_count(), 3);
        let day = Stats {
            interval: Interval::Day,
            from: t(10, 30),
            to: t(10, 31) + Duration::days(2),
            ..s
        };
        assert_eq!(day.bucket_count(), 3);
        assert_eq!(day.buckets().len(), 3);
    }

    #[test]
    fn the_answer_is_dense_with_the_rest_as_other() {
        let s = stats(vec![Dim::Action], 1);
        let top = [row(0, "login", 5), row(0, "delete", 2)];
        let series = [row(10, "login", 3), row(12, "login", 2)];
        let totals = [row(10, "", 4), row(11, "", 1), row(12, "", 2)];
        let a = assemble(&s, &top, &series, &totals);
        assert_eq!(a.total, 7);
        assert_eq!(a.groups.len(), 1);
        assert_eq!(
            a.groups[0].key.get("action").map(String::as_str),
            Some("login")
        );
        let counts = |s: &Series| s.buckets.iter().map(|b| b.count).collect::<Vec<_>>();
        assert_eq!(counts(&a.groups[0]), vec![3, 0, 2]);
        assert_eq!(a.groups[0].buckets[1].start, "2026-11-30T11:00:00Z");
        let other = a.other.expect("other");
        assert_eq!(counts(&other), vec![1, 1, 0]);
        assert_eq!(other.total + a.groups[0].total, a.total);
        let all = assemble(&stats(vec![Dim::Action], 5), &top, &series, &totals);
        assert!(all.other.is_none(), "every group is shown");
    }

    #[test]
    fn the_sql_counts_events_and_takes_values_as_parameters() {
        let f = Filter::new("org_a");
        let s = stats(vec![Dim::StatusClass, Dim::Actor], 3);
        let top = build_top(&f, &s, &Plan::Events);
        assert!(top.text.contains("count(DISTINCT id) AS n"), "{}", top.text);
        assert!(
            top.text.contains("GROUP BY d0, d1 ORDER BY n DESC"),
            "{}",
            top.text
        );
        let series = build_series(&f, &s, &Plan::Events, &[("5xx".into(), "u1' OR 1".into())]);
        assert!(
            !series.text.contains("u1'"),
            "values are parameters: {}",
            series.text
        );
        assert!(series.params.iter().any(|(_, v)| v == "u1' OR 1"));
        assert!(series
            .text
            .contains("toUInt32(toStartOfHour(created_at)) AS bucket"));
        let totals = build_bucket_totals(&f, &s, &Plan::Events);
        assert!(totals.text.ends_with("GROUP BY bucket"), "{}", totals.text);
    }
}
