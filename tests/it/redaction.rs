//! Redaction by default, end to end: events carrying credentials in every
//! place the default rules used to miss go through the real ingest service,
//! Kafka and the consumer into ClickHouse, and no secret value is stored.

use std::time::Duration;

use serde_json::{json, Value};
use trailhouse_tests::faults::wait_for_rows;
use trailhouse_tests::TestEnv;

/// A secret per place, named after it, so a failure says which one leaked.
fn secret(place: &str) -> String {
    format!("Zq8-{place}-s3cr3t")
}

/// One event per group of places; `(secret, place)` for every planted value.
fn events() -> (Vec<Value>, Vec<String>) {
    let s = secret;
    let event = |action: &str, request: Value, metadata: Value| json!({"org_id": "acme", "action": {"type": action}, "request": request, "metadata": metadata});
    let events = vec![
        event(
            "headers",
            json!({"headers": {
                "X-Forwarded-Authorization": format!("Bearer {}", s("x-forwarded-authorization")),
                "X-Authorization": s("x-authorization"),
                "X-Session-Id": s("x-session-id"),
                "X-Secret-Key": s("x-secret-key"),
                "X-Upstream": format!("Basic {}", s("auth-scheme-value")),
                "Accept": "application/json",
            }}),
            json!({}),
        ),
        event(
            "urls",
            json!({
                "url": format!(
                    "https://bo:{}@app.test/files;password={}/x?page=2#access_token={}&state=ok",
                    s("userinfo"), s("matrix"), s("fragment")
                ),
                "headers": {"Referer": format!("https://app.test/cb?code={}", s("referer-code"))},
            }),
            json!({}),
        ),
        event(
            "paths",
            json!({
                "path": format!("/reset/{}", s("path-param")),
                "url": format!("https://app.test/reset/{}", s("path-param")),
                "path_params": {"token": s("path-param")},
            }),
            json!({}),
        ),
        event(
            "path.query",
            json!({"path": format!("/login?password={}&user=bo", s("path-query"))}),
            json!({}),
        ),
        event(
            "query",
            json!({
                "url": format!(
                    "https://app.test/cb?code={}&X-Amz-Signature={}&private_key={}&sig={}&page=2",
                    s("url-code"), s("url-amz-signature"), s("url-private-key"), s("url-sig")
                ),
                "query": {
                    "code": s("query-code"),
                    "X-Amz-Signature": s("query-amz-signature"),
                    "private_key": s("query-private-key"),
                    "sig": s("query-sig"),
                    "page": "2",
                },
            }),
            json!({}),
        ),
        event(
            "metadata",
            json!({}),
            json!({
                "session_token": s("metadata-key"),
                "callback": format!("https://hook.test/in?sig={}", s("metadata-url")),
                "payload": json!({"password": s("metadata-json")}).to_string(),
                "plan": "pro",
            }),
        ),
        event(
            "nested.json",
            json!({"body": json!({
                "user": "ada",
                "data": json!({"password": s("body-nested-json"), "deeper": json!({"apiKey": s("body-nested-twice")}).to_string()}).to_string(),
            }).to_string()}),
            json!({}),
        ),
    ];
    let secrets = [
        "x-forwarded-authorization",
        "x-authorization",
        "x-session-id",
        "x-secret-key",
        "auth-scheme-value",
        "userinfo",
        "matrix",
        "fragment",
        "referer-code",
        "path-param",
        "path-query",
        "url-code",
        "url-amz-signature",
        "url-private-key",
        "url-sig",
        "query-code",
        "query-amz-signature",
        "query-private-key",
        "query-sig",
        "metadata-key",
        "metadata-url",
        "metadata-json",
        "body-nested-json",
        "body-nested-twice",
    ]
    .map(secret)
    .to_vec();
    (events, secrets)
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Dump {
    row: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_by_default_stores_no_credential_shaped_value() {
    let mut env = TestEnv::new("redaction_defaults", 1).await;
    let url = env.start_ingest(&["acme"]).await;
    env.start_consumer();
    env.wait_ready().await;
    let (events, secrets) = events();
    let posted = serde_json::to_string(&events).expect("json");
    for s in &secrets {
        assert!(posted.contains(s.as_str()), "{s} is planted");
    }
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth("key-acme")
        .json(&events)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);

    let (stored, _) = wait_for_rows(
        &env.clickhouse,
        events.len() as u64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(stored, events.len() as u64);
    let rows: Vec<Value> = env
        .clickhouse
        .client()
        .query("SELECT formatRowNoNewline('JSONEachRow', *) AS row FROM events")
        .fetch_all::<Dump>()
        .await
        .expect("rows")
        .into_iter()
        .map(|d| serde_json::from_str(&d.row).expect("row json"))
        .collect();
    let dump = serde_json::to_string(&rows).expect("dump");
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| dump.contains(s.as_str()))
        .collect();
    assert!(leaked.is_empty(), "stored: {leaked:?}");

    // What is not a credential is kept.
    let by_action = |a: &str| {
        rows.iter()
            .find(|r| r["action_type"] == a)
            .cloned()
            .unwrap_or_else(|| panic!("no {a} row in {dump}"))
    };
    let headers = by_action("headers");
    assert_eq!(headers["request_headers"]["Accept"], "application/json");
    assert_eq!(
        headers["request_headers"]["X-Session-Id"], "[REDACTED]",
        "{headers}"
    );
    let urls = by_action("urls");
    assert_eq!(
        urls["request_url"],
        "https://%5BREDACTED%5D@app.test/files;password=%5BREDACTED%5D/x?page=2\
         #access_token=%5BREDACTED%5D&state=ok"
    );
    let paths = by_action("paths");
    assert_eq!(paths["request_path"], "/reset/%5BREDACTED%5D");
    assert_eq!(paths["request_path_params"]["token"], "[REDACTED]");
    let metadata = by_action("metadata");
    assert_eq!(metadata["metadata"]["plan"], "pro");
    let body = by_action("nested.json");
    let body: Value =
        serde_json::from_str(body["request_body"].as_str().unwrap_or("")).expect("body json");
    assert_eq!(body["user"], "ada");
    env.stop().await;
}
