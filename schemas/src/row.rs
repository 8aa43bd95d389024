//! The ClickHouse row of the `events` table and its mapping to and from
//! [`AuditEvent`]. Absent optional strings are stored as empty strings (the
//! ClickHouse idiom, cheaper than `Nullable`); absent numbers as `NULL`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Action, Actor, AuditEvent, Auth, Request, Resource};

/// Where in Kafka a row came from (lineage columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lineage {
    pub partition: i32,
    pub offset: i64,
}

/// One row of the `events` table, columns in table order. With the
/// `clickhouse` feature it is a `clickhouse::Row`, its times and id in the
/// client's encodings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct EventRow {
    pub org_id: String,
    #[cfg_attr(
        feature = "clickhouse",
        serde(with = "clickhouse::serde::chrono::datetime64::micros")
    )]
    pub created_at: DateTime<Utc>,
    #[cfg_attr(feature = "clickhouse", serde(with = "clickhouse::serde::uuid"))]
    pub id: Uuid,
    pub environment_id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_email: String,
    pub actor_name: String,
    pub auth_type: String,
    pub auth_client_id: String,
    pub auth_sub: String,
    pub auth_app_client_id: String,
    pub auth_account_id: String,
    pub source: String,
    pub action_type: String,
    pub action_description: String,
    pub resource_type: String,
    pub resource_id: String,
    pub resource_name: String,
    pub request_method: String,
    pub request_url: String,
    pub request_path: String,
    pub request_status: Option<u16>,
    pub request_duration_ms: Option<f64>,
    pub request_ip: String,
    pub request_user_agent: String,
    pub request_query: String,
    pub request_path_params: BTreeMap<String, String>,
    pub request_headers: BTreeMap<String, String>,
    pub request_body: String,
    pub metadata: BTreeMap<String, String>,
    #[cfg_attr(
        feature = "clickhouse",
        serde(with = "clickhouse::serde::chrono::datetime64::micros")
    )]
    pub received_at: DateTime<Utc>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// The event's retention class; the deployment default when the event has none.
    pub retention_days: u16,
    /// A later stored copy of an event a producer retried (set by the
    /// consumer before the insert; never by a producer).
    pub is_copy: bool,
}

/// The column list of [`EventRow`], for `SELECT` statements.
pub const EVENT_COLUMNS: &str = "org_id, created_at, id, environment_id, workspace_id, \
workspace_name, actor_type, actor_id, actor_email, actor_name, auth_type, auth_client_id, \
auth_sub, auth_app_client_id, auth_account_id, source, action_type, action_description, \
resource_type, resource_id, resource_name, request_method, request_url, request_path, \
request_status, request_duration_ms, request_ip, request_user_agent, request_query, \
request_path_params, request_headers, request_body, metadata, received_at, kafka_partition, \
kafka_offset, retention_days, is_copy";

fn s(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

fn o(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

impl EventRow {
    /// Maps an event to its row.
    pub fn from_event(e: &AuditEvent, lineage: Lineage) -> Self {
        let rq = &e.request;
        EventRow {
            org_id: e.org_id.clone(),
            created_at: e.created_at,
            id: e.id,
            environment_id: s(&e.environment_id),
            workspace_id: s(&e.workspace_id),
            workspace_name: s(&e.workspace_name),
            actor_type: s(&e.actor.kind),
            actor_id: s(&e.actor.id),
            actor_email: s(&e.actor.email),
            actor_name: s(&e.actor.name),
            auth_type: s(&e.auth.kind),
            auth_client_id: s(&e.auth.client_id),
            auth_sub: s(&e.auth.sub),
            auth_app_client_id: s(&e.auth.app_client_id),
            auth_account_id: s(&e.auth.account_id),
            source: s(&e.source),
            action_type: e.action.kind.clone(),
            action_description: s(&e.action.description),
            resource_type: s(&e.resource.kind),
            resource_id: s(&e.resource.id),
            resource_name: s(&e.resource.name),
            request_method: s(&rq.method),
            request_url: s(&rq.url),
            request_path: s(&rq.path),
            request_status: rq.status,
            request_duration_ms: rq.duration_ms,
            request_ip: s(&rq.ip),
            request_user_agent: s(&rq.user_agent),
            request_query: rq
                .query
                .as_ref()
                .map(|q| serde_json::Value::Object(q.clone()).to_string())
                .unwrap_or_default(),
            request_path_params: rq.path_params.clone(),
            request_headers: rq.headers.clone(),
            request_body: s(&rq.body),
            metadata: e.metadata.clone(),
            received_at: e.received_at,
            kafka_partition: lineage.partition,
            kafka_offset: lineage.offset,
            retention_days: e
                .retention_days
                .unwrap_or(crate::retention::DEFAULT_RETENTION_DAYS),
            is_copy: false,
        }
    }

    /// Maps a row back to the event. A `request_query` that is not a JSON
    /// object (it never is when written by us) is dropped rather than failing the read.
    pub fn into_event(self) -> AuditEvent {
        let query = match serde_json::from_str::<serde_json::Value>(&self.request_query) {
            Ok(serde_json::Value::Object(m)) if !m.is_empty() => Some(m),
            _ => None,
        };
        AuditEvent {
            id: self.id,
            org_id: self.org_id,
            retention_days: Some(self.retention_days),
            environment_id: o(self.environment_id),
            workspace_id: o(self.workspace_id),
            workspace_name: o(self.workspace_name),
            created_at: self.created_at,
            received_at: self.received_at,
            actor: Actor {
                kind: o(self.actor_type),
                id: o(self.actor_id),
                email: o(self.actor_email),
                name: o(self.actor_name),
            },
            auth: Auth {
                kind: o(self.auth_type),
                client_id: o(self.auth_client_id),
                sub: o(self.auth_sub),
                app_client_id: o(self.auth_app_client_id),
                account_id: o(self.auth_account_id),
            },
            source: o(self.source),
            action: Action {
                kind: self.action_type,
                description: o(self.action_description),
            },
            resource: Resource {
                kind: o(self.resource_type),
                id: o(self.resource_id),
                name: o(self.resource_name),
            },
            request: Request {
                method: o(self.request_method),
                url: o(self.request_url),
                path: o(self.request_path),
                status: self.request_status,
                duration_ms: self.request_duration_ms,
                ip: o(self.request_ip),
                user_agent: o(self.request_user_agent),
                query,
                path_params: self.request_path_params,
                headers: self.request_headers,
                body: o(self.request_body),
            },
            metadata: self.metadata,
        }
    }

    /// Lineage of this row.
    pub fn lineage(&self) -> Lineage {
        Lineage {
            partition: self.kafka_partition,
            offset: self.kafka_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::DEFAULT_RETENTION_DAYS;
    use proptest::prelude::*;

    #[test]
    fn examples_round_trip_through_rows() {
        for e in crate::examples::all() {
            let row = EventRow::from_event(
                &e,
                Lineage {
                    partition: 3,
                    offset: 9,
                },
            );
            assert_eq!(
                row.lineage(),
                Lineage {
                    partition: 3,
                    offset: 9
                }
            );
            // An event without a retention class is stored with the default.
            let stored = AuditEvent {
                retention_days: Some(e.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS)),
                ..e
            };
            assert_eq!(row.into_event(), stored);
        }
    }

    #[test]
    #[cfg(feature = "clickhouse")]
    fn column_list_matches_the_struct() {
        let names: Vec<&str> = EVENT_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(names, <EventRow as clickhouse::Row>::COLUMN_NAMES);
    }

    proptest! {
        #[test]
        fn arbitrary_events_round_trip_through_rows(e in crate::examples::arb_event()) {
            let row = EventRow::from_event(&e, Lineage::default());
            let stored = AuditEvent {
                retention_days: Some(e.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS)),
                ..e
            };
            prop_assert_eq!(row.into_event(), stored);
        }
    }
}
