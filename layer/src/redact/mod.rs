//! Redaction: rules that mask or drop sensitive values in an event's
//! `request.body`, `request.query`, `request.url` query string and
//! `request.headers` before the event leaves the process.
//!
//! A rule is `<mask|drop> [<scope>:]<key pattern>`; rules are separated by
//! commas, and the word `defaults` stands for [`DEFAULT_RULES`]. Scopes are
//! `body`, `query` (the `request.query` object and the URL's query string) and
//! `headers`; without a scope a rule applies everywhere. Keys are compared
//! after folding case and removing everything but letters and digits, so
//! `api_key` also matches `apiKey`, `API-KEY` and `x-api-key` with the pattern
//! `*apikey`. A pattern may start and/or end with `*`.
//!
//! In a JSON body a rule matches keys at any depth; a matched object or array
//! is replaced whole. Form-encoded bodies are redacted pair by pair. A body
//! that is neither is dropped (masked whole) unless the policy says to keep it,
//! because keyed rules cannot see inside it.

mod rules;

use serde_json::{Map, Value};
use trailhouse_schemas::event::Request;
use trailhouse_schemas::AuditEvent;

pub(crate) use rules::fold;
pub use rules::{Action, OpaqueBody, Rule, RuleError, Rules, Scope};

/// What a masked value becomes.
pub const MASK: &str = "[REDACTED]";

/// The rules applied when nothing else is configured.
pub const DEFAULT_RULES: &str = "mask authorization, mask proxy-authorization, mask cookie, \
     mask set-cookie, mask password, mask *password, mask passwd, mask token, mask *token, \
     mask secret, mask *secret, mask api_key, mask *apikey";

/// Applies redaction rules to events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redactor {
    rules: Vec<Rule>,
    opaque_body: OpaqueBody,
}

impl Default for Redactor {
    /// [`DEFAULT_RULES`], opaque bodies masked.
    fn default() -> Self {
        Redactor::new(Rules::defaults(), OpaqueBody::Mask)
    }
}

impl Redactor {
    /// Applies `rules`, and `opaque_body` to bodies the rules cannot see into.
    pub fn new(rules: Rules, opaque_body: OpaqueBody) -> Redactor {
        Redactor {
            rules: rules.0,
            opaque_body,
        }
    }

    /// Parses a rule list (see the module docs) and the opaque-body policy.
    pub fn parse(rules: &str, opaque_body: &str) -> Result<Redactor, RuleError> {
        Ok(Redactor::new(rules.parse()?, opaque_body.parse()?))
    }

    /// The rules in force, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// No rules at all: events pass unchanged (opaque bodies included).
    pub fn none() -> Redactor {
        Redactor {
            rules: Vec::new(),
            opaque_body: OpaqueBody::Keep,
        }
    }

    fn action(&self, scope: Scope, key: &str) -> Option<Action> {
        let folded = fold(key);
        self.rules.iter().find_map(|r| r.action_for(scope, &folded))
    }

    /// Redacts an event in place.
    pub fn apply(&self, event: &mut AuditEvent) {
        self.apply_request(&mut event.request);
    }

    /// Redacts the request part of an event in place.
    pub fn apply_request(&self, request: &mut Request) {
        if self.rules.is_empty() && self.opaque_body == OpaqueBody::Keep {
            return;
        }
        request.headers = std::mem::take(&mut request.headers)
            .into_iter()
            .filter_map(|(k, v)| match self.action(Scope::Headers, &k) {
                None => Some((k, v)),
                Some(Action::Mask) => Some((k, MASK.to_string())),
                Some(Action::Drop) => None,
            })
            .collect();
        if let Some(query) = request.query.as_mut() {
            self.object(Scope::Query, query);
        }
        if let Some(url) = request.url.as_mut() {
            if let Some((base, qs)) = url.split_once('?') {
                let (qs, fragment) = match qs.split_once('#') {
                    Some((q, f)) => (q, Some(f)),
                    None => (qs, None),
                };
                let mut redacted = format!("{base}?{}", self.form(Scope::Query, qs));
                if let Some(f) = fragment {
                    redacted.push('#');
                    redacted.push_str(f);
                }
                *url = redacted;
            }
        }
        if let Some(body) = request.body.take() {
            request.body = Some(self.body(body));
        }
    }

    /// Redacts a body: JSON, then form encoding, else the opaque policy.
    pub fn body(&self, body: String) -> String {
        let trimmed = body.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(mut value) = serde_json::from_str::<Value>(&body) {
                if self.value(Scope::Body, &mut value) {
                    return serde_json::to_string(&value).unwrap_or_else(|_| MASK.to_string());
                }
                return body;
            }
        } else if looks_form_encoded(&body) {
            return self.form(Scope::Body, &body);
        }
        match self.opaque_body {
            OpaqueBody::Keep => body,
            OpaqueBody::Mask if body.is_empty() => body,
            OpaqueBody::Mask => MASK.to_string(),
        }
    }

    /// Redacts inside a JSON value; returns whether anything changed.
    fn value(&self, scope: Scope, value: &mut Value) -> bool {
        match value {
            Value::Object(map) => self.object(scope, map),
            Value::Array(items) => {
                // Every item, not just up to the first change.
                let mut changed = false;
                for v in items.iter_mut() {
                    changed |= self.value(scope, v);
                }
                changed
            }
            _ => false,
        }
    }

    fn object(&self, scope: Scope, map: &mut Map<String, Value>) -> bool {
        let mut changed = false;
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            match self.action(scope, &key) {
                Some(Action::Drop) => {
                    map.remove(&key);
                    changed = true;
                }
                Some(Action::Mask) => {
                    map.insert(key, Value::String(MASK.to_string()));
                    changed = true;
                }
                None => {
                    if let Some(v) = map.get_mut(&key) {
                        changed |= self.value(scope, v);
                    }
                }
            }
        }
        changed
    }

    /// Redacts `a=b&c=d`, keeping the order and encoding of untouched pairs.
    fn form(&self, scope: Scope, qs: &str) -> String {
        let mut out: Vec<String> = Vec::new();
        for pair in qs.split('&') {
            let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let key: String = form_urlencoded::parse(raw_key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            match self.action(scope, &key) {
                None => out.push(pair.to_string()),
                Some(Action::Drop) => {}
                Some(Action::Mask) => out.push(format!("{raw_key}={}", "%5BREDACTED%5D")),
            }
        }
        out.join("&")
    }
}

/// `a=b&c=d` without whitespace: what a form body or query string looks like.
fn looks_form_encoded(body: &str) -> bool {
    !body.is_empty()
        && body.contains('=')
        && !body.contains(char::is_whitespace)
        && body
            .split('&')
            .all(|pair| pair.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn request(body: &str) -> Request {
        Request {
            url: Some("https://x.test/login?user=bo&access_token=abc123&page=2#top".into()),
            query: json!({"user": "bo", "filter": {"apiKey": "k-1", "q": "x"}, "Token": "t-2"})
                .as_object()
                .cloned(),
            headers: BTreeMap::from([
                ("Authorization".to_string(), "Bearer sekrit".to_string()),
                ("Cookie".to_string(), "sid=s3".to_string()),
                ("X-Api-Key".to_string(), "k-3".to_string()),
                ("Accept".to_string(), "application/json".to_string()),
            ]),
            body: Some(body.to_string()),
            ..Request::default()
        }
    }

    #[test]
    fn defaults_mask_every_listed_key_everywhere() {
        let r = Redactor::default();
        let mut rq = request(
            r#"{"user":"bo","password":"hunter2","nested":[{"client_secret":"cs","ok":1}],"auth":{"refresh_token":{"v":"rt"}}}"#,
        );
        r.apply_request(&mut rq);
        let text = serde_json::to_string(&rq).expect("json");
        for secret in [
            "sekrit", "s3", "k-1", "k-2", "k-3", "t-2", "abc123", "hunter2", "cs", "rt",
        ] {
            assert!(!text.contains(secret), "{secret} survived: {text}");
        }
        assert_eq!(rq.headers["Accept"], "application/json");
        assert_eq!(rq.headers["Authorization"], MASK);
        assert_eq!(
            rq.url.as_deref(),
            Some("https://x.test/login?user=bo&access_token=%5BREDACTED%5D&page=2#top")
        );
        let body: Value = serde_json::from_str(rq.body.as_deref().unwrap_or("")).expect("body");
        assert_eq!(body["user"], "bo");
        assert_eq!(body["nested"][0]["ok"], 1);
        assert_eq!(body["auth"]["refresh_token"], MASK);
        assert_eq!(
            rq.query.as_ref().map(|q| q["filter"]["q"].clone()),
            Some(json!("x"))
        );
    }

    #[test]
    fn drop_rules_and_scopes() {
        let r = Redactor::parse(
            "drop headers:accept, mask body:user, drop query:user",
            "keep",
        )
        .expect("rules");
        let mut rq = request(r#"{"user":"bo","password":"p"}"#);
        r.apply_request(&mut rq);
        assert!(!rq.headers.contains_key("Accept"));
        assert_eq!(
            rq.headers["Authorization"], "Bearer sekrit",
            "no default rules"
        );
        assert_eq!(
            rq.body.as_deref(),
            Some(r#"{"password":"p","user":"[REDACTED]"}"#)
        );
        assert_eq!(
            rq.query.as_ref().map(|q| q.contains_key("user")),
            Some(false)
        );
        assert_eq!(
            rq.url.as_deref(),
            Some("https://x.test/login?access_token=abc123&page=2#top")
        );
    }

    #[test]
    fn form_and_opaque_bodies() {
        let r = Redactor::default();
        assert_eq!(
            r.body("user=bo&password=x%20y".into()),
            "user=bo&password=%5BREDACTED%5D"
        );
        assert_eq!(r.body("plain text with token=abc".into()), MASK);
        assert_eq!(r.body("{truncated json".into()), MASK);
        assert_eq!(r.body(String::new()), "");
        let keep = Redactor::parse("defaults", "keep").expect("rules");
        assert_eq!(keep.body("plain text".into()), "plain text");
        let untouched = r#"{ "a": 1 }"#;
        assert_eq!(
            r.body(untouched.into()),
            untouched,
            "unchanged JSON keeps its bytes"
        );
    }

    fn secret_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("password".to_string()),
            Just("Password".to_string()),
            Just("user_password".to_string()),
            Just("api-key".to_string()),
            Just("X-API-KEY".to_string()),
            Just("access_token".to_string()),
            Just("clientSecret".to_string()),
            Just("Authorization".to_string()),
        ]
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
                prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Inserts `key: SECRET-n` at a random object in the tree (wrapping the
    /// tree in an object when there is none).
    fn plant(tree: &mut Value, key: &str, pick: usize, n: usize) {
        let mut objects = Vec::new();
        collect_objects(tree, &mut objects);
        if objects.is_empty() {
            *tree = json!({"wrapped": tree.clone()});
            return plant(tree, key, pick, n);
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

    proptest! {
        /// However deep a secret key sits in a JSON body, its value is gone
        /// and everything else is kept.
        #[test]
        fn secrets_never_survive_in_json_bodies(
            mut tree in json_tree(),
            keys in prop::collection::vec((secret_key(), any::<usize>()), 1..4),
        ) {
            for (n, (key, pick)) in keys.iter().enumerate() {
                plant(&mut tree, key, *pick, n);
            }
            let out = Redactor::default().body(tree.to_string());
            prop_assert!(!out.contains("SECRET-"), "{out}");
            let parsed: Value = serde_json::from_str(&out).expect("still JSON");
            let mut before = tree.clone();
            mask_all(&mut before);
            prop_assert_eq!(parsed, before);
        }
    }

    /// The reference: every object key that folds to a secret name is masked.
    fn mask_all(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let f = fold(k);
                    let secret = ["password", "apikey", "token", "secret", "authorization"]
                        .iter()
                        .any(|s| f.ends_with(s));
                    if secret {
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
}
