//! What the audit layer adds to a request: the same axum router served
//! in-process with and without the layer, side by side in one run.
//!
//! `cargo run --release -p trailhouse-bench --bin layer_overhead [-- --quick]`

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use http::Request;
use tower::{Service, ServiceExt};
use trailhouse_bench::{machine, micros_per, print_table, Spread};
use trailhouse_layer::sink::{Envelope, EventSink, SinkError};
use trailhouse_layer::{AuditHandle, Recorder, RecorderConfig};

/// Acknowledges everything at once: measures the layer, not a broker.
struct NullSink;

impl EventSink for NullSink {
    async fn publish(&self, _: &[Envelope]) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}

async fn handler(audit: AuditHandle) -> &'static str {
    audit.update(|c| c.actor.id = Some("u-1".into()));
    "ok"
}

fn router() -> Router {
    Router::new()
        .route("/orgs/{org}/projects/{id}", get(handler))
        .route("/orgs/{org}/projects", post(handler))
}

fn request(kind: &str, body: &str) -> Request<Body> {
    let b = match kind {
        "GET" => Request::get("/orgs/acme/projects/p-42?view=full&tab=members"),
        _ => Request::post("/orgs/acme/projects")
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string()),
    };
    b.header("host", "app.test")
        .header("user-agent", "bench/1.0")
        .header("authorization", "Bearer abc.def.ghi")
        .header("x-request-id", "req-1")
        .body(Body::from(if kind == "GET" {
            String::new()
        } else {
            body.to_string()
        }))
        .unwrap_or_default()
}

async fn run(app: &mut Router, kind: &str, body: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let svc = ServiceExt::<Request<Body>>::ready(app)
            .await
            .unwrap_or_else(|e| match e {});
        let resp = svc
            .call(request(kind, body))
            .await
            .unwrap_or_else(|e| match e {});
        let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, runs) = if quick { (2_000, 3) } else { (20_000, 7) };
    let body = serde_json::json!({
        "name": "apollo", "password": "hunter2",
        "settings": {"members": (0..20).map(|i| format!("user-{i}@acme.test")).collect::<Vec<_>>()}
    })
    .to_string();
    // The background task is held back (long linger) while requests are
    // timed, so the table shows the request path alone; its own cost is
    // measured afterwards by draining the queue.
    let start = |max_body_bytes| {
        Recorder::start(
            RecorderConfig {
                default_org: Some("acme".into()),
                queue_capacity: 1_000_000,
                max_body_bytes,
                linger: Duration::from_secs(3600),
                ..RecorderConfig::default()
            },
            NullSink,
        )
    };
    let scenarios = [
        (
            "GET",
            "GET, 2 path params, query, 4 headers",
            start(16 * 1024),
        ),
        ("POST", "POST, JSON body not recorded", start(0)),
        ("POST", "POST, JSON body recorded", start(16 * 1024)),
    ];
    let mut plain = router();
    let mut rows = Vec::new();
    let mut background = Vec::new();
    for (kind, label, recorder) in &scenarios {
        let mut audited = router().layer(recorder.layer());
        // Warm-up, then alternate the two so drift hits both alike.
        run(&mut plain, kind, &body, n / 10).await;
        run(&mut audited, kind, &body, n / 10).await;
        let (mut without, mut with, mut extra) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let a = micros_per(run(&mut plain, kind, &body, n).await, n);
            let b = micros_per(run(&mut audited, kind, &body, n).await, n);
            without.push(a);
            with.push(b);
            extra.push(b - a);
        }
        let (a, b, d) = (Spread::of(&without), Spread::of(&with), Spread::of(&extra));
        rows.push(vec![
            format!(
                "{label} ({} B)",
                if *kind == "GET" { 0 } else { body.len() }
            ),
            a.to_string(),
            b.to_string(),
            d.to_string(),
            format!("{:.2}×", b.median / a.median),
        ]);
        let started = Instant::now();
        let stats = recorder.shutdown(Duration::from_secs(600)).await;
        anyhow::ensure!(
            stats.dropped_invalid == 0,
            "the layer produced invalid events"
        );
        anyhow::ensure!(stats.published == stats.recorded, "events lost: {stats:?}");
        background.push(vec![
            label.to_string(),
            stats.published.to_string(),
            format!(
                "{:.2}",
                micros_per(started.elapsed(), stats.published as usize)
            ),
        ]);
    }
    println!(
        "## Audit layer: time added to the request path (µs per request, median (min–max) of {runs} runs × {n} requests)\n"
    );
    println!(
        "machine: {}; in-process axum router, no network\n",
        machine()
    );
    print_table(
        &[
            "request",
            "without layer",
            "with layer",
            "added by the layer",
            "ratio",
        ],
        &rows,
    );
    println!(
        "\n## Audit layer: background work per event (validate, redact, hand to a no-op sink)\n"
    );
    print_table(&["request", "events", "µs per event"], &background);
    Ok(())
}
