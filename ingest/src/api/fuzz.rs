//! Fuzzing, as ordinary property tests with a bounded number of cases: the
//! body parser (one JSON event, a JSON array, NDJSON) with arbitrary bytes,
//! and `POST /v1/events` through the router with mutated valid bodies, any
//! content type and any query string. Nothing panics, no answer is a 5xx
//! (the memory sink never fails), every 4xx body is JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::response::IntoResponse;
use http::Request;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::testing::state_with;
use super::{app, split_body, AppState};
use crate::MemorySink;

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "",
    "text/plain",
    "application/x-ndjson; charset=latin1",
    ";",
    "multipart/form-data; boundary=x",
];

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(CONTENT_TYPES).prop_map(String::from),
        1 => "[ -~]{0,30}",
    ]
}

/// The example events, as every test of the workspace uses them.
fn examples() -> Vec<Value> {
    trailhouse_schemas::examples::FILES
        .iter()
        .filter_map(|(_, text)| serde_json::from_str(text).ok())
        .collect()
}

/// JSON of any shape, including wrong types for every field.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        any::<String>().prop_map(Value::String),
        "[0-9T:.Z+-]{0,32}".prop_map(Value::String),
        Just(json!("x".repeat(10_000))),
        Just(json!("2024-05-01T12:00:00Z")),
        Just(json!("9999-12-31T23:59:59.999999999Z")),
        Just(json!("00000000-0000-0000-0000-000000000000")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field path inside an event, as the schema names them.
const FIELDS: &[&str] = &[
    "id",
    "org_id",
    "environment_id",
    "workspace_id",
    "workspace_name",
    "created_at",
    "actor",
    "actor.type",
    "actor.email",
    "auth",
    "auth.type",
    "source",
    "action",
    "action.type",
    "resource",
    "request",
    "request.url",
    "request.status",
    "request.duration_ms",
    "request.query",
    "request.path_params",
    "request.headers",
    "request.body",
    "metadata",
    "unknown_field",
];

/// One edit of a valid event: set a field to any JSON, or remove it.
fn edit() -> impl Strategy<Value = (String, Option<Value>)> {
    (
        prop::sample::select(FIELDS).prop_map(String::from),
        proptest::option::of(any_json()),
    )
}

fn apply_edit(event: &mut Value, (path, value): &(String, Option<Value>)) {
    let mut target = event;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(obj) = target.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            match value {
                Some(v) => {
                    obj.insert(part.to_string(), v.clone());
                }
                None => {
                    obj.remove(part);
                }
            }
            return;
        }
        target = obj.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

/// How the events are framed, and byte-level damage after framing.
#[derive(Debug, Clone)]
enum Framing {
    Object,
    Array,
    Ndjson { blank_lines: bool },
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Object),
        Just(Framing::Array),
        any::<bool>().prop_map(|blank_lines| Framing::Ndjson { blank_lines }),
    ]
}

fn frame(events: &[Value], framing: &Framing) -> (String, Vec<u8>) {
    match framing {
        Framing::Object => (
            "application/json".into(),
            events
                .first()
                .map(Value::to_string)
                .unwrap_or_default()
                .into_bytes(),
        ),
        Framing::Array => (
            "application/json".into(),
            Value::Array(events.to_vec()).to_string().into_bytes(),
        ),
        Framing::Ndjson { blank_lines } => {
            let sep = if *blank_lines { "\n \n\r\n" } else { "\n" };
            let lines: Vec<String> = events.iter().map(Value::to_string).collect();
            ("application/x-ndjson".into(), lines.join(sep).into_bytes())
        }
    }
}

/// Byte edits: `(position, byte, 0 replace | 1 delete | 2 insert)`.
fn damage(bytes: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
    for (at, byte, op) in edits {
        let i = at % (bytes.len() + 1);
        match op {
            0 if i < bytes.len() => bytes[i] = *byte,
            1 if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, *byte),
        }
    }
}

fn state() -> Arc<AppState<MemorySink>> {
    state_with(|l| {
        l.max_body_bytes = 256 * 1024;
        l.max_batch_events = 20;
    })
    .0
}

/// Posts `body` with the service key; the status and the body bytes.
async fn post(
    s: &Arc<AppState<MemorySink>>,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Option<(u16, Vec<u8>)> {
    let uri = if query.is_empty() {
        "/v1/events".to_string()
    } else {
        format!("/v1/events?{query}")
    };
    let req = Request::post(uri)
        .header("content-type", content_type)
        .header("authorization", "Bearer gw-key")
        .body(Body::from(body))
        .ok()?;
    let resp = app(s.clone()).oneshot(req).await.ok()?;
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    Some((status, bytes.to_vec()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// What every answer must be: not a 5xx, and JSON when it is a 4xx.
fn check(uri: &str, answer: Option<(u16, Vec<u8>)>) -> Result<(), TestCaseError> {
    let Some((status, body)) = answer else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&body);
    prop_assert!(status < 500, "{uri}: {status} {text}");
    if (400..500).contains(&status) {
        prop_assert!(
            serde_json::from_slice::<Value>(&body).is_ok(),
            "{uri}: {status} body is not JSON: {text}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any bytes under any content type split into values or are a clean 4xx.
    #[test]
    fn the_body_parser_takes_any_bytes(
        ctype in content_type(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any::<String>().prop_map(String::into_bytes),
            "[\\[\\]{}\",:0-9a-z \n\r\t\\\\]{0,64}".prop_map(String::into_bytes),
        ],
    ) {
        if let Err(e) = split_body(&ctype, &body) {
            let status = e.into_response().status();
            prop_assert!(status.is_client_error(), "{status}");
        }
    }

    /// Valid events with fields replaced by anything or removed, framed as
    /// an object, an array or NDJSON, then damaged byte by byte, under any
    /// content type and query string.
    #[test]
    fn mutated_valid_bodies_never_get_a_5xx(
        picks in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(edit(), 0..3)), 1..5),
        framing in framing(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..3),
        ctype in proptest::option::of(content_type()),
        query in prop_oneof![
            3 => Just(String::new()),
            1 => Just("partial=true".to_string()),
            1 => "[a-z=&%0-9]{0,16}",
        ],
    ) {
        let examples = examples();
        prop_assume!(!examples.is_empty());
        let events: Vec<Value> = picks
            .iter()
            .map(|(i, changes)| {
                let mut e = examples[i.index(examples.len())].clone();
                if let Some(o) = e.as_object_mut() {
                    o.remove("id");
                }
                for c in changes {
                    apply_edit(&mut e, c);
                }
                e
            })
            .collect();
        let (framed_type, mut body) = frame(&events, &framing);
        damage(&mut body, &edits);
        let ctype = ctype.unwrap_or(framed_type);
        let s = state();
        let answer = runtime().block_on(post(&s, &query, &ctype, body));
        check(&format!("?{query} {ctype}"), answer)?;
    }
}

/// The harness reaches the handler: the examples, unchanged, are accepted
/// in each framing, so the cases above exercise the parser and validation.
#[test]
fn the_harness_accepts_the_examples() {
    let mut events = examples();
    for e in &mut events {
        if let Some(o) = e.as_object_mut() {
            o.remove("id");
            o.remove("created_at");
        }
    }
    for framing in [
        Framing::Object,
        Framing::Array,
        Framing::Ndjson { blank_lines: true },
    ] {
        let (ctype, body) = frame(&events, &framing);
        let s = state();
        let got = runtime()
            .block_on(post(&s, "", &ctype, body))
            .map(|(st, _)| st);
        assert_eq!(got, Some(202), "{framing:?}");
    }
}
