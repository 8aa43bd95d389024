//! Cursors of every cursor dialect: bound to the org, the dialect, the
//! order and the filter set (one table of dialects, one test body), and full
//! walks over events with equal timestamps.

use chrono::Duration;

use super::*;

/// How one dialect pages with cursors. Every URL is a first request; the
/// test appends `&{param}={cursor}`.
struct CursorDialect {
    name: &'static str,
    /// A page with a next cursor, and the same request again.
    first: &'static str,
    /// The parameter that takes the cursor.
    param: &'static str,
    /// Where the response carries the next cursor (a JSON pointer).
    next_at: &'static str,
    /// The request with another filter set.
    other_filter: &'static str,
    /// The request in the other order, where the dialect has one.
    other_order: Option<&'static str>,
    /// The request with another page size (not part of the binding).
    other_size: &'static str,
    /// The request of another org's token (`org_b`).
    other_org: &'static str,
    /// The parameter of the other walk, where each walk has its own.
    other_walk: Option<&'static str>,
}

const CURSOR_DIALECTS: [CursorDialect; 5] = [
    CursorDialect {
        name: "native",
        first: "/v1/events?limit=5",
        param: "cursor",
        next_at: "/next_cursor",
        other_filter: "/v1/events?limit=5&action=login",
        other_order: Some("/v1/events?limit=5&order=asc"),
        other_size: "/v1/events?limit=6",
        other_org: "/v1/events?limit=5",
        other_walk: None,
    },
    CursorDialect {
        name: "atomic",
        first: "/audit-log?authType=client&limit=5",
        param: "cursor",
        next_at: "/cursor",
        other_filter: "/audit-log?authType=workbench&limit=5",
        other_order: None,
        other_size: "/audit-log?authType=client&limit=6",
        other_org: "/audit-log?authType=client&limit=5",
        other_walk: None,
    },
    CursorDialect {
        name: "orglog",
        first: "/api/v1/organizations/org_a/audit-logs?limit=5",
        param: "cursor",
        next_at: "/cursor",
        other_filter: "/api/v1/organizations/org_a/audit-logs?limit=5&search=tickets",
        other_order: None,
        other_size: "/api/v1/organizations/org_a/audit-logs?limit=6",
        other_org: "/api/v1/organizations/org_b/audit-logs?limit=5",
        other_walk: None,
    },
    CursorDialect {
        name: "torq",
        first: "/v1alpha/audit_logs?page_size=5",
        param: "page_token",
        next_at: "/next_page_token",
        other_filter: "/v1alpha/audit_logs?page_size=5&end_time=2030-01-01T00:00:00Z",
        other_order: Some("/v1alpha/audit_logs?page_size=5&order=asc"),
        other_size: "/v1alpha/audit_logs?page_size=6",
        other_org: "/v1alpha/audit_logs?page_size=5",
        other_walk: None,
    },
    CursorDialect {
        name: "zendesk",
        first: "/api/v2/audit_logs?page[size]=5",
        param: "page[after]",
        next_at: "/meta/after_cursor",
        other_filter: "/api/v2/audit_logs?page[size]=5&filter[action]=login",
        other_order: Some("/api/v2/audit_logs?page[size]=5&sort=created_at"),
        other_size: "/api/v2/audit_logs?page[size]=6",
        other_org: "/api/v2/audit_logs?page[size]=5",
        other_walk: Some("page[before]"),
    },
];

/// A token every cursor dialect accepts.
fn cursor_token(api: &Api, org: &str) -> String {
    api.token(Tok {
        org,
        roles: &["admin", "workbench"],
        ws: Some("ws1"),
        ..Tok::default()
    })
}

/// `c` with one character of its payload changed.
fn tampered(c: &str) -> String {
    let mut chars: Vec<char> = c.chars().collect();
    let i = chars.len() / 4;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn cursors_are_bound_to_org_dialect_order_and_filters() {
    let api = Api::new("q_cursors").await;
    let a = cursor_token(&api, "org_a");
    let b = cursor_token(&api, "org_b");
    let mut cursors = Vec::new();
    for d in &CURSOR_DIALECTS {
        let body = api.ok(d.first, &a).await;
        let c = body
            .pointer(d.next_at)
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| panic!("{}: no next cursor in {body}", d.name))
            .to_string();
        let with = |url: &str, param: &str, c: &str| format!("{url}&{param}={c}");
        // The cursor opens the next page, also with another page size.
        for url in [d.first, d.other_size] {
            let (st, body) = api.get(&with(url, d.param, &c), Some(&a)).await;
            assert_eq!(st, StatusCode::OK, "{}: {url}: {body}", d.name);
        }
        // Refused: another filter set, another order, another org, another
        // walk, a tampered or forged cursor.
        let mut refused = vec![
            (
                "another filter set",
                with(d.other_filter, d.param, &c),
                &a,
                d.param,
            ),
            ("another org", with(d.other_org, d.param, &c), &b, d.param),
            (
                "tampered",
                with(d.first, d.param, &tampered(&c)),
                &a,
                d.param,
            ),
        ];
        for forged in ["forged", "forged.cursor", "abc"] {
            refused.push(("forged", with(d.first, d.param, forged), &a, d.param));
        }
        if let Some(url) = d.other_order {
            refused.push(("another order", with(url, d.param, &c), &a, d.param));
        }
        if let Some(param) = d.other_walk {
            refused.push(("another walk", with(d.first, param, &c), &a, param));
        }
        for (what, url, token, param) in refused {
            let (st, body) = api.get(&url, Some(token)).await;
            assert_bad(st, &body, param, &format!("{}: {what}", d.name));
        }
        cursors.push(c);
    }
    // A cursor of one dialect does not open another dialect's pages.
    for (i, d) in CURSOR_DIALECTS.iter().enumerate() {
        let foreign = &cursors[(i + 1) % cursors.len()];
        let (st, body) = api
            .get(&format!("{}&{}={foreign}", d.first, d.param), Some(&a))
            .await;
        assert_bad(st, &body, d.param, &format!("{}: another dialect", d.name));
    }
    api.env.stop().await;
}

// ------------------------------------------------- Walks over equal times

#[tokio::test]
async fn cursor_walks_return_every_event_once_over_equal_timestamps() {
    let mut env = TestEnv::clickhouse_only("q_walk").await;
    let now = dataset::now();
    // 10,500 events on only 7 distinct timestamps, all in one workspace.
    let mut events = dataset::events("org_w", 10_500, 0, 9, now);
    for (i, e) in events.iter_mut().enumerate() {
        e.created_at = now - Duration::minutes(10 * (i % 7) as i64 + 1);
        e.workspace_id = Some("ws".into());
    }
    let mut rows = dataset::rows(&events);
    env.insert_rows(&rows).await;
    newest_first(&mut rows);
    let url = env.start_query_api().await;
    env.wait_ready().await;
    let api = Api {
        env,
        url,
        a: rows,
        b: Vec::new(),
        now,
    };
    let all = row_ids(api.a.iter());
    let t = api.token(Tok {
        org: "org_w",
        roles: &["admin", "workbench"],
        ws: Some("ws"),
        ..Tok::default()
    });

    // Native, both orders, forward then back.
    for order in ["desc", "asc"] {
        let base = format!("/v1/events?limit=1000&order={order}");
        let (pages, last) = walk(&api, &t, &base, "data", |b| {
            cursor_link(&base, "cursor", b["next_cursor"].as_str())
        })
        .await;
        let mut want = all.clone();
        if order == "asc" {
            want.reverse();
        }
        assert_eq!(pages.concat(), want, "native {order} forward");
        let back = walk_back(&api, &t, last, "data", |b| {
            cursor_link(&base, "cursor", b["prev_cursor"].as_str())
        })
        .await;
        assert_eq!(back, pages, "native {order} back");
    }
    // Atomic, organisation log, Torq.
    for (base, list, next, param) in [
        ("/audit-log?limit=1000", "data", "cursor", "cursor"),
        (
            "/api/v1/organizations/org_w/audit-logs?limit=500",
            "data",
            "cursor",
            "cursor",
        ),
        (
            "/v1alpha/audit_logs?page_size=500",
            "audit_logs",
            "next_page_token",
            "page_token",
        ),
    ] {
        let (pages, _) = walk(&api, &t, base, list, |b| {
            cursor_link(base, param, b[next].as_str())
        })
        .await;
        assert_eq!(pages.concat(), all, "{base}");
    }
    // Zendesk, forward with page[after] and back with page[before].
    let (pages, last) = walk(
        &api,
        &t,
        "/api/v2/audit_logs?page[size]=100",
        "audit_logs",
        |b| b["links"]["next"].as_str().map(String::from),
    )
    .await;
    assert_eq!(pages.concat(), all, "zendesk forward");
    let back = walk_back(&api, &t, last, "audit_logs", |b| {
        b["links"]["prev"].as_str().map(String::from)
    })
    .await;
    assert_eq!(back, pages, "zendesk back");
    api.env.stop().await;
}
