//! No dialect returns another org's or workspace's events.

use std::collections::{BTreeSet, HashSet};

use super::*;

#[tokio::test]
async fn no_dialect_returns_another_orgs_or_workspaces_events() {
    let api = Api::new("q_isolation").await;
    let a_ids: HashSet<String> = row_ids(api.a.iter()).into_iter().collect();
    let b_ids: HashSet<String> = row_ids(api.b.iter()).into_iter().collect();
    let b_all = api.token(Tok {
        org: "org_b",
        roles: &["admin", "workbench", "owner"],
        perms: &["viewAuditLog"],
        ..Tok::default()
    });
    let b_ws = api.token(Tok {
        org: "org_b",
        roles: &["admin"],
        ws: Some("ws2"),
        ..Tok::default()
    });
    let a_id = api.a[0].id;
    // Unknown parameters are refused (400) by every dialect; the known ones
    // must not widen the read either, and the plain request ("") is served.
    let hostile = [
        "",
        "org_id=org_a",
        "organisationId=org_a",
        "org=org_a&limit=1000",
        "filter[org_id]=org_a",
        "workspace_id=ws1",
        "account_id=ws1",
        "search=org_a",
        "search=%25",
        "search=%27%20OR%201%3D1%20--",
        "filter[actor_id]=u1%27%20OR%20%271%27=%271",
        "filter[source_type]=ticket%27)%20OR%20(1=1",
        "start_time=2000-01-01T00:00:00Z",
        "per_page=100&page=1",
    ];
    // (path, its page-size parameter)
    let paths = [
        ("/audit-log", "&limit=500"),
        ("/api/v1/organizations/org_b/audit-logs", "&limit=500"),
        ("/api/v2/audit_logs", "&page[size]=100"),
        ("/v1alpha/audit_logs", "&page_size=500"),
        ("/v1/events/export", ""),
    ];
    let mut seen_b = BTreeSet::new();
    for (path, size) in paths {
        for q in hostile {
            let tok = if path.starts_with("/v1alpha") {
                &b_ws
            } else {
                &b_all
            };
            let (st, body) = api.get(&format!("{path}?{q}{size}"), Some(tok)).await;
            if st != StatusCode::OK {
                assert!(st.is_client_error(), "{path}?{q}: {st} {body}");
                continue;
            }
            for key in ["data", "audit_logs"] {
                for id in ids(&body, key) {
                    assert!(!a_ids.contains(&id), "{path}?{q} leaked {id}");
                    assert!(b_ids.contains(&id), "{path}?{q} returned unknown {id}");
                    if path.starts_with("/v1alpha") {
                        let r = api.b.iter().find(|r| r.id.to_string() == id).expect("row");
                        assert_eq!(r.workspace_id, "ws2", "{path}?{q}: another workspace");
                    }
                    seen_b.insert(id);
                }
            }
        }
    }
    assert!(!seen_b.is_empty());
    // The native API, with every hostile parameter through its strict parser.
    for q in [
        "actor_id=u1",
        "workspace_id=ws1",
        "path_contains=%27",
        "ip=10.0.0.1",
    ] {
        let body = api.ok(&format!("/v1/events?{q}&limit=1000"), &b_all).await;
        for id in ids(&body, "data") {
            assert!(b_ids.contains(&id), "native {q} leaked {id}");
        }
    }
    // Detail views of another org's event.
    for path in [
        format!("/v1/events/{a_id}"),
        format!("/api/v2/audit_logs/{a_id}"),
        format!("/api/v1/organizations/org_b/audit-logs/{a_id}"),
    ] {
        let (st, _) = api.get(&path, Some(&b_all)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
    let (st, _) = api
        .get(
            &format!("/api/v1/organizations/org_a/audit-logs/{a_id}"),
            Some(&b_all),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    api.env.stop().await;
}
