//! Streams end to end, against the real local Kafka and ClickHouse: the
//! Streams API and its errors; a webhook that checks every signature
//! (computed here, independently of the streamer's code) and receives
//! exactly the filtered, masked events; Splunk-HEC- and Datadog-shaped
//! receivers; an object store on the local filesystem that a replay from
//! T and the live tail fill with exactly the org's events since T, once.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use trailhouse_tests::{TestEnv, SERVICE_KEY};

/// What a receiver got: headers and the body, gunzipped.
#[derive(Debug, Clone)]
pub struct Got {
    pub headers: HeaderMap,
    pub body: String,
}

#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// Answer 503 while set.
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// Wait this long before answering (a slow destination).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    pub async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/{*path}",
            post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    let delay = me.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if me.failing.load(std::sync::atomic::Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let gz = headers.get("content-encoding").is_some_and(|v| v == "gzip");
                    let mut text = String::new();
                    if gz {
                        let _ = flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text);
                    } else {
                        text = String::from_utf8_lossy(&body).into_owned();
                    }
                    me.got.lock().unwrap().push(Got {
                        headers: headers.clone(),
                        body: text,
                    });
                    // Signature checked by the test on the raw body.
                    if let Some(sig) = headers.get("trailhouse-signature") {
                        me.got
                            .lock()
                            .unwrap()
                            .last_mut()
                            .unwrap()
                            .headers
                            .insert("x-raw-body-hex", hex::encode(&body).parse().unwrap());
                        let _ = sig;
                    }
                    StatusCode::OK
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        url
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Every NDJSON event received, in order of receipt.
    pub fn events(&self) -> Vec<Value> {
        self.got()
            .iter()
            .flat_map(|g| {
                g.body
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// `t=…,v1=…` checked under `secret` the way a receiver would.
fn signed_by(secret: &str, header: &str, raw: &[u8]) -> bool {
    let t = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap_or("");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(raw);
    let want = hex::encode(mac.finalize().into_bytes());
    header.split(',').any(|p| p == format!("v1={want}"))
}

pub async fn call(
    env: &TestEnv,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = env.http.request(m, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn event(org: &str, action: &str, at: chrono::DateTime<Utc>, i: usize) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "org_id": org,
        "created_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "actor": {"type": "user", "id": format!("usr_{}", i % 3), "email": format!("u{}@example.com", i % 3)},
        "action": {"type": action},
        "request": {"method": "POST", "path": format!("/v1/x/{i}"), "status": 200, "body": "{\"secret\":1}"},
        "metadata": {"n": i.to_string()},
    })
}

pub async fn post_events(env: &TestEnv, events: &[Value]) {
    let url = env.ingest_url.as_deref().unwrap();
    let resp = env
        .http
        .post(format!("{url}/v1/events"))
        .bearer_auth(SERVICE_KEY)
        .json(&json!(events))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
}

pub async fn until<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the stream at `one` (its URL) delivers from the live tail.
pub async fn wait_live(env: &TestEnv, one: &str, token: &str) {
    until("the stream is live", 30, async || {
        let (_, b) = call(env, "GET", one, token, None).await;
        (b["health"]["mode"] == "live").then_some(())
    })
    .await;
}

pub async fn stored(env: &TestEnv, org: &str) -> u64 {
    env.clickhouse
        .client()
        .query("SELECT count() FROM events WHERE org_id = ? AND NOT is_copy")
        .bind(org)
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

/// Method, URL, token, body; then status, error code and parameter.
type Refusal<'a> = (
    &'a str,
    String,
    &'a str,
    Option<Value>,
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test]
async fn the_streams_api_manages_an_orgs_streams_and_names_every_bad_value() {
    let mut env = TestEnv::new("streams_api", 1).await;
    let url = env.start_streamer().await;
    let admin = env.token("acme", &["admin"], &[]);
    let list = format!("{url}/v1/streams");
    let hook = json!({"type": "webhook", "url": "http://127.0.0.1:9/in"});

    let (s, created) = call(
        &env,
        "POST",
        &list,
        &admin,
        Some(json!({
            "name": "siem", "destination": hook, "filter": "action=user.login",
            "masks": [{"field": "actor.email", "action": "hash"}],
        })),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["signing_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["state"], "active");
    let one = format!("{list}/{id}");
    let (s, shown) = call(&env, "GET", &one, &admin, None).await;
    assert_eq!(s, 200);
    assert!(
        !shown.to_string().contains(&secret),
        "secrets are shown once"
    );
    assert_eq!(shown["filter"], "action=user.login");

    // Table of refusals: status, code, parameter.
    let other = env.token("globex", &["admin"], &[]);
    let viewer = env.token("acme", &["member"], &["viewAuditLog"]);
    let scoped = env.token_for(trailhouse_query_api::auth::Claims {
        sub: "u".into(),
        org_id: "acme".into(),
        environment_id: None,
        workspace_id: Some("ws1".into()),
        roles: vec!["admin".into()],
        permissions: vec![],
        exp: Utc::now().timestamp() + 600,
        iat: Utc::now().timestamp(),
    });
    let cases: Vec<Refusal> = vec![
        ("GET", list.clone(), "", None, 401, "unauthenticated", None),
        ("GET", list.clone(), &viewer, None, 403, "forbidden", None),
        ("GET", list.clone(), &scoped, None, 403, "forbidden", None),
        ("GET", one.clone(), &other, None, 404, "not_found", None),
        (
            "GET",
            format!("{list}/not-a-uuid"),
            &admin,
            None,
            404,
            "not_found",
            None,
        ),
        (
            "POST",
            list.clone(),
            &admin,
            Some(json!({"name": "x", "destination": hook, "filter": "action=a&colour=red"})),
            400,
            "invalid_parameter",
            Some("filter.colour"),
        ),
        (
            "POST",
            list.clone(),
            &admin,
            Some(json!({"name": "x", "destination": {"type": "webhook", "url": "ftp://x"}})),
            400,
            "invalid_parameter",
            Some("destination.url"),
        ),
        (
            "POST",
            list.clone(),
            &admin,
            Some(json!({"name": "x", "destination": {"type": "pigeon"}})),
            400,
            "invalid_body",
            None,
        ),
        (
            "POST",
            list.clone(),
            &admin,
            Some(json!({"name": "x", "destination": hook, "colour": 1})),
            400,
            "invalid_body",
            None,
        ),
        (
            "POST",
            list.clone(),
            &admin,
            Some(json!({"name": "siem", "destination": hook})),
            409,
            "conflict",
            None,
        ),
        (
            "POST",
            list.clone(),
            &admin,
            Some(
                json!({"name": "x", "destination": hook, "masks": [{"field": "actor.password", "action": "drop"}]}),
            ),
            400,
            "invalid_parameter",
            Some("masks[0].field"),
        ),
        (
            "POST",
            format!("{one}/replay"),
            &admin,
            Some(json!({})),
            400,
            "invalid_parameter",
            Some("from"),
        ),
        (
            "POST",
            format!("{one}/replay"),
            &admin,
            Some(json!({"from": "2999-01-01T00:00:00Z"})),
            400,
            "invalid_parameter",
            Some("from"),
        ),
        (
            "POST",
            format!("{one}/replay"),
            &admin,
            Some(json!({"from": "yesterday"})),
            400,
            "invalid_body",
            None,
        ),
        (
            "PATCH",
            one.clone(),
            &admin,
            Some(json!({"max_failures": 0})),
            400,
            "invalid_parameter",
            Some("max_failures"),
        ),
    ];
    for (method, u, token, body, status, code, param) in cases {
        let (s, b) = call(&env, method, &u, token, body.clone()).await;
        assert_eq!(s, status, "{method} {u} {body:?}: {b}");
        assert_eq!(b["error"]["code"], code, "{method} {u}: {b}");
        assert_eq!(b["error"]["parameter"].as_str(), param, "{method} {u}: {b}");
    }

    let (s, b) = call(
        &env,
        "PATCH",
        &one,
        &admin,
        Some(json!({"filter": "action=user.logout"})),
    )
    .await;
    assert_eq!(
        (s, b["filter"].as_str()),
        (200, Some("action=user.logout")),
        "{b}"
    );
    let (s, b) = call(
        &env,
        "POST",
        &format!("{one}/pause"),
        &admin,
        Some(json!({"reason": "maintenance"})),
    )
    .await;
    assert_eq!(
        (s, b["state"].as_str(), b["paused"]["reason"].as_str()),
        (200, Some("paused"), Some("maintenance"))
    );
    let (s, b) = call(&env, "POST", &format!("{one}/resume"), &admin, None).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("active")));
    let (s, b) = call(&env, "POST", &format!("{one}/rotate-secret"), &admin, None).await;
    assert_eq!((s, b["valid_secrets"].as_u64()), (200, Some(2)), "{b}");
    let (s, b) = call(&env, "GET", &list, &admin, None).await;
    assert_eq!((s, b["data"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, b) = call(&env, "GET", &list, &other, None).await;
    assert_eq!((s, b["data"].as_array().map(Vec::len)), (200, Some(0)));
    let (s, _) = call(&env, "DELETE", &one, &admin, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&env, "GET", &one, &admin, None).await;
    assert_eq!(s, 404);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_exactly_the_filtered_masked_events_signed_and_a_test_event() {
    let mut env = TestEnv::new("streams_webhook", 2).await;
    env.start_all(&["acme", "globex"]).await;
    let url = env.start_streamer().await;
    let receiver = Receiver::default();
    let base = receiver.start().await;
    let admin = env.token("acme", &["owner"], &[]);
    let (s, created) = call(&env, "POST", &format!("{url}/v1/streams"), &admin, Some(json!({
        "name": "siem",
        "destination": {"type": "webhook", "url": format!("{base}/hook"), "format": "ndjson"},
        "filter": "action=user.login&action=user.logout",
        "masks": [{"field": "actor.email", "action": "hash"}, {"field": "request.body", "action": "drop"}],
    }))).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["signing_secret"].as_str().unwrap().to_string();
    let one = format!("{url}/v1/streams/{id}");
    wait_live(&env, &one, &admin).await;

    let now = Utc::now();
    let actions = ["user.login", "ticket.update", "user.logout"];
    let mut events = Vec::new();
    for i in 0..60 {
        let org = if i % 4 == 3 { "globex" } else { "acme" };
        events.push(event(org, actions[i % 3], now, i));
    }
    post_events(&env, &events).await;
    let want: BTreeSet<String> = events
        .iter()
        .filter(|e| e["org_id"] == "acme" && e["action"]["type"] != "ticket.update")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let delivered = until("every matching event", 60, async || {
        let got = receiver.events();
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    let ids: Vec<String> = delivered
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "exactly the filtered events"
    );
    assert_eq!(ids.len(), want.len(), "each once");
    // Order: the org's events in the order they were posted (one partition per org).
    let posted: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .filter(|i| want.contains(i))
        .collect();
    assert_eq!(ids, posted);
    for e in &delivered {
        let email = e["actor"]["email"].as_str().unwrap();
        assert!(email.starts_with("hmac-sha256:"), "{email}");
        assert!(e["request"].get("body").is_none(), "{e}");
        assert_eq!(e["org_id"], "acme");
    }
    for g in receiver.got() {
        let sig = g.headers["trailhouse-signature"].to_str().unwrap();
        let raw = hex::decode(g.headers["x-raw-body-hex"].to_str().unwrap()).unwrap();
        assert!(signed_by(&secret, sig, &raw), "signature {sig}");
        assert!(!signed_by("whsec_wrong", sig, &raw));
        let key = g.headers["idempotency-key"].to_str().unwrap();
        assert!(key.starts_with(&id), "{key}");
        assert_eq!(g.headers["content-type"], "application/x-ndjson");
    }

    // A rotated secret: both the new and the previous one verify.
    let (_, rotated) = call(&env, "POST", &format!("{one}/rotate-secret"), &admin, None).await;
    let new_secret = rotated["signing_secret"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = receiver.got().len();
    let (s, _) = call(&env, "POST", &format!("{one}/test"), &admin, None).await;
    assert_eq!(s, 202);
    let test = until("the test delivery", 30, async || {
        let got = receiver.got();
        got.get(before..).and_then(|g| {
            g.iter()
                .find(|g| g.body.contains("trailhouse.stream.test"))
                .cloned()
        })
    })
    .await;
    let sig = test.headers["trailhouse-signature"].to_str().unwrap();
    let raw = hex::decode(test.headers["x-raw-body-hex"].to_str().unwrap()).unwrap();
    assert!(
        signed_by(&new_secret, sig, &raw) && signed_by(&secret, sig, &raw),
        "{sig}"
    );
    let health = until("health shows the test and the counts", 30, async || {
        let (_, b) = call(&env, "GET", &one, &admin, None).await;
        (b["health"]["last_test"]["ok"] == true).then_some(b["health"].clone())
    })
    .await;
    assert_eq!(
        health["delivered"].as_u64(),
        Some(want.len() as u64),
        "{health}"
    );
    assert_eq!(health["failed"], 0);
    assert!(health["last_event_at"].is_string(), "{health}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_and_datadog_receive_their_shapes_and_a_down_destination_catches_up() {
    let mut env = TestEnv::new("streams_siems", 1).await;
    env.start_all(&["acme"]).await;
    let url = env.start_streamer().await;
    let splunk = Receiver::default();
    let datadog = Receiver::default();
    let (s_url, d_url) = (splunk.start().await, datadog.start().await);
    datadog
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let admin = env.token("acme", &["owner"], &[]);
    for body in [
        json!({"name": "splunk", "credential": "hec-token-1", "destination": {"type": "splunk", "url": format!("{s_url}/services/collector/event"), "index": "audit"}}),
        json!({"name": "datadog", "credential": "dd-key-1", "max_failures": 1000, "destination": {"type": "datadog", "url": format!("{d_url}/api/v2/logs"), "tags": ["env:test"]}}),
    ] {
        let (s, b) = call(
            &env,
            "POST",
            &format!("{url}/v1/streams"),
            &admin,
            Some(body),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    until("both live", 30, async || {
        let (_, b) = call(&env, "GET", &format!("{url}/v1/streams"), &admin, None).await;
        b["data"]
            .as_array()
            .filter(|d| d.iter().all(|s| s["health"]["mode"] == "live"))
            .map(|_| ())
    })
    .await;
    let now = Utc::now();
    let events: Vec<Value> = (0..25)
        .map(|i| event("acme", "user.login", now, i))
        .collect();
    post_events(&env, &events).await;
    let hec = until("splunk got all", 60, async || {
        let lines = splunk.events();
        (lines.len() >= 25).then_some(lines)
    })
    .await;
    assert_eq!(hec.len(), 25);
    assert_eq!(hec[0]["index"], "audit");
    assert_eq!(hec[0]["sourcetype"], "trailhouse:audit");
    assert!(hec[0]["time"].as_f64().is_some());
    assert_eq!(
        splunk.got()[0].headers["authorization"],
        "Splunk hec-token-1"
    );
    // Datadog is down: the failures show in its health, nothing is lost.
    until("datadog failures counted", 30, async || {
        let (_, b) = call(&env, "GET", &format!("{url}/v1/streams"), &admin, None).await;
        let dd = b["data"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "datadog")?
            .clone();
        (dd["health"]["failed"].as_u64()? >= 2
            && dd["health"]["last_error"]["message"]
                .as_str()?
                .contains("503"))
        .then_some(())
    })
    .await;
    let more: Vec<Value> = (25..40)
        .map(|i| event("acme", "user.login", now, i))
        .collect();
    post_events(&env, &more).await;
    until("stored", 60, async || {
        (stored(&env, "acme").await == 40).then_some(())
    })
    .await;
    datadog
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let entries = until("datadog caught up", 60, async || {
        let all: Vec<Value> = datadog
            .got()
            .iter()
            .flat_map(|g| {
                serde_json::from_str::<Value>(&g.body)
                    .unwrap()
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        (all.len() >= 40).then_some(all)
    })
    .await;
    let ids: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["audit"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 40, "every event, none twice");
    assert_eq!(entries[0]["ddtags"], "env:test");
    assert_eq!(entries[0]["ddsource"], "trailhouse");
    assert_eq!(datadog.got()[0].headers["dd-api-key"], "dd-key-1");
    env.stop().await;
}

pub fn objects(dir: &std::path::Path) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".ndjson.gz") {
                let mut text = String::new();
                let bytes = std::fs::read(&p).unwrap();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
                let events = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                out.push((
                    p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(),
                    events,
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_stream_from_t_holds_exactly_the_orgs_events_since_t_once() {
    let mut env = TestEnv::new("streams_objects", 2).await;
    env.start_all(&["acme", "globex"]).await;
    let url = env.start_streamer().await;
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let t = now - chrono::Duration::hours(2);
    // History: acme events on both sides of T, and another org's.
    let mut past = Vec::new();
    for i in 0..80 {
        let at = now - chrono::Duration::minutes(3 * i as i64 + 1);
        past.push(event(
            if i % 5 == 0 { "globex" } else { "acme" },
            "user.login",
            at,
            i,
        ));
    }
    post_events(&env, &past).await;
    until("history stored", 60, async || {
        (stored(&env, "acme").await == 64).then_some(())
    })
    .await;
    let admin = env.token("acme", &["owner"], &[]);
    let (s, b) = call(&env, "POST", &format!("{url}/v1/streams"), &admin, Some(json!({
        "name": "archive",
        "destination": {"type": "object_store", "url": format!("file://{}", dir.path().display())},
        "start_from": t.to_rfc3339(),
    }))).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    // Live events after the stream exists.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live: Vec<Value> = (80..100)
        .map(|i| event("acme", "user.logout", Utc::now(), i))
        .collect();
    post_events(&env, &live).await;
    let mut want: Vec<String> = past
        .iter()
        .chain(live.iter())
        .filter(|e| e["org_id"] == "acme")
        .filter(|e| {
            chrono::DateTime::parse_from_rfc3339(e["created_at"].as_str().unwrap()).unwrap() >= t
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    let got = until("every event since T in objects", 90, async || {
        let mut ids: Vec<String> = objects(dir.path())
            .iter()
            .flat_map(|(_, es)| {
                es.iter()
                    .map(|e| e["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        (ids.len() >= want.len()).then_some(ids)
    })
    .await;
    assert_eq!(got, want, "exactly the org's events since T, each once");
    let names: Vec<String> = objects(dir.path()).into_iter().map(|(n, _)| n).collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with(&format!("replay-1/{id}/"))
                || n.starts_with(&format!("live/{id}/"))),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("replay-1/")),
        "{names:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_stream_produces_the_orgs_events_keyed_by_org() {
    let mut env = TestEnv::new("streams_kafka", 1).await;
    env.start_all(&["acme"]).await;
    let url = env.start_streamer().await;
    // The tenant's cluster: here a topic on the same local broker.
    let topic = format!("{}.tenant", env.name);
    trailhouse_common::kafka::ensure_topic(&env.kafka, &topic, 1, 1)
        .await
        .unwrap();
    let admin = env.token("acme", &["owner"], &[]);
    let (s, b) = call(
        &env,
        "POST",
        &format!("{url}/v1/streams"),
        &admin,
        Some(json!({
            "name": "tenant-kafka",
            "destination": {"type": "kafka", "brokers": env.kafka.brokers, "topic": topic},
            "masks": [{"field": "request", "action": "drop"}],
        })),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let one = format!("{url}/v1/streams/{}", b["id"].as_str().unwrap());
    wait_live(&env, &one, &admin).await;
    let events: Vec<Value> = (0..12)
        .map(|i| event("acme", "user.login", Utc::now(), i))
        .collect();
    post_events(&env, &events).await;
    until("delivered", 60, async || {
        let (_, b) = call(&env, "GET", &one, &admin, None).await;
        (b["health"]["delivered"] == 12).then_some(())
    })
    .await;
    let got: Vec<Value> = env
        .read_topic_named(&topic)
        .iter()
        .map(|(p, _)| serde_json::from_slice(p).unwrap())
        .collect();
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, want, "in order, once");
    assert!(got.iter().all(|e| e.get("request").is_none()));
    // The streamer's metrics: its catalogue, aggregates only.
    use trailhouse_streamer::metrics as m;
    let scrape = trailhouse_tests::scrape::scrape(&env.http, &url).await;
    // The other services run in this process too.
    scrape.check_catalogue(
        &[
            m::families(),
            trailhouse_ingest::metrics::families(),
            trailhouse_consumer::metrics::families(),
            trailhouse_query_api::metrics::families(),
        ]
        .concat(),
    );
    scrape.check_common("trailhouse-streamer");
    assert_eq!(
        scrape.value(m::DELIVERED, &[("destination", "kafka")]),
        Some(12.0),
        "{}",
        scrape.text
    );
    assert_eq!(scrape.value(m::STREAMS, &[]), Some(1.0));
    assert_eq!(scrape.value(m::ASSIGNED, &[]), Some(1.0));
    assert!(scrape.value(m::EVENTS_READ, &[]).unwrap_or(0.0) >= 12.0);
    assert!(!scrape.text.contains("acme"), "no org in any label");
    env.stop().await;
}
