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
    serde_path_to_error::deserialize::<_, EventInput>(value)
        .map_err(|e| field_error(&e, e.inner().to_string()))
}

/// The field a path-tracked error is about ("" for the event itself).
fn field_error<E>(e: &serde_path_to_error::Error<E>, reason: String) -> FieldError {
    let path = e.path().to_string();
    FieldError::new(if path == "." { String::new() } else { path }, reason)
}

/// Parses one JSON event from its text, straight into the input type (no
/// intermediate `Value`: the ingest hot path). Errors are those of
/// [`parse_input`]: the field's path and serde's reason, without a text
/// position. A repeated field name is an error here (the `Value` path keeps
/// the last one): ambiguous input is refused rather than guessed at.
pub fn parse_input_json(text: &str) -> Result<EventInput, FieldError> {
    // Most events are valid: parse without tracking the path (a third of
    // the cost), and parse again with it only to explain an error.
    if let Ok(input) = serde_json::from_str::<EventInput>(text) {
        return Ok(input);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let input = serde_path_to_error::deserialize::<_, EventInput>(&mut de)
        .map_err(|e| field_error(&e, without_position(e.inner())))?;
    de.end()
        .map_err(|e| FieldError::new("", without_position(&e)))?;
    Ok(input)
}

/// serde_json's message without the " at line L column C" it appends when
/// reading text (the `Value` path has no position).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) if e.line() > 0 => message.to_string(),
        _ => text,
    }
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

mod validate;

pub use validate::{format_timestamp, parse_timestamp, validate};

#[cfg(test)]
mod parse_tests {
    use super::*;

    /// The text path and the `Value` path agree on what they accept and on
    /// every error, field and reason (but for repeated fields).
    #[test]
    fn text_and_value_parsing_agree() {
        let cases = [
            r#"{"org_id":"acme","action":{"type":"user.login"}}"#,
            r#"{"org_id":"acme","action":{"type":"x"},"metadata":{"k":"v"},"created_at":"2026-01-01T00:00:00Z"}"#,
            r#"{"org_id":7}"#,
            r#"{"org_id":"a","action":{"type":1}}"#,
            r#"{"org_id":"a","bogus":true}"#,
            r#"{"org_id":"a","metadata":{"n":1}}"#,
            r#"{"org_id":"a","actor":{"id":["x"]}}"#,
            r#"{"org_id":"a","request":{"headers":{"a":null}}}"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"42"#,
            r#"null"#,
            r#"{}"#,
        ];
        for text in cases {
            let value: serde_json::Value = serde_json::from_str(text).expect("json");
            assert_eq!(parse_input_json(text), parse_input(value), "{text}");
        }
    }

    #[test]
    fn a_repeated_field_is_refused() {
        let e = parse_input_json(r#"{"org_id":"a","org_id":"b"}"#).expect_err("refused");
        assert!(e.reason.contains("duplicate field `org_id`"), "{e}");
    }
}
