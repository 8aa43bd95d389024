//! One claim-scoping rule in every API, the header allow-list wherever
//! headers are returned, and unknown parameters refused in each dialect's
//! own error shape, against the real stack.

use std::collections::BTreeSet;

use super::*;

/// org_s's events: three of each (environment, workspace) pair, each with
/// a secret-bearing header next to allow-listed ones.
async fn scoped_api(test: &str) -> (Api, Vec<EventRow>) {
    let api = Api::new(test).await;
    let mut rows = dataset::rows(&dataset::events("org_s", 12, 0, 7, api.now));
    for (i, r) in rows.iter_mut().enumerate() {
        r.environment_id = ["env_a", "env_x"][i % 2].into();
        r.workspace_id = ["ws_a", "ws_a", "ws_x", "ws_x"][i % 4].into();
        r.request_headers = [
            ("Authorization", "Bearer secret-token"),
            ("X-Secret-Key", "sk_live_1"),
            ("Cookie", "session=1"),
            ("X-Request-Id", "req-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    }
    api.env.insert_rows(&rows).await;
    (api, rows)
}

#[tokio::test]
async fn the_token_scope_holds_in_every_api() {
    let (api, rows) = scoped_api("q_scope").await;
    let inside: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.environment_id == "env_a" && r.workspace_id == "ws_a")
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(inside.len(), 3);
    let outside = rows
        .iter()
        .find(|r| r.environment_id == "env_x" && r.workspace_id == "ws_a")
        .map(|r| r.id.to_string())
        .unwrap_or_default();
    let inside_id = inside.iter().next().cloned().unwrap_or_default();
    let t = api.token(Tok {
        org: "org_s",
        roles: &["admin", "workbench"],
        perms: &["viewAuditLog"],
        env: Some("env_a"),
        ws: Some("ws_a"),
    });
    let orglog = "/api/v1/organizations/org_s/audit-logs";
    // (list, key of the entries)
    let lists = [
        ("/v1/events?limit=100".to_string(), "data"),
        ("/audit-log?limit=100".to_string(), "data"),
        (format!("{orglog}?limit=100"), "data"),
        (
            "/v1alpha/audit_logs?page_size=100".to_string(),
            "audit_logs",
        ),
        (
            "/api/v2/audit_logs?page[size]=100".to_string(),
            "audit_logs",
        ),
        (
            "/api/v2/audit_logs?per_page=100&page=1".to_string(),
            "audit_logs",
        ),
        // A filter that conflicts with the claim narrows to nothing.
        ("/v1/events?environment_id=env_x".to_string(), "data"),
        (format!("{orglog}?search=ws_x"), "data"),
    ];
    for (i, (path, key)) in lists.iter().enumerate() {
        let body = api.ok(path, &t).await;
        let got: BTreeSet<String> = ids(&body, key).into_iter().collect();
        let want = if i < 6 {
            inside.clone()
        } else {
            BTreeSet::new()
        };
        assert_eq!(got, want, "{path}");
    }
    let offset = api.ok("/api/v2/audit_logs?per_page=1", &t).await;
    assert_eq!(offset["count"], 3, "the offset mode's count is scoped");
    let resp = api
        .env
        .http
        .get(format!("{}/v1/events/export", api.url))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    let exported: BTreeSet<String> = resp
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    assert_eq!(exported, inside, "export");
    // Details: outside the scope is not found, inside is.
    for show in [
        "/v1/events/{id}".to_string(),
        format!("{orglog}/{{id}}"),
        "/api/v2/audit_logs/{id}".to_string(),
    ] {
        let (st, body) = api.get(&show.replace("{id}", &outside), Some(&t)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{show}: {body}");
        let (st, body) = api.get(&show.replace("{id}", &inside_id), Some(&t)).await;
        assert_eq!(st, StatusCode::OK, "{show}: {body}");
    }
    api.env.stop().await;
}

#[tokio::test]
async fn only_allow_listed_headers_are_returned_anywhere() {
    let (api, rows) = scoped_api("q_headers").await;
    let t = api.admin("org_s");
    let id = rows[0].id;
    let list = api.ok("/v1/events?limit=100", &t).await;
    let shown = api.ok(&format!("/v1/events/{id}"), &t).await;
    let details = api
        .ok(&format!("/api/v1/organizations/org_s/audit-logs/{id}"), &t)
        .await;
    let export = api
        .env
        .http
        .get(format!("{}/v1/events/export?format=ndjson", api.url))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .unwrap_or_default();
    let mut headers: Vec<(String, Value)> = vec![
        ("show".into(), shown["request"]["headers"].clone()),
        ("details".into(), details["headers"].clone()),
    ];
    for e in list["data"].as_array().into_iter().flatten() {
        headers.push(("list".into(), e["request"]["headers"].clone()));
    }
    for line in export.lines() {
        let e: Value = serde_json::from_str(line).unwrap_or_default();
        headers.push(("export".into(), e["request"]["headers"].clone()));
    }
    assert!(headers.len() > 20);
    for (place, h) in headers {
        assert_eq!(h, serde_json::json!({"x-request-id": "req-1"}), "{place}");
    }
    for secret in ["secret-token", "sk_live_1", "session=1"] {
        assert!(!export.contains(secret), "export leaks {secret}");
        assert!(!list.to_string().contains(secret), "list leaks {secret}");
    }
    api.env.stop().await;
}

#[tokio::test]
async fn unknown_parameters_are_refused_in_each_dialects_shape() {
    let api = Api::new("q_unknown").await;
    let t = api.token(Tok {
        org: "org_a",
        roles: &["admin", "workbench"],
        ws: Some("ws1"),
        ..Tok::default()
    });
    let id = api.a[0].id;
    // (path, how the dialect names the parameter)
    let cases = [
        ("/v1/events?bogus=1", "native"),
        (&*format!("/v1/events/{id}?bogus=1"), "native"),
        ("/v1/events/export?bogus=1", "native"),
        ("/audit-log?bogus=1", "native"),
        ("/api/v1/organizations/org_a/audit-logs?bogus=1", "native"),
        (
            &*format!("/api/v1/organizations/org_a/audit-logs/{id}?bogus=1"),
            "native",
        ),
        ("/v1alpha/audit_logs?bogus=1", "torq"),
        ("/api/v2/audit_logs?bogus=1", "zendesk"),
        ("/api/v2/audit_logs?per_page=5&bogus=1", "zendesk"),
        (&*format!("/api/v2/audit_logs/{id}?bogus=1"), "zendesk"),
    ];
    for (path, shape) in cases {
        let (st, body) = api.get(path, Some(&t)).await;
        assert_bad(st, &body, "bogus", path);
        match shape {
            "torq" => assert_eq!(body["code"], 3, "{path}: {body}"),
            "zendesk" => assert_eq!(body["error"], "InvalidParameter", "{path}: {body}"),
            _ => assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}"),
        }
    }
    api.env.stop().await;
}

/// A viewer token (what a platform's backend mints for the embedded
/// viewer) reads its org, within its workspace, through the APIs that
/// need `viewAuditLog`, and nothing its claimed roles would add.
#[tokio::test]
async fn a_viewer_token_reads_its_scope_only() {
    use trailhouse_query_api::viewer_token::mint_viewer_token;
    let (api, rows) = scoped_api("q_viewer_token").await;
    let viewer = |ws: Option<&str>, ttl: i64| {
        let now = Utc::now().timestamp();
        mint_viewer_token(
            trailhouse_tests::VIEWER_SECRET.as_bytes(),
            &Claims {
                sub: "portal-user".into(),
                org_id: "org_s".into(),
                environment_id: None,
                workspace_id: ws.map(String::from),
                roles: vec!["admin".into(), "workbench".into()],
                permissions: vec!["viewAuditLog".into()],
                exp: now + ttl,
                iat: now,
            },
        )
        .expect("mint")
    };
    let t = viewer(Some("ws_a"), 600);
    let want: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.workspace_id == "ws_a")
        .map(|r| r.id.to_string())
        .collect();
    for path in [
        "/v1/events?limit=100",
        "/api/v1/organizations/org_s/audit-logs?limit=100",
    ] {
        let got: BTreeSet<String> = ids(&api.ok(path, &t).await, "data").into_iter().collect();
        assert_eq!(got, want, "{path}");
    }
    // The roles it claims are dropped: the Atomic-style API, which needs
    // one, refuses it.
    let (st, body) = api.get("/audit-log", Some(&t)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (st, _) = api
        .get("/api/v1/organizations/org_a/audit-logs", Some(&t))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "another org");
    let (st, body) = api.get("/v1/events", Some(&viewer(None, 3600))).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "longer than 15 minutes: {body}"
    );
    api.env.stop().await;
}
