//! A small "projects" API whose every request is recorded by the Trailhouse
//! audit layer.
//!
//! ```text
//! # through the ingest API (a service key may write any org):
//! TRAILHOUSE_INGEST_URL=http://127.0.0.1:8080 TRAILHOUSE_INGEST_KEY=thk_… \
//!   cargo run -p trailhouse-layer --example audited_app
//! # or straight to Kafka:
//! TRAILHOUSE_KAFKA_BROKERS=127.0.0.1:9092 TRAILHOUSE_KAFKA_TOPIC=audit.events \
//!   cargo run -p trailhouse-layer --example audited_app
//!
//! curl -X POST localhost:3000/login -H 'content-type: application/json' \
//!   -d '{"user":"ada@acme","password":"hunter2"}'
//! curl -X POST localhost:3000/projects -H 'authorization: Bearer ada@acme' \
//!   -H 'content-type: application/json' -d '{"name":"apollo"}'
//! ```
//!
//! Authentication is a stand-in: `Authorization: Bearer <user>@<org>`. The
//! middleware that checks it sits outside the audit layer and hands the layer
//! the actor and org through an [`AuditContext`] request extension; handlers
//! name the action and resource through the [`AuditHandle`] extractor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::json;
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_common::shutdown::Shutdown;
use trailhouse_layer::{
    AuditContext, AuditHandle, HttpSink, KafkaSink, ProducerSettings, Recorder, RecorderConfig,
};
use trailhouse_schemas::event::{Action, Resource};

#[derive(Parser)]
#[command(about = "Example app recording its requests with the Trailhouse audit layer")]
struct Args {
    #[arg(long, env = "AUDITED_APP_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Publish through this ingest service instead of straight to Kafka.
    #[arg(long, env = "TRAILHOUSE_INGEST_URL")]
    ingest_url: Option<String>,
    /// The ingest API key (a service key, since the app serves many orgs).
    #[arg(long, env = "TRAILHOUSE_INGEST_KEY", default_value = "")]
    ingest_key: String,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Default)]
struct Projects {
    next: u64,
    by_org: HashMap<String, HashMap<String, String>>,
}

type Db = Arc<Mutex<Projects>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Demo authentication: `Bearer <user>@<org>`.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| t.split_once('@'))
        .map(|(user, org)| (user.to_string(), org.to_string()));
    if let Some((user, org)) = token {
        let mut ctx = AuditContext {
            org_id: Some(org),
            ..AuditContext::default()
        };
        ctx.actor.kind = Some("user".into());
        ctx.actor.id = Some(user);
        ctx.workspace_id = request
            .headers()
            .get("x-workspace")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        request.extensions_mut().insert(ctx);
    }
    next.run(request).await
}

fn org_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('@'))
        .map(|(_, org)| org.to_string())
}

#[derive(Deserialize)]
struct Login {
    user: String,
    #[allow(dead_code)]
    password: String,
}

async fn login(audit: AuditHandle, Json(body): Json<Login>) -> Response {
    let Some((user, org)) = body.user.split_once('@') else {
        return error(StatusCode::BAD_REQUEST, "user must be <name>@<org>");
    };
    audit.update(|c| {
        c.org_id = Some(org.to_string());
        c.actor.kind = Some("user".into());
        c.actor.id = Some(user.to_string());
        c.auth.kind = Some("password".into());
        c.action = Some(Action {
            kind: "user.login".into(),
            description: None,
        });
    });
    Json(json!({"token": format!("{user}@{org}")})).into_response()
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

async fn create_project(
    State(db): State<Db>,
    audit: AuditHandle,
    headers: HeaderMap,
    Json(body): Json<NewProject>,
) -> Response {
    let Some(org) = org_of(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let id = {
        let Ok(mut db) = db.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "state poisoned");
        };
        db.next += 1;
        let id = format!("prj-{}", db.next);
        db.by_org
            .entry(org)
            .or_default()
            .insert(id.clone(), body.name.clone());
        id
    };
    audit.update(|c| {
        c.action = Some(Action {
            kind: "project.create".into(),
            description: Some(format!("created project {}", body.name)),
        });
        c.resource = Some(Resource {
            kind: Some("project".into()),
            id: Some(id.clone()),
            name: Some(body.name.clone()),
        });
    });
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "name": body.name})),
    )
        .into_response()
}

async fn get_project(State(db): State<Db>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(org) = org_of(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let name = db
        .lock()
        .ok()
        .and_then(|db| db.by_org.get(&org).and_then(|p| p.get(&id)).cloned());
    match name {
        Some(name) => Json(json!({"id": id, "name": name})).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such project"),
    }
}

async fn delete_project(
    State(db): State<Db>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(org) = org_of(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let removed = db
        .lock()
        .ok()
        .and_then(|mut db| db.by_org.get_mut(&org).and_then(|p| p.remove(&id)));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "no such project"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber_init();
    let config = RecorderConfig {
        source: Some("audited-app".into()),
        headers: ["user-agent", "content-type", "x-workspace", "x-request-id"]
            .map(String::from)
            .to_vec(),
        ..RecorderConfig::default()
    };
    let recorder = match &args.ingest_url {
        Some(url) => {
            anyhow::ensure!(
                !args.ingest_key.is_empty(),
                "TRAILHOUSE_INGEST_KEY is required with TRAILHOUSE_INGEST_URL"
            );
            let sink = HttpSink::new(url, &args.ingest_key, Duration::from_secs(15))?;
            Recorder::start(config, sink)
        }
        None => {
            args.kafka.validate()?;
            let sink = KafkaSink::new(
                args.kafka.client_config(),
                &args.kafka.topic,
                &ProducerSettings::default(),
            )?;
            Recorder::start(config, sink)
        }
    };
    let db: Db = Arc::default();
    let app = Router::new()
        .route("/login", post(login))
        .route("/projects", post(create_project))
        .route("/projects/{id}", get(get_project).delete(delete_project))
        .route("/health/live", get(|| async { "ok" }))
        .with_state(db)
        .layer(recorder.layer())
        .layer(middleware::from_fn(authenticate));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // Tests read this line to learn the port.
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    })
    .await?;
    let stats = recorder.shutdown(Duration::from_secs(10)).await;
    println!("audit stats: {stats:?}");
    Ok(())
}

fn tracing_subscriber_init() {
    let _ = trailhouse_common::telemetry::init("audited-app");
}
