//! The query API's `/metrics`, scraped and validated by Prometheus's own
//! parser: every family of its catalogue with its type, help and labels,
//! request metrics by route template, ClickHouse query latency and the
//! rows returned.

use super::*;
use trailhouse_tests::scrape::scrape;

#[tokio::test]
async fn the_query_api_exports_its_catalogue() {
    let api = Api::new("q_metrics").await;
    let t = api.admin("org_a");
    let (st, _) = api.get("/v1/events?limit=5", Some(&t)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api.get("/v1/events", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = api.get("/nowhere", Some(&t)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let s = scrape(&api.env.http, &api.url).await;
    s.check_catalogue(&trailhouse_query_api::metrics::families());
    s.check_common("trailhouse-query-api");
    let requests = trailhouse_common::metrics::QUERY_HTTP.requests;
    let by = |route, status| {
        s.value(
            requests,
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(by("/v1/events", "2xx"), Some(1.0), "{}", s.text);
    assert_eq!(by("/v1/events", "4xx"), Some(1.0));
    assert_eq!(by("unmatched", "4xx"), Some(1.0));
    assert_eq!(by("/api/v2/audit_logs", "5xx"), Some(0.0), "preset at 0");
    let duration = format!("{}_count", trailhouse_common::metrics::QUERY_HTTP.duration);
    let labels = [
        ("route", "/v1/events"),
        ("method", "GET"),
        ("status", "2xx"),
    ];
    assert_eq!(s.value(&duration, &labels), Some(1.0));
    assert!(s.sum("trailhouse_query_clickhouse_duration_seconds_count") >= 1.0);
    // A page of 5 reads 6 rows (one more tells whether more exist).
    assert!(s.sum(trailhouse_query_api::metrics::ROWS_RETURNED) >= 5.0);
    assert!(s.sum(trailhouse_query_api::metrics::BYTES_RETURNED) > 0.0);
    assert_eq!(
        s.value(
            trailhouse_query_api::metrics::AUTH_FAILURES,
            &[("reason", "missing")]
        ),
        Some(1.0)
    );
    api.env.stop().await;
}
