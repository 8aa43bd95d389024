//! One trace from an ingest `POST` to the consumer's insert, checked at a
//! local OTLP receiver: both services run as processes exporting spans over
//! OTLP/HTTP (protobuf); the receiver decodes what arrives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use reqwest::StatusCode;
use trailhouse_ingest::auth::hash_key;
use trailhouse_tests::faults::{free_port, service, wait_port};
use trailhouse_tests::TestEnv;

/// A span as the receiver keeps it (ids in hex).
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace: String,
    span: String,
    parent: String,
    links: Vec<(String, String)>,
}

type Spans = Arc<Mutex<Vec<Got>>>;

async fn receive(State(spans): State<Spans>, body: Bytes) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut got = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            got.push(Got {
                service: service.clone(),
                name: s.name,
                trace: hex::encode(&s.trace_id),
                span: hex::encode(&s.span_id),
                parent: hex::encode(&s.parent_span_id),
                links: s
                    .links
                    .iter()
                    .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                    .collect(),
            });
        }
    }
    if let Ok(mut all) = spans.lock() {
        all.extend(got);
    }
    StatusCode::OK
}

const CALLER_TRACE_1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_TRACE_2: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_and_the_batch_that_stores_it_are_one_trace() {
    let env = TestEnv::new("traces", 1).await;
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let common = |service: &str| -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_SERVICE_NAME", service.into()),
            ("TRAILHOUSE_KAFKA_BROKERS", env.kafka.brokers.clone()),
            ("TRAILHOUSE_KAFKA_TOPIC", env.kafka.topic.clone()),
        ]
    };
    let mut ingest_env = common("trailhouse-ingest");
    ingest_env.extend([
        ("TRAILHOUSE_INGEST_LISTEN", format!("127.0.0.1:{port}")),
        (
            "TRAILHOUSE_INGEST_KEYS",
            format!("acme:{}", hash_key("key-acme")),
        ),
        ("TRAILHOUSE_INGEST_RATE_LIMIT", "off".into()),
    ]);
    let _ingest = service(
        "trailhouse-ingest",
        &ingest_env,
        &dir.path().join("ingest.log"),
    );
    let _consumer = trailhouse_tests::faults::consumer(
        &env.kafka,
        &env.clickhouse,
        &format!("{}.consumer", env.name),
        &common("trailhouse-consumer"),
        &dir.path().join("consumer.log"),
    );
    assert!(
        wait_port(port, Duration::from_secs(30)),
        "ingest did not start"
    );
    let url = format!("http://127.0.0.1:{port}");
    let ready = Instant::now() + Duration::from_secs(30);
    while env
        .http
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < ready, "ingest never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two requests, each with its caller's trace context; one batch (the
    // topic has one partition) carries both.
    for (trace, n) in [(CALLER_TRACE_1, 3), (CALLER_TRACE_2, 2)] {
        let body = (0..n)
            .map(|i| format!(r#"{{"org_id":"acme","action":{{"type":"user.login"}},"actor":{{"id":"u{i}"}}}}"#))
            .collect::<Vec<_>>()
            .join("\n");
        let r = env
            .http
            .post(format!("{url}/v1/events"))
            .bearer_auth("key-acme")
            .header("content-type", "application/x-ndjson")
            .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let find = |all: &[Got], service: &str, name: &str, trace: &str| {
        all.iter()
            .find(|s| s.service == service && s.name == name && s.trace == trace)
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (request1, request2, batch, insert) = loop {
        let all = spans.lock().map(|s| s.clone()).unwrap_or_default();
        let r1 = find(&all, "trailhouse-ingest", "request", CALLER_TRACE_1);
        let r2 = find(&all, "trailhouse-ingest", "request", CALLER_TRACE_2);
        let batch = find(&all, "trailhouse-consumer", "batch", CALLER_TRACE_1);
        let insert = batch.as_ref().and_then(|b| {
            all.iter()
                .find(|s| s.name == "insert" && s.parent == b.span)
                .cloned()
        });
        if let (Some(a), Some(b), Some(c), Some(d)) = (r1, r2, batch, insert) {
            break (a, b, c, d);
        }
        assert!(
            Instant::now() < deadline,
            "spans never arrived; got: {all:#?}\ningest log:\n{}\nconsumer log:\n{}",
            std::fs::read_to_string(dir.path().join("ingest.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("consumer.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The request continues its caller's trace.
    assert_eq!(request1.parent, CALLER_SPAN);
    assert_eq!(request2.parent, CALLER_SPAN);
    // The batch continues the first request's trace, through the Kafka
    // header, and links every request it carries.
    assert_eq!(batch.parent, request1.span, "{batch:?}");
    for r in [&request1, &request2] {
        assert!(
            batch.links.contains(&(r.trace.clone(), r.span.clone())),
            "batch {batch:?} does not link {r:?}"
        );
    }
    assert_eq!(insert.trace, batch.trace);
    assert_eq!(insert.service, "trailhouse-consumer");
}
