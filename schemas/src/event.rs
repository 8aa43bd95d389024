//! The canonical audit event and its validation.
//!
//! [`EventInput`] is what producers send as JSON: everything optional, so that
//! a missing or malformed field can be reported by name. [`validate`] turns it
//! into an [`AuditEvent`], the one shape every other part of the pipeline uses.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Limits applied by [`validate`]; shared with the ingest service docs.
pub mod limits {
    /// Maximum length of identifiers such as `org_id`, `actor.id`, `resource.id`.
    pub const ID_LEN: usize = 256;
    /// Maximum length of short free text (names, descriptions, emails, user agent).
    pub const TEXT_LEN: usize = 2_048;
    /// Maximum length of `request.url` and `request.path`.
    pub const URL_LEN: usize = 8_192;
    /// Maximum length of `request.body`.
    pub const BODY_LEN: usize = 256 * 1024;
    /// Maximum number of entries in `metadata`, `request.headers`, `request.path_params`.
    pub const MAP_ENTRIES: usize = 128;
    /// Maximum length of a value in `metadata`, `request.headers`, `request.path_params`.
    pub const MAP_VALUE_LEN: usize = 8_192;
    /// Maximum serialized size of `request.query`.
    pub const QUERY_LEN: usize = 16 * 1024;
    /// How far in the future `created_at` may be (clock skew allowance), in seconds.
    pub const FUTURE_SKEW_SECS: i64 = 24 * 3600;
}

/// Who performed the action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// e.g. `user`, `api_key`, `service`, `web_app`, `slack`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How the request was authenticated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// e.g. `client`, `clientCredentials`, `signedPayload`, `workbench`, `api_key`, `jwt`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// What was done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What it was done to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The HTTP request that carried the action, when there was one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Query parameters as a JSON object (values may be strings or arrays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub path_params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Request {
    /// True when no field is set, so the whole object can be omitted.
    pub fn is_empty(&self) -> bool {
        *self == Request::default()
    }
}

/// A validated audit event: the one shape the pipeline carries from ingest to query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: Uuid,
    pub org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_name: Option<String>,
    #[serde(with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339_micros")]
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub actor: Actor,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub action: Action,
    #[serde(default)]
    pub resource: Resource,
    #[serde(default, skip_serializing_if = "Request::is_empty")]
    pub request: Request,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Days the event is kept: its org's retention class, set by the ingest
    /// service from configuration (never taken from the client's input).
    /// Absent means the deployment's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u16>,
}

/// Timestamps as RFC 3339 UTC with exactly six fractional digits.
pub mod rfc3339_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// What a producer sends: the canonical event with every field optional, so
/// that validation can name what is missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub org_id: Option<String>,
    #[serde(default)]
    pub environment_id: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub workspace_name: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub actor: Option<Actor>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub action: Option<ActionInput>,
    #[serde(default)]
    pub resource: Option<Resource>,
    #[serde(default)]
    pub request: Option<Request>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `action` as sent: `type` may be missing so that validation can say so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One reason an event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the offending field, e.g. `action.type`; empty for the whole event.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// Parses one JSON event, reporting type errors with the path of the field.
pub fn parse_input(value: serde_json::Value) -> Result<EventInput, FieldError> {
    serde_path_to_error::deserialize::<_, EventInput>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// Where validation gets its clock and ids from, so that it stays a pure function.
pub trait Stamp {
    fn now(&self) -> DateTime<Utc>;
    fn new_id(&self, at: DateTime<Utc>) -> Uuid;
}

/// The production stamp: wall clock and UUIDv7.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemStamp;

impl Stamp for SystemStamp {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn new_id(&self, at: DateTime<Utc>) -> Uuid {
        let micros = at.timestamp_micros().max(0) as u64;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            micros / 1_000_000,
            ((micros % 1_000_000) * 1_000) as u32,
        );
        Uuid::new_v7(ts)
    }
}

struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn text(&mut self, field: &str, value: &Option<String>, max: usize) -> Option<String> {
        let v = value.as_ref()?;
        if v.chars().count() > max {
            self.errors.push(FieldError::new(
                field,
                format!("longer than {max} characters"),
            ));
            return None;
        }
        if v.is_empty() {
            return None;
        }
        Some(v.clone())
    }

    fn ident(&mut self, field: &str, value: &Option<String>) -> Option<String> {
        let v = self.text(field, value, limits::ID_LEN)?;
        if v.chars().any(char::is_control) {
            self.errors.push(FieldError::new(
                field,
                "must not contain control characters",
            ));
            return None;
        }
        Some(v)
    }

    fn map(&mut self, field: &str, map: &BTreeMap<String, String>) {
        if map.len() > limits::MAP_ENTRIES {
            self.errors.push(FieldError::new(
                field,
                format!("more than {} entries", limits::MAP_ENTRIES),
            ));
        }
        for (k, v) in map {
            if k.is_empty() || k.len() > limits::ID_LEN {
                self.errors.push(FieldError::new(
                    field,
                    format!("keys must be 1 to {} bytes", limits::ID_LEN),
                ));
            } else if v.len() > limits::MAP_VALUE_LEN {
                self.errors.push(FieldError::new(
                    format!("{field}.{k}"),
                    format!("longer than {} bytes", limits::MAP_VALUE_LEN),
                ));
            }
        }
    }
}

/// Parses an RFC 3339 timestamp with at most microsecond precision.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("not an RFC 3339 timestamp ({e})"))?
        .with_timezone(&Utc);
    if t.timestamp_subsec_nanos() % 1_000 != 0 {
        return Err("more precise than microseconds".into());
    }
    if t.timestamp() < 0 {
        return Err("before 1970-01-01".into());
    }
    Ok(t)
}

/// Formats a timestamp the way every API of ours writes it.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Validates one event. `received_at` is stamped from `stamp`, and so is
/// `created_at` when absent; a missing `id` becomes a UUIDv7 of `created_at`.
pub fn validate(input: EventInput, stamp: &impl Stamp) -> Result<AuditEvent, Vec<FieldError>> {
    let mut c = Checker { errors: Vec::new() };
    let now = stamp.now();

    let org_id = c.ident("org_id", &input.org_id);
    if org_id.is_none() && input.org_id.as_deref().is_none_or(str::is_empty) {
        c.errors.push(FieldError::new("org_id", "is required"));
    }

    let created_at = match input.created_at.as_deref() {
        None => Some(now),
        Some(s) => match parse_timestamp(s) {
            Ok(t) if (t - now).num_seconds() > limits::FUTURE_SKEW_SECS => {
                c.errors.push(FieldError::new(
                    "created_at",
                    "more than 24 hours in the future",
                ));
                None
            }
            Ok(t) => Some(t),
            Err(reason) => {
                c.errors.push(FieldError::new("created_at", reason));
                None
            }
        },
    };

    let id = match input.id.as_deref() {
        None => None,
        Some(s) => match Uuid::parse_str(s) {
            Ok(id) if !id.is_nil() => Some(id),
            Ok(_) => {
                c.errors
                    .push(FieldError::new("id", "must not be the nil UUID"));
                None
            }
            Err(_) => {
                c.errors.push(FieldError::new("id", "not a UUID"));
                None
            }
        },
    };

    let environment_id = c.ident("environment_id", &input.environment_id);
    let workspace_id = c.ident("workspace_id", &input.workspace_id);
    let workspace_name = c.text("workspace_name", &input.workspace_name, limits::TEXT_LEN);
    let source = c.ident("source", &input.source);

    let a = input.actor.unwrap_or_default();
    let actor = Actor {
        kind: c.ident("actor.type", &a.kind),
        id: c.ident("actor.id", &a.id),
        email: c.text("actor.email", &a.email, limits::TEXT_LEN),
        name: c.text("actor.name", &a.name, limits::TEXT_LEN),
    };

    let au = input.auth.unwrap_or_default();
    let auth = Auth {
        kind: c.ident("auth.type", &au.kind),
        client_id: c.ident("auth.client_id", &au.client_id),
        sub: c.ident("auth.sub", &au.sub),
        app_client_id: c.ident("auth.app_client_id", &au.app_client_id),
        account_id: c.ident("auth.account_id", &au.account_id),
    };

    let action = match input.action {
        None => {
            c.errors.push(FieldError::new("action", "is required"));
            None
        }
        Some(ac) => {
            let kind = c.ident("action.type", &ac.kind);
            if kind.is_none() && ac.kind.as_deref().is_none_or(str::is_empty) {
                c.errors.push(FieldError::new("action.type", "is required"));
            }
            let description = c.text("action.description", &ac.description, limits::TEXT_LEN);
            kind.map(|kind| Action { kind, description })
        }
    };

    let r = input.resource.unwrap_or_default();
    let resource = Resource {
        kind: c.ident("resource.type", &r.kind),
        id: c.ident("resource.id", &r.id),
        name: c.text("resource.name", &r.name, limits::TEXT_LEN),
    };

    let rq = input.request.unwrap_or_default();
    let method = c
        .ident("request.method", &rq.method)
        .map(|m| m.to_ascii_uppercase());
    if let Some(m) = &method {
        if m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            c.errors.push(FieldError::new(
                "request.method",
                "not an HTTP method token",
            ));
        }
    }
    if let Some(status) = rq.status {
        if !(100..=599).contains(&status) {
            c.errors.push(FieldError::new(
                "request.status",
                "must be between 100 and 599",
            ));
        }
    }
    if let Some(d) = rq.duration_ms {
        if !d.is_finite() || d < 0.0 {
            c.errors.push(FieldError::new(
                "request.duration_ms",
                "must be a finite number >= 0",
            ));
        }
    }
    if let Some(q) = &rq.query {
        if serde_json::to_string(q).map_or(0, |s| s.len()) > limits::QUERY_LEN {
            c.errors.push(FieldError::new(
                "request.query",
                format!("larger than {} bytes", limits::QUERY_LEN),
            ));
        }
    }
    c.map("request.path_params", &rq.path_params);
    c.map("request.headers", &rq.headers);
    let request = Request {
        method,
        url: c.text("request.url", &rq.url, limits::URL_LEN),
        path: c.text("request.path", &rq.path, limits::URL_LEN),
        status: rq.status,
        duration_ms: rq.duration_ms,
        ip: c.ident("request.ip", &rq.ip),
        user_agent: c.text("request.user_agent", &rq.user_agent, limits::TEXT_LEN),
        query: rq.query.filter(|q| !q.is_empty()),
        path_params: rq.path_params,
        headers: rq.headers,
        body: c.text("request.body", &rq.body, limits::BODY_LEN),
    };

    let metadata = input.metadata.unwrap_or_default();
    c.map("metadata", &metadata);

    match (org_id, created_at, action) {
        (Some(org_id), Some(created_at), Some(action)) if c.errors.is_empty() => Ok(AuditEvent {
            id: id.unwrap_or_else(|| stamp.new_id(created_at)),
            org_id,
            retention_days: None,
            environment_id,
            workspace_id,
            workspace_name,
            created_at,
            received_at: now,
            actor,
            auth,
            source,
            action,
            resource,
            request,
            metadata,
        }),
        _ => Err(c.errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) struct FixedStamp;
    impl Stamp for FixedStamp {
        fn now(&self) -> DateTime<Utc> {
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        }
        fn new_id(&self, _: DateTime<Utc>) -> Uuid {
            Uuid::from_u128(42)
        }
    }

    fn check(v: serde_json::Value) -> Result<AuditEvent, Vec<FieldError>> {
        let input = parse_input(v).map_err(|e| vec![e])?;
        validate(input, &FixedStamp)
    }

    fn fields(r: Result<AuditEvent, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn minimal_event_gets_id_and_timestamps() {
        let e = check(json!({"org_id": "acme", "action": {"type": "user.login"}})).expect("valid");
        assert_eq!(e.id, Uuid::from_u128(42));
        assert_eq!(e.created_at, FixedStamp.now());
        assert_eq!(e.received_at, FixedStamp.now());
        assert_eq!(e.action.kind, "user.login");
    }

    #[test]
    fn client_ids_are_kept() {
        let id = "0190f3e1-8c5a-7cc2-9b5e-2f3d4c5b6a79";
        let e = check(json!({"id": id, "org_id": "a", "action": {"type": "x"}})).expect("valid");
        assert_eq!(e.id.to_string(), id);
    }

    #[test]
    fn missing_required_fields_are_named() {
        assert_eq!(fields(check(json!({}))), vec!["org_id", "action"]);
        assert_eq!(
            fields(check(json!({"org_id": "", "action": {}}))),
            vec!["org_id", "action.type"]
        );
    }

    #[test]
    fn type_errors_carry_the_path() {
        assert_eq!(
            fields(check(
                json!({"org_id": "a", "action": {"type": "x"}, "request": {"status": "200"}})
            )),
            vec!["request.status"]
        );
        assert_eq!(
            fields(check(
                json!({"org_id": "a", "action": {"type": "x"}, "bogus": 1})
            )),
            vec!["bogus"]
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let cases = [
            (json!({"id": "nope"}), "id"),
            (json!({"id": "00000000-0000-0000-0000-000000000000"}), "id"),
            (json!({"created_at": "yesterday"}), "created_at"),
            (
                json!({"created_at": "2026-01-01T00:00:00.1234567Z"}),
                "created_at",
            ),
            (json!({"created_at": "2030-01-01T00:00:00Z"}), "created_at"),
            (json!({"request": {"status": 42}}), "request.status"),
            (
                json!({"request": {"duration_ms": -1.0}}),
                "request.duration_ms",
            ),
            (json!({"request": {"method": "GE T"}}), "request.method"),
            (json!({"actor": {"id": "a\u{0}b"}}), "actor.id"),
        ];
        for (extra, field) in cases {
            let mut v = json!({"org_id": "a", "action": {"type": "x"}});
            for (k, val) in extra.as_object().into_iter().flatten() {
                v[k] = val.clone();
            }
            assert_eq!(fields(check(v.clone())), vec![field], "{v}");
        }
    }

    #[test]
    fn timestamps_keep_microseconds_and_normalise_offsets() {
        let e = check(json!({"org_id": "a", "action": {"type": "x"},
            "created_at": "2026-01-01T01:00:00.123456+01:00"}))
        .expect("valid");
        assert_eq!(
            format_timestamp(&e.created_at),
            "2026-01-01T00:00:00.123456Z"
        );
    }

    #[test]
    fn canonical_json_round_trips() {
        let e = check(
            json!({"org_id": "a", "action": {"type": "x", "description": "d"},
            "request": {"method": "get", "query": {"q": ["1", "2"]}, "headers": {"x": "y"}},
            "metadata": {"k": "v"}}),
        )
        .expect("valid");
        assert_eq!(e.request.method.as_deref(), Some("GET"));
        let text = serde_json::to_string(&e).expect("serialize");
        let back: AuditEvent = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, e);
    }
}
