//! The organisation audit log and its details view.

use super::*;

#[tokio::test]
async fn organisation_audit_log() {
    let api = Api::new("q_orglog").await;
    let base = "/api/v1/organizations/org_a/audit-logs";
    // Permission: owner and admin roles, or the permission itself.
    for (roles, perms) in [
        (&["owner"][..], &[][..]),
        (&["admin"], &[]),
        (&[], &["viewAuditLog"]),
    ] {
        let t = api.token(Tok {
            org: "org_a",
            roles,
            perms,
            ..Tok::default()
        });
        api.ok(base, &t).await;
    }
    let member = api.token(Tok {
        org: "org_a",
        roles: &["member", "workbench"],
        ..Tok::default()
    });
    assert_eq!(api.get(base, Some(&member)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.get(base, None).await.0, StatusCode::UNAUTHORIZED);
    let t = api.admin("org_a");
    // The path's org must be the token's.
    let (st, body) = api
        .get("/api/v1/organizations/org_b/audit-logs", Some(&t))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");

    // Defaults and limits.
    let body = api.ok(base, &t).await;
    assert_documented(&api, &body, "OrgLogPage").await;
    assert_eq!(ids(&body, "data"), row_ids(api.a.iter().take(50)));
    let c = body["cursor"].as_str().expect("cursor");
    let p2 = api.ok(&format!("{base}?cursor={c}"), &t).await;
    assert_eq!(ids(&p2, "data"), row_ids(api.a.iter().skip(50).take(50)));
    assert_eq!(
        ids(&api.ok(&format!("{base}?limit=500"), &t).await, "data").len(),
        500
    );
    for bad in ["0", "501"] {
        let (st, body) = api.get(&format!("{base}?limit={bad}"), Some(&t)).await;
        assert_bad(st, &body, "limit", bad);
    }

    // Search: path substring ignoring case, actor id exact, workspace id exact.
    for q in ["tickets", "TICKETS/1", "u3", "ws2", "search", "u"] {
        let body = api
            .ok(&format!("{base}?limit=500&search={}", enc(q)), &t)
            .await;
        let lower = q.to_lowercase();
        let want: Vec<String> = row_ids(api.a.iter().filter(|r| {
            r.request_path.to_lowercase().contains(&lower) || r.actor_id == q || r.workspace_id == q
        }));
        let want = want[..want.len().min(500)].to_vec();
        assert_eq!(ids(&body, "data"), want, "search {q}");
    }
    // "u" is a substring of "/api/v1/users" but not an actor id: partial
    // matching applies to the path only.
    let body = api.ok(&format!("{base}?limit=500&search=u"), &t).await;
    assert!(body["data"]
        .as_array()
        .map(|a| a.iter().all(|e| e["path"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains('u')))
        .unwrap_or(false));

    // Entry mapping.
    let r = &api.a[0];
    let e = &api.ok(&format!("{base}?limit=1"), &t).await["data"][0];
    let api_key = r.auth_type == "apiKey";
    assert_eq!(e["authType"], if api_key { "apiKey" } else { "jwt" });
    if api_key {
        assert!(e["account"].is_null());
    } else {
        assert_eq!(e["account"], o(&r.actor_email));
    }
    assert_eq!(
        e["resource"],
        serde_json::json!(Some(&r.resource_type).filter(|s| !s.is_empty()))
    );
    assert_eq!(e["method"], o(&r.request_method));
    assert_eq!(e["path"], o(&r.request_path));
    assert_eq!(e["statusCode"], serde_json::json!(r.request_status));
    if r.workspace_id.is_empty() {
        assert!(e.get("workspace").is_none());
    } else {
        assert_eq!(e["workspace"]["id"], r.workspace_id.as_str());
        assert_eq!(e["workspace"]["name"], r.workspace_name.as_str());
    }
    // API-key entries have no account.
    let k = api
        .a
        .iter()
        .position(|r| r.auth_type == "apiKey")
        .expect("an apiKey event");
    let body = api.ok(&format!("{base}?limit={}", k + 1), &t).await;
    assert!(body["data"][k]["account"].is_null());
    assert_eq!(body["data"][k]["authType"], "apiKey");

    // Details: full request data, headers from the allow-list only.
    let with_headers = api
        .a
        .iter()
        .find(|r| r.request_headers.contains_key("authorization") && !r.request_body.is_empty())
        .expect("an event with headers and a body");
    let d = api.ok(&format!("{base}/{}", with_headers.id), &t).await;
    assert_documented(&api, &d, "OrgLogDetails").await;
    assert_eq!(d["id"], with_headers.id.to_string());
    assert_eq!(d["hasDetails"], true);
    assert_eq!(d["body"], with_headers.request_body.as_str());
    assert_eq!(
        d["pathParams"],
        serde_json::json!(with_headers.request_path_params)
    );
    let headers = d["headers"].as_object().expect("headers");
    assert!(headers.contains_key("x-request-id"), "{d}");
    for never in ["authorization", "cookie", "x-internal"] {
        assert!(!headers.contains_key(never), "{never} shown: {d}");
    }
    assert!(!d.to_string().contains("top-secret"));
    // Unknown ids, other orgs' ids and bad ids.
    let (st, _) = api
        .get(&format!("{base}/{}", uuid::Uuid::from_u128(42)), Some(&t))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = api.get(&format!("{base}/{}", api.b[0].id), Some(&t)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = api.get(&format!("{base}/not-a-uuid"), Some(&t)).await;
    assert_bad(st, &body, "id", "id");
    api.env.stop().await;
}
