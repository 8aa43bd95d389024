//! Avro single-object encoding of [`AuditEvent`]s, as carried in Kafka.
//!
//! Each message is `0xC3 0x01`, the 8-byte little-endian CRC-64-AVRO
//! (Rabin) fingerprint of the writer schema's canonical form, then the Avro
//! binary datum. Every schema version ever written is compiled into this
//! crate, so a reader resolves the writer schema by fingerprint without a
//! registry and reads it into the current schema.
//!
//! Evolution rule: a new schema version may only add fields that are
//! optional and have a default, and may never remove or retype a field.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Action, Actor, AuditEvent, Auth, Request, Resource};

mod datum;

/// The two marker bytes of Avro single-object encoding.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// Schema sources, oldest first. The last one is the current writer schema.
pub const SCHEMA_SOURCES: &[(u32, &str)] = &[
    (1, include_str!("../avro/audit_event.v1.avsc")),
    (2, include_str!("../avro/audit_event.v2.avsc")),
    (3, include_str!("../avro/audit_event.v3.avsc")),
];

/// Errors of the Avro codec.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("message too short for single-object encoding ({0} bytes)")]
    TooShort(usize),
    #[error("message does not start with the single-object marker")]
    BadMagic,
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownSchema(u64),
    #[error("avro: {0}")]
    Avro(String),
    #[error("event field {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl From<apache_avro::Error> for AvroError {
    fn from(e: apache_avro::Error) -> Self {
        AvroError::Avro(e.to_string())
    }
}

/// One known writer schema.
#[derive(Debug)]
pub struct KnownSchema {
    pub version: u32,
    pub fingerprint: [u8; 8],
    pub schema: Schema,
}

/// All schema versions, parsed once.
#[derive(Debug)]
pub struct Schemas {
    versions: Vec<KnownSchema>,
}

impl Schemas {
    fn load() -> Result<Self, AvroError> {
        let mut versions = Vec::new();
        for (version, src) in SCHEMA_SOURCES {
            let schema = Schema::parse_str(src)?;
            let fp = schema.fingerprint::<Rabin>();
            let fingerprint: [u8; 8] = fp
                .bytes
                .as_slice()
                .try_into()
                .map_err(|_| AvroError::Avro("rabin fingerprint is not 8 bytes".into()))?;
            versions.push(KnownSchema {
                version: *version,
                fingerprint,
                schema,
            });
        }
        Ok(Schemas { versions })
    }

    /// The process-wide schema set. The sources are compiled in and covered
    /// by tests, so failing to parse them is a build defect.
    pub fn get() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        #[allow(clippy::expect_used)]
        SCHEMAS.get_or_init(|| Schemas::load().expect("embedded Avro schemas must parse"))
    }

    /// The schema new events are written with.
    pub fn current(&self) -> &KnownSchema {
        // `SCHEMA_SOURCES` is a non-empty constant.
        &self.versions[self.versions.len() - 1]
    }

    pub fn by_fingerprint(&self, fp: &[u8]) -> Option<&KnownSchema> {
        self.versions.iter().find(|s| s.fingerprint == fp)
    }

    pub fn by_version(&self, version: u32) -> Option<&KnownSchema> {
        self.versions.iter().find(|s| s.version == version)
    }
}

/// The Avro record, field for field as in the current schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AvroEvent {
    id: String,
    org_id: String,
    environment_id: Option<String>,
    workspace_id: Option<String>,
    #[serde(default)]
    workspace_name: Option<String>,
    created_at: i64,
    received_at: i64,
    actor: Option<AvroActor>,
    auth: Option<AvroAuth>,
    source: Option<String>,
    action: AvroAction,
    resource: Option<AvroResource>,
    request: Option<AvroRequest>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    retention_days: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AvroActor {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    email: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AvroAuth {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    sub: Option<String>,
    app_client_id: Option<String>,
    account_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AvroAction {
    #[serde(rename = "type")]
    kind: String,
    description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AvroResource {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AvroRequest {
    method: Option<String>,
    url: Option<String>,
    path: Option<String>,
    status: Option<i32>,
    duration_ms: Option<f64>,
    ip: Option<String>,
    user_agent: Option<String>,
    query: Option<String>,
    path_params: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

fn from_micros(field: &'static str, micros: i64) -> Result<DateTime<Utc>, AvroError> {
    DateTime::from_timestamp_micros(micros).ok_or(AvroError::Invalid {
        field,
        reason: format!("timestamp {micros} out of range"),
    })
}

impl From<&AuditEvent> for AvroEvent {
    fn from(e: &AuditEvent) -> Self {
        let a = &e.actor;
        let au = &e.auth;
        let r = &e.resource;
        let rq = &e.request;
        AvroEvent {
            id: e.id.to_string(),
            org_id: e.org_id.clone(),
            environment_id: e.environment_id.clone(),
            workspace_id: e.workspace_id.clone(),
            workspace_name: e.workspace_name.clone(),
            created_at: e.created_at.timestamp_micros(),
            received_at: e.received_at.timestamp_micros(),
            actor: (*a != Actor::default()).then(|| AvroActor {
                kind: a.kind.clone(),
                id: a.id.clone(),
                email: a.email.clone(),
                name: a.name.clone(),
            }),
            auth: (*au != Auth::default()).then(|| AvroAuth {
                kind: au.kind.clone(),
                client_id: au.client_id.clone(),
                sub: au.sub.clone(),
                app_client_id: au.app_client_id.clone(),
                account_id: au.account_id.clone(),
            }),
            source: e.source.clone(),
            action: AvroAction {
                kind: e.action.kind.clone(),
                description: e.action.description.clone(),
            },
            resource: (*r != Resource::default()).then(|| AvroResource {
                kind: r.kind.clone(),
                id: r.id.clone(),
                name: r.name.clone(),
            }),
            request: (!rq.is_empty()).then(|| AvroRequest {
                method: rq.method.clone(),
                url: rq.url.clone(),
                path: rq.path.clone(),
                status: rq.status.map(i32::from),
                duration_ms: rq.duration_ms,
                ip: rq.ip.clone(),
                user_agent: rq.user_agent.clone(),
                query: rq
                    .query
                    .as_ref()
                    .map(|q| serde_json::Value::Object(q.clone()).to_string()),
                path_params: rq.path_params.clone(),
                headers: rq.headers.clone(),
                body: rq.body.clone(),
            }),
            metadata: e.metadata.clone(),
            retention_days: e.retention_days.map(i32::from),
        }
    }
}

impl TryFrom<AvroEvent> for AuditEvent {
    type Error = AvroError;

    fn try_from(a: AvroEvent) -> Result<Self, AvroError> {
        let id = Uuid::parse_str(&a.id).map_err(|e| AvroError::Invalid {
            field: "id",
            reason: e.to_string(),
        })?;
        let request = match a.request {
            None => Request::default(),
            Some(rq) => Request {
                method: rq.method,
                url: rq.url,
                path: rq.path,
                status: rq
                    .status
                    .map(|s| {
                        u16::try_from(s).map_err(|_| AvroError::Invalid {
                            field: "request.status",
                            reason: format!("{s} out of range"),
                        })
                    })
                    .transpose()?,
                duration_ms: rq.duration_ms,
                ip: rq.ip,
                user_agent: rq.user_agent,
                query: rq
                    .query
                    .map(|q| match serde_json::from_str(&q) {
                        Ok(serde_json::Value::Object(m)) => Ok(m),
                        _ => Err(AvroError::Invalid {
                            field: "request.query",
                            reason: "not a JSON object".into(),
                        }),
                    })
                    .transpose()?,
                path_params: rq.path_params,
                headers: rq.headers,
                body: rq.body,
            },
        };
        let retention_days = a
            .retention_days
            .map(|d| {
                u16::try_from(d)
                    .ok()
                    .filter(|d| *d > 0)
                    .ok_or_else(|| AvroError::Invalid {
                        field: "retention_days",
                        reason: format!("{d} out of range"),
                    })
            })
            .transpose()?;
        Ok(AuditEvent {
            id,
            org_id: a.org_id,
            retention_days,
            environment_id: a.environment_id,
            workspace_id: a.workspace_id,
            workspace_name: a.workspace_name,
            created_at: from_micros("created_at", a.created_at)?,
            received_at: from_micros("received_at", a.received_at)?,
            actor: a
                .actor
                .map(|x| Actor {
                    kind: x.kind,
                    id: x.id,
                    email: x.email,
                    name: x.name,
                })
                .unwrap_or_default(),
            auth: a
                .auth
                .map(|x| Auth {
                    kind: x.kind,
                    client_id: x.client_id,
                    sub: x.sub,
                    app_client_id: x.app_client_id,
                    account_id: x.account_id,
                })
                .unwrap_or_default(),
            source: a.source,
            action: Action {
                kind: a.action.kind,
                description: a.action.description,
            },
            resource: a
                .resource
                .map(|x| Resource {
                    kind: x.kind,
                    id: x.id,
                    name: x.name,
                })
                .unwrap_or_default(),
            request,
            metadata: a.metadata,
        })
    }
}

fn encode_with<T: Serialize>(schema: &KnownSchema, record: &T) -> Result<Vec<u8>, AvroError> {
    let value = apache_avro::to_value(record)?.resolve(&schema.schema)?;
    let datum = apache_avro::to_avro_datum(&schema.schema, value)?;
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&schema.fingerprint);
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Encodes an event with the current schema.
pub fn encode(event: &AuditEvent) -> Result<Vec<u8>, AvroError> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&Schemas::get().current().fingerprint);
    datum::write_event(&mut out, event);
    Ok(out)
}

/// [`encode`] through `apache_avro`'s generic `Value` path: the reference
/// the direct codec is tested and benchmarked against.
#[doc(hidden)]
pub fn encode_generic(event: &AuditEvent) -> Result<Vec<u8>, AvroError> {
    encode_with(Schemas::get().current(), &AvroEvent::from(event))
}

/// Decodes a single-object encoded event written with any known schema
/// version: the current one directly, older ones by schema resolution.
pub fn decode(bytes: &[u8]) -> Result<AuditEvent, AvroError> {
    let (writer, datum) = split_header(bytes)?;
    let schemas = Schemas::get();
    if writer.fingerprint == schemas.current().fingerprint {
        AuditEvent::try_from(datum::read_event(datum)?)
    } else {
        decode_resolving(writer, datum)
    }
}

/// [`decode`] through `apache_avro`'s generic `Value` path for every
/// version: the reference the direct codec is tested and benchmarked against.
#[doc(hidden)]
pub fn decode_generic(bytes: &[u8]) -> Result<AuditEvent, AvroError> {
    let (writer, datum) = split_header(bytes)?;
    decode_resolving(writer, datum)
}

/// The writer schema named by the single-object header, and the datum.
fn split_header(bytes: &[u8]) -> Result<(&'static KnownSchema, &[u8]), AvroError> {
    if bytes.len() < HEADER_LEN {
        return Err(AvroError::TooShort(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(AvroError::BadMagic);
    }
    let fp = &bytes[2..HEADER_LEN];
    let writer = Schemas::get().by_fingerprint(fp).ok_or_else(|| {
        let mut le = [0u8; 8];
        le.copy_from_slice(fp);
        AvroError::UnknownSchema(u64::from_le_bytes(le))
    })?;
    Ok((writer, &bytes[HEADER_LEN..]))
}

fn decode_resolving(writer: &KnownSchema, bytes: &[u8]) -> Result<AuditEvent, AvroError> {
    let reader = Schemas::get().current();
    let mut datum = bytes;
    let value = apache_avro::from_avro_datum(&writer.schema, &mut datum, Some(&reader.schema))?;
    if !datum.is_empty() {
        return Err(AvroError::Avro(format!(
            "{} trailing bytes after the datum",
            datum.len()
        )));
    }
    let value = strip_logical(value);
    let record: AvroEvent = apache_avro::from_value(&value)?;
    AuditEvent::try_from(record)
}

/// Timestamp logical types come back as their own `Value` variants; the
/// serde bridge reads them as plain longs.
fn strip_logical(v: Value) -> Value {
    match v {
        Value::TimestampMicros(x) | Value::TimestampMillis(x) => Value::Long(x),
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k, strip_logical(v)))
                .collect(),
        ),
        Value::Union(i, b) => Value::Union(i, Box::new(strip_logical(*b))),
        other => other,
    }
}

/// Encodes with an older schema version; for compatibility tests and tools
/// that must produce what old producers wrote.
#[doc(hidden)]
pub fn encode_as_version(event: &AuditEvent, version: u32) -> Result<Vec<u8>, AvroError> {
    let schema = Schemas::get()
        .by_version(version)
        .ok_or(AvroError::UnknownSchema(u64::from(version)))?;
    let full = AvroEvent::from(event);
    if version >= 2 {
        return encode_with(schema, &full);
    }
    #[derive(Serialize)]
    struct V1<'a> {
        id: &'a str,
        org_id: &'a str,
        environment_id: &'a Option<String>,
        workspace_id: &'a Option<String>,
        created_at: i64,
        received_at: i64,
        actor: &'a Option<AvroActor>,
        auth: &'a Option<AvroAuth>,
        source: &'a Option<String>,
        action: &'a AvroAction,
        resource: &'a Option<AvroResource>,
        request: &'a Option<AvroRequest>,
    }
    encode_with(
        schema,
        &V1 {
            id: &full.id,
            org_id: &full.org_id,
            environment_id: &full.environment_id,
            workspace_id: &full.workspace_id,
            created_at: full.created_at,
            received_at: full.received_at,
            actor: &full.actor,
            auth: &full.auth,
            source: &full.source,
            action: &full.action,
            resource: &full.resource,
            request: &full.request,
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::examples;
    use proptest::prelude::*;

    #[test]
    fn rabin_fingerprint_matches_the_spec_vector() {
        // The Avro spec's CRC-64-AVRO of the canonical form `"null"`.
        let schema = Schema::parse_str(r#""null""#).expect("parse");
        let fp = schema.fingerprint::<Rabin>();
        assert_eq!(fp.bytes, 0x63dd24e7cc258f8au64.to_le_bytes().to_vec());
    }

    #[test]
    fn examples_round_trip() {
        for e in examples::all() {
            let bytes = encode(&e).expect("encode");
            assert_eq!(bytes[..2], MAGIC);
            assert_eq!(decode(&bytes).expect("decode"), e);
        }
    }

    #[test]
    fn v1_events_decode_with_defaults_for_new_fields() {
        for mut e in examples::all() {
            let bytes = encode_as_version(&e, 1).expect("encode v1");
            assert_eq!(
                bytes[2..10],
                Schemas::get().by_version(1).expect("v1").fingerprint
            );
            e.workspace_name = None;
            e.metadata.clear();
            assert_eq!(decode(&bytes).expect("decode"), e);
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        assert!(matches!(decode(b"abc"), Err(AvroError::TooShort(3))));
        assert!(matches!(decode(&[0u8; 20]), Err(AvroError::BadMagic)));
        let mut unknown = vec![0xC3, 0x01];
        unknown.extend_from_slice(&[9u8; 8]);
        assert!(matches!(decode(&unknown), Err(AvroError::UnknownSchema(_))));
        let mut truncated = encode(&examples::all()[0]).expect("encode");
        truncated.truncate(truncated.len() / 2);
        assert!(decode(&truncated).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_events_round_trip(e in crate::examples::arb_event()) {
            let bytes = encode(&e).expect("encode");
            prop_assert_eq!(decode(&bytes).expect("decode"), e);
        }

        #[test]
        fn direct_and_generic_codecs_read_each_other(e in crate::examples::arb_event()) {
            let direct = encode(&e).expect("encode");
            let generic = encode_generic(&e).expect("encode generic");
            prop_assert_eq!(direct.len(), generic.len());
            prop_assert_eq!(&decode_generic(&direct).expect("generic reads direct"), &e);
            prop_assert_eq!(&decode(&generic).expect("direct reads generic"), &e);
        }

        #[test]
        fn damaged_datums_decode_alike_or_not_at_all(
            e in crate::examples::arb_event(),
            cut in any::<proptest::sample::Index>(),
            flip in any::<proptest::sample::Index>(),
            bits in 1u8..=255,
        ) {
            // A truncated or bit-flipped datum: whatever the direct reader
            // accepts, the generic reader accepts and reads the same way.
            let mut bytes = encode(&e).expect("encode");
            let at = HEADER_LEN + flip.index(bytes.len() - HEADER_LEN);
            bytes[at] ^= bits;
            for candidate in [bytes.clone(), bytes[..HEADER_LEN + cut.index(bytes.len() - HEADER_LEN)].to_vec()] {
                if let Ok(direct) = decode(&candidate) {
                    prop_assert_eq!(Some(direct), decode_generic(&candidate).ok());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&Schemas::get().current().fingerprint);
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes);
        }
    }
}
