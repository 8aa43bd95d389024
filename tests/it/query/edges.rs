//! The query API's edges against the real stack: exports that open safely
//! in a spreadsheet and download under a name, audit data that is never
//! cached or sniffed, and a JSON answer for a wrong method. (Forwarded
//! headers are in `hardening`, with the trusted proxies.)

use super::*;

#[tokio::test]
async fn exports_links_and_headers_are_safe() {
    let api = Api::new("q_edges").await;
    let mut rows = dataset::rows(&dataset::events("org_c", 3, 1, 3, api.now));
    rows[0].actor_name = "=HYPERLINK(\"http://evil.example\",\"open\")".into();
    rows[1].resource_name = "@SUM(A1:A9)".into();
    rows[2].action_description = "+cmd|' /C calc'!A0".into();
    api.env.insert_rows(&rows).await;
    let t = api.admin("org_c");

    // CSV: every formula-shaped value opens as text; the file downloads.
    let resp = api
        .env
        .http
        .get(format!("{}/v1/events/export?format=csv", api.url))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    assert_eq!(
        header(&resp, "content-disposition").as_deref(),
        Some("attachment; filename=\"audit-log.csv\"")
    );
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
    let csv = resp.text().await.expect("body");
    for value in [
        "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"open\"\")\"",
        "\"'@SUM(A1:A9)\"",
        "\"'+cmd|' /C calc'!A0\"",
    ] {
        assert!(csv.contains(value), "{value} not neutralised in\n{csv}");
    }
    for line in csv.lines() {
        for field in line.split(',') {
            assert!(
                !field.starts_with(['=', '@', '+']),
                "a field starts a formula: {field} in {line}"
            );
        }
    }
    let resp = api
        .env
        .http
        .get(format!("{}/v1/events/export?format=ndjson", api.url))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    assert_eq!(
        header(&resp, "content-disposition").as_deref(),
        Some("attachment; filename=\"audit-log.ndjson\"")
    );

    // Every answer, data or error, is uncacheable and not sniffed.
    for path in ["/v1/events", "/v1/events?limit=0", "/api/v2/audit_logs"] {
        let resp = api
            .env
            .http
            .get(format!("{}{path}", api.url))
            .bearer_auth(&t)
            .send()
            .await
            .expect("request");
        assert_eq!(
            header(&resp, "cache-control").as_deref(),
            Some("no-store"),
            "{path}"
        );
        assert_eq!(
            header(&resp, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
    }

    // A wrong method is a JSON error, not an empty 405.
    let resp = api
        .env
        .http
        .post(format!("{}/v1/events", api.url))
        .bearer_auth(&t)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = resp.json().await.expect("json body");
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn tokens_are_bounded_in_time_and_size() {
    let api = Api::new("q_tokens").await;
    let now = Utc::now().timestamp();
    let mint = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(trailhouse_tests::JWT_SECRET.as_bytes()),
        )
        .expect("mint")
    };
    let claims = |extra: Value| {
        let mut c = serde_json::json!({
            "sub": "tester", "org_id": "org_a", "roles": ["admin"],
            "permissions": ["viewAuditLog"], "exp": now + 3600,
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    // (case, claims, accepted); a 267 KB token is over the header limit
    // and refused with 431 before it is even read as a token.
    let cases = [
        ("an hour", claims(serde_json::json!({})), true),
        (
            "a day",
            claims(serde_json::json!({"exp": now + 86_000})),
            true,
        ),
        (
            "never expires",
            claims(serde_json::json!({"exp": i64::MAX})),
            false,
        ),
        (
            "a year",
            claims(serde_json::json!({"exp": now + 365 * 86_400})),
            false,
        ),
        (
            "not yet valid",
            claims(serde_json::json!({"nbf": now + 3600})),
            false,
        ),
        (
            "valid since a minute",
            claims(serde_json::json!({"nbf": now - 60})),
            true,
        ),
        (
            "267 KB",
            claims(serde_json::json!({"pad": "x".repeat(267 * 1024)})),
            false,
        ),
    ];
    for (case, c, accepted) in cases {
        let (status, body) = api.get("/v1/events?limit=1", Some(&mint(c))).await;
        let (want, code) = match (accepted, case) {
            (true, _) => (StatusCode::OK, None),
            (false, "267 KB") => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Some("headers_too_large"),
            ),
            (false, _) => (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        };
        assert_eq!(status, want, "{case}: {body}");
        if let Some(code) = code {
            assert_eq!(body["error"]["code"], code, "{case}");
        }
    }
}
