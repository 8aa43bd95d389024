//! Example payloads shipped with the schema (`schemas/examples/*.json`), used
//! by tests across the workspace and by the demo data generator.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{parse_input, validate, AuditEvent, Stamp};

/// The example files, by name.
pub const FILES: &[(&str, &str)] = &[
    ("api_request", include_str!("../examples/api_request.json")),
    (
        "workspace_action",
        include_str!("../examples/workspace_action.json"),
    ),
    (
        "api_key_call",
        include_str!("../examples/api_key_call.json"),
    ),
    ("minimal", include_str!("../examples/minimal.json")),
];

/// A deterministic stamp for examples: a fixed clock and ids counted from one.
#[derive(Debug)]
pub struct FixedStamp {
    pub now: DateTime<Utc>,
    next: std::sync::atomic::AtomicU64,
}

impl FixedStamp {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

impl Stamp for FixedStamp {
    fn now(&self) -> DateTime<Utc> {
        self.now
    }
    fn new_id(&self, _: DateTime<Utc>) -> Uuid {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(n))
    }
}

/// The examples as raw JSON values.
pub fn raw() -> Vec<(&'static str, serde_json::Value)> {
    FILES
        .iter()
        .map(|(name, text)| {
            let value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
            (*name, value)
        })
        .collect()
}

/// The examples validated with a fixed clock (2026-03-01T12:00:05Z). An
/// example that does not validate is skipped here and caught by the tests.
pub fn all() -> Vec<AuditEvent> {
    let now = DateTime::from_timestamp(1_772_366_405, 0).unwrap_or_default();
    let stamp = FixedStamp::new(now);
    raw()
        .into_iter()
        .filter_map(|(_, v)| parse_input(v).ok())
        .filter_map(|input| validate(input, &stamp).ok())
        .collect()
}

#[cfg(test)]
pub(crate) fn arb_event() -> impl proptest::strategy::Strategy<Value = AuditEvent> {
    use crate::event::{Action, Actor, Auth, Request, Resource};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn opt() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 _.@/\u{e9}\u{4e2d}-]{1,20}")
    }
    fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-z_-]{1,8}", ".{0,16}", 0..4)
    }
    let ids = (any::<u128>(), "[a-z0-9_]{1,16}", opt(), opt(), opt());
    let times = (0i64..4_000_000_000_000_000, 0i64..4_000_000_000_000_000);
    let who = (
        opt(),
        opt(),
        opt(),
        opt(),
        opt(),
        opt(),
        opt(),
        opt(),
        opt(),
    );
    let what = ("[a-z.]{1,20}", opt(), opt(), opt(), opt(), opt());
    let req = (
        opt(),
        opt(),
        opt(),
        proptest::option::of(100u16..600),
        proptest::option::of(0.0f64..1e6),
        opt(),
        opt(),
        proptest::option::of(map()),
        map(),
        map(),
        opt(),
    );
    (ids, times, who, what, req, map()).prop_map(
        |((id, org, env, ws, wsn), (c, r), who, what, req, metadata)| AuditEvent {
            id: Uuid::from_u128(id.max(1)),
            org_id: org,
            retention_days: if id % 3 == 0 {
                None
            } else {
                Some(crate::retention::RETENTION_CLASSES[(id % 8) as usize])
            },
            environment_id: env,
            workspace_id: ws,
            workspace_name: wsn,
            created_at: DateTime::from_timestamp_micros(c).unwrap_or_default(),
            received_at: DateTime::from_timestamp_micros(r).unwrap_or_default(),
            actor: Actor {
                kind: who.0,
                id: who.1,
                email: who.2,
                name: who.3,
            },
            auth: Auth {
                kind: who.4,
                client_id: who.5,
                sub: who.6,
                app_client_id: who.7,
                account_id: who.8,
            },
            source: what.1,
            action: Action {
                kind: what.0,
                description: what.2,
            },
            resource: Resource {
                kind: what.3,
                id: what.4,
                name: what.5,
            },
            request: Request {
                method: req.0,
                url: req.1,
                path: req.2,
                status: req.3,
                duration_ms: req.4,
                ip: req.5,
                user_agent: req.6,
                query: req.7.filter(|m| !m.is_empty()).map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect()
                }),
                path_params: req.8,
                headers: req.9,
                body: req.10,
            },
            metadata,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_validates() {
        let now = DateTime::from_timestamp(1_772_366_405, 0).unwrap_or_default();
        for (name, value) in raw() {
            let input = parse_input(value).unwrap_or_else(|e| panic!("{name}: {e}"));
            validate(input, &FixedStamp::new(now)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        assert_eq!(all().len(), FILES.len());
    }
}
