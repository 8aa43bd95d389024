//! `GET /v1/stats` of the native API: event counts over time buckets
//! (minute, hour, day), grouped by up to two dimensions, the top groups and
//! the rest as `other`, with the native filters and the token's scope. The
//! model and SQL are [`crate::query::stats`]; the answer says where its
//! counts come from (`source`: `rollup` when the rollups served the whole
//! days and hours of the range, `events` when the events table served all).

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::native;
use crate::auth::Claims;
use crate::error::{ApiError, Failure};
use crate::params::Params;
use crate::query::rollup::{plan, Plan};
use crate::query::stats::{
    assemble, build_bucket_totals, build_series, build_top, Answer, CountRow, Dim, Interval, Stats,
    MAX_BUCKETS, MAX_TOP,
};
use crate::query::{Cond, Filter};
use crate::state::{Routes, Shared};
use crate::store::{EventStore, StoreError};

pub const PATH: &str = "/v1/stats";
pub const DEFAULT_TOP: u32 = 10;
/// The most (group, bucket) counts one answer reads.
pub const MAX_CELLS: i64 = 10_000;

/// The stats parameters, and the native filters.
pub fn params() -> Vec<&'static str> {
    let mut v = native::filter_params();
    v.extend(["interval", "group_by", "top"]);
    v
}

pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new().route(PATH, get(stats::<S>))
}

/// The request's [`Stats`], from its parameters.
pub fn parse(p: &Params, now: chrono::DateTime<Utc>) -> Result<Stats, ApiError> {
    let interval = match p.one("interval")? {
        None => Interval::Hour,
        Some(s) => Interval::parse(s).ok_or_else(|| {
            ApiError::bad(
                "interval",
                format!("must be one of {}", Interval::NAMES.join(", ")),
            )
        })?,
    };
    let mut dims = Vec::new();
    for name in p.all(&["group_by"]) {
        let d = Dim::parse(&name).ok_or_else(|| {
            let names: Vec<&str> = Dim::ALL.iter().map(|d| d.name()).collect();
            ApiError::bad("group_by", format!("must be one of {}", names.join(", ")))
        })?;
        if dims.contains(&d) {
            return Err(ApiError::bad("group_by", format!("{name} is given twice")));
        }
        dims.push(d);
    }
    if dims.len() > 2 {
        return Err(ApiError::bad("group_by", "at most two dimensions"));
    }
    let top = p.size("top", DEFAULT_TOP, MAX_TOP)?;
    let to = p.time("to")?.unwrap_or(now);
    let from = p.time("from")?.unwrap_or(to - interval.default_span());
    if from >= to {
        return Err(ApiError::bad("from", "must be before `to`"));
    }
    let s = Stats {
        interval,
        dims,
        top,
        from,
        to,
    };
    let buckets = s.bucket_count();
    if buckets > MAX_BUCKETS {
        return Err(ApiError::bad(
            "interval",
            format!(
                "{buckets} {} buckets from `from` to `to`; at most {MAX_BUCKETS}: a wider interval or a shorter range",
                interval.as_str()
            ),
        ));
    }
    let groups = if s.dims.is_empty() { 1 } else { i64::from(top) };
    if buckets * groups > MAX_CELLS {
        return Err(ApiError::bad(
            "top",
            format!("{groups} groups × {buckets} buckets is over {MAX_CELLS} counts: a smaller top, a wider interval or a shorter range"),
        ));
    }
    Ok(s)
}

pub async fn stats<S: EventStore>(
    State(state): State<Shared<S>>,
    claims: Claims,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Failure> {
    let (p, mut f) = native::filtered(&state.access, &claims, raw.as_deref(), &params())?;
    let s = parse(&p, Utc::now())?;
    // The range holds for the counts whether or not it was given.
    if !p.has("from") {
        f.push(Cond::From(s.from));
    }
    if !p.has("to") {
        f.push(Cond::Until(s.to));
    }
    let mut plan = plan(&f, &s);
    let a = match count(&state.store, &f, &s, &plan).await {
        // A database not migrated to the rollups yet, or a query user not
        // granted them: the events table answers, and the log says why.
        Err(e) if plan != Plan::Events && rollup_unreadable(&e) => {
            tracing::warn!(error = %e, "the rollups cannot be read; counting from the events table");
            plan = Plan::Events;
            count(&state.store, &f, &s, &plan).await
        }
        other => other,
    }
    .map_err(ApiError::from)?;
    let time = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    Ok(Json(json!({
        "interval": s.interval.as_str(),
        "from": time(s.from),
        "to": time(s.to),
        "group_by": s.dims.iter().map(|d| d.name()).collect::<Vec<_>>(),
        "top": s.top,
        "source": plan.source(),
        "total": a.total,
        "groups": a.groups,
        "other": a.other,
    })))
}

/// The rollup table is missing (code 60) or not granted (497).
fn rollup_unreadable(e: &StoreError) -> bool {
    matches!(e, StoreError::Query(_)) && matches!(e.code(), Some(60 | 497))
}

/// Reads the counts of `s` over `f` by `plan` and puts the answer
/// together, in as few reads as the answer needs: ungrouped, the totals per
/// bucket are the one series; grouped, the top groups and their series, and
/// the totals per bucket only when groups are left over as `other`.
pub async fn count<S: EventStore>(
    store: &S,
    f: &Filter,
    s: &Stats,
    plan: &Plan,
) -> Result<Answer, StoreError> {
    if s.dims.is_empty() {
        let totals = store.counts(&build_bucket_totals(f, s, plan)).await?;
        let n: u64 = totals.iter().map(|r| r.n).sum();
        let top: Vec<CountRow> = (n > 0)
            .then(|| CountRow {
                bucket: 0,
                d0: String::new(),
                d1: String::new(),
                n,
            })
            .into_iter()
            .collect();
        return Ok(assemble(s, &top, &totals, &totals));
    }
    let top = store.counts(&build_top(f, s, plan)).await?;
    let groups: Vec<(String, String)> = top
        .iter()
        .take(s.top as usize)
        .map(|r| (r.d0.clone(), r.d1.clone()))
        .collect();
    let series = if groups.is_empty() {
        Vec::new()
    } else {
        store.counts(&build_series(f, s, plan, &groups)).await?
    };
    // Every group is shown: the totals per bucket are the series' sums.
    if top.len() <= s.top as usize {
        return Ok(assemble(s, &top, &series, &series));
    }
    let totals = store.counts(&build_bucket_totals(f, s, plan)).await?;
    Ok(assemble(s, &top, &series, &totals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn parsed(q: &str) -> Result<Stats, ApiError> {
        parse(&Params::parse(Some(q))?, now())
    }

    #[test]
    fn defaults_and_values() {
        let s = parsed("").expect("defaults");
        assert_eq!((s.interval, s.top, s.dims.len()), (Interval::Hour, 10, 0));
        assert_eq!(s.to - s.from, chrono::Duration::days(1));
        let s = parsed("interval=day&group_by=action&group_by=status_class&top=5").expect("day");
        assert_eq!(s.dims, vec![Dim::Action, Dim::StatusClass]);
        assert_eq!(s.to - s.from, chrono::Duration::days(30));
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let cases = [
            ("interval=week", "interval"),
            ("group_by=colour", "group_by"),
            ("group_by=action&group_by=action", "group_by"),
            ("group_by=action&group_by=actor&group_by=source", "group_by"),
            ("top=0", "top"),
            ("top=101", "top"),
            ("from=2026-12-01T12:00:00Z&to=2026-12-01T11:00:00Z", "from"),
            ("interval=minute&from=2026-11-01T00:00:00Z", "interval"),
            (
                "interval=hour&from=2026-11-01T00:00:00Z&group_by=actor&top=100",
                "top",
            ),
        ];
        for (q, param) in cases {
            match parsed(q) {
                Err(ApiError::BadParam { param: p, .. }) => assert_eq!(p, param, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }
}
