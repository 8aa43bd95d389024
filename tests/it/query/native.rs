//! The native API and its export.

use super::*;

#[tokio::test]
async fn native_api_and_export() {
    let api = Api::new("q_native").await;
    let t = api.admin("org_a");
    let (st, body) = api.get("/v1/events?acton=x", Some(&t)).await;
    assert_bad(st, &body, "acton", "unknown parameter");
    for (q, param) in [
        ("limit=0", "limit"),
        ("status=abc", "status"),
        ("status_min=500&status_max=400", "status_min"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("order=up", "order"),
        ("path_prefix=a&path_prefix=b", "path_prefix"),
    ] {
        let (st, body) = api.get(&format!("/v1/events?{q}"), Some(&t)).await;
        assert_bad(st, &body, param, q);
    }
    // Walk forward then back with next_cursor / prev_cursor.
    let base = "/v1/events?limit=250&status_min=400";
    let (pages, last) = walk(&api, &t, base, "data", |b| {
        cursor_link(base, "cursor", b["next_cursor"].as_str())
    })
    .await;
    let one = api.ok(&format!("/v1/events/{}", api.a[0].id), &t).await;
    assert_documented(&api, &one, "Event").await;
    let first = api.ok(base, &t).await;
    assert_documented(&api, &first, "NativePage").await;
    assert!(first["prev_cursor"].is_null());
    let want = row_ids(
        api.a
            .iter()
            .filter(|r| r.request_status.is_some_and(|s| s >= 400)),
    );
    assert_eq!(pages.concat(), want);
    let back = walk_back(&api, &t, last, "data", |b| {
        cursor_link(base, "cursor", b["prev_cursor"].as_str())
    })
    .await;
    assert_eq!(back, pages);

    // Export: every matching event, both formats, no page limit.
    let resp = api
        .env
        .http
        .get(format!(
            "{}/v1/events/export?format=ndjson&order=asc",
            api.url
        ))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let text = resp.text().await.expect("body");
    let got: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json line")["id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let mut asc = row_ids(api.a.iter());
    asc.reverse();
    assert_eq!(got, asc);
    let resp = api
        .env
        .http
        .get(format!(
            "{}/v1/events/export?format=csv&action=login",
            api.url
        ))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    let text = resp.text().await.expect("body");
    let mut lines = text.split("\r\n");
    assert!(lines
        .next()
        .unwrap_or("")
        .starts_with("id,created_at,org_id,"));
    let got: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        got,
        row_ids(api.a.iter().filter(|r| r.action_type == "login"))
    );
    let (st, body) = api.get("/v1/events/export?format=xml", Some(&t)).await;
    assert_bad(st, &body, "format", "format");
    let (st, body) = api.get("/v1/events/export?limit=5", Some(&t)).await;
    assert_bad(st, &body, "limit", "export has no limit");

    // The OpenAPI document is served.
    let doc = api.ok("/openapi.json", &t).await;
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    api.env.stop().await;
}
