//! The query API's dialects against the real local ClickHouse: every
//! parameter, default, maximum, error and mapping; full cursor walks over
//! events with equal timestamps; random filters against a brute-force
//! filter; and isolation between orgs and workspaces.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use trailhouse_query_api::auth::Claims;
use trailhouse_query_api::query::{Cond, Field, Filter};
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
        let mut env = TestEnv::clickhouse_only(test).await;
        let now = dataset::now();
        let mut a = dataset::rows(&dataset::events("org_a", 1200, 60, 1, now));
        let mut b = dataset::rows(&dataset::events("org_b", 400, 20, 2, now));
        env.insert_rows(&a).await;
        env.insert_rows(&b).await;
        newest_first(&mut a);
        newest_first(&mut b);
        let url = env.start_query_api().await;
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

// ---------------------------------------------------------------- Atomic

#[tokio::test]
async fn atomic_audit_log() {
    let api = Api::new("q_atomic").await;
    let wb = api.token(Tok {
        org: "org_a",
        roles: &["workbench"],
        ..Tok::default()
    });
    // Auth: 401 without or with an invalid token, 403 without the role.
    assert_eq!(
        api.get("/audit-log", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get("/audit-log", Some("nope")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, body) = api.get("/audit-log", Some(&api.admin("org_a"))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    // Default limit 100, newest first, cursor present; per-entry cursors.
    let body = api.ok("/audit-log", &wb).await;
    assert_documented(&api, &body, "AtomicPage").await;
    let doc = api.ok("/openapi.json", "").await;
    let torq = serde_json::json!({"$ref": "#/components/schemas/TorqPage"});
    assert!(
        conforms(&doc, &torq, &body, "x").is_err(),
        "the checker can fail"
    );
    let (_, err) = api.get("/audit-log?limit=0", Some(&wb)).await;
    assert_documented(&api, &err, "NativeError").await;
    assert_eq!(ids(&body, "data"), row_ids(api.a.iter().take(100)));
    let c = body["cursor"].as_str().expect("cursor");
    let page2 = api.ok(&format!("/audit-log?cursor={c}"), &wb).await;
    assert_eq!(
        ids(&page2, "data"),
        row_ids(api.a.iter().skip(100).take(100))
    );
    let entry_cursor = body["data"][9]["cursor"].as_str().expect("entry cursor");
    let after10 = api
        .ok(&format!("/audit-log?limit=5&cursor={entry_cursor}"), &wb)
        .await;
    assert_eq!(
        ids(&after10, "data"),
        row_ids(api.a.iter().skip(10).take(5))
    );

    // Limits.
    let all = api.ok("/audit-log?limit=1000", &wb).await;
    assert_eq!(ids(&all, "data").len(), 1000);
    for bad in ["0", "1001", "-1", "ten"] {
        let (st, body) = api.get(&format!("/audit-log?limit={bad}"), Some(&wb)).await;
        assert_bad(st, &body, "limit", bad);
    }
    // The last page has no cursor.
    let c = all["cursor"].as_str().expect("cursor");
    let last = api
        .ok(&format!("/audit-log?limit=1000&cursor={c}"), &wb)
        .await;
    assert_eq!(ids(&last, "data"), row_ids(api.a.iter().skip(1000)));
    assert!(last.get("cursor").is_none(), "{}", last["cursor"]);

    // authType filter, each allowed value; anything else is 400.
    for t in ["client", "clientCredentials", "signedPayload", "workbench"] {
        let body = api
            .ok(&format!("/audit-log?authType={t}&limit=1000"), &wb)
            .await;
        let want = row_ids(api.a.iter().filter(|r| r.auth_type == t));
        assert!(!want.is_empty());
        assert_eq!(ids(&body, "data"), want, "{t}");
    }
    for bad in ["apiKey", "CLIENT", "x"] {
        let (st, body) = api
            .get(&format!("/audit-log?authType={bad}"), Some(&wb))
            .await;
        assert_bad(st, &body, "authType", bad);
    }
    // A cursor is bound to its filter set.
    let c = api.ok("/audit-log?authType=client&limit=5", &wb).await["cursor"]
        .as_str()
        .map(String::from)
        .expect("cursor");
    let (st, body) = api
        .get(
            &format!("/audit-log?authType=workbench&cursor={c}"),
            Some(&wb),
        )
        .await;
    assert_bad(st, &body, "cursor", "foreign filter");
    let (st, body) = api.get("/audit-log?cursor=forged.cursor", Some(&wb)).await;
    assert_bad(st, &body, "cursor", "forged");

    // Environment scope from the token.
    let prod = api.token(Tok {
        org: "org_a",
        roles: &["workbench"],
        env: Some("prod"),
        ..Tok::default()
    });
    let body = api.ok("/audit-log?limit=1000", &prod).await;
    let want: Vec<String> = row_ids(api.a.iter().filter(|r| r.environment_id == "prod"));
    assert_eq!(ids(&body, "data"), want[..want.len().min(1000)].to_vec());

    // Mapping of one entry.
    let r = &api.a[0];
    let e = &api.ok("/audit-log?limit=1", &wb).await["data"][0];
    assert_eq!(e["id"], r.id.to_string());
    assert_eq!(e["url"], o(&r.request_url));
    assert_eq!(e["status"], serde_json::json!(r.request_status));
    assert_eq!(e["auth"]["type"], r.auth_type.as_str());
    assert_eq!(e["auth"]["sub"], r.auth_sub.as_str());
    assert!(
        e["auth"].get("appClientId").is_none(),
        "absent keys are left out"
    );
    assert_eq!(
        e["auth"].get("clientId").is_some(),
        !r.auth_client_id.is_empty()
    );
    assert_eq!(e["ip"], o(&r.request_ip));
    assert_eq!(e["userAgent"], "curl/8.5");
    assert_eq!(e["method"], o(&r.request_method));
    assert_eq!(e["organisationId"], "org_a");
    assert_eq!(e["environmentId"], o(&r.environment_id));
    assert_eq!(e["time"], serde_json::json!(r.request_duration_ms));
    assert_eq!(
        e["resource"]["type"],
        serde_json::json!(Some(&r.resource_type).filter(|s| !s.is_empty()))
    );
    assert_eq!(e["action"]["type"], r.action_type.as_str());
    assert_eq!(
        e["created"],
        r.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert!(e["created"].as_str().unwrap_or("").ends_with('Z'));
    assert_eq!(
        e["payload"],
        serde_json::json!(Some(&r.request_body).filter(|s| !s.is_empty()))
    );
    api.env.stop().await;
}

// ------------------------------------------------------ Organisation log

#[tokio::test]
async fn organisation_audit_log() {
    let api = Api::new("q_orglog").await;
    let base = "/api/v1/organizations/org_a/audit-logs";
    // Permission: owner and admin roles, or the permission itself.
    for (roles, perms) in [
        (&["owner"][..], &[][..]),
        (&["admin"], &[]),
        (&[], &["viewAuditLog"]),
    ] {
        let t = api.token(Tok {
            org: "org_a",
            roles,
            perms,
            ..Tok::default()
        });
        api.ok(base, &t).await;
    }
    let member = api.token(Tok {
        org: "org_a",
        roles: &["member", "workbench"],
        ..Tok::default()
    });
    assert_eq!(api.get(base, Some(&member)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.get(base, None).await.0, StatusCode::UNAUTHORIZED);
    let t = api.admin("org_a");
    // The path's org must be the token's.
    let (st, body) = api
        .get("/api/v1/organizations/org_b/audit-logs", Some(&t))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");

    // Defaults and limits.
    let body = api.ok(base, &t).await;
    assert_documented(&api, &body, "OrgLogPage").await;
    assert_eq!(ids(&body, "data"), row_ids(api.a.iter().take(50)));
    let c = body["cursor"].as_str().expect("cursor");
    let p2 = api.ok(&format!("{base}?cursor={c}"), &t).await;
    assert_eq!(ids(&p2, "data"), row_ids(api.a.iter().skip(50).take(50)));
    assert_eq!(
        ids(&api.ok(&format!("{base}?limit=500"), &t).await, "data").len(),
        500
    );
    for bad in ["0", "501"] {
        let (st, body) = api.get(&format!("{base}?limit={bad}"), Some(&t)).await;
        assert_bad(st, &body, "limit", bad);
    }

    // Search: path substring ignoring case, actor id exact, workspace id exact.
    for q in ["tickets", "TICKETS/1", "u3", "ws2", "search", "u"] {
        let body = api
            .ok(&format!("{base}?limit=500&search={}", enc(q)), &t)
            .await;
        let lower = q.to_lowercase();
        let want: Vec<String> = row_ids(api.a.iter().filter(|r| {
            r.request_path.to_lowercase().contains(&lower) || r.actor_id == q || r.workspace_id == q
        }));
        let want = want[..want.len().min(500)].to_vec();
        assert_eq!(ids(&body, "data"), want, "search {q}");
    }
    // "u" is a substring of "/api/v1/users" but not an actor id: partial
    // matching applies to the path only.
    let body = api.ok(&format!("{base}?limit=500&search=u"), &t).await;
    assert!(body["data"]
        .as_array()
        .map(|a| a.iter().all(|e| e["path"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains('u')))
        .unwrap_or(false));

    // Entry mapping.
    let r = &api.a[0];
    let e = &api.ok(&format!("{base}?limit=1"), &t).await["data"][0];
    let api_key = r.auth_type == "apiKey";
    assert_eq!(e["authType"], if api_key { "apiKey" } else { "jwt" });
    if api_key {
        assert!(e["account"].is_null());
    } else {
        assert_eq!(e["account"], o(&r.actor_email));
    }
    assert_eq!(
        e["resource"],
        serde_json::json!(Some(&r.resource_type).filter(|s| !s.is_empty()))
    );
    assert_eq!(e["method"], o(&r.request_method));
    assert_eq!(e["path"], o(&r.request_path));
    assert_eq!(e["statusCode"], serde_json::json!(r.request_status));
    if r.workspace_id.is_empty() {
        assert!(e.get("workspace").is_none());
    } else {
        assert_eq!(e["workspace"]["id"], r.workspace_id.as_str());
        assert_eq!(e["workspace"]["name"], r.workspace_name.as_str());
    }
    // API-key entries have no account.
    let k = api
        .a
        .iter()
        .position(|r| r.auth_type == "apiKey")
        .expect("an apiKey event");
    let body = api.ok(&format!("{base}?limit={}", k + 1), &t).await;
    assert!(body["data"][k]["account"].is_null());
    assert_eq!(body["data"][k]["authType"], "apiKey");

    // Details: full request data, headers from the allow-list only.
    let with_headers = api
        .a
        .iter()
        .find(|r| r.request_headers.contains_key("authorization") && !r.request_body.is_empty())
        .expect("an event with headers and a body");
    let d = api.ok(&format!("{base}/{}", with_headers.id), &t).await;
    assert_documented(&api, &d, "OrgLogDetails").await;
    assert_eq!(d["id"], with_headers.id.to_string());
    assert_eq!(d["hasDetails"], true);
    assert_eq!(d["body"], with_headers.request_body.as_str());
    assert_eq!(
        d["pathParams"],
        serde_json::json!(with_headers.request_path_params)
    );
    let headers = d["headers"].as_object().expect("headers");
    assert!(headers.contains_key("x-request-id"), "{d}");
    for never in ["authorization", "cookie", "x-internal"] {
        assert!(!headers.contains_key(never), "{never} shown: {d}");
    }
    assert!(!d.to_string().contains("top-secret"));
    // Unknown ids, other orgs' ids and bad ids.
    let (st, _) = api
        .get(&format!("{base}/{}", uuid::Uuid::from_u128(42)), Some(&t))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = api.get(&format!("{base}/{}", api.b[0].id), Some(&t)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = api.get(&format!("{base}/not-a-uuid"), Some(&t)).await;
    assert_bad(st, &body, "id", "id");
    api.env.stop().await;
}

// ------------------------------------------------------------------ Torq

#[tokio::test]
async fn torq_audit_logs() {
    let api = Api::new("q_torq").await;
    let path = "/v1alpha/audit_logs";
    let t = api.token(Tok {
        org: "org_a",
        roles: &["admin"],
        ws: Some("ws1"),
        ..Tok::default()
    });
    let in_ws: Vec<&EventRow> = api.a.iter().filter(|r| r.workspace_id == "ws1").collect();
    let day_ago = api.now - Duration::hours(24);
    let recent: Vec<&EventRow> = in_ws
        .iter()
        .copied()
        .filter(|r| r.created_at >= day_ago)
        .collect();
    assert!(recent.len() > 100 && recent.len() < in_ws.len());

    // Errors in Torq's shape.
    let (st, body) = api.get(path, Some("bad")).await;
    assert_eq!(
        (st, body["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(16)),
        "{body}"
    );
    assert!(body["message"].is_string());
    let no_ws = api.admin("org_a");
    let (st, body) = api.get(path, Some(&no_ws)).await;
    assert_eq!(
        (st, body["code"].as_i64()),
        (StatusCode::FORBIDDEN, Some(7)),
        "{body}"
    );
    let no_perm = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ws: Some("ws1"),
        ..Tok::default()
    });
    let (st, body) = api.get(path, Some(&no_perm)).await;
    assert_eq!(
        (st, body["code"].as_i64()),
        (StatusCode::FORBIDDEN, Some(7)),
        "{body}"
    );

    // Defaults: the last 24 hours, 100 per page, newest first.
    let body = api.ok(path, &t).await;
    assert_documented(&api, &body, "TorqPage").await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(recent.iter().copied().take(100))
    );
    let tok = body["next_page_token"].as_str().expect("token").to_string();
    assert!(!tok.is_empty());
    let mut walked = ids(&body, "audit_logs");
    let mut tok = tok;
    while !tok.is_empty() {
        let b = api.ok(&format!("{path}?page_token={tok}"), &t).await;
        walked.extend(ids(&b, "audit_logs"));
        tok = b["next_page_token"].as_str().expect("token").to_string();
    }
    assert_eq!(walked, row_ids(recent.iter().copied()));

    // Explicit windows, any sub-second precision; bounds inclusive.
    let pivot = recent[recent.len() / 2].created_at;
    let nanos = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let body = api
        .ok(
            &format!("{path}?page_size=500&start_time={}", enc(&nanos(pivot))),
            &t,
        )
        .await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(recent.iter().copied().filter(|r| r.created_at >= pivot))
    );
    let body = api
        .ok(
            &format!("{path}?page_size=500&end_time={}", enc(&nanos(pivot))),
            &t,
        )
        .await;
    let want = row_ids(
        in_ws
            .iter()
            .copied()
            .filter(|r| r.created_at <= pivot && r.created_at >= pivot - Duration::hours(24)),
    );
    assert_eq!(ids(&body, "audit_logs"), want);
    let old_start = api.now - Duration::hours(48);
    let q = format!(
        "{path}?page_size=500&start_time={}&end_time={}",
        enc(&nanos(old_start)),
        enc(&nanos(api.now))
    );
    assert_eq!(
        ids(&api.ok(&q, &t).await, "audit_logs"),
        row_ids(in_ws.iter().copied())
    );
    let q =
        format!("{path}?start_time=2022-03-09T08:40:18.490771179Z&end_time=2022-03-10T08:40:18.1Z");
    assert_eq!(ids(&api.ok(&q, &t).await, "audit_logs").len(), 0);
    let q = format!("{path}?start_time=2022-03-10T00:00:00Z&end_time=2022-03-09T00:00:00Z");
    let (st, body) = api.get(&q, Some(&t)).await;
    assert_bad(st, &body, "start_time", "start after end");
    assert_documented(&api, &body, "TorqError").await;
    assert_eq!(body["code"], 3);
    let (st, body) = api.get(&format!("{path}?end_time=noon"), Some(&t)).await;
    assert_bad(st, &body, "end_time", "bad time");

    // page_size and order.
    let body = api.ok(&format!("{path}?page_size=3&order=asc"), &t).await;
    let mut asc: Vec<&EventRow> = recent.clone();
    asc.reverse();
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(asc.iter().copied().take(3))
    );
    let next = body["next_page_token"].as_str().expect("token");
    let body2 = api
        .ok(
            &format!("{path}?page_size=3&order=asc&page_token={next}"),
            &t,
        )
        .await;
    assert_eq!(
        ids(&body2, "audit_logs"),
        row_ids(asc.iter().copied().skip(3).take(3))
    );
    let (st, body) = api
        .get(
            &format!("{path}?page_size=3&order=desc&page_token={next}"),
            Some(&t),
        )
        .await;
    assert_bad(st, &body, "page_token", "order changed");
    for bad in ["0", "501", "x"] {
        let (st, body) = api.get(&format!("{path}?page_size={bad}"), Some(&t)).await;
        assert_bad(st, &body, "page_size", bad);
    }
    let (st, body) = api.get(&format!("{path}?order=newest"), Some(&t)).await;
    assert_bad(st, &body, "order", "order");
    assert_eq!(
        ids(
            &api.ok(&format!("{path}?page_size=500"), &t).await,
            "audit_logs"
        )
        .len(),
        recent.len().min(500)
    );

    // Mapping.
    let r = recent[0];
    let e = &api.ok(&format!("{path}?page_size=1"), &t).await["audit_logs"][0];
    assert_eq!(e["id"], r.id.to_string());
    assert_eq!(
        DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap_or(""))
            .map(|t| t.with_timezone(&Utc))
            .ok(),
        Some(r.created_at)
    );
    assert_eq!(e["email"], r.actor_email.as_str());
    assert_eq!(e["actor_name"], r.actor_name.as_str());
    assert_eq!(e["actor_type"], r.actor_type.as_str());
    let action = if r.action_description.is_empty() {
        &r.action_type
    } else {
        &r.action_description
    };
    assert_eq!(e["action"], action.as_str());
    assert_eq!(e["resource_id"], r.resource_id.as_str());
    assert_eq!(e["resource_name"], r.resource_name.as_str());
    assert_eq!(e["user_agent"], "curl/8.5");
    assert_eq!(e["extra_data"], serde_json::json!(r.metadata));
    assert_eq!(e["account_id"], "ws1");
    assert_eq!(e["account_name"], "Workspace ws1");
    api.env.stop().await;
}

// --------------------------------------------------------------- Zendesk

#[tokio::test]
async fn zendesk_audit_logs() {
    let api = Api::new("q_zendesk").await;
    let t = api.admin("org_a");
    let path = "/api/v2/audit_logs";
    let (st, body) = api.get(path, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body["error"].is_string(), "{body}");
    let member = api.token(Tok {
        org: "org_a",
        roles: &["member"],
        ..Tok::default()
    });
    assert_eq!(api.get(path, Some(&member)).await.0, StatusCode::FORBIDDEN);

    // Filters, single and repeated (OR), combined (AND).
    let check = |q: &str, pred: &dyn Fn(&EventRow) -> bool| {
        let want: Vec<String> = row_ids(api.a.iter().filter(|r| pred(r)));
        (q.to_string(), want)
    };
    let cases = vec![
        check("filter[source_type]=ticket", &|r| {
            r.resource_type == "ticket"
        }),
        check(
            "filter[source_type][]=ticket&filter[source_type][]=user",
            &|r| r.resource_type == "ticket" || r.resource_type == "user",
        ),
        check("filter[source_type]=ticket&filter[source_id]=r3", &|r| {
            r.resource_type == "ticket" && r.resource_id == "r3"
        }),
        check(
            "filter[source_type]=user&filter[source_id][]=r1&filter[source_id][]=r2",
            &|r| r.resource_type == "user" && (r.resource_id == "r1" || r.resource_id == "r2"),
        ),
        check("filter[actor_id]=u2", &|r| r.actor_id == "u2"),
        check(
            "filter[actor_id][]=u2&filter[actor_id][]=u4&filter[action]=delete",
            &|r| (r.actor_id == "u2" || r.actor_id == "u4") && r.action_type == "delete",
        ),
        check("filter[ip_address]=2001:db8::1", &|r| {
            r.request_ip == "2001:db8::1"
        }),
        check("filter[action][]=login&filter[action][]=create", &|r| {
            r.action_type == "login" || r.action_type == "create"
        }),
    ];
    for (q, want) in cases {
        let mut got = Vec::new();
        let mut next = Some(format!("{path}?{q}"));
        while let Some(url) = next {
            let body = api.ok(&url, &t).await;
            got.extend(ids(&body, "audit_logs"));
            next = body["links"]["next"].as_str().map(String::from);
            assert_eq!(
                body["meta"]["has_more"].as_bool(),
                Some(next.is_some()),
                "{q}"
            );
        }
        assert!(!want.is_empty(), "{q}");
        assert_eq!(got, want, "{q}");
    }
    // created_at: exactly twice, start then end, inclusive.
    let lo = api.a[300].created_at;
    let hi = api.a[100].created_at;
    let ts = |t: DateTime<Utc>| enc(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    for style in ["filter[created_at]", "filter[created_at][]"] {
        let q = format!(
            "{path}?page[size]=100&{style}={}&{style}={}",
            ts(lo),
            ts(hi)
        );
        let body = api.ok(&q, &t).await;
        let want = row_ids(
            api.a
                .iter()
                .filter(|r| r.created_at >= lo && r.created_at <= hi)
                .take(100),
        );
        assert_eq!(ids(&body, "audit_logs"), want, "{style}");
    }
    for (q, param) in [
        (
            format!("filter[created_at]={}", ts(lo)),
            "filter[created_at]",
        ),
        (
            format!(
                "filter[created_at]={}&filter[created_at]={}&filter[created_at]={}",
                ts(lo),
                ts(hi),
                ts(hi)
            ),
            "filter[created_at]",
        ),
        (
            format!(
                "filter[created_at]={}&filter[created_at]={}",
                ts(hi),
                ts(lo)
            ),
            "filter[created_at]",
        ),
        (
            "filter[created_at]=x&filter[created_at]=y".to_string(),
            "filter[created_at]",
        ),
        ("filter[source_id]=r1".to_string(), "filter[source_id]"),
        ("page[size]=101".to_string(), "page[size]"),
        ("page[size]=0".to_string(), "page[size]"),
        ("sort=newest".to_string(), "sort"),
        ("page[after]=forged".to_string(), "page[after]"),
        ("page=101".to_string(), "page"),
        ("page=0".to_string(), "page"),
        ("per_page=101".to_string(), "per_page"),
        ("page=1&sort_by=id".to_string(), "sort_by"),
        ("page=1&sort_order=up".to_string(), "sort_order"),
    ] {
        let (st, body) = api.get(&format!("{path}?{q}"), Some(&t)).await;
        assert_bad(st, &body, param, &q);
        assert!(
            body["error"].is_string() && body["description"].is_string(),
            "{body}"
        );
    }
    let (_, body) = api.get(&format!("{path}?page=101"), Some(&t)).await;
    assert!(body["description"]
        .as_str()
        .unwrap_or("")
        .contains("cursor pagination"));

    // Cursor mode: defaults, sort, and walking back exactly the pages walked forward.
    let first = api.ok(path, &t).await;
    assert_documented(&api, &first, "ZendeskCursorPage").await;
    assert_eq!(ids(&first, "audit_logs"), row_ids(api.a.iter().take(100)));
    assert!(first["meta"]["before_cursor"].is_null());
    assert!(first["links"]["prev"].is_null());
    let asc = api
        .ok(&format!("{path}?sort=created_at&page[size]=7"), &t)
        .await;
    let mut rev: Vec<&EventRow> = api.a.iter().collect();
    rev.reverse();
    assert_eq!(
        ids(&asc, "audit_logs"),
        row_ids(rev.iter().copied().take(7))
    );
    let (pages, last) = walk(&api, &t, path, "audit_logs", |b| {
        let next = b["links"]["next"].as_str().map(String::from);
        assert!(
            next.as_deref().is_none_or(|n| n.starts_with("http://")),
            "absolute: {next:?}"
        );
        next
    })
    .await;
    assert_eq!(pages[0], ids(&first, "audit_logs"));
    assert_eq!(pages.concat(), row_ids(api.a.iter()));
    assert!(last["meta"]["after_cursor"].is_null());
    let back = walk_back(&api, &t, last, "audit_logs", |b| {
        b["links"]["prev"].as_str().map(String::from)
    })
    .await;
    assert_eq!(
        back, pages,
        "page[before] walks back the pages page[after] walked"
    );
    // An after cursor is not a before cursor.
    let after = api.ok(&format!("{path}?page[size]=5"), &t).await["meta"]["after_cursor"]
        .as_str()
        .map(String::from)
        .expect("after");
    let (st, body) = api
        .get(
            &format!("{path}?page[size]=5&page[before]={after}"),
            Some(&t),
        )
        .await;
    assert_bad(st, &body, "page[before]", "walk");
    let (st, body) = api
        .get(
            &format!("{path}?page[size]=6&page[after]={after}"),
            Some(&t),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "page size is not part of the binding: {body}"
    );

    // Offset mode.
    let body = api.ok(&format!("{path}?per_page=50&page=2"), &t).await;
    assert_documented(&api, &body, "ZendeskOffsetPage").await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(api.a.iter().skip(50).take(50))
    );
    assert_eq!(body["count"], 1200);
    let next = body["next_page"].as_str().expect("next_page");
    assert!(
        next.starts_with("http://") && next.contains("page=3"),
        "{next}"
    );
    let prev = body["previous_page"].as_str().expect("previous_page");
    assert!(prev.contains("page=1"), "{prev}");
    assert_eq!(
        ids(&api.ok(next, &t).await, "audit_logs"),
        row_ids(api.a.iter().skip(100).take(50))
    );
    let body = api.ok(&format!("{path}?page=1"), &t).await;
    assert_eq!(ids(&body, "audit_logs").len(), 100);
    assert!(body["previous_page"].is_null());
    let body = api
        .ok(
            &format!("{path}?per_page=100&page=12&sort_order=asc&sort_by=created_at"),
            &t,
        )
        .await;
    assert_eq!(
        ids(&body, "audit_logs"),
        row_ids(rev.iter().copied().skip(1100))
    );
    assert!(body["next_page"].is_null());
    let body = api
        .ok(
            &format!("{path}?per_page=10&page=1&filter[action]=login"),
            &t,
        )
        .await;
    assert_eq!(
        body["count"],
        api.a.iter().filter(|r| r.action_type == "login").count()
    );

    // Mapping, and the entry's own URL.
    let r = &api.a[0];
    let e = api.ok(&format!("{path}?page[size]=1"), &t).await["audit_logs"][0].clone();
    assert_eq!(e["id"], r.id.to_string());
    assert_eq!(e["action"], r.action_type.as_str());
    assert_eq!(e["actor_id"], r.actor_id.as_str());
    assert_eq!(e["actor_name"], r.actor_name.as_str());
    assert_eq!(
        e["change_description"],
        serde_json::json!(Some(&r.action_description).filter(|s| !s.is_empty()))
    );
    assert_eq!(
        e["created_at"],
        r.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(e["source_id"], r.resource_id.as_str());
    assert_eq!(e["source_label"], r.resource_name.as_str());
    assert_eq!(
        e["source_type"],
        serde_json::json!(Some(&r.resource_type).filter(|s| !s.is_empty()))
    );
    let own = e["url"].as_str().expect("url");
    let shown = api.ok(own, &t).await;
    assert_documented(&api, &shown, "ZendeskShow").await;
    assert_eq!(shown["audit_log"], e);
    let shown = api.ok(&format!("{path}/{}", r.id), &t).await;
    assert_eq!(shown["audit_log"]["id"], r.id.to_string());
    let (st, body) = api.get(&format!("{path}/{}", api.b[0].id), Some(&t)).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("RecordNotFound"))
    );
    assert_documented(&api, &body, "ZendeskError").await;
    api.env.stop().await;
}

// ---------------------------------------------------------------- Native

#[tokio::test]
async fn native_api_and_export() {
    let api = Api::new("q_native").await;
    let t = api.admin("org_a");
    let (st, body) = api.get("/v1/events?acton=x", Some(&t)).await;
    assert_bad(st, &body, "acton", "unknown parameter");
    for (q, param) in [
        ("limit=0", "limit"),
        ("status=abc", "status"),
        ("status_min=500&status_max=400", "status_min"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("order=up", "order"),
        ("cursor=abc", "cursor"),
        ("path_prefix=a&path_prefix=b", "path_prefix"),
    ] {
        let (st, body) = api.get(&format!("/v1/events?{q}"), Some(&t)).await;
        assert_bad(st, &body, param, q);
    }
    // Walk forward then back with next_cursor / prev_cursor.
    let base = "/v1/events?limit=250&status_min=400";
    let (pages, last) = walk(&api, &t, base, "data", |b| {
        cursor_link(base, "cursor", b["next_cursor"].as_str())
    })
    .await;
    let one = api.ok(&format!("/v1/events/{}", api.a[0].id), &t).await;
    assert_documented(&api, &one, "Event").await;
    let first = api.ok(base, &t).await;
    assert_documented(&api, &first, "NativePage").await;
    assert!(first["prev_cursor"].is_null());
    let want = row_ids(
        api.a
            .iter()
            .filter(|r| r.request_status.is_some_and(|s| s >= 400)),
    );
    assert_eq!(pages.concat(), want);
    let back = walk_back(&api, &t, last, "data", |b| {
        cursor_link(base, "cursor", b["prev_cursor"].as_str())
    })
    .await;
    assert_eq!(back, pages);

    // Export: every matching event, both formats, no page limit.
    let resp = api
        .env
        .http
        .get(format!(
            "{}/v1/events/export?format=ndjson&order=asc",
            api.url
        ))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let text = resp.text().await.expect("body");
    let got: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json line")["id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let mut asc = row_ids(api.a.iter());
    asc.reverse();
    assert_eq!(got, asc);
    let resp = api
        .env
        .http
        .get(format!(
            "{}/v1/events/export?format=csv&action=login",
            api.url
        ))
        .bearer_auth(&t)
        .send()
        .await
        .expect("export");
    let text = resp.text().await.expect("body");
    let mut lines = text.split("\r\n");
    assert!(lines
        .next()
        .unwrap_or("")
        .starts_with("id,created_at,org_id,"));
    let got: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        got,
        row_ids(api.a.iter().filter(|r| r.action_type == "login"))
    );
    let (st, body) = api.get("/v1/events/export?format=xml", Some(&t)).await;
    assert_bad(st, &body, "format", "format");
    let (st, body) = api.get("/v1/events/export?limit=5", Some(&t)).await;
    assert_bad(st, &body, "limit", "export has no limit");

    // The OpenAPI document is served.
    let doc = api.ok("/openapi.json", &t).await;
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    api.env.stop().await;
}

// ------------------------------------------------------------- Isolation

#[tokio::test]
async fn no_dialect_returns_another_orgs_or_workspaces_events() {
    let api = Api::new("q_isolation").await;
    let a_ids: HashSet<String> = row_ids(api.a.iter()).into_iter().collect();
    let b_ids: HashSet<String> = row_ids(api.b.iter()).into_iter().collect();
    let b_all = api.token(Tok {
        org: "org_b",
        roles: &["admin", "workbench", "owner"],
        perms: &["viewAuditLog"],
        ..Tok::default()
    });
    let b_ws = api.token(Tok {
        org: "org_b",
        roles: &["admin"],
        ws: Some("ws2"),
        ..Tok::default()
    });
    let a_id = api.a[0].id;
    let hostile = [
        "org_id=org_a",
        "organisationId=org_a",
        "org=org_a&limit=1000",
        "filter[org_id]=org_a",
        "workspace_id=ws1",
        "account_id=ws1",
        "search=org_a",
        "search=%25",
        "search=%27%20OR%201%3D1%20--",
        "filter[actor_id]=u1%27%20OR%20%271%27=%271",
        "filter[source_type]=ticket%27)%20OR%20(1=1",
        "start_time=2000-01-01T00:00:00Z",
        "per_page=100&page=1",
    ];
    let paths = [
        "/audit-log",
        "/api/v1/organizations/org_b/audit-logs",
        "/api/v2/audit_logs",
        "/v1alpha/audit_logs",
        "/v1/events/export",
    ];
    let mut seen_b = BTreeSet::new();
    for path in paths {
        for q in hostile {
            let tok = if path.starts_with("/v1alpha") {
                &b_ws
            } else {
                &b_all
            };
            let (st, body) = api.get(&format!("{path}?{q}&limit=500"), Some(tok)).await;
            if st != StatusCode::OK {
                assert!(st.is_client_error(), "{path}?{q}: {st} {body}");
                continue;
            }
            for key in ["data", "audit_logs"] {
                for id in ids(&body, key) {
                    assert!(!a_ids.contains(&id), "{path}?{q} leaked {id}");
                    assert!(b_ids.contains(&id), "{path}?{q} returned unknown {id}");
                    if path.starts_with("/v1alpha") {
                        let r = api.b.iter().find(|r| r.id.to_string() == id).expect("row");
                        assert_eq!(r.workspace_id, "ws2", "{path}?{q}: another workspace");
                    }
                    seen_b.insert(id);
                }
            }
        }
    }
    assert!(!seen_b.is_empty());
    // The native API, with every hostile parameter through its strict parser.
    for q in [
        "actor_id=u1",
        "workspace_id=ws1",
        "path_contains=%27",
        "ip=10.0.0.1",
    ] {
        let body = api.ok(&format!("/v1/events?{q}&limit=1000"), &b_all).await;
        for id in ids(&body, "data") {
            assert!(b_ids.contains(&id), "native {q} leaked {id}");
        }
    }
    // Detail views of another org's event.
    for path in [
        format!("/v1/events/{a_id}"),
        format!("/api/v2/audit_logs/{a_id}"),
        format!("/api/v1/organizations/org_b/audit-logs/{a_id}"),
    ] {
        let (st, _) = api.get(&path, Some(&b_all)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
    let (st, _) = api
        .get(
            &format!("/api/v1/organizations/org_a/audit-logs/{a_id}"),
            Some(&b_all),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Cursors of one org do not open another's pages.
    let a_tok = api.admin("org_a");
    let c = api.ok("/v1/events?limit=5", &a_tok).await["next_cursor"]
        .as_str()
        .map(String::from)
        .expect("cursor");
    let (st, body) = api
        .get(&format!("/v1/events?limit=5&cursor={c}"), Some(&b_all))
        .await;
    assert_bad(st, &body, "cursor", "foreign org cursor");
    api.env.stop().await;
}

// ------------------------------------------------- Walks over equal times

#[tokio::test]
async fn cursor_walks_return_every_event_once_over_equal_timestamps() {
    let mut env = TestEnv::clickhouse_only("q_walk").await;
    let now = dataset::now();
    // 10,500 events on only 7 distinct timestamps, all in one workspace.
    let mut events = dataset::events("org_w", 10_500, 0, 9, now);
    for (i, e) in events.iter_mut().enumerate() {
        e.created_at = now - Duration::minutes(10 * (i % 7) as i64 + 1);
        e.workspace_id = Some("ws".into());
    }
    let mut rows = dataset::rows(&events);
    env.insert_rows(&rows).await;
    newest_first(&mut rows);
    let url = env.start_query_api().await;
    env.wait_ready().await;
    let api = Api {
        env,
        url,
        a: rows,
        b: Vec::new(),
        now,
    };
    let all = row_ids(api.a.iter());
    let t = api.token(Tok {
        org: "org_w",
        roles: &["admin", "workbench"],
        ws: Some("ws"),
        ..Tok::default()
    });

    // Native, both orders, forward then back.
    for order in ["desc", "asc"] {
        let base = format!("/v1/events?limit=1000&order={order}");
        let (pages, last) = walk(&api, &t, &base, "data", |b| {
            cursor_link(&base, "cursor", b["next_cursor"].as_str())
        })
        .await;
        let mut want = all.clone();
        if order == "asc" {
            want.reverse();
        }
        assert_eq!(pages.concat(), want, "native {order} forward");
        let back = walk_back(&api, &t, last, "data", |b| {
            cursor_link(&base, "cursor", b["prev_cursor"].as_str())
        })
        .await;
        assert_eq!(back, pages, "native {order} back");
    }
    // Atomic, organisation log, Torq.
    for (base, list, next, param) in [
        ("/audit-log?limit=1000", "data", "cursor", "cursor"),
        (
            "/api/v1/organizations/org_w/audit-logs?limit=500",
            "data",
            "cursor",
            "cursor",
        ),
        (
            "/v1alpha/audit_logs?page_size=500",
            "audit_logs",
            "next_page_token",
            "page_token",
        ),
    ] {
        let (pages, _) = walk(&api, &t, base, list, |b| {
            cursor_link(base, param, b[next].as_str())
        })
        .await;
        assert_eq!(pages.concat(), all, "{base}");
    }
    // Zendesk, forward with page[after] and back with page[before].
    let (pages, last) = walk(
        &api,
        &t,
        "/api/v2/audit_logs?page[size]=100",
        "audit_logs",
        |b| b["links"]["next"].as_str().map(String::from),
    )
    .await;
    assert_eq!(pages.concat(), all, "zendesk forward");
    let back = walk_back(&api, &t, last, "audit_logs", |b| {
        b["links"]["prev"].as_str().map(String::from)
    })
    .await;
    assert_eq!(back, pages, "zendesk back");
    api.env.stop().await;
}

// ------------------------------------------- Random filters, brute force

#[derive(Debug, Clone)]
struct Case {
    fields: Vec<(&'static str, Field, Vec<String>)>,
    statuses: Vec<u16>,
    status_min: Option<u16>,
    status_max: Option<u16>,
    path_prefix: Option<String>,
    path_contains: Option<String>,
    from: Option<usize>,
    to: Option<usize>,
    asc: bool,
    limit: u32,
}

fn arb_case() -> impl proptest::strategy::Strategy<Value = Case> {
    use proptest::prelude::*;
    use proptest::sample::subsequence;
    // Most fields unfiltered in a given case, so that combinations still match.
    let sub = |xs: &'static [&'static str]| {
        prop_oneof![
            3 => Just(Vec::new()),
            1 => subsequence(xs.to_vec(), 1..=2)
                .prop_map(|v| v.into_iter().map(String::from).collect::<Vec<_>>()),
        ]
    };
    let fields = (
        sub(&dataset::ACTIONS),
        sub(&dataset::ACTORS),
        sub(&dataset::AUTH_TYPES),
        sub(&dataset::ENVS),
        sub(&["ws1", "ws2"]),
        sub(&["ticket", "user"]),
        sub(&dataset::METHODS),
        sub(&["10.0.0.1", "2001:db8::1"]),
        sub(&dataset::SOURCES),
    )
        .prop_map(|(ac, ar, au, en, ws, rt, me, ip, so)| {
            vec![
                ("action", Field::ActionType, ac),
                ("actor_id", Field::ActorId, ar),
                ("auth_type", Field::AuthType, au),
                ("environment_id", Field::Environment, en),
                ("workspace_id", Field::Workspace, ws),
                ("resource_type", Field::ResourceType, rt),
                ("method", Field::Method, me),
                ("ip", Field::Ip, ip),
                ("source", Field::Source, so),
            ]
        });
    (
        fields,
        subsequence(vec![200u16, 204, 404, 500], 0..=2),
        proptest::option::of(prop_oneof![Just(200u16), Just(400), Just(404)]),
        proptest::option::of(prop_oneof![Just(204u16), Just(499), Just(500)]),
        proptest::option::of(prop_oneof![
            Just("/api".to_string()),
            Just("/api/v1/users".to_string()),
            Just("/login".to_string())
        ]),
        proptest::option::of(prop_oneof![
            Just("tickets".to_string()),
            Just("SEARCH".to_string()),
            Just("users/1".to_string()),
            // LIKE wildcards must match literally.
            Just("_".to_string()),
            Just("%".to_string())
        ]),
        proptest::option::of(0usize..1200),
        proptest::option::of(0usize..1200),
        any::<bool>(),
        1u32..400,
    )
        .prop_map(
            |(
                fields,
                statuses,
                status_min,
                status_max,
                path_prefix,
                path_contains,
                from,
                to,
                asc,
                limit,
            )| Case {
                fields,
                statuses,
                status_min,
                status_max,
                path_prefix,
                path_contains,
                from,
                to,
                asc,
                limit,
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_filters_return_what_a_brute_force_filter_returns() {
    use proptest::test_runner::{Config, TestRunner};
    let api = Api::new("q_random").await;
    let handle = tokio::runtime::Handle::current();
    let token = api.admin("org_a");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let non_empty = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&arb_case(), |case| {
        let mut q: Vec<(String, String)> = Vec::new();
        let mut f = Filter::new("org_a");
        for (name, field, values) in &case.fields {
            for v in values {
                q.push((name.to_string(), v.clone()));
            }
            f.push(Cond::AnyOf(*field, values.clone()));
        }
        for s in &case.statuses {
            q.push(("status".into(), s.to_string()));
        }
        f.push(Cond::StatusIn(case.statuses.clone()));
        let (lo, hi) = match (case.status_min, case.status_max) {
            (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
            other => other,
        };
        if let Some(v) = lo {
            q.push(("status_min".into(), v.to_string()));
        }
        if let Some(v) = hi {
            q.push(("status_max".into(), v.to_string()));
        }
        f.push(Cond::StatusBetween(lo, hi));
        if let Some(p) = &case.path_prefix {
            q.push(("path_prefix".into(), p.clone()));
            f.push(Cond::PathPrefix(p.clone()));
        }
        if let Some(p) = &case.path_contains {
            q.push(("path_contains".into(), p.clone()));
            f.push(Cond::PathContains(p.clone()));
        }
        let mut times = [
            case.from.map(|i| api.a[i].created_at),
            case.to.map(|i| api.a[i].created_at),
        ];
        if let [Some(a), Some(b)] = times {
            if a > b {
                times = [Some(b), Some(a)];
            }
        }
        if let Some(t) = times[0] {
            q.push((
                "from".into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ));
            f.push(Cond::From(t));
        }
        if let Some(t) = times[1] {
            q.push((
                "to".into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ));
            f.push(Cond::Until(t));
        }
        q.push(("order".into(), if case.asc { "asc" } else { "desc" }.into()));
        q.push(("limit".into(), case.limit.to_string()));
        let mut want: Vec<String> = row_ids(api.a.iter().filter(|r| f.matches(r)));
        if case.asc {
            want.reverse();
        }
        if !want.is_empty() {
            non_empty.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let base = serde_urlencoded::to_string(&q).unwrap_or_default();
        let got = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let mut got = Vec::new();
                let mut url = format!("/v1/events?{base}");
                loop {
                    let body = api.ok(&url, &token).await;
                    let page = ids(&body, "data");
                    assert!(page.len() <= case.limit as usize);
                    got.extend(page);
                    match body["next_cursor"].as_str() {
                        Some(c) => url = format!("/v1/events?{base}&cursor={c}"),
                        None => break,
                    }
                }
                got
            })
        });
        proptest::prop_assert_eq!(got, want, "{}", base);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must exercise matches, not only empty results.
    let n = non_empty.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n >= 16, "only {n} of 64 random filters matched anything");
    api.env.stop().await;
}
