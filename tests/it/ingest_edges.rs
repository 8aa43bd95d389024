//! Ingest's edge against the real running service: JSON bodies for
//! oversized request targets and headers and for the router's own answers,
//! and the per-org rate limit with the RateLimit headers.

use reqwest::StatusCode;
use serde_json::Value;
use trailhouse_tests::{TestEnv, SERVICE_KEY};

const EVENT: &str = r#"{"org_id":"acme","action":{"type":"user.login"}}"#;

#[tokio::test]
async fn every_error_of_ingest_has_a_json_body() {
    let mut env = TestEnv::new("ingest_json_errors", 1).await;
    let url = env.start_ingest(&["acme"]).await;
    env.wait_ready().await;
    let http = &env.http;
    // (request, status, code)
    let cases = [
        (
            http.post(format!("{url}/v1/events?q={}", "a".repeat(20_000)))
                .bearer_auth("key-acme"),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
        (
            http.post(format!("{url}/v1/events"))
                .bearer_auth("key-acme")
                .header("x-pad", "p".repeat(100_000)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        (
            http.get(format!("{url}/v1/events")).bearer_auth("key-acme"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req
            .header("content-type", "application/json")
            .body(EVENT)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), status, "{code}");
        let body: Value = resp.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], code);
    }
    env.stop().await;
}

#[tokio::test]
async fn an_org_over_its_rate_gets_429_with_the_ratelimit_headers() {
    let mut env = TestEnv::new("ingest_rate", 1).await;
    let url = env
        .start_ingest_with(&["acme", "globex"], |c| {
            c.rate_limit = "2/min".parse().expect("rate")
        })
        .await;
    env.wait_ready().await;
    let post = |key: &str, org: &str| {
        env.http
            .post(format!("{url}/v1/events"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(EVENT.replace("acme", org))
            .send()
    };
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    for left in [1, 0] {
        let r = post("key-acme", "acme").await.expect("post");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "ratelimit-policy"), "\"org\";q=2;w=60");
        assert!(header(&r, "ratelimit").starts_with(&format!("\"org\";r={left};")));
    }
    let r = post("key-acme", "acme").await.expect("post");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = header(&r, "retry-after").parse().unwrap_or(0);
    assert!((1..=30).contains(&wait), "retry-after {wait}");
    assert!(header(&r, "ratelimit").starts_with("\"org\";r=0;"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another org's key, and the platform's service key, are not affected.
    let r = post("key-globex", "globex").await.expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = post(SERVICE_KEY, "acme").await.expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let metrics = env
        .http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("trailhouse_ingest_rate_limited_total 1"),
        "{metrics}"
    );
    env.stop().await;
}
