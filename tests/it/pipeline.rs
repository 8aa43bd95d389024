//! The walking skeleton end to end: HTTP → Kafka → ClickHouse → query API.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use trailhouse_common::clickhouse::migrate;
use trailhouse_schemas::event::{parse_input, validate, SystemStamp};
use trailhouse_tests::{TestEnv, SERVICE_KEY};

const ORGS: [&str; 5] = ["org_a", "org_b", "org_c", "org_d", "org_e"];
const ACTIONS: [&str; 4] = [
    "user.login",
    "user.update",
    "ticket.delete",
    "workflow.publish",
];

/// A realistic event; every third event shares its timestamp with the next.
fn event(i: usize) -> Value {
    let org = ORGS[i % ORGS.len()];
    // Recent: events older than their retention class (90 days by default)
    // are dropped by the table's TTL.
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| (chrono::Utc::now().timestamp() - 86_400) * 1_000_000);
    let ts =
        chrono::DateTime::from_timestamp_micros(base + (i as i64 / 3) * 1_000).unwrap_or_default();
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "org_id": org,
        "environment_id": if i.is_multiple_of(2) { "prod" } else { "staging" },
        "workspace_id": format!("ws_{}", i % 7),
        "workspace_name": format!("Workspace {}", i % 7),
        "created_at": ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "actor": {"type": "user", "id": format!("usr_{}", i % 97), "email": format!("u{}@{org}.test", i % 97), "name": "Test User"},
        "auth": {"type": if i.is_multiple_of(3) { "api_key" } else { "jwt" }, "sub": format!("usr_{}", i % 97)},
        "source": "client-api",
        "action": {"type": ACTIONS[i % ACTIONS.len()], "description": format!("event number {i}")},
        "resource": {"type": "tickets", "id": format!("tk_{i}"), "name": format!("Ticket {i}")},
        "request": {"method": "POST", "url": format!("https://api.test/v1/tickets/tk_{i}?x=1"), "path": format!("/v1/tickets/tk_{i}"),
            "status": 200 + (i % 3) as u16, "duration_ms": (i % 1000) as f64 / 4.0, "ip": format!("10.0.{}.{}", i % 250, i % 200),
            "user_agent": "it/1.0", "query": {"x": "1"}, "path_params": {"ticket_id": format!("tk_{i}")},
            "headers": {"content-type": "application/json"}, "body": format!("{{\"n\":{i}}}")},
        "metadata": {"i": i.to_string()}
    })
}

/// The canonical form we expect back (minus the server-stamped `received_at`).
fn expected(v: &Value) -> Value {
    let mut e = validate(parse_input(v.clone()).expect("parse"), &SystemStamp).expect("valid");
    // Stamped by ingest from its retention configuration (the default here).
    e.retention_days = Some(trailhouse_schemas::retention::DEFAULT_RETENTION_DAYS);
    let mut out = serde_json::to_value(e).expect("json");
    out.as_object_mut().map(|o| o.remove("received_at"));
    out
}

async fn read_all(env: &TestEnv, org: &str) -> Vec<Value> {
    let url = env.query_url.as_deref().expect("query api");
    let token = env.token(org, &["admin"], &[]);
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = env
            .http
            .get(format!("{url}/v1/events"))
            .bearer_auth(&token)
            .query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let resp = req.send().await.expect("query");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        out.extend(body["data"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_for_five_orgs_come_back_exactly() {
    let mut env = TestEnv::new("e2e", 4).await;
    env.start_all(&ORGS).await;
    let ingest = env.ingest_url.clone().expect("ingest");

    let events: Vec<Value> = (0..10_000).map(event).collect();
    let batches: Vec<Vec<Value>> = events.chunks(500).map(<[Value]>::to_vec).collect();
    let http = env.http.clone();
    let statuses: Vec<u16> = stream::iter(batches)
        .map(|b| {
            let (http, ingest) = (http.clone(), ingest.clone());
            async move {
                http.post(format!("{ingest}/v1/events"))
                    .bearer_auth(SERVICE_KEY)
                    .json(&b)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let acked = Instant::now();

    let mut want: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for v in &events {
        let org = v["org_id"].as_str().expect("org");
        want.entry(org)
            .or_default()
            .insert(v["id"].as_str().expect("id").to_string(), expected(v));
    }

    let deadline = acked + Duration::from_secs(60);
    let mut got: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    loop {
        got.clear();
        for org in ORGS {
            got.insert(org, read_all(&env, org).await);
        }
        let total: usize = got.values().map(Vec::len).sum();
        if total >= events.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "all 10000 events visible {:?} after the last 202",
        acked.elapsed()
    );

    for org in ORGS {
        let rows = &got[org];
        let ids: HashSet<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(ids.len(), rows.len(), "{org}: duplicates");
        assert_eq!(rows.len(), want[org].len(), "{org}: missing events");
        // Newest first, ties broken by id.
        let keys: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["created_at"].as_str().unwrap_or("").to_string(),
                    r["id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0].0 >= w[1].0),
            "{org}: not newest first"
        );
        for r in rows {
            assert_eq!(r["org_id"], org, "another org's event is visible");
            let mut r = r.clone();
            assert!(r
                .as_object_mut()
                .and_then(|o| o.remove("received_at"))
                .is_some());
            let id = r["id"].as_str().expect("id").to_string();
            assert_eq!(r, want[org][&id], "{org}: event {id} differs");
        }
    }

    // Single-event reads are scoped to the token's org.
    let url = env.query_url.clone().expect("query");
    let some_a = got["org_a"][0]["id"].as_str().expect("id").to_string();
    let own = env
        .http
        .get(format!("{url}/v1/events/{some_a}"))
        .bearer_auth(env.token("org_a", &["admin"], &[]))
        .send()
        .await
        .expect("get");
    assert_eq!(own.status(), 200);
    let foreign = env
        .http
        .get(format!("{url}/v1/events/{some_a}"))
        .bearer_auth(env.token("org_b", &["admin"], &[]))
        .send()
        .await
        .expect("get");
    assert_eq!(foreign.status(), 404);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_and_never_reach_kafka() {
    let mut env = TestEnv::new("invalid", 1).await;
    let ingest = env.start_ingest(&["org_a"]).await;
    env.wait_ready().await;
    let post = |body: Value, key: &str| {
        env.http
            .post(format!("{ingest}/v1/events"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let good = json!({"org_id": "org_a", "action": {"type": "x"}});
    let cases = [
        (json!([good, {"org_id": "org_a"}]), "key-org_a", 400),
        (
            json!({"org_id": "org_a", "action": {"type": "x"}, "created_at": "soon"}),
            "key-org_a",
            400,
        ),
        (
            json!({"org_id": "org_a", "action": {"type": "x"}, "unknown": 1}),
            "key-org_a",
            400,
        ),
        (
            json!({"org_id": "org_b", "action": {"type": "x"}}),
            "key-org_a",
            403,
        ),
        (good.clone(), "wrong-key", 401),
    ];
    for (body, key, status) in cases {
        let resp = post(body.clone(), key).await.expect("post");
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.expect("json body");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    assert_eq!(
        env.topic_message_count(),
        0,
        "a rejected event reached Kafka"
    );
    let resp = post(good, "key-org_a").await.expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(env.topic_message_count(), 1);
    env.stop().await;
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let env = TestEnv::new("migrate", 1).await;
    let again = migrate(&env.clickhouse).await.expect("migrate again");
    assert!(again.applied.is_empty());
    let all: Vec<u32> = trailhouse_schemas::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(again.already_applied, all);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_with_the_old_schema_still_arrive() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut env = TestEnv::new("evolution", 1).await;
    env.start_consumer();
    let url = env.start_query_api().await;
    env.wait_ready().await;
    let mut e = trailhouse_schemas::examples::all()[0].clone();
    e.workspace_name = None;
    e.metadata.clear();
    // Within the default retention (older events are dropped by the TTL).
    e.created_at =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 3600, 0).expect("time");
    let bytes = trailhouse_schemas::avro::encode_as_version(&e, 1).expect("v1");
    // v1 has no retention class: stored with the default.
    e.retention_days = Some(trailhouse_schemas::retention::DEFAULT_RETENTION_DAYS);
    let producer: FutureProducer = env.kafka.client_config().create().expect("producer");
    producer
        .send(
            FutureRecord::to(&env.kafka.topic)
                .key(&e.org_id)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    let token = env.token(&e.org_id, &["admin"], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = env
            .http
            .get(format!("{url}/v1/events/{}", e.id))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        if resp.status() == 200 {
            let got: Value = resp.json().await.expect("json");
            assert_eq!(got, serde_json::to_value(&e).expect("json"));
            break;
        }
        assert!(Instant::now() < deadline, "v1 event never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop().await;
}

/// The lag metric comes from librdkafka's statistics (no watermark
/// requests of our own on the fetch connection): after everything is
/// stored and committed, each partition reports 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reports_lag_per_partition() {
    let mut env = TestEnv::new("lag", 2).await;
    let sent = trailhouse_tests::faults::produce(&env.kafka, 3_000, None).await;
    let url = env.start_consumer_serving().await;
    let (stored, _) = trailhouse_tests::faults::wait_for_rows(
        &env.clickhouse,
        sent.ids.len() as u64,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(stored, 3_000);
    let http = reqwest::Client::new();
    let lag = |text: &str, p: u32| -> Option<f64> {
        let name = format!("trailhouse_consumer_lag_messages{{partition=\"{p}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse().ok())
    };
    // Statistics arrive every 5 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        if lag(&last, 0) == Some(0.0) && lag(&last, 1) == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        (lag(&last, 0), lag(&last, 1)),
        (Some(0.0), Some(0.0)),
        "lag per partition once all is committed:\n{last}"
    );
    env.stop().await;
}
