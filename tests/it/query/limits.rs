//! Bounded responses against the real stack: a byte cap per page whose
//! cursor continues, per-org and service query slots, per-org rate limits
//! with the RateLimit headers, and ClickHouse-side limits (result size,
//! read-only) on every query.

use std::collections::BTreeSet;

use super::*;

fn big_rows(org: &str, n: usize, body: usize, now: DateTime<Utc>) -> Vec<EventRow> {
    let mut rows = dataset::rows(&dataset::events(org, n, 0, 11, now));
    for r in &mut rows {
        r.request_body = "b".repeat(body);
        r.workspace_id = "ws1".into();
    }
    rows
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn pages_are_cut_at_the_byte_cap_and_their_cursors_continue() {
    let api = Api::with("q_page_bytes", |c| c.limits.max_page_bytes = 1 << 20).await;
    let mut rows = big_rows("org_big", 10, 300_000, api.now);
    // One event alone is larger than the cap: it still comes, alone.
    rows[4].request_body = "h".repeat(1_500_000);
    api.env.insert_rows(&rows).await;
    let want: BTreeSet<String> = row_ids(rows.iter()).into_iter().collect();
    let t = api.token(Tok {
        org: "org_big",
        roles: &["admin", "workbench"],
        ws: Some("ws1"),
        ..Tok::default()
    });
    let next = |key: &'static str, param: &'static str, base: &'static str| {
        move |b: &Value| cursor_link(base, param, b[key].as_str())
    };
    let orglog = "/api/v1/organizations/org_big/audit-logs?limit=500";
    type Follow = Box<dyn Fn(&Value) -> Option<String>>;
    let walks: [(&str, &str, Follow); 5] = [
        (
            "/v1/events?limit=1000",
            "data",
            Box::new(next("next_cursor", "cursor", "/v1/events?limit=1000")),
        ),
        (
            "/audit-log?limit=1000",
            "data",
            Box::new(next("cursor", "cursor", "/audit-log?limit=1000")),
        ),
        (orglog, "data", Box::new(next("cursor", "cursor", orglog))),
        (
            "/v1alpha/audit_logs?page_size=500",
            "audit_logs",
            Box::new(next(
                "next_page_token",
                "page_token",
                "/v1alpha/audit_logs?page_size=500",
            )),
        ),
        (
            "/api/v2/audit_logs?page[size]=100",
            "audit_logs",
            Box::new(|b: &Value| b["links"]["next"].as_str().map(String::from)),
        ),
    ];
    for (first, key, follow) in walks {
        let (pages, _) = walk(&api, &t, first, key, follow).await;
        let seen: Vec<String> = pages.iter().flatten().cloned().collect();
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique, want, "{first}: every event");
        assert_eq!(seen.len(), want.len(), "{first}: each once");
        assert!(pages.len() >= 4, "{first}: {} pages", pages.len());
        assert!(
            pages.iter().all(|p| !p.is_empty() && p.len() <= 3),
            "{first}: {pages:?}"
        );
        assert!(
            pages.iter().any(|p| p.len() == 1),
            "{first}: the big event alone"
        );
    }
    // Offset pages cannot continue after a cut page: refused, naming per_page.
    let (st, body) = api.get("/api/v2/audit_logs?per_page=100", Some(&t)).await;
    assert_bad(st, &body, "per_page", "offset over the cap");
    let one = api.ok("/api/v2/audit_logs?per_page=1&page=5", &t).await;
    assert_eq!(ids(&one, "audit_logs").len(), 1);
    // The export streams every event in capped chunks.
    let export = api
        .env
        .http
        .get(format!("{}/v1/events/export", api.url))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(export.lines().count(), 10);
    api.env.stop().await;
}

#[tokio::test]
async fn one_orgs_queries_cannot_take_every_slot() {
    let api = Api::with("q_slots", |c| {
        c.limits.max_in_flight = 4;
        c.limits.max_in_flight_per_org = 2;
    })
    .await;
    for org in ["org_h1", "org_h2"] {
        api.env
            .insert_rows(&big_rows(org, 64, 256_000, api.now))
            .await;
    }
    let t1 = api.admin("org_h1");
    let t2 = api.admin("org_h2");
    let b = api.admin("org_b");
    // An export the client does not read holds its slot while it streams.
    let hold = |t: String| {
        let (http, url) = (api.env.http.clone(), api.url.clone());
        async move {
            let r = http
                .get(format!("{url}/v1/events/export"))
                .bearer_auth(t)
                .send()
                .await
                .expect("export");
            assert_eq!(r.status(), StatusCode::OK);
            r
        }
    };
    let h1 = vec![hold(t1.clone()).await, hold(t1.clone()).await];
    let (st, body) = api.get("/v1/events?limit=1", Some(&t1)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "org_busy");
    let resp = api
        .env
        .http
        .get(format!("{}/api/v2/audit_logs", api.url))
        .bearer_auth(&t1)
        .send()
        .await
        .expect("zendesk");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), "1");
    let body: Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["error"], "TooManyRequests", "Zendesk's shape");
    // Another org is still served.
    api.ok("/v1/events?limit=1", &b).await;
    // Two orgs at their share fill the service: 503 with Retry-After.
    let h2 = vec![hold(t2.clone()).await, hold(t2.clone()).await];
    let resp = api
        .env
        .http
        .get(format!("{}/v1/events?limit=1", api.url))
        .bearer_auth(&b)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, "retry-after"), "1");
    let body: Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["error"]["code"], "overloaded");
    // Slots come back when the responses end.
    drop((h1, h2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, _) = api.get("/v1/events?limit=1", Some(&t1)).await;
        if st == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    api.env.stop().await;
}

#[tokio::test]
async fn org_rate_limits_answer_429_with_the_ratelimit_headers() {
    let api = Api::with("q_rate", |c| {
        c.limits.rate_limit = "3/min".parse().expect("rate");
        c.limits.rate_limit_overrides = "org_b=off".parse().expect("overrides");
    })
    .await;
    let a = api.admin("org_a");
    let get = |path: &str, t: &str| {
        api.env
            .http
            .get(format!("{}{path}", api.url))
            .bearer_auth(t)
            .send()
    };
    for left in [2, 1, 0] {
        let r = get("/v1/events?limit=1", &a).await.expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit-policy"), "\"org\";q=3;w=60");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"org\";r={left};t=")),
            "{}",
            header(&r, "ratelimit")
        );
    }
    let r = get("/api/v2/audit_logs", &a).await.expect("request");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = header(&r, "retry-after").parse().unwrap_or(0);
    assert!((1..=20).contains(&wait), "retry-after {wait}");
    assert!(header(&r, "ratelimit").starts_with("\"org\";r=0;t="));
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(
        body["error"], "TooManyRequests",
        "in Zendesk's shape: {body}"
    );
    let (st, body) = api.get("/v1/events", Some(&a)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another org has its own bucket; an override without a limit has none.
    let c = api.admin("org_c");
    assert_eq!(
        get("/v1/events", &c).await.expect("c").status(),
        StatusCode::OK
    );
    let b = api.admin("org_b");
    for _ in 0..10 {
        let r = get("/v1/events?limit=1", &b).await.expect("b");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("ratelimit").is_none());
    }
    let metrics = api
        .env
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("trailhouse_query_rate_limited_total 2"),
        "{metrics}"
    );
    api.env.stop().await;
}

#[tokio::test]
async fn clickhouse_limits_hold_on_every_query() {
    let api = Api::with("q_ch_limits", |c| c.limits.max_result_rows = 5).await;
    let t = api.admin("org_a");
    // A result over ClickHouse's limit is a clear 422 in each dialect's shape.
    let (st, body) = api.get("/v1/events?limit=10", Some(&t)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "result_too_large");
    let (st, body) = api.get("/api/v2/audit_logs?page[size]=10", Some(&t)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "UnprocessableEntity");
    assert_eq!(
        ids(&api.ok("/v1/events?limit=4", &t).await, "data").len(),
        4
    );
    // The query API's client cannot write, whatever SQL it were given.
    let limits = trailhouse_query_api::config::QueryLimits::default().clickhouse();
    let client = trailhouse_query_api::store::read_client(api.env.clickhouse.client(), &limits);
    for sql in [
        "DROP TABLE events",
        "TRUNCATE TABLE events",
        "CREATE TABLE stolen (x UInt8) ENGINE = Memory",
        "ALTER TABLE events DELETE WHERE 1",
    ] {
        let e = client
            .query(sql)
            .execute()
            .await
            .expect_err(sql)
            .to_string();
        assert!(e.contains("Code: 164"), "{sql}: {e}");
    }
    let n: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("the events are still there");
    assert_eq!(n as usize, api.a.len() + api.b.len());
    api.env.stop().await;
}

/// The least-privilege user of the query API, when the test ClickHouse has
/// one (`TRAILHOUSE_TEST_CLICKHOUSE_QUERY_USER` / `_PASSWORD`; the dev front
/// takes `--readonly-user`, a real server the grants in deploy/helm).
#[tokio::test]
async fn the_query_apis_clickhouse_user_only_reads() {
    let Ok(user) = std::env::var("TRAILHOUSE_TEST_CLICKHOUSE_QUERY_USER") else {
        eprintln!("TRAILHOUSE_TEST_CLICKHOUSE_QUERY_USER not set; skipped");
        return;
    };
    let env = trailhouse_tests::TestEnv::clickhouse_only("q_ch_user").await;
    let mut args = env.clickhouse.clone();
    args.user = user;
    args.password = trailhouse_common::Secret::new(
        std::env::var("TRAILHOUSE_TEST_CLICKHOUSE_QUERY_PASSWORD").unwrap_or_default(),
    );
    let client = args.client();
    let n: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("the query user reads the events");
    assert_eq!(n, 0);
    for sql in [
        "INSERT INTO events (org_id) VALUES ('x')",
        "DROP TABLE events",
        "CREATE TABLE stolen (x UInt8) ENGINE = Memory",
    ] {
        let e = client
            .query(sql)
            .execute()
            .await
            .expect_err(sql)
            .to_string();
        // READONLY on the dev front; ACCESS_DENIED where grants are enforced.
        assert!(
            e.contains("Code: 164") || e.contains("Code: 497"),
            "{sql}: {e}"
        );
    }
    env.stop().await;
}
