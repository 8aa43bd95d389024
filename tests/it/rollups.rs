//! The rollups stay exact through what the pipeline does: events a client
//! posts again (right away, so most likely into the same batch, and later,
//! into a batch of their own), and an insert replayed with its
//! deduplication token. Retention
//! drops and org deletion are checked in `storage.rs`, the consumer's
//! crashes in `faults.rs`, with the same comparison.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use trailhouse_consumer::writer::{ClickHouseWriter, RowWriter};
use trailhouse_schemas::rowbinary::EncodedRows;
use trailhouse_tests::rollups::{settled, RollupCheck};
use trailhouse_tests::{TestEnv, SERVICE_KEY};

use crate::dataset;

const ACTIONS: [&str; 3] = ["user.login", "ticket.update", "api_key.create"];
const STATUSES: [u16; 4] = [200, 201, 404, 503];

/// `n` events of `org` over the last three hours, with varied values in
/// every dimension the rollups keep.
fn events(org: &str, n: usize, seed: usize) -> Vec<Value> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let k = i + seed;
            let at = now - chrono::Duration::seconds(37 * k as i64 % (3 * 3600));
            let source = ["workbench-api", "client-api"][k % 2];
            let auth = ["client", "workbench", "api_key"][k % 3];
            let mut e = json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "org_id": org,
                "created_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "source": source,
                "auth": {"type": auth},
                "actor": {"type": "user", "id": format!("usr_{}", k % 7)},
                "action": {"type": ACTIONS[k % 3]},
            });
            if !k.is_multiple_of(5) {
                e["request"] =
                    json!({"method": "POST", "path": "/v1/x", "status": STATUSES[k % 4]});
            }
            e
        })
        .collect()
}

async fn post(env: &TestEnv, events: &[Value]) {
    let url = env.ingest_url.as_deref().expect("ingest");
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth(SERVICE_KEY)
        .json(&json!(events))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
}

async fn stored(env: &TestEnv) -> u64 {
    env.clickhouse
        .client()
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .unwrap_or(0)
}

async fn until_stored(env: &TestEnv, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(env).await < n {
        assert!(
            Instant::now() < deadline,
            "stored {} of {n}",
            stored(env).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn exact(env: &TestEnv, when: &str) -> RollupCheck {
    let r = settled(&env.clickhouse.client(), Duration::from_secs(10))
        .await
        .expect("rollup check");
    println!("{when}: {r:?}");
    assert!(
        r.exact(),
        "{when}: the rollups differ from the table: {r:?}"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_count_each_event_once_through_retries_and_replays() {
    let mut env = TestEnv::new("rollups", 2).await;
    env.start_ingest(&[]).await;
    env.start_consumer();
    env.wait_ready().await;

    // 60 events of two orgs, five of them posted again right away (a
    // client's retry; ingest refuses a repeated id within one request), so
    // most likely into the same batch.
    let mut first = events("org_r1", 30, 0);
    first.extend(events("org_r2", 30, 11));
    post(&env, &first).await;
    post(&env, &first[..5]).await;
    until_stored(&env, 65).await;
    let r = exact(&env, "copies posted right away").await;
    assert_eq!((r.raw_events, r.copies), (60, 5));

    // Five posted again later: their copies are in a batch of their own,
    // found by looking up the stored rows.
    post(&env, &first[20..25]).await;
    until_stored(&env, 70).await;
    let r = exact(&env, "copies in a later batch").await;
    assert_eq!((r.raw_events, r.copies), (60, 10));
    // The events and actors per org, as an analyst would read them.
    let per_org: Vec<(String, u64)> = env
        .clickhouse
        .client()
        .query("SELECT org_id, toUInt64(sum(events)) FROM events_hourly GROUP BY org_id ORDER BY org_id")
        .fetch_all()
        .await
        .expect("per org");
    assert_eq!(
        per_org,
        vec![("org_r1".to_string(), 30), ("org_r2".to_string(), 30)]
    );

    // An insert repeated with its deduplication token (a batch the next
    // consumer replays after a crash) is dropped by the table and by the
    // rollups' views.
    let now = dataset::now();
    let rows = dataset::rows(&dataset::events("org_r3", 40, 0, 5, now));
    let encoded: EncodedRows = rows.iter().collect();
    let writer = ClickHouseWriter::new(env.clickhouse.client(), Duration::from_secs(30));
    for _ in 0..3 {
        writer
            .insert(&encoded, "audit:9:0-39")
            .await
            .expect("insert");
    }
    let r = exact(&env, "a replayed insert").await;
    assert_eq!(r.raw_events, 100);
    assert_eq!(stored(&env).await, 110);
}
