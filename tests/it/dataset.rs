//! A deterministic audit-log dataset for the query API tests: varied field
//! values, repeated timestamps, two orgs with the same value pools so that a
//! filter that selects one org's events would select the other's too.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use trailhouse_schemas::event::{Action, Actor, Auth, Request, Resource};
use trailhouse_schemas::{AuditEvent, EventRow, Lineage};
use uuid::Uuid;

pub const ACTIONS: [&str; 4] = ["create", "update", "delete", "login"];
pub const ACTORS: [&str; 5] = ["u1", "u2", "u3", "u4", "u5"];
pub const AUTH_TYPES: [&str; 6] = [
    "client",
    "clientCredentials",
    "signedPayload",
    "workbench",
    "apiKey",
    "jwt",
];
pub const ENVS: [&str; 2] = ["prod", "dev"];
pub const WORKSPACES: [&str; 3] = ["ws1", "ws2", ""];
pub const RESOURCE_TYPES: [&str; 3] = ["ticket", "user", ""];
pub const SOURCES: [&str; 3] = ["web", "api", "cli"];
pub const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
pub const IPS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "2001:db8::1", ""];
pub const STATUSES: [Option<u16>; 7] = [
    Some(200),
    Some(201),
    Some(204),
    Some(400),
    Some(404),
    Some(500),
    None,
];
pub const PATHS: [&str; 5] = [
    "/api/v1/Tickets/",
    "/api/v1/users/",
    "/login",
    "/api/v2/Search",
    "",
];

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// "Now", truncated to whole seconds so that generated times repeat.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default()
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `n` events of `org`, the first `old` of them 30–40 hours old and the rest
/// within the last 20 hours, on only 300 distinct timestamps.
pub fn events(org: &str, n: usize, old: usize, seed: u64, now: DateTime<Utc>) -> Vec<AuditEvent> {
    let mut rng = Rng::new(seed);
    let slots: Vec<DateTime<Utc>> = (0..300)
        .map(|i| now - Duration::seconds(60 + i * 240) + Duration::microseconds(i * 7))
        .collect();
    (0..n)
        .map(|i| {
            let created_at = if i < old {
                now - Duration::hours(30) - Duration::seconds(rng.below(36_000) as i64)
            } else {
                rng.pick(&slots)
            };
            let actor = rng.pick(&ACTORS);
            let ws = rng.pick(&WORKSPACES);
            let path = (rng.pick(&PATHS)).to_string();
            let path = if path.ends_with('/') {
                format!("{path}{}", rng.below(30))
            } else {
                path
            };
            let mut headers = BTreeMap::new();
            if rng.below(2) == 0 {
                headers.insert("authorization".to_string(), "Bearer top-secret".to_string());
                headers.insert("cookie".to_string(), "session=top-secret".to_string());
                headers.insert("x-request-id".to_string(), format!("req-{i}"));
                headers.insert("x-internal".to_string(), "hidden".to_string());
            }
            let mut metadata = BTreeMap::new();
            if rng.below(3) == 0 {
                metadata.insert("ticket_priority".to_string(), "high".to_string());
            }
            let action = rng.pick(&ACTIONS);
            AuditEvent {
                id: Uuid::from_u64_pair(seed, i as u64),
                org_id: org.to_string(),
                retention_days: None,
                environment_id: some(rng.pick(&ENVS)),
                workspace_id: some(ws),
                workspace_name: some(ws).map(|w| format!("Workspace {w}")),
                created_at,
                received_at: created_at,
                actor: Actor {
                    kind: some(rng.pick(&["user", "api_key", "service"])),
                    id: some(actor),
                    email: Some(format!("{actor}@example.test")),
                    name: Some(format!("User {actor}")),
                },
                auth: Auth {
                    kind: some(rng.pick(&AUTH_TYPES)),
                    client_id: (rng.below(2) == 0).then(|| "client-1".to_string()),
                    sub: Some(actor.to_string()),
                    app_client_id: None,
                    account_id: (rng.below(2) == 0).then(|| "acct-9".to_string()),
                },
                source: some(rng.pick(&SOURCES)),
                action: Action {
                    kind: action.to_string(),
                    description: (rng.below(2) == 0).then(|| format!("{action} things")),
                },
                resource: Resource {
                    kind: some(rng.pick(&RESOURCE_TYPES)),
                    id: Some(format!("r{}", rng.below(10))),
                    name: Some(format!("Resource {}", rng.below(10))),
                },
                request: Request {
                    method: some(rng.pick(&METHODS)),
                    url: some(&path).map(|p| format!("https://app.example.test{p}?q=1")),
                    path: some(&path),
                    status: rng.pick(&STATUSES),
                    duration_ms: Some(rng.below(5000) as f64 / 10.0),
                    ip: some(rng.pick(&IPS)),
                    user_agent: Some("curl/8.5".into()),
                    query: (rng.below(2) == 0).then(|| {
                        let mut m = serde_json::Map::new();
                        m.insert("q".into(), serde_json::json!("1"));
                        m
                    }),
                    path_params: if path.contains("/Tickets/") {
                        BTreeMap::from([(
                            "id".to_string(),
                            path.rsplit('/').next().unwrap_or("").to_string(),
                        )])
                    } else {
                        BTreeMap::new()
                    },
                    headers,
                    body: (rng.below(3) == 0)
                        .then(|| "{\"password\":\"[REDACTED]\",\"name\":\"x\"}".to_string()),
                },
                metadata,
            }
        })
        .collect()
}

pub fn rows(events: &[AuditEvent]) -> Vec<EventRow> {
    events
        .iter()
        .map(|e| EventRow::from_event(e, Lineage::default()))
        .collect()
}

/// Sorts rows newest first, as every API reads them by default.
pub fn newest_first(rows: &mut [EventRow]) {
    rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
}
