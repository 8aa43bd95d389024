//! A deterministic generator of realistic audit events: the field shapes of
//! the four audit-log APIs the query API serves, payloads of 200 B to 4 KB,
//! and org sizes skewed so that a few orgs hold most events.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as Span, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trailhouse_schemas::event::{Action, Actor, Auth, Request, Resource};
use trailhouse_schemas::AuditEvent;
use uuid::Uuid;

/// How the generated stream looks.
#[derive(Debug, Clone)]
pub struct Shape {
    pub seed: u64,
    pub orgs: usize,
    /// Events are spread over this many days before `end`.
    pub days: u32,
    pub end: DateTime<Utc>,
}

/// The org that holds the most events (rank 0 of the skew).
pub fn org_name(rank: usize) -> String {
    format!("org_{rank:05}")
}

/// Picks an org rank: rank r is chosen with a probability that falls
/// steeply with r (about 30 % of events for rank 0 at 1,000 orgs).
pub fn skewed_rank(rng: &mut impl Rng, orgs: usize) -> usize {
    let u: f64 = rng.random();
    ((u.powi(6) * orgs as f64) as usize).min(orgs.saturating_sub(1))
}

const ACTIONS: [&str; 12] = [
    "user.login",
    "user.logout",
    "project.create",
    "project.update",
    "project.delete",
    "member.invite",
    "member.remove",
    "api_key.create",
    "settings.update",
    "ticket.update",
    "workflow.run",
    "export.download",
];
const METHODS: [&str; 4] = ["GET", "POST", "PATCH", "DELETE"];
const ROUTES: [&str; 6] = [
    "/api/v1/projects/{project}",
    "/api/v1/projects/{project}/members/{member}",
    "/api/v1/workspaces/{workspace}/workflows/{workflow}/runs",
    "/api/v2/tickets/{ticket}",
    "/api/v1/settings",
    "/api/v1/exports/{export}",
];
const SOURCES: [&str; 4] = ["web_app", "api", "slack", "mobile"];
const AUTH: [&str; 5] = [
    "jwt",
    "api_key",
    "clientCredentials",
    "workbench",
    "signedPayload",
];
const LOREM: &str = "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod \
                     tempor incididunt ut labore et dolore magna aliqua ";

/// An endless, reproducible stream of events.
pub struct Generator {
    shape: Shape,
    rng: StdRng,
    start: DateTime<Utc>,
    span_micros: i64,
}

impl Generator {
    pub fn new(shape: Shape) -> Generator {
        let start = shape.end - Span::days(i64::from(shape.days.max(1)));
        let span_micros = (shape.end - start).num_microseconds().unwrap_or(i64::MAX);
        Generator {
            rng: StdRng::seed_from_u64(shape.seed),
            shape,
            start,
            span_micros,
        }
    }

    /// The next event; `at` overrides its timestamp.
    pub fn event(&mut self, at: Option<DateTime<Utc>>) -> AuditEvent {
        let rank = skewed_rank(&mut self.rng, self.shape.orgs);
        self.event_for(rank, at)
    }

    /// The next event of the org of rank `rank`.
    pub fn event_for(&mut self, rank: usize, at: Option<DateTime<Utc>>) -> AuditEvent {
        let r = &mut self.rng;
        let created_at = at.unwrap_or_else(|| {
            self.start + Span::microseconds(r.random_range(0..self.span_micros.max(1)))
        });
        let user = r.random_range(0..200u32);
        let action = ACTIONS[r.random_range(0..ACTIONS.len())];
        let route = ROUTES[r.random_range(0..ROUTES.len())];
        let object = r.random_range(0..5000u32);
        let workspace = r.random_range(0..8u32);
        let mut path_params = BTreeMap::new();
        let mut path = String::with_capacity(route.len() + 16);
        for segment in route.split('/').filter(|s| !s.is_empty()) {
            path.push('/');
            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let value = format!("{}_{object}", &name[..1]);
                    path.push_str(&value);
                    path_params.insert(name.to_string(), value);
                }
                None => path.push_str(segment),
            }
        }
        // Payloads of 200 B to 4 KB, most of them small (log-uniform body).
        let body_len = (10f64.powf(r.random_range(1.0..3.55))) as usize;
        let body = (body_len > 40).then(|| {
            let text: String = LOREM.chars().cycle().take(body_len).collect();
            serde_json::json!({"id": object, "note": text}).to_string()
        });
        let method = METHODS[r.random_range(0..METHODS.len())];
        let status = [200u16, 200, 200, 201, 204, 400, 403, 404, 500][r.random_range(0..9)];
        let mut query = serde_json::Map::new();
        if r.random_bool(0.3) {
            query.insert("page".into(), r.random_range(1..20u32).to_string().into());
        }
        let mut headers = BTreeMap::new();
        headers.insert(
            "x-request-id".into(),
            format!("req-{:016x}", r.random::<u64>()),
        );
        let mut metadata = BTreeMap::new();
        if r.random_bool(0.2) {
            metadata.insert("change".into(), format!("{action} of {object}"));
        }
        AuditEvent {
            id: Uuid::from_u128(r.random()),
            org_id: org_name(rank),
            retention_days: None,
            environment_id: Some(["production", "staging"][usize::from(r.random_bool(0.1))].into()),
            workspace_id: Some(format!("ws_{workspace}")),
            workspace_name: Some(format!("Workspace {workspace}")),
            created_at,
            received_at: created_at,
            actor: Actor {
                kind: Some("user".into()),
                id: Some(format!("usr_{user}")),
                email: Some(format!("user{user}@example.com")),
                name: Some(format!("User {user}")),
            },
            auth: Auth {
                kind: Some(AUTH[r.random_range(0..AUTH.len())].into()),
                client_id: Some(format!("cli_{}", user % 7)),
                sub: Some(format!("usr_{user}")),
                app_client_id: None,
                account_id: Some(format!("acc_{rank}")),
            },
            source: Some(SOURCES[r.random_range(0..SOURCES.len())].into()),
            action: Action {
                kind: action.into(),
                description: Some(format!("{action} by usr_{user}")),
            },
            resource: Resource {
                kind: Some(route.split('/').nth(3).unwrap_or("settings").into()),
                id: Some(format!("res_{object}")),
                name: Some(format!("Resource {object}")),
            },
            request: Request {
                method: Some(method.into()),
                url: Some(format!("https://app.example.com{path}")),
                path: Some(path),
                status: Some(status),
                duration_ms: Some(f64::from(r.random_range(1..900u32)) / 3.0),
                ip: Some(format!("10.{}.{}.{}", rank % 250, user % 250, object % 250)),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) bench/1.0".into()),
                query: (!query.is_empty()).then_some(query),
                path_params,
                headers,
                body,
            },
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(seed: u64) -> Shape {
        Shape {
            seed,
            orgs: 1000,
            days: 30,
            end: DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (mut a, mut b) = (Generator::new(shape(7)), Generator::new(shape(7)));
        for _ in 0..100 {
            assert_eq!(a.event(None), b.event(None));
        }
        let mut c = Generator::new(shape(8));
        assert_ne!(a.event(None), c.event(None));
    }

    #[test]
    fn events_are_valid_sized_and_skewed() {
        let mut g = Generator::new(shape(1));
        let mut sizes = Vec::new();
        let mut top = 0;
        let n = 5000;
        for _ in 0..n {
            let e = g.event(None);
            if e.org_id == org_name(0) {
                top += 1;
            }
            let bytes = trailhouse_schemas::avro::encode(&e)
                .map(|b| b.len())
                .unwrap_or(0);
            sizes.push(bytes);
        }
        sizes.sort_unstable();
        assert!(sizes[0] >= 200, "smallest {}", sizes[0]);
        assert!(sizes[n - 1] <= 4096, "largest {}", sizes[n - 1]);
        // A few orgs hold most events: rank 0 alone holds over a fifth.
        assert!(top > n / 5, "top org holds {top} of {n}");
    }
}
