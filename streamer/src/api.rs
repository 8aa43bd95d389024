//! The Streams API (`/v1/streams`): create, list, read, update, pause,
//! resume, delete, test, replay and rotate the signing secret of the
//! token's org's streams, with each stream's health. Tokens are the query
//! API's (same verifier, same role → permission table); managing streams
//! needs `manageStreams` and a token of the whole org. [`StreamApiError`]
//! is the one error → status table of the service.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use trailhouse_query_api::access::Access;
use trailhouse_query_api::auth::{AuthError, Claims, Verifier};
use uuid::Uuid;

use crate::spec::{Allow, Pause, Replay, SpecError, Stream, StreamInput, MAX_STREAMS_PER_ORG};
use crate::status::Status;
use crate::store::{StoreError, StreamStore};

/// The permission every Streams API call needs.
pub const MANAGE_STREAMS: &str = "manageStreams";
/// The largest request body.
pub const MAX_BODY: usize = 64 * 1024;

/// The hand-written OpenAPI 3.1 document of the Streams API.
pub const OPENAPI: &str = include_str!("../openapi.json");
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Every route: method and path, as the OpenAPI document must list them.
pub const ROUTES: [(&str, &str); 10] = [
    ("get", LIST_PATH),
    ("post", LIST_PATH),
    ("get", ONE_PATH),
    ("patch", ONE_PATH),
    ("delete", ONE_PATH),
    ("post", "/v1/streams/{id}/pause"),
    ("post", "/v1/streams/{id}/resume"),
    ("post", "/v1/streams/{id}/test"),
    ("post", "/v1/streams/{id}/replay"),
    ("post", "/v1/streams/{id}/rotate-secret"),
];

pub const LIST_PATH: &str = "/v1/streams";
pub const ONE_PATH: &str = "/v1/streams/{id}";

/// What the handlers share.
pub struct ApiState<S> {
    pub store: Arc<S>,
    pub verifier: Verifier,
    pub access: Access,
    pub allow: Allow,
}

/// Every way a Streams API request fails.
#[derive(Debug, thiserror::Error)]
pub enum StreamApiError {
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(#[from] SpecError),
    #[error("the body is not valid JSON for this request: {0}")]
    Body(String),
    #[error("no such stream")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("storage temporarily unavailable")]
    Unavailable(#[source] StoreError),
}

impl StreamApiError {
    /// The status table.
    pub fn status(&self) -> StatusCode {
        match self {
            StreamApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            StreamApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            StreamApiError::Invalid(_) | StreamApiError::Body(_) => StatusCode::BAD_REQUEST,
            StreamApiError::NotFound => StatusCode::NOT_FOUND,
            StreamApiError::Conflict(_) => StatusCode::CONFLICT,
            StreamApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            StreamApiError::Unauthenticated(_) => "unauthenticated",
            StreamApiError::Forbidden(_) => "forbidden",
            StreamApiError::Invalid(_) => "invalid_parameter",
            StreamApiError::Body(_) => "invalid_body",
            StreamApiError::NotFound => "not_found",
            StreamApiError::Conflict(_) => "conflict",
            StreamApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<StoreError> for StreamApiError {
    fn from(e: StoreError) -> Self {
        StreamApiError::Unavailable(e)
    }
}

impl IntoResponse for StreamApiError {
    fn into_response(self) -> Response {
        if let StreamApiError::Unavailable(e) = &self {
            tracing::warn!(error = %e, "streams store unavailable");
        }
        let mut err = json!({"code": self.code(), "message": self.to_string()});
        if let StreamApiError::Invalid(e) = &self {
            err["parameter"] = json!(e.field);
        }
        let status = self.status();
        let mut resp = (status, Json(json!({ "error": err }))).into_response();
        trailhouse_common::http::status_headers(status, resp.headers_mut());
        resp
    }
}

type Result<T> = std::result::Result<T, StreamApiError>;
type Shared<S> = Arc<ApiState<S>>;

/// The routes of the Streams API.
pub fn routes<S: StreamStore>(state: Shared<S>) -> Router {
    Router::new()
        .route(LIST_PATH, get(list::<S>).post(create::<S>))
        .route(
            ONE_PATH,
            get(show::<S>).patch(update::<S>).delete(remove::<S>),
        )
        .route("/v1/streams/{id}/pause", post(pause::<S>))
        .route("/v1/streams/{id}/resume", post(resume::<S>))
        .route("/v1/streams/{id}/test", post(test::<S>))
        .route("/v1/streams/{id}/replay", post(replay::<S>))
        .route("/v1/streams/{id}/rotate-secret", post(rotate::<S>))
        .route(
            OPENAPI_PATH,
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The caller's org, once the token allows managing its streams.
fn authorize<S>(state: &ApiState<S>, headers: &HeaderMap) -> Result<Claims> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = state.verifier.verify_header(h)?;
    if !state.access.has_permission(&claims, MANAGE_STREAMS) {
        return Err(StreamApiError::Forbidden(format!(
            "the token lacks the {MANAGE_STREAMS} permission"
        )));
    }
    if claims.workspace_id.is_some() || claims.environment_id.is_some() {
        return Err(StreamApiError::Forbidden(
            "streams belong to the whole organisation; a token scoped to a workspace or \
             environment cannot manage them"
                .into(),
        ));
    }
    Ok(claims)
}

fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            StreamApiError::Body(inner.to_string())
        } else {
            StreamApiError::Body(format!("{path}: {inner}"))
        }
    })
}

fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| StreamApiError::NotFound)
}

async fn find<S: StreamStore>(state: &ApiState<S>, org: &str, id: &str) -> Result<Stream> {
    let id = parse_id(id)?;
    state
        .store
        .streams(Some(org))
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(StreamApiError::NotFound)
}

async fn status_of<S: StreamStore>(state: &ApiState<S>, org: &str) -> Result<Vec<Status>> {
    Ok(state.store.statuses(Some(org)).await?)
}

fn view(s: &Stream, statuses: &[Status]) -> Value {
    let mut v = s.view();
    let health = statuses
        .iter()
        .find(|st| st.stream_id == s.id)
        .map(Status::view)
        .unwrap_or_else(|| json!({"mode": "pending"}));
    v["health"] = health;
    v
}

/// Names are unique within an org.
fn unique_name(existing: &[Stream], s: &Stream) -> Result<()> {
    if existing.iter().any(|o| o.id != s.id && o.name == s.name) {
        return Err(StreamApiError::Conflict(format!(
            "a stream named {:?} exists",
            s.name
        )));
    }
    Ok(())
}

async fn save<S: StreamStore>(state: &ApiState<S>, s: &Stream) -> Result<Value> {
    state.store.put(s).await?;
    let statuses = status_of(state, &s.org_id).await?;
    Ok(view(s, &statuses))
}

async fn list<S: StreamStore>(
    State(state): State<Shared<S>>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let c = authorize(&state, &headers)?;
    let streams = state.store.streams(Some(&c.org_id)).await?;
    let statuses = status_of(&state, &c.org_id).await?;
    let data: Vec<Value> = streams.iter().map(|s| view(s, &statuses)).collect();
    Ok(Json(json!({ "data": data })))
}

/// A create body: the stream, and optionally where it starts (by default,
/// with the next event).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(flatten)]
    stream: StreamInputFields,
    /// Deliver the stored events created at or after this time first.
    start_from: Option<DateTime<Utc>>,
}

/// [`StreamInput`]'s fields again (serde cannot flatten a
/// `deny_unknown_fields` struct).
#[derive(Debug, Default, Deserialize)]
struct StreamInputFields {
    name: Option<String>,
    destination: Option<crate::spec::Destination>,
    filter: Option<String>,
    masks: Option<Vec<crate::mask::Mask>>,
    max_failures: Option<u32>,
    credential: Option<String>,
}

impl From<StreamInputFields> for StreamInput {
    fn from(f: StreamInputFields) -> Self {
        StreamInput {
            name: f.name,
            destination: f.destination,
            filter: f.filter,
            masks: f.masks,
            max_failures: f.max_failures,
            credential: f.credential,
        }
    }
}

async fn create<S: StreamStore>(
    State(state): State<Shared<S>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let c = authorize(&state, &headers)?;
    let input: CreateBody = body(&bytes)?;
    let now = Utc::now();
    let mut s = Stream::create(&c.org_id, input.stream.into(), &state.allow, now)?;
    crate::filter::parse(&s.org_id, &s.filter)?;
    if let Some(from) = input.start_from {
        check_range(from, None, now)?;
        s.replay = Some(Replay {
            id: 1,
            from,
            to: None,
        });
    }
    let existing = state.store.streams(Some(&c.org_id)).await?;
    if existing.len() >= MAX_STREAMS_PER_ORG {
        return Err(StreamApiError::Conflict(format!(
            "an organisation has at most {MAX_STREAMS_PER_ORG} streams"
        )));
    }
    unique_name(&existing, &s)?;
    let mut v = save(&state, &s).await?;
    if let Some(secret) = s.secrets.signing.first() {
        v["signing_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn show<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let c = authorize(&state, &headers)?;
    let s = find(&state, &c.org_id, &id).await?;
    let statuses = status_of(&state, &c.org_id).await?;
    Ok(Json(view(&s, &statuses)))
}

async fn update<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let c = authorize(&state, &headers)?;
    let input: StreamInputFields = body(&bytes)?;
    let mut s = find(&state, &c.org_id, &id).await?;
    s.apply(input.into(), &state.allow, Utc::now())?;
    crate::filter::parse(&s.org_id, &s.filter)?;
    unique_name(&state.store.streams(Some(&c.org_id)).await?, &s)?;
    Ok(Json(save(&state, &s).await?))
}

async fn remove<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let c = authorize(&state, &headers)?;
    let s = find(&state, &c.org_id, &id).await?;
    state.store.delete(&c.org_id, s.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

async fn pause<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let c = authorize(&state, &headers)?;
    let b: PauseBody = body(&bytes)?;
    let mut s = find(&state, &c.org_id, &id).await?;
    let reason = b.reason.unwrap_or_else(|| format!("paused by {}", c.sub));
    if reason.chars().count() > 500 {
        return Err(crate::spec::bad("reason", "must be at most 500 characters").into());
    }
    let now = Utc::now();
    s.paused = Some(Pause {
        reason,
        at: now,
        automatic: false,
    });
    s.updated_at = now;
    Ok(Json(save(&state, &s).await?))
}

async fn resume<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let c = authorize(&state, &headers)?;
    let mut s = find(&state, &c.org_id, &id).await?;
    s.paused = None;
    s.updated_at = Utc::now();
    Ok(Json(save(&state, &s).await?))
}

async fn test<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>)> {
    let c = authorize(&state, &headers)?;
    let mut s = find(&state, &c.org_id, &id).await?;
    s.tests += 1;
    s.updated_at = Utc::now();
    state.store.put(&s).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"test": s.tests, "message": "a test event will be delivered; its outcome is the stream's health.last_test"}),
        ),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

fn check_range(from: DateTime<Utc>, to: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()> {
    if from > now {
        return Err(crate::spec::bad("from", "must not be in the future").into());
    }
    if let Some(to) = to {
        if to <= from {
            return Err(crate::spec::bad("to", "must be after `from`").into());
        }
    }
    Ok(())
}

async fn replay<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let c = authorize(&state, &headers)?;
    let b: ReplayBody = body(&bytes)?;
    let from = b
        .from
        .ok_or_else(|| crate::spec::bad("from", "is required"))?;
    let now = Utc::now();
    check_range(from, b.to, now)?;
    let mut s = find(&state, &c.org_id, &id).await?;
    let id = s.replay.as_ref().map_or(1, |r| r.id + 1);
    s.replay = Some(Replay { id, from, to: b.to });
    s.updated_at = now;
    state.store.put(&s).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"replay": s.replay}))))
}

async fn rotate<S: StreamStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let c = authorize(&state, &headers)?;
    let mut s = find(&state, &c.org_id, &id).await?;
    let secret = s.rotate_secret(Utc::now())?;
    state.store.put(&s).await?;
    Ok(Json(json!({
        "signing_secret": secret,
        "valid_secrets": s.secrets.signing.len(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
        let codes = doc
            .pointer("/components/schemas/Error/properties/error/properties/code/enum")
            .and_then(Value::as_array)
            .expect("codes");
        let errors = [
            StreamApiError::Unauthenticated(AuthError::Missing),
            StreamApiError::Forbidden(String::new()),
            StreamApiError::Invalid(crate::spec::bad("x", "y")),
            StreamApiError::Body(String::new()),
            StreamApiError::NotFound,
            StreamApiError::Conflict(String::new()),
            StreamApiError::Unavailable(StoreError::ClickHouse(String::new())),
        ];
        assert_eq!(codes.len(), errors.len());
        for e in errors {
            assert!(codes.contains(&json!(e.code())), "{}", e.code());
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
    }
}
