//! Validation: an [`EventInput`] checked field by field (every problem is
//! reported by its field name) into an [`AuditEvent`].

use super::*;

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

/// The time a UUIDv7 carries (millisecond precision); `None` for other
/// versions.
fn v7_time(id: Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// Formats a timestamp the way every API of ours writes it.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Validates one event. `received_at` is stamped from `stamp`; a missing
/// `created_at` is the time of a UUIDv7 `id`, else `received_at`; a missing
/// `id` becomes a UUIDv7 of `created_at`.
pub fn validate(input: EventInput, stamp: &impl Stamp) -> Result<AuditEvent, Vec<FieldError>> {
    let mut c = Checker { errors: Vec::new() };
    let now = stamp.now();

    let org_id = c.ident("org_id", &input.org_id);
    if org_id.is_none() && input.org_id.as_deref().is_none_or(str::is_empty) {
        c.errors.push(FieldError::new("org_id", "is required"));
    }

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

    let created_at = match input.created_at.as_deref() {
        // A retried event must keep its identity `(org_id, id)` and its
        // position `created_at`: an event without `created_at` whose id is
        // a UUIDv7 (as generated ids and the layer's are) takes the id's
        // time, so a retry lands on the same row; otherwise the time of
        // receipt.
        None => Some(
            id.and_then(v7_time)
                .filter(|t| (*t - now).num_seconds() <= limits::FUTURE_SKEW_SECS)
                .unwrap_or(now),
        ),
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
    use crate::event::SystemStamp;
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
    fn a_v7_id_without_created_at_gives_the_event_its_time() {
        let now = FixedStamp.now();
        let v7 = |at: DateTime<Utc>| SystemStamp.new_id(at).to_string();
        let hour_ago = now - chrono::Duration::hours(1);
        let ms = |t: DateTime<Utc>| {
            DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or_default()
        };
        let far_future = now + chrono::Duration::days(3);
        let jan_1 = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        // (id, created_at) -> the stored created_at
        let cases = [
            (Some(v7(hour_ago)), None, ms(hour_ago)),
            (Some(v7(hour_ago)), Some("2026-01-01T00:00:00Z"), jan_1),
            (Some(Uuid::from_u128(7).to_string()), None, now),
            (Some(v7(far_future)), None, now),
            (None, None, now),
        ];
        for (id, created_at, want) in cases {
            let mut v = json!({"org_id": "acme", "action": {"type": "user.login"}});
            if let Some(id) = &id {
                v["id"] = json!(id);
            }
            if let Some(c) = created_at {
                v["created_at"] = json!(c);
            }
            let e = check(v).expect("valid");
            assert_eq!(e.created_at, want, "{id:?} {created_at:?}");
        }
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
