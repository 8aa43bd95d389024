//! Properties: a secret put anywhere credential-shaped never comes out;
//! redacting twice is redacting once; what no rule matches is kept.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use trailhouse_schemas::event::Request;

use super::*;

/// Credential-shaped names, as parts; rendered with any separator or case.
const NAMES: &[&[&str]] = &[
    &["x", "forwarded", "authorization"],
    &["x", "authorization"],
    &["x", "session", "id"],
    &["x", "secret", "key"],
    &["private", "key"],
    &["x", "amz", "signature"],
    &["sig"],
    &["code"],
    &["access", "token"],
    &["api", "key"],
    &["client", "secret"],
    &["password"],
    &["auth", "code"],
    &["session", "token"],
    &["otp"],
    &["credentials"],
    &["user", "password"],
    &["x", "csrf", "token"],
];

fn render(parts: &[&str], style: u8) -> String {
    let title = |p: &str| {
        let mut c = p.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    match style % 7 {
        0 => parts.join("-"),
        1 => parts.join("_"),
        2 => parts.join("."),
        3 => parts.iter().map(|p| title(p)).collect::<Vec<_>>().join("-"),
        4 => parts.join("_").to_uppercase(),
        5 => parts
            .iter()
            .enumerate()
            .map(|(i, p)| if i == 0 { p.to_string() } else { title(p) })
            .collect(),
        _ => parts.iter().map(|p| title(p)).collect(),
    }
}

fn name() -> impl Strategy<Value = String> {
    (0..NAMES.len(), any::<u8>()).prop_map(|(i, style)| render(NAMES[i], style))
}

/// Where a secret goes.
#[derive(Debug, Clone)]
enum Place {
    Header(String),
    QueryObject(String, usize),
    UrlQuery(String),
    UrlUserinfo(bool),
    UrlFragment(String),
    Matrix(String),
    PathQuery(String),
    PathParam(String),
    MetadataKey(String),
    MetadataUrl(String),
    FormValue(String),
    /// `name: secret` in the body, inside `levels` JSON documents in strings.
    BodyJson(String, usize, usize),
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        name().prop_map(Place::Header),
        (name(), 0..3usize).prop_map(|(n, d)| Place::QueryObject(n, d)),
        name().prop_map(Place::UrlQuery),
        any::<bool>().prop_map(Place::UrlUserinfo),
        name().prop_map(Place::UrlFragment),
        name().prop_map(Place::Matrix),
        name().prop_map(Place::PathQuery),
        name().prop_map(Place::PathParam),
        name().prop_map(Place::MetadataKey),
        name().prop_map(Place::MetadataUrl),
        name().prop_map(Place::FormValue),
        (name(), 0..=MAX_NESTING + 1, 0..3usize).prop_map(|(n, l, d)| Place::BodyJson(n, l, d)),
    ]
}

/// Harmless text: lower-case letters and digits.
fn cover() -> impl Strategy<Value = String> {
    "[a-z0-9]{0,8}"
}

#[derive(Debug, Clone, Default)]
struct Event {
    request: Request,
    metadata: BTreeMap<String, String>,
}

fn nest(mut v: Value, depth: usize) -> Value {
    for i in 0..depth {
        v = json!({ format!("n{i}"): v });
    }
    v
}

/// An event with every secret of `places` planted, plus harmless fields.
fn plant(places: &[Place], filler: &str) -> Event {
    let mut e = Event::default();
    let mut url_query = vec![format!("page={filler}")];
    let mut url_fragment = Vec::new();
    let mut userinfo = None;
    let mut matrix = Vec::new();
    let mut path_query = vec![format!("q={filler}")];
    let mut path_segments = vec!["r".to_string(), filler.to_string()];
    let mut body = Map::new();
    let mut query = Map::new();
    query.insert("plain".into(), json!(filler));
    e.request
        .headers
        .insert("Accept".into(), format!("text/{filler}"));
    e.metadata.insert("plan".into(), filler.to_string());
    for (n, p) in places.iter().enumerate() {
        let secret = format!("S3CR3T{n}x");
        match p {
            Place::Header(k) => {
                e.request.headers.insert(k.clone(), secret);
            }
            Place::QueryObject(k, d) => {
                query.insert(format!("o{n}"), nest(json!({ k.clone(): secret }), *d));
            }
            Place::UrlQuery(k) => url_query.push(format!("{k}={secret}")),
            Place::UrlUserinfo(with_user) => {
                userinfo = Some(if *with_user {
                    format!("user:{secret}")
                } else {
                    secret
                })
            }
            Place::UrlFragment(k) => url_fragment.push(format!("{k}={secret}")),
            Place::Matrix(k) => matrix.push(format!("{k}={secret}")),
            Place::PathQuery(k) => path_query.push(format!("{k}={secret}")),
            // A route names each parameter once: a second one of the same
            // name is not a request a router could produce.
            Place::PathParam(k) if e.request.path_params.contains_key(k) => {}
            Place::PathParam(k) => {
                path_segments.push(secret.clone());
                e.request.path_params.insert(k.clone(), secret);
            }
            Place::MetadataKey(k) => {
                e.metadata.insert(k.clone(), secret);
            }
            Place::MetadataUrl(k) => {
                e.metadata.insert(
                    format!("m{n}"),
                    format!("see https://h.test/cb?{k}={secret}&x=1 now"),
                );
            }
            Place::FormValue(k) => {
                e.metadata
                    .insert(format!("f{n}"), format!("a={filler}&{k}={secret}"));
            }
            Place::BodyJson(k, levels, d) => {
                let mut v = nest(json!({ k.clone(): secret, "ok": filler }), *d);
                for _ in 0..*levels {
                    v = json!({ "doc": v.to_string() });
                }
                body.insert(format!("b{n}"), v);
            }
        }
    }
    let mut path = format!("/{}", path_segments.join("/"));
    if !matrix.is_empty() {
        path = format!("{path};{}", matrix.join(";"));
    }
    let host = match userinfo {
        Some(u) => format!("{u}@app.test"),
        None => "app.test".into(),
    };
    let mut url = format!("https://{host}{path}?{}", url_query.join("&"));
    if !url_fragment.is_empty() {
        url = format!("{url}#{}", url_fragment.join("&"));
    }
    e.request.url = Some(url);
    e.request.path = Some(format!("{path}?{}", path_query.join("&")));
    e.request.query = Some(query);
    e.request.body = Some(Value::Object(body).to_string());
    e
}

fn redact(r: &Redactor, e: &Event) -> Event {
    let mut out = e.clone();
    r.apply_request(&mut out.request);
    r.apply_metadata(&mut out.metadata);
    out
}

fn dump(e: &Event) -> String {
    format!(
        "{} {:?}",
        serde_json::to_string(&e.request).unwrap_or_default(),
        e.metadata
    )
}

/// Text with the characters URLs, forms and JSON are made of.
fn noisy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9:/?#@;=&%+._ {}\\[\\]\"-]{0,24}",
        Just("https://u:p@h.test/a;b=c?d=e#f=g".to_string()),
        Just(r#"{"token":"x","a":["https://h/?sig=1"]}"#.to_string()),
        Just("a=b&password=c%20d&e".to_string()),
        Just("%5BREDACTED%5D".to_string()),
        Just("[REDACTED]".to_string()),
    ]
}

fn noisy_event() -> impl Strategy<Value = Event> {
    let map = || prop::collection::btree_map("[a-zA-Z_-]{1,12}", noisy(), 0..4);
    (
        (
            prop::option::of(noisy()),
            prop::option::of(noisy()),
            prop::option::of(noisy()),
        ),
        (map(), map(), map(), map()),
    )
        .prop_map(
            |((url, path, body), (headers, params, query, metadata))| Event {
                request: Request {
                    url,
                    path,
                    body,
                    headers,
                    path_params: params,
                    query: Some(query.into_iter().map(|(k, v)| (k, json!(v))).collect()),
                    ..Request::default()
                },
                metadata,
            },
        )
}

fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            // Letters that spell no credential-shaped name.
            prop::collection::btree_map("[bdfhjlmnqrvwxyz]{1,5}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Inserts `key: SECRET-n` at a random object in the tree (wrapping the
/// tree in an object when there is none).
fn plant_key(tree: &mut Value, key: &str, pick: usize, n: usize) {
    let mut objects = Vec::new();
    collect_objects(tree, &mut objects);
    if objects.is_empty() {
        *tree = json!({"wrapped": tree.clone()});
        return plant_key(tree, key, pick, n);
    }
    let target = objects[pick % objects.len()];
    let mut seen = 0;
    insert_at(tree, target, &mut seen, key, n);
}

fn collect_objects(v: &Value, out: &mut Vec<usize>) {
    fn walk(v: &Value, counter: &mut usize, out: &mut Vec<usize>) {
        match v {
            Value::Object(m) => {
                out.push(*counter);
                *counter += 1;
                m.values().for_each(|x| walk(x, counter, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, counter, out)),
            _ => {}
        }
    }
    walk(v, &mut 0, out);
}

fn insert_at(v: &mut Value, target: usize, seen: &mut usize, key: &str, n: usize) -> bool {
    match v {
        Value::Object(m) => {
            if *seen == target {
                m.insert(key.to_string(), json!(format!("SECRET-{n}")));
                return true;
            }
            *seen += 1;
            m.values_mut().any(|x| insert_at(x, target, seen, key, n))
        }
        Value::Array(a) => a.iter_mut().any(|x| insert_at(x, target, seen, key, n)),
        _ => false,
    }
}

const SECRET_KEYS: &[&str] = &[
    "password",
    "Password",
    "user_password",
    "api-key",
    "X-API-KEY",
    "access_token",
    "clientSecret",
    "Authorization",
    "X-Session-Id",
    "code",
];

fn secret_key() -> impl Strategy<Value = String> {
    prop::sample::select(SECRET_KEYS).prop_map(str::to_string)
}

/// The reference: every planted key is masked; the tree's own keys spell
/// nothing credential-shaped.
fn mask_all(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) {
                    *x = json!(MASK);
                } else {
                    mask_all(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_all),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Wherever a secret sits under a credential-shaped name (or in a URL's
    /// userinfo), and however that name is spelled, it does not come out.
    #[test]
    fn planted_secrets_never_survive(
        places in prop::collection::vec(place(), 1..6),
        filler in cover(),
    ) {
        let event = plant(&places, &filler);
        let out = dump(&redact(&Redactor::default(), &event));
        prop_assert!(!out.contains("S3CR3T"), "{out}");
        prop_assert!(out.contains(&filler), "harmless values are kept: {out}");
    }

    /// Redacting a redacted event changes nothing.
    #[test]
    fn redaction_is_idempotent(event in noisy_event()) {
        let r = Redactor::default();
        let once = redact(&r, &event);
        let twice = redact(&r, &once);
        prop_assert_eq!(dump(&once), dump(&twice));
    }

    /// However deep a secret key sits in a JSON body, its value is gone
    /// and everything else is kept.
    #[test]
    fn secrets_never_survive_in_json_bodies(
        mut tree in json_tree(),
        keys in prop::collection::vec((secret_key(), any::<usize>()), 1..4),
    ) {
        for (n, (key, pick)) in keys.iter().enumerate() {
            plant_key(&mut tree, key, *pick, n);
        }
        let out = Redactor::default().body(tree.to_string());
        prop_assert!(!out.contains("SECRET-"), "{out}");
        let parsed: Value = serde_json::from_str(&out).expect("still JSON");
        let mut before = tree.clone();
        mask_all(&mut before);
        prop_assert_eq!(parsed, before);
    }

    /// JSON that no rule matches keeps its values, and a JSON body with no
    /// match keeps its bytes.
    #[test]
    fn unmatched_json_is_kept(tree in json_tree()) {
        let body = json!({ "root": tree }).to_string();
        prop_assert_eq!(Redactor::default().body(body.clone()), body);
    }
}
