//! Counts from the rollups (`events_daily`, `events_hourly`, migrations 5
//! and 7) when a request allows it: hour or day buckets, grouped by
//! dimensions the rollups keep, filtered on columns they keep. A range is
//! cut into parts read from the coarsest table that holds them whole: whole
//! days (day buckets only) from the daily rollup, whole hours from the
//! hourly one, the part of an hour at either end (a range that does not
//! start or end on the hour, e.g. one ending now) from the events table.
//! The parts are disjoint in time, so their counts add up, in one
//! `UNION ALL`. The rollups count each event once as the raw path does
//! (copies are marked by the consumer and skipped by their views).

use std::fmt::Write as _;

use chrono::{DateTime, Duration, DurationRound, Utc};

use super::sql::Builder;
use super::stats::{Dim, Interval, Stats};
use super::{Cond, Field, Filter, Sql};
use trailhouse_schemas::migrations::{DAILY_TABLE, HOURLY_TABLE};

/// Where one request's counts are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The events table only.
    Events,
    /// Each part from its table.
    Rollup(Vec<Part>),
}

/// A time range `[from, to)` read from one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub table: Table,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The tables a part is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Events,
    Hourly,
    Daily,
}

impl Plan {
    /// The `source` of the answer.
    pub fn source(&self) -> &'static str {
        match self {
            Plan::Events => "events",
            Plan::Rollup(_) => "rollup",
        }
    }
}

/// A condition of the filter, as the rollup can hold it.
enum RollupCond<'a> {
    In(&'static str, &'a [String]),
    StatusClasses(Vec<String>),
}

/// A non-time condition on the rollup's columns; `None` if the rollup
/// cannot tell (a column it does not keep, a status range that splits a
/// class).
fn rollup_cond(c: &Cond) -> Option<RollupCond<'_>> {
    match c {
        Cond::AnyOf(Field::ActionType, v) => Some(RollupCond::In("action_type", v)),
        Cond::AnyOf(Field::AuthType, v) => Some(RollupCond::In("auth_type", v)),
        Cond::AnyOf(Field::Source, v) => Some(RollupCond::In("source", v)),
        Cond::StatusBetween(Some(lo), Some(hi)) if lo % 100 == 0 && hi % 100 == 99 && lo <= hi => {
            Some(RollupCond::StatusClasses(
                (lo / 100..=hi / 100).map(|c| format!("{c}xx")).collect(),
            ))
        }
        _ => None,
    }
}

/// The column of a dimension in the rollup, as a `String`.
fn rollup_dim(d: Dim) -> Option<&'static str> {
    match d {
        Dim::Action => Some("toString(action_type)"),
        Dim::StatusClass => Some("toString(status_class)"),
        Dim::AuthType => Some("toString(auth_type)"),
        Dim::Source => Some("toString(source)"),
        Dim::Actor | Dim::ResourceType | Dim::Workspace => None,
    }
}

/// The time range of `f` (the latest `From`, the earliest `Until`).
fn range(f: &Filter) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut from: Option<DateTime<Utc>> = None;
    let mut until: Option<DateTime<Utc>> = None;
    for c in &f.conds {
        match c {
            Cond::From(t) => from = Some(from.map_or(*t, |f| f.max(*t))),
            Cond::Until(t) => until = Some(until.map_or(*t, |u| u.min(*t))),
            _ => {}
        }
    }
    (from, until)
}

fn floor(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    t.duration_trunc(step).unwrap_or(t)
}

fn ceil(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    let f = floor(t, step);
    if f == t {
        t
    } else {
        f + step
    }
}

/// Where the counts of `s` over `f` are read: the rollups when the
/// interval, the grouping and every condition allow and the range holds a
/// whole hour.
pub fn plan(f: &Filter, s: &Stats) -> Plan {
    let allowed = s.interval != Interval::Minute
        && s.dims.iter().all(|d| rollup_dim(*d).is_some())
        && f.conds
            .iter()
            .all(|c| matches!(c, Cond::From(_) | Cond::Until(_)) || rollup_cond(c).is_some());
    let (Some(from), Some(to)) = range(f) else {
        return Plan::Events;
    };
    let (hour, day) = (Duration::hours(1), Duration::days(1));
    let (hours_from, hours_to) = (ceil(from, hour), floor(to, hour));
    if !allowed || hours_from >= hours_to {
        return Plan::Events;
    }
    // Whole days inside the whole hours, for day buckets.
    let (days_from, days_to) = match s.interval {
        Interval::Day => (ceil(hours_from, day), floor(hours_to, day)),
        _ => (hours_to, hours_to),
    };
    let mut cuts = vec![(Table::Events, from, hours_from)];
    if days_from < days_to {
        cuts.push((Table::Hourly, hours_from, days_from));
        cuts.push((Table::Daily, days_from, days_to));
        cuts.push((Table::Hourly, days_to, hours_to));
    } else {
        cuts.push((Table::Hourly, hours_from, hours_to));
    }
    cuts.push((Table::Events, hours_to, to));
    Plan::Rollup(
        cuts.into_iter()
            .filter(|(_, a, z)| a < z)
            .map(|(table, from, to)| Part { table, from, to })
            .collect(),
    )
}

/// `f` with its time range replaced by `[from, to)`.
fn within(f: &Filter, from: DateTime<Utc>, to: DateTime<Utc>) -> Filter {
    let mut out = Filter::new(f.org_id.clone());
    out.conds = f
        .conds
        .iter()
        .filter(|c| !matches!(c, Cond::From(_) | Cond::Until(_)))
        .cloned()
        .collect();
    out.conds.push(Cond::From(from));
    out.conds.push(Cond::Until(to));
    out
}

/// What a part selects: the bucket (or 0), the group keys and the count.
#[derive(Clone, Copy)]
enum Shape {
    /// `0` as the bucket: totals per group.
    Groups,
    /// Per bucket and group.
    Series,
    /// Per bucket, all groups together.
    Buckets,
}

fn keys(s: &Stats, shape: Shape, dim: impl Fn(Dim) -> &'static str) -> String {
    (0..2)
        .map(|i| match (shape, s.dims.get(i)) {
            (Shape::Groups | Shape::Series, Some(d)) => format!("{} AS d{i}", dim(*d)),
            _ => format!("'' AS d{i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn group_by(shape: Shape) -> &'static str {
    match shape {
        Shape::Groups => " GROUP BY d0, d1",
        Shape::Series => " GROUP BY bucket, d0, d1",
        Shape::Buckets => " GROUP BY bucket",
    }
}

/// `UNION ALL` of the plan's parts, each `(bucket, d0, d1, n)` of `shape`.
fn parts(b: &mut Builder, f: &Filter, s: &Stats, plan: &Plan, shape: Shape) {
    let Plan::Rollup(parts) = plan else {
        return;
    };
    let bucket = |time: &str| match (shape, s.interval) {
        (Shape::Groups, _) => "toUInt32(0) AS bucket".to_string(),
        (_, Interval::Day) => format!("toUInt32(toStartOfDay({time}, 'UTC')) AS bucket"),
        (_, Interval::Minute) => format!("toUInt32(toStartOfMinute({time})) AS bucket"),
        (_, Interval::Hour) => format!("toUInt32(toStartOfHour({time})) AS bucket"),
    };
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            b.text.push_str(" UNION ALL ");
        }
        let (table, column, ty, text) = match part.table {
            Table::Events => {
                let select = format!(
                    "{}, {}, count(DISTINCT id) AS n",
                    bucket("created_at"),
                    keys(s, shape, Dim::sql)
                );
                b.push_select(&select, &within(f, part.from, part.to));
                b.text.push_str(group_by(shape));
                continue;
            }
            Table::Hourly => (
                HOURLY_TABLE,
                "hour",
                "DateTime('UTC')",
                hour_text as fn(_) -> _,
            ),
            Table::Daily => (DAILY_TABLE, "day", "Date", day_text as fn(_) -> _),
        };
        let _ = write!(
            b.text,
            "SELECT {}, {}, toUInt64(sum(events)) AS n FROM {table}",
            bucket(column),
            keys(s, shape, |d| rollup_dim(d).unwrap_or("''")),
        );
        let org = b.param("org", "String", f.org_id.clone());
        let from = b.param("rollup_from", ty, text(part.from));
        let to = b.param("rollup_to", ty, text(part.to));
        let _ = write!(
            b.text,
            " WHERE org_id = {org} AND {column} >= {from} AND {column} < {to}"
        );
        for c in &f.conds {
            let sql = match rollup_cond(c) {
                Some(RollupCond::In(col, values)) => {
                    let list: Vec<String> = values
                        .iter()
                        .map(|v| b.param(col, "String", v.clone()))
                        .collect();
                    format!("{col} IN ({})", list.join(", "))
                }
                Some(RollupCond::StatusClasses(classes)) => {
                    let list: Vec<String> = classes
                        .into_iter()
                        .map(|v| b.param("status_class", "String", v))
                        .collect();
                    format!("status_class IN ({})", list.join(", "))
                }
                None => continue,
            };
            let _ = write!(b.text, " AND {sql}");
        }
        b.text.push_str(group_by(shape));
    }
}

fn day_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn hour_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// [`super::stats::build_top`] of a rollup plan.
pub(super) fn top(f: &Filter, s: &Stats, plan: &Plan) -> Sql {
    let mut b = Builder::new();
    b.text
        .push_str("SELECT bucket, d0, d1, toUInt64(sum(n)) AS n FROM (");
    parts(&mut b, f, s, plan, Shape::Groups);
    let limit = b.param("top", "UInt64", (u64::from(s.top) + 1).to_string());
    let _ = write!(
        b.text,
        ") GROUP BY bucket, d0, d1 ORDER BY n DESC, d0, d1 LIMIT {limit}"
    );
    b.finish()
}

/// [`super::stats::build_series`] of a rollup plan.
pub(super) fn series(f: &Filter, s: &Stats, plan: &Plan, groups: &[(String, String)]) -> Sql {
    let mut b = Builder::new();
    b.text
        .push_str("SELECT bucket, d0, d1, toUInt64(sum(n)) AS n FROM (");
    parts(&mut b, f, s, plan, Shape::Series);
    b.text.push(')');
    if !s.dims.is_empty() {
        let tuples = b.group_tuples(groups);
        let _ = write!(b.text, " WHERE (d0, d1) IN ({tuples})");
    }
    b.text.push_str(" GROUP BY bucket, d0, d1");
    b.finish()
}

/// [`super::stats::build_bucket_totals`] of a rollup plan.
pub(super) fn bucket_totals(f: &Filter, s: &Stats, plan: &Plan) -> Sql {
    let mut b = Builder::new();
    b.text
        .push_str("SELECT bucket, d0, d1, toUInt64(sum(n)) AS n FROM (");
    parts(&mut b, f, s, plan, Shape::Buckets);
    b.text.push_str(") GROUP BY bucket, d0, d1");
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    fn stats(interval: Interval, dims: Vec<Dim>, from: DateTime<Utc>, to: DateTime<Utc>) -> Stats {
        Stats {
            interval,
            dims,
            top: 5,
            from,
            to,
        }
    }

    fn filter(from: DateTime<Utc>, to: DateTime<Utc>) -> Filter {
        Filter::new("org_a")
            .and(Cond::From(from))
            .and(Cond::Until(to))
    }

    #[test]
    fn the_rollup_serves_what_it_keeps_and_the_events_the_rest() {
        let (from, to) = (t(1, 10, 30), t(3, 12, 15));
        let hourly = |dims| stats(Interval::Hour, dims, from, to);
        let cases: Vec<(&str, Filter, Stats, bool)> = vec![
            ("plain", filter(from, to), hourly(vec![]), true),
            (
                "kept dimensions",
                filter(from, to),
                hourly(vec![Dim::Action, Dim::StatusClass]),
                true,
            ),
            (
                "an actor dimension",
                filter(from, to),
                hourly(vec![Dim::Actor]),
                false,
            ),
            (
                "minutes",
                filter(from, to),
                stats(Interval::Minute, vec![], from, to),
                false,
            ),
            (
                "kept filters",
                filter(from, to)
                    .and(Cond::AnyOf(Field::ActionType, vec!["user.login".into()]))
                    .and(Cond::AnyOf(Field::Source, vec!["api".into()]))
                    .and(Cond::StatusBetween(Some(400), Some(599))),
                hourly(vec![]),
                true,
            ),
            (
                "a status range inside a class",
                filter(from, to).and(Cond::StatusBetween(Some(400), Some(404))),
                hourly(vec![]),
                false,
            ),
            (
                "a workspace (a token's scope)",
                filter(from, to).and(Cond::AnyOf(Field::Workspace, vec!["ws".into()])),
                hourly(vec![]),
                false,
            ),
            (
                "less than a whole hour",
                filter(t(1, 10, 5), t(1, 10, 55)),
                stats(Interval::Hour, vec![], t(1, 10, 5), t(1, 10, 55)),
                false,
            ),
        ];
        for (case, f, s, rollup) in cases {
            assert_eq!(
                matches!(plan(&f, &s), Plan::Rollup { .. }),
                rollup,
                "{case}"
            );
        }
    }

    fn part(table: Table, from: DateTime<Utc>, to: DateTime<Utc>) -> Part {
        Part { table, from, to }
    }

    #[test]
    fn each_part_of_the_range_comes_from_the_coarsest_table_holding_it_whole() {
        let (from, to) = (t(1, 10, 30), t(3, 12, 15));
        let p = plan(&filter(from, to), &stats(Interval::Day, vec![], from, to));
        assert_eq!(
            p,
            Plan::Rollup(vec![
                part(Table::Events, from, t(1, 11, 0)),
                part(Table::Hourly, t(1, 11, 0), t(2, 0, 0)),
                part(Table::Daily, t(2, 0, 0), t(3, 0, 0)),
                part(Table::Hourly, t(3, 0, 0), t(3, 12, 0)),
                part(Table::Events, t(3, 12, 0), to),
            ])
        );
        // Hour buckets: no days.
        let p = plan(&filter(from, to), &stats(Interval::Hour, vec![], from, to));
        assert_eq!(
            p,
            Plan::Rollup(vec![
                part(Table::Events, from, t(1, 11, 0)),
                part(Table::Hourly, t(1, 11, 0), t(3, 12, 0)),
                part(Table::Events, t(3, 12, 0), to),
            ])
        );
        let aligned = plan(
            &filter(t(1, 0, 0), t(2, 0, 0)),
            &stats(Interval::Day, vec![], t(1, 0, 0), t(2, 0, 0)),
        );
        assert_eq!(
            aligned,
            Plan::Rollup(vec![part(Table::Daily, t(1, 0, 0), t(2, 0, 0))])
        );
        // Less than a day of whole hours: hours only.
        let short = plan(
            &filter(t(1, 3, 10), t(1, 20, 0)),
            &stats(Interval::Day, vec![], t(1, 3, 10), t(1, 20, 0)),
        );
        assert_eq!(
            short,
            Plan::Rollup(vec![
                part(Table::Events, t(1, 3, 10), t(1, 4, 0)),
                part(Table::Hourly, t(1, 4, 0), t(1, 20, 0)),
            ])
        );
    }

    #[test]
    fn the_sql_reads_the_rollup_and_takes_values_as_parameters() {
        let (from, to) = (t(1, 10, 30), t(3, 12, 15));
        let f = filter(from, to)
            .and(Cond::AnyOf(Field::ActionType, vec!["x' OR 1".into()]))
            .and(Cond::StatusBetween(Some(500), Some(599)));
        let s = stats(Interval::Day, vec![Dim::Action], from, to);
        let p = plan(&f, &s);
        let top = top(&f, &s, &p);
        assert!(
            top.text.contains("FROM events_hourly WHERE org_id = {org_"),
            "{}",
            top.text
        );
        assert!(
            top.text.contains("status_class IN ({status_class_"),
            "{}",
            top.text
        );
        assert_eq!(top.text.matches(" UNION ALL ").count(), 4, "{}", top.text);
        assert!(!top.text.contains("x' OR 1"), "{}", top.text);
        let series = series(&f, &s, &p, &[("login".into(), String::new())]);
        assert!(
            series
                .text
                .contains("toUInt32(toStartOfDay(hour, 'UTC')) AS bucket"),
            "{}",
            series.text
        );
        assert!(series
            .text
            .contains("toUInt32(toStartOfDay(created_at, 'UTC')) AS bucket"));
        assert!(series
            .text
            .contains("toUInt32(toStartOfDay(day, 'UTC')) AS bucket"));
        assert!(series.text.contains("WHERE (d0, d1) IN ("));
        let totals = bucket_totals(&f, &s, &p);
        assert!(
            totals.text.ends_with("GROUP BY bucket, d0, d1"),
            "{}",
            totals.text
        );
        // Every placeholder has its parameter, each name once.
        for sql in [&top, &series, &totals] {
            let mut names: Vec<&String> = sql.params.iter().map(|(n, _)| n).collect();
            let before = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), before);
            for (n, _) in &sql.params {
                assert!(sql.text.contains(&format!("{{{n}:")), "{n}");
            }
        }
    }
}
