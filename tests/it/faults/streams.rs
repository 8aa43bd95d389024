//! The streamer through failures: a streamer process killed with SIGKILL
//! while it delivers, and a destination that is down for a minute. What
//! must hold: no gap (every event of the stream's org reaches its
//! destination), the org's order, each event once in object storage, and
//! at least once (with repeats counted and printed) per webhook.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use trailhouse_tests::faults::{free_port, service, wait_port, Proc};
use trailhouse_tests::{TestEnv, JWT_SECRET};

use crate::streams::{call, event, objects, post_events, until, wait_live, Receiver};

fn streamer(env: &TestEnv, port: u16, log: &std::path::Path) -> Proc {
    let vars: Vec<(&str, String)> = vec![
        ("TRAILHOUSE_KAFKA_BROKERS", env.kafka.brokers.clone()),
        ("TRAILHOUSE_KAFKA_TOPIC", env.kafka.topic.clone()),
        ("TRAILHOUSE_CLICKHOUSE_URL", env.clickhouse.url.clone()),
        (
            "TRAILHOUSE_CLICKHOUSE_DATABASE",
            env.clickhouse.database.clone(),
        ),
        ("TRAILHOUSE_CLICKHOUSE_COMPRESSION", "none".into()),
        ("TRAILHOUSE_JWT_HS256_SECRET", JWT_SECRET.into()),
        ("TRAILHOUSE_STREAMER_LISTEN", format!("127.0.0.1:{port}")),
        (
            "TRAILHOUSE_STREAMER_GROUP",
            format!("{}.streamer", env.name),
        ),
        (
            "TRAILHOUSE_STREAMER_CONSUMER_GROUP",
            format!("{}.consumer", env.name),
        ),
        ("TRAILHOUSE_STREAMER_FLUSH_MS", "200".into()),
        ("TRAILHOUSE_STREAMER_REFRESH_MS", "300".into()),
        ("TRAILHOUSE_STREAMER_RETRY_FIRST_MS", "100".into()),
        ("TRAILHOUSE_STREAMER_RETRY_MAX_SECS", "2".into()),
        ("TRAILHOUSE_STREAMER_ALLOW_HTTP", "true".into()),
        ("TRAILHOUSE_STREAMER_ALLOW_PRIVATE", "true".into()),
        ("TRAILHOUSE_STREAMER_ALLOW_LOCAL_FILES", "true".into()),
        ("TRAILHOUSE_STREAMER_SESSION_TIMEOUT_MS", "10000".into()),
        // Static membership, as the consumer's kill test: the restarted
        // member takes its partitions back at once (the local broker does
        // not always complete a rebalance after a member was killed).
        (
            "TRAILHOUSE_STREAMER_INSTANCE_ID",
            format!("{}-streamer", env.name),
        ),
        ("RUST_LOG", "warn,trailhouse_streamer=info".into()),
    ];
    let p = service("trailhouse-streamer", &vars, log);
    assert!(
        wait_port(port, Duration::from_secs(30)),
        "streamer did not listen"
    );
    p
}

/// The ids in order of first receipt, and how many arrived more than once.
fn firsts(events: &[Value]) -> (Vec<String>, usize) {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut repeats = 0;
    for e in events {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        if seen.insert(id.clone()) {
            order.push(id);
        } else {
            repeats += 1;
        }
    }
    (order, repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamer_killed_with_sigkill_while_delivering_leaves_no_gap() {
    let mut env = TestEnv::new("faults_streamer_kill", 2).await;
    env.start_ingest(&["org_a", "org_b"]).await;
    env.start_consumer();
    env.wait_ready().await;
    let log = std::env::temp_dir().join(format!("{}.streamer.log", env.name));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut proc = streamer(&env, port, &log);
    let hook = Receiver::default();
    hook.delay_ms.store(30, std::sync::atomic::Ordering::SeqCst);
    let base = hook.start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = env.token("org_a", &["owner"], &[]);
    let b = env.token("org_b", &["owner"], &[]);
    let (s, w) = call(&env, "POST", &format!("{url}/v1/streams"), &a, Some(json!({
        "name": "hook", "destination": {"type": "webhook", "url": format!("{base}/a"), "gzip": false},
    }))).await;
    assert_eq!(s, 201, "{w}");
    let (s, o) = call(&env, "POST", &format!("{url}/v1/streams"), &b, Some(json!({
        "name": "bucket", "destination": {"type": "object_store", "url": format!("file://{}", dir.path().display())},
    }))).await;
    assert_eq!(s, 201, "{o}");
    for (token, id) in [(&a, &w["id"]), (&b, &o["id"])] {
        let one = format!("{url}/v1/streams/{}", id.as_str().unwrap());
        wait_live(&env, &one, token).await;
    }
    // 40 rounds of 50 events of each org; three SIGKILLs while they flow.
    let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for round in 0..40 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                event(
                    if i % 2 == 0 { "org_a" } else { "org_b" },
                    "record.update",
                    Utc::now(),
                    round * 100 + i,
                )
            })
            .collect();
        for e in &batch {
            let org = if e["org_id"] == "org_a" {
                "org_a"
            } else {
                "org_b"
            };
            sent.entry(org)
                .or_default()
                .push(e["id"].as_str().unwrap().to_string());
        }
        post_events(&env, &batch).await;
        if round % 13 == 6 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            proc.kill9();
            proc = streamer(&env, port, &log);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let want_a = sent["org_a"].clone();
    let want_b: BTreeSet<String> = sent["org_b"].iter().cloned().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (order, repeats) = loop {
        let (order, repeats) = firsts(&hook.events());
        if order.len() >= want_a.len() {
            break (order, repeats);
        }
        if std::time::Instant::now() > deadline {
            let (_, v) = call(&env, "GET", &format!("{url}/v1/streams"), &a, None).await;
            let got: BTreeSet<&String> = order.iter().collect();
            let missing: Vec<usize> = (0..want_a.len())
                .filter(|i| !got.contains(&want_a[*i]))
                .collect();
            panic!(
                "the webhook got {} of {} org_a events, missing #{missing:?}; {v}",
                order.len(),
                want_a.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(order, want_a, "no gap, the org's order");
    let stored = until("the bucket holds every org_b event", 180, async || {
        let ids: Vec<String> = objects(dir.path())
            .iter()
            .flat_map(|(_, es)| {
                es.iter()
                    .map(|e| e["id"].as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        (ids.iter().cloned().collect::<BTreeSet<_>>().len() >= want_b.len()).then_some(ids)
    })
    .await;
    let unique: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(unique, want_b, "no gap");
    assert_eq!(
        stored.len(),
        want_b.len(),
        "each event once in the object store"
    );
    println!(
        "streamer SIGKILL x3: webhook {} events, {} repeats (at least once); object store {} events, 0 repeats",
        want_a.len(),
        repeats
    , want_b.len());
    drop(proc);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_60_seconds_catches_up_with_nothing_lost() {
    let mut env = TestEnv::new("faults_streamer_down", 1).await;
    env.start_all(&["acme"]).await;
    let url = env.start_streamer_with(|c| c.inbox_events = 200).await;
    let hook = Receiver::default();
    let base = hook.start().await;
    let admin = env.token("acme", &["owner"], &[]);
    let (s, b) = call(&env, "POST", &format!("{url}/v1/streams"), &admin, Some(json!({
        "name": "hook", "max_failures": 10000, "destination": {"type": "webhook", "url": format!("{base}/in"), "format": "ndjson"},
    }))).await;
    assert_eq!(s, 201, "{b}");
    let one = format!("{url}/v1/streams/{}", b["id"].as_str().unwrap());
    wait_live(&env, &one, &admin).await;
    hook.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let down = std::time::Instant::now();
    let mut want = Vec::new();
    // Events keep coming while it is down: more than the inbox holds.
    while down.elapsed() < Duration::from_secs(60) {
        let batch: Vec<Value> = (0..50)
            .map(|i| event("acme", "x.y", Utc::now(), want.len() + i))
            .collect();
        want.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        post_events(&env, &batch).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (_, v) = call(&env, "GET", &one, &admin, None).await;
    let h = v["health"].clone();
    assert!(h["failed"].as_u64().unwrap_or(0) >= 5, "{h}");
    assert!(
        h["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{h}"
    );
    assert!(h["lag_events"].as_u64().unwrap_or(0) > 0, "{h}");
    hook.failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let up = std::time::Instant::now();
    let (order, repeats) = until("caught up", 120, async || {
        let (order, repeats) = firsts(&hook.events());
        (order.len() >= want.len()).then_some((order, repeats))
    })
    .await;
    assert_eq!(order, want, "nothing lost, in order");
    let v = until("the health counts every delivery", 30, async || {
        let (_, v) = call(&env, "GET", &one, &admin, None).await;
        (v["health"]["delivered"].as_u64()? >= want.len() as u64 && v["health"]["mode"] == "live")
            .then_some(v)
    })
    .await;
    assert_eq!(v["health"]["lag_events"], 0, "{v}");
    assert_eq!(v["health"]["consecutive_failures"], 0, "{v}");
    println!(
        "destination down 60 s: {} events, caught up {:.1} s after it came back, {} repeats; health {}",
        want.len(),
        up.elapsed().as_secs_f64(),
        repeats,
        v["health"]
    );
    env.stop().await;
}
