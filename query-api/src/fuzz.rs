//! Fuzzing, as ordinary property tests with a bounded number of cases: the
//! query-string decoder, every dialect's parameters through the router
//! (arbitrary and structure-aware query strings and path ids), and the
//! cursor decoder (arbitrary text, mutated and re-signed cursors). Nothing
//! panics, no answer is a 5xx, every 4xx body is JSON.

use std::sync::Arc;

use axum::body::Body;
use chrono::{DateTime, Utc};
use http::Request;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use crate::auth::{mint_hs256, Claims};
use crate::cursor::{Binding, Cursor, CursorCodec, Position};
use crate::dialect::{atomic, native, orglog, stats, torq, zendesk};
use crate::params::Params;
use crate::query::Order;
use crate::store::StaticStore;
use crate::{app, AppState};

/// Every parameter any dialect knows, and some near misses.
fn known_keys() -> Vec<&'static str> {
    let mut keys = native::list_params();
    keys.extend(native::export_params());
    keys.extend(atomic::PARAMS);
    keys.extend(orglog::params());
    keys.extend(stats::params());
    keys.extend(torq::PARAMS);
    keys.extend(zendesk::PARAMS);
    keys.extend([
        "format",
        "filter[created_at]",
        "filter[created_at][]",
        "filter[]",
        "filter[",
        "page[",
        "page[size][]",
        "limit[]",
        "",
        "bogus",
    ]);
    keys
}

const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "1000",
    "1001",
    "4294967296",
    "99999999999999999999999",
    "1e3",
    " 5",
    "asc",
    "desc",
    "ASC",
    "ndjson",
    "csv",
    "xml",
    "client",
    "workbench",
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00.123456789+02:00",
    "9999-12-31T23:59:59.999999999Z",
    "0000-01-01T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "1714564800",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
    "eyJ2IjoyfQ.c2ln",
    ".",
    "..",
    "a.b.c",
    "%",
    "%zz",
    "%00",
    "\u{0}",
    "\u{202e}",
    "é",
    "🦀",
    "' OR 1=1 --",
    "{name:String}",
    "[]",
    "=",
    "&",
];

/// A value: a listed one, or any text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(VALUES).prop_map(String::from),
        any::<String>(),
        "[ -~]{0,40}",
    ]
}

/// A key: a known one, or any text.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(known_keys()).prop_map(String::from),
        1 => "[a-z_\\[\\]]{1,12}",
        1 => any::<String>(),
    ]
}

/// `k=v&…`, each pair percent-encoded or raw (raw text may be an invalid
/// escape or break the pair apart, which is the point).
fn query_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec((key(), value(), any::<bool>()), 0..8).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v, raw)| {
                    if raw {
                        format!("{k}={v}")
                    } else {
                        serde_urlencoded::to_string([(k.as_str(), v.as_str())]).unwrap_or_default()
                    }
                })
                .collect::<Vec<_>>()
                .join("&")
        }),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn ids() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("00000000-0000-0000-0000-000000000001".to_string()),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        "[a-zA-Z0-9%._~-]{0,40}",
    ]
}

fn paths() -> impl Strategy<Value = String> {
    let org = prop_oneof![Just("org_a".to_string()), "[a-z0-9_%.-]{1,12}"];
    prop_oneof![
        Just(native::LIST_PATH.to_string()),
        Just(native::EXPORT_PATH.to_string()),
        ids().prop_map(|id| format!("/v1/events/{id}")),
        Just(atomic::PATH.to_string()),
        org.clone()
            .prop_map(|o| format!("/api/v1/organizations/{o}/audit-logs")),
        (org, ids()).prop_map(|(o, id)| format!("/api/v1/organizations/{o}/audit-logs/{id}")),
        Just(torq::PATH.to_string()),
        Just(zendesk::PATH.to_string()),
        Just(zendesk::JSON_PATH.to_string()),
        ids().prop_map(|id| format!("/api/v2/audit_logs/{id}")),
    ]
}

fn token() -> String {
    mint_hs256(
        b"k",
        &Claims {
            sub: "u".into(),
            org_id: "org_a".into(),
            environment_id: Some("env_a".into()),
            workspace_id: Some("ws_a".into()),
            roles: vec!["admin".into(), atomic::ROLE.into()],
            permissions: vec![crate::access::VIEW_AUDIT_LOG.into()],
            exp: Utc::now().timestamp() + 600,
            iat: 0,
        },
    )
    .unwrap_or_default()
}

fn state() -> Arc<AppState<StaticStore>> {
    let rows = trailhouse_schemas::examples::all()
        .iter()
        .map(|e| {
            let mut r = trailhouse_schemas::EventRow::from_event(e, Default::default());
            r.org_id = "org_a".into();
            r
        })
        .collect();
    let store = StaticStore {
        rows,
        ..StaticStore::default()
    };
    Arc::new(AppState::for_tests(store, None))
}

/// Sends one GET; `None` when the URI is not one a client could send.
async fn get(state: &Arc<AppState<StaticStore>>, uri: &str) -> Option<(u16, Vec<u8>)> {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {}", token()))
        .body(Body::empty())
        .ok()?;
    let resp = app(state.clone()).oneshot(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    Some((status, body.to_vec()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any query string decodes or is a 400 naming `query`, and every
    /// accessor answers without panicking.
    #[test]
    fn any_query_string_decodes_or_is_a_clean_400(qs in query_string()) {
        match Params::parse(Some(&qs)) {
            Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
            Ok(p) => {
                for k in known_keys() {
                    let checks = [
                        p.one(k).err(),
                        p.size(k, 10, 1000).err(),
                        p.order(k, Order::Desc).err(),
                        p.time(k).err(),
                        p.parsed::<i64>(k, "an integer").err(),
                    ];
                    for e in checks.into_iter().flatten() {
                        prop_assert_eq!(e.status().as_u16(), 400);
                    }
                    let _ = p.all(&[k]);
                }
                let _ = p.reject_unknown(&known_keys());
            }
        }
    }

    /// Every dialect's route, with any query string: never a 5xx, and every
    /// 4xx body is JSON.
    #[test]
    fn no_query_string_gets_a_5xx_from_any_dialect(
        path in paths(),
        qs in query_string(),
    ) {
        let state = state();
        let uri = if qs.is_empty() { path } else { format!("{path}?{qs}") };
        let Some((status, body)) = runtime().block_on(get(&state, &uri)) else {
            return Ok(());
        };
        prop_assert!(status < 500, "{uri}: {status} {}", String::from_utf8_lossy(&body));
        if (400..500).contains(&status) {
            prop_assert!(
                serde_json::from_slice::<Value>(&body).is_ok(),
                "{uri}: {status} body is not JSON: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Arbitrary text is never a cursor.
    #[test]
    fn arbitrary_text_is_not_a_cursor(s in any::<String>(), dotted in "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}") {
        let c = CursorCodec::new("c");
        let b = binding();
        prop_assert!(c.decode(&b, &s).is_err());
        prop_assert!(c.decode(&b, &dotted).is_err());
    }

    /// A valid cursor with any bytes changed, cut or appended is refused.
    #[test]
    fn mutated_cursors_are_refused(
        t in any::<i64>(),
        id in any::<u128>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let c = CursorCodec::new("c");
        let b = binding();
        let created_at = DateTime::from_timestamp_micros(t.rem_euclid(1 << 52)).unwrap_or_default();
        let valid = c.encode(&b, Cursor::next(Position { created_at, id: Uuid::from_u128(id) }));
        let mut bytes = valid.clone().into_bytes();
        for (at, byte, op) in edits {
            let i = at % (bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, byte),
            }
        }
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        prop_assume!(mutated != valid);
        prop_assert!(c.decode(&b, &mutated).is_err(), "{mutated}");
    }

    /// A correctly signed cursor around any payload (what a leaked secret or
    /// a future version could produce) decodes or is refused, never panics.
    #[test]
    fn signed_payloads_of_any_shape_never_panic(
        t in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN)],
        lo in proptest::option::of(any::<i64>()),
        hi in proptest::option::of(any::<i64>()),
        w in any::<char>(),
        v in any::<u8>(),
        junk in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let c = CursorCodec::new("c");
        let b = binding();
        let payloads = [
            serde_json::json!({
                "v": v, "o": b.org, "d": b.dialect, "r": b.direction,
                "f": crate::cursor::filter_hash(b.filters), "w": w, "t": t,
                "i": Uuid::nil(), "lo": lo, "hi": hi,
            })
            .to_string()
            .into_bytes(),
            junk,
        ];
        for p in payloads {
            let _ = c.decode(&b, &sign("c", &p));
        }
    }
}

fn binding() -> Binding<'static> {
    Binding {
        org: "org_a",
        dialect: "native",
        direction: "desc",
        filters: "",
    }
}

/// `payload.signature` as the codec writes it, for any payload bytes.
fn sign(secret: &str, payload: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The harness reaches every dialect: a plain request to each list route
/// is a 200, so the cases above exercise the parsers, not a refusal.
#[test]
fn the_harness_reaches_every_dialect() {
    let state = state();
    for path in [
        native::LIST_PATH,
        native::EXPORT_PATH,
        atomic::PATH,
        "/api/v1/organizations/org_a/audit-logs",
        torq::PATH,
        zendesk::PATH,
        zendesk::JSON_PATH,
    ] {
        let got = runtime().block_on(get(&state, path)).map(|(s, _)| s);
        assert_eq!(got, Some(200), "{path}");
    }
}
