//! Torq-style `GET /v1alpha/audit_logs`.

use chrono::Duration;

use super::*;

#[tokio::test]
async fn torq_audit_logs() {
    let api = Api::new("q_torq").await;
    let path = "/v1alpha/audit_logs";
    let t = api.token(Tok {
        org: "org_a",
        roles: &["admin"],
        ws: Some("ws1"),
        ..Tok::default()
    });
    let in_ws: Vec<&EventRow> = api.a.iter().filter(|r| r.workspace_id == "ws1").collect();
    let day_ago = api.now - Duration::hours(24);
    let recent: Vec<&EventRow> = in_ws
        .iter()
        .copied()
        .filter(|r| r.created_at >= day_ago)
        .collect();
    assert!(recent.len() > 100 && recent.len() < in_ws.len());

    // Errors in Torq's shape.
    let (st, body) = api.get(path, Some("bad")).await;
    assert_eq!(
        (st, body["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(16)),
        "{body}"
    );
    assert!(body["message"].is_string());
    let no_ws = api.admin("org_a");
    let (st, body) = api.get(path, Some(&no_ws)).await;
    assert_eq!(
        (st, body["code"].as_i64()),
        (StatusCode::FORBIDDEN, Some(7)),
        "{body}"
    );
    let no_perm = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ws: Some("ws1"),
        ..Tok::default()
    });
    let (st, body) = api.get(path, Some(&no_perm)).await;
    assert_eq!(
        (st, body["code"].as_i64()),
        (StatusCode::FORBIDDEN, Some(7)),
        "{body}"
    );

    // Defaults: the last 24 hours, 100 per page, newest first.
    let body = api.ok(path, &t).await;
    assert_documented(&api, &body, "TorqPage").await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(recent.iter().copied().take(100))
    );
    let tok = body["next_page_token"].as_str().expect("token").to_string();
    assert!(!tok.is_empty());
    let mut walked = ids(&body, "audit_logs");
    let mut tok = tok;
    while !tok.is_empty() {
        let b = api.ok(&format!("{path}?page_token={tok}"), &t).await;
        walked.extend(ids(&b, "audit_logs"));
        tok = b["next_page_token"].as_str().expect("token").to_string();
    }
    assert_eq!(walked, row_ids(recent.iter().copied()));

    // Explicit windows, any sub-second precision; bounds inclusive.
    let pivot = recent[recent.len() / 2].created_at;
    let nanos = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let body = api
        .ok(
            &format!("{path}?page_size=500&start_time={}", enc(&nanos(pivot))),
            &t,
        )
        .await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(recent.iter().copied().filter(|r| r.created_at >= pivot))
    );
    let body = api
        .ok(
            &format!("{path}?page_size=500&end_time={}", enc(&nanos(pivot))),
            &t,
        )
        .await;
    let want = row_ids(
        in_ws
            .iter()
            .copied()
            .filter(|r| r.created_at <= pivot && r.created_at >= pivot - Duration::hours(24)),
    );
    assert_eq!(ids(&body, "audit_logs"), want);
    let old_start = api.now - Duration::hours(48);
    let q = format!(
        "{path}?page_size=500&start_time={}&end_time={}",
        enc(&nanos(old_start)),
        enc(&nanos(api.now))
    );
    assert_eq!(
        ids(&api.ok(&q, &t).await, "audit_logs"),
        row_ids(in_ws.iter().copied())
    );
    let q =
        format!("{path}?start_time=2022-03-09T08:40:18.490771179Z&end_time=2022-03-10T08:40:18.1Z");
    assert_eq!(ids(&api.ok(&q, &t).await, "audit_logs").len(), 0);
    let q = format!("{path}?start_time=2022-03-10T00:00:00Z&end_time=2022-03-09T00:00:00Z");
    let (st, body) = api.get(&q, Some(&t)).await;
    assert_bad(st, &body, "start_time", "start after end");
    assert_documented(&api, &body, "TorqError").await;
    assert_eq!(body["code"], 3);
    let (st, body) = api.get(&format!("{path}?end_time=noon"), Some(&t)).await;
    assert_bad(st, &body, "end_time", "bad time");

    // page_size and order.
    let body = api.ok(&format!("{path}?page_size=3&order=asc"), &t).await;
    let mut asc: Vec<&EventRow> = recent.clone();
    asc.reverse();
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(asc.iter().copied().take(3))
    );
    let next = body["next_page_token"].as_str().expect("token");
    let body2 = api
        .ok(
            &format!("{path}?page_size=3&order=asc&page_token={next}"),
            &t,
        )
        .await;
    assert_eq!(
        ids(&body2, "audit_logs"),
        row_ids(asc.iter().copied().skip(3).take(3))
    );
    for bad in ["0", "501", "x"] {
        let (st, body) = api.get(&format!("{path}?page_size={bad}"), Some(&t)).await;
        assert_bad(st, &body, "page_size", bad);
    }
    let (st, body) = api.get(&format!("{path}?order=newest"), Some(&t)).await;
    assert_bad(st, &body, "order", "order");
    assert_eq!(
        ids(
            &api.ok(&format!("{path}?page_size=500"), &t).await,
            "audit_logs"
        )
        .len(),
        recent.len().min(500)
    );

    // Mapping.
    let r = recent[0];
    let e = &api.ok(&format!("{path}?page_size=1"), &t).await["audit_logs"][0];
    assert_eq!(e["id"], r.id.to_string());
    assert_eq!(
        DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap_or(""))
            .map(|t| t.with_timezone(&Utc))
            .ok(),
        Some(r.created_at)
    );
    assert_eq!(e["email"], r.actor_email.as_str());
    assert_eq!(e["actor_name"], r.actor_name.as_str());
    assert_eq!(e["actor_type"], r.actor_type.as_str());
    let action = if r.action_description.is_empty() {
        &r.action_type
    } else {
        &r.action_description
    };
    assert_eq!(e["action"], action.as_str());
    assert_eq!(e["resource_id"], r.resource_id.as_str());
    assert_eq!(e["resource_name"], r.resource_name.as_str());
    assert_eq!(e["user_agent"], "curl/8.5");
    assert_eq!(e["extra_data"], serde_json::json!(r.metadata));
    assert_eq!(e["account_id"], "ws1");
    assert_eq!(e["account_name"], "Workspace ws1");
    api.env.stop().await;
}
