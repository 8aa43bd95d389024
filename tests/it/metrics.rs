//! Ingest's and the consumer's `/metrics`, scraped and validated by
//! Prometheus's own parser: every family of each catalogue with its type,
//! help and labels, counters present at 0, request metrics by route
//! template, and the consumer's per-partition lag.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use trailhouse_common::metrics::INGEST_HTTP;
use trailhouse_tests::scrape::{scrape, Scrape};
use trailhouse_tests::TestEnv;

fn event(org: &str, i: usize) -> String {
    format!(r#"{{"org_id":"{org}","action":{{"type":"user.login"}},"actor":{{"id":"u{i}"}}}}"#)
}

/// Scrapes `url` until `done` holds (within `secs`), returning the last scrape.
async fn scrape_until(
    env: &TestEnv,
    url: &str,
    secs: u64,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = scrape(&env.http, url).await;
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn ingest_exports_its_catalogue() {
    let mut env = TestEnv::new("metrics_ingest", 1).await;
    let url = env.start_ingest(&["acme"]).await;
    env.wait_ready().await;
    let post = |key: &str, body: String| {
        env.http
            .post(format!("{url}/v1/events"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("key-acme", event("acme", 1)).await.expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.headers()["x-request-id"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(id.len(), 32, "a request id is made: {id}");
    let r = post("key-wrong", event("acme", 2)).await.expect("post");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post("key-acme", r#"{"org_id":"acme"}"#.into())
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{:?}", r.text().await);
    let r = env
        .http
        .get(format!("{url}/nowhere"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The probe publishes the broker and queue gauges every second.
    let s = scrape_until(&env, &url, 10, |s| {
        s.value(trailhouse_ingest::metrics::BROKER_UP, &[]) == Some(1.0)
    })
    .await;
    s.check_catalogue(&trailhouse_ingest::metrics::families());
    s.check_common("trailhouse-ingest");
    let by = |method, route, status| {
        s.value(
            INGEST_HTTP.requests,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(by("POST", "/v1/events", "2xx"), Some(1.0), "{}", s.text);
    assert_eq!(by("POST", "/v1/events", "5xx"), Some(0.0), "preset at 0");
    assert_eq!(by("POST", "/v1/events", "4xx"), Some(2.0));
    assert_eq!(by("GET", "unmatched", "4xx"), Some(1.0));
    let duration_count = format!("{}_count", INGEST_HTTP.duration);
    let labels = [
        ("route", "/v1/events"),
        ("method", "POST"),
        ("status", "4xx"),
    ];
    assert_eq!(s.value(&duration_count, &labels), Some(2.0));
    use trailhouse_ingest::metrics as m;
    assert_eq!(s.value(m::EVENTS_ACCEPTED, &[]), Some(1.0));
    assert_eq!(
        s.value(m::EVENTS_REJECTED, &[("reason", "invalid")]),
        Some(1.0)
    );
    assert_eq!(
        s.value(m::EVENTS_REJECTED, &[("reason", "too_large")]),
        Some(0.0)
    );
    assert_eq!(
        s.value(m::AUTH_FAILURES, &[("reason", "unknown_key")]),
        Some(1.0)
    );
    assert_eq!(
        s.value(&format!("{}_count", m::PUBLISH_SECONDS), &[]),
        Some(1.0)
    );
    assert_eq!(s.value(m::QUEUE_MESSAGES, &[]), Some(0.0));
    assert_eq!(s.value(m::OVERLOADED, &[]), Some(0.0));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_exports_its_catalogue_and_lag_per_partition() {
    let mut env = TestEnv::new("metrics_consumer", 2).await;
    let ingest = env.start_ingest(&["acme", "globex"]).await;
    let url = env.start_consumer_serving().await;
    env.wait_ready().await;
    for (org, n) in [("acme", 60), ("globex", 40)] {
        let body = (0..n).map(|i| event(org, i)).collect::<Vec<_>>().join("\n");
        let r = env
            .http
            .post(format!("{ingest}/v1/events"))
            .bearer_auth(format!("key-{org}"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    use trailhouse_consumer::metrics as m;
    // Statistics (the lag in messages) arrive every 5 s.
    let s = scrape_until(&env, &url, 60, |s| {
        s.value(m::ROWS_INSERTED, &[]) == Some(100.0)
            && s.value(m::LAG, &[("partition", "0")]) == Some(0.0)
            && s.value(m::LAG, &[("partition", "1")]) == Some(0.0)
    })
    .await;
    // Ingest runs in this process too.
    s.check_catalogue(&[m::families(), trailhouse_ingest::metrics::families()].concat());
    s.check_common("trailhouse-consumer");
    assert_eq!(s.value(m::ROWS_INSERTED, &[]), Some(100.0), "{}", s.text);
    for p in ["0", "1"] {
        assert_eq!(
            s.value(m::LAG, &[("partition", p)]),
            Some(0.0),
            "{}",
            s.text
        );
        assert_eq!(s.value(m::LAG_SECONDS, &[("partition", p)]), Some(0.0));
    }
    assert_eq!(s.value(m::ASSIGNED, &[]), Some(2.0));
    assert!(s.value(m::BYTES_INSERTED, &[]).unwrap_or(0.0) > 0.0);
    assert!(s.value(m::LAST_INSERT, &[]).unwrap_or(0.0) > 1.7e9);
    assert!(
        s.value(&format!("{}_count", m::INSERT_SECONDS), &[])
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(s.value(&format!("{}_sum", m::BATCH_ROWS), &[]), Some(100.0));
    assert_eq!(s.value(m::RETRIES, &[("step", "insert")]), Some(0.0));
    assert_eq!(s.value(m::DEAD_LETTERED, &[]), Some(0.0));
    assert_eq!(s.value(m::PAUSED, &[]), Some(0.0));
    assert_eq!(s.value(m::BROKER_UP, &[]), Some(1.0));
    env.stop().await;
}

/// The partitions a consumer's scrape has lag series for.
fn partitions(s: &Scrape) -> Vec<String> {
    let mut p: Vec<String> = s
        .families
        .get(trailhouse_consumer::metrics::LAG_SECONDS)
        .map(|f| {
            f.samples
                .iter()
                .filter_map(|x| x.labels.get("partition").cloned())
                .collect()
        })
        .unwrap_or_default();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partition_takes_its_series_along() {
    use trailhouse_tests::faults::{consumer, free_port, wait_port};
    let env = TestEnv::new("metrics_revoke", 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let group = format!("{}.consumer", env.name);
    let start = |port: u16, name: &str| {
        consumer(
            &env.kafka,
            &env.clickhouse,
            &group,
            &[("TRAILHOUSE_CONSUMER_LISTEN", format!("127.0.0.1:{port}"))],
            &dir.path().join(format!("{name}.log")),
        )
    };
    let (pa, pb) = (free_port(), free_port());
    let _a = start(pa, "a");
    assert!(
        wait_port(pa, Duration::from_secs(30)),
        "consumer a did not start"
    );
    let (a, b) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    let s = scrape_until(&env, &a, 60, |s| partitions(s) == ["0", "1"]).await;
    assert_eq!(partitions(&s), ["0", "1"], "a owns both:\n{}", s.text);
    let _b = start(pb, "b");
    assert!(
        wait_port(pb, Duration::from_secs(30)),
        "consumer b did not start"
    );
    // After the rebalance each owns one partition, and a's scrape no longer
    // shows the one it gave away.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (sa, sb) = (scrape(&env.http, &a).await, scrape(&env.http, &b).await);
        let (ours, theirs) = (partitions(&sa), partitions(&sb));
        if ours.len() == 1 && theirs.len() == 1 && ours != theirs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a: {ours:?}, b: {theirs:?}\n{}",
            std::fs::read_to_string(dir.path().join("a.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
