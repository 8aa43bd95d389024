//! A stream: what it delivers (filter, masks), where (its destination), its
//! secrets and its control state (paused, replay, test). Pure: the API's
//! JSON in, validated, and the views of a stream that never show a secret.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::mask::Mask;

/// Streams one org may have.
pub const MAX_STREAMS_PER_ORG: usize = 25;
/// Consecutive failed deliveries after which a stream pauses itself, unless set.
pub const DEFAULT_MAX_FAILURES: u32 = 20;
/// The longest stream name.
pub const NAME_LEN: usize = 128;
/// The longest filter text.
pub const FILTER_LEN: usize = 4096;
/// Signing secrets kept at once: the current and the one before it.
pub const SIGNING_SECRETS: usize = 2;

/// How a webhook body holds a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchFormat {
    /// One JSON event per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// One JSON array of events (`application/json`).
    JsonArray,
}

fn yes() -> bool {
    true
}

/// Where a stream delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// HTTPS POST of each batch, signed with the stream's signing secrets.
    Webhook {
        url: String,
        #[serde(default)]
        format: BatchFormat,
        #[serde(default = "yes")]
        gzip: bool,
    },
    /// Splunk HTTP Event Collector (`/services/collector/event`); the HEC
    /// token is the stream's credential.
    Splunk {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sourcetype: Option<String>,
    },
    /// Datadog logs intake (`/api/v2/logs`); the API key is the credential.
    Datadog {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
    },
    /// NDJSON.gz objects under a prefix: `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`, or (when the
    /// deployment allows it) `file:///directory`.
    ObjectStore { url: String },
    /// A topic on the tenant's own Kafka cluster, keyed by org.
    Kafka { brokers: String, topic: String },
}

impl Destination {
    /// The destination's kind, as a metric label and in the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Webhook { .. } => "webhook",
            Destination::Splunk { .. } => "splunk",
            Destination::Datadog { .. } => "datadog",
            Destination::ObjectStore { .. } => "object_store",
            Destination::Kafka { .. } => "kafka",
        }
    }

    /// Whether the destination needs a credential (token or API key).
    pub fn needs_credential(&self) -> bool {
        matches!(
            self,
            Destination::Splunk { .. } | Destination::Datadog { .. }
        )
    }

    /// The most events one delivery may carry.
    pub fn max_batch(&self) -> usize {
        match self {
            // The logs intake takes at most 1,000 entries per request.
            Destination::Datadog { .. } => 1000,
            Destination::ObjectStore { .. } => 10_000,
            _ => 500,
        }
    }
}

/// Which destinations a deployment accepts beyond public HTTPS and cloud
/// object stores (development and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    /// `http://` URLs.
    pub http: bool,
    /// Loopback, private and link-local addresses given as IP literals or `localhost`.
    pub private: bool,
    /// `file://` object stores.
    pub local_files: bool,
    /// Cloud object store URLs a stream may write under (e.g.
    /// `s3://audit-exports/`): the streamer writes with its own cloud
    /// identity, so a tenant must not name any bucket it can reach. Empty:
    /// no cloud object stores.
    pub object_prefixes: Vec<String>,
}

/// Why a stream definition is refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Why a stream is not delivering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub reason: String,
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub at: DateTime<Utc>,
    /// Paused by the streamer after failures (not by a user).
    pub automatic: bool,
}

/// A requested re-delivery of the events created in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// Increases with each request, so the streamer acts on each once.
    pub id: u64,
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub from: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

/// What the API never returns.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// Webhook signing secrets, newest first; each one is valid.
    #[serde(default)]
    pub signing: Vec<String>,
    /// Splunk HEC token or Datadog API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Key of the masks' keyed hashes.
    pub salt: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

/// A stream as stored (one JSON document per version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub id: Uuid,
    pub org_id: String,
    pub name: String,
    pub destination: Destination,
    /// The native API's filter parameters, e.g. `action=user.login&status_min=400`.
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub masks: Vec<Mask>,
    pub max_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
    /// Test deliveries requested so far.
    #[serde(default)]
    pub tests: u64,
    pub secrets: Secrets,
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "trailhouse_schemas::event::rfc3339_micros")]
    pub updated_at: DateTime<Utc>,
}

/// A create (`POST`) or update (`PATCH`) body: on update, absent fields keep
/// their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInput {
    pub name: Option<String>,
    pub destination: Option<Destination>,
    pub filter: Option<String>,
    pub masks: Option<Vec<Mask>>,
    pub max_failures: Option<u32>,
    /// Splunk HEC token or Datadog API key (write-only).
    pub credential: Option<String>,
}

/// A random secret: 32 bytes, hex, with a prefix that says what it is.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

impl Stream {
    /// A new stream of `org` from a create body.
    pub fn create(
        org: &str,
        input: StreamInput,
        allow: &Allow,
        now: DateTime<Utc>,
    ) -> Result<Stream, SpecError> {
        let name = input
            .name
            .clone()
            .ok_or_else(|| bad("name", "is required"))?;
        let destination = input
            .destination
            .clone()
            .ok_or_else(|| bad("destination", "is required"))?;
        let signing = match destination {
            Destination::Webhook { .. } => vec![new_secret("whsec_")],
            _ => Vec::new(),
        };
        let mut s = Stream {
            id: Uuid::now_v7(),
            org_id: org.to_string(),
            name,
            destination,
            filter: String::new(),
            masks: Vec::new(),
            max_failures: DEFAULT_MAX_FAILURES,
            paused: None,
            replay: None,
            tests: 0,
            secrets: Secrets {
                signing,
                credential: None,
                salt: new_secret(""),
            },
            created_at: now,
            updated_at: now,
        };
        s.apply(input, allow, now)?;
        Ok(s)
    }

    /// Applies an update body and validates the result.
    pub fn apply(
        &mut self,
        input: StreamInput,
        allow: &Allow,
        now: DateTime<Utc>,
    ) -> Result<(), SpecError> {
        if let Some(n) = input.name {
            self.name = n;
        }
        if let Some(d) = input.destination {
            if matches!(d, Destination::Webhook { .. }) && self.secrets.signing.is_empty() {
                self.secrets.signing = vec![new_secret("whsec_")];
            }
            if d.kind() != self.destination.kind() && input.credential.is_none() {
                self.secrets.credential = None;
            }
            self.destination = d;
        }
        if let Some(f) = input.filter {
            self.filter = f;
        }
        if let Some(m) = input.masks {
            self.masks = m;
        }
        if let Some(n) = input.max_failures {
            self.max_failures = n;
        }
        if let Some(c) = input.credential {
            self.secrets.credential = Some(c);
        }
        self.updated_at = now;
        self.validate(allow)
    }

    /// The rules on every field.
    pub fn validate(&self, allow: &Allow) -> Result<(), SpecError> {
        let n = self.name.trim();
        if n.is_empty() || self.name.chars().count() > NAME_LEN {
            return Err(bad(
                "name",
                format!("must be 1 to {NAME_LEN} characters, not only spaces"),
            ));
        }
        if self.filter.len() > FILTER_LEN {
            return Err(bad("filter", format!("must be at most {FILTER_LEN} bytes")));
        }
        if !(1..=10_000).contains(&self.max_failures) {
            return Err(bad("max_failures", "must be 1 to 10000"));
        }
        crate::mask::validate(&self.masks)?;
        validate_destination(&self.destination, allow)?;
        if self.destination.needs_credential()
            && self.secrets.credential.as_deref().is_none_or(str::is_empty)
        {
            return Err(bad(
                "credential",
                format!(
                    "a {} destination needs its token or API key",
                    self.destination.kind()
                ),
            ));
        }
        Ok(())
    }

    /// Makes a new signing secret current; the previous one stays valid
    /// until the next rotation. Returns the new secret (shown once).
    pub fn rotate_secret(&mut self, now: DateTime<Utc>) -> Result<String, SpecError> {
        if !matches!(self.destination, Destination::Webhook { .. }) {
            return Err(bad(
                "destination",
                "only webhook streams have signing secrets",
            ));
        }
        let s = new_secret("whsec_");
        self.secrets.signing.insert(0, s.clone());
        self.secrets.signing.truncate(SIGNING_SECRETS);
        self.updated_at = now;
        Ok(s)
    }

    /// The stream as the API shows it: everything but its secrets.
    pub fn view(&self) -> Value {
        let state = match &self.paused {
            None => "active",
            Some(p) if p.automatic => "error",
            Some(_) => "paused",
        };
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "destination": self.destination,
            "filter": self.filter,
            "masks": self.masks,
            "max_failures": self.max_failures,
            "state": state,
            "created_at": trailhouse_schemas::event::format_timestamp(&self.created_at),
            "updated_at": trailhouse_schemas::event::format_timestamp(&self.updated_at),
            "signing_secrets": self.secrets.signing.len(),
            "credential_set": self.secrets.credential.is_some(),
        });
        if let Some(p) = &self.paused {
            v["paused"] = json!(p);
        }
        if let Some(r) = &self.replay {
            v["replay"] = json!(r);
        }
        v
    }
}

fn validate_destination(d: &Destination, allow: &Allow) -> Result<(), SpecError> {
    match d {
        Destination::Webhook { url, .. }
        | Destination::Splunk { url, .. }
        | Destination::Datadog { url, .. } => http_url(url, allow).map(|_| ()),
        Destination::ObjectStore { url } => object_url(url, allow),
        Destination::Kafka { brokers, topic } => {
            let list: Vec<&str> = brokers.split(',').map(str::trim).collect();
            for b in &list {
                let Some((host, port)) = b.rsplit_once(':') else {
                    return Err(bad(
                        "destination.brokers",
                        format!("{b:?} is not host:port"),
                    ));
                };
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad(
                        "destination.brokers",
                        format!("{b:?} is not host:port"),
                    ));
                }
                check_host(host, allow, "destination.brokers")?;
            }
            let ok = !topic.is_empty()
                && topic.len() <= 249
                && topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(bad(
                    "destination.topic",
                    "must be 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'",
                ));
            }
            Ok(())
        }
    }
}

/// An HTTP destination's URL, checked against what the deployment allows.
pub fn http_url(url: &str, allow: &Allow) -> Result<reqwest::Url, SpecError> {
    let field = "destination.url";
    let u = reqwest::Url::parse(url).map_err(|e| bad(field, format!("not a URL: {e}")))?;
    match u.scheme() {
        "https" => {}
        "http" if allow.http => {}
        "http" => return Err(bad(field, "must be https")),
        s => return Err(bad(field, format!("scheme {s:?} is not http(s)"))),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(field, "must not carry credentials; use `credential`"));
    }
    let host = u
        .host_str()
        .ok_or_else(|| bad(field, "has no host"))?
        .trim_matches(|c| c == '[' || c == ']');
    check_host(host, allow, field)?;
    Ok(u)
}

/// Refuses addresses inside the deployment's own network unless allowed.
fn check_host(host: &str, allow: &Allow, field: &str) -> Result<(), SpecError> {
    if allow.private {
        return Ok(());
    }
    let host = host.trim_matches(|c| c == '[' || c == ']');
    let parsed = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => Ok(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)),
        other => other,
    };
    let private = match parsed {
        Ok(IpAddr::V4(a)) => {
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
        }
        Ok(IpAddr::V6(a)) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost"),
    };
    if private {
        return Err(bad(
            field,
            format!("{host} is a private, loopback or link-local address"),
        ));
    }
    Ok(())
}

/// An object store URL: a cloud bucket, or a local directory when allowed.
fn object_url(url: &str, allow: &Allow) -> Result<(), SpecError> {
    let field = "destination.url";
    let u = reqwest::Url::parse(url).map_err(|e| bad(field, format!("not a URL: {e}")))?;
    match u.scheme() {
        "s3" | "gs" | "az" | "abfs" => {
            if u.host_str().is_none_or(str::is_empty) {
                return Err(bad(field, "names no bucket"));
            }
            if !allow
                .object_prefixes
                .iter()
                .any(|p| url.starts_with(p.as_str()))
            {
                return Err(bad(
                    field,
                    if allow.object_prefixes.is_empty() {
                        "cloud object stores are not enabled in this deployment".to_string()
                    } else {
                        format!(
                            "must start with one of {}",
                            allow.object_prefixes.join(", ")
                        )
                    },
                ));
            }
            Ok(())
        }
        "file" if allow.local_files => {
            if u.path().len() <= 1 {
                return Err(bad(field, "names no directory"));
            }
            Ok(())
        }
        "file" => Err(bad(field, "local directories are not allowed here")),
        s => Err(bad(
            field,
            format!("scheme {s:?} is not s3, gs, az or abfs"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> StreamInput {
        serde_json::from_value(v).expect("input")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn create_fills_defaults_and_a_signing_secret() {
        let s = Stream::create(
            "acme",
            input(json!({"name": "siem", "destination": {"type": "webhook", "url": "https://siem.example.com/in"}})),
            &Allow::default(),
            now(),
        )
        .expect("valid");
        assert_eq!(s.max_failures, DEFAULT_MAX_FAILURES);
        assert_eq!(s.secrets.signing.len(), 1);
        assert!(s.secrets.signing[0].starts_with("whsec_"));
        assert_eq!(
            s.destination,
            Destination::Webhook {
                url: "https://siem.example.com/in".into(),
                format: BatchFormat::Ndjson,
                gzip: true
            }
        );
        let v = s.view();
        assert_eq!(v["state"], "active");
        assert!(!v.to_string().contains(&s.secrets.signing[0]));
        assert!(!v.to_string().contains(&s.secrets.salt));
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases = [
            (
                json!({"destination": {"type": "webhook", "url": "https://a.example"}}),
                "name",
            ),
            (
                json!({"name": " ", "destination": {"type": "webhook", "url": "https://a.example"}}),
                "name",
            ),
            (json!({"name": "x"}), "destination"),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "http://a.example"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "https://10.0.0.5/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "https://localhost/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "https://[::1]/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "https://u:p@a.example/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "ftp://a.example/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "splunk", "url": "https://a.example"}}),
                "credential",
            ),
            (
                json!({"name": "x", "destination": {"type": "object_store", "url": "file:///tmp/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "object_store", "url": "s3:///x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "object_store", "url": "s3://someone-elses-bucket/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "webhook", "url": "https://[::ffff:10.0.0.5]/x"}}),
                "destination.url",
            ),
            (
                json!({"name": "x", "destination": {"type": "kafka", "brokers": "[::1]:9092", "topic": "t"}}),
                "destination.brokers",
            ),
            (
                json!({"name": "x", "destination": {"type": "kafka", "brokers": "k1", "topic": "t"}}),
                "destination.brokers",
            ),
            (
                json!({"name": "x", "destination": {"type": "kafka", "brokers": "k.example:9092", "topic": "a b"}}),
                "destination.topic",
            ),
            (
                json!({"name": "x", "max_failures": 0, "destination": {"type": "webhook", "url": "https://a.example"}}),
                "max_failures",
            ),
        ];
        for (body, field) in cases {
            let err = Stream::create("acme", input(body.clone()), &Allow::default(), now())
                .expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}");
        }
    }

    #[test]
    fn development_allowances_open_what_they_name() {
        let all = Allow {
            http: true,
            private: true,
            local_files: true,
            object_prefixes: vec!["s3://audit-exports/".into()],
        };
        for d in [
            json!({"type": "webhook", "url": "http://127.0.0.1:9/x"}),
            json!({"type": "object_store", "url": "file:///var/streams"}),
            json!({"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "audit"}),
            json!({"type": "object_store", "url": "s3://audit-exports/acme"}),
        ] {
            Stream::create(
                "acme",
                input(json!({"name": "x", "destination": d})),
                &all,
                now(),
            )
            .expect("allowed");
        }
    }

    #[test]
    fn rotation_keeps_the_previous_secret_valid() {
        let mut s = Stream::create(
            "acme",
            input(json!({"name": "siem", "destination": {"type": "webhook", "url": "https://a.example"}})),
            &Allow::default(),
            now(),
        )
        .expect("valid");
        let first = s.secrets.signing[0].clone();
        let second = s.rotate_secret(now()).expect("webhook");
        let third = s.rotate_secret(now()).expect("webhook");
        assert_eq!(s.secrets.signing, vec![third, second]);
        assert!(!s.secrets.signing.contains(&first));
    }

    #[test]
    fn update_keeps_absent_fields_and_revalidates() {
        let mut s = Stream::create(
            "acme",
            input(json!({"name": "dd", "credential": "k", "destination": {"type": "datadog", "url": "https://http-intake.logs.datadoghq.eu"}})),
            &Allow::default(),
            now(),
        )
        .expect("valid");
        s.apply(
            input(json!({"filter": "action=user.login"})),
            &Allow::default(),
            now(),
        )
        .expect("valid");
        assert_eq!(s.name, "dd");
        assert_eq!(s.filter, "action=user.login");
        let err = s
            .apply(
                input(json!({"destination": {"type": "splunk", "url": "https://hec.example"}})),
                &Allow::default(),
                now(),
            )
            .expect_err("a new kind needs a new credential");
        assert_eq!(err.field, "credential");
    }
}
