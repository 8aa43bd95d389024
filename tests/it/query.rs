//! The query API's dialects against the real local ClickHouse: every
//! parameter, default, maximum, error and mapping (one module a dialect);
//! cursor binding, checked by one table over every cursor dialect, and full
//! cursor walks over events with equal timestamps; random filters against a
//! brute-force filter; and isolation between orgs and workspaces. This
//! module is the shared harness.

mod atomic;
mod cursors;
mod edges;
mod hardening;
mod isolation;
mod limits;
mod metrics;
mod native;
mod orglog;
mod random;
mod scoping;
mod stats;
mod torq;
mod viewer;
mod zendesk;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use trailhouse_query_api::auth::Claims;
use trailhouse_schemas::EventRow;
use trailhouse_tests::TestEnv;

use crate::dataset::{self, newest_first};

struct Api {
    env: TestEnv,
    url: String,
    /// org_a's rows, newest first.
    a: Vec<EventRow>,
    /// org_b's rows, newest first.
    b: Vec<EventRow>,
    now: DateTime<Utc>,
}

#[derive(Default)]
struct Tok<'a> {
    org: &'a str,
    roles: &'a [&'a str],
    perms: &'a [&'a str],
    env: Option<&'a str>,
    ws: Option<&'a str>,
}

impl Api {
    async fn new(test: &str) -> Api {
        Api::with(test, |_| {}).await
    }

    /// [`Api::new`] with the query API's configuration adjusted by `adjust`.
    async fn with(test: &str, adjust: impl FnOnce(&mut trailhouse_query_api::QueryConfig)) -> Api {
        let mut env = TestEnv::clickhouse_only(test).await;
        let now = dataset::now();
        let mut a = dataset::rows(&dataset::events("org_a", 1200, 60, 1, now));
        let mut b = dataset::rows(&dataset::events("org_b", 400, 20, 2, now));
        env.insert_rows(&a).await;
        env.insert_rows(&b).await;
        newest_first(&mut a);
        newest_first(&mut b);
        let url = env.start_query_api_with(adjust).await;
        env.wait_ready().await;
        Api {
            env,
            url,
            a,
            b,
            now,
        }
    }

    fn token(&self, t: Tok<'_>) -> String {
        self.env.token_for(Claims {
            sub: "tester".into(),
            org_id: t.org.into(),
            environment_id: t.env.map(String::from),
            workspace_id: t.ws.map(String::from),
            roles: t.roles.iter().map(|s| s.to_string()).collect(),
            permissions: t.perms.iter().map(|s| s.to_string()).collect(),
            exp: Utc::now().timestamp() + 3600,
            iat: 0,
        })
    }

    fn admin(&self, org: &str) -> String {
        self.token(Tok {
            org,
            roles: &["admin"],
            ..Tok::default()
        })
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.url)
        };
        let mut req = self.env.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn ok(&self, path: &str, token: &str) -> Value {
        let (st, body) = self.get(path, Some(token)).await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
        body
    }
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn row_ids<'a>(rows: impl IntoIterator<Item = &'a EventRow>) -> Vec<String> {
    rows.into_iter().map(|r| r.id.to_string()).collect()
}

/// A string as the APIs write it: `null` when empty.
fn o(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .unwrap_or_default()
        .trim_start_matches("v=")
        .to_string()
}

/// Checks `v` against a schema of the served OpenAPI document: types,
/// required keys, no undeclared keys, enums, items, `$ref` and `oneOf`.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], v, at);
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let ok = alts
            .iter()
            .filter(|s| conforms(doc, s, v, at).is_ok())
            .count();
        return if ok == 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches {ok} of oneOf"))
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_ok = types.is_empty()
        || types.contains(&actual)
        || (actual == "integer" && types.contains(&"number"));
    if !type_ok {
        return Err(format!("{at}: {actual} is not {types:?}"));
    }
    if let (Some(e), false) = (schema["enum"].as_array(), v.is_null()) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in enum"));
        }
    }
    if let Value::Object(m) = v {
        for req in schema["required"].as_array().into_iter().flatten() {
            let k = req.as_str().unwrap_or("");
            if !m.contains_key(k) {
                return Err(format!("{at}: missing {k}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, val) in m {
                match props.get(k) {
                    Some(ps) => conforms(doc, ps, val, &format!("{at}.{k}"))?,
                    None if schema["additionalProperties"].is_object() => {}
                    None => return Err(format!("{at}: undocumented key {k}")),
                }
            }
        } else if let Some(ap) = schema["additionalProperties"].as_object() {
            let ap = Value::Object(ap.clone());
            for (k, val) in m {
                conforms(doc, &ap, val, &format!("{at}.{k}"))?;
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (v, schema.get("items")) {
        for (i, x) in items.iter().enumerate() {
            conforms(doc, item, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Asserts that a response body matches the named schema of the served document.
async fn assert_documented(api: &Api, body: &Value, schema: &str) {
    let doc = api.ok("/openapi.json", "").await;
    let s = serde_json::json!({ "$ref": format!("#/components/schemas/{schema}") });
    if let Err(e) = conforms(&doc, &s, body, schema) {
        panic!("response does not match the OpenAPI schema {schema}: {e}\n{body}");
    }
}

fn assert_bad(st: StatusCode, body: &Value, param: &str, ctx: &str) {
    assert_eq!(st, StatusCode::BAD_REQUEST, "{ctx}: {body}");
    let named = body["error"]["parameter"].as_str() == Some(param)
        || body["parameter"].as_str() == Some(param)
        || body["details"][0]["field_violations"][0]["field"].as_str() == Some(param);
    assert!(named, "{ctx}: the error should name {param}: {body}");
}

/// `base` with a cursor parameter, when there is a (non-empty) cursor.
fn cursor_link(base: &str, param: &str, cursor: Option<&str>) -> Option<String> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| format!("{base}&{param}={c}"))
}

/// Walks forward from `first`, following `next`; every page's ids and the
/// last body.
async fn walk(
    api: &Api,
    token: &str,
    first: &str,
    list: &str,
    next: impl Fn(&Value) -> Option<String>,
) -> (Vec<Vec<String>>, Value) {
    let mut body = api.ok(first, token).await;
    let mut pages = vec![ids(&body, list)];
    while let Some(url) = next(&body) {
        body = api.ok(&url, token).await;
        pages.push(ids(&body, list));
    }
    (pages, body)
}

/// Walks back from the page `last`, following `prev`; the pages in forward order.
async fn walk_back(
    api: &Api,
    token: &str,
    mut body: Value,
    list: &str,
    prev: impl Fn(&Value) -> Option<String>,
) -> Vec<Vec<String>> {
    let mut pages = vec![ids(&body, list)];
    while let Some(url) = prev(&body) {
        body = api.ok(&url, token).await;
        pages.push(ids(&body, list));
    }
    pages.reverse();
    pages
}
