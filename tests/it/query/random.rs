//! Random filters of the native API against a brute-force filter.

use trailhouse_query_api::query::{Cond, Field, Filter};

use super::*;

#[derive(Debug, Clone)]
struct Case {
    fields: Vec<(&'static str, Field, Vec<String>)>,
    statuses: Vec<u16>,
    status_min: Option<u16>,
    status_max: Option<u16>,
    path_prefix: Option<String>,
    path_contains: Option<String>,
    from: Option<usize>,
    to: Option<usize>,
    asc: bool,
    limit: u32,
}

fn arb_case() -> impl proptest::strategy::Strategy<Value = Case> {
    use proptest::prelude::*;
    use proptest::sample::subsequence;
    // Most fields unfiltered in a given case, so that combinations still match.
    let sub = |xs: &'static [&'static str]| {
        prop_oneof![
            3 => Just(Vec::new()),
            1 => subsequence(xs.to_vec(), 1..=2)
                .prop_map(|v| v.into_iter().map(String::from).collect::<Vec<_>>()),
        ]
    };
    let fields = (
        sub(&dataset::ACTIONS),
        sub(&dataset::ACTORS),
        sub(&dataset::AUTH_TYPES),
        sub(&dataset::ENVS),
        sub(&["ws1", "ws2"]),
        sub(&["ticket", "user"]),
        sub(&dataset::METHODS),
        sub(&["10.0.0.1", "2001:db8::1"]),
        sub(&dataset::SOURCES),
    )
        .prop_map(|(ac, ar, au, en, ws, rt, me, ip, so)| {
            vec![
                ("action", Field::ActionType, ac),
                ("actor_id", Field::ActorId, ar),
                ("auth_type", Field::AuthType, au),
                ("environment_id", Field::Environment, en),
                ("workspace_id", Field::Workspace, ws),
                ("resource_type", Field::ResourceType, rt),
                ("method", Field::Method, me),
                ("ip", Field::Ip, ip),
                ("source", Field::Source, so),
            ]
        });
    (
        fields,
        subsequence(vec![200u16, 204, 404, 500], 0..=2),
        proptest::option::of(prop_oneof![Just(200u16), Just(400), Just(404)]),
        proptest::option::of(prop_oneof![Just(204u16), Just(499), Just(500)]),
        proptest::option::of(prop_oneof![
            Just("/api".to_string()),
            Just("/api/v1/users".to_string()),
            Just("/login".to_string())
        ]),
        proptest::option::of(prop_oneof![
            Just("tickets".to_string()),
            Just("SEARCH".to_string()),
            Just("users/1".to_string()),
            // LIKE wildcards must match literally.
            Just("_".to_string()),
            Just("%".to_string())
        ]),
        proptest::option::of(0usize..1200),
        proptest::option::of(0usize..1200),
        any::<bool>(),
        1u32..400,
    )
        .prop_map(
            |(
                fields,
                statuses,
                status_min,
                status_max,
                path_prefix,
                path_contains,
                from,
                to,
                asc,
                limit,
            )| Case {
                fields,
                statuses,
                status_min,
                status_max,
                path_prefix,
                path_contains,
                from,
                to,
                asc,
                limit,
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_filters_return_what_a_brute_force_filter_returns() {
    use proptest::test_runner::{Config, TestRunner};
    let api = Api::new("q_random").await;
    let handle = tokio::runtime::Handle::current();
    let token = api.admin("org_a");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let non_empty = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&arb_case(), |case| {
        let mut q: Vec<(String, String)> = Vec::new();
        let mut f = Filter::new("org_a");
        for (name, field, values) in &case.fields {
            for v in values {
                q.push((name.to_string(), v.clone()));
            }
            f.push(Cond::AnyOf(*field, values.clone()));
        }
        for s in &case.statuses {
            q.push(("status".into(), s.to_string()));
        }
        f.push(Cond::StatusIn(case.statuses.clone()));
        let (lo, hi) = match (case.status_min, case.status_max) {
            (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
            other => other,
        };
        if let Some(v) = lo {
            q.push(("status_min".into(), v.to_string()));
        }
        if let Some(v) = hi {
            q.push(("status_max".into(), v.to_string()));
        }
        f.push(Cond::StatusBetween(lo, hi));
        if let Some(p) = &case.path_prefix {
            q.push(("path_prefix".into(), p.clone()));
            f.push(Cond::PathPrefix(p.clone()));
        }
        if let Some(p) = &case.path_contains {
            q.push(("path_contains".into(), p.clone()));
            f.push(Cond::PathContains(p.clone()));
        }
        let mut times = [
            case.from.map(|i| api.a[i].created_at),
            case.to.map(|i| api.a[i].created_at),
        ];
        if let [Some(a), Some(b)] = times {
            if a > b {
                times = [Some(b), Some(a)];
            }
        }
        if let Some(t) = times[0] {
            q.push((
                "from".into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ));
            f.push(Cond::From(t));
        }
        if let Some(t) = times[1] {
            q.push((
                "to".into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ));
            f.push(Cond::Until(t));
        }
        q.push(("order".into(), if case.asc { "asc" } else { "desc" }.into()));
        q.push(("limit".into(), case.limit.to_string()));
        let mut want: Vec<String> = row_ids(api.a.iter().filter(|r| f.matches(r)));
        if case.asc {
            want.reverse();
        }
        if !want.is_empty() {
            non_empty.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let base = serde_urlencoded::to_string(&q).unwrap_or_default();
        let got = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let mut got = Vec::new();
                let mut url = format!("/v1/events?{base}");
                loop {
                    let body = api.ok(&url, &token).await;
                    let page = ids(&body, "data");
                    assert!(page.len() <= case.limit as usize);
                    got.extend(page);
                    match body["next_cursor"].as_str() {
                        Some(c) => url = format!("/v1/events?{base}&cursor={c}"),
                        None => break,
                    }
                }
                got
            })
        });
        proptest::prop_assert_eq!(got, want, "{}", base);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must exercise matches, not only empty results.
    let n = non_empty.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n >= 16, "only {n} of 64 random filters matched anything");
    api.env.stop().await;
}
