//! Zendesk-style `GET /api/v2/audit_logs`, both pagination modes.

use super::*;

#[tokio::test]
async fn zendesk_audit_logs() {
    let api = Api::new("q_zendesk").await;
    let t = api.admin("org_a");
    let path = "/api/v2/audit_logs";
    let (st, body) = api.get(path, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body["error"].is_string(), "{body}");
    let member = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ..Tok::default()
    });
    assert_eq!(api.get(path, Some(&member)).await.0, StatusCode::FORBIDDEN);

    // Filters, single and repeated (OR), combined (AND).
    let check = |q: &str, pred: &dyn Fn(&EventRow) -> bool| {
        let want: Vec<String> = row_ids(api.a.iter().filter(|r| pred(r)));
        (q.to_string(), want)
    };
    let cases = vec![
        check("filter[source_type]=ticket", &|r| {
            r.resource_type == "ticket"
        }),
        check(
            "filter[source_type][]=ticket&filter[source_type][]=user",
            &|r| r.resource_type == "ticket" || r.resource_type == "user",
        ),
        check("filter[source_type]=ticket&filter[source_id]=r3", &|r| {
            r.resource_type == "ticket" && r.resource_id == "r3"
        }),
        check(
            "filter[source_type]=user&filter[source_id][]=r1&filter[source_id][]=r2",
            &|r| r.resource_type == "user" && (r.resource_id == "r1" || r.resource_id == "r2"),
        ),
        check("filter[actor_id]=u2", &|r| r.actor_id == "u2"),
        check(
            "filter[actor_id][]=u2&filter[actor_id][]=u4&filter[action]=delete",
            &|r| (r.actor_id == "u2" || r.actor_id == "u4") && r.action_type == "delete",
        ),
        check("filter[ip_address]=2001:db8::1", &|r| {
            r.request_ip == "2001:db8::1"
        }),
        check("filter[action][]=login&filter[action][]=create", &|r| {
            r.action_type == "login" || r.action_type == "create"
        }),
    ];
    for (q, want) in cases {
        let mut got = Vec::new();
        let mut next = Some(format!("{path}?{q}"));
        while let Some(url) = next {
            let body = api.ok(&url, &t).await;
            got.extend(ids(&body, "audit_logs"));
            next = body["links"]["next"].as_str().map(String::from);
            assert_eq!(
                body["meta"]["has_more"].as_bool(),
                Some(next.is_some()),
                "{q}"
            );
        }
        assert!(!want.is_empty(), "{q}");
        assert_eq!(got, want, "{q}");
    }
    // created_at: exactly twice, start then end, inclusive.
    let lo = api.a[300].created_at;
    let hi = api.a[100].created_at;
    let ts = |t: DateTime<Utc>| enc(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    for style in ["filter[created_at]", "filter[created_at][]"] {
        let q = format!(
            "{path}?page[size]=100&{style}={}&{style}={}",
            ts(lo),
            ts(hi)
        );
        let body = api.ok(&q, &t).await;
        let want = row_ids(
            api.a
                .iter()
                .filter(|r| r.created_at >= lo && r.created_at <= hi)
                .take(100),
        );
        assert_eq!(ids(&body, "audit_logs"), want, "{style}");
    }
    for (q, param) in [
        (
            format!("filter[created_at]={}", ts(lo)),
            "filter[created_at]",
        ),
        (
            format!(
                "filter[created_at]={}&filter[created_at]={}&filter[created_at]={}",
                ts(lo),
                ts(hi),
                ts(hi)
            ),
            "filter[created_at]",
        ),
        (
            format!(
                "filter[created_at]={}&filter[created_at]={}",
                ts(hi),
                ts(lo)
            ),
            "filter[created_at]",
        ),
        (
            "filter[created_at]=x&filter[created_at]=y".to_string(),
            "filter[created_at]",
        ),
        ("filter[source_id]=r1".to_string(), "filter[source_id]"),
        ("page[size]=101".to_string(), "page[size]"),
        ("page[size]=0".to_string(), "page[size]"),
        ("sort=newest".to_string(), "sort"),
        ("page=101".to_string(), "page"),
        ("page=0".to_string(), "page"),
        ("per_page=101".to_string(), "per_page"),
        ("page=1&sort_by=id".to_string(), "sort_by"),
        ("page=1&sort_order=up".to_string(), "sort_order"),
    ] {
        let (st, body) = api.get(&format!("{path}?{q}"), Some(&t)).await;
        assert_bad(st, &body, param, &q);
        assert!(
            body["error"].is_string() && body["description"].is_string(),
            "{body}"
        );
    }
    let (_, body) = api.get(&format!("{path}?page=101"), Some(&t)).await;
    assert!(body["description"]
        .as_str()
        .unwrap_or("")
        .contains("cursor pagination"));

    // Cursor mode: defaults, sort, and walking back exactly the pages walked forward.
    let first = api.ok(path, &t).await;
    assert_documented(&api, &first, "ZendeskCursorPage").await;
    assert_eq!(ids(&first, "audit_logs"), row_ids(api.a.iter().take(100)));
    assert!(first["meta"]["before_cursor"].is_null());
    assert!(first["links"]["prev"].is_null());
    let asc = api
        .ok(&format!("{path}?sort=created_at&page[size]=7"), &t)
        .await;
    let mut rev: Vec<&EventRow> = api.a.iter().collect();
    rev.reverse();
    assert_eq!(
        ids(&asc, "audit_logs"),
        row_ids(rev.iter().copied().take(7))
    );
    let (pages, last) = walk(&api, &t, path, "audit_logs", |b| {
        let next = b["links"]["next"].as_str().map(String::from);
        assert!(
            next.as_deref().is_none_or(|n| n.starts_with("http://")),
            "absolute: {next:?}"
        );
        next
    })
    .await;
    assert_eq!(pages[0], ids(&first, "audit_logs"));
    assert_eq!(pages.concat(), row_ids(api.a.iter()));
    assert!(last["meta"]["after_cursor"].is_null());
    let back = walk_back(&api, &t, last, "audit_logs", |b| {
        b["links"]["prev"].as_str().map(String::from)
    })
    .await;
    assert_eq!(
        back, pages,
        "page[before] walks back the pages page[after] walked"
    );

    // Offset mode.
    let body = api.ok(&format!("{path}?per_page=50&page=2"), &t).await;
    assert_documented(&api, &body, "ZendeskOffsetPage").await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(api.a.iter().skip(50).take(50))
    );
    assert_eq!(body["count"], 1200);
    let next = body["next_page"].as_str().expect("next_page");
    assert!(
        next.starts_with("http://") && next.contains("page=3"),
        "{next}"
    );
    let prev = body["previous_page"].as_str().expect("previous_page");
    assert!(prev.contains("page=1"), "{prev}");
    assert_eq!(
        ids(&api.ok(next, &t).await, "audit_logs"),
        row_ids(api.a.iter().skip(100).take(50))
    );
    let body = api.ok(&format!("{path}?page=1"), &t).await;
    assert_eq!(ids(&body, "audit_logs").len(), 100);
    assert!(body["previous_page"].is_null());
    let body = api
        .ok(
            &format!("{path}?per_page=100&page=12&sort_order=asc&sort_by=created_at"),
            &t,
        )
        .await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(rev.iter().copied().skip(1100))
    );
    assert!(body["next_page"].is_null());
    let body = api
        .ok(
            &format!("{path}?per_page=10&page=1&filter[action]=login"),
            &t,
        )
        .await;
    assert_eq!(
        body["count"],
        api.a.iter().filter(|r| r.action_type == "login").count()
    );

    // Mapping, and the entry's own URL.
    let r = &api.a[0];
    let e = api.ok(&format!("{path}?page[size]=1"), &t).await["audit_logs"][0].clone();
    assert_eq!(e["id"], r.id.to_string());
    assert_eq!(e["action"], r.action_type.as_str());
    assert_eq!(e["actor_id"], r.actor_id.as_str());
    assert_eq!(e["actor_name"], r.actor_name.as_str());
    assert_eq!(
        e["change_description"],
        serde_json::json!(Some(&r.action_description).filter(|s| !s.is_empty()))
    );
    assert_eq!(
        e["created_at"],
        r.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(e["source_id"], r.resource_id.as_str());
    assert_eq!(e["source_label"], r.resource_name.as_str());
    assert_eq!(
        e["source_type"],
        serde_json::json!(Some(&r.resource_type).filter(|s| !s.is_empty()))
    );
    let own = e["url"].as_str().expect("url");
    let shown = api.ok(own, &t).await;
    assert_documented(&api, &shown, "ZendeskShow").await;
    assert_eq!(shown["audit_log"], e);
    let shown = api.ok(&format!("{path}/{}", r.id), &t).await;
    assert_eq!(shown["audit_log"]["id"], r.id.to_string());
    let (st, body) = api.get(&format!("{path}/{}", api.b[0].id), Some(&t)).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("RecordNotFound"))
    );
    assert_documented(&api, &body, "ZendeskError").await;
    api.env.stop().await;
}
