//! The performance goals, judged from one run's `results.json`: every row
//! is measured in that run or says exactly why it is not.

use serde_json::Value;

/// How one figure stands against its goal.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Met,
    /// Met by some of the measured cases only (named).
    Partly(String),
    NotMet,
    /// The goal compares against a ceiling that is not the binding one here.
    NotBinding(String),
    NotMeasured(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Met => write!(f, "met"),
            Verdict::Partly(which) => write!(f, "met {which}"),
            Verdict::NotMet => write!(f, "not met"),
            Verdict::NotBinding(why) => write!(f, "not the limit: {why}"),
            Verdict::NotMeasured(why) => write!(f, "not measured: {why}"),
        }
    }
}

/// One row of the goals table.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub figure: &'static str,
    pub goal: &'static str,
    pub measured: String,
    pub verdict: Verdict,
}

/// The goals table of a run's report (the object `results.json` holds).
pub fn judge(report: &Value) -> Vec<Goal> {
    vec![
        consumer_vs_insert(report),
        consumer_vs_fetch(report),
        ingest_vs_producer(report),
        freshness(report),
        newest_page(report),
        stats_from_rollups(report),
        keyset_flat(report),
        offset_vs_keyset(report),
        consumer_rss(report),
    ]
}

fn num(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

fn section<'a>(report: &'a Value, name: &str) -> Result<&'a Value, Verdict> {
    report
        .get(name)
        .ok_or_else(|| Verdict::NotMeasured(format!("the {name} section did not run")))
}

fn rows(report: &Value, pointer: &str) -> Vec<Value> {
    report
        .pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn unmeasured(figure: &'static str, goal: &'static str, verdict: Verdict) -> Goal {
    Goal {
        figure,
        goal,
        measured: "–".into(),
        verdict,
    }
}

/// One ratio per partition count against a lower bound.
fn per_partition(
    report: &Value,
    figure: &'static str,
    goal: &'static str,
    key: &str,
    min: f64,
) -> Result<(Goal, Vec<(u64, f64)>), Goal> {
    section(report, "consumer").map_err(|v| unmeasured(figure, goal, v))?;
    let ratios: Vec<(u64, f64)> = rows(report, "/consumer/scaling")
        .iter()
        .filter_map(|r| Some((r.get("partitions")?.as_u64()?, r.get(key)?.as_f64()?)))
        .collect();
    if ratios.is_empty() {
        let why = Verdict::NotMeasured(format!("no {key} in the consumer section"));
        return Err(unmeasured(figure, goal, why));
    }
    let measured = format!(
        "{} ({} partitions)",
        ratios
            .iter()
            .map(|(_, r)| format!("{r:.2}×"))
            .collect::<Vec<_>>()
            .join(" / "),
        ratios
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let met: Vec<String> = ratios
        .iter()
        .filter(|(_, r)| *r >= min)
        .map(|(p, _)| p.to_string())
        .collect();
    let verdict = if met.len() == ratios.len() {
        Verdict::Met
    } else if met.is_empty() {
        Verdict::NotMet
    } else {
        Verdict::Partly(format!("at {} partition(s)", met.join(", ")))
    };
    Ok((
        Goal {
            figure,
            goal,
            measured,
            verdict,
        },
        ratios,
    ))
}

fn consumer_vs_insert(report: &Value) -> Goal {
    const FIGURE: &str = "consumer vs raw RowBinary insert of the same rows (same ClickHouse)";
    match per_partition(report, FIGURE, "≥ 0.8×", "ratio_to_raw_insert", 0.8) {
        Ok((g, _)) | Err(g) => g,
    }
}

fn consumer_vs_fetch(report: &Value) -> Goal {
    const FIGURE: &str = "consumer vs bare-fetch ceiling of the same broker";
    let (mut g, _) = match per_partition(report, FIGURE, "≥ 0.9×", "ratio_to_kafka_fetch", 0.9) {
        Ok(x) => x,
        Err(g) => return g,
    };
    if g.verdict == Verdict::Met {
        return g;
    }
    // Where the bare fetch is faster than the raw insert, the consumer is
    // bounded by the insert: the fetch ratio says how much faster the broker
    // is, not how well the consumer uses it.
    let raw = num(report, "/consumer/raw_insert_events_per_sec/median");
    let fetch_over_insert: Vec<(u64, f64)> = rows(report, "/consumer/scaling")
        .iter()
        .filter_map(|r| {
            let p = r.get("partitions")?.as_u64()?;
            let f = num(r, "/kafka_fetch_ceiling_events_per_sec/median")?;
            Some((p, f / raw?))
        })
        .collect();
    if !fetch_over_insert.is_empty() && fetch_over_insert.iter().all(|(_, x)| *x > 1.0) {
        g.verdict = Verdict::NotBinding(format!(
            "the bare fetch is {} the raw insert, so the insert is the ceiling (row above)",
            fetch_over_insert
                .iter()
                .map(|(_, x)| format!("{x:.1}×"))
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    g
}

fn ingest_vs_producer(report: &Value) -> Goal {
    const FIGURE: &str = "ingest batch 1,000 vs raw producer, same bytes";
    const GOAL: &str = "≥ 0.8×";
    if let Err(v) = section(report, "ingest") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let row = rows(report, "/ingest/http")
        .into_iter()
        .find(|r| r.get("batch").and_then(Value::as_u64) == Some(1000));
    let Some(ratio) = row.as_ref().and_then(|r| num(r, "/ratio_to_raw")) else {
        let why = Verdict::NotMeasured("no batch-1,000 row in the ingest section".into());
        return unmeasured(FIGURE, GOAL, why);
    };
    let eps = row
        .as_ref()
        .and_then(|r| num(r, "/events_per_sec/median"))
        .unwrap_or(f64::NAN);
    let raw = num(report, "/ingest/raw_events_per_sec/median").unwrap_or(f64::NAN);
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: format!("{ratio:.2}× ({eps:.0} vs {raw:.0} events/s)"),
        verdict: if ratio >= 0.8 {
            Verdict::Met
        } else {
            Verdict::NotMet
        },
    }
}

fn freshness(report: &Value) -> Goal {
    const FIGURE: &str = "freshness at 5,000 events/s";
    const GOAL: &str = "p99 ≤ 2 s, 0 rejected";
    if let Err(v) = section(report, "freshness") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let Some(run) = rows(report, "/freshness/runs")
        .into_iter()
        .find(|r| r.get("target_rate").and_then(Value::as_u64) == Some(5000))
    else {
        let why = Verdict::NotMeasured("no 5,000 events/s run (quick runs use 500)".into());
        return unmeasured(FIGURE, GOAL, why);
    };
    let p99 = num(&run, "/p99_ms").unwrap_or(f64::NAN);
    let rejected = num(&run, "/rejected_requests").unwrap_or(f64::NAN);
    let seen = num(&run, "/markers_seen").unwrap_or(f64::NAN);
    let acked = num(&run, "/markers_acknowledged").unwrap_or(f64::NAN);
    let met = p99 <= 2000.0 && rejected == 0.0 && seen == acked;
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: format!(
            "p99 {:.2} s, {rejected:.0} rejected, {seen:.0} / {acked:.0} markers seen",
            p99 / 1000.0
        ),
        verdict: if met { Verdict::Met } else { Verdict::NotMet },
    }
}

fn stats_from_rollups(report: &Value) -> Goal {
    const FIGURE: &str = "stats: 30 days of daily counts, largest org, from the rollup";
    const GOAL: &str = "p50 ≤ 50 ms (10M events)";
    if let Err(v) = section(report, "query") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let Some(row) = rows(report, "/query/results").into_iter().find(|r| {
        r.get("query")
            .and_then(Value::as_str)
            .is_some_and(|q| q == "stats paths: 30 days of daily counts")
    }) else {
        let why = Verdict::NotMeasured("no stats row in the query section".into());
        return unmeasured(FIGURE, GOAL, why);
    };
    let p50 = num(&row, "/rollup_p50_ms").unwrap_or(f64::NAN);
    let raw = num(&row, "/events_p50_ms").unwrap_or(f64::NAN);
    let events = num(report, "/query/events").unwrap_or(f64::NAN);
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: format!(
            "{p50:.1} ms (events table {raw:.1} ms, {:.1}×; {events:.0} events)",
            raw / p50
        ),
        verdict: if p50 <= 50.0 {
            Verdict::Met
        } else {
            Verdict::NotMet
        },
    }
}

fn newest_page(report: &Value) -> Goal {
    const FIGURE: &str = "newest page, largest org, 10M events / 1,000 orgs";
    const GOAL: &str = "p50 ≤ 20 ms, p99 ≤ 100 ms";
    if let Err(v) = section(report, "query") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let Some(row) = rows(report, "/query/results").into_iter().find(|r| {
        r.get("query")
            .and_then(Value::as_str)
            .is_some_and(|q| q.starts_with("newest page"))
    }) else {
        let why = Verdict::NotMeasured("no newest-page row in the query section".into());
        return unmeasured(FIGURE, GOAL, why);
    };
    let p50 = num(&row, "/p50_ms").unwrap_or(f64::NAN);
    let p99 = num(&row, "/p99_ms").unwrap_or(f64::NAN);
    let events = num(report, "/query/events").unwrap_or(f64::NAN);
    let verdict = match (p50 <= 20.0, p99 <= 100.0) {
        (true, true) => Verdict::Met,
        (true, false) => Verdict::Partly("for p50".into()),
        (false, true) => Verdict::Partly("for p99".into()),
        (false, false) => Verdict::NotMet,
    };
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: format!("{p50:.1} / {p99:.1} ms ({events:.0} events)"),
        verdict,
    }
}

fn keyset_flat(report: &Value) -> Goal {
    const FIGURE: &str = "keyset deep page vs page 1";
    const GOAL: &str = "≤ 1.2×";
    if let Err(v) = section(report, "query") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let (Some(r), Some(page)) = (
        num(report, "/query/keyset_deep_over_first"),
        num(report, "/query/deep_page"),
    ) else {
        let why = Verdict::NotMeasured("no deep-page figure in the query section".into());
        return unmeasured(FIGURE, GOAL, why);
    };
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: format!("{r:.2}× (page {page:.0})"),
        verdict: if r <= 1.2 {
            Verdict::Met
        } else {
            Verdict::NotMet
        },
    }
}

fn offset_vs_keyset(report: &Value) -> Goal {
    const FIGURE: &str = "OFFSET vs keyset, same deep page";
    const GOAL: &str = "keyset ≥ 10× faster";
    if let Err(v) = section(report, "query") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let pages: Vec<(u64, f64)> = rows(report, "/query/offset_vs_keyset")
        .iter()
        .filter_map(|r| Some((r.get("page")?.as_u64()?, r.get("ratio")?.as_f64()?)))
        .collect();
    if pages.is_empty() {
        let why = Verdict::NotMeasured("no OFFSET comparison in the query section".into());
        return unmeasured(FIGURE, GOAL, why);
    }
    let short: Vec<String> = pages
        .iter()
        .filter(|(_, r)| *r < 10.0)
        .map(|(p, _)| p.to_string())
        .collect();
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: pages
            .iter()
            .map(|(p, r)| format!("{r:.1}× at page {p}"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict: if short.is_empty() {
            Verdict::Met
        } else if short.len() == pages.len() {
            Verdict::NotMet
        } else {
            Verdict::Partly(format!("except at page {}", short.join(", ")))
        },
    }
}

fn consumer_rss(report: &Value) -> Goal {
    const FIGURE: &str = "consumer RSS, one process";
    const GOAL: &str = "≤ 128 MiB at 1M events, flat";
    /// Growth from N to 2N events still counted as flat.
    const FLAT: f64 = 1.1;
    if let Err(v) = section(report, "consumer") {
        return unmeasured(FIGURE, GOAL, v);
    }
    let events = num(report, "/consumer/events").unwrap_or(f64::NAN);
    let single = rows(report, "/consumer/scaling")
        .into_iter()
        .find(|r| r.get("partitions").and_then(Value::as_u64) == Some(1))
        .and_then(|r| num(&r, "/peak_rss_mib_per_process"));
    let double = num(report, "/consumer/peak_rss_mib_at_double_volume");
    let (Some(single), Some(double)) = (single, double) else {
        let why = Verdict::NotMeasured("no single-consumer RSS in the consumer section".into());
        return unmeasured(FIGURE, GOAL, why);
    };
    let met = single <= 128.0 && double <= 128.0 && double <= single * FLAT;
    let verdict = if events < 1_000_000.0 {
        Verdict::NotMeasured(format!(
            "this run consumed {events:.0} events per figure, not 1M"
        ))
    } else if met {
        Verdict::Met
    } else {
        Verdict::NotMet
    };
    Goal {
        figure: FIGURE,
        goal: GOAL,
        measured: format!(
            "{single:.0} MiB at {events:.0} events, {double:.0} MiB at {:.0}",
            2.0 * events
        ),
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "ingest": {"raw_events_per_sec": {"median": 150000.0},
                       "http": [{"batch": 100, "ratio_to_raw": 0.3},
                                {"batch": 1000, "ratio_to_raw": 0.85, "events_per_sec": {"median": 127500.0}}]},
            "consumer": {"events": 1000000, "raw_insert_events_per_sec": {"median": 100000.0},
                         "peak_rss_mib_at_double_volume": 120.0,
                         "scaling": [
                {"partitions": 1, "ratio_to_raw_insert": 0.78, "ratio_to_kafka_fetch": 0.2,
                 "kafka_fetch_ceiling_events_per_sec": {"median": 400000.0}, "peak_rss_mib_per_process": 115.0},
                {"partitions": 2, "ratio_to_raw_insert": 0.98, "ratio_to_kafka_fetch": 0.5,
                 "kafka_fetch_ceiling_events_per_sec": {"median": 200000.0}, "peak_rss_mib_per_process": 118.0}]},
            "freshness": {"runs": [{"target_rate": 1000, "p99_ms": 900.0},
                                   {"target_rate": 5000, "p99_ms": 1800.0, "rejected_requests": 0,
                                    "markers_seen": 301, "markers_acknowledged": 301}]},
            "query": {"events": 10000000, "deep_page": 1000, "keyset_deep_over_first": 1.1,
                      "results": [{"query": "newest page (100) of the largest org", "p50_ms": 25.0, "p99_ms": 90.0},
                                  {"query": "stats paths: 30 days of daily counts", "rollup_p50_ms": 12.0, "events_p50_ms": 400.0}],
                      "offset_vs_keyset": [{"page": 1000, "ratio": 39.0}, {"page": 10000, "ratio": 8.0}]}
        })
    }

    fn verdict_of(report: &Value, figure_starts: &str) -> Verdict {
        judge(report)
            .into_iter()
            .find(|g| g.figure.starts_with(figure_starts))
            .map(|g| g.verdict)
            .unwrap_or_else(|| Verdict::NotMeasured("no such row".into()))
    }

    #[test]
    fn every_goal_is_judged_from_its_figures() {
        let r = report();
        let cases = [
            (
                "consumer vs raw",
                Verdict::Partly("at 2 partition(s)".into()),
            ),
            (
                "consumer vs bare",
                Verdict::NotBinding(
                    "the bare fetch is 4.0× / 2.0× the raw insert, so the insert is the ceiling (row above)"
                        .into(),
                ),
            ),
            ("ingest batch", Verdict::Met),
            ("freshness", Verdict::Met),
            ("newest page", Verdict::Partly("for p99".into())),
            ("stats: 30 days", Verdict::Met),
            ("keyset deep", Verdict::Met),
            ("OFFSET", Verdict::Partly("except at page 10000".into())),
            ("consumer RSS", Verdict::Met),
        ];
        assert_eq!(judge(&r).len(), cases.len());
        for (figure, want) in cases {
            assert_eq!(verdict_of(&r, figure), want, "{figure}");
        }
    }

    #[test]
    fn failures_and_gaps_are_named() {
        let mut r = report();
        r["consumer"]["peak_rss_mib_at_double_volume"] = json!(140.0);
        r["freshness"]["runs"][1]["rejected_requests"] = json!(3);
        r["consumer"]["raw_insert_events_per_sec"]["median"] = json!(900000.0);
        r["ingest"]["http"][1]["ratio_to_raw"] = json!(0.3);
        let cases = [
            ("consumer RSS", Verdict::NotMet),
            ("freshness", Verdict::NotMet),
            ("consumer vs bare", Verdict::NotMet),
            ("ingest batch", Verdict::NotMet),
        ];
        for (figure, want) in cases {
            assert_eq!(verdict_of(&r, figure), want, "{figure}");
        }
        r["query"]["results"][1]["rollup_p50_ms"] = json!(70.0);
        assert_eq!(verdict_of(&r, "stats: 30 days"), Verdict::NotMet);
        r["consumer"]["events"] = json!(20000);
        assert!(matches!(
            verdict_of(&r, "consumer RSS"),
            Verdict::NotMeasured(why) if why.contains("20000")
        ));
        let only_query = json!({"query": r["query"].clone()});
        for g in judge(&only_query) {
            if !g.figure.starts_with("newest")
                && !g.figure.starts_with("stats")
                && !g.figure.contains("keyset")
            {
                assert!(
                    matches!(&g.verdict, Verdict::NotMeasured(why) if why.contains("did not run")),
                    "{}: {}",
                    g.figure,
                    g.verdict
                );
            }
        }
    }
}
