//! Ingest against the real Kafka: exactly-once of acknowledged events,
//! redaction before Kafka, trace context in the headers, a broker outage, and
//! the example app recorded by the tower layer (`trailhouse-layer`'s
//! `audited_app` example, built beforehand).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use trailhouse_tests::faults::{root, Broker};
use trailhouse_tests::{TestEnv, SERVICE_KEY};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn batch(org: &str, n: usize, with_ids: bool) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut e = json!({
                "org_id": org,
                "action": {"type": "document.update"},
                "actor": {"type": "user", "id": format!("u{i}")},
                "resource": {"type": "document", "id": format!("doc-{i}")},
            });
            if with_ids {
                e["id"] = json!(uuid::Uuid::new_v4().to_string());
            }
            e
        })
        .collect()
}

fn decode_ids(messages: &[(Vec<u8>, Option<String>)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (payload, _) in messages {
        let e = trailhouse_schemas::decode(payload).expect("every message decodes");
        *seen.entry(e.id.to_string()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_are_in_kafka_exactly_once() {
    let mut env = TestEnv::new("ingest_exactly_once", 3).await;
    let url = env.start_ingest(&["acme", "globex"]).await;
    env.wait_ready().await;
    let http = env.http.clone();
    // 40 requests of 250 events, 8 at a time, half with client-supplied ids,
    // alternating JSON arrays and NDJSON.
    let results: Vec<Vec<String>> = stream::iter(0..40)
        .map(|r| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let org = if r % 2 == 0 { "acme" } else { "globex" };
                let events = batch(org, 250, r % 4 < 2);
                let req = http
                    .post(format!("{url}/v1/events"))
                    .bearer_auth(format!("key-{org}"));
                let req = if r % 3 == 0 {
                    let body: Vec<String> = events.iter().map(Value::to_string).collect();
                    req.header("content-type", "application/x-ndjson")
                        .body(body.join("\n"))
                } else {
                    req.json(&events)
                };
                let resp = req.send().await.expect("post");
                assert_eq!(resp.status(), 202);
                let body: Value = resp.json().await.expect("json");
                body["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_str().expect("id").to_string())
                    .collect()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let acked: HashSet<String> = results.into_iter().flatten().collect();
    assert_eq!(acked.len(), 10_000);
    let seen = decode_ids(&env.read_topic());
    let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    let unexpected = seen.keys().filter(|id| !acked.contains(*id)).count();
    println!("acked 10000: missing {missing}, duplicated {duplicated}, unexpected {unexpected}");
    assert_eq!((missing, duplicated, unexpected), (0, 0, 0));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_values_never_reach_kafka_and_the_trace_context_does() {
    let mut env = TestEnv::new("ingest_redaction", 1).await;
    let url = env.start_ingest(&["acme"]).await;
    env.wait_ready().await;
    let secrets = [
        "S3cr3t-header",
        "S3cr3t-cookie",
        "S3cr3t-query",
        "S3cr3t-url",
        "S3cr3t-body",
        "S3cr3t-deep",
        "S3cr3t-form",
    ];
    let events = json!([
        {"org_id": "acme", "action": {"type": "user.login"},
         "request": {
            "url": format!("https://app.test/login?next=%2F&access_token={}", secrets[3]),
            "headers": {"Authorization": format!("Bearer {}", secrets[0]), "Cookie": format!("sid={}", secrets[1]), "Accept": "*/*"},
            "query": {"filter": {"api_key": secrets[2]}, "page": "2"},
            "body": json!({"user": "ada", "password": secrets[4], "profile": {"settings": [{"clientSecret": secrets[5]}]}}).to_string()
         }},
        {"org_id": "acme", "action": {"type": "user.signup"},
         "request": {"body": format!("user=ada&password={}", secrets[6])}}
    ]);
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth("key-acme")
        .header("traceparent", TRACEPARENT)
        .json(&events)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let messages = env.read_topic();
    assert_eq!(messages.len(), 2);
    for (payload, traceparent) in &messages {
        let raw = String::from_utf8_lossy(payload);
        for s in secrets {
            assert!(!raw.contains(s), "{s} reached Kafka");
        }
        assert!(raw.contains("[REDACTED]") || raw.contains("%5BREDACTED%5D"));
        assert_eq!(traceparent.as_deref(), Some(TRACEPARENT));
        let e = trailhouse_schemas::decode(payload).expect("decode");
        if e.action.kind == "user.login" {
            assert_eq!(e.request.headers["Accept"], "*/*", "other headers kept");
            let q = e.request.query.clone().unwrap_or_default();
            assert_eq!(q["page"], "2", "other query values kept");
        }
    }
    env.stop().await;
}

/// Posts batches of 20 events from 4 workers until `stop`, recording each
/// request's status and, for 202s, the acknowledged ids.
#[derive(Default)]
struct Load {
    acked: Vec<String>,
    statuses: HashMap<u16, usize>,
    /// Status seen, in order, with the time it was seen.
    timeline: Vec<(Instant, u16)>,
}

/// Posts 20 events and records the outcome; returns the status.
async fn post_recorded(http: &reqwest::Client, url: &str, load: &Mutex<Load>) -> Option<u16> {
    let resp = http
        .post(format!("{url}/v1/events"))
        .bearer_auth("key-acme")
        .json(&batch("acme", 20, true))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    if status == 503 {
        assert!(resp.headers().contains_key("retry-after"));
    }
    let body: Value = resp.json().await.unwrap_or_default();
    let mut l = load.lock().expect("lock");
    *l.statuses.entry(status).or_default() += 1;
    l.timeline.push((Instant::now(), status));
    if status == 202 {
        for id in body["ids"].as_array().into_iter().flatten() {
            l.acked.push(id.as_str().unwrap_or_default().to_string());
        }
    }
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_broker_gives_503s_and_ingestion_resumes_without_restart() {
    if !trailhouse_tests::faults::needs_durable_broker(
        "a_stopped_broker_gives_503s_and_ingestion_resumes_without_restart",
    ) {
        return;
    }
    let mut broker = Broker::start();
    let mut env = TestEnv::with_brokers("ingest_broker_stop", &broker.address(), 2).await;
    // The outage below stays shorter than the acknowledgement timeout: the
    // local broker (Tansu 0.6.0) panics when an idempotent producer bumps its
    // epoch after a delivery timeout, which Apache Kafka handles (KIP-360).
    let url = env
        .start_ingest_with(&["acme"], |c| c.ack_timeout_ms = 30_000)
        .await;
    env.wait_ready().await;
    let load = Arc::new(Mutex::new(Load::default()));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, load, running) =
                (env.http.clone(), url.clone(), load.clone(), running.clone());
            tokio::spawn(async move {
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    if post_recorded(&http, &url, &load).await != Some(202) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    let ready = |env: &TestEnv| {
        let http = env.http.clone();
        let url = url.clone();
        async move {
            http.get(format!("{url}/health/ready"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = load.lock().expect("lock").statuses.get(&202).copied();
    assert!(before.unwrap_or(0) > 0, "load is flowing before the outage");

    broker.kill9();
    let stopped = Instant::now();
    // The outage is seen: 503s with Retry-After and readiness false.
    let mut saw_not_ready = false;
    while stopped.elapsed() < Duration::from_secs(7) {
        let not_ready = ready(&env).await == 503;
        saw_not_ready |= not_ready;
        // The workers' requests wait for the broker; once readiness is
        // false, fresh ones are refused at once.
        if not_ready {
            let status = post_recorded(&env.http, &url, &load).await;
            assert_eq!(status, Some(503), "accepted while the broker was down");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(saw_not_ready, "readiness never went false");
    broker.restart();
    let restarted = Instant::now();
    // Ingestion resumes in the same process.
    let resumed = loop {
        let resumed = load
            .lock()
            .expect("lock")
            .timeline
            .iter()
            .any(|(at, status)| *at > restarted && *status == 202);
        if resumed {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(90),
            "ingest never recovered after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(ready(&env).await, 200, "ready again");
    let (acked, statuses, timeline) = {
        let l = load.lock().expect("lock");
        (l.acked.clone(), l.statuses.clone(), l.timeline.clone())
    };
    let during = timeline
        .iter()
        .filter(|(at, _)| *at > stopped + Duration::from_secs(1) && *at < restarted)
        .map(|(_, s)| *s)
        .collect::<Vec<_>>();
    assert!(during.contains(&503), "503s during the outage: {during:?}");
    assert!(
        statuses.keys().all(|s| *s == 202 || *s == 503),
        "{statuses:?}"
    );
    // No acknowledged event was lost.
    let seen = decode_ids(&env.read_topic());
    let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicated = acked
        .iter()
        .filter(|id| seen.get(*id).copied().unwrap_or(0) > 1)
        .count();
    println!(
        "broker outage: statuses {:?}, acked {}, missing {missing}, duplicated acked {duplicated}, \
         resumed {:.1} s after restart",
        statuses,
        acked.len(),
        resumed.as_secs_f64()
    );
    assert_eq!(missing, 0, "acknowledged events lost");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_app_records_its_requests_through_the_ingest_api() {
    example_app_round_trip("example_app_http", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_app_records_its_requests_straight_to_kafka() {
    example_app_round_trip("example_app_kafka", false).await;
}

/// Drives the example app over HTTP and reads its events back through the
/// query API; the app publishes through the ingest API or straight to Kafka.
async fn example_app_round_trip(test: &str, through_ingest: bool) {
    let mut env = TestEnv::new(test, 2).await;
    env.start_all(&["acme"]).await;
    let ingest = env.ingest_url.clone().expect("ingest");
    let bin = root().join("target/debug/examples/audited_app");
    let mut command = Command::new(&bin);
    if through_ingest {
        command
            .env("TRAILHOUSE_INGEST_URL", &ingest)
            .env("TRAILHOUSE_INGEST_KEY", SERVICE_KEY);
    } else {
        command
            .env_remove("TRAILHOUSE_INGEST_URL")
            .env("TRAILHOUSE_KAFKA_BROKERS", &env.kafka.brokers)
            .env("TRAILHOUSE_KAFKA_TOPIC", &env.kafka.topic);
    }
    let mut child = command
        .env("AUDITED_APP_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it first: cargo build -p trailhouse-layer --examples)",
                bin.display()
            )
        });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let app = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "app exited");
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    let http = &env.http;
    let login = http
        .post(format!("{app}/login"))
        .json(&json!({"user": "ada@acme", "password": "hunter2"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let created: Value = http
        .post(format!("{app}/projects"))
        .bearer_auth("ada@acme")
        .header("x-workspace", "ws-7")
        .json(&json!({"name": "apollo"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    for (method, path, status) in [
        ("GET", format!("/projects/{id}?view=full"), 200),
        ("GET", "/projects/prj-404".to_string(), 404),
        ("DELETE", format!("/projects/{id}"), 204),
    ] {
        let resp = http
            .request(method.parse().expect("method"), format!("{app}{path}"))
            .bearer_auth("bob@acme")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
    }
    // Health checks are not recorded; anonymous requests have no org.
    http.get(format!("{app}/health/live"))
        .send()
        .await
        .expect("health");

    let query = env.query_url.clone().expect("query api");
    let token = env.token("acme", &["admin"], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let body: Value = http
            .get(format!("{query}/v1/events"))
            .bearer_auth(&token)
            .query(&[("limit", "100"), ("order", "asc")])
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        let data = body["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= 5 || Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let summary: Vec<(String, String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["action"]["type"].as_str().unwrap_or("").to_string(),
                e["request"]["path"].as_str().unwrap_or("").to_string(),
                e["request"]["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("user.login".into(), "/login".into(), 200),
            ("project.create".into(), "/projects".into(), 201),
            ("http.get".into(), format!("/projects/{id}"), 200),
            ("http.get".into(), "/projects/prj-404".into(), 404),
            ("http.delete".into(), format!("/projects/{id}"), 204),
        ]
    );
    let login = &events[0];
    assert_eq!(login["actor"]["id"], "ada");
    assert_eq!(login["auth"]["type"], "password");
    assert_eq!(login["source"], "audited-app");
    assert_eq!(login["request"]["ip"], "127.0.0.1");
    let body: Value =
        serde_json::from_str(login["request"]["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["password"], "[REDACTED]");
    assert_eq!(body["user"], "ada@acme");
    let create = &events[1];
    assert_eq!(create["resource"]["type"], "project");
    assert_eq!(create["resource"]["id"], id);
    assert_eq!(create["workspace_id"], "ws-7");
    assert_eq!(create["auth"]["type"], "bearer");
    let get = &events[2];
    assert_eq!(get["actor"]["id"], "bob");
    assert_eq!(get["resource"]["type"], "route");
    assert_eq!(get["resource"]["id"], "/projects/{id}");
    assert_eq!(get["request"]["path_params"]["id"], id);
    assert_eq!(get["request"]["query"]["view"], "full");
    assert_eq!(get["request"]["method"], "GET");
    assert!(get["request"]["duration_ms"].as_f64().is_some());

    // SIGTERM: the app drains and reports what it published.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert!(rest.contains("published: 5"), "{rest}");
    assert!(rest.contains("skipped_no_org: 0"), "{rest}");
    env.stop().await;
}

/// Sends a request whose body arrives in two halves: `sent_half` fires once
/// the first half is written (the request is then surely in flight), the
/// rest follows after `pause`. Returns the status and the JSON body.
async fn post_in_two_halves(
    address: &str,
    body: &str,
    sent_half: tokio::sync::oneshot::Sender<()>,
    pause: Duration,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer key-acme\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(first.as_bytes())
        .await
        .expect("first half");
    let _ = sent_half.send(());
    tokio::time::sleep(pause).await;
    stream
        .write_all(rest.as_bytes())
        .await
        .expect("second half");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_answers_the_requests_in_flight_then_refuses_connections() {
    let mut env = TestEnv::new("ingest_shutdown", 2).await;
    let url = env.start_ingest(&["acme"]).await;
    env.wait_ready().await;
    let address = url.trim_start_matches("http://").to_string();
    let mut half_sent = Vec::new();
    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            half_sent.push(rx);
            let body = Value::Array(batch("acme", 500, true)).to_string();
            let address = address.clone();
            tokio::spawn(async move {
                post_in_two_halves(&address, &body, tx, Duration::from_millis(500)).await
            })
        })
        .collect();
    for rx in half_sent {
        rx.await.expect("half sent");
    }
    // Every request is in flight: shut down while their bodies still arrive.
    env.shutdown.trigger();
    let mut acked = HashSet::new();
    for t in in_flight {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, 202, "{body}");
        for id in body["ids"].as_array().into_iter().flatten() {
            acked.insert(id.as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(acked.len(), 4000);
    // The listener is closed once draining finished.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = env
            .http
            .get(format!("{url}/health/live"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_err();
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everything acknowledged is in Kafka: the producer was flushed.
    let seen = decode_ids(&env.read_topic());
    assert!(acked.iter().all(|id| seen.contains_key(id)));
    env.stop().await;
}

/// Slow, unauthenticated bodies cannot take the slots authenticated clients
/// need: the key is checked from the headers, before the in-flight limit and
/// before any body byte is read, and each refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_unauthenticated_bodies_leave_ingest_to_authenticated_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = TestEnv::new("ingest_slow_unauth", 1).await;
    let url = env
        .start_ingest_with(&["acme"], |c| {
            c.max_in_flight = 8.try_into().expect("positive")
        })
        .await;
    env.wait_ready().await;
    let address = url.trim_start_matches("http://").to_string();
    // Five times the in-flight limit: headers announcing 5 MB, one body byte.
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let auth = match i % 3 {
            0 => String::new(),
            1 => "Authorization: Bearer not-a-key\r\n".to_string(),
            _ => "Authorization: Basic YTpi\r\n".to_string(),
        };
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {address}\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n["
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth("key-acme")
        .json(&batch("acme", 3, false))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Each slow client got its 401 without sending its body.
    for mut stream in slow {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered before the body was sent")
            .expect("read");
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    }
    let metrics = env
        .http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("trailhouse_ingest_auth_failures_total"))
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    assert!(
        failures >= 40.0,
        "{failures} authentication failures counted"
    );
    env.stop().await;
}

/// A valid event too large for a Kafka message is refused up front with 413
/// naming its index: nothing of its request reaches Kafka, readiness stays
/// on, and other requests go on being accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_event_is_refused_whole_and_stops_nobody() {
    let mut env = TestEnv::new("ingest_oversized", 1).await;
    let url = env.start_ingest(&["acme"]).await;
    env.wait_ready().await;
    // 125 metadata values of 8,192 bytes (both within the event limits):
    // about 1.02 MB once encoded, over the 1 MB message limit.
    let mut events = batch("acme", 3, true);
    events[1]["metadata"] = (0..125)
        .map(|i| (format!("k{i}"), json!("v".repeat(8192))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth("key-acme")
        .json(&events)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "event_too_large", "{body}");
    assert_eq!(body["error"]["details"][0]["index"], 1, "{body}");
    let ready = env
        .http
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status().as_u16(), 200, "readiness stays on");
    let small = batch("acme", 2, true);
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth("key-acme")
        .json(&small)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    let seen = decode_ids(&env.read_topic());
    let want: HashSet<String> = small
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        want,
        "only the accepted request is in Kafka"
    );
    assert!(seen.values().all(|n| *n == 1));
    env.stop().await;
}

/// Nothing is acknowledged that will not be stored: an event older than its
/// org's retention (or than the backfill horizon) is a 400 naming
/// `created_at`, or a listed rejection in partial mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_past_their_retention_are_refused_at_the_door() {
    let mut env = TestEnv::new("ingest_retention_door", 1).await;
    let url = env
        .start_ingest_with(&["acme"], |c| c.max_backfill_days = Some(30))
        .await;
    env.wait_ready().await;
    let post = |events: Vec<Value>, query: &'static str| {
        let (http, url) = (env.http.clone(), url.clone());
        async move {
            let resp = http
                .post(format!("{url}/v1/events{query}"))
                .bearer_auth("key-acme")
                .json(&events)
                .send()
                .await
                .expect("post");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        }
    };
    let aged = |days: i64| {
        let mut e = batch("acme", 1, true).remove(0);
        let t = chrono::Utc::now() - chrono::Duration::days(days);
        e["created_at"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        e
    };
    // The org's retention is 90 days; the backfill horizon 30.
    for (days, reason) in [(400, "retention"), (20_000, "retention"), (45, "backfill")] {
        let (status, body) = post(vec![aged(1), aged(days)], "").await;
        assert_eq!(status, 400, "{days} days: {body}");
        assert_eq!(body["error"]["details"][0]["index"], 1, "{body}");
        assert_eq!(body["error"]["details"][0]["field"], "created_at", "{body}");
        let text = body["error"]["details"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(reason), "{days} days: {text}");
    }
    let fresh = aged(2);
    let (status, body) = post(vec![fresh.clone(), aged(400)], "?partial=true").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 1);
    let seen = decode_ids(&env.read_topic());
    let want: HashSet<String> = [fresh["id"].as_str().unwrap_or_default().to_string()].into();
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        want,
        "only the fresh event is in Kafka"
    );
    env.stop().await;
}
