//! `GET /v1/stats` against the real ClickHouse: every bucket and group of
//! the answer held to a brute-force count of the dataset, in each interval
//! and grouping, with top-N and `other`, filters, the token's scope, a
//! retried event stored twice counted once, and bad parameters named.

use std::collections::BTreeMap;

use chrono::Duration;
use trailhouse_query_api::query::stats::Interval;

use super::*;

/// A row's value of a dimension, as the API groups it.
fn dim(r: &EventRow, name: &str) -> String {
    match name {
        "action" => r.action_type.clone(),
        "actor" => r.actor_id.clone(),
        "status_class" => r
            .request_status
            .map(|s| format!("{}xx", s / 100))
            .unwrap_or_default(),
        "auth_type" => r.auth_type.clone(),
        other => panic!("no brute force for {other}"),
    }
}

/// Brute force: (group values, bucket start) → distinct events.
fn brute(
    rows: &[EventRow],
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    dims: &[&str],
    keep: impl Fn(&EventRow) -> bool,
) -> BTreeMap<(Vec<String>, String), u64> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.created_at >= from && r.created_at < to && keep(r))
    {
        if !seen.insert(r.id) {
            continue;
        }
        let key: Vec<String> = dims.iter().map(|d| dim(r, d)).collect();
        let start = interval
            .floor(r.created_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        *out.entry((key, start)).or_insert(0) += 1;
    }
    out
}

/// The answer's cells, as the brute force has them (zeros left out).
fn cells(body: &Value, dims: &[&str]) -> BTreeMap<(Vec<String>, String), u64> {
    let mut out = BTreeMap::new();
    for g in body["groups"].as_array().cloned().unwrap_or_default() {
        let key: Vec<String> = dims
            .iter()
            .map(|d| g["key"][*d].as_str().unwrap_or_default().to_string())
            .collect();
        for b in g["buckets"].as_array().cloned().unwrap_or_default() {
            let n = b["count"].as_u64().unwrap_or(0);
            if n > 0 {
                let start = b["start"].as_str().unwrap_or_default().to_string();
                out.insert((key.clone(), start), n);
            }
        }
    }
    out
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B")
}

#[tokio::test]
async fn stats_count_every_event_once_in_its_bucket_and_group() {
    let api = Api::new("q_stats").await;
    let t = api.admin("org_a");
    let (from, to) = (api.now - Duration::days(3), api.now + Duration::hours(1));
    let range = format!("&from={}&to={}", q(from), q(to));
    // Retried events stored twice: every count below must still count them
    // once (the brute force keeps one row per id).
    let copies: Vec<EventRow> = api
        .a
        .iter()
        .step_by(7)
        .map(|r| EventRow {
            kafka_offset: r.kafka_offset + 1_000_000,
            // As the consumer marks a copy (the rollup skips it).
            is_copy: true,
            ..r.clone()
        })
        .collect();
    api.env.insert_rows(&copies).await;
    let mut rows = api.a.clone();
    rows.extend(copies);
    // (interval, its name, dimensions, where the counts come from): the
    // rollup keeps actions, status classes and auth types, not actors.
    let cases: [(Interval, &str, &[&str], &str); 6] = [
        (Interval::Day, "day", &[], "rollup"),
        (Interval::Hour, "hour", &["action"], "rollup"),
        (
            Interval::Hour,
            "hour",
            &["action", "status_class"],
            "rollup",
        ),
        (Interval::Day, "day", &["auth_type"], "rollup"),
        (Interval::Day, "day", &["actor", "auth_type"], "events"),
        (Interval::Minute, "minute", &[], "events"),
    ];
    for (interval, name, dims, source) in cases {
        // A thousand minutes at most: the last hours of the range.
        let range = match interval {
            Interval::Minute => format!("&from={}&to={}", q(to - Duration::hours(16)), q(to)),
            _ => range.clone(),
        };
        let from = match interval {
            Interval::Minute => to - Duration::hours(16),
            _ => from,
        };
        let group: String = dims.iter().map(|d| format!("&group_by={d}")).collect();
        let path = format!("/v1/stats?interval={name}&top=100{group}{range}");
        let body = api.ok(&path, &t).await;
        let want = brute(&rows, interval, from, to, dims, |_| true);
        assert_eq!(cells(&body, dims), want, "{path}");
        let total: u64 = want.values().sum();
        assert_eq!(body["total"].as_u64(), Some(total), "{path}");
        assert!(body["other"].is_null(), "{path}: every group fits in 100");
        assert_eq!(body["source"], source, "{path}");
        let buckets = body["groups"][0]["buckets"].as_array().map_or(0, Vec::len);
        let step = interval.step().num_seconds();
        let expect = ((to - interval.floor(from)).num_seconds() + step - 1) / step;
        assert_eq!(buckets as i64, expect, "{path}: dense buckets");
    }

    // A range that starts and ends inside hours holding events: the whole
    // hours from the rollup, the two partial ones from the events table.
    let mut times: Vec<DateTime<Utc>> = api.a.iter().map(|r| r.created_at).collect();
    times.sort();
    let (a, z) = (
        times[times.len() / 4],
        times[3 * times.len() / 4] + Duration::microseconds(1),
    );
    assert!(z - a > Duration::hours(2), "the rows span hours");
    for (name, interval) in [("hour", Interval::Hour), ("day", Interval::Day)] {
        let path = format!(
            "/v1/stats?interval={name}&group_by=action&top=100&from={}&to={}",
            q(a),
            q(z)
        );
        let body = api.ok(&path, &t).await;
        assert_eq!(body["source"], "rollup", "{path}");
        let want = brute(&rows, interval, a, z, &["action"], |_| true);
        assert_eq!(cells(&body, &["action"]), want, "{path}");
    }

    // Top 2 actions, and the rest as `other`, bucket by bucket.
    let body = api
        .ok(
            &format!("/v1/stats?interval=hour&group_by=action&top=2{range}"),
            &t,
        )
        .await;
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    for ((k, _), n) in brute(&rows, Interval::Hour, from, to, &["action"], |_| true) {
        *by_action.entry(k[0].clone()).or_insert(0) += n;
    }
    let mut ranked: Vec<(String, u64)> = by_action.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = body["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|s| s["key"]["action"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        shown,
        ranked
            .iter()
            .take(2)
            .map(|r| r.0.clone())
            .collect::<Vec<_>>()
    );
    let rest: u64 = ranked.iter().skip(2).map(|r| r.1).sum();
    assert_eq!(body["other"]["total"].as_u64(), Some(rest));
    let sum = |v: &Value| -> u64 {
        v["buckets"]
            .as_array()
            .map_or(0, |b| b.iter().filter_map(|x| x["count"].as_u64()).sum())
    };
    assert_eq!(sum(&body["other"]), rest);

    // A filter, and another org's token.
    let body = api
        .ok(
            &format!("/v1/stats?interval=day&group_by=actor&action=login{range}"),
            &t,
        )
        .await;
    let want = brute(&rows, Interval::Day, from, to, &["actor"], |r| {
        r.action_type == "login"
    });
    assert_eq!(cells(&body, &["actor"]), want);
    assert_eq!(body["source"], "events");
    // Filters the rollup keeps: an action and whole status classes.
    let path = format!(
        "/v1/stats?interval=hour&group_by=status_class&action=login&status_min=400&status_max=599{range}"
    );
    let body = api.ok(&path, &t).await;
    let want = brute(&rows, Interval::Hour, from, to, &["status_class"], |r| {
        r.action_type == "login" && r.request_status.is_some_and(|s| (400..=599).contains(&s))
    });
    assert_eq!(cells(&body, &["status_class"]), want, "{path}");
    assert_eq!(body["source"], "rollup", "{path}");
    // Within a class, the events table answers.
    let path = format!("/v1/stats?interval=hour&status_min=400&status_max=404{range}");
    let body = api.ok(&path, &t).await;
    let want = brute(&rows, Interval::Hour, from, to, &[], |r| {
        r.request_status.is_some_and(|s| (400..=404).contains(&s))
    });
    assert_eq!(cells(&body, &[]), want, "{path}");
    assert_eq!(body["source"], "events", "{path}");
    let b = api
        .ok(
            &format!("/v1/stats?interval=day{range}"),
            &api.admin("org_b"),
        )
        .await;
    let want_b: u64 = brute(&api.b, Interval::Day, from, to, &[], |_| true)
        .values()
        .sum();
    assert_eq!(b["total"].as_u64(), Some(want_b));

    // Bad requests name their parameter; access as everywhere else.
    for (query, param) in [
        ("interval=week", "interval"),
        ("group_by=colour", "group_by"),
        ("top=1000", "top"),
        ("interval=minute&from=2020-01-01T00:00:00Z", "interval"),
        ("limit=5", "limit"),
    ] {
        let (st, body) = api.get(&format!("/v1/stats?{query}"), Some(&t)).await;
        assert_bad(st, &body, param, query);
    }
    // A range without events: one series of zeros when ungrouped.
    let empty = api
        .ok(
            "/v1/stats?interval=hour&from=2020-01-01T00:00:00Z&to=2020-01-01T05:00:00Z",
            &t,
        )
        .await;
    assert_eq!(empty["total"].as_u64(), Some(0));
    assert_eq!(
        empty["groups"][0]["buckets"].as_array().map(Vec::len),
        Some(5),
        "{empty}"
    );
    let (st, _) = api.get("/v1/stats", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let member = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ..Tok::default()
    });
    let (st, _) = api.get("/v1/stats", Some(&member)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A database without the rollup (or a query user not granted it): the
    // events table answers the same counts.
    api.env
        .clickhouse
        .client()
        .query(
            "RENAME TABLE events_hourly TO events_hourly_moved, events_daily TO events_daily_moved",
        )
        .execute()
        .await
        .expect("rename");
    let body = api.ok(&format!("/v1/stats?interval=day{range}"), &t).await;
    assert_eq!(body["source"], "events", "{body}");
    let total: u64 = brute(&rows, Interval::Day, from, to, &[], |_| true)
        .values()
        .sum();
    assert_eq!(body["total"].as_u64(), Some(total));
    api.env.stop().await;
}
