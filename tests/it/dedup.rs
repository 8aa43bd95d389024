//! One event per `(org_id, id)`: a batch posted again (a client's retry)
//! and a batch that repeats an id, through the real ingest, broker,
//! consumer and ClickHouse, then read back through every API, the export
//! and the counts. The stored copies are counted too, to show the test sees
//! what a retry really leaves behind.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use trailhouse_query_api::auth::Claims;
use trailhouse_tests::{TestEnv, SERVICE_KEY};

const ORG: &str = "org_d";

/// Five events with ids: three with `created_at`, two with only a UUIDv7
/// id (their time is the id's, so a retry lands on the same row).
fn batch() -> Vec<Value> {
    let now = Utc::now();
    (0..5)
        .map(|i| {
            let at = now - chrono::Duration::seconds(60 * (i + 1));
            let micros = u64::try_from(at.timestamp_micros()).unwrap_or(0);
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                micros / 1_000_000,
                u32::try_from((micros % 1_000_000) * 1_000).unwrap_or(0),
            );
            let mut e = json!({
                "id": uuid::Uuid::new_v7(ts).to_string(),
                "org_id": ORG,
                "workspace_id": "ws1",
                "environment_id": "prod",
                "auth": {"type": "client", "client_id": "c1"},
                "actor": {"type": "user", "id": format!("usr_{i}")},
                "action": {"type": "ticket.update", "description": format!("event {i}")},
                "request": {"method": "PUT", "path": format!("/v1/tickets/{i}"), "status": 200}
            });
            if i < 3 {
                e["created_at"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            }
            e
        })
        .collect()
}

async fn post(env: &TestEnv, body: &Value) -> (u16, Value) {
    let url = env.ingest_url.as_deref().expect("ingest");
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth(SERVICE_KEY)
        .json(body)
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// How one API pages: the first URL, where the rows are, where the next
/// cursor is and the parameter that takes it, and where "more" is said
/// when the cursor alone does not tell.
struct Walk {
    first: &'static str,
    rows: &'static str,
    next_at: &'static str,
    param: &'static str,
    more_at: Option<&'static str>,
}

const WALKS: [Walk; 5] = [
    Walk {
        first: "/v1/events?limit=LIMIT",
        rows: "/data",
        next_at: "/next_cursor",
        param: "cursor",
        more_at: None,
    },
    Walk {
        first: "/audit-log?authType=client&limit=LIMIT",
        rows: "/data",
        next_at: "/cursor",
        param: "cursor",
        more_at: None,
    },
    Walk {
        first: "/api/v1/organizations/org_d/audit-logs?limit=LIMIT",
        rows: "/data",
        next_at: "/cursor",
        param: "cursor",
        more_at: None,
    },
    Walk {
        first: "/v1alpha/audit_logs?page_size=LIMIT",
        rows: "/audit_logs",
        next_at: "/next_page_token",
        param: "page_token",
        more_at: None,
    },
    Walk {
        first: "/api/v2/audit_logs?page[size]=LIMIT",
        rows: "/audit_logs",
        next_at: "/meta/after_cursor",
        param: "page[after]",
        more_at: Some("/meta/has_more"),
    },
];

async fn get(env: &TestEnv, token: &str, path: &str) -> Value {
    let url = env.query_url.as_deref().expect("query api");
    let resp = env
        .http
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("json")
}

/// The ids a walk returns, page by page, in order.
async fn walk(env: &TestEnv, token: &str, w: &Walk, limit: u32) -> Vec<String> {
    let first = w.first.replace("LIMIT", &limit.to_string());
    let mut path = first.clone();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let body = get(env, token, &path).await;
        let rows = body.pointer(w.rows).and_then(Value::as_array).cloned();
        ids.extend(
            rows.unwrap_or_default()
                .iter()
                .filter_map(|r| r["id"].as_str().map(String::from)),
        );
        let more = w
            .more_at
            .is_none_or(|m| body.pointer(m).and_then(Value::as_bool) == Some(true));
        match body.pointer(w.next_at).and_then(Value::as_str) {
            Some(c) if more && !c.is_empty() => {
                // Cursors are URL-safe base64.
                path = format!("{first}&{}={c}", w.param);
            }
            _ => return ids,
        }
    }
    panic!("{first}: the walk did not end");
}

async fn export(env: &TestEnv, token: &str, format: &str) -> String {
    let url = env.query_url.as_deref().expect("query api");
    let resp = env
        .http
        .get(format!("{url}/v1/events/export?format={format}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("text")
}

async fn stored_copies(env: &TestEnv) -> u64 {
    env.clickhouse
        .client()
        .query("SELECT count() FROM events WHERE org_id = ?")
        .bind(ORG)
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_or_repeated_event_is_visible_once_everywhere() {
    let mut env = TestEnv::new("dedup", 2).await;
    env.start_all(&[ORG]).await;
    let events = batch();
    let ids: Vec<String> = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();

    // The batch, then its retry: both acknowledged.
    for attempt in 0..2 {
        let (st, body) = post(&env, &json!(events)).await;
        assert_eq!(st, 202, "attempt {attempt}: {body}");
    }
    // The same id twice in one request: refused, naming both events.
    let repeated = json!([events[0], {"org_id": ORG, "action": {"type": "x"}}, events[0]]);
    let (st, body) = post(&env, &repeated).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"]["details"][0]["index"], 2, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "id", "{body}");

    // Both copies of every event are stored (the consumer writes what the
    // broker holds); what follows reads them back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_copies(&env).await < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored_copies(&env).await, 10, "both posts stored");

    let token = env.token_for(Claims {
        sub: "tester".into(),
        org_id: ORG.into(),
        environment_id: None,
        workspace_id: Some("ws1".into()),
        roles: vec!["admin".into(), "workbench".into()],
        permissions: Vec::new(),
        exp: Utc::now().timestamp() + 3600,
        iat: 0,
    });
    for w in &WALKS {
        for limit in [1, 2, 3, 100] {
            let got = walk(&env, &token, w, limit).await;
            assert_eq!(
                got, ids,
                "{} limit {limit}: each event once, newest first",
                w.first
            );
        }
    }
    // Zendesk offset mode: pages and the count.
    for per_page in [1, 2, 5, 10] {
        let mut got = Vec::new();
        for page in 1..=10 {
            let body = get(
                &env,
                &token,
                &format!("/api/v2/audit_logs?per_page={per_page}&page={page}"),
            )
            .await;
            assert_eq!(body["count"], 5, "per_page {per_page}: {body}");
            let rows = body["audit_logs"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                break;
            }
            got.extend(
                rows.iter()
                    .filter_map(|r| r["id"].as_str().map(String::from)),
            );
        }
        assert_eq!(got, ids, "offset mode, per_page {per_page}");
    }
    // The export, both formats.
    let ndjson = export(&env, &token, "ndjson").await;
    let exported: Vec<String> = ndjson
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    assert_eq!(exported, ids, "ndjson export");
    let csv = export(&env, &token, "csv").await;
    let lines = csv.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(
        lines,
        1 + ids.len(),
        "csv export: a header and one line an event\n{csv}"
    );
    for id in &ids {
        assert_eq!(csv.matches(id.as_str()).count(), 1, "csv export: {id}");
    }
    env.stop().await;
}

/// Events of one client batch: ids and times fixed, as a client that
/// retries must keep them.
fn client_batch(worker: usize, n: usize, size: usize) -> Vec<Value> {
    let base = Utc::now().timestamp_micros() - 3_600_000_000;
    (0..size)
        .map(|i| {
            let seq = (worker * 1_000 + n) * size + i;
            let at = chrono::DateTime::from_timestamp_micros(base + seq as i64 * 1_000)
                .unwrap_or_default();
            json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "org_id": ORG,
                "workspace_id": "ws1",
                "created_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "actor": {"type": "user", "id": format!("usr_{worker}")},
                "action": {"type": "ticket.update", "description": format!("{worker}/{n}/{i}")}
            })
        })
        .collect()
}

/// Posts until acknowledged: a 503, or no answer within 2 s (the client's
/// own timeout, shorter than the outage), is retried with the same events.
/// Returns the attempts it took.
async fn post_until_acked(http: &reqwest::Client, url: &str, body: &Value) -> usize {
    for attempt in 1..=600 {
        let status = http
            .post(format!("{url}/v1/events"))
            .bearer_auth(SERVICE_KEY)
            .json(body)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 202 {
            return attempt;
        }
        assert!(
            status == 0 || status == 503,
            "only 503s (or no answer) while the broker is away, got {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a batch was never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_retrying_through_a_broker_restart_see_each_event_once() {
    if !trailhouse_tests::faults::needs_durable_broker(
        "clients_retrying_through_a_broker_restart_see_each_event_once",
    ) {
        return;
    }
    use trailhouse_tests::faults::Broker;
    const WORKERS: usize = 4;
    const BATCHES: usize = 40;
    const SIZE: usize = 20;
    let mut broker = Broker::start();
    let mut env = TestEnv::with_brokers("dedup_retry", &broker.address(), 2).await;
    // The outage stays shorter than the acknowledgement timeout (see the
    // ingest broker-stop test: the local broker's idempotent producer quirk).
    let url = env
        .start_ingest_with(&[ORG], |c| c.ack_timeout_ms = 30_000)
        .await;
    env.start_consumer();
    env.start_query_api().await;
    env.wait_ready().await;

    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (http, url, acked) = (env.http.clone(), url.clone(), acked.clone());
            tokio::spawn(async move {
                let (mut ids, mut posts) = (Vec::new(), 0);
                for n in 0..BATCHES {
                    let batch = client_batch(w, n, SIZE);
                    let body = json!(batch);
                    posts += post_until_acked(&http, &url, &body).await;
                    // Every fifth answer is "lost" (a client timeout): the
                    // client sends the acknowledged batch again.
                    if n % 5 == 0 {
                        posts += post_until_acked(&http, &url, &body).await;
                    }
                    acked.fetch_add(SIZE, std::sync::atomic::Ordering::Relaxed);
                    ids.extend(
                        batch
                            .iter()
                            .filter_map(|e| e["id"].as_str().map(String::from)),
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (ids, posts)
            })
        })
        .collect();
    // The broker dies with batches in flight, some of them partly
    // acknowledged, and comes back.
    let start = Instant::now();
    while acked.load(std::sync::atomic::Ordering::Relaxed) < WORKERS * BATCHES * SIZE / 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    broker.restart();
    let (mut want, mut posts) = (Vec::new(), 0);
    for w in workers {
        let (ids, p) = w.await.expect("worker");
        want.extend(ids);
        posts += p;
    }
    want.sort();
    let total = want.len();

    // Every acknowledged event arrives; the retries stored extra copies.
    let distinct = |env: &TestEnv| {
        let client = env.clickhouse.client();
        async move {
            client
                .query("SELECT uniqExact(id), count() FROM events WHERE org_id = ?")
                .bind(ORG)
                .fetch_one::<(u64, u64)>()
                .await
                .unwrap_or((0, 0))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut stored_ids, mut copies) = distinct(&env).await;
    while stored_ids < total as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (stored_ids, copies) = distinct(&env).await;
    }
    let resends = WORKERS * BATCHES.div_ceil(5);
    let retries = posts - WORKERS * BATCHES - resends;
    println!(
        "retrying clients: {total} events, {posts} posts ({retries} retries after a 503 or a \
         timeout, {resends} resends of acknowledged batches), {copies} stored copies of \
         {stored_ids} ids"
    );
    assert!(retries > 0, "the outage made clients retry");
    assert_eq!(
        stored_ids, total as u64,
        "every acknowledged event is stored"
    );
    assert!(copies > stored_ids, "the retries stored copies ({copies})");

    // Each event is visible once: the native walk and Zendesk's count.
    let token = env.token_for(Claims {
        sub: "tester".into(),
        org_id: ORG.into(),
        environment_id: None,
        workspace_id: Some("ws1".into()),
        roles: vec!["admin".into()],
        permissions: Vec::new(),
        exp: Utc::now().timestamp() + 3600,
        iat: 0,
    });
    let mut got = walk(&env, &token, &WALKS[0], 1000).await;
    let walked = got.len();
    got.sort();
    got.dedup();
    assert_eq!(walked, got.len(), "the native walk repeated events");
    assert_eq!(
        got, want,
        "the native walk returns every acknowledged event"
    );
    let body = get(&env, &token, "/api/v2/audit_logs?per_page=1&page=1").await;
    assert_eq!(body["count"], total, "zendesk count");
    env.stop().await;
    drop(broker);
}
