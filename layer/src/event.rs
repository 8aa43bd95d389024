//! Turning a captured request into a validated, redacted event, off the
//! request path.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use trailhouse_schemas::event::{
    limits, validate, Action, ActionInput, EventInput, Request as EventRequest, Resource,
    SystemStamp,
};

use crate::config::RecorderConfig;
use crate::context::AuditContext;
use crate::recorder::{dropped, Stats};
use crate::sink::Envelope;

/// What the request path hands to the background task: raw copies, turned
/// into an event (validated, redacted) off the request path.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) at: DateTime<Utc>,
    pub(crate) context: AuditContext,
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) path: String,
    pub(crate) route: Option<String>,
    pub(crate) status: Option<u16>,
    pub(crate) duration: Duration,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) query: Option<String>,
    pub(crate) path_params: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) auth_scheme: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) traceparent: Option<String>,
}

/// Cuts `s` to at most `max` characters.
fn clip(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

/// Turns a captured request into a validated, redacted event.
pub(crate) fn to_envelope(c: Captured, config: &RecorderConfig, stats: &Stats) -> Option<Envelope> {
    let ctx = c.context;
    let Some(org_id) = ctx.org_id.or_else(|| config.default_org.clone()) else {
        dropped(&stats.skipped_no_org, "no_org", 1);
        return None;
    };
    let method = c.method;
    let action = ctx.action.unwrap_or_else(|| Action {
        kind: format!("http.{}", method.to_ascii_lowercase()),
        description: Some(format!(
            "{method} {}",
            c.route.as_deref().unwrap_or(c.path.as_str())
        )),
    });
    let resource = ctx.resource.unwrap_or_else(|| Resource {
        kind: c.route.as_ref().map(|_| "route".to_string()),
        id: c.route.clone(),
        name: None,
    });
    let mut auth = ctx.auth;
    if auth.kind.is_none() {
        auth.kind = c.auth_scheme;
    }
    let query = c.query.map(|q| {
        let mut map = serde_json::Map::new();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = serde_json::Value::String(v.into_owned());
            match map.get_mut(k.as_ref()) {
                Some(serde_json::Value::Array(items)) => items.push(v),
                Some(first) => *first = serde_json::Value::Array(vec![first.take(), v]),
                None => {
                    map.insert(k.into_owned(), v);
                }
            }
        }
        map
    });
    let mut request = EventRequest {
        method: Some(method),
        url: Some(clip(c.url, limits::URL_LEN)),
        path: Some(clip(c.path, limits::URL_LEN)),
        status: c.status,
        duration_ms: Some(c.duration.as_secs_f64() * 1000.0),
        ip: c.ip.map(|ip| ip.to_string()),
        user_agent: c.user_agent.map(|ua| clip(ua, limits::TEXT_LEN)),
        query: query
            .filter(|q| serde_json::to_string(q).map_or(0, |s| s.len()) <= limits::QUERY_LEN),
        path_params: c
            .path_params
            .into_iter()
            .take(limits::MAP_ENTRIES)
            .map(|(k, v)| (k, clip(v, limits::MAP_VALUE_LEN)))
            .collect(),
        headers: c
            .headers
            .into_iter()
            .take(limits::MAP_ENTRIES)
            .map(|(k, v)| (k, clip(v, limits::MAP_VALUE_LEN)))
            .collect(),
        body: c.body,
    };
    config.redactor.apply_request(&mut request);
    let mut metadata = ctx.metadata;
    config.redactor.apply_metadata(&mut metadata);
    let input = EventInput {
        org_id: Some(org_id),
        environment_id: ctx.environment_id,
        workspace_id: ctx.workspace_id,
        workspace_name: ctx.workspace_name,
        created_at: Some(trailhouse_schemas::event::format_timestamp(&c.at)),
        actor: Some(ctx.actor),
        auth: Some(auth),
        source: config.source.clone(),
        action: Some(ActionInput {
            kind: Some(action.kind),
            description: action.description,
        }),
        resource: Some(resource),
        request: Some(request),
        metadata: Some(metadata),
        ..EventInput::default()
    };
    match validate(input, &SystemStamp) {
        Ok(event) => Some(Envelope::new(event).with_traceparent(c.traceparent.map(Arc::from))),
        Err(errors) => {
            let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
            tracing::warn!(errors = ?reasons, "audit event invalid; dropped");
            dropped(&stats.dropped_invalid, "invalid", 1);
            None
        }
    }
}
