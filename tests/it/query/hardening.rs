//! The query API's edge against the real running server: failed
//! authentications counted by reason, JSON bodies for oversized request
//! targets and headers, and forwarded headers believed only from trusted
//! proxies (and only http/https).

use super::*;

async fn metrics(api: &Api) -> String {
    api.env
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn failed_authentications_are_counted_by_reason() {
    let api = Api::new("q_auth_metric").await;
    let expired = api.env.token_for(trailhouse_query_api::auth::Claims {
        sub: "tester".into(),
        org_id: "org_a".into(),
        environment_id: None,
        workspace_id: None,
        roles: vec!["admin".into()],
        permissions: vec![],
        exp: Utc::now().timestamp() - 3600,
        iat: 0,
    });
    // (path, token, reason)
    let cases = [
        ("/v1/events", None, "missing"),
        ("/api/v2/audit_logs", Some("not-a-token"), "invalid"),
        ("/v1alpha/audit_logs", Some("not-a-token"), "invalid"),
        ("/audit-log", Some(expired.as_str()), "expired"),
    ];
    for (path, token, _) in cases {
        let (st, _) = api.get(path, token).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}");
    }
    let m = metrics(&api).await;
    for (reason, n) in [("missing", 1), ("invalid", 2), ("expired", 1)] {
        let line = format!("trailhouse_query_auth_failures_total{{reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    assert!(!m.contains("not-a-token"), "never the token");
    api.env.stop().await;
}

#[tokio::test]
async fn oversized_targets_and_headers_get_json_bodies() {
    let api = Api::new("q_sizes").await;
    let t = api.admin("org_a");
    let resp = api
        .env
        .http
        .get(format!("{}/v1/events?q={}", api.url, "a".repeat(20_000)))
        .bearer_auth(&t)
        .send()
        .await
        .expect("long uri");
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
    let body: Value = resp.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "uri_too_long");
    let resp = api
        .env
        .http
        .get(format!("{}/v1/events", api.url))
        .bearer_auth(&t)
        .header("x-pad", "p".repeat(100_000))
        .send()
        .await
        .expect("big headers");
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = resp.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "headers_too_large");
    api.env.stop().await;
}

async fn zendesk_url(api: &Api, t: &str, proto: &str, host: &str) -> String {
    let resp = api
        .env
        .http
        .get(format!("{}/api/v2/audit_logs?page[size]=1", api.url))
        .bearer_auth(t)
        .header("x-forwarded-proto", proto)
        .header("x-forwarded-host", host)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "{proto} {host}");
    let body: Value = resp.json().await.expect("json");
    body["audit_logs"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // Not trusted (the default): the peer's own Host is used.
    let api = Api::new("q_untrusted").await;
    let t = api.admin("org_a");
    let own = api.url.trim_start_matches("http://").to_string();
    for (proto, host) in [
        ("https", "audit.example.com"),
        ("javascript", "evil.example"),
    ] {
        let url = zendesk_url(&api, &t, proto, host).await;
        assert!(
            url.starts_with(&format!("http://{own}/")),
            "{proto} {host}: {url}"
        );
    }
    api.env.stop().await;

    // Trusted: believed, but only http or https and only a host.
    let api = Api::with("q_trusted", |c| {
        c.trusted_proxies = "127.0.0.1/32".parse().expect("cidr")
    })
    .await;
    let t = api.admin("org_a");
    let cases = [
        ("javascript", "evil.example", "http://evil.example/"),
        ("https", "user:pw@evil.example", "https://127.0.0.1"),
        ("https", "evil.example/x?", "https://127.0.0.1"),
        ("https", "audit.example.com", "https://audit.example.com/"),
    ];
    for (proto, host, prefix) in cases {
        let url = zendesk_url(&api, &t, proto, host).await;
        assert!(url.starts_with(prefix), "{proto} {host}: {url}");
    }
    api.env.stop().await;
}
