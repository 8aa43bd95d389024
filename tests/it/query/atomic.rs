//! Atomic-style `GET /audit-log`.

use super::*;

#[tokio::test]
async fn atomic_audit_log() {
    let api = Api::new("q_atomic").await;
    let wb = api.token(Tok {
        org: "org_a",
        roles: &["workbench"],
        ..Tok::default()
    });
    // Auth: 401 without or with an invalid token, 403 without the role.
    assert_eq!(
        api.get("/audit-log", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get("/audit-log", Some("nope")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, body) = api.get("/audit-log", Some(&api.admin("org_a"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    // Default limit 100, newest first, cursor present; per-entry cursors.
    let body = api.ok("/audit-log", &wb).await;
    assert_documented(&api, &body, "AtomicPage").await;
    let doc = api.ok("/openapi.json", "").await;
    let torq = serde_json::json!({"$ref": "#/components/schemas/TorqPage"});
    assert!(
        conforms(&doc, &torq, &body, "x").is_err(),
        "the checker can fail"
    );
    let (_, err) = api.get("/audit-log?limit=0", Some(&wb)).await;
    assert_documented(&api, &err, "NativeError").await;
    assert_eq!(ids(&body, "data"), row_ids(api.a.iter().take(100)));
    let c = body["cursor"].as_str().expect("cursor");
    let page2 = api.ok(&format!("/audit-log?cursor={c}"), &wb).await;
    assert_eq!(
        ids(&page2, "data"),
        row_ids(api.a.iter().skip(100).take(100))
    );
    let entry_cursor = body["data"][9]["cursor"].as_str().expect("entry cursor");
    let after10 = api
        .ok(&format!("/audit-log?limit=5&cursor={entry_cursor}"), &wb)
        .await;
    assert_eq!(
        ids(&after10, "data"),
        row_ids(api.a.iter().skip(10).take(5))
    );

    // Limits.
    let all = api.ok("/audit-log?limit=1000", &wb).await;
    assert_eq!(ids(&all, "data").len(), 1000);
    for bad in ["0", "1001", "-1", "ten"] {
        let (st, body) = api.get(&format!("/audit-log?limit={bad}"), Some(&wb)).await;
        assert_bad(st, &body, "limit", bad);
    }
    // The last page has no cursor.
    let c = all["cursor"].as_str().expect("cursor");
    let last = api
        .ok(&format!("/audit-log?limit=1000&cursor={c}"), &wb)
        .await;
    assert_eq!(ids(&last, "data"), row_ids(api.a.iter().skip(1000)));
    assert!(last.get("cursor").is_none(), "{}", last["cursor"]);

    // authType filter, each allowed value; anything else is 400.
    for t in ["client", "clientCredentials", "signedPayload", "workbench"] {
        let body = api
            .ok(&format!("/audit-log?authType={t}&limit=1000"), &wb)
            .await;
        let want = row_ids(api.a.iter().filter(|r| r.auth_type == t));
        assert!(!want.is_empty());
        assert_eq!(ids(&body, "data"), want, "{t}");
    }
    for bad in ["apiKey", "CLIENT", "x"] {
        let (st, body) = api
            .get(&format!("/audit-log?authType={bad}"), Some(&wb))
            .await;
        assert_bad(st, &body, "authType", bad);
    }

    // Environment scope from the token.
    let prod = api.token(Tok {
        org: "org_a",
        roles: &["workbench"],
        env: Some("prod"),
        ..Tok::default()
    });
    let body = api.ok("/audit-log?limit=1000", &prod).await;
    let want: Vec<String> = row_ids(api.a.iter().filter(|r| r.environment_id == "prod"));
    assert_eq!(ids(&body, "data"), want[..want.len().min(1000)].to_vec());

    // Mapping of one entry.
    let r = &api.a[0];
    let e = &api.ok("/audit-log?limit=1", &wb).await["data"][0];
    assert_eq!(e["id"], r.id.to_string());
    assert_eq!(e["url"], o(&r.request_url));
    assert_eq!(e["status"], serde_json::json!(r.request_status));
    assert_eq!(e["auth"]["type"], r.auth_type.as_str());
    assert_eq!(e["auth"]["sub"], r.auth_sub.as_str());
    assert!(
        e["auth"].get("appClientId").is_none(),
        "absent keys are left out"
    );
    assert_eq!(
        e["auth"].get("clientId").is_some(),
        !r.auth_client_id.is_empty()
    );
    assert_eq!(e["ip"], o(&r.request_ip));
    assert_eq!(e["userAgent"], "curl/8.5");
    assert_eq!(e["method"], o(&r.request_method));
    assert_eq!(e["organisationId"], "org_a");
    assert_eq!(e["environmentId"], o(&r.environment_id));
    assert_eq!(e["time"], serde_json::json!(r.request_duration_ms));
    assert_eq!(
        e["resource"]["type"],
        serde_json::json!(Some(&r.resource_type).filter(|s| !s.is_empty()))
    );
    assert_eq!(e["action"]["type"], r.action_type.as_str());
    assert_eq!(
        e["created"],
        r.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert!(e["created"].as_str().unwrap_or("").ends_with('Z'));
    assert_eq!(
        e["payload"],
        serde_json::json!(Some(&r.request_body).filter(|s| !s.is_empty()))
    );
    api.env.stop().await;
}
